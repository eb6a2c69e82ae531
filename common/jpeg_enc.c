/* jpeg_enc: JPEG compression (jpeg_enc.h). */
#include "jpeg_enc.h"

#include "err.h"

#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

struct vr_jpeg_enc {
	tjhandle tj;
	unsigned char *buf;    /* tjAlloc'ed, cap bytes */
	unsigned long cap;
};

static const int pf_of[] = { [VR_PIX_RGB] = TJPF_RGB, [VR_PIX_GRAY] = TJPF_GRAY,
			     [VR_PIX_CMYK] = TJPF_CMYK };
static const int ss_of[] = { [VR_SUBSAMP_444] = TJSAMP_444, [VR_SUBSAMP_422] = TJSAMP_422,
			     [VR_SUBSAMP_420] = TJSAMP_420, [VR_SUBSAMP_GRAY] = TJSAMP_GRAY };

static int args_ok(const uint8_t *pixels, int width, int height, enum vr_pixel_format format,
		   enum vr_subsamp subsamp, int quality)
{
	return pixels && width >= 1 && height >= 1 && quality >= 1 && quality <= 100 &&
	       (unsigned)format <= VR_PIX_CMYK && (unsigned)subsamp <= VR_SUBSAMP_GRAY;
}

int vr_jpeg_enc_create(vr_jpeg_enc **out)
{
	vr_jpeg_enc *e = calloc(1, sizeof *e);
	if (!e || !(e->tj = tjInitCompress())) {
		free(e);
		return VR_ENOMEM;
	}
	*out = e;
	return 0;
}

void vr_jpeg_enc_destroy(vr_jpeg_enc *e)
{
	if (!e)
		return;
	tjDestroy(e->tj);
	tjFree(e->buf);
	free(e);
}

int vr_jpeg_enc_encode(vr_jpeg_enc *e, const uint8_t *pixels, int width, int height,
		       enum vr_pixel_format format, enum vr_subsamp subsamp, int quality,
		       const uint8_t **jpeg, size_t *len)
{
	*jpeg = NULL;
	*len = 0;
	if (!args_ok(pixels, width, height, format, subsamp, quality))
		return VR_EINVAL;
	/* The worst case of this size, so TurboJPEG never reallocates it. */
	unsigned long need = tjBufSize(width, height, ss_of[subsamp]);
	if (need == (unsigned long)-1)
		return VR_EINVAL;
	if (need > e->cap) {
		tjFree(e->buf);
		e->cap = 0;
		if (!(e->buf = tjAlloc((int)need)))
			return VR_ENOMEM;
		e->cap = need;
	}
	unsigned char *buf = e->buf;
	unsigned long size = e->cap;
	if (tjCompress2(e->tj, pixels, width, 0, height, pf_of[format], &buf, &size,
			ss_of[subsamp], quality, TJFLAG_NOREALLOC) != 0)
		return VR_EINVAL;
	*jpeg = buf;
	*len = size;
	return 0;
}

int vr_jpeg_encode(const uint8_t *pixels, int width, int height, enum vr_pixel_format format,
		   enum vr_subsamp subsamp, int quality, uint8_t **jpeg, size_t *len)
{
	vr_jpeg_enc *e = NULL;
	const uint8_t *p = NULL;
	*jpeg = NULL;
	int rc = vr_jpeg_enc_create(&e);
	if (!rc)
		rc = vr_jpeg_enc_encode(e, pixels, width, height, format, subsamp, quality, &p, len);
	if (!rc && !(*jpeg = malloc(*len)))
		rc = VR_ENOMEM;
	if (!rc)
		memcpy(*jpeg, p, *len);
	else
		*len = 0;
	vr_jpeg_enc_destroy(e);
	return rc;
}

void vr_jpeg_free(uint8_t *jpeg)
{
	free(jpeg);
}

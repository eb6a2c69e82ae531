/* Helpers shared by featured's tests: temporary directories, generated
 * JPEGs of varied sizes (tests/decode's fixtures), and a reference
 * embedder that recomputes an item's vector from a stored model's weights
 * file with the same decode and normalisation, one image at a time, to
 * check what featured stored. */
#ifndef FD_TEST_H
#define FD_TEST_H

#include "decode.h"
#include "err.h"
#include "fstore.h"
#include "jpeg_fixtures.h"
#include "nn.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A generated JPEG: item i of a set, its size varied by i (40..231 ×
 * 40..207 px, both aspect ratios). Free with vr_jpeg_free. */
static inline uint8_t *fdt_jpeg(unsigned i, size_t *len)
{
	int w = 40 + (int)(i * 37 % 192), h = 40 + (int)(i * 53 % 168);
	return fixture_jpeg(w, h, i + 1, i % 2 ? VR_SUBSAMP_420 : VR_SUBSAMP_444, 85, len);
}

/* Recomputes vectors of a stored model version. */
struct fdt_ref {
	nn_backend *b;
	nn_net *net;
	fd_decoder *dec;
	int size;
	uint8_t *rgb;
	float *in;
	float mean[3], std[3];
};

static inline int fdt_ref_open(struct fdt_ref *r, const char *data_dir, const fd_model_info *m)
{
	char path[512], err[256];
	memset(r, 0, sizeof *r);
	snprintf(path, sizeof path, "%s/%s", data_dir, m->weights);
	struct nn_net_opts o = { .max_batch = 1, .output_layer = m->layer, .inference_only = 1 };
	int rc = nn_backend_open("cpu", &r->b);
	if (!rc)
		rc = nn_net_open_file(r->b, path, &o, &r->net, err, sizeof err);
	if (!rc)
		rc = fd_decoder_create(&r->dec, NULL);
	r->size = (int)m->input_size;
	memcpy(r->mean, m->mean, sizeof r->mean);
	memcpy(r->std, m->std, sizeof r->std);
	r->rgb = malloc((size_t)r->size * r->size * 3);
	r->in = malloc(sizeof(float) * 3 * r->size * r->size);
	if (!rc && (!r->rgb || !r->in))
		rc = VR_ENOMEM;
	if (rc)
		fprintf(stderr, "  reference net: %s\n", vr_strerror(rc));
	return rc;
}

/* out gets the vector of one JPEG. */
static inline int fdt_ref_embed(struct fdt_ref *r, const void *jpeg, size_t len, float *out)
{
	int rc = fd_decode(r->dec, jpeg, len, r->size, 0, r->rgb, NULL, NULL, 0);
	if (rc)
		return rc;
	fd_normalize(r->in, r->rgb, r->size, r->mean, r->std);
	return nn_net_forward(r->net, r->in, 1, 0, out);
}

static inline void fdt_ref_close(struct fdt_ref *r)
{
	nn_net_destroy(r->net);
	nn_backend_close(r->b);
	fd_decoder_destroy(r->dec);
	free(r->rgb);
	free(r->in);
}

/* Largest |a - b| / max(1, |b|) over n floats. */
static inline double fdt_max_rel(const float *a, const float *b, size_t n)
{
	double worst = 0;
	for (size_t i = 0; i < n; i++) {
		double d = a[i] > b[i] ? a[i] - b[i] : b[i] - a[i];
		double s = b[i] > 1 ? b[i] : b[i] < -1 ? -b[i] : 1;
		if (d / s > worst)
			worst = d / s;
	}
	return worst;
}

#endif

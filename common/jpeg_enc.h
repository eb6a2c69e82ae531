/* jpeg_enc: JPEG compression (TurboJPEG), for the data generator and the
 * tests' fixtures; the services only decode (featured/decode.h).
 *
 * An encoder keeps its compressor and output buffer across calls, for a
 * program that writes thousands of images; vr_jpeg_encode is the one-shot
 * form. Not thread-safe per encoder: one per thread. */
#ifndef VR_JPEG_ENC_H
#define VR_JPEG_ENC_H

#include <stddef.h>
#include <stdint.h>

/* Pixel layouts and chroma subsampling accepted. */
enum vr_pixel_format { VR_PIX_RGB, VR_PIX_GRAY, VR_PIX_CMYK };
enum vr_subsamp { VR_SUBSAMP_444, VR_SUBSAMP_422, VR_SUBSAMP_420, VR_SUBSAMP_GRAY };

typedef struct vr_jpeg_enc vr_jpeg_enc;

/* Returns 0 or VR_ENOMEM. */
int vr_jpeg_enc_create(vr_jpeg_enc **out);
void vr_jpeg_enc_destroy(vr_jpeg_enc *e);

/* Compresses width×height pixels (packed rows of 3, 1 or 4 bytes per
 * pixel; CMYK in libjpeg's Adobe convention, 255 = no ink) at quality
 * 1..100. VR_SUBSAMP_GRAY makes a greyscale JPEG from any input; CMYK
 * input makes a YCCK JPEG. On success *jpeg points to *len bytes in e's
 * buffer, valid until the next call on e. Returns 0, VR_EINVAL (bad
 * arguments, or TurboJPEG refused) or VR_ENOMEM. */
int vr_jpeg_enc_encode(vr_jpeg_enc *e, const uint8_t *pixels, int width, int height,
		       enum vr_pixel_format format, enum vr_subsamp subsamp, int quality,
		       const uint8_t **jpeg, size_t *len);

/* The same into a new buffer, *jpeg, to free with vr_jpeg_free. */
int vr_jpeg_encode(const uint8_t *pixels, int width, int height, enum vr_pixel_format format,
		   enum vr_subsamp subsamp, int quality, uint8_t **jpeg, size_t *len);
void vr_jpeg_free(uint8_t *jpeg);

#endif

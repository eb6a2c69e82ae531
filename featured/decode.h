/* decode: JPEG bytes in, the network's S×S RGB input out.
 *
 * A decoder turns one JPEG into an S×S uint8 RGB image (HWC): it reads the
 * header, checks the configured limits before any pixel is decoded, lets
 * libjpeg-turbo decode at the smallest DCT scale whose shorter side is
 * still at least S, resizes the shorter side to S (area averaging when
 * shrinking, bilinear when enlarging) and crops the centre S×S. Grey and
 * CMYK/YCCK JPEGs come out as RGB. fd_normalize then turns those bytes into
 * the float CHW planes a model takes, with the model's mean and std.
 *
 * Only JPEG is read (PNG/WebP are refused with a reason naming the format).
 *
 * Threads: a decoder is owned by one thread at a time (it holds a
 * TurboJPEG handle and scratch buffers that grow to the largest image seen
 * and are reused, so a warm decoder does not allocate). Use one per
 * decode thread.
 *
 * Errors: VR_EINVAL for input that is not a decodable JPEG (empty, another
 * format, truncated, corrupt), VR_ETOOBIG for input over a limit (bytes,
 * pixels, or more than 64 scans: each is a pass over the whole image),
 * VR_ENOMEM, VR_EINVAL for bad arguments. Every failure on input fills the
 * caller's reason buffer with a sentence a person can act on, e.g.
 * "not a JPEG (starts with 89 50 4E 47: looks like PNG)". libjpeg errors
 * never end the process, and libjpeg warnings (such as a truncated scan,
 * which libjpeg would fill with grey) are failures. */
#ifndef FD_DECODE_H
#define FD_DECODE_H

#include <stddef.h>
#include <stdint.h>

typedef struct fd_decode_limits {
	size_t max_bytes;    /* largest accepted JPEG; 0 = 32 MiB */
	uint64_t max_pixels; /* largest width × height; 0 = 50,000,000 */
} fd_decode_limits;

/* What the decoder saw; filled as far as it got, also on failure. */
typedef struct fd_decode_info {
	int width, height;               /* as the JPEG header declares */
	int scaled_width, scaled_height; /* what libjpeg decoded (DCT scaling) */
	int colorspace;                  /* TurboJPEG TJCS_* of the file */
} fd_decode_info;

enum {
	/* Decode at full size, no DCT scaling (reference path, benchmarks). */
	FD_DECODE_NO_DCT_SCALING = 1,
};

typedef struct fd_decoder fd_decoder;

/* Creates a decoder. limits may be NULL (defaults above). Returns 0,
 * VR_ENOMEM, or VR_EINVAL when TurboJPEG cannot initialise. */
int fd_decoder_create(fd_decoder **out, const fd_decode_limits *limits);
void fd_decoder_destroy(fd_decoder *d);

/* Decodes jpeg[0..len) into rgb_out, which holds size*size*3 bytes (row
 * major, RGB interleaved). size is the network input S, 1..4096. flags:
 * FD_DECODE_* or 0. info and why may be NULL; why receives the reason of
 * a failure (truncated to why_cap, always terminated). Returns 0,
 * VR_EINVAL (bad input or arguments), VR_ETOOBIG (over max_bytes, or
 * width×height over max_pixels, or over 64 scans: refused before
 * decoding) or VR_ENOMEM. */
int fd_decode(fd_decoder *d, const void *jpeg, size_t len, int size, unsigned flags,
	      uint8_t *rgb_out, fd_decode_info *info, char *why, size_t why_cap);

/* Converts an S×S RGB image (HWC bytes) into float CHW planes:
 * out[c][y][x] = (in[y][x][c] / 255 - mean[c]) / std[c]. mean {0,0,0} and
 * std {1,1,1} give plain [0,1]; ImageNet models declare
 * {0.485,0.456,0.406} and {0.229,0.224,0.225}. std must be non-zero. */
void fd_normalize(float *out_chw, const uint8_t *in_rgb_hwc, int size,
		  const float mean[3], const float std[3]);

#endif

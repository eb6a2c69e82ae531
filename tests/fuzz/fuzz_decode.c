/* Fuzzes featured's JPEG decoder and resampler (featured/decode.c) as the
 * executor runs it on PutItems and Embed: one decoder kept across inputs
 * (a decode thread keeps its decoder warm, and a failure must leave it fit
 * for the next image), featured's default limits, network input sizes
 * from 1 to 299, with and without DCT scaling.
 *
 * Input: one control byte (bits 0-2: the size, bit 3: no DCT scaling, bit
 * 4: a decoder with tight limits), then the JPEG bytes. */
#include "decode.h"
#include "err.h"
#include "fuzz.h"

#include <stdlib.h>

static const int sizes[8] = { 1, 7, 16, 32, 64, 96, 224, 299 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* featured's defaults (--max-image-bytes, --max-image-pixels), and a
	 * decoder whose pixel limit small test images already cross. */
	static fd_decoder *dflt, *tight;
	static uint8_t *rgb;
	static float *chw;
	if (!dflt) {
		const fd_decode_limits d = { .max_bytes = 8388608, .max_pixels = 50000000 };
		const fd_decode_limits t = { .max_bytes = 4096, .max_pixels = 1024 };
		if (fd_decoder_create(&dflt, &d) || fd_decoder_create(&tight, &t))
			abort();
		rgb = malloc((size_t)299 * 299 * 3);
		chw = malloc(sizeof(float) * 299 * 299 * 3);
		if (!rgb || !chw)
			abort();
	}
	fz f = { data, size };
	uint8_t ctl = fz_u8(&f);
	int s = sizes[ctl & 7];
	size_t len;
	const uint8_t *jpeg = fz_rest(&f, &len);
	char why[256];
	fd_decode_info info;
	int rc = fd_decode(ctl & 0x10 ? tight : dflt, jpeg, len, s,
			   ctl & 8 ? FD_DECODE_NO_DCT_SCALING : 0, rgb, &info, why, sizeof why);
	if (rc != 0 && rc != VR_EINVAL && rc != VR_ETOOBIG)
		abort(); /* input can only be refused, never run the decoder out of memory */
	if (rc == 0) {
		static const float mean[3] = { 0.485f, 0.456f, 0.406f }, std[3] = { 0.229f, 0.224f, 0.225f };
		fd_normalize(chw, rgb, s, mean, std);
	} else if (!why[0] || !memchr(why, 0, sizeof why)) {
		abort(); /* every refusal says why */
	}
	return 0;
}

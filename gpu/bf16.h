/* bfloat16: the top 16 bits of an IEEE float32 (1 sign, 8 exponent, 7
 * mantissa bits), the CUDA backend's storage type for the operands of its
 * BF16 convolutions and GEMMs (gpu/cuda/bf16.cu, conv.c, fc.c). Host and
 * device share these functions (NN_HD), so the CPU test of the rounding
 * (tests/gpu/test_bf16.c) checks the very code the kernels run.
 *
 * Rounding is to nearest, ties to even, as __float2bfloat16_rn and
 * PyTorch's .to(torch.bfloat16): values past the largest finite bf16
 * (0x7F7F, 3.3895e38) by half an ulp or more become infinity; NaN stays
 * NaN (quiet, sign kept); subnormals round like any other value, with no
 * flush to zero. Widening back to float is exact. */
#ifndef NN_BF16_H
#define NN_BF16_H

#include <stdint.h>
#include <string.h>

#include "backend.h"   /* NN_HD */

static inline NN_HD uint32_t nn__f32_bits(float f)
{
#ifdef __CUDA_ARCH__
	return __float_as_uint(f);
#else
	uint32_t u;
	memcpy(&u, &f, sizeof u);
	return u;
#endif
}

static inline NN_HD float nn__f32_from_bits(uint32_t u)
{
#ifdef __CUDA_ARCH__
	return __uint_as_float(u);
#else
	float f;
	memcpy(&f, &u, sizeof f);
	return f;
#endif
}

static inline NN_HD uint16_t nn_bf16_from_float(float f)
{
	uint32_t u = nn__f32_bits(f);
	if ((u & 0x7FFFFFFFu) > 0x7F800000u)     /* NaN: keep sign, force quiet */
		return (uint16_t)((u >> 16) | 0x0040u);
	/* Adding 0x7FFF plus the kept part's lowest bit rounds half to even;
	 * a carry out of the mantissa bumps the exponent, up to infinity. */
	u += 0x7FFFu + ((u >> 16) & 1u);
	return (uint16_t)(u >> 16);
}

static inline NN_HD float nn_bf16_to_float(uint16_t h)
{
	return nn__f32_from_bits((uint32_t)h << 16);
}

/* f rounded to the nearest bf16, as a float. */
static inline NN_HD float nn_bf16_round(float f)
{
	return nn_bf16_to_float(nn_bf16_from_float(f));
}

#endif

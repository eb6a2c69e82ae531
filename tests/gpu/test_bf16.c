/* gpu/bf16.h, the rounding the CUDA backend's BF16 mode runs on the GPU
 * (gpu/cuda/bf16.cu), against a reference that picks the nearer of the
 * two bf16 neighbours of each float in double precision, ties to the even
 * one; and the precision setting of nn.h on the CPU backends, which run
 * FP32 only. */
#include <math.h>
#include <stdlib.h>

#include "bf16.h"
#include "err.h"
#include "harness.h"
#include "nn.h"

/* The bf16 value of bits b (b's high half) as a double; the first
 * pattern past the largest finite one (0x7F80, infinity) counts as 2^128,
 * where IEEE rounding puts the boundary. */
static double bf16_value(uint32_t b)
{
	uint32_t mag = b & 0x7FFFu;
	double v = mag == 0x7F80u ? ldexp(1.0, 128) : (double)nn_bf16_to_float((uint16_t)mag);
	return b & 0x8000u ? -v : v;
}

/* The reference rounding of a finite or infinite float. */
static uint16_t round_ref(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof u);
	if ((u & 0x7FFFFFFFu) >= 0x7F800000u)   /* infinity; NaN is tested apart */
		return (uint16_t)(u >> 16);
	uint16_t lo = (uint16_t)(u >> 16), hi = (uint16_t)(lo + 1);   /* same sign, one up in magnitude */
	if ((u & 0xFFFFu) == 0)
		return lo;
	double x = f, dlo = fabs(x - bf16_value(lo)), dhi = fabs(bf16_value(hi) - x);
	if (dlo < dhi)
		return lo;
	if (dhi < dlo)
		return hi;
	return (lo & 1) ? hi : lo;
}

static float from_bits(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof f);
	return f;
}

/* Returns the count of mismatches among the floats tried, printing the
 * first few. */
static long check_patterns(const uint32_t *lows, int nlows)
{
	long bad = 0;
	for (uint32_t hi = 0; hi < 0x10000u; hi++)
		for (int k = 0; k < nlows; k++) {
			uint32_t u = hi << 16 | lows[k];
			float f = from_bits(u);
			if (isnan(f))
				continue;
			uint16_t got = nn_bf16_from_float(f), want = round_ref(f);
			if (got != want && bad++ < 5)
				fprintf(stderr, "  0x%08x (%g): got 0x%04x, want 0x%04x\n", u, f, got, want);
		}
	return bad;
}

TEST(every_exponent_and_the_rounding_corners)
{
	/* The low halves that decide the rounding: exact, just below, at and
	 * just above the half, and the largest. */
	static const uint32_t lows[] = { 0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x1234,
		0xC000 };
	ASSERT_EQ_INT(check_patterns(lows, (int)(sizeof lows / sizeof lows[0])), 0);
}

TEST(random_floats)
{
	long bad = 0;
	uint64_t s = 0x9E3779B97F4A7C15ull;
	for (int i = 0; i < 2000000; i++) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		float f = from_bits((uint32_t)(s >> 32));
		if (isnan(f))
			continue;
		uint16_t got = nn_bf16_from_float(f), want = round_ref(f);
		if (got != want && bad++ < 5)
			fprintf(stderr, "  %a: got 0x%04x, want 0x%04x\n", (double)f, got, want);
	}
	ASSERT_EQ_INT(bad, 0);
}

TEST(named_values)
{
	/* 1 + 2^-8 is half way between 1 (even) and 1 + 2^-7: down; 1 + 3 2^-8
	 * between 1 + 2^-7 (odd) and 1 + 2^-6: up. */
	ASSERT(nn_bf16_round(1.0f + 0x1p-8f) == 1.0f);
	ASSERT(nn_bf16_round(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f);
	ASSERT(nn_bf16_round(-(1.0f + 3 * 0x1p-8f)) == -(1.0f + 0x1p-6f));
	ASSERT(nn_bf16_round(0.1f) == 0.10009765625f);
	ASSERT_EQ_INT(nn_bf16_from_float(3.3895314e38f), 0x7F7F);
	ASSERT(isinf(nn_bf16_round(3.4028235e38f)));   /* FLT_MAX is past the last half ulp */
	ASSERT(isinf(nn_bf16_round(INFINITY)) && nn_bf16_round(-INFINITY) < 0);
	ASSERT_EQ_INT(nn_bf16_from_float(-0.0f), 0x8000);
	ASSERT_EQ_INT(nn_bf16_from_float(0x1p-149f), 0x0000);   /* smallest subnormal: to zero */
	ASSERT_EQ_INT(nn_bf16_from_float(0x1p-133f), 0x0001);   /* smallest bf16 subnormal */
}

TEST(nan_stays_quiet_nan_with_its_sign)
{
	static const uint32_t nans[] = { 0x7F800001u, 0x7FC00000u, 0xFF800001u, 0x7F80FFFFu,
		0xFFFFFFFFu, 0x7FBF0000u };
	for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
		uint16_t h = nn_bf16_from_float(from_bits(nans[i]));
		ASSERT_MSG(isnan(nn_bf16_to_float(h)) && (h & 0x0040u) &&
				   (h & 0x8000u) == (nans[i] >> 16 & 0x8000u),
			"0x%08x -> 0x%04x", nans[i], h);
	}
}

TEST(widening_is_exact_and_round_trips)
{
	for (uint32_t h = 0; h < 0x10000u; h++) {
		float f = nn_bf16_to_float((uint16_t)h);
		if (isnan(f))
			continue;
		ASSERT_MSG(nn_bf16_from_float(f) == h, "0x%04x", h);
	}
}

TEST(cpu_backends_run_fp32_only)
{
	nn_backend *b;
	int p = 0;
	ASSERT_OK(nn_backend_open("cpu", &b));
	ASSERT_EQ_INT(nn_backend_precision(b), NN_PRECISION_FP32);
	ASSERT_OK(nn_backend_set_precision(b, NN_PRECISION_FP32));
	ASSERT_EQ_INT(nn_backend_set_precision(b, NN_PRECISION_BF16), VR_EUNSUPPORTED);
	ASSERT_EQ_INT(nn_backend_set_precision(b, NN_PRECISION_TF32), VR_EUNSUPPORTED);
	ASSERT_EQ_INT(nn_backend_set_precision(b, 0), VR_EINVAL);
	nn_backend_close(b);
	ASSERT_OK(nn_precision_parse("bf16", &p));
	ASSERT_EQ_INT(p, NN_PRECISION_BF16);
	ASSERT_STR_EQ(nn_precision_name(p), "bf16");
	ASSERT_EQ_INT(nn_precision_parse("fp16", &p), VR_EINVAL);
	ASSERT_EQ_INT(nn_precision_parse(NULL, &p), VR_EINVAL);
}

static const struct vr_test tests[] = {
	T(every_exponent_and_the_rounding_corners),
	T(random_floats),
	T(named_values),
	T(nan_stays_quiet_nan_with_its_sign),
	T(widening_is_exact_and_round_trips),
	T(cpu_backends_run_fp32_only),
	{ 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}

/* Choosing the backend and the uint8 input path, on any machine: opening
 * "cuda" without a device fails with VR_EDEVICE and says so, "auto" falls
 * back to the CPU and names the reason, and nn_net_forward_u8 computes
 * exactly what nn_net_forward computes from the same bytes normalised on
 * the host (featured's formula: byte / (255 std) - mean / std). Where a
 * device answers, the open tests check the CUDA side instead, and where
 * CUDA is not compiled in, that they say so; the GPU's numbers are
 * nn_cuda_parity's job (gpu.cuda_parity). */
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "harness.h"
#include "nn.h"
#include "nn_test.h"

TEST(open_cuda_says_why)
{
	nn_backend *b = NULL;
	char why[256];
	int rc = nn_backend_open_err("cuda", &b, why, sizeof(why));
	if (rc == 0) {
		ASSERT_STR_EQ(nn_backend_name(b), "cuda");
		ASSERT_CONTAINS(nn_backend_device(b), "sm_");
		nn_backend_close(b);
		return;
	}
	ASSERT(b == NULL);
	if (rc == VR_EUNSUPPORTED) {
		ASSERT_STR_EQ(why, "cuda: not compiled in");
		return;
	}
	ASSERT_EQ_INT(rc, VR_EDEVICE);
	ASSERT_CONTAINS(why, "cuda: no CUDA device found: ");
	ASSERT_EQ_INT(nn_backend_open("cuda", &b), VR_EDEVICE);
}

TEST(auto_names_its_choice)
{
	nn_backend *b = NULL;
	ASSERT_OK(nn_backend_open("auto", &b));
	if (!strcmp(nn_backend_name(b), "cpu"))
		ASSERT(strstr(nn_backend_device(b), "(cuda: no CUDA device found: ") ||
			strstr(nn_backend_device(b), "(cuda: not compiled in)"));
	else
		ASSERT_STR_EQ(nn_backend_name(b), "cuda");
	nn_backend_close(b);
}

TEST(unknown_backend_message)
{
	nn_backend *b = NULL;
	char why[128];
	ASSERT_EQ_INT(nn_backend_open_err("tpu", &b, why, sizeof(why)), VR_EINVAL);
	ASSERT_CONTAINS(why, "unknown backend \"tpu\"");
	ASSERT_OK(nn_backend_open_err("cpu", &b, why, sizeof(why)));
	ASSERT_STR_EQ(why, "");
	nn_backend_close(b);
}

TEST(forward_u8_equals_host_normalised)
{
	enum { N = 3, S = 16 };
	struct nn_net_opts o = { .max_batch = N, .input_size = S };
	nn_backend *b = NULL;
	nn_net *net = NULL;
	uint8_t *img[N] = { 0 };
	float mean[3], std[3];
	float *x = malloc(sizeof(float) * N * 3 * S * S);
	float *want = NULL, *got = NULL, *dx = NULL;
	ASSERT(x != NULL);
	ASSERT_OK(nn_backend_open("cpu", &b));
	ASSERT_OK(nn_net_create(b, "small", &o, &net, NULL, 0));
	ASSERT_OK(nn_net_init(net, 5));
	const size_t out = nn_net_output_size(net);
	want = malloc(sizeof(float) * N * out);
	got = malloc(sizeof(float) * N * out);
	dx = malloc(sizeof(float) * N * out);
	ASSERT(want && got && dx);
	nn_net_norm(net, mean, std);
	for (int i = 0; i < N; i++) {
		img[i] = malloc(S * S * 3);
		ASSERT(img[i] != NULL);
		for (int p = 0; p < S * S * 3; p++)
			img[i][p] = (uint8_t)(nn_splitmix64(77 + i, p) >> 56);
		for (int c = 0; c < 3; c++)
			for (int p = 0; p < S * S; p++)
				x[((size_t)i * 3 + c) * S * S + p] = img[i][3 * p + c] *
					(1.0f / (255.0f * std[c])) + -mean[c] / std[c];
	}
	ASSERT_OK(nn_net_forward(net, x, N, 0, want));
	ASSERT_OK(nn_net_forward_u8(net, (const uint8_t *const *)img, N, 0, got));
	ASSERT(memcmp(want, got, sizeof(float) * N * out) == 0);
	/* A training forward from bytes leaves a backward to go through. */
	for (size_t i = 0; i < N * out; i++)
		dx[i] = 1.0f;
	ASSERT_OK(nn_net_forward_u8(net, (const uint8_t *const *)img, 2, 1, got));
	ASSERT_OK(nn_net_backward(net, dx, NULL));
	ASSERT_EQ_INT(nn_net_forward_u8(net, (const uint8_t *const *)img, N + 1, 0, got), VR_EINVAL);
	uint8_t *holes[N] = { img[0], NULL, img[2] };
	ASSERT_EQ_INT(nn_net_forward_u8(net, (const uint8_t *const *)holes, N, 0, got), VR_EINVAL);
	for (int i = 0; i < N; i++)
		free(img[i]);
	free(x);
	free(want);
	free(got);
	free(dx);
	nn_net_destroy(net);
	nn_backend_close(b);
}

static const struct vr_test tests[] = {
	T(open_cuda_says_why),
	T(auto_names_its_choice),
	T(unknown_backend_message),
	T(forward_u8_equals_host_normalised),
	{ 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}

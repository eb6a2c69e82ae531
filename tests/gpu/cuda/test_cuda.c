/* Choosing the backend and the uint8 input path, on any machine: opening
 * "cuda" without a device fails with VR_EDEVICE and says so, "auto" falls
 * back to the CPU and names the reason, and nn_net_forward_u8 computes
 * exactly what nn_net_forward computes from the same bytes normalised on
 * the host (featured's formula: byte / (255 std) - mean / std), as does
 * nn_net_forward_images from an image set on the backend. Where a
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
	/* without a device: oneDNN where it is built, else the reference */
	if (!strcmp(nn_backend_name(b), "onednn") || !strcmp(nn_backend_name(b), "cpu"))
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

/* An image set on the "auto" backend (the GPU where one answers) feeds the
 * net exactly the bytes nn_net_forward_u8 would, in any order and with
 * repeats, and refuses indices outside it and sets of another size. */
TEST(forward_images_equals_forward_u8)
{
	enum { N = 5, S = 16, B = 4 };
	struct nn_net_opts o = { .max_batch = B, .input_size = S };
	nn_backend *b = NULL;
	nn_net *net = NULL;
	nn_images *set = NULL, *other = NULL;
	uint8_t *pix = malloc(N * S * S * 3);
	const uint8_t *img[B];
	const uint32_t idx[B] = { 4, 0, 4, 2 }, bad[2] = { 1, N };
	ASSERT(pix != NULL);
	for (size_t p = 0; p < N * S * S * 3; p++)
		pix[p] = (uint8_t)(nn_splitmix64(91, p) >> 56);
	ASSERT_OK(nn_backend_open("auto", &b));
	ASSERT_OK(nn_net_create(b, "small", &o, &net, NULL, 0));
	ASSERT_OK(nn_net_init(net, 9));
	const size_t out = nn_net_output_size(net);
	float *want = malloc(sizeof(float) * B * out), *got = malloc(sizeof(float) * B * out);
	ASSERT(want && got);
	ASSERT_OK(nn_images_create(b, N, S, &set));
	ASSERT_EQ_INT(nn_images_count(set), N);
	ASSERT_EQ_INT(nn_images_size(set), S);
	ASSERT_OK(nn_images_put(set, 0, 2, pix));          /* in two parts */
	ASSERT_OK(nn_images_put(set, 2, N - 2, pix + 2 * S * S * 3));
	ASSERT_EQ_INT(nn_images_put(set, N - 1, 2, pix), VR_EINVAL);
	for (int i = 0; i < B; i++)
		img[i] = pix + (size_t)idx[i] * S * S * 3;
	ASSERT_OK(nn_net_forward_u8(net, img, B, 0, want));
	ASSERT_OK(nn_net_forward_images(net, set, idx, B, 0, got));
	ASSERT(memcmp(want, got, sizeof(float) * B * out) == 0);
	ASSERT_EQ_INT(nn_net_forward_images(net, set, bad, 2, 0, got), VR_EINVAL);
	ASSERT_CONTAINS(nn_net_errmsg(net), "not in the set of 5");
	ASSERT_OK(nn_images_create(b, N, S / 2, &other));
	ASSERT_EQ_INT(nn_net_forward_images(net, other, idx, B, 0, got), VR_EINVAL);
	ASSERT_EQ_INT(nn_net_forward_images(net, set, idx, B + 1, 0, got), VR_EINVAL);
	/* A training forward from the set leaves a backward to go through. */
	for (size_t i = 0; i < B * out; i++)
		want[i] = 1.0f;
	ASSERT_OK(nn_net_forward_images(net, set, idx, 2, 1, got));
	ASSERT_OK(nn_net_backward(net, want, NULL));
	nn_images_destroy(other);
	nn_images_destroy(set);
	free(want);
	free(got);
	free(pix);
	nn_net_destroy(net);
	nn_backend_close(b);
}

static const struct vr_test tests[] = {
	T(open_cuda_says_why),
	T(auto_names_its_choice),
	T(unknown_backend_message),
	T(forward_u8_equals_host_normalised),
	T(forward_images_equals_forward_u8),
	{ 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}

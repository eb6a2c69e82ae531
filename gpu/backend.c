/* Choosing a backend at run time. The CUDA backend registers itself by
 * being compiled in (NN_HAVE_CUDA, set by gpu/CMakeLists.txt when the
 * toolkit and cuDNN are found), the oneDNN one likewise (NN_HAVE_ONEDNN,
 * when libdnnl is found). "auto" tries CUDA, then oneDNN, then the
 * reference CPU kernels, keeping the reasons so logs and Info can say
 * which ran and why. "cpu" and "cpu-ref" are the reference: "cpu" has
 * always named it, and what was measured or checked with it stays so. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "err.h"

/* Tries CUDA; on failure leaves the reason in why. */
static int open_cuda(struct nn_backend **out, char *why, size_t why_len)
{
#ifdef NN_HAVE_CUDA
	return nn__cuda_open(out, why, why_len);
#else
	snprintf(why, why_len, "not compiled in");
	*out = NULL;
	return VR_EUNSUPPORTED;
#endif
}

/* Tries oneDNN; on failure leaves the reason in why. */
static int open_onednn(struct nn_backend **out, char *why, size_t why_len)
{
#ifdef NN_HAVE_ONEDNN
	return nn__onednn_open(out, why, why_len);
#else
	snprintf(why, why_len, "not compiled in (no libdnnl-dev at build time)");
	*out = NULL;
	return VR_EUNSUPPORTED;
#endif
}

int nn_backend_open(const char *name, nn_backend **out)
{
	return nn_backend_open_err(name, out, NULL, 0);
}

int nn_backend_open_err(const char *name, nn_backend **out, char *errbuf, size_t errlen)
{
	char why[128] = "", why_dnn[128] = "";
	int rc;
	*out = NULL;
	if (errbuf && errlen)
		errbuf[0] = '\0';
	if (!name || (strcmp(name, "cpu") && strcmp(name, "cpu-ref") && strcmp(name, "onednn") &&
		      strcmp(name, "cuda") && strcmp(name, "auto"))) {
		if (errbuf)
			snprintf(errbuf, errlen,
				"unknown backend \"%s\" (auto, cuda, onednn, cpu-ref or cpu)",
				name ? name : "(null)");
		return VR_EINVAL;
	}
	if (!strcmp(name, "cpu") || !strcmp(name, "cpu-ref"))
		return nn__cpu_open(out);
	if (!strcmp(name, "cuda") || !strcmp(name, "onednn")) {
		rc = name[0] == 'c' ? open_cuda(out, why, sizeof(why)) :
			open_onednn(out, why, sizeof(why));
		if (rc && errbuf)
			snprintf(errbuf, errlen, "%s: %s", name, why);
		return rc;
	}
	rc = open_cuda(out, why, sizeof(why));
	if (rc == 0)
		return 0;
	rc = open_onednn(out, why_dnn, sizeof(why_dnn));
	if (rc == 0) {
		size_t len = strlen((*out)->device);
		snprintf((*out)->device + len, sizeof((*out)->device) - len, " (cuda: %s)", why);
		return 0;
	}
	rc = nn__cpu_open(out);
	if (rc == 0) {
		size_t len = strlen((*out)->device);
		snprintf((*out)->device + len, sizeof((*out)->device) - len,
			" (cuda: %.60s; onednn: %.60s)", why, why_dnn);
	}
	return rc;
}

void nn_backend_close(nn_backend *b)
{
	if (!b)
		return;
	b->ops->close(b);
	free(b);
}

const char *nn_backend_name(const nn_backend *b)
{
	return b->name;
}

const char *nn_backend_device(const nn_backend *b)
{
	return b->device;
}

int nn_precision_parse(const char *name, int *out)
{
	static const char *const names[] = { "fp32", "tf32", "bf16" };
	for (int i = 0; name && i < 3; i++)
		if (!strcmp(name, names[i])) {
			*out = NN_PRECISION_FP32 + i;
			return 0;
		}
	return VR_EINVAL;
}

const char *nn_precision_name(int precision)
{
	switch (precision) {
	case NN_PRECISION_FP32: return "fp32";
	case NN_PRECISION_TF32: return "tf32";
	case NN_PRECISION_BF16: return "bf16";
	}
	return "?";
}

int nn_backend_set_precision(nn_backend *b, int precision)
{
	if (precision < NN_PRECISION_FP32 || precision > NN_PRECISION_BF16)
		return VR_EINVAL;
	if (b->ops->set_precision)
		return b->ops->set_precision(b, precision);
	return precision == NN_PRECISION_FP32 ? 0 : VR_EUNSUPPORTED;
}

int nn_backend_set_threads(nn_backend *b, int threads)
{
	if (threads < 1)
		return VR_EINVAL;
	return b->ops->set_threads ? b->ops->set_threads(b, threads) : VR_EUNSUPPORTED;
}

int nn_backend_precision(const nn_backend *b)
{
	return b->ops->precision ? b->ops->precision(b) : NN_PRECISION_FP32;
}

/* Choosing a backend at run time. The CUDA backend registers itself by
 * being compiled in (NN_HAVE_CUDA, set by gpu/CMakeLists.txt when the
 * toolkit and cuDNN are found); "auto" tries it and falls back to the CPU,
 * keeping the reason so logs and Info can say which ran and why. */
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

int nn_backend_open(const char *name, nn_backend **out)
{
	return nn_backend_open_err(name, out, NULL, 0);
}

int nn_backend_open_err(const char *name, nn_backend **out, char *errbuf, size_t errlen)
{
	char why[128] = "";
	int rc;
	*out = NULL;
	if (errbuf && errlen)
		errbuf[0] = '\0';
	if (!name || (strcmp(name, "cpu") && strcmp(name, "cuda") && strcmp(name, "auto"))) {
		if (errbuf)
			snprintf(errbuf, errlen, "unknown backend \"%s\" (cpu, cuda or auto)",
				name ? name : "(null)");
		return VR_EINVAL;
	}
	if (!strcmp(name, "cpu"))
		return nn__cpu_open(out);
	if (!strcmp(name, "cuda")) {
		rc = open_cuda(out, why, sizeof(why));
		if (rc && errbuf)
			snprintf(errbuf, errlen, "cuda: %s", why);
		return rc;
	}
	rc = open_cuda(out, why, sizeof(why));
	if (rc == 0)
		return 0;
	rc = nn__cpu_open(out);
	if (rc == 0) {
		size_t len = strlen((*out)->device);
		snprintf((*out)->device + len, sizeof((*out)->device) - len, " (cuda: %s)", why);
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

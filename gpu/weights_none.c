/* Weights files in a build without cJSON (a bare GPU machine): the calls
 * exist and say the feature is missing, so callers need no #ifdef. */
#include <stdio.h>

#include "err.h"
#include "net_priv.h"

int nn_net_save(nn_net *net, const char *path, const nn_optim *opt, const char *const *meta)
{
	nn__errmsg(net, "built without cJSON: safetensors files unsupported");
	return VR_EUNSUPPORTED;
}

int nn_net_load(nn_net *net, const char *path, nn_optim *opt)
{
	nn__errmsg(net, "built without cJSON: safetensors files unsupported");
	return VR_EUNSUPPORTED;
}

int nn_net_open_file(nn_backend *b, const char *path, const struct nn_net_opts *opts,
	nn_net **out, char *errbuf, size_t errlen)
{
	*out = NULL;
	if (errbuf)
		snprintf(errbuf, errlen, "built without cJSON: safetensors files unsupported");
	return VR_EUNSUPPORTED;
}

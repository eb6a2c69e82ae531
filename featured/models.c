/* models: building, storing and reopening featured's model versions
 * (contract in models.h). */
#include "models.h"

#include "err.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const char *layer_or_output(const char *layer)
{
	return layer && layer[0] ? layer : "output";
}

int fd_model_build(nn_backend *b, const fd_model_spec *spec, int max_batch, nn_net **out,
		   char *err, size_t errlen)
{
	const char *arch = spec->arch && spec->arch[0] ? spec->arch : "small";
	struct nn_net_opts o = {
		.num_outputs = spec->num_outputs,
		.input_size = spec->input_size,
		.max_batch = max_batch,
		.output_layer = layer_or_output(spec->layer),
		.inference_only = 1,
	};
	int rc = nn_net_create(b, arch, &o, out, err, errlen);
	if (rc)
		return rc;
	if (spec->weights && spec->weights[0])
		rc = nn_net_load(*out, spec->weights, NULL);
	else
		rc = nn_net_init(*out, spec->init_seed);
	if (rc) {
		const char *why = nn_net_errmsg(*out), *file = spec->weights;
		if (file && !strstr(why, file))
			snprintf(err, errlen, "%s: %s", file, why);
		else
			snprintf(err, errlen, "%s", why);
		nn_net_destroy(*out);
		*out = NULL;
	}
	return rc;
}

int fd_model_add(fd_fstore *fs, const char *data_dir, nn_net *net, const char *layer,
		 int activate, fd_model_info *out, char *err, size_t errlen)
{
	char dir[4096], path[4096], vtext[16];
	int rc;
	size_t dims;
	layer = layer_or_output(layer);
	memset(out, 0, sizeof *out);
	if (!strcmp(layer, "output"))
		dims = nn_net_output_size(net);
	else if ((rc = nn_net_layer_size(net, layer, &dims))) {
		snprintf(err, errlen, "%s has no layer \"%s\"", nn_net_arch(net), layer);
		return rc;
	}
	if ((rc = fd_fstore_model_next(fs, &out->version))) {
		snprintf(err, errlen, "reading the models db: %s", vr_strerror(rc));
		return rc;
	}
	snprintf(out->arch, sizeof out->arch, "%s", nn_net_arch(net));
	snprintf(out->layer, sizeof out->layer, "%s", layer);
	snprintf(out->weights, sizeof out->weights, "models/v%u.safetensors", out->version);
	snprintf(out->purpose, sizeof out->purpose, "%s",
		 !strcmp(layer, "output") ? "embedding" : "features");
	out->dims = (uint32_t)dims;
	out->input_size = (uint32_t)nn_net_input_size(net);
	out->num_outputs = (uint32_t)nn_net_num_outputs(net);
	out->created_unix = (int64_t)time(NULL);
	nn_net_norm(net, out->mean, out->std);
	snprintf(out->precision, sizeof out->precision, "%s", nn_precision_name(nn_net_precision(net)));

	snprintf(dir, sizeof dir, "%s/models", data_dir);
	if (mkdir(dir, 0755) && errno != EEXIST) {
		rc = -errno;
		snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
		return rc;
	}
	snprintf(path, sizeof path, "%s/%s", data_dir, out->weights);
	snprintf(vtext, sizeof vtext, "%u", out->version);
	const char *meta[] = { "visrec_model_version", vtext, "visrec_layer", layer, NULL };
	if ((rc = nn_net_save(net, path, NULL, meta))) {
		snprintf(err, errlen, "cannot write %s: %s", path, vr_strerror(rc));
		return rc;
	}
	if ((rc = fd_fstore_model_add(fs, out, activate)))
		snprintf(err, errlen, "cannot record model version %u: %s", out->version,
			 rc == VR_ESTATE ? "items are stored already" : vr_strerror(rc));
	return rc;
}

int fd_model_open(nn_backend *b, const char *data_dir, const fd_model_info *info, int max_batch,
		  nn_net **out, char *err, size_t errlen)
{
	char path[4096];
	struct nn_net_opts o = {
		.max_batch = max_batch,
		.output_layer = info->layer,
		.inference_only = 1,
	};
	snprintf(path, sizeof path, "%s/%s", data_dir, info->weights);
	int rc = nn_net_open_file(b, path, &o, out, err, errlen);
	if (rc)
		return rc;
	if (strcmp(nn_net_arch(*out), info->arch) || nn_net_output_size(*out) != info->dims ||
	    (uint32_t)nn_net_input_size(*out) != info->input_size) {
		snprintf(err, errlen, "%s holds %s with %zu dims at %d px; model version %u says %s, %u dims at %u px",
			 path, nn_net_arch(*out), nn_net_output_size(*out), nn_net_input_size(*out),
			 info->version, info->arch, info->dims, info->input_size);
		nn_net_destroy(*out);
		*out = NULL;
		return VR_ECORRUPT;
	}
	/* one version's vectors come from one math: BF16's differ from FP32's
	 * by ~1e-2, enough to move a neighbour list */
	const char *now = nn_precision_name(nn_net_precision(*out));
	if (info->precision[0] && strcmp(info->precision, now)) {
		snprintf(err, errlen, "model version %u's vectors were made in %s, and this featured "
			 "runs %s (--precision): the two would mix in one version; run it with "
			 "--precision %s", info->version, info->precision, now, info->precision);
		nn_net_destroy(*out);
		*out = NULL;
		return VR_ESTATE;
	}
	return 0;
}

int fd_model_spec_differs(const fd_model_spec *spec, const fd_model_info *info, char *what,
			  size_t cap)
{
	size_t n = 0;
	what[0] = 0;
#define DIFF(...) n += (size_t)snprintf(what + n, n < cap ? cap - n : 0, __VA_ARGS__)
	if (spec->arch && strcmp(spec->arch, info->arch))
		DIFF("%s--arch %s (active: %s)", n ? ", " : "", spec->arch, info->arch);
	if (spec->input_size && (uint32_t)spec->input_size != info->input_size)
		DIFF("%s--input-size %d (active: %u)", n ? ", " : "", spec->input_size, info->input_size);
	if (spec->num_outputs && (uint32_t)spec->num_outputs != info->num_outputs)
		DIFF("%s--num-outputs %d (active: %u)", n ? ", " : "", spec->num_outputs,
		     info->num_outputs);
	if (spec->layer && strcmp(layer_or_output(spec->layer), info->layer))
		DIFF("%s--feature-layer %s (active: %s)", n ? ", " : "", spec->layer, info->layer);
	if (spec->weights)
		DIFF("%s--weights %s (active: %s)", n ? ", " : "", spec->weights, info->weights);
#undef DIFF
	return n > 0;
}

int fd_models_setup(fd_fstore *fs, nn_backend *b, const char *data_dir, const fd_model_spec *spec,
		    int max_batch, nn_net **net, fd_model_info *active, int *created, char *err,
		    size_t errlen)
{
	*net = NULL;
	*created = 0;
	int rc = fd_fstore_model_get(fs, 0, active);
	if (!rc)
		return fd_model_open(b, data_dir, active, max_batch, net, err, errlen);
	if (rc != VR_ENOTFOUND) {
		snprintf(err, errlen, "reading the active model: %s", vr_strerror(rc));
		return rc;
	}
	if ((rc = fd_model_build(b, spec, max_batch, net, err, errlen)))
		return rc;
	if ((rc = fd_model_add(fs, data_dir, *net, spec->layer, 1, active, err, errlen))) {
		nn_net_destroy(*net);
		*net = NULL;
		return rc;
	}
	*created = 1;
	return 0;
}

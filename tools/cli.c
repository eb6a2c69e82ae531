/* cli: the pieces every `visrec` command shares (cli.h): global flags,
 * argument splitting, channels, error reports with a hint, JSON output. */
#include "cli.h"

#include "err.h"
#include "visrec/v1/rankd.pb-c.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void cli_global_flags(cli *c, vr_flag out[CLI_GLOBAL_FLAGS])
{
	const vr_flag g[CLI_GLOBAL_FLAGS] = {
		{ "featured", "VISREC_FEATURED", VR_FLAG_STRING, &c->featured_addr, "127.0.0.1:50051",
		  "HOST:PORT of featured, or the shard list of every featured shard (comma-separated, "
		  "as featured --shards)", 0 },
		{ "rankd", "VISREC_RANKD", VR_FLAG_STRING, &c->rankd_addr, "127.0.0.1:50052",
		  "HOST:PORT of rankd", 0 },
		{ "token-file", "VISREC_TOKEN_FILE", VR_FLAG_STRING, &c->token_file, NULL,
		  "file holding the admin token for writes and training (the daemons' "
		  "--admin-token-file), kept off the command line", 0 },
		{ "token", "VISREC_TOKEN", VR_FLAG_STRING, &c->token, NULL,
		  "the admin token itself (visible to ps: prefer --token-file)", 0 },
		{ "tls-ca", "VISREC_TLS_CA", VR_FLAG_STRING, &c->tls_ca, NULL,
		  "PEM roots to verify the daemons' TLS certificates; unset: plaintext", 0 },
		{ "json", "VISREC_JSON", VR_FLAG_BOOL, &c->json, "false",
		  "print machine-readable JSON on stdout", 0 },
		{ "save", NULL, VR_FLAG_STRING, &c->save, NULL,
		  "also write the JSON result (or the error) to this file", 0 },
		{ "timeout", "VISREC_TIMEOUT", VR_FLAG_DOUBLE, &c->timeout_s, "0",
		  "deadline of each call in seconds; 0 = the command's default (5 to 30 s; none "
		  "for ingest, train and eval)", 0 },
	};
	memcpy(out, g, sizeof g);
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "visrec %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n(see: visrec %s --help)\n", cmd);
	return CLI_EXIT_USAGE;
}

static const vr_flag *find_flag(const vr_flag *t, const char *name, size_t len)
{
	for (; t->name; t++)
		if (strlen(t->name) == len && !strncmp(t->name, name, len))
			return t;
	return NULL;
}

int cli_parse(cli *c, const vr_flag *table, int argc, char **argv, const char *usage,
	      const char *summary, char ***pos, int *npos)
{
	size_t n = 0;
	while (table[n].name)
		n++;
	vr_flag *all = calloc(n + CLI_GLOBAL_FLAGS + 1, sizeof *all);
	char **flags = calloc((size_t)argc + 1, sizeof *flags);
	char **p = calloc((size_t)argc + 1, sizeof *p);
	char **shorts = calloc((size_t)argc + 1, sizeof *shorts);
	int nflags = 1, np = 0, nshorts = 0, code = CLI_EXIT_OK;
	char err[256];
	if (pos)
		*pos = NULL;
	*npos = 0;
	if (!all || !flags || !p || !shorts) {
		code = cli_fail(c, argv[0], "out of memory");
		goto leave;
	}
	memcpy(all, table, n * sizeof *all);
	cli_global_flags(c, all + n);
	flags[0] = argv[0];
	for (int i = 1; i < argc; i++) {
		char *a = argv[i];
		if (!strcmp(a, "--")) {
			while (++i < argc)
				p[np++] = argv[i];
			break;
		}
		if (!strcmp(a, "-h")) {
			flags[nflags++] = a;
			continue;
		}
		if (a[0] != '-' || !a[1] || (a[1] != '-' && a[2])) {
			p[np++] = a; /* positional (or "-" alone) */
			continue;
		}
		if (a[1] != '-') { /* "-k": the short form of "--k" */
			char *long_form = malloc(strlen(a) + 2);
			if (!long_form) {
				code = cli_fail(c, argv[0], "out of memory");
				goto leave;
			}
			sprintf(long_form, "-%s", a);
			shorts[nshorts++] = long_form;
			a = long_form;
		}
		flags[nflags++] = a;
		const char *name = a + 2, *eq = strchr(name, '=');
		size_t len = eq ? (size_t)(eq - name) : strlen(name);
		const vr_flag *f = find_flag(all, name, len);
		if (f && f->type != VR_FLAG_BOOL && !eq && i + 1 < argc)
			flags[nflags++] = argv[++i];
	}
	int rc = vr_flags_parse(all, nflags, flags, err, sizeof err);
	if (rc == VR_FLAGS_HELP) {
		vr_flags_usage(stdout, usage, summary, all);
		*npos = -1;
		goto leave;
	}
	if (rc) {
		code = cli_usage_error(argv[0], "%s", err);
		goto leave;
	}
	if (!pos) {
		if (np)
			code = cli_usage_error(argv[0], "unexpected argument \"%s\"", p[0]);
		goto leave;
	}
	*pos = p;
	*npos = np;
	p = NULL;
leave:
	for (int i = 0; i < nshorts; i++)
		free(shorts[i]);
	free(shorts);
	free(p);
	free(flags);
	free(all);
	return code;
}

int cli_take_globals(cli *c, int argc, char **argv, char ***rest, int *nrest)
{
	vr_flag g[CLI_GLOBAL_FLAGS + 1] = { { 0 } };
	char **flags = calloc((size_t)argc + 1, sizeof *flags);
	char **r = calloc((size_t)argc + 1, sizeof *r);
	int nflags = 1, nr = 0;
	char err[256];
	*rest = NULL;
	*nrest = 0;
	if (!flags || !r) {
		free(flags);
		free(r);
		return cli_fail(c, argv[0], "out of memory");
	}
	cli_global_flags(c, g);
	flags[0] = argv[0];
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const vr_flag *f = NULL;
		if (!strncmp(a, "--", 2)) {
			const char *name = a + 2, *eq = strchr(name, '=');
			size_t len = eq ? (size_t)(eq - name) : strlen(name);
			f = find_flag(g, name, len);
			if (!f && len > 3 && !strncmp(name, "no-", 3))
				f = find_flag(g, name + 3, len - 3);
			if (f) {
				flags[nflags++] = argv[i];
				if (f->type != VR_FLAG_BOOL && !eq && i + 1 < argc)
					flags[nflags++] = argv[++i];
				continue;
			}
		}
		r[nr++] = argv[i];
	}
	int rc = vr_flags_parse(g, nflags, flags, err, sizeof err);
	free(flags);
	if (rc) {
		free(r);
		return cli_usage_error(argv[0], "%s", err);
	}
	*rest = r;
	*nrest = nr;
	return CLI_EXIT_OK;
}

const char *cli_addr(const cli *c, enum cli_service s)
{
	return s == CLI_FEATURED ? c->featured_addr : c->rankd_addr;
}

static const char *service_name(enum cli_service s)
{
	return s == CLI_FEATURED ? "featured" : "rankd";
}

/* Reads --token-file the first time. 0, or reported and CLI_EXIT_FAIL. */
static int read_token(cli *c, const char *who)
{
	char err[512];
	if (c->token_file && c->token && c->token != c->token_buf)
		return cli_fail(c, who, "--token and --token-file are both set "
				"(flags or VISREC_TOKEN*); keep one, the file");
	if (c->token_file && !c->token_buf) {
		if (vr_flags_read_secret("token-file", c->token_file, &c->token_buf, err, sizeof err))
			return cli_fail(c, who, "%s", err);
		c->token = c->token_buf;
	}
	return CLI_EXIT_OK;
}

/* Replies (GetVectors chunks, big Evaluate tables) may exceed core's 4 MiB
 * default; the daemons' own limit is 16 MiB. */
#define CLI_MAX_MESSAGE (64u << 20)

int cli_channel_opts(cli *c, const char *who, vr_channel_opts *o)
{
	int code = read_token(c, who);
	if (code)
		return code;
	*o = (vr_channel_opts){ .tls_root_file = c->tls_ca, .token = c->token,
				.max_message_bytes = CLI_MAX_MESSAGE };
	return CLI_EXIT_OK;
}

int cli_shards(cli *c, const char *cmd, vr_shards **out)
{
	char why[512];
	vr_channel_opts o;
	int code = cli_channel_opts(c, "featured", &o);
	if (code)
		return code;
	if (!c->shards) {
		int rc = vr_shards_open(&c->shards, c->featured_addr, &o, why, sizeof why);
		if (rc == VR_EINVAL || rc == VR_ETOOBIG)
			return cli_usage_error(cmd, "--featured: %s", why);
		if (rc)
			return cli_fail(c, cmd, "%s%s", why, c->tls_ca ? " (check --tls-ca)" : "");
	}
	*out = c->shards;
	return CLI_EXIT_OK;
}

int cli_channel(cli *c, enum cli_service s, vr_channel **out)
{
	vr_channel **ch = s == CLI_FEATURED ? &c->featured : &c->rankd;
	int code = read_token(c, service_name(s));
	if (code)
		return code;
	if (s == CLI_FEATURED && !*ch) {
		vr_shards *sh;
		if ((code = cli_shards(c, "featured", &sh)))
			return code;
		if (vr_shards_count(sh) > 1)
			return cli_fail(c, "featured", "--featured names %zu featured shards; this command "
					"talks to one featured only so far", vr_shards_count(sh));
		*ch = vr_shards_channel(sh, 0);
	}
	if (!*ch) {
		vr_channel_opts o = { .tls_root_file = c->tls_ca, .token = c->token,
				      .max_message_bytes = CLI_MAX_MESSAGE };
		int rc = vr_channel_create(ch, cli_addr(c, s), &o);
		if (rc)
			return cli_fail(c, service_name(s), "cannot set up a channel to %s at \"%s\": %s%s",
					service_name(s), cli_addr(c, s), vr_strerror(rc),
					c->tls_ca && rc != VR_EINVAL ? " (check --tls-ca)" : "");
	}
	*out = *ch;
	return CLI_EXIT_OK;
}

int64_t cli_deadline_ms(const cli *c, int64_t def_ms)
{
	if (c->timeout_s > 0)
		return (int64_t)(c->timeout_s * 1000);
	return def_ms;
}

/* What a person should do about a status from service s. */
static const char *hint(const cli *c, enum cli_service s, const vr_status *st, char *buf,
			size_t len)
{
	const char *addr = cli_addr(c, s);
	switch (st->code) {
	case GRPC_STATUS_UNAVAILABLE:
		if (strstr(st->message, "connect") || strstr(st->message, "Connection") ||
		    strstr(st->message, "DNS") || strstr(st->message, "resolve")) {
			if (s == CLI_FEATURED)
				snprintf(buf, len,
					 "is featured running at %s? start it with: featured --listen %s "
					 "--data DIR (or point --featured / VISREC_FEATURED at it)",
					 addr, addr);
			else
				snprintf(buf, len,
					 "is rankd running at %s? start it with: rankd --listen %s --data DIR "
					 "--featured %s (or point --rankd / VISREC_RANKD at it)",
					 addr, addr, c->featured_addr);
			return buf;
		}
		snprintf(buf, len, "%s at %s is up but cannot serve this now (shutting down, or a "
			 "service it needs is down): see the message and its log, then retry",
			 service_name(s), addr);
		return buf;
	case GRPC_STATUS_DEADLINE_EXCEEDED:
		return "the call ran past its deadline: raise --timeout (seconds) or ask for less";
	case GRPC_STATUS_UNAUTHENTICATED:
	case GRPC_STATUS_PERMISSION_DENIED:
		return "this call needs the daemon's admin token: pass --token-file F (a file holding "
		       "it) or set VISREC_TOKEN_FILE";
	case GRPC_STATUS_UNIMPLEMENTED:
		snprintf(buf, len, "this build of %s does not implement it; use a build that does, or "
			 "another option", service_name(s));
		return buf;
	case GRPC_STATUS_INVALID_ARGUMENT:
	case GRPC_STATUS_OUT_OF_RANGE:
		return "fix the request as the message says (--help lists the flags)";
	case GRPC_STATUS_NOT_FOUND:
		return "check the ids: the message names what the server does not know";
	case GRPC_STATUS_FAILED_PRECONDITION:
		return "the server is not ready for this yet (no interactions: run `visrec import`; "
		       "no model: run `visrec train`; training: wait for it)";
	case GRPC_STATUS_RESOURCE_EXHAUSTED:
		return "the server is at capacity or a message is too big: retry later, or send less "
		       "per call";
	case GRPC_STATUS_ABORTED:
	case GRPC_STATUS_ALREADY_EXISTS:
		return "the server's state changed meanwhile: look, then retry";
	case GRPC_STATUS_CANCELLED:
		return "the call was cancelled";
	default:
		snprintf(buf, len, "a failure inside %s: see its log", service_name(s));
		return buf;
	}
}

cJSON *cli_status_json(const cli *c, enum cli_service s, const vr_status *st)
{
	char buf[512];
	cJSON *e = cJSON_CreateObject();
	if (!e)
		return NULL;
	cJSON_AddStringToObject(e, "service", service_name(s));
	cJSON_AddStringToObject(e, "address", cli_addr(c, s));
	cJSON_AddStringToObject(e, "status", vr_status_name(st->code));
	cJSON_AddNumberToObject(e, "code", st->code);
	cJSON_AddStringToObject(e, "message", st->message);
	cJSON_AddStringToObject(e, "hint", hint(c, s, st, buf, sizeof buf));
	return e;
}

/* Fills local with the status a locally failed call stands for. */
static const vr_status *status_of(int rc, const vr_status *st, vr_status *local)
{
	if (rc == VR_ERPC && st)
		return st;
	local->code = rc == VR_ETOOBIG ? GRPC_STATUS_RESOURCE_EXHAUSTED
				       : st && st->code ? st->code : GRPC_STATUS_INTERNAL;
	snprintf(local->message, sizeof local->message, "%s (in this client)", vr_strerror(rc));
	return local;
}

void cli_print_call_error(const cli *c, enum cli_service s, const char *what, int rc,
			  const vr_status *st)
{
	vr_status local;
	char buf[512];
	st = status_of(rc, st, &local);
	fprintf(stderr, "visrec: %s %s at %s failed: %s: %s\n  %s\n", service_name(s), what,
		cli_addr(c, s), vr_status_name(st->code), st->message, hint(c, s, st, buf, sizeof buf));
}

int cli_call_error(cli *c, enum cli_service s, const char *what, int rc, const vr_status *st)
{
	vr_status local;
	cli_print_call_error(c, s, what, rc, st);
	if (cli_wants_json(c)) {
		cJSON *o = cJSON_CreateObject();
		cJSON *e = cli_status_json(c, s, status_of(rc, st, &local));
		if (o && e) {
			cJSON_AddStringToObject(e, "call", what);
			cJSON_AddItemToObject(o, "error", e);
			e = NULL;
			cli_output(c, o);
			o = NULL;
		}
		cJSON_Delete(e);
		cJSON_Delete(o);
	}
	return CLI_EXIT_FAIL;
}

int cli_fail(cli *c, const char *cmd, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	fprintf(stderr, "visrec %s: %s\n", cmd, msg);
	if (cli_wants_json(c)) {
		cJSON *o = cJSON_CreateObject();
		cJSON *e = o ? cJSON_AddObjectToObject(o, "error") : NULL;
		if (e) {
			cJSON_AddStringToObject(e, "command", cmd);
			cJSON_AddStringToObject(e, "message", msg);
			cli_output(c, o);
		} else {
			cJSON_Delete(o);
		}
	}
	return CLI_EXIT_FAIL;
}

int cli_wants_json(const cli *c)
{
	return c->json || (c->save && c->save[0]);
}

int cli_output(cli *c, cJSON *obj)
{
	int code = CLI_EXIT_OK;
	char *s = obj ? cJSON_PrintUnformatted(obj) : NULL;
	cJSON_Delete(obj);
	if (!s) {
		fprintf(stderr, "visrec: out of memory writing JSON\n");
		return CLI_EXIT_FAIL;
	}
	if (c->save && c->save[0]) {
		FILE *f = fopen(c->save, "w");
		int bad = !f || fprintf(f, "%s\n", s) < 0;
		if ((f && fclose(f)) || bad) {
			fprintf(stderr, "visrec: cannot write %s: %s\n", c->save, strerror(errno));
			code = CLI_EXIT_FAIL;
		}
		/* Written once: an error reported later must not replace it. */
		c->save = NULL;
	}
	if (c->json) {
		puts(s);
		fflush(stdout);
	}
	cJSON_free(s);
	return code;
}

const char *cli_model_name(int kind)
{
	const ProtobufCEnumValue *v =
		protobuf_c_enum_descriptor_get_value(&visrec__v1__model_kind__descriptor, kind);
	if (!v || !kind)
		return "UNSPECIFIED";
	return v->name;
}

static cJSON *field_value(const ProtobufCFieldDescriptor *f, const void *p)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		return cJSON_CreateNumber(*(const int32_t *)p);
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		return cJSON_CreateNumber(*(const uint32_t *)p);
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		return cJSON_CreateNumber((double)*(const int64_t *)p);
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		return cJSON_CreateNumber((double)*(const uint64_t *)p);
	case PROTOBUF_C_TYPE_FLOAT: {
		/* A float's own digits (0.05, not 0.0500000007). */
		char buf[32];
		snprintf(buf, sizeof buf, "%.9g", *(const float *)p);
		float back = strtof(buf, NULL);
		for (int prec = 6; prec < 9; prec++) {
			snprintf(buf, sizeof buf, "%.*g", prec, *(const float *)p);
			if (strtof(buf, NULL) == back)
				break;
		}
		return cJSON_CreateNumber(strtod(buf, NULL));
	}
	case PROTOBUF_C_TYPE_DOUBLE:
		return cJSON_CreateNumber(*(const double *)p);
	case PROTOBUF_C_TYPE_BOOL:
		return cJSON_CreateBool(*(const protobuf_c_boolean *)p);
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
			f->descriptor, *(const int *)p);
		return v ? cJSON_CreateString(v->name) : cJSON_CreateNumber(*(const int *)p);
	}
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(char *const *)p;
		return cJSON_CreateString(s ? s : "");
	}
	case PROTOBUF_C_TYPE_BYTES:
		return cJSON_CreateNumber((double)((const ProtobufCBinaryData *)p)->len);
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessage *m = *(const ProtobufCMessage *const *)p;
		return m ? cli_proto_json(m) : cJSON_CreateNull();
	}
	}
	return cJSON_CreateNull();
}

static size_t field_size(const ProtobufCFieldDescriptor *f)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
	case PROTOBUF_C_TYPE_DOUBLE:
		return 8;
	case PROTOBUF_C_TYPE_BOOL:
		return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_ENUM:
		return sizeof(int);
	case PROTOBUF_C_TYPE_STRING:
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(void *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	default:
		return 4;
	}
}

cJSON *cli_proto_json(const ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return NULL;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const char *base = (const char *)m + f->offset;
		cJSON *v;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
			const char *arr = *(char *const *)base;
			v = cJSON_CreateArray();
			for (size_t k = 0; v && k < n; k++)
				cJSON_AddItemToArray(v, field_value(f, arr + k * field_size(f)));
		} else {
			if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
				uint32_t which = *(const uint32_t *)((const char *)m + f->quantifier_offset);
				if (which != f->id)
					continue;
			}
			if (f->type == PROTOBUF_C_TYPE_MESSAGE && !*(void *const *)base)
				continue;
			v = field_value(f, base);
		}
		if (!v) {
			cJSON_Delete(o);
			return NULL;
		}
		cJSON_AddItemToObject(o, f->name, v);
	}
	return o;
}

int cli_split(const char *s, cli_list *l)
{
	memset(l, 0, sizeof *l);
	if (!s)
		return 0;
	l->buf = strdup(s);
	l->items = calloc(strlen(s) / 2 + 2, sizeof *l->items);
	if (!l->buf || !l->items) {
		cli_list_free(l);
		return VR_ENOMEM;
	}
	for (char *save = NULL, *t = strtok_r(l->buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
		l->items[l->n++] = t;
	return 0;
}

void cli_list_free(cli_list *l)
{
	free(l->items);
	free(l->buf);
	memset(l, 0, sizeof *l);
}

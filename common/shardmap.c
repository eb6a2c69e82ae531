/* shardmap: parsing of the shard list, rendezvous ownership and the map's
 * tag (see the header for the contract). */
#include "shardmap.h"

#include "err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FNV_BASIS VR_FNV_BASIS
#define FNV_PRIME 0x100000001b3ULL
#define fnv1a vr_fnv1a64
#define mix64 vr_mix64

uint64_t vr_fnv1a64(uint64_t h, const void *p, size_t len)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < len; i++) {
		h ^= b[i];
		h *= FNV_PRIME;
	}
	return h;
}

uint64_t vr_mix64(uint64_t z)
{
	z ^= z >> 30;
	z *= 0xbf58476d1ce4e5b9ULL;
	z ^= z >> 27;
	z *= 0x94d049bb133111ebULL;
	z ^= z >> 31;
	return z;
}

uint64_t vr_shard_hash(const char *name, const char *id, size_t len)
{
	static const char zero = 0;
	uint64_t h = fnv1a(FNV_BASIS, name, strlen(name));
	h = fnv1a(h, &zero, 1);
	return mix64(fnv1a(h, id, len));
}

size_t vr_shardmap_owner(const vr_shardmap *m, const char *id, size_t len)
{
	size_t best = 0;
	uint64_t top = vr_shard_hash(m->names[0], id, len);
	for (size_t k = 1; k < m->n; k++) {
		uint64_t h = vr_shard_hash(m->names[k], id, len);
		if (h > top) { /* names are sorted: on a tie the first (smaller) stays */
			top = h;
			best = k;
		}
	}
	return best;
}

int vr_shardmap_find(const vr_shardmap *m, const char *name)
{
	for (size_t k = 0; k < m->n; k++)
		if (!strcmp(m->names[k], name))
			return (int)k;
	return -1;
}

static int host_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '-' || c == '_';
}

/* Checks one entry (len bytes at s); the reason goes after "entry K ... ". */
static int check_addr(const char *s, size_t len, char *why, size_t cap)
{
	const char *colon = NULL;
	size_t hl;
	if (s[0] == '[') {
		const char *close = memchr(s, ']', len);
		if (!close || close == s + 1) {
			snprintf(why, cap, "has an IPv6 host without its closing ']'");
			return VR_EINVAL;
		}
		for (const char *p = s + 1; p < close; p++)
			if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') ||
			      (*p >= 'A' && *p <= 'F') || *p == ':' || *p == '.')) {
				snprintf(why, cap, "has a character that is no hex digit, ':' or '.' "
					 "inside [...]");
				return VR_EINVAL;
			}
		if (close + 1 == s + len || close[1] != ':') {
			snprintf(why, cap, "has no :port after the IPv6 host");
			return VR_EINVAL;
		}
		colon = close + 1;
		hl = (size_t)(colon - s);
	} else {
		colon = memchr(s, ':', len);
		if (!colon) {
			snprintf(why, cap, "has no :port (want host:port)");
			return VR_EINVAL;
		}
		hl = (size_t)(colon - s);
		if (!hl) {
			snprintf(why, cap, "has no host before the ':' (want host:port)");
			return VR_EINVAL;
		}
		for (size_t i = 0; i < hl; i++)
			if (!host_char(s[i])) {
				snprintf(why, cap, "has a character that is no letter, digit, '.', "
					 "'-' or '_' in its host (byte %zu)", i);
				return VR_EINVAL;
			}
	}
	const char *port = colon + 1;
	size_t pl = len - hl - 1;
	unsigned long v = 0;
	if (!pl || pl > 5 || port[0] == '0') {
		snprintf(why, cap, "has port \"%.*s\" (want 1..65535, no leading zero)", (int)pl, port);
		return VR_EINVAL;
	}
	for (size_t i = 0; i < pl; i++) {
		if (port[i] < '0' || port[i] > '9') {
			snprintf(why, cap, "has port \"%.*s\" (want 1..65535, digits only)", (int)pl, port);
			return VR_EINVAL;
		}
		v = v * 10 + (unsigned long)(port[i] - '0');
	}
	if (v > 65535) {
		snprintf(why, cap, "has port %lu (want 1..65535)", v);
		return VR_EINVAL;
	}
	return 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int vr_shardmap_parse(vr_shardmap **out, const char *list, char *why, size_t cap)
{
	vr_shardmap *m = NULL;
	int rc = 0;
	char reason[160];
	*out = NULL;
	size_t total = strlen(list);
	if (!total) {
		snprintf(why, cap, "the shard list is empty (want host:port[,host:port...])");
		return VR_EINVAL;
	}
	if (total > VR_SHARD_LIST_MAX) {
		snprintf(why, cap, "the shard list is %zu bytes, over the limit of %d", total,
			 VR_SHARD_LIST_MAX);
		return VR_ETOOBIG;
	}
	size_t n = 1;
	for (const char *p = list; *p; p++)
		n += *p == ',';
	if (n > VR_SHARDS_MAX) {
		snprintf(why, cap, "the shard list has %zu entries, over the limit of %d", n,
			 VR_SHARDS_MAX);
		return VR_ETOOBIG;
	}
	if (!(m = calloc(1, sizeof *m)) || !(m->names = calloc(n, sizeof *m->names)) ||
	    !(m->list = malloc(total + 1))) {
		rc = VR_ENOMEM;
		snprintf(why, cap, "out of memory");
		goto fail;
	}
	const char *s = list;
	for (size_t k = 0; k < n; k++) {
		const char *end = strchr(s, ',');
		size_t len = end ? (size_t)(end - s) : strlen(s);
		rc = VR_EINVAL;
		if (!len) {
			snprintf(why, cap, "entry %zu of the shard list is empty", k + 1);
			goto fail;
		}
		if (len > VR_SHARD_ADDR_MAX) {
			snprintf(why, cap, "entry %zu of the shard list is %zu bytes, over the limit of %d",
				 k + 1, len, VR_SHARD_ADDR_MAX);
			rc = VR_ETOOBIG;
			goto fail;
		}
		if (check_addr(s, len, reason, sizeof reason)) {
			snprintf(why, cap, "entry %zu of the shard list, \"%.*s\", %s", k + 1,
				 (int)(len > 64 ? 64 : len), s, reason);
			goto fail;
		}
		if (!(m->names[k] = strndup(s, len))) {
			rc = VR_ENOMEM;
			snprintf(why, cap, "out of memory");
			goto fail;
		}
		m->n++;
		s = end ? end + 1 : s + len;
	}
	qsort(m->names, m->n, sizeof *m->names, cmp_names);
	for (size_t k = 1; k < m->n; k++)
		if (!strcmp(m->names[k - 1], m->names[k])) {
			snprintf(why, cap, "the shard list names %s twice", m->names[k]);
			rc = VR_EINVAL;
			goto fail;
		}
	char *w = m->list;
	for (size_t k = 0; k < m->n; k++) {
		size_t len = strlen(m->names[k]);
		if (k)
			*w++ = ',';
		memcpy(w, m->names[k], len);
		w += len;
	}
	*w = 0;
	m->fingerprint = mix64(fnv1a(FNV_BASIS, m->list, (size_t)(w - m->list)));
	snprintf(m->tag, sizeof m->tag, "%zu-%016llx", m->n, (unsigned long long)m->fingerprint);
	*out = m;
	return 0;
fail:
	vr_shardmap_free(m);
	return rc;
}

void vr_shardmap_free(vr_shardmap *m)
{
	if (!m)
		return;
	for (size_t k = 0; k < m->n; k++)
		free(m->names[k]);
	free(m->names);
	free(m->list);
	free(m);
}

/* "a map of 3 shards (fingerprint 0123...)" of a tag, or of "no map". */
static void describe(const char *tag, char *out, size_t cap)
{
	const char *dash = tag ? strchr(tag, '-') : NULL;
	if (!tag)
		snprintf(out, cap, "no shard map (a single featured)");
	else if (!dash)
		snprintf(out, cap, "a shard map tag \"%.40s\" that is no N-FINGERPRINT", tag);
	else
		snprintf(out, cap, "a map of %.*s shards (fingerprint %.20s)", (int)(dash - tag), tag,
			 dash + 1);
}

int vr_shardmap_check_tag(const vr_shardmap *m, const char *self, const char *tag, char *why,
			  size_t cap)
{
	char mine[128], theirs[128];
	if (m ? tag && !strcmp(tag, m->tag) : !tag)
		return 0;
	describe(m ? m->tag : NULL, mine, sizeof mine);
	describe(tag, theirs, sizeof theirs);
	snprintf(why, cap, "this featured%s%s holds %s, the call was made with %s: give every "
		 "party the same shard list (featured --shards, --featured of rankd and visrec)",
		 self ? " " : "", self ? self : "", mine, theirs);
	return VR_ESTATE;
}

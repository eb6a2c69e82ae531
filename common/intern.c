/* intern: the id table (intern.h). */
#include "intern.h"

#include "err.h"
#include "grow.h"

#include <stdlib.h>
#include <string.h>

static uint64_t hash_bytes(const char *p, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, then a final mix */
	for (size_t k = 0; k < len; k++) {
		h ^= (unsigned char)p[k];
		h *= 0x100000001b3ull;
	}
	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ull;
	return h ^ (h >> 32);
}

static uint32_t find(const vr_intern *t, const char *id, size_t len, uint64_t h)
{
	if (!t->table)
		return VR_INTERN_NONE;
	for (uint64_t s = h & t->mask;; s = (s + 1) & t->mask) {
		uint32_t k = t->table[s];
		if (k == VR_INTERN_NONE)
			return VR_INTERN_NONE;
		if (t->hash[k] == h && t->off[k + 1] - t->off[k] - 1 == len &&
		    !memcmp(t->chars + t->off[k], id, len))
			return k;
	}
}

static int rehash(vr_intern *t, uint64_t slots)
{
	uint32_t *tab = malloc(slots * sizeof(*tab));
	if (!tab)
		return VR_ENOMEM;
	memset(tab, 0xff, slots * sizeof(*tab));
	for (uint32_t k = 0; k < t->n; k++) {
		uint64_t s = t->hash[k] & (slots - 1);
		while (tab[s] != VR_INTERN_NONE)
			s = (s + 1) & (slots - 1);
		tab[s] = k;
	}
	free(t->table);
	t->table = tab;
	t->mask = (uint32_t)(slots - 1);
	return 0;
}

int vr_intern_reserve(vr_intern *t, uint64_t extra, uint64_t chars)
{
	uint64_t need = (uint64_t)t->n + extra;
	if (need >= VR_INTERN_NONE)
		return VR_ETOOBIG;
	int rc = vr_grow((void **)&t->hash, sizeof(*t->hash), need, &t->hash_cap);
	if (!rc)
		rc = vr_grow((void **)&t->off, sizeof(*t->off), need + 1, &t->off_cap);
	if (!rc)
		rc = vr_grow((void **)&t->chars, 1, t->chars_len + chars, &t->chars_cap);
	if (rc)
		return rc;
	uint64_t slots = t->table ? (uint64_t)t->mask + 1 : 0;
	if (need * 2 > slots) {
		uint64_t s = 256;
		while (s < need * 2)
			s *= 2;
		return rehash(t, s);
	}
	return 0;
}

uint32_t vr_intern_find(const vr_intern *t, const char *id, size_t len)
{
	return find(t, id, len, hash_bytes(id, len));
}

uint32_t vr_intern_add(vr_intern *t, const char *id, size_t len)
{
	uint64_t h = hash_bytes(id, len);
	uint32_t k = find(t, id, len, h);
	if (k != VR_INTERN_NONE)
		return k;
	k = t->n++;
	if (k == 0)
		t->off[0] = 0;
	memcpy(t->chars + t->chars_len, id, len);
	t->chars[t->chars_len + len] = '\0';
	t->chars_len += len + 1;
	t->off[k + 1] = t->chars_len;
	t->hash[k] = h;
	uint64_t s = h & t->mask;
	while (t->table[s] != VR_INTERN_NONE)
		s = (s + 1) & t->mask;
	t->table[s] = k;
	return k;
}

const char *vr_intern_id(const vr_intern *t, uint32_t k, size_t *len)
{
	if (k >= t->n)
		return NULL;
	if (len)
		*len = (size_t)(t->off[k + 1] - t->off[k] - 1);
	return t->chars + t->off[k];
}

void vr_intern_free(vr_intern *t)
{
	free(t->chars);
	free(t->off);
	free(t->hash);
	free(t->table);
	memset(t, 0, sizeof *t);
}

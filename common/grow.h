/* grow: the one way our C code grows a heap array by doubling. */
#ifndef VR_GROW_H
#define VR_GROW_H

#include "err.h"

#include <stdint.h>
#include <stdlib.h>

/* Makes the array *p of elem-byte elements hold need of them: when *cap
 * is short it doubles (from 64) until it fits and reallocates. On
 * VR_ENOMEM *p and *cap are as they were. */
static inline int vr_grow(void **p, size_t elem, uint64_t need, uint64_t *cap)
{
	if (need <= *cap)
		return 0;
	uint64_t c = *cap ? *cap : 64;
	while (c < need)
		c *= 2;
	void *q = realloc(*p, (size_t)(c * elem));
	if (!q)
		return VR_ENOMEM;
	*p = q;
	*cap = c;
	return 0;
}

#endif

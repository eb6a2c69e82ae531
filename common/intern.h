/* intern: a table that gives each distinct id (a byte string) a dense
 * index 0, 1, 2, ... in the order ids were first added: rankd's user and
 * item maps, the report's data set.
 *
 * The ids live NUL-terminated in one arena; an open-addressing table of
 * indices, each id's hash kept beside it, finds them. Lookups never
 * allocate. Adding is two steps so that a caller can reserve room for a
 * whole batch first and then add without any failure left (rankd applies a
 * committed batch to memory that way: memory must mirror the store).
 *
 * A zeroed vr_intern is an empty table; free it with vr_intern_free. Not
 * thread-safe: the owner serialises. Pointers from vr_intern_id are valid
 * until the next vr_intern_reserve. */
#ifndef VR_INTERN_H
#define VR_INTERN_H

#include <stddef.h>
#include <stdint.h>

#define VR_INTERN_NONE UINT32_MAX

typedef struct vr_intern {
	uint32_t n;          /* ids held (read-only for callers) */
	/* private */
	char *chars;         /* every id, NUL-terminated, in index order */
	uint64_t chars_len, chars_cap;
	uint64_t *off;       /* n + 1 offsets into chars */
	uint64_t *hash;      /* n hashes, to skip most memcmp calls */
	uint64_t hash_cap, off_cap;
	uint32_t *table;     /* index or VR_INTERN_NONE; mask + 1 slots */
	uint32_t mask;
} vr_intern;

/* Makes room for extra more ids of chars bytes in all (their lengths
 * plus one each), so that the next extra adds cannot fail. Returns 0,
 * VR_ENOMEM, or VR_ETOOBIG past UINT32_MAX - 1 ids. */
int vr_intern_reserve(vr_intern *t, uint64_t extra, uint64_t chars);
/* The index of id (len bytes), or VR_INTERN_NONE. */
uint32_t vr_intern_find(const vr_intern *t, const char *id, size_t len);
/* The index of id, added when absent; room must have been reserved. */
uint32_t vr_intern_add(vr_intern *t, const char *id, size_t len);
/* The id of index k (NUL-terminated, its length in *len when len is not
 * NULL), or NULL when k >= n. */
const char *vr_intern_id(const vr_intern *t, uint32_t k, size_t *len);
void vr_intern_free(vr_intern *t);

#endif

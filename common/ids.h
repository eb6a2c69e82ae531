/* ids: the one rule for user and item ids, shared by featured, rankd and
 * the visrec CLI, so an id one of them accepts is accepted by the others
 * and by strict clients in other languages (which decode proto3 strings as
 * UTF-8 and fail a whole reply on a bad one).
 *
 * An id is 1..VR_ID_MAX bytes of UTF-8 (shortest form only: no overlong
 * encodings, no UTF-16 surrogates, nothing above U+10FFFF) and holds no NUL
 * byte and no control character (C0 U+0000-U+001F, DEL U+007F, C1
 * U+0080-U+009F). Ids are compared as bytes: no normalisation.
 *
 * The check takes the id with its length because a NUL inside must be seen:
 * protobuf-c ends unpacked strings at the first NUL, so the rpc layer
 * refuses a request string holding one before a handler sees it (rpc.h),
 * and strlen() of a request string is then its full length. */
#ifndef VR_IDS_H
#define VR_IDS_H

#include <stddef.h>

/* Bytes in an id, the limit both daemons have always had. */
#define VR_ID_MAX 256
/* Room for any reason vr_id_check writes. */
#define VR_ID_WHY 96

/* Checks id, len bytes (need not be NUL-terminated), against the rule
 * above. Returns 0, or VR_EINVAL with the reason in why (cap bytes, may
 * be NULL), worded to follow the id's name or position:
 *   "is empty", "is longer than 256 bytes (300)",
 *   "contains a NUL byte at offset 7",
 *   "contains a control character (U+0009) at byte 3",
 *   "is not valid UTF-8 at byte 5 (an overlong encoding)". */
int vr_id_check(const char *id, size_t len, char *why, size_t cap);

/* vr_id_check of a named id (a field or its place: "item_id",
 * "interactions[3].user_id"), the whole message in why: "<name> is empty",
 * else "<name> \"<id escaped>\" <reason>" (vr_id_escape, cut at 64
 * bytes). Returns 0 or VR_EINVAL. */
int vr_id_check_named(const char *name, const char *id, size_t len, char *why, size_t cap);

/* Writes a printable, valid UTF-8 rendering of s (len bytes, any bytes)
 * into out (cap >= 8 bytes, NUL-terminated) for messages and logs: valid
 * UTF-8 without control characters is copied, a backslash is doubled and
 * every other byte is written \xNN; when it does not fit it is cut at a
 * character boundary and ends in "...". Returns out. */
char *vr_id_escape(char *out, size_t cap, const char *s, size_t len);

#endif

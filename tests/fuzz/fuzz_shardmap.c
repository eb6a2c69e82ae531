/* Fuzzes the shard list parser (common/shardmap.c), the text every party
 * is given with --shards / --featured: the whole input is the list. A list
 * it accepts must be in normal form (names sorted, no duplicates, each
 * within the limits), parse again from its normal form to the same tag,
 * and give every id an owner among its shards; the tag check must take
 * any metadata value. */
#include "err.h"
#include "fuzz.h"
#include "shardmap.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *list = malloc(size + 1), why[512];
	vr_shardmap *m = NULL, *again = NULL;
	if (!list)
		abort();
	memcpy(list, data, size);
	list[size] = 0; /* a NUL inside ends the list, as it ends a flag's value */
	int rc = vr_shardmap_parse(&m, list, why, sizeof why);
	if (rc) {
		if (m || (rc != VR_EINVAL && rc != VR_ETOOBIG) || !why[0])
			abort();
		fz_touch(why, strlen(why));
		vr_shardmap_check_tag(NULL, NULL, list, why, sizeof why);
		free(list);
		return 0;
	}
	if (!m->n || m->n > VR_SHARDS_MAX)
		abort();
	for (size_t k = 0; k < m->n; k++) {
		if (strlen(m->names[k]) > VR_SHARD_ADDR_MAX || (k && strcmp(m->names[k - 1], m->names[k]) >= 0))
			abort();
		if (vr_shardmap_find(m, m->names[k]) != (int)k)
			abort();
	}
	if (vr_shardmap_parse(&again, m->list, why, sizeof why) || strcmp(again->tag, m->tag))
		abort();
	if (vr_shardmap_owner(m, list, size > 256 ? 256 : strlen(list)) >= m->n ||
	    vr_shardmap_check_tag(m, m->names[0], m->tag, why, sizeof why) ||
	    (m->n > 1 && !vr_shardmap_check_tag(m, m->names[0], list, why, sizeof why) &&
	     strcmp(list, m->tag)))
		abort();
	vr_shardmap_free(again);
	vr_shardmap_free(m);
	free(list);
	return 0;
}

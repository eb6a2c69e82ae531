/* Fuzzes the interaction CSV reader of `visrec import` and the report
 * (common/icsv.c): the whole input is the file, read row by row to its end
 * as the CLI does, bad rows included (the reader goes on after them). */
#include "err.h"
#include "fuzz.h"
#include "icsv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!size)
		return 0; /* fmemopen refuses an empty buffer */
	FILE *f = fmemopen((void *)data, size, "r");
	icsv *r;
	if (!f || icsv_open_stream(&r, f, "fuzz.csv"))
		abort();
	icsv_row row;
	int rc;
	while ((rc = icsv_next(r, &row)) == 0 || rc == VR_EINVAL) {
		if (rc == VR_EINVAL) {
			fz_touch(icsv_error(r), strlen(icsv_error(r)));
			continue;
		}
		if (!row.user[0] || !row.item[0] || row.line < 1)
			abort(); /* a row it returns has both ids and a line */
		fz_touch(row.user, strlen(row.user) + 1);
		fz_touch(row.item, strlen(row.item) + 1);
	}
	if (rc != VR_EEOF)
		abort();
	icsv_close(r);
	return 0;
}

/* Fuzzes rankd's CSV import (rk_interactions_import_csv_buf in
 * rankd/interactions.c: quoting, ISO 8601 and integer timestamps, the
 * line and id limits) into an in-memory interaction set, then snapshots
 * and splits what it added as training does. The whole input is the
 * file. */
#include "err.h"
#include "fuzz.h"
#include "interactions.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	rk_interactions *ix;
	rk_add_stats st;
	char err[256];
	if (rk_interactions_open(&ix, NULL))
		abort();
	int rc = rk_interactions_import_csv_buf(ix, (const char *)data, size, &st, err, sizeof err);
	if (rc == 0) {
		if (st.added != rk_interactions_count(ix))
			abort(); /* a fresh set holds exactly the pairs it added */
		rk_csr all, train;
		uint32_t *test = malloc(((size_t)rk_interactions_users(ix) + 1) * sizeof *test);
		if (!test || rk_interactions_csr(ix, &all) || rk_split_last(&all, &train, test))
			abort();
		for (uint32_t u = 0; u < rk_interactions_users(ix); u++) {
			size_t len;
			const char *id = rk_user_id(ix, u, &len);
			if (!id || !len || len > RK_ID_MAX)
				abort();
		}
		rk_csr_free(&all);
		rk_csr_free(&train);
		free(test);
	} else if (rc != VR_EINVAL && rc != VR_ETOOBIG) {
		abort();
	} else {
		fz_touch(err, strlen(err));
	}
	rk_interactions_close(ix);
	return 0;
}

/* fault: crash points for tests (fault.h). */
#include "fault.h"

#ifdef VISREC_FAULTS
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static _Atomic unsigned long reached;

void vr_fault(const char *point)
{
	const char *want = getenv("VISREC_FAULT");
	size_t len = strlen(point);
	if (!want || strncmp(want, point, len) || (want[len] && want[len] != '@'))
		return;
	unsigned long nth = want[len] == '@' ? strtoul(want + len + 1, NULL, 10) : 1;
	if (atomic_fetch_add(&reached, 1) + 1 != nth)
		return;
	fprintf(stderr, "VISREC_FAULT: crashing at %s (time %lu)\n", point, nth);
	_exit(VR_FAULT_EXIT);
}
#endif

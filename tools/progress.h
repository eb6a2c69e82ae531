/* progress: how the operator's tools show a long run on stderr. A count
 * (`visrec datagen` and visrec-datagen's images) is one line redrawn at
 * most 5 times a second on a terminal, else a line every 5 s for a log,
 * each with the rate and an ETA; the CLI's other commands format their
 * durations the same way. */
#ifndef VR_PROGRESS_H
#define VR_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

/* s seconds as "42 s", "3:07" or "1:02:03"; "?" when s is negative or NaN.
 * Returns buf. */
const char *progress_duration(double s, char *buf, size_t len);

/* A count being shown: "<what>: <unit> done/total  rate <unit>/s  ETA". */
struct progress {
	const char *what, *unit;
	int tty;           /* redraw one line (a terminal) or print lines (a log) */
	double t0, shown;  /* vr_now_s() of the start and of the last line */
};

void progress_start(struct progress *p, const char *what, const char *unit, int tty);
/* Shows done of total (ctx is a struct progress; the signature is
 * datagen's dg_progress_fn). The last call, done == total, always shows. */
void progress_show(void *ctx, int64_t done, int64_t total);

#endif

/* progress: progress lines on stderr (progress.h). */
#include "progress.h"

#include "deadline.h"

#include <stdio.h>

const char *progress_duration(double s, char *buf, size_t len)
{
	if (s < 0 || s != s)
		snprintf(buf, len, "?");
	else if (s < 60)
		snprintf(buf, len, "%.0f s", s);
	else if (s < 3600)
		snprintf(buf, len, "%d:%02d", (int)s / 60, (int)s % 60);
	else
		snprintf(buf, len, "%d:%02d:%02d", (int)s / 3600, (int)s / 60 % 60, (int)s % 60);
	return buf;
}

void progress_start(struct progress *p, const char *what, const char *unit, int tty)
{
	*p = (struct progress){ .what = what, .unit = unit, .tty = tty, .t0 = vr_now_s() };
}

void progress_show(void *ctx, int64_t done, int64_t total)
{
	struct progress *p = ctx;
	double now = vr_now_s(), el = now - p->t0;
	if (done != total && now - p->shown < (p->tty ? 0.2 : 5))
		return;
	p->shown = now;
	double rate = el > 0 ? done / el : 0;
	char eta[32];
	progress_duration(rate > 0 ? (total - done) / rate : -1, eta, sizeof eta);
	if (p->tty)
		fprintf(stderr, "\r\033[K%s: %s %lld/%lld  %.0f %s/s  ETA %s%s", p->what, p->unit,
			(long long)done, (long long)total, rate, p->unit, eta, done == total ? "\n" : "");
	else
		fprintf(stderr, "%s: %s %lld/%lld, %.0f %s/s, ETA %s\n", p->what, p->unit,
			(long long)done, (long long)total, rate, p->unit, eta);
}

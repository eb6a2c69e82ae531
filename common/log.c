/* Logging for every visrec program: one line per event on stderr, UTC
 * timestamp with milliseconds, level, component, message (see log.h).
 *
 * Each line is formatted into a stack buffer and handed to the kernel with
 * one write(2), so lines from concurrent threads never interleave (writes
 * to a pipe or file of up to PIPE_BUF bytes are atomic; longer lines are
 * cut to the buffer). The level is an atomic read on every call, so a
 * disabled debug line costs one load. */
#include "log.h"

#include "err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* -1 until the first use reads VISREC_LOG_LEVEL or vr_log_set_level runs. */
static atomic_int log_level = -1;
static char log_component[64];

static const char *const level_names[] = { "DEBUG", "INFO", "WARN", "ERROR" };

int vr_log_parse_level(const char *s, enum vr_log_level *out)
{
	static const char *const names[] = { "debug", "info", "warn", "error" };
	if (!s)
		return VR_EINVAL;
	for (int i = 0; i < 4; i++) {
		if (!strcasecmp(s, names[i])) {
			*out = (enum vr_log_level)i;
			return 0;
		}
	}
	if (!strcasecmp(s, "warning")) {
		*out = VR_LOG_WARN;
		return 0;
	}
	return VR_EINVAL;
}

void vr_log_set_level(enum vr_log_level level)
{
	atomic_store(&log_level, (int)level);
}

static int current_level(void)
{
	int level = atomic_load_explicit(&log_level, memory_order_relaxed);
	if (level >= 0)
		return level;
	enum vr_log_level parsed = VR_LOG_INFO;
	const char *env = getenv("VISREC_LOG_LEVEL");
	int bad = env && *env && vr_log_parse_level(env, &parsed) != 0;
	/* An explicit vr_log_set_level that raced with us wins. */
	int expected = -1;
	if (atomic_compare_exchange_strong(&log_level, &expected, (int)parsed) && bad)
		vr_log(VR_LOG_WARN, "VISREC_LOG_LEVEL=%s is not one of debug, info, warn, error; using info", env);
	return atomic_load(&log_level);
}

int vr_log_enabled(enum vr_log_level level)
{
	return (int)level >= current_level();
}

/* Called at start-up, before threads log. */
void vr_log_set_component(const char *name)
{
	snprintf(log_component, sizeof log_component, "%s", name ? name : "");
}

void vr_log(enum vr_log_level level, const char *fmt, ...)
{
	if ((int)level < current_level())
		return;
	if ((int)level < VR_LOG_DEBUG || (int)level > VR_LOG_ERROR)
		level = VR_LOG_ERROR;

	char line[4096];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s%s",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			 tm.tm_sec, ts.tv_nsec / 1000000, level_names[level],
			 log_component[0] ? log_component : "", log_component[0] ? ": " : "");
	if (n < 0)
		return;
	size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;

	va_list ap;
	va_start(ap, fmt);
	n = vsnprintf(line + len, sizeof line - len, fmt, ap);
	va_end(ap);
	int cut = 0;
	if (n > 0) {
		cut = (size_t)n >= sizeof line - len;
		len += cut ? sizeof line - len - 1 : (size_t)n;
	}
	if (cut) {
		len = sizeof line - 5;
		memcpy(line + len, "...", 3);
		len += 3;
	}
	/* Messages must not break the one-event-per-line format. */
	while (len > 0 && line[len - 1] == '\n')
		len--;
	line[len++] = '\n';

	const char *p = line;
	while (len > 0) {
		ssize_t w = write(STDERR_FILENO, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		len -= (size_t)w;
	}
}

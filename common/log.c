/* Logging for every visrec program: one line per event on stderr, UTC
 * timestamp with milliseconds, level, component, message (see log.h).
 *
 * Each line is formatted into a stack buffer and handed to the kernel with
 * one write(2), so lines from concurrent threads never interleave (writes
 * to a pipe or file of up to PIPE_BUF bytes are atomic; longer lines are
 * cut to the buffer). The level is an atomic read on every call, so a
 * disabled debug line costs one load.
 *
 * JSON lines are the same event: the message is formatted first, then
 * escaped into the object (vr_log_json_escape), and the call a server
 * thread serves is a thread-local pair of pointers set around its
 * handler, so no logging call site needs to pass it. */
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
static atomic_int log_format = VR_LOG_TEXT;
static _Thread_local const char *call_method, *call_peer;

static const char *const level_names[] = { "DEBUG", "INFO", "WARN", "ERROR" };
static const char *const json_levels[] = { "debug", "info", "warn", "error" };

int vr_log_parse_format(const char *s, enum vr_log_format *out)
{
	if (s && !strcasecmp(s, "text")) {
		*out = VR_LOG_TEXT;
		return 0;
	}
	if (s && !strcasecmp(s, "json")) {
		*out = VR_LOG_JSON;
		return 0;
	}
	return VR_EINVAL;
}

void vr_log_set_format(enum vr_log_format format)
{
	atomic_store(&log_format, (int)format);
}

enum vr_log_format vr_log_get_format(void)
{
	return (enum vr_log_format)atomic_load_explicit(&log_format, memory_order_relaxed);
}

void vr_log_set_call(const char *method, const char *peer)
{
	call_method = method;
	call_peer = peer;
}

/* The length of the valid UTF-8 sequence at s (1..4), or 0 when the bytes
 * there are no valid sequence (overlong forms, surrogates, values past
 * U+10FFFF, a cut sequence). s[0] >= 0x80. */
static int utf8_len(const unsigned char *s)
{
	unsigned char c = s[0];
	int n;
	unsigned char lo = 0x80, hi = 0xBF;
	if (c >= 0xC2 && c <= 0xDF)
		n = 2;
	else if (c >= 0xE0 && c <= 0xEF)
		n = 3;
	else if (c >= 0xF0 && c <= 0xF4)
		n = 4;
	else
		return 0;
	if (c == 0xE0)
		lo = 0xA0;
	else if (c == 0xED)
		hi = 0x9F;
	else if (c == 0xF0)
		lo = 0x90;
	else if (c == 0xF4)
		hi = 0x8F;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (int i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xBF)
			return 0;
	return n;
}

size_t vr_log_json_escape(char *out, size_t cap, const char *str, int *cut)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t len = 0;
	if (cut)
		*cut = 0;
	if (!cap)
		return 0;
	while (*s) {
		char esc[8];
		const char *piece = esc;
		size_t n;
		int adv = 1;
		if (*s == '"' || *s == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*s;
			n = 2;
		} else if (*s < 0x20) {
			static const char short_esc[] = { ['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n',
							   ['\r'] = 'r', ['\t'] = 't' };
			if (*s < sizeof short_esc && short_esc[*s]) {
				esc[0] = '\\';
				esc[1] = short_esc[*s];
				n = 2;
			} else {
				n = (size_t)snprintf(esc, sizeof esc, "\\u%04x", *s);
			}
		} else if (*s < 0x80) {
			piece = (const char *)s;
			n = 1;
		} else if ((adv = utf8_len(s)) > 0) {
			piece = (const char *)s;
			n = (size_t)adv;
		} else {
			piece = "\\ufffd";
			n = 6;
			adv = 1;
		}
		if (len + n + 1 > cap) {
			if (cut)
				*cut = 1;
			break;
		}
		memcpy(out + len, piece, n);
		len += n;
		s += adv;
	}
	out[len] = 0;
	return len;
}

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

static void write_all(const char *p, size_t len)
{
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

/* Appends ,"key":"value" (value escaped) to line at *len, within cap
 * bytes, keeping room for the closing "}\n". */
static void json_field(char *line, size_t cap, size_t *len, const char *key, const char *value)
{
	int n = snprintf(line + *len, cap - *len, ",\"%s\":\"", key);
	if (n < 0 || (size_t)n + 4 >= cap - *len)
		return;
	size_t at = *len + (size_t)n;
	at += vr_log_json_escape(line + at, cap - at - 3, value, NULL);
	line[at++] = '"';
	*len = at;
}

static void log_json(enum vr_log_level level, const char *stamp, const char *fmt, va_list ap)
{
	/* As the text line, at most PIPE_BUF bytes: one atomic write. */
	char msg[4096], line[4096];
	int n = vsnprintf(msg, sizeof msg, fmt, ap);
	if (n < 0)
		return;
	size_t mlen = (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
	while (mlen > 0 && msg[mlen - 1] == '\n')
		msg[--mlen] = 0;
	size_t len = (size_t)snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\"", stamp,
				      json_levels[level]);
	json_field(line, sizeof line, &len, "component", log_component);
	/* The message last but for the call, so a cut message still leaves
	 * room for the call's fields. */
	json_field(line, sizeof line - 512, &len, "msg", msg);
	if (call_method)
		json_field(line, sizeof line, &len, "method", call_method);
	if (call_peer)
		json_field(line, sizeof line, &len, "peer", call_peer);
	line[len++] = '}';
	line[len++] = '\n';
	write_all(line, len);
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
	char stamp[64];
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
	va_list ap;
	if (vr_log_get_format() == VR_LOG_JSON) {
		va_start(ap, fmt);
		log_json(level, stamp, fmt, ap);
		va_end(ap);
		return;
	}
	int n = snprintf(line, sizeof line, "%s %s %s%s", stamp, level_names[level],
			 log_component[0] ? log_component : "", log_component[0] ? ": " : "");
	if (n < 0)
		return;
	size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;

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
	write_all(line, len);
}

/* Logging: one line per event on stderr, "2026-11-27T07:18:12.123Z LEVEL
 * component: message". Thread-safe (each line is written with one write(2)).
 * The level comes from vr_log_set_level() or the VISREC_LOG_LEVEL
 * environment variable (debug, info, warn, error); the default is info.
 *
 * JSON (vr_log_set_format(VR_LOG_JSON), a daemon's --log-format json):
 * one object a line, {"ts":"2026-11-27T07:18:12.123Z","level":"info",
 * "component":"featured","msg":"..."}, plus "method" and "peer" when the
 * line is logged while the thread serves a call (vr_log_set_call). Strings
 * are escaped so that any bytes make valid JSON: quote, backslash and
 * control characters escaped, invalid UTF-8 replaced by U+FFFD. */
#ifndef VR_LOG_H
#define VR_LOG_H

#include <stddef.h>

enum vr_log_level { VR_LOG_DEBUG = 0, VR_LOG_INFO, VR_LOG_WARN, VR_LOG_ERROR };
enum vr_log_format { VR_LOG_TEXT = 0, VR_LOG_JSON };

void vr_log_set_level(enum vr_log_level level);
/* Parses "debug", "info", "warn", "error"; returns 0 or VR_EINVAL. */
int vr_log_parse_level(const char *s, enum vr_log_level *out);
int vr_log_enabled(enum vr_log_level level);
/* Parses "text" or "json"; returns 0 or VR_EINVAL. Set the format at
 * start-up, before threads log. */
int vr_log_parse_format(const char *s, enum vr_log_format *out);
void vr_log_set_format(enum vr_log_format format);
enum vr_log_format vr_log_get_format(void);
/* The call the calling thread serves from now on (method path and client
 * address, both must outlive it), NULLs when done: JSON lines logged
 * meanwhile carry them. */
void vr_log_set_call(const char *method, const char *peer);
/* Writes s as the inside of a JSON string (no quotes) into out, NUL-
 * terminated, never cutting an escape or a UTF-8 sequence; returns the
 * bytes written (without the NUL), and sets *cut when s did not fit. */
size_t vr_log_json_escape(char *out, size_t cap, const char *s, int *cut);
/* Sets the component name printed on every line (e.g. "featured"). */
void vr_log_set_component(const char *name);
void vr_log(enum vr_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define VR_DEBUG(...) do { if (vr_log_enabled(VR_LOG_DEBUG)) vr_log(VR_LOG_DEBUG, __VA_ARGS__); } while (0)
#define VR_INFO(...) vr_log(VR_LOG_INFO, __VA_ARGS__)
#define VR_WARN(...) vr_log(VR_LOG_WARN, __VA_ARGS__)
#define VR_ERROR(...) vr_log(VR_LOG_ERROR, __VA_ARGS__)

#endif

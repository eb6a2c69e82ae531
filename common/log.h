/* Logging: one line per event on stderr, "2026-11-27T07:18:12.123Z LEVEL
 * component: message". Thread-safe (each line is written with one write(2)).
 * The level comes from vr_log_set_level() or the VISREC_LOG_LEVEL
 * environment variable (debug, info, warn, error); the default is info. */
#ifndef VR_LOG_H
#define VR_LOG_H

enum vr_log_level { VR_LOG_DEBUG = 0, VR_LOG_INFO, VR_LOG_WARN, VR_LOG_ERROR };

void vr_log_set_level(enum vr_log_level level);
/* Parses "debug", "info", "warn", "error"; returns 0 or VR_EINVAL. */
int vr_log_parse_level(const char *s, enum vr_log_level *out);
int vr_log_enabled(enum vr_log_level level);
/* Sets the component name printed on every line (e.g. "featured"). */
void vr_log_set_component(const char *name);
void vr_log(enum vr_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define VR_DEBUG(...) do { if (vr_log_enabled(VR_LOG_DEBUG)) vr_log(VR_LOG_DEBUG, __VA_ARGS__); } while (0)
#define VR_INFO(...) vr_log(VR_LOG_INFO, __VA_ARGS__)
#define VR_WARN(...) vr_log(VR_LOG_WARN, __VA_ARGS__)
#define VR_ERROR(...) vr_log(VR_LOG_ERROR, __VA_ARGS__)

#endif

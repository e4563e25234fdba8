/*
 * One logger for the daemon and the CLI.
 *
 * Lines look like the seeds' log lines:
 *   [2025-11-12T16:58:05Z] [info] models_synced files=3 bytes=123 ms=40
 * Levels are syslog's. The threshold is the only global besides the
 * filesystem context; it is tested before any formatting happens.
 * Secrets must never be passed to these functions.
 */
#ifndef HFS_LOG_H
#define HFS_LOG_H

#include <syslog.h>

extern int hlog_threshold; /* LOG_INFO by default */

/* Send lines to @path (appended, created 0600). Returns 0 or -errno. */
int hlog_open_file(const char *path);
/* Send lines to stderr (the default). */
void hlog_use_stderr(void);
/* Parses "debug", "info", "notice", "warning", "error"; -1 if unknown. */
int hlog_parse_level(const char *name);

/* Writes one line. Control characters in the message (a file name may
 * hold any) are escaped as by hlog_escape, so a line stays one line. */
void hlog_write(int level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * Copies the first @len bytes of @in to @out (@outlen bytes, always
 * NUL-terminated if @outlen > 0) with control characters made visible:
 * \t, \n, \r, other C0 controls and DEL as \xHH, C1 controls (UTF-8
 * U+0080..U+009F) as \u00HH. Returns the length the whole result needs
 * (without the NUL), as snprintf does.
 */
size_t hlog_escape(char *out, size_t outlen, const char *in, size_t len);

#define hlog(level, ...)                                  \
	do {                                              \
		if ((level) <= hlog_threshold)            \
			hlog_write((level), __VA_ARGS__); \
	} while (0)

#define hlog_err(...) hlog(LOG_ERR, __VA_ARGS__)
#define hlog_warn(...) hlog(LOG_WARNING, __VA_ARGS__)
#define hlog_info(...) hlog(LOG_INFO, __VA_ARGS__)
#define hlog_debug(...) hlog(LOG_DEBUG, __VA_ARGS__)

#endif

/*
 * The logger.
 *
 * Every line is formatted completely in memory ("[ts] [level] message\n")
 * and then handed to the kernel with write(2) while holding log_lock, so
 * lines from different threads never interleave, even on a pipe or a file
 * opened O_APPEND by another process. stdio is not used: it would add a
 * second buffer whose flushing we would have to reason about.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "hfs/log.h"

int hlog_threshold = LOG_INFO;

/* Serialises writes and changes of log_fd. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
/* Where lines go; protected by log_lock. STDERR_FILENO is never closed. */
static int log_fd = STDERR_FILENO;

/* Longest line we format; longer messages are truncated. */
#define HLOG_MAX_LINE (64 * 1024)

static const struct {
	const char *name;
	int level;
} level_names[] = {
	{"debug", LOG_DEBUG},	  {"info", LOG_INFO}, {"notice", LOG_NOTICE},
	{"warning", LOG_WARNING}, {"error", LOG_ERR},
};

static const char *level_name(int level)
{
	if (level <= LOG_ERR)
		return "error";
	if (level == LOG_WARNING)
		return "warning";
	if (level == LOG_NOTICE)
		return "notice";
	if (level == LOG_INFO)
		return "info";
	return "debug";
}

int hlog_parse_level(const char *name)
{
	size_t i;

	if (!name)
		return -1;
	for (i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcasecmp(name, level_names[i].name) == 0)
			return level_names[i].level;
	}
	return -1;
}

static void swap_fd(int fd)
{
	int old;

	pthread_mutex_lock(&log_lock);
	old = log_fd;
	log_fd = fd;
	pthread_mutex_unlock(&log_lock);
	if (old != STDERR_FILENO && old != fd)
		close(old);
}

int hlog_open_file(const char *path)
{
	int fd;

	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY,
		  0600);
	if (fd < 0)
		return -errno;
	swap_fd(fd);
	return 0;
}

void hlog_use_stderr(void)
{
	swap_fd(STDERR_FILENO);
}

/* Writes all of @buf, retrying after EINTR and short writes. */
static void write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return; /* Nowhere left to report this. */
		}
		buf += n;
		len -= (size_t)n;
	}
}

/*
 * Formats the prefix and message into @buf (@size bytes). Returns the length
 * the complete line would have, including the newline but not the NUL.
 */
static size_t format_line(char *buf, size_t size, const char *prefix,
			  const char *fmt, va_list ap)
{
	size_t plen = strlen(prefix);
	size_t len;
	int n;

	if (size > plen)
		memcpy(buf, prefix, plen + 1);
	n = vsnprintf(size > plen ? buf + plen : NULL,
		      size > plen ? size - plen : 0, fmt, ap);
	if (n < 0)
		n = 0;
	len = plen + (size_t)n;
	/* Messages may or may not end in a newline; lines always do. */
	if (len < size && n > 0 && buf[len - 1] == '\n')
		return len;
	return len + 1;
}

size_t hlog_escape(char *out, size_t outlen, const char *in, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)in;
	char tmp[8];
	size_t n = 0, i, k, tl;

	for (i = 0; i < len; i++) {
		unsigned char c = p[i];

		tl = 0;
		if (c == '\t' || c == '\n' || c == '\r') {
			tmp[tl++] = '\\';
			tmp[tl++] = c == '\t' ? 't' : c == '\n' ? 'n' : 'r';
		} else if (c < 0x20 || c == 0x7f) {
			tmp[tl++] = '\\';
			tmp[tl++] = 'x';
			tmp[tl++] = hex[c >> 4];
			tmp[tl++] = hex[c & 15];
		} else if (c == 0xc2 && i + 1 < len && p[i + 1] >= 0x80 &&
			   p[i + 1] <= 0x9f) {
			c = p[++i];
			memcpy(tmp, "\\u00", 4);
			tl = 4;
			tmp[tl++] = hex[c >> 4];
			tmp[tl++] = hex[c & 15];
		} else {
			tmp[tl++] = (char)c;
		}
		for (k = 0; k < tl; k++, n++)
			if (n + 1 < outlen)
				out[n] = tmp[k];
	}
	if (outlen)
		out[n < outlen ? n : outlen - 1] = '\0';
	return n;
}

/* True if bytes [@from, @to) of @s hold something hlog_escape changes. */
static bool needs_escape(const char *s, size_t from, size_t to)
{
	const unsigned char *p = (const unsigned char *)s;

	for (size_t i = from; i < to; i++)
		if (p[i] < 0x20 || p[i] == 0x7f ||
		    (p[i] == 0xc2 && i + 1 < to && p[i + 1] >= 0x80 &&
		     p[i + 1] <= 0x9f))
			return true;
	return false;
}

void hlog_write(int level, const char *fmt, ...)
{
	char stack[1024];
	char prefix[64];
	char ts[32];
	char *buf = stack;
	size_t len;
	struct tm tm;
	time_t now;
	va_list ap;
	int saved_errno = errno; /* Callers may log between a call and errno. */

	now = time(NULL);
	if (!gmtime_r(&now, &tm) ||
	    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		strcpy(ts, "1970-01-01T00:00:00Z");
	snprintf(prefix, sizeof(prefix), "[%s] [%s] ", ts, level_name(level));

	va_start(ap, fmt);
	len = format_line(stack, sizeof(stack), prefix, fmt, ap);
	va_end(ap);

	if (len >= sizeof(stack)) {
		size_t size = len < HLOG_MAX_LINE ? len + 1 : HLOG_MAX_LINE;
		char *big = malloc(size);

		if (big) {
			buf = big;
			va_start(ap, fmt);
			len = format_line(big, size, prefix, fmt, ap);
			va_end(ap);
			if (len >= size)
				len = size - 1;
		} else {
			len = sizeof(stack) - 1;
		}
	}
	buf[len - 1] = '\n';

	/* The message may name files with any byte in their names. */
	size_t plen = strlen(prefix);
	if (len > plen && needs_escape(buf, plen, len - 1)) {
		size_t need = hlog_escape(NULL, 0, buf + plen, len - 1 - plen);
		size_t size = plen + need + 2;
		if (size > HLOG_MAX_LINE)
			size = HLOG_MAX_LINE;
		char *esc = malloc(size);

		if (esc) {
			memcpy(esc, buf, plen);
			hlog_escape(esc + plen, size - plen - 1, buf + plen,
				    len - 1 - plen);
			len = strlen(esc) + 1;
			esc[len - 1] = '\n';
			if (buf != stack)
				free(buf);
			buf = esc;
		}
	}

	pthread_mutex_lock(&log_lock);
	write_all(log_fd, buf, len);
	pthread_mutex_unlock(&log_lock);

	if (buf != stack)
		free(buf);
	errno = saved_errno;
}

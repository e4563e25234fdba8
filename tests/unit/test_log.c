/*
 * Unit tests for the logger (hfs/log.h): control characters are escaped,
 * in hlog_escape and in the lines hlog_write writes.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hfs/log.h"

#define CHECK(expr)                                                            \
	do {                                                                   \
		if (!(expr)) {                                                 \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
				__LINE__, #expr);                              \
			exit(1);                                               \
		}                                                              \
	} while (0)

static void check_escape(int line, const char *in, const char *want)
{
	char out[256];
	size_t n = hlog_escape(out, sizeof(out), in, strlen(in));

	if (strcmp(out, want) != 0 || n != strlen(want)) {
		fprintf(stderr,
			"%s:%d: hlog_escape gave \"%s\" (%zu), want "
			"\"%s\"\n",
			__FILE__, line, out, n, want);
		exit(1);
	}
}

#define ESC(in, want) check_escape(__LINE__, in, want)

static void test_escape(void)
{
	char small[6];

	ESC("plain name.txt", "plain name.txt");
	ESC("bad\r", "bad\\r");
	ESC("a\nb\tc", "a\\nb\\tc");
	ESC("\x1b[2J\x07\x7f", "\\x1b[2J\\x07\\x7f");
	ESC("caf\xc3\xa9 \xf0\x9f\x98\x80", "caf\xc3\xa9 \xf0\x9f\x98\x80");
	ESC("c1\xc2\x85\xc2\x9b", "c1\\u0085\\u009b");
	ESC("nbsp\xc2\xa0", "nbsp\xc2\xa0");
	ESC("back\\slash", "back\\slash");
	/* Truncated output: NUL-terminated, the full length returned. */
	CHECK(hlog_escape(small, sizeof(small), "ab\rcd", 5) == 6);
	CHECK(strcmp(small, "ab\\rc") == 0);
	CHECK(hlog_escape(NULL, 0, "\r\r", 2) == 4);
	/* An embedded NUL within @len is escaped too. */
	CHECK(hlog_escape(small, sizeof(small), "a\0b", 3) == 6);
	CHECK(strcmp(small, "a\\x00") == 0);
}

static void test_lines(void)
{
	char dir[] = "/tmp/hfs-test-log-XXXXXX", path[64], buf[4096];
	ssize_t n;
	int fd;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/log", dir);
	CHECK(hlog_open_file(path) == 0);
	hlog_threshold = LOG_DEBUG;
	hlog_info("upload of \"%s\" failed", "/runs/bad\r\x1b[31m");
	hlog_info("plain %d", 42);
	hlog_info("ends in a newline\n");
	hlog_use_stderr();
	fd = open(path, O_RDONLY);
	CHECK(fd >= 0);
	n = read(fd, buf, sizeof(buf) - 1);
	CHECK(n > 0);
	buf[n] = '\0';
	close(fd);
	CHECK(strstr(buf, "upload of \"/runs/bad\\r\\x1b[31m\" failed\n"));
	CHECK(strstr(buf, "] [info] plain 42\n"));
	CHECK(strstr(buf, "] [info] ends in a newline\n"));
	CHECK(!strchr(buf, '\r') && !strchr(buf, '\x1b'));
	/* Three lines, each with its prefix. */
	int lines = 0;
	for (char *p = buf; (p = strchr(p, '\n')); p++)
		lines++;
	CHECK(lines == 3);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	test_escape();
	test_lines();
	printf("log: ok\n");
	return 0;
}

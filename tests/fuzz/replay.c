/*
 * Replays a corpus through one fuzz target without libFuzzer: a plain
 * main() that calls LLVMFuzzerInitialize once, then LLVMFuzzerTestOneInput
 * on every file named on the command line, and on every regular file
 * directly inside each directory named there (in name order, so a failure
 * is reproducible). Built in every configuration, with gcc too, so that the
 * seed corpus and every past crash run as regression tests (meson suite
 * "unit").
 *
 * Exit status: 0 when every input ran, 1 when an argument cannot be read
 * or no input was found at all (a misconfigured test must not pass
 * silently). A bug in the code under test crashes the process instead.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

/* Inputs larger than this are refused (libFuzzer's own default is 1 MiB). */
#define REPLAY_MAX_BYTES ((size_t)16 * 1024 * 1024)

/* Reads all of @path into a malloc'd buffer of exactly its size. */
static int read_all(const char *path, uint8_t **out, size_t *len)
{
	uint8_t *buf = NULL;
	struct stat st;
	size_t got = 0;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	if ((uint64_t)st.st_size > REPLAY_MAX_BYTES) {
		rc = -EFBIG;
		goto out;
	}
	/* An exact-size allocation lets ASan see a read one byte too far;
	 * malloc(0) may return NULL, so allocate at least one byte. */
	buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!buf) {
		rc = -ENOMEM;
		goto out;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	*out = buf;
	*len = got;
	buf = NULL;
out:
	free(buf);
	close(fd);
	return rc;
}

static int run_file(const char *path, size_t *count)
{
	uint8_t *data = NULL;
	size_t len = 0;
	int rc;

	rc = read_all(path, &data, &len);
	if (rc < 0) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(-rc));
		return rc;
	}
	LLVMFuzzerTestOneInput(data, len);
	free(data);
	(*count)++;
	return 0;
}

static int cmp_names(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int run_dir(const char *dir, size_t *count)
{
	struct dirent **names;
	char path[4096];
	struct stat st;
	int i, n, rc = 0;

	n = scandir(dir, &names, NULL, cmp_names);
	if (n < 0) {
		rc = -errno;
		fprintf(stderr, "replay: %s: %s\n", dir, strerror(-rc));
		return rc;
	}
	for (i = 0; i < n; i++) {
		if (rc == 0 && names[i]->d_name[0] != '.') {
			snprintf(path, sizeof(path), "%s/%s", dir,
				 names[i]->d_name);
			if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
				rc = run_file(path, count);
		}
		free(names[i]);
	}
	free(names);
	return rc;
}

int main(int argc, char **argv)
{
	size_t count = 0;
	struct stat st;
	int i;

	LLVMFuzzerInitialize(&argc, &argv);
	for (i = 1; i < argc; i++) {
		if (stat(argv[i], &st) < 0) {
			fprintf(stderr, "replay: %s: %s\n", argv[i],
				strerror(errno));
			return 1;
		}
		if ((S_ISDIR(st.st_mode) ? run_dir(argv[i], &count)
					 : run_file(argv[i], &count)) < 0)
			return 1;
	}
	if (count == 0) {
		fprintf(stderr, "replay: no input files\n");
		return 1;
	}
	printf("replay: %zu inputs ran\n", count);
	return 0;
}

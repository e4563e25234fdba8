/*
 * What every fuzz target in tests/fuzz/ provides, and two helpers they
 * share.
 *
 * A target is one .c file with the two libFuzzer entry points below. It is
 * linked either with libFuzzer (clang -fsanitize=fuzzer, -Dfuzz=true) or
 * with replay.c, a plain main() that feeds it every file of a corpus, so the
 * same code runs under the fuzzer and in every normal test run.
 *
 * A target reports a bug by crashing: a sanitizer report, or abort() via
 * FUZZ_CHECK when a property the headers promise does not hold.
 */
#ifndef HFS_FUZZ_H
#define HFS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Called once before the first input. Returns 0. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
/* Runs one input. Returns 0; never keeps a reference to @data. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts, naming the check, when @expr is false. */
#define FUZZ_CHECK(expr)                                                \
	do {                                                            \
		if (!(expr)) {                                          \
			fprintf(stderr, "%s:%d: property failed: %s\n", \
				__FILE__, __LINE__, #expr);             \
			abort();                                        \
		}                                                       \
	} while (0)

/*
 * Returns a malloc'd copy of @data[0..@size) with a NUL appended (a C string
 * that ends at the first NUL of the input). Aborts on ENOMEM: a fuzz target
 * has nobody to return it to.
 */
static inline char *fuzz_strndup(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (!s)
		abort();
	if (size)
		memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

/*
 * Splits @data at its first '\n' into two malloc'd C strings: *@a before
 * it, *@b after it ("" if there is no newline). The caller frees both.
 */
static inline void fuzz_split(const uint8_t *data, size_t size, char **a,
			      char **b)
{
	const uint8_t *nl = size ? memchr(data, '\n', size) : NULL;
	size_t n = nl ? (size_t)(nl - data) : size;

	*a = fuzz_strndup(data, n);
	*b = nl ? fuzz_strndup(nl + 1, size - n - 1) : fuzz_strndup(data, 0);
}

#endif

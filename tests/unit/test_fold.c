/*
 * Unit tests for name folding (hfs/fold.h): the cases where Dropbox's
 * rule (simple lowercase) differs from other foldings, normalization,
 * length changes, invalid UTF-8, bounded buffers, and, over every code
 * point, the length bound and idempotence that fold.h promises.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hfs/fold.h"

#define CHECK(expr)                                                            \
	do {                                                                   \
		if (!(expr)) {                                                 \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
				__LINE__, #expr);                              \
			exit(1);                                               \
		}                                                              \
	} while (0)

/* fold_name of @in is exactly @want. */
static void expect_fold(const char *in, const char *want)
{
	char out[FOLD_NAME_MAX + 1];
	int n = fold_name(in, strlen(in), out, sizeof(out));

	if (n < 0 || strcmp(out, want) != 0) {
		fprintf(stderr, "fold(\"%s\") = %d \"%s\", want \"%s\"\n", in,
			n, n < 0 ? "" : out, want);
		exit(1);
	}
	CHECK((size_t)n == strlen(want));
	CHECK(fold_equal(in, want));
}

static void test_ascii(void)
{
	expect_fold("", "");
	expect_fold("Data", "data");
	expect_fold("AbZ@[`{az09.-_", "abz@[`{az09.-_");
	expect_fold("model_METADATA.json", "model_metadata.json");
	CHECK(fold_equal("Data", "DATA"));
	CHECK(!fold_equal("data", "data2"));
	CHECK(!fold_equal("a.txt", "b.txt"));
}

static void test_unicode(void)
{
	/* Café and CAFÉ are one name; both spellings of é too (NFC). */
	expect_fold("Caf\xc3\xa9", "caf\xc3\xa9");
	expect_fold("CAF\xc3\x89", "caf\xc3\xa9");
	expect_fold("Cafe\xcc\x81", "caf\xc3\xa9");
	expect_fold("CAFE\xcc\x81", "caf\xc3\xa9");
	CHECK(fold_equal("Caf\xc3\xa9", "CAF\xc3\x89"));
	CHECK(fold_equal("Caf\xc3\xa9", "cafe\xcc\x81"));
	CHECK(!fold_equal("Caf\xc3\xa9", "Cafe"));

	/* ß has no simple lowercase other than itself: no ß -> ss. The
	 * capital sharp s lowers to ß (3 bytes -> 2). */
	expect_fold("Stra\xc3\x9f"
		    "e",
		    "stra\xc3\x9f"
		    "e");
	CHECK(!fold_equal("Stra\xc3\x9f"
			  "e",
			  "STRASSE"));
	expect_fold("STRA\xe1\xba\x9e"
		    "E",
		    "stra\xc3\x9f"
		    "e");

	/* Greek sigma: Σ is σ wherever it stands (no final-sigma
	 * context); ς is a letter of its own. */
	expect_fold("\xce\xa3\xce\x9f\xce\xa6\xce\x9f\xce\xa3",
		    "\xcf\x83\xce\xbf\xcf\x86\xce\xbf\xcf\x83");
	expect_fold("\xcf\x83\xce\xbf\xcf\x86\xce\xbf\xcf\x82",
		    "\xcf\x83\xce\xbf\xcf\x86\xce\xbf\xcf\x82");
	CHECK(!fold_equal("\xce\xa3\xce\x9f\xce\xa6\xce\x9f\xce\xa3",
			  "\xcf\x83\xce\xbf\xcf\x86\xce\xbf\xcf\x82"));

	/* Turkish: İ lowers to i (2 bytes -> 1); dotless ı stays. */
	expect_fold("\xc4\xb0stanbul", "istanbul");
	CHECK(fold_equal("\xc4\xb0stanbul", "ISTANBUL"));
	expect_fold("\xc4\xb1stanbul", "\xc4\xb1stanbul");
	CHECK(!fold_equal("\xc4\xb1stanbul", "istanbul"));

	/* Length changes: the Kelvin sign (3 bytes) lowers to k (1); Ⱥ
	 * (2 bytes) to ⱥ (3); U+1D160 (4 bytes) is excluded from
	 * composition and normalizes to three code points (12 bytes). */
	expect_fold("\xe2\x84\xaa", "k");
	CHECK(fold_equal("\xe2\x84\xaa", "K"));
	expect_fold("\xc8\xba", "\xe2\xb1\xa5");
	expect_fold("\xf0\x9d\x85\xa0",
		    "\xf0\x9d\x85\x98\xf0\x9d\x85\xa5\xf0\x9d\x85\xae");

	/* Cyrillic and CJK. */
	expect_fold("\xd0\x94\xd0\x90\xd0\x9d\xd0\x9d\xd0\xab\xd0\x95",
		    "\xd0\xb4\xd0\xb0\xd0\xbd\xd0\xbd\xd1\x8b\xd0\xb5");
	expect_fold("\xe6\x95\xb0\xe6\x8d\xae", "\xe6\x95\xb0\xe6\x8d\xae");
}

static void test_invalid(void)
{
	/* Not UTF-8: ASCII letters lowered, every other byte kept. */
	expect_fold("ABC\xff", "abc\xff");
	expect_fold("\xc3(X", "\xc3(x");
	expect_fold("\xed\xa0\x80Z", "\xed\xa0\x80z"); /* a surrogate */
	expect_fold("\xc0\xafQ", "\xc0\xafq"); /* overlong '/' */
	CHECK(fold_equal("DATA\xff", "data\xff"));
	CHECK(!fold_equal("data\xff", "data\xfe"));
	/* The bytewise fold of an invalid name never meets a valid one. */
	CHECK(!fold_equal("caf\xe9", "caf\xc3\xa9"));
}

static void test_bounds(void)
{
	char out[16], name[BACKEND_NAME_MAX + 1], big[FOLD_NAME_MAX + 1];

	/* Exactly enough room, and one byte short. */
	CHECK(fold_name("ABCD", 4, out, 5) == 4 && strcmp(out, "abcd") == 0);
	CHECK(fold_name("ABCD", 4, out, 4) == -ENAMETOOLONG);
	CHECK(fold_name("\xc8\xba", 2, out, 4) == 3);
	CHECK(fold_name("\xc8\xba", 2, out, 3) == -ENAMETOOLONG);
	CHECK(fold_name("", 0, out, 1) == 0 && out[0] == '\0');
	CHECK(fold_name("", 0, out, 0) == -ENAMETOOLONG);
	/* Only @len bytes are read. */
	CHECK(fold_name("ABCD", 2, out, sizeof(out)) == 2 &&
	      strcmp(out, "ab") == 0);

	/* The longest growth of a longest name fits FOLD_NAME_MAX. */
	for (size_t i = 0; i + 4 <= BACKEND_NAME_MAX; i += 4)
		memcpy(name + i, "\xf0\x9d\x85\xa0", 4);
	name[BACKEND_NAME_MAX / 4 * 4] = '\0';
	int n = fold_name(name, strlen(name), big, sizeof(big));
	CHECK(n == 3 * (BACKEND_NAME_MAX / 4 * 4));
	CHECK(n <= FOLD_NAME_MAX);
	CHECK(fold_name(name, strlen(name), big, (size_t)n) == -ENAMETOOLONG);
}

static void test_path(void)
{
	char out[64], *dup;

	CHECK(fold_path("", out, sizeof(out)) == 0 && out[0] == '\0');
	CHECK(fold_path("/Data/Candles/SOL.parquet", out, sizeof(out)) > 0);
	CHECK(strcmp(out, "/data/candles/sol.parquet") == 0);
	CHECK(fold_path("/CAF\xc3\x89/Cafe\xcc\x81", out, sizeof(out)) > 0);
	CHECK(strcmp(out, "/caf\xc3\xa9/caf\xc3\xa9") == 0);
	CHECK(fold_path("/ABCDEFGH", out, 9) == -ENAMETOOLONG);
	CHECK(fold_path("/ABCDEFG", out, 9) == 8);
	CHECK(fold_path_dup("/\xc4\xb0/\xe2\x84\xaa", &dup) == 0);
	CHECK(strcmp(dup, "/i/k") == 0);
	free(dup);
}

/* Every code point: fold.h's length bound holds, and folding twice
 * changes nothing. */
static void test_all_code_points(void)
{
	for (uint32_t cp = 1; cp < 0x110000; cp++) {
		char in[8], out[16], again[16];
		size_t len;

		if (cp >= 0xd800 && cp <= 0xdfff)
			continue;
		if (cp < 0x80) {
			in[0] = (char)cp;
			len = 1;
		} else if (cp < 0x800) {
			in[0] = (char)(0xc0 | (cp >> 6));
			in[1] = (char)(0x80 | (cp & 0x3f));
			len = 2;
		} else if (cp < 0x10000) {
			in[0] = (char)(0xe0 | (cp >> 12));
			in[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
			in[2] = (char)(0x80 | (cp & 0x3f));
			len = 3;
		} else {
			in[0] = (char)(0xf0 | (cp >> 18));
			in[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
			in[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
			in[3] = (char)(0x80 | (cp & 0x3f));
			len = 4;
		}
		int n = fold_name(in, len, out, FOLD_RATIO * len + 1);
		if (n < 0) {
			fprintf(stderr, "U+%04X: %d\n", (unsigned)cp, n);
			exit(1);
		}
		int m = fold_name(out, (size_t)n, again, sizeof(again));
		if (m != n || memcmp(out, again, (size_t)n) != 0) {
			fprintf(stderr, "U+%04X: not idempotent\n",
				(unsigned)cp);
			exit(1);
		}
	}
}

int main(void)
{
	test_ascii();
	test_unicode();
	test_invalid();
	test_bounds();
	test_path();
	test_all_code_points();
	printf("test_fold: all checks passed\n");
	return 0;
}

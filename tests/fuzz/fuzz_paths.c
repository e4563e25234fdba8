/*
 * Fuzz target for path handling and the content hash.
 *
 * - backend_name_ok (hfs/backend.h) on the input as one string, checked
 *   against the rules it states, with jansson's UTF-8 validator as an
 *   independent judge of "well-formed UTF-8".
 * - fold_name (hfs/fold.h) on the raw bytes.
 * - glob_match and cat_classify (hfs/category.h) with the input split at
 *   its first newline into a pattern and a path.
 * - The content hash (hfs/hash.h): chash_buf (one shot), chash_update with
 *   chunk sizes taken from the input, chash_fd and a reference written here
 *   from dropbox-api.md section 9 must all agree (abort() otherwise). An
 *   input that starts with the byte BIG_MAGIC does only this, on a stream
 *   of about one or two 4 MiB blocks built from the input, so that block
 *   boundaries are crossed; every other input hashes its own bytes.
 * - chash_from_hex / chash_to_hex round trips.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "fuzz.h"
#include "hfs/backend.h"
#include "hfs/category.h"
#include "hfs/fold.h"
#include "hfs/hash.h"

/* First byte that selects the multi-block hash mode. */
#define BIG_MAGIC 0xB7

static int memfd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	memfd = memfd_create("fuzz_paths", MFD_CLOEXEC);
	if (memfd < 0) {
		perror("fuzz_paths: memfd_create");
		abort();
	}
	return 0;
}

/* ---- names ---- */

static void fuzz_name(const char *s)
{
	size_t len = strlen(s);
	bool ok = backend_name_ok(s);
	bool rules, utf8;
	json_t *j;

	rules = len >= 1 && len <= BACKEND_NAME_MAX && strcmp(s, ".") != 0 &&
		strcmp(s, "..") != 0 && s[len - 1] != ' ' &&
		!strpbrk(s, "/\\\x7f");
	j = json_stringn(s, len);
	utf8 = j != NULL;
	json_decref(j);
	FUZZ_CHECK(ok == (rules && utf8));
}

static char fold_ascii(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/*
 * fold_name on the raw bytes (up to the first NUL): it never fails with
 * the capacity fold.h promises, it is idempotent, ASCII and invalid UTF-8
 * (jansson's judgement) fold bytewise, and fold_equal agrees.
 */
static void fuzz_fold(const uint8_t *data, size_t size)
{
	char *in = fuzz_strndup(data, size);
	size_t len = strlen(in), cap = FOLD_RATIO * len + 1, i;
	char *out = malloc(cap);
	char *again = malloc(cap);
	json_t *j;
	int n, m;

	if (!out || !again)
		abort();
	n = fold_name(in, len, out, cap);
	FUZZ_CHECK(n >= 0 && (size_t)n < cap && out[n] == '\0');
	m = fold_name(out, (size_t)n, again, cap);
	FUZZ_CHECK(m == n && memcmp(again, out, (size_t)n) == 0);
	j = json_stringn(in, len);
	bool ascii = true;
	for (i = 0; i < len; i++)
		if ((unsigned char)in[i] >= 0x80)
			ascii = false;
	if (ascii || !j) {
		FUZZ_CHECK((size_t)n == len);
		for (i = 0; i < len; i++)
			FUZZ_CHECK(out[i] == fold_ascii(in[i]));
	}
	json_decref(j);
	FUZZ_CHECK(fold_equal(in, out));
	/* Too small a buffer is an error, never an overflow. */
	if (n > 0)
		FUZZ_CHECK(fold_name(in, len, out, (size_t)n) == -ENAMETOOLONG);
	free(again);
	free(out);
	free(in);
}

/* ---- globs and categories ---- */

static void fuzz_glob(const uint8_t *data, size_t size)
{
	struct cat_rule rule;
	char *pattern, *path, *deeper;
	bool hit;
	int cat;

	fuzz_split(data, size, &pattern, &path);
	hit = glob_match(pattern, path);

	/* A user rule is tried first: a path it matches gets its category.
	 * (cat_classify strips leading slashes, glob_match does not.) */
	rule.pattern = pattern;
	rule.cat = (int)(size % CAT_COUNT);
	cat = cat_classify(&rule, 1, path);
	FUZZ_CHECK(cat >= 0 && cat < CAT_COUNT);
	if (hit && path[0] != '/')
		FUZZ_CHECK(cat == rule.cat);
	cat = cat_classify(NULL, 0, path);
	FUZZ_CHECK(cat >= 0 && cat < CAT_COUNT);

	/* A pattern without '/' matches the last component at any depth. */
	if (!strchr(pattern, '/')) {
		if (asprintf(&deeper, "x/y/%s", path) < 0)
			abort();
		FUZZ_CHECK(glob_match(pattern, deeper) == hit);
		free(deeper);
	}
	/* Text without wildcards matches itself. */
	if (!strpbrk(path, "*?["))
		FUZZ_CHECK(glob_match(path, path));
	free(pattern);
	free(path);
}

/* ---- content hash ---- */

/* dropbox-api.md section 9, written independently of src/hash.c. */
static void reference_hash(const uint8_t *buf, size_t len,
			   uint8_t out[CHASH_LEN])
{
	size_t nblocks = (len + CHASH_BLOCK - 1) / CHASH_BLOCK, i;
	uint8_t *digests = malloc(nblocks ? nblocks * CHASH_LEN : 1);
	unsigned int dlen;

	if (!digests)
		abort();
	for (i = 0; i < nblocks; i++) {
		size_t off = i * CHASH_BLOCK;
		size_t n = len - off < CHASH_BLOCK ? len - off : CHASH_BLOCK;

		if (!EVP_Digest(buf + off, n, digests + i * CHASH_LEN, &dlen,
				EVP_sha256(), NULL))
			abort();
	}
	if (!EVP_Digest(digests, nblocks * CHASH_LEN, out, &dlen, EVP_sha256(),
			NULL))
		abort();
	free(digests);
}

/* The size of the next chunk, chosen by input byte @b. */
static size_t chunk_size(uint8_t b, bool big)
{
	static const size_t sizes[] = {
		0,
		1,
		4095,
		65536,
		1024 * 1024 - 1,
		CHASH_BLOCK - 1,
		CHASH_BLOCK,
		CHASH_BLOCK + 1,
		3 * 1024 * 1024 + 7,
	};

	if (big)
		return sizes[b % (sizeof(sizes) / sizeof(sizes[0]))];
	return b % 19;
}

static void write_memfd(const uint8_t *buf, size_t len)
{
	size_t done = 0;

	if (ftruncate(memfd, 0) < 0)
		abort();
	while (done < len) {
		ssize_t n = pwrite(memfd, buf + done, len - done, (off_t)done);

		if (n <= 0)
			abort();
		done += (size_t)n;
	}
}

static void fuzz_hash(const uint8_t *data, size_t size)
{
	uint8_t ref[CHASH_LEN], one[CHASH_LEN], chunked[CHASH_LEN];
	uint8_t fromfd[CHASH_LEN], back[CHASH_LEN];
	char hex[CHASH_HEXLEN + 1];
	const uint8_t *content = data;
	uint8_t *big = NULL;
	size_t len = size, off = 0, k = 0, c, i;
	bool is_big = size >= 2 && data[0] == BIG_MAGIC;
	uint64_t got = 0;
	struct chash h;

	if (is_big) {
		/* One or two blocks, give or take a few bytes, filled with
		 * the input over and over. */
		len = (1 + (data[1] & 1)) * CHASH_BLOCK + ((data[1] >> 1) & 7);
		len -= 3;
		big = malloc(len);
		if (!big)
			abort();
		/* Doubling copies: a few memcpy calls, not len / size. */
		memcpy(big, data, size < len ? size : len);
		for (i = size < len ? size : len; i < len; i += c) {
			c = len - i < i ? len - i : i;
			memcpy(big + i, big, c);
		}
		content = big;
	}

	reference_hash(content, len, ref);
	FUZZ_CHECK(chash_buf(content, len, one) == 0);
	FUZZ_CHECK(memcmp(one, ref, CHASH_LEN) == 0);

	FUZZ_CHECK(chash_init(&h) == 0);
	while (off < len) {
		c = size ? chunk_size(data[k % size], is_big) : len;
		/* Enough empty updates: finish, whatever the input says. */
		if (k++ > 4 * size + 64)
			c = len - off;
		if (c > len - off)
			c = len - off;
		FUZZ_CHECK(chash_update(&h, content + off, c) == 0);
		off += c;
	}
	FUZZ_CHECK(chash_update(&h, content, 0) == 0);
	FUZZ_CHECK(chash_final(&h, chunked) == 0);
	FUZZ_CHECK(memcmp(chunked, ref, CHASH_LEN) == 0);
	/* final released it; releasing again is allowed. */
	chash_release(&h);

	write_memfd(content, len);
	FUZZ_CHECK(chash_fd(memfd, fromfd, &got) == 0);
	FUZZ_CHECK(got == len);
	FUZZ_CHECK(memcmp(fromfd, ref, CHASH_LEN) == 0);

	chash_to_hex(ref, hex);
	FUZZ_CHECK(strlen(hex) == CHASH_HEXLEN);
	FUZZ_CHECK(strspn(hex, "0123456789abcdef") == CHASH_HEXLEN);
	FUZZ_CHECK(chash_from_hex(hex, back) == 0);
	FUZZ_CHECK(memcmp(back, ref, CHASH_LEN) == 0);
	free(big);
}

static void fuzz_hex(const char *s)
{
	uint8_t h[CHASH_LEN];
	char hex[CHASH_HEXLEN + 1];
	size_t i;

	if (chash_from_hex(s, h) < 0)
		return;
	/* Exactly 64 hex digits, either case; printed back in lower case. */
	FUZZ_CHECK(strlen(s) == CHASH_HEXLEN);
	chash_to_hex(h, hex);
	for (i = 0; i < CHASH_HEXLEN; i++)
		FUZZ_CHECK(hex[i] == fold_ascii(s[i]));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;

	/* A multi-block input is slow (about 70 ms): it tests the hash
	 * alone, so that it is kept in the corpus only for what it adds
	 * there and does not slow down the search for everything else. */
	if (size >= 2 && data[0] == BIG_MAGIC) {
		fuzz_hash(data, size);
		return 0;
	}
	s = fuzz_strndup(data, size);
	fuzz_name(s);
	fuzz_hex(s);
	free(s);
	fuzz_fold(data, size);
	fuzz_glob(data, size);
	fuzz_hash(data, size);
	return 0;
}

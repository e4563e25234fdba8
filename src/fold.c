/*
 * Name folding (see fold.h).
 *
 * Why simple lowercase and not Unicode case folding: Dropbox compares
 * paths by a lowercase form computed with the simple (one code point to
 * one code point) lowercase mapping, as Python 2's unicode.lower() did
 * when Dropbox was written; it keeps that behaviour for compatibility.
 * Full case folding (CaseFolding.txt, ß -> ss, final sigma -> sigma)
 * would make names one here that are two on Dropbox, and lowering with
 * context (final sigma) would make names two here that are one there.
 *
 * Dropbox's table is that of Unicode 4.1; libutf8proc carries a newer
 * one, so letters added to Unicode since fold here and not there. The
 * difference only ever makes two names one here (never one name two),
 * and the index keeps both entries of a remote that holds both.
 *
 * Normalization form C on top: a name typed on one machine composed and
 * on another decomposed is one name, as on APFS and on ext4 with
 * casefolding. Dropbox documents nothing about normalization, so names
 * are stored and sent exactly as written; only comparisons normalize.
 *
 * Implementation: libutf8proc decomposes with the lowercase mapping as
 * its custom function (applied to each code point before decomposition),
 * then recomposes (utf8proc_normalize_utf32). ASCII names take a short
 * path. Invalid UTF-8 is detected by utf8proc and folds bytewise.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "hfs/fold.h"

/* Code points decomposed on the stack; a name of BACKEND_NAME_MAX bytes
 * decomposes to at most 1.5 code points per byte. */
#define FOLD_STACK_CPS 512
/* Bytes folded on the stack by fold_equal_n. */
#define FOLD_STACK_BYTES (FOLD_NAME_MAX + 1)

static const int fold_options = UTF8PROC_STABLE | UTF8PROC_COMPOSE;

static utf8proc_int32_t lower_cp(utf8proc_int32_t cp, void *data)
{
	(void)data;
	return utf8proc_tolower(cp);
}

/* ASCII letters lowered, everything else as it is. */
static int fold_bytes(const char *name, size_t len, char *out, size_t cap)
{
	if (len >= cap)
		return -ENAMETOOLONG;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	out[len] = '\0';
	return (int)len;
}

static bool is_ascii(const char *name, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)name[i] >= 0x80)
			return false;
	return true;
}

int fold_name(const char *name, size_t len, char *out, size_t cap)
{
	utf8proc_int32_t stack[FOLD_STACK_CPS], *cps = stack;
	utf8proc_ssize_t n;
	size_t pos = 0;
	int rc;

	if (cap == 0 || len > (size_t)INT32_MAX / 4)
		return -ENAMETOOLONG;
	if (is_ascii(name, len))
		return fold_bytes(name, len, out, cap);
	n = utf8proc_decompose_custom(
		(const utf8proc_uint8_t *)name, (utf8proc_ssize_t)len, cps,
		FOLD_STACK_CPS, fold_options, lower_cp, NULL);
	if (n > FOLD_STACK_CPS) {
		/* Longer than any valid name: decompose on the heap. */
		cps = malloc((size_t)n * sizeof(*cps));
		if (!cps)
			return -ENOMEM;
		n = utf8proc_decompose_custom((const utf8proc_uint8_t *)name,
					      (utf8proc_ssize_t)len, cps, n,
					      fold_options, lower_cp, NULL);
	}
	if (n == UTF8PROC_ERROR_INVALIDUTF8) {
		rc = fold_bytes(name, len, out, cap);
		goto out;
	}
	if (n < 0) {
		rc = n == UTF8PROC_ERROR_NOMEM ? -ENOMEM : -ENAMETOOLONG;
		goto out;
	}
	n = utf8proc_normalize_utf32(cps, n, fold_options);
	if (n < 0) {
		rc = -ENAMETOOLONG;
		goto out;
	}
	for (utf8proc_ssize_t i = 0; i < n; i++) {
		utf8proc_uint8_t enc[4];
		utf8proc_ssize_t k = utf8proc_encode_char(cps[i], enc);
		if (pos + (size_t)k >= cap) {
			rc = -ENAMETOOLONG;
			goto out;
		}
		memcpy(out + pos, enc, (size_t)k);
		pos += (size_t)k;
	}
	out[pos] = '\0';
	rc = (int)pos;
out:
	if (cps != stack)
		free(cps);
	return rc;
}

int fold_path(const char *path, char *out, size_t cap)
{
	const char *p = path;
	size_t pos = 0;

	for (;;) {
		const char *end = strchr(p, '/');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		int n = fold_name(p, len, out + pos, cap - pos);
		if (n < 0)
			return n;
		pos += (size_t)n;
		if (!end)
			return (int)pos;
		if (pos + 1 >= cap)
			return -ENAMETOOLONG;
		out[pos++] = '/';
		out[pos] = '\0';
		p = end + 1;
	}
}

int fold_path_dup(const char *path, char **out)
{
	size_t cap = FOLD_RATIO * strlen(path) + 1;
	char *s = malloc(cap);
	if (!s)
		return -ENOMEM;
	int n = fold_path(path, s, cap);
	if (n < 0) {
		free(s);
		return n; /* not reached: cap always suffices */
	}
	*out = s;
	return 0;
}

bool fold_equal_n(const char *a, size_t la, const char *b, size_t lb)
{
	char sa[FOLD_STACK_BYTES], sb[FOLD_STACK_BYTES];
	char *fa = sa, *fb = sb;
	size_t ca = FOLD_RATIO * la + 1, cb = FOLD_RATIO * lb + 1;
	bool eq = false;
	int na, nb;

	if (la == lb && memcmp(a, b, la) == 0)
		return true;
	if (ca > sizeof(sa))
		fa = malloc(ca);
	if (cb > sizeof(sb))
		fb = malloc(cb);
	if (!fa || !fb)
		goto out; /* no memory: only identical bytes are equal */
	na = fold_name(a, la, fa, fa == sa ? sizeof(sa) : ca);
	nb = fold_name(b, lb, fb, fb == sb ? sizeof(sb) : cb);
	eq = na >= 0 && na == nb && memcmp(fa, fb, (size_t)na) == 0;
out:
	if (fa != sa)
		free(fa);
	if (fb != sb)
		free(fb);
	return eq;
}

bool fold_equal(const char *a, const char *b)
{
	return fold_equal_n(a, strlen(a), b, strlen(b));
}

/*
 * Name folding: the one rule that says when two names are the same name.
 *
 * Dropbox paths are case-insensitive and case-preserving. The index keys
 * directory entries by folded names, listings are merged by them,
 * tombstones and journal paths are compared by them, and both backends
 * match names with them, so everything agrees with the remote on which
 * names collide. docs/posix.md ("Names and case") says what users see.
 *
 * The rule, for a name that is valid UTF-8:
 *   1. every code point is replaced by its simple lowercase mapping
 *      (Unicode's one-to-one mapping: 'É' -> 'é', 'Σ' -> 'σ' wherever it
 *      stands, 'İ' -> 'i'; 'ß' stays 'ß', there is no 'ß' -> "ss");
 *   2. the result is put in Unicode normalization form C, so the composed
 *      and the decomposed spelling of "é" are one name.
 * Step 1 is what Dropbox does (path_lower); step 2 is our choice (see
 * docs/posix.md for why). Folding is idempotent.
 *
 * A name that is not valid UTF-8 (Dropbox refuses such names; they exist
 * only locally) folds bytewise: ASCII letters lowered, other bytes kept.
 *
 * The folded form may be longer or shorter than the name (one code point
 * may lower or normalize to a sequence of another UTF-8 length), but never
 * longer than FOLD_RATIO times its length.
 *
 * All functions are pure and thread-safe (libutf8proc keeps no state).
 */
#ifndef HFS_FOLD_H
#define HFS_FOLD_H

#include <stdbool.h>
#include <stddef.h>

#include "hfs/backend_api.h"

/* Folding never makes a name more than this many times longer. */
#define FOLD_RATIO 3
/* The longest folded form of a name of BACKEND_NAME_MAX bytes. */
#define FOLD_NAME_MAX (FOLD_RATIO * BACKEND_NAME_MAX)

/*
 * Folds the @len bytes at @name (no NUL needed) into @out, which holds
 * @cap bytes, and NUL-terminates it. Returns the folded length, or
 * -ENAMETOOLONG if it does not fit in @cap - 1 bytes (@out is then
 * unspecified). A @cap of FOLD_RATIO * @len + 1 always suffices.
 */
int fold_name(const char *name, size_t len, char *out, size_t cap);

/*
 * Folds each '/'-separated component of @path (a remote path: "" or
 * "/a/b") into @out (@cap bytes, NUL-terminated). Returns the folded
 * length or -ENAMETOOLONG, as fold_name.
 */
int fold_path(const char *path, char *out, size_t cap);

/* Folds @path into a new string (malloc'd, the caller frees it) in *@out.
 * Returns 0 or -ENOMEM. */
int fold_path_dup(const char *path, char **out);

/* True if the names at @a (@la bytes) and @b (@lb bytes) fold alike. */
bool fold_equal_n(const char *a, size_t la, const char *b, size_t lb);

/* True if the NUL-terminated names @a and @b fold alike. */
bool fold_equal(const char *a, const char *b);

#endif

/*
 * Content files: the bytes of cached files, one regular file per inode
 * under {cache_dir}/data/XX/INO (XX = low byte of the inode number, so no
 * directory grows too large). Files are created 0600, directories 0700.
 *
 * The cache module knows nothing about the index; it names, opens, creates
 * and removes content files, and copies them for upload snapshots.
 */
#ifndef HFS_CACHE_H
#define HFS_CACHE_H

#include <stdbool.h>
#include <stdint.h>

struct cache;

/* Creates the cache layout under @dir (mode 0700). */
int cache_create(const char *dir, struct cache **out);
void cache_destroy(struct cache *c);

/* Opens the content file of @ino O_RDWR (with O_CREAT if @create).
 * Returns an fd or -errno. */
int cache_open(struct cache *c, uint64_t ino, int create);
/* Opens the content file of @ino read-only without touching its atime
 * (O_NOATIME: the uploader's reads must not count as uses for eviction).
 * Returns an fd or -errno. */
int cache_open_read(struct cache *c, uint64_t ino);
/* Removes the content file of @ino, and its set-aside version if any; a
 * missing file is not an error. */
int cache_remove(struct cache *c, uint64_t ino);
/*
 * The set-aside version of a file being rewritten (durable.c, rule 2): the
 * content file of @ino renamed to "<content>.prev", where it waits until
 * the new bytes are on disk. cache_set_aside() moves the content there and
 * creates an empty content file in its place, returning its fd (or
 * -errno, with nothing changed); cache_restore_prev() moves it back over
 * the content file; cache_drop_prev() deletes it, and the undo file
 * (missing: not an error).
 * cache_has_prev() says whether there is one.
 */
int cache_set_aside(struct cache *c, uint64_t ino);
int cache_restore_prev(struct cache *c, uint64_t ino);
int cache_drop_prev(struct cache *c, uint64_t ino);
bool cache_has_prev(struct cache *c, uint64_t ino);
/* Moves the content file of @from to the set-aside version of @to (and
 * the undo file of @from, if any, to @to's). */
int cache_adopt_prev(struct cache *c, uint64_t from, uint64_t to);
/*
 * The undo file of a content file patched in place (undo.h; durable.c,
 * rule 6): opened for reading and appending, created if needed, emptied
 * first if @fresh. Returns an fd or -errno. cache_drop_prev() deletes it
 * with the set-aside version; cache_remove() with the content.
 */
int cache_undo_open(struct cache *c, uint64_t ino, bool fresh);
bool cache_has_undo(struct cache *c, uint64_t ino);
/* Path of the content file (@buf of PATH_MAX bytes). */
void cache_path(struct cache *c, uint64_t ino, char *buf);
/* Creates an anonymous temporary file in the cache filesystem (O_TMPFILE,
 * or a named file unlinked at once). Returns an fd or -errno. */
int cache_tmpfile(struct cache *c);
/* Creates a named temporary file for a download of @ino; on success
 * cache_commit_tmp() moves it into place. Returns an fd or -errno. */
int cache_open_tmp(struct cache *c, uint64_t ino);
int cache_commit_tmp(struct cache *c, uint64_t ino);
/* Copies @len bytes from @src to @dst (both from offset 0), in the kernel
 * where possible. Returns 0 or -errno. */
int cache_copy(int src, int dst, uint64_t len);
/* Marks the content file of @ino as used now (its atime; see evict.h). */
void cache_touch(struct cache *c, uint64_t ino);
/* The same through an open content file. */
void cache_touch_fd(int fd);
/* Free bytes on the cache filesystem, or -errno. */
int64_t cache_free_bytes(struct cache *c);
/* The cache directory. */
const char *cache_dir(struct cache *c);

/*
 * The rest of a cache directory, by name: this module is the one that
 * knows its layout (the index keeps its own files inside CACHE_INDEX,
 * index.h). Every other module asks here for a path under cache_dir.
 */
enum cache_part {
	CACHE_INDEX, /* index/: the LMDB index */
	CACHE_DATA, /* data/: the content files */
	CACHE_LOCK, /* lock: flock'd by the daemon or repair using it */
	CACHE_CONTROL, /* control.sock: the control socket (control.h) */
	CACHE_SHUTDOWN, /* shutdown.json: the last stop's report (mount.h) */
	CACHE_RESERVE, /* reserve: space held back for metadata */
	CACHE_LOG, /* huracanfs.log: the log of a daemon without log_file */
};
/* The path of @part of cache directory @dir, in @buf of @len bytes:
 * 0, or -ENAMETOOLONG if it does not fit. */
int cache_part_path(const char *dir, enum cache_part part, char *buf,
		    size_t len);

/* A file under data/, as cache_walk() finds it. */
struct cache_file {
	uint64_t ino; /* whose it is; 0 for a name of no inode */
	bool prev; /* the set-aside version of ino (cache_set_aside) */
	bool undo; /* the undo file of ino (cache_undo_open) */
	bool partial; /* a download of ino in progress */
	const struct stat *st; /* its lstat */
};
/*
 * Calls @fn for every file under data/ of cache directory @dir, content
 * files and others; stops at the first non-zero return of @fn, which it
 * returns. @fn must not create or remove files there (collect, then act).
 * A bucket that cannot be read is skipped.
 */
typedef int (*cache_walk_fn)(void *arg, const struct cache_file *f);
int cache_walk(const char *dir, cache_walk_fn fn, void *arg);

#endif

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
/* Removes the content file of @ino; a missing file is not an error. */
int cache_remove(struct cache *c, uint64_t ino);
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

#endif

/*
 * Eviction: keeps the content files under cache_max_bytes by dropping the
 * bytes of clean files (uploaded, or fetched and unchanged), least
 * recently opened first. A dirty or uploading file, or one that is open
 * or being fetched, is never evicted. An evicted file stays in the index
 * (listing, attributes) and is fetched again when next read.
 *
 * Recency is the content file's atime, which hfs_open sets on every open.
 * Files of categories with cache_keep_<category> (models and data_cache by
 * default: "model kept locally", restored candles) are evicted only once
 * no file of another category is left to evict.
 */
#ifndef HFS_EVICT_H
#define HFS_EVICT_H

#include <stdint.h>

struct hfs;

/*
 * One pass: measures the cache (allocated blocks of every content file)
 * and, if it is over @limit bytes, evicts until it is under. Returns 0 and
 * the bytes in use after the pass in *@used (may be NULL), or -errno.
 * Runs in the calling thread; takes no lock across I/O.
 */
int evict_run(struct hfs *fs, uint64_t limit, uint64_t *used, uint64_t *freed);

#endif

/*
 * Restore on startup (seed: historical candle data "automatically restored
 * from Dropbox on startup"). With restore_data_cache_on_startup, a thread
 * fetches every file under data/candles/ that is not cached yet, in the
 * background: the mount is usable at once, and a read of a file not yet
 * restored is served lazily meanwhile. It stops before the cache would
 * exceed cache_max_bytes and never evicts anything. Progress is in
 * `status` ("restore"); the end is logged as
 *   data_cache_restored files=N bytes=B ms=T
 * An empty remote is fine: "nothing to restore" is logged and that is all.
 */
#ifndef HFS_RESTORE_H
#define HFS_RESTORE_H

struct hfs;
struct restore;

/* Starts the restore thread (if the setting is on). NULL-safe stop. */
int restore_start(struct hfs *fs, struct restore **out);
void restore_stop(struct restore *r);
/* Progress as JSON (json_t *, new reference); NULL if none was started. */
void *restore_status(struct restore *r);

#endif

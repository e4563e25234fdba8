/*
 * `huracanfs mount` (mount.c): builds the daemon and runs it until the
 * filesystem is unmounted or a signal stops it.
 */
#ifndef HFS_MOUNT_H
#define HFS_MOUNT_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Written into the cache directory when the final flush after the unmount
 * is over, just before the daemon exits: one JSON object,
 *   {"time", "result": "ok"|why, "pending_files", "pending_bytes",
 *    "sync_off_files", "sync_off_bytes", "cache_dir",
 *    "files": [{"path", "bytes", "category", "last_error", ...}]}
 * where pending_* count what is still queued for upload (kept for the next
 * mount) in the categories whose sync is on, sync_off_* the files waiting
 * in categories whose sync is switched off, and "files" names at most the
 * first 1000 of the former. `huracanfs unmount` reads it. Its path:
 * cache_part_path(CACHE_SHUTDOWN) (cache.h).
 */

/* What the command line asked for (main.c parses it). */
struct mount_opts {
	const char *mountpoint;
	const char *config;
	bool foreground;
	char fuse_opts[4096];
};

/*
 * Mounts @mo->mountpoint and serves it until it is unmounted or a signal
 * stops the daemon. Unless @mo->foreground, forks: the parent waits until
 * the child reports that the mount is usable (exit 0) or has failed (its
 * message, exit 1), and exits with that. Returns the exit status.
 */
int mount_run(const struct mount_opts *mo);

/*
 * `huracanfs unmount` (unmount.c): flushes what is pending (within
 * @timeout_s seconds; 0: the daemon's flush_timeout_seconds), unmounts
 * @mountpoint (@lazy: MNT_DETACH), waits for the daemon to exit and reads
 * its shutdown report. Returns the exit status: 0 only if nothing is left
 * queued; otherwise 1, with the count of files and bytes still queued and
 * where they are on stderr.
 */
int unmount_run(const char *mountpoint, int64_t timeout_s, bool lazy);

#endif

/*
 * The flushers: one thread per category, each with its own queue, mutex,
 * condvar and interval, plus one thread that replays the namespace journal
 * promptly. A dirty file is uploaded once it has been dirty for its
 * category's interval (data_cache files never uploaded before: the
 * new-data interval), so a models file is never uploaded at the logs pace.
 *
 * Submitting work is lock-append-signal-unlock and never blocks on I/O.
 * flush and shutdown wait on a condvar, never on a sleep loop.
 */
#ifndef HFS_FLUSHER_H
#define HFS_FLUSHER_H

#include <stdbool.h>
#include <stdint.h>

struct hfs;
struct flushers;

int flushers_create(struct hfs *fs, struct flushers **out);
/* Starts the threads and schedules every file of the dirty set. */
int flushers_start(struct flushers *fl);
/* Stops the threads without flushing; NULL-safe. */
void flushers_destroy(struct flushers *fl);

/*
 * Schedules @ino (dirty since @dirty_since, seconds) in category @cat.
 * @never_uploaded selects the new-data interval for data_cache files.
 */
void flushers_schedule(struct flushers *fl, uint64_t ino, int cat,
		       int64_t dirty_since, bool never_uploaded);
/* The journal has new entries. */
void flushers_kick_journal(struct flushers *fl);

/*
 * Uploads everything pending in category @cat (-1: every enabled one)
 * now, after
 * replaying the journal. With @wait, returns when done: 0, or -EIO if any
 * upload failed, or -ETIMEDOUT after @timeout_s seconds.
 */
int flushers_flush(struct flushers *fl, int cat, bool wait, int64_t timeout_s);

/* Cheap, for a status line: the entries queued in every category (files
 * waiting, without looking at the index) and the latest last_sync. */
void flushers_queued(struct flushers *fl, uint64_t *files, int64_t *last_sync);

/* The next upload time of @ino, or 0 if it is not queued. */
int64_t flushers_next_upload(struct flushers *fl, uint64_t ino);

/* A JSON object (json_t *, new reference) describing every category;
 * with @with_files, each category also lists its waiting files. */
void *flushers_status(struct flushers *fl, bool with_files);

#endif

/*
 * The watcher: makes changes made on the remote by another machine visible
 * without waiting for dir_cache_seconds. With a backend that can watch
 * (latest_cursor, longpoll, list_changes), one thread long-polls for
 * changes after a cursor; for every changed entry it invalidates the
 * listing of the folder that holds it, so the next access lists that
 * folder again and merges it (fs.c: local changes win, clean files take
 * the remote's version).
 */
#ifndef HFS_WATCHER_H
#define HFS_WATCHER_H

struct hfs;
struct watcher;

/* Starts the thread if the backend can watch; *@out NULL if it cannot. */
int watcher_start(struct hfs *fs, struct watcher **out);
/* Stops the thread (NULL-safe). */
void watcher_stop(struct watcher *w);

/*
 * Invalidates the listing of the folder holding remote path @path (a
 * change feed path, "/a/b", any case) and, if @path is a folder we know,
 * its own listing. Returns 0 or -errno. Exposed for tests.
 */
int watcher_apply(struct hfs *fs, const char *path);

struct ixtxn;
/* The same inside write txn @t (the caller commits). */
void watcher_invalidate(struct ixtxn *t, const char *path);

#endif

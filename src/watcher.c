/*
 * The watcher (see watcher.h).
 *
 * A page of changes is applied in one txn. Entries that the index already
 * agrees with (our own replayed deletes, our own uploads) are skipped: an
 * rm -rf of a big folder must not have the folder listed again after
 * every delete the remote reports back.
 *
 * Why invalidate rather than apply entries directly: the merge of a full
 * folder listing (listing.c) already knows every rule about what wins (dirty
 * files, journaled renames and deletes, open files, type changes), and it
 * runs with the freshest state when the folder is next used. A change feed
 * entry only says "look again here".
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hfs/backend.h"
#include "hfs/fs.h"
#include "hfs/log.h"
#include "hfs/watcher.h"

#define POLL_TIMEOUT 30
#define ERROR_BACKOFF_MAX 300

struct watcher {
	struct hfs *fs;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv; /* signals: stop */
	bool stop; /* mu */
	atomic_bool cancel; /* set with stop: cuts backend calls short */
};

/* Marks directory @ino as needing a new listing; inside @t. */
static void invalidate(struct ixtxn *t, uint64_t ino)
{
	struct node d;
	if (ix_get(t, ino, &d) == 0 && S_ISDIR(d.r.mode) &&
	    (d.r.flags & NODE_LISTED) && d.r.listed_at != 0) {
		d.r.listed_at = 0;
		ix_put(t, &d);
	}
}

void watcher_invalidate(struct ixtxn *t, const char *path)
{
	char buf[4096];
	snprintf(buf, sizeof(buf), "%s", path);
	uint64_t dir = INDEX_ROOT_INO;
	char *save = NULL;
	char *comp = strtok_r(buf, "/", &save);
	while (comp) {
		char *next = strtok_r(NULL, "/", &save);
		uint64_t ino;
		if (!next) {
			/* The last component: its folder changed, and if it
			 * is a folder itself, so may its contents. */
			invalidate(t, dir);
			if (ix_lookup(t, dir, comp, &ino, NULL) == 0)
				invalidate(t, ino);
			break;
		}
		if (ix_lookup(t, dir, comp, &ino, NULL) != 0) {
			/* A folder new to us: the deepest one we know must
			 * be listed again to show it. */
			invalidate(t, dir);
			break;
		}
		dir = ino;
		comp = next;
	}
	if (t->err == -ENOENT)
		t->err = 0;
}

int watcher_apply(struct hfs *fs, const char *path)
{
	struct ixtxn t;
	int rc = ix_begin(fs->ix, true, &t);
	if (rc)
		return rc;
	watcher_invalidate(&t, path);
	return ix_commit(&t);
}

/*
 * True if change @e tells the index nothing new: a deletion of a path it
 * does not hold (typically our own delete, replayed), or a file it holds
 * at that very revision (our own upload). Such entries are skipped, so
 * that replaying our own changes does not make every folder they touch
 * be listed again.
 */
static bool already_known(struct ixtxn *t, const struct backend_entry *e)
{
	char buf[4096];
	uint64_t dir = INDEX_ROOT_INO, ino = 0;
	struct node n;
	snprintf(buf, sizeof(buf), "%s", e->path);
	char *save = NULL;
	for (char *comp = strtok_r(buf, "/", &save); comp;
	     comp = strtok_r(NULL, "/", &save)) {
		if (ix_lookup(t, dir, comp, &ino, NULL) != 0) {
			ino = 0;
			break;
		}
		dir = ino;
	}
	if (t->err == -ENOENT)
		t->err = 0;
	if (e->deleted)
		return ino == 0;
	if (ino == 0 || e->is_dir || !e->rev[0] || ix_get(t, ino, &n) != 0)
		return false;
	return S_ISREG(n.r.mode) && (n.r.flags & NODE_ON_REMOTE) &&
	       strcmp(n.r.rev, e->rev) == 0;
}

/* Applies one page of changes in one txn. */
static int apply_page(struct hfs *fs, const struct backend_page *page,
		      size_t *applied)
{
	struct ixtxn t;
	int rc = ix_begin(fs->ix, true, &t);
	if (rc)
		return rc;
	*applied = 0;
	for (size_t i = 0; i < page->n && !t.err; i++) {
		const struct backend_entry *e = &page->entries[i];
		if (!e->path || already_known(&t, e))
			continue;
		watcher_invalidate(&t, e->path);
		(*applied)++;
	}
	return ix_commit(&t);
}

/* Waits @secs seconds or until stopped; returns true if stopped. */
static bool pause_for(struct watcher *w, int secs)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += secs;
	pthread_mutex_lock(&w->mu);
	while (!w->stop &&
	       pthread_cond_timedwait(&w->cv, &w->mu, &ts) != ETIMEDOUT)
		;
	bool stop = w->stop;
	pthread_mutex_unlock(&w->mu);
	return stop;
}

static bool stopping(struct watcher *w)
{
	pthread_mutex_lock(&w->mu);
	bool stop = w->stop;
	pthread_mutex_unlock(&w->mu);
	return stop;
}

/* Reads every change after *@cursor, applies it, advances the cursor. */
static int drain(struct watcher *w, char **cursor)
{
	struct backend *be = w->fs->be;
	for (;;) {
		struct backend_page page = {0};
		int rc = be->ops->list_changes(be, *cursor, &page);
		if (rc)
			return rc;
		size_t applied = 0;
		if (page.n && apply_page(w->fs, &page, &applied) < 0)
			hlog_debug("watcher: could not record %zu changes",
				   page.n);
		if (page.n)
			hlog_debug("watcher: %zu remote changes, %zu new to "
				   "the index",
				   page.n, applied);
		bool more = page.has_more;
		if (page.cursor) {
			free(*cursor);
			*cursor = page.cursor;
			page.cursor = NULL;
		}
		backend_page_release(&page);
		if (!more)
			return 0;
	}
}

static void *watch_thread(void *arg)
{
	struct watcher *w = arg;
	struct backend *be = w->fs->be;
	char *cursor = NULL;
	int backoff = 1;
	sigset_t set;
	sigfillset(&set);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	pthread_setname_np(pthread_self(), "hfs-watcher");
	backend_set_thread_cancel(&w->cancel);

	while (!stopping(w)) {
		int rc = 0;
		if (!cursor)
			rc = be->ops->latest_cursor(be, &cursor);
		bool changes = false;
		int wait = 0;
		if (!rc)
			rc = be->ops->longpoll(be, cursor, POLL_TIMEOUT,
					       &changes, &wait);
		if (!rc && changes)
			rc = drain(w, &cursor);
		if (rc == -ESTALE) {
			/* The cursor expired: whatever changed meanwhile is
			 * unknown, so every listing is suspect. */
			free(cursor);
			cursor = NULL;
			watcher_apply(w->fs, "/");
			hlog_info("watcher: change cursor reset; listings will "
				  "be refreshed");
			continue;
		}
		if (rc) {
			hlog_debug("watcher: %s (%s); retrying in %d s",
				   strerror(-rc), backend_last_error(),
				   backoff);
			if (pause_for(w, backoff))
				break;
			backoff = backoff * 2 > ERROR_BACKOFF_MAX
					  ? ERROR_BACKOFF_MAX
					  : backoff * 2;
			continue;
		}
		backoff = 1;
		if (wait > 0 && pause_for(w, wait))
			break;
	}
	free(cursor);
	return NULL;
}

int watcher_start(struct hfs *fs, struct watcher **out)
{
	const struct backend_ops *ops = fs->be->ops;
	*out = NULL;
	if (!ops->latest_cursor || !ops->longpoll || !ops->list_changes)
		return 0;
	struct watcher *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->fs = fs;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	int rc = -pthread_create(&w->thread, NULL, watch_thread, w);
	if (rc) {
		pthread_mutex_destroy(&w->mu);
		pthread_cond_destroy(&w->cv);
		free(w);
		return rc;
	}
	*out = w;
	return 0;
}

void watcher_stop(struct watcher *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->mu);
	w->stop = true;
	atomic_store(&w->cancel, true);
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	/* A long poll in flight ends at its timeout, or sooner when the
	 * backend is interrupted (backend.h: interrupt). */
	if (w->fs->be->ops->interrupt)
		w->fs->be->ops->interrupt(w->fs->be);
	pthread_join(w->thread, NULL);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	free(w);
}

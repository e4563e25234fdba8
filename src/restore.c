/*
 * Restore on startup (see restore.h).
 *
 * States: listing (walking data/candles, listing folders remotely) ->
 * fetching (one file at a time) -> done; or stopped (unmount), or waiting
 * (the remote is unreachable: tried again every RETRY seconds).
 */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs_i.h"
#include "hfs/backend.h"
#include "hfs/evict.h"
#include "hfs/log.h"
#include "hfs/restore.h"

#define ROOT "/data/candles"
#define RETRY 10
#define MAX_DEPTH 16

struct item {
	uint64_t ino;
	uint64_t size;
};

struct restore {
	struct hfs *fs;
	pthread_t thread;
	pthread_mutex_t mu; /* protects everything below */
	pthread_cond_t cv; /* signals: stop */
	bool stop;
	atomic_bool cancel; /* set with stop: cuts backend calls short */
	const char *state;
	uint64_t files_total, files_done, bytes_total, bytes_done;
	uint64_t files_skipped; /* left out: cache_max_bytes */
	int64_t started_ns, ms;
	char error[160];
};

static bool stopping(struct restore *r)
{
	pthread_mutex_lock(&r->mu);
	bool s = r->stop;
	pthread_mutex_unlock(&r->mu);
	return s;
}

static void set_state(struct restore *r, const char *state)
{
	pthread_mutex_lock(&r->mu);
	r->state = state;
	pthread_mutex_unlock(&r->mu);
}

struct walk {
	struct restore *r;
	struct item *v;
	size_t n, cap;
	uint64_t *dirs; /* folders still to visit */
	size_t ndirs, capdirs;
	int err;
};

static int collect(void *arg, const char *name, uint64_t ino)
{
	struct walk *w = arg;
	struct node n;
	(void)name;
	if (fs_get_node(w->r->fs, ino, &n))
		return 0;
	if (S_ISDIR(n.r.mode)) {
		if (w->ndirs == w->capdirs) {
			size_t cap = w->capdirs ? w->capdirs * 2 : 16;
			uint64_t *nd = realloc(w->dirs, cap * sizeof(*nd));
			if (!nd)
				return -ENOMEM;
			w->dirs = nd;
			w->capdirs = cap;
		}
		w->dirs[w->ndirs++] = ino;
		return 0;
	}
	if (!S_ISREG(n.r.mode) || (n.r.flags & (NODE_CACHED | NODE_DIRTY)) ||
	    !(n.r.flags & NODE_ON_REMOTE))
		return 0;
	if (w->n == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 64;
		struct item *nv = realloc(w->v, cap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		w->v = nv;
		w->cap = cap;
	}
	w->v[w->n].ino = ino;
	w->v[w->n].size = n.r.size;
	w->n++;
	return 0;
}

/* Lists data/candles recursively (remotely where needed) and collects the
 * files not cached. Returns 0, -ENOENT (nothing there) or -EAGAIN. */
static int walk_tree(struct restore *r, struct walk *w)
{
	struct hfs *fs = r->fs;
	uint64_t root;
	int rc = fs_resolve(fs, ROOT, &root);
	if (atomic_load(&fs->offline_until) > hfs_now())
		return -EAGAIN; /* a listing on the way failed */
	if (rc)
		return rc;
	w->dirs = malloc(16 * sizeof(*w->dirs));
	if (!w->dirs)
		return -ENOMEM;
	w->capdirs = 16;
	w->dirs[w->ndirs++] = root;
	size_t visited = 0;
	while (w->ndirs && visited < 100000 && !stopping(r)) {
		uint64_t dir = w->dirs[--w->ndirs];
		visited++;
		rc = fs_ensure_listed(fs, dir, true);
		if (rc)
			return rc;
		if (atomic_load(&fs->offline_until) > hfs_now())
			return -EAGAIN;
		struct ixtxn t;
		rc = ix_begin(fs->ix, false, &t);
		if (rc)
			return rc;
		rc = ix_foreach_child(&t, dir, collect, w);
		ix_abort(&t);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static bool pause_for(struct restore *r, int secs)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += secs;
	pthread_mutex_lock(&r->mu);
	while (!r->stop &&
	       pthread_cond_timedwait(&r->cv, &r->mu, &ts) != ETIMEDOUT)
		;
	bool s = r->stop;
	pthread_mutex_unlock(&r->mu);
	return s;
}

static void *restore_thread(void *arg)
{
	struct restore *r = arg;
	struct hfs *fs = r->fs;
	sigset_t set;
	sigfillset(&set);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	pthread_setname_np(pthread_self(), "hfs-restore");
	backend_set_thread_cancel(&r->cancel);

	struct walk w = {.r = r};
	int rc;
	for (;;) {
		set_state(r, "listing");
		rc = walk_tree(r, &w);
		if (rc != -EAGAIN || stopping(r))
			break;
		free(w.v);
		free(w.dirs);
		memset(&w, 0, sizeof(w));
		w.r = r;
		set_state(r, "waiting for the remote");
		if (pause_for(r, RETRY))
			break;
	}
	if (rc == -ENOENT || (rc == 0 && w.n == 0 && !stopping(r))) {
		hlog_info("data_cache_restore nothing to restore (%s is %s)",
			  ROOT, rc == -ENOENT ? "not on the remote" : "cached");
		set_state(r, "done");
		goto out;
	}
	if (rc || stopping(r)) {
		if (rc)
			hlog_warn("data cache restore stopped: %s",
				  strerror(-rc));
		pthread_mutex_lock(&r->mu);
		r->state = "stopped";
		if (rc)
			snprintf(r->error, sizeof(r->error), "%s",
				 strerror(-rc));
		pthread_mutex_unlock(&r->mu);
		goto out;
	}

	pthread_mutex_lock(&r->mu);
	r->state = "fetching";
	r->files_total = w.n;
	for (size_t i = 0; i < w.n; i++)
		r->bytes_total += w.v[i].size;
	pthread_mutex_unlock(&r->mu);
	hlog_info("data_cache_restore started files=%zu bytes=%llu", w.n,
		  (unsigned long long)r->bytes_total);

	/* Stay within cache_max_bytes: what does not fit is fetched when
	 * read. */
	uint64_t used = 0;
	evict_run(fs, UINT64_MAX, &used, NULL);
	uint64_t fetched = 0, bytes = 0, skipped = 0;
	for (size_t i = 0; i < w.n && !stopping(r); i++) {
		if (used + w.v[i].size > fs->cfg->cache_max_bytes) {
			skipped++;
			continue;
		}
		rc = fs_fetch(fs, w.v[i].ino);
		if (rc) {
			hlog_warn("data cache restore: inode %llu: %s",
				  (unsigned long long)w.v[i].ino,
				  strerror(-rc));
			skipped++;
			continue;
		}
		used += w.v[i].size;
		fetched++;
		bytes += w.v[i].size;
		pthread_mutex_lock(&r->mu);
		r->files_done = fetched;
		r->bytes_done = bytes;
		pthread_mutex_unlock(&r->mu);
	}
	int64_t ms = (hfs_now_ns() - r->started_ns) / 1000000;
	pthread_mutex_lock(&r->mu);
	r->files_skipped = skipped;
	r->ms = ms;
	r->state = r->stop ? "stopped" : "done";
	pthread_mutex_unlock(&r->mu);
	hlog_info("data_cache_restored files=%llu bytes=%llu ms=%lld%s",
		  (unsigned long long)fetched, (unsigned long long)bytes,
		  (long long)ms,
		  skipped ? " (some files left to fetch when read: "
			    "cache_max_bytes or errors)"
			  : "");
out:
	free(w.v);
	free(w.dirs);
	return NULL;
}

int restore_start(struct hfs *fs, struct restore **out)
{
	*out = NULL;
	if (!fs->cfg->restore_data_cache_on_startup)
		return 0;
	struct restore *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->fs = fs;
	r->state = "starting";
	r->started_ns = hfs_now_ns();
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	int rc = -pthread_create(&r->thread, NULL, restore_thread, r);
	if (rc) {
		pthread_mutex_destroy(&r->mu);
		pthread_cond_destroy(&r->cv);
		free(r);
		return rc;
	}
	*out = r;
	return 0;
}

void restore_stop(struct restore *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->stop = true;
	atomic_store(&r->cancel, true);
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	pthread_join(r->thread, NULL);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
	free(r);
}

void *restore_status(struct restore *r)
{
	if (!r)
		return NULL;
	pthread_mutex_lock(&r->mu);
	json_t *j = json_pack(
		"{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "state", r->state,
		"files_total", (json_int_t)r->files_total, "files_done",
		(json_int_t)r->files_done, "bytes_total",
		(json_int_t)r->bytes_total, "bytes_done",
		(json_int_t)r->bytes_done, "files_left_unfetched",
		(json_int_t)r->files_skipped, "ms", (json_int_t)r->ms, "error",
		r->error[0] ? json_string(r->error) : json_null());
	pthread_mutex_unlock(&r->mu);
	return j;
}

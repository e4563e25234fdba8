/*
 * The flushers (see flusher.h).
 *
 * Each category has a queue of (ino, due) entries, a mutex, a condvar and
 * a thread. The thread sleeps until the earliest due time, a flush request
 * or shutdown; takes the due entries under the mutex; uploads them with
 * fs->commit_lock held (after replaying the journal, so namespace changes
 * reach the remote before the bytes that follow them); and publishes the
 * results under the mutex again.
 *
 * A failed upload is queued again with a capped, doubling delay: nothing
 * dirty is ever dropped, however often it fails.
 *
 * Flush requests: flushers_flush() bumps req_seq; the thread takes every
 * queued entry (due or not), and when done sets done_seq and signals
 * done_cv.
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
#include <unistd.h>

#include "fs_i.h"
#include "hfs/backend.h"
#include "hfs/category.h"
#include "hfs/flusher.h"
#include "hfs/log.h"
#include "hfs/metrics.h"
#include "hfs/runs.h"

#define RETRY_MAX 60
/* A burst of namespace changes is replayed once it pauses this long, or
 * after this long at most (milliseconds; see journal_settle()). */
#define JOURNAL_SETTLE_MS 250
#define JOURNAL_SETTLE_MAX_MS 5000

struct qent {
	uint64_t ino;
	int64_t due;
};

struct catq {
	struct flushers *fl;
	int cat;
	pthread_t thread;
	bool started;
	pthread_mutex_t mu;
	pthread_cond_t cv; /* signals: new entry, flush request, stop */
	pthread_cond_t done_cv; /* signals: done_seq advanced */
	/* Protected by mu: */
	struct qent *q;
	size_t n, cap;
	uint32_t *slot; /* hash index into q: position + 1, 0 = empty */
	size_t nslot; /* a power of two, >= 2 * n */
	bool sleeping; /* the thread waits on cv ... */
	int64_t wake_at; /* ... until then (0: until signalled) */
	uint64_t req_seq, done_seq;
	int last_failures; /* of the last flush request */
	int64_t last_sync; /* seconds; 0 = never */
	int64_t busy_since; /* an upload batch is running */
	int retries; /* consecutive failed batches */
	char last_error[256];
};

struct flushers {
	struct hfs *fs;
	struct catq cq[CAT_COUNT];
	bool stop; /* each thread reads it under its own mutex */

	pthread_t jthread;
	bool jstarted;
	pthread_mutex_t jmu;
	pthread_cond_t jcv; /* signals: journal kicked (unless settling),
			       flush requested, stop */
	bool jkick; /* jmu */
	uint64_t jkicks; /* jmu: kicks so far */
	bool jsettling; /* jmu: waiting for a burst of changes to pause */
	bool jflush; /* jmu: a flush waits: replay now */
	char jerror[256]; /* jmu */
	uint64_t jpasses; /* jmu: replay passes finished */
	bool jrunning; /* jmu: a pass is under way */
	int jlast_rc; /* jmu: the result of the last pass */
	pthread_cond_t jdone; /* signals: a replay pass finished */
	/* Set when the shutdown flush is over: every flusher thread's
	 * backend calls then end at once (http_set_thread_cancel). */
	atomic_bool cancel;
	/* Files a flusher found renamed into another category and handed
	 * to that category's queue: a flush request that queue already
	 * answered has not seen them (flushers_flush goes round again). */
	atomic_uint_fast64_t handed_over;
};

static void block_signals(void)
{
	sigset_t set;
	sigfillset(&set);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static int64_t interval_of(struct flushers *fl, int cat, bool never_uploaded)
{
	const struct hfs_config *cfg = fl->fs->cfg;
	if (cat == CAT_DATA_CACHE && never_uploaded &&
	    cfg->new_data_interval < cfg->interval[cat])
		return cfg->new_data_interval;
	return cfg->interval[cat];
}

static size_t slot_of(uint64_t ino, size_t nslot)
{
	return (size_t)((ino * 0x9E3779B97F4A7C15ULL) >> 17) & (nslot - 1);
}

/* The position of @ino in q->q, or -1. q->mu held. */
static long find(const struct catq *q, uint64_t ino)
{
	if (!q->nslot)
		return -1;
	for (size_t i = slot_of(ino, q->nslot);; i = (i + 1) & (q->nslot - 1)) {
		uint32_t s = q->slot[i];
		if (!s)
			return -1;
		if (q->q[s - 1].ino == ino)
			return (long)s - 1;
	}
}

static void slot_insert(struct catq *q, size_t pos)
{
	size_t i = slot_of(q->q[pos].ino, q->nslot);
	while (q->slot[i])
		i = (i + 1) & (q->nslot - 1);
	q->slot[i] = (uint32_t)pos + 1;
}

/* Rebuilds the hash index after entries moved. q->mu held. */
static int reindex(struct catq *q)
{
	size_t nslot = 64;
	while (nslot < 2 * (q->n + 1))
		nslot *= 2;
	uint32_t *slot = calloc(nslot, sizeof(*slot));
	if (!slot)
		return -ENOMEM;
	free(q->slot);
	q->slot = slot;
	q->nslot = nslot;
	for (size_t i = 0; i < q->n; i++)
		slot_insert(q, i);
	return 0;
}

/* Queues @ino (once: a second push keeps the earlier due time). q->mu
 * held. */
static int push(struct catq *q, uint64_t ino, int64_t due)
{
	long at = find(q, ino);
	if (at >= 0) {
		if (due < q->q[at].due)
			q->q[at].due = due;
		return 0;
	}
	if (q->n == q->cap) {
		size_t cap = q->cap ? q->cap * 2 : 64;
		struct qent *nq = realloc(q->q, cap * sizeof(*nq));
		if (!nq)
			return -ENOMEM;
		q->q = nq;
		q->cap = cap;
	}
	q->q[q->n].ino = ino;
	q->q[q->n].due = due;
	q->n++;
	if (2 * q->n > q->nslot)
		return reindex(q);
	slot_insert(q, q->n - 1);
	return 0;
}

void flushers_schedule(struct flushers *fl, uint64_t ino, int cat,
		       int64_t dirty_since, bool never_uploaded)
{
	if (!fl || cat < 0 || cat >= CAT_COUNT)
		return;
	struct catq *q = &fl->cq[cat];
	int64_t due = dirty_since + interval_of(fl, cat, never_uploaded);
	pthread_mutex_lock(&q->mu);
	if (push(q, ino, due) < 0)
		hlog_err("out of memory queueing inode %llu; it stays dirty "
			 "and is queued again at the next mount",
			 (unsigned long long)ino);
	/* Wake the thread only if it would sleep past this entry. */
	if (q->sleeping && (!q->wake_at || due < q->wake_at))
		pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

void flushers_kick_journal(struct flushers *fl)
{
	if (!fl)
		return;
	pthread_mutex_lock(&fl->jmu);
	fl->jkick = true;
	fl->jkicks++;
	if (!fl->jsettling)
		pthread_cond_signal(&fl->jcv);
	pthread_mutex_unlock(&fl->jmu);
}

/* The time @ms milliseconds from now, for pthread_cond_timedwait. */
static struct timespec ms_from_now(int64_t ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

/*
 * Waits while namespace changes keep coming (an rm -rf, a tree being
 * made), until none came for JOURNAL_SETTLE_MS or JOURNAL_SETTLE_MAX_MS
 * have passed, or a flush or shutdown asks for the replay now; so that a
 * burst is replayed together (one folder delete rather than one delete
 * per file). fl->jmu held.
 */
static void journal_settle(struct flushers *fl)
{
	int64_t waited = 0;
	fl->jsettling = true;
	while (!fl->stop && !fl->jflush && waited < JOURNAL_SETTLE_MAX_MS) {
		uint64_t kicks = fl->jkicks;
		struct timespec ts = ms_from_now(JOURNAL_SETTLE_MS);
		while (!fl->stop && !fl->jflush &&
		       pthread_cond_timedwait(&fl->jcv, &fl->jmu, &ts) !=
			       ETIMEDOUT)
			;
		waited += JOURNAL_SETTLE_MS;
		if (fl->jkicks == kicks)
			break; /* quiet */
	}
	fl->jsettling = false;
}

/* Waits on @cv until @deadline (seconds, 0 = forever). */
static void wait_until(pthread_cond_t *cv, pthread_mutex_t *mu,
		       int64_t deadline)
{
	if (!deadline) {
		pthread_cond_wait(cv, mu);
		return;
	}
	/* hfs_now() may be shifted for tests; wait the difference. */
	int64_t delta = deadline - hfs_now();
	if (delta < 0)
		delta = 0;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += delta;
	pthread_cond_timedwait(cv, mu, &ts);
}

struct batch_stats {
	int files, skipped, failed;
	uint64_t bytes;
};

/* Files at most this large go into batch commits. */
#define BATCH_FILE_MAX ((uint64_t)16 << 20)
/* At most this many files in one batch commit (each holds a snapshot fd). */
#define BATCH_MAX 200
/* Times a file is prepared again because the journal moved on (or the
 * file changed while read) before it counts as failed for now. */
#define STALE_MAX 10

/* Queues @ino again after a failure, with a capped doubling delay. */
static void retry_later(struct catq *q, uint64_t ino, int64_t now)
{
	const struct hfs_config *cfg = q->fl->fs->cfg;
	int shift = q->retries < 6 ? q->retries : 6;
	int64_t delay = (int64_t)1 << shift;
	if (delay > cfg->interval[q->cat])
		delay = cfg->interval[q->cat];
	if (delay > RETRY_MAX)
		delay = RETRY_MAX;
	metrics_upload_retry();
	pthread_mutex_lock(&q->mu);
	push(q, ino, now + delay);
	pthread_mutex_unlock(&q->mu);
}

/* Accounts for a finished job and queues what must be looked at again. */
static void settle(struct catq *q, struct upload_job *job, int rc,
		   struct batch_stats *bs, char *err, size_t errlen)
{
	struct flushers *fl = q->fl;
	struct upload_result *res = &job->res;
	int64_t now = hfs_now();
	if (rc == -EINVAL || rc == -ENAMETOOLONG) {
		/* The remote refuses this name: retrying soon cannot help.
		 * The file stays dirty (nothing is dropped), shows the error
		 * in status and its xattr, and is tried again in an hour or
		 * at the next mount. */
		bs->failed++;
		metrics_upload(q->cat, false, 0);
		snprintf(err, errlen, "%s: refused by the remote: %s (%s)",
			 res->path[0] ? res->path : "?", strerror(-rc),
			 backend_last_error());
		hlog_err("%s upload of \"%s\" refused by the remote: %s (%s); "
			 "rename the file",
			 cat_name(q->cat), res->path, strerror(-rc),
			 backend_last_error());
		pthread_mutex_lock(&q->mu);
		push(q, job->ino, now + 3600);
		pthread_mutex_unlock(&q->mu);
		return;
	}
	if (rc) {
		bs->failed++;
		metrics_upload(q->cat, false, 0);
		metrics_remote_result(rc);
		snprintf(err, errlen, "%s: %s (%s)",
			 res->path[0] ? res->path : "?", strerror(-rc),
			 backend_last_error());
		hlog_warn("%s upload of \"%s\" failed: %s (%s); will retry",
			  cat_name(q->cat), res->path, strerror(-rc),
			  backend_last_error());
		retry_later(q, job->ino, now);
		return;
	}
	metrics_remote_result(0);
	if (res->open_for_write) {
		/* Keep an eye on a file a writer holds open: its new bytes
		 * may sit in the kernel until we ask for them. */
		flushers_schedule(fl, job->ino, q->cat, now, false);
	}
	if (res->mid_patch) {
		hlog_debug("\"%s\" is patched while open; sent at its next "
			   "close or fsync",
			   res->path[0] ? res->path : "?");
		return;
	}
	if (res->not_dirty)
		return;
	if (!res->still_dirty || res->skipped)
		runs_uploaded(fl->fs, job->ino, res->path);
	if (res->skipped) {
		bs->skipped++;
		hlog_debug("smart sync: \"%s\" unchanged, not uploaded",
			   res->path);
	} else if (!res->still_dirty || res->bytes) {
		bs->files++;
		bs->bytes += res->bytes;
		metrics_upload(q->cat, true, res->bytes);
		hlog_debug("uploaded \"%s\" bytes=%llu", res->path,
			   (unsigned long long)res->bytes);
	}
	if (res->still_dirty && !res->open_for_write)
		flushers_schedule(fl, job->ino, q->cat, now, false);
}

/*
 * Commits prepared small jobs in one backend batch. Each file is then
 * handled on its own, as if it had been uploaded alone: a conflict takes
 * the careful single path, a refused name its own retry, and the error
 * detail every message shows is that file's own.
 */
static void commit_batch(struct catq *q, struct upload_job **jobs, size_t n,
			 struct batch_stats *bs, char *err, size_t errlen)
{
	struct hfs *fs = q->fl->fs;
	struct backend_upload *ups = calloc(n, sizeof(*ups));
	struct backend_entry *outs = calloc(n, sizeof(*outs));
	int *rcs = calloc(n, sizeof(*rcs));
	char(*errs)[BACKEND_ERROR_MAX] = calloc(n, sizeof(*errs));
	int rc = (!ups || !outs || !rcs || !errs) ? -ENOMEM : 0;
	if (!rc) {
		for (size_t i = 0; i < n; i++)
			hfs_upload_args(jobs[i], &ups[i]);
		rc = fs->be->ops->upload_batch(fs->be, ups, n, outs, rcs, errs);
	}
	char detail[BACKEND_ERROR_MAX];
	snprintf(detail, sizeof(detail), "%s", backend_last_error());
	for (size_t i = 0; i < n; i++) {
		int r = rc ? rc : rcs[i];
		/* The messages below read the thread's last error. */
		backend_set_error("%s", rc ? detail : errs[i]);
		if (r == -EEXIST) /* a conflict: the careful single path */
			r = hfs_upload_commit(fs, jobs[i], &outs[i]);
		r = hfs_upload_finish(fs, jobs[i], r, &outs[i]);
		settle(q, jobs[i], r, bs, err, errlen);
	}
	free(ups);
	free(outs);
	free(rcs);
	free(errs);
}

/*
 * Uploads a batch of due files; fs->commit_lock held. Each file is
 * prepared (snapshot, hash, smart sync); small ones are committed together
 * when the backend can, the others one by one.
 */
static void upload_all(struct catq *q, struct qent *batch, size_t n,
		       bool flushing, struct batch_stats *bs, char *err,
		       size_t errlen)
{
	struct flushers *fl = q->fl;
	struct hfs *fs = fl->fs;
	bool batching = fs->be->ops->upload_batch != NULL;
	struct upload_job *jobs = calloc(BATCH_MAX, sizeof(*jobs));
	struct upload_job **small = calloc(BATCH_MAX, sizeof(*small));
	if (!jobs || !small) {
		free(jobs);
		free(small);
		for (size_t i = 0; i < n; i++)
			retry_later(q, batch[i].ino, hfs_now());
		bs->failed += (int)n;
		return;
	}
	size_t next = 0; /* the next file of @batch to look at */
	int stale = 0; /* times in a row it found the journal not replayed */
	while (next < n) {
		size_t nsmall = 0, used = 0;
		bool replay = false;
		while (next < n && used < BATCH_MAX) {
			uint64_t ino = batch[next].ino;
			int64_t now = hfs_now();
			int cat = hfs_classify(fs, ino);
			if (cat == -ENOENT) {
				next++;
				continue; /* deleted */
			}
			if (cat >= 0 && cat != q->cat && !flushing) {
				/* Renamed into another category: its
				 * schedule applies (but a flush request
				 * uploads it now, wherever it belongs). */
				flushers_schedule(fl, ino, cat, now, false);
				atomic_fetch_add(&fl->handed_over, 1);
				next++;
				continue;
			}
			struct upload_job *job = &jobs[used++];
			int rc = hfs_upload_prepare(fs, ino, job, flushing);
			if (rc == -ESTALE && stale < STALE_MAX) {
				/* Namespace changes the remote has not seen:
				 * commit what is prepared, replay them, then
				 * this file again. */
				stale++;
				replay = true;
				break;
			}
			next++;
			stale = 0;
			if (rc || !job->ready) {
				settle(q, job, rc, bs, err, errlen);
				continue;
			}
			if (batching && job->size <= BATCH_FILE_MAX) {
				small[nsmall++] = job;
				continue;
			}
			struct backend_entry meta;
			rc = hfs_upload_commit(fs, job, &meta);
			rc = hfs_upload_finish(fs, job, rc, &meta);
			settle(q, job, rc, bs, err, errlen);
		}
		if (nsmall == 1) {
			struct backend_entry meta;
			int rc = hfs_upload_commit(fs, small[0], &meta);
			rc = hfs_upload_finish(fs, small[0], rc, &meta);
			settle(q, small[0], rc, bs, err, errlen);
		} else if (nsmall > 1) {
			commit_batch(q, small, nsmall, bs, err, errlen);
		}
		for (size_t i = 0; i < used; i++)
			hfs_upload_release(fs, &jobs[i]);
		int rc = replay ? hfs_replay_journal(fs) : 0;
		if (rc) {
			snprintf(err, errlen, "journal replay: %s (%s)",
				 strerror(-rc), backend_last_error());
			for (; next < n; next++) {
				retry_later(q, batch[next].ino, hfs_now());
				bs->failed++;
			}
		}
	}
	free(jobs);
	free(small);
}

static void run_batch(struct catq *q, struct qent *batch, size_t n,
		      bool flushing, struct batch_stats *bs)
{
	struct hfs *fs = q->fl->fs;
	char err[256] = "";
	int64_t t0 = hfs_now_ns();

	pthread_mutex_lock(&fs->commit_lock);
	int rc = hfs_replay_journal(fs);
	if (rc) {
		/* The remote is not taking namespace changes: uploads now
		 * could land out of order. Retry the whole batch later,
		 * backing off as for a failed upload. */
		snprintf(err, sizeof(err), "journal replay: %s (%s)",
			 strerror(-rc), backend_last_error());
		int64_t now = hfs_now();
		for (size_t i = 0; i < n; i++) {
			retry_later(q, batch[i].ino, now);
			metrics_upload(q->cat, false, 0);
		}
		metrics_remote_result(rc);
		bs->failed += (int)n;
	} else {
		upload_all(q, batch, n, flushing, bs, err, sizeof(err));
		runs_report(fs);
	}
	pthread_mutex_unlock(&fs->commit_lock);

	long long ms = (long long)((hfs_now_ns() - t0) / 1000000);
	if (bs->files || bs->skipped)
		hlog_info("%s files=%d bytes=%llu skipped=%d failed=%d ms=%lld",
			  cat_event(q->cat), bs->files,
			  (unsigned long long)bs->bytes, bs->skipped,
			  bs->failed, ms);
	pthread_mutex_lock(&q->mu);
	if (bs->failed) {
		snprintf(q->last_error, sizeof(q->last_error), "%s", err);
		q->retries++;
	} else {
		q->retries = 0;
		q->last_error[0] = '\0';
		if (bs->files || bs->skipped)
			q->last_sync = hfs_now();
	}
	pthread_mutex_unlock(&q->mu);
}

static void *cat_thread(void *arg)
{
	struct catq *q = arg;
	struct flushers *fl = q->fl;
	char name[16];
	snprintf(name, sizeof(name), "hfs-%s", cat_name(q->cat));
	pthread_setname_np(pthread_self(), name);
	block_signals();
	backend_set_thread_cancel(&fl->cancel);

	pthread_mutex_lock(&q->mu);
	while (!fl->stop) {
		int64_t now = hfs_now();
		uint64_t req = q->req_seq;
		bool flush_all = req > q->done_seq;
		bool enabled = fl->fs->cfg->enabled[q->cat];
		size_t nb = 0;
		int64_t next = 0;
		struct qent *batch = NULL;
		if (q->n && (flush_all || enabled))
			batch = malloc(q->n * sizeof(*batch));
		for (size_t i = 0; batch && i < q->n;) {
			if (flush_all || q->q[i].due <= now) {
				batch[nb++] = q->q[i];
				q->q[i] = q->q[--q->n];
			} else {
				if (!next || q->q[i].due < next)
					next = q->q[i].due;
				i++;
			}
		}
		if (!batch && q->n && enabled) {
			/* Out of memory: try again shortly. */
			next = now + 1;
		}
		if (nb && reindex(q) < 0)
			next = now + 1; /* out of memory: retry soon */
		if (nb == 0 && !flush_all) {
			free(batch);
			q->sleeping = true;
			q->wake_at = enabled ? next : 0;
			wait_until(&q->cv, &q->mu, q->wake_at);
			q->sleeping = false;
			continue;
		}
		q->busy_since = now;
		pthread_mutex_unlock(&q->mu);
		struct batch_stats bs = {0};
		if (nb)
			run_batch(q, batch, nb, flush_all, &bs);
		free(batch);
		pthread_mutex_lock(&q->mu);
		q->busy_since = 0;
		if (flush_all) {
			q->done_seq = req;
			q->last_failures = bs.failed;
			pthread_cond_broadcast(&q->done_cv);
		}
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

static void *journal_thread(void *arg)
{
	struct flushers *fl = arg;
	struct hfs *fs = fl->fs;
	int64_t retry_at = 0;
	int failures = 0;
	pthread_setname_np(pthread_self(), "hfs-journal");
	block_signals();
	backend_set_thread_cancel(&fl->cancel);

	pthread_mutex_lock(&fl->jmu);
	while (!fl->stop) {
		if (!fl->jkick && !retry_at) {
			pthread_cond_wait(&fl->jcv, &fl->jmu);
			continue;
		}
		if (!fl->jkick && retry_at > hfs_now()) {
			wait_until(&fl->jcv, &fl->jmu, retry_at);
			continue;
		}
		journal_settle(fl);
		fl->jkick = false;
		fl->jflush = false;
		fl->jrunning = true;
		pthread_mutex_unlock(&fl->jmu);

		pthread_mutex_lock(&fs->commit_lock);
		int rc = hfs_replay_journal(fs);
		pthread_mutex_unlock(&fs->commit_lock);

		metrics_remote_result(rc);
		pthread_mutex_lock(&fl->jmu);
		fl->jpasses++;
		fl->jrunning = false;
		fl->jlast_rc = rc;
		pthread_cond_broadcast(&fl->jdone);
		if (rc) {
			if (!failures)
				hlog_warn("journal replay stopped: %s (%s); "
					  "retrying",
					  strerror(-rc), backend_last_error());
			snprintf(fl->jerror, sizeof(fl->jerror), "%s (%s)",
				 strerror(-rc), backend_last_error());
			int shift = failures < 5 ? failures : 5;
			failures++;
			retry_at = hfs_now() + ((int64_t)1 << shift);
		} else {
			if (failures)
				hlog_info("journal replay resumed");
			failures = 0;
			retry_at = 0;
			fl->jerror[0] = '\0';
		}
	}
	pthread_mutex_unlock(&fl->jmu);
	return NULL;
}

int flushers_create(struct hfs *fs, struct flushers **out)
{
	struct flushers *fl = calloc(1, sizeof(*fl));
	if (!fl)
		return -ENOMEM;
	/* The run folders' bookkeeping is theirs (runs.h), kept in fs. */
	int rc = runs_create(&fs->runs);
	if (rc) {
		free(fl);
		return rc;
	}
	fl->fs = fs;
	for (int c = 0; c < CAT_COUNT; c++) {
		struct catq *q = &fl->cq[c];
		q->fl = fl;
		q->cat = c;
		pthread_mutex_init(&q->mu, NULL);
		pthread_cond_init(&q->cv, NULL);
		pthread_cond_init(&q->done_cv, NULL);
	}
	pthread_mutex_init(&fl->jmu, NULL);
	pthread_cond_init(&fl->jcv, NULL);
	pthread_cond_init(&fl->jdone, NULL);
	*out = fl;
	return 0;
}

struct sched_ctx {
	struct flushers *fl;
	struct ixtxn *t;
	size_t count;
};

static int schedule_dirty(void *arg, uint64_t ino)
{
	struct sched_ctx *s = arg;
	struct node n;
	if (ix_get(s->t, ino, &n))
		return 0;
	flushers_schedule(s->fl, ino, n.r.cat, n.r.dirty_since,
			  n.r.last_upload == 0);
	s->count++;
	return 0;
}

int flushers_start(struct flushers *fl)
{
	struct ixtxn t;
	struct sched_ctx s = {.fl = fl, .t = &t};
	int rc = ix_begin(fl->fs->ix, false, &t);
	if (rc)
		return rc;
	rc = ix_foreach_dirty(&t, schedule_dirty, &s);
	ix_abort(&t);
	if (rc)
		return rc;
	if (s.count)
		hlog_info("recovered_pending_uploads files=%zu", s.count);
	for (int c = 0; c < CAT_COUNT; c++) {
		rc = -pthread_create(&fl->cq[c].thread, NULL, cat_thread,
				     &fl->cq[c]);
		if (rc)
			return rc;
		fl->cq[c].started = true;
	}
	rc = -pthread_create(&fl->jthread, NULL, journal_thread, fl);
	if (rc)
		return rc;
	fl->jstarted = true;
	flushers_kick_journal(fl);
	return 0;
}

void flushers_destroy(struct flushers *fl)
{
	if (!fl)
		return;
	/* Uploads in flight end at once: what is left stays queued. */
	atomic_store(&fl->cancel, true);
	for (int c = 0; c < CAT_COUNT; c++) {
		struct catq *q = &fl->cq[c];
		pthread_mutex_lock(&q->mu);
		fl->stop = true;
		pthread_cond_broadcast(&q->cv);
		pthread_mutex_unlock(&q->mu);
	}
	pthread_mutex_lock(&fl->jmu);
	fl->stop = true;
	pthread_cond_broadcast(&fl->jcv);
	pthread_mutex_unlock(&fl->jmu);
	for (int c = 0; c < CAT_COUNT; c++) {
		struct catq *q = &fl->cq[c];
		if (q->started)
			pthread_join(q->thread, NULL);
		free(q->q);
		free(q->slot);
		pthread_mutex_destroy(&q->mu);
		pthread_cond_destroy(&q->cv);
		pthread_cond_destroy(&q->done_cv);
	}
	if (fl->jstarted)
		pthread_join(fl->jthread, NULL);
	pthread_mutex_destroy(&fl->jmu);
	pthread_cond_destroy(&fl->jcv);
	pthread_cond_destroy(&fl->jdone);
	runs_destroy(fl->fs->runs);
	fl->fs->runs = NULL;
	free(fl);
}

/* Asks each flusher concerned for a flush pass; returns their sequence
 * numbers in @seq (0: not asked). */
static void request_round(struct flushers *fl, int cat, uint64_t seq[CAT_COUNT])
{
	for (int c = 0; c < CAT_COUNT; c++) {
		seq[c] = 0;
		if (cat >= 0 && c != cat)
			continue;
		if (cat < 0 && !fl->fs->cfg->enabled[c])
			continue; /* sync switched off: only on request */
		struct catq *q = &fl->cq[c];
		pthread_mutex_lock(&q->mu);
		seq[c] = ++q->req_seq;
		pthread_cond_signal(&q->cv);
		pthread_mutex_unlock(&q->mu);
	}
}

/* Waits for the passes of request_round(); adds their failed files to
 * *failures. Returns -ETIMEDOUT if @deadline came first. */
static int wait_round(struct flushers *fl, const uint64_t seq[CAT_COUNT],
		      int64_t deadline, int *failures)
{
	int rc = 0;
	for (int c = 0; c < CAT_COUNT && !rc; c++) {
		if (!seq[c])
			continue;
		struct catq *q = &fl->cq[c];
		pthread_mutex_lock(&q->mu);
		while (q->done_seq < seq[c] && !fl->stop) {
			if (hfs_now() >= deadline) {
				rc = -ETIMEDOUT;
				break;
			}
			wait_until(&q->done_cv, &q->mu, deadline);
		}
		if (q->done_seq >= seq[c])
			*failures += q->last_failures;
		pthread_mutex_unlock(&q->mu);
	}
	return rc;
}

int flushers_flush(struct flushers *fl, int cat, bool wait, int64_t timeout_s)
{
	uint64_t seq[CAT_COUNT];
	int journal_rc = 0;
	int64_t deadline = hfs_now() + (timeout_s > 0 ? timeout_s : 1);
	/* Renames, deletes and mkdirs too, even with no file to upload:
	 * "done" means the remote looks like the mount. The journal thread
	 * replays; we wait for one full pass, within the timeout. */
	pthread_mutex_lock(&fl->jmu);
	/* A pass under way may have looked at the journal before the
	 * latest changes: then the next one is the one to wait for. */
	uint64_t need = fl->jpasses + (fl->jrunning ? 2 : 1);
	fl->jkick = true;
	fl->jflush = true;
	pthread_cond_signal(&fl->jcv);
	while (wait && fl->jpasses < need && !fl->stop && hfs_now() < deadline)
		wait_until(&fl->jdone, &fl->jmu, deadline);
	if (wait)
		journal_rc = fl->jpasses >= need ? fl->jlast_rc : -ETIMEDOUT;
	pthread_mutex_unlock(&fl->jmu);
	if (!wait) {
		request_round(fl, cat, seq);
		return 0;
	}
	if (journal_rc == -ETIMEDOUT) {
		request_round(fl, cat, seq); /* the uploads go on anyway */
		return -ETIMEDOUT;
	}
	/*
	 * A flusher busy with a scheduled batch when the request came may
	 * hand a renamed file to another category whose pass is already
	 * over; while that happens, go round again.
	 */
	int failures = 0;
	for (;;) {
		uint64_t handed = atomic_load(&fl->handed_over);
		request_round(fl, cat, seq);
		int rc = wait_round(fl, seq, deadline, &failures);
		if (rc)
			return rc;
		if (fl->stop || atomic_load(&fl->handed_over) == handed)
			break;
	}
	/* Done means the index records it: durable before we say so. */
	int sync_rc = index_sync(fl->fs->ix);
	if (sync_rc)
		return sync_rc;
	return failures || journal_rc ? -EIO : 0;
}

void flushers_queued(struct flushers *fl, uint64_t *files, int64_t *last_sync)
{
	*files = 0;
	*last_sync = 0;
	for (int c = 0; fl && c < CAT_COUNT; c++) {
		struct catq *q = &fl->cq[c];
		pthread_mutex_lock(&q->mu);
		*files += q->n;
		if (q->last_sync > *last_sync)
			*last_sync = q->last_sync;
		pthread_mutex_unlock(&q->mu);
	}
}

int64_t flushers_next_upload(struct flushers *fl, uint64_t ino)
{
	int64_t best = 0;
	for (int c = 0; c < CAT_COUNT; c++) {
		struct catq *q = &fl->cq[c];
		pthread_mutex_lock(&q->mu);
		for (size_t i = 0; i < q->n; i++)
			if (q->q[i].ino == ino && (!best || q->q[i].due < best))
				best = q->q[i].due;
		pthread_mutex_unlock(&q->mu);
	}
	return best;
}

static json_t *time_or_null(int64_t t)
{
	return t ? json_integer(t) : json_null();
}

/* Describes queued file @ino for `status --files`; NULL if not dirty. */
static json_t *file_status(struct flushers *fl, struct ixtxn *t, uint64_t ino,
			   int64_t due)
{
	struct node nd;
	char *path = NULL;
	if (ix_get(t, ino, &nd) || !(nd.r.flags & NODE_DIRTY) ||
	    ix_path_dup(t, ino, &path))
		return NULL;
	char err[160] = "";
	struct hnode *hn = hnode_find(fl->fs, ino);
	if (hn) {
		pthread_mutex_lock(&hn->mu);
		snprintf(err, sizeof(err), "%s", hn->last_error);
		pthread_mutex_unlock(&hn->mu);
		hnode_put(fl->fs, hn);
	}
	json_t *o = json_pack(
		"{s:s, s:I, s:I, s:I, s:s, s:o}", "path", path, "bytes",
		(json_int_t)nd.r.size, "dirty_since",
		(json_int_t)nd.r.dirty_since, "next_upload", (json_int_t)due,
		"state", (nd.r.flags & NODE_UPLOADING) ? "uploading" : "dirty",
		"last_error", err[0] ? json_string(err) : json_null());
	free(path);
	return o;
}

void *flushers_status(struct flushers *fl, bool with_files)
{
	json_t *cats = json_array();
	struct ixtxn t;
	bool txn = ix_begin(fl->fs->ix, false, &t) == 0;
	for (int c = 0; c < CAT_COUNT; c++) {
		struct catq *q = &fl->cq[c];
		pthread_mutex_lock(&q->mu);
		size_t n = q->n;
		struct qent *ents = malloc((n ? n : 1) * sizeof(*ents));
		int64_t next = 0;
		for (size_t i = 0; i < n; i++) {
			if (ents)
				ents[i] = q->q[i];
			if (!next || q->q[i].due < next)
				next = q->q[i].due;
		}
		int64_t last_sync = q->last_sync;
		int64_t busy = q->busy_since;
		char err[256];
		snprintf(err, sizeof(err), "%s", q->last_error);
		pthread_mutex_unlock(&q->mu);

		uint64_t bytes = 0, files = 0;
		json_t *list = with_files ? json_array() : NULL;
		for (size_t i = 0; ents && txn && i < n; i++) {
			struct node nd;
			if (ix_get(&t, ents[i].ino, &nd) == 0 &&
			    (nd.r.flags & NODE_DIRTY)) {
				files++;
				bytes += nd.r.size;
				if (list)
					json_array_append_new(
						list,
						file_status(fl, &t, ents[i].ino,
							    ents[i].due));
			}
		}
		free(ents);
		const struct hfs_config *cfg = fl->fs->cfg;
		json_t *o = json_pack(
			"{s:s, s:b, s:I, s:I, s:I, s:o, s:o, s:o, s:b}", "name",
			cat_name(c), "enabled", cfg->enabled[c], "interval",
			(json_int_t)cfg->interval[c], "pending_files",
			(json_int_t)files, "pending_bytes", (json_int_t)bytes,
			"next_flush", time_or_null(files ? next : 0),
			"last_sync", time_or_null(last_sync), "last_error",
			err[0] ? json_string(err) : json_null(), "uploading",
			busy != 0);
		if (c == CAT_DATA_CACHE && o)
			json_object_set_new(
				o, "new_data_interval",
				json_integer(cfg->new_data_interval));
		if (list && o)
			json_object_set_new(o, "files", list);
		else
			json_decref(list);
		json_array_append_new(cats, o);
	}
	json_t *root = json_object();
	json_object_set_new(root, "categories", cats);
	if (txn) {
		json_object_set_new(root, "journal_pending",
				    json_integer(ix_journal_count(&t)));
		ix_abort(&t);
	}
	pthread_mutex_lock(&fl->jmu);
	json_object_set_new(root, "journal_error",
			    fl->jerror[0] ? json_string(fl->jerror)
					  : json_null());
	pthread_mutex_unlock(&fl->jmu);
	return root;
}

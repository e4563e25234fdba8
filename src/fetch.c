/*
 * Fetching remote bytes into content files: whole small files, ranges of
 * large ones as they are read; reads of a user wait remote_wait_seconds
 * at most.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs_i.h"
#include "hfs/backend.h"
#include "hfs/log.h"
#include "hfs/metrics.h"

/*
 * Small files are fetched whole, into a temporary file moved into place
 * when complete. Files larger than PARTIAL_MIN are fetched by ranges, as
 * they are read, into a sparse content file: a range covers the blocks
 * (BLOCK_MIN, 16 KiB, or more for files above 8 GiB: see block_shift) the
 * read touches that are missing, plus a read-ahead window for a reader
 * that reads on (ra_window), so scattered reads cost what they read and a
 * sequential reader from the start gets a window of up to RA_SEQ, fetched
 * in the background as several ranges at once (see fetch_partial). The
 * blocks present are recorded in the index (chunks DBI: a header, then
 * one bit a block) after their bytes are on disk, so a crash never leaves
 * a block marked present that is not. Once every block is present, its
 * content hash is checked and the file is CACHED.
 */
#define PARTIAL_MIN ((uint64_t)8 << 20)
#define BLOCK_SHIFT_MIN 14
#define BLOCKS_MAX ((uint64_t)1 << 19) /* bitmap of 64 KiB at most */
#define RANGE_MAX ((uint64_t)16 << 20) /* one download request */
#define RA_MAX ((uint64_t)8 << 20)
/* For a reader from the start: a window of 4 PIECE_MAX, NFLIGHT of them
 * in flight. */
#define RA_SEQ ((uint64_t)32 << 20)
#define RA_AFTER ((uint64_t)1 << 20)
#define RA_SCATTERED ((uint64_t)4 << 20)
#define SEQ_SLACK ((uint64_t)512 << 10)
#define WAIT_GAP ((uint64_t)64 << 10)
/* The blobs of layout 2 before ranges: one bit a 4 MiB chunk, no header;
 * read (and rewritten in the new form) as they are. */
#define OLD_CHUNK ((uint64_t)4 << 20)
#define MAP_MAGIC "hcb1"
#define MAP_HDR 8

static unsigned block_shift(uint64_t size)
{
	unsigned s = BLOCK_SHIFT_MIN;
	while ((size >> s) >= BLOCKS_MAX)
		s++;
	return s;
}

static bool bit_get(const uint8_t *b, uint64_t i)
{
	return b[i / 8] & (1u << (i % 8));
}

static void bit_set(uint8_t *b, uint64_t i)
{
	b[i / 8] |= (uint8_t)(1u << (i % 8));
}

/* The blocks of a partial file: MAP_HDR bytes (MAP_MAGIC, the block
 * shift, little endian), then the bitmap; what the chunks DBI holds. */
struct blockmap {
	uint8_t *buf;
	uint8_t *bits; /* buf + MAP_HDR */
	unsigned shift;
	uint64_t n; /* blocks */
	size_t len; /* of buf */
};

static int map_load(struct hfs *fs, uint64_t ino, uint64_t size,
		    struct blockmap *m)
{
	m->shift = block_shift(size);
	m->n = (size + ((uint64_t)1 << m->shift) - 1) >> m->shift;
	m->len = MAP_HDR + (size_t)((m->n + 7) / 8);
	m->buf = calloc(1, m->len);
	if (!m->buf)
		return -ENOMEM;
	m->bits = m->buf + MAP_HDR;
	memcpy(m->buf, MAP_MAGIC, 4);
	for (int i = 0; i < 4; i++)
		m->buf[4 + i] = (uint8_t)(m->shift >> (8 * i));
	uint64_t old_n = (size + OLD_CHUNK - 1) / OLD_CHUNK;
	size_t old_len = (size_t)((old_n + 7) / 8);
	size_t cap = m->len > old_len ? m->len : old_len;
	uint8_t *st = calloc(1, cap);
	if (!st)
		return -ENOMEM;
	struct ixtxn t;
	int rc = ix_begin(fs->ix, false, &t);
	int64_t got = rc ? rc : ix_chunks_get(&t, ino, st, cap);
	if (!rc)
		ix_abort(&t);
	if (got < 0) {
		free(st);
		return (int)got;
	}
	if ((size_t)got == m->len && memcmp(st, m->buf, MAP_HDR) == 0) {
		memcpy(m->buf, st, m->len);
	} else if ((size_t)got == old_len) {
		/* A 4 MiB chunk present: all of its blocks are. */
		for (uint64_t c = 0; c < old_n; c++) {
			if (!bit_get(st, c))
				continue;
			uint64_t b0 = (c * OLD_CHUNK) >> m->shift;
			uint64_t b1 = ((c + 1) * OLD_CHUNK) >> m->shift;
			for (uint64_t b = b0; b < b1 && b < m->n; b++)
				bit_set(m->bits, b);
		}
	} /* else: nothing known present (fetched again) */
	free(st);
	return 0;
}

/*
 * How far to fetch ahead of a read at @off, @len of @hn, which it records
 * (hn->mu held): a reader that read on from the start of the file gets a
 * window that doubles up to RA_SEQ (one window past its end, rounded up
 * to a PIECE_MAX, is the most it can cost); a stream that started elsewhere (a
 * column chunk after a footer) gets nothing until it has read RA_SCATTERED,
 * then a quarter of what it read so far, so a reader of many scattered runs of
 * a few MiB (parquet column chunks) fetches little more than it reads. Reads up
 * to SEQ_SLACK apart, in either order, are one stream: the kernel sends a read
 * as several requests, in parallel.
 */
static uint64_t ra_window(struct hnode *hn, uint64_t off, uint64_t len)
{
	uint64_t end = off + len;
	if (off <= hn->ra_next + SEQ_SLACK && end + SEQ_SLACK >= hn->ra_next &&
	    !(off == 0 && hn->ra_next == 0)) {
		if (end > hn->ra_next)
			hn->ra_next = end;
		if (off < hn->ra_start)
			hn->ra_start = off;
	} else {
		hn->ra_whole = off == 0 && hn->ra_next == 0;
		hn->ra_start = off;
		hn->ra_next = end;
	}
	uint64_t run = hn->ra_next - hn->ra_start, ra;
	if (hn->ra_whole)
		return run < RA_AFTER ? RA_AFTER : run < RA_SEQ ? run : RA_SEQ;
	else
		ra = run < RA_SCATTERED ? 0 : run / 4;
	return ra < RA_MAX ? ra : RA_MAX;
}

/* Downloads the whole remote file into place. hn->mu not held. */
static int fetch_whole(struct hfs *fs, struct hnode *hn, const char *path,
		       struct node *n, uint64_t *got_out)
{
	struct backend_entry meta;
	uint64_t got = 0;
	uint8_t hash[CHASH_LEN];
	struct ixtxn t;
	memset(&meta, 0, sizeof(meta));
	int fd = cache_open_tmp(fs->cache, hn->ino);
	if (fd < 0)
		return fd;
	int rc = fs->be->ops->download(fs->be, path, NULL, 0, 0, fd, &got,
				       &meta);
	metrics_bytes_down(got);
	if (!rc && !meta.has_hash)
		rc = chash_fd(fd, hash, NULL);
	if (!rc && fsync(fd) < 0)
		rc = -errno;
	close(fd);
	if (!rc)
		rc = cache_commit_tmp(fs->cache, hn->ino);
	if (rc)
		return rc;
	rc = ix_begin(fs->ix, true, &t);
	if (rc)
		return rc;
	if (ix_get(&t, hn->ino, n) == 0) {
		n->r.flags |= NODE_CACHED | NODE_HAS_HASH;
		n->r.flags &= ~NODE_PARTIAL;
		n->r.size = got;
		if (meta.rev[0])
			snprintf(n->r.rev, sizeof(n->r.rev), "%s", meta.rev);
		memcpy(n->r.remote_hash, meta.has_hash ? meta.hash : hash,
		       CHASH_LEN);
		ix_put(&t, n);
		ix_rsize_put(&t, hn->ino, got);
		ix_chunks_del(&t, hn->ino);
	}
	*got_out = got;
	return ix_commit(&t);
}

/*
 * Background fetches of a partial file. A read of missing blocks starts
 * fetches of ranges of at most PIECE_MAX, up to NFLIGHT of them at once
 * for one file, each on a thread of its own that downloads into the
 * content file at its offset; the read waits only for the ranges holding
 * its own bytes, while those of its read-ahead window go on downloading
 * behind it, so a sequential reader keeps several ranges in flight and a
 * link's latency does not set its speed. A block is "landed" (in
 * hn->fx, served at once) when its bytes are in the content file, and
 * recorded in the index only after an fdatasync that began after it
 * landed: one sync for SYNC_BYTES landed or when the fetches go idle, by
 * one worker at a time (fx->syncing), so a crash never leaves a block
 * marked present that is not. The sync that finds every block landed
 * checks the content hash and makes the file CACHED.
 *
 * Locking: hn->mu protects hn->fx and all of it; a worker holds a
 * reference to the hnode, and keeps hn->fetching true (with the other
 * workers and the syncer), so eviction, rewrites and undo leave the
 * content file alone meanwhile. hn->fx goes when it is idle and either
 * complete, stale (the node's revision or size changed: nothing more is
 * recorded) or no longer open; then the index holds all it knew.
 */
#define PIECE_MAX ((uint64_t)8 << 20)
/* 2, not 4: on the 2-core machine 4 in flight measured slower (0.6 of
 * curl against 0.8, bench/README.md): the fake, the reader and the daemon
 * share the cores. */
#define NFLIGHT 2
#define SYNC_BYTES ((uint64_t)64 << 20)

struct fetchx {
	struct blockmap m; /* landed blocks, in the index's form */
	uint8_t *busy; /* blocks a worker is downloading */
	uint64_t nlanded;
	uint64_t size;
	char rev[BACKEND_REV_MAX + 1];
	int nflight;
	bool syncing;
	bool stale;
	bool recorded; /* a sync recorded blocks in the index */
	uint64_t unsynced; /* bytes landed since the last sync began */
	unsigned fails; /* bumped by each failed fetch or check */
	int fail_rc;
};

struct fetch_job {
	struct hfs *fs;
	struct hnode *hn; /* a reference */
	uint64_t b0, b1;
	int64_t deadline;
};

/* Workers running in the process, for fs_fetch_drain. */
static pthread_mutex_t workers_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t workers_cv = PTHREAD_COND_INITIALIZER;
static int workers;

void fs_fetch_drain(void)
{
	pthread_mutex_lock(&workers_mu);
	while (workers > 0)
		pthread_cond_wait(&workers_cv, &workers_mu);
	pthread_mutex_unlock(&workers_mu);
}

void fs_fetch_free(struct hnode *hn)
{
	if (!hn->fx)
		return;
	free(hn->fx->m.buf);
	free(hn->fx->busy);
	free(hn->fx);
	hn->fx = NULL;
}

static int fx_load(struct hfs *fs, struct hnode *hn, const struct node *n)
{
	struct fetchx *fx = calloc(1, sizeof(*fx));
	if (!fx)
		return -ENOMEM;
	int rc = map_load(fs, hn->ino, n->r.size, &fx->m);
	if (!rc) {
		fx->busy = calloc(1, (size_t)((fx->m.n + 7) / 8));
		if (!fx->busy)
			rc = -ENOMEM;
	}
	if (rc) {
		free(fx->m.buf);
		free(fx);
		return rc;
	}
	for (uint64_t b = 0; b < fx->m.n; b++)
		fx->nlanded += bit_get(fx->m.bits, b);
	fx->size = n->r.size;
	snprintf(fx->rev, sizeof(fx->rev), "%s", n->r.rev);
	fx->recorded = fx->nlanded > 0;
	hn->fx = fx;
	return 0;
}

static bool fx_all_landed(const struct fetchx *fx, uint64_t b0, uint64_t b1)
{
	for (uint64_t b = b0; b <= b1; b++)
		if (!bit_get(fx->m.bits, b))
			return false;
	return true;
}

static bool fx_any_busy(const struct fetchx *fx, uint64_t b0, uint64_t b1)
{
	for (uint64_t b = b0; b <= b1; b++)
		if (bit_get(fx->busy, b))
			return true;
	return false;
}

/* Records the landed blocks @bits (a copy) in the index, if the node is
 * still the version fetched; @all: they are every block, so the content
 * is checked against the remote hash and the file becomes CACHED.
 * hn->mu not held. Returns 0, -ESTALE (the node changed), or -errno. */
static int fx_record(struct hfs *fs, struct hnode *hn, int fd,
		     const uint8_t *buf, size_t len, const char *rev,
		     uint64_t size, bool all)
{
	if (fdatasync(fd) < 0)
		return -errno;
	uint8_t hash[CHASH_LEN];
	uint64_t hashed = 0;
	int rc;
	if (all) {
		rc = chash_fd(fd, hash, &hashed);
		if (rc)
			return rc;
	}
	struct ixtxn t;
	rc = ix_begin(fs->ix, true, &t);
	if (rc)
		return rc;
	struct node cur;
	rc = ix_get(&t, hn->ino, &cur);
	if (!rc && (cur.r.size != size || strcmp(cur.r.rev, rev) != 0 ||
		    (cur.r.flags & (NODE_DIRTY | NODE_CACHED | NODE_LOST))))
		rc = -ESTALE;
	if (rc) {
		ix_abort(&t);
		return rc;
	}
	if (all &&
	    (hashed != size || ((cur.r.flags & NODE_HAS_HASH) &&
				memcmp(hash, cur.r.remote_hash, CHASH_LEN)))) {
		hlog_warn("inode %llu: the assembled ranges do not match the "
			  "remote content hash; fetching again",
			  (unsigned long long)hn->ino);
		ix_chunks_del(&t, hn->ino);
		cur.r.flags &= ~NODE_PARTIAL;
		ix_put(&t, &cur);
		ix_commit(&t);
		if (ftruncate(fd, 0) < 0)
			hlog_debug("truncate of a bad content file failed");
		return -EBADMSG;
	}
	if (all) {
		cur.r.flags |= NODE_CACHED | NODE_HAS_HASH;
		cur.r.flags &= ~NODE_PARTIAL;
		memcpy(cur.r.remote_hash, hash, CHASH_LEN);
		ix_put(&t, &cur);
		ix_chunks_del(&t, hn->ino);
	} else {
		ix_chunks_put(&t, hn->ino, buf, len);
		if (!(cur.r.flags & NODE_PARTIAL)) {
			cur.r.flags |= NODE_PARTIAL;
			ix_put(&t, &cur);
		}
	}
	return ix_commit(&t);
}

/* Syncs and records what landed while that is due (see above).
 * hn->mu held, dropped meanwhile. */
static void fx_sync(struct hfs *fs, struct hnode *hn, int fd)
{
	struct fetchx *fx = hn->fx;
	while (!fx->syncing && !fx->stale && fx->unsynced &&
	       (fx->unsynced >= SYNC_BYTES || fx->nflight == 0 ||
		fx->nlanded == fx->m.n)) {
		uint8_t *copy = malloc(fx->m.len);
		if (!copy)
			return; /* recorded by a later sync */
		memcpy(copy, fx->m.buf, fx->m.len);
		bool all = fx->nlanded == fx->m.n;
		char rev[BACKEND_REV_MAX + 1];
		snprintf(rev, sizeof(rev), "%s", fx->rev);
		uint64_t size = fx->size;
		size_t len = fx->m.len;
		fx->unsynced = 0;
		fx->syncing = true;
		pthread_mutex_unlock(&hn->mu);
		int rc = fx_record(fs, hn, fd, copy, len, rev, size, all);
		free(copy);
		pthread_mutex_lock(&hn->mu);
		fx->syncing = false;
		if (rc == -ESTALE) {
			fx->stale = true;
		} else if (rc == -EBADMSG) {
			memset(fx->m.bits, 0, fx->m.len - MAP_HDR);
			fx->nlanded = 0;
			fx->fails++;
			fx->fail_rc = -EIO;
		} else if (rc) {
			hlog_warn("inode %llu: recording fetched ranges "
				  "failed: %s",
				  (unsigned long long)hn->ino, strerror(-rc));
			fx->fails++;
			fx->fail_rc = rc;
		} else {
			fx->recorded = true;
			if (all)
				hn->complete = true;
		}
	}
}

/* Ends what hn->fx needs no more once it is idle. hn->mu held. */
static void fx_settle(struct hnode *hn)
{
	struct fetchx *fx = hn->fx;
	if (!fx || fx->nflight || fx->syncing)
		return;
	hn->fetching = false;
	if (fx->stale || hn->complete || (hn->nopen == 0 && !fx->unsynced))
		fs_fetch_free(hn);
}

static void *fx_worker(void *arg)
{
	struct fetch_job *j = arg;
	struct hfs *fs = j->fs;
	struct hnode *hn = j->hn;
	char path[4096], rev[BACKEND_REV_MAX + 1];
	uint64_t got = 0, roff, rend;
	int rc, fd;

	pthread_mutex_lock(&hn->mu);
	roff = j->b0 << hn->fx->m.shift;
	rend = j->b1 << hn->fx->m.shift;
	if (rend > hn->fx->size)
		rend = hn->fx->size;
	snprintf(rev, sizeof(rev), "%s", hn->fx->rev);
	pthread_mutex_unlock(&hn->mu);

	struct ixtxn t;
	rc = ix_begin(fs->ix, false, &t);
	if (!rc) {
		rc = ix_path(&t, hn->ino, path, sizeof(path));
		ix_abort(&t);
	}
	fd = rc ? -1 : cache_open(fs->cache, hn->ino, 1);
	if (!rc && fd < 0)
		rc = fd;
	int64_t t0 = hfs_now_ns();
	if (!rc) {
		backend_set_thread_deadline(j->deadline);
		rc = fs->be->ops->download(fs->be, path, rev[0] ? rev : NULL,
					   roff, rend - roff, fd, &got, NULL);
		backend_set_thread_deadline(0);
		metrics_bytes_down(got);
		if (!rc && got != rend - roff)
			rc = -EIO; /* the remote file changed size */
	}
	if (rc)
		hlog_warn("fetch of bytes %llu-%llu of \"%s\" failed: %s (%s)",
			  (unsigned long long)roff, (unsigned long long)rend,
			  rc == -ENOENT && !path[0] ? "?" : path, strerror(-rc),
			  backend_last_error());
	else
		hlog_debug("fetched \"%s\" off=%llu len=%llu ms=%lld", path,
			   (unsigned long long)roff,
			   (unsigned long long)(rend - roff),
			   (long long)((hfs_now_ns() - t0) / 1000000));

	pthread_mutex_lock(&hn->mu);
	struct fetchx *fx = hn->fx; /* kept while nflight > 0 */
	for (uint64_t b = j->b0; b < j->b1; b++) {
		fx->busy[b / 8] &= (uint8_t) ~(1u << (b % 8));
		if (!rc && !fx->stale && !bit_get(fx->m.bits, b)) {
			bit_set(fx->m.bits, b);
			fx->nlanded++;
		}
	}
	fx->nflight--;
	if (!rc)
		fx->unsynced += rend - roff;
	if (rc) {
		fx->fails++;
		fx->fail_rc = rc;
	}
	pthread_cond_broadcast(&hn->fetched); /* before a sync: it is slow */
	if (fd >= 0)
		fx_sync(fs, hn, fd);
	fx_settle(hn);
	pthread_cond_broadcast(&hn->fetched);
	pthread_mutex_unlock(&hn->mu);
	if (fd >= 0)
		close(fd);
	hnode_put(fs, hn);
	free(j);
	pthread_mutex_lock(&workers_mu);
	if (--workers == 0)
		pthread_cond_broadcast(&workers_cv);
	pthread_mutex_unlock(&workers_mu);
	return NULL;
}

/* Starts fetches of the missing blocks of [@first, @last] that no worker
 * has, in order, while fewer than NFLIGHT run. hn->mu held. */
static int fx_schedule(struct hfs *fs, struct hnode *hn, uint64_t first,
		       uint64_t last, int64_t deadline)
{
	struct fetchx *fx = hn->fx;
	uint64_t per = PIECE_MAX >> fx->m.shift;
	if (last >= fx->m.n)
		last = fx->m.n - 1;
	for (uint64_t b = first; b <= last && fx->nflight < NFLIGHT;) {
		if (bit_get(fx->m.bits, b) || bit_get(fx->busy, b)) {
			b++;
			continue;
		}
		/* Pieces end on multiples of PIECE_MAX: a window that moves
		 * on by a read at a time still starts whole pieces. */
		uint64_t e = b + 1;
		while (e <= last && e % per && !bit_get(fx->m.bits, e) &&
		       !bit_get(fx->busy, e))
			e++;
		struct fetch_job *j = malloc(sizeof(*j));
		if (!j)
			return -ENOMEM;
		*j = (struct fetch_job){fs, hnode_find(fs, hn->ino), b, e,
					deadline};
		if (j->hn != hn) {
			hnode_put(fs, j->hn);
			free(j);
			return -EIO;
		}
		pthread_attr_t at;
		pthread_t th;
		pthread_attr_init(&at);
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		pthread_mutex_lock(&workers_mu);
		workers++;
		pthread_mutex_unlock(&workers_mu);
		int err = pthread_create(&th, &at, fx_worker, j);
		pthread_attr_destroy(&at);
		if (err) {
			pthread_mutex_lock(&workers_mu);
			if (--workers == 0)
				pthread_cond_broadcast(&workers_cv);
			pthread_mutex_unlock(&workers_mu);
			hnode_put(fs, j->hn);
			free(j);
			return -err;
		}
		for (uint64_t k = b; k < e; k++)
			bit_set(fx->busy, k);
		fx->nflight++;
		hn->fetching = true;
		b = e;
	}
	return 0;
}

/*
 * Makes [@off, @off + @len) of the large remote file @hn (node @n) landed
 * in its content file (@len 0: the whole file, checked and CACHED),
 * fetching the missing ranges and, for a reader, its read-ahead window
 * in the background. hn->mu held; waits on hn->fetched.
 */
static int fetch_partial(struct hfs *fs, struct hnode *hn, const struct node *n,
			 uint64_t off, uint64_t len, int64_t deadline)
{
	uint64_t ra = len ? ra_window(hn, off, len) : 0;
	bool started = false, waited = false;
	unsigned fails0 = 0;
	struct node cur = *n;
	int rc;
	for (;;) {
		if (waited) {
			/* The node as it is now: a sync may have recorded
			 * blocks (NODE_PARTIAL) or made it CACHED since @n
			 * was read; judged by @n, the fetches of this very
			 * version would look stale and start over. */
			rc = fs_get_node(fs, hn->ino, &cur);
			if (rc)
				return rc;
			if (cur.r.flags & (NODE_CACHED | NODE_DIRTY))
				return 0; /* every byte is local */
			n = &cur;
		}
		waited = true;
		struct fetchx *fx = hn->fx;
		if (fx && !fx->stale &&
		    (fx->size != n->r.size || strcmp(fx->rev, n->r.rev) != 0 ||
		     (fx->recorded && !(n->r.flags & NODE_PARTIAL))))
			fx->stale = true; /* another version, or evicted */
		if (fx && fx->stale && !fx->nflight && !fx->syncing) {
			fs_fetch_free(hn);
			fx = NULL;
		}
		if (!fx || !fx->stale) {
			if (!fx) {
				rc = fx_load(fs, hn, n);
				if (rc)
					return rc;
				fx = hn->fx;
			}
			if (!started) {
				fails0 = fx->fails;
				started = true;
			}
			uint64_t first = len ? off >> fx->m.shift : 0;
			uint64_t last = len ? (off + len - 1) >> fx->m.shift
					    : fx->m.n - 1;
			if (last >= fx->m.n)
				last = fx->m.n - 1;
			uint64_t ra_last = last;
			if (len && ra) {
				uint64_t per = PIECE_MAX >> fx->m.shift;
				ra_last = (off + len + ra - 1) >> fx->m.shift;
				ra_last = (ra_last / per + 1) * per - 1;
			}
			bool have = len ? fx_all_landed(fx, first, last)
					: hn->complete;
			if (!len && fx->nlanded == fx->m.n && !fx->nflight &&
			    !fx->syncing && !fx->unsynced && !hn->complete &&
			    fx->fails == fails0) {
				/* Loaded whole from the index: check it. */
				int cfd = cache_open(fs->cache, hn->ino, 1);
				if (cfd < 0)
					return cfd;
				fx->unsynced = 1;
				hn->fetching = true;
				fx_sync(fs, hn, cfd);
				close(cfd);
				fx_settle(hn);
				fx = hn->fx;
				if (!fx)
					continue;
				have = hn->complete;
			}
			if (have) {
				if (ra_last > last)
					fx_schedule(fs, hn, last + 1, ra_last,
						    deadline);
				fx_settle(hn);
				return 0;
			}
			if (fx->fails != fails0 &&
			    !fx_any_busy(fx, first, last))
				return fx->fail_rc == -ENOMEM ? -ENOMEM : -EIO;
			rc = fx_schedule(fs, hn, first, ra_last, deadline);
			if (rc && !fx->nflight)
				return rc;
		}
		if (!deadline) {
			pthread_cond_wait(&hn->fetched, &hn->mu);
			continue;
		}
		int64_t left = deadline - backend_mono_ns();
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		int64_t ns = until.tv_nsec + (left > 0 ? left : 0);
		until.tv_sec += ns / 1000000000LL;
		until.tv_nsec = ns % 1000000000LL;
		if (left <= 0 || pthread_cond_timedwait(&hn->fetched, &hn->mu,
							&until) == ETIMEDOUT) {
			hlog_warn("a read of inode %llu waited %lld s "
				  "(remote_wait_seconds) for its bytes: EIO",
				  (unsigned long long)hn->ino,
				  (long long)fs->cfg->remote_wait_seconds);
			return -EIO;
		}
	}
}
void hfs_note_lost(struct hfs *fs, const char *path)
{
	pthread_mutex_lock(&fs->lost_lock);
	if (fs->nlost < HFS_LOST_MAX) {
		char **nl = realloc(fs->lost, (fs->nlost + 1) * sizeof(*nl));
		if (nl) {
			fs->lost = nl;
			fs->lost[fs->nlost] = strdup(path);
			if (fs->lost[fs->nlost])
				fs->nlost++;
		}
	}
	pthread_mutex_unlock(&fs->lost_lock);
}

/*
 * The content file of @hn (node @n, which is updated) was deleted or cut
 * short behind the daemon's back. A clean file is simply fetched again; a
 * dirty file's bytes are lost: never served as if good, reported in the
 * log and by the file's state ("lost"), and no longer queued. hn->mu held.
 */
static int content_lost(struct hfs *fs, struct hnode *hn, struct node *n)
{
	struct ixtxn t;
	char path[4096] = "?";
	bool dirty = n->r.flags & NODE_DIRTY;
	if (hn->fd >= 0) {
		close(hn->fd);
		hn->fd = -1;
	}
	hn->complete = false;
	cache_remove(fs->cache, hn->ino);
	int rc = ix_begin(fs->ix, true, &t);
	if (rc)
		return rc;
	if (ix_get(&t, hn->ino, n) == 0) {
		ix_path(&t, hn->ino, path, sizeof(path));
		n->r.flags &= ~(NODE_CACHED | NODE_PARTIAL);
		if (dirty) {
			n->r.flags &= ~NODE_DIRTY;
			n->r.flags |= NODE_LOST;
			ix_dirty_del(&t, hn->ino);
		}
		ix_put(&t, n);
		ix_chunks_del(&t, hn->ino);
	}
	if (t.err == -ENOENT)
		t.err = 0;
	rc = ix_commit(&t);
	if (rc)
		return rc;
	if (dirty) {
		hn->dirty_persisted = false;
		hfs_note_lost(fs, path);
		hlog_err(
			"the cached bytes of \"%s\" were removed behind "
			"huracanfs's back before they were uploaded: they are "
			"lost; reads fail with EIO until the file is rewritten "
			"or deleted",
			path);
		snprintf(hn->last_error, sizeof(hn->last_error),
			 "local bytes lost before upload");
	} else {
		hlog_warn("the cached bytes of \"%s\" were missing; fetching "
			  "them again",
			  path);
	}
	return 0;
}

/*
 * Makes bytes [@off, @off + @len) of @hn readable from its content file
 * (@len 0: the whole file), fetching what is missing from the remote.
 * Called and returns with hn->mu held; drops it while fetching.
 */
int fs_ensure_range_until(struct hfs *fs, struct hnode *hn, uint64_t off,
			  uint64_t len, int64_t deadline)
{
	/* While a fetch of a whole file runs, reads wait for it; the
	 * background fetches of a partial file (hn->fx) make no read wait
	 * but for its own bytes (fetch_partial). */
	while (hn->fetching && !hn->fx) {
		if (!deadline) {
			pthread_cond_wait(&hn->fetched, &hn->mu);
			continue;
		}
		int64_t left = deadline - backend_mono_ns();
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		int64_t ns = until.tv_nsec + (left > 0 ? left : 0);
		until.tv_sec += ns / 1000000000LL;
		until.tv_nsec = ns % 1000000000LL;
		if (left <= 0 || pthread_cond_timedwait(&hn->fetched, &hn->mu,
							&until) == ETIMEDOUT) {
			hlog_warn("a read of inode %llu waited %lld s "
				  "(remote_wait_seconds) for a fetch of its "
				  "bytes in progress: EIO",
				  (unsigned long long)hn->ino,
				  (long long)fs->cfg->remote_wait_seconds);
			return -EIO;
		}
	}
	struct node n;
	int rc = fs_get_node(fs, hn->ino, &n);
	if (rc)
		return rc;
	if (n.r.flags & NODE_LOST)
		return -EIO; /* until rewritten or deleted */
	if (n.r.flags & (NODE_CACHED | NODE_DIRTY)) {
		rc = hnode_open_fd(fs, hn, false);
		struct stat st;
		if (rc == 0 && !(n.r.flags & NODE_DIRTY) && !hn->live &&
		    fstat(hn->fd, &st) == 0 && (uint64_t)st.st_size < n.r.size)
			rc = -ENOENT; /* cut short behind our back */
		if (rc == 0 || rc != -ENOENT) {
			hn->complete = rc == 0;
			return rc;
		}
		/* The content file is gone behind our back. */
		rc = content_lost(fs, hn, &n);
		if (rc)
			return rc;
		if (n.r.flags & NODE_LOST)
			return -EIO;
	}
	if (!(n.r.flags & NODE_ON_REMOTE)) {
		/* Nothing remote to fetch: the local bytes are all. */
		rc = hnode_open_fd(fs, hn, true);
		hn->complete = rc == 0;
		return rc;
	}
	bool chunked = n.r.size > PARTIAL_MIN;
	if (chunked) {
		rc = fetch_partial(fs, hn, &n, off, len, deadline);
		if (!rc)
			rc = hnode_open_fd(fs, hn, true);
		return rc;
	}
	if (hn->fx) {
		/* Background fetches of a larger version: they end first. */
		hn->fx->stale = true;
		if (hn->fx->nflight || hn->fx->syncing) {
			pthread_cond_wait(&hn->fetched, &hn->mu);
			return fs_ensure_range_until(fs, hn, off, len,
						     deadline);
		}
		fs_fetch_free(hn);
	}
	hn->fetching = true;
	pthread_mutex_unlock(&hn->mu);

	char path[4096];
	struct ixtxn t;
	uint64_t got = n.r.size;
	int64_t t0 = hfs_now_ns();
	rc = ix_begin(fs->ix, false, &t);
	if (!rc) {
		rc = ix_path(&t, hn->ino, path, sizeof(path));
		ix_abort(&t);
	}
	backend_set_thread_deadline(deadline);
	if (!rc)
		rc = fetch_whole(fs, hn, path, &n, &got);
	backend_set_thread_deadline(0);
	if (rc && deadline && backend_mono_ns() >= deadline) {
		hlog_warn("fetch of \"%s\" failed: the remote did not answer "
			  "within remote_wait_seconds (%lld s): %s",
			  path, (long long)fs->cfg->remote_wait_seconds,
			  backend_last_error());
		rc = -EIO;
	} else if (rc) {
		hlog_warn("fetch of \"%s\" failed: %s (%s)", path,
			  strerror(-rc), backend_last_error());
		if (rc == -EAGAIN || rc == -EACCES || rc == -ENOENT ||
		    rc == -ETIMEDOUT || rc == -ECONNRESET ||
		    rc == -ECONNREFUSED || rc == -EHOSTUNREACH ||
		    rc == -ENETUNREACH)
			rc = -EIO; /* never "no such file" for a transport
				      failure or a vanished revision */
	} else {
		hlog_debug("fetched \"%s\" whole ms=%lld", path,
			   (long long)((hfs_now_ns() - t0) / 1000000));
	}

	pthread_mutex_lock(&hn->mu);
	hn->fetching = false;
	pthread_cond_broadcast(&hn->fetched);
	if (!rc) {
		if (hn->fd >= 0) {
			close(hn->fd); /* the old content file was replaced */
			hn->fd = -1;
		}
		hn->size = got;
		hn->live = false;
	}
	if (!rc)
		rc = hnode_open_fd(fs, hn, false);
	if (!rc)
		hn->complete = true;
	return rc;
}

/* A user waits for bytes not in the cache at most remote_wait_seconds:
 * then EIO, and the log says why. */
int fs_ensure_range(struct hfs *fs, struct hnode *hn, uint64_t off,
		    uint64_t len)
{
	return fs_ensure_range_until(fs, hn, off, len,
				     backend_mono_ns() +
					     fs->cfg->remote_wait_seconds *
						     1000000000LL);
}

/* Makes the content file of @hn complete. hn->mu held. */
int fs_ensure_cached(struct hfs *fs, struct hnode *hn)
{
	return fs_ensure_range(fs, hn, 0, 0);
}

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
 * sequential reader still gets ranges of up to RA_MAX. The blocks present
 * are recorded in the index (chunks DBI: a header, then one bit a block)
 * after their bytes are on disk, so a crash never leaves a block marked
 * present that is not. Once every block is present, the file is CACHED
 * and its content hash is checked.
 */
#define PARTIAL_MIN ((uint64_t)8 << 20)
#define BLOCK_SHIFT_MIN 14
#define BLOCKS_MAX ((uint64_t)1 << 19) /* bitmap of 64 KiB at most */
#define RANGE_MAX ((uint64_t)16 << 20) /* one download request */
#define RA_MAX ((uint64_t)8 << 20)
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
 * window that doubles up to RA_MAX (one window past its end is the most
 * it can cost); a stream that started elsewhere (a column chunk after a
 * footer) gets nothing until it has read RA_SCATTERED, then a quarter of
 * what it read so far, so a reader of many scattered runs of a few MiB
 * (parquet column chunks) fetches little more than it reads.
 * Reads up to SEQ_SLACK apart, in either order, are one stream: the
 * kernel sends a read as several requests, in parallel.
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
		ra = run < RA_AFTER ? RA_AFTER : run;
	else
		ra = run < RA_SCATTERED ? 0 : run / 4;
	return ra < RA_MAX ? ra : RA_MAX;
}

static void unwait(struct hnode *hn, struct fetch_wait *w, bool listed)
{
	if (!listed)
		return;
	for (struct fetch_wait **p = &hn->waiters; *p; p = &(*p)->next)
		if (*p == w) {
			*p = w->next;
			return;
		}
}

/*
 * Widens the range [*@off, *@off + *@len) that this fetch will make
 * present to the ranges of the reads waiting for it that touch it
 * (within WAIT_GAP), in turn: the kernel splits one read(2) into
 * requests of 128 KiB sent together, and one download serves them all.
 * The widened range stays within RANGE_MAX. hn->mu held.
 */
static void coalesce(struct hnode *hn, uint64_t *off, uint64_t *len)
{
	uint64_t lo = *off, hi = *off + *len;
	for (bool more = true; more;) {
		more = false;
		for (struct fetch_wait *w = hn->waiters; w; w = w->next) {
			if (w->off >= lo && w->end <= hi)
				continue;
			if (w->off > hi + WAIT_GAP || w->end + WAIT_GAP < lo)
				continue;
			uint64_t nlo = w->off < lo ? w->off : lo;
			uint64_t nhi = w->end > hi ? w->end : hi;
			if (nhi - nlo > RANGE_MAX)
				continue;
			lo = nlo;
			hi = nhi;
			more = true;
		}
	}
	*off = lo;
	*len = hi - lo;
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

/* Downloads blocks [@b0, @b1) of @m into @fd, then records them. */
static int fetch_blocks(struct hfs *fs, struct hnode *hn, const char *path,
			struct node *n, struct blockmap *m, int fd, uint64_t b0,
			uint64_t b1)
{
	uint64_t size = n->r.size;
	uint64_t roff = b0 << m->shift;
	uint64_t rend = b1 << m->shift;
	if (rend > size)
		rend = size;
	uint64_t got = 0;
	int rc = fs->be->ops->download(fs->be, path,
				       n->r.rev[0] ? n->r.rev : NULL, roff,
				       rend - roff, fd, &got, NULL);
	metrics_bytes_down(got);
	if (!rc && got != rend - roff)
		rc = -EIO; /* the remote file changed size */
	if (!rc && fdatasync(fd) < 0)
		rc = -errno;
	if (rc)
		return rc;
	for (uint64_t b = b0; b < b1; b++)
		bit_set(m->bits, b);
	struct ixtxn t;
	rc = ix_begin(fs->ix, true, &t);
	if (rc)
		return rc;
	ix_chunks_put(&t, hn->ino, m->buf, m->len);
	struct node cur;
	if (ix_get(&t, hn->ino, &cur) == 0 && !(cur.r.flags & NODE_PARTIAL)) {
		cur.r.flags |= NODE_PARTIAL;
		ix_put(&t, &cur);
	}
	return ix_commit(&t);
}

/*
 * Fetches the missing blocks of [@off, @off + @len) of a large remote
 * file (@len 0: all of it) and, if any was missing, those of the @ra
 * bytes after it, in ranges of missing blocks. hn->mu not held.
 */
static int fetch_ranges(struct hfs *fs, struct hnode *hn, const char *path,
			struct node *n, uint64_t off, uint64_t len, uint64_t ra)
{
	uint64_t size = n->r.size;
	struct blockmap m = {0};
	int rc, fd = -1;
	rc = map_load(fs, hn->ino, size, &m);
	if (rc)
		goto out;
	fd = cache_open(fs->cache, hn->ino, 1);
	if (fd < 0) {
		rc = fd;
		goto out;
	}
	uint64_t first = off >> m.shift;
	uint64_t last = len ? (off + len - 1) >> m.shift : m.n - 1;
	if (last >= m.n)
		last = m.n - 1;
	bool missing = false;
	for (uint64_t b = first; b <= last && !missing; b++)
		missing = !bit_get(m.bits, b);
	if (missing && len && ra) {
		uint64_t ra_last = (off + len + ra - 1) >> m.shift;
		last = ra_last < m.n ? ra_last : m.n - 1;
	}
	uint64_t per = RANGE_MAX >> m.shift;
	for (uint64_t b = first; missing && b <= last;) {
		if (bit_get(m.bits, b)) {
			b++;
			continue;
		}
		uint64_t e = b + 1;
		while (e <= last && e - b < per && !bit_get(m.bits, e))
			e++;
		rc = fetch_blocks(fs, hn, path, n, &m, fd, b, e);
		if (rc)
			goto out;
		b = e;
	}
	bool all = true;
	for (uint64_t b = 0; b < m.n && all; b++)
		all = bit_get(m.bits, b);
	if (!all)
		goto out;
	/* Complete: check it, then it is an ordinary cached file. */
	uint8_t hash[CHASH_LEN];
	uint64_t hashed = 0;
	struct ixtxn t;
	rc = chash_fd(fd, hash, &hashed);
	if (rc)
		goto out;
	if (hashed != size || ((n->r.flags & NODE_HAS_HASH) &&
			       memcmp(hash, n->r.remote_hash, CHASH_LEN))) {
		hlog_warn("\"%s\": the assembled ranges do not match the "
			  "remote content hash; fetching again",
			  path);
		rc = ix_begin(fs->ix, true, &t);
		if (!rc) {
			ix_chunks_del(&t, hn->ino);
			ix_commit(&t);
		}
		if (ftruncate(fd, 0) < 0)
			hlog_debug("truncate of a bad content file failed");
		rc = -EIO;
		goto out;
	}
	rc = ix_begin(fs->ix, true, &t);
	if (rc)
		goto out;
	struct node cur;
	if (ix_get(&t, hn->ino, &cur) == 0) {
		cur.r.flags |= NODE_CACHED | NODE_HAS_HASH;
		cur.r.flags &= ~NODE_PARTIAL;
		memcpy(cur.r.remote_hash, hash, CHASH_LEN);
		ix_put(&t, &cur);
	}
	ix_chunks_del(&t, hn->ino);
	rc = ix_commit(&t);
out:
	if (fd >= 0)
		close(fd);
	free(m.buf);
	return rc;
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
	/* While another fetch runs, this read's range is on hn->waiters,
	 * where the next fetcher finds it (coalesce). */
	struct fetch_wait w = {.off = off, .end = off + len, .next = NULL};
	bool listed = false;
	while (hn->fetching) {
		if (len && !listed) {
			w.next = hn->waiters;
			hn->waiters = &w;
			listed = true;
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
				  "(remote_wait_seconds) for a fetch of its "
				  "bytes in progress: EIO",
				  (unsigned long long)hn->ino,
				  (long long)fs->cfg->remote_wait_seconds);
			unwait(hn, &w, listed);
			return -EIO;
		}
	}
	unwait(hn, &w, listed);
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
	uint64_t ra = 0, foff = off, flen = len;
	if (chunked && len) {
		uint64_t ra_end = off + len + ra_window(hn, off, len);
		coalesce(hn, &foff, &flen);
		if (ra_end > foff + flen)
			ra = ra_end - (foff + flen);
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
	if (!rc && chunked)
		rc = fetch_ranges(fs, hn, path, &n, foff, flen, ra);
	else if (!rc)
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
		hlog_debug("fetched \"%s\" off=%llu len=%llu (asked %llu+%llu, "
			   "ahead %llu) ms=%lld",
			   path, (unsigned long long)foff,
			   (unsigned long long)flen, (unsigned long long)off,
			   (unsigned long long)len, (unsigned long long)ra,
			   (long long)((hfs_now_ns() - t0) / 1000000));
	}

	pthread_mutex_lock(&hn->mu);
	hn->fetching = false;
	pthread_cond_broadcast(&hn->fetched);
	if (!rc && !chunked) {
		if (hn->fd >= 0) {
			close(hn->fd); /* the old content file was replaced */
			hn->fd = -1;
		}
		hn->size = got;
		hn->live = false;
	}
	if (!rc)
		rc = hnode_open_fd(fs, hn, chunked);
	if (!rc && !chunked)
		hn->complete = true;
	if (!rc && chunked && fs_get_node(fs, hn->ino, &n) == 0)
		hn->complete = (n.r.flags & NODE_CACHED) != 0;
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

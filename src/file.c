/*
 * Files: dirty tracking (the clean->dirty mark, persisting what an open file
 * knows, the rewrite's set-aside version), open files, reads and writes, fsync,
 * setattr.
 */
#include <dirent.h>
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
#include "hfs/category.h"
#include "hfs/fold.h"
#include "hfs/log.h"
#include "hfs/undo.h"

/* The kernel's page size, as far as torn writes go (fs_i.h, patched_at). */
#define PATCH_PAGE 4096

/* ---- Dirty tracking ---- */

/*
 * The clean->dirty transition: the only write txn the write path opens.
 * Called without hn->mu (and hn->persist_mu held); @gen is the write
 * generation that made the file dirty. The times are the hnode's.
 */
static int mark_dirty_txn(struct hfs *fs, struct hnode *hn, uint64_t gen,
			  uint64_t size)
{
	struct ixtxn t;
	struct node n;
	char *path = NULL;
	pthread_mutex_lock(&hn->mu);
	bool rewriting = hn->sync_on_release;
	uint64_t proven = hn->proven;
	uint32_t aside = hn->aside;
	int64_t mtime = hn->mtime_ns, ctime = hn->ctime_ns;
	pthread_mutex_unlock(&hn->mu);
	int rc = ix_begin(fs->ix, true, &t);
	if (rc)
		return rc;
	rc = ix_get(&t, hn->ino, &n);
	if (!rc && n.r.parent == 0) {
		ix_abort(&t); /* an orphan is never uploaded */
		return 0;
	}
	if (!rc)
		rc = ix_path_dup(&t, hn->ino, &path);
	if (rc) {
		ix_abort(&t);
		return rc == -ENOENT ? 0 : rc; /* unlinked meanwhile */
	}
	bool was_dirty = n.r.flags & NODE_DIRTY;
	if (n.r.flags & NODE_PARTIAL)
		ix_chunks_del(&t, hn->ino);
	n.r.flags |= NODE_DIRTY | NODE_CACHED;
	n.r.flags &= ~(NODE_PARTIAL | NODE_LOST | NODE_REWRITING | NODE_ASIDE);
	if (rewriting)
		n.r.flags |= NODE_REWRITING;
	n.r.flags |= aside;
	if (!was_dirty)
		n.r.dirty_since = hfs_now();
	if (gen > n.r.gen)
		n.r.gen = gen;
	n.r.size = size;
	n.r.mtime_ns = mtime;
	n.r.ctime_ns = ctime;
	n.r.cat = (uint8_t)fs_classify_node(fs, &n, path);
	free(path);
	ix_put(&t, &n);
	ix_dirty_add(&t, hn->ino);
	ix_proven_put(&t, hn->ino, proven);
	rc = ix_commit(&t);
	if (rc)
		return rc;
	if (!was_dirty)
		fs_tell_dirty(fs, hn->ino, n.r.cat, n.r.dirty_since,
			      n.r.last_upload == 0);
	return 0;
}

static int mark_dirty(struct hfs *fs, struct hnode *hn, uint64_t gen,
		      uint64_t size)
{
	int rc;
	pthread_mutex_lock(&hn->persist_mu);
	HFS_RETRY_NOSPC(fs, rc, mark_dirty_txn(fs, hn, gen, size));
	pthread_mutex_unlock(&hn->persist_mu);
	return rc;
}

/*
 * Makes the index say "dirty", durably, before the first byte of a change
 * reaches the content file (durable.c, rule 3): a cut then never leaves
 * changed bytes under a clean mark. A change that cuts the file below
 * @off (a truncate, O_TRUNC, a collapse; UINT64_MAX for writes) first
 * lowers the size of its last fsync'd version (index.h, "proven") to
 * @off, durably too. Called without hn->mu.
 */
static int mark_dirty_first(struct hfs *fs, struct hnode *hn, uint64_t off)
{
	pthread_mutex_lock(&hn->mu);
	/* A change begins: an upload that took its snapshot before must
	 * not mark the file clean (upload.c, finish_ok compares the
	 * generation), even if the change reaches the file after that. */
	hn->gen++;
	if ((hn->dirty_persisted && off >= hn->proven) || hn->unlinked ||
	    hn->prev_kept) {
		/* dirty already, and the fsync'd size stays (or is that of
		 * the version set aside, which the change does not touch) */
		pthread_mutex_unlock(&hn->mu);
		return 0;
	}
	bool was_dirty = hn->dirty_persisted;
	uint64_t was_proven = hn->proven;
	hn->dirty_persisted = true;
	if (!was_dirty && hn->complete)
		hn->proven = hn->size; /* a clean file's bytes are synced
					* (durable.c, rule 4) */
	if (off < hn->proven) {
		hn->proven = off; /* those bytes are about to change */
		hn->proven_cuts++;
	}
	uint64_t gen = hn->gen, size = hn->size;
	pthread_mutex_unlock(&hn->mu);
	int rc = mark_dirty(fs, hn, gen, size);
	if (!rc)
		rc = index_sync(fs->ix);
	if (rc) {
		pthread_mutex_lock(&hn->mu);
		hn->dirty_persisted = was_dirty;
		hn->proven = was_proven;
		pthread_mutex_unlock(&hn->mu);
	}
	return rc;
}

/*
 * A file whose fsync'd bytes (index.h, "proven") are about to be replaced
 * by a truncate to 0 (O_TRUNC, truncate(2)) keeps them aside, in the
 * content's .prev file, until the new bytes are on disk (durable.c, rule
 * 2): a cut before that brings the old version back, never an empty or
 * torn file. The index says so first (NODE_REWRITING with the old proven
 * size, durable), so that recovery knows what the .prev file is; the
 * persist that records the new bytes as synced dooms it (hfs_reap).
 * hn->mu held, dropped meanwhile. Returns 0 (also when there is nothing
 * to set aside, or it cannot be: then the rewrite goes on as before) or
 * -errno.
 */
static void undo_end(struct hnode *hn);

static int rewrite_begin(struct hfs *fs, struct hnode *hn)
{
	if (hn->prev_kept || hn->proven == 0 || !hn->dirty_persisted ||
	    hn->unlinked || hn->fetching)
		return 0;
	if (hn->undo_fd >= 0 && hn->fd >= 0) {
		/* Patched since its fsync'd version: that version back in
		 * the content file first (its bytes go now anyway), so the
		 * one kept aside is the fsync'd one. */
		int urc = undo_apply(hn->undo_fd, hn->fd, NULL);
		if (urc) {
			hlog_warn("cannot keep the fsync'd version of inode "
				  "%llu aside during its rewrite: %s",
				  (unsigned long long)hn->ino, strerror(-urc));
			return 0;
		}
	}
	hn->sync_on_release = true;
	hn->aside = NODE_ASIDE_PREV;
	uint64_t gen = hn->gen, size = hn->size;
	pthread_mutex_unlock(&hn->mu);
	int rc = mark_dirty(fs, hn, gen, size);
	if (!rc)
		rc = index_sync(fs->ix);
	pthread_mutex_lock(&hn->mu);
	if (rc || hn->prev_kept) {
		if (rc)
			hn->aside = hn->undo_fd >= 0 ? NODE_ASIDE_UNDO : 0;
		return rc;
	}
	undo_end(hn);
	hn->aside = NODE_ASIDE_PREV;
	int fd = cache_set_aside(fs->cache, hn->ino);
	if (fd < 0) {
		hn->aside = 0;
		hlog_warn("cannot keep the fsync'd version of inode %llu aside "
			  "during its rewrite: %s",
			  (unsigned long long)hn->ino, strerror(-fd));
		return 0;
	}
	if (hn->fd >= 0) {
		/* In place, so an fd taken from hn->fd stays valid. */
		if (dup2(fd, hn->fd) < 0) {
			close(hn->fd);
			hn->fd = fd;
			fd = -1;
		}
		if (fd >= 0)
			close(fd);
	} else {
		hn->fd = fd;
	}
	hn->complete = true;
	hn->prev_kept = true;
	return 0;
}

/* ---- Undo of in-place patches (durable.c, rule 6) ---- */

/* Adds [@start, @end) to hn->undo, keeping it sorted and merged. hn->mu
 * held. 0 or -ENOMEM. */
static int span_add(struct hnode *hn, uint64_t start, uint64_t end)
{
	size_t i = 0;
	while (i < hn->nundo && hn->undo[i].end < start)
		i++;
	/* [i, j) are the spans that touch the new one. */
	size_t j = i;
	while (j < hn->nundo && hn->undo[j].start <= end) {
		if (hn->undo[j].start < start)
			start = hn->undo[j].start;
		if (hn->undo[j].end > end)
			end = hn->undo[j].end;
		j++;
	}
	if (i == j) {
		if (hn->nundo == hn->capundo) {
			size_t cap = hn->capundo ? hn->capundo * 2 : 16;
			struct undo_span *nu =
				realloc(hn->undo, cap * sizeof(*nu));
			if (!nu)
				return -ENOMEM;
			hn->undo = nu;
			hn->capundo = cap;
		}
		memmove(&hn->undo[i + 1], &hn->undo[i],
			(hn->nundo - i) * sizeof(*hn->undo));
		hn->nundo++;
	} else if (j > i + 1) {
		memmove(&hn->undo[i + 1], &hn->undo[j],
			(hn->nundo - j) * sizeof(*hn->undo));
		hn->nundo -= j - i - 1;
	}
	hn->undo[i].start = start;
	hn->undo[i].end = end;
	return 0;
}

/* The first part [*a, *b) of [@off, @end) not in hn->undo; false if it
 * is all there. hn->mu held. */
static bool span_gap(const struct hnode *hn, uint64_t off, uint64_t end,
		     uint64_t *a, uint64_t *b)
{
	uint64_t pos = off;
	for (size_t i = 0; i < hn->nundo && pos < end; i++) {
		const struct undo_span *s = &hn->undo[i];
		if (s->end <= pos)
			continue;
		if (s->start > pos) {
			*a = pos;
			*b = s->start < end ? s->start : end;
			return true;
		}
		pos = s->end;
	}
	if (pos >= end)
		return false;
	*a = pos;
	*b = end;
	return true;
}

/* Whether a change at @off touches the fsync'd version (proven) of a file
 * whose content file holds that version there. hn->mu held. */
static bool undo_wanted(const struct hnode *hn, uint64_t off)
{
	return hn->dirty_persisted && !hn->unlinked && !hn->prev_kept &&
	       !hn->fetching && hn->fd >= 0 && off < hn->proven;
}

static int span_from_file(void *arg, uint64_t off, uint64_t len)
{
	return span_add(arg, off, off + len);
}

void fs_undo_resume(struct hfs *fs, struct hnode *hn)
{
	int fd = cache_undo_open(fs->cache, hn->ino, false);
	int rc = fd < 0 ? fd : undo_ranges(fd, span_from_file, hn);
	if (rc) {
		/* Its records stay as they are, never emptied: the file is
		 * left as if its version were set aside (no more records). */
		hlog_warn("cannot read the undo records of inode %llu: %s",
			  (unsigned long long)hn->ino, strerror(-rc));
		if (fd >= 0)
			close(fd);
		hn->nundo = 0;
		hn->prev_kept = true;
		hn->aside = NODE_ASIDE_UNDO;
		return;
	}
	hn->undo_fd = fd;
	hn->sync_on_release = true;
	hn->aside = NODE_ASIDE_UNDO;
}

/* The session is over (its new bytes are synced, or no longer needed). */
static void undo_end(struct hnode *hn)
{
	if (hn->undo_fd >= 0)
		close(hn->undo_fd);
	hn->undo_fd = -1;
	hn->nundo = 0;
	if (hn->aside == NODE_ASIDE_UNDO)
		hn->aside = 0;
}

/*
 * Before bytes [@off, @off + @len) of a file change in place: where they
 * are part of its fsync'd version (index.h, "proven"), the bytes that
 * version has there are appended to its undo file (undo.h) and synced
 * first, so that a cut brings that version back, never a mix of old and
 * new pages (durable.c, rule 6). The index says so before the first
 * record (NODE_REWRITING, durable), as for a version set aside. Each range
 * is saved once per session, which ends when the file's new bytes are
 * synced (persist_live_txn). Called without hn->mu. 0 or -errno.
 */
static int undo_before(struct hfs *fs, struct hnode *hn, uint64_t off,
		       uint64_t len)
{
	int rc = 0;
	pthread_mutex_lock(&hn->mu);
	if (!undo_wanted(hn, off))
		goto out;
	if (hn->undo_fd < 0) {
		hn->sync_on_release = true;
		hn->aside = NODE_ASIDE_UNDO;
		uint64_t gen = hn->gen, size = hn->size;
		pthread_mutex_unlock(&hn->mu);
		rc = mark_dirty(fs, hn, gen, size);
		if (!rc)
			rc = index_sync(fs->ix);
		pthread_mutex_lock(&hn->mu);
		if (rc || !undo_wanted(hn, off)) {
			if (hn->undo_fd < 0 && !hn->prev_kept)
				hn->aside = 0;
			goto out;
		}
		if (hn->undo_fd < 0) {
			int fd = cache_undo_open(fs->cache, hn->ino, true);
			if (fd < 0) {
				hn->aside = 0;
				hlog_warn("cannot keep the fsync'd bytes of "
					  "inode %llu before a patch: %s",
					  (unsigned long long)hn->ino,
					  strerror(-fd));
				goto out;
			}
			hn->undo_fd = fd;
			hn->nundo = 0;
		}
	}
	uint64_t end = len > hn->proven - off ? hn->proven : off + len;
	uint64_t a, b;
	bool wrote = false;
	while (!rc && span_gap(hn, off, end, &a, &b)) {
		rc = undo_save(hn->undo_fd, hn->fd, a, b - a);
		if (!rc)
			rc = span_add(hn, a, b);
		wrote = true;
	}
	if (!rc && wrote && fdatasync(hn->undo_fd) < 0)
		rc = -errno;
out:
	pthread_mutex_unlock(&hn->mu);
	return rc;
}

/* Persists what hn knows better than the index (size, times, gen);
 * hn->persist_mu held. */
static int persist_live_txn(struct hfs *fs, struct hnode *hn)
{
	pthread_mutex_lock(&hn->mu);
	if (!hn->live || hn->unlinked) {
		pthread_mutex_unlock(&hn->mu);
		return 0;
	}
	uint64_t size = hn->size, gen = hn->gen;
	int64_t mtime = hn->mtime_ns, ctime = hn->ctime_ns;
	bool rewriting = hn->sync_on_release, synced = hn->synced;
	uint64_t cuts = hn->proven_cuts;
	bool prev = (hn->prev_kept || hn->undo_fd >= 0) && !rewriting;
	uint32_t aside = prev ? 0 : hn->aside;
	pthread_mutex_unlock(&hn->mu);

	struct ixtxn t;
	struct node n;
	int rc = ix_begin(fs->ix, true, &t);
	if (rc)
		return rc;
	rc = ix_get(&t, hn->ino, &n);
	if (rc) {
		ix_abort(&t);
		return rc == -ENOENT ? 0 : rc;
	}
	n.r.size = size;
	n.r.mtime_ns = mtime;
	n.r.ctime_ns = ctime;
	if (gen > n.r.gen)
		n.r.gen = gen;
	bool was_rewriting = n.r.flags & NODE_REWRITING;
	n.r.flags &= ~(NODE_REWRITING | NODE_ASIDE);
	if (rewriting)
		n.r.flags |= NODE_REWRITING;
	n.r.flags |= aside;
	ix_put(&t, &n);
	if (synced && (n.r.flags & NODE_DIRTY))
		ix_proven_put(&t, hn->ino, size); /* its bytes are on disk */
	else if (was_rewriting && !rewriting)
		ix_proven_put(&t, hn->ino, 0); /* it was the set-aside one's */
	if (prev) /* the .prev (rewrite_begin) and undo (undo_before) files */
		ix_doom_add(&t, hn->ino);
	rc = ix_commit(&t);
	if (rc)
		return rc;
	pthread_mutex_lock(&hn->mu);
	if (prev) {
		hn->prev_kept = false;
		undo_end(hn);
		hn->aside = 0;
	}
	if (was_rewriting && !rewriting && !synced && hn->gen == gen)
		hn->proven = 0;
	if (hn->gen == gen && hn->size == size && hn->mtime_ns == mtime)
		hn->live = false;
	/* As the index now has it, unless a cut below it came meanwhile
	 * (a write since does not unprove the synced bytes: an in-place
	 * one keeps them in its undo records). */
	if (synced && (n.r.flags & NODE_DIRTY) && hn->proven_cuts == cuts)
		hn->proven = size;
	hn->synced = false;
	pthread_mutex_unlock(&hn->mu);
	return 0;
}

static int persist_live(struct hfs *fs, struct hnode *hn)
{
	int rc;
	pthread_mutex_lock(&hn->persist_mu);
	HFS_RETRY_NOSPC(fs, rc, persist_live_txn(fs, hn));
	pthread_mutex_unlock(&hn->persist_mu);
	return rc;
}

/* ---- Open files ---- */

/*
 * Opens a handle on @ino. @fd, if not -1, is the content file of a file
 * just created (transferred: the hnode keeps it).
 */
static int open_handle(struct hfs *fs, uint64_t ino, int flags, int fd,
		       struct hfs_file **out)
{
	struct hfs_file *fh = calloc(1, sizeof(*fh));
	struct hnode *hn = fh ? hnode_get(fs, ino) : NULL;
	if (!hn) {
		free(fh);
		if (fd >= 0)
			close(fd);
		return -ENOMEM;
	}
	int acc = flags & O_ACCMODE;
	if (fd < 0)
		cache_touch(fs->cache, ino);
	pthread_mutex_lock(&hn->mu);
	if (fd >= 0) {
		if (hn->fd < 0) {
			hn->fd = fd;
			hn->complete = true;
		} else {
			close(fd);
		}
	}
	int rc = hnode_load(fs, hn);
	if (!rc && (flags & O_TRUNC) && acc != O_RDONLY) {
		/* No need to fetch what is about to be discarded. The new
		 * bytes replace the old: synced at close (durable.c). */
		hn->sync_on_release = true;
		if (hn->size > 0)
			hn->rewrite_at = hfs_now();
		rc = rewrite_begin(fs, hn);
		if (!rc)
			rc = hnode_open_fd(fs, hn, true);
		if (!rc) {
			pthread_mutex_unlock(&hn->mu);
			rc = mark_dirty_first(fs, hn, 0);
			pthread_mutex_lock(&hn->mu);
		}
		if (!rc && ftruncate(hn->fd, 0) < 0)
			rc = -errno;
		if (!rc) {
			hn->complete = true;
			hn->size = 0;
			hn->mtime_ns = hn->ctime_ns = hfs_now_ns();
			hn->gen++;
			hn->live = true;
			uint64_t gen = hn->gen;
			hn->dirty_persisted = true;
			pthread_mutex_unlock(&hn->mu);
			rc = mark_dirty(fs, hn, gen, 0);
			pthread_mutex_lock(&hn->mu);
		}
	}
	if (!rc) {
		hn->nopen++;
		if (acc != O_RDONLY && hn->nwriters++ == 0)
			hn->whole_size = hn->size;
	}
	pthread_mutex_unlock(&hn->mu);
	if (rc) {
		hnode_put(fs, hn);
		free(fh);
		return rc;
	}
	fh->hn = hn;
	fh->flags = flags;
	*out = fh;
	return 0;
}

int hfs_open(struct hfs *fs, uint64_t ino, int flags, struct hfs_file **fh)
{
	struct node n;
	int rc = fs_get_node(fs, ino, &n);
	if (rc)
		return rc;
	if (S_ISDIR(n.r.mode))
		return -EISDIR;
	return open_handle(fs, ino, flags, -1, fh);
}

int hfs_create_file(struct hfs *fs, uint64_t parent, const char *name,
		    mode_t mode, int flags, uid_t uid, gid_t gid,
		    struct stat *out, struct hfs_file **fh)
{
	struct node n;
	int fd = -1;
	int rc = fs_create_reg(fs, parent, name, mode, uid, gid, &n, &fd);
	if (rc)
		return rc;
	rc = open_handle(fs, n.ino, flags & ~O_TRUNC, fd, fh);
	if (rc)
		return rc;
	if (n.r.flags & NODE_REWRITING) {
		/* unlink + create again: the new bytes replace the old ones
		 * (durable.c, rule 2). */
		pthread_mutex_lock(&(*fh)->hn->mu);
		(*fh)->hn->sync_on_release = true;
		(*fh)->hn->rewrite_at = hfs_now();
		pthread_mutex_unlock(&(*fh)->hn->mu);
	}
	hfs_fill_stat(&n, out);
	fs_hnode_add_lookup(fs, n.ino);
	return 0;
}

int hfs_read_fd(struct hfs *fs, struct hfs_file *fh, uint64_t off, size_t size)
{
	struct hnode *hn = fh->hn;
	pthread_mutex_lock(&hn->mu);
	int rc = 0;
	if (hn->fd < 0 || hn->fetching || !hn->complete)
		rc = fs_ensure_range(fs, hn, off, size);
	if (!rc && hn->fd < 0)
		rc = hnode_open_fd(fs, hn, false);
	int fd = hn->fd;
	pthread_mutex_unlock(&hn->mu);
	return rc ? rc : fd;
}

/* Slows writers down while the cache filesystem is nearly full, so
 * uploads and eviction can catch up before the disk fills. */
static void throttle(struct hfs *fs)
{
	if (!atomic_load(&fs->low_space))
		return;
	struct timespec ts = {.tv_sec = 0, .tv_nsec = 20 * 1000000};
	nanosleep(&ts, NULL);
}

/* The content file of @hn with every byte in it (fetched if need be):
 * its fd, or -errno. */
static int whole_fd(struct hfs *fs, struct hnode *hn)
{
	pthread_mutex_lock(&hn->mu);
	int rc = 0;
	if (hn->fd < 0 || hn->fetching || !hn->complete)
		rc = fs_ensure_cached(fs, hn);
	if (!rc && hn->fd < 0)
		rc = hnode_open_fd(fs, hn, false);
	int fd = hn->fd;
	pthread_mutex_unlock(&hn->mu);
	return rc ? rc : fd;
}

static ssize_t copy_mem(void *arg, int fd, uint64_t off, size_t len)
{
	struct hfs_source *s = arg;
	ssize_t n = pwrite(fd, s->mem, len, (off_t)off);
	if (n < 0)
		return -errno;
	s->mem += n;
	return n;
}

void hfs_source_mem(struct hfs_source *s, const void *data, size_t len)
{
	s->len = len;
	s->copy = copy_mem;
	s->arg = s;
	s->mem = data;
}

ssize_t hfs_write(struct hfs *fs, struct hfs_file *fh,
		  const struct hfs_source *src, uint64_t off, bool writepage)
{
	struct hnode *hn = fh->hn;
	throttle(fs);
	int fd = whole_fd(fs, hn);
	if (fd < 0)
		return fd;
	/* Writes leave the fsync'd size as it is (see mark_dirty_first). */
	int rc = mark_dirty_first(fs, hn, UINT64_MAX);
	if (!rc)
		rc = undo_before(fs, hn, off, src->len);
	if (rc)
		return rc;

	size_t len = src->len;

	/*
	 * Write it all: a full disk is made room on once (clean files
	 * evicted). What still does not fit ends the write short, which a
	 * writer is told (write(2) returns the count) -- except for the
	 * kernel's writeback of cached pages, which takes a short count for
	 * a whole one and would drop the rest: that fails with the error
	 * (fsync(2) reports it).
	 */
	pthread_rwlock_rdlock(&hn->snap);
	ssize_t n = 0, r;
	bool made_room = false;
	while ((size_t)n < len) {
		r = src->copy(src->arg, fd, off + (uint64_t)n, len - (size_t)n);
		if (r > 0) {
			n += r;
			continue;
		}
		if (r == 0)
			r = -EIO; /* the source ran dry: never expected */
		if (r == -ENOSPC && !made_room) {
			made_room = true;
			pthread_rwlock_unlock(&hn->snap);
			bool again = hfs_room_again(fs);
			pthread_rwlock_rdlock(&hn->snap);
			if (again)
				continue;
		}
		if (n == 0 || writepage)
			n = r;
		break;
	}
	pthread_mutex_lock(&hn->mu);
	if (n > 0) {
		/* Into a whole version, below the page that holds its end:
		 * the writeback cache sends an append's last page again
		 * from its start, and the pages of an append in any order,
		 * which change no byte of the version a reader had. */
		if (off < (hn->whole_size & ~(uint64_t)(PATCH_PAGE - 1)) &&
		    !hn->patched_at)
			hn->patched_at = hfs_now();
		if (off + (uint64_t)n > hn->size)
			hn->size = off + (uint64_t)n;
		hn->mtime_ns = hn->ctime_ns = hfs_now_ns();
		hn->gen++;
		hn->live = true;
	}
	pthread_mutex_unlock(&hn->mu);
	pthread_rwlock_unlock(&hn->snap);
	return n;
}

int hfs_fallocate(struct hfs *fs, struct hfs_file *fh, int mode, uint64_t off,
		  uint64_t len)
{
	struct hnode *hn = fh->hn;
	if ((fh->flags & O_ACCMODE) == O_RDONLY)
		return -EBADF;
	if (off > INT64_MAX || len > INT64_MAX - off)
		return -EFBIG;
	int rc = whole_fd(fs, hn);
	if (rc < 0)
		return rc;
	rc = mode == FALLOC_FL_KEEP_SIZE
		     ? 0
		     : mark_dirty_first(fs, hn,
					(mode & (FALLOC_FL_COLLAPSE_RANGE |
						 FALLOC_FL_INSERT_RANGE))
						? off
						: UINT64_MAX);
	if (!rc && (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)))
		rc = undo_before(fs, hn, off, len); /* bytes become zeros */
	if (rc)
		return rc;

	pthread_rwlock_rdlock(&hn->snap);
	pthread_mutex_lock(&hn->mu);
	struct stat st;
	if (fallocate(hn->fd, mode, (off_t)off, (off_t)len) < 0 ||
	    fstat(hn->fd, &st) < 0)
		rc = -errno;
	/* Only a change of size or of bytes makes the file dirty; space
	 * reserved inside it does not. */
	bool changed = !rc && ((uint64_t)st.st_size != hn->size ||
			       (mode & ~FALLOC_FL_KEEP_SIZE) != 0);
	uint64_t gen = 0, size = 0;
	if (changed) {
		if (!hn->patched_at)
			hn->patched_at = hfs_now();
		hn->size = (uint64_t)st.st_size;
		hn->mtime_ns = hn->ctime_ns = hfs_now_ns();
		hn->gen++;
		hn->live = true;
		hn->dirty_persisted = true;
		gen = hn->gen;
		size = hn->size;
	}
	pthread_mutex_unlock(&hn->mu);
	pthread_rwlock_unlock(&hn->snap);
	if (changed)
		rc = mark_dirty(fs, hn, gen, size);
	if (!rc && changed)
		rc = persist_live(fs, hn);
	return rc;
}

/*
 * Syncs the content file of @hn and records its size as proven (index.h)
 * in the index (not durably: the caller takes a sync point, or commits a
 * txn that must not be durable without this one, after it).
 */
int fs_sync_and_prove(struct hfs *fs, struct hnode *hn, int datasync)
{
	pthread_mutex_lock(&hn->mu);
	int fd = hn->fd >= 0 ? dup(hn->fd) : -1;
	uint64_t gen = hn->gen;
	pthread_mutex_unlock(&hn->mu);
	int rc = 0;
	if (fd >= 0) {
		if ((datasync ? fdatasync(fd) : fsync(fd)) < 0)
			rc = -errno;
		close(fd);
	} else {
		rc = fs_sync_content(fs, hn->ino);
	}
	if (!rc) {
		/* Its bytes are on disk: a finished version (durable.c),
		 * unless a writer came meanwhile. */
		pthread_mutex_lock(&hn->mu);
		hn->sync_on_release = false;
		hn->synced = hn->gen == gen;
		if (hn->synced) {
			hn->patched_at = 0; /* a whole version (fsync) */
			hn->rewrite_at = 0;
			hn->whole_size = hn->size;
		}
		hn->live = true;
		pthread_mutex_unlock(&hn->mu);
		rc = persist_live(fs, hn);
	}
	return rc;
}

int hfs_fsync(struct hfs *fs, struct hfs_file *fh, int datasync)
{
	struct hnode *hn = fh->hn;
	int rc = fs_sync_and_prove(fs, hn, datasync);
	if (!rc)
		rc = index_sync(fs->ix);
	/* With the writeback cache the kernel would keep the size and
	 * blocks it cached before the data reached us; fsync is where a
	 * caller expects them right. Attributes only: no pages dropped. */
	if (!rc)
		fs_tell_inval_inode(fs, hn->ino, -1, 0);
	return rc;
}

int hfs_release(struct hfs *fs, struct hfs_file *fh)
{
	struct hnode *hn = fh->hn;
	int rc = 0;
	pthread_mutex_lock(&hn->mu);
	bool sync = hn->sync_on_release && hn->nwriters == 1 &&
		    (fh->flags & O_ACCMODE) != O_RDONLY && hn->fd >= 0;
	int fd = sync ? dup(hn->fd) : -1;
	uint64_t gen = hn->gen;
	if (sync)
		hn->sync_on_release = false;
	pthread_mutex_unlock(&hn->mu);
	if (fd >= 0) {
		/* It replaced bytes a cut must not lose (durable.c, rule
		 * 2): its own are on disk before its size is recorded. */
		if (fdatasync(fd) < 0)
			rc = -errno;
		close(fd);
		pthread_mutex_lock(&hn->mu);
		hn->live = true; /* the REWRITING mark goes */
		hn->synced = rc == 0 && hn->gen == gen;
		pthread_mutex_unlock(&hn->mu);
	}
	if (!rc)
		rc = persist_live(fs, hn);
	pthread_mutex_lock(&hn->mu);
	hn->nopen--;
	if ((fh->flags & O_ACCMODE) != O_RDONLY) {
		hn->nwriters--;
		/* close(2) had the kernel write back every cached page of
		 * the file before this RELEASE: a whole version. */
		hn->patched_at = 0;
		hn->whole_size = hn->size;
		if (hn->nwriters == 0)
			hn->rewrite_at = 0;
	}
	pthread_mutex_unlock(&hn->mu);
	hnode_put(fs, hn);
	free(fh);
	return rc;
}

/* ---- setattr ---- */

int hfs_setattr(struct hfs *fs, uint64_t ino, const struct stat *attr,
		int to_set, struct hfs_file *fh, struct stat *out)
{
	struct node n;
	if (ino == HFS_TODAY_INO)
		return -EPERM;
	int rc = fs_get_node(fs, ino, &n);
	if (rc == -ENOENT && !(to_set & HFS_SET_SIZE) &&
	    fs_inode_known(fs, ino)) {
		/* Unlinked, its record gone, and the kernel writes back the
		 * times it kept (writeback cache): nothing is left to set.
		 * An error here would come back from the next syncfs. */
		memset(out, 0, sizeof(*out));
		out->st_ino = ino;
		out->st_mode = S_IFREG | 0600;
		out->st_mtim = attr->st_mtim;
		out->st_atim = attr->st_atim;
		return 0;
	}
	if (rc)
		return rc;
	int64_t now = hfs_now_ns();

	if (to_set & HFS_SET_SIZE) {
		if (S_ISDIR(n.r.mode))
			return -EISDIR;
		if (!S_ISREG(n.r.mode))
			return -EINVAL; /* FIFOs, sockets, devices, links */
		struct hnode *hn = fh ? fh->hn : hnode_get(fs, ino);
		if (!hn)
			return -ENOMEM;
		if (fh)
			pthread_mutex_lock(&hn->mu);
		else {
			pthread_mutex_lock(&hn->mu);
			rc = hnode_load(fs, hn);
		}
		if (!rc) {
			if (attr->st_size == 0) {
				rc = rewrite_begin(fs, hn);
				if (!rc)
					rc = hnode_open_fd(fs, hn, true);
				hn->complete = rc == 0;
			} else if (hn->fd < 0 || hn->fetching || !hn->complete)
				rc = fs_ensure_cached(fs, hn);
			if (!rc && hn->fd < 0)
				rc = hnode_open_fd(fs, hn, false);
		}
		uint64_t gen = 0;
		if (!rc) {
			pthread_rwlock_t *snap = &hn->snap;
			if ((uint64_t)attr->st_size < hn->size) {
				hn->sync_on_release = true;
				if (hn->nwriters > 0)
					hn->rewrite_at = hfs_now();
			}
			pthread_mutex_unlock(&hn->mu);
			rc = mark_dirty_first(fs, hn, (uint64_t)attr->st_size);
			pthread_rwlock_rdlock(snap);
			pthread_mutex_lock(&hn->mu);
			if (!rc && ftruncate(hn->fd, attr->st_size) < 0)
				rc = -errno;
			if (!rc) {
				hn->size = (uint64_t)attr->st_size;
				if (hn->whole_size > hn->size)
					hn->whole_size = hn->size;
				hn->mtime_ns = hn->ctime_ns = now;
				hn->gen++;
				hn->live = true;
				hn->dirty_persisted = true;
				gen = hn->gen;
			}
			pthread_mutex_unlock(&hn->mu);
			pthread_rwlock_unlock(snap);
			if (!rc)
				rc = mark_dirty(fs, hn, gen,
						(uint64_t)attr->st_size);
			if (!rc)
				rc = persist_live(fs, hn);
		} else {
			pthread_mutex_unlock(&hn->mu);
		}
		if (!fh)
			hnode_put(fs, hn);
		if (rc)
			return rc;
	}

	if (to_set & (HFS_SET_MODE | HFS_SET_UID | HFS_SET_GID | HFS_SET_ATIME |
		      HFS_SET_MTIME | HFS_SET_ATIME_NOW | HFS_SET_MTIME_NOW |
		      HFS_SET_CTIME)) {
		/* An open file's hnode holds times newer than the index
		 * (live): they change with the index, in the order of the
		 * txns (persist_mu), or a persist that read them before this
		 * would write them back over an explicit mtime. */
		struct hnode *h =
			S_ISREG(n.r.mode) ? hnode_find(fs, ino) : NULL;
		if (h)
			pthread_mutex_lock(&h->persist_mu);
		struct ixtxn t;
		rc = ix_begin(fs->ix, true, &t);
		if (rc)
			goto times_out;
		rc = ix_get(&t, ino, &n);
		if (rc) {
			ix_abort(&t);
			goto times_out;
		}
		if (to_set & HFS_SET_MODE)
			n.r.mode =
				(n.r.mode & S_IFMT) | (attr->st_mode & 07777);
		if (to_set & HFS_SET_UID)
			n.r.uid = attr->st_uid;
		if (to_set & HFS_SET_GID)
			n.r.gid = attr->st_gid;
		if (to_set & HFS_SET_ATIME_NOW)
			n.r.atime_ns = now;
		else if (to_set & HFS_SET_ATIME)
			n.r.atime_ns = attr->st_atim.tv_sec * 1000000000LL +
				       attr->st_atim.tv_nsec;
		bool mtime = false;
		if (to_set & HFS_SET_MTIME_NOW) {
			n.r.mtime_ns = now;
			mtime = true;
		} else if (to_set & HFS_SET_MTIME) {
			n.r.mtime_ns = attr->st_mtim.tv_sec * 1000000000LL +
				       attr->st_mtim.tv_nsec;
			mtime = true;
		}
		if (to_set & HFS_SET_CTIME)
			n.r.ctime_ns = attr->st_ctim.tv_sec * 1000000000LL +
				       attr->st_ctim.tv_nsec;
		else
			n.r.ctime_ns = now;
		ix_put(&t, &n);
		rc = ix_commit(&t);
		if (!rc && h) {
			pthread_mutex_lock(&h->mu);
			if (mtime)
				h->mtime_ns = n.r.mtime_ns;
			h->ctime_ns = n.r.ctime_ns;
			pthread_mutex_unlock(&h->mu);
		}
	times_out:
		if (h) {
			pthread_mutex_unlock(&h->persist_mu);
			hnode_put(fs, h);
		}
		if (rc)
			return rc;
	}
	return hfs_getattr(fs, ino, out);
}

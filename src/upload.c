/*
 * Sync work on the remote: uploading one dirty file, and replaying the
 * namespace journal. Both run with fs->commit_lock held (one committer per
 * account), called by the flushers.
 *
 * An upload takes a consistent snapshot of the file: writers are held off
 * (hnode.snap, exclusive) for as long as it takes to copy the content file
 * inside the cache filesystem, which is short, and never for the network
 * transfer. Large files nobody has open for writing are sent straight from
 * the content file; the content hash sent with them makes the remote
 * refuse a copy torn by a writer that came meanwhile.
 *
 * Cleaning: the upload records the write generation it saw (G). Afterwards
 * the node is marked clean only if no write came since (hnode.gen == G and
 * the index's gen <= G); otherwise it stays dirty and is queued again.
 */
#include <errno.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs_i.h"
#include "hfs/category.h"
#include "hfs/log.h"

/* Files at most this large are always copied for the snapshot. */
#define SNAPSHOT_COPY_MAX ((uint64_t)64 << 20)

static void set_last_error(struct hnode *hn, const char *msg)
{
	pthread_mutex_lock(&hn->mu);
	snprintf(hn->last_error, sizeof(hn->last_error), "%s", msg);
	pthread_mutex_unlock(&hn->mu);
}

static int set_uploading(struct hfs *fs, uint64_t ino, bool on)
{
	struct ixtxn t;
	struct node n;
	int rc = ix_begin(fs->ix, true, &t);
	if (rc)
		return rc;
	rc = ix_get(&t, ino, &n);
	if (rc) {
		ix_abort(&t);
		return rc;
	}
	if (on)
		n.r.flags |= NODE_UPLOADING;
	else
		n.r.flags &= ~NODE_UPLOADING;
	ix_put(&t, &n);
	return ix_commit(&t);
}

/* Records a successful upload (or a smart-sync match) of generation @gen
 * with remote metadata @meta. */
static int finish_upload(struct hfs *fs, struct hnode *hn, uint64_t gen,
			 const struct backend_entry *meta,
			 const uint8_t hash[CHASH_LEN], struct upload_result *res)
{
	bool clean = false;
	pthread_mutex_lock(&hn->mu);
	if (hn->gen == gen && !hn->unlinked) {
		hn->dirty_persisted = false;
		hn->last_error[0] = '\0';
		clean = true;
	}
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
	n.r.flags &= ~NODE_UPLOADING;
	n.r.flags |= NODE_ON_REMOTE | NODE_HAS_HASH;
	memcpy(n.r.remote_hash, hash, CHASH_LEN);
	if (meta && meta->rev[0])
		snprintf(n.r.rev, sizeof(n.r.rev), "%s", meta->rev);
	n.r.last_upload = hfs_now();
	if (clean && n.r.gen <= gen) {
		n.r.flags &= ~NODE_DIRTY;
		n.r.dirty_since = 0;
		ix_dirty_del(&t, hn->ino);
	} else {
		/* Written during the upload: its new bytes are dirty since
		 * now. */
		n.r.dirty_since = hfs_now();
		res->still_dirty = true;
		clean = false;
	}
	ix_put(&t, &n);
	rc = ix_commit(&t);
	if (rc)
		return rc;
	if (!clean) {
		pthread_mutex_lock(&hn->mu);
		hn->dirty_persisted = true;
		pthread_mutex_unlock(&hn->mu);
		res->still_dirty = true;
	}
	return 0;
}

int hfs_upload(struct hfs *fs, uint64_t ino, struct upload_result *res)
{
	struct hnode *hn = hnode_get(fs, ino);
	struct ixtxn t;
	struct node n;
	int snap_fd = -1, rc;
	uint8_t hash[CHASH_LEN];
	memset(res, 0, sizeof(*res));
	if (!hn)
		return -ENOMEM;

	/*
	 * A file open for writing may have bytes the kernel holds in its
	 * writeback cache (or in a shared mapping) and has not sent yet:
	 * have it write them back now, so the snapshot is what the writer
	 * wrote, and keep looking at the file while it stays open.
	 */
	pthread_mutex_lock(&hn->mu);
	res->open_for_write = hn->nwriters > 0;
	pthread_mutex_unlock(&hn->mu);
	if (res->open_for_write && fs->se)
		fuse_lowlevel_notify_inval_inode(fs->se, ino, 0, 0);

	rc = ix_begin(fs->ix, false, &t);
	if (rc)
		goto out;
	rc = ix_get(&t, ino, &n);
	if (!rc && (!(n.r.flags & NODE_DIRTY) || n.r.parent == 0))
		rc = -ENOENT;
	if (!rc)
		rc = ix_path(&t, ino, res->path, sizeof(res->path));
	ix_abort(&t);
	if (rc == -ENOENT) {
		res->not_dirty = true;
		rc = 0;
		goto out;
	}
	if (rc)
		goto out;
	res->cat = cat_classify(fs->cfg->rules, fs->cfg->n_rules,
				res->path + 1);

	/* The snapshot. */
	pthread_rwlock_wrlock(&hn->snap);
	pthread_mutex_lock(&hn->mu);
	rc = hnode_load(fs, hn);
	if (!rc)
		rc = hnode_open_fd(fs, hn, false);
	uint64_t gen = hn->gen, size = hn->live ? hn->size : n.r.size;
	int64_t mtime = (hn->live ? hn->mtime_ns : n.r.mtime_ns) / 1000000000LL;
	bool copy = hn->nwriters > 0 || size <= SNAPSHOT_COPY_MAX;
	int src = hn->fd;
	pthread_mutex_unlock(&hn->mu);
	if (!rc && copy) {
		snap_fd = cache_tmpfile(fs->cache);
		rc = snap_fd < 0 ? snap_fd : cache_copy(src, snap_fd, size);
	} else if (!rc) {
		snap_fd = dup(src);
		if (snap_fd < 0)
			rc = -errno;
	}
	pthread_rwlock_unlock(&hn->snap);
	if (rc)
		goto out;

	uint64_t hashed = 0;
	rc = chash_fd(snap_fd, hash, &hashed);
	if (rc)
		goto out;
	if (hashed != size) {
		/* A large file changed under us: try again later. */
		res->still_dirty = true;
		goto out;
	}
	res->bytes = size;
	if ((n.r.flags & NODE_ON_REMOTE) && !(n.r.flags & NODE_HAS_HASH)) {
		/* We never learned the remote's hash: ask, rather than
		 * upload bytes it may already have. */
		struct backend_entry cur;
		if (fs->be->ops->stat(fs->be, res->path, &cur) == 0 &&
		    !cur.is_dir && cur.has_hash) {
			n.r.flags |= NODE_HAS_HASH;
			memcpy(n.r.remote_hash, cur.hash, CHASH_LEN);
		}
	}
	if ((n.r.flags & NODE_ON_REMOTE) && (n.r.flags & NODE_HAS_HASH) &&
	    memcmp(hash, n.r.remote_hash, CHASH_LEN) == 0) {
		res->skipped = true;
		rc = finish_upload(fs, hn, gen, NULL, hash, res);
		goto out;
	}

	rc = set_uploading(fs, ino, true);
	if (rc)
		goto out;
	struct backend_upload up = {
		.path = res->path,
		.fd = snap_fd,
		.size = size,
		.hash = hash,
		.mtime = mtime,
		.parent_rev = NULL,
		.autorename = false,
	};
	struct backend_entry meta;
	memset(&meta, 0, sizeof(meta));
	rc = fs->be->ops->upload(fs->be, &up, &meta);
	if (rc) {
		char msg[160];
		snprintf(msg, sizeof(msg), "upload failed: %s (%s)",
			 strerror(-rc), backend_last_error());
		set_last_error(hn, msg);
		set_uploading(fs, ino, false);
		goto out;
	}
	rc = finish_upload(fs, hn, gen, &meta, hash, res);
out:
	if (snap_fd >= 0)
		close(snap_fd);
	hnode_put(fs, hn);
	return rc;
}

/* Replays one journal entry. Returns 0 when the entry is done with (also
 * when it is moot or refused for good), or a transient -errno. */
static int replay_one(struct hfs *fs, const struct journal_entry *e)
{
	struct backend *be = fs->be;
	int rc;
	switch (e->op) {
	case JOP_MKDIR:
		rc = be->ops->mkdir(be, e->path);
		if (rc == -EEXIST)
			rc = 0;
		break;
	case JOP_UNLINK:
	case JOP_RMDIR:
		rc = be->ops->remove(be, e->path);
		if (rc == -ENOENT)
			rc = 0;
		break;
	case JOP_RENAME:
		rc = be->ops->move(be, e->path, e->path2);
		if (rc == -EEXIST && strcasecmp(e->path, e->path2) != 0) {
			/* A stale target: the journal removed it locally. */
			rc = be->ops->remove(be, e->path2);
			if (rc == 0 || rc == -ENOENT)
				rc = be->ops->move(be, e->path, e->path2);
		}
		if (rc == -ENOENT)
			rc = 0; /* never reached the remote */
		break;
	default:
		rc = 0;
		break;
	}
	if (rc == -EAGAIN || rc == -EACCES || rc == -ENOSPC || rc == -EIO)
		return rc;
	if (rc)
		hlog_warn("remote refused %s of \"%s\": %s (%s); dropped",
			  e->op == JOP_MKDIR    ? "mkdir"
			  : e->op == JOP_RENAME ? "rename"
						: "delete",
			  e->path, strerror(-rc), backend_last_error());
	return 0;
}

int hfs_replay_journal(struct hfs *fs)
{
	struct journal_entry *e = malloc(sizeof(*e));
	int rc;
	if (!e)
		return -ENOMEM;
	for (;;) {
		struct ixtxn t;
		rc = ix_begin(fs->ix, false, &t);
		if (rc)
			break;
		rc = ix_journal_first(&t, e);
		ix_abort(&t);
		if (rc == -ENOENT) {
			rc = 0;
			break;
		}
		if (rc)
			break;
		rc = replay_one(fs, e);
		if (rc)
			break;
		hlog_debug("journal: replayed #%llu op=%d \"%s\"",
			   (unsigned long long)e->seq, e->op, e->path);
		rc = ix_begin(fs->ix, true, &t);
		if (rc)
			break;
		ix_journal_del(&t, e->seq);
		rc = ix_commit(&t);
		if (rc)
			break;
	}
	free(e);
	return rc;
}

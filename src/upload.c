/*
 * Sync work on the remote: uploading one dirty file, and replaying the
 * namespace journal (its deletes in deletes.c). Both run with
 * fs->commit_lock held (one committer per account), called by the
 * flushers.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs_i.h"
#include "hfs/category.h"
#include "hfs/log.h"
#include "hfs/metrics.h"
#include "hfs/watcher.h"

/* Files at most this large are always copied for the snapshot. */
#define SNAPSHOT_COPY_MAX ((uint64_t)64 << 20)
/* How long (s) a file patched while open waits for a close or fsync
 * before its upload takes it as it is (fs_i.h, patched_at). */
#define PATCH_WAIT_MAX 600

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

/*
 * Marks @job's file as uploading and fixes the path it goes to, in one
 * txn. The path must be where the file is once the remote has caught up
 * with the journal: namespace changes made after this point are replayed
 * after the upload (both hold fs->commit_lock), and move it along; but
 * changes made before and not yet replayed would land after the bytes.
 * So with the journal not empty this gives -ESTALE: replay, then prepare
 * again. A file that never reached the remote is renamed without a
 * journal entry, so its path is read here, not taken from the prepare.
 */
static int start_upload(struct hfs *fs, struct upload_job *job)
{
	struct ixtxn t;
	struct node n;
	char path[sizeof(job->res.path)];
	int rc = ix_begin(fs->ix, true, &t);
	if (rc)
		return rc;
	int64_t pending = ix_journal_count(&t);
	rc = pending < 0 ? (int)pending : pending > 0 ? -ESTALE : 0;
	if (!rc)
		rc = ix_get(&t, job->ino, &n);
	if (!rc && (!(n.r.flags & NODE_DIRTY) || n.r.parent == 0))
		rc = -ESTALE; /* deleted or cleaned meanwhile: look again */
	if (!rc)
		rc = ix_path(&t, job->ino, path, sizeof(path));
	if (rc) {
		ix_abort(&t);
		return rc;
	}
	/* From now on the remote may hold it (even if the upload seems to
	 * fail: its answer may be what got lost), so renames and deletes of
	 * it are journaled. */
	n.r.flags |= NODE_UPLOADING | NODE_ON_REMOTE;
	ix_put(&t, &n);
	ix_attempt_add(&t, job->ino, job->hash);
	if (job->proven) {
		/* The bytes sent are the content file's, synced: proven
		 * (index.h), as a power cut may undo the clean mark. */
		ix_proven_put(&t, job->ino, job->size);
	}
	rc = ix_commit(&t);
	if (!rc && strcmp(path, job->res.path) != 0) {
		memcpy(job->res.path, path, sizeof(path));
		job->res.cat = fs_classify_node(fs, &n, path);
	}
	return rc;
}

/* Records a successful upload (or a smart-sync match) of generation @gen
 * with remote metadata @meta. */
static int finish_upload(struct hfs *fs, struct hnode *hn, uint64_t gen,
			 const struct backend_entry *meta,
			 const uint8_t hash[CHASH_LEN],
			 struct upload_result *res)
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
	/* A clean mark vouches for the content file: on disk first
	 * (durable.c, rule 4). */
	int rc = clean ? fs_sync_content(fs, hn->ino) : 0;
	if (rc)
		return rc;
	rc = ix_begin(fs->ix, true, &t);
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
	ix_attempt_answered(&t, hn->ino, hash);
	if (meta && meta->rev[0])
		snprintf(n.r.rev, sizeof(n.r.rev), "%s", meta->rev);
	n.r.last_upload = hfs_now();
	struct node d;
	if (ix_get(&t, n.r.parent, &d) == 0 && !(d.r.flags & NODE_ON_REMOTE)) {
		/* The upload created the folder remotely if it was not. */
		d.r.flags |= NODE_ON_REMOTE;
		ix_put(&t, &d);
	}
	if (meta && meta->rev[0])
		ix_rsize_put(&t, hn->ino, meta->size);
	else if (clean && n.r.gen <= gen)
		ix_rsize_put(&t, hn->ino, n.r.size);
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
	hfs_ns_changed(fs);
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

/*
 * Our bytes went to a conflicted copy (@meta->name, beside the original):
 * as a desktop client does, our file takes that name locally, keeps its
 * state (still dirty if written during the upload), and its directory is
 * listed again soon, which brings the remote's version under the original
 * name. Nothing is lost on either side.
 */
static int finish_conflict(struct hfs *fs, struct upload_job *job,
			   const struct backend_entry *meta)
{
	struct ixtxn t;
	struct node n, d;
	uint64_t other;
	bool clean = false;
	pthread_mutex_lock(&job->hn->mu);
	if (job->hn->gen == job->gen) {
		job->hn->dirty_persisted = false;
		clean = true;
	}
	pthread_mutex_unlock(&job->hn->mu);
	int rc = clean ? fs_sync_content(fs, job->ino) : 0;
	if (rc)
		return rc;
	rc = ix_begin(fs->ix, true, &t);
	if (rc)
		return rc;
	rc = ix_get(&t, job->ino, &n);
	if (rc) {
		ix_abort(&t);
		return rc == -ENOENT ? 0 : rc;
	}
	if (n.r.parent &&
	    ix_lookup(&t, n.r.parent, meta->name, &other, NULL) == -ENOENT) {
		ix_unlink(&t, n.r.parent, n.name);
		snprintf(n.name, sizeof(n.name), "%s", meta->name);
		ix_link(&t, n.r.parent, n.name, job->ino);
	}
	n.r.flags &= ~NODE_UPLOADING;
	n.r.flags |= NODE_ON_REMOTE | NODE_HAS_HASH;
	memcpy(n.r.remote_hash, job->hash, CHASH_LEN);
	snprintf(n.r.rev, sizeof(n.r.rev), "%s", meta->rev);
	ix_rsize_put(&t, job->ino, meta->size);
	n.r.last_upload = hfs_now();
	if (clean && n.r.gen <= job->gen) {
		n.r.flags &= ~NODE_DIRTY;
		n.r.dirty_since = 0;
		ix_dirty_del(&t, job->ino);
	} else {
		job->res.still_dirty = true;
	}
	ix_put(&t, &n);
	if (n.r.parent && ix_get(&t, n.r.parent, &d) == 0) {
		d.r.listed_at = 0; /* list it again: theirs is there */
		d.r.flags |= NODE_ON_REMOTE;
		ix_put(&t, &d);
	}
	hfs_ns_changed(fs);
	rc = ix_commit(&t);
	if (!rc && job->res.still_dirty) {
		pthread_mutex_lock(&job->hn->mu);
		job->hn->dirty_persisted = true;
		pthread_mutex_unlock(&job->hn->mu);
	}
	return rc;
}

int hfs_upload_prepare(struct hfs *fs, uint64_t ino, struct upload_job *job,
		       bool asked)
{
	struct upload_result *res = &job->res;
	struct ixtxn t;
	struct node n;
	int rc;
	memset(job, 0, sizeof(*job));
	job->ino = ino;
	job->fd = -1;
	job->hn = hnode_get(fs, ino);
	if (!job->hn)
		return -ENOMEM;
	struct hnode *hn = job->hn;

	/*
	 * A file open for writing may have bytes the kernel holds in its
	 * writeback cache (or in a shared mapping) and has not sent yet:
	 * have it write them back now, so the snapshot is what the writer
	 * wrote, and keep looking at the file while it stays open.
	 */
	pthread_mutex_lock(&hn->mu);
	rc = hnode_load(fs, hn);
	res->open_for_write = hn->nwriters > 0;
	/* A version kept aside for a rewrite or patches in progress
	 * (durable.c, rules 2 and 6). */
	bool aside = !rc && (hn->prev_kept || hn->undo_fd >= 0);
	int64_t now = hfs_now();
	/* Patched or being rewritten while open (sent once the writer
	 * closes it or fsyncs; PATCH_WAIT_MAX at most, then the rewrite so
	 * far is what goes). */
	bool torn =
		res->open_for_write &&
		((hn->patched_at && now - hn->patched_at < PATCH_WAIT_MAX) ||
		 (hn->rewrite_at && now - hn->rewrite_at < PATCH_WAIT_MAX));
	pthread_mutex_unlock(&hn->mu);
	if (rc)
		return rc;
	torn = torn && !asked;
	if (res->open_for_write && !torn)
		fs_tell_inval_inode(fs, ino, 0, 0);

	rc = ix_begin(fs->ix, false, &t);
	if (rc)
		return rc;
	rc = ix_get(&t, ino, &n);
	if (!rc && (!(n.r.flags & NODE_DIRTY) || n.r.parent == 0))
		rc = -ENOENT;
	if (!rc)
		rc = ix_path(&t, ino, res->path, sizeof(res->path));
	if (rc == -ENAMETOOLONG) {
		/* Deeper than the remote takes (IX_REMOTE_PATH_MAX): kept
		 * here, dirty, the error in status (docs/posix.md). */
		char *p = NULL;
		if (ix_path_dup(&t, ino, &p) == 0)
			snprintf(res->path, sizeof(res->path), "%.200s...", p);
		free(p);
		set_last_error(hn, "its path is longer than the remote takes "
				   "(4095 bytes)");
	}
	ix_abort(&t);
	if (rc == -ENOENT) {
		res->not_dirty = true;
		return 0;
	}
	if (rc)
		return rc;
	res->cat = fs_classify_node(fs, &n, res->path);
	if (torn) {
		/* Patched in place while open: it may be torn between the
		 * pages of a write (fs_i.h, patched_at); or being rewritten,
		 * its new version half written. Its next close or fsync
		 * makes a whole version to send. */
		res->mid_patch = true;
		return 0;
	}
	if (aside) {
		/* The version kept aside would describe older bytes than
		 * these once they are proven by the upload: sync them and
		 * end the rewrite first, as the writer's close would. The
		 * close still syncs what comes after. */
		rc = fs_sync_and_prove(fs, hn, 1);
		if (!rc)
			rc = index_sync(fs->ix);
		if (rc)
			return rc;
		pthread_mutex_lock(&hn->mu);
		if (hn->nwriters > 0)
			hn->sync_on_release = true;
		pthread_mutex_unlock(&hn->mu);
	}

	/* The snapshot. */
	pthread_rwlock_wrlock(&hn->snap);
	pthread_mutex_lock(&hn->mu);
	rc = hnode_open_fd(fs, hn, false); /* loaded above */
	job->gen = hn->gen;
	bool live = hn->live, writers = hn->nwriters > 0;
	job->size = hn->size;
	job->mtime = hn->mtime_ns / 1000000000LL;
	pthread_mutex_unlock(&hn->mu);
	if (!rc && !live) {
		/* Persisted since @n was read (live goes false only after
		 * the commit): the index as it is now, no writer running. */
		rc = fs_get_node(fs, ino, &n);
		job->size = n.r.size;
		job->mtime = n.r.mtime_ns / 1000000000LL;
	}
	bool copy = writers || job->size <= SNAPSHOT_COPY_MAX;
	/* Our own reads must not look like uses to the evictor. */
	int src = rc ? -1 : cache_open_read(fs->cache, ino);
	if (!rc && src < 0)
		rc = src;
	if (!rc && copy) {
		int tmp = cache_tmpfile(fs->cache);
		rc = tmp < 0 ? tmp : cache_copy(src, tmp, job->size);
		if (rc == -ENOSPC || rc == -EDQUOT) {
			/* The cache disk is full, and uploads are what
			 * makes room: send the content file itself. A
			 * change meanwhile cannot slip through: the
			 * content hash sent with the bytes would not match,
			 * and the write generation keeps the file dirty. */
			if (tmp >= 0)
				close(tmp);
			job->fd = src;
			rc = 0;
		} else {
			job->fd = tmp;
			close(src);
		}
	} else if (!rc) {
		job->fd = src;
	}
	pthread_rwlock_unlock(&hn->snap);
	if (rc)
		return rc;

	uint64_t hashed = 0;
	rc = chash_fd(job->fd, job->hash, &hashed);
	if (rc)
		return rc;
	if (hashed != job->size) {
		/* A large file changed under us: the caller takes another
		 * snapshot (as when the journal moved on). */
		return -ESTALE;
	}
	res->bytes = job->size;
	if ((n.r.flags & NODE_ON_REMOTE) && !(n.r.flags & NODE_HAS_HASH)) {
		/* We never learned the remote's hash: ask, rather than
		 * upload bytes it may already have. */
		struct backend_entry cur;
		if (fs->be->ops->stat(fs->be, res->path, &cur) == 0 &&
		    !cur.is_dir && cur.has_hash) {
			n.r.flags |= NODE_HAS_HASH;
			memcpy(n.r.remote_hash, cur.hash, CHASH_LEN);
			if (cur.rev[0] && !n.r.rev[0])
				snprintf(n.r.rev, sizeof(n.r.rev), "%s",
					 cur.rev);
		}
	}
	if (n.r.flags & NODE_ON_REMOTE) {
		snprintf(job->rev, sizeof(job->rev), "%s", n.r.rev);
		if (n.r.flags & NODE_HAS_HASH) {
			job->has_known_hash = true;
			memcpy(job->known_hash, n.r.remote_hash, CHASH_LEN);
		}
	}
	if (job->has_known_hash &&
	    memcmp(job->hash, job->known_hash, CHASH_LEN) == 0) {
		res->skipped = true;
		return hfs_upload_finish(fs, job, 0, NULL);
	}
	/* The content file holding exactly the bytes sent, synced, is
	 * their proof after a power cut (see start_upload). */
	pthread_mutex_lock(&hn->mu);
	uint64_t gen0 = hn->gen;
	pthread_mutex_unlock(&hn->mu);
	if (gen0 == job->gen && fs_sync_content(fs, ino) == 0) {
		pthread_mutex_lock(&hn->mu);
		job->proven = hn->gen == job->gen && !hn->unlinked;
		if (job->proven)
			hn->proven = job->size;
		pthread_mutex_unlock(&hn->mu);
	}
	rc = start_upload(fs, job);
	if (rc == -ENOSPC && (hfs_room_again(fs) || fs_free_reserve(fs))) {
		/* Uploads are what makes room on a disk full of dirty
		 * files: they may have the reserve. */
		rc = start_upload(fs, job);
	}
	/* The attempt (its content hash) must outlive a power cut: the
	 * bytes may land even if we never hear back, and must then be known
	 * for ours, not another machine's. */
	if (!rc)
		rc = index_sync(fs->ix);
	if (rc)
		return rc;
	job->ready = true;
	return 0;
}

void hfs_upload_args(const struct upload_job *job, struct backend_upload *up)
{
	memset(up, 0, sizeof(*up));
	up->path = job->res.path;
	up->fd = job->fd;
	up->size = job->size;
	up->hash = job->hash;
	up->mtime = job->mtime;
	up->parent_rev = job->rev[0] ? job->rev : NULL;
	up->autorename = false;
}

/* True if an upload of @ino we sent without hearing the answer carried
 * bytes with content hash @hash. */
static bool sent_before(struct hfs *fs, uint64_t ino,
			const uint8_t hash[CHASH_LEN])
{
	uint8_t h[IX_ATTEMPTS][CHASH_LEN];
	struct ixtxn t;
	if (ix_begin(fs->ix, false, &t))
		return false;
	int n = ix_attempts_get(&t, ino, h);
	ix_abort(&t);
	for (int i = 0; i < n; i++)
		if (memcmp(h[i], hash, CHASH_LEN) == 0)
			return true;
	return false;
}

int hfs_upload_commit(struct hfs *fs, struct upload_job *job,
		      struct backend_entry *meta)
{
	struct backend_upload up;
	hfs_upload_args(job, &up);
	memset(meta, 0, sizeof(*meta));
	int rc = fs->be->ops->upload(fs->be, &up, meta);
	if (rc != -EEXIST || !up.parent_rev)
		return rc;
	/*
	 * The remote revision is not the one we replace. If its bytes are
	 * ours already, there is nothing to do. If they are those we knew
	 * (a move gave it a new revision, say) or those of an upload of
	 * ours whose answer we never heard, replace it. Otherwise another
	 * machine changed the file: keep both, ours as a conflicted copy.
	 */
	struct backend_entry cur;
	int src = fs->be->ops->stat(fs->be, up.path, &cur);
	if (src == -ENOENT) {
		up.parent_rev = NULL; /* deleted remotely: ours is the file */
		return fs->be->ops->upload(fs->be, &up, meta);
	}
	if (src)
		return src;
	if (cur.is_dir)
		return -EISDIR;
	if (cur.has_hash && memcmp(cur.hash, job->hash, CHASH_LEN) == 0) {
		/* Our bytes are there already (a reply was lost). */
		*meta = cur;
		return 0;
	}
	if (cur.has_hash &&
	    ((job->has_known_hash &&
	      memcmp(cur.hash, job->known_hash, CHASH_LEN) == 0) ||
	     sent_before(fs, job->ino, cur.hash))) {
		up.parent_rev = cur.rev;
		return fs->be->ops->upload(fs->be, &up, meta);
	}
	up.autorename = true;
	rc = fs->be->ops->upload(fs->be, &up, meta);
	if (rc == 0)
		metrics_conflict();
	if (rc == 0)
		hlog_warn("conflict: \"%s\" was changed on the remote while we "
			  "had changes of our own; ours is saved beside it as "
			  "\"%s\"",
			  up.path, meta->name);
	return rc;
}

/* The other names of a file with hard links, as remote paths. */
struct names {
	struct ixtxn *t;
	const struct node *n;
	char **v;
	size_t len;
};

static int names_add(void *arg, uint64_t parent, const char *name)
{
	struct names *w = arg;
	char *p, **nv = realloc(w->v, (w->len + 1) * sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	w->v = nv;
	if (fs_name_path(w->t, parent, name, w->n, &p) == 0)
		w->v[w->len++] = p;
	return 0;
}

/*
 * Dropbox has no hard links: each other name of a file just uploaded is a
 * file of its own there, a server-side copy of the one uploaded (what was
 * at the name goes first). A failure is logged; the next upload of the
 * file copies again. fs->commit_lock held.
 */
static void copy_to_names(struct hfs *fs, struct upload_job *job)
{
	struct ixtxn t;
	struct node n;
	struct names w = {.t = &t, .n = &n};
	if (ix_begin(fs->ix, false, &t))
		return;
	if (ix_get(&t, job->ino, &n) == 0 && n.r.xlinks > 0)
		ix_foreach_hlink(&t, job->ino, names_add, &w);
	ix_abort(&t);
	for (size_t i = 0; i < w.len; i++) {
		int rc = fs->be->ops->remove(fs->be, w.v[i]);
		if (rc == 0 || rc == -ENOENT)
			rc = fs->be->ops->copy(fs->be, job->res.path, w.v[i]);
		if (rc)
			hlog_warn("hard link \"%s\" of \"%s\": copy failed: %s",
				  w.v[i], job->res.path, strerror(-rc));
		free(w.v[i]);
	}
	free(w.v);
}

int hfs_upload_finish(struct hfs *fs, struct upload_job *job, int rc,
		      const struct backend_entry *meta)
{
	struct hnode *hn = job->hn;
	if (rc) {
		char msg[160];
		snprintf(msg, sizeof(msg), "upload failed: %s (%s)",
			 strerror(-rc), backend_last_error());
		set_last_error(hn, msg);
		if (job->ready)
			set_uploading(fs, job->ino, false);
		job->ready = false;
		return rc;
	}
	job->ready = false;
	const char *base = strrchr(job->res.path, '/');
	base = base ? base + 1 : job->res.path;
	if (meta && meta->name[0] && strcasecmp(meta->name, base) != 0) {
		/* Stored as a conflicted copy beside another machine's
		 * version. */
		return finish_conflict(fs, job, meta);
	}
	rc = finish_upload(fs, hn, job->gen, meta, job->hash, &job->res);
	if (!rc)
		copy_to_names(fs, job);
	return rc;
}

void hfs_upload_release(struct hfs *fs, struct upload_job *job)
{
	if (job->ready)
		set_uploading(fs, job->ino, false);
	if (job->fd >= 0)
		close(job->fd);
	hnode_put(fs, job->hn);
	job->fd = -1;
	job->hn = NULL;
}

int hfs_upload(struct hfs *fs, uint64_t ino, struct upload_result *res)
{
	struct upload_job job;
	struct backend_entry meta;
	int rc = hfs_upload_prepare(fs, ino, &job, true);
	for (int tries = 1; rc == -ESTALE && tries < 10; tries++) {
		/* The journal holds changes the remote has not seen. */
		rc = hfs_replay_journal(fs);
		if (rc)
			break;
		hfs_upload_release(fs, &job);
		rc = hfs_upload_prepare(fs, ino, &job, true);
	}
	if (!rc && job.ready) {
		rc = hfs_upload_commit(fs, &job, &meta);
		rc = hfs_upload_finish(fs, &job, rc, &meta);
	}
	*res = job.res;
	hfs_upload_release(fs, &job);
	return rc;
}

static const char *jop_name(int op)
{
	switch (op) {
	case JOP_MKDIR:
		return "mkdir";
	case JOP_RENAME:
		return "rename";
	default:
		return "delete";
	}
}

/* Replays one journal entry other than a delete (those go through
 * hfs_replay_deletes). Returns 0 when the entry is done with (also when it
 * is moot or refused for good), or a transient -errno. */
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
	case JOP_RENAME:
		rc = be->ops->move(be, e->path, e->path2);
		if (rc == -EEXIST && strcasecmp(e->path, e->path2) != 0) {
			/*
			 * The target is there although the delete of what
			 * we replaced went first (deletes.c): another
			 * machine made or changed it since we saw it (a
			 * folder with entries we never saw, a file at
			 * another revision). It is not ours to delete: both
			 * stay, ours at its old name, and the listings show
			 * it so.
			 */
			hlog_warn("rename of \"%s\" to \"%s\" kept on the "
				  "remote as it was: \"%s\" holds another "
				  "machine's version; both stay, ours as "
				  "\"%s\"",
				  e->path, e->path2, e->path2, e->path);
			watcher_apply(fs, e->path);
			watcher_apply(fs, e->path2);
			rc = 0;
		}
		if (rc == -ENOENT)
			rc = 0; /* never reached the remote */
		break;
	default:
		rc = 0;
		break;
	}
	if (rc == -EAGAIN || rc == -EACCES || rc == -ENOSPC || rc == -EIO ||
	    rc == -EINTR)
		return rc;
	if (rc)
		hlog_warn("remote refused %s of \"%s\": %s (%s); dropped",
			  jop_name(e->op), e->path, strerror(-rc),
			  backend_last_error());
	return 0;
}

int hfs_replay_journal(struct hfs *fs)
{
	struct journal_entry *e = malloc(sizeof(*e));
	int rc;
	bool popped = false;
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
		if (e->op == JOP_UNLINK || e->op == JOP_RMDIR) {
			/* This and the deletes that follow it, together. */
			rc = hfs_replay_deletes(fs);
			if (rc)
				break;
			popped = true;
			continue;
		}
		rc = replay_one(fs, e);
		if (rc)
			break;
		hlog_debug("journal: replayed #%llu op=%d \"%s\"",
			   (unsigned long long)e->seq, e->op, e->path);
		rc = ix_begin(fs->ix, true, &t);
		if (rc)
			break;
		ix_journal_del(&t, e->seq);
		hfs_ns_changed(fs);
		rc = ix_commit(&t);
		if (rc)
			break;
		popped = true;
	}
	free(e);
	/* The remote is ahead of the index now: a cut that took the index
	 * back past these pops would replay them over what came after
	 * (a delete at a revision since replaced, a move of a file already
	 * moved). Durable at once, not at the next periodic sync point. */
	if (popped) {
		int src = index_sync(fs->ix);
		if (!rc)
			rc = src;
	}
	return rc;
}

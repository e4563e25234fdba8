/*
 * Power loss: the order in which the bytes and the index reach the disk.
 *
 * kill -9 of the daemon loses nothing the kernel was given; a power cut
 * loses whatever was not synced, in any order. The index (LMDB with
 * MDB_NOMETASYNC, see index.h) is always the last commit or the one before
 * it; these rules make sure that whatever state it holds, the bytes it
 * describes are there:
 *
 *   1. A content file is deleted only after the txn that stopped needing
 *      it is durable: the txn adds the inode to the doomed table, and
 *      hfs_reap() syncs the index, then deletes the files, then clears
 *      their entries. (Before: a rename over a file deleted the old bytes
 *      at once, and a cut before the index recorded the rename left the
 *      name pointing at nothing.)
 *   2. A file that replaces another -- renamed over it, created where one
 *      was just unlinked, or truncated and written again -- has its bytes
 *      synced before the replacement is recorded (rename) or when its
 *      writer closes it (create, truncate): the name then holds the old
 *      or the new bytes after a cut, never an empty file, as ext4's
 *      auto_da_alloc promises. Since the close(2) does not wait for that
 *      (the kernel sends RELEASE after it returns), a file truncated to
 *      0 while it holds fsync'd bytes keeps them aside until the new ones
 *      are synced (file.c, rewrite_begin): old or new, whenever the cut.
 *   3. The clean->dirty mark is durable before the first byte of a change
 *      is written, so a cut never leaves changed bytes marked clean.
 *   4. A clean mark (after an upload) is committed only after the content
 *      file it vouches for is synced; fetched bytes are synced before the
 *      index marks them present.
 *   5. After an unclean stop, recovery (recover.c) trusts nothing it cannot
 *      check: see recover().
 *   6. A file patched in place after it was fsync'd keeps what that version
 *      had where the patches go, in its undo file (undo.h), synced before
 *      each patch, until the new bytes are synced (at fsync, or when the
 *      last writer closes it): a cut brings the fsync'd version back whole
 *      instead of the mix of old and new pages a kernel may have written
 *      (file.c, undo_before). Each range is saved once per version.
 *
 * Locking: recent_lock guards the ring of recent unlinks; hfs_reap() is
 * serialised by reap_lock and takes hn->mu of an inode it deletes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs_i.h"
#include "hfs/log.h"

int fs_sync_content(struct hfs *fs, uint64_t ino)
{
	int fd = cache_open_read(fs->cache, ino);
	if (fd == -ENOENT)
		return 0;
	if (fd < 0)
		return fd;
	int rc = fdatasync(fd) < 0 ? -errno : 0;
	close(fd);
	return rc;
}

/* Unlinks remembered for rule 2, and for how long (ns). */
#define RECENT_NS (60LL * 1000000000LL)

void fs_note_unlinked(struct hfs *fs, uint64_t parent, const char *name,
		      uint64_t ino, uint64_t keep)
{
	pthread_mutex_lock(&fs->recent_lock);
	struct hfs_recent *r = &fs->recent[fs->recent_next];
	fs->recent_next = (fs->recent_next + 1) % HFS_RECENT;
	r->parent = parent;
	r->ino = ino;
	r->keep = keep;
	r->at = hfs_now_ns();
	snprintf(r->name, sizeof(r->name), "%s", name);
	pthread_mutex_unlock(&fs->recent_lock);
}

bool fs_was_unlinked(struct hfs *fs, uint64_t parent, const char *name,
		     uint64_t *ino, uint64_t *keep)
{
	bool hit = false;
	int64_t now = hfs_now_ns();
	*ino = *keep = 0;
	pthread_mutex_lock(&fs->recent_lock);
	for (int i = 0; i < HFS_RECENT && !hit; i++) {
		struct hfs_recent *r = &fs->recent[i];
		hit = r->at && now - r->at < RECENT_NS && r->parent == parent &&
		      strcmp(r->name, name) == 0;
		if (hit) {
			*ino = r->ino;
			*keep = r->keep;
			r->keep = 0;
		}
	}
	pthread_mutex_unlock(&fs->recent_lock);
	return hit;
}

/* How long the content of a file just unlinked waits before it is reaped
 * (ns): a trainer that deletes a file and writes it again does so at once. */
#define ADOPT_NS (5LL * 1000000000LL)

bool fs_unlinked_lately(struct hfs *fs, uint64_t ino)
{
	bool hit = false;
	int64_t now = hfs_now_ns();
	pthread_mutex_lock(&fs->recent_lock);
	for (int i = 0; i < HFS_RECENT && !hit; i++) {
		const struct hfs_recent *r = &fs->recent[i];
		hit = r->at && now - r->at < ADOPT_NS && r->ino == ino &&
		      r->keep > 0;
	}
	pthread_mutex_unlock(&fs->recent_lock);
	return hit;
}

/* At most this many files per pass. */
#define REAP_BATCH 4096

struct doomed_list {
	uint64_t *ino;
	size_t n, cap;
};

static int collect_doomed(void *arg, uint64_t ino)
{
	struct doomed_list *l = arg;
	if (l->n == REAP_BATCH)
		return 1;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		uint64_t *ni = realloc(l->ino, cap * sizeof(*ni));
		if (!ni)
			return -ENOMEM;
		l->ino = ni;
		l->cap = cap;
	}
	l->ino[l->n++] = ino;
	return 0;
}

/*
 * Deletes the content file of doomed @ino unless the index needs it again
 * (fetched or written since it was doomed). Returns false if the inode is
 * busy (open, being fetched): its entry stays for the next pass.
 */
static bool reap_one(struct hfs *fs, uint64_t ino)
{
	struct hnode *hn = hnode_find(fs, ino);
	bool done = true;
	if (hn)
		pthread_mutex_lock(&hn->mu);
	struct node n;
	bool needed = fs_get_node(fs, ino, &n) == 0 &&
		      (n.r.flags & (NODE_CACHED | NODE_PARTIAL | NODE_DIRTY));
	if (needed) {
		/* Only a version set aside for a rewrite that is over may go
		 * (file.c, rewrite_begin). */
		if (!(n.r.flags & NODE_ASIDE))
			cache_drop_prev(fs->cache, ino);
	} else if ((hn && (hn->fetching || hn->fd >= 0)) ||
		   fs_unlinked_lately(fs, ino)) {
		done = false;
	} else {
		cache_remove(fs->cache, ino);
	}
	if (hn) {
		pthread_mutex_unlock(&hn->mu);
		hnode_put(fs, hn);
	}
	return done;
}

int hfs_reap(struct hfs *fs)
{
	struct doomed_list l = {0};
	struct ixtxn t;
	int rc = 0;
	pthread_mutex_lock(&fs->reap_lock);
	for (;;) {
		l.n = 0;
		rc = ix_begin(fs->ix, false, &t);
		if (rc)
			break;
		rc = ix_foreach_doomed(&t, collect_doomed, &l);
		ix_abort(&t);
		if (rc < 0 || l.n == 0)
			break;
		/* The txns that doomed them must be durable first. */
		rc = index_sync(fs->ix);
		if (rc)
			break;
		size_t kept = 0;
		for (size_t i = 0; i < l.n; i++)
			if (!reap_one(fs, l.ino[i]))
				l.ino[i] = 0, kept++;
		rc = ix_begin(fs->ix, true, &t);
		if (rc)
			break;
		for (size_t i = 0; i < l.n; i++)
			if (l.ino[i])
				ix_doom_del(&t, l.ino[i]);
		rc = ix_commit(&t);
		if (rc || l.n < REAP_BATCH || kept)
			break;
	}
	pthread_mutex_unlock(&fs->reap_lock);
	if (rc < 0)
		hlog_warn("deleting unneeded content files failed: %s (tried "
			  "again later)",
			  strerror(-rc));
	free(l.ino);
	return rc < 0 ? rc : 0;
}

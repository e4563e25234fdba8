/*
 * Namespace changes: create, mkdir, unlink, rmdir, rename, the space reserve
 * that keeps deletes possible on a full cache disk.
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

/* ---- Namespace changes ---- */

/* Symbolic links kept on this machine only, for status. */
struct local_walk {
	struct hfs *fs;
	struct ixtxn *t;
	int (*fn)(void *arg, const char *path, const char *why);
	void *arg;
	size_t n, max;
};

static int local_step(void *arg, uint64_t ino)
{
	struct local_walk *w = arg;
	struct node n;
	char *path = NULL;
	if (ix_get(w->t, ino, &n) != 0 || !(n.r.flags & NODE_LOCAL) ||
	    n.r.parent == 0)
		return 0;
	if (w->n++ >= w->max)
		return 1;
	if (ix_path_dup(w->t, ino, &path) != 0)
		return 0;
	const char *why = fs_link_local_reason(w->fs, w->t, n.r.parent, n.name);
	int rc =
		w->fn(w->arg, path,
		      why ? why : "its remote name was taken when it was made");
	free(path);
	return rc;
}

int hfs_local_links(struct hfs *fs, size_t max,
		    int (*fn)(void *arg, const char *path, const char *why),
		    void *arg)
{
	struct ixtxn t;
	struct local_walk w = {fs, &t, fn, arg, 0, max};
	int rc = ix_begin(fs->ix, false, &t);
	if (rc)
		return rc;
	rc = ix_foreach_target(&t, local_step, &w);
	ix_abort(&t);
	return rc < 0 ? rc : 0;
}

static int check_name(const char *name)
{
	if (strlen(name) > BACKEND_NAME_MAX)
		return -ENAMETOOLONG;
	if (!backend_name_ok(name))
		return -EINVAL;
	return 0;
}

/*
 * Looks up @name in @parent inside @t for a name that is about to be
 * created: 0 if free, -EEXIST if taken (also by a name that differs only
 * in case: the remote could not hold both).
 */
static int name_free(struct ixtxn *t, uint64_t parent, const char *name)
{
	uint64_t ino;
	int rc = ix_lookup(t, parent, name, &ino, NULL);
	if (rc == 0)
		return -EEXIST;
	return rc == -ENOENT ? 0 : rc;
}

/* True if @name ends in HFS_LINK_SUFFIX after at least one byte. */
static bool has_link_suffix(const char *name)
{
	size_t nl = strlen(name);
	return nl > HFS_LINK_SUFFIX_LEN &&
	       strcmp(name + nl - HFS_LINK_SUFFIX_LEN, HFS_LINK_SUFFIX) == 0;
}

/*
 * True if @name of @parent is the remote name of a symbolic link there
 * (NAME.rclonelink of a link NAME uploaded in that form): no entry may
 * take it, as both would be one file on the remote (docs/posix.md).
 */
static bool link_shadows(struct hfs *fs, struct ixtxn *t, uint64_t parent,
			 const char *name)
{
	char stem[BACKEND_NAME_MAX + 1];
	struct node l;
	uint64_t ino;
	if (!fs->cfg->rclone_links || !has_link_suffix(name))
		return false;
	size_t sl = strlen(name) - HFS_LINK_SUFFIX_LEN;
	memcpy(stem, name, sl);
	stem[sl] = '\0';
	return ix_lookup(t, parent, stem, &ino, NULL) == 0 &&
	       ix_get(t, ino, &l) == 0 && S_ISLNK(l.r.mode) &&
	       (l.r.flags & NODE_RCLONELINK);
}

/* Why symbolic link @name of @parent can have no remote form (NULL: it
 * can): see docs/posix.md. */
const char *fs_link_local_reason(struct hfs *fs, struct ixtxn *t,
				 uint64_t parent, const char *name)
{
	char rname[BACKEND_NAME_MAX + 1];
	uint64_t ino;
	if (!fs->cfg->rclone_links)
		return "rclone_links is off";
	if (strlen(name) + HFS_LINK_SUFFIX_LEN > BACKEND_NAME_MAX)
		return "its name is too long with " HFS_LINK_SUFFIX;
	snprintf(rname, sizeof(rname), "%s%s", name, HFS_LINK_SUFFIX);
	if (!backend_name_ok(rname))
		return "its remote name is not allowed";
	if (ix_lookup(t, parent, rname, &ino, NULL) == 0)
		return "a file " HFS_LINK_SUFFIX " of its name is beside it";
	return NULL;
}

static int make_node(struct hfs *fs, uint64_t parent, const char *name,
		     mode_t mode, uid_t uid, gid_t gid, struct node *out,
		     struct ixtxn *t)
{
	struct node p;
	int rc = ix_get(t, parent, &p);
	if (rc)
		return rc;
	if (!S_ISDIR(p.r.mode))
		return -ENOTDIR;
	rc = name_free(t, parent, name);
	if (!rc && link_shadows(fs, t, parent, name))
		rc = -EEXIST;
	if (rc)
		return rc;
	memset(out, 0, sizeof(*out));
	rc = ix_alloc_ino(t, &out->ino);
	if (rc)
		return rc;
	int64_t now = hfs_now_ns();
	snprintf(out->name, sizeof(out->name), "%s", name);
	out->r.parent = parent;
	out->r.mode = mode;
	out->r.uid = uid;
	out->r.gid = (p.r.mode & S_ISGID) ? p.r.gid : gid;
	/* A directory in a set-group-ID directory is set-group-ID too. */
	if ((p.r.mode & S_ISGID) && S_ISDIR(mode))
		out->r.mode |= S_ISGID;
	out->r.atime_ns = out->r.mtime_ns = out->r.ctime_ns = now;
	p.r.mtime_ns = p.r.ctime_ns = now;
	ix_put(t, &p);
	ix_put(t, out); /* before the link: it counts subdirectories */
	ix_link(t, parent, name, out->ino);
	return t->err;
}

int hfs_mkdir(struct hfs *fs, uint64_t parent, const char *name, mode_t mode,
	      uid_t uid, gid_t gid, struct stat *out)
{
	struct node n;
	if (fs_is_today(fs, parent, name))
		return -EEXIST;
	int rc = fs_mkdir_node(fs, parent, name, mode, uid, gid, &n);
	if (rc)
		return rc;
	hfs_fill_stat(&n, out);
	fs_hnode_add_lookup(fs, n.ino);
	return 0;
}

/*
 * The start of every creation: checks @name, makes sure @parent's remote
 * listing is merged, begins a write txn and adds node @n (stored, linked,
 * its category by its path in *@cat, the path itself (malloc'd, any
 * length) in *@path unless NULL). On failure the txn is over.
 */
static int begin_create(struct hfs *fs, uint64_t parent, const char *name,
			mode_t mode, uid_t uid, gid_t gid, struct node *n,
			struct ixtxn *t, int *cat, char **path)
{
	char *p = NULL;
	int rc = check_name(name);
	if (rc)
		return rc;
	rc = fs_visit_dir(fs, parent, FS_VISIT_USE);
	if (rc)
		return rc;
	rc = ix_begin(fs->ix, true, t);
	if (rc)
		return rc;
	rc = make_node(fs, parent, name, mode, uid, gid, n, t);
	if (!rc)
		rc = ix_put(t, n);
	if (!rc)
		rc = ix_path_dup(t, n->ino, &p);
	if (rc) {
		ix_abort(t);
		return rc;
	}
	*cat = fs_classify_path(fs, p);
	if (path)
		*path = p;
	else
		free(p);
	return 0;
}

/* Creates directory @name in @parent (journaled for the remote). */
int fs_mkdir_node(struct hfs *fs, uint64_t parent, const char *name,
		  mode_t mode, uid_t uid, gid_t gid, struct node *out)
{
	struct ixtxn t;
	struct node n;
	char *path;
	int cat;
	int rc = begin_create(fs, parent, name, S_IFDIR | (mode & 07777), uid,
			      gid, &n, &t, &cat, &path);
	if (rc)
		return rc;
	n.r.flags = NODE_LISTED;
	n.r.listed_at = hfs_now_ns();
	ix_put(&t, &n);
	ix_journal_append(&t, JOP_MKDIR, path, NULL);
	free(path);
	hfs_ns_changed(fs);
	rc = ix_commit(&t);
	if (rc)
		return rc;
	fs_tell_journal(fs);
	*out = n;
	return 0;
}

/* The category of the node at @path (a remote path, "/a/b"). */
int fs_classify_path(struct hfs *fs, const char *path)
{
	return cat_classify(fs->cfg->rules, fs->cfg->n_rules,
			    path[0] == '/' ? path + 1 : path);
}

/* A symbolic link is in the category of its own path, not of its remote
 * name's (NAME.rclonelink). */
int fs_classify_node(struct hfs *fs, const struct node *n, const char *path)
{
	if (!(n->r.flags & NODE_RCLONELINK) || !has_link_suffix(path))
		return fs_classify_path(fs, path);
	char *own = strdup(path);
	if (!own)
		return fs_classify_path(fs, path);
	own[strlen(own) - HFS_LINK_SUFFIX_LEN] = '\0';
	int cat = fs_classify_path(fs, own);
	free(own);
	return cat;
}

int hfs_classify(struct hfs *fs, uint64_t ino)
{
	struct ixtxn t;
	struct node n;
	char *path = NULL;
	int rc = ix_begin(fs->ix, false, &t);
	if (rc)
		return rc;
	rc = ix_get(&t, ino, &n);
	if (!rc)
		rc = ix_path_dup(&t, ino, &path);
	ix_abort(&t);
	if (!rc)
		rc = fs_classify_node(fs, &n, path);
	free(path);
	return rc;
}

/*
 * A file created where one with @keep synced bytes (content of inode
 * @old) was just unlinked: that content becomes the new file's set-aside
 * version (rewrite_begin), so a cut before the new bytes are synced
 * brings the old ones back under the name. The index says so first
 * (NODE_REWRITING is set; the proven size is the old one's, durable). If
 * the old content is gone already, the new file is simply new.
 */
static void adopt_prev(struct hfs *fs, uint64_t ino, uint64_t old,
		       uint64_t keep)
{
	struct ixtxn t;
	struct node n;
	if (ix_begin(fs->ix, true, &t))
		return;
	ix_proven_put(&t, ino, keep);
	if (ix_get(&t, ino, &n) == 0) {
		n.r.flags |= NODE_ASIDE_PREV;
		ix_put(&t, &n);
	}
	if (ix_commit(&t) || index_sync(fs->ix))
		return;
	pthread_mutex_lock(&fs->reap_lock); /* not reaped meanwhile */
	int rc = cache_adopt_prev(fs->cache, old, ino);
	pthread_mutex_unlock(&fs->reap_lock);
	if (rc && ix_begin(fs->ix, true, &t) == 0) {
		ix_proven_put(&t, ino, 0);
		if (ix_get(&t, ino, &n) == 0) {
			n.r.flags &= ~NODE_ASIDE_PREV;
			ix_put(&t, &n);
		}
		ix_commit(&t);
	}
}

/* Creates a regular file node, dirty (an empty file must reach the remote
 * too), and its empty content file. */
int fs_create_reg(struct hfs *fs, uint64_t parent, const char *name,
		  mode_t mode, uid_t uid, gid_t gid, struct node *n,
		  int *fd_out)
{
	/* unlink + create again replaces bytes (durable.c, rule 2). */
	uint64_t old = 0, keep = 0;
	bool rewriting =
		fd_out && fs_was_unlinked(fs, parent, name, &old, &keep);
	if (fs_is_today(fs, parent, name))
		return -EEXIST;
	struct ixtxn t;
	int cat;
	int rc = begin_create(fs, parent, name, S_IFREG | (mode & 07777), uid,
			      gid, n, &t, &cat, NULL);
	if (rc)
		return rc;
	int fd = cache_open(fs->cache, n->ino, 1);
	if (fd < 0) {
		rc = fd;
		goto fail;
	}
	cache_touch_fd(fd);
	if (fd_out)
		*fd_out = fd;
	else
		close(fd);
	n->r.flags =
		NODE_CACHED | NODE_DIRTY | (rewriting ? NODE_REWRITING : 0);
	n->r.dirty_since = hfs_now();
	n->r.gen = 1;
	n->r.cat = (uint8_t)cat;
	ix_put(&t, n);
	ix_dirty_add(&t, n->ino);
	rc = ix_commit(&t);
	if (rc) {
		if (fd_out)
			close(*fd_out);
		cache_remove(fs->cache, n->ino);
		return rc;
	}
	fs_tell_dirty(fs, n->ino, n->r.cat, n->r.dirty_since, true);
	if (rewriting && keep > 0)
		adopt_prev(fs, n->ino, old, keep);
	return 0;
fail:
	ix_abort(&t);
	return rc;
}

/*
 * FIFOs, sockets and device nodes: local nodes (NODE_LOCAL), kept in the
 * index across mounts and never uploaded; the kernel serves their I/O.
 * A device node's number is kept in its size field (index.h).
 */
static int make_local_node(struct hfs *fs, uint64_t parent, const char *name,
			   mode_t mode, dev_t rdev, uid_t uid, gid_t gid,
			   const char *target, struct node *n)
{
	struct ixtxn t;
	int cat;
	if (fs_is_today(fs, parent, name))
		return -EEXIST;
	int rc = begin_create(fs, parent, name, mode, uid, gid, n, &t, &cat,
			      NULL);
	if (rc)
		return rc;
	n->r.flags = NODE_LOCAL;
	n->r.size = target ? strlen(target) : (uint64_t)rdev;
	n->r.cat = (uint8_t)cat;
	ix_put(&t, n);
	if (target)
		ix_target_put(&t, n->ino, target, strlen(target));
	return ix_commit(&t);
}

int hfs_mknod(struct hfs *fs, uint64_t parent, const char *name, mode_t mode,
	      dev_t rdev, uid_t uid, gid_t gid, struct stat *out)
{
	struct node n;
	int rc;
	switch (mode & S_IFMT) {
	case S_IFREG:
		rc = fs_create_reg(fs, parent, name, mode, uid, gid, &n, NULL);
		break;
	case S_IFCHR:
	case S_IFBLK:
		if (uid != 0)
			return -EPERM; /* CAP_MKNOD: the kernel checked it */
		/* fall through */
	case S_IFIFO:
	case S_IFSOCK:
		rc = make_local_node(fs, parent, name,
				     (mode & S_IFMT) | (mode & 07777), rdev,
				     uid, gid, NULL, &n);
		break;
	default:
		return -EINVAL;
	}
	if (rc)
		return rc;
	hfs_fill_stat(&n, out);
	fs_hnode_add_lookup(fs, n.ino);
	return 0;
}

/*
 * A symbolic link: its target in the index; with a remote form
 * (NAME.rclonelink, fs_link_local_reason() NULL) also in its content file,
 * dirty, uploaded like a file of its category; without, a local node.
 */
int hfs_symlink(struct hfs *fs, uint64_t parent, const char *name,
		const char *target, uid_t uid, gid_t gid, struct stat *out)
{
	size_t tl = strlen(target);
	if (tl == 0)
		return -ENOENT;
	if (tl > HFS_LINK_MAX)
		return -ENAMETOOLONG;
	if (fs_is_today(fs, parent, name))
		return -EEXIST;
	struct ixtxn t;
	struct node n;
	int cat;
	int rc = begin_create(fs, parent, name, S_IFLNK | 0777, uid, gid, &n,
			      &t, &cat, NULL);
	if (rc)
		return rc;
	const char *why = fs_link_local_reason(fs, &t, parent, name);
	n.r.size = tl;
	n.r.cat = (uint8_t)cat;
	ix_target_put(&t, n.ino, target, tl);
	if (why) {
		n.r.flags = NODE_LOCAL;
	} else {
		rc = fs_link_content(fs, n.ino, target, tl);
		if (rc) {
			ix_abort(&t);
			cache_remove(fs->cache, n.ino);
			return rc;
		}
		n.r.flags = NODE_CACHED | NODE_DIRTY | NODE_RCLONELINK;
		n.r.dirty_since = hfs_now();
		n.r.gen = 1;
		ix_dirty_add(&t, n.ino);
	}
	ix_put(&t, &n);
	rc = ix_commit(&t);
	if (rc) {
		if (!why)
			cache_remove(fs->cache, n.ino);
		return rc;
	}
	if (why)
		hlog_info("symbolic link \"%s\" (inode %llu) stays on this "
			  "machine: %s",
			  name, (unsigned long long)n.ino, why);
	else
		fs_tell_dirty(fs, n.ino, n.r.cat, n.r.dirty_since, true);
	hfs_fill_stat(&n, out);
	fs_hnode_add_lookup(fs, n.ino);
	return 0;
}

/* Marks an hnode unlinked so its record and content go when unused. */
void fs_mark_unlinked(struct hfs *fs, uint64_t ino)
{
	pthread_mutex_lock(&fs->itab_lock);
	struct hnode *h = fs_itab_find(fs, ino);
	if (h)
		h->unlinked = true;
	pthread_mutex_unlock(&fs->itab_lock);
}

/* Marks the hnode of @ino, if any, unlinked with its record and content
 * already gone: its forget has nothing to purge. */
static void mark_gone(struct hfs *fs, uint64_t ino)
{
	pthread_mutex_lock(&fs->itab_lock);
	struct hnode *h = fs_itab_find(fs, ino);
	if (h)
		h->unlinked = h->gone = true;
	pthread_mutex_unlock(&fs->itab_lock);
}

/* Is the inode open (then its attributes are not replaced under it)? */
bool fs_inode_busy(struct hfs *fs, uint64_t ino)
{
	pthread_mutex_lock(&fs->itab_lock);
	struct hnode *h = fs_itab_find(fs, ino);
	bool busy = h && (h->refs > 0);
	pthread_mutex_unlock(&fs->itab_lock);
	return busy;
}

bool fs_inode_known(struct hfs *fs, uint64_t ino)
{
	pthread_mutex_lock(&fs->itab_lock);
	bool known = fs_itab_find(fs, ino) != NULL;
	pthread_mutex_unlock(&fs->itab_lock);
	return known;
}

/*
 * Removes the entry @name (node @n) of @parent inside @t. A node still in
 * use (open, or being uploaded) becomes an orphan, purged when released
 * (or at the next mount). One the kernel merely knows (it looked the name
 * up) goes at once: nothing can reach it any more but its forget, which
 * then has nothing left to do (mark_gone), so an unlink costs one index
 * txn, not two. Returns true in *@purge_now if the content can go at
 * once.
 */
static void remove_entry(struct hfs *fs, struct ixtxn *t, uint64_t parent,
			 const struct node *n, bool *purge_now)
{
	ix_unlink(t, parent, n->name);
	ix_dirty_del(t, n->ino);
	if (fs_inode_busy(fs, n->ino)) {
		struct node o = *n;
		o.r.flags &= ~NODE_DIRTY;
		o.r.parent = 0;
		ix_put(t, &o);
		ix_orphan_add(t, n->ino);
		*purge_now = false;
	} else {
		ix_del(t, n->ino);
		ix_doom_add(t, n->ino); /* deleted once this txn is durable */
		*purge_now = true;
	}
}

/*
 * True if the remote may hold file @n at its path: it was listed there or
 * an upload of it was ever sent (start_upload() in upload.c sets
 * NODE_ON_REMOTE, as a lost answer may hide a stored upload). Only then
 * does a rename or a delete of it go into the journal: a file that never
 * reached the remote has nothing there to move or delete (its upload reads
 * its path when it starts), and a same-named file there belongs to someone
 * else. Directories are always journaled (their mkdir may be queued).
 */
static bool maybe_remote(const struct node *n)
{
	return n->r.flags & NODE_ON_REMOTE;
}

/* How long a late upload is looked out for (seconds). */
#define TOMB_SECONDS 3600

/* File @n leaves @path (deleted, renamed, replaced): if an upload of it
 * may still land there, leave a tombstone (see index.h). */
static void leave_tombstone(struct ixtxn *t, const struct node *n,
			    const char *path)
{
	uint8_t h[IX_TOMB_MAX][CHASH_LEN], old[IX_TOMB_MAX][CHASH_LEN];
	char *folded;
	if (S_ISDIR(n->r.mode))
		return;
	int k = ix_attempts_get(t, n->ino, h);
	if (k <= 0)
		return;
	int rc = fold_path_dup(path, &folded);
	if (rc) {
		if (!t->err)
			t->err = rc; /* the delete must not go without it */
		return;
	}
	/* Another file's tombstone here may still wait for its upload:
	 * added to, not replaced (a log rotated over and over). */
	int64_t expires = 0, now = hfs_now();
	int no = ix_tomb_get(t, folded, &expires, old);
	for (int i = 0; i < no && expires >= now && k < IX_TOMB_MAX; i++) {
		bool dup = false;
		for (int j = 0; j < k && !dup; j++)
			dup = memcmp(h[j], old[i], CHASH_LEN) == 0;
		if (!dup)
			memcpy(h[k++], old[i], CHASH_LEN);
	}
	ix_tomb_put(t, folded, now + TOMB_SECONDS, h, k);
	free(folded);
}

/* Journals the delete of @n at @path: what we knew of a file (its
 * revision and content hash), so that the replay deletes that version
 * and no other. */
static void journal_delete(struct ixtxn *t, const struct node *n,
			   const char *path)
{
	if (S_ISDIR(n->r.mode)) {
		ix_journal_append_delete(t, JOP_RMDIR, path, NULL, NULL);
		return;
	}
	ix_journal_append_delete(t, JOP_UNLINK, path, n->r.rev,
				 (n->r.flags & NODE_HAS_HASH) ? n->r.remote_hash
							      : NULL);
}

int fs_name_path(struct ixtxn *t, uint64_t parent, const char *name,
		 const struct node *n, char **out)
{
	char *dir;
	int rc = ix_path_dup(t, parent, &dir);
	if (rc)
		return rc;
	bool link = n && (n->r.flags & NODE_RCLONELINK);
	size_t len = strlen(dir) + strlen(name) + HFS_LINK_SUFFIX_LEN + 2;
	*out = malloc(len);
	if (*out)
		snprintf(*out, len, "%s/%s%s", dir, name,
			 link ? HFS_LINK_SUFFIX : "");
	free(dir);
	return *out ? 0 : -ENOMEM;
}

/* True if entry @name of @parent is @n's own name (not a hard link). */
static bool own_name(const struct node *n, uint64_t parent, const char *name)
{
	return n->r.parent == parent && strcmp(n->name, name) == 0;
}

static int first_hlink(void *arg, uint64_t parent, const char *name)
{
	struct node *n = arg;
	n->r.parent = parent;
	snprintf(n->name, sizeof(n->name), "%s", name);
	return 1;
}

/* A file becomes dirty (its names are to be uploaded again), inside @t. */
static void dirty_in(struct ixtxn *t, struct node *n)
{
	if (!S_ISREG(n->r.mode) && !(n->r.flags & NODE_RCLONELINK))
		return;
	/* The write generation stays: an open file's hnode has it, and an
	 * upload cleans the file only at the generation it read. */
	if (!(n->r.flags & NODE_DIRTY)) {
		n->r.flags |= NODE_DIRTY;
		n->r.dirty_since = hfs_now();
	}
	ix_dirty_add(t, n->ino);
}

/*
 * Removes name @name of @parent (stored spelling) of a file with hard
 * links (@n->r.xlinks > 0) inside @t: the node stays. Its own name going,
 * another name takes its place (the node's parent and name), and the file
 * is uploaded again there, its revision unknown. The remote file of the
 * name goes through the journal. *@dirtied: tell the flushers.
 */
static int drop_name(struct ixtxn *t, uint64_t parent, const char *name,
		     struct node *n, bool *dirtied)
{
	char *path = NULL;
	bool own = own_name(n, parent, name);
	int rc = own ? ix_path_dup(t, n->ino, &path)
		     : fs_name_path(t, parent, name, n, &path);
	if (rc)
		return rc;
	struct node old = *n;
	ix_unlink(t, parent, name);
	if (own) {
		ix_foreach_hlink(t, n->ino, first_hlink, n);
		ix_hlink_del(t, n->ino, n->r.parent, n->name);
		n->r.rev[0] = '\0';
		n->r.flags &= ~NODE_HAS_HASH;
		dirty_in(t, n);
		*dirtied = true;
	} else {
		ix_hlink_del(t, n->ino, parent, name);
	}
	n->r.xlinks--;
	n->r.ctime_ns = hfs_now_ns();
	ix_put(t, n);
	if (maybe_remote(&old)) {
		if (own)
			journal_delete(t, &old, path);
		else /* a copy: whatever is there */
			ix_journal_append(t, JOP_UNLINK, path, NULL);
	}
	free(path);
	return t->err;
}

/*
 * link(2): another name for file @ino. Dropbox has no hard links: each
 * name is a file of its own there, a server-side copy made after each
 * upload of the file (upload.c), so the file is dirty from here on.
 */
int hfs_link(struct hfs *fs, uint64_t ino, uint64_t newparent,
	     const char *newname, struct stat *out)
{
	if (ino == HFS_TODAY_INO)
		return -EPERM;
	if (fs_is_today(fs, newparent, newname))
		return -EEXIST;
	int rc = check_name(newname);
	if (!rc)
		rc = fs_visit_dir(fs, newparent, FS_VISIT_USE);
	if (rc)
		return rc;
	struct ixtxn t;
	struct node n, p;
	rc = ix_begin(fs->ix, true, &t);
	if (rc)
		return rc;
	rc = ix_get(&t, ino, &n);
	if (!rc && S_ISDIR(n.r.mode))
		rc = -EPERM;
	if (!rc && n.r.parent == 0)
		rc = -ENOENT; /* unlinked (linkat of an open fd) */
	if (!rc && n.r.xlinks >= IX_XLINKS_MAX)
		rc = -EMLINK;
	if (!rc)
		rc = ix_get(&t, newparent, &p);
	if (!rc && !S_ISDIR(p.r.mode))
		rc = -ENOTDIR;
	if (!rc)
		rc = name_free(&t, newparent, newname);
	if (!rc && link_shadows(fs, &t, newparent, newname))
		rc = -EEXIST;
	if (rc) {
		ix_abort(&t);
		return rc;
	}
	int64_t now = hfs_now_ns();
	ix_link(&t, newparent, newname, ino);
	ix_hlink_add(&t, ino, newparent, newname);
	n.r.xlinks++;
	n.r.ctime_ns = now;
	bool was_dirty = n.r.flags & NODE_DIRTY;
	if (!(n.r.flags & NODE_LOCAL))
		dirty_in(&t, &n);
	ix_put(&t, &n);
	p.r.mtime_ns = p.r.ctime_ns = now;
	ix_put(&t, &p);
	hfs_ns_changed(fs);
	rc = ix_commit(&t);
	if (rc)
		return rc;
	if (!was_dirty && (n.r.flags & NODE_DIRTY))
		fs_tell_dirty(fs, ino, n.r.cat, n.r.dirty_since, false);
	if (S_ISREG(n.r.mode))
		fs_overlay_live(fs, &n);
	hfs_fill_stat(&n, out);
	fs_hnode_add_lookup(fs, ino);
	return 0;
}

/*
 * No network here: the entry is in the index (the kernel looked it up),
 * and the replay deletes remotely only what this mount knew (deletes.c),
 * so a stale listing cannot make us delete another machine's files. Only
 * a folder never listed is listed first, to tell whether it is empty.
 */
static int do_remove(struct hfs *fs, uint64_t parent, const char *name,
		     bool dir)
{
	struct ixtxn t;
	struct node n, p;
	uint64_t ino;
	char exact[BACKEND_NAME_MAX + 1], *path = NULL;
	int rc;
	if (dir) {
		struct node d;
		rc = ix_begin(fs->ix, false, &t);
		if (rc)
			return rc;
		rc = ix_lookup(&t, parent, name, &ino, exact);
		if (!rc)
			rc = ix_get(&t, ino, &d);
		ix_abort(&t);
		if (rc)
			return rc;
		if (S_ISDIR(d.r.mode) && !(d.r.flags & NODE_LISTED)) {
			rc = fs_visit_dir(fs, ino, FS_VISIT_USE);
			if (!rc)
				rc = fs_get_node(fs, ino, &d);
			if (rc)
				return rc;
			if (!(d.r.flags & NODE_LISTED))
				return -EAGAIN; /* remote unreachable */
		}
	}
	rc = ix_begin(fs->ix, true, &t);
	if (rc)
		return rc;
	rc = ix_lookup(&t, parent, name, &ino, exact);
	if (!rc)
		rc = ix_get(&t, ino, &n);
	if (rc)
		goto fail;
	if (dir && !S_ISDIR(n.r.mode)) {
		rc = -ENOTDIR;
		goto fail;
	}
	if (!dir && S_ISDIR(n.r.mode)) {
		rc = -EISDIR;
		goto fail;
	}
	if (dir) {
		rc = ix_has_children(&t, ino);
		if (rc) {
			rc = rc > 0 ? -ENOTEMPTY : rc;
			goto fail;
		}
	}
	rc = ix_path_dup(&t, ino, &path);
	if (rc)
		goto fail;
	if (n.r.xlinks > 0) {
		/* One name of several goes; the file stays. */
		bool dirtied = false;
		rc = drop_name(&t, parent, exact, &n, &dirtied);
		if (rc)
			goto fail;
		if (ix_get(&t, parent, &p) == 0) {
			p.r.mtime_ns = p.r.ctime_ns = hfs_now_ns();
			ix_put(&t, &p);
		}
		hfs_ns_changed(fs);
		rc = ix_commit(&t);
		free(path);
		path = NULL;
		if (rc)
			return rc;
		fs_stale_name(parent, exact, name);
		if (dirtied)
			fs_tell_dirty(fs, ino, n.r.cat, n.r.dirty_since, false);
		fs_tell_inval_inode(fs, ino, -1, 0); /* its link count */
		fs_tell_journal(fs);
		return 0;
	}
	leave_tombstone(&t, &n, path);
	/* Its synced bytes, which a file created again under the name
	 * keeps until its own are synced (create_reg). */
	uint64_t keep = 0;
	if (n.r.flags & (NODE_REWRITING | NODE_ASIDE))
		keep = 0; /* its synced bytes are not in its content file */
	else if (S_ISREG(n.r.mode) && (n.r.flags & NODE_DIRTY))
		keep = ix_proven_get(&t, ino);
	else if (S_ISREG(n.r.mode) && (n.r.flags & NODE_CACHED))
		keep = n.r.size;
	bool purge_now = false;
	remove_entry(fs, &t, parent, &n, &purge_now);
	if (ix_get(&t, parent, &p) == 0) {
		p.r.mtime_ns = p.r.ctime_ns = hfs_now_ns();
		ix_put(&t, &p);
	}
	if (dir || maybe_remote(&n))
		journal_delete(&t, &n, path);
	hfs_ns_changed(fs);
	rc = ix_commit(&t);
	free(path);
	path = NULL;
	if (rc)
		return rc;
	fs_stale_name(parent, exact, name);
	if (purge_now)
		mark_gone(fs, ino);
	else
		fs_mark_unlinked(fs, ino);
	if (S_ISREG(n.r.mode) && (n.r.flags & (NODE_CACHED | NODE_DIRTY)))
		fs_note_unlinked(fs, parent, name, ino, purge_now ? keep : 0);
	fs_tell_journal(fs);
	return 0;
fail:
	ix_abort(&t);
	free(path);
	return rc;
}

/*
 * The reserve: a file of RESERVE_BYTES in the cache directory, given up
 * when the cache filesystem is so full that the index cannot record a
 * delete (LMDB writes new pages even to remove): deleting must always be
 * possible, since it is how a user makes room. Made again by
 * hfs_keep_reserve() once there is space.
 */
#define RESERVE_MAX ((off_t)8 << 20)
#define RESERVE_MIN ((off_t)256 << 10)

static void reserve_path(struct hfs *fs, char *buf, size_t len)
{
	cache_part_path(cache_dir(fs->cache), CACHE_RESERVE, buf, len);
}

/* 8 MiB, or a 32nd of a small cache filesystem. */
static off_t reserve_bytes(struct hfs *fs)
{
	struct statvfs v;
	if (statvfs(cache_dir(fs->cache), &v) < 0)
		return RESERVE_MIN;
	off_t total = (off_t)v.f_blocks * (off_t)v.f_frsize;
	off_t r = total / 32;
	if (r > RESERVE_MAX)
		return RESERVE_MAX;
	return r < RESERVE_MIN ? RESERVE_MIN : r;
}

/* Below this much free space files opened for writing bypass the page
 * cache (fuse_ops.c), whatever cache_min_free_bytes says. */
#define SHORT_SPACE ((uint64_t)64 << 20)

int64_t hfs_check_space(struct hfs *fs)
{
	int64_t free_b = cache_free_bytes(fs->cache);
	uint64_t min = fs->cfg->cache_min_free_bytes;
	bool low = free_b >= 0 && (uint64_t)free_b < min;
	bool shrt = free_b >= 0 &&
		    (uint64_t)free_b < (min > SHORT_SPACE ? min : SHORT_SPACE);
	atomic_store(&fs->low_space, low);
	atomic_store(&fs->short_space, shrt);
	return free_b;
}

/* Free space a full cache filesystem is given back by eviction. */
#define ROOM_WANTED ((uint64_t)8 << 20)

bool hfs_room_again(struct hfs *fs)
{
	if (index_retry_full(fs->ix))
		return true;
	pthread_mutex_lock(&fs->room_lock);
	/* Files deleted or evicted but not yet reaped first. */
	hfs_reap(fs);
	int64_t free_b = cache_free_bytes(fs->cache);
	uint64_t used = 0, freed = 0;
	bool again = free_b >= (int64_t)ROOM_WANTED; /* made meanwhile */
	if (!again && free_b >= 0 && fs->hooks.evict &&
	    fs->hooks.evict(fs->hooks.arg, UINT64_MAX, &used, NULL) == 0) {
		uint64_t need = ROOM_WANTED - (uint64_t)free_b;
		fs->hooks.evict(fs->hooks.arg, used > need ? used - need : 0,
				&used, &freed);
		if (freed)
			hfs_reap(fs);
		again = freed > 0;
	}
	pthread_mutex_unlock(&fs->room_lock);
	if (freed)
		hlog_info("cache filesystem full: evicted %llu KiB of clean "
			  "files to make room",
			  (unsigned long long)(freed >> 10));
	return again;
}

void hfs_keep_reserve(struct hfs *fs)
{
	char path[PATH_MAX];
	struct stat st;
	off_t want = reserve_bytes(fs);
	reserve_path(fs, path, sizeof(path));
	if (stat(path, &st) == 0 && st.st_size >= want)
		return;
	int64_t free_b = cache_free_bytes(fs->cache);
	if (free_b < 0 || free_b < 2 * want)
		return;
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	if (posix_fallocate(fd, 0, want) != 0)
		unlink(path);
	close(fd);
}

/* Gives the reserve up; true if there was one. */
bool fs_free_reserve(struct hfs *fs)
{
	char path[PATH_MAX];
	reserve_path(fs, path, sizeof(path));
	if (unlink(path) != 0)
		return false;
	hlog_warn("cache filesystem full: gave up the reserve so the index "
		  "can record deletes");
	return true;
}

int hfs_unlink(struct hfs *fs, uint64_t parent, const char *name)
{
	if (fs_is_today(fs, parent, name))
		return -EPERM;
	int rc = do_remove(fs, parent, name, false);
	if (rc == -ENOSPC && fs_free_reserve(fs))
		rc = do_remove(fs, parent, name, false);
	return rc;
}

int hfs_rmdir(struct hfs *fs, uint64_t parent, const char *name)
{
	if (fs_is_today(fs, parent, name))
		return -ENOTDIR;
	int rc = do_remove(fs, parent, name, true);
	if (rc == -ENOSPC && fs_free_reserve(fs))
		rc = do_remove(fs, parent, name, true);
	return rc;
}

/* True if @ancestor is @ino or one of its ancestors. */
static int is_ancestor(struct ixtxn *t, uint64_t ancestor, uint64_t ino)
{
	struct node n;
	for (int depth = 0; depth < 4096; depth++) {
		if (ino == ancestor)
			return 1;
		if (ino == INDEX_ROOT_INO)
			return 0;
		int rc = ix_get(t, ino, &n);
		if (rc)
			return rc;
		ino = n.r.parent;
	}
	return -ELOOP;
}

int hfs_rename(struct hfs *fs, uint64_t parent, const char *name,
	       uint64_t newparent, const char *newname, unsigned int flags)
{
	if (flags & ~(unsigned)RENAME_NOREPLACE)
		return -EINVAL; /* RENAME_EXCHANGE, WHITEOUT: unsupported */
	if (fs_is_today(fs, parent, name) ||
	    fs_is_today(fs, newparent, newname))
		return -EPERM; /* the today link is not an entry to move */
	int rc = check_name(newname);
	if (rc)
		return rc;
	rc = fs_visit_dir(fs, parent, FS_VISIT_USE);
	if (!rc && newparent != parent)
		rc = fs_visit_dir(fs, newparent, FS_VISIT_USE);
	if (rc)
		return rc;

	struct ixtxn t;
	struct node src, dst, np;
	uint64_t sino, dino = 0;
	char exact[BACKEND_NAME_MAX + 1], dexact[BACKEND_NAME_MAX + 1];
	char *from = NULL, *to = NULL;
	bool have_dst = false, purge_now = false;

	/* A directory about to be replaced must be known to be empty. A
	 * file replacing another has its bytes on disk before the rename
	 * is (durable.c, rule 2). */
	rc = ix_begin(fs->ix, false, &t);
	if (rc)
		return rc;
	if (ix_lookup(&t, newparent, newname, &dino, dexact) == 0 &&
	    ix_get(&t, dino, &dst) == 0 && S_ISDIR(dst.r.mode)) {
		ix_abort(&t);
		rc = fs_visit_dir(fs, dino, FS_VISIT_USE);
		if (rc)
			return rc;
	} else if (dino && ix_lookup(&t, parent, name, &sino, NULL) == 0 &&
		   ix_get(&t, sino, &src) == 0 && S_ISREG(src.r.mode) &&
		   (src.r.flags & NODE_DIRTY)) {
		ix_abort(&t);
		/* Proven too, before the rename txn: no durable state has
		 * the rename without the size its bytes were synced at. */
		struct hnode *shn = hnode_get(fs, sino);
		if (!shn)
			return -ENOMEM;
		pthread_mutex_lock(&shn->mu);
		rc = hnode_load(fs, shn);
		pthread_mutex_unlock(&shn->mu);
		if (!rc)
			rc = fs_sync_and_prove(fs, shn, 1);
		hnode_put(fs, shn);
		if (rc)
			return rc;
	} else {
		ix_abort(&t);
	}
	dino = 0;

	rc = ix_begin(fs->ix, true, &t);
	if (rc)
		return rc;
	rc = ix_lookup(&t, parent, name, &sino, exact);
	if (!rc)
		rc = ix_get(&t, sino, &src);
	if (!rc)
		rc = ix_get(&t, newparent, &np);
	if (rc)
		goto fail;
	if (!S_ISDIR(np.r.mode)) {
		rc = -ENOTDIR;
		goto fail;
	}
	if (S_ISDIR(src.r.mode)) {
		rc = is_ancestor(&t, sino, newparent);
		if (rc) {
			rc = rc > 0 ? -EINVAL : rc;
			goto fail;
		}
	}
	/* The target is the entry @newname folds like, whatever its
	 * spelling: renaming over "data.txt" as "DATA.txt" replaces it. */
	rc = ix_lookup(&t, newparent, newname, &dino, dexact);
	if (rc == 0) {
		if (dino == sino) {
			if (strcmp(dexact, newname) == 0) {
				ix_abort(&t); /* same entry: nothing to do */
				return 0;
			}
			/* A rename of the entry to another spelling of its
			 * name (case only): the journal replays it. */
		} else {
			if (flags & RENAME_NOREPLACE) {
				rc = -EEXIST;
				goto fail;
			}
			rc = ix_get(&t, dino, &dst);
			if (rc)
				goto fail;
			if (S_ISDIR(dst.r.mode) && !S_ISDIR(src.r.mode)) {
				rc = -EISDIR;
				goto fail;
			}
			if (!S_ISDIR(dst.r.mode) && S_ISDIR(src.r.mode)) {
				rc = -ENOTDIR;
				goto fail;
			}
			if (S_ISDIR(dst.r.mode)) {
				rc = ix_has_children(&t, dino);
				if (rc) {
					rc = rc > 0 ? -ENOTEMPTY : rc;
					goto fail;
				}
				if (!(dst.r.flags & NODE_LISTED)) {
					rc = -EAGAIN;
					goto fail;
				}
			}
			have_dst = true;
		}
	} else if (rc != -ENOENT) {
		goto fail;
	}
	/* A name of a file with hard links that is not its own moves as a
	 * name only (drop_name() for the other side). */
	bool src_own = own_name(&src, parent, exact);
	rc = src_own ? ix_path_dup(&t, sino, &from)
		     : fs_name_path(&t, parent, exact, &src, &from);
	if (rc)
		goto fail;
	if (src_own)
		leave_tombstone(&t, &src, from);
	bool ddirtied = false, dst_stays = have_dst && dst.r.xlinks > 0;
	if (dst_stays) {
		rc = drop_name(&t, newparent, dexact, &dst, &ddirtied);
		if (rc)
			goto fail;
	} else if (have_dst) {
		rc = ix_path_dup(&t, dino, &to);
		if (rc)
			goto fail;
		leave_tombstone(&t, &dst, to);
		remove_entry(fs, &t, newparent, &dst, &purge_now);
		if (S_ISDIR(dst.r.mode) || maybe_remote(&dst))
			journal_delete(&t, &dst, to);
		free(to);
		to = NULL;
	}
	if (!have_dst && link_shadows(fs, &t, newparent, newname)) {
		rc = -EEXIST; /* the remote name of a link there */
		goto fail;
	}
	int64_t now = hfs_now_ns();
	ix_unlink(&t, parent, exact);
	/* A link whose new name has no remote form stays here only: its
	 * remote file goes. */
	const char *local_why =
		(src_own && (src.r.flags & NODE_RCLONELINK))
			? fs_link_local_reason(fs, &t, newparent, newname)
			: NULL;
	if (local_why) {
		if (maybe_remote(&src))
			journal_delete(&t, &src, from);
		src.r.flags &= ~(NODE_RCLONELINK | NODE_DIRTY | NODE_ON_REMOTE);
		src.r.flags |= NODE_LOCAL;
		ix_dirty_del(&t, sino);
	}
	if (src_own) {
		snprintf(src.name, sizeof(src.name), "%s", newname);
		src.r.parent = newparent;
	} else {
		ix_hlink_del(&t, sino, parent, exact);
		ix_hlink_add(&t, sino, newparent, newname);
	}
	src.r.ctime_ns = now;
	ix_put(&t, &src);
	ix_link(&t, newparent, newname, sino);
	struct node p;
	if (ix_get(&t, parent, &p) == 0) {
		p.r.mtime_ns = p.r.ctime_ns = now;
		ix_put(&t, &p);
	}
	if (newparent != parent && ix_get(&t, newparent, &p) == 0) {
		p.r.mtime_ns = p.r.ctime_ns = now;
		ix_put(&t, &p);
	}
	rc = src_own ? ix_path_dup(&t, sino, &to)
		     : fs_name_path(&t, newparent, newname, &src, &to);
	if (rc)
		goto fail;
	if (S_ISDIR(src.r.mode) || maybe_remote(&src))
		ix_journal_append(&t, JOP_RENAME, from, to);
	if (local_why)
		hlog_info("symbolic link \"%s\" stays on this machine: %s", to,
			  local_why);
	hfs_ns_changed(fs);
	rc = ix_commit(&t);
	free(from);
	free(to);
	if (rc)
		return rc;
	fs_stale_name(parent, exact, name);
	if (have_dst)
		fs_stale_name(newparent, dexact, newname);
	if (have_dst && !dst_stays) {
		if (purge_now)
			mark_gone(fs, dino);
		else
			fs_mark_unlinked(fs, dino);
	}
	if (ddirtied)
		fs_tell_dirty(fs, dino, dst.r.cat, dst.r.dirty_since, false);
	if (have_dst)
		fs_tell_inval_inode(fs, dino, -1, 0);
	fs_tell_journal(fs);
	return 0;
fail:
	ix_abort(&t);
	free(from);
	free(to);
	return rc;
}

/*
 * The filesystem core. See fs.h for the data flow and the lock order.
 *
 * File states (flags of struct node_rec, index.h):
 *
 *   remote-only  ON_REMOTE, not CACHED      bytes only on the remote
 *   cached       CACHED, not DIRTY          content file == remote
 *   dirty        CACHED|DIRTY               local bytes newer; in the dirty
 *                                           set and a flusher's queue
 *   uploading    DIRTY|UPLOADING            an upload is in flight
 *
 *   remote-only --read/write--> cached (fetch)
 *   cached --write/truncate--> dirty (the one write txn of the write path)
 *   dirty --upload, unchanged meanwhile--> cached
 *   dirty --upload, written meanwhile--> dirty (queued again)
 *   any --unlink--> gone (journal UNLINK; content removed when unused)
 *
 * Invariants:
 *   DIRTY implies CACHED: a dirty file's bytes are all local.
 *   DIRTY iff the inode is in the dirty set.
 *   Nothing DIRTY is ever removed from the cache except by unlink.
 *   The index's size of a DIRTY file may lag the content file after a
 *   crash; mount recovery takes the content file's size.
 *
 * The write path: write() goes to the content file; only the first write
 * after the file was clean opens a write txn (marking it dirty). close and
 * fsync persist size and times. hnode.gen counts writes; an upload records
 * the gen it saw and cleans the node only if no write came since.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs_i.h"
#include "hfs/category.h"
#include "hfs/fold.h"
#include "hfs/http.h"
#include "hfs/log.h"

#define ATTR_TIMEOUT 1.0

/*
 * The clock can be shifted for tests: HURACANFS_FAKE_TIME_OFFSET (seconds,
 * fixed) or HURACANFS_CLOCK_FILE (a file holding the offset in seconds,
 * read again at most once a second, so a test can move time while the
 * daemon runs: the midnight rollover of the today link).
 */
static int64_t clock_offset(void)
{
	static _Atomic int64_t fixed = -1, file_off = 0, checked = 0;
	static const char *file;
	if (atomic_load(&fixed) < 0) {
		const char *s = getenv("HURACANFS_FAKE_TIME_OFFSET");
		int64_t v = s ? strtoll(s, NULL, 10) : 0;
		file = getenv("HURACANFS_CLOCK_FILE");
		atomic_store(&fixed, v < 0 ? 0 : v);
	}
	if (!file)
		return atomic_load(&fixed);
	int64_t real = (int64_t)time(NULL);
	if (atomic_exchange(&checked, real) != real) {
		FILE *f = fopen(file, "re");
		long long v = 0;
		if (f) {
			if (fscanf(f, "%lld", &v) != 1)
				v = 0;
			fclose(f);
		}
		atomic_store(&file_off, (int64_t)v);
	}
	return atomic_load(&fixed) + atomic_load(&file_off);
}

int64_t hfs_now(void)
{
	return (int64_t)time(NULL) + clock_offset();
}

int64_t hfs_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return ((int64_t)ts.tv_sec + clock_offset()) * 1000000000LL +
	       ts.tv_nsec;
}

/* ---- The in-memory inode table ---- */

static size_t bucket_of(struct hfs *fs, uint64_t ino)
{
	return (size_t)((ino * 0x9E3779B97F4A7C15ULL) >> 20) &
	       (fs->nbuckets - 1);
}

static void itab_grow(struct hfs *fs)
{
	size_t n = fs->nbuckets * 2;
	struct hnode **nb = calloc(n, sizeof(*nb));
	if (!nb)
		return; /* keep the longer chains */
	struct hnode **old = fs->buckets;
	size_t oldn = fs->nbuckets;
	fs->buckets = nb;
	fs->nbuckets = n;
	for (size_t i = 0; i < oldn; i++) {
		struct hnode *h = old[i], *next;
		for (; h; h = next) {
			next = h->next;
			size_t b = bucket_of(fs, h->ino);
			h->next = nb[b];
			nb[b] = h;
		}
	}
	free(old);
}

static struct hnode *itab_find(struct hfs *fs, uint64_t ino)
{
	struct hnode *h = fs->buckets[bucket_of(fs, ino)];
	while (h && h->ino != ino)
		h = h->next;
	return h;
}

/* Returns the hnode of @ino with fs->itab_lock held, creating it. */
static struct hnode *itab_get_locked(struct hfs *fs, uint64_t ino)
{
	struct hnode *h = itab_find(fs, ino);
	if (h)
		return h;
	h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	h->ino = ino;
	h->fd = -1;
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->fetched, NULL);
	pthread_rwlock_init(&h->snap, NULL);
	if (fs->nnodes + 1 > fs->nbuckets)
		itab_grow(fs);
	size_t b = bucket_of(fs, ino);
	h->next = fs->buckets[b];
	fs->buckets[b] = h;
	fs->nnodes++;
	return h;
}

struct hnode *hnode_get(struct hfs *fs, uint64_t ino)
{
	pthread_mutex_lock(&fs->itab_lock);
	struct hnode *h = itab_get_locked(fs, ino);
	if (h)
		h->refs++;
	pthread_mutex_unlock(&fs->itab_lock);
	return h;
}

struct hnode *hnode_find(struct hfs *fs, uint64_t ino)
{
	pthread_mutex_lock(&fs->itab_lock);
	struct hnode *h = itab_find(fs, ino);
	if (h)
		h->refs++;
	pthread_mutex_unlock(&fs->itab_lock);
	return h;
}

/* Removes an unlinked inode's record and content for good. */
static void purge_node(struct hfs *fs, uint64_t ino)
{
	struct ixtxn t;
	if (ix_begin(fs->ix, true, &t) == 0) {
		ix_del(&t, ino);
		ix_orphan_del(&t, ino);
		ix_dirty_del(&t, ino);
		ix_chunks_del(&t, ino);
		ix_doom_add(&t, ino);
		if (t.err == -ENOENT)
			t.err = 0;
		ix_commit(&t);
	}
}

/* Drops the hnode if unused; fs->itab_lock held. Returns true if the
 * node must be purged (the caller does it after unlocking). */
static bool itab_maybe_free(struct hfs *fs, struct hnode *h)
{
	/* An upload error is kept (for status and the last_error xattr)
	 * until the upload succeeds or the file goes. */
	if (h->refs > 0 || h->nlookup > 0 || (h->last_error[0] && !h->unlinked))
		return false;
	struct hnode **pp = &fs->buckets[bucket_of(fs, h->ino)];
	while (*pp != h)
		pp = &(*pp)->next;
	*pp = h->next;
	fs->nnodes--;
	bool purge = h->unlinked && !h->gone;
	if (h->fd >= 0)
		close(h->fd);
	pthread_mutex_destroy(&h->mu);
	pthread_cond_destroy(&h->fetched);
	pthread_rwlock_destroy(&h->snap);
	free(h);
	return purge;
}

void hnode_put(struct hfs *fs, struct hnode *hn)
{
	if (!hn)
		return;
	uint64_t ino = hn->ino;
	pthread_mutex_lock(&fs->itab_lock);
	hn->refs--;
	bool purge = itab_maybe_free(fs, hn);
	pthread_mutex_unlock(&fs->itab_lock);
	if (purge)
		purge_node(fs, ino);
}

/* Counts a lookup the kernel now holds for @ino. */
static void hnode_add_lookup(struct hfs *fs, uint64_t ino)
{
	pthread_mutex_lock(&fs->itab_lock);
	struct hnode *h = itab_get_locked(fs, ino);
	if (h)
		h->nlookup++;
	pthread_mutex_unlock(&fs->itab_lock);
}

void hfs_forget(struct hfs *fs, uint64_t ino, uint64_t nlookup)
{
	pthread_mutex_lock(&fs->itab_lock);
	struct hnode *h = itab_find(fs, ino);
	bool purge = false;
	if (h) {
		h->nlookup = h->nlookup > nlookup ? h->nlookup - nlookup : 0;
		purge = itab_maybe_free(fs, h);
	}
	pthread_mutex_unlock(&fs->itab_lock);
	if (purge)
		purge_node(fs, ino);
}

int hnode_load(struct hfs *fs, struct hnode *hn)
{
	if (hn->loaded)
		return 0;
	struct ixtxn t;
	struct node n;
	int rc = ix_begin(fs->ix, false, &t);
	if (rc)
		return rc;
	rc = ix_get(&t, hn->ino, &n);
	ix_abort(&t);
	if (rc)
		return rc;
	hn->size = n.r.size;
	hn->mtime_ns = n.r.mtime_ns;
	hn->ctime_ns = n.r.ctime_ns;
	hn->gen = n.r.gen;
	hn->dirty_persisted = (n.r.flags & NODE_DIRTY) != 0;
	hn->loaded = true;
	rc = ix_begin(fs->ix, false, &t);
	if (rc)
		return rc;
	hn->proven = ix_proven_get(&t, hn->ino);
	ix_abort(&t);
	hn->prev_kept = (n.r.flags & NODE_REWRITING) &&
			cache_has_prev(fs->cache, hn->ino);
	return 0;
}

int hnode_open_fd(struct hfs *fs, struct hnode *hn, bool create)
{
	if (hn->fd >= 0)
		return 0;
	int fd = cache_open(fs->cache, hn->ino, create);
	if (fd < 0)
		return fd;
	hn->fd = fd;
	return 0;
}

/* ---- The today link ---- */

static int mkdir_node(struct hfs *fs, uint64_t parent, const char *name,
		      mode_t mode, uid_t uid, gid_t gid, struct node *out);

/*
 * The mount root holds a symbolic link (default name "today") to the
 * folder of the current UTC date, created when the link is followed, so a
 * trainer that knows nothing of dates can write today/logs/x.log into
 * 2026-11-21/logs/x.log. It lives only here: never in the index, never
 * uploaded; a real entry of the same name hides it. It is resolved by
 * name but not listed by readdir, so tools that walk the tree (cp -r,
 * shutil.copytree, rsync -L, du -L) do not see today's folder twice.
 */
static bool is_today(struct hfs *fs, uint64_t parent, const char *name)
{
	const char *link = fs->cfg->today_link;
	if (parent != INDEX_ROOT_INO || !link || !link[0] ||
	    strcmp(name, link) != 0)
		return false;
	struct ixtxn t;
	uint64_t ino;
	if (ix_begin(fs->ix, false, &t))
		return true;
	bool real = ix_lookup(&t, INDEX_ROOT_INO, name, &ino, NULL) == 0;
	ix_abort(&t);
	return !real;
}

static void today_name(char out[11])
{
	time_t t = (time_t)hfs_now();
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, 11, "%Y-%m-%d", &tm);
}

static void today_stat(struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = HFS_TODAY_INO;
	st->st_mode = S_IFLNK | 0777;
	st->st_nlink = 1;
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_size = 10;
	st->st_blksize = 4096;
	st->st_atim.tv_sec = st->st_mtim.tv_sec = st->st_ctim.tv_sec =
		(time_t)hfs_now();
}

ssize_t hfs_readlink(struct hfs *fs, uint64_t ino, char *buf, size_t size)
{
	if (ino != HFS_TODAY_INO)
		return -EINVAL; /* no other symlinks exist */
	char day[11];
	today_name(day);
	/* Created on demand: the link must lead somewhere writable. */
	struct ixtxn t;
	uint64_t dino;
	int rc = fs_visit_dir(fs, INDEX_ROOT_INO, FS_VISIT_USE);
	if (rc)
		return rc;
	rc = ix_begin(fs->ix, false, &t);
	if (rc)
		return rc;
	rc = ix_lookup(&t, INDEX_ROOT_INO, day, &dino, NULL);
	ix_abort(&t);
	if (rc == -ENOENT) {
		struct node n;
		rc = mkdir_node(fs, INDEX_ROOT_INO, day, 0755, getuid(),
				getgid(), &n);
		if (rc == -EEXIST)
			rc = 0;
	}
	if (rc)
		return rc;
	size_t len = strlen(day);
	if (size < len)
		len = size;
	memcpy(buf, day, len);
	return (ssize_t)len;
}

/* ---- Attributes ---- */

void hfs_fill_stat(const struct node *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	st->st_mode = n->r.mode;
	/* An unlinked file still open (an orphan, parent 0) has no links. */
	st->st_nlink = S_ISDIR(n->r.mode) ? 2 : n->r.parent == 0 ? 0 : 1;
	st->st_uid = n->r.uid;
	st->st_gid = n->r.gid;
	st->st_size = S_ISDIR(n->r.mode) ? 4096 : (off_t)n->r.size;
	st->st_blksize = 4096;
	st->st_blocks = (st->st_size + 511) / 512;
	st->st_atim.tv_sec = n->r.atime_ns / 1000000000LL;
	st->st_atim.tv_nsec = n->r.atime_ns % 1000000000LL;
	st->st_mtim.tv_sec = n->r.mtime_ns / 1000000000LL;
	st->st_mtim.tv_nsec = n->r.mtime_ns % 1000000000LL;
	st->st_ctim.tv_sec = n->r.ctime_ns / 1000000000LL;
	st->st_ctim.tv_nsec = n->r.ctime_ns % 1000000000LL;
}

/*
 * What an inode in use knows better than the index: its size and times
 * while writes have not been persisted (hnode.live). live is cleared only
 * after the txn that persists them commits, so a reader that saw live
 * false and then reads the index gets the persisted values; one that read
 * the index first must look at the hnode again (overlay_live).
 */
struct live {
	bool inuse, live;
	uint64_t size;
	int64_t mtime_ns, ctime_ns;
};

static void live_take(struct hfs *fs, uint64_t ino, struct live *l)
{
	memset(l, 0, sizeof(*l));
	struct hnode *h = hnode_find(fs, ino);
	if (!h)
		return;
	l->inuse = true;
	pthread_mutex_lock(&h->mu);
	if (h->live) {
		l->live = true;
		l->size = h->size;
		l->mtime_ns = h->mtime_ns;
		l->ctime_ns = h->ctime_ns;
	}
	pthread_mutex_unlock(&h->mu);
	hnode_put(fs, h);
}

static void live_apply(const struct live *l, struct node *n)
{
	if (!l->live)
		return;
	n->r.size = l->size;
	n->r.mtime_ns = l->mtime_ns;
	n->r.ctime_ns = l->ctime_ns;
}

/* For a node read from the index (maybe in an older txn): the live values
 * if any, else, for an inode in use, the index as it is now. */
static void overlay_live(struct hfs *fs, struct node *n)
{
	struct live l;
	live_take(fs, n->ino, &l);
	if (l.live)
		live_apply(&l, n);
	else if (l.inuse)
		fs_get_node(fs, n->ino, n); /* persisted since our read */
}

int fs_get_node(struct hfs *fs, uint64_t ino, struct node *n)
{
	struct ixtxn t;
	int rc = ix_begin(fs->ix, false, &t);
	if (rc)
		return rc;
	rc = ix_get(&t, ino, n);
	ix_abort(&t);
	return rc;
}

int hfs_getattr(struct hfs *fs, uint64_t ino, struct stat *st)
{
	struct node n;
	if (ino == HFS_TODAY_INO) {
		today_stat(st);
		return 0;
	}
	struct live l;
	live_take(fs, ino, &l); /* before the index: see struct live */
	int rc = fs_get_node(fs, ino, &n);
	if (rc)
		return rc;
	if (S_ISREG(n.r.mode))
		live_apply(&l, &n);
	hfs_fill_stat(&n, st);
	return 0;
}

static int sync_and_prove(struct hfs *fs, struct hnode *hn, int datasync);

/* ---- Lookup ---- */

/*
 * Spellings. The kernel's dentries are exact names, while names that fold
 * alike are one entry here. The kernel updates only the dentry an
 * operation used, so after a rename or a remove through another spelling
 * a dentry of the stored one may still show the old entry: each such
 * operation remembers the stored spelling (this thread, this operation)
 * and hfs_drop_stale_names() has the kernel drop it once the reply is
 * out. Dentries of other spellings of a file are never cached (see
 * hfs_lookup), and a directory has one dentry only (the kernel moves it).
 */
#define STALE_MAX 2
static _Thread_local struct {
	uint64_t parent;
	char name[BACKEND_NAME_MAX + 1];
} tl_stale[STALE_MAX];
static _Thread_local int tl_nstale;

/* After a committed change: the kernel may hold @stored in @parent,
 * which the change made stale if the operation used @used instead. */
static void stale_name(uint64_t parent, const char *stored, const char *used)
{
	if (strcmp(stored, used) == 0 || tl_nstale == STALE_MAX)
		return;
	tl_stale[tl_nstale].parent = parent;
	snprintf(tl_stale[tl_nstale].name, sizeof(tl_stale[0].name), "%s",
		 stored);
	tl_nstale++;
}

void hfs_drop_stale_names(struct hfs *fs)
{
	int n = tl_nstale;
	tl_nstale = 0;
	for (int i = 0; i < n && fs->se; i++)
		fuse_lowlevel_notify_inval_entry(fs->se, tl_stale[i].parent,
						 tl_stale[i].name,
						 strlen(tl_stale[i].name));
}

int hfs_lookup(struct hfs *fs, uint64_t parent, const char *name,
	       struct stat *st, bool *other_spelling)
{
	struct ixtxn t;
	struct node n;
	uint64_t ino;
	if (strlen(name) > BACKEND_NAME_MAX)
		return -ENAMETOOLONG;
	int rc = fs_visit_dir(fs, parent, FS_VISIT_USE);
	if (rc)
		return rc;
	if (is_today(fs, parent, name)) {
		today_stat(st);
		return 0;
	}
	for (int pass = 0; pass < 2; pass++) {
		rc = ix_begin(fs->ix, false, &t);
		if (rc)
			return rc;
		/* A name that folds like an entry's is that entry (Dropbox
		 * takes them for one): "data" finds "Data". */
		rc = ix_lookup(&t, parent, name, &ino, NULL);
		if (!rc)
			rc = ix_get(&t, ino, &n);
		ix_abort(&t);
		if (rc != -ENOENT || pass == 1)
			break;
		/* Not known: a stale listing may not have it yet. */
		rc = fs_visit_dir(fs, parent, FS_VISIT_MISS);
		if (rc)
			return rc;
		rc = -ENOENT;
	}
	if (rc)
		return rc;
	if (S_ISREG(n.r.mode))
		overlay_live(fs, &n);
	hfs_fill_stat(&n, st);
	hnode_add_lookup(fs, ino);
	*other_spelling = strcmp(n.name, name) != 0;
	return 0;
}

/* ---- Namespace changes ---- */

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
	ix_link(t, parent, name, out->ino);
	(void)fs;
	return 0;
}

int hfs_mkdir(struct hfs *fs, uint64_t parent, const char *name, mode_t mode,
	      uid_t uid, gid_t gid, struct stat *out)
{
	struct node n;
	if (is_today(fs, parent, name))
		return -EEXIST;
	int rc = mkdir_node(fs, parent, name, mode, uid, gid, &n);
	if (rc)
		return rc;
	hfs_fill_stat(&n, out);
	hnode_add_lookup(fs, n.ino);
	return 0;
}

/*
 * The start of every creation: checks @name, makes sure @parent's remote
 * listing is merged, begins a write txn and adds node @n (stored, linked,
 * its remote path in @path). On failure the txn is over.
 */
static int begin_create(struct hfs *fs, uint64_t parent, const char *name,
			mode_t mode, uid_t uid, gid_t gid, struct node *n,
			struct ixtxn *t, char path[4096])
{
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
		rc = ix_path(t, n->ino, path, 4096);
	if (rc)
		ix_abort(t);
	return rc;
}

/* Creates directory @name in @parent (journaled for the remote). */
static int mkdir_node(struct hfs *fs, uint64_t parent, const char *name,
		      mode_t mode, uid_t uid, gid_t gid, struct node *out)
{
	struct ixtxn t;
	struct node n;
	char path[4096];
	int rc = begin_create(fs, parent, name, S_IFDIR | (mode & 07777), uid,
			      gid, &n, &t, path);
	if (rc)
		return rc;
	n.r.flags = NODE_LISTED;
	n.r.listed_at = hfs_now_ns();
	ix_put(&t, &n);
	ix_journal_append(&t, JOP_MKDIR, path, NULL);
	hfs_ns_changed(fs);
	rc = ix_commit(&t);
	if (rc)
		return rc;
	fs_tell_journal(fs);
	*out = n;
	return 0;
}

/* The category of the node at @path (a remote path, "/a/b"). */
static int classify_path(struct hfs *fs, const char *path)
{
	return cat_classify(fs->cfg->rules, fs->cfg->n_rules,
			    path[0] == '/' ? path + 1 : path);
}

int hfs_classify(struct hfs *fs, uint64_t ino)
{
	struct ixtxn t;
	char path[4096];
	int rc = ix_begin(fs->ix, false, &t);
	if (rc)
		return rc;
	rc = ix_path(&t, ino, path, sizeof(path));
	ix_abort(&t);
	return rc ? rc : classify_path(fs, path);
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
	if (ix_begin(fs->ix, true, &t))
		return;
	ix_proven_put(&t, ino, keep);
	if (ix_commit(&t) || index_sync(fs->ix))
		return;
	pthread_mutex_lock(&fs->reap_lock); /* not reaped meanwhile */
	int rc = cache_adopt_prev(fs->cache, old, ino);
	pthread_mutex_unlock(&fs->reap_lock);
	if (rc && ix_begin(fs->ix, true, &t) == 0) {
		ix_proven_put(&t, ino, 0);
		ix_commit(&t);
	}
}

/* Creates a regular file node, dirty (an empty file must reach the remote
 * too), and its empty content file. */
static int create_reg(struct hfs *fs, uint64_t parent, const char *name,
		      mode_t mode, uid_t uid, gid_t gid, struct node *n,
		      int *fd_out)
{
	/* unlink + create again replaces bytes (durable.c, rule 2). */
	uint64_t old = 0, keep = 0;
	bool rewriting =
		fd_out && fs_was_unlinked(fs, parent, name, &old, &keep);
	if (is_today(fs, parent, name))
		return -EEXIST;
	struct ixtxn t;
	char path[4096];
	int rc = begin_create(fs, parent, name, S_IFREG | (mode & 07777), uid,
			      gid, n, &t, path);
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
	n->r.cat = (uint8_t)classify_path(fs, path);
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

int hfs_mknod(struct hfs *fs, uint64_t parent, const char *name, mode_t mode,
	      uid_t uid, gid_t gid, struct stat *out)
{
	if (!S_ISREG(mode))
		return -EPERM; /* Dropbox stores regular files only */
	struct node n;
	int rc = create_reg(fs, parent, name, mode, uid, gid, &n, NULL);
	if (rc)
		return rc;
	hfs_fill_stat(&n, out);
	hnode_add_lookup(fs, n.ino);
	return 0;
}

/* Marks an hnode unlinked so its record and content go when unused. */
void fs_mark_unlinked(struct hfs *fs, uint64_t ino)
{
	pthread_mutex_lock(&fs->itab_lock);
	struct hnode *h = itab_find(fs, ino);
	if (h)
		h->unlinked = true;
	pthread_mutex_unlock(&fs->itab_lock);
}

/* Marks the hnode of @ino, if any, unlinked with its record and content
 * already gone: its forget has nothing to purge. */
static void mark_gone(struct hfs *fs, uint64_t ino)
{
	pthread_mutex_lock(&fs->itab_lock);
	struct hnode *h = itab_find(fs, ino);
	if (h)
		h->unlinked = h->gone = true;
	pthread_mutex_unlock(&fs->itab_lock);
}

/* Is the inode open (then its attributes are not replaced under it)? */
bool fs_inode_busy(struct hfs *fs, uint64_t ino)
{
	pthread_mutex_lock(&fs->itab_lock);
	struct hnode *h = itab_find(fs, ino);
	bool busy = h && (h->refs > 0);
	pthread_mutex_unlock(&fs->itab_lock);
	return busy;
}

bool fs_inode_known(struct hfs *fs, uint64_t ino)
{
	pthread_mutex_lock(&fs->itab_lock);
	bool known = itab_find(fs, ino) != NULL;
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
	uint8_t h[IX_ATTEMPTS][CHASH_LEN];
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
	ix_tomb_put(t, folded, hfs_now() + TOMB_SECONDS, h, k);
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
	char exact[BACKEND_NAME_MAX + 1], path[4096];
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
	rc = ix_path(&t, ino, path, sizeof(path));
	if (rc)
		goto fail;
	leave_tombstone(&t, &n, path);
	/* Its synced bytes, which a file created again under the name
	 * keeps until its own are synced (create_reg). */
	uint64_t keep = 0;
	if (n.r.flags & NODE_REWRITING)
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
	if (rc)
		return rc;
	stale_name(parent, exact, name);
	if (purge_now)
		mark_gone(fs, ino);
	else
		fs_mark_unlinked(fs, ino);
	if (!dir && (n.r.flags & (NODE_CACHED | NODE_DIRTY)))
		fs_note_unlinked(fs, parent, name, ino, purge_now ? keep : 0);
	fs_tell_journal(fs);
	return 0;
fail:
	ix_abort(&t);
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
	snprintf(buf, len, "%s/reserve", cache_dir(fs->cache));
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
	if (is_today(fs, parent, name))
		return -EPERM;
	int rc = do_remove(fs, parent, name, false);
	if (rc == -ENOSPC && fs_free_reserve(fs))
		rc = do_remove(fs, parent, name, false);
	return rc;
}

int hfs_rmdir(struct hfs *fs, uint64_t parent, const char *name)
{
	if (is_today(fs, parent, name))
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
	if (is_today(fs, parent, name) || is_today(fs, newparent, newname))
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
	char from[4096], to[4096];
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
			rc = sync_and_prove(fs, shn, 1);
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
	rc = ix_path(&t, sino, from, sizeof(from));
	if (rc)
		goto fail;
	leave_tombstone(&t, &src, from);
	if (have_dst) {
		rc = ix_path(&t, dino, to, sizeof(to));
		if (rc)
			goto fail;
		leave_tombstone(&t, &dst, to);
		remove_entry(fs, &t, newparent, &dst, &purge_now);
		if (S_ISDIR(dst.r.mode) || maybe_remote(&dst))
			journal_delete(&t, &dst, to);
	}
	int64_t now = hfs_now_ns();
	ix_unlink(&t, parent, exact);
	snprintf(src.name, sizeof(src.name), "%s", newname);
	src.r.parent = newparent;
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
	rc = ix_path(&t, sino, to, sizeof(to));
	if (rc)
		goto fail;
	if (S_ISDIR(src.r.mode) || maybe_remote(&src))
		ix_journal_append(&t, JOP_RENAME, from, to);
	hfs_ns_changed(fs);
	rc = ix_commit(&t);
	if (rc)
		return rc;
	stale_name(parent, exact, name);
	if (have_dst)
		stale_name(newparent, dexact, newname);
	if (have_dst) {
		if (purge_now)
			mark_gone(fs, dino);
		else
			fs_mark_unlinked(fs, dino);
	}
	fs_tell_journal(fs);
	return 0;
fail:
	ix_abort(&t);
	return rc;
}

/* ---- Dirty tracking ---- */

/*
 * The clean->dirty transition: the only write txn the write path opens.
 * Called without hn->mu; @gen is the write generation that made the file
 * dirty.
 */
static int mark_dirty_txn(struct hfs *fs, struct hnode *hn, uint64_t gen,
			  uint64_t size, int64_t mtime_ns)
{
	struct ixtxn t;
	struct node n;
	char path[4096];
	pthread_mutex_lock(&hn->mu);
	bool rewriting = hn->sync_on_release;
	uint64_t proven = hn->proven;
	pthread_mutex_unlock(&hn->mu);
	int rc = ix_begin(fs->ix, true, &t);
	if (rc)
		return rc;
	rc = ix_get(&t, hn->ino, &n);
	if (!rc)
		rc = ix_path(&t, hn->ino, path, sizeof(path));
	if (rc) {
		ix_abort(&t);
		return rc == -ENOENT ? 0 : rc; /* unlinked meanwhile */
	}
	if (n.r.parent == 0) {
		ix_abort(&t); /* an orphan is never uploaded */
		return 0;
	}
	bool was_dirty = n.r.flags & NODE_DIRTY;
	if (n.r.flags & NODE_PARTIAL)
		ix_chunks_del(&t, hn->ino);
	n.r.flags |= NODE_DIRTY | NODE_CACHED;
	n.r.flags &= ~(NODE_PARTIAL | NODE_LOST | NODE_REWRITING);
	if (rewriting)
		n.r.flags |= NODE_REWRITING;
	if (!was_dirty)
		n.r.dirty_since = hfs_now();
	if (gen > n.r.gen)
		n.r.gen = gen;
	n.r.size = size;
	n.r.mtime_ns = n.r.ctime_ns = mtime_ns;
	n.r.cat = (uint8_t)classify_path(fs, path);
	ix_put(&t, &n);
	ix_dirty_add(&t, hn->ino);
	ix_proven_put(&t, hn->ino, was_dirty ? proven : 0);
	rc = ix_commit(&t);
	if (rc)
		return rc;
	if (!was_dirty)
		fs_tell_dirty(fs, hn->ino, n.r.cat, n.r.dirty_since,
			      n.r.last_upload == 0);
	return 0;
}

static int mark_dirty(struct hfs *fs, struct hnode *hn, uint64_t gen,
		      uint64_t size, int64_t mtime_ns)
{
	int rc;
	HFS_RETRY_NOSPC(fs, rc, mark_dirty_txn(fs, hn, gen, size, mtime_ns));
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
	if (off < hn->proven)
		hn->proven = off; /* those bytes are about to change */
	uint64_t gen = hn->gen, size = hn->size;
	int64_t mt = hn->mtime_ns;
	pthread_mutex_unlock(&hn->mu);
	int rc = mark_dirty(fs, hn, gen, size, mt);
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
static int rewrite_begin(struct hfs *fs, struct hnode *hn)
{
	if (hn->prev_kept || hn->proven == 0 || !hn->dirty_persisted ||
	    hn->unlinked || hn->fetching)
		return 0;
	hn->sync_on_release = true;
	uint64_t gen = hn->gen, size = hn->size;
	int64_t mt = hn->mtime_ns;
	pthread_mutex_unlock(&hn->mu);
	int rc = mark_dirty(fs, hn, gen, size, mt);
	if (!rc)
		rc = index_sync(fs->ix);
	pthread_mutex_lock(&hn->mu);
	if (rc || hn->prev_kept)
		return rc;
	int fd = cache_set_aside(fs->cache, hn->ino);
	if (fd < 0) {
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

/* Persists what hn knows better than the index (size, times, gen). */
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
	bool prev = hn->prev_kept && !rewriting;
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
	n.r.flags &= ~NODE_REWRITING;
	if (rewriting)
		n.r.flags |= NODE_REWRITING;
	ix_put(&t, &n);
	if (synced && (n.r.flags & NODE_DIRTY))
		ix_proven_put(&t, hn->ino, size); /* its bytes are on disk */
	else if (was_rewriting && !rewriting)
		ix_proven_put(&t, hn->ino, 0); /* it was the set-aside one's */
	if (prev)
		ix_doom_add(&t, hn->ino); /* the .prev file (rewrite_begin) */
	rc = ix_commit(&t);
	if (rc)
		return rc;
	pthread_mutex_lock(&hn->mu);
	if (prev)
		hn->prev_kept = false;
	if (was_rewriting && !rewriting && !synced && hn->gen == gen)
		hn->proven = 0;
	if (hn->gen == gen && hn->size == size && hn->mtime_ns == mtime)
		hn->live = false;
	if (synced && (n.r.flags & NODE_DIRTY) && hn->gen == gen)
		hn->proven = size;
	hn->synced = false;
	pthread_mutex_unlock(&hn->mu);
	return 0;
}

static int persist_live(struct hfs *fs, struct hnode *hn)
{
	int rc;
	HFS_RETRY_NOSPC(fs, rc, persist_live_txn(fs, hn));
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
			int64_t mt = hn->mtime_ns;
			hn->dirty_persisted = true;
			pthread_mutex_unlock(&hn->mu);
			rc = mark_dirty(fs, hn, gen, 0, mt);
			pthread_mutex_lock(&hn->mu);
		}
	}
	if (!rc) {
		hn->nopen++;
		if (acc != O_RDONLY)
			hn->nwriters++;
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
	int rc = create_reg(fs, parent, name, mode, uid, gid, &n, &fd);
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
		pthread_mutex_unlock(&(*fh)->hn->mu);
	}
	hfs_fill_stat(&n, out);
	hnode_add_lookup(fs, n.ino);
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

ssize_t hfs_write(struct hfs *fs, struct hfs_file *fh, struct fuse_bufvec *buf,
		  uint64_t off, bool writepage)
{
	struct hnode *hn = fh->hn;
	throttle(fs);
	int fd = whole_fd(fs, hn);
	if (fd < 0)
		return fd;
	/* Writes leave the fsync'd size as it is (see mark_dirty_first). */
	int rc = mark_dirty_first(fs, hn, UINT64_MAX);
	if (rc)
		return rc;

	size_t len = fuse_buf_size(buf);
	struct fuse_bufvec dst = FUSE_BUFVEC_INIT(len);
	dst.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	dst.buf[0].fd = fd;
	dst.buf[0].pos = (off_t)off;

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
		r = fuse_buf_copy(&dst, buf, 0);
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
	int64_t mt = 0;
	if (changed) {
		hn->size = (uint64_t)st.st_size;
		hn->mtime_ns = hn->ctime_ns = hfs_now_ns();
		hn->gen++;
		hn->live = true;
		hn->dirty_persisted = true;
		gen = hn->gen;
		size = hn->size;
		mt = hn->mtime_ns;
	}
	pthread_mutex_unlock(&hn->mu);
	pthread_rwlock_unlock(&hn->snap);
	if (changed)
		rc = mark_dirty(fs, hn, gen, size, mt);
	if (!rc && changed)
		rc = persist_live(fs, hn);
	return rc;
}

/*
 * Syncs the content file of @hn and records its size as proven (index.h)
 * in the index (not durably: the caller takes a sync point, or commits a
 * txn that must not be durable without this one, after it).
 */
static int sync_and_prove(struct hfs *fs, struct hnode *hn, int datasync)
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
		hn->live = true;
		pthread_mutex_unlock(&hn->mu);
		rc = persist_live(fs, hn);
	}
	return rc;
}

int hfs_fsync(struct hfs *fs, struct hfs_file *fh, int datasync)
{
	struct hnode *hn = fh->hn;
	int rc = sync_and_prove(fs, hn, datasync);
	if (!rc)
		rc = index_sync(fs->ix);
	/* With the writeback cache the kernel would keep the size and
	 * blocks it cached before the data reached us; fsync is where a
	 * caller expects them right. Attributes only: no pages dropped. */
	if (!rc && fs->se)
		fuse_lowlevel_notify_inval_inode(fs->se, hn->ino, -1, 0);
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
	if ((fh->flags & O_ACCMODE) != O_RDONLY)
		hn->nwriters--;
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
	if (rc == -ENOENT && !(to_set & FUSE_SET_ATTR_SIZE) &&
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

	if (to_set & FUSE_SET_ATTR_SIZE) {
		if (S_ISDIR(n.r.mode))
			return -EISDIR;
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
			if ((uint64_t)attr->st_size < hn->size)
				hn->sync_on_release = true;
			pthread_mutex_unlock(&hn->mu);
			rc = mark_dirty_first(fs, hn, (uint64_t)attr->st_size);
			pthread_rwlock_rdlock(snap);
			pthread_mutex_lock(&hn->mu);
			if (!rc && ftruncate(hn->fd, attr->st_size) < 0)
				rc = -errno;
			if (!rc) {
				hn->size = (uint64_t)attr->st_size;
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
						(uint64_t)attr->st_size, now);
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

	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID |
		      FUSE_SET_ATTR_GID | FUSE_SET_ATTR_ATIME |
		      FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
		      FUSE_SET_ATTR_MTIME_NOW | FUSE_SET_ATTR_CTIME)) {
		struct ixtxn t;
		rc = ix_begin(fs->ix, true, &t);
		if (rc)
			return rc;
		rc = ix_get(&t, ino, &n);
		if (rc) {
			ix_abort(&t);
			return rc;
		}
		if (to_set & FUSE_SET_ATTR_MODE)
			n.r.mode =
				(n.r.mode & S_IFMT) | (attr->st_mode & 07777);
		if (to_set & FUSE_SET_ATTR_UID)
			n.r.uid = attr->st_uid;
		if (to_set & FUSE_SET_ATTR_GID)
			n.r.gid = attr->st_gid;
		if (to_set & FUSE_SET_ATTR_ATIME_NOW)
			n.r.atime_ns = now;
		else if (to_set & FUSE_SET_ATTR_ATIME)
			n.r.atime_ns = attr->st_atim.tv_sec * 1000000000LL +
				       attr->st_atim.tv_nsec;
		bool mtime = false;
		if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
			n.r.mtime_ns = now;
			mtime = true;
		} else if (to_set & FUSE_SET_ATTR_MTIME) {
			n.r.mtime_ns = attr->st_mtim.tv_sec * 1000000000LL +
				       attr->st_mtim.tv_nsec;
			mtime = true;
		}
		if (to_set & FUSE_SET_ATTR_CTIME)
			n.r.ctime_ns = attr->st_ctim.tv_sec * 1000000000LL +
				       attr->st_ctim.tv_nsec;
		else
			n.r.ctime_ns = now;
		ix_put(&t, &n);
		rc = ix_commit(&t);
		if (rc)
			return rc;
		if (mtime && S_ISREG(n.r.mode)) {
			/* An explicit mtime replaces the live one. */
			struct hnode *h = hnode_find(fs, ino);
			if (h) {
				pthread_mutex_lock(&h->mu);
				h->mtime_ns = n.r.mtime_ns;
				h->ctime_ns = n.r.ctime_ns;
				pthread_mutex_unlock(&h->mu);
				hnode_put(fs, h);
			}
		}
	}
	return hfs_getattr(fs, ino, out);
}

/* ---- Directories ---- */

struct dirent_snap {
	uint64_t ino;
	char *name;
};

struct hfs_dir {
	uint64_t ino, parent;
	struct dirent_snap *e;
	size_t n, cap;
};

static int snap_child(void *arg, const char *name, uint64_t ino)
{
	struct hfs_dir *d = arg;
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 64;
		struct dirent_snap *ne = realloc(d->e, cap * sizeof(*ne));
		if (!ne)
			return -ENOMEM;
		d->e = ne;
		d->cap = cap;
	}
	d->e[d->n].name = strdup(name);
	if (!d->e[d->n].name)
		return -ENOMEM;
	d->e[d->n].ino = ino;
	d->n++;
	return 0;
}

void hfs_releasedir(struct hfs *fs, struct hfs_dir *dh)
{
	(void)fs;
	if (!dh)
		return;
	for (size_t i = 0; i < dh->n; i++)
		free(dh->e[i].name);
	free(dh->e);
	free(dh);
}

int hfs_opendir(struct hfs *fs, uint64_t ino, struct hfs_dir **out)
{
	int rc = fs_visit_dir(fs, ino, FS_VISIT_FRESH);
	if (rc)
		return rc;
	struct hfs_dir *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	struct ixtxn t;
	struct node n;
	rc = ix_begin(fs->ix, false, &t);
	if (rc)
		goto fail;
	rc = ix_get(&t, ino, &n);
	if (!rc && !S_ISDIR(n.r.mode))
		rc = -ENOTDIR;
	if (!rc)
		rc = ix_foreach_child(&t, ino, snap_child, d);
	ix_abort(&t);
	if (rc)
		goto fail;
	d->ino = ino;
	d->parent = n.r.parent ? n.r.parent : INDEX_ROOT_INO;
	*out = d;
	return 0;
fail:
	hfs_releasedir(fs, d);
	return rc;
}

ssize_t hfs_readdir(struct hfs *fs, void *req, struct hfs_dir *dh, uint64_t off,
		    bool plus, char *buf, size_t size)
{
	fuse_req_t r = req;
	size_t used = 0;
	struct ixtxn t;
	bool txn = false;
	/* Offsets: 0 ".", 1 "..", 2 + i for entry i. */
	for (uint64_t pos = off; pos < dh->n + 2; pos++) {
		struct stat st;
		const char *name;
		memset(&st, 0, sizeof(st));
		struct node n;
		if (pos < 2) {
			name = pos == 0 ? "." : "..";
			st.st_ino = pos == 0 ? dh->ino : dh->parent;
			st.st_mode = S_IFDIR;
		} else {
			const struct dirent_snap *e = &dh->e[pos - 2];
			name = e->name;
			if (!txn) {
				if (ix_begin(fs->ix, false, &t))
					break;
				txn = true;
			}
			if (ix_get(&t, e->ino, &n))
				continue; /* removed since opendir */
			if (S_ISREG(n.r.mode) && plus)
				overlay_live(fs, &n);
			hfs_fill_stat(&n, &st);
		}
		size_t rem = size - used, need;
		if (plus) {
			struct fuse_entry_param ep;
			memset(&ep, 0, sizeof(ep));
			if (pos >= 2) {
				ep.ino = st.st_ino;
				ep.attr = st;
				ep.attr_timeout = ATTR_TIMEOUT;
				ep.entry_timeout = ATTR_TIMEOUT;
			} else {
				ep.attr = st;
			}
			need = fuse_add_direntry_plus(r, buf + used, rem, name,
						      &ep, (off_t)pos + 1);
		} else {
			need = fuse_add_direntry(r, buf + used, rem, name, &st,
						 (off_t)pos + 1);
		}
		if (need > rem)
			break;
		if (plus && pos >= 2)
			hnode_add_lookup(fs, st.st_ino);
		used += need;
	}
	if (txn)
		ix_abort(&t);
	return (ssize_t)used;
}

/* ---- statfs, xattrs ---- */

int hfs_statfs(struct hfs *fs, struct statvfs *st)
{
	if (statvfs(cache_dir(fs->cache), st) < 0)
		return -errno;
	st->f_namemax = BACKEND_NAME_MAX;
	return 0;
}

#define XA_PREFIX "user.huracanfs."

static const char *const xattr_names[] = {
	XA_PREFIX "state",	 XA_PREFIX "category",
	XA_PREFIX "rev",	 XA_PREFIX "content_hash",
	XA_PREFIX "next_upload", XA_PREFIX "last_error",
};

static const char *state_name(const struct node *n, bool dir)
{
	if (dir)
		return (n->r.flags & NODE_ON_REMOTE) ? "synced" : "local";
	if (n->r.flags & NODE_LOST)
		return "lost";
	if (n->r.flags & NODE_UPLOADING)
		return "uploading";
	if (n->r.flags & NODE_DIRTY)
		return "dirty";
	if (n->r.flags & NODE_CACHED)
		return "cached";
	if (n->r.flags & NODE_PARTIAL)
		return "partial";
	return "remote";
}

ssize_t hfs_getxattr(struct hfs *fs, uint64_t ino, const char *name, char *buf,
		     size_t size)
{
	char val[256];
	struct node n;
	/* Before anything else: the kernel asks for security.capability
	 * on every write. */
	if (strncmp(name, XA_PREFIX, strlen(XA_PREFIX)) != 0)
		return -ENODATA;
	if (ino == HFS_TODAY_INO)
		return -ENODATA;
	int rc = fs_get_node(fs, ino, &n);
	if (rc)
		return rc;
	bool dir = S_ISDIR(n.r.mode);
	val[0] = '\0';
	const char *key = name + strlen(XA_PREFIX);
	if (strcmp(key, "control") == 0 && ino == INDEX_ROOT_INO) {
		snprintf(val, sizeof(val), "%s", fs->control_path);
	} else if (strcmp(key, "state") == 0) {
		snprintf(val, sizeof(val), "%s", state_name(&n, dir));
	} else if (strcmp(key, "category") == 0 && !dir) {
		int cat = hfs_classify(fs, ino);
		if (cat < 0)
			return cat;
		snprintf(val, sizeof(val), "%s", cat_name(cat));
	} else if (strcmp(key, "rev") == 0 && !dir) {
		if (!n.r.rev[0])
			return -ENODATA;
		snprintf(val, sizeof(val), "%s", n.r.rev);
	} else if (strcmp(key, "content_hash") == 0 && !dir) {
		if (!(n.r.flags & NODE_HAS_HASH))
			return -ENODATA;
		chash_to_hex(n.r.remote_hash, val);
	} else if (strcmp(key, "next_upload") == 0 && !dir) {
		int64_t next =
			fs->hooks.next_upload
				? fs->hooks.next_upload(fs->hooks.arg, ino)
				: 0;
		if (!next)
			return -ENODATA;
		struct tm tm;
		time_t tt = (time_t)next;
		gmtime_r(&tt, &tm);
		strftime(val, sizeof(val), "%Y-%m-%dT%H:%M:%SZ", &tm);
	} else if (strcmp(key, "last_error") == 0 && !dir) {
		pthread_mutex_lock(&fs->itab_lock);
		struct hnode *h = itab_find(fs, ino);
		if (h)
			snprintf(val, sizeof(val), "%s", h->last_error);
		pthread_mutex_unlock(&fs->itab_lock);
		if (!val[0])
			return -ENODATA;
	} else {
		return -ENODATA;
	}
	size_t len = strlen(val);
	if (size == 0)
		return (ssize_t)len;
	if (size < len)
		return -ERANGE;
	memcpy(buf, val, len);
	return (ssize_t)len;
}

ssize_t hfs_listxattr(struct hfs *fs, uint64_t ino, char *buf, size_t size)
{
	struct node n;
	if (ino == HFS_TODAY_INO)
		return 0;
	int rc = fs_get_node(fs, ino, &n);
	if (rc)
		return rc;
	/* Only the attributes that have a value now, so that
	 * `getfattr -d` reads every name it is given. */
	bool has[sizeof(xattr_names) / sizeof(xattr_names[0])];
	size_t total = 0, count = sizeof(xattr_names) / sizeof(xattr_names[0]);
	for (size_t i = 0; i < count; i++) {
		has[i] = hfs_getxattr(fs, ino, xattr_names[i], NULL, 0) > 0;
		if (has[i])
			total += strlen(xattr_names[i]) + 1;
	}
	if (size == 0)
		return (ssize_t)total;
	if (size < total)
		return -ERANGE;
	size_t pos = 0;
	for (size_t i = 0; i < count; i++) {
		if (!has[i])
			continue;
		size_t l = strlen(xattr_names[i]) + 1;
		memcpy(buf + pos, xattr_names[i], l);
		pos += l;
	}
	return (ssize_t)total;
}

/* ---- Helpers for the workflows (restore, run folders) ---- */

int fs_fetch(struct hfs *fs, uint64_t ino)
{
	struct hnode *hn = hnode_get(fs, ino);
	if (!hn)
		return -ENOMEM;
	pthread_mutex_lock(&hn->mu);
	int rc = fs_ensure_range_until(fs, hn, 0, 0, 0); /* no user waits */
	pthread_mutex_unlock(&hn->mu);
	hnode_put(fs, hn);
	return rc;
}

int fs_resolve(struct hfs *fs, const char *path, uint64_t *out)
{
	char buf[4096], *save = NULL;
	uint64_t ino = INDEX_ROOT_INO;
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *c = strtok_r(buf, "/", &save); c;
	     c = strtok_r(NULL, "/", &save)) {
		int rc = fs_ensure_listed(fs, ino, false);
		if (rc)
			return rc;
		struct ixtxn t;
		rc = ix_begin(fs->ix, false, &t);
		if (rc)
			return rc;
		rc = ix_lookup(&t, ino, c, &ino, NULL);
		ix_abort(&t);
		if (rc)
			return rc;
	}
	*out = ino;
	return 0;
}

int fs_create_file(struct hfs *fs, uint64_t parent, const char *name,
		   const void *data, size_t len, uint64_t *ino)
{
	struct node n;
	int fd = -1;
	int rc =
		create_reg(fs, parent, name, 0644, getuid(), getgid(), &n, &fd);
	if (rc)
		return rc;
	size_t off = 0;
	while (off < len) {
		ssize_t w = pwrite(fd, (const char *)data + off, len - off,
				   (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			rc = w < 0 ? -errno : -EIO;
			break;
		}
		off += (size_t)w;
	}
	close(fd);
	if (rc)
		return rc;
	struct ixtxn t;
	rc = ix_begin(fs->ix, true, &t);
	if (rc)
		return rc;
	if (ix_get(&t, n.ino, &n) == 0) {
		n.r.size = len;
		ix_put(&t, &n);
	}
	rc = ix_commit(&t);
	if (!rc)
		*ino = n.ino;
	return rc;
}

/* ---- Setup ---- */

int hfs_take_lock(const char *dir, int *fd_out, char *err, size_t errlen)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/lock", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "cannot open %s: %s", path,
			 strerror(errno));
		return -errno;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;
		char pid[32] = "";
		ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		snprintf(err, errlen,
			 "cache directory %s is in use by another huracanfs "
			 "daemon%s%s%s; unmount it first or use another "
			 "cache_dir",
			 dir, pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "");
		close(fd);
		return e == EWOULDBLOCK ? -EBUSY : -e;
	}
	char pid[32];
	int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (ftruncate(fd, 0) == 0 && pwrite(fd, pid, (size_t)n, 0) < 0)
		hlog_debug("cannot record pid in %s", path);
	*fd_out = fd;
	return 0;
}

int hfs_mkdir_p(const char *dir, mode_t mode)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof(buf), "%s", dir);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0700) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int hfs_create(const struct hfs_config *cfg, struct backend *be,
	       const char *mountpoint, struct hfs **out, char *err,
	       size_t errlen)
{
	struct hfs *fs = calloc(1, sizeof(*fs));
	char path[PATH_MAX];
	int rc;
	if (!fs) {
		backend_destroy(be);
		return -ENOMEM;
	}
	fs->cfg = cfg;
	fs->be = be;
	fs->lock_fd = -1;
	pthread_mutex_init(&fs->itab_lock, NULL);
	pthread_mutex_init(&fs->commit_lock, NULL);
	pthread_mutex_init(&fs->list_lock, NULL);
	pthread_mutex_init(&fs->listings.mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&fs->listings.cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&fs->lost_lock, NULL);
	pthread_mutex_init(&fs->kept_lock, NULL);
	pthread_mutex_init(&fs->room_lock, NULL);
	pthread_mutex_init(&fs->recent_lock, NULL);
	pthread_mutex_init(&fs->reap_lock, NULL);
	fs->nbuckets = 1024;
	fs->buckets = calloc(fs->nbuckets, sizeof(*fs->buckets));
	fs->mountpoint = strdup(mountpoint);
	snprintf(path, sizeof(path), "%s/control.sock", cfg->cache_dir);
	fs->control_path = strdup(path);
	if (!fs->buckets || !fs->mountpoint || !fs->control_path) {
		rc = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	rc = hfs_mkdir_p(cfg->cache_dir, 0700);
	if (rc) {
		snprintf(err, errlen, "cannot create cache_dir %s: %s",
			 cfg->cache_dir, strerror(-rc));
		goto fail;
	}
	if (chmod(cfg->cache_dir, 0700) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot chmod cache_dir %s: %s",
			 cfg->cache_dir, strerror(errno));
		goto fail;
	}
	rc = hfs_take_lock(cfg->cache_dir, &fs->lock_fd, err, errlen);
	if (rc)
		goto fail;
	snprintf(path, sizeof(path), "%s/index", cfg->cache_dir);
	char why[512] = "";
	bool rolled_back = false;
	rc = index_prepare(path, &rolled_back);
	if (rc) {
		snprintf(err, errlen, "cannot prepare the index %s: %s", path,
			 strerror(-rc));
		goto fail;
	}
	if (rolled_back)
		hlog_warn("the machine or the cache filesystem restarted since "
			  "the last daemon stopped uncleanly: the index goes "
			  "back to its last sync point");
	rc = index_check(path, why, sizeof(why));
	if (rc == -EUCLEAN) {
		snprintf(
			err, errlen,
			"the index in %s is damaged: %s; run `huracanfs repair "
			"%s` (it rebuilds the index from the content files "
			"and the remote, and keeps every byte)",
			cfg->cache_dir, why, mountpoint);
		goto fail;
	}
	rc = index_open(path, &fs->ix);
	if (rc == -EUCLEAN) {
		snprintf(err, errlen,
			 "the index in %s is damaged: LMDB cannot open it; run "
			 "`huracanfs repair %s`",
			 cfg->cache_dir, mountpoint);
		goto fail;
	}
	if (rc == -EPROTO) {
		/* An index of another layout: keep it and its content files
		 * aside, untouched, and start afresh (the remote has what
		 * was uploaded; the rest can be recovered by hand). */
		char old_ix[PATH_MAX + 32], old_data[PATH_MAX + 32];
		char data[PATH_MAX];
		long long now = (long long)hfs_now();
		snprintf(old_ix, sizeof(old_ix), "%s.old-%lld", path, now);
		snprintf(data, sizeof(data), "%s/data", cfg->cache_dir);
		snprintf(old_data, sizeof(old_data), "%s.old-%lld", data, now);
		if (rename(path, old_ix) == 0 &&
		    (rename(data, old_data) == 0 || errno == ENOENT)) {
			hlog_err("the index in %s has another layout version: "
				 "moved aside to %s (its content files to %s); "
				 "starting a new index, the remote is listed "
				 "again",
				 cfg->cache_dir, old_ix, old_data);
			rc = index_open(path, &fs->ix);
		}
	}
	if (!rc) {
		rc = cache_create(cfg->cache_dir, &fs->cache);
		if (rc) {
			snprintf(err, errlen,
				 "cannot set up the cache in %s: %s",
				 cfg->cache_dir, strerror(-rc));
			goto fail;
		}
	}
	if (rc) {
		snprintf(err, errlen, "cannot open the index %s: %s", path,
			 rc == -EPROTO ? "it has another layout version"
				       : strerror(-rc));
		goto fail;
	}
	rc = index_mark_running(fs->ix, &fs->unclean);
	fs->rolled_back = rolled_back;
	if (!rc)
		rc = fs_recover(fs);
	if (rc) {
		snprintf(err, errlen, "index recovery failed: %s",
			 strerror(-rc));
		goto fail;
	}
	fs->mounted_at = hfs_now_ns();
	hfs_keep_reserve(fs);
	hfs_check_space(fs);
	*out = fs;
	return 0;
fail:
	hfs_destroy(fs);
	return rc;
}

void hfs_set_hooks(struct hfs *fs, const struct hfs_hooks *hooks)
{
	fs->hooks = *hooks;
}

void hfs_destroy(struct hfs *fs)
{
	if (!fs)
		return;
	/* Before the inode table goes: the reaper looks inodes up. */
	if (fs->ix && fs->cache && fs->buckets && hfs_reap(fs) == 0)
		index_mark_stopped(fs->ix);
	if (fs->buckets) {
		for (size_t i = 0; i < fs->nbuckets; i++) {
			struct hnode *h = fs->buckets[i], *next;
			for (; h; h = next) {
				next = h->next;
				if (h->fd >= 0)
					close(h->fd);
				pthread_mutex_destroy(&h->mu);
				pthread_cond_destroy(&h->fetched);
				pthread_rwlock_destroy(&h->snap);
				free(h);
			}
		}
	}
	free(fs->buckets);
	index_close(fs->ix);
	cache_destroy(fs->cache);
	backend_destroy(fs->be);
	if (fs->lock_fd >= 0)
		close(fs->lock_fd);
	pthread_mutex_destroy(&fs->itab_lock);
	pthread_mutex_destroy(&fs->commit_lock);
	pthread_mutex_destroy(&fs->list_lock);
	pthread_mutex_destroy(&fs->listings.mu);
	pthread_cond_destroy(&fs->listings.cv);
	for (size_t i = 0; i < fs->nlost; i++)
		free(fs->lost[i]);
	free(fs->lost);
	for (size_t i = 0; i < fs->nfound; i++)
		free(fs->found[i]);
	free(fs->found);
	pthread_mutex_destroy(&fs->lost_lock);
	pthread_mutex_destroy(&fs->recent_lock);
	pthread_mutex_destroy(&fs->reap_lock);
	for (size_t i = 0; i < fs->nkept; i++) {
		free(fs->kept[i].path);
		for (size_t k = 0; k < fs->kept[i].nnames; k++)
			free(fs->kept[i].names[k]);
	}
	free(fs->kept);
	pthread_mutex_destroy(&fs->kept_lock);
	pthread_mutex_destroy(&fs->room_lock);
	free(fs->mountpoint);
	free(fs->control_path);
	free(fs);
}

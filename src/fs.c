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
#include "hfs/log.h"

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

struct hnode *fs_itab_find(struct hfs *fs, uint64_t ino)
{
	struct hnode *h = fs->buckets[bucket_of(fs, ino)];
	while (h && h->ino != ino)
		h = h->next;
	return h;
}

/* Returns the hnode of @ino with fs->itab_lock held, creating it. */
static struct hnode *itab_get_locked(struct hfs *fs, uint64_t ino)
{
	struct hnode *h = fs_itab_find(fs, ino);
	if (h)
		return h;
	h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	h->ino = ino;
	h->fd = -1;
	h->undo_fd = -1;
	pthread_mutex_init(&h->mu, NULL);
	pthread_mutex_init(&h->persist_mu, NULL);
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
	struct hnode *h = fs_itab_find(fs, ino);
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
	if (h->undo_fd >= 0)
		close(h->undo_fd);
	free(h->undo);
	fs_fetch_free(h);
	pthread_mutex_destroy(&h->mu);
	pthread_mutex_destroy(&h->persist_mu);
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
void fs_hnode_add_lookup(struct hfs *fs, uint64_t ino)
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
	struct hnode *h = fs_itab_find(fs, ino);
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
	hn->prev_kept = (n.r.flags & NODE_ASIDE_PREV) &&
			cache_has_prev(fs->cache, hn->ino);
	if (hn->prev_kept)
		hn->aside = NODE_ASIDE_PREV;
	else if ((n.r.flags & NODE_ASIDE_UNDO) &&
		 cache_has_undo(fs->cache, hn->ino))
		fs_undo_resume(fs, hn);
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

/*
 * The mount root holds a symbolic link (default name "today") to the
 * folder of the current UTC date, created when the link is followed, so a
 * trainer that knows nothing of dates can write today/logs/x.log into
 * 2026-11-21/logs/x.log. It lives only here: never in the index, never
 * uploaded; a real entry of the same name hides it. It is resolved by
 * name but not listed by readdir, so tools that walk the tree (cp -r,
 * shutil.copytree, rsync -L, du -L) do not see today's folder twice.
 */
bool fs_is_today(struct hfs *fs, uint64_t parent, const char *name)
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

/* The today link's target, the date folder, made if missing. */
static ssize_t today_target(struct hfs *fs, char *buf, size_t size)
{
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
		rc = fs_mkdir_node(fs, INDEX_ROOT_INO, day, 0755, getuid(),
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

int fs_link_content(struct hfs *fs, uint64_t ino, const char *target,
		    size_t len)
{
	int fd = cache_open(fs->cache, ino, 1);
	if (fd < 0)
		return fd;
	int rc = 0;
	if (ftruncate(fd, 0) < 0)
		rc = -errno;
	else {
		ssize_t w = pwrite(fd, target, len, 0);
		if (w != (ssize_t)len)
			rc = w < 0 ? -errno : -EIO;
	}
	/* Small, and all there is of a dirty link on this machine before
	 * its upload: on disk at once (durable.c, rule 4 asks it of clean
	 * marks; a link is clean or dirty from birth). */
	if (!rc && fdatasync(fd) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

/*
 * A symbolic link's target is in the index (links DBI). A link only
 * listed remotely (NAME.rclonelink) has none there until it is read: its
 * remote file is fetched into its content file, and the bytes kept in the
 * index from then on.
 */
ssize_t hfs_readlink(struct hfs *fs, uint64_t ino, char *buf, size_t size)
{
	if (ino == HFS_TODAY_INO)
		return today_target(fs, buf, size);
	struct ixtxn t;
	struct node n;
	int rc = ix_begin(fs->ix, false, &t);
	if (rc)
		return rc;
	rc = ix_get(&t, ino, &n);
	int64_t len = rc ? rc : -EINVAL;
	if (!rc && S_ISLNK(n.r.mode))
		len = ix_target_get(&t, ino, buf, size);
	ix_abort(&t);
	if (len != -ENOENT || rc)
		return len < 0 ? len
			       : (ssize_t)(len < (int64_t)size ? len
							       : (int64_t)size);
	/* Listed remotely, never read. */
	rc = fs_fetch(fs, ino);
	if (rc)
		return rc;
	char *tb = malloc(HFS_LINK_MAX + 1);
	if (!tb)
		return -ENOMEM;
	int fd = cache_open(fs->cache, ino, 0);
	ssize_t got = fd < 0 ? fd : pread(fd, tb, HFS_LINK_MAX + 1, 0);
	if (got < 0 && fd >= 0)
		got = -errno;
	if (fd >= 0)
		close(fd);
	if (got == 0 || got > HFS_LINK_MAX)
		got = -EIO; /* not a link's target: empty, or too long */
	if (got > 0 && ix_begin(fs->ix, true, &t) == 0) {
		if (ix_get(&t, ino, &n) == 0 && S_ISLNK(n.r.mode)) {
			ix_target_put(&t, ino, tb, (size_t)got);
			ix_commit(&t);
		} else {
			ix_abort(&t);
		}
	}
	if (got > 0) {
		if ((size_t)got > size)
			got = (ssize_t)size;
		memcpy(buf, tb, (size_t)got);
	}
	free(tb);
	return got;
}

/* ---- Attributes ---- */

void hfs_fill_stat(const struct node *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	st->st_mode = n->r.mode;
	/* An unlinked file still open (an orphan, parent 0) has no links;
	 * a directory has its own, its entry's and its subdirectories'. */
	if (S_ISDIR(n->r.mode))
		st->st_nlink = 2 + (nlink_t)n->r.nsubdirs;
	else
		st->st_nlink = n->r.parent == 0 ? 0 : 1 + (nlink_t)n->r.xlinks;
	st->st_uid = n->r.uid;
	st->st_gid = n->r.gid;
	st->st_size = S_ISDIR(n->r.mode) ? 4096 : (off_t)n->r.size;
	if (S_ISCHR(n->r.mode) || S_ISBLK(n->r.mode)) {
		st->st_rdev = (dev_t)n->r.size; /* kept there (index.h) */
		st->st_size = 0;
	}
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
void fs_overlay_live(struct hfs *fs, struct node *n)
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
void fs_stale_name(uint64_t parent, const char *stored, const char *used)
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
	for (int i = 0; i < n; i++)
		fs_tell_inval_entry(fs, tl_stale[i].parent, tl_stale[i].name);
}

int hfs_lookup(struct hfs *fs, uint64_t parent, const char *name,
	       struct stat *st, bool *other_spelling)
{
	struct ixtxn t;
	struct node n;
	uint64_t ino;
	char exact[BACKEND_NAME_MAX + 1];
	if (strlen(name) > BACKEND_NAME_MAX)
		return -ENAMETOOLONG;
	int rc = fs_visit_dir(fs, parent, FS_VISIT_USE);
	if (rc)
		return rc;
	if (fs_is_today(fs, parent, name)) {
		today_stat(st);
		return 0;
	}
	for (int pass = 0; pass < 2; pass++) {
		rc = ix_begin(fs->ix, false, &t);
		if (rc)
			return rc;
		/* A name that folds like an entry's is that entry (Dropbox
		 * takes them for one): "data" finds "Data". */
		rc = ix_lookup(&t, parent, name, &ino, exact);
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
		fs_overlay_live(fs, &n);
	hfs_fill_stat(&n, st);
	fs_hnode_add_lookup(fs, ino);
	*other_spelling = strcmp(exact, name) != 0;
	return 0;
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
	int rc = fs_create_reg(fs, parent, name, 0644, getuid(), getgid(), &n,
			       &fd);
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
	cache_part_path(dir, CACHE_LOCK, path, sizeof(path));
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
	cache_part_path(cfg->cache_dir, CACHE_CONTROL, path, sizeof(path));
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
	cache_part_path(cfg->cache_dir, CACHE_INDEX, path, sizeof(path));
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
		cache_part_path(cfg->cache_dir, CACHE_DATA, data, sizeof(data));
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
	fs_fetch_drain(); /* workers hold inodes and use the backend */
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
				if (h->undo_fd >= 0)
					close(h->undo_fd);
				free(h->undo);
				fs_fetch_free(h);
				pthread_mutex_destroy(&h->mu);
				pthread_mutex_destroy(&h->persist_mu);
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

/*
 * The LMDB index (see index.h for the layout).
 *
 * Why these choices:
 * - One environment, all DBIs opened in one txn at startup and reused.
 * - MDB_NOTLS so libfuse's worker pool may come and go freely and a thread
 *   may hold a read txn while it opens another.
 * - MDB_NOSYNC: a committed txn is in the kernel's page cache, which
 *   survives kill -9 of the daemon. index_sync() (fsync(2) from a user,
 *   the periodic syncer, unmount) makes it durable against power loss.
 * - The map is reserved large (address space only; the file grows as it
 *   is used) and grown before it fills (see "Map growth" below).
 */
#include <endian.h>
#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "hfs/index.h"
#include "hfs/log.h"

#define INDEX_MAP_SIZE ((size_t)64 << 30)
/* Never larger: address space is plenty, but not endless (a failed resize
 * would leave LMDB without a map). */
#define INDEX_MAP_MAX ((size_t)1 << 40)
/* Smallest map accepted from HURACANFS_INDEX_MAP_SIZE (tests). */
#define INDEX_MAP_MIN ((size_t)64 << 10)

struct hfs_index {
	MDB_env *env;
	MDB_dbi meta, nodes, dirents, dirty, journal, orphans, chunks, attempts,
		tombs;
	/*
	 * Map growth. mdb_env_set_mapsize() may only run while no txn of
	 * this process is open, so every txn holds @maplock for reading and
	 * a resize takes it for writing. @mapsize is the current size;
	 * @grow_wanted is set when a txn found the map full.
	 */
	pthread_rwlock_t maplock;
	bool maplock_init;
	atomic_size_t mapsize;
	atomic_bool grow_wanted;
	atomic_uint growths;
};

/* Txns this thread holds open (a resize must wait for none). */
static _Thread_local int txn_depth;
/* A txn step of this thread failed with MDB_MAP_FULL: since the last
 * index_retry_full() (tl_map_full), and since its txn ended (tl_full_new,
 * which asks for growth once). */
static _Thread_local bool tl_map_full, tl_full_new;

/* Translates an LMDB return code to a negative errno, once, here. */
static int mdb_to_errno(int rc)
{
	switch (rc) {
	case MDB_SUCCESS:
		return 0;
	case MDB_NOTFOUND:
		return -ENOENT;
	case MDB_MAP_FULL:
		tl_map_full = tl_full_new = true;
		return -ENOSPC;
	case MDB_READERS_FULL:
		return -EAGAIN;
	default:
		if (rc > 0 && rc < 1000)
			return -rc; /* a system errno */
		return -EIO;
	}
}

void ix_fold(const char *name, char *out, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
}

static int open_dbis(struct hfs_index *ix)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
	if (rc)
		return mdb_to_errno(rc);
	rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &ix->meta);
	if (!rc)
		rc = mdb_dbi_open(txn, "nodes", MDB_CREATE | MDB_INTEGERKEY,
				  &ix->nodes);
	if (!rc)
		rc = mdb_dbi_open(txn, "dirents", MDB_CREATE, &ix->dirents);
	if (!rc)
		rc = mdb_dbi_open(txn, "dirty", MDB_CREATE | MDB_INTEGERKEY,
				  &ix->dirty);
	if (!rc)
		rc = mdb_dbi_open(txn, "journal", MDB_CREATE | MDB_INTEGERKEY,
				  &ix->journal);
	if (!rc)
		rc = mdb_dbi_open(txn, "orphans", MDB_CREATE | MDB_INTEGERKEY,
				  &ix->orphans);
	if (!rc)
		rc = mdb_dbi_open(txn, "chunks", MDB_CREATE | MDB_INTEGERKEY,
				  &ix->chunks);
	/* Added after layout 1 shipped: created in older indexes too. */
	if (!rc)
		rc = mdb_dbi_open(txn, "attempts", MDB_CREATE | MDB_INTEGERKEY,
				  &ix->attempts);
	if (!rc)
		rc = mdb_dbi_open(txn, "tombstones", MDB_CREATE, &ix->tombs);
	if (rc) {
		mdb_txn_abort(txn);
		return mdb_to_errno(rc);
	}
	return mdb_to_errno(mdb_txn_commit(txn));
}

/* Writes the layout version and the root node into a new index, or checks
 * the version of an existing one. */
static int init_layout(struct hfs_index *ix)
{
	struct ixtxn t;
	int rc = ix_begin(ix, true, &t);
	if (rc)
		return rc;
	MDB_val k = {.mv_size = 6, .mv_data = (void *)"layout"}, v;
	rc = mdb_get(t.txn, ix->meta, &k, &v);
	if (rc == MDB_SUCCESS) {
		uint32_t layout = 0;
		if (v.mv_size == sizeof(layout))
			memcpy(&layout, v.mv_data, sizeof(layout));
		ix_abort(&t);
		return layout == INDEX_LAYOUT ? 0 : -EPROTO;
	}
	if (rc != MDB_NOTFOUND) {
		ix_abort(&t);
		return mdb_to_errno(rc);
	}
	uint32_t layout = INDEX_LAYOUT;
	v.mv_size = sizeof(layout);
	v.mv_data = &layout;
	rc = mdb_put(t.txn, ix->meta, &k, &v, 0);
	if (rc) {
		ix_abort(&t);
		return mdb_to_errno(rc);
	}
	uint64_t next = INDEX_ROOT_INO + 1;
	MDB_val nk = {.mv_size = 8, .mv_data = (void *)"next_ino"};
	MDB_val nv = {.mv_size = sizeof(next), .mv_data = &next};
	t.err = mdb_to_errno(mdb_put(t.txn, ix->meta, &nk, &nv, 0));

	struct node root;
	memset(&root, 0, sizeof(root));
	root.ino = INDEX_ROOT_INO;
	root.r.parent = INDEX_ROOT_INO;
	root.r.mode = S_IFDIR | 0755;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	root.r.atime_ns = root.r.mtime_ns = root.r.ctime_ns =
		(int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
	root.r.uid = getuid();
	root.r.gid = getgid();
	root.r.flags = NODE_ON_REMOTE;
	ix_put(&t, &root);
	return ix_commit(&t);
}

int index_open(const char *dir, struct hfs_index **out)
{
	struct hfs_index *ix = calloc(1, sizeof(*ix));
	int rc;
	if (!ix)
		return -ENOMEM;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		goto fail;
	}
	rc = mdb_to_errno(mdb_env_create(&ix->env));
	if (rc)
		goto fail;
	mdb_env_set_maxdbs(ix->env, 16);
	mdb_env_set_maxreaders(ix->env, 512);
	rc = -pthread_rwlock_init(&ix->maplock, NULL);
	if (rc)
		goto fail;
	ix->maplock_init = true;
	size_t map = INDEX_MAP_SIZE;
	const char *env = getenv("HURACANFS_INDEX_MAP_SIZE");
	if (env && *env) {
		/* Tests start small to watch the map grow. */
		unsigned long long v = strtoull(env, NULL, 10);
		map = v < INDEX_MAP_MIN ? INDEX_MAP_MIN : (size_t)v;
	}
	rc = mdb_to_errno(mdb_env_set_mapsize(ix->env, map));
	if (rc)
		goto fail;
	rc = mdb_to_errno(mdb_env_open(
		ix->env, dir, MDB_NOTLS | MDB_NOSYNC | MDB_NORDAHEAD, 0600));
	if (rc)
		goto fail;
	/* An existing index may be larger than asked: LMDB took its size. */
	MDB_envinfo info;
	mdb_env_info(ix->env, &info);
	atomic_store(&ix->mapsize, info.me_mapsize);
	int dead;
	mdb_reader_check(ix->env, &dead);
	rc = open_dbis(ix);
	if (rc)
		goto fail;
	rc = init_layout(ix);
	if (rc)
		goto fail;
	*out = ix;
	return 0;
fail:
	index_close(ix);
	return rc;
}

void index_close(struct hfs_index *ix)
{
	if (!ix)
		return;
	if (ix->env) {
		mdb_env_sync(ix->env, 1);
		mdb_env_close(ix->env);
	}
	if (ix->maplock_init)
		pthread_rwlock_destroy(&ix->maplock);
	free(ix);
}

int index_sync(struct hfs_index *ix)
{
	return mdb_to_errno(mdb_env_sync(ix->env, 1));
}

/*
 * Map growth.
 *
 * Before a txn begins on a thread that holds no other txn, the map is
 * doubled if the data in it passed half of it, or if a txn found it full.
 * Growing waits (a bounded time) for the txns of other threads to end.
 * Everything that reads the map (map_used() too: LMDB's meta pages live
 * in it) holds maplock, so a resize never pulls it from under a reader.
 * A txn that still hits MDB_MAP_FULL fails with -ENOSPC; the map grows
 * before the next txn, and index_retry_full() tells a caller that
 * repeating the operation will find room.
 */
static size_t map_used(struct hfs_index *ix)
{
	MDB_envinfo info;
	MDB_stat st;
	if (mdb_env_info(ix->env, &info) || mdb_env_stat(ix->env, &st))
		return 0;
	return (info.me_last_pgno + 1) * (size_t)st.ms_psize;
}

/* True if the map should grow: the data passed half of it, or a txn found
 * it full. Reads the map: call with maplock held (either way). */
static bool wants_growth(struct hfs_index *ix)
{
	return atomic_load(&ix->grow_wanted) ||
	       map_used(ix) > atomic_load(&ix->mapsize) / 2;
}

/* Grows the map if it should; call holding neither maplock nor a txn. */
static void grow(struct hfs_index *ix)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 2;
	if (pthread_rwlock_timedwrlock(&ix->maplock, &ts) != 0)
		return; /* busy: the next txn tries again */
	if (!wants_growth(ix)) {
		/* Another thread grew it while we waited. */
		pthread_rwlock_unlock(&ix->maplock);
		return;
	}
	size_t used = map_used(ix);
	size_t old = atomic_load(&ix->mapsize), size = old;
	while (used > size / 2 && size < INDEX_MAP_MAX)
		size *= 2;
	if (size == old && size < INDEX_MAP_MAX)
		size *= 2; /* a txn found it full */
	if (size > INDEX_MAP_MAX)
		size = INDEX_MAP_MAX;
	atomic_store(&ix->grow_wanted, false);
	if (size == old) {
		pthread_rwlock_unlock(&ix->maplock);
		return; /* as large as it gets: MDB_MAP_FULL stays ENOSPC */
	}
	int rc = mdb_env_set_mapsize(ix->env, size);
	if (!rc) {
		atomic_store(&ix->mapsize, size);
		atomic_fetch_add(&ix->growths, 1);
	}
	pthread_rwlock_unlock(&ix->maplock);
	if (rc)
		hlog_err("index map could not grow to %zu bytes: %s", size,
			 mdb_strerror(rc));
	else
		hlog_info("index_map_grown bytes=%zu used=%zu", size, used);
}

static void txn_end(struct ixtxn *t)
{
	t->txn = NULL;
	if (tl_full_new)
		atomic_store(&t->ix->grow_wanted, true);
	tl_full_new = false;
	pthread_rwlock_unlock(&t->ix->maplock);
	txn_depth--;
}

bool index_retry_full(struct hfs_index *ix)
{
	if (!tl_map_full)
		return false;
	tl_map_full = false;
	atomic_store(&ix->grow_wanted, true);
	if (txn_depth == 0)
		grow(ix);
	return true;
}

size_t index_map_size(struct hfs_index *ix)
{
	return atomic_load(&ix->mapsize);
}

int ix_begin(struct hfs_index *ix, bool write, struct ixtxn *t)
{
	MDB_txn *txn = NULL;
	pthread_rwlock_rdlock(&ix->maplock);
	if (txn_depth == 0 && (write || atomic_load(&ix->grow_wanted)) &&
	    wants_growth(ix)) {
		/* The outermost txn of this thread: grow the map first. */
		pthread_rwlock_unlock(&ix->maplock);
		grow(ix);
		pthread_rwlock_rdlock(&ix->maplock);
	}
	txn_depth++;
	int rc = mdb_txn_begin(ix->env, NULL, write ? 0 : MDB_RDONLY, &txn);
	if (rc == MDB_READERS_FULL) {
		int dead;
		mdb_reader_check(ix->env, &dead);
		rc = mdb_txn_begin(ix->env, NULL, write ? 0 : MDB_RDONLY, &txn);
	}
	if (rc) {
		pthread_rwlock_unlock(&ix->maplock);
		txn_depth--;
		return mdb_to_errno(rc);
	}
	t->ix = ix;
	t->txn = txn;
	t->err = 0;
	t->write = write;
	return 0;
}

/* True if the index's filesystem has (next to) no room left. */
static bool disk_full(struct hfs_index *ix)
{
	int fd;
	struct statvfs v;
	if (mdb_env_get_fd(ix->env, &fd) || fstatvfs(fd, &v) < 0)
		return false;
	return (uint64_t)v.f_bavail * v.f_frsize < ((uint64_t)1 << 20);
}

int ix_commit(struct ixtxn *t)
{
	int rc;
	if (!t->txn)
		return t->err ? t->err : -EINVAL;
	if (t->err) {
		mdb_txn_abort(t->txn);
		rc = t->err;
	} else {
		rc = mdb_to_errno(mdb_txn_commit(t->txn));
		if (rc == -EIO && disk_full(t->ix))
			rc = -ENOSPC; /* LMDB's word for a short write */
	}
	txn_end(t);
	return rc;
}

void ix_abort(struct ixtxn *t)
{
	if (!t->txn)
		return;
	mdb_txn_abort(t->txn);
	txn_end(t);
}

/* Records @rc as the sticky error of @t if it is the first one, except
 * -ENOENT, which is an answer rather than a failure. */
static int sticky(struct ixtxn *t, int rc)
{
	if (rc && rc != -ENOENT && !t->err)
		t->err = rc;
	return rc;
}

static MDB_val u64_val(uint64_t *v)
{
	MDB_val m = {.mv_size = sizeof(*v), .mv_data = v};
	return m;
}

int ix_get(struct ixtxn *t, uint64_t ino, struct node *out)
{
	if (t->err)
		return t->err;
	MDB_val k = u64_val(&ino), v;
	int rc = mdb_to_errno(mdb_get(t->txn, t->ix->nodes, &k, &v));
	if (rc)
		return sticky(t, rc);
	if (v.mv_size < sizeof(struct node_rec))
		return sticky(t, -EIO);
	memcpy(&out->r, v.mv_data, sizeof(struct node_rec));
	size_t nl = v.mv_size - sizeof(struct node_rec);
	if (nl > BACKEND_NAME_MAX)
		return sticky(t, -EIO);
	memcpy(out->name, (char *)v.mv_data + sizeof(struct node_rec), nl);
	out->name[nl] = '\0';
	out->ino = ino;
	return 0;
}

int ix_put(struct ixtxn *t, const struct node *n)
{
	if (t->err)
		return t->err;
	size_t nl = strlen(n->name);
	char buf[sizeof(struct node_rec) + BACKEND_NAME_MAX + 1];
	struct node_rec r = n->r;
	r.namelen = (uint16_t)nl;
	memcpy(buf, &r, sizeof(r));
	memcpy(buf + sizeof(r), n->name, nl);
	uint64_t ino = n->ino;
	MDB_val k = u64_val(&ino);
	MDB_val v = {.mv_size = sizeof(r) + nl, .mv_data = buf};
	return sticky(t,
		      mdb_to_errno(mdb_put(t->txn, t->ix->nodes, &k, &v, 0)));
}

int ix_del(struct ixtxn *t, uint64_t ino)
{
	if (t->err)
		return t->err;
	MDB_val k = u64_val(&ino);
	int rc = mdb_to_errno(mdb_del(t->txn, t->ix->nodes, &k, NULL));
	if (rc)
		return sticky(t, rc);
	return ix_attempts_del(t, ino);
}

int ix_alloc_ino(struct ixtxn *t, uint64_t *ino)
{
	if (t->err)
		return t->err;
	MDB_val k = {.mv_size = 8, .mv_data = (void *)"next_ino"}, v;
	int rc = mdb_to_errno(mdb_get(t->txn, t->ix->meta, &k, &v));
	if (rc)
		return sticky(t, rc == -ENOENT ? -EIO : rc);
	uint64_t next;
	if (v.mv_size != sizeof(next))
		return sticky(t, -EIO);
	memcpy(&next, v.mv_data, sizeof(next));
	uint64_t after = next + 1;
	MDB_val nv = u64_val(&after);
	rc = mdb_to_errno(mdb_put(t->txn, t->ix->meta, &k, &nv, 0));
	if (rc)
		return sticky(t, rc);
	*ino = next;
	return 0;
}

/* Builds the dirents key: big-endian parent then the folded name. */
static size_t dirent_key(char *buf, uint64_t parent, const char *name)
{
	uint64_t be = htobe64(parent);
	size_t nl = strlen(name);
	memcpy(buf, &be, 8);
	ix_fold(name, buf + 8, nl);
	return 8 + nl;
}

int ix_lookup(struct ixtxn *t, uint64_t parent, const char *name, uint64_t *ino,
	      char *exact)
{
	if (t->err)
		return t->err;
	size_t nl = strlen(name);
	if (nl == 0 || nl > BACKEND_NAME_MAX)
		return -ENOENT;
	char kb[8 + BACKEND_NAME_MAX];
	MDB_val k = {.mv_size = dirent_key(kb, parent, name), .mv_data = kb};
	MDB_val v;
	int rc = mdb_to_errno(mdb_get(t->txn, t->ix->dirents, &k, &v));
	if (rc)
		return sticky(t, rc);
	if (v.mv_size < 8 || v.mv_size > 8 + BACKEND_NAME_MAX)
		return sticky(t, -EIO);
	memcpy(ino, v.mv_data, 8);
	if (exact) {
		memcpy(exact, (char *)v.mv_data + 8, v.mv_size - 8);
		exact[v.mv_size - 8] = '\0';
	}
	return 0;
}

int ix_link(struct ixtxn *t, uint64_t parent, const char *name, uint64_t ino)
{
	if (t->err)
		return t->err;
	size_t nl = strlen(name);
	if (nl == 0 || nl > BACKEND_NAME_MAX)
		return sticky(t, -ENAMETOOLONG);
	char kb[8 + BACKEND_NAME_MAX], vb[8 + BACKEND_NAME_MAX];
	MDB_val k = {.mv_size = dirent_key(kb, parent, name), .mv_data = kb};
	memcpy(vb, &ino, 8);
	memcpy(vb + 8, name, nl);
	MDB_val v = {.mv_size = 8 + nl, .mv_data = vb};
	return sticky(t,
		      mdb_to_errno(mdb_put(t->txn, t->ix->dirents, &k, &v, 0)));
}

int ix_unlink(struct ixtxn *t, uint64_t parent, const char *name)
{
	if (t->err)
		return t->err;
	char kb[8 + BACKEND_NAME_MAX];
	if (strlen(name) > BACKEND_NAME_MAX)
		return -ENOENT;
	MDB_val k = {.mv_size = dirent_key(kb, parent, name), .mv_data = kb};
	return sticky(t,
		      mdb_to_errno(mdb_del(t->txn, t->ix->dirents, &k, NULL)));
}

/* A step of walk() that ends the walk without an error. */
#define WALK_END 0x7fff0001

/*
 * Walks @dbi in key order from the first key (@from NULL) or the first key
 * >= @from, calling @step for each record until it returns non-zero:
 * WALK_END ends the walk with 0, anything else is returned (and a negative
 * errno also becomes @t's sticky error).
 */
static int walk(struct ixtxn *t, MDB_dbi dbi, const MDB_val *from,
		int (*step)(void *ctx, const MDB_val *k, const MDB_val *v),
		void *ctx)
{
	if (t->err)
		return t->err;
	MDB_cursor *c;
	int rc = mdb_to_errno(mdb_cursor_open(t->txn, dbi, &c));
	if (rc)
		return sticky(t, rc);
	MDB_val k = {0}, v;
	if (from)
		k = *from;
	int mrc = mdb_cursor_get(c, &k, &v, from ? MDB_SET_RANGE : MDB_FIRST);
	rc = 0;
	while (mrc == MDB_SUCCESS) {
		rc = step(ctx, &k, &v);
		if (rc)
			break;
		mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	if (!rc && mrc != MDB_SUCCESS && mrc != MDB_NOTFOUND)
		rc = mdb_to_errno(mrc);
	mdb_cursor_close(c);
	if (rc == WALK_END)
		rc = 0;
	if (rc < 0)
		sticky(t, rc);
	return rc;
}

struct child_walk {
	int (*fn)(void *arg, const char *name, uint64_t ino);
	void *arg;
	uint64_t be; /* the parent, big-endian: the key prefix */
};

static int child_step(void *ctx, const MDB_val *k, const MDB_val *v)
{
	struct child_walk *w = ctx;
	if (k->mv_size < 8 || memcmp(k->mv_data, &w->be, 8) != 0)
		return WALK_END; /* past the parent's entries */
	if (v->mv_size < 8 || v->mv_size > 8 + BACKEND_NAME_MAX)
		return -EIO;
	char name[BACKEND_NAME_MAX + 1];
	uint64_t ino;
	memcpy(&ino, v->mv_data, 8);
	memcpy(name, (char *)v->mv_data + 8, v->mv_size - 8);
	name[v->mv_size - 8] = '\0';
	return w->fn(w->arg, name, ino);
}

int ix_foreach_child(struct ixtxn *t, uint64_t parent,
		     int (*fn)(void *arg, const char *name, uint64_t ino),
		     void *arg)
{
	struct child_walk w = {fn, arg, htobe64(parent)};
	MDB_val from = {.mv_size = 8, .mv_data = &w.be};
	return walk(t, t->ix->dirents, &from, child_step, &w);
}

static int stop_at_first(void *arg, const char *name, uint64_t ino)
{
	(void)arg;
	(void)name;
	(void)ino;
	return 1;
}

int ix_has_children(struct ixtxn *t, uint64_t parent)
{
	return ix_foreach_child(t, parent, stop_at_first, NULL);
}

int ix_path(struct ixtxn *t, uint64_t ino, char *buf, size_t len)
{
	if (t->err)
		return t->err;
	/* Collect the components from the leaf up, then reverse. */
	char tmp[8192];
	size_t pos = sizeof(tmp);
	struct node n;
	int depth = 0;
	tmp[--pos] = '\0';
	while (ino != INDEX_ROOT_INO) {
		int rc = ix_get(t, ino, &n);
		if (rc)
			return rc;
		size_t nl = strlen(n.name);
		if (nl + 1 > pos || ++depth > 2048)
			return -ENAMETOOLONG;
		pos -= nl;
		memcpy(tmp + pos, n.name, nl);
		tmp[--pos] = '/';
		ino = n.r.parent;
	}
	size_t total = sizeof(tmp) - pos;
	if (total > len)
		return -ENAMETOOLONG;
	memcpy(buf, tmp + pos, total);
	return 0;
}

static int set_put(struct ixtxn *t, MDB_dbi dbi, uint64_t ino)
{
	if (t->err)
		return t->err;
	MDB_val k = u64_val(&ino), v = {.mv_size = 0, .mv_data = NULL};
	return sticky(t, mdb_to_errno(mdb_put(t->txn, dbi, &k, &v, 0)));
}

static int set_del(struct ixtxn *t, MDB_dbi dbi, uint64_t ino)
{
	if (t->err)
		return t->err;
	MDB_val k = u64_val(&ino);
	int rc = mdb_to_errno(mdb_del(t->txn, dbi, &k, NULL));
	return rc == -ENOENT ? 0 : sticky(t, rc);
}

struct set_walk {
	int (*fn)(void *arg, uint64_t ino);
	void *arg;
};

static int set_step(void *ctx, const MDB_val *k, const MDB_val *v)
{
	struct set_walk *w = ctx;
	uint64_t ino;
	(void)v;
	if (k->mv_size != 8)
		return -EIO;
	memcpy(&ino, k->mv_data, 8);
	return w->fn(w->arg, ino);
}

static int set_foreach(struct ixtxn *t, MDB_dbi dbi,
		       int (*fn)(void *arg, uint64_t ino), void *arg)
{
	struct set_walk w = {fn, arg};
	return walk(t, dbi, NULL, set_step, &w);
}

int ix_dirty_add(struct ixtxn *t, uint64_t ino)
{
	return set_put(t, t->ix->dirty, ino);
}

int ix_dirty_del(struct ixtxn *t, uint64_t ino)
{
	return set_del(t, t->ix->dirty, ino);
}

int ix_foreach_dirty(struct ixtxn *t, int (*fn)(void *arg, uint64_t ino),
		     void *arg)
{
	return set_foreach(t, t->ix->dirty, fn, arg);
}

int ix_orphan_add(struct ixtxn *t, uint64_t ino)
{
	return set_put(t, t->ix->orphans, ino);
}

int ix_orphan_del(struct ixtxn *t, uint64_t ino)
{
	return set_del(t, t->ix->orphans, ino);
}

int ix_foreach_orphan(struct ixtxn *t, int (*fn)(void *arg, uint64_t ino),
		      void *arg)
{
	return set_foreach(t, t->ix->orphans, fn, arg);
}

/* A value per inode in @dbi: copies at most @cap bytes into @buf and
 * returns the stored length (0 if none). */
static int64_t blob_get(struct ixtxn *t, MDB_dbi dbi, uint64_t ino,
			uint8_t *buf, size_t cap)
{
	if (t->err)
		return t->err;
	MDB_val k = u64_val(&ino), v;
	int rc = mdb_to_errno(mdb_get(t->txn, dbi, &k, &v));
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return sticky(t, rc);
	memcpy(buf, v.mv_data, v.mv_size < cap ? v.mv_size : cap);
	return (int64_t)v.mv_size;
}

static int blob_put(struct ixtxn *t, MDB_dbi dbi, uint64_t ino,
		    const uint8_t *buf, size_t len)
{
	if (t->err)
		return t->err;
	MDB_val k = u64_val(&ino);
	MDB_val v = {.mv_size = len, .mv_data = (void *)buf};
	return sticky(t, mdb_to_errno(mdb_put(t->txn, dbi, &k, &v, 0)));
}

int64_t ix_chunks_get(struct ixtxn *t, uint64_t ino, uint8_t *buf, size_t cap)
{
	return blob_get(t, t->ix->chunks, ino, buf, cap);
}

int ix_chunks_put(struct ixtxn *t, uint64_t ino, const uint8_t *buf, size_t len)
{
	return blob_put(t, t->ix->chunks, ino, buf, len);
}

int ix_chunks_del(struct ixtxn *t, uint64_t ino)
{
	return set_del(t, t->ix->chunks, ino);
}

int ix_attempts_get(struct ixtxn *t, uint64_t ino,
		    uint8_t out[IX_ATTEMPTS][CHASH_LEN])
{
	int64_t len = blob_get(t, t->ix->attempts, ino, &out[0][0],
			       IX_ATTEMPTS * CHASH_LEN);
	if (len < 0)
		return (int)len;
	len /= CHASH_LEN;
	return (int)(len < IX_ATTEMPTS ? len : IX_ATTEMPTS);
}

int ix_attempt_add(struct ixtxn *t, uint64_t ino, const uint8_t hash[CHASH_LEN])
{
	uint8_t h[IX_ATTEMPTS][CHASH_LEN];
	int n = ix_attempts_get(t, ino, h);
	if (n < 0)
		return n;
	if (n == IX_ATTEMPTS)
		n--; /* the oldest goes */
	memmove(h[1], h[0], (size_t)n * CHASH_LEN);
	memcpy(h[0], hash, CHASH_LEN);
	return blob_put(t, t->ix->attempts, ino, &h[0][0],
			(size_t)(n + 1) * CHASH_LEN);
}

int ix_attempt_answered(struct ixtxn *t, uint64_t ino,
			const uint8_t hash[CHASH_LEN])
{
	uint8_t h[IX_ATTEMPTS][CHASH_LEN];
	int n = ix_attempts_get(t, ino, h), kept = 0;
	if (n <= 0)
		return n;
	for (int i = 0; i < n; i++)
		if (memcmp(h[i], hash, CHASH_LEN) != 0)
			memmove(h[kept++], h[i], CHASH_LEN);
	if (kept == n)
		return 0;
	if (kept == 0)
		return ix_attempts_del(t, ino);
	return blob_put(t, t->ix->attempts, ino, &h[0][0],
			(size_t)kept * CHASH_LEN);
}

int ix_attempts_del(struct ixtxn *t, uint64_t ino)
{
	return set_del(t, t->ix->attempts, ino);
}

/* Tombstone keys: the content hash of the folded path (paths may be
 * longer than an LMDB key), in @key, described by @k. Values: i64 expiry,
 * then the hashes. */
static int tomb_key(struct ixtxn *t, const char *folded, uint8_t key[CHASH_LEN],
		    MDB_val *k)
{
	if (t->err)
		return t->err;
	int rc = chash_buf(folded, strlen(folded), key);
	if (rc)
		return sticky(t, rc);
	k->mv_size = CHASH_LEN;
	k->mv_data = key;
	return 0;
}

int ix_tomb_put(struct ixtxn *t, const char *folded, int64_t expires,
		const uint8_t h[][CHASH_LEN], int n)
{
	uint8_t key[CHASH_LEN], val[8 + IX_ATTEMPTS * CHASH_LEN];
	MDB_val k;
	if (n < 1 || n > IX_ATTEMPTS)
		return -EINVAL;
	int rc = tomb_key(t, folded, key, &k);
	if (rc)
		return rc;
	memcpy(val, &expires, 8);
	memcpy(val + 8, h, (size_t)n * CHASH_LEN);
	MDB_val v = {.mv_size = 8 + (size_t)n * CHASH_LEN, .mv_data = val};
	return sticky(t,
		      mdb_to_errno(mdb_put(t->txn, t->ix->tombs, &k, &v, 0)));
}

int ix_tomb_get(struct ixtxn *t, const char *folded, int64_t *expires,
		uint8_t h[IX_ATTEMPTS][CHASH_LEN])
{
	uint8_t key[CHASH_LEN];
	MDB_val k, v;
	int rc = tomb_key(t, folded, key, &k);
	if (rc)
		return rc;
	rc = mdb_to_errno(mdb_get(t->txn, t->ix->tombs, &k, &v));
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return sticky(t, rc);
	if (v.mv_size < 8 + CHASH_LEN)
		return sticky(t, -EIO);
	size_t n = (v.mv_size - 8) / CHASH_LEN;
	if (n > IX_ATTEMPTS)
		n = IX_ATTEMPTS;
	memcpy(expires, v.mv_data, 8);
	memcpy(h, (uint8_t *)v.mv_data + 8, n * CHASH_LEN);
	return (int)n;
}

int ix_tomb_del(struct ixtxn *t, const char *folded)
{
	uint8_t key[CHASH_LEN];
	MDB_val k;
	int rc = tomb_key(t, folded, key, &k);
	if (rc)
		return rc;
	rc = mdb_to_errno(mdb_del(t->txn, t->ix->tombs, &k, NULL));
	return rc == -ENOENT ? 0 : sticky(t, rc);
}

/*
 * Journal values: u8 op, u16 length of path, path, then the rest: path2,
 * optionally followed by a NUL byte and the delete record of
 * ix_journal_append_delete(): u8 version (1), u8 length of rev, rev,
 * u8 1 + the 32-byte content hash, or u8 0. Renames never have a record
 * (their path2 holds no NUL); versions that predate the record read the
 * rest as path2 up to the NUL, which is empty for deletes.
 */
#define JOURNAL_REC_V1 1
#define JOURNAL_REC_MAX (2 + BACKEND_REV_MAX + 1 + CHASH_LEN)

static int journal_put(struct ixtxn *t, int op, const char *path,
		       const char *path2, const uint8_t *rec, size_t reclen)
{
	if (t->err)
		return t->err;
	size_t l1 = strlen(path), l2 = path2 ? strlen(path2) : 0;
	if (l1 >= sizeof(((struct journal_entry *)0)->path) ||
	    l2 >= sizeof(((struct journal_entry *)0)->path2))
		return sticky(t, -ENAMETOOLONG);
	MDB_cursor *c;
	int rc = mdb_to_errno(mdb_cursor_open(t->txn, t->ix->journal, &c));
	if (rc)
		return sticky(t, rc);
	MDB_val k, v;
	uint64_t seq = 1;
	if (mdb_cursor_get(c, &k, &v, MDB_LAST) == MDB_SUCCESS &&
	    k.mv_size == 8) {
		memcpy(&seq, k.mv_data, 8);
		seq++;
	}
	mdb_cursor_close(c);
	/* Sequence numbers never repeat, even after the journal drained:
	 * "next_seq" in meta remembers the high-water mark. */
	MDB_val mk = {.mv_size = 8, .mv_data = (void *)"next_seq"}, mv;
	if (mdb_get(t->txn, t->ix->meta, &mk, &mv) == MDB_SUCCESS &&
	    mv.mv_size == 8) {
		uint64_t hw;
		memcpy(&hw, mv.mv_data, 8);
		if (hw > seq)
			seq = hw;
	}
	uint64_t next = seq + 1;
	mv.mv_size = 8;
	mv.mv_data = &next;
	rc = mdb_to_errno(mdb_put(t->txn, t->ix->meta, &mk, &mv, 0));
	if (rc)
		return sticky(t, rc);
	char buf[3 + 8192 + 1 + JOURNAL_REC_MAX];
	uint16_t l1s = (uint16_t)l1;
	buf[0] = (char)op;
	memcpy(buf + 1, &l1s, 2);
	memcpy(buf + 3, path, l1);
	if (l2)
		memcpy(buf + 3 + l1, path2, l2);
	size_t len = 3 + l1 + l2;
	if (reclen) {
		buf[len++] = '\0';
		memcpy(buf + len, rec, reclen);
		len += reclen;
	}
	k = u64_val(&seq);
	v.mv_size = len;
	v.mv_data = buf;
	return sticky(t, mdb_to_errno(mdb_put(t->txn, t->ix->journal, &k, &v,
					      MDB_APPEND)));
}

int ix_journal_append(struct ixtxn *t, int op, const char *path,
		      const char *path2)
{
	return journal_put(t, op, path, path2, NULL, 0);
}

int ix_journal_append_delete(struct ixtxn *t, int op, const char *path,
			     const char *rev, const uint8_t *hash)
{
	uint8_t rec[JOURNAL_REC_MAX];
	size_t rl = rev ? strlen(rev) : 0, len = 0;
	if (rl > BACKEND_REV_MAX)
		return sticky(t, -EINVAL);
	rec[len++] = JOURNAL_REC_V1;
	rec[len++] = (uint8_t)rl;
	if (rl)
		memcpy(rec + len, rev, rl);
	len += rl;
	rec[len++] = hash ? 1 : 0;
	if (hash) {
		memcpy(rec + len, hash, CHASH_LEN);
		len += CHASH_LEN;
	}
	return journal_put(t, op, path, NULL, rec, len);
}

/* Reads the delete record @p (@len bytes) into @out; a record of another
 * version is left alone (the entry replays as an unconditional one). */
static int decode_delete_record(const uint8_t *p, size_t len,
				struct journal_entry *out)
{
	if (len < 1 || p[0] != JOURNAL_REC_V1)
		return 0;
	if (len < 3 || (size_t)p[1] > BACKEND_REV_MAX || len < 3u + p[1])
		return -EIO;
	size_t rl = p[1];
	memcpy(out->rev, p + 2, rl);
	out->rev[rl] = '\0';
	const uint8_t *h = p + 2 + rl;
	if (h[0] == 1) {
		if (len < 3 + rl + CHASH_LEN)
			return -EIO;
		memcpy(out->hash, h + 1, CHASH_LEN);
		out->has_hash = true;
	}
	out->known = true;
	return 0;
}

static int decode_journal(const MDB_val *k, const MDB_val *v,
			  struct journal_entry *out)
{
	uint16_t l1;
	if (k->mv_size != 8 || v->mv_size < 3)
		return -EIO;
	memcpy(&out->seq, k->mv_data, 8);
	const char *p = v->mv_data;
	out->op = (unsigned char)p[0];
	memcpy(&l1, p + 1, 2);
	if (3 + (size_t)l1 > v->mv_size || l1 >= sizeof(out->path))
		return -EIO;
	size_t rest = v->mv_size - 3 - l1;
	const char *p2 = p + 3 + l1;
	const char *nul = memchr(p2, '\0', rest);
	size_t l2 = nul ? (size_t)(nul - p2) : rest;
	if (l2 >= sizeof(out->path2))
		return -EIO;
	memcpy(out->path, p + 3, l1);
	out->path[l1] = '\0';
	memcpy(out->path2, p2, l2);
	out->path2[l2] = '\0';
	out->known = out->has_hash = false;
	out->rev[0] = '\0';
	if (!nul)
		return 0;
	return decode_delete_record((const uint8_t *)nul + 1, rest - l2 - 1,
				    out);
}

int ix_journal_first(struct ixtxn *t, struct journal_entry *out)
{
	if (t->err)
		return t->err;
	MDB_cursor *c;
	int rc = mdb_to_errno(mdb_cursor_open(t->txn, t->ix->journal, &c));
	if (rc)
		return sticky(t, rc);
	MDB_val k, v;
	rc = mdb_to_errno(mdb_cursor_get(c, &k, &v, MDB_FIRST));
	if (!rc)
		rc = decode_journal(&k, &v, out);
	mdb_cursor_close(c);
	return sticky(t, rc);
}

struct journal_walk {
	int (*fn)(void *arg, const struct journal_entry *e);
	void *arg;
	struct journal_entry *e;
};

static int journal_step(void *ctx, const MDB_val *k, const MDB_val *v)
{
	struct journal_walk *w = ctx;
	int rc = decode_journal(k, v, w->e);
	return rc ? rc : w->fn(w->arg, w->e);
}

int ix_foreach_journal(struct ixtxn *t,
		       int (*fn)(void *arg, const struct journal_entry *e),
		       void *arg)
{
	if (t->err)
		return t->err;
	struct journal_walk w = {fn, arg, malloc(sizeof(*w.e))};
	if (!w.e)
		return sticky(t, -ENOMEM);
	int rc = walk(t, t->ix->journal, NULL, journal_step, &w);
	free(w.e);
	return rc;
}

int ix_journal_del(struct ixtxn *t, uint64_t seq)
{
	return set_del(t, t->ix->journal, seq);
}

int64_t ix_journal_count(struct ixtxn *t)
{
	if (t->err)
		return t->err;
	MDB_stat st;
	int rc = mdb_to_errno(mdb_stat(t->txn, t->ix->journal, &st));
	if (rc)
		return sticky(t, rc);
	return (int64_t)st.ms_entries;
}

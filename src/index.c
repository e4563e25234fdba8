/*
 * The LMDB index (see index.h for the layout).
 *
 * Why these choices:
 * - One environment, all DBIs opened in one txn at startup and reused.
 * - MDB_NOTLS so libfuse's worker pool may come and go freely and a thread
 *   may hold a read txn while it opens another.
 * - Sync points (see "Sync points" below): commits are not synced one by
 *   one (MDB_NOSYNC: a commit costs microseconds, not an fdatasync); the
 *   index is made durable at sync points, and after a power cut it goes
 *   back to the last one, which nothing can have damaged.
 * - The map is reserved large (address space only; the file grows as it
 *   is used) and grown before it fills (see "Map growth" below).
 */
#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <lmdb.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "hfs/fold.h"
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
		tombs, doomed, rsize, proven;
	/*
	 * Map growth. mdb_env_set_mapsize() may only run while no txn of
	 * this process is open, so every txn holds @maplock for reading and
	 * a resize takes it for writing. @mapsize is the current size;
	 * @grow_wanted is set when a txn found the map full.
	 */
	pthread_rwlock_t maplock;
	bool maplock_init;
	/* Sync points: @pin is a read txn on the last synced state, so LMDB
	 * never writes over its pages; @safe_fd holds its meta pages. All
	 * under sync_lock. */
	pthread_mutex_t sync_lock;
	bool sync_lock_init;
	MDB_txn *pin;
	int safe_fd;
	uint64_t safe_seq;
	unsigned int psize;
	atomic_uint commits; /* since the last sync point */
	bool rolled_back; /* index_open went back to the last sync point */
	atomic_size_t mapsize;
	atomic_bool grow_wanted;
	atomic_uint growths;
	char dir[PATH_MAX];
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
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
	case MDB_INVALID:
	case MDB_VERSION_MISMATCH:
		return -EUCLEAN; /* a damaged index (see index_check) */
	default:
		if (rc > 0 && rc < 1000)
			return -rc; /* a system errno */
		return -EIO;
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
	if (!rc)
		rc = mdb_dbi_open(txn, "doomed", MDB_CREATE | MDB_INTEGERKEY,
				  &ix->doomed);
	if (!rc)
		rc = mdb_dbi_open(txn, "rsize", MDB_CREATE | MDB_INTEGERKEY,
				  &ix->rsize);
	if (!rc)
		rc = mdb_dbi_open(txn, "proven", MDB_CREATE | MDB_INTEGERKEY,
				  &ix->proven);
	if (rc) {
		mdb_txn_abort(txn);
		return mdb_to_errno(rc);
	}
	return mdb_to_errno(mdb_txn_commit(txn));
}

static int migrate_v1(struct hfs_index *ix);

/* Writes the layout version and the root node into a new index, or checks
 * the version of an existing one (migrating layout 1). */
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
		if (layout == 1)
			return migrate_v1(ix);
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

/*
 * The sync mode: MDB_NOSYNC with sync points. For bench/index_sync.sh
 * only, HURACANFS_INDEX_SYNC=full syncs data and meta on every commit and
 * =nometasync syncs the data pages of every commit (both safe too, and
 * slower).
 */
static unsigned int sync_mode(void)
{
	const char *m = getenv("HURACANFS_INDEX_SYNC");
	if (m && strcmp(m, "full") == 0)
		return 0;
	if (m && strcmp(m, "nometasync") == 0)
		return MDB_NOMETASYNC;
	return MDB_NOSYNC; /* with sync points */
}

/*
 * A data file shorter than the pages its meta page names would give
 * SIGBUS on the first read of a missing page: a damaged index, said so.
 */
static int check_file_size(struct hfs_index *ix)
{
	MDB_envinfo info;
	MDB_stat st;
	int fd;
	struct stat fst;
	if (mdb_env_info(ix->env, &info) || mdb_env_stat(ix->env, &st) ||
	    mdb_env_get_fd(ix->env, &fd) || fstat(fd, &fst) < 0)
		return -EIO;
	uint64_t need = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
	return (uint64_t)fst.st_size < need ? -EUCLEAN : 0;
}

/*
 * Sync points.
 *
 * Commits are not synced (MDB_NOSYNC). kill -9 of the daemon loses none
 * of them (they are in the kernel's page cache). A power cut may lose any
 * unsynced write, in any order: LMDB's meta page may reach the disk
 * before the pages it names, and pages of the last durable state may have
 * been reused. So:
 *
 *   - index_sync() is a sync point: with writers held off (a write txn
 *     open), the data file is synced, its two meta pages are copied to
 *     index/meta.safe (two slots with a sequence number and a checksum,
 *     fdatasync'd), and a read txn pins that state: LMDB never reuses a
 *     page a live reader may see, so until the next sync point no write
 *     touches a page of the pinned state.
 *   - index/instance records the machine's boot and the mount of the
 *     cache filesystem. If the daemon stopped uncleanly and either
 *     changed (a reboot, a crash of the machine, a cache filesystem
 *     mounted again), unsynced writes may be lost: index_open writes the
 *     saved meta pages back before LMDB opens the file, so the index is
 *     the last sync point, whole. After kill -9 the newest state is whole
 *     and is kept.
 *
 * Sync points are taken by every fsync(2), flush --wait, before content
 * files are deleted (hfs_reap), before a clean file's first change, every
 * second by the housekeeping thread, every SYNC_COMMITS commits (which
 * also bounds how far the pinned state holds the file's growth), and at
 * unmount.
 */
#define SYNC_COMMITS 1000
#define SAFE_MAGIC "HFSMETA1"

struct safe_hdr {
	char magic[8];
	uint64_t seq;
	uint32_t psize;
	uint32_t pad;
	uint8_t sum[32]; /* SHA-256 of the two pages */
};

static off_t safe_slot_off(unsigned int psize, uint64_t seq)
{
	return (off_t)(seq % 2) * (off_t)(4096 + 2 * (size_t)psize);
}

/* Writes the meta pages of the data file into the next slot of
 * meta.safe, durably. Writers held off by the caller. */
static int save_meta(struct hfs_index *ix)
{
	int fd;
	if (mdb_env_get_fd(ix->env, &fd))
		return -EIO;
	size_t len = 2 * (size_t)ix->psize;
	uint8_t *buf = malloc(4096 + len);
	if (!buf)
		return -ENOMEM;
	memset(buf, 0, 4096);
	int rc = 0;
	if (pread(fd, buf + 4096, len, 0) != (ssize_t)len) {
		rc = -EIO;
		goto out;
	}
	struct safe_hdr h;
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, SAFE_MAGIC, 8);
	h.seq = ++ix->safe_seq;
	h.psize = ix->psize;
	SHA256(buf + 4096, len, h.sum);
	memcpy(buf, &h, sizeof(h));
	off_t off = safe_slot_off(ix->psize, h.seq);
	errno = 0;
	if (pwrite(ix->safe_fd, buf, 4096 + len, off) !=
		    (ssize_t)(4096 + len) ||
	    fdatasync(ix->safe_fd) < 0)
		rc = errno ? -errno : -EIO;
out:
	free(buf);
	return rc;
}

/* The sync point itself; maplock held by the caller (either way), no txn
 * of this thread open but the pin. */
static int sync_point_locked(struct hfs_index *ix)
{
	MDB_txn *w = NULL, *r = NULL;
	pthread_mutex_lock(&ix->sync_lock);
	int rc = mdb_to_errno(mdb_txn_begin(ix->env, NULL, 0, &w));
	if (!rc)
		rc = mdb_to_errno(mdb_env_sync(ix->env, 1));
	if (!rc)
		rc = save_meta(ix);
	if (!rc)
		rc = mdb_to_errno(mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &r));
	if (w)
		mdb_txn_abort(w);
	if (!rc) {
		if (ix->pin)
			mdb_txn_abort(ix->pin);
		ix->pin = r;
		atomic_store(&ix->commits, 0);
	}
	pthread_mutex_unlock(&ix->sync_lock);
	return rc;
}

int index_sync(struct hfs_index *ix)
{
	pthread_rwlock_rdlock(&ix->maplock);
	int rc = sync_point_locked(ix);
	pthread_rwlock_unlock(&ix->maplock);
	return rc;
}

/* Reads the newest valid slot of meta.safe (@fd) into *@pages (two pages
 * of *@psize bytes, malloc'd) and its sequence number. */
static int read_safe(int fd, uint8_t **pages, unsigned int *psize,
		     uint64_t *seq)
{
	struct safe_hdr best;
	uint8_t *keep = NULL;
	memset(&best, 0, sizeof(best));
	struct safe_hdr first;
	if (pread(fd, &first, sizeof(first), 0) != (ssize_t)sizeof(first))
		memset(&first, 0, sizeof(first));
	/* Slot 1 sits after slot 0, whose size the page size sets: try the
	 * page size either slot may name. */
	for (int slot = 0; slot < 2; slot++) {
		unsigned int ps = first.psize >= 512 && first.psize <= 65536
					  ? first.psize
					  : 4096;
		off_t off = (off_t)slot * (off_t)(4096 + 2 * (size_t)ps);
		struct safe_hdr h;
		if (pread(fd, &h, sizeof(h), off) != (ssize_t)sizeof(h) ||
		    memcmp(h.magic, SAFE_MAGIC, 8) != 0 || h.psize != ps ||
		    h.seq <= best.seq)
			continue;
		size_t len = 2 * (size_t)h.psize;
		uint8_t *buf = malloc(len), sum[32];
		if (!buf) {
			free(keep);
			return -ENOMEM;
		}
		if (pread(fd, buf, len, off + 4096) != (ssize_t)len) {
			free(buf);
			continue;
		}
		SHA256(buf, len, sum);
		if (memcmp(sum, h.sum, 32) != 0) {
			free(buf);
			continue; /* torn by a cut while it was written */
		}
		free(keep);
		keep = buf;
		best = h;
	}
	if (!keep)
		return -ENOENT;
	*pages = keep;
	*psize = best.psize;
	*seq = best.seq;
	return 0;
}

/* "BOOT_ID MOUNT_ID": this boot and the mount holding @dir. */
static void instance_id(const char *dir, char *out, size_t len)
{
	char boot[64] = "";
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
	if (f) {
		if (!fgets(boot, sizeof(boot), f))
			boot[0] = '\0';
		fclose(f);
	}
	boot[strcspn(boot, "\n")] = '\0';
	/* Linux 6.8 and later give mounts a unique id (STATX_MNT_ID_UNIQUE,
	 * 0x4000); the plain one is reused by the next mount. Without it a
	 * crash of the machine still shows as a new boot. */
	struct statx stx;
	unsigned long long mnt = 0;
	const unsigned int unique = 0x4000;
	if (statx(AT_FDCWD, dir, 0, unique, &stx) == 0 &&
	    (stx.stx_mask & unique))
		mnt = stx.stx_mnt_id;
	else if (statx(AT_FDCWD, dir, 0, STATX_MNT_ID, &stx) == 0 &&
		 (stx.stx_mask & STATX_MNT_ID))
		mnt = stx.stx_mnt_id;
	snprintf(out, len, "%s %llu\n", boot, mnt);
}

/*
 * Before LMDB opens @dir: if the last daemon did not stop cleanly and the
 * machine or the cache filesystem has changed since it started, puts the
 * meta pages of the last sync point back (see "Sync points"). Sets
 * *@rolled_back.
 */
static int roll_back_if_cut(const char *dir, bool *rolled_back)
{
	char path[PATH_MAX], data[PATH_MAX], now[160], was[160] = "";
	*rolled_back = false;
	snprintf(path, sizeof(path), "%s/instance", dir);
	snprintf(data, sizeof(data), "%s/data.mdb", dir);
	instance_id(dir, now, sizeof(now));
	FILE *f = fopen(path, "r");
	if (f) {
		if (!fgets(was, sizeof(was), f))
			was[0] = '\0';
		fclose(f);
	}
	if (access(data, F_OK) < 0 || strcmp(was, now) == 0)
		return 0; /* new, or the same boot and mount: page cache whole
			   */
	char stopped[PATH_MAX];
	snprintf(stopped, sizeof(stopped), "%s/stopped", dir);
	if (access(stopped, F_OK) == 0)
		return 0; /* a clean stop ended on a sync point */
	snprintf(path, sizeof(path), "%s/meta.safe", dir);
	int sfd = open(path, O_RDONLY | O_CLOEXEC);
	if (sfd < 0)
		return 0; /* an index of before sync points */
	uint8_t *pages = NULL;
	unsigned int psize = 0;
	uint64_t seq = 0;
	int rc = read_safe(sfd, &pages, &psize, &seq);
	close(sfd);
	if (rc)
		return 0; /* nothing saved yet: what LMDB has is all there is */
	int dfd = open(data, O_WRONLY | O_CLOEXEC);
	if (dfd < 0) {
		free(pages);
		return -errno;
	}
	size_t len = 2 * (size_t)psize;
	rc = 0;
	errno = 0;
	if (pwrite(dfd, pages, len, 0) != (ssize_t)len || fdatasync(dfd) < 0)
		rc = errno ? -errno : -EIO;
	close(dfd);
	free(pages);
	if (!rc)
		*rolled_back = true;
	return rc;
}

static int sync_dir(const char *dir);

/* Records this boot and mount, durably, and forgets a clean stop. */
static int write_instance(const char *dir)
{
	char path[PATH_MAX], tmp[PATH_MAX], id[160];
	instance_id(dir, id, sizeof(id));
	snprintf(path, sizeof(path), "%s/instance", dir);
	snprintf(tmp, sizeof(tmp), "%s/instance.tmp", dir);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	size_t n = strlen(id);
	int rc = 0;
	errno = 0;
	if (write(fd, id, n) != (ssize_t)n || fsync(fd) < 0)
		rc = errno ? -errno : -EIO;
	close(fd);
	if (!rc && rename(tmp, path) < 0)
		rc = -errno;
	char stopped[PATH_MAX];
	snprintf(stopped, sizeof(stopped), "%s/stopped", dir);
	if (!rc && unlink(stopped) < 0 && errno != ENOENT)
		rc = -errno;
	if (!rc)
		rc = sync_dir(dir);
	return rc;
}

static int sync_dir(const char *dir)
{
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	int rc = fsync(dfd) < 0 ? -errno : 0;
	close(dfd);
	return rc;
}

bool index_rolled_back(struct hfs_index *ix)
{
	return ix->rolled_back;
}

int index_prepare(const char *dir, bool *rolled_back)
{
	return roll_back_if_cut(dir, rolled_back);
}

int index_open(const char *dir, struct hfs_index **out)
{
	struct hfs_index *ix = calloc(1, sizeof(*ix));
	int rc;
	if (!ix)
		return -ENOMEM;
	ix->safe_fd = -1;
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
	rc = -pthread_mutex_init(&ix->sync_lock, NULL);
	if (rc)
		goto fail;
	ix->sync_lock_init = true;
	char safe[PATH_MAX];
	snprintf(safe, sizeof(safe), "%s/meta.safe", dir);
	ix->safe_fd = open(safe, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (ix->safe_fd < 0) {
		rc = -errno;
		goto fail;
	}
	uint8_t *old_pages = NULL;
	unsigned int old_psize = 0;
	if (read_safe(ix->safe_fd, &old_pages, &old_psize, &ix->safe_seq) == 0)
		free(old_pages); /* numbering goes on after the newest slot */
	rc = mdb_to_errno(mdb_env_open(
		ix->env, dir, MDB_NOTLS | sync_mode() | MDB_NORDAHEAD, 0600));
	if (rc)
		goto fail;
	rc = check_file_size(ix);
	if (rc)
		goto fail;
	MDB_stat pst;
	if (mdb_env_stat(ix->env, &pst) == 0)
		ix->psize = pst.ms_psize;
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
	if (!rc)
		rc = index_sync(ix);
	if (!rc)
		rc = write_instance(dir);
	if (rc)
		goto fail;
	snprintf(ix->dir, sizeof(ix->dir), "%s", dir);
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
		if (ix->pin)
			index_sync(ix);
		if (ix->pin)
			mdb_txn_abort(ix->pin);
		mdb_env_close(ix->env);
	}
	if (ix->safe_fd >= 0)
		close(ix->safe_fd);
	if (ix->maplock_init)
		pthread_rwlock_destroy(&ix->maplock);
	if (ix->sync_lock_init)
		pthread_mutex_destroy(&ix->sync_lock);
	free(ix);
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
	/* No txn may be open across a resize, the pin neither: nothing
	 * commits meanwhile (writers wait for maplock), so the pinned state
	 * stays whole, and a sync point pins the state again after. */
	pthread_mutex_lock(&ix->sync_lock);
	if (ix->pin)
		mdb_txn_abort(ix->pin);
	ix->pin = NULL;
	pthread_mutex_unlock(&ix->sync_lock);
	int rc = mdb_env_set_mapsize(ix->env, size);
	if (!rc) {
		atomic_store(&ix->mapsize, size);
		atomic_fetch_add(&ix->growths, 1);
	}
	int src = sync_point_locked(ix);
	if (src)
		hlog_err("index sync point after growth failed: %s",
			 strerror(-src));
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

static bool disk_full(struct hfs_index *ix);

int ix_begin(struct hfs_index *ix, bool write, struct ixtxn *t)
{
	MDB_txn *txn = NULL;
	/* On a full disk LMDB can only reuse pages; those freed since the
	 * last sync point are held by its pin: a sync point frees them. */
	if (write && txn_depth == 0 && atomic_load(&ix->commits) > 0 &&
	    disk_full(ix))
		index_sync(ix);
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
	struct hfs_index *ix = t->ix;
	bool wrote = t->write && rc == 0;
	txn_end(t);
	if (wrote && atomic_fetch_add(&ix->commits, 1) + 1 >= SYNC_COMMITS &&
	    txn_depth == 0)
		index_sync(ix);
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
	rc = mdb_to_errno(mdb_del(t->txn, t->ix->rsize, &k, NULL));
	if (rc && rc != -ENOENT)
		return sticky(t, rc);
	rc = mdb_to_errno(mdb_del(t->txn, t->ix->proven, &k, NULL));
	if (rc && rc != -ENOENT)
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

/*
 * Directory entries (layout 2).
 *
 * The key of an entry is its parent (big-endian) and its folded name
 * (fold.h). A folded name longer than DKEY_FOLD_MAX bytes (possible only
 * for names full of characters that fold longer) is cut there and
 * followed by 0x00 'h' and the hash of the whole folded name, so that
 * every key fits LMDB's 511 bytes; names hold no NUL, so such a key
 * equals no other. The value is the inode and the exact name.
 *
 * Collisions. Two entries of one directory whose names fold alike exist
 * only where the remote holds both (a listing) or an index of layout 1
 * held both (migration). The first is the primary, under the key above;
 * each other is an alias, under the primary's key followed by 0x00 'a'
 * and 16 bytes of the hash of its exact name. Invariant: whenever an
 * entry of a folded name exists, its primary does (unlinking a primary
 * promotes an alias), so a lookup that misses the primary is done. A
 * lookup returns the entry of exactly that name if there is one, else
 * the primary.
 */
#define DKEY_FOLD_MAX 400
#define DKEY_ALIAS_HASH 16
#define DKEY_MAX (8 + DKEY_FOLD_MAX + 2 + CHASH_LEN + 2 + DKEY_ALIAS_HASH)
#define DVAL_MAX (8 + BACKEND_NAME_MAX)

/* Builds the primary key of @name in @parent into @buf (DKEY_MAX bytes).
 * Returns its length or -errno. */
static int dirent_key(uint8_t *buf, uint64_t parent, const char *name)
{
	char f[FOLD_NAME_MAX + 1];
	uint64_t be = htobe64(parent);
	int n = fold_name(name, strlen(name), f, sizeof(f));
	if (n < 0)
		return n;
	memcpy(buf, &be, 8);
	if (n <= DKEY_FOLD_MAX) {
		memcpy(buf + 8, f, (size_t)n);
		return 8 + n;
	}
	memcpy(buf + 8, f, DKEY_FOLD_MAX);
	buf[8 + DKEY_FOLD_MAX] = 0;
	buf[8 + DKEY_FOLD_MAX + 1] = 'h';
	int rc = chash_buf(f, (size_t)n, buf + 8 + DKEY_FOLD_MAX + 2);
	if (rc)
		return rc;
	return 8 + DKEY_FOLD_MAX + 2 + CHASH_LEN;
}

/* Appends the alias suffix of exact name @name to the primary key of
 * @klen bytes in @buf. Returns the alias key's length or -errno. */
static int alias_key(uint8_t *buf, int klen, const char *name)
{
	uint8_t h[CHASH_LEN];
	int rc = chash_buf(name, strlen(name), h);
	if (rc)
		return rc;
	buf[klen] = 0;
	buf[klen + 1] = 'a';
	memcpy(buf + klen + 2, h, DKEY_ALIAS_HASH);
	return klen + 2 + DKEY_ALIAS_HASH;
}

/* Copies the inode and the name (BACKEND_NAME_MAX + 1 bytes, may be
 * NULL) out of dirents value @v. */
static int dirent_val(const MDB_val *v, uint64_t *ino, char *name)
{
	if (v->mv_size < 8 || v->mv_size > DVAL_MAX)
		return -EIO;
	memcpy(ino, v->mv_data, 8);
	if (name) {
		memcpy(name, (char *)v->mv_data + 8, v->mv_size - 8);
		name[v->mv_size - 8] = '\0';
	}
	return 0;
}

/* Reads the dirents entry under key @kb (@klen bytes): 0, -ENOENT or
 * another -errno (not sticky). */
static int dirent_get(struct ixtxn *t, const uint8_t *kb, int klen,
		      uint64_t *ino, char *name)
{
	MDB_val k = {.mv_size = (size_t)klen, .mv_data = (void *)kb}, v;
	int rc = mdb_to_errno(mdb_get(t->txn, t->ix->dirents, &k, &v));
	return rc ? rc : dirent_val(&v, ino, name);
}

static int dirent_put(struct ixtxn *t, const uint8_t *kb, int klen,
		      const char *name, uint64_t ino)
{
	uint8_t vb[DVAL_MAX];
	size_t nl = strlen(name);
	memcpy(vb, &ino, 8);
	memcpy(vb + 8, name, nl);
	MDB_val k = {.mv_size = (size_t)klen, .mv_data = (void *)kb};
	MDB_val v = {.mv_size = 8 + nl, .mv_data = vb};
	return mdb_to_errno(mdb_put(t->txn, t->ix->dirents, &k, &v, 0));
}

static int dirent_del(struct ixtxn *t, const uint8_t *kb, int klen)
{
	MDB_val k = {.mv_size = (size_t)klen, .mv_data = (void *)kb};
	return mdb_to_errno(mdb_del(t->txn, t->ix->dirents, &k, NULL));
}

/* The alias of exact name @name under primary key @kb (@klen bytes):
 * its key in @ab and length in *@alen; 0 if it exists, -ENOENT if not. */
static int alias_find(struct ixtxn *t, const uint8_t *kb, int klen,
		      const char *name, uint8_t *ab, int *alen, uint64_t *ino,
		      char *exact)
{
	char got[BACKEND_NAME_MAX + 1];
	memcpy(ab, kb, (size_t)klen);
	int n = alias_key(ab, klen, name);
	if (n < 0)
		return n;
	*alen = n;
	int rc = dirent_get(t, ab, n, ino, got);
	if (rc)
		return rc;
	if (strcmp(got, name) != 0)
		return -ENOENT; /* another name with the same hash prefix */
	if (exact)
		strcpy(exact, got);
	return 0;
}

/* After the primary under @kb (@klen bytes) was deleted: moves its first
 * alias, if any, to the primary key. */
static int alias_promote(struct ixtxn *t, const uint8_t *kb, int klen)
{
	uint8_t from[DKEY_MAX], ab[DKEY_MAX];
	char name[BACKEND_NAME_MAX + 1];
	uint64_t ino;
	MDB_cursor *c;
	int rc = mdb_to_errno(mdb_cursor_open(t->txn, t->ix->dirents, &c));
	if (rc)
		return rc;
	memcpy(from, kb, (size_t)klen);
	from[klen] = 0;
	from[klen + 1] = 'a';
	MDB_val k = {.mv_size = (size_t)klen + 2, .mv_data = from}, v;
	rc = mdb_to_errno(mdb_cursor_get(c, &k, &v, MDB_SET_RANGE));
	int alen = 0;
	if (!rc) {
		if (k.mv_size != (size_t)klen + 2 + DKEY_ALIAS_HASH ||
		    memcmp(k.mv_data, from, (size_t)klen + 2) != 0)
			rc = -ENOENT; /* past this name's aliases */
		else
			rc = dirent_val(&v, &ino, name);
		if (!rc) {
			alen = (int)k.mv_size;
			memcpy(ab, k.mv_data, k.mv_size);
		}
	}
	mdb_cursor_close(c);
	if (rc)
		return rc == -ENOENT ? 0 : rc;
	rc = dirent_del(t, ab, alen);
	if (!rc)
		rc = dirent_put(t, kb, klen, name, ino);
	return rc;
}

int ix_lookup(struct ixtxn *t, uint64_t parent, const char *name, uint64_t *ino,
	      char *exact)
{
	if (t->err)
		return t->err;
	size_t nl = strlen(name);
	if (nl == 0 || nl > BACKEND_NAME_MAX)
		return -ENOENT;
	uint8_t kb[DKEY_MAX], ab[DKEY_MAX];
	char pname[BACKEND_NAME_MAX + 1];
	uint64_t pino;
	int alen;
	int klen = dirent_key(kb, parent, name);
	if (klen < 0)
		return sticky(t, klen);
	int rc = dirent_get(t, kb, klen, &pino, pname);
	if (rc)
		return sticky(t, rc);
	if (strcmp(pname, name) != 0) {
		/* Folds like the primary: an alias may have that very name. */
		rc = alias_find(t, kb, klen, name, ab, &alen, ino, exact);
		if (rc != -ENOENT)
			return sticky(t, rc);
	}
	*ino = pino;
	if (exact)
		strcpy(exact, pname);
	return 0;
}

int ix_link(struct ixtxn *t, uint64_t parent, const char *name, uint64_t ino)
{
	if (t->err)
		return t->err;
	size_t nl = strlen(name);
	if (nl == 0 || nl > BACKEND_NAME_MAX)
		return sticky(t, -ENAMETOOLONG);
	uint8_t kb[DKEY_MAX];
	char pname[BACKEND_NAME_MAX + 1];
	uint64_t pino;
	int klen = dirent_key(kb, parent, name);
	if (klen < 0)
		return sticky(t, klen);
	int rc = dirent_get(t, kb, klen, &pino, pname);
	if (rc == -ENOENT ||
	    (rc == 0 && (pino == ino || strcmp(pname, name) == 0)))
		return sticky(t, dirent_put(t, kb, klen, name, ino));
	if (rc)
		return sticky(t, rc);
	/* Another entry folds alike: this one becomes an alias. */
	int alen = alias_key(kb, klen, name);
	if (alen < 0)
		return sticky(t, alen);
	return sticky(t, dirent_put(t, kb, alen, name, ino));
}

int ix_unlink(struct ixtxn *t, uint64_t parent, const char *name)
{
	if (t->err)
		return t->err;
	if (strlen(name) > BACKEND_NAME_MAX)
		return -ENOENT;
	uint8_t kb[DKEY_MAX], ab[DKEY_MAX];
	char pname[BACKEND_NAME_MAX + 1];
	uint64_t pino, aino;
	int alen;
	int klen = dirent_key(kb, parent, name);
	if (klen < 0)
		return sticky(t, klen);
	int rc = dirent_get(t, kb, klen, &pino, pname);
	if (rc)
		return sticky(t, rc);
	if (strcmp(pname, name) != 0) {
		rc = alias_find(t, kb, klen, name, ab, &alen, &aino, NULL);
		if (rc == 0)
			return sticky(t, dirent_del(t, ab, alen));
		if (rc != -ENOENT)
			return sticky(t, rc);
		/* No entry of exactly that name: the one it folds like. */
	}
	rc = dirent_del(t, kb, klen);
	if (!rc)
		rc = alias_promote(t, kb, klen);
	return sticky(t, rc);
}

/*
 * Migration from layout 1, whose dirents keys had ASCII letters lowered
 * and nothing else. A name of ASCII bytes has the same key in both
 * layouts and stays; every other entry is taken out and linked again
 * under its new key, in the order of the old keys. Where two entries of a
 * folder now fold alike, both stay (ix_link keeps the second as an
 * alias, reachable by its exact name and listed) and a warning names
 * them: the remote can hold only one of them. All of it, and the new
 * layout number, in one txn. Tombstone keys of non-ASCII paths (hashes of
 * the old folding) are not rekeyed: they cannot be, and they expire
 * within the hour; meanwhile a late upload to such a path shows as a
 * file instead of being deleted again.
 */
struct old_dirent {
	uint64_t parent, ino;
	uint8_t key[8 + BACKEND_NAME_MAX];
	size_t klen;
	char name[BACKEND_NAME_MAX + 1];
};

static bool bytes_ascii(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] >= 0x80)
			return false;
	return true;
}

/* Collects the layout-1 entries of non-ASCII names into *@out. */
static int old_non_ascii(struct ixtxn *t, struct old_dirent **out, size_t *nout)
{
	struct old_dirent *v = NULL;
	size_t n = 0, cap = 0;
	MDB_cursor *c;
	MDB_val k, val;
	int rc = mdb_to_errno(mdb_cursor_open(t->txn, t->ix->dirents, &c));
	if (rc)
		return rc;
	int mrc = mdb_cursor_get(c, &k, &val, MDB_FIRST);
	for (; mrc == MDB_SUCCESS && !rc;
	     mrc = mdb_cursor_get(c, &k, &val, MDB_NEXT)) {
		if (k.mv_size <= 8 || k.mv_size > 8 + BACKEND_NAME_MAX) {
			rc = -EIO;
			break;
		}
		if (bytes_ascii((uint8_t *)k.mv_data + 8, k.mv_size - 8))
			continue;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 64;
			struct old_dirent *nv = realloc(v, nc * sizeof(*nv));
			if (!nv) {
				rc = -ENOMEM;
				break;
			}
			v = nv;
			cap = nc;
		}
		struct old_dirent *d = &v[n];
		uint64_t be;
		memcpy(&be, k.mv_data, 8);
		d->parent = be64toh(be);
		d->klen = k.mv_size;
		memcpy(d->key, k.mv_data, k.mv_size);
		rc = dirent_val(&val, &d->ino, d->name);
		if (!rc && !d->name[0])
			rc = -EIO;
		n++;
	}
	if (!rc && mrc != MDB_SUCCESS && mrc != MDB_NOTFOUND)
		rc = mdb_to_errno(mrc);
	mdb_cursor_close(c);
	if (rc) {
		free(v);
		return rc;
	}
	*out = v;
	*nout = n;
	return 0;
}

static int migrate_v1(struct hfs_index *ix)
{
	struct old_dirent *v = NULL;
	size_t n = 0, collisions = 0;
	struct ixtxn t;
	int rc = ix_begin(ix, true, &t);
	if (rc)
		return rc;
	rc = old_non_ascii(&t, &v, &n);
	for (size_t i = 0; i < n && !rc; i++)
		rc = dirent_del(&t, v[i].key, (int)v[i].klen);
	if (rc)
		t.err = rc;
	for (size_t i = 0; i < n && !t.err; i++) {
		char other[BACKEND_NAME_MAX + 1], dir[4096];
		uint64_t ino;
		if (ix_lookup(&t, v[i].parent, v[i].name, &ino, other) == 0 &&
		    ino != v[i].ino) {
			collisions++;
			if (ix_path(&t, v[i].parent, dir, sizeof(dir)) != 0)
				snprintf(dir, sizeof(dir),
					 "(folder inode %llu)",
					 (unsigned long long)v[i].parent);
			hlog_warn("index_name_collision folder=\"%s\" "
				  "name=\"%s\" other=\"%s\": the names are "
				  "one name for Dropbox; both are kept, rename "
				  "one of them",
				  dir[0] ? dir : "/", v[i].name, other);
		}
		ix_link(&t, v[i].parent, v[i].name, v[i].ino);
	}
	uint32_t layout = INDEX_LAYOUT;
	MDB_val k = {.mv_size = 6, .mv_data = (void *)"layout"};
	MDB_val val = {.mv_size = sizeof(layout), .mv_data = &layout};
	if (!t.err)
		t.err = mdb_to_errno(mdb_put(t.txn, ix->meta, &k, &val, 0));
	rc = ix_commit(&t);
	free(v);
	if (!rc)
		hlog_info("index_migrated layout=%d rekeyed=%zu collisions=%zu",
			  INDEX_LAYOUT, n, collisions);
	return rc;
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

int ix_rsize_put(struct ixtxn *t, uint64_t ino, uint64_t size)
{
	return blob_put(t, t->ix->rsize, ino, (const uint8_t *)&size,
			sizeof(size));
}

int ix_proven_put(struct ixtxn *t, uint64_t ino, uint64_t bytes)
{
	if (bytes == 0)
		return set_del(t, t->ix->proven, ino);
	return blob_put(t, t->ix->proven, ino, (const uint8_t *)&bytes,
			sizeof(bytes));
}

uint64_t ix_proven_get(struct ixtxn *t, uint64_t ino)
{
	uint64_t v = 0;
	int64_t n = blob_get(t, t->ix->proven, ino, (uint8_t *)&v, sizeof(v));
	return n == sizeof(v) ? v : 0;
}

int ix_rsize_get(struct ixtxn *t, uint64_t ino, uint64_t *size)
{
	uint64_t v;
	int64_t n = blob_get(t, t->ix->rsize, ino, (uint8_t *)&v, sizeof(v));
	if (n < 0)
		return (int)n;
	if (n != sizeof(v))
		return -ENOENT;
	*size = v;
	return 0;
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

int ix_doom_add(struct ixtxn *t, uint64_t ino)
{
	return set_put(t, t->ix->doomed, ino);
}

int ix_doom_del(struct ixtxn *t, uint64_t ino)
{
	return set_del(t, t->ix->doomed, ino);
}

int ix_foreach_doomed(struct ixtxn *t, int (*fn)(void *arg, uint64_t ino),
		      void *arg)
{
	return set_foreach(t, t->ix->doomed, fn, arg);
}

/* ---- Clean and unclean stops ---- */

#define RUNNING_KEY "running"

int index_mark_running(struct hfs_index *ix, bool *unclean)
{
	struct ixtxn t;
	int rc = ix_begin(ix, true, &t);
	if (rc)
		return rc;
	MDB_val k = {.mv_size = strlen(RUNNING_KEY),
		     .mv_data = (void *)RUNNING_KEY},
		v;
	rc = mdb_get(t.txn, ix->meta, &k, &v);
	if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
		ix_abort(&t);
		return mdb_to_errno(rc);
	}
	bool was = rc == MDB_SUCCESS;
	uint64_t pid = (uint64_t)getpid();
	v.mv_size = sizeof(pid);
	v.mv_data = &pid;
	sticky(&t, mdb_to_errno(mdb_put(t.txn, ix->meta, &k, &v, 0)));
	rc = ix_commit(&t);
	if (!rc)
		rc = index_sync(ix);
	if (!rc)
		*unclean = was;
	return rc;
}

int index_mark_stopped(struct hfs_index *ix)
{
	struct ixtxn t;
	int rc = index_sync(ix);
	if (rc)
		return rc;
	rc = ix_begin(ix, true, &t);
	if (rc)
		return rc;
	MDB_val k = {.mv_size = strlen(RUNNING_KEY),
		     .mv_data = (void *)RUNNING_KEY};
	rc = mdb_del(t.txn, ix->meta, &k, NULL);
	if (rc && rc != MDB_NOTFOUND)
		sticky(&t, mdb_to_errno(rc));
	rc = ix_commit(&t);
	if (!rc)
		rc = index_sync(ix);
	if (rc)
		return rc;
	/* The state is the last sync point: nothing to go back to. */
	char stopped[PATH_MAX];
	snprintf(stopped, sizeof(stopped), "%s/stopped", ix->dir);
	int fd = open(stopped, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	rc = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	return rc ? rc : sync_dir(ix->dir);
}

/* ---- The consistency check ---- */

/* Writes a reason to @fd (the child's pipe) and returns 1. */
static int bad(int fd, const char *fmt, unsigned long long a)
{
	char msg[256];
	int n = snprintf(msg, sizeof(msg), fmt, a);
	if (n > 0 && write(fd, msg, (size_t)n) < 0)
		return 1;
	return 1;
}

/* Every key of set DBI @name is an inode number. */
static int check_set(MDB_txn *txn, const char *name, int fd)
{
	MDB_dbi dbi;
	MDB_cursor *c;
	MDB_val k, v;
	int rc = mdb_dbi_open(txn, name, MDB_INTEGERKEY, &dbi);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc || mdb_cursor_open(txn, dbi, &c))
		return bad(fd, "cannot open table %s", 0);
	int bad_rc = 0;
	while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0)
		if (k.mv_size != 8)
			bad_rc = bad(fd, "a key of %zu bytes in a set table",
				     k.mv_size);
	mdb_cursor_close(c);
	if (rc != MDB_NOTFOUND)
		return bad(fd, "a set table cannot be read (LMDB error %d)",
			   (unsigned long long)rc);
	return bad_rc;
}

/* The child's work: 0 if every table reads back and holds together. */
static int check_env(const char *dir, int fd)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi nodes, dirents, meta;
	MDB_cursor *c;
	MDB_val k, v;
	if (mdb_env_create(&env))
		return bad(fd, "out of memory", 0);
	mdb_env_set_maxdbs(env, 16);
	int rc = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOTLS | MDB_NOLOCK,
			      0600);
	if (rc)
		return bad(fd, "LMDB cannot open it (error %d)",
			   (unsigned long long)rc);
	MDB_envinfo info;
	MDB_stat est;
	struct stat fst;
	int dfd;
	if (mdb_env_info(env, &info) || mdb_env_stat(env, &est) ||
	    mdb_env_get_fd(env, &dfd) || fstat(dfd, &fst) < 0 ||
	    (uint64_t)fst.st_size <
		    ((uint64_t)info.me_last_pgno + 1) * est.ms_psize)
		return bad(fd, "the data file is shorter than its pages", 0);
	if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn))
		return bad(fd, "no read transaction", 0);
	if (mdb_dbi_open(txn, "meta", 0, &meta) ||
	    mdb_dbi_open(txn, "nodes", MDB_INTEGERKEY, &nodes) ||
	    mdb_dbi_open(txn, "dirents", 0, &dirents))
		return bad(fd, "a table is missing", 0);
	k.mv_size = 6;
	k.mv_data = (void *)"layout";
	if (mdb_get(txn, meta, &k, &v) || v.mv_size != 4)
		return bad(fd, "no layout version", 0);
	/* Nodes: well-formed records whose parent exists. */
	if (mdb_cursor_open(txn, nodes, &c))
		return bad(fd, "cannot read the nodes", 0);
	size_t count = 0;
	bool root = false;
	while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0) {
		struct node_rec r;
		uint64_t ino;
		if (k.mv_size != 8 || v.mv_size < sizeof(r))
			return bad(fd, "a node record of %zu bytes", v.mv_size);
		memcpy(&ino, k.mv_data, 8);
		memcpy(&r, v.mv_data, sizeof(r));
		if (v.mv_size != sizeof(r) + r.namelen ||
		    r.namelen > BACKEND_NAME_MAX)
			return bad(fd, "node %llu has a bad name length",
				   (unsigned long long)ino);
		if (ino == INDEX_ROOT_INO)
			root = true;
		if (r.parent && r.parent != ino) {
			MDB_val pk = {.mv_size = 8, .mv_data = &r.parent}, pv;
			if (mdb_get(txn, nodes, &pk, &pv))
				return bad(fd, "node %llu has no parent",
					   (unsigned long long)ino);
		}
		count++;
	}
	mdb_cursor_close(c);
	if (rc != MDB_NOTFOUND)
		return bad(fd, "the nodes cannot be read (LMDB error %d)",
			   (unsigned long long)rc);
	if (!root)
		return bad(fd, "the root node is missing", 0);
	/* Directory entries: each names an existing node. */
	if (mdb_cursor_open(txn, dirents, &c))
		return bad(fd, "cannot read the directory entries", 0);
	while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0) {
		if (k.mv_size < 8 || v.mv_size < 8)
			return bad(fd, "a directory entry of %zu bytes",
				   v.mv_size);
		MDB_val nk = {.mv_size = 8, .mv_data = v.mv_data}, nv;
		if (mdb_get(txn, nodes, &nk, &nv))
			return bad(
				fd,
				"a directory entry names missing "
				"node %llu",
				(unsigned long long)(*(uint64_t *)v.mv_data));
	}
	mdb_cursor_close(c);
	if (rc != MDB_NOTFOUND)
		return bad(fd, "the directory entries cannot be read (%d)",
			   (unsigned long long)rc);
	if (check_set(txn, "dirty", fd) || check_set(txn, "orphans", fd) ||
	    check_set(txn, "doomed", fd) || check_set(txn, "journal", fd))
		return 1;
	(void)count;
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return 0;
}

int index_check(const char *dir, char *why, size_t len)
{
	int p[2];
	char data[PATH_MAX];
	snprintf(data, sizeof(data), "%s/data.mdb", dir);
	if (access(data, F_OK) < 0)
		return 0; /* a new index */
	if (pipe(p) < 0)
		return -errno;
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(p[0]);
		close(p[1]);
		return -e;
	}
	if (pid == 0) {
		/* A damaged file may crash LMDB (an assertion, SIGBUS): in a
		 * child, that is an answer. No core dump: it would hold the
		 * index's pages. */
		struct rlimit no_core = {0, 0};
		setrlimit(RLIMIT_CORE, &no_core);
		/* Die of the signal, quietly (a sanitizer would report). */
		signal(SIGBUS, SIG_DFL);
		signal(SIGSEGV, SIG_DFL);
		signal(SIGABRT, SIG_DFL);
		close(p[0]);
		_exit(check_env(dir, p[1]));
	}
	close(p[1]);
	char msg[256];
	ssize_t n = 0, r;
	while ((size_t)n < sizeof(msg) - 1 &&
	       (r = read(p[0], msg + n, sizeof(msg) - 1 - (size_t)n)) > 0)
		n += r;
	msg[n > 0 ? n : 0] = '\0';
	close(p[0]);
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFSIGNALED(status))
		snprintf(why, len, "reading it crashed LMDB (signal %d)%s%s",
			 WTERMSIG(status), msg[0] ? ": " : "", msg);
	else
		snprintf(why, len, "%s", msg[0] ? msg : "it cannot be read");
	return -EUCLEAN;
}

struct node_walk {
	int (*fn)(void *arg, const struct node *n);
	void *arg;
};

static int node_step(void *ctx, const MDB_val *k, const MDB_val *v)
{
	struct node_walk *w = ctx;
	struct node n;
	if (k->mv_size != 8 || v->mv_size < sizeof(n.r))
		return -EUCLEAN;
	memcpy(&n.ino, k->mv_data, 8);
	memcpy(&n.r, v->mv_data, sizeof(n.r));
	size_t nl = v->mv_size - sizeof(n.r);
	if (nl > BACKEND_NAME_MAX)
		return -EUCLEAN;
	memcpy(n.name, (const char *)v->mv_data + sizeof(n.r), nl);
	n.name[nl] = '\0';
	return w->fn(w->arg, &n);
}

int ix_foreach_node(struct ixtxn *t, int (*fn)(void *arg, const struct node *n),
		    void *arg)
{
	struct node_walk w = {fn, arg};
	return walk(t, t->ix->nodes, NULL, node_step, &w);
}

int ix_journal_restore(struct ixtxn *t, uint64_t seq, const void *val,
		       size_t len)
{
	if (t->err)
		return t->err;
	MDB_val k = u64_val(&seq), v = {.mv_size = len, .mv_data = (void *)val};
	int rc = sticky(t, mdb_to_errno(mdb_put(t->txn, t->ix->journal, &k, &v,
						MDB_NOOVERWRITE)));
	if (rc)
		return rc;
	uint64_t next = seq + 1, hw = 0;
	MDB_val mk = {.mv_size = 8, .mv_data = (void *)"next_seq"}, mv;
	if (mdb_get(t->txn, t->ix->meta, &mk, &mv) == MDB_SUCCESS &&
	    mv.mv_size == 8)
		memcpy(&hw, mv.mv_data, 8);
	if (hw >= next)
		return 0;
	mv.mv_size = 8;
	mv.mv_data = &next;
	return sticky(t,
		      mdb_to_errno(mdb_put(t->txn, t->ix->meta, &mk, &mv, 0)));
}

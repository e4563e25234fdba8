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
#include "index_i.h"

/* Txns this thread holds open (a resize must wait for none). */
static _Thread_local int txn_depth;
/* A txn step of this thread failed with MDB_MAP_FULL: since the last
 * index_retry_full() (tl_map_full), and since its txn ended (tl_full_new,
 * which asks for growth once). */
static _Thread_local bool tl_map_full, tl_full_new;

/* Translates an LMDB return code to a negative errno, once, here. */
int ix_mdb_to_errno(int rc)
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
		return ix_mdb_to_errno(rc);
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
	if (!rc)
		rc = mdb_dbi_open(txn, "links", MDB_CREATE | MDB_INTEGERKEY,
				  &ix->links);
	if (!rc)
		rc = mdb_dbi_open(txn, "hardlinks", MDB_CREATE, &ix->hardlinks);
	if (rc) {
		mdb_txn_abort(txn);
		return ix_mdb_to_errno(rc);
	}
	return ix_mdb_to_errno(mdb_txn_commit(txn));
}

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
			return ix_migrate_v1(ix);
		return layout == INDEX_LAYOUT ? 0 : -EPROTO;
	}
	if (rc != MDB_NOTFOUND) {
		ix_abort(&t);
		return ix_mdb_to_errno(rc);
	}
	uint32_t layout = INDEX_LAYOUT;
	v.mv_size = sizeof(layout);
	v.mv_data = &layout;
	rc = mdb_put(t.txn, ix->meta, &k, &v, 0);
	if (rc) {
		ix_abort(&t);
		return ix_mdb_to_errno(rc);
	}
	uint64_t next = INDEX_ROOT_INO + 1;
	MDB_val nk = {.mv_size = 8, .mv_data = (void *)"next_ino"};
	MDB_val nv = {.mv_size = sizeof(next), .mv_data = &next};
	t.err = ix_mdb_to_errno(mdb_put(t.txn, ix->meta, &nk, &nv, 0));

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
 * second by the housekeeping thread, every SYNC_COMMITS commits, and at
 * unmount.
 *
 * SYNC_COMMITS bounds the data file and the daemon's memory: a commit
 * writes its pages anew (copy on write; about 7 pages for a created
 * file's txn), and the pages freed since the pin are not reused until the
 * next sync point, so the file holds about two intervals of them, and
 * reading them through the map makes them resident. At 1000 commits a
 * burst of creates grew a 2,000-file index to 58 MiB (99% free pages),
 * all of it in the daemon's RSS; at 200, 12 MiB, for two fdatasyncs per
 * 200 commits (issue 12 item 3; bench/peers.py).
 */
#define SYNC_COMMITS 200
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
	int rc = ix_mdb_to_errno(mdb_txn_begin(ix->env, NULL, 0, &w));
	if (!rc)
		rc = ix_mdb_to_errno(mdb_env_sync(ix->env, 1));
	if (!rc)
		rc = save_meta(ix);
	if (!rc)
		rc = ix_mdb_to_errno(
			mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &r));
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
		rc = ix_sync_dir(dir);
	return rc;
}

int ix_sync_dir(const char *dir)
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

bool index_exists(const char *dir)
{
	char data[PATH_MAX];
	snprintf(data, sizeof(data), "%s/data.mdb", dir);
	return access(data, F_OK) == 0;
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
	rc = ix_mdb_to_errno(mdb_env_create(&ix->env));
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
	rc = ix_mdb_to_errno(mdb_env_set_mapsize(ix->env, map));
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
	rc = ix_mdb_to_errno(mdb_env_open(
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
		rc = ix_count_subdirs(ix);
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
		return ix_mdb_to_errno(rc);
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
		rc = ix_mdb_to_errno(mdb_txn_commit(t->txn));
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

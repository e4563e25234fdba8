/*
 * Private to the index (index.c: the environment, sync points, txns;
 * index_data.c: what the DBIs hold; index_check.c: stops and the
 * consistency check).
 */
#ifndef HFS_INDEX_I_H
#define HFS_INDEX_I_H

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
		tombs, doomed, rsize, proven, links, hardlinks;
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

/*
 * Shared by the index's files: the LMDB return code as -errno (once, here:
 * it also notes a full map), a txn's sticky error, a u64 key, a cursor walk
 * of @dbi from @from, fsync of a directory, the layout 1 -> 2 migration.
 */
int ix_mdb_to_errno(int rc);
int ix_sticky(struct ixtxn *t, int rc);
int ix_sync_dir(const char *dir);
MDB_val ix_u64_val(uint64_t *v);
int ix_walk(struct ixtxn *t, MDB_dbi dbi, const MDB_val *from,
	    int (*step)(void *ctx, const MDB_val *k, const MDB_val *v),
	    void *ctx);
int ix_migrate_v1(struct hfs_index *ix);

#endif

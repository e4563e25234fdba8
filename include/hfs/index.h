/*
 * The index: every piece of metadata huracanfs keeps, in one LMDB
 * environment under cache_dir/index. File bytes live in content files (see
 * cache.h); everything else is here.
 *
 * Named databases (all opened once, in index_open):
 *   meta     "layout" -> u32 layout version, "next_ino" -> u64
 *   nodes    ino (u64, native) -> struct node_rec + name bytes
 *   dirents  parent ino (u64, big-endian) + folded name -> ino (u64) + name
 *            The folded name is fold_name()'s (fold.h: Unicode lowercase,
 *            NFC), so two names that Dropbox takes for one share a key and
 *            the filesystem refuses the second (EEXIST). Where the remote
 *            or an older index holds both anyway, the second is kept as an
 *            alias under a longer key (index.c, "Directory entries").
 *   dirty    ino -> nothing: the files whose local bytes must be uploaded
 *   journal  seq (u64) -> op + paths: namespace changes (mkdir, unlink,
 *            rmdir, rename) to replay on the remote, in order; deletes
 *            also say which revision of the file was deleted
 *   orphans  ino -> nothing: unlinked while open; purged at mount
 *   chunks   ino -> bitmap: which blocks of a partially cached file (fetch.c)
 *            are in its content file (bit i = bytes [i*4MiB, (i+1)*4MiB))
 *   attempts ino -> content hashes of uploads sent but not confirmed
 *   tombstones  hash of a folded remote path -> expiry + content hashes:
 *            where an unconfirmed upload of a file since deleted or
 *            renamed may still land
 *   rsize    ino -> u64: the size of the remote revision named by the
 *            node's rev (recovery goes back to it)
 *   proven   ino -> u64: the size of a dirty file's last version synced
 *            to disk (an fsync, an upload), lowered by a truncate below
 *            it: after a power cut the file goes back to that length
 *   hardlinks  ino (big-endian) + parent (big-endian) + name -> nothing:
 *            the names of a file beyond its own (hard links)
 *   links    ino -> bytes: the target of a symbolic link (absent for a
 *            link only listed remotely whose target was never read)
 *   doomed   ino -> nothing: content files no longer needed by the index,
 *            deleted only once the txn that dropped them is durable (a
 *            power cut must not leave the index naming a deleted file)
 *
 * Transactions: struct ixtxn wraps an MDB_txn with a sticky error (after a
 * failed step every further step is a no-op returning the same error, and
 * commit becomes abort). Read txns are cheap; write txns are serialized by
 * LMDB and must stay short: gather data first, then begin, put, commit.
 * Never hold a write txn across network or long disk I/O.
 *
 * The environment is opened with MDB_NOTLS (reader slots belong to txn
 * objects, not threads) and MDB_NOSYNC, with sync points (index.c, "Sync
 * points"): a commit survives kill -9 of the daemon at once, and a crash
 * of the machine once index_sync() has run (every fsync(2), flush --wait,
 * every second, every 1000 commits); after a crash of the machine the
 * index is the last sync point, whole, never a damaged one. The ordering
 * rules for the bytes the index describes are in durable.c. The map is
 * reserved at 64 GiB of address space (the file grows only as it is used: about
 * 300 bytes a node) and doubled before a txn begins whenever the data passed
 * half of it (HURACANFS_INDEX_MAP_SIZE sets a smaller start, for tests). A txn
 * that still finds the map full fails with -ENOSPC and the map grows before the
 * next one: index_retry_full() says when repeating the operation will succeed.
 * A commit cut short by a full disk (LMDB reports a short write as EIO)
 * is -ENOSPC too.
 *
 * Errors: negative errno. MDB_NOTFOUND is -ENOENT, MDB_MAP_FULL -ENOSPC,
 * MDB_CORRUPTED, MDB_PAGE_NOTFOUND, MDB_INVALID and a data file shorter
 * than its pages -EUCLEAN (damaged: `huracanfs repair`),
 * MDB_READERS_FULL -EAGAIN, a system error its own errno, anything else
 * -EIO.
 */
#ifndef HFS_INDEX_H
#define HFS_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hfs/backend_api.h"
#include "hfs/hash.h"

/* Layout 2: dirents keyed by Unicode folding (layout 1: ASCII letters
 * lowered). index_open migrates an index of layout 1. */
#define INDEX_LAYOUT 2
#define INDEX_ROOT_INO 1

/* Node flags. */
enum {
	NODE_DIRTY = 1u << 0, /* local bytes newer than the remote's */
	NODE_CACHED = 1u << 1, /* content file holds every byte */
	NODE_PARTIAL = 1u << 2, /* content file holds some bytes */
	NODE_ON_REMOTE = 1u << 3, /* exists remotely (listed or uploaded) */
	NODE_HAS_HASH = 1u << 4, /* remote_hash is valid */
	NODE_LISTED = 1u << 5, /* dir: remote listing merged */
	NODE_UPLOADING = 1u << 6, /* an upload of it is in flight */
	NODE_LOST = 1u << 7, /* dirty bytes found missing at mount */
	/* Its bytes are being replaced (truncated and written again, or
	 * created where a file was just unlinked) and not yet synced: after
	 * an unclean stop they are no version anyone finished writing. */
	NODE_REWRITING = 1u << 8,
	/* A symbolic link whose remote form is the file NAME.rclonelink
	 * holding its target (rclone's convention): ix_path() gives that
	 * remote path. */
	NODE_RCLONELINK = 1u << 9,
	/* Kept only here, never uploaded nor journaled: FIFOs, sockets,
	 * device nodes, and symbolic links without a remote form. */
	NODE_LOCAL = 1u << 10,
	/* Its last fsync'd version is kept aside until its new bytes are
	 * synced (durable.c, rules 2 and 6): in the content's .prev file
	 * (ASIDE_PREV), or as undo records of patches (ASIDE_UNDO). Set in
	 * the txn that begins keeping it, cleared in the one that ends it:
	 * a .prev or .undo file without its flag is stale, never used. */
	NODE_ASIDE_PREV = 1u << 11,
	NODE_ASIDE_UNDO = 1u << 12,
};
#define NODE_ASIDE (NODE_ASIDE_PREV | NODE_ASIDE_UNDO)

/* The remote name of a symbolic link NAME is NAME HFS_LINK_SUFFIX. */
#define HFS_LINK_SUFFIX ".rclonelink"
#define HFS_LINK_SUFFIX_LEN 11
/* The longest symbolic link target kept (as PATH_MAX). */
#define HFS_LINK_MAX 4095

/* The fixed part of a node record, as stored. */
struct node_rec {
	uint64_t parent;
	uint64_t size; /* a device node: its device number (st_rdev) */
	int64_t atime_ns, mtime_ns, ctime_ns;
	int64_t dirty_since; /* seconds since the epoch, 0 when clean */
	int64_t listed_at; /* dir: when the listing was merged (ns) */
	int64_t last_upload; /* seconds; 0 = never uploaded */
	uint64_t gen; /* bumped on clean->dirty and on close/fsync */
	uint32_t mode; /* type and permission bits */
	uint32_t uid, gid;
	uint32_t flags; /* NODE_* */
	uint8_t cat; /* enum hfs_cat */
	uint8_t pad[3];
	uint8_t remote_hash[CHASH_LEN];
	char rev[BACKEND_REV_MAX + 1];
	char pad2[7];
	uint16_t namelen;
	/* Names beyond the first (hard links; the hardlinks DBI lists
	 * them): st_nlink is 1 + xlinks. The first name is the node's own
	 * (parent, name), the one ix_path gives. */
	uint16_t xlinks;
	/* A directory: how many of its entries are directories (its link
	 * count is 2 more), kept by ix_link and ix_unlink. */
	uint32_t nsubdirs;
};

/* A node as callers see it: the record plus its name. */
struct node {
	uint64_t ino;
	struct node_rec r;
	char name[BACKEND_NAME_MAX + 1];
};

enum journal_op {
	JOP_MKDIR = 1,
	JOP_UNLINK = 2, /* a file */
	JOP_RMDIR = 3,
	JOP_RENAME = 4,
};

/* The longest remote path (bytes): what the backends take (Dropbox's
 * DBX_PATH_MAX); the journal holds no change of a path beyond it. */
#define IX_REMOTE_PATH_MAX 4095

struct journal_entry {
	uint64_t seq;
	int op;
	char path[4096]; /* remote path */
	char path2[4096]; /* rename target */
	/*
	 * Unlink entries: what this mount knew of the remote file when it
	 * was deleted, so that the replay deletes that version and no other
	 * (a file changed meanwhile on another machine stays). @known is
	 * false for entries written before this was recorded (replayed as
	 * before: whatever is at the path goes). @rev is "" if no revision
	 * was known; @has_hash says whether @hash holds its content hash.
	 */
	bool known;
	char rev[BACKEND_REV_MAX + 1];
	bool has_hash;
	uint8_t hash[CHASH_LEN];
};

struct hfs_index;

struct ixtxn {
	struct hfs_index *ix;
	void *txn; /* MDB_txn */
	int err; /* sticky */
	bool write;
};

/*
 * Opens (creating if needed) the index in directory @dir. Returns 0 and
 * *@out (owned by the caller, released by index_close), -EEXIST-style
 * errors never happen here (the single-daemon lock is the caller's).
 * An index of layout 1 is migrated to INDEX_LAYOUT in one txn (its
 * directory entries rekeyed; two entries of a folder whose names now fold
 * alike both stay, one as an alias, and a warning names them). An index
 * of any other layout version gives -EPROTO.
 */
int index_open(const char *dir, struct hfs_index **out);
void index_close(struct hfs_index *ix);
/* A sync point: every committed txn durable, and the state kept whole
 * until the next one (see index.c). */
int index_sync(struct hfs_index *ix);
/*
 * Call before index_check and index_open: if the last daemon stopped
 * uncleanly and the machine rebooted or the cache filesystem was mounted
 * again since (so unsynced writes may be lost), puts the index back to its
 * last sync point. *@rolled_back says whether it did.
 */
int index_prepare(const char *dir, bool *rolled_back);
/* True if an index lives in directory @dir. */
bool index_exists(const char *dir);
/* True if index_prepare rolled this index back (set by hfs_create). */
bool index_rolled_back(struct hfs_index *ix);
/*
 * Checks the index in directory @dir in a child process (a damaged file
 * can crash LMDB): every table readable, node records well formed, each
 * node's parent and each entry's node present. 0 if sound (or absent),
 * -EUCLEAN with the reason in @why if damaged, other -errno if the check
 * could not run. Call before index_open.
 */
int index_check(const char *dir, char *why, size_t len);
/* Records that a daemon runs on the index (durably); *@unclean tells
 * whether the last one stopped without index_mark_stopped(). */
int index_mark_running(struct hfs_index *ix, bool *unclean);
int index_mark_stopped(struct hfs_index *ix);
/* After an operation failed with -ENOSPC: true if a txn of this thread
 * found the map full (it has been grown since; do the operation again). */
bool index_retry_full(struct hfs_index *ix);
/* The current map size, bytes. */
size_t index_map_size(struct hfs_index *ix);

int ix_begin(struct hfs_index *ix, bool write, struct ixtxn *t);
/* Commits (or aborts after an error). Returns the sticky error or the
 * commit's. */
int ix_commit(struct ixtxn *t);
void ix_abort(struct ixtxn *t);

/* Nodes. */
int ix_get(struct ixtxn *t, uint64_t ino, struct node *out);
int ix_put(struct ixtxn *t, const struct node *n);
int ix_del(struct ixtxn *t, uint64_t ino);
int ix_alloc_ino(struct ixtxn *t, uint64_t *ino);
/* Calls @fn for every node in inode order, until it returns non-zero. */
int ix_foreach_node(struct ixtxn *t, int (*fn)(void *arg, const struct node *n),
		    void *arg);

/*
 * Directory entries. ix_lookup finds the entry named exactly @name, else
 * the one whose folded name equals @name's; *@ino and @exact
 * (BACKEND_NAME_MAX + 1 bytes, may be NULL) get the stored entry, whose
 * exact name may differ from @name (in case, or in normalization).
 * ix_link adds (or replaces) the entry @name -> @ino: if another entry of
 * another inode already folds alike, both stay (the new one as an alias,
 * reachable by its exact name and by ix_foreach_child); callers that must
 * refuse such a name look it up first. ix_unlink removes the entry named
 * exactly @name, else the one it folds like; -ENOENT if none.
 */
int ix_lookup(struct ixtxn *t, uint64_t parent, const char *name, uint64_t *ino,
	      char *exact);
/* ix_link and ix_unlink keep the parent's nsubdirs: the node of @ino must
 * be stored before it is linked, and still be when it is unlinked. */
int ix_link(struct ixtxn *t, uint64_t parent, const char *name, uint64_t ino);
int ix_unlink(struct ixtxn *t, uint64_t parent, const char *name);
/* Calls @fn for each entry of @parent in key order, until it returns
 * non-zero (which is returned). */
int ix_foreach_child(struct ixtxn *t, uint64_t parent,
		     int (*fn)(void *arg, const char *name, uint64_t ino),
		     void *arg);
/* True (1) if @parent has entries, 0 if not, or -errno. */
int ix_has_children(struct ixtxn *t, uint64_t parent);

/* The remote path of @ino ("" for the root, "/a/b" otherwise; a node
 * with NODE_RCLONELINK ends in HFS_LINK_SUFFIX). @buf holds @len bytes;
 * -ENAMETOOLONG if it does not fit. ix_path_dup() gives it malloc'd,
 * whatever its length. */
int ix_path(struct ixtxn *t, uint64_t ino, char *buf, size_t len);
int ix_path_dup(struct ixtxn *t, uint64_t ino, char **out);

/* Symbolic link targets (the links DBI); ix_del() drops one too.
 * ix_target_get copies at most @cap bytes and returns the stored length,
 * -ENOENT if none. */
int ix_target_put(struct ixtxn *t, uint64_t ino, const char *target,
		  size_t len);
int64_t ix_target_get(struct ixtxn *t, uint64_t ino, char *buf, size_t cap);
int ix_target_del(struct ixtxn *t, uint64_t ino);
/* Calls @fn for every link with a target kept, in inode order. */
int ix_foreach_target(struct ixtxn *t, int (*fn)(void *arg, uint64_t ino),
		      void *arg);

/* Hard links: the names of @ino beyond its own (its node's parent and
 * name). ix_del() drops them too. ix_foreach_hlink() stops when @fn
 * returns non-zero (returned). */
#define IX_XLINKS_MAX 65000
int ix_hlink_add(struct ixtxn *t, uint64_t ino, uint64_t parent,
		 const char *name);
int ix_hlink_del(struct ixtxn *t, uint64_t ino, uint64_t parent,
		 const char *name);
int ix_foreach_hlink(struct ixtxn *t, uint64_t ino,
		     int (*fn)(void *arg, uint64_t parent, const char *name),
		     void *arg);

/* Sets every directory's nsubdirs from its entries, once per index (a
 * meta key records it): indexes written before it was kept. */
int ix_count_subdirs(struct hfs_index *ix);

/* The dirty set. */
int ix_dirty_add(struct ixtxn *t, uint64_t ino);
int ix_dirty_del(struct ixtxn *t, uint64_t ino);
int ix_foreach_dirty(struct ixtxn *t, int (*fn)(void *arg, uint64_t ino),
		     void *arg);

/* Orphans: unlinked nodes still open. */
int ix_orphan_add(struct ixtxn *t, uint64_t ino);
int ix_orphan_del(struct ixtxn *t, uint64_t ino);
int ix_foreach_orphan(struct ixtxn *t, int (*fn)(void *arg, uint64_t ino),
		      void *arg);

/* Chunk bitmaps of partially cached files. ix_chunks_get copies at most
 * @cap bytes into @buf and returns the stored length (0 if none). */
int64_t ix_chunks_get(struct ixtxn *t, uint64_t ino, uint8_t *buf, size_t cap);
int ix_chunks_put(struct ixtxn *t, uint64_t ino, const uint8_t *buf,
		  size_t len);
int ix_chunks_del(struct ixtxn *t, uint64_t ino);

/* Uploads sent and not confirmed (a lost reply, a crash meanwhile, a
 * request the server may still be holding): the content hashes of the
 * last IX_ATTEMPTS, newest first, so that a remote revision holding one
 * of them is known for our own, not another machine's, however late it
 * lands. An answered upload takes its own hash out
 * (ix_attempt_answered); the others stay. ix_attempts_get returns how
 * many there are. */
#define IX_ATTEMPTS 4
int ix_attempts_get(struct ixtxn *t, uint64_t ino,
		    uint8_t out[IX_ATTEMPTS][CHASH_LEN]);
int ix_attempt_add(struct ixtxn *t, uint64_t ino,
		   const uint8_t hash[CHASH_LEN]);
int ix_attempt_answered(struct ixtxn *t, uint64_t ino,
			const uint8_t hash[CHASH_LEN]);
int ix_attempts_del(struct ixtxn *t, uint64_t ino);

/* Tombstones: the remote path (folded by fold_path()) of a file deleted
 * or renamed away while an upload of it may still land there (sent,
 * answer never heard), with the content hashes that upload may carry and
 * an expiry (seconds). A listing showing such bytes there shows our late
 * upload, not a new file. Several files may leave one at the same path
 * before the uploads land (a log rotated over and over): the caller adds
 * to the tombstone there, at most IX_TOMB_MAX hashes, newest first.
 * ix_tomb_get returns how many hashes there are (0: none). */
#define IX_TOMB_MAX 16
int ix_tomb_put(struct ixtxn *t, const char *folded, int64_t expires,
		const uint8_t h[][CHASH_LEN], int n);
int ix_tomb_get(struct ixtxn *t, const char *folded, int64_t *expires,
		uint8_t h[IX_TOMB_MAX][CHASH_LEN]);
int ix_tomb_del(struct ixtxn *t, const char *folded);

/* The size of the remote revision of @ino (-ENOENT: unknown). */
int ix_rsize_put(struct ixtxn *t, uint64_t ino, uint64_t size);
int ix_rsize_get(struct ixtxn *t, uint64_t ino, uint64_t *size);

/* The proven prefix of @ino (0: none). */
int ix_proven_put(struct ixtxn *t, uint64_t ino, uint64_t bytes);
uint64_t ix_proven_get(struct ixtxn *t, uint64_t ino);

/* Content files to delete once the txn that dooms them is durable. */
int ix_doom_add(struct ixtxn *t, uint64_t ino);
int ix_doom_del(struct ixtxn *t, uint64_t ino);
int ix_foreach_doomed(struct ixtxn *t, int (*fn)(void *arg, uint64_t ino),
		      void *arg);

/* The namespace journal. */
int ix_journal_append(struct ixtxn *t, int op, const char *path,
		      const char *path2);
/* Puts back entry @seq with its stored value (repair.c). */
int ix_journal_restore(struct ixtxn *t, uint64_t seq, const void *val,
		       size_t len);
/*
 * Appends a delete of file or folder @path (@op JOP_UNLINK or JOP_RMDIR)
 * that records what was known of it: the remote revision @rev (NULL or
 * "": none) and content hash @hash (NULL: none); see struct
 * journal_entry. Stored after the path behind a NUL byte, where older
 * versions of huracanfs see an empty rename target and ignore it, so an
 * index written by this version still replays with them (as an
 * unconditional delete).
 */
int ix_journal_append_delete(struct ixtxn *t, int op, const char *path,
			     const char *rev, const uint8_t *hash);
/* The oldest entry, or -ENOENT if the journal is empty. */
int ix_journal_first(struct ixtxn *t, struct journal_entry *out);
int ix_journal_del(struct ixtxn *t, uint64_t seq);
/* Calls @fn for every entry, oldest first, until it returns non-zero. */
int ix_foreach_journal(struct ixtxn *t,
		       int (*fn)(void *arg, const struct journal_entry *e),
		       void *arg);
/* Number of entries (0..), or -errno. */
int64_t ix_journal_count(struct ixtxn *t);

#endif

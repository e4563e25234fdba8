/*
 * The filesystem core: the context (struct hfs) and one function per
 * filesystem operation. src/fuse_ops.c unpacks each FUSE request, calls
 * exactly one of these, and replies with the result; every function
 * returns 0 (or a count) or a negative errno.
 *
 * Data flow: writes land in content files (cache.h) and mark the node
 * dirty in the index (index.h) on the clean->dirty transition only; close
 * and fsync persist size and times. Namespace changes go to the index and
 * the journal in one txn. The flushers (flusher.h) upload dirty files and
 * replay the journal. Reads of files known only remotely fetch them from
 * the backend into the cache first.
 *
 * Locking (outermost first): fs->commit_lock (one remote mutation at a
 * time: journal replay, uploads) -> hnode.snap (shared by writers,
 * exclusive while an upload takes its snapshot) -> hnode.mu -> fs->itab_lock.
 * No lock but commit_lock is held across network I/O; none across an LMDB
 * write txn except commit_lock and snap.
 */
#ifndef HFS_FS_H
#define HFS_FS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "hfs/backend_api.h"
#include "hfs/cache.h"
#include "hfs/config.h"
#include "hfs/fuse_stats.h"
#include "hfs/index.h"

struct hnode;
struct flushers;
struct runs;
struct restore;
struct fuse_session;
struct fuse_bufvec;

#define HFS_RECENT 32
#define HFS_LISTINGS_MAX 256

/*
 * What the core tells the layers above it, which wire these when they
 * start (hfs_set_hooks; the daemon: the flushers and eviction). The core
 * calls down only; a NULL member does nothing (returns 0).
 *   dirty:   @ino became dirty in category @cat, since @since (seconds);
 *            @first: never uploaded
 *   journal: the namespace journal has new entries
 *   next_upload: when @ino is due for upload (seconds; 0: not queued)
 *   evict:   make the clean content files take at most @limit bytes;
 *            *@used, *@freed: bytes (evict.h, evict_run)
 *   inval_inode: the kernel's cache of @ino is stale: its attributes
 *            (@off < 0), or its pages from @off (@len bytes, 0: to the end)
 *   inval_entry: the kernel's entry @name of @parent is stale
 */
struct hfs_hooks {
	void *arg;
	void (*dirty)(void *arg, uint64_t ino, int cat, int64_t since,
		      bool first);
	void (*journal)(void *arg);
	int64_t (*next_upload)(void *arg, uint64_t ino);
	int (*evict)(void *arg, uint64_t limit, uint64_t *used,
		     uint64_t *freed);
	void (*inval_inode)(void *arg, uint64_t ino, int64_t off, int64_t len);
	void (*inval_entry)(void *arg, uint64_t parent, const char *name);
};

struct hfs {
	const struct hfs_config *cfg; /* borrowed */
	struct hfs_index *ix; /* owned */
	struct backend *be; /* owned */
	struct cache *cache; /* owned */
	struct flushers
		*fl; /* the daemon's (mount.c), for the control socket */
	struct hfs_hooks hooks; /* hfs_set_hooks() */
	struct runs *runs; /* the flushers': run folder bookkeeping (runs.h) */
	struct restore *restore; /* owned: the startup restore (restore.h) */
	char *mountpoint; /* owned, absolute */
	char *control_path; /* owned: the control socket */
	int lock_fd; /* flock on {cache_dir}/lock */

	/* The in-memory inode table: inodes the kernel knows or that are
	 * in use. Protected by itab_lock. */
	pthread_mutex_t itab_lock;
	struct hnode **buckets;
	size_t nbuckets, nnodes;

	/* Serializes remote mutations (journal replay, uploads): one
	 * committer per account, as Dropbox asks. */
	pthread_mutex_t commit_lock;
	/* Serializes remote listings, so one directory is not listed twice
	 * at once. */
	pthread_mutex_t list_lock;

	/* When this mount started (ns): listings older than that are
	 * refreshed when next used. */
	int64_t mounted_at;
	/* Until then (seconds), the remote is considered unreachable and
	 * listings are served from the index. */
	_Atomic int64_t offline_until;
	/* Files whose dirty bytes were found missing (their content file
	 * removed behind our back): reported by status. Protected by
	 * lost_lock; at most HFS_LOST_MAX are kept. */
	pthread_mutex_t lost_lock;
	char **lost;
	size_t nlost;
	/* What recovery after an unclean stop did not take as it was (a
	 * file gone back to the remote's version, bytes kept in
	 * /lost+found): reported by status. Protected by lost_lock. */
	char **found;
	size_t nfound;
	/* Deletes that left remote entries in place, because this mount had
	 * not seen them or they had changed remotely since (deletes.c):
	 * reported by status and the log. Protected by kept_lock; the newest
	 * HFS_KEPT_MAX are kept. */
	pthread_mutex_t kept_lock;
	struct hfs_kept *kept;
	size_t nkept;
	/* Set by the space monitor when free space on the cache filesystem
	 * is below cache_min_free_bytes: writers slow down. */
	atomic_bool low_space;
	/* Free space is short (below cache_min_free_bytes or 64 MiB): files
	 * opened for writing then bypass the kernel's page cache. */
	atomic_bool short_space;
	/* One thread at a time makes room on a full cache filesystem. */
	pthread_mutex_t room_lock;
	/* Bumped (before their index txn commits) by our own namespace
	 * changes, their replay on the remote and finished uploads: a remote
	 * listing fetched across a bump may predate one of them and is not
	 * merged (see fs_ensure_listed). */
	atomic_uint_fast64_t ns_gen;
	/* Recent unlinks (durable.c); protected by recent_lock. */
	pthread_mutex_t recent_lock;
	struct hfs_recent {
		uint64_t parent, ino, keep;
		int64_t at; /* ns; 0: unused */
		char name[BACKEND_NAME_MAX + 1];
	} recent[HFS_RECENT];
	int recent_next;
	/* One hfs_reap() at a time. */
	pthread_mutex_t reap_lock;
	/* Listings a user operation asked for, made in the background
	 * (listing.c, "Listings in the background"; refresh.c lists them): a
	 * queue without duplicates, and the one being listed. */
	struct hfs_listings {
		pthread_mutex_t mu;
		pthread_cond_t cv; /* a request, a listing done, or stop */
		uint64_t q[HFS_LISTINGS_MAX];
		int n;
		uint64_t busy; /* listed now; 0: none */
		bool running; /* a listing thread serves the queue */
	} listings;
	/* The last daemon on this cache stopped without unmounting. */
	bool unclean;
	/* ... and the index went back to its last sync point (index.h). */
	bool rolled_back;
	/* FUSE requests served, by operation (fuse_stats.h): relaxed
	 * atomics, bumped by src/fuse_ops.c, read by status. */
	struct hfs_fuse_stats fuse_stats;
};

/* Sets the hooks the core calls (struct hfs_hooks); before the mount
 * serves, or with nothing running that could call them. */
void hfs_set_hooks(struct hfs *fs, const struct hfs_hooks *hooks);

/* Deletes the content files the index no longer needs, once the txns that
 * doomed them are durable (see durable.c). Returns 0 or -errno. */
int hfs_reap(struct hfs *fs);

/* Bumps fs->ns_gen: call before committing the change. */
void hfs_ns_changed(struct hfs *fs);

/* The clock, seconds since the epoch. HURACANFS_FAKE_TIME_OFFSET (seconds,
 * test builds and tests only) shifts it. */
int64_t hfs_now(void);
int64_t hfs_now_ns(void);

/* Takes the single-daemon lock of cache directory @dir (an flock on
 * dir/lock, held by *@fd_out until it is closed). -EBUSY with a message
 * in @err if another daemon holds it. */
int hfs_take_lock(const char *dir, int *fd_out, char *err, size_t errlen);

/* mkdir -p: creates @dir (mode @mode) and its missing parents (0700).
 * Returns 0 or -errno. */
int hfs_mkdir_p(const char *dir, mode_t mode);

/* Makes the cache directory's reserve file again if it was given up and
 * there is room (see fs.c). */
void hfs_keep_reserve(struct hfs *fs);
/*
 * After an operation failed with -ENOSPC: true if repeating it may succeed
 * because the index map has grown or clean files were evicted to make room
 * on the cache filesystem (at most one thread evicts at a time).
 */
bool hfs_room_again(struct hfs *fs);
/* Sets @rc to the result of @call, made once more if it failed with
 * -ENOSPC and hfs_room_again() made room. @call must begin and end its own
 * index txns and be safe to repeat after a failure. */
#define HFS_RETRY_NOSPC(fs, rc, call)                      \
	do {                                               \
		(rc) = (call);                             \
		if ((rc) == -ENOSPC && hfs_room_again(fs)) \
			(rc) = (call);                     \
	} while (0)
/* Updates low_space and short_space; returns the free bytes or -errno. */
int64_t hfs_check_space(struct hfs *fs);

/* Builds the context: opens the cache and index under cfg->cache_dir
 * (taking the single-daemon lock), and recovers from a crash (orphans,
 * sizes of dirty files). @be is transferred. Messages go to @err. */
int hfs_create(const struct hfs_config *cfg, struct backend *be,
	       const char *mountpoint, struct hfs **out, char *err,
	       size_t errlen);
void hfs_destroy(struct hfs *fs);

/* The inode number of the today link (see hfs_readlink). */
#define HFS_TODAY_INO UINT64_C(0xFFFFFFFFFFFFFF01)

#define HFS_LOST_MAX 1000

/* Records that the dirty bytes of remote path @path were lost. */
void hfs_note_lost(struct hfs *fs, const char *path);
/* Records what recovery did to a file (a line for status). */
void hfs_note_found(struct hfs *fs, const char *what);

/* A delete that kept remote entries (see struct hfs.kept). */
#define HFS_KEPT_MAX 100
#define HFS_KEPT_NAMES 10
struct hfs_kept {
	int64_t when; /* seconds since the epoch */
	char *path; /* owned: the folder (or file) this mount deleted */
	char *names[HFS_KEPT_NAMES]; /* owned: the first entries kept */
	size_t nnames; /* of @names */
	size_t total; /* entries kept in all */
};
/* Records one: @n of the @total entries kept are named (copied); the
 * oldest record goes beyond HFS_KEPT_MAX. */
void hfs_note_kept(struct hfs *fs, const char *path, char *const *names,
		   size_t n, size_t total);

struct hfs_file; /* an open file handle */
struct hfs_dir; /* an open directory handle */

/*
 * Names fold (fold.h): a name that folds like an entry's names that
 * entry, as on Dropbox. *@other_spelling is set when @name is not the
 * entry's own spelling; the kernel, whose dentries are exact names, must
 * then not cache the answer for a file (a file may have several dentries,
 * and only the one an operation uses is updated by it).
 */
int hfs_lookup(struct hfs *fs, uint64_t parent, const char *name,
	       struct stat *st, bool *other_spelling);
void hfs_forget(struct hfs *fs, uint64_t ino, uint64_t nlookup);
int hfs_getattr(struct hfs *fs, uint64_t ino, struct stat *st);
/* What hfs_setattr() sets (@to_set, any of them or'ed), from @attr. */
enum hfs_set {
	HFS_SET_MODE = 1 << 0,
	HFS_SET_UID = 1 << 1,
	HFS_SET_GID = 1 << 2,
	HFS_SET_SIZE = 1 << 3,
	HFS_SET_ATIME = 1 << 4,
	HFS_SET_MTIME = 1 << 5,
	HFS_SET_ATIME_NOW = 1 << 6, /* now, not @attr's */
	HFS_SET_MTIME_NOW = 1 << 7,
	HFS_SET_CTIME = 1 << 8,
};

/* @to_set: enum hfs_set bits; @fh may be NULL. */
int hfs_setattr(struct hfs *fs, uint64_t ino, const struct stat *attr,
		int to_set, struct hfs_file *fh, struct stat *out);
int hfs_mkdir(struct hfs *fs, uint64_t parent, const char *name, mode_t mode,
	      uid_t uid, gid_t gid, struct stat *out);
/* Regular files, FIFOs, sockets, and (@uid 0 only) device nodes @rdev:
 * all but regular files are local nodes, never uploaded. */
int hfs_mknod(struct hfs *fs, uint64_t parent, const char *name, mode_t mode,
	      dev_t rdev, uid_t uid, gid_t gid, struct stat *out);
/* Hard link: name @newname of @newparent for file @ino; *@out its
 * attributes (st_nlink counted). Directories: -EPERM. */
int hfs_link(struct hfs *fs, uint64_t ino, uint64_t newparent,
	     const char *newname, struct stat *out);
/* Symbolic link @name -> @target (see hfs_readlink). */
int hfs_symlink(struct hfs *fs, uint64_t parent, const char *name,
		const char *target, uid_t uid, gid_t gid, struct stat *out);
int hfs_unlink(struct hfs *fs, uint64_t parent, const char *name);
int hfs_rmdir(struct hfs *fs, uint64_t parent, const char *name);
int hfs_rename(struct hfs *fs, uint64_t parent, const char *name,
	       uint64_t newparent, const char *newname, unsigned int flags);
/*
 * After hfs_unlink, hfs_rmdir or hfs_rename of this thread removed or
 * replaced an entry through another spelling of its name, the kernel may
 * still hold a dentry of the stored spelling: this drops it (a
 * notify_inval_entry). Call it after the operation's reply is sent, never
 * before: the kernel holds the directories' locks until the reply.
 */
void hfs_drop_stale_names(struct hfs *fs);
int hfs_create_file(struct hfs *fs, uint64_t parent, const char *name,
		    mode_t mode, int flags, uid_t uid, gid_t gid,
		    struct stat *out, struct hfs_file **fh);
int hfs_open(struct hfs *fs, uint64_t ino, int flags, struct hfs_file **fh);
/* Makes [@off, @off + @size) readable from the content file and returns
 * its fd (borrowed; valid until the handle is released). */
int hfs_read_fd(struct hfs *fs, struct hfs_file *fh, uint64_t off, size_t size);
/*
 * Where the bytes of a write come from (the front end's buffers or pipe,
 * memory): @len bytes in all; @copy writes the next ones, at most @len,
 * into @fd at @off and returns how many, 0 if it has none left, or
 * -errno. hfs_source_mem() makes one of @len bytes at @data (@s keeps the
 * position; @data must outlive the write).
 */
struct hfs_source {
	size_t len;
	ssize_t (*copy)(void *arg, int fd, uint64_t off, size_t len);
	void *arg;
	const char *mem; /* hfs_source_mem()'s */
};
void hfs_source_mem(struct hfs_source *s, const void *data, size_t len);
/* Writes @src at @off; returns the number of bytes written (short only if
 * the disk is full, and never for @writepage: the kernel writing back its
 * cached pages), or -errno. */
ssize_t hfs_write(struct hfs *fs, struct hfs_file *fh,
		  const struct hfs_source *src, uint64_t off, bool writepage);
/* fallocate(2) on an open file: done on its content file (every mode the
 * cache filesystem supports); the size follows it. */
int hfs_fallocate(struct hfs *fs, struct hfs_file *fh, int mode, uint64_t off,
		  uint64_t len);
int hfs_fsync(struct hfs *fs, struct hfs_file *fh, int datasync);
int hfs_release(struct hfs *fs, struct hfs_file *fh);

int hfs_opendir(struct hfs *fs, uint64_t ino, struct hfs_dir **dh);
/*
 * One entry of a listing for the front end: @name, its attributes @st,
 * the position after it @next; @entry is false for "." and "..", whose
 * attributes are not to be cached. Returns 0 if taken, > 0 if there is no
 * room for it (it comes first next time).
 */
typedef int (*hfs_fill_fn)(void *ctx, const char *name, const struct stat *st,
			   uint64_t next, bool entry);
/*
 * Gives @fill the entries of @dh from position @off, until it has no room.
 * With @plus, each entry taken (@entry true) counts as a lookup of it (the
 * kernel got a reference, as with readdirplus). Returns 0 or -errno.
 */
int hfs_readdir(struct hfs *fs, struct hfs_dir *dh, uint64_t off, bool plus,
		hfs_fill_fn fill, void *ctx);
void hfs_releasedir(struct hfs *fs, struct hfs_dir *dh);

/* The target of a symbolic link (the today link's, the current UTC date
 * folder, is created if missing). Returns the length written to @buf, at
 * most @size; -EINVAL if @ino is no link. */
ssize_t hfs_readlink(struct hfs *fs, uint64_t ino, char *buf, size_t size);

/* Calls @fn with the path of each symbolic link kept on this machine only
 * (no remote form) and the reason, at most @max of them. */
int hfs_local_links(struct hfs *fs, size_t max,
		    int (*fn)(void *arg, const char *path, const char *why),
		    void *arg);

int hfs_statfs(struct hfs *fs, struct statvfs *st);
/* Extended attributes user.huracanfs.*: the value's length, or -errno
 * (-ERANGE if @size is too small and non-zero, -ENODATA if absent). */
ssize_t hfs_getxattr(struct hfs *fs, uint64_t ino, const char *name, char *buf,
		     size_t size);
ssize_t hfs_listxattr(struct hfs *fs, uint64_t ino, char *buf, size_t size);

/* Fills @st for a node. */
void hfs_fill_stat(const struct node *n, struct stat *st);

/* Sync work, called by the flushers with commit_lock held. */
struct upload_result {
	bool skipped; /* smart sync: the remote already has these bytes */
	bool not_dirty; /* nothing to do (clean, deleted) */
	bool still_dirty; /* modified during the upload: queue again */
	bool open_for_write; /* a writer has it open: look again later */
	/* Not sent: patched in place while open, it may be torn until its
	 * next close or fsync (only when not @asked) */
	bool mid_patch;
	uint64_t bytes;
	int cat; /* the category by the file's current path */
	char path[4096];
};

/*
 * An upload in three steps, so a flusher can commit many small files in
 * one batch: prepare (snapshot, hash, smart sync), commit (the backend;
 * one file with hfs_upload_commit, or many through backend upload_batch),
 * finish (record the result in the index). hfs_upload does all three.
 */
struct upload_job {
	uint64_t ino;
	struct hnode *hn; /* a reference, released by hfs_upload_release */
	bool ready; /* prepared: needs a remote commit */
	int fd; /* the snapshot, -1 if none */
	uint64_t size, gen;
	int64_t mtime; /* seconds */
	char rev[BACKEND_REV_MAX + 1]; /* the remote revision it replaces */
	uint8_t known_hash[CHASH_LEN]; /* the remote's hash we knew, if any */
	bool has_known_hash;
	uint8_t hash[CHASH_LEN];
	bool proven; /* the content file holds these bytes, synced */
	struct upload_result res;
};

/* Prepares @job for @ino; fs->commit_lock held. @asked: a user asked
 * for it (flush), so even a file patched while open is sent as it is.
 * Returns 0 (look at job->ready and job->res) or -errno; -ESTALE: namespace
 * changes are not replayed yet, or the file changed while it was read: replay
 * the journal and prepare again. The job must be released whatever the result.
 */
int hfs_upload_prepare(struct hfs *fs, uint64_t ino, struct upload_job *job,
		       bool asked);
/* Uploads one prepared job, with the conflict policy: the upload names the
 * revision it replaces; if the remote changed meanwhile, ours is kept as a
 * conflicted copy beside theirs. Fills @meta. */
int hfs_upload_commit(struct hfs *fs, struct upload_job *job,
		      struct backend_entry *meta);
/* Records the outcome @rc (0: @meta is the remote's result). */
int hfs_upload_finish(struct hfs *fs, struct upload_job *job, int rc,
		      const struct backend_entry *meta);
void hfs_upload_release(struct hfs *fs, struct upload_job *job);
/* Fills @up for the backend from a prepared job. */
void hfs_upload_args(const struct upload_job *job, struct backend_upload *up);

int hfs_upload(struct hfs *fs, uint64_t ino, struct upload_result *res);
/* Replays the namespace journal on the remote, oldest first, until it is
 * empty (0) or a transient error stops it (-EAGAIN, ...). */
int hfs_replay_journal(struct hfs *fs);
/* The category of @ino by its current path, or -errno. */
int hfs_classify(struct hfs *fs, uint64_t ino);

#endif

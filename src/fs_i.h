/*
 * Private to the filesystem core (fs.c, upload.c): the in-memory inode.
 */
#ifndef HFS_FS_I_H
#define HFS_FS_I_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "hfs/fs.h"

/*
 * An inode in use: known to the kernel (nlookup > 0) or held by a handle or
 * a flusher (refs > 0). Freed when both reach zero; an unlinked inode's
 * node record and content file go with it.
 */
struct fetchx; /* fetch.c */

struct hnode {
	uint64_t ino;
	struct hnode *next; /* bucket chain; fs->itab_lock */
	uint64_t nlookup; /* fs->itab_lock */
	int refs; /* fs->itab_lock */

	pthread_rwlock_t snap; /* writers shared; snapshot exclusive */
	/* Held from reading the times and size below to committing them to
	 * the index (file.c, persist and mark dirty), and by setattr from its
	 * txn to updating them here: an explicit time is never overwritten
	 * by an older one read before it. Taken before a write txn and
	 * before mu, never with either held. */
	pthread_mutex_t persist_mu;
	pthread_mutex_t mu; /* protects everything below */
	pthread_cond_t fetched; /* signals: a fetch finished */
	bool loaded; /* fields below were read from the index */
	int fd; /* content file, or -1 */
	int nopen, nwriters;
	bool fetching;
	bool complete; /* the content file holds every byte (checked) */
	bool live; /* size/mtime below are newer than the index */
	uint64_t size;
	int64_t mtime_ns, ctime_ns;
	uint64_t gen; /* bumped by every write */
	bool dirty_persisted; /* the index has NODE_DIRTY */
	/* It replaces bytes a cut must not lose (truncated, or created where
	 * a file was just unlinked): its content file is synced when the
	 * last writer closes it (durable.c, rule 2). */
	bool sync_on_release;
	/* Its last fsync'd version waits in the content's .prev file
	 * (cache.h) until the rewrite that replaced it is on disk: see
	 * rewrite_begin() in file.c. */
	bool prev_kept;

	/* Patched in place since its fsync'd version: the undo file (fd, or
	 * -1) holding that version's bytes of the ranges in @undo (sorted,
	 * disjoint), until the new bytes are synced (durable.c, rule 6; see
	 * undo_before() in file.c). */
	int undo_fd;
	/* NODE_ASIDE_PREV or NODE_ASIDE_UNDO while a version is kept aside
	 * (prev_kept, or an undo session), else 0: what the index is told. */
	uint32_t aside;
	struct undo_span {
		uint64_t start, end;
	} * undo;
	size_t nundo, capundo;
	/* The proven prefix (index.h) as the index has it; and whether the
	 * content file was just synced (the next persist makes the whole
	 * size proven). */
	uint64_t proven;
	uint64_t proven_cuts; /* times mark_dirty_first lowered it */
	bool synced;
	/* hfs_now() of the first change below the end of the file since the
	 * last close or fsync, or 0. While a writer holds the file open, its
	 * content may then be torn: the kernel sends the pages of one write
	 * (or of a mapping) separately, so a snapshot between two of them
	 * holds bytes nobody wrote. Uploads wait for the next close or fsync
	 * (upload.c, PATCH_WAIT_MAX at most). */
	int64_t patched_at;
	/* hfs_now() when an open file was cut short or truncated to be
	 * written again (it had bytes), until its last writer closes it or
	 * an fsync: its new version is half written meanwhile. */
	int64_t rewrite_at;
	/* The size at the last open for writing, close or fsync: bytes below
	 * it belong to a whole version; writes past it are appends. */
	uint64_t whole_size;
	/* The reads of a partial file (fetch.c, ra_window): the stream of
	 * nearby reads [ra_start, ra_next), and whether it began at the
	 * file's start with the first read. */
	uint64_t ra_start, ra_next;
	bool ra_whole;
	/* The background fetches of a partial file and its blocks present
	 * (fetch.c), or NULL. */
	struct fetchx *fx;
	bool unlinked;
	bool gone; /* unlinked, and its record and content are gone too */
	char last_error[160];
};

struct hfs_file {
	struct hnode *hn;
	int flags;
};

struct hnode *hnode_get(struct hfs *fs, uint64_t ino);
/* The hnode of @ino with a reference if it is in use, else NULL. */
struct hnode *hnode_find(struct hfs *fs, uint64_t ino);
void hnode_put(struct hfs *fs, struct hnode *hn);
/* Loads size/mtime/gen/dirty from the index if not done yet; hn->mu
 * held. */
int hnode_load(struct hfs *fs, struct hnode *hn);
/* Takes up the undo records of a file patched since its fsync'd version
 * (file.c, undo_before) when its hnode is loaded again; hn->mu held. */
void fs_undo_resume(struct hfs *fs, struct hnode *hn);
/* Opens the content fd if needed; hn->mu held. */
int hnode_open_fd(struct hfs *fs, struct hnode *hn, bool create);
/* Frees hn->fx (fetch.c); no worker may be running on @hn. */
void fs_fetch_free(struct hnode *hn);
/* Waits until no background fetch runs in the process (fetch.c). */
void fs_fetch_drain(void);

/* The hooks (fs.h, struct hfs_hooks), NULL-safe. */
static inline void fs_tell_dirty(struct hfs *fs, uint64_t ino, int cat,
				 int64_t since, bool first)
{
	if (fs->hooks.dirty)
		fs->hooks.dirty(fs->hooks.arg, ino, cat, since, first);
}

static inline void fs_tell_journal(struct hfs *fs)
{
	if (fs->hooks.journal)
		fs->hooks.journal(fs->hooks.arg);
}

static inline void fs_tell_inval_inode(struct hfs *fs, uint64_t ino,
				       int64_t off, int64_t len)
{
	if (fs->hooks.inval_inode)
		fs->hooks.inval_inode(fs->hooks.arg, ino, off, len);
}

static inline void fs_tell_inval_entry(struct hfs *fs, uint64_t parent,
				       const char *name)
{
	if (fs->hooks.inval_entry)
		fs->hooks.inval_entry(fs->hooks.arg, parent, name);
}

/* Reads node @ino in a read txn of its own. */
int fs_get_node(struct hfs *fs, uint64_t ino, struct node *n);
/* Lists directory @dir remotely if it never was (or, with @refresh, if
 * the listing is older than dir_cache_seconds); see fs.c. */
int fs_ensure_listed(struct hfs *fs, uint64_t dir, bool refresh);
/*
 * What an operation of a user needs of directory @dir's listing (listing.c,
 * "Listings in the background"): FS_VISIT_USE, the children as the index
 * has them (a listing from before this mount is refreshed in the
 * background); FS_VISIT_FRESH, the same, refreshing a listing older than
 * dir_cache_seconds (opendir); FS_VISIT_MISS, a name was not found: wait
 * a moment for the refresh. Waits for the network only for a folder never
 * listed (remote_wait_seconds at most). 0, or -errno for a bad @dir.
 */
enum fs_visit { FS_VISIT_USE, FS_VISIT_FRESH, FS_VISIT_MISS };
int fs_visit_dir(struct hfs *fs, uint64_t dir, enum fs_visit how);
/* The listing thread (refresh.c): takes the next directory to list,
 * waiting for one (false: stop); each call also ends the previous one.
 * fs_listings_run() says whether a thread serves the queue. */
bool fs_listing_next(struct hfs *fs, uint64_t *dir);
void fs_listings_run(struct hfs *fs, bool running);
/* Makes the content file of @ino complete (fetches it if needed). */
int fs_fetch(struct hfs *fs, uint64_t ino);
/* Resolves remote path @path ("/a/b") to an inode, listing directories
 * on the way as lookups do. -ENOENT if absent. */
int fs_resolve(struct hfs *fs, const char *path, uint64_t *ino);
/* Creates regular file @name in @parent holding @len bytes of @data, dirty
 * (to be uploaded), as a writer would. -EEXIST if the name is taken. */
int fs_create_file(struct hfs *fs, uint64_t parent, const char *name,
		   const void *data, size_t len, uint64_t *ino);

/* Gives up the cache directory's reserve file (see fs.c) so the index
 * can commit on a full disk; true if there was one. */
bool fs_free_reserve(struct hfs *fs);

/* The inode table (fs.c): is @ino in use (a handle, a flusher)? known to
 * the kernel at all? fs_mark_unlinked() marks its hnode unlinked, so its
 * record and content go when it is unused. */
bool fs_inode_busy(struct hfs *fs, uint64_t ino);
bool fs_inode_known(struct hfs *fs, uint64_t ino);
void fs_mark_unlinked(struct hfs *fs, uint64_t ino);

/*
 * Fetching (fetch.c), hn->mu held (dropped while the bytes come): makes
 * [@off, @off+@len) of @hn's content file present (@len 0: all of it),
 * fs_ensure_cached() the whole file. A user waits at most
 * remote_wait_seconds (then EIO, the reason in the log);
 * fs_ensure_range_until() takes the deadline (CLOCK_MONOTONIC ns, 0: none).
 */
int fs_ensure_range(struct hfs *fs, struct hnode *hn, uint64_t off,
		    uint64_t len);
int fs_ensure_cached(struct hfs *fs, struct hnode *hn);
int fs_ensure_range_until(struct hfs *fs, struct hnode *hn, uint64_t off,
			  uint64_t len, int64_t deadline);

/*
 * Shared by the files of the core. fs.c: fs_itab_find() (the hnode of
 * @ino, itab_lock held), fs_hnode_add_lookup() (the kernel got a reference
 * to @ino), fs_is_today() (the name is the today link), fs_stale_name()
 * (the kernel's dentry @stored of @parent went stale, dropped after the
 * reply), fs_overlay_live() (an open file's size and times over node @n).
 * namespace.c: fs_classify_path() (the category of @path),
 * fs_create_reg() and fs_mkdir_node() (a new file or directory node, in
 * its own txn). file.c: fs_sync_and_prove() (the content synced and its
 * size recorded as proven, not durably).
 */
struct hnode *fs_itab_find(struct hfs *fs, uint64_t ino);
void fs_hnode_add_lookup(struct hfs *fs, uint64_t ino);
bool fs_is_today(struct hfs *fs, uint64_t parent, const char *name);
void fs_stale_name(uint64_t parent, const char *stored, const char *used);
void fs_overlay_live(struct hfs *fs, struct node *n);
int fs_classify_path(struct hfs *fs, const char *path);
int fs_classify_node(struct hfs *fs, const struct node *n, const char *path);
int fs_create_reg(struct hfs *fs, uint64_t parent, const char *name,
		  mode_t mode, uid_t uid, gid_t gid, struct node *n,
		  int *fd_out);
int fs_mkdir_node(struct hfs *fs, uint64_t parent, const char *name,
		  mode_t mode, uid_t uid, gid_t gid, struct node *out);
int fs_sync_and_prove(struct hfs *fs, struct hnode *hn, int datasync);

/* Why symbolic link @name of @parent can have no remote form, NULL if it
 * can (namespace.c). */
const char *fs_link_local_reason(struct hfs *fs, struct ixtxn *t,
				 uint64_t parent, const char *name);
/* The remote path of name @name of @parent for node @n (NULL: no node;
 * a link's ends in HFS_LINK_SUFFIX), malloc'd (namespace.c). */
int fs_name_path(struct ixtxn *t, uint64_t parent, const char *name,
		 const struct node *n, char **out);
/* Writes symbolic link @ino's target into its content file (its upload's
 * bytes), synced (fs.c). */
int fs_link_content(struct hfs *fs, uint64_t ino, const char *target,
		    size_t len);

/* Recovery after an unclean stop (recover.c); 0 or -errno. */
int fs_recover(struct hfs *fs);

/* Power loss (durable.c). */
/* fdatasync of the content file of @ino (none: nothing to do). */
int fs_sync_content(struct hfs *fs, uint64_t ino);
/*
 * Remembers that @name of @parent, file @ino whose content file holds
 * @keep synced bytes (0: none worth keeping), was unlinked.
 * fs_was_unlinked() tells whether it was, lately, and takes the entry's
 * @ino and @keep (so only one new file adopts them); fs_unlinked_lately()
 * whether @ino was unlinked in the last seconds (its content is not
 * reaped yet: the file may be created again, see create_reg()).
 */
void fs_note_unlinked(struct hfs *fs, uint64_t parent, const char *name,
		      uint64_t ino, uint64_t keep);
bool fs_was_unlinked(struct hfs *fs, uint64_t parent, const char *name,
		     uint64_t *ino, uint64_t *keep);
bool fs_unlinked_lately(struct hfs *fs, uint64_t ino);
/*
 * Replays the run of deletes at the head of the journal (deletes.c): at
 * most one folder delete per folder proven to hold nothing unknown, and
 * batch deletes for the rest; fs->commit_lock held. Returns 0 once the
 * run is out of the journal, or a transient -errno (the run stays).
 */
int hfs_replay_deletes(struct hfs *fs);

#endif

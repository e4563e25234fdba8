/*
 * The backend API: the remote store as a vtable, the types its methods
 * speak, and the helpers every backend shares (the error detail, the name
 * filter, page release). Two implementations: "local" (backend_local.h, a
 * directory that plays the remote; the embedded default) and "dropbox"
 * (backend_dropbox.h, HTTPS API v2); backend.h creates the one the
 * configuration names. Tests add a faulty one (backend_fault.h, never
 * in the daemon). This header and backend_api.c depend on no backend:
 * the backends include them, and only backend.c includes the backends.
 *
 * The interface follows Dropbox's model (dropbox-api.md):
 * - Paths are remote paths relative to the mount root: "" is the root,
 *   every other path starts with '/' and has no trailing slash. The backend
 *   adds its own prefix (the app folder, or remote_dir).
 * - Files carry a revision string (opaque, changes on every write) and the
 *   Dropbox content hash.
 * - Listings are paged: list() returns one page and a cursor; call it again
 *   with the cursor while has_more.
 * - Names are case-insensitive and case-preserving, matched the way
 *   Dropbox matches them (fold.h) by both backends: a path names the
 *   entry whose path folds alike, a new entry takes the caller's spelling,
 *   and a move between two spellings of one path renames the entry to the
 *   new spelling. Callers never rely on the backend to tell "A" from "a".
 * - move/copy never overwrite (an existing target gives -EEXIST); remove of
 *   a folder is recursive.
 *
 * Errors: every method returns 0 or a negative errno:
 *   -ENOENT     the path (or the source of a move/copy) does not exist
 *   -EEXIST     a conflict: target exists, or an upload's parent_rev is not
 *               the current revision (see upload)
 *   -ENOTDIR, -EISDIR  the path or a parent has the other type
 *   -ENOSPC     remote quota / insufficient space
 *   -EINVAL     the remote refuses the name
 *   -EAGAIN     transient (rate limit, 5xx, network) after the backend's own
 *               retries; the caller keeps the work queued
 *   -EACCES     credentials refused
 *   -ESTALE     a listing cursor is no longer valid: list again from the
 *               start
 *   -EIO        anything else, including malformed replies
 * A transport failure is never reported as -ENOENT.
 *
 * Thread-safety: all methods may be called from several threads at once;
 * the implementation serializes what it must. Every method may block on
 * network or disk I/O; none is called with a filesystem lock held.
 *
 * A human-readable detail of the last failure of the calling thread is in
 * backend_last_error() (never contains a secret).
 */
#ifndef HFS_BACKEND_API_H
#define HFS_BACKEND_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hfs/hash.h"

#define BACKEND_REV_MAX 64
#define BACKEND_NAME_MAX 255
/* Size of an error detail, with its NUL (backend_last_error). */
#define BACKEND_ERROR_MAX 512

struct hfs_config;

struct backend_entry {
	char name[BACKEND_NAME_MAX + 1]; /* last component, remote case */
	bool is_dir;
	uint64_t size; /* files */
	int64_t mtime; /* files: seconds since the epoch (client_modified) */
	char rev[BACKEND_REV_MAX + 1]; /* files; "" if unknown */
	bool has_hash;
	uint8_t hash[CHASH_LEN]; /* files, if has_hash */
	/* Change feeds only (list_changes): the entry's path relative to the
	 * mount root ("/a/b", the remote's lower-case form), owned by the
	 * page; and whether it was deleted. NULL/false in folder listings. */
	char *path;
	bool deleted;
};

struct backend_page {
	struct backend_entry *entries; /* owned by the page */
	size_t n;
	char *cursor; /* owned; pass to the next list() call */
	bool has_more;
	/* list_tree only: entries the remote holds that the page could not
	 * give (an unknown kind, a name the filesystem refuses). */
	size_t skipped;
};

/* Releases what a page owns and zeroes it. */
void backend_page_release(struct backend_page *page);

struct backend;

struct backend_upload {
	const char *path;
	int fd; /* read from offset 0; the backend uses pread only */
	uint64_t size; /* bytes to send */
	const uint8_t *hash; /* content hash of those bytes, or NULL */
	int64_t mtime; /* client_modified, seconds */
	/*
	 * The revision this upload replaces. NULL: create or overwrite
	 * whatever is there. Non-NULL: fail with -EEXIST if the current
	 * remote revision differs (or the file was created meanwhile), unless
	 * @autorename, which instead stores the bytes beside it as a
	 * conflicted copy and reports that copy's name in @out.
	 */
	const char *parent_rev;
	bool autorename;
};

/* One delete of a batch (remove_batch). */
struct backend_delete {
	const char *path;
	/*
	 * Files: delete only if the current revision is this one; otherwise
	 * nothing is deleted and the entry's result is -EEXIST (the file was
	 * changed elsewhere). NULL: whatever is there (a folder with all it
	 * holds). A folder with a parent_rev is -EISDIR.
	 */
	const char *parent_rev;
};

/* The most entries one remote call of remove_batch takes (Dropbox's
 * delete_batch limit); remove_batch itself takes any number. */
#define BACKEND_DELETE_BATCH 1000

struct backend_ops {
	const char *name; /* "local", "dropbox" */

	/*
	 * Checks that the remote is usable (credentials valid, root reachable)
	 * at mount time. Returns 0, -EACCES (bad credentials), -ECONNABORTED
	 * (the server's TLS certificate failed verification: a configuration
	 * error), -EAGAIN (unreachable: the mount may still start offline)
	 * or -errno.
	 */
	int (*probe)(struct backend *be);

	/*
	 * One page of the listing of folder @path (@cursor NULL for the first
	 * page). Entries that would escape the folder (names with '/', "." or
	 * "..", NUL, empty) are dropped. Returns 0 and fills @page.
	 */
	int (*list)(struct backend *be, const char *path, const char *cursor,
		    struct backend_page *page);

	/* Metadata of @path (not ""). */
	int (*stat)(struct backend *be, const char *path,
		    struct backend_entry *out);

	/*
	 * Writes bytes [@off, @off + @len) of @path to @fd at offset @off
	 * (pwrite). @len 0 means to the end. @rev, if non-NULL, asks for that
	 * revision. If @out is non-NULL it gets the file's metadata. A whole
	 * download whose content hash is known is verified (-EIO on mismatch).
	 * *@got receives the number of bytes written.
	 */
	int (*download)(struct backend *be, const char *path, const char *rev,
			uint64_t off, uint64_t len, int fd, uint64_t *got,
			struct backend_entry *out);

	/* Uploads a file (see struct backend_upload); @out gets the result
	 * (rev, hash, the stored name). Parents are created as needed. */
	int (*upload)(struct backend *be, const struct backend_upload *up,
		      struct backend_entry *out);

	/* Creates folder @path (and its parents). An existing folder is
	 * -EEXIST. */
	int (*mkdir)(struct backend *be, const char *path);

	/* Deletes @path; folders recursively. */
	int (*remove)(struct backend *be, const char *path);

	/*
	 * Deletes the @n entries of @dels (any number; Dropbox: one
	 * delete_batch per BACKEND_DELETE_BATCH, its job polled until done),
	 * each judged on its own: @rcs[i] gets 0 (deleted), -ENOENT (nothing
	 * there: already gone), -EEXIST (parent_rev is not the current
	 * revision: the file stays), -EAGAIN (not done: the remote was busy
	 * with this entry, too_many_write_operations, after the backend's
	 * own retries with backoff) or another -errno as for remove().
	 * Entries are independent; none may lie inside a folder that another
	 * entry deletes. Returns 0 if the batch was processed (look at @rcs),
	 * or -errno if it could not be sent at all (-EAGAIN: unreachable or
	 * busy, try again later; then every @rcs[i] holds the same). Blocks
	 * for the whole batch (network and polling); thread-safe like every
	 * method.
	 */
	int (*remove_batch)(struct backend *be,
			    const struct backend_delete *dels, size_t n,
			    int *rcs);

	/*
	 * Optional (NULL: list() each folder). One page of the recursive
	 * listing of folder @path (@cursor NULL for the first page): every
	 * file and folder at any depth below it, not @path itself, each with
	 * ->path set to its path from the mount root (Dropbox: the remote's
	 * lower-case form), and ->deleted for entries that went while the
	 * listing was paged. -ENOENT if @path does not exist, -ENOTDIR if it
	 * is a file. Blocks on the network; thread-safe.
	 */
	int (*list_tree)(struct backend *be, const char *path,
			 const char *cursor, struct backend_page *page);

	/* Moves @from to @to; never overwrites (-EEXIST). */
	int (*move)(struct backend *be, const char *from, const char *to);

	/* Server-side copy; never overwrites (-EEXIST). */
	int (*copy)(struct backend *be, const char *from, const char *to);

	/*
	 * Optional (NULL: the caller calls upload() for each file). Uploads
	 * @n files and commits them together (Dropbox: one finish_batch for
	 * many upload sessions, so the namespace lock is taken once). Each
	 * file is judged on its own: its result goes to @outs[i] and
	 * @rcs[i] (0 or -errno as for upload()), and the detail of its
	 * failure to @errs[i] (if @errs is not NULL), which names that
	 * file. Returns 0 once every file has its result (whether or not
	 * any was committed), or -errno if the batch could not be tried at
	 * all (then @rcs and @errs say nothing).
	 */
	int (*upload_batch)(struct backend *be,
			    const struct backend_upload *ups, size_t n,
			    struct backend_entry *outs, int *rcs,
			    char (*errs)[BACKEND_ERROR_MAX]);

	/*
	 * Optional, for watching remote changes (NULL: not supported).
	 * latest_cursor: a cursor for "now" over the whole tree under the
	 * mount root (recursive). longpoll: blocks up to @timeout_s seconds
	 * until something changed after @cursor; *@changes says whether it
	 * did, *@backoff_s (0 if none) how long to wait before polling
	 * again. list_changes: one page of what changed after @cursor, with
	 * path and deleted set on each entry; -ESTALE if the cursor is no
	 * longer valid (start over with latest_cursor and a full re-listing).
	 */
	int (*latest_cursor)(struct backend *be, char **cursor);
	int (*longpoll)(struct backend *be, const char *cursor, int timeout_s,
			bool *changes, int *backoff_s);
	int (*list_changes)(struct backend *be, const char *cursor,
			    struct backend_page *page);

	/*
	 * Optional: makes a long poll in flight on another thread, and later
	 * ones, return -EINTR soon; used once, at shutdown.
	 */
	void (*interrupt)(struct backend *be);

	/* Space used and allocated, in bytes. */
	int (*space)(struct backend *be, uint64_t *used, uint64_t *total);

	/* Releases the backend; accepts a half-built one. */
	void (*destroy)(struct backend *be);
};

struct backend {
	const struct backend_ops *ops;
};

/* Releases @be through its destroy method; NULL is a no-op. */
void backend_destroy(struct backend *be);

/* Records / reads the calling thread's last error detail. */
void backend_set_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
const char *backend_last_error(void);

/* True if @name is acceptable as one remote path component. */
bool backend_name_ok(const char *name);
/* True if @path is "" (only if @allow_root) or "/c1/c2..." with every
 * component accepted by @name_ok. */
bool backend_path_ok(const char *path, bool allow_root,
		     bool (*name_ok)(const char *name));

#endif /* HFS_BACKEND_API_H */

/*
 * The JSON side of the Dropbox API (dropbox-api.md), separate from the
 * transport so that it can be tested alone: encoding of the
 * Dropbox-API-Arg header, parsing of every reply the backend reads, and
 * the one translation of a Dropbox error (HTTP status + error JSON) to a
 * negative errno.
 *
 * Parsers are tolerant of what the API allows to vary (unknown fields,
 * unknown union tags, absent optional fields) and strict about the rest:
 * a field of the wrong type, a negative size, a malformed timestamp or
 * hash, truncated or non-JSON text is a malformed reply, -EIO, never a
 * crash. Every string taken from a reply has a length limit.
 *
 * Listings are filtered here: an entry whose name fails backend_name_ok()
 * or whose path_lower does not sit directly inside the listed folder (or,
 * for change feeds, inside the mount root) is dropped, with a note in
 * backend_set_error(), so that no remote name can escape the mount.
 * Paths are compared case-insensitively (simple Unicode case folding of
 * the C.UTF-8 locale), as Dropbox's path_lower is lower-cased.
 *
 * Ownership: strings returned through char ** are malloc'd and owned by
 * the caller; struct dbx_meta owns its path_lower (dbx_meta_release).
 * All functions are thread-safe.
 */
#ifndef HFS_DBX_JSON_H
#define HFS_DBX_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hfs/backend_api.h"

#define DBX_ID_MAX 128
#define DBX_CURSOR_MAX ((size_t)64 * 1024)
#define DBX_SESSION_MAX 1024
#define DBX_TOKEN_MAX 4096
#define DBX_PATH_MAX 4096
#define DBX_TIME_LEN 20 /* "YYYY-MM-DDTHH:MM:SSZ" */

/*
 * Encodes @obj for the Dropbox-API-Arg header: compact JSON with every
 * non-ASCII character and U+007F escaped as \uXXXX (surrogate pairs above
 * U+FFFF). Returns a malloc'd string, or NULL (ENOMEM, or a string in
 * @obj that is not valid UTF-8).
 */
char *dbx_json_header_arg(const json_t *obj);

/* Formats @t (seconds since the epoch, clamped to 1970..9999) as
 * "YYYY-MM-DDTHH:MM:SSZ". */
void dbx_time_format(int64_t t, char out[DBX_TIME_LEN + 1]);
/* Parses exactly that format. Returns 0 or -EINVAL. */
int dbx_time_parse(const char *s, int64_t *out);

enum dbx_kind { DBX_FILE, DBX_FOLDER, DBX_DELETED, DBX_OTHER };

/* What the JSON must look like. */
enum dbx_shape {
	DBX_TAGGED, /* Metadata union: ".tag" file/folder/deleted */
	DBX_FILE_ONLY, /* FileMetadata: no tag needed (any ignored) */
	DBX_FOLDER_ONLY, /* FolderMetadata: no tag needed */
};

struct dbx_meta {
	enum dbx_kind kind; /* DBX_OTHER: an unknown tag, to be skipped */
	char name[BACKEND_NAME_MAX + 1]; /* "" unless name_ok */
	bool name_ok; /* the name fits and passes backend_name_ok() */
	char *path_lower; /* owned; NULL if absent */
	char id[DBX_ID_MAX + 1]; /* "" if absent */
	char rev[BACKEND_REV_MAX + 1]; /* files */
	uint64_t size; /* files */
	int64_t mtime; /* files: client_modified */
	bool has_hash;
	uint8_t hash[CHASH_LEN];
	bool downloadable; /* files: is_downloadable (default true) */
};

/* Releases what @m owns and zeroes it. */
void dbx_meta_release(struct dbx_meta *m);

/*
 * Parses one metadata object. Returns 0 (with kind DBX_OTHER for an
 * unknown tag) or -EIO (malformed) / -ENOMEM. On failure @out is zeroed.
 */
int dbx_meta_parse(const json_t *obj, enum dbx_shape shape,
		   struct dbx_meta *out);
/* The same from text (e.g. the Dropbox-API-Result header). */
int dbx_meta_parse_text(const char *text, size_t len, enum dbx_shape shape,
			struct dbx_meta *out);
/* Fills @e (zeroed first) from a file or folder @m. */
void dbx_meta_to_entry(const struct dbx_meta *m, struct backend_entry *e);

/*
 * A list_folder(/continue) reply of folder @folder (the full Dropbox path
 * that was listed, "" for the Dropbox root) as a backend page: files and
 * folders directly inside @folder, with valid names. Deleted entries,
 * unknown tags and non-downloadable files are skipped. Returns 0 or -EIO /
 * -ENOMEM; @page is written only on success.
 */
int dbx_parse_list_page(const char *body, size_t len, const char *folder,
			struct backend_page *page);

/*
 * A list_folder/continue reply of a recursive cursor on @root (the full
 * Dropbox path of the mount root) as a change page: every entry strictly
 * below @root, with ->path relative to it ("/a/b", lower case) and
 * ->deleted. Entries outside @root, the root itself and entries with an
 * invalid path component are dropped. Returns 0 or -EIO / -ENOMEM.
 */
int dbx_parse_changes_page(const char *body, size_t len, const char *root,
			   struct backend_page *page);

/*
 * A recursive list_folder(/continue) reply of a folder, for a proof of
 * what it holds: like dbx_parse_changes_page, but non-downloadable files
 * are kept (they are entries like any other), and page->skipped counts
 * the entries that had to be dropped (unknown kind, invalid name or
 * path): the folder holds something it cannot describe.
 */
int dbx_parse_tree_page(const char *body, size_t len, const char *root,
			struct backend_page *page);

/*
 * If @path_lower lies inside or at @prefix (whole components compared
 * folded, fold.h), returns a pointer to the rest of @path_lower ("" or
 * "/..."); else NULL.
 */
const char *dbx_path_strip(const char *path_lower, const char *prefix);
/* True if @a and @b are one name (or path) for Dropbox: fold_equal(). */
bool dbx_name_equal(const char *a, const char *b);
/* True if @s can be a Dropbox revision: 1 to BACKEND_REV_MAX letters and
 * digits. */
bool dbx_rev_ok(const char *s);

/* {"cursor": "..."} (get_latest_cursor). */
int dbx_parse_cursor(const char *body, size_t len, char **cursor);
/* {"session_id": "..."} (upload_session/start). */
int dbx_parse_session(const char *body, size_t len, char **session_id);
/* {"changes": bool, "backoff": n?}; *@backoff is 0 if absent. */
int dbx_parse_longpoll(const char *body, size_t len, bool *changes,
		       int *backoff);
/* users/get_space_usage: individual or team allocation; *@total is 0
 * for an unknown allocation kind. */
int dbx_parse_space(const char *body, size_t len, uint64_t *used,
		    uint64_t *total);
/* users/get_current_account: an object with a string account_id. */
int dbx_parse_account(const char *body, size_t len);
/* {"metadata": {...}} (create_folder_v2, delete_v2, move_v2, copy_v2). */
int dbx_parse_metadata_result(const char *body, size_t len,
			      enum dbx_shape shape, struct dbx_meta *out);
/* OAuth token reply: access_token and expires_in (0 if absent); also
 * refresh_token if @refresh is non-NULL (NULL in *@refresh if absent). */
int dbx_parse_token(const char *body, size_t len, char **access,
		    int64_t *expires_in, char **refresh);

/* A Dropbox error reply, translated. */
struct dbx_error {
	int err; /* negative errno */
	bool retry; /* too_many_requests / too_many_write_operations */
	bool expired; /* 401 expired_access_token */
	long retry_after; /* seconds from the body, or -1 */
	bool has_correct_offset; /* incorrect_offset */
	uint64_t correct_offset;
	char summary[160]; /* the tag chain, e.g. "path/conflict/file" */
};

/*
 * Translates HTTP @status and its @body (may be NULL) into @out. For 409
 * the "error" union is walked tag by tag (error_summary is not used):
 *   not_found -> ENOENT, not_folder -> ENOTDIR, not_file -> EISDIR,
 *   conflict -> EEXIST (conflict/file_ancestor -> ENOTDIR),
 *   insufficient_space / insufficient_quota -> ENOSPC,
 *   no_write_permission / restricted_content -> EACCES,
 *   disallowed_name / malformed_path / cant_move_folder_into_itself /
 *   duplicated_or_nested_paths -> EINVAL, too_many_write_operations /
 *   internal_error -> EAGAIN + retry, reset -> ESTALE, incorrect_offset ->
 *   EIO + correct_offset, lookup_failed/not_found (an upload session that
 *   expired or was consumed, not the path) -> EAGAIN, anything else -> EIO.
 * 401: EACCES (expired set for expired_access_token); 403: EACCES;
 * 429: EAGAIN + retry (+ retry_after); 5xx: EAGAIN + retry; 400 and the
 * rest: EIO. A malformed 409 body is EIO.
 */
void dbx_error_parse(long status, const char *body, size_t len,
		     struct dbx_error *out);
/* The same for one error value (a batch entry's "failure"). */
void dbx_error_from_json(const json_t *error, struct dbx_error *out);

/* OAuth error reply {"error": "invalid_grant", ...}: copies the error code
 * (sanitized to [a-z_]) to @code, or "" if there is none. */
void dbx_oauth_error(const char *body, size_t len, char *code, size_t codelen);

/*
 * finish_batch_v2 reply with @n entries expected: for each i, either
 * ok[i] and metas[i] (success; owned by the caller), or errs[i]. Returns
 * 0, or -EIO if the reply is malformed or has another number of entries
 * (then nothing is filled).
 */
int dbx_parse_batch(const char *body, size_t len, size_t n,
		    struct dbx_meta *metas, struct dbx_error *errs, bool *ok);

/* The state of a delete_batch job. */
enum dbx_job {
	DBX_JOB_ASYNC, /* launched: poll its id with delete_batch/check */
	DBX_JOB_IN_PROGRESS, /* check: not done yet */
	DBX_JOB_COMPLETE, /* per-entry results in @ok / @errs */
	DBX_JOB_FAILED, /* the whole batch failed: @failed says why */
};

#define DBX_JOB_ID_MAX 1024

/*
 * A files/delete_batch reply (@job non-NULL: the launch, which gives
 * {".tag":"async_job_id"} with the id in *@job, malloc'd, or "complete")
 * or a files/delete_batch/check reply (@job NULL: "in_progress",
 * "complete" or "failed"). For "complete", @n entries are expected, in
 * request order: ok[i] for success, else errs[i] is the entry's
 * DeleteError translated (path_lookup/not_found -> ENOENT, a parent_rev
 * that does not match -> EEXIST, too_many_write_operations -> retry). For
 * "failed", @failed gets the DeleteBatchError (too_many_write_operations:
 * retry the whole batch). Returns 0 and *@state, or -EIO for a malformed
 * reply, an unknown state or another number of entries.
 */
int dbx_parse_delete_job(const char *body, size_t len, size_t n,
			 enum dbx_job *state, char **job, bool *ok,
			 struct dbx_error *errs, struct dbx_error *failed);

#endif

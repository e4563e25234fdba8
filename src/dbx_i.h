/*
 * Private to the Dropbox backend's files (backend_dropbox.h):
 *   backend_dropbox.c  creation, the ops table, probe, listings, stat,
 *                      download, the change feed
 *   dbx_api.c          the call layer: every request and its retries,
 *                      backoff, Retry-After holds, tokens and their
 *                      refresh; paths and arguments; the batch gate
 *   dbx_upload.c       uploads: single, sessions, kept sessions, the
 *                      space gate, upload_batch (finish_batch_v2)
 *   dbx_ns.c           namespace changes: mkdir, remove, remove_batch
 *                      (delete_batch and its job), move, copy
 * Arrows point down: backend_dropbox.c uses the three others, dbx_upload.c
 * and dbx_ns.c use dbx_api.c, which uses none of them.
 */
#ifndef HFS_DBX_I_H
#define HFS_DBX_I_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "hfs/backend_api.h"
#include "hfs/backend_dropbox.h"
#include "hfs/dbx_json.h"
#include "hfs/hash.h"
#include "hfs/http.h"

/* Entries per files/delete_batch and per finish_batch_v2. */
#define DBX_BATCH_MAX 1000
/* Upload sessions kept for a later finish (see "Kept sessions" in
 * dbx_upload.c). */
#define DBX_KEPT_MAX 256

/* An upload session whose bytes the server holds but never committed. */
struct kept_session {
	char *sid; /* owned; NULL: a free slot */
	uint8_t hash[CHASH_LEN]; /* content hash of its bytes */
	uint64_t size;
	bool closed; /* finish_batch_v2 can commit it */
	int64_t since; /* monotonic s */
};

/* What we know of the remote's free space since an upload was refused for
 * the lack of it. */
struct space_state {
	bool short_of_space; /* an upload was refused with ENOSPC */
	uint64_t free_at_refusal; /* UINT64_MAX: unknown */
	uint64_t free_now; /* the last get_space_usage; UINT64_MAX: unknown */
	uint64_t checked_ms; /* monotonic ms of free_now; 0: never */
	unsigned refusals; /* in a row */
	uint64_t retry_at_ms; /* monotonic: try regardless of the space */
};

struct dbx {
	struct backend base; /* first, so a struct backend * converts */
	struct http_pool *pool;
	char *api_url; /* owned, no trailing slash */
	char *content_url; /* owned */
	char *notify_url; /* owned */
	char *root; /* owned: "/Huracan", or "" */
	struct dbx_tuning tune; /* set before the backend is shared */

	/* Credentials. refresh_token, app_key, app_secret are constant. */
	char *refresh_token; /* owned, secret; NULL: no refresh */
	char *app_key; /* owned */
	char *app_secret; /* owned, secret; may be NULL */
	pthread_mutex_t tok_lock;
	pthread_cond_t tok_cond; /* signals: a refresh finished */
	char *token; /* protected by tok_lock; secret */
	int64_t expiry; /* protected by tok_lock; monotonic s, 0:
			   unknown */
	int64_t refresh_at; /* protected by tok_lock; monotonic s when to
			       refresh ahead, 0: never */
	int64_t last_refresh; /* protected by tok_lock; monotonic s, 0:
				 none yet */
	unsigned tok_gen; /* protected by tok_lock */
	bool refreshing; /* protected by tok_lock */
	/* Refused credentials (see dbx_api.c); tok_lock. */
	int64_t auth_retry_at; /* monotonic s; 0: not refused */
	unsigned auth_fails;
	char auth_msg[256];

	/* Rate limiting shared by all threads. */
	pthread_mutex_t hold_lock;
	uint64_t hold_until; /* protected by hold_lock; monotonic ms */

	/* Kept upload sessions and the space state. */
	pthread_mutex_t kept_lock;
	struct kept_session kept[DBX_KEPT_MAX]; /* protected by kept_lock */
	struct space_state space; /* protected by kept_lock */

	/* Batch commits run one at a time. */
	pthread_mutex_t batch_lock;
	pthread_cond_t batch_cond; /* signals: batch_busy went false */
	bool batch_busy; /* protected by batch_lock */

	bool locks_ok;
};

enum dbx_host { HOST_API, HOST_CONTENT, HOST_NOTIFY };
enum dbx_style {
	STYLE_RPC,
	STYLE_UPLOAD,
	STYLE_DOWNLOAD,
	STYLE_LONGPOLL, /* RPC on the notify host, no Authorization */
	STYLE_OAUTH, /* form POST to /oauth2/token, no Authorization */
};

/* One API call: what to send, and what came back. */
struct call {
	const char *route; /* "files/upload"; unused for STYLE_OAUTH */
	enum dbx_host host;
	enum dbx_style style;
	const char *what; /* the path concerned, for messages; may be NULL */
	const char *arg; /* JSON: the RPC body or the Dropbox-API-Arg */
	const char *form; /* STYLE_OAUTH body (secret) */
	/* Upload body: @len bytes of @fd at @off (fd < 0: empty). */
	int fd;
	uint64_t off, len;
	/* Download sink (see struct http_request). */
	int sink_fd;
	uint64_t sink_off, range_start, range_len;
	bool range;
	struct chash *hash;
	uint64_t got; /* bytes written to the sink over all attempts */
	/* Called after an attempt that wrote @got bytes and broke, before
	 * the rest is asked for; may change @arg. Returns 0 or -errno. */
	int (*resume)(struct call *c, void *ud);
	void *resume_ud;
	long timeout_s; /* STYLE_LONGPOLL */
	unsigned max_attempts; /* 0: the backend's */
	unsigned transport_retries; /* out: attempts lost to the network */
	int transport_rc; /* out: http_perform's error of a call that
			     failed without a reply, else 0 */
	struct http_response resp; /* out: the last reply */
	struct dbx_error err; /* out: the translated error */
};

static inline struct dbx *dbx_of(struct backend *be)
{
	return (struct dbx *)be;
}

/* ---- dbx_api.c: calls ---- */

/* Prepares @c for one call of @route (c->what: @what, for messages). */
void dbx_api_call_init(struct call *c, const char *route, enum dbx_host host,
		       enum dbx_style style, const char *what);
/* Releases the reply @c holds. */
void dbx_api_call_release(struct call *c);
/*
 * Makes call @c, with the retries, holds and token refreshes of
 * dbx_api.c. Returns 0 on a 2xx (and, for a download, a 416 the caller
 * checks in c->resp.status), or a negative errno with the detail in
 * backend_last_error() and, if Dropbox answered, c->err.
 */
int dbx_api_call(struct dbx *db, struct call *c);

/* Monotonic time, in ms and in s. */
uint64_t dbx_api_now_ms(void);
int64_t dbx_api_now_s(void);
/* 64 random bits (jitter, not secrets). */
uint64_t dbx_api_rand64(void);
/* Sleeps @ms, in slices, giving up early if the thread is cancelled
 * (http_set_thread_cancel). */
void dbx_api_sleep_ms(uint64_t ms);
/* The pause before retry number @n (0-based), with jitter. */
uint64_t dbx_api_backoff_ms(const struct dbx *db, unsigned n);
/* Wipes and frees secret *@s, and sets it to NULL. */
void dbx_api_free_secret(char **s);

/* ---- dbx_api.c: paths and arguments ---- */

/* "" (with @allow_root) or "/c1/c2..." of names Dropbox accepts. */
bool dbx_api_path_ok(const char *path, bool allow_root);
/* The Dropbox path of backend path @path, malloc'd, in *@out. */
int dbx_api_full_path(struct dbx *db, const char *path, bool allow_root,
		      char **out);
/* The last component of @path. */
const char *dbx_api_base_name(const char *path);
/* Serializes @obj (stolen) as an RPC body or, if @header, a header arg. */
char *dbx_api_encode(json_t *obj, bool header);
/* get_metadata of Dropbox path @full into @m. */
int dbx_api_get_meta(struct dbx *db, const char *full, const char *what,
		     struct dbx_meta *m);
/* users/get_space_usage: used and allocated bytes (@max_attempts 0: the
 * backend's). */
int dbx_api_space_usage(struct dbx *db, unsigned max_attempts, uint64_t *used,
			uint64_t *total);
/* Batch commits and batch deletes of one backend run one at a time:
 * enter waits until no other batch runs (batch_lock, batch_busy). */
void dbx_api_batch_enter(struct dbx *db);
void dbx_api_batch_leave(struct dbx *db);

/* ---- dbx_upload.c, dbx_ns.c: the methods of backend_api.h ---- */

int dbx_upload(struct backend *be, const struct backend_upload *up,
	       struct backend_entry *out);
int dbx_upload_batch(struct backend *be, const struct backend_upload *ups,
		     size_t n, struct backend_entry *outs, int *rcs,
		     char (*errs)[BACKEND_ERROR_MAX]);
int dbx_ns_mkdir(struct backend *be, const char *path);
int dbx_ns_remove(struct backend *be, const char *path);
int dbx_ns_remove_batch(struct backend *be, const struct backend_delete *dels,
			size_t n, int *rcs);
int dbx_ns_move(struct backend *be, const char *from, const char *to);
int dbx_ns_copy(struct backend *be, const char *from, const char *to);

#endif

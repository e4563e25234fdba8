/*
 * The "dropbox" backend (see dropbox.h, backend.h, dropbox-api.md).
 *
 * Calls. Every request goes through dbx_call(), the one place that
 * retries. An attempt ends in one of these ways:
 *   2xx                          -> done
 *   transport failure, transient -> back off, try again
 *   401 expired_access_token     -> refresh once, try again (not counted)
 *   429                          -> wait Retry-After (header, else the
 *                                   body's retry_after, else 1 s), again
 *   5xx, 409 too_many_write_operations or internal_error
 *                                -> back off, try again
 *   anything else                -> translated error (dbx_error_parse)
 * Backoff doubles from backoff_base_ms to backoff_cap_ms with jitter
 * (each pause is between half and all of its nominal length). A call
 * stops after max_attempts attempts or once its pauses would exceed
 * budget_ms, and then reports -EAGAIN. A Retry-After also holds back the
 * other threads' calls until it has passed (hold_until). A 400 is a bug
 * on our side: its plain-text body goes to backend_set_error (with any
 * secret masked), and it is not retried. Transport failures are -EAGAIN,
 * never -ENOENT.
 *
 * Bodies are re-sendable: uploads stream from the caller's descriptor with
 * pread at absolute offsets. A download that breaks after some bytes
 * resumes with a Range request for the rest, pinned to the revision the
 * first reply named ("rev:<rev>"), so the bytes cannot change under it;
 * the content hash of a whole download is computed while it streams.
 *
 * Large uploads (> single_max) use an upload session, state by state:
 *   START   upload_session/start with the first chunk -> APPEND (offset)
 *   APPEND  append_v2 at offset -> offset += chunk; at size -> FINISH
 *           409 incorrect_offset N (a lost reply: the server has N
 *           bytes) -> APPEND at N, never from zero
 *   FINISH  finish with an empty body -> done
 *           incorrect_offset N < size -> APPEND at N
 *           lookup_failed/not_found (the session is gone: typically the
 *           commit happened but its reply was lost, and libcurl or we sent
 *           it again) -> get_metadata; done if the file has our content
 *           hash and size, else -EAGAIN (a kept session: START again)
 *           another error -> the session is kept (see "Kept sessions")
 * A kept session of the same bytes starts at FINISH with offset = size.
 * Invariant: 0 <= offset <= size; each chunk ends on a multiple of chunk.
 *
 * upload_batch: one upload_session/start (close: true) per small file
 * (or a kept session, closed if need be), then one finish_batch_v2 per
 * 1000 files. Each entry is judged on its own, with its own error detail:
 * too_many_write_operations goes into a further batch after a backoff,
 * lookup_failed/not_found is checked with get_metadata as for FINISH,
 * other failures keep their session. Batch commits of one backend run one
 * at a time (batch_busy).
 *
 * Before any upload, space_gate() holds it back while Dropbox is out of
 * space (see "Space" below).
 *
 * remove_batch: one files/delete_batch per 1000 entries; its async job is
 * polled with delete_batch/check after 100 ms, the delay doubling up to
 * 5 s, for at most 10 minutes. A job that failed as a whole
 * (too_many_write_operations), was lost or ran too long is submitted
 * again after a backoff, and so are the entries that failed with
 * too_many_write_operations, for up to max_attempts rounds; every other
 * entry is judged on its own. Batch deletes share batch_busy with batch
 * commits. list_tree is a recursive list_folder that includes
 * non-downloadable files, so that a proof of what a folder holds misses
 * nothing.
 *
 * Tokens: the current access token, its expiry and a generation number
 * live under tok_lock. One thread refreshes at a time (refreshing); the
 * others wait on tok_cond. After a 401 expired_access_token (or
 * invalid_access_token, with a refresh token at hand) a caller asks for a
 * refresh only if the token it used is still the current one. A token is
 * refreshed ahead of its expiry by 300 s, or by half its lifetime if that
 * is shorter, and never twice within DBX_REFRESH_SPACING seconds (a token
 * that dies sooner waits). Refused credentials (invalid_grant, a 401 for
 * a token we cannot replace) will not pass by themselves: every call then
 * fails at once with the same message, without a request, until a retry
 * time that doubles from 1 min to 1 h (auth_retry_at).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "hfs/backend_api.h"
#include "hfs/config.h"
#include "hfs/dbx_json.h"
#include "hfs/dropbox.h"
#include "hfs/hash.h"
#include "hfs/http.h"

#define MiB ((uint64_t)1024 * 1024)
#define DBX_LIST_LIMIT 2000
#define DBX_BATCH_MAX 1000
#define DBX_REFRESH_MARGIN 300
#define DBX_REFRESH_SPACING 5
#define DBX_AUTH_BACKOFF_MIN 60
#define DBX_AUTH_BACKOFF_MAX 3600
#define DBX_LONGPOLL_MIN 30
#define DBX_LONGPOLL_MAX 480
#define DBX_LONGPOLL_SLACK (90 + 30)
#define DBX_OFFSET_RECOVERIES 64
#define DBX_HOLD_MAX_MS 3600000u
/* Upload sessions kept for a later finish (see "Kept sessions"). */
#define DBX_KEPT_MAX 256
#define DBX_KEPT_TTL_S (6 * 86400) /* Dropbox keeps them 7 days */
/* While Dropbox is out of space: get_space_usage at most this often, and
 * a retry regardless of it after a pause doubling between these. */
#define DBX_SPACE_POLL_MS 10000
#define DBX_SPACE_BACKOFF_MIN_S 60
#define DBX_SPACE_BACKOFF_MAX_S 3600
#define DBX_JOB_POLL_MS 100
#define DBX_JOB_POLL_MAX_MS 5000
#define DBX_JOB_BUDGET_MS 600000
#define DBX_JOB_BUSY 1 /* delete_chunk: submit the batch again later */

static const struct dbx_tuning dbx_defaults = {
	.max_attempts = 6,
	.backoff_base_ms = 1000,
	.backoff_cap_ms = 16000,
	.budget_ms = 60000,
	.single_max = 16 * MiB,
	.chunk = 32 * MiB,
};

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
	/* Refused credentials (see the top of the file); tok_lock. */
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

static const struct backend_ops dbx_ops;

static struct dbx *db_of(struct backend *be)
{
	return (struct dbx *)be;
}

static void call_init(struct call *c, const char *route, enum dbx_host host,
		      enum dbx_style style, const char *what)
{
	memset(c, 0, sizeof(*c));
	c->route = route;
	c->host = host;
	c->style = style;
	c->what = what;
	c->fd = -1;
	c->sink_fd = -1;
	c->resp.retry_after = -1;
}

static void call_release(struct call *c)
{
	http_response_release(&c->resp);
}

/* ---- time, randomness, sleeping ---- */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t rand64(void)
{
	uint64_t r;
	struct timespec ts;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) == (ssize_t)sizeof(r))
		return r;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^
	       (uint64_t)ts.tv_sec;
}

/* Sleeps @ms, in slices, giving up early if the thread is cancelled
 * (http_set_thread_cancel). */
static void sleep_ms(uint64_t ms)
{
	while (ms > 0 && !http_thread_cancelled()) {
		uint64_t slice = ms < 100 ? ms : 100;
		struct timespec ts = {.tv_sec = 0,
				      .tv_nsec = (long)slice * 1000000};

		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
		ms -= slice;
	}
}

/* The pause before retry number @n (0-based), with jitter. */
static uint64_t backoff_ms(const struct dbx *db, unsigned n)
{
	uint64_t d = db->tune.backoff_base_ms;

	while (n-- && d < db->tune.backoff_cap_ms)
		d *= 2;
	if (d > db->tune.backoff_cap_ms)
		d = db->tune.backoff_cap_ms;
	if (d < 2)
		return d;
	return d / 2 + rand64() % (d / 2 + 1);
}

/* ---- secrets ---- */

/*
 * Copies at most ~300 bytes of server text @s (@len bytes) to @out as
 * printable ASCII, with every configured secret masked.
 */
static void scrub(struct dbx *db, const char *s, size_t len, char *out,
		  size_t outlen)
{
	const char *secrets[4];
	size_t n = 0, i, k, sl;
	char tok[DBX_TOKEN_MAX + 1] = "";

	pthread_mutex_lock(&db->tok_lock);
	if (db->token && strlen(db->token) <= DBX_TOKEN_MAX)
		snprintf(tok, sizeof(tok), "%s", db->token);
	pthread_mutex_unlock(&db->tok_lock);
	secrets[0] = tok;
	secrets[1] = db->refresh_token;
	secrets[2] = db->app_secret;
	secrets[3] = NULL;
	if (outlen == 0)
		return;
	if (!s)
		len = 0;
	for (i = 0; i < len && n + 1 < outlen && n < 300;) {
		for (k = 0; k < 3; k++) {
			if (!secrets[k] || strlen(secrets[k]) < 4)
				continue;
			sl = strlen(secrets[k]);
			if (len - i >= sl && memcmp(s + i, secrets[k], sl) == 0)
				break;
		}
		if (k < 3) {
			const char *mask = "(secret)";

			for (; *mask && n + 1 < outlen; mask++)
				out[n++] = *mask;
			i += strlen(secrets[k]);
			continue;
		}
		out[n++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
		i++;
	}
	out[n] = '\0';
	explicit_bzero(tok, sizeof(tok));
}

/* ---- tokens ---- */

static int64_t now_s(void)
{
	return (int64_t)(now_ms() / 1000);
}

/*
 * Mints a new access token from the refresh token. Called with
 * db->refreshing set by the caller and tok_lock NOT held.
 */
static int dbx_call(struct dbx *db, struct call *c);

static int do_refresh(struct dbx *db, char **token, int64_t *expires_in)
{
	char code[64];
	char *form = NULL;
	struct call c;
	int rc;

	rc = http_form_add(&form, "grant_type", "refresh_token");
	if (rc == 0)
		rc = http_form_add(&form, "refresh_token", db->refresh_token);
	if (rc == 0)
		rc = http_form_add(&form, "client_id", db->app_key);
	if (rc == 0 && db->app_secret)
		rc = http_form_add(&form, "client_secret", db->app_secret);
	if (rc < 0)
		goto out;
	call_init(&c, "oauth2/token", HOST_API, STYLE_OAUTH, NULL);
	c.form = form;
	rc = dbx_call(db, &c);
	if (rc == 0) {
		rc = dbx_parse_token(c.resp.body, c.resp.body_len, token,
				     expires_in, NULL);
		if (rc < 0)
			backend_set_error(
				"malformed reply of the Dropbox token "
				"endpoint");
	} else if (rc == -EACCES) {
		dbx_oauth_error(c.resp.body, c.resp.body_len, code,
				sizeof(code));
		if (strcmp(code, "invalid_grant") == 0)
			backend_set_error("refresh token revoked or invalid; "
					  "run huracanfs auth");
		else
			backend_set_error("Dropbox refused the app "
					  "credentials (%s); check "
					  "dropbox.app_key and app_secret",
					  code[0] ? code : "no reason given");
	}
	call_release(&c);
out:
	if (form) {
		explicit_bzero(form, strlen(form));
		free(form);
	}
	return rc;
}

/*
 * Credentials were refused (tok_lock held): no call gets a token before
 * a retry time that doubles from DBX_AUTH_BACKOFF_MIN to
 * DBX_AUTH_BACKOFF_MAX; until then they fail with @msg.
 */
static void auth_refused_locked(struct dbx *db, const char *msg)
{
	int64_t d = DBX_AUTH_BACKOFF_MIN;

	for (unsigned i = 0; i < db->auth_fails && d < DBX_AUTH_BACKOFF_MAX;
	     i++)
		d *= 2;
	if (d > DBX_AUTH_BACKOFF_MAX)
		d = DBX_AUTH_BACKOFF_MAX;
	db->auth_fails++;
	db->auth_retry_at = now_s() + d;
	snprintf(db->auth_msg, sizeof(db->auth_msg), "%s", msg);
}

/* A call was refused with token generation @gen, which cannot be
 * replaced: see auth_refused_locked. */
static void auth_refused(struct dbx *db, unsigned gen, const char *msg)
{
	pthread_mutex_lock(&db->tok_lock);
	if (db->tok_gen == gen && !db->refreshing)
		auth_refused_locked(db, msg);
	pthread_mutex_unlock(&db->tok_lock);
}

/* A call with our token succeeded: the credentials are good again. */
static void auth_accepted(struct dbx *db)
{
	pthread_mutex_lock(&db->tok_lock);
	db->auth_fails = 0;
	db->auth_retry_at = 0;
	pthread_mutex_unlock(&db->tok_lock);
}

/*
 * Copies the current access token to *@out (malloc'd, secret) and its
 * generation to *@gen, refreshing it first if it is missing, due for an
 * early refresh, expired, or (@force) still the generation @stale_gen
 * that was refused. While credentials are refused (auth_retry_at) it
 * fails at once with -EACCES.
 */
static int get_token(struct dbx *db, bool force, unsigned stale_gen, char **out,
		     unsigned *gen)
{
	char *fresh = NULL;
	int64_t expires_in = 0, now, wait, margin;
	bool need, usable;
	int rc = 0;

	pthread_mutex_lock(&db->tok_lock);
	for (;;) {
		while (db->refreshing)
			pthread_cond_wait(&db->tok_cond, &db->tok_lock);
		now = now_s();
		if (db->auth_retry_at && now < db->auth_retry_at) {
			backend_set_error("%s", db->auth_msg);
			rc = -EACCES;
			break;
		}
		if (force && db->tok_gen != stale_gen)
			force = false; /* another thread replaced it */
		usable = db->token && !force &&
			 (!db->expiry || now < db->expiry);
		need = !usable || (db->refresh_at && now >= db->refresh_at);
		if (!need || !db->refresh_token)
			break;
		wait = db->last_refresh
			       ? db->last_refresh + DBX_REFRESH_SPACING - now
			       : 0;
		if (wait > 0 && usable)
			break; /* refreshed a moment ago; this one still works
				*/
		db->refreshing = true;
		pthread_mutex_unlock(&db->tok_lock);
		if (wait > 0)
			sleep_ms((uint64_t)wait * 1000);
		rc = do_refresh(db, &fresh, &expires_in);
		pthread_mutex_lock(&db->tok_lock);
		db->refreshing = false;
		now = now_s();
		db->last_refresh = now;
		pthread_cond_broadcast(&db->tok_cond);
		if (rc == -EACCES) {
			auth_refused_locked(db, backend_last_error());
			break;
		}
		if (rc < 0 && usable) {
			/* An early refresh failed for a passing reason:
			 * the current token is still good for a while. */
			rc = 0;
			break;
		}
		if (rc < 0)
			break;
		if (db->token) {
			explicit_bzero(db->token, strlen(db->token));
			free(db->token);
		}
		db->token = fresh;
		fresh = NULL;
		margin = expires_in / 2 < DBX_REFRESH_MARGIN
				 ? expires_in / 2
				 : DBX_REFRESH_MARGIN;
		db->expiry = expires_in > 0 ? now + expires_in : 0;
		db->refresh_at = expires_in > 0 ? now + expires_in - margin : 0;
		db->tok_gen++;
		db->auth_fails = 0;
		db->auth_retry_at = 0;
		force = false;
	}
	if (rc == 0 && !db->token) {
		backend_set_error("no Dropbox access token");
		rc = -EACCES;
	}
	if (rc == 0 && force) {
		/* Refused, and nothing to refresh it with. */
		rc = -EACCES;
	}
	if (rc == 0) {
		*out = strdup(db->token);
		*gen = db->tok_gen;
		if (!*out)
			rc = -ENOMEM;
	}
	pthread_mutex_unlock(&db->tok_lock);
	return rc;
}

/* ---- the call loop ---- */

/* Waits out a Retry-After of another call, within @budget_left ms. */
static int wait_hold(struct dbx *db, uint64_t *slept, uint64_t budget)
{
	uint64_t until, now;

	pthread_mutex_lock(&db->hold_lock);
	until = db->hold_until;
	pthread_mutex_unlock(&db->hold_lock);
	now = now_ms();
	if (until <= now)
		return 0;
	if (*slept + (until - now) > budget) {
		backend_set_error("Dropbox rate limit: asked to wait %" PRIu64
				  " s",
				  (until - now + 999) / 1000);
		return -EAGAIN;
	}
	sleep_ms(until - now);
	*slept += until - now;
	return 0;
}

static void set_hold(struct dbx *db, uint64_t ms)
{
	uint64_t until = now_ms() + ms;

	pthread_mutex_lock(&db->hold_lock);
	if (until > db->hold_until)
		db->hold_until = until;
	pthread_mutex_unlock(&db->hold_lock);
}

static const char *host_url(const struct dbx *db, enum dbx_host h)
{
	switch (h) {
	case HOST_CONTENT:
		return db->content_url;
	case HOST_NOTIFY:
		return db->notify_url;
	default:
		return db->api_url;
	}
}

/* Builds the request of one attempt. Owns *@auth and *@arg_hdr. */
static int prepare(struct dbx *db, struct call *c, const char *token,
		   char **url, char **auth, char **arg_hdr,
		   const char *headers[4], struct http_request *req)
{
	const char *base = host_url(db, c->host);
	size_t n = 0;

	http_request_init(req);
	*url = NULL;
	*auth = NULL;
	*arg_hdr = NULL;
	if (c->style == STYLE_OAUTH) {
		if (asprintf(url, "%s/oauth2/token", base) < 0)
			*url = NULL;
	} else if (asprintf(url, "%s/2/%s", base, c->route) < 0) {
		*url = NULL;
	}
	if (!*url)
		return -ENOMEM;
	if (token) {
		if (asprintf(auth, "Authorization: Bearer %s", token) < 0) {
			*auth = NULL;
			return -ENOMEM;
		}
		headers[n++] = *auth;
	}
	if (c->style == STYLE_UPLOAD || c->style == STYLE_DOWNLOAD) {
		if (asprintf(arg_hdr, "Dropbox-API-Arg: %s", c->arg) < 0) {
			*arg_hdr = NULL;
			return -ENOMEM;
		}
		headers[n++] = *arg_hdr;
	}
	headers[n] = NULL;
	req->url = *url;
	req->headers = headers;
	switch (c->style) {
	case STYLE_RPC:
	case STYLE_LONGPOLL:
		req->content_type = "application/json";
		req->body = c->arg ? c->arg : "null";
		req->body_len = strlen(req->body);
		req->kind = c->style == STYLE_RPC ? HTTP_RPC : HTTP_LONGPOLL;
		req->timeout_s = c->timeout_s;
		break;
	case STYLE_OAUTH:
		req->content_type = "application/x-www-form-urlencoded";
		req->body = c->form;
		req->body_len = strlen(c->form);
		break;
	case STYLE_UPLOAD:
		req->content_type = "application/octet-stream";
		req->body_fd = c->fd;
		req->body_fd_off = c->off;
		req->body_fd_len = c->fd >= 0 ? c->len : 0;
		req->kind = HTTP_TRANSFER;
		break;
	case STYLE_DOWNLOAD:
		req->content_type = NULL;
		req->sink_fd = c->sink_fd;
		req->sink_off = c->sink_off;
		req->range_start = c->range_start;
		req->range_len = c->range_len;
		req->range = c->range;
		req->hash = c->hash;
		req->kind = HTTP_TRANSFER;
		break;
	}
	return 0;
}

static void free_secret(char **s)
{
	if (*s) {
		explicit_bzero(*s, strlen(*s));
		free(*s);
		*s = NULL;
	}
}

/* Moves a broken download's progress forward so the next attempt asks
 * only for the rest. */
static int advance_sink(struct call *c)
{
	uint64_t w = c->resp.written;
	int rc;

	if (c->style != STYLE_DOWNLOAD || w == 0)
		return 0;
	c->got += w;
	c->sink_off += w;
	c->range_start += w;
	if (c->range_len)
		c->range_len -= w;
	c->range = true;
	if (c->resume) {
		rc = c->resume(c, c->resume_ud);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static const char *what_of(const struct call *c)
{
	return c->what ? c->what : "";
}

static int dbx_call(struct dbx *db, struct call *c)
{
	const char *headers[4];
	struct http_request req;
	char *url = NULL, *auth = NULL, *arg_hdr = NULL, *token = NULL;
	char text[320];
	unsigned attempts = 0, gen = 0;
	unsigned max =
		c->max_attempts ? c->max_attempts : db->tune.max_attempts;
	/* A user is waiting (http_set_thread_quick): two tries, short
	 * pauses; the index answers if Dropbox does not. */
	if (http_thread_quick() && max > 2)
		max = 2;
	bool auth_needed =
		c->style != STYLE_OAUTH && c->style != STYLE_LONGPOLL;
	bool refreshed = false, retry;
	uint64_t slept = 0, wait;
	long status;
	int rc;

	for (;;) {
		rc = wait_hold(db, &slept, db->tune.budget_ms);
		if (rc < 0)
			return rc;
		if (auth_needed) {
			rc = get_token(db, false, 0, &token, &gen);
			if (rc < 0)
				return rc;
		}
		rc = prepare(db, c, token, &url, &auth, &arg_hdr, headers,
			     &req);
		if (rc == 0)
			rc = http_perform(db->pool, &req, &c->resp);
		free_secret(&auth);
		free_secret(&token);
		free(arg_hdr);
		arg_hdr = NULL;
		free(url);
		url = NULL;
		attempts++;

		if (rc < 0) {
			c->transport_rc = rc;
			if (!http_transient(rc)) {
				backend_set_error("%s %s: %s", c->route,
						  what_of(c), c->resp.error);
				return rc == -ECONNABORTED ? -EAGAIN : rc;
			}
			c->transport_retries++;
			wait = backoff_ms(db, attempts - 1);
			backend_set_error("%s %s: Dropbox unreachable: %s",
					  c->route, what_of(c), c->resp.error);
			if (attempts >= max ||
			    slept + wait > db->tune.budget_ms)
				return -EAGAIN;
			rc = advance_sink(c);
			if (rc < 0)
				return rc;
			sleep_ms(wait);
			slept += wait;
			continue;
		}

		status = c->resp.status;
		if (status >= 200 && status <= 299) {
			if (auth_needed)
				auth_accepted(db);
			return 0;
		}
		if (c->style == STYLE_DOWNLOAD && status == 416)
			return 0; /* the caller checks the status */
		dbx_error_parse(status, c->resp.body, c->resp.body_len,
				&c->err);

		if (c->style == STYLE_OAUTH && status >= 400 && status < 500 &&
		    status != 429)
			return -EACCES;
		if (status == 401) {
			/* The token itself (not a scope or a route) was
			 * refused: a fresh one may do. */
			bool token_bad = c->err.expired ||
					 strcmp(c->err.summary,
						"invalid_access_token") == 0;

			if (token_bad && db->refresh_token && !refreshed) {
				refreshed = true;
				rc = get_token(db, true, gen, &token, &gen);
				free_secret(&token);
				if (rc < 0)
					return rc;
				attempts--;
				continue;
			}
			backend_set_error("Dropbox refused the access token "
					  "(%s)",
					  c->err.summary);
			if (token_bad)
				auth_refused(db, gen, backend_last_error());
			return -EACCES;
		}
		retry = c->err.retry;
		if (retry) {
			if (status == 429) {
				long ra = c->resp.retry_after >= 0
						  ? c->resp.retry_after
						  : c->err.retry_after;

				wait = ra >= 0 ? (uint64_t)ra * 1000 : 1000;
				if (wait > DBX_HOLD_MAX_MS)
					wait = DBX_HOLD_MAX_MS;
				set_hold(db, wait);
			} else {
				wait = backoff_ms(db, attempts - 1);
			}
			backend_set_error("%s %s: %s (HTTP %ld), gave up after "
					  "%u attempts",
					  c->route, what_of(c), c->err.summary,
					  status, attempts);
			if (attempts >= max ||
			    slept + wait > db->tune.budget_ms)
				return -EAGAIN;
			if (status != 429) {
				sleep_ms(wait);
				slept += wait;
			}
			continue;
		}
		if (status == 400) {
			scrub(db, c->resp.body, c->resp.body_len, text,
			      sizeof(text));
			backend_set_error("%s %s: bad request: %s", c->route,
					  what_of(c), text);
			return -EIO;
		}
		backend_set_error("%s %s: %s", c->route, what_of(c),
				  c->err.summary);
		return c->err.err;
	}
}

/* ---- paths and arguments ---- */

/* "" (with @allow_root) or "/c1/c2..." of names Dropbox accepts. */
static bool path_ok(const char *path, bool allow_root)
{
	return backend_path_ok(path, allow_root, backend_name_ok);
}

/* The Dropbox path of backend path @path, malloc'd, in *@out. */
static int full_path(struct dbx *db, const char *path, bool allow_root,
		     char **out)
{
	if (!path_ok(path, allow_root)) {
		backend_set_error("invalid remote path \"%s\"",
				  path ? path : "(null)");
		return -EINVAL;
	}
	if (strlen(db->root) + strlen(path) > DBX_PATH_MAX) {
		backend_set_error("remote path too long: \"%s\"", path);
		return -ENAMETOOLONG;
	}
	if (asprintf(out, "%s%s", db->root, path) < 0) {
		*out = NULL;
		return -ENOMEM;
	}
	return 0;
}

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

static bool rev_ok(const char *s)
{
	size_t n = 0;

	for (; *s; s++, n++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') ||
		      (*s >= 'A' && *s <= 'Z')))
			return false;
	return n > 0 && n <= BACKEND_REV_MAX;
}

/* Serializes @obj (stolen) as an RPC body or, if @header, a header arg. */
static char *encode(json_t *obj, bool header)
{
	char *s;

	if (!obj)
		return NULL;
	s = header ? dbx_json_header_arg(obj) : json_dumps(obj, JSON_COMPACT);
	json_decref(obj);
	return s;
}

/* CommitInfo of an upload of @up to Dropbox path @full. NULL: ENOMEM or
 * invalid UTF-8. */
static json_t *commit_info(const char *full, const struct backend_upload *up)
{
	char when[DBX_TIME_LEN + 1];
	json_t *mode;

	dbx_time_format(up->mtime, when);
	if (up->parent_rev)
		mode = json_pack("{s:s, s:s}", ".tag", "update", "update",
				 up->parent_rev);
	else
		mode = json_string("overwrite");
	if (!mode)
		return NULL;
	return json_pack("{s:s, s:o, s:b, s:s, s:b, s:b}", "path", full, "mode",
			 mode, "autorename", up->autorename, "client_modified",
			 when, "mute", 1, "strict_conflict", 0);
}

/* ---- probe ---- */

static int dbx_probe(struct backend *be)
{
	struct dbx *db = db_of(be);
	char detail[400];
	struct call c;
	int rc;

	call_init(&c, "users/get_current_account", HOST_API, STYLE_RPC, NULL);
	c.max_attempts = 2;
	rc = dbx_call(db, &c);
	if (rc == 0 && dbx_parse_account(c.resp.body, c.resp.body_len) < 0) {
		backend_set_error("users/get_current_account: malformed reply");
		rc = -EIO;
	}
	if (rc == -EACCES) {
		snprintf(detail, sizeof(detail), "%s", backend_last_error());
		backend_set_error("Verify Dropbox token is valid: %s", detail);
	} else if (rc < 0 && c.transport_rc == -ECONNABORTED) {
		/* Not a network that is down: a server we do not trust, or a
		 * CA file we cannot use. That will not pass by itself. */
		const char *host = db->api_url + 8; /* after "https://" */
		size_t hlen = strcspn(host, "/");

		snprintf(detail, sizeof(detail), "%s", c.resp.error);
		backend_set_error(
			"TLS certificate of %.*s failed verification: "
			"%s; check huracanfs.ca_file and "
			"huracanfs.api_url",
			(int)hlen, host, detail);
		rc = -ECONNABORTED;
	}
	call_release(&c);
	return rc;
}

/* Creates the mount root folder; an existing one is fine. */
static int ensure_root(struct dbx *db)
{
	struct call c;
	char *arg;
	int rc;

	if (!db->root[0])
		return 0;
	arg = encode(json_pack("{s:s, s:b}", "path", db->root, "autorename", 0),
		     false);
	if (!arg)
		return -ENOMEM;
	call_init(&c, "files/create_folder_v2", HOST_API, STYLE_RPC, db->root);
	c.arg = arg;
	rc = dbx_call(db, &c);
	if (rc == -EEXIST)
		rc = 0;
	call_release(&c);
	free(arg);
	return rc;
}

/* ---- list, stat ---- */

static int dbx_list(struct backend *be, const char *path, const char *cursor,
		    struct backend_page *page)
{
	struct dbx *db = db_of(be);
	char *full = NULL, *arg = NULL;
	bool created = false;
	struct call c;
	int rc;

	rc = full_path(db, path, true, &full);
	if (rc < 0)
		return rc;
	if (cursor)
		arg = encode(json_pack("{s:s}", "cursor", cursor), false);
	else
		arg = encode(json_pack("{s:s, s:b, s:b, s:b, s:i}", "path",
				       full, "recursive", 0, "include_deleted",
				       0, "include_non_downloadable_files", 0,
				       "limit", DBX_LIST_LIMIT),
			     false);
	if (!arg) {
		free(full);
		return -ENOMEM;
	}
again:
	call_init(&c,
		  cursor ? "files/list_folder/continue" : "files/list_folder",
		  HOST_API, STYLE_RPC, path[0] ? path : "/");
	c.arg = arg;
	rc = dbx_call(db, &c);
	if (rc == -ENOENT && !cursor && !path[0] && !created) {
		/* The mount root does not exist yet: an empty folder. */
		call_release(&c);
		created = true;
		rc = ensure_root(db);
		if (rc == 0)
			goto again;
		goto out;
	}
	if (rc == 0) {
		rc = dbx_parse_list_page(c.resp.body, c.resp.body_len, full,
					 page);
		if (rc == -EIO)
			backend_set_error("%s %s: malformed reply", c.route,
					  path);
	}
	call_release(&c);
out:
	free(arg);
	free(full);
	return rc;
}

/* get_metadata of Dropbox path @full into @m. */
static int get_meta(struct dbx *db, const char *full, const char *what,
		    struct dbx_meta *m)
{
	struct call c;
	char *arg;
	int rc;

	arg = encode(
		json_pack("{s:s, s:b}", "path", full, "include_deleted", 0),
		false);
	if (!arg)
		return -ENOMEM;
	call_init(&c, "files/get_metadata", HOST_API, STYLE_RPC, what);
	c.arg = arg;
	rc = dbx_call(db, &c);
	if (rc == 0) {
		rc = dbx_meta_parse_text(c.resp.body, c.resp.body_len,
					 DBX_TAGGED, m);
		if (rc == 0 && m->kind == DBX_DELETED) {
			dbx_meta_release(m);
			rc = -ENOENT;
		} else if (rc == 0 && (m->kind == DBX_OTHER || !m->name_ok)) {
			dbx_meta_release(m);
			backend_set_error("files/get_metadata %s: unusable "
					  "entry",
					  what);
			rc = -EIO;
		} else if (rc == -EIO) {
			backend_set_error("files/get_metadata %s: malformed "
					  "reply",
					  what);
		}
	}
	call_release(&c);
	free(arg);
	return rc;
}

static int dbx_stat(struct backend *be, const char *path,
		    struct backend_entry *out)
{
	struct dbx *db = db_of(be);
	struct dbx_meta m;
	char *full;
	int rc;

	rc = full_path(db, path, false, &full);
	if (rc < 0)
		return rc;
	rc = get_meta(db, full, path, &m);
	if (rc == 0) {
		dbx_meta_to_entry(&m, out);
		dbx_meta_release(&m);
	}
	free(full);
	return rc;
}

/* ---- download ---- */

struct dl_state {
	const char *what;
	char rev[BACKEND_REV_MAX + 1]; /* pinned after the first reply */
	char *arg; /* owned: the current header arg */
};

/* Pins the rest of a broken download to the revision it started with. */
static int dl_resume(struct call *c, void *ud)
{
	struct dl_state *st = ud;
	struct dbx_meta m;
	char path[BACKEND_REV_MAX + 8];
	char *arg;

	if (!st->rev[0]) {
		if (!c->resp.api_result ||
		    dbx_meta_parse_text(c->resp.api_result,
					strlen(c->resp.api_result),
					DBX_FILE_ONLY, &m) < 0) {
			backend_set_error("files/download %s: malformed "
					  "Dropbox-API-Result",
					  st->what);
			return -EIO;
		}
		memcpy(st->rev, m.rev, sizeof(st->rev));
		dbx_meta_release(&m);
	}
	snprintf(path, sizeof(path), "rev:%s", st->rev);
	arg = encode(json_pack("{s:s}", "path", path), true);
	if (!arg)
		return -ENOMEM;
	free(st->arg);
	st->arg = arg;
	c->arg = arg;
	return 0;
}

static int dbx_download(struct backend *be, const char *path, const char *rev,
			uint64_t off, uint64_t len, int fd, uint64_t *got,
			struct backend_entry *out)
{
	struct dbx *db = db_of(be);
	struct dl_state st;
	struct dbx_meta m;
	struct chash h;
	uint8_t digest[CHASH_LEN];
	char rpath[BACKEND_REV_MAX + 8];
	bool whole = off == 0 && len == 0, hashing = false;
	char *full = NULL;
	struct call c;
	int rc;

	memset(&st, 0, sizeof(st));
	memset(&m, 0, sizeof(m));
	st.what = path;
	rc = full_path(db, path, false, &full);
	if (rc < 0)
		return rc;
	if (rev) {
		if (!rev_ok(rev)) {
			backend_set_error("invalid revision for \"%s\"", path);
			rc = -EINVAL;
			goto out;
		}
		snprintf(rpath, sizeof(rpath), "rev:%s", rev);
		snprintf(st.rev, sizeof(st.rev), "%s", rev);
	}
	st.arg = encode(json_pack("{s:s}", "path", rev ? rpath : full), true);
	if (!st.arg) {
		rc = -ENOMEM;
		goto out;
	}
	if (whole) {
		rc = chash_init(&h);
		if (rc < 0)
			goto out;
		hashing = true;
	}
	call_init(&c, "files/download", HOST_CONTENT, STYLE_DOWNLOAD, path);
	c.arg = st.arg;
	c.sink_fd = fd;
	c.sink_off = off;
	c.range_start = off;
	c.range_len = len;
	c.range = !whole;
	c.hash = hashing ? &h : NULL;
	c.resume = dl_resume;
	c.resume_ud = &st;
	rc = dbx_call(db, &c);
	if (rc == 0 && c.resp.status == 416) {
		/* Asked for bytes past the end: nothing to read. */
		*got = 0;
		goto done;
	}
	if (rc < 0)
		goto done;
	c.got += c.resp.written;
	if (!c.resp.api_result ||
	    dbx_meta_parse_text(c.resp.api_result, strlen(c.resp.api_result),
				DBX_FILE_ONLY, &m) < 0 ||
	    !m.name_ok) {
		backend_set_error("files/download %s: malformed or missing "
				  "Dropbox-API-Result",
				  path);
		rc = -EIO;
		goto done;
	}
	if (whole) {
		rc = chash_final(&h, digest);
		hashing = false;
		if (rc < 0)
			goto done;
		if (c.got != m.size) {
			backend_set_error("files/download %s: got %" PRIu64
					  " bytes, the file has %" PRIu64,
					  path, c.got, m.size);
			rc = -EIO;
			goto done;
		}
		if (m.has_hash && memcmp(digest, m.hash, CHASH_LEN) != 0) {
			backend_set_error("files/download %s: content hash "
					  "mismatch; the downloaded bytes are "
					  "not trusted",
					  path);
			rc = -EIO;
			goto done;
		}
	} else if (off < m.size) {
		uint64_t want = len && len < m.size - off ? len : m.size - off;

		if (c.got != want) {
			backend_set_error("files/download %s: got %" PRIu64
					  " of %" PRIu64 " bytes",
					  path, c.got, want);
			rc = -EIO;
			goto done;
		}
	}
	*got = c.got;
	if (out) {
		dbx_meta_to_entry(&m, out);
		if (rev && !m.rev[0])
			snprintf(out->rev, sizeof(out->rev), "%s", rev);
	}
done:
	if (hashing)
		chash_release(&h);
	dbx_meta_release(&m);
	call_release(&c);
out:
	free(st.arg);
	free(full);
	return rc;
}

/* ---- upload ---- */

/* Content hash of [0, @size) of @fd. */
static int hash_range(int fd, uint64_t size, uint8_t out[CHASH_LEN])
{
	size_t bufsz = 1024 * 1024;
	uint64_t pos = 0;
	struct chash h;
	char *buf;
	ssize_t n;
	int rc;

	buf = malloc(bufsz);
	if (!buf)
		return -ENOMEM;
	rc = chash_init(&h);
	if (rc < 0) {
		free(buf);
		return rc;
	}
	while (pos < size) {
		size_t want = size - pos < bufsz ? (size_t)(size - pos) : bufsz;

		n = pread(fd, buf, want, (off_t)pos);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			break;
		}
		rc = chash_update(&h, buf, (size_t)n);
		if (rc < 0)
			break;
		pos += (uint64_t)n;
	}
	if (rc == 0)
		rc = chash_final(&h, out);
	else
		chash_release(&h);
	free(buf);
	return rc;
}

/*
 * Fills @out from the FileMetadata @m of a finished upload of @up, and
 * checks its content hash against @hash (if known).
 */
static int upload_result(const struct backend_upload *up, struct dbx_meta *m,
			 const uint8_t *hash, struct backend_entry *out)
{
	if (!m->name_ok) {
		backend_set_error("upload %s: the reply names an invalid file",
				  up->path);
		return -EIO;
	}
	if (hash && m->has_hash && memcmp(hash, m->hash, CHASH_LEN) != 0) {
		backend_set_error("upload %s: the stored content hash differs "
				  "from the uploaded file's",
				  up->path);
		return -EIO;
	}
	if (out) {
		dbx_meta_to_entry(m, out);
		/* Report our own spelling unless Dropbox stored the bytes
		 * under another name (a conflicted copy). */
		if (dbx_name_equal(m->name, base_name(up->path)))
			snprintf(out->name, sizeof(out->name), "%s",
				 base_name(up->path));
	}
	return 0;
}

static int check_upload(struct dbx *db, const struct backend_upload *up,
			char **full)
{
	int rc;

	if (!up || up->fd < 0) {
		backend_set_error("upload: no file");
		return -EINVAL;
	}
	rc = full_path(db, up->path, false, full);
	if (rc < 0)
		return rc;
	if (up->parent_rev && !rev_ok(up->parent_rev)) {
		backend_set_error("upload %s: invalid parent revision",
				  up->path);
		free(*full);
		*full = NULL;
		return -EINVAL;
	}
	return 0;
}

/* ---- kept sessions and the remote's space ---- */

/*
 * Kept sessions. When a commit fails (insufficient_space, a conflict, a
 * name refused, a lost reply...), Dropbox still holds the uploaded bytes
 * in the upload session (files/upload names it in its error) for 7 days.
 * We keep the session id with the content hash and size of its bytes;
 * a later upload of the same bytes (same hash and size: the file did not
 * change, wherever it now goes) only finishes that session. A session is
 * taken out of the table while it is used, so two threads never finish
 * the same one, and is kept again if that finish fails too. The table is
 * small (DBX_KEPT_MAX, the oldest goes first) and forgets sessions after
 * DBX_KEPT_TTL_S; a session the server no longer knows
 * (lookup_failed/not_found) means sending the bytes again.
 */

/* Keeps session @sid (stolen) of @size bytes with hash @hash. */
static void kept_put(struct dbx *db, char *sid, const uint8_t *hash,
		     uint64_t size, bool closed)
{
	struct kept_session *k, *slot = NULL;
	size_t i;

	if (!sid)
		return;
	if (!hash) {
		free(sid);
		return;
	}
	pthread_mutex_lock(&db->kept_lock);
	for (i = 0; i < DBX_KEPT_MAX; i++) {
		k = &db->kept[i];
		if (k->sid && k->size == size &&
		    memcmp(k->hash, hash, CHASH_LEN) == 0) {
			slot = k; /* the newer session of the same bytes */
			break;
		}
		if (!slot || (slot->sid && (!k->sid || k->since < slot->since)))
			slot = k;
	}
	free(slot->sid);
	slot->sid = sid;
	memcpy(slot->hash, hash, CHASH_LEN);
	slot->size = size;
	slot->closed = closed;
	slot->since = now_s();
	pthread_mutex_unlock(&db->kept_lock);
}

/* Takes out a kept session of the bytes @hash/@size (closed ones only if
 * @closed_only): *@sid (owned by the caller) and *@closed, or NULL. */
static void kept_take(struct dbx *db, const uint8_t *hash, uint64_t size,
		      bool closed_only, char **sid, bool *closed)
{
	int64_t now = now_s();
	size_t i;

	*sid = NULL;
	*closed = false;
	if (!hash)
		return;
	pthread_mutex_lock(&db->kept_lock);
	for (i = 0; i < DBX_KEPT_MAX; i++) {
		struct kept_session *k = &db->kept[i];

		if (k->sid && now - k->since > DBX_KEPT_TTL_S) {
			free(k->sid);
			k->sid = NULL;
		}
		if (!k->sid || k->size != size ||
		    memcmp(k->hash, hash, CHASH_LEN) != 0 ||
		    (closed_only && !k->closed))
			continue;
		*sid = k->sid;
		*closed = k->closed;
		k->sid = NULL;
		break;
	}
	pthread_mutex_unlock(&db->kept_lock);
}

/* True if a finish that failed with @e left its session usable for
 * another try. */
static bool session_survives(const struct dbx_error *e)
{
	return !e->has_correct_offset &&
	       strncmp(e->summary, "lookup_failed", 13) != 0;
}

/*
 * Space. Once an upload is refused with insufficient_space, sending it (or
 * any other) again cannot help until space is freed. From then on, before
 * each upload, the free space is read with users/get_space_usage (at
 * most every DBX_SPACE_POLL_MS; one cheap call shared by every upload),
 * and an upload goes ahead only if the free space is at least its size,
 * or grew since the refusal and its bytes wait in a kept session (a file
 * replacing another needs less), or once a pause that doubles with each
 * refusal (1 min to 1 h) has passed; otherwise it fails at once with
 * -ENOSPC, without a request. A successful upload ends the state.
 */

/* users/get_space_usage: used and allocated bytes. */
static int space_call(struct dbx *db, unsigned max_attempts, uint64_t *used,
		      uint64_t *total)
{
	struct call c;
	int rc;

	call_init(&c, "users/get_space_usage", HOST_API, STYLE_RPC, NULL);
	c.max_attempts = max_attempts;
	rc = dbx_call(db, &c);
	if (rc == 0) {
		rc = dbx_parse_space(c.resp.body, c.resp.body_len, used, total);
		if (rc == -EIO)
			backend_set_error("get_space_usage: malformed reply");
	}
	call_release(&c);
	return rc;
}

/* The free space now (UINT64_MAX if the allocation is unknown). */
static int space_free(struct dbx *db, uint64_t *free_bytes)
{
	uint64_t used = 0, total = 0;
	int rc = space_call(db, 2, &used, &total);

	if (rc == 0)
		*free_bytes = total == 0     ? UINT64_MAX
			      : total > used ? total - used
					     : 0;
	return rc;
}

/* An upload was refused for the lack of space. Keeps the caller's error
 * detail. */
static void space_refused(struct dbx *db)
{
	char saved[BACKEND_ERROR_MAX];
	uint64_t f = UINT64_MAX, d = DBX_SPACE_BACKOFF_MIN_S;
	int rc;

	snprintf(saved, sizeof(saved), "%s", backend_last_error());
	rc = space_free(db, &f);
	backend_set_error("%s", saved);
	pthread_mutex_lock(&db->kept_lock);
	for (unsigned i = 0;
	     i < db->space.refusals && d < DBX_SPACE_BACKOFF_MAX_S; i++)
		d *= 2;
	if (d > DBX_SPACE_BACKOFF_MAX_S)
		d = DBX_SPACE_BACKOFF_MAX_S;
	db->space.short_of_space = true;
	db->space.refusals++;
	db->space.retry_at_ms = now_ms() + d * 1000;
	db->space.free_at_refusal = rc == 0 ? f : UINT64_MAX;
	db->space.free_now = rc == 0 ? f : UINT64_MAX;
	db->space.checked_ms = rc == 0 ? now_ms() : 0;
	pthread_mutex_unlock(&db->kept_lock);
}

static void space_fine(struct dbx *db)
{
	pthread_mutex_lock(&db->kept_lock);
	db->space.short_of_space = false;
	db->space.refusals = 0;
	pthread_mutex_unlock(&db->kept_lock);
}

/*
 * Before an upload of @up (@send: its bytes must be sent, no kept
 * session): 0 to go ahead, -ENOSPC while Dropbox is still out of space,
 * or the -errno of get_space_usage.
 */
static int space_gate(struct dbx *db, const struct backend_upload *up,
		      bool send)
{
	uint64_t f = 0, now = now_ms();
	bool poll, grew, ok;
	int rc;

	pthread_mutex_lock(&db->kept_lock);
	if (!db->space.short_of_space) {
		pthread_mutex_unlock(&db->kept_lock);
		return 0;
	}
	poll = !db->space.checked_ms ||
	       now - db->space.checked_ms >= DBX_SPACE_POLL_MS;
	pthread_mutex_unlock(&db->kept_lock);
	if (poll) {
		rc = space_free(db, &f);
		if (rc < 0)
			return rc;
	}
	pthread_mutex_lock(&db->kept_lock);
	if (poll) {
		db->space.free_now = f;
		db->space.checked_ms = now_ms();
	}
	f = db->space.free_now;
	grew = f != UINT64_MAX && db->space.free_at_refusal != UINT64_MAX &&
	       f > db->space.free_at_refusal;
	ok = now >= db->space.retry_at_ms ||
	     (f != UINT64_MAX && f >= up->size) || (grew && !send);
	pthread_mutex_unlock(&db->kept_lock);
	if (ok)
		return 0;
	if (f == UINT64_MAX)
		backend_set_error("upload %s: Dropbox is out of space; "
				  "waiting for space to be freed",
				  up->path);
	else
		backend_set_error("upload %s: Dropbox is out of space (%" PRIu64
				  " bytes free, the file has %" PRIu64
				  "); waiting for space to be freed",
				  up->path, f, up->size);
	return -ENOSPC;
}

/* The upload_session_id a files/upload error names, or NULL. */
static char *error_session(const struct call *c)
{
	json_t *root, *e, *sid;
	char *out = NULL;

	if (c->resp.status != 409 || !c->resp.body)
		return NULL;
	root = json_loadb(c->resp.body, c->resp.body_len, 0, NULL);
	e = json_is_object(root) ? json_object_get(root, "error") : NULL;
	sid = json_is_object(e) ? json_object_get(e, "upload_session_id")
				: NULL;
	if (json_is_string(sid) && json_string_length(sid) > 0 &&
	    json_string_length(sid) <= 256)
		out = strdup(json_string_value(sid));
	json_decref(root);
	return out;
}

/* ---- single uploads and sessions ---- */

static int upload_single(struct dbx *db, const struct backend_upload *up,
			 const char *full, const uint8_t *hash,
			 struct backend_entry *out)
{
	char hex[CHASH_HEXLEN + 1];
	struct dbx_meta m;
	struct call c;
	json_t *ci;
	char *arg;
	int rc;

	ci = commit_info(full, up);
	if (ci && hash) {
		chash_to_hex(hash, hex);
		json_object_set_new(ci, "content_hash", json_string(hex));
	}
	arg = encode(ci, true);
	if (!arg)
		return -ENOMEM;
	call_init(&c, "files/upload", HOST_CONTENT, STYLE_UPLOAD, up->path);
	c.arg = arg;
	c.fd = up->fd;
	c.off = 0;
	c.len = up->size;
	rc = dbx_call(db, &c);
	if (rc == 0) {
		rc = dbx_meta_parse_text(c.resp.body, c.resp.body_len,
					 DBX_FILE_ONLY, &m);
		if (rc == 0) {
			rc = upload_result(up, &m, hash, out);
			dbx_meta_release(&m);
		} else {
			backend_set_error("files/upload %s: malformed reply",
					  up->path);
		}
	} else {
		/* The bytes wait in a session: a retry only finishes it. */
		kept_put(db, error_session(&c), hash, up->size, false);
	}
	call_release(&c);
	free(arg);
	return rc;
}

/* The session cursor {"session_id": ..., "offset": ...}. */
static json_t *cursor_json(const char *sid, uint64_t offset)
{
	return json_pack("{s:s, s:I}", "session_id", sid, "offset",
			 (json_int_t)offset);
}

/* start (no @sid yet) or append_v2 of [@off, @end); sets *@sid. */
static int session_send(struct dbx *db, const struct backend_upload *up,
			char **sid, uint64_t off, uint64_t end, bool close,
			struct call *c)
{
	char *arg;
	int rc;

	call_init(c,
		  *sid ? "files/upload_session/append_v2"
		       : "files/upload_session/start",
		  HOST_CONTENT, STYLE_UPLOAD, up->path);
	if (!*sid)
		arg = encode(json_pack("{s:b}", "close", close), true);
	else
		arg = encode(json_pack("{s:o, s:b}", "cursor",
				       cursor_json(*sid, off), "close", close),
			     true);
	if (!arg)
		return -ENOMEM;
	c->arg = arg;
	c->fd = up->fd;
	c->off = off;
	c->len = end - off;
	rc = dbx_call(db, c);
	c->arg = NULL;
	if (rc == 0 && !*sid) {
		rc = dbx_parse_session(c->resp.body, c->resp.body_len, sid);
		if (rc == -EIO)
			backend_set_error("upload_session/start %s: malformed "
					  "reply",
					  up->path);
	}
	free(arg);
	return rc;
}

/*
 * After a finish whose reply was lost and whose retry found no session:
 * the commit happened if the file now has our content hash.
 */
static int finish_lost(struct dbx *db, const struct backend_upload *up,
		       const char *full, const uint8_t *hash,
		       struct backend_entry *out)
{
	struct dbx_meta m;
	int rc;

	rc = get_meta(db, full, up->path, &m);
	if (rc < 0)
		return -EAGAIN;
	if (m.kind != DBX_FILE || !m.has_hash ||
	    memcmp(m.hash, hash, CHASH_LEN) != 0 || m.size != up->size) {
		dbx_meta_release(&m);
		backend_set_error("upload %s: the upload session vanished",
				  up->path);
		return -EAGAIN;
	}
	rc = upload_result(up, &m, hash, out);
	dbx_meta_release(&m);
	return rc;
}

/*
 * Uploads @up through an upload session: a new one, or @sid (stolen: a
 * kept session that already holds the bytes, which is then only
 * finished; if the server no longer knows it, the bytes are sent once
 * more in a new session).
 */
static int upload_session(struct dbx *db, const struct backend_upload *up,
			  const char *full, const uint8_t *hash, char *sid,
			  bool closed, struct backend_entry *out)
{
	uint64_t off = sid ? up->size : 0, end, chunk = db->tune.chunk;
	bool kept = sid != NULL;
	unsigned recoveries = 0;
	struct dbx_meta m;
	char *arg = NULL;
	struct call c;
	int rc;

	for (;;) {
		/* Send data until the server has all of it. */
		while (!sid || off < up->size) {
			end = (off / chunk + 1) * chunk;
			if (end > up->size)
				end = up->size;
			rc = session_send(db, up, &sid, off, end, false, &c);
			if (rc == 0) {
				off = end;
			} else if (c.err.has_correct_offset &&
				   c.err.correct_offset <= up->size &&
				   ++recoveries <= DBX_OFFSET_RECOVERIES) {
				/* A lost reply: resume where the server is. */
				off = c.err.correct_offset;
				rc = 0;
			} else if (c.err.has_correct_offset) {
				rc = -EIO;
			} else if (rc == -ENOENT && sid) {
				/* The session expired: not the path. */
				rc = -EAGAIN;
			}
			call_release(&c);
			if (rc < 0)
				goto out;
		}

		json_t *ci = commit_info(full, up);

		arg = encode(json_pack("{s:o, s:o}", "cursor",
				       cursor_json(sid, up->size), "commit",
				       ci),
			     true);
		if (!arg) {
			rc = -ENOMEM;
			goto out;
		}
		call_init(&c, "files/upload_session/finish", HOST_CONTENT,
			  STYLE_UPLOAD, up->path);
		c.arg = arg;
		rc = dbx_call(db, &c);
		free(arg);
		arg = NULL;
		if (rc == 0) {
			rc = dbx_meta_parse_text(c.resp.body, c.resp.body_len,
						 DBX_FILE_ONLY, &m);
			if (rc == 0) {
				rc = upload_result(up, &m, hash, out);
				dbx_meta_release(&m);
			} else {
				backend_set_error("upload_session/finish %s: "
						  "malformed reply",
						  up->path);
			}
			call_release(&c);
			goto out;
		}
		if (c.err.has_correct_offset &&
		    c.err.correct_offset < up->size &&
		    ++recoveries <= DBX_OFFSET_RECOVERIES) {
			off = c.err.correct_offset;
			call_release(&c);
			continue;
		}
		if (rc == -EAGAIN &&
		    strncmp(c.err.summary, "lookup_failed/not_found", 23) ==
			    0) {
			rc = finish_lost(db, up, full, hash, out);
			if (rc == -EAGAIN && kept) {
				/* The kept session is gone: send again. */
				kept = false;
				closed = false;
				free(sid);
				sid = NULL;
				off = 0;
				call_release(&c);
				continue;
			}
		} else if (c.err.has_correct_offset) {
			rc = -EIO;
		} else if (session_survives(&c.err)) {
			kept_put(db, sid, hash, up->size, closed);
			sid = NULL;
		}
		call_release(&c);
		goto out;
	}
out:
	free(sid);
	return rc;
}

/* An upload of @up to Dropbox path @full (checked by check_upload). */
static int upload_one(struct dbx *db, const struct backend_upload *up,
		      const char *full, struct backend_entry *out)
{
	uint8_t hash[CHASH_LEN];
	char *sid = NULL;
	bool closed = false;
	int rc;

	if (up->hash) {
		memcpy(hash, up->hash, CHASH_LEN);
	} else {
		rc = hash_range(up->fd, up->size, hash);
		if (rc < 0) {
			backend_set_error("upload %s: reading the file: %s",
					  up->path, strerror(-rc));
			return rc;
		}
	}
	kept_take(db, hash, up->size, false, &sid, &closed);
	rc = space_gate(db, up, sid == NULL);
	if (rc < 0) {
		kept_put(db, sid, hash, up->size, closed);
		return rc;
	}
	if (sid || up->size > db->tune.single_max)
		rc = upload_session(db, up, full, hash, sid, closed, out);
	else
		rc = upload_single(db, up, full, hash, out);
	if (rc == -ENOSPC)
		space_refused(db);
	else if (rc == 0)
		space_fine(db);
	return rc;
}

static int dbx_upload(struct backend *be, const struct backend_upload *up,
		      struct backend_entry *out)
{
	struct dbx *db = db_of(be);
	char *full = NULL;
	int rc;

	rc = check_upload(db, up, &full);
	if (rc < 0)
		return rc;
	rc = upload_one(db, up, full, out);
	free(full);
	return rc;
}

/* ---- upload_batch ---- */

static void batch_enter(struct dbx *db)
{
	pthread_mutex_lock(&db->batch_lock);
	while (db->batch_busy)
		pthread_cond_wait(&db->batch_cond, &db->batch_lock);
	db->batch_busy = true;
	pthread_mutex_unlock(&db->batch_lock);
}

static void batch_leave(struct dbx *db)
{
	pthread_mutex_lock(&db->batch_lock);
	db->batch_busy = false;
	pthread_cond_signal(&db->batch_cond);
	pthread_mutex_unlock(&db->batch_lock);
}

/* One upload_session/start with the whole of @up and close: true. */
static int batch_start(struct dbx *db, const struct backend_upload *up,
		       const uint8_t *hash, char **sid)
{
	char hex[CHASH_HEXLEN + 1];
	struct call c;
	json_t *o;
	char *arg;
	int rc;

	o = json_pack("{s:b}", "close", 1);
	if (o && hash) {
		chash_to_hex(hash, hex);
		json_object_set_new(o, "content_hash", json_string(hex));
	}
	arg = encode(o, true);
	if (!arg)
		return -ENOMEM;
	call_init(&c, "files/upload_session/start", HOST_CONTENT, STYLE_UPLOAD,
		  up->path);
	c.arg = arg;
	c.fd = up->fd;
	c.len = up->size;
	rc = dbx_call(db, &c);
	if (rc == 0) {
		rc = dbx_parse_session(c.resp.body, c.resp.body_len, sid);
		if (rc == -EIO)
			backend_set_error("upload_session/start %s: malformed "
					  "reply",
					  up->path);
	}
	call_release(&c);
	free(arg);
	return rc;
}

/* Closes kept session @sid holding all of @up (an empty append_v2 with
 * close: true), so that finish_batch_v2 can commit it. */
static int batch_close(struct dbx *db, const struct backend_upload *up,
		       char **sid)
{
	struct call c;
	int rc = session_send(db, up, sid, up->size, up->size, true, &c);

	call_release(&c);
	return rc;
}

struct batch_item {
	size_t i; /* index in the caller's arrays */
	char *sid; /* owned */
	char *full; /* owned */
	uint8_t hash[CHASH_LEN];
	bool has_hash;
};

/* The per-file results of a batch: rcs[i], and the failure's detail in
 * errs[i] (if @errs) and in the thread's last error. */
struct batch_out {
	struct backend_entry *outs;
	int *rcs;
	char (*errs)[BACKEND_ERROR_MAX];
	size_t no_space; /* commits refused with insufficient_space */
};

/* File @i failed with @rc; its detail is the thread's last error. */
static void item_failed(struct batch_out *bo, size_t i, int rc)
{
	bo->rcs[i] = rc;
	if (bo->errs)
		snprintf(bo->errs[i], BACKEND_ERROR_MAX, "%s",
			 backend_last_error());
}

/* Done with @it: its session is kept for another try if the server may
 * still hold it (@keep), else forgotten. */
static void item_release(struct dbx *db, const struct backend_upload *up,
			 struct batch_item *it, bool keep)
{
	if (keep && it->has_hash)
		kept_put(db, it->sid, it->hash, up->size, true);
	else
		free(it->sid);
	it->sid = NULL;
	free(it->full);
	it->full = NULL;
}

/*
 * Commits @n items with one finish_batch_v2. Each entry is judged on its
 * own: results go to @bo; items to retry (too_many_write_operations) are
 * moved to the front of @items and their number returned in *@again. An
 * entry whose session is gone (lookup_failed/not_found: a lost reply
 * committed it) succeeds if the file now has our bytes. Returns 0 or the
 * call's -errno (then every item got it).
 */
static int batch_finish(struct dbx *db, const struct backend_upload *ups,
			struct batch_item *items, size_t n,
			struct batch_out *bo, size_t *again)
{
	struct dbx_meta *metas = NULL;
	struct dbx_error *errs = NULL;
	bool *ok = NULL;
	json_t *entries, *e;
	struct call c;
	char *arg = NULL;
	size_t k, keep = 0;
	int rc = -ENOMEM;

	*again = 0;
	entries = json_array();
	if (!entries)
		goto fail;
	for (k = 0; k < n; k++) {
		const struct backend_upload *up = &ups[items[k].i];

		e = json_pack("{s:o, s:o}", "cursor",
			      cursor_json(items[k].sid, up->size), "commit",
			      commit_info(items[k].full, up));
		if (!e || json_array_append_new(entries, e) < 0) {
			json_decref(entries);
			goto fail;
		}
	}
	arg = encode(json_pack("{s:o}", "entries", entries), false);
	metas = calloc(n, sizeof(*metas));
	errs = calloc(n, sizeof(*errs));
	ok = calloc(n, sizeof(*ok));
	if (!arg || !metas || !errs || !ok)
		goto fail;
	call_init(&c, "files/upload_session/finish_batch_v2", HOST_API,
		  STYLE_RPC, NULL);
	c.arg = arg;
	rc = dbx_call(db, &c);
	if (rc == 0) {
		rc = dbx_parse_batch(c.resp.body, c.resp.body_len, n, metas,
				     errs, ok);
		if (rc < 0)
			backend_set_error("upload_session/finish_batch_v2: "
					  "malformed reply");
	}
	call_release(&c);
	if (rc < 0)
		goto fail;
	for (k = 0; k < n; k++) {
		struct batch_item *it = &items[k];
		const struct backend_upload *up = &ups[it->i];
		size_t i = it->i;
		int r;

		if (ok[k]) {
			r = upload_result(up, &metas[k],
					  it->has_hash ? it->hash : NULL,
					  &bo->outs[i]);
			dbx_meta_release(&metas[k]);
			if (r < 0)
				item_failed(bo, i, r);
			else
				bo->rcs[i] = 0;
			item_release(db, up, it, false);
			continue;
		}
		if (errs[k].retry) {
			bo->rcs[i] = -EAGAIN;
			items[keep++] = *it;
			continue;
		}
		r = errs[k].err;
		backend_set_error("upload %s: %s", up->path, errs[k].summary);
		if (r == -EAGAIN && it->has_hash &&
		    strncmp(errs[k].summary, "lookup_failed/not_found", 23) ==
			    0)
			r = finish_lost(db, up, it->full, it->hash,
					&bo->outs[i]);
		if (r == 0)
			bo->rcs[i] = 0;
		else
			item_failed(bo, i, r);
		if (r == -ENOSPC)
			bo->no_space++;
		item_release(db, up, it, r != 0 && session_survives(&errs[k]));
	}
	*again = keep;
	rc = 0;
	goto out;
fail:
	/* The sessions are still open unless a lost reply committed them;
	 * a later finish tells (finish_lost). */
	for (k = 0; k < n; k++) {
		item_failed(bo, items[k].i, rc);
		item_release(db, &ups[items[k].i], &items[k], rc != -ENOMEM);
	}
out:
	free(arg);
	free(metas);
	free(errs);
	free(ok);
	return rc;
}

static int dbx_upload_batch(struct backend *be,
			    const struct backend_upload *ups, size_t n,
			    struct backend_entry *outs, int *rcs,
			    char (*errs)[BACKEND_ERROR_MAX])
{
	struct dbx *db = db_of(be);
	struct batch_out bo = {.outs = outs, .rcs = rcs, .errs = errs};
	struct batch_item *items;
	size_t i, m = 0, done, again, chunk_n, k;
	unsigned round = 0;
	bool closed, committed = false;
	int rc;

	for (i = 0; i < n; i++) {
		rcs[i] = -EIO;
		memset(&outs[i], 0, sizeof(outs[i]));
		if (errs)
			errs[i][0] = '\0';
	}
	if (n == 0)
		return 0;
	items = calloc(n, sizeof(*items));
	if (!items)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		const struct backend_upload *up = &ups[i];
		struct batch_item *it = &items[m];

		memset(it, 0, sizeof(*it));
		rc = check_upload(db, up, &it->full);
		if (rc < 0) {
			item_failed(&bo, i, rc);
			continue;
		}
		if (up->size > db->tune.single_max) {
			rc = upload_one(db, up, it->full, &outs[i]);
			if (rc < 0)
				item_failed(&bo, i, rc);
			else
				rcs[i] = 0;
			free(it->full);
			it->full = NULL;
			continue;
		}
		if (up->hash) {
			memcpy(it->hash, up->hash, CHASH_LEN);
			it->has_hash = true;
		} else if (hash_range(up->fd, up->size, it->hash) == 0) {
			it->has_hash = true;
		}
		/* Bytes the server holds already are only committed. */
		kept_take(db, it->has_hash ? it->hash : NULL, up->size, false,
			  &it->sid, &closed);
		if (it->sid && !closed && batch_close(db, up, &it->sid) < 0) {
			free(it->sid);
			it->sid = NULL;
		}
		rc = space_gate(db, up, it->sid == NULL);
		if (rc == 0 && !it->sid)
			rc = batch_start(db, up, it->has_hash ? it->hash : NULL,
					 &it->sid);
		if (rc < 0) {
			item_failed(&bo, i, rc);
			item_release(db, up, it, true);
			continue;
		}
		it->i = i;
		m++;
	}

	batch_enter(db);
	while (m > 0) {
		/* Commit every item, 1000 at a time; collect the retries
		 * at the front of @items. */
		done = 0;
		k = 0;
		while (done < m) {
			chunk_n = m - done < DBX_BATCH_MAX ? m - done
							   : DBX_BATCH_MAX;
			batch_finish(db, ups, items + done, chunk_n, &bo,
				     &again);
			memmove(items + k, items + done,
				again * sizeof(*items));
			k += again;
			done += chunk_n;
		}
		m = k;
		if (m == 0)
			break;
		if (++round >= db->tune.max_attempts) {
			for (k = 0; k < m; k++) {
				backend_set_error(
					"upload %s: too_many_write_operations",
					ups[items[k].i].path);
				item_failed(&bo, items[k].i, -EAGAIN);
				item_release(db, &ups[items[k].i], &items[k],
					     true);
			}
			break;
		}
		sleep_ms(backoff_ms(db, round - 1));
	}
	batch_leave(db);
	free(items);

	for (i = 0; i < n; i++)
		if (rcs[i] == 0)
			committed = true;
	if (bo.no_space)
		space_refused(db);
	else if (committed)
		space_fine(db);
	return 0;
}

/* ---- namespace operations ---- */

/* An RPC on one path: {"path": full} plus @extra fields (stolen). */
static int path_rpc(struct dbx *db, const char *route, const char *path,
		    const char *full, json_t *extra, struct call *c)
{
	json_t *o;
	char *arg;
	int rc;

	o = json_pack("{s:s}", "path", full);
	if (o && extra)
		json_object_update(o, extra);
	json_decref(extra);
	arg = encode(o, false);
	if (!arg)
		return -ENOMEM;
	call_init(c, route, HOST_API, STYLE_RPC, path);
	c->arg = arg;
	rc = dbx_call(db, c);
	free(arg);
	c->arg = NULL;
	return rc;
}

static int dbx_mkdir(struct backend *be, const char *path)
{
	struct dbx *db = db_of(be);
	struct call c;
	char *full;
	int rc;

	rc = full_path(db, path, true, &full);
	if (rc < 0)
		return rc;
	if (!path[0]) {
		free(full);
		backend_set_error("the root folder exists");
		return -EEXIST;
	}
	rc = path_rpc(db, "files/create_folder_v2", path, full,
		      json_pack("{s:b}", "autorename", 0), &c);
	if (rc == 0 && !c.resp.body) {
		backend_set_error("files/create_folder_v2 %s: empty reply",
				  path);
		rc = -EIO;
	}
	call_release(&c);
	free(full);
	return rc;
}

static int dbx_remove(struct backend *be, const char *path)
{
	struct dbx *db = db_of(be);
	struct call c;
	char *full;
	int rc;

	rc = full_path(db, path, true, &full);
	if (rc < 0)
		return rc;
	if (!path[0]) {
		free(full);
		backend_set_error("the root folder cannot be removed");
		return -EINVAL;
	}
	rc = path_rpc(db, "files/delete_v2", path, full, NULL, &c);
	call_release(&c);
	free(full);
	return rc;
}

/* ---- remove_batch ---- */

/*
 * One files/delete_batch of @n entries (at most DBX_BATCH_MAX) and its
 * job, polled with files/delete_batch/check after a delay that doubles
 * from DBX_JOB_POLL_MS to DBX_JOB_POLL_MAX_MS. Per-entry results go to
 * @rcs (-EAGAIN: too_many_write_operations for that entry). Returns 0
 * (look at @rcs), DBX_JOB_BUSY if the job failed as a whole
 * (too_many_write_operations; or it was lost, or ran too long: the
 * caller submits the batch again after a backoff), or the -errno of a
 * call.
 */
static int delete_chunk(struct dbx *db, const struct backend_delete *dels,
			char *const *fulls, size_t n, int *rcs)
{
	struct dbx_error *errs = NULL, failed;
	uint64_t delay = DBX_JOB_POLL_MS, waited = 0;
	enum dbx_job state;
	json_t *entries, *e;
	char *arg = NULL, *job = NULL;
	bool *ok = NULL;
	struct call c;
	size_t i;
	int rc = -ENOMEM;

	entries = json_array();
	for (i = 0; entries && i < n; i++) {
		e = json_pack("{s:s}", "path", fulls[i]);
		if (e && dels[i].parent_rev)
			json_object_set_new(e, "parent_rev",
					    json_string(dels[i].parent_rev));
		if (!e || json_array_append_new(entries, e) < 0) {
			json_decref(entries);
			entries = NULL;
		}
	}
	if (!entries)
		goto out;
	arg = encode(json_pack("{s:o}", "entries", entries), false);
	errs = calloc(n, sizeof(*errs));
	ok = calloc(n, sizeof(*ok));
	if (!arg || !errs || !ok)
		goto out;
	call_init(&c, "files/delete_batch", HOST_API, STYLE_RPC, dels[0].path);
	c.arg = arg;
	rc = dbx_call(db, &c);
	if (rc == 0) {
		rc = dbx_parse_delete_job(c.resp.body, c.resp.body_len, n,
					  &state, &job, ok, errs, &failed);
		if (rc < 0)
			backend_set_error(
				"files/delete_batch: malformed reply");
	}
	call_release(&c);
	free(arg);
	arg = NULL;
	if (rc == 0 && state == DBX_JOB_ASYNC)
		arg = encode(json_pack("{s:s}", "async_job_id", job), false);
	while (rc == 0 && state == DBX_JOB_ASYNC) {
		if (!arg) {
			rc = -ENOMEM;
			break;
		}
		if (waited >= DBX_JOB_BUDGET_MS) {
			backend_set_error("files/delete_batch/check: the job "
					  "is still running after %llu s",
					  (unsigned long long)waited / 1000);
			rc = DBX_JOB_BUSY;
			break;
		}
		sleep_ms(delay);
		waited += delay;
		delay = delay * 2 > DBX_JOB_POLL_MAX_MS ? DBX_JOB_POLL_MAX_MS
							: delay * 2;
		call_init(&c, "files/delete_batch/check", HOST_API, STYLE_RPC,
			  NULL);
		c.arg = arg;
		rc = dbx_call(db, &c);
		if (rc == 0) {
			rc = dbx_parse_delete_job(c.resp.body, c.resp.body_len,
						  n, &state, NULL, ok, errs,
						  &failed);
			if (rc < 0)
				backend_set_error("files/delete_batch/check: "
						  "malformed reply");
		} else if (rc == -EIO) {
			/* An unknown or lost job (invalid_async_job_id):
			 * submit the batch again; deleting what is gone
			 * already is harmless. */
			rc = DBX_JOB_BUSY;
		}
		call_release(&c);
		if (rc == 0 && state == DBX_JOB_IN_PROGRESS)
			state = DBX_JOB_ASYNC;
	}
	if (rc == 0 && state == DBX_JOB_FAILED) {
		backend_set_error("files/delete_batch: %s", failed.summary);
		rc = failed.retry ? DBX_JOB_BUSY : failed.err;
	}
	if (rc == 0) {
		for (i = 0; i < n; i++) {
			if (ok[i]) {
				rcs[i] = 0;
				continue;
			}
			rcs[i] = errs[i].retry ? -EAGAIN : errs[i].err;
			if (errs[i].err != -ENOENT)
				backend_set_error("delete %s: %s", dels[i].path,
						  errs[i].summary);
		}
	}
out:
	free(arg);
	free(job);
	free(errs);
	free(ok);
	return rc;
}

static int dbx_remove_batch(struct backend *be,
			    const struct backend_delete *dels, size_t n,
			    int *rcs)
{
	struct dbx *db = db_of(be);
	struct backend_delete *todo = NULL;
	char **owned = NULL, **fulls = NULL;
	size_t *where = NULL;
	int *crcs = NULL;
	size_t i, j, m = 0, done, chunk_n, k;
	unsigned round = 0;
	bool answered = false;
	int rc = 0, crc, first_err = 0;

	for (i = 0; i < n; i++)
		rcs[i] = -EIO;
	if (n == 0)
		return 0;
	todo = calloc(n, sizeof(*todo));
	owned = calloc(n, sizeof(*owned));
	fulls = calloc(n, sizeof(*fulls));
	where = calloc(n, sizeof(*where));
	crcs = calloc(n, sizeof(*crcs));
	if (!todo || !owned || !fulls || !where || !crcs) {
		rc = -ENOMEM;
		for (i = 0; i < n; i++)
			rcs[i] = rc;
		goto out;
	}
	for (i = 0; i < n; i++) {
		if (dels[i].parent_rev && !rev_ok(dels[i].parent_rev)) {
			backend_set_error("invalid revision \"%s\"",
					  dels[i].parent_rev);
			rcs[i] = -EINVAL;
			answered = true;
			continue;
		}
		crc = full_path(db, dels[i].path, false, &owned[i]);
		if (crc < 0) {
			rcs[i] = crc;
			answered = true;
			continue;
		}
		todo[m] = dels[i];
		fulls[m] = owned[i];
		where[m++] = i;
	}
	batch_enter(db);
	while (m > 0) {
		/* Every entry, DBX_BATCH_MAX at a time; those to try again
		 * (too_many_write_operations) move to the front. */
		for (done = k = 0; done < m; done += chunk_n) {
			chunk_n = m - done < DBX_BATCH_MAX ? m - done
							   : DBX_BATCH_MAX;
			crc = delete_chunk(db, todo + done, fulls + done,
					   chunk_n, crcs + done);
			if (crc < 0 && !first_err)
				first_err = crc;
			for (j = done; j < done + chunk_n; j++) {
				int r = crc ? crc : crcs[j];

				if (crc == DBX_JOB_BUSY ||
				    (crc == 0 && r == -EAGAIN)) {
					todo[k] = todo[j];
					fulls[k] = fulls[j];
					where[k++] = where[j];
					answered = true;
					continue;
				}
				rcs[where[j]] = r;
				if (crc == 0)
					answered = true;
			}
		}
		m = k;
		if (m == 0)
			break;
		if (++round >= db->tune.max_attempts) {
			for (j = 0; j < m; j++)
				rcs[where[j]] = -EAGAIN;
			backend_set_error("files/delete_batch: "
					  "too_many_write_operations, gave up "
					  "after %u rounds",
					  round);
			break;
		}
		sleep_ms(backoff_ms(db, round - 1));
	}
	batch_leave(db);
	if (!answered && first_err)
		rc = first_err;
out:
	if (owned)
		for (i = 0; i < n; i++)
			free(owned[i]);
	free(owned);
	free(fulls);
	free(todo);
	free(where);
	free(crcs);
	return rc;
}

/* ---- list_tree ---- */

static int dbx_list_tree(struct backend *be, const char *path,
			 const char *cursor, struct backend_page *page)
{
	struct dbx *db = db_of(be);
	char *full = NULL, *arg;
	struct call c;
	size_t i, k;
	int rc;

	rc = full_path(db, path, false, &full);
	if (rc < 0)
		return rc;
	if (cursor)
		arg = encode(json_pack("{s:s}", "cursor", cursor), false);
	else
		arg = encode(json_pack("{s:s, s:b, s:b, s:b, s:i}", "path",
				       full, "recursive", 1, "include_deleted",
				       0, "include_non_downloadable_files", 1,
				       "limit", DBX_LIST_LIMIT),
			     false);
	free(full);
	if (!arg)
		return -ENOMEM;
	call_init(&c,
		  cursor ? "files/list_folder/continue" : "files/list_folder",
		  HOST_API, STYLE_RPC, path);
	c.arg = arg;
	rc = dbx_call(db, &c);
	if (rc == 0) {
		rc = dbx_parse_tree_page(c.resp.body, c.resp.body_len, db->root,
					 page);
		if (rc == -EIO)
			backend_set_error("%s %s: malformed reply", c.route,
					  path);
	}
	call_release(&c);
	free(arg);
	if (rc < 0)
		return rc;
	/* The folder itself is in a recursive listing: not below it. */
	for (i = k = 0; i < page->n; i++) {
		if (dbx_name_equal(page->entries[i].path, path)) {
			free(page->entries[i].path);
			continue;
		}
		page->entries[k++] = page->entries[i];
	}
	page->n = k;
	return 0;
}

/* move_v2 or copy_v2 of Dropbox paths; *@name gets the stored name. */
static int relocate(struct dbx *db, bool copy, const char *from, const char *to,
		    const char *ffrom, const char *fto,
		    char name[BACKEND_NAME_MAX + 1])
{
	const char *route = copy ? "files/copy_v2" : "files/move_v2";
	struct dbx_meta m;
	struct call c;
	char *arg;
	int rc;

	arg = encode(json_pack("{s:s, s:s, s:b, s:b}", "from_path", ffrom,
			       "to_path", fto, "autorename", 0,
			       "allow_ownership_transfer", 0),
		     false);
	if (!arg)
		return -ENOMEM;
	call_init(&c, route, HOST_API, STYLE_RPC, from);
	c.arg = arg;
	rc = dbx_call(db, &c);
	if (rc == 0) {
		rc = dbx_parse_metadata_result(c.resp.body, c.resp.body_len,
					       DBX_TAGGED, &m);
		if (rc == 0 && m.name_ok && name)
			memcpy(name, m.name, BACKEND_NAME_MAX + 1);
		else if (rc == 0 && name)
			name[0] = '\0';
		if (rc == -EIO)
			backend_set_error("%s %s: malformed reply", route,
					  from);
		dbx_meta_release(&m);
	} else if (rc == -EEXIST) {
		backend_set_error("%s: \"%s\" exists", route, to);
	}
	call_release(&c);
	free(arg);
	return rc;
}

/* Renames @from to @to, which differ only in case, through a temporary
 * name (move_v2 refuses or ignores case-only renames). */
static int rename_case(struct dbx *db, const char *from, const char *to,
		       const char *ffrom, const char *fto)
{
	char *tmp = NULL;
	const char *slash = strrchr(ffrom, '/');
	int dirlen = slash ? (int)(slash - ffrom) : 0;
	int rc, rc2;

	if (asprintf(&tmp, "%.*s/.huracanfs-case-%016" PRIx64, dirlen, ffrom,
		     rand64()) < 0)
		return -ENOMEM;
	rc = relocate(db, false, from, to, ffrom, tmp, NULL);
	if (rc == 0) {
		rc = relocate(db, false, from, to, tmp, fto, NULL);
		if (rc < 0) {
			rc2 = relocate(db, false, from, from, tmp, ffrom, NULL);
			(void)rc2;
		}
	}
	free(tmp);
	return rc;
}

/* True if Dropbox paths @a and @b name the same entry (same id). */
static bool same_entry(struct dbx *db, const char *a, const char *b)
{
	struct dbx_meta ma, mb;
	bool same = false;

	if (get_meta(db, a, a, &ma) < 0)
		return false;
	if (get_meta(db, b, b, &mb) == 0) {
		same = ma.id[0] && strcmp(ma.id, mb.id) == 0;
		dbx_meta_release(&mb);
	}
	dbx_meta_release(&ma);
	return same;
}

/* True if remote @to is @from or lies inside folder @from. */
static bool inside(const char *from, const char *to)
{
	size_t lf = strlen(from);

	return strncmp(from, to, lf) == 0 && (to[lf] == '/' || to[lf] == '\0');
}

static int two_paths(struct dbx *db, const char *from, const char *to,
		     char **ffrom, char **fto)
{
	int rc;

	*ffrom = *fto = NULL;
	rc = full_path(db, from, false, ffrom);
	if (rc == 0)
		rc = full_path(db, to, false, fto);
	if (rc == 0 && strcmp(from, to) != 0 && inside(from, to)) {
		backend_set_error("cannot put \"%s\" inside itself (\"%s\")",
				  from, to);
		rc = -EINVAL;
	}
	if (rc == 0 && strcmp(from, to) == 0) {
		backend_set_error("\"%s\" exists", to);
		rc = -EEXIST;
	}
	if (rc < 0) {
		free(*ffrom);
		free(*fto);
		*ffrom = *fto = NULL;
	}
	return rc;
}

static int dbx_move(struct backend *be, const char *from, const char *to)
{
	struct dbx *db = db_of(be);
	char name[BACKEND_NAME_MAX + 1] = "";
	char *ffrom, *fto;
	int rc;

	rc = two_paths(db, from, to, &ffrom, &fto);
	if (rc < 0)
		return rc;
	if (dbx_name_equal(from, to)) {
		/* Another spelling of the same path (fold.h). */
		rc = rename_case(db, from, to, ffrom, fto);
		goto out;
	}
	rc = relocate(db, false, from, to, ffrom, fto, name);
	if (rc == 0 && name[0] && strcmp(name, base_name(to)) != 0 &&
	    dbx_name_equal(name, base_name(to))) {
		/* A case-only rename outside ASCII that Dropbox accepted
		 * without changing anything. */
		rc = rename_case(db, from, to, ffrom, fto);
	} else if (rc == -EEXIST && dbx_name_equal(ffrom, fto) &&
		   same_entry(db, ffrom, fto)) {
		rc = rename_case(db, from, to, ffrom, fto);
	}
out:
	free(ffrom);
	free(fto);
	return rc;
}

static int dbx_copy(struct backend *be, const char *from, const char *to)
{
	struct dbx *db = db_of(be);
	char *ffrom, *fto;
	int rc;

	rc = two_paths(db, from, to, &ffrom, &fto);
	if (rc < 0)
		return rc;
	rc = relocate(db, true, from, to, ffrom, fto, NULL);
	free(ffrom);
	free(fto);
	return rc;
}

/* ---- change tracking ---- */

static int dbx_latest_cursor(struct backend *be, char **cursor)
{
	struct dbx *db = db_of(be);
	bool created = false;
	struct call c;
	char *arg;
	int rc;

	arg = encode(json_pack("{s:s, s:b, s:b, s:b}", "path", db->root,
			       "recursive", 1, "include_deleted", 0,
			       "include_non_downloadable_files", 0),
		     false);
	if (!arg)
		return -ENOMEM;
again:
	call_init(&c, "files/list_folder/get_latest_cursor", HOST_API,
		  STYLE_RPC, "/");
	c.arg = arg;
	rc = dbx_call(db, &c);
	if (rc == -ENOENT && !created) {
		call_release(&c);
		created = true;
		rc = ensure_root(db);
		if (rc == 0)
			goto again;
		free(arg);
		return rc;
	}
	if (rc == 0) {
		rc = dbx_parse_cursor(c.resp.body, c.resp.body_len, cursor);
		if (rc == -EIO)
			backend_set_error("get_latest_cursor: malformed reply");
	}
	call_release(&c);
	free(arg);
	return rc;
}

static int dbx_longpoll(struct backend *be, const char *cursor, int timeout_s,
			bool *changes, int *backoff_s)
{
	struct dbx *db = db_of(be);
	struct call c;
	char *arg;
	int rc, t = timeout_s;

	if (t < DBX_LONGPOLL_MIN)
		t = DBX_LONGPOLL_MIN;
	if (t > DBX_LONGPOLL_MAX)
		t = DBX_LONGPOLL_MAX;
	arg = encode(json_pack("{s:s, s:i}", "cursor", cursor, "timeout", t),
		     false);
	if (!arg)
		return -ENOMEM;
	call_init(&c, "files/list_folder/longpoll", HOST_NOTIFY, STYLE_LONGPOLL,
		  NULL);
	c.arg = arg;
	c.timeout_s = t + DBX_LONGPOLL_SLACK;
	rc = dbx_call(db, &c);
	if (rc == 0) {
		rc = dbx_parse_longpoll(c.resp.body, c.resp.body_len, changes,
					backoff_s);
		if (rc == -EIO)
			backend_set_error("longpoll: malformed reply");
	}
	call_release(&c);
	free(arg);
	return rc;
}

static int dbx_list_changes(struct backend *be, const char *cursor,
			    struct backend_page *page)
{
	struct dbx *db = db_of(be);
	struct call c;
	char *arg;
	int rc;

	arg = encode(json_pack("{s:s}", "cursor", cursor), false);
	if (!arg)
		return -ENOMEM;
	call_init(&c, "files/list_folder/continue", HOST_API, STYLE_RPC, "/");
	c.arg = arg;
	rc = dbx_call(db, &c);
	if (rc == 0) {
		rc = dbx_parse_changes_page(c.resp.body, c.resp.body_len,
					    db->root, page);
		if (rc == -EIO)
			backend_set_error("list_folder/continue: malformed "
					  "reply");
	}
	call_release(&c);
	free(arg);
	return rc;
}

static int dbx_space(struct backend *be, uint64_t *used, uint64_t *total)
{
	return space_call(db_of(be), 0, used, total);
}

/* ---- lifecycle ---- */

static void dbx_destroy(struct backend *be)
{
	struct dbx *db = db_of(be);

	if (!db)
		return;
	http_pool_destroy(db->pool);
	free_secret(&db->token);
	free_secret(&db->refresh_token);
	free_secret(&db->app_secret);
	free(db->app_key);
	free(db->api_url);
	free(db->content_url);
	free(db->notify_url);
	free(db->root);
	for (size_t i = 0; i < DBX_KEPT_MAX; i++)
		free(db->kept[i].sid);
	if (db->locks_ok) {
		pthread_mutex_destroy(&db->tok_lock);
		pthread_cond_destroy(&db->tok_cond);
		pthread_mutex_destroy(&db->hold_lock);
		pthread_mutex_destroy(&db->kept_lock);
		pthread_mutex_destroy(&db->batch_lock);
		pthread_cond_destroy(&db->batch_cond);
	}
	free(db);
}

/* Ends the watcher's long poll at shutdown. */
static void dbx_interrupt(struct backend *be)
{
	http_pool_interrupt(db_of(be)->pool);
}

static const struct backend_ops dbx_ops = {
	.name = "dropbox",
	.probe = dbx_probe,
	.list = dbx_list,
	.stat = dbx_stat,
	.download = dbx_download,
	.upload = dbx_upload,
	.mkdir = dbx_mkdir,
	.remove = dbx_remove,
	.remove_batch = dbx_remove_batch,
	.list_tree = dbx_list_tree,
	.move = dbx_move,
	.copy = dbx_copy,
	.upload_batch = dbx_upload_batch,
	.latest_cursor = dbx_latest_cursor,
	.longpoll = dbx_longpoll,
	.list_changes = dbx_list_changes,
	.interrupt = dbx_interrupt,
	.space = dbx_space,
	.destroy = dbx_destroy,
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Copies URL @url without trailing slashes; it must be https://. */
static int url_copy(const char *key, const char *url, char **out, char *err,
		    size_t errlen)
{
	size_t len;

	if (!url || strncasecmp(url, "https://", 8) != 0 || !url[8]) {
		set_err(err, errlen,
			"huracanfs.%s must be an https:// URL (got \"%s\")",
			key, url ? url : "");
		return -EINVAL;
	}
	len = strlen(url);
	while (len > 8 && url[len - 1] == '/')
		len--;
	*out = strndup(url, len);
	return *out ? 0 : -ENOMEM;
}

/* "/" + app_folder without stray slashes, each component checked. */
static int make_root(const char *folder, char **out, char *err, size_t errlen)
{
	const char *p = folder ? folder : "";
	size_t len;
	char *s;

	while (*p == '/')
		p++;
	len = strlen(p);
	while (len && p[len - 1] == '/')
		len--;
	if (len == 0) {
		*out = strdup("");
		return *out ? 0 : -ENOMEM;
	}
	if (asprintf(&s, "/%.*s", (int)len, p) < 0)
		return -ENOMEM;
	if (!path_ok(s, false)) {
		set_err(err, errlen,
			"dropbox.app_folder \"%s\" is not a valid "
			"Dropbox folder name",
			folder);
		free(s);
		return -EINVAL;
	}
	*out = s;
	return 0;
}

static int dup_opt(const char *s, char **out)
{
	*out = NULL;
	if (!s || !s[0])
		return 0;
	*out = strdup(s);
	return *out ? 0 : -ENOMEM;
}

int backend_dropbox_create(const struct hfs_config *cfg, struct backend **out,
			   char *err, size_t errlen)
{
	bool has_token = cfg->access_token && cfg->access_token[0];
	bool has_refresh = cfg->refresh_token && cfg->refresh_token[0] &&
			   cfg->app_key && cfg->app_key[0];
	struct dbx *db;
	int rc;

	set_err(err, errlen, "%s", "");
	if (!has_token && !has_refresh) {
		set_err(err, errlen,
			"no Dropbox credentials: set dropbox.access_token (or "
			"HURACANFS_DROPBOX_TOKEN), or dropbox.app_key and run "
			"`huracanfs auth`");
		return -EINVAL;
	}
	db = calloc(1, sizeof(*db));
	if (!db)
		return -ENOMEM;
	db->base.ops = &dbx_ops;
	db->tune = dbx_defaults;
	if (pthread_mutex_init(&db->tok_lock, NULL) != 0) {
		free(db);
		return -ENOMEM;
	}
	pthread_cond_init(&db->tok_cond, NULL);
	pthread_mutex_init(&db->hold_lock, NULL);
	pthread_mutex_init(&db->kept_lock, NULL);
	pthread_mutex_init(&db->batch_lock, NULL);
	pthread_cond_init(&db->batch_cond, NULL);
	db->locks_ok = true;

	rc = url_copy("api_url", cfg->api_url, &db->api_url, err, errlen);
	if (rc == 0)
		rc = url_copy("content_url", cfg->content_url, &db->content_url,
			      err, errlen);
	if (rc == 0)
		rc = url_copy("notify_url", cfg->notify_url, &db->notify_url,
			      err, errlen);
	if (rc == 0)
		rc = make_root(cfg->app_folder, &db->root, err, errlen);
	if (rc == 0 && has_token)
		rc = dup_opt(cfg->access_token, &db->token);
	if (rc == 0 && has_refresh) {
		rc = dup_opt(cfg->refresh_token, &db->refresh_token);
		if (rc == 0)
			rc = dup_opt(cfg->app_key, &db->app_key);
		if (rc == 0)
			rc = dup_opt(cfg->app_secret, &db->app_secret);
	}
	if (rc == 0)
		rc = http_pool_create(cfg->ca_file, 0, &db->pool);
	if (rc < 0) {
		if (rc == -ENOMEM)
			set_err(err, errlen, "out of memory");
		dbx_destroy(&db->base);
		return rc;
	}
	*out = &db->base;
	return 0;
}

void backend_dropbox_tune(struct backend *be, const struct dbx_tuning *t)
{
	struct dbx *db;

	if (!be || be->ops != &dbx_ops || !t)
		return;
	db = db_of(be);
	if (t->max_attempts)
		db->tune.max_attempts = t->max_attempts;
	if (t->backoff_base_ms)
		db->tune.backoff_base_ms = t->backoff_base_ms;
	if (t->backoff_cap_ms)
		db->tune.backoff_cap_ms = t->backoff_cap_ms;
	if (t->budget_ms)
		db->tune.budget_ms = t->budget_ms;
	if (t->single_max)
		db->tune.single_max = t->single_max;
	if (t->chunk && t->chunk % (4 * MiB) == 0)
		db->tune.chunk = t->chunk;
}

/*
 * The Dropbox backend's call layer (dbx_i.h): every request goes through
 * dbx_api_call(), the one place that retries. An attempt ends in one of
 * these ways:
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
 * first reply named ("rev:<rev>", backend_dropbox.c), so the bytes cannot
 * change under it; the content hash of a whole download is computed while
 * it streams.
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
 *
 * Also here, for the other files: the paths and arguments of calls, the
 * shared get_metadata and get_space_usage calls, and the batch gate.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "dbx_i.h"
#include "hfs/metrics.h"

#define DBX_REFRESH_MARGIN 300
#define DBX_REFRESH_SPACING 5
#define DBX_AUTH_BACKOFF_MIN 60
#define DBX_AUTH_BACKOFF_MAX 3600
#define DBX_HOLD_MAX_MS 3600000u

void dbx_api_call_init(struct call *c, const char *route, enum dbx_host host,
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

void dbx_api_call_release(struct call *c)
{
	http_response_release(&c->resp);
}

/* ---- time, randomness, sleeping ---- */

uint64_t dbx_api_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t dbx_api_rand64(void)
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
void dbx_api_sleep_ms(uint64_t ms)
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
uint64_t dbx_api_backoff_ms(const struct dbx *db, unsigned n)
{
	uint64_t d = db->tune.backoff_base_ms;

	while (n-- && d < db->tune.backoff_cap_ms)
		d *= 2;
	if (d > db->tune.backoff_cap_ms)
		d = db->tune.backoff_cap_ms;
	if (d < 2)
		return d;
	return d / 2 + dbx_api_rand64() % (d / 2 + 1);
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

int64_t dbx_api_now_s(void)
{
	return (int64_t)(dbx_api_now_ms() / 1000);
}

/*
 * Mints a new access token from the refresh token. Called with
 * db->refreshing set by the caller and tok_lock NOT held.
 */
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
	dbx_api_call_init(&c, "oauth2/token", HOST_API, STYLE_OAUTH, NULL);
	c.form = form;
	rc = dbx_api_call(db, &c);
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
	dbx_api_call_release(&c);
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
	db->auth_retry_at = dbx_api_now_s() + d;
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
		now = dbx_api_now_s();
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
			dbx_api_sleep_ms((uint64_t)wait * 1000);
		rc = do_refresh(db, &fresh, &expires_in);
		pthread_mutex_lock(&db->tok_lock);
		db->refreshing = false;
		now = dbx_api_now_s();
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
	now = dbx_api_now_ms();
	if (until <= now)
		return 0;
	if (*slept + (until - now) > budget) {
		backend_set_error("Dropbox rate limit: asked to wait %" PRIu64
				  " s",
				  (until - now + 999) / 1000);
		return -EAGAIN;
	}
	dbx_api_sleep_ms(until - now);
	*slept += until - now;
	return 0;
}

static void set_hold(struct dbx *db, uint64_t ms)
{
	uint64_t until = dbx_api_now_ms() + ms;

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

void dbx_api_free_secret(char **s)
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

int dbx_api_call(struct dbx *db, struct call *c)
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
		if (rc == 0) {
			rc = http_perform(db->pool, &req, &c->resp);
			metrics_remote_request(c->route,
					       rc < 0 ? 0 : c->resp.status);
		}
		dbx_api_free_secret(&auth);
		dbx_api_free_secret(&token);
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
			wait = dbx_api_backoff_ms(db, attempts - 1);
			backend_set_error("%s %s: Dropbox unreachable: %s",
					  c->route, what_of(c), c->resp.error);
			if (attempts >= max ||
			    slept + wait > db->tune.budget_ms)
				return -EAGAIN;
			rc = advance_sink(c);
			if (rc < 0)
				return rc;
			metrics_remote_retry();
			dbx_api_sleep_ms(wait);
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
				dbx_api_free_secret(&token);
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
				wait = dbx_api_backoff_ms(db, attempts - 1);
			}
			backend_set_error("%s %s: %s (HTTP %ld), gave up after "
					  "%u attempts",
					  c->route, what_of(c), c->err.summary,
					  status, attempts);
			if (attempts >= max ||
			    slept + wait > db->tune.budget_ms)
				return -EAGAIN;
			if (status != 429) {
				dbx_api_sleep_ms(wait);
				slept += wait;
			}
			metrics_remote_retry();
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
bool dbx_api_path_ok(const char *path, bool allow_root)
{
	return backend_path_ok(path, allow_root, backend_name_ok);
}

/* The Dropbox path of backend path @path, malloc'd, in *@out. */
int dbx_api_full_path(struct dbx *db, const char *path, bool allow_root,
		      char **out)
{
	if (!dbx_api_path_ok(path, allow_root)) {
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

const char *dbx_api_base_name(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

/* Serializes @obj (stolen) as an RPC body or, if @header, a header arg. */
char *dbx_api_encode(json_t *obj, bool header)
{
	char *s;

	if (!obj)
		return NULL;
	s = header ? dbx_json_header_arg(obj) : json_dumps(obj, JSON_COMPACT);
	json_decref(obj);
	return s;
}

/* get_metadata of Dropbox path @full into @m. */
int dbx_api_get_meta(struct dbx *db, const char *full, const char *what,
		     struct dbx_meta *m)
{
	struct call c;
	char *arg;
	int rc;

	arg = dbx_api_encode(
		json_pack("{s:s, s:b}", "path", full, "include_deleted", 0),
		false);
	if (!arg)
		return -ENOMEM;
	dbx_api_call_init(&c, "files/get_metadata", HOST_API, STYLE_RPC, what);
	c.arg = arg;
	rc = dbx_api_call(db, &c);
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
	dbx_api_call_release(&c);
	free(arg);
	return rc;
}

/* users/get_space_usage: used and allocated bytes. */
int dbx_api_space_usage(struct dbx *db, unsigned max_attempts, uint64_t *used,
			uint64_t *total)
{
	struct call c;
	int rc;

	dbx_api_call_init(&c, "users/get_space_usage", HOST_API, STYLE_RPC,
			  NULL);
	c.max_attempts = max_attempts;
	rc = dbx_api_call(db, &c);
	if (rc == 0) {
		rc = dbx_parse_space(c.resp.body, c.resp.body_len, used, total);
		if (rc == -EIO)
			backend_set_error("get_space_usage: malformed reply");
	}
	dbx_api_call_release(&c);
	return rc;
}

/* ---- the batch gate ---- */

void dbx_api_batch_enter(struct dbx *db)
{
	pthread_mutex_lock(&db->batch_lock);
	while (db->batch_busy)
		pthread_cond_wait(&db->batch_cond, &db->batch_lock);
	db->batch_busy = true;
	pthread_mutex_unlock(&db->batch_lock);
}

void dbx_api_batch_leave(struct dbx *db)
{
	pthread_mutex_lock(&db->batch_lock);
	db->batch_busy = false;
	pthread_cond_signal(&db->batch_cond);
	pthread_mutex_unlock(&db->batch_lock);
}

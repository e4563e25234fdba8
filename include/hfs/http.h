/*
 * A small HTTPS client layer over libcurl, for the Dropbox backend and
 * `huracanfs auth`.
 *
 * A struct http_pool owns a bounded set of curl easy handles. A request
 * takes one (waiting on a condvar while all are busy), performs one HTTP
 * exchange and gives it back, so connections and TLS sessions are reused;
 * the handles also share DNS and TLS-session caches through a curl share
 * object. Every handle is configured the same way on every request:
 * CURLOPT_NOSIGNAL, a 10 s connect timeout, TCP keepalive, an error buffer
 * owned by the handle, HTTPS only (no redirects), and TLS always verified
 * (peer and host) against the system CAs (/etc/ssl/certs) plus the
 * optional extra CA file given at creation. There is no option to turn
 * verification off, and CURLOPT_VERBOSE is never set.
 *
 * Requests are POSTs. The body comes from memory or is streamed from a
 * byte range of a file descriptor with pread (so a retry can send it
 * again). The response body goes to memory, capped at HTTP_BODY_MAX
 * (beyond: -EIO "reply too large"), or, for 2xx replies, is streamed to a
 * file descriptor with pwrite (memory stays flat whatever the size). The
 * response headers Dropbox-API-Result (capped at HTTP_HEADER_MAX),
 * Retry-After and Content-Range are captured.
 *
 * Errors: CURLcode is translated to a negative errno exactly once, here:
 *   -ETIMEDOUT      the transfer timed out (total or low-speed limit)
 *   -EHOSTUNREACH   the host name did not resolve
 *   -ECONNREFUSED   the connection could not be made
 *   -ECONNRESET     the connection broke (send/receive failure, empty or
 *                   partial reply, TLS handshake failure)
 *   -ECONNABORTED   the server's certificate was not trusted
 *   -EIO            a malformed or too large reply, anything else
 *   -ENOMEM, -EINVAL (bad URL or protocol), or the errno of a failed
 *                   pread/pwrite on the caller's descriptors.
 * http_transient() tells which of these are worth retrying. An HTTP
 * status other than 2xx is not an error of this layer: http_perform
 * returns 0 and the caller looks at resp->status.
 *
 * Thread-safety: http_perform may be called from any number of threads on
 * one pool. Secrets: the caller's headers (Authorization) and bodies are
 * never logged or copied into resp->error.
 */
#ifndef HFS_HTTP_H
#define HFS_HTTP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct chash;

#define HTTP_BODY_MAX ((size_t)16 * 1024 * 1024)
#define HTTP_HEADER_MAX ((size_t)64 * 1024)
#define HTTP_CONNECT_TIMEOUT 10L
#define HTTP_RPC_TIMEOUT 120L
#define HTTP_LOW_SPEED_LIMIT 1024L
#define HTTP_LOW_SPEED_TIME 60L
#define HTTP_POOL_DEFAULT 16

struct http_pool;

/*
 * Creates a pool of at most @size handles (0: HTTP_POOL_DEFAULT). @ca_file
 * (may be NULL) is an extra PEM file of trusted CAs, copied. Handles are
 * created lazily. Returns 0 and sets *@out, or -ENOMEM.
 * curl_global_init must have been called.
 */
int http_pool_create(const char *ca_file, size_t size, struct http_pool **out);
/* Releases the pool; no request may be in flight. Accepts NULL. */
void http_pool_destroy(struct http_pool *pool);
/* Makes long polls in flight, and later ones, fail with -EINTR soon
 * (within about a second: curl's progress callback). Other requests are
 * not affected: the shutdown flush still runs. */
void http_pool_interrupt(struct http_pool *pool);

/*
 * Gives the calling thread a cancel flag (NULL: none): once it is set, the
 * thread's requests in flight and later ones fail with -EINTR soon, and
 * retry loops stop waiting. For background threads (restore, watcher)
 * that must stop promptly at unmount while the remote is unreachable.
 */
void http_set_thread_cancel(const atomic_bool *flag);
bool http_thread_cancelled(void);

/*
 * Marks the calling thread's requests as awaited by a user (a lookup, an
 * ls): callers with retry loops retry little and wait little, and leave
 * the rest to the index. Off by default.
 */
void http_set_thread_quick(bool quick);
bool http_thread_quick(void);

/*
 * A user waits for the calling thread's requests (a read of bytes not in
 * the cache) at most until @deadline_ns (CLOCK_MONOTONIC; 0: no limit, the
 * default): a request is refused with -ETIMEDOUT once it has passed, an
 * exchange is cut at it, and a transfer that stalls (below
 * HTTP_LOW_SPEED_LIMIT) for the time left is cut then, while one that
 * moves goes on. Implies http_thread_quick(). http_mono_ns() is that clock.
 */
void http_set_thread_deadline(int64_t deadline_ns);
int64_t http_mono_ns(void);

enum http_kind {
	HTTP_RPC, /* small exchange: total timeout HTTP_RPC_TIMEOUT */
	HTTP_TRANSFER, /* upload/download: low-speed limits, no total limit */
	HTTP_LONGPOLL, /* total timeout @timeout_s */
};

struct http_request {
	const char *url;
	/* Extra header lines ("Name: value"), NULL-terminated; may be NULL.
	 * Borrowed; may hold secrets. */
	const char *const *headers;
	/* Content-Type of the body; NULL sends none (not even curl's
	 * default form type). */
	const char *content_type;

	/* Body from memory (@body, @body_len; both may be 0/NULL for an
	 * empty body), or, if @body_fd >= 0, @body_fd_len bytes read from
	 * @body_fd at @body_fd_off with pread. */
	const void *body;
	size_t body_len;
	int body_fd;
	uint64_t body_fd_off;
	uint64_t body_fd_len;

	/*
	 * Response sink. @sink_fd < 0: the body goes to resp->body. Else a
	 * 2xx body goes to @sink_fd (other statuses still to memory): the
	 * byte at position @range_start of the resource is written at file
	 * offset @sink_off, and at most @range_len bytes (0: no limit) are
	 * written. If @range, a "Range: bytes=..." header asks for exactly
	 * that; a 206 reply must then start at @range_start (Content-Range),
	 * and a plain 200 (the whole resource) is skipped to @range_start.
	 * If @hash is non-NULL, every byte written is fed to it.
	 */
	int sink_fd;
	uint64_t sink_off;
	uint64_t range_start;
	uint64_t range_len;
	bool range;
	struct chash *hash;

	enum http_kind kind;
	long timeout_s; /* HTTP_LONGPOLL only */
};

/* Initializes @req with no body, no sink, HTTP_RPC. */
void http_request_init(struct http_request *req);

struct http_response {
	long status; /* HTTP status, 0 if none was received */
	char *body; /* owned; NUL-terminated; NULL if empty */
	size_t body_len; /* excluding the NUL */
	uint64_t written; /* bytes written to sink_fd */
	char *api_result; /* owned; Dropbox-API-Result value, or NULL */
	long retry_after; /* Retry-After seconds, or -1 */
	bool has_range; /* a Content-Range header came */
	uint64_t range_total; /* its total size, if known (else 0) */
	char error[256]; /* detail of a failure (never a secret) */
};

/* Releases what @resp owns and zeroes it; safe on a zeroed struct. */
void http_response_release(struct http_response *resp);

/*
 * Performs @req with a handle from @pool (blocking until one is free).
 * Fills @resp (released first) and returns 0 if an HTTP reply was
 * received, whatever its status, or a negative errno (see the top of this
 * file) with a detail in resp->error. On failure resp->written still
 * tells how many bytes reached the sink.
 */
int http_perform(struct http_pool *pool, const struct http_request *req,
		 struct http_response *resp);

/*
 * Bandwidth limits of the whole process, in bytes per second (0: none):
 * @up for request bodies, @down for response bodies, each shared by every
 * request in flight on every pool (a token bucket per direction, in the
 * read and write callbacks). May be called at any time from any thread; a
 * change applies to the next bytes. Default: none.
 */
void http_set_rate_limits(uint64_t up, uint64_t down);
void http_get_rate_limits(uint64_t *up, uint64_t *down);

/* True for the errors of http_perform worth retrying after a pause. */
bool http_transient(int rc);

/*
 * Appends "@key=@value" (percent-encoded, with '&' before it if @buf is
 * not empty) to the malloc'd form-encoded string *@buf. Returns 0 or
 * -ENOMEM (then *@buf is unchanged).
 */
int http_form_add(char **buf, const char *key, const char *value);

#endif

/*
 * The libcurl layer (see http.h).
 *
 * Handles. The pool creates up to @size easy handles lazily and keeps the
 * idle ones on a free list. Before each request a handle is reset with
 * curl_easy_reset, which keeps its live connections and caches, and then
 * gets the same base options again, so nothing of a previous request (a
 * sink, a header list, a timeout) can leak into the next one.
 *
 * Bodies. Every request is a POST whose body comes from a read callback
 * with a known size (CURLOPT_POSTFIELDSIZE_LARGE). The callback reads from
 * memory or with pread from the caller's descriptor at an absolute offset,
 * and a seek callback lets curl rewind it when it must send the request
 * again on a fresh connection. Since curl adds a form Content-Type to
 * POSTs by default, the header list always says the Content-Type
 * explicitly, or removes it ("Content-Type:").
 *
 * Replies. The write callback decides, at the first body byte, where the
 * body goes: a 2xx reply to the sink descriptor when there is one, every
 * other reply to a memory buffer capped at HTTP_BODY_MAX. For the sink it
 * applies the requested range: a 206 must start where we asked; a 200 is
 * the whole resource, so the bytes before the range are skipped, and once
 * the range is complete the transfer is cut short on purpose (done_early),
 * which is a success. The header callback keeps the few headers we need,
 * and forgets them at each new status line (interim 1xx replies).
 */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "hfs/hash.h"
#include "hfs/http.h"

#define HTTP_SYSTEM_CAPATH "/etc/ssl/certs"
#define HTTP_USER_AGENT "huracanfs/" PACKAGE_VERSION
#define HTTP_BUFFER_SIZE (256L * 1024)
#define HTTP_RETRY_AFTER_MAX 86400L

struct http_handle {
	CURL *curl;
	char errbuf[CURL_ERROR_SIZE]; /* CURLOPT_ERRORBUFFER of @curl */
	struct http_handle *next; /* free list link */
};

struct http_pool {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* signals: a handle went back to @idle */
	struct http_handle *idle; /* protected by lock */
	size_t created; /* protected by lock */
	size_t size; /* constant */
	char *ca_file; /* owned, constant; may be NULL */
	CURLSH *share; /* DNS and TLS session caches */
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST]; /* for @share */
	bool share_locks_ok;
	atomic_bool interrupted; /* http_pool_interrupt: no more long polls */
};

/*
 * Bandwidth limits (http_set_rate_limits): one bucket per direction,
 * shared by every request of the process, so the limit holds across all
 * connections together. A bucket keeps the time at which the bytes
 * charged so far may all have gone at @rate (@next_ns, CLOCK_MONOTONIC);
 * a caller charges its bytes and sleeps until that time, less an
 * allowance of RATE_BURST_NS, so an idle link may send that much at once
 * and a busy one is held to the rate over any longer stretch. @rate is
 * read without the lock (a change applies from the next charge); @next_ns
 * is protected by @mu.
 */
#define RATE_BURST_NS (50LL * 1000000)
/* A callback sends at most 1/RATE_SLICES of a second's worth at a time, so
 * that concurrent transfers take turns (and never less than this). */
#define RATE_SLICES 20
#define RATE_CHUNK_MIN 4096

struct rate_bucket {
	pthread_mutex_t mu;
	_Atomic uint64_t rate; /* bytes per second; 0: no limit */
	int64_t next_ns; /* mu */
};

static struct rate_bucket up_bucket = {.mu = PTHREAD_MUTEX_INITIALIZER};
static struct rate_bucket down_bucket = {.mu = PTHREAD_MUTEX_INITIALIZER};

void http_set_rate_limits(uint64_t up, uint64_t down)
{
	atomic_store(&up_bucket.rate, up);
	atomic_store(&down_bucket.rate, down);
}

void http_get_rate_limits(uint64_t *up, uint64_t *down)
{
	*up = atomic_load(&up_bucket.rate);
	*down = atomic_load(&down_bucket.rate);
}

/* How many of @want bytes one callback may move under @b's limit. */
static size_t rate_chunk(struct rate_bucket *b, size_t want)
{
	uint64_t rate = atomic_load(&b->rate);
	if (!rate)
		return want;
	uint64_t chunk = rate / RATE_SLICES;
	if (chunk < RATE_CHUNK_MIN)
		chunk = RATE_CHUNK_MIN;
	return (uint64_t)want > chunk ? (size_t)chunk : want;
}

/*
 * Charges @n bytes to @b and sleeps until they may have gone. Returns 0,
 * or -EINTR if the thread was cancelled meanwhile (http_set_thread_cancel).
 * Sleeps in short steps, so a cancel or a lifted limit ends the wait soon.
 */
static int rate_wait(struct rate_bucket *b, size_t n);

enum sink_mode { MODE_UNDECIDED, MODE_MEMORY, MODE_SINK };

/* The state of one request while curl runs it. */
struct xfer {
	struct http_pool *pool;
	const struct http_request *req;
	struct http_response *resp;
	CURL *curl;
	uint64_t body_pos; /* next body byte to send, from the body start */
	uint64_t body_total;
	int err; /* set by a callback that aborted the transfer */
	enum sink_mode mode;
	size_t mem_cap;
	uint64_t skip; /* sink: bytes still to skip before writing */
	bool done_early;
	bool range_ok; /* Content-Range seen */
	uint64_t range_first; /* its first byte */
};

void http_request_init(struct http_request *req)
{
	memset(req, 0, sizeof(*req));
	req->body_fd = -1;
	req->sink_fd = -1;
	req->kind = HTTP_RPC;
}

void http_response_release(struct http_response *resp)
{
	if (!resp)
		return;
	free(resp->body);
	free(resp->api_result);
	memset(resp, 0, sizeof(*resp));
	resp->retry_after = -1;
}

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access,
		       void *ud)
{
	struct http_pool *pool = ud;

	(void)h;
	(void)access;
	if (data >= 0 && data < CURL_LOCK_DATA_LAST)
		pthread_mutex_lock(&pool->share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *ud)
{
	struct http_pool *pool = ud;

	(void)h;
	if (data >= 0 && data < CURL_LOCK_DATA_LAST)
		pthread_mutex_unlock(&pool->share_locks[data]);
}

int http_pool_create(const char *ca_file, size_t size, struct http_pool **out)
{
	struct http_pool *pool;
	int i;

	pool = calloc(1, sizeof(*pool));
	if (!pool)
		return -ENOMEM;
	pool->size = size ? size : HTTP_POOL_DEFAULT;
	if (pthread_mutex_init(&pool->lock, NULL) != 0) {
		free(pool);
		return -ENOMEM;
	}
	if (pthread_cond_init(&pool->cond, NULL) != 0) {
		pthread_mutex_destroy(&pool->lock);
		free(pool);
		return -ENOMEM;
	}
	for (i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&pool->share_locks[i], NULL);
	pool->share_locks_ok = true;
	if (ca_file && ca_file[0]) {
		pool->ca_file = strdup(ca_file);
		if (!pool->ca_file)
			goto fail;
	}
	pool->share = curl_share_init();
	if (!pool->share)
		goto fail;
	curl_share_setopt(pool->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(pool->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(pool->share, CURLSHOPT_USERDATA, pool);
	curl_share_setopt(pool->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(pool->share, CURLSHOPT_SHARE,
			  CURL_LOCK_DATA_SSL_SESSION);
	*out = pool;
	return 0;
fail:
	http_pool_destroy(pool);
	return -ENOMEM;
}

void http_pool_destroy(struct http_pool *pool)
{
	struct http_handle *h;
	int i;

	if (!pool)
		return;
	while ((h = pool->idle)) {
		pool->idle = h->next;
		curl_easy_cleanup(h->curl);
		free(h);
	}
	if (pool->share)
		curl_share_cleanup(pool->share);
	if (pool->share_locks_ok)
		for (i = 0; i < CURL_LOCK_DATA_LAST; i++)
			pthread_mutex_destroy(&pool->share_locks[i]);
	pthread_cond_destroy(&pool->cond);
	pthread_mutex_destroy(&pool->lock);
	free(pool->ca_file);
	free(pool);
}

/* Takes an idle handle, creates one, or waits for one. NULL: -ENOMEM. */
static struct http_handle *pool_get(struct http_pool *pool)
{
	struct http_handle *h = NULL;

	pthread_mutex_lock(&pool->lock);
	while (!pool->idle && pool->created >= pool->size)
		pthread_cond_wait(&pool->cond, &pool->lock);
	if (pool->idle) {
		h = pool->idle;
		pool->idle = h->next;
		pthread_mutex_unlock(&pool->lock);
		return h;
	}
	pool->created++;
	pthread_mutex_unlock(&pool->lock);

	h = calloc(1, sizeof(*h));
	if (h)
		h->curl = curl_easy_init();
	if (!h || !h->curl) {
		free(h);
		pthread_mutex_lock(&pool->lock);
		pool->created--;
		pthread_cond_signal(&pool->cond);
		pthread_mutex_unlock(&pool->lock);
		return NULL;
	}
	return h;
}

static void pool_put(struct http_pool *pool, struct http_handle *h)
{
	pthread_mutex_lock(&pool->lock);
	h->next = pool->idle;
	pool->idle = h;
	pthread_cond_signal(&pool->cond);
	pthread_mutex_unlock(&pool->lock);
}

/* The one translation of CURLcode to errno. */
static int curl_errno(CURLcode c)
{
	switch (c) {
	case CURLE_OK:
		return 0;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SEND_FAIL_REWIND:
		return -ECONNRESET;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
		return -ECONNABORTED;
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
		return -EINVAL;
	default:
		return -EIO;
	}
}

bool http_transient(int rc)
{
	switch (-rc) {
	case ETIMEDOUT:
	case EHOSTUNREACH:
	case ECONNREFUSED:
	case ECONNRESET:
	case ENETUNREACH:
	case ENETDOWN:
		return true;
	default:
		return false;
	}
}

static size_t read_cb(char *buf, size_t size, size_t nitems, void *ud)
{
	struct xfer *x = ud;
	const struct http_request *req = x->req;
	uint64_t left = x->body_total - x->body_pos;
	size_t want = size * nitems;
	ssize_t n;

	if ((uint64_t)want > left)
		want = (size_t)left;
	if (want == 0)
		return 0;
	want = rate_chunk(&up_bucket, want);
	if (rate_wait(&up_bucket, want) < 0) {
		x->err = -EINTR;
		return CURL_READFUNC_ABORT;
	}
	if (req->body_fd < 0) {
		memcpy(buf, (const char *)req->body + x->body_pos, want);
		x->body_pos += want;
		return want;
	}
	do {
		n = pread(req->body_fd, buf, want,
			  (off_t)(req->body_fd_off + x->body_pos));
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		x->err = -errno;
		snprintf(x->resp->error, sizeof(x->resp->error),
			 "reading the upload body: %s", strerror(errno));
		return CURL_READFUNC_ABORT;
	}
	if (n == 0) {
		x->err = -EIO;
		snprintf(x->resp->error, sizeof(x->resp->error),
			 "the file to upload shrank while it was sent");
		return CURL_READFUNC_ABORT;
	}
	x->body_pos += (uint64_t)n;
	return (size_t)n;
}

static int seek_cb(void *ud, curl_off_t offset, int origin)
{
	struct xfer *x = ud;

	if (origin != SEEK_SET || offset < 0 ||
	    (uint64_t)offset > x->body_total)
		return CURL_SEEKFUNC_FAIL;
	x->body_pos = (uint64_t)offset;
	return CURL_SEEKFUNC_OK;
}

/* Parses a decimal u64 at *@p, advancing it. False if none. */
static bool parse_u64(const char **p, uint64_t *out)
{
	const char *s = *p;
	uint64_t v = 0;

	if (*s < '0' || *s > '9')
		return false;
	while (*s >= '0' && *s <= '9') {
		if (v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
		s++;
	}
	*p = s;
	*out = v;
	return true;
}

/* "bytes FIRST-LAST/TOTAL" or "bytes * /TOTAL" (without the space). */
static void parse_content_range(struct xfer *x, const char *v)
{
	uint64_t first, last, total;
	const char *p = v;

	if (strncasecmp(p, "bytes", 5) != 0)
		return;
	p += 5;
	while (*p == ' ')
		p++;
	x->resp->has_range = true;
	if (*p == '*') {
		p++;
	} else {
		if (!parse_u64(&p, &first) || *p++ != '-' ||
		    !parse_u64(&p, &last) || last < first)
			return;
		x->range_ok = true;
		x->range_first = first;
	}
	if (*p++ == '/' && parse_u64(&p, &total))
		x->resp->range_total = total;
}

static size_t header_cb(char *buf, size_t size, size_t nitems, void *ud)
{
	struct xfer *x = ud;
	struct http_response *resp = x->resp;
	size_t len = size * nitems, nlen, vlen;
	const char *colon, *v;
	char num[32];
	uint64_t ra;
	const char *p;

	if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
		/* A new reply (after an interim one): forget the old. */
		free(resp->api_result);
		resp->api_result = NULL;
		resp->retry_after = -1;
		resp->has_range = false;
		resp->range_total = 0;
		x->range_ok = false;
		return len;
	}
	colon = memchr(buf, ':', len);
	if (!colon)
		return len;
	nlen = (size_t)(colon - buf);
	v = colon + 1;
	vlen = len - nlen - 1;
	while (vlen && (*v == ' ' || *v == '\t')) {
		v++;
		vlen--;
	}
	while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' ||
			v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
		vlen--;

	if (nlen == 18 && strncasecmp(buf, "Dropbox-API-Result", 18) == 0) {
		if (vlen > HTTP_HEADER_MAX) {
			x->err = -EIO;
			snprintf(resp->error, sizeof(resp->error),
				 "Dropbox-API-Result header too large");
			return 0;
		}
		free(resp->api_result);
		resp->api_result = strndup(v, vlen);
		if (!resp->api_result) {
			x->err = -ENOMEM;
			return 0;
		}
	} else if (nlen == 11 && strncasecmp(buf, "Retry-After", 11) == 0) {
		if (vlen < sizeof(num)) {
			memcpy(num, v, vlen);
			num[vlen] = '\0';
			p = num;
			if (parse_u64(&p, &ra) && *p == '\0')
				resp->retry_after =
					ra > HTTP_RETRY_AFTER_MAX
						? HTTP_RETRY_AFTER_MAX
						: (long)ra;
		}
	} else if (nlen == 13 && strncasecmp(buf, "Content-Range", 13) == 0) {
		if (vlen < 128) {
			char tmp[128];

			memcpy(tmp, v, vlen);
			tmp[vlen] = '\0';
			parse_content_range(x, tmp);
		}
	}
	return len;
}

static int pwrite_all(int fd, const char *p, size_t len, uint64_t off)
{
	ssize_t n;

	while (len) {
		n = pwrite(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* Decides where the body of this reply goes. */
static void decide_mode(struct xfer *x)
{
	const struct http_request *req = x->req;
	long status = 0;

	curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &status);
	x->resp->status = status;
	if (req->sink_fd < 0 || status < 200 || status > 299) {
		x->mode = MODE_MEMORY;
		return;
	}
	x->mode = MODE_SINK;
	if (status == 206) {
		x->skip = 0;
		if (!x->range_ok || x->range_first != req->range_start) {
			x->err = -EIO;
			snprintf(x->resp->error, sizeof(x->resp->error),
				 "the server sent another byte range than the "
				 "one asked for");
		}
	} else {
		x->skip = req->range_start;
	}
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *ud)
{
	struct xfer *x = ud;
	const struct http_request *req = x->req;
	struct http_response *resp = x->resp;
	size_t len = size * nmemb, l, k;
	const char *p = data;
	int rc;

	if (x->mode == MODE_UNDECIDED) {
		decide_mode(x);
		if (x->err)
			return 0;
	}
	/* What came is in our buffer already: charge it, then take it. */
	if (rate_wait(&down_bucket, len) < 0) {
		x->err = -EINTR;
		return 0;
	}
	if (x->mode == MODE_MEMORY) {
		if (len > HTTP_BODY_MAX - resp->body_len) {
			x->err = -EIO;
			snprintf(resp->error, sizeof(resp->error),
				 "reply too large (more than %zu bytes)",
				 HTTP_BODY_MAX);
			return 0;
		}
		if (resp->body_len + len + 1 > x->mem_cap) {
			size_t cap = x->mem_cap ? x->mem_cap : 4096;
			char *nb;

			while (cap < resp->body_len + len + 1)
				cap *= 2;
			nb = realloc(resp->body, cap);
			if (!nb) {
				x->err = -ENOMEM;
				return 0;
			}
			resp->body = nb;
			x->mem_cap = cap;
		}
		memcpy(resp->body + resp->body_len, data, len);
		resp->body_len += len;
		resp->body[resp->body_len] = '\0';
		return len;
	}

	l = len;
	if (x->skip) {
		k = (uint64_t)l < x->skip ? l : (size_t)x->skip;
		x->skip -= k;
		p += k;
		l -= k;
	}
	if (req->range_len && (uint64_t)l > req->range_len - resp->written)
		l = (size_t)(req->range_len - resp->written);
	if (l) {
		rc = pwrite_all(req->sink_fd, p, l,
				req->sink_off + resp->written);
		if (rc < 0) {
			x->err = rc;
			snprintf(resp->error, sizeof(resp->error),
				 "writing the download: %s", strerror(-rc));
			return 0;
		}
		if (req->hash && chash_update(req->hash, p, l) < 0) {
			x->err = -EIO;
			snprintf(resp->error, sizeof(resp->error),
				 "hashing the download failed");
			return 0;
		}
		resp->written += l;
	}
	if (req->range_len && resp->written == req->range_len &&
	    p + l < data + len) {
		/* The range is complete and more is coming: stop here. */
		x->done_early = true;
		return 0;
	}
	return len;
}

/* Appends @line to *@list; false on ENOMEM (the list is then freed). */
static bool add_header(struct curl_slist **list, const char *line)
{
	struct curl_slist *n = curl_slist_append(*list, line);

	if (!n) {
		curl_slist_free_all(*list);
		*list = NULL;
		return false;
	}
	*list = n;
	return true;
}

static int build_headers(const struct http_request *req,
			 struct curl_slist **out)
{
	struct curl_slist *list = NULL;
	char line[256];
	size_t i;

	for (i = 0; req->headers && req->headers[i]; i++)
		if (!add_header(&list, req->headers[i]))
			return -ENOMEM;
	if (req->content_type) {
		if (strlen(req->content_type) > 200)
			goto inval;
		snprintf(line, sizeof(line), "Content-Type: %s",
			 req->content_type);
	} else {
		snprintf(line, sizeof(line), "Content-Type:");
	}
	if (!add_header(&list, line) || !add_header(&list, "Expect:"))
		return -ENOMEM;
	if (req->range) {
		if (req->range_len)
			snprintf(line, sizeof(line),
				 "Range: bytes=%" PRIu64 "-%" PRIu64,
				 req->range_start,
				 req->range_start + req->range_len - 1);
		else
			snprintf(line, sizeof(line),
				 "Range: bytes=%" PRIu64 "-", req->range_start);
		if (!add_header(&list, line))
			return -ENOMEM;
	}
	*out = list;
	return 0;
inval:
	curl_slist_free_all(list);
	return -EINVAL;
}

static void set_base_options(struct http_pool *pool, struct http_handle *h)
{
	CURL *c = h->curl;

	curl_easy_reset(c);
	h->errbuf[0] = '\0';
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->errbuf);
	curl_easy_setopt(c, CURLOPT_SHARE, pool->share);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, HTTP_CONNECT_TIMEOUT);
	curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(c, CURLOPT_TCP_KEEPIDLE, 60L);
	curl_easy_setopt(c, CURLOPT_TCP_KEEPINTVL, 30L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(c, CURLOPT_CAPATH, HTTP_SYSTEM_CAPATH);
	if (pool->ca_file)
		curl_easy_setopt(c, CURLOPT_CAINFO, pool->ca_file);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
#else
	curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)CURLPROTO_HTTPS);
#endif
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, HTTP_USER_AGENT);
	curl_easy_setopt(c, CURLOPT_BUFFERSIZE, HTTP_BUFFER_SIZE);
	curl_easy_setopt(c, CURLOPT_UPLOAD_BUFFERSIZE, HTTP_BUFFER_SIZE);
}

/* The calling thread's cancel flag (http_set_thread_cancel), or NULL. */
static _Thread_local const atomic_bool *thread_cancel;

/* The calling thread wants answers soon (http_set_thread_quick). */
static _Thread_local bool thread_quick;

/* ... by then (http_set_thread_deadline), or 0. */
static _Thread_local int64_t thread_deadline;

void http_set_thread_quick(bool quick)
{
	thread_quick = quick;
}

bool http_thread_quick(void)
{
	return thread_quick || thread_deadline != 0;
}

void http_set_thread_deadline(int64_t deadline_ns)
{
	thread_deadline = deadline_ns;
}

int64_t http_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void http_set_thread_cancel(const atomic_bool *flag)
{
	thread_cancel = flag;
}

bool http_thread_cancelled(void)
{
	return thread_cancel && atomic_load(thread_cancel);
}

/* Progress callback: aborts a long poll once the pool is interrupted, and
 * any transfer of a thread whose cancel flag is set. */
static int xferinfo_cb(void *arg, curl_off_t dltotal, curl_off_t dlnow,
		       curl_off_t ultotal, curl_off_t ulnow)
{
	struct xfer *x = arg;
	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	if ((x->req->kind == HTTP_LONGPOLL &&
	     atomic_load(&x->pool->interrupted)) ||
	    http_thread_cancelled()) {
		x->err = -EINTR;
		return 1;
	}
	return 0;
}

static int rate_wait(struct rate_bucket *b, size_t n)
{
	uint64_t rate = atomic_load(&b->rate);
	if (!rate || !n)
		return 0;
	int64_t now = http_mono_ns();
	pthread_mutex_lock(&b->mu);
	if (b->next_ns < now - RATE_BURST_NS)
		b->next_ns = now - RATE_BURST_NS;
	b->next_ns += (int64_t)((n * 1000000000ULL) / rate);
	int64_t until = b->next_ns - RATE_BURST_NS;
	pthread_mutex_unlock(&b->mu);
	while ((now = http_mono_ns()) < until) {
		if (http_thread_cancelled())
			return -EINTR;
		if (!atomic_load(&b->rate))
			return 0; /* the limit was lifted */
		int64_t step = until - now;
		if (step > 100000000LL)
			step = 100000000LL;
		struct timespec ts = {(time_t)(step / 1000000000LL),
				      (long)(step % 1000000000LL)};
		nanosleep(&ts, NULL);
	}
	return 0;
}

void http_pool_interrupt(struct http_pool *pool)
{
	atomic_store(&pool->interrupted, true);
}

int http_perform(struct http_pool *pool, const struct http_request *req,
		 struct http_response *resp)
{
	struct curl_slist *headers = NULL;
	struct http_handle *h;
	struct xfer x;
	CURLcode cc;
	CURL *c;
	long status = 0;
	int rc;

	http_response_release(resp);
	if (thread_deadline && http_mono_ns() >= thread_deadline) {
		snprintf(resp->error, sizeof(resp->error),
			 "no answer within the time a user waits "
			 "(remote_wait_seconds)");
		return -ETIMEDOUT;
	}
	memset(&x, 0, sizeof(x));
	x.req = req;
	x.resp = resp;
	x.body_total = req->body_fd >= 0 ? req->body_fd_len : req->body_len;
	if (req->body_fd < 0 && req->body_len && !req->body)
		return -EINVAL;
	if ((req->kind == HTTP_LONGPOLL && atomic_load(&pool->interrupted)) ||
	    http_thread_cancelled())
		return -EINTR;
	x.pool = pool;

	rc = build_headers(req, &headers);
	if (rc < 0)
		return rc;
	h = pool_get(pool);
	if (!h) {
		curl_slist_free_all(headers);
		return -ENOMEM;
	}
	c = h->curl;
	x.curl = c;
	set_base_options(pool, h);
	curl_easy_setopt(c, CURLOPT_URL, req->url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(c, CURLOPT_POST, 1L);
	curl_easy_setopt(c, CURLOPT_READFUNCTION, read_cb);
	curl_easy_setopt(c, CURLOPT_READDATA, &x);
	curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, seek_cb);
	curl_easy_setopt(c, CURLOPT_SEEKDATA, &x);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
			 (curl_off_t)x.body_total);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &x);
	if (req->kind == HTTP_LONGPOLL || thread_cancel) {
		curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
		curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, xferinfo_cb);
		curl_easy_setopt(c, CURLOPT_XFERINFODATA, &x);
	}
	bool quick = http_thread_quick();
	long left_s = HTTP_RPC_TIMEOUT; /* before the caller's deadline */
	if (thread_deadline) {
		int64_t left = thread_deadline - http_mono_ns();
		left_s = (long)(left / 1000000000LL);
		if (left_s < 1)
			left_s = 1;
	}
	if (quick && req->kind != HTTP_LONGPOLL)
		curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT,
				 left_s < 3 ? left_s : 3L);
	switch (req->kind) {
	case HTTP_RPC: {
		long total = quick ? 20L : HTTP_RPC_TIMEOUT;
		curl_easy_setopt(c, CURLOPT_TIMEOUT,
				 left_s < total ? left_s : total);
		break;
	}
	case HTTP_TRANSFER:
		/* Under a bandwidth limit shared by many transfers each may
		 * well move less than the low-speed limit: then only a
		 * transfer that moves nothing at all is cut. */
		curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT,
				 atomic_load(&up_bucket.rate) ||
						 atomic_load(&down_bucket.rate)
					 ? 1L
					 : HTTP_LOW_SPEED_LIMIT);
		curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME,
				 left_s < HTTP_LOW_SPEED_TIME
					 ? left_s
					 : HTTP_LOW_SPEED_TIME);
		break;
	case HTTP_LONGPOLL:
		curl_easy_setopt(c, CURLOPT_TIMEOUT,
				 req->timeout_s > 0 ? req->timeout_s
						    : HTTP_RPC_TIMEOUT);
		break;
	}

	cc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	resp->status = status;
	if (cc == CURLE_WRITE_ERROR && x.done_early && !x.err)
		cc = CURLE_OK;
	if (cc == CURLE_OK && x.mode == MODE_UNDECIDED) {
		/* An empty body: the sink checks still apply. */
		decide_mode(&x);
	}
	if (x.err) {
		rc = x.err;
	} else if (cc != CURLE_OK) {
		rc = curl_errno(cc);
		snprintf(resp->error, sizeof(resp->error), "%s",
			 h->errbuf[0] ? h->errbuf : curl_easy_strerror(cc));
	} else if (status < 100) {
		rc = -EIO;
		snprintf(resp->error, sizeof(resp->error),
			 "no HTTP status in the reply");
	} else {
		rc = 0;
	}
	/* Detach everything of this request from the handle. */
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
	pool_put(pool, h);
	curl_slist_free_all(headers);
	return rc;
}

int http_form_add(char **buf, const char *key, const char *value)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t old = *buf ? strlen(*buf) : 0;
	size_t need = old + 1 + strlen(key) * 3 + 1 + strlen(value) * 3 + 1;
	const char *parts[2] = {key, value};
	char *s, *p;
	int i;

	s = malloc(need);
	if (!s)
		return -ENOMEM;
	p = s;
	if (old) {
		memcpy(p, *buf, old);
		p += old;
		*p++ = '&';
	}
	for (i = 0; i < 2; i++) {
		const unsigned char *q = (const unsigned char *)parts[i];

		for (; *q; q++) {
			if ((*q >= 'A' && *q <= 'Z') ||
			    (*q >= 'a' && *q <= 'z') ||
			    (*q >= '0' && *q <= '9') || *q == '-' ||
			    *q == '.' || *q == '_' || *q == '~') {
				*p++ = (char)*q;
			} else {
				*p++ = '%';
				*p++ = hex[*q >> 4];
				*p++ = hex[*q & 15];
			}
		}
		if (i == 0)
			*p++ = '=';
	}
	*p = '\0';
	if (*buf) {
		explicit_bzero(*buf, old);
		free(*buf);
	}
	*buf = s;
	return 0;
}

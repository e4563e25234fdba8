/*
 * Counters and the Prometheus endpoint (see metrics.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "hfs/category.h"
#include "hfs/config.h"
#include "hfs/control.h"
#include "hfs/fs.h"
#include "hfs/log.h"
#include "hfs/metrics.h"

/* Status classes of remote requests: 1xx..5xx, and no reply at all. */
enum { CLASS_ERROR, CLASS_1, CLASS_2, CLASS_3, CLASS_4, CLASS_5, NCLASS };
static const char *const class_name[NCLASS] = {"error", "1xx", "2xx",
					       "3xx",	"4xx", "5xx"};
/* Distinct endpoints counted; more are counted as "other". */
#define ROUTES_MAX 64

struct route {
	const char *name; /* set once, before n (release) */
	atomic_uint_fast64_t n[NCLASS];
};

static struct {
	atomic_uint_fast64_t uploads_done[CAT_COUNT];
	atomic_uint_fast64_t uploads_failed[CAT_COUNT];
	atomic_uint_fast64_t bytes_up[CAT_COUNT];
	atomic_uint_fast64_t upload_retries;
	atomic_uint_fast64_t bytes_down;
	atomic_uint_fast64_t remote_retries;
	atomic_uint_fast64_t conflicts;
	_Atomic int64_t unreachable_since;
	_Atomic int64_t cache_bytes;
	_Atomic int64_t cache_free;
	pthread_mutex_t route_mu; /* appends to routes */
	struct route routes[ROUTES_MAX + 1]; /* the last: "other" */
	atomic_size_t nroutes;
} m = {.route_mu = PTHREAD_MUTEX_INITIALIZER, .cache_free = -1};

#define ADD(c, v) atomic_fetch_add_explicit(&(c), (v), memory_order_relaxed)
#define GET(c) atomic_load_explicit(&(c), memory_order_relaxed)

void metrics_upload(int cat, bool ok, uint64_t bytes)
{
	if (cat < 0 || cat >= CAT_COUNT)
		return;
	if (ok) {
		ADD(m.uploads_done[cat], 1);
		ADD(m.bytes_up[cat], bytes);
	} else {
		ADD(m.uploads_failed[cat], 1);
	}
}

void metrics_upload_retry(void)
{
	ADD(m.upload_retries, 1);
}

void metrics_bytes_down(uint64_t n)
{
	ADD(m.bytes_down, n);
}

void metrics_remote_retry(void)
{
	ADD(m.remote_retries, 1);
}

void metrics_conflict(void)
{
	ADD(m.conflicts, 1);
}

static struct route *route_of(const char *name)
{
	size_t n = atomic_load(&m.nroutes);
	for (size_t i = 0; i < n; i++)
		if (strcmp(m.routes[i].name, name) == 0)
			return &m.routes[i];
	pthread_mutex_lock(&m.route_mu);
	n = atomic_load(&m.nroutes);
	struct route *r = NULL;
	for (size_t i = 0; i < n && !r; i++)
		if (strcmp(m.routes[i].name, name) == 0)
			r = &m.routes[i];
	if (!r && n < ROUTES_MAX) {
		r = &m.routes[n];
		r->name = name;
		atomic_store(&m.nroutes, n + 1); /* publishes the name */
	}
	pthread_mutex_unlock(&m.route_mu);
	if (!r) {
		r = &m.routes[ROUTES_MAX];
		r->name = "other";
	}
	return r;
}

void metrics_remote_request(const char *route, long status)
{
	int cls = status >= 100 && status < 600 ? (int)(status / 100)
						: CLASS_ERROR;
	ADD(route_of(route ? route : "other")->n[cls], 1);
}

void metrics_remote_result(int rc)
{
	switch (-rc) {
	case 0: {
		atomic_store(&m.unreachable_since, 0);
		break;
	}
	case EAGAIN:
	case ETIMEDOUT:
	case EHOSTUNREACH:
	case ECONNREFUSED:
	case ECONNRESET:
	case ENETUNREACH: {
		int64_t zero = 0;
		atomic_compare_exchange_strong(&m.unreachable_since, &zero,
					       hfs_now());
		break;
	}
	default:
		break;
	}
}

int64_t metrics_unreachable_since(void)
{
	return atomic_load(&m.unreachable_since);
}

void metrics_set_cache(uint64_t used, int64_t free_bytes)
{
	atomic_store(&m.cache_bytes, (int64_t)used);
	atomic_store(&m.cache_free, free_bytes);
}

void metrics_add_status(void *arg)
{
	json_t *st = arg, *c;
	size_t i;
	json_array_foreach(json_object_get(st, "categories"), i, c)
	{
		int cat = cat_from_name(
			json_string_value(json_object_get(c, "name")));
		if (cat < 0)
			continue;
		json_object_set_new(
			c, "uploads_done",
			json_integer((json_int_t)GET(m.uploads_done[cat])));
		json_object_set_new(
			c, "uploads_failed",
			json_integer((json_int_t)GET(m.uploads_failed[cat])));
		json_object_set_new(
			c, "bytes_uploaded",
			json_integer((json_int_t)GET(m.bytes_up[cat])));
	}
	json_object_set_new(
		st, "counters",
		json_pack("{s:I, s:I, s:I, s:I}", "bytes_downloaded",
			  (json_int_t)GET(m.bytes_down), "remote_retries",
			  (json_int_t)GET(m.remote_retries), "upload_retries",
			  (json_int_t)GET(m.upload_retries), "conflicts",
			  (json_int_t)GET(m.conflicts)));
	int64_t fb = atomic_load(&m.cache_free);
	json_object_set_new(
		st, "cache",
		json_pack("{s:I, s:o}", "bytes",
			  (json_int_t)atomic_load(&m.cache_bytes), "free_bytes",
			  fb >= 0 ? json_integer(fb) : json_null()));
	json_t *reqs = json_array();
	size_t n = atomic_load(&m.nroutes);
	for (size_t r = 0; r <= ROUTES_MAX; r++) {
		if (r >= n && r != ROUTES_MAX)
			continue;
		const struct route *rt = &m.routes[r];
		for (int k = 0; k < NCLASS; k++) {
			uint64_t v = GET(rt->n[k]);
			if (v)
				json_array_append_new(
					reqs,
					json_pack("{s:s, s:s, s:I}", "endpoint",
						  rt->name, "class",
						  class_name[k], "count",
						  (json_int_t)v));
		}
	}
	json_object_set_new(st, "remote_requests", reqs);
	int64_t since = atomic_load(&m.unreachable_since);
	json_object_set_new(st, "remote_unreachable_since",
			    since ? json_integer(since) : json_null());
	json_object_set_new(st, "remote_unreachable_seconds",
			    since ? json_integer(hfs_now() - since)
				  : json_null());
}

/* ---- the exposition format ---- */

/* A label value with \, " and newline escaped. */
static void label(FILE *f, const char *v)
{
	for (; v && *v; v++) {
		if (*v == '\\' || *v == '"')
			fprintf(f, "\\%c", *v);
		else if (*v == '\n')
			fputs("\\n", f);
		else
			fputc(*v, f);
	}
}

static void head(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static long long ival(json_t *o, const char *key)
{
	return (long long)json_integer_value(json_object_get(o, key));
}

/* One sample per category of the categories' member @key. */
static void per_cat(FILE *f, json_t *cats, const char *name, const char *type,
		    const char *help, const char *key)
{
	size_t i;
	json_t *c;
	head(f, name, type, help);
	json_array_foreach(cats, i, c)
	{
		json_t *v = json_object_get(c, key);
		if (!json_is_integer(v))
			continue;
		fprintf(f, "%s{category=\"", name);
		label(f, json_string_value(json_object_get(c, "name")));
		fprintf(f, "\"} %lld\n", (long long)json_integer_value(v));
	}
}

static void single(FILE *f, const char *name, const char *type,
		   const char *help, long long v)
{
	head(f, name, type, help);
	fprintf(f, "%s %lld\n", name, v);
}

char *metrics_render(void *arg)
{
	json_t *st = arg;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return NULL;
	json_t *cats = json_object_get(st, "categories");
	per_cat(f, cats, "huracanfs_pending_files", "gauge",
		"Files waiting for upload.", "pending_files");
	per_cat(f, cats, "huracanfs_pending_bytes", "gauge",
		"Bytes of the files waiting for upload.", "pending_bytes");
	per_cat(f, cats, "huracanfs_uploads_total", "counter",
		"Files uploaded since the mount.", "uploads_done");
	per_cat(f, cats, "huracanfs_upload_failures_total", "counter",
		"Uploads that failed (the file stays queued).",
		"uploads_failed");
	per_cat(f, cats, "huracanfs_uploaded_bytes_total", "counter",
		"Bytes of file content uploaded since the mount.",
		"bytes_uploaded");
	per_cat(f, cats, "huracanfs_last_upload_timestamp_seconds", "gauge",
		"When the category's last upload pass succeeded (Unix time).",
		"last_sync");
	json_t *cn = json_object_get(st, "counters");
	single(f, "huracanfs_downloaded_bytes_total", "counter",
	       "Bytes of file content downloaded since the mount.",
	       ival(cn, "bytes_downloaded"));
	single(f, "huracanfs_remote_retries_total", "counter",
	       "Remote requests tried again (no answer, 429, 5xx).",
	       ival(cn, "remote_retries"));
	single(f, "huracanfs_upload_retries_total", "counter",
	       "Failed uploads queued again.", ival(cn, "upload_retries"));
	single(f, "huracanfs_conflicts_total", "counter",
	       "Files changed on both sides; ours saved beside theirs.",
	       ival(cn, "conflicts"));
	json_t *cache = json_object_get(st, "cache");
	single(f, "huracanfs_cache_bytes", "gauge",
	       "Bytes of file content in the cache.", ival(cache, "bytes"));
	json_t *fb = json_object_get(cache, "free_bytes");
	if (json_is_integer(fb))
		single(f, "huracanfs_cache_free_bytes", "gauge",
		       "Free space of the cache's filesystem.",
		       (long long)json_integer_value(fb));
	single(f, "huracanfs_journal_pending", "gauge",
	       "Namespace changes (renames, deletes, mkdirs) not yet on the "
	       "remote.",
	       ival(st, "journal_pending"));
	json_t *since = json_object_get(st, "remote_unreachable_since");
	single(f, "huracanfs_remote_reachable", "gauge",
	       "1 unless the remote has been unreachable since the last "
	       "failure.",
	       json_is_integer(since) ? 0 : 1);
	if (json_is_integer(since))
		single(f, "huracanfs_remote_unreachable_since_seconds", "gauge",
		       "Since when the remote has been unreachable (Unix "
		       "time).",
		       (long long)json_integer_value(since));
	json_t *lim = json_object_get(st, "limits");
	if (lim) {
		single(f, "huracanfs_upload_limit_bytes_per_second", "gauge",
		       "The upload bandwidth limit (0: none).",
		       ival(lim, "upload_bytes_per_second"));
		single(f, "huracanfs_download_limit_bytes_per_second", "gauge",
		       "The download bandwidth limit (0: none).",
		       ival(lim, "download_bytes_per_second"));
	}

	size_t i;
	json_t *r;
	head(f, "huracanfs_remote_requests_total", "counter",
	     "HTTP requests to the remote, by endpoint and status class "
	     "(error: no reply).");
	json_array_foreach(json_object_get(st, "remote_requests"), i, r)
	{
		fputs("huracanfs_remote_requests_total{endpoint=\"", f);
		label(f, json_string_value(json_object_get(r, "endpoint")));
		fputs("\",code=\"", f);
		label(f, json_string_value(json_object_get(r, "class")));
		fprintf(f, "\"} %lld\n", ival(r, "count"));
	}
	const char *op;
	json_t *v;
	head(f, "huracanfs_fuse_requests_total", "counter",
	     "FUSE requests served, by operation.");
	json_object_foreach(json_object_get(st, "fuse_requests"), op, v)
	{
		fputs("huracanfs_fuse_requests_total{op=\"", f);
		label(f, op);
		fprintf(f, "\"} %lld\n", (long long)json_integer_value(v));
	}
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* ---- the HTTP endpoint ---- */

#define REQ_MAX 8192

struct metrics_server {
	struct hfs *fs;
	int sock;
	int stop_pipe[2];
	pthread_t thread;
	bool started;
};

static void send_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		len -= (size_t)w;
	}
}

static void reply(int fd, const char *status, const char *type,
		  const char *body, size_t blen)
{
	char hdr[512];
	int n = snprintf(hdr, sizeof(hdr),
			 "HTTP/1.1 %s\r\nContent-Type: %s\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
			 status, type, blen);
	send_all(fd, hdr, (size_t)n);
	send_all(fd, body, blen);
}

/* Reads one request head and answers it. */
static void serve(struct metrics_server *ms, int fd)
{
	char buf[REQ_MAX + 1];
	size_t len = 0;
	struct timeval tv = {5, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	while (len < REQ_MAX) {
		ssize_t n = recv(fd, buf + len, REQ_MAX - len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		len += (size_t)n;
		buf[len] = '\0';
		if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n"))
			break;
	}
	buf[len] = '\0';
	static const char text[] = "text/plain; charset=utf-8";
	char method[16], target[1024];
	if (sscanf(buf, "%15s %1023s HTTP/", method, target) != 2) {
		reply(fd, "400 Bad Request", text, "bad request\n", 12);
		return;
	}
	char *q = strchr(target, '?');
	if (q)
		*q = '\0';
	if (strcmp(target, "/metrics") != 0) {
		reply(fd, "404 Not Found", text, "see /metrics\n", 13);
		return;
	}
	if (strcmp(method, "GET") != 0) {
		reply(fd, "405 Method Not Allowed", text, "GET only\n", 9);
		return;
	}
	json_t *st = control_status(ms->fs, false);
	char *body = st ? metrics_render(st) : NULL;
	json_decref(st);
	if (!body) {
		reply(fd, "500 Internal Server Error", text, "out of memory\n",
		      14);
		return;
	}
	reply(fd, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body,
	      strlen(body));
	free(body);
}

static void *server_thread(void *arg)
{
	struct metrics_server *ms = arg;
	sigset_t set;
	sigfillset(&set);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	pthread_setname_np(pthread_self(), "hfs-metrics");
	for (;;) {
		struct pollfd p[2] = {
			{.fd = ms->sock, .events = POLLIN},
			{.fd = ms->stop_pipe[0], .events = POLLIN}};
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		int fd = accept4(ms->sock, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		serve(ms, fd);
		close(fd);
	}
	return NULL;
}

int metrics_start(struct hfs *fs, const char *addr, struct metrics_server **out,
		  char *err, size_t errlen)
{
	char host[256], port_s[16];
	int port, rc;
	bool loopback;
	*out = NULL;
	if (config_parse_listen(addr, host, sizeof(host), &port, &loopback)) {
		snprintf(err, errlen, "metrics_listen: bad address %s", addr);
		return -EINVAL;
	}
	struct metrics_server *ms = calloc(1, sizeof(*ms));
	if (!ms)
		return -ENOMEM;
	ms->fs = fs;
	ms->sock = -1;
	ms->stop_pipe[0] = ms->stop_pipe[1] = -1;
	snprintf(port_s, sizeof(port_s), "%d", port);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_NUMERICSERV | AI_PASSIVE},
			*ai = NULL;
	int gai = getaddrinfo(host, port_s, &hints, &ai);
	if (gai) {
		snprintf(err, errlen, "metrics_listen %s: %s", addr,
			 gai_strerror(gai));
		rc = -EINVAL;
		goto fail;
	}
	rc = -EADDRNOTAVAIL;
	for (struct addrinfo *a = ai; a; a = a->ai_next) {
		int s = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0);
		if (s < 0) {
			rc = -errno;
			continue;
		}
		int one = 1;
		setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(s, a->ai_addr, a->ai_addrlen) == 0 &&
		    listen(s, 16) == 0) {
			ms->sock = s;
			rc = 0;
			break;
		}
		rc = -errno;
		close(s);
	}
	freeaddrinfo(ai);
	if (rc) {
		snprintf(err, errlen, "metrics_listen %s: %s", addr,
			 strerror(-rc));
		goto fail;
	}
	if (pipe2(ms->stop_pipe, O_CLOEXEC) < 0) {
		rc = -errno;
		snprintf(err, errlen, "metrics: pipe: %s", strerror(-rc));
		goto fail;
	}
	rc = -pthread_create(&ms->thread, NULL, server_thread, ms);
	if (rc) {
		snprintf(err, errlen, "metrics: thread: %s", strerror(-rc));
		goto fail;
	}
	ms->started = true;
	hlog_info("metrics served on http://%s/metrics", addr);
	*out = ms;
	return 0;
fail:
	metrics_stop(ms);
	return rc;
}

void metrics_stop(struct metrics_server *ms)
{
	if (!ms)
		return;
	if (ms->started) {
		if (write(ms->stop_pipe[1], "x", 1) < 0)
			hlog_debug("metrics: stop pipe failed");
		pthread_join(ms->thread, NULL);
	}
	if (ms->sock >= 0)
		close(ms->sock);
	if (ms->stop_pipe[0] >= 0)
		close(ms->stop_pipe[0]);
	if (ms->stop_pipe[1] >= 0)
		close(ms->stop_pipe[1]);
	free(ms);
}

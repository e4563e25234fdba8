/*
 * The fault backend (backend_fault.h): every method goes through
 * fault_enter(), which counts the call and decides its fate under the
 * mutex, then (unless it fails at once) calls the inner backend without
 * the mutex, then fault_leave(), which turns a result into a lost reply
 * when asked to. Nothing here is used by the daemon.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hfs/backend_api.h"
#include "hfs/backend_fault.h"

/* The trace keeps at most this many bytes; later mutations are not
 * recorded (tests make few). */
#define TRACE_MAX ((size_t)1 << 20)

struct fault {
	int fail_n, fail_err; /* n < 0: forever */
	int lose_n, lose_err;
	int delay_ms;
	bool paused;
	unsigned long calls, injected;
};

struct fault_backend {
	struct backend base; /* first: a struct backend * is one of these */
	struct backend_ops ops; /* the inner's optional methods, or NULL */
	struct backend *inner; /* owned */
	pthread_mutex_t mu; /* protects f[] and the trace */
	pthread_cond_t cv; /* broadcast: a call counted, a pause lifted */
	struct fault f[FAULT_OP_COUNT];
	char *trace;
	size_t tlen, tcap;
};

static const char *const op_names[FAULT_OP_COUNT] = {
	[FAULT_PROBE] = "probe",
	[FAULT_LIST] = "list",
	[FAULT_STAT] = "stat",
	[FAULT_DOWNLOAD] = "download",
	[FAULT_UPLOAD] = "upload",
	[FAULT_MKDIR] = "mkdir",
	[FAULT_REMOVE] = "remove",
	[FAULT_REMOVE_BATCH] = "remove_batch",
	[FAULT_LIST_TREE] = "list_tree",
	[FAULT_MOVE] = "move",
	[FAULT_COPY] = "copy",
	[FAULT_UPLOAD_BATCH] = "upload_batch",
	[FAULT_LATEST_CURSOR] = "latest_cursor",
	[FAULT_LONGPOLL] = "longpoll",
	[FAULT_LIST_CHANGES] = "list_changes",
	[FAULT_SPACE] = "space",
};

const char *backend_fault_op_name(enum fault_op op)
{
	return (unsigned)op < FAULT_OP_COUNT ? op_names[op] : "?";
}

static struct fault_backend *fb_of(struct backend *be)
{
	return (struct fault_backend *)be;
}

/*
 * Counts a call of @op and decides its fate. Returns 0 to go on to the
 * inner backend, with *@lose the error to return after it (0: its own
 * result), or the error to fail with at once.
 */
static int fault_enter(struct fault_backend *fb, enum fault_op op, int *lose)
{
	struct fault *f = &fb->f[op];
	int rc = 0, delay;
	*lose = 0;
	pthread_mutex_lock(&fb->mu);
	f->calls++;
	pthread_cond_broadcast(&fb->cv);
	while (f->paused)
		pthread_cond_wait(&fb->cv, &fb->mu);
	delay = f->delay_ms;
	if (f->fail_n) {
		rc = f->fail_err;
		if (f->fail_n > 0)
			f->fail_n--;
		f->injected++;
	} else if (f->lose_n) {
		*lose = f->lose_err;
		if (f->lose_n > 0)
			f->lose_n--;
		f->injected++;
	}
	pthread_mutex_unlock(&fb->mu);
	if (delay > 0) {
		struct timespec ts = {.tv_sec = delay / 1000,
				      .tv_nsec =
					      (long)(delay % 1000) * 1000000L};
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
	if (rc)
		backend_set_error("fault injected: %s failed: %s", op_names[op],
				  strerror(-rc));
	return rc;
}

/* The result of a call of @op whose inner result is @rc. */
static int fault_leave(enum fault_op op, int rc, int lose)
{
	if (!lose)
		return rc;
	backend_set_error("fault injected: %s done (result %d), its reply "
			  "lost: %s",
			  op_names[op], rc, strerror(-lose));
	return lose;
}

static void trace_add(struct fault_backend *fb, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Appends one line to the trace (dropped beyond TRACE_MAX or on OOM). */
static void trace_add(struct fault_backend *fb, const char *fmt, ...)
{
	char line[8192 + 64];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	size_t len =
		(size_t)n < sizeof(line) - 1 ? (size_t)n : sizeof(line) - 2;
	line[len++] = '\n';
	pthread_mutex_lock(&fb->mu);
	if (fb->tlen + len + 1 > fb->tcap && fb->tlen + len + 1 <= TRACE_MAX) {
		size_t cap = (fb->tlen + len + 1) * 2;
		if (cap > TRACE_MAX)
			cap = TRACE_MAX;
		char *nt = realloc(fb->trace, cap);
		if (nt) {
			fb->trace = nt;
			fb->tcap = cap;
		}
	}
	if (fb->tlen + len + 1 <= fb->tcap) {
		memcpy(fb->trace + fb->tlen, line, len);
		fb->tlen += len;
		fb->trace[fb->tlen] = '\0';
	}
	pthread_mutex_unlock(&fb->mu);
}

/* ---- The methods ---- */

static int fault_probe(struct backend *be)
{
	struct fault_backend *fb = fb_of(be);
	int lose, rc = fault_enter(fb, FAULT_PROBE, &lose);
	if (rc)
		return rc;
	rc = fb->inner->ops->probe(fb->inner);
	return fault_leave(FAULT_PROBE, rc, lose);
}

static int fault_list(struct backend *be, const char *path, const char *cursor,
		      struct backend_page *page)
{
	struct fault_backend *fb = fb_of(be);
	int lose, rc = fault_enter(fb, FAULT_LIST, &lose);
	if (rc)
		return rc;
	rc = fb->inner->ops->list(fb->inner, path, cursor, page);
	if (lose && rc == 0)
		backend_page_release(page);
	return fault_leave(FAULT_LIST, rc, lose);
}

static int fault_stat(struct backend *be, const char *path,
		      struct backend_entry *out)
{
	struct fault_backend *fb = fb_of(be);
	int lose, rc = fault_enter(fb, FAULT_STAT, &lose);
	if (rc)
		return rc;
	rc = fb->inner->ops->stat(fb->inner, path, out);
	return fault_leave(FAULT_STAT, rc, lose);
}

static int fault_download(struct backend *be, const char *path, const char *rev,
			  uint64_t off, uint64_t len, int fd, uint64_t *got,
			  struct backend_entry *out)
{
	struct fault_backend *fb = fb_of(be);
	int lose, rc = fault_enter(fb, FAULT_DOWNLOAD, &lose);
	if (rc)
		return rc;
	rc = fb->inner->ops->download(fb->inner, path, rev, off, len, fd, got,
				      out);
	return fault_leave(FAULT_DOWNLOAD, rc, lose);
}

static int fault_upload(struct backend *be, const struct backend_upload *up,
			struct backend_entry *out)
{
	struct fault_backend *fb = fb_of(be);
	int lose, rc = fault_enter(fb, FAULT_UPLOAD, &lose);
	if (rc)
		return rc;
	rc = fb->inner->ops->upload(fb->inner, up, out);
	if (rc == 0)
		trace_add(fb, "upload %s", up->path);
	return fault_leave(FAULT_UPLOAD, rc, lose);
}

static int fault_mkdir(struct backend *be, const char *path)
{
	struct fault_backend *fb = fb_of(be);
	int lose, rc = fault_enter(fb, FAULT_MKDIR, &lose);
	if (rc)
		return rc;
	rc = fb->inner->ops->mkdir(fb->inner, path);
	if (rc == 0)
		trace_add(fb, "mkdir %s", path);
	return fault_leave(FAULT_MKDIR, rc, lose);
}

static int fault_remove(struct backend *be, const char *path)
{
	struct fault_backend *fb = fb_of(be);
	int lose, rc = fault_enter(fb, FAULT_REMOVE, &lose);
	if (rc)
		return rc;
	rc = fb->inner->ops->remove(fb->inner, path);
	if (rc == 0)
		trace_add(fb, "remove %s", path);
	return fault_leave(FAULT_REMOVE, rc, lose);
}

static int fault_remove_batch(struct backend *be,
			      const struct backend_delete *dels, size_t n,
			      int *rcs)
{
	struct fault_backend *fb = fb_of(be);
	int lose, rc = fault_enter(fb, FAULT_REMOVE_BATCH, &lose);
	if (rc) {
		for (size_t i = 0; i < n; i++)
			rcs[i] = rc;
		return rc;
	}
	rc = fb->inner->ops->remove_batch(fb->inner, dels, n, rcs);
	for (size_t i = 0; rc == 0 && i < n; i++)
		if (rcs[i] == 0)
			trace_add(fb, "remove_batch %s", dels[i].path);
	if (lose)
		for (size_t i = 0; i < n; i++)
			rcs[i] = lose;
	return fault_leave(FAULT_REMOVE_BATCH, rc, lose);
}

static int fault_list_tree(struct backend *be, const char *path,
			   const char *cursor, struct backend_page *page)
{
	struct fault_backend *fb = fb_of(be);
	int lose, rc = fault_enter(fb, FAULT_LIST_TREE, &lose);
	if (rc)
		return rc;
	rc = fb->inner->ops->list_tree(fb->inner, path, cursor, page);
	if (lose && rc == 0)
		backend_page_release(page);
	return fault_leave(FAULT_LIST_TREE, rc, lose);
}

static int fault_move(struct backend *be, const char *from, const char *to)
{
	struct fault_backend *fb = fb_of(be);
	int lose, rc = fault_enter(fb, FAULT_MOVE, &lose);
	if (rc)
		return rc;
	rc = fb->inner->ops->move(fb->inner, from, to);
	if (rc == 0)
		trace_add(fb, "move %s %s", from, to);
	return fault_leave(FAULT_MOVE, rc, lose);
}

static int fault_copy(struct backend *be, const char *from, const char *to)
{
	struct fault_backend *fb = fb_of(be);
	int lose, rc = fault_enter(fb, FAULT_COPY, &lose);
	if (rc)
		return rc;
	rc = fb->inner->ops->copy(fb->inner, from, to);
	if (rc == 0)
		trace_add(fb, "copy %s %s", from, to);
	return fault_leave(FAULT_COPY, rc, lose);
}

static int fault_upload_batch(struct backend *be,
			      const struct backend_upload *ups, size_t n,
			      struct backend_entry *outs, int *rcs,
			      char (*errs)[BACKEND_ERROR_MAX])
{
	struct fault_backend *fb = fb_of(be);
	int lose, rc = fault_enter(fb, FAULT_UPLOAD_BATCH, &lose);
	if (rc)
		return rc;
	rc = fb->inner->ops->upload_batch(fb->inner, ups, n, outs, rcs, errs);
	for (size_t i = 0; rc == 0 && i < n; i++)
		if (rcs[i] == 0)
			trace_add(fb, "upload %s", ups[i].path);
	return fault_leave(FAULT_UPLOAD_BATCH, rc, lose);
}

static int fault_latest_cursor(struct backend *be, char **cursor)
{
	struct fault_backend *fb = fb_of(be);
	int lose, rc = fault_enter(fb, FAULT_LATEST_CURSOR, &lose);
	if (rc)
		return rc;
	rc = fb->inner->ops->latest_cursor(fb->inner, cursor);
	if (lose && rc == 0) {
		free(*cursor);
		*cursor = NULL;
	}
	return fault_leave(FAULT_LATEST_CURSOR, rc, lose);
}

static int fault_longpoll(struct backend *be, const char *cursor, int timeout_s,
			  bool *changes, int *backoff_s)
{
	struct fault_backend *fb = fb_of(be);
	int lose, rc = fault_enter(fb, FAULT_LONGPOLL, &lose);
	if (rc)
		return rc;
	rc = fb->inner->ops->longpoll(fb->inner, cursor, timeout_s, changes,
				      backoff_s);
	return fault_leave(FAULT_LONGPOLL, rc, lose);
}

static int fault_list_changes(struct backend *be, const char *cursor,
			      struct backend_page *page)
{
	struct fault_backend *fb = fb_of(be);
	int lose, rc = fault_enter(fb, FAULT_LIST_CHANGES, &lose);
	if (rc)
		return rc;
	rc = fb->inner->ops->list_changes(fb->inner, cursor, page);
	if (lose && rc == 0)
		backend_page_release(page);
	return fault_leave(FAULT_LIST_CHANGES, rc, lose);
}

static void fault_interrupt(struct backend *be)
{
	struct fault_backend *fb = fb_of(be);
	fb->inner->ops->interrupt(fb->inner);
}

static int fault_space(struct backend *be, uint64_t *used, uint64_t *total)
{
	struct fault_backend *fb = fb_of(be);
	int lose, rc = fault_enter(fb, FAULT_SPACE, &lose);
	if (rc)
		return rc;
	rc = fb->inner->ops->space(fb->inner, used, total);
	return fault_leave(FAULT_SPACE, rc, lose);
}

static void fault_destroy(struct backend *be)
{
	struct fault_backend *fb = fb_of(be);
	backend_destroy(fb->inner);
	pthread_mutex_destroy(&fb->mu);
	pthread_cond_destroy(&fb->cv);
	free(fb->trace);
	free(fb);
}

int backend_fault_create(struct backend *inner, struct backend **out)
{
	struct fault_backend *fb = calloc(1, sizeof(*fb));
	if (!fb) {
		backend_destroy(inner);
		return -ENOMEM;
	}
	const struct backend_ops *in = inner->ops;
	fb->inner = inner;
	pthread_mutex_init(&fb->mu, NULL);
	pthread_cond_init(&fb->cv, NULL);
	fb->ops = (struct backend_ops){
		.name = "fault",
		.probe = fault_probe,
		.list = fault_list,
		.stat = fault_stat,
		.download = fault_download,
		.upload = fault_upload,
		.mkdir = fault_mkdir,
		.remove = fault_remove,
		.remove_batch = fault_remove_batch,
		.list_tree = in->list_tree ? fault_list_tree : NULL,
		.move = fault_move,
		.copy = fault_copy,
		.upload_batch = in->upload_batch ? fault_upload_batch : NULL,
		.latest_cursor = in->latest_cursor ? fault_latest_cursor : NULL,
		.longpoll = in->longpoll ? fault_longpoll : NULL,
		.list_changes = in->list_changes ? fault_list_changes : NULL,
		.interrupt = in->interrupt ? fault_interrupt : NULL,
		.space = fault_space,
		.destroy = fault_destroy,
	};
	fb->base.ops = &fb->ops;
	*out = &fb->base;
	return 0;
}

struct backend *backend_fault_inner(struct backend *be)
{
	return fb_of(be)->inner;
}

void backend_fault_fail(struct backend *be, enum fault_op op, int n, int err)
{
	struct fault_backend *fb = fb_of(be);
	if ((unsigned)op >= FAULT_OP_COUNT)
		return;
	pthread_mutex_lock(&fb->mu);
	fb->f[op].fail_n = n;
	fb->f[op].fail_err = err;
	pthread_mutex_unlock(&fb->mu);
}

void backend_fault_lose_reply(struct backend *be, enum fault_op op, int n,
			      int err)
{
	struct fault_backend *fb = fb_of(be);
	if ((unsigned)op >= FAULT_OP_COUNT)
		return;
	pthread_mutex_lock(&fb->mu);
	fb->f[op].lose_n = n;
	fb->f[op].lose_err = err;
	pthread_mutex_unlock(&fb->mu);
}

void backend_fault_delay(struct backend *be, enum fault_op op, int ms)
{
	struct fault_backend *fb = fb_of(be);
	if ((unsigned)op >= FAULT_OP_COUNT)
		return;
	pthread_mutex_lock(&fb->mu);
	fb->f[op].delay_ms = ms;
	pthread_mutex_unlock(&fb->mu);
}

void backend_fault_clear(struct backend *be)
{
	struct fault_backend *fb = fb_of(be);
	pthread_mutex_lock(&fb->mu);
	for (int i = 0; i < FAULT_OP_COUNT; i++) {
		fb->f[i].fail_n = fb->f[i].lose_n = 0;
		fb->f[i].delay_ms = 0;
		fb->f[i].paused = false;
	}
	pthread_cond_broadcast(&fb->cv);
	pthread_mutex_unlock(&fb->mu);
}

void backend_fault_pause(struct backend *be, enum fault_op op, bool on)
{
	struct fault_backend *fb = fb_of(be);
	if ((unsigned)op >= FAULT_OP_COUNT)
		return;
	pthread_mutex_lock(&fb->mu);
	fb->f[op].paused = on;
	pthread_cond_broadcast(&fb->cv);
	pthread_mutex_unlock(&fb->mu);
}

void backend_fault_wait_calls(struct backend *be, enum fault_op op,
			      unsigned long n)
{
	struct fault_backend *fb = fb_of(be);
	if ((unsigned)op >= FAULT_OP_COUNT)
		return;
	pthread_mutex_lock(&fb->mu);
	while (fb->f[op].calls < n)
		pthread_cond_wait(&fb->cv, &fb->mu);
	pthread_mutex_unlock(&fb->mu);
}

unsigned long backend_fault_calls(struct backend *be, enum fault_op op)
{
	struct fault_backend *fb = fb_of(be);
	if ((unsigned)op >= FAULT_OP_COUNT)
		return 0;
	pthread_mutex_lock(&fb->mu);
	unsigned long n = fb->f[op].calls;
	pthread_mutex_unlock(&fb->mu);
	return n;
}

unsigned long backend_fault_injected(struct backend *be, enum fault_op op)
{
	struct fault_backend *fb = fb_of(be);
	if ((unsigned)op >= FAULT_OP_COUNT)
		return 0;
	pthread_mutex_lock(&fb->mu);
	unsigned long n = fb->f[op].injected;
	pthread_mutex_unlock(&fb->mu);
	return n;
}

size_t backend_fault_trace(struct backend *be, char *buf, size_t len)
{
	struct fault_backend *fb = fb_of(be);
	pthread_mutex_lock(&fb->mu);
	size_t n = fb->tlen;
	if (len) {
		size_t c = n < len - 1 ? n : len - 1;
		if (c)
			memcpy(buf, fb->trace, c);
		buf[c] = '\0';
	}
	pthread_mutex_unlock(&fb->mu);
	return n;
}

void backend_fault_reset_counts(struct backend *be)
{
	struct fault_backend *fb = fb_of(be);
	pthread_mutex_lock(&fb->mu);
	for (int i = 0; i < FAULT_OP_COUNT; i++)
		fb->f[i].calls = fb->f[i].injected = 0;
	fb->tlen = 0;
	if (fb->trace)
		fb->trace[0] = '\0';
	pthread_mutex_unlock(&fb->mu);
}

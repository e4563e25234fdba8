/*
 * The "fault" backend, for tests only: it wraps another backend (usually
 * the local one over a temporary directory) and, on command, makes its
 * methods fail the way a network and a remote fail, so that the core can
 * be driven through every error path without a server and without FUSE.
 * It is not part of the daemon: the factory (backend.h) does not know it,
 * and it lives in a library that only the tests link (src/meson.build,
 * hfs_fault).
 *
 * Faults are set per operation (enum fault_op):
 *   backend_fault_fail        the next @n calls fail with @err before
 *                             reaching the inner backend (the request
 *                             never arrived: -EAGAIN, -ETIMEDOUT, -EIO...)
 *   backend_fault_lose_reply  the next @n calls are made on the inner
 *                             backend, then fail with @err anyway (the
 *                             server did it, its answer was lost)
 *   backend_fault_delay       every call sleeps @ms first
 * @n < 0 means every call until backend_fault_clear(). A fail and a lost
 * reply set on one op: the fail is used first. Every call is counted
 * (backend_fault_calls), failed or not, and the mutations the inner
 * backend carried out (result 0; lost replies included) are recorded in
 * order in a trace (backend_fault_trace), e.g.
 * "mkdir /a\nmove /a/b /a/c\nremove_batch /a/c/f\n".
 *
 * Optional methods (list_tree, upload_batch, the change feed, interrupt)
 * exist exactly when the inner backend has them.
 *
 * Thread-safety: like every backend, methods may be called from several
 * threads; the fault table, counters and trace are under one mutex, which
 * is never held across a call of the inner backend. The control functions
 * may be called at any time from any thread.
 */
#ifndef HFS_BACKEND_FAULT_H
#define HFS_BACKEND_FAULT_H

#include <stdbool.h>
#include <stddef.h>

struct backend;

enum fault_op {
	FAULT_PROBE,
	FAULT_LIST,
	FAULT_STAT,
	FAULT_DOWNLOAD,
	FAULT_UPLOAD,
	FAULT_MKDIR,
	FAULT_REMOVE,
	FAULT_REMOVE_BATCH,
	FAULT_LIST_TREE,
	FAULT_MOVE,
	FAULT_COPY,
	FAULT_UPLOAD_BATCH,
	FAULT_LATEST_CURSOR,
	FAULT_LONGPOLL,
	FAULT_LIST_CHANGES,
	FAULT_SPACE,
	FAULT_OP_COUNT
};

/*
 * Wraps @inner (transferred: destroyed with the fault backend, also on
 * failure). Returns 0 and sets *@out, or -ENOMEM.
 */
int backend_fault_create(struct backend *inner, struct backend **out);

/* The backend it wraps (borrowed), to act on the remote behind the
 * core's back. */
struct backend *backend_fault_inner(struct backend *be);

/* The next @n calls of @op (n < 0: all) fail with @err (negative errno)
 * without reaching the inner backend. @n 0 removes the fault. */
void backend_fault_fail(struct backend *be, enum fault_op op, int n, int err);
/* The next @n calls of @op (n < 0: all) are done on the inner backend,
 * then fail with @err whatever their result. */
void backend_fault_lose_reply(struct backend *be, enum fault_op op, int n,
			      int err);
/* Every call of @op first sleeps @ms milliseconds (0: none). */
void backend_fault_delay(struct backend *be, enum fault_op op, int ms);
/*
 * While @on, calls of @op block once counted, before the inner call,
 * until the pause is lifted (backend_fault_pause(..., false) or
 * backend_fault_clear): a test makes something happen "during" a call
 * without guessing at timings. backend_fault_wait_calls() blocks until
 * @n calls of @op have been counted (those paused included).
 */
void backend_fault_pause(struct backend *be, enum fault_op op, bool on);
void backend_fault_wait_calls(struct backend *be, enum fault_op op,
			      unsigned long n);
/* Removes every fault and pause (counters and trace stay). */
void backend_fault_clear(struct backend *be);

/* Calls of @op so far (including failed ones). */
unsigned long backend_fault_calls(struct backend *be, enum fault_op op);
/* Calls of @op failed by an injected fault so far. */
unsigned long backend_fault_injected(struct backend *be, enum fault_op op);
/*
 * The trace of mutations the inner backend carried out, one line each
 * ("upload /p", "mkdir /p", "remove /p", "remove_batch /p" for each entry
 * of a batch deleted, "move /from /to", "copy /from /to"), oldest first; copied
 * into @buf
 * (@len bytes, NUL-terminated, cut if too small). Returns the full length.
 */
size_t backend_fault_trace(struct backend *be, char *buf, size_t len);
/* Zeroes the counters and empties the trace. */
void backend_fault_reset_counts(struct backend *be);

/* "list", "upload"...: for messages. */
const char *backend_fault_op_name(enum fault_op op);

#endif /* HFS_BACKEND_FAULT_H */

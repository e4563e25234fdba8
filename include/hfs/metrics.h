/*
 * Counters for operators: what `status --json` shows under its counter
 * keys and the opt-in Prometheus endpoint (metrics_listen) serves.
 *
 * The counters are process-wide (one daemon per process): relaxed atomic
 * increments on the paths that count, no lock, so a reader sees each one
 * as some value it had, not a snapshot consistent across counters (as
 * fuse_stats.h). Remote requests are counted by endpoint (a fixed route
 * name such as "files/upload") and status class; the table of endpoints is
 * small and fixed-size, appended to under a mutex the first time a route
 * is seen, read without it.
 *
 * The endpoint renders the control socket's status object (control.h) as
 * the Prometheus text exposition format (version 0.0.4), so both always
 * carry the same numbers.
 */
#ifndef HFS_METRICS_H
#define HFS_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hfs;
struct metrics_server;

/* An upload of category @cat finished: @ok with @bytes sent, or failed. */
void metrics_upload(int cat, bool ok, uint64_t bytes);
/* A failed upload was queued again. */
void metrics_upload_retry(void);
/* @n bytes of file content came from the remote. */
void metrics_bytes_down(uint64_t n);
/* One HTTP exchange with endpoint @route (a string that lives forever):
 * its @status, or 0 if none came (a transport error). */
void metrics_remote_request(const char *route, long status);
/* A remote request is tried again (transport error, 429, 5xx). */
void metrics_remote_retry(void);
/* Ours and the remote's changes met: ours saved beside theirs. */
void metrics_conflict(void);
/*
 * The outcome @rc of an operation on the remote: 0 marks it reachable;
 * an error that says it is not (-EAGAIN, -ETIMEDOUT, -EHOSTUNREACH,
 * -ECONNREFUSED, -ECONNRESET, -ENETUNREACH) starts the unreachable time
 * if it had not started; other errors change nothing.
 */
void metrics_remote_result(int rc);
/* Since when (seconds, hfs_now) the remote has been unreachable; 0: it
 * is not. */
int64_t metrics_unreachable_since(void);
/* The cache's size and the free space of its filesystem (-1: unknown). */
void metrics_set_cache(uint64_t used, int64_t free_bytes);

/*
 * Adds the counters to the status object @st (json_t *): per category
 * (into its "categories" entries) uploads_done, uploads_failed,
 * bytes_uploaded; and "counters", "cache", "remote_requests",
 * "remote_unreachable_since" and "remote_unreachable_seconds" (null while
 * it answers).
 */
void metrics_add_status(void *st);

/*
 * The Prometheus text of status object @st (json_t *, as control_status
 * makes it). Returns a malloc'd string, or NULL on ENOMEM.
 */
char *metrics_render(void *st);

/*
 * Serves GET /metrics on @addr (HOST:PORT, config_parse_listen) from a
 * thread of its own: HTTP/1.1, one request per connection. Returns 0 or
 * -errno with a message in @err.
 */
int metrics_start(struct hfs *fs, const char *addr, struct metrics_server **out,
		  char *err, size_t errlen);
/* Stops the thread and closes the socket; NULL-safe. */
void metrics_stop(struct metrics_server *ms);

#endif

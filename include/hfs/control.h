/*
 * The control socket: how `huracanfs status` and `huracanfs flush` talk to
 * the running daemon. A Unix stream socket, {cache_dir}/control.sock, mode
 * 0600. The CLI finds it through the extended attribute
 * user.huracanfs.control of the mount root.
 *
 * Protocol: the client sends one JSON object and a newline, the daemon
 * answers with one JSON object and a newline, then closes.
 *   {"cmd":"status","files":bool}         -> status object
 *   {"cmd":"flush","category":"models"|null,"wait":true|false,
 *    "timeout":seconds?,"unmount":bool?}
 *                                         -> {"ok":bool,"error":string?}
 *   {"cmd":"limit","up":N?,"down":N?}     -> {"ok":true,
 *        "upload_bytes_per_second":N, "download_bytes_per_second":N}
 *        (sets the bandwidth limits given, http.h; answers those in force)
 * "timeout" bounds the wait (default flush_timeout_seconds); "unmount"
 * (from `huracanfs unmount`) makes it the bound of the final flush after
 * the unmount too.
 */
#ifndef HFS_CONTROL_H
#define HFS_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hfs;
struct control;

/* Binds the socket and starts the accept thread. */
int control_start(struct hfs *fs, struct control **out);
/* Stops the thread and removes the socket; NULL-safe. */
void control_stop(struct control *c);
/* The bound in seconds of the final flush that an `unmount` request asked
 * for, or 0 (none came: flush_timeout_seconds applies); NULL-safe. */
int64_t control_shutdown_timeout(struct control *c);

/*
 * Client: sends @req (json_t *, borrowed) to the daemon serving
 * @mountpoint and stores its reply in *@reply (json_t *, new reference).
 * Returns 0 or -errno with a message in @err.
 */
int control_call(const char *mountpoint, void *req, void **reply, char *err,
		 size_t errlen);

/* The daemon's status as JSON (json_t *, new reference); @with_files adds
 * the waiting files of each category. */
void *control_status(struct hfs *fs, bool with_files);

#endif

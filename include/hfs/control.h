/*
 * The control socket: how `huracanfs status` and `huracanfs flush` talk to
 * the running daemon. A Unix stream socket, {cache_dir}/control.sock, mode
 * 0600. The CLI finds it through the extended attribute
 * user.huracanfs.control of the mount root.
 *
 * Protocol: the client sends one JSON object and a newline, the daemon
 * answers with one JSON object and a newline, then closes.
 *   {"cmd":"status","files":bool}         -> status object
 *   {"cmd":"flush","category":"models"|null,"wait":true|false}
 *                                         -> {"ok":bool,"error":string?}
 */
#ifndef HFS_CONTROL_H
#define HFS_CONTROL_H

#include <stddef.h>

struct hfs;
struct control;

/* Binds the socket and starts the accept thread. */
int control_start(struct hfs *fs, struct control **out);
/* Stops the thread and removes the socket; NULL-safe. */
void control_stop(struct control *c);

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

/*
 * Service-manager notification (systemd's sd_notify protocol, written
 * here: one datagram per message on the unix socket named by
 * $NOTIFY_SOCKET, a path or, when it starts with '@', a name in the
 * abstract namespace). Messages are newline-separated VAR=value lines:
 * READY=1 once the mount serves requests, STATUS=... with the upload
 * queue, STOPPING=1 when the final flush starts, EXTEND_TIMEOUT_USEC=...
 * while it runs. Without $NOTIFY_SOCKET every call does nothing.
 *
 * Thread-safety: any thread may call notify_send; each call opens its own
 * socket.
 */
#ifndef HFS_NOTIFY_H
#define HFS_NOTIFY_H

#include <stdbool.h>

/*
 * Sends @msg (e.g. "READY=1\nSTATUS=mounted") to $NOTIFY_SOCKET. Returns
 * 1 if it was sent, 0 if no socket is set, or a negative errno.
 */
int notify_send(const char *msg);

/* True if $NOTIFY_SOCKET is set (a service manager listens). */
bool notify_wanted(void);

#endif

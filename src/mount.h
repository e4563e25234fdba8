/*
 * `huracanfs mount` (mount.c): builds the daemon and runs it until the
 * filesystem is unmounted or a signal stops it.
 */
#ifndef HFS_MOUNT_H
#define HFS_MOUNT_H

#include <stdbool.h>

/* What the command line asked for (main.c parses it). */
struct mount_opts {
	const char *mountpoint;
	const char *config;
	bool foreground;
	char fuse_opts[4096];
};

/*
 * Mounts @mo->mountpoint and serves it until it is unmounted or a signal
 * stops the daemon. Unless @mo->foreground, forks: the parent waits until
 * the child reports that the mount is usable (exit 0) or has failed (its
 * message, exit 1), and exits with that. Returns the exit status.
 */
int mount_run(const struct mount_opts *mo);

#endif

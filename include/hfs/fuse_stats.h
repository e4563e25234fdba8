/*
 * Counters of the FUSE requests the daemon served, one per low-level
 * operation (src/fuse_ops.c). Each handler adds one on entry with a
 * relaxed atomic increment: no lock and no ordering on the hot path, so a
 * reader (status --json, src/control.c) sees each counter as some value it
 * had, not a snapshot consistent across counters. Requests the kernel sends
 * for operations the table leaves out (access, ioctl, ...) are answered by
 * libfuse itself and are not counted.
 */
#ifndef HFS_FUSE_STATS_H
#define HFS_FUSE_STATS_H

#include <stdatomic.h>
#include <stdint.h>

enum hfs_fuse_op {
	HFS_OP_LOOKUP,
	HFS_OP_FORGET,
	HFS_OP_BATCH_FORGET,
	HFS_OP_GETATTR,
	HFS_OP_SETATTR,
	HFS_OP_MKNOD,
	HFS_OP_MKDIR,
	HFS_OP_UNLINK,
	HFS_OP_RMDIR,
	HFS_OP_READLINK,
	HFS_OP_SYMLINK,
	HFS_OP_LINK,
	HFS_OP_RENAME,
	HFS_OP_OPEN,
	HFS_OP_CREATE,
	HFS_OP_READ,
	HFS_OP_WRITE,
	HFS_OP_FALLOCATE,
	HFS_OP_FLUSH,
	HFS_OP_RELEASE,
	HFS_OP_FSYNC,
	HFS_OP_OPENDIR,
	HFS_OP_READDIR,
	HFS_OP_READDIRPLUS,
	HFS_OP_RELEASEDIR,
	HFS_OP_FSYNCDIR,
	HFS_OP_STATFS,
	HFS_OP_SETXATTR,
	HFS_OP_GETXATTR,
	HFS_OP_LISTXATTR,
	HFS_OP_REMOVEXATTR,
	HFS_FUSE_NOPS
};

struct hfs_fuse_stats {
	/* Requests served since the mount, by operation; relaxed atomics. */
	atomic_uint_fast64_t n[HFS_FUSE_NOPS];
};

/* The operation's name as status --json shows it ("lookup", ...). */
const char *hfs_fuse_op_name(enum hfs_fuse_op op);

#endif

/*
 * The FUSE low-level operations table. Each operation unpacks its request,
 * calls one function of fs.h and replies exactly once. The session's
 * userdata is the struct hfs.
 */
#ifndef HFS_FUSE_OPS_H
#define HFS_FUSE_OPS_H

#include <fuse_lowlevel.h>

extern const struct fuse_lowlevel_ops hfs_fuse_ops;

#endif

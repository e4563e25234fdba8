/* placeholder */
typedef int hfs_placeholder_fuse_ops;

/* placeholder */
typedef int hfs_placeholder_backend_local;

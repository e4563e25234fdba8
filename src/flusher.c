/* placeholder */
typedef int hfs_placeholder_flusher;

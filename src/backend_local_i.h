/*
 * Private to the local backend (backend_local.c: paths, metadata, reads,
 * creation; backend_local_ops.c: the operations that change the remote
 * directory).
 */
#ifndef HFS_BACKEND_LOCAL_I_H
#define HFS_BACKEND_LOCAL_I_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "hfs/backend_api.h"
#include "hfs/backend_local.h"
#include "hfs/fold.h"
#include "hfs/hash.h"

#define LOCAL_PAGE_DEFAULT 1000
#define LOCAL_BUF ((size_t)1024 * 1024)
#define LOCAL_TMP_PREFIX ".huracanfs-tmp."
#define LOCAL_XATTR_REV "user.huracanfs.rev"
#define LOCAL_XATTR_HASH "user.huracanfs.hash"
#define LOCAL_CONFLICT_MAX 10000
#define LOCAL_STAT_TRIES 3
#define LOCAL_CURSOR_TAG "n:"

struct local_backend {
	struct backend base; /* first, so a struct backend * converts */
	char *root; /* owned; absolute, no trailing slash */
	size_t page_size; /* set before the backend is shared */
	/* Serializes the compare-and-rename of conditional uploads. */
	pthread_mutex_t commit_lock;
};

/* What the xattrs (or their absence) say about a regular file. */
struct local_meta {
	char rev[BACKEND_REV_MAX + 1];
	bool rev_stored; /* rev came from a valid xattr */
	bool has_hash;
	uint8_t hash[CHASH_LEN];
};

/* The operations of backend_local_ops.c, in the ops table (backend_api.h). */
int local_download(struct backend *be, const char *path, const char *rev,
		   uint64_t off, uint64_t len, int fd, uint64_t *got,
		   struct backend_entry *out);
int local_upload(struct backend *be, const struct backend_upload *up,
		 struct backend_entry *out);
int local_mkdir(struct backend *be, const char *path);
int local_remove(struct backend *be, const char *path);
int local_remove_batch(struct backend *be, const struct backend_delete *dels,
		       size_t n, int *rcs);
int local_move(struct backend *be, const char *from, const char *to);
int local_copy(struct backend *be, const char *from, const char *to);

/* Shared by the local backend's files (see their definitions). */
void local_fill_file(struct backend_entry *out, const char *name,
		     const struct stat *st, const struct local_meta *m);
int local_full_path(struct local_backend *lb, const char *path, bool allow_root,
		    char **out);
int local_join(const char *a, const char *b, char **out);
struct local_backend *local_lb_of(struct backend *be);
int local_err(struct local_backend *lb, int e, bool write, const char *what,
	      const char *path);
bool local_name_ok(const char *name);
int local_make_parents(struct local_backend *lb, const char *path);
void local_new_rev(char rev[BACKEND_REV_MAX + 1]);
int local_open_tmp(const char *dir, char **tmp_out);
/*
 * The one byte mover of the local backend: copies up to @len bytes of @src
 * from @off to @dst at @dst_off, hashing them into @h if given (without
 * @h, in the kernel with copy_file_range where it can). Stops at the end
 * of @src; *@copied says how far it got. Returns 0, or -errno with
 * *@write_failed set if it was writing @dst that failed.
 */
int local_copy_bytes(int src, uint64_t off, int dst, uint64_t dst_off,
		     uint64_t len, struct chash *h, uint64_t *copied,
		     bool *write_failed);
int local_parent_full_path(struct local_backend *lb, const char *path,
			   char **out);
const char *local_path_base(const char *path);
uint64_t local_rand64(void);
int local_read_meta(int fd, const char *full, const struct stat *st,
		    struct local_meta *m);
int local_rename_noreplace(const char *src, const char *dst);
int local_root_check(struct local_backend *lb, bool write);
bool local_same_stamp(const struct stat *a, const struct stat *b);
void local_synth_rev(const struct stat *st, char rev[BACKEND_REV_MAX + 1]);
int local_write_meta(int fd, const struct stat *st, const char *rev,
		     const uint8_t hash[CHASH_LEN]);

#endif

/*
 * FUSE low-level operations: thin. See fuse_ops.h.
 *
 * Attribute and entry timeouts are short (1 s) because the remote can
 * change behind us (another machine); negative lookups are not cached,
 * nor a file found under another spelling of its name (fs.h, hfs_lookup).
 * Unlink, rmdir and rename reply first, then drop the kernel's dentries of
 * other spellings they made stale (hfs_drop_stale_names). Every handler
 * first counts its request (fuse_stats.h), for status --json.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "hfs/config.h"
#include "hfs/fs.h"
#include "hfs/fuse_ops.h"
#include "hfs/index.h"
#include "hfs/log.h"

#define TIMEOUT 1.0
#define MAX_WRITE (1u << 20)

static struct hfs *hfs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static const char *const op_names[HFS_FUSE_NOPS] = {
	[HFS_OP_LOOKUP] = "lookup",
	[HFS_OP_FORGET] = "forget",
	[HFS_OP_BATCH_FORGET] = "batch_forget",
	[HFS_OP_GETATTR] = "getattr",
	[HFS_OP_SETATTR] = "setattr",
	[HFS_OP_MKNOD] = "mknod",
	[HFS_OP_MKDIR] = "mkdir",
	[HFS_OP_UNLINK] = "unlink",
	[HFS_OP_RMDIR] = "rmdir",
	[HFS_OP_READLINK] = "readlink",
	[HFS_OP_SYMLINK] = "symlink",
	[HFS_OP_LINK] = "link",
	[HFS_OP_RENAME] = "rename",
	[HFS_OP_OPEN] = "open",
	[HFS_OP_CREATE] = "create",
	[HFS_OP_READ] = "read",
	[HFS_OP_WRITE] = "write",
	[HFS_OP_FALLOCATE] = "fallocate",
	[HFS_OP_FLUSH] = "flush",
	[HFS_OP_RELEASE] = "release",
	[HFS_OP_FSYNC] = "fsync",
	[HFS_OP_OPENDIR] = "opendir",
	[HFS_OP_READDIR] = "readdir",
	[HFS_OP_READDIRPLUS] = "readdirplus",
	[HFS_OP_RELEASEDIR] = "releasedir",
	[HFS_OP_FSYNCDIR] = "fsyncdir",
	[HFS_OP_STATFS] = "statfs",
	[HFS_OP_SETXATTR] = "setxattr",
	[HFS_OP_GETXATTR] = "getxattr",
	[HFS_OP_LISTXATTR] = "listxattr",
	[HFS_OP_REMOVEXATTR] = "removexattr",
};

const char *hfs_fuse_op_name(enum hfs_fuse_op op)
{
	return (unsigned)op < HFS_FUSE_NOPS ? op_names[op] : NULL;
}

/* One request of @op served: a relaxed increment (see fuse_stats.h). */
static void count_req(fuse_req_t req, enum hfs_fuse_op op)
{
	atomic_fetch_add_explicit(&hfs_of(req)->fuse_stats.n[op], 1,
				  memory_order_relaxed);
}

static void reply_entry_for(fuse_req_t req, int rc, const struct stat *st,
			    double entry_timeout)
{
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	struct fuse_entry_param e;
	memset(&e, 0, sizeof(e));
	e.ino = st->st_ino;
	e.attr = *st;
	e.attr_timeout = TIMEOUT;
	e.entry_timeout = entry_timeout;
	fuse_reply_entry(req, &e);
}

static void reply_entry(fuse_req_t req, int rc, const struct stat *st)
{
	reply_entry_for(req, rc, st, TIMEOUT);
}

static void reply_attr(fuse_req_t req, int rc, const struct stat *st)
{
	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(req, st, TIMEOUT);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct hfs *fs = userdata;
	if (fs->cfg->writeback_cache &&
	    (conn->capable & FUSE_CAP_WRITEBACK_CACHE))
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE;
	if (conn->capable & FUSE_CAP_SPLICE_MOVE)
		conn->want |= FUSE_CAP_SPLICE_MOVE;
	conn->want &= ~(unsigned)FUSE_CAP_EXPORT_SUPPORT;
	if (conn->max_write > MAX_WRITE)
		conn->max_write = MAX_WRITE;
	conn->max_readahead = MAX_WRITE;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	count_req(req, HFS_OP_LOOKUP);
	struct stat st;
	bool other = false;
	int rc = hfs_lookup(hfs_of(req), parent, name, &st, &other);
	/* A file found under another spelling: not cached (see fs.h). */
	reply_entry_for(req, rc, &st,
			other && !S_ISDIR(st.st_mode) ? 0.0 : TIMEOUT);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	count_req(req, HFS_OP_FORGET);
	hfs_forget(hfs_of(req), ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count,
			    struct fuse_forget_data *forgets)
{
	count_req(req, HFS_OP_BATCH_FORGET);
	for (size_t i = 0; i < count; i++)
		hfs_forget(hfs_of(req), forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	count_req(req, HFS_OP_GETATTR);
	(void)fi;
	struct stat st;
	int rc = hfs_getattr(hfs_of(req), ino, &st);
	reply_attr(req, rc, &st);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	count_req(req, HFS_OP_SETATTR);
	struct stat st;
	struct hfs_file *fh = fi ? (struct hfs_file *)(uintptr_t)fi->fh : NULL;
	static const struct {
		int fuse, hfs;
	} bits[] = {
		{FUSE_SET_ATTR_MODE, HFS_SET_MODE},
		{FUSE_SET_ATTR_UID, HFS_SET_UID},
		{FUSE_SET_ATTR_GID, HFS_SET_GID},
		{FUSE_SET_ATTR_SIZE, HFS_SET_SIZE},
		{FUSE_SET_ATTR_ATIME, HFS_SET_ATIME},
		{FUSE_SET_ATTR_MTIME, HFS_SET_MTIME},
		{FUSE_SET_ATTR_ATIME_NOW, HFS_SET_ATIME_NOW},
		{FUSE_SET_ATTR_MTIME_NOW, HFS_SET_MTIME_NOW},
		{FUSE_SET_ATTR_CTIME, HFS_SET_CTIME},
	};
	int set = 0;
	for (size_t i = 0; i < sizeof(bits) / sizeof(bits[0]); i++)
		if (to_set & bits[i].fuse)
			set |= bits[i].hfs;
	int rc;
	HFS_RETRY_NOSPC(hfs_of(req), rc,
			hfs_setattr(hfs_of(req), ino, attr, set, fh, &st));
	reply_attr(req, rc, &st);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	count_req(req, HFS_OP_MKNOD);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct stat st;
	int rc;
	HFS_RETRY_NOSPC(hfs_of(req), rc,
			hfs_mknod(hfs_of(req), parent, name, mode, rdev,
				  ctx->uid, ctx->gid, &st));
	reply_entry(req, rc, &st);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	count_req(req, HFS_OP_MKDIR);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct stat st;
	int rc;
	HFS_RETRY_NOSPC(hfs_of(req), rc,
			hfs_mkdir(hfs_of(req), parent, name, mode, ctx->uid,
				  ctx->gid, &st));
	reply_entry(req, rc, &st);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	count_req(req, HFS_OP_UNLINK);
	struct hfs *fs = hfs_of(req); /* req is gone after the reply */
	int rc;
	HFS_RETRY_NOSPC(fs, rc, hfs_unlink(fs, parent, name));
	fuse_reply_err(req, -rc);
	hfs_drop_stale_names(fs);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	count_req(req, HFS_OP_RMDIR);
	struct hfs *fs = hfs_of(req);
	int rc;
	HFS_RETRY_NOSPC(fs, rc, hfs_rmdir(fs, parent, name));
	fuse_reply_err(req, -rc);
	hfs_drop_stale_names(fs);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	count_req(req, HFS_OP_READLINK);
	char buf[HFS_LINK_MAX + 1];
	ssize_t n = hfs_readlink(hfs_of(req), ino, buf, sizeof(buf) - 1);
	if (n < 0) {
		fuse_reply_err(req, (int)-n);
		return;
	}
	buf[n] = '\0';
	fuse_reply_readlink(req, buf);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	count_req(req, HFS_OP_SYMLINK);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct stat st;
	int rc;
	HFS_RETRY_NOSPC(hfs_of(req), rc,
			hfs_symlink(hfs_of(req), parent, name, link, ctx->uid,
				    ctx->gid, &st));
	reply_entry(req, rc, &st);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		    const char *newname)
{
	count_req(req, HFS_OP_LINK);
	struct stat st;
	int rc;
	HFS_RETRY_NOSPC(hfs_of(req), rc,
			hfs_link(hfs_of(req), ino, newparent, newname, &st));
	reply_entry(req, rc, &st);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	count_req(req, HFS_OP_RENAME);
	struct hfs *fs = hfs_of(req);
	int rc;
	HFS_RETRY_NOSPC(
		fs, rc,
		hfs_rename(fs, parent, name, newparent, newname, flags));
	fuse_reply_err(req, -rc);
	hfs_drop_stale_names(fs);
}

/*
 * While the cache filesystem is short of space, files opened for writing
 * bypass the kernel's page cache: with the writeback cache the kernel would
 * accept writes we may not be able to store, and lose them at writeback;
 * written through, every write that fails says so to its writer (ENOSPC).
 */
static void direct_when_short(struct hfs *fs, struct fuse_file_info *fi)
{
	if ((fi->flags & O_ACCMODE) != O_RDONLY &&
	    atomic_load(&fs->short_space)) {
		fi->direct_io = 1;
		fi->keep_cache = 0;
	}
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	count_req(req, HFS_OP_OPEN);
	struct hfs_file *fh;
	int rc = hfs_open(hfs_of(req), ino, fi->flags, &fh);
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	fi->fh = (uintptr_t)fh;
	fi->keep_cache = 1;
	direct_when_short(hfs_of(req), fi);
	if (fuse_reply_open(req, fi) == -ENOENT)
		hfs_release(hfs_of(req), fh); /* interrupted */
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	count_req(req, HFS_OP_CREATE);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct hfs_file *fh;
	struct stat st;
	int rc;
	HFS_RETRY_NOSPC(hfs_of(req), rc,
			hfs_create_file(hfs_of(req), parent, name, mode,
					fi->flags, ctx->uid, ctx->gid, &st,
					&fh));
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	struct fuse_entry_param e;
	memset(&e, 0, sizeof(e));
	e.ino = st.st_ino;
	e.attr = st;
	e.attr_timeout = TIMEOUT;
	e.entry_timeout = TIMEOUT;
	fi->fh = (uintptr_t)fh;
	direct_when_short(hfs_of(req), fi);
	if (fuse_reply_create(req, &e, fi) == -ENOENT)
		hfs_release(hfs_of(req), fh);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	count_req(req, HFS_OP_READ);
	(void)ino;
	struct hfs_file *fh = (struct hfs_file *)(uintptr_t)fi->fh;
	int fd = hfs_read_fd(hfs_of(req), fh, (uint64_t)off, size);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = fd;
	buf.buf[0].pos = off;
	fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

/* A write's source (fs.h, struct hfs_source): libfuse's buffers, memory
 * or a pipe (splice), which fuse_buf_copy() advances as it copies. */
static ssize_t copy_bufvec(void *arg, int fd, uint64_t off, size_t len)
{
	struct fuse_bufvec dst = FUSE_BUFVEC_INIT(len);
	dst.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	dst.buf[0].fd = fd;
	dst.buf[0].pos = (off_t)off;
	return fuse_buf_copy(&dst, arg, 0);
}

static void op_write_buf(fuse_req_t req, fuse_ino_t ino,
			 struct fuse_bufvec *in_buf, off_t off,
			 struct fuse_file_info *fi)
{
	count_req(req, HFS_OP_WRITE);
	(void)ino;
	struct hfs_file *fh = (struct hfs_file *)(uintptr_t)fi->fh;
	struct hfs_source src = {.len = fuse_buf_size(in_buf),
				 .copy = copy_bufvec,
				 .arg = in_buf};
	ssize_t n =
		hfs_write(hfs_of(req), fh, &src, (uint64_t)off, fi->writepage);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_write(req, (size_t)n);
}

/*
 * close(2) needs no round trip of ours: the kernel writes cached data back
 * before it would send FLUSH anyway, the dirty mark is in the index since
 * the first write, and release (sent asynchronously) persists size and
 * times. ENOSYS tells the kernel to stop sending FLUSH at all, which saves
 * a synchronous request on every close.
 */
static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	count_req(req, HFS_OP_FLUSH);
	(void)ino;
	(void)fi;
	fuse_reply_err(req, ENOSYS);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset,
			 off_t length, struct fuse_file_info *fi)
{
	count_req(req, HFS_OP_FALLOCATE);
	(void)ino;
	struct hfs_file *fh = (struct hfs_file *)(uintptr_t)fi->fh;
	if (offset < 0 || length <= 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	int rc;
	HFS_RETRY_NOSPC(hfs_of(req), rc,
			hfs_fallocate(hfs_of(req), fh, mode, (uint64_t)offset,
				      (uint64_t)length));
	fuse_reply_err(req, -rc);
}

static void op_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	count_req(req, HFS_OP_RELEASE);
	(void)ino;
	struct hfs_file *fh = (struct hfs_file *)(uintptr_t)fi->fh;
	fuse_reply_err(req, -hfs_release(hfs_of(req), fh));
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		     struct fuse_file_info *fi)
{
	count_req(req, HFS_OP_FSYNC);
	(void)ino;
	struct hfs_file *fh = (struct hfs_file *)(uintptr_t)fi->fh;
	fuse_reply_err(req, -hfs_fsync(hfs_of(req), fh, datasync));
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	count_req(req, HFS_OP_OPENDIR);
	struct hfs_dir *dh;
	int rc = hfs_opendir(hfs_of(req), ino, &dh);
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	fi->fh = (uintptr_t)dh;
	fi->cache_readdir = 0;
	if (fuse_reply_open(req, fi) == -ENOENT)
		hfs_releasedir(hfs_of(req), dh);
}

/* The reply buffer of a readdir(plus) that hfs_readdir() fills. */
struct fill_ctx {
	fuse_req_t req;
	char *buf;
	size_t size, used;
	bool plus;
};

static int fill_one(void *arg, const char *name, const struct stat *st,
		    uint64_t next, bool entry)
{
	struct fill_ctx *fc = arg;
	size_t rem = fc->size - fc->used, need;
	if (fc->plus) {
		struct fuse_entry_param ep;
		memset(&ep, 0, sizeof(ep));
		ep.attr = *st;
		if (entry) { /* "." and "..": no reference, nothing cached */
			ep.ino = st->st_ino;
			ep.attr_timeout = TIMEOUT;
			ep.entry_timeout = TIMEOUT;
		}
		need = fuse_add_direntry_plus(fc->req, fc->buf + fc->used, rem,
					      name, &ep, (off_t)next);
	} else {
		need = fuse_add_direntry(fc->req, fc->buf + fc->used, rem, name,
					 st, (off_t)next);
	}
	if (need > rem)
		return 1;
	fc->used += need;
	return 0;
}

static void readdir_common(fuse_req_t req, size_t size, off_t off,
			   struct fuse_file_info *fi, bool plus)
{
	struct hfs_dir *dh = (struct hfs_dir *)(uintptr_t)fi->fh;
	char *buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	struct fill_ctx fc = {
		.req = req, .buf = buf, .size = size, .plus = plus};
	int rc = hfs_readdir(hfs_of(req), dh, (uint64_t)off, plus, fill_one,
			     &fc);
	if (rc && fc.used == 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_buf(req, buf, fc.used);
	free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	count_req(req, HFS_OP_READDIR);
	(void)ino;
	readdir_common(req, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *fi)
{
	count_req(req, HFS_OP_READDIRPLUS);
	(void)ino;
	readdir_common(req, size, off, fi, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	count_req(req, HFS_OP_RELEASEDIR);
	(void)ino;
	hfs_releasedir(hfs_of(req), (struct hfs_dir *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			struct fuse_file_info *fi)
{
	count_req(req, HFS_OP_FSYNCDIR);
	(void)ino;
	(void)datasync;
	(void)fi;
	fuse_reply_err(req, -index_sync(hfs_of(req)->ix));
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	count_req(req, HFS_OP_STATFS);
	(void)ino;
	struct statvfs st;
	int rc = hfs_statfs(hfs_of(req), &st);
	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_statfs(req, &st);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			const char *value, size_t size, int flags)
{
	count_req(req, HFS_OP_SETXATTR);
	(void)ino;
	(void)name;
	(void)value;
	(void)size;
	(void)flags;
	fuse_reply_err(req, ENOTSUP);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			size_t size)
{
	count_req(req, HFS_OP_GETXATTR);
	char *buf = size ? malloc(size) : NULL;
	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ssize_t n = hfs_getxattr(hfs_of(req), ino, name, buf, size);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	count_req(req, HFS_OP_LISTXATTR);
	char *buf = size ? malloc(size) : NULL;
	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ssize_t n = hfs_listxattr(hfs_of(req), ino, buf, size);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	count_req(req, HFS_OP_REMOVEXATTR);
	(void)ino;
	(void)name;
	fuse_reply_err(req, ENOTSUP);
}

const struct fuse_lowlevel_ops hfs_fuse_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.readlink = op_readlink,
	.symlink = op_symlink,
	.link = op_link,
	.rename = op_rename,
	.open = op_open,
	.create = op_create,
	.read = op_read,
	.write_buf = op_write_buf,
	.fallocate = op_fallocate,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_releasedir,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
	.setxattr = op_setxattr,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.removexattr = op_removexattr,
};

/*
 * The local backend: downloads, uploads (conditional, with conflicted copies),
 * mkdir, deletes, moves and copies in the remote directory.
 */
#include "backend_local_i.h"

int local_download(struct backend *be, const char *path, const char *rev,
		   uint64_t off, uint64_t len, int fd, uint64_t *got,
		   struct backend_entry *out)
{
	struct local_backend *lb = local_lb_of(be);
	struct chash h = {0};
	struct local_meta m;
	struct stat st0, st1;
	uint8_t hash[CHASH_LEN];
	uint64_t size, end, pos;
	char *full = NULL;
	bool whole;
	int sfd = -1, rc;

	rc = local_full_path(lb, path, true, &full);
	if (rc < 0)
		goto out;
	rc = local_root_check(lb, false);
	if (rc < 0)
		goto out;
	sfd = open(full, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (sfd < 0) {
		rc = local_err(lb, errno == ELOOP ? ENOENT : errno, false,
			       "open", path);
		goto out;
	}
	if (fstat(sfd, &st0) < 0) {
		rc = local_err(lb, errno, false, "stat", path);
		goto out;
	}
	if (!S_ISREG(st0.st_mode)) {
		rc = local_err(lb, S_ISDIR(st0.st_mode) ? EISDIR : ENOENT,
			       false, "download", path);
		goto out;
	}
	rc = local_read_meta(sfd, NULL, &st0, &m);
	if (rc < 0) {
		rc = local_err(lb, -rc, false, "read xattrs of", path);
		goto out;
	}
	if (rev && strcmp(rev, m.rev) != 0) {
		backend_set_error("revision %s of \"%s\" is gone (current %s)",
				  rev, path, m.rev);
		rc = -ENOENT;
		goto out;
	}

	size = (uint64_t)st0.st_size;
	if (off >= size)
		end = off;
	else if (len == 0 || len > size - off)
		end = size;
	else
		end = off + len;
	whole = off == 0 && end == size;
	if (whole) {
		rc = chash_init(&h);
		if (rc < 0)
			goto out;
	}
	uint64_t copied = 0;
	bool wfail = false;
	rc = local_copy_bytes(sfd, off, fd, off, end - off, whole ? &h : NULL,
			      &copied, &wfail);
	pos = off + copied;
	if (rc < 0 && wfail) {
		backend_set_error("writing the download of \"%s\": %s", path,
				  strerror(-rc));
		goto out;
	}
	if (rc < 0) {
		rc = local_err(lb, -rc, false, "read", path);
		goto out;
	}
	if (fstat(sfd, &st1) < 0) {
		rc = local_err(lb, errno, false, "stat", path);
		goto out;
	}
	if (pos != end || !local_same_stamp(&st0, &st1)) {
		backend_set_error("\"%s\" changed during the download", path);
		rc = -EAGAIN;
		goto out;
	}
	if (whole) {
		rc = chash_final(&h, hash);
		if (rc < 0)
			goto out;
		if (m.has_hash && memcmp(hash, m.hash, CHASH_LEN) != 0) {
			backend_set_error("content hash mismatch in \"%s\"",
					  path);
			rc = -EIO;
			goto out;
		}
		memcpy(m.hash, hash, CHASH_LEN);
		m.has_hash = true;
	}
	*got = pos - off;
	if (out)
		local_fill_file(out, local_path_base(full), &st0, &m);
	rc = 0;
out:
	chash_release(&h);
	if (sfd >= 0)
		close(sfd);
	free(full);
	return rc;
}

/*
 * Copies @up's bytes into @fd, hashing them into @hash. Errors of the
 * source are the caller's, not the remote's, so they are not translated.
 */
static int upload_copy(struct local_backend *lb,
		       const struct backend_upload *up, int fd,
		       uint8_t hash[CHASH_LEN])
{
	struct chash h = {0};
	uint64_t copied = 0;
	bool wfail = false;
	int rc = chash_init(&h);
	if (rc < 0)
		goto out;
	rc = local_copy_bytes(up->fd, 0, fd, 0, up->size, &h, &copied, &wfail);
	if (rc < 0 && wfail) {
		rc = local_err(lb, -rc, true, "write", up->path);
		goto out;
	}
	if (rc == 0 && copied < up->size)
		rc = -EIO;
	if (rc < 0) {
		backend_set_error("reading the upload source of \"%s\": %s",
				  up->path,
				  rc == -EIO && copied < up->size
					  ? "shorter than the size given"
					  : strerror(-rc));
		goto out;
	}
	rc = chash_final(&h, hash);
out:
	chash_release(&h);
	return rc;
}

/*
 * Writes "NAME (conflicted copy N).EXT" for @name into @out, shortening
 * NAME (at a character boundary) to keep within BACKEND_NAME_MAX.
 */
static void conflict_name(const char *name, unsigned n,
			  char out[BACKEND_NAME_MAX + 1])
{
	const char *dot = strrchr(name, '.');
	char suffix[40];
	size_t stem, ext, sl;

	if (!dot || dot == name || strlen(dot) > 32)
		dot = name + strlen(name);
	sl = (size_t)snprintf(suffix, sizeof(suffix), " (conflicted copy %u)",
			      n);
	stem = (size_t)(dot - name);
	ext = strlen(dot);
	if (stem + sl + ext > BACKEND_NAME_MAX) {
		stem = BACKEND_NAME_MAX - sl - ext;
		while (stem > 0 && ((unsigned char)name[stem] & 0xc0) == 0x80)
			stem--;
	}
	snprintf(out, BACKEND_NAME_MAX + 1, "%.*s%s%s", (int)stem, name, suffix,
		 dot);
}

/* Publishes @tmp as the first free conflicted copy of remote @path. */
static int publish_conflicted_copy(struct local_backend *lb, const char *path,
				   const char *tmp,
				   char name[BACKEND_NAME_MAX + 1])
{
	char *dir = NULL, *dst = NULL;
	unsigned i;
	int rc;

	rc = local_parent_full_path(lb, path, &dir);
	if (rc < 0)
		return rc;
	for (i = 1; i <= LOCAL_CONFLICT_MAX; i++) {
		conflict_name(local_path_base(path), i, name);
		rc = local_join(dir, name, &dst);
		if (rc < 0)
			goto out;
		rc = local_rename_noreplace(tmp, dst);
		free(dst);
		if (rc != -EEXIST)
			break;
	}
	if (rc < 0)
		rc = local_err(lb, -rc, true, "store a conflicted copy of",
			       path);
out:
	free(dir);
	return rc;
}

/*
 * Reads the current revision of the file at local @full into @rev.
 * Returns 1 if it is a regular file, 0 if nothing is there, 2 if something
 * else is there, or -errno.
 */
static int current_rev(const char *full, char rev[BACKEND_REV_MAX + 1])
{
	struct local_meta m;
	struct stat st;
	int rc;

	if (lstat(full, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISREG(st.st_mode))
		return 2;
	rc = local_read_meta(-1, full, &st, &m);
	if (rc < 0)
		return rc;
	memcpy(rev, m.rev, BACKEND_REV_MAX + 1);
	return 1;
}

/*
 * Moves the finished temporary file @tmp to remote @up->path according to
 * @up->parent_rev and @up->autorename; the stored name goes to @name.
 */
static int commit_upload(struct local_backend *lb,
			 const struct backend_upload *up, const char *tmp,
			 const char *full, char name[BACKEND_NAME_MAX + 1])
{
	char cur[BACKEND_REV_MAX + 1] = "";
	int rc, kind;

	snprintf(name, BACKEND_NAME_MAX + 1, "%s", local_path_base(up->path));
	if (!up->parent_rev) {
		if (rename(tmp, full) < 0)
			return local_err(lb, errno, true, "upload", up->path);
		return 0;
	}

	pthread_mutex_lock(&lb->commit_lock);
	kind = current_rev(full, cur);
	if (kind == 0)
		rc = local_rename_noreplace(tmp, full);
	else if (kind == 1 && strcmp(cur, up->parent_rev) == 0)
		rc = rename(tmp, full) < 0 ? -errno : 0;
	else if (kind < 0)
		rc = kind;
	else
		rc = -EEXIST;
	pthread_mutex_unlock(&lb->commit_lock);

	if (rc == -EEXIST) {
		if (up->autorename)
			return publish_conflicted_copy(lb, up->path, tmp, name);
		backend_set_error("conflict: \"%s\" is at revision %s, not %s",
				  up->path, cur[0] ? cur : "(not a file)",
				  up->parent_rev);
		return -EEXIST;
	}
	if (rc < 0)
		return local_err(lb, -rc, true, "upload", up->path);
	return 0;
}

int local_upload(struct backend *be, const struct backend_upload *up,
		 struct backend_entry *out)
{
	struct local_backend *lb = local_lb_of(be);
	char rev[BACKEND_REV_MAX + 1];
	char name[BACKEND_NAME_MAX + 1];
	struct timespec ts[2];
	struct local_meta m;
	uint8_t hash[CHASH_LEN];
	char *full = NULL, *dir = NULL, *tmp = NULL;
	struct stat st;
	int fd = -1, rc;

	rc = local_full_path(lb, up->path, false, &full);
	if (rc < 0)
		goto out;
	rc = local_root_check(lb, true);
	if (rc < 0)
		goto out;
	rc = local_make_parents(lb, up->path);
	if (rc < 0)
		goto out;
	rc = local_parent_full_path(lb, up->path, &dir);
	if (rc < 0)
		goto out;
	fd = local_open_tmp(dir, &tmp);
	if (fd < 0) {
		rc = local_err(lb, -fd, true, "create a temporary file for",
			       up->path);
		goto out;
	}
	rc = upload_copy(lb, up, fd, hash);
	if (rc < 0)
		goto out;
	if (up->hash && memcmp(up->hash, hash, CHASH_LEN) != 0) {
		backend_set_error("content hash mismatch uploading \"%s\"",
				  up->path);
		rc = -EIO;
		goto out;
	}
	if (fsync(fd) < 0) {
		rc = local_err(lb, errno, true, "fsync", up->path);
		goto out;
	}
	ts[0].tv_sec = 0;
	ts[0].tv_nsec = UTIME_OMIT;
	ts[1].tv_sec = (time_t)up->mtime;
	ts[1].tv_nsec = (long)(local_rand64() % 1000000000);
	if (futimens(fd, ts) < 0 || fstat(fd, &st) < 0) {
		rc = local_err(lb, errno, true, "set the mtime of", up->path);
		goto out;
	}
	local_new_rev(rev);
	rc = local_write_meta(fd, &st, rev, hash);
	if (rc == -ENOTSUP) {
		local_synth_rev(&st, rev);
	} else if (rc < 0) {
		rc = local_err(lb, -rc, true, "set xattrs of", up->path);
		goto out;
	}
	rc = close(fd);
	fd = -1;
	if (rc < 0) {
		rc = local_err(lb, errno, true, "close", up->path);
		goto out;
	}
	rc = commit_upload(lb, up, tmp, full, name);
	if (rc < 0)
		goto out;
	free(tmp);
	tmp = NULL;

	memset(&m, 0, sizeof(m));
	memcpy(m.rev, rev, sizeof(m.rev));
	m.has_hash = true;
	memcpy(m.hash, hash, CHASH_LEN);
	if (out)
		local_fill_file(out, name, &st, &m);
out:
	if (fd >= 0)
		close(fd);
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	free(dir);
	free(full);
	return rc;
}

int local_mkdir(struct backend *be, const char *path)
{
	struct local_backend *lb = local_lb_of(be);
	char *full = NULL;
	int rc;

	rc = local_full_path(lb, path, true, &full);
	if (rc < 0)
		goto out;
	rc = local_root_check(lb, true);
	if (rc < 0)
		goto out;
	if (path[0] == '\0') {
		backend_set_error("the root folder exists");
		rc = -EEXIST;
		goto out;
	}
	rc = local_make_parents(lb, path);
	if (rc < 0)
		goto out;
	if (mkdir(full, 0700) < 0)
		rc = local_err(lb, errno, true, "mkdir", path);
out:
	free(full);
	return rc;
}

static int remove_cb(const char *fpath, const struct stat *sb, int typeflag,
		     struct FTW *ftwbuf)
{
	int rc;

	(void)sb;
	(void)ftwbuf;
	if (typeflag == FTW_DP || typeflag == FTW_DNR)
		rc = rmdir(fpath);
	else
		rc = unlink(fpath);
	if (rc < 0 && errno != ENOENT)
		return errno;
	return 0;
}

/* Deletes local @full recursively, not following symbolic links. */
static int remove_tree(const char *full)
{
	int rc;

	rc = nftw(full, remove_cb, 16, FTW_DEPTH | FTW_PHYS);
	if (rc > 0)
		return -rc;
	if (rc < 0)
		return errno ? -errno : -EIO;
	return 0;
}

int local_remove(struct backend *be, const char *path)
{
	struct local_backend *lb = local_lb_of(be);
	char *full = NULL;
	struct stat st;
	int rc;

	rc = local_full_path(lb, path, true, &full);
	if (rc < 0)
		goto out;
	rc = local_root_check(lb, true);
	if (rc < 0)
		goto out;
	if (path[0] == '\0') {
		backend_set_error("the root folder cannot be removed");
		rc = -EINVAL;
		goto out;
	}
	if (lstat(full, &st) < 0) {
		rc = local_err(lb, errno, true, "remove", path);
		goto out;
	}
	if (S_ISDIR(st.st_mode))
		rc = remove_tree(full);
	else
		rc = unlink(full) < 0 ? -errno : 0;
	if (rc < 0)
		rc = local_err(lb, -rc, true, "remove", path);
out:
	free(full);
	return rc;
}

/*
 * One conditional delete of remove_batch: the revision is compared and
 * the file unlinked under commit_lock, so that a conditional upload of
 * this process cannot slip between the two (hand edits can, as for
 * uploads).
 */
static int remove_if_rev(struct local_backend *lb, const char *path,
			 const char *parent_rev)
{
	char cur[BACKEND_REV_MAX + 1] = "";
	char *full = NULL;
	int rc, kind;

	rc = local_full_path(lb, path, false, &full);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&lb->commit_lock);
	kind = current_rev(full, cur);
	if (kind == 0)
		rc = -ENOENT;
	else if (kind == 2)
		rc = -EISDIR;
	else if (kind < 0)
		rc = kind;
	else if (strcmp(cur, parent_rev) != 0)
		rc = -EEXIST;
	else
		rc = unlink(full) < 0 ? -errno : 0;
	pthread_mutex_unlock(&lb->commit_lock);
	free(full);
	if (rc == -EEXIST)
		backend_set_error("delete of \"%s\": it is at revision %s, "
				  "not %s",
				  path, cur, parent_rev);
	else if (rc == -EISDIR)
		backend_set_error("delete of \"%s\": not a file", path);
	else if (rc < 0)
		rc = local_err(lb, -rc, true, "remove", path);
	return rc;
}

int local_remove_batch(struct backend *be, const struct backend_delete *dels,
		       size_t n, int *rcs)
{
	struct local_backend *lb = local_lb_of(be);
	size_t i;
	int rc;

	rc = local_root_check(lb, true);
	for (i = 0; i < n; i++) {
		if (rc < 0)
			rcs[i] = rc;
		else if (dels[i].parent_rev)
			rcs[i] = remove_if_rev(lb, dels[i].path,
					       dels[i].parent_rev);
		else
			rcs[i] = local_remove(be, dels[i].path);
	}
	return rc;
}

/* True if path @to is @from or lies inside folder @from. */
static bool inside(const char *from, const char *to)
{
	size_t lf = strlen(from);

	return strncmp(from, to, lf) == 0 && (to[lf] == '/' || to[lf] == '\0');
}

/* Validates the two paths of a move or copy; -EINVAL for nesting. */
static int two_paths(struct local_backend *lb, const char *from, const char *to,
		     char **ffrom, char **fto)
{
	int rc;

	rc = local_full_path(lb, from, false, ffrom);
	if (rc < 0)
		return rc;
	rc = local_full_path(lb, to, false, fto);
	if (rc < 0)
		return rc;
	/* Compared as resolved: "/A/b" lies inside "/a". */
	if (strcmp(*ffrom, *fto) != 0 && inside(*ffrom, *fto)) {
		backend_set_error("cannot put \"%s\" inside itself (\"%s\")",
				  from, to);
		return -EINVAL;
	}
	return 0;
}

/*
 * Renames local @ffrom to @fto when they name the same file (a case-only
 * rename on a case-insensitive filesystem) through a temporary name.
 */
static int rename_case(const char *ffrom, const char *fto)
{
	char tmp_name[64];
	char *dir, *tmp = NULL;
	int rc;

	dir = strdup(ffrom);
	if (!dir)
		return -ENOMEM;
	*strrchr(dir, '/') = '\0';
	snprintf(tmp_name, sizeof(tmp_name), "%smv%016" PRIx64,
		 LOCAL_TMP_PREFIX, local_rand64());
	rc = local_join(dir, tmp_name, &tmp);
	if (rc < 0)
		goto out;
	rc = local_rename_noreplace(ffrom, tmp);
	if (rc < 0)
		goto out;
	rc = local_rename_noreplace(tmp, fto);
	if (rc < 0)
		rename(tmp, ffrom);
out:
	free(tmp);
	free(dir);
	return rc;
}

/* Local path @full with its last component replaced by @name (malloc'd,
 * in *@out). */
static int respelled(const char *full, const char *name, char **out)
{
	char *dir = strdup(full);
	int rc;

	if (!dir)
		return -ENOMEM;
	*strrchr(dir, '/') = '\0';
	rc = local_join(dir, name, out);
	free(dir);
	return rc;
}

int local_move(struct backend *be, const char *from, const char *to)
{
	struct local_backend *lb = local_lb_of(be);
	char *ffrom = NULL, *fto = NULL;
	struct stat st;
	int rc;

	rc = two_paths(lb, from, to, &ffrom, &fto);
	if (rc < 0)
		goto out;
	rc = local_root_check(lb, true);
	if (rc < 0)
		goto out;
	if (lstat(ffrom, &st) < 0) {
		rc = local_err(lb, errno, true, "move", from);
		goto out;
	}
	if (strcmp(from, to) != 0 && fold_equal(from, to)) {
		/* Another spelling of the same path (fto is ffrom): the
		 * entry takes the new spelling of its name. */
		free(fto);
		fto = NULL;
		rc = respelled(ffrom, local_path_base(to), &fto);
		if (rc == 0 && strcmp(ffrom, fto) != 0)
			rc = rename_case(ffrom, fto);
	} else {
		rc = local_make_parents(lb, to);
		if (rc < 0)
			goto out;
		rc = local_rename_noreplace(ffrom, fto);
	}
	if (rc < 0) {
		if (rc == -EEXIST)
			backend_set_error("move: \"%s\" exists", to);
		else
			rc = local_err(lb, -rc, true, "move", from);
	}
out:
	free(fto);
	free(ffrom);
	return rc;
}

/*
 * Copies regular file @src to @dst (local paths; @dst must not exist).
 * The copy keeps the mtime and the known content hash, under a new
 * revision. Returns 0 or a raw -errno.
 */
static int copy_file(const char *src, const char *dst)
{
	struct timespec ts[2];
	struct local_meta m;
	struct stat st0, st1, dst_st;
	char rev[BACKEND_REV_MAX + 1];
	char *dir = NULL, *tmp = NULL;
	off_t in = 0;
	int sfd = -1, dfd = -1, rc;

	sfd = open(src, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (sfd < 0) {
		rc = errno == ELOOP ? -ENOENT : -errno;
		goto out;
	}
	if (fstat(sfd, &st0) < 0) {
		rc = -errno;
		goto out;
	}
	if (!S_ISREG(st0.st_mode)) {
		rc = S_ISDIR(st0.st_mode) ? -EISDIR : -ENOENT;
		goto out;
	}
	rc = local_read_meta(sfd, NULL, &st0, &m);
	if (rc < 0)
		goto out;
	dir = strdup(dst);
	if (!dir) {
		rc = -ENOMEM;
		goto out;
	}
	*strrchr(dir, '/') = '\0';
	dfd = local_open_tmp(dir, &tmp);
	if (dfd < 0) {
		rc = dfd;
		goto out;
	}
	uint64_t copied = 0;
	bool wfail = false;
	rc = local_copy_bytes(sfd, 0, dfd, 0, (uint64_t)st0.st_size, NULL,
			      &copied, &wfail);
	if (rc < 0)
		goto out;
	in = (off_t)copied;
	if (fstat(sfd, &st1) < 0) {
		rc = -errno;
		goto out;
	}
	if (in != st0.st_size || !local_same_stamp(&st0, &st1)) {
		rc = -EAGAIN;
		goto out;
	}
	ts[0].tv_sec = 0;
	ts[0].tv_nsec = UTIME_OMIT;
	ts[1] = st0.st_mtim;
	if (fsync(dfd) < 0 || futimens(dfd, ts) < 0 ||
	    fstat(dfd, &dst_st) < 0) {
		rc = -errno;
		goto out;
	}
	if (m.has_hash) {
		local_new_rev(rev);
		rc = local_write_meta(dfd, &dst_st, rev, m.hash);
		if (rc < 0 && rc != -ENOTSUP)
			goto out;
	}
	rc = close(dfd);
	dfd = -1;
	if (rc < 0) {
		rc = -errno;
		goto out;
	}
	rc = local_rename_noreplace(tmp, dst);
	if (rc < 0)
		goto out;
	free(tmp);
	tmp = NULL;
out:
	if (dfd >= 0)
		close(dfd);
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	if (sfd >= 0)
		close(sfd);
	free(dir);
	return rc;
}

/*
 * Copies the valid files and folders inside local folder @src into the
 * existing folder @dst. Entries that vanish meanwhile are skipped. Returns
 * 0 or a raw -errno.
 */
static int copy_children(const char *src, const char *dst)
{
	char *s = NULL, *d = NULL;
	struct dirent *de;
	struct stat st;
	DIR *dir;
	int rc = 0;

	dir = opendir(src);
	if (!dir)
		return -errno;
	for (;;) {
		errno = 0;
		de = readdir(dir);
		if (!de) {
			rc = -errno;
			break;
		}
		if (!local_name_ok(de->d_name))
			continue;
		rc = local_join(src, de->d_name, &s);
		if (rc == 0)
			rc = local_join(dst, de->d_name, &d);
		if (rc < 0)
			break;
		if (lstat(s, &st) < 0) {
			rc = errno == ENOENT ? 0 : -errno;
		} else if (S_ISREG(st.st_mode)) {
			rc = copy_file(s, d);
		} else if (S_ISDIR(st.st_mode)) {
			rc = mkdir(d, 0700) < 0 ? -errno : copy_children(s, d);
		}
		if (rc == -ENOENT)
			rc = 0;
		free(s);
		free(d);
		s = d = NULL;
		if (rc < 0)
			break;
	}
	free(s);
	free(d);
	closedir(dir);
	return rc;
}

int local_copy(struct backend *be, const char *from, const char *to)
{
	struct local_backend *lb = local_lb_of(be);
	char *ffrom = NULL, *fto = NULL;
	struct stat st;
	int rc;

	rc = two_paths(lb, from, to, &ffrom, &fto);
	if (rc < 0)
		goto out;
	rc = local_root_check(lb, true);
	if (rc < 0)
		goto out;
	if (lstat(ffrom, &st) < 0) {
		rc = local_err(lb, errno, true, "copy", from);
		goto out;
	}
	if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
		rc = local_err(lb, ENOENT, true, "copy", from);
		goto out;
	}
	rc = local_make_parents(lb, to);
	if (rc < 0)
		goto out;
	if (S_ISREG(st.st_mode)) {
		rc = copy_file(ffrom, fto);
	} else if (mkdir(fto, 0700) < 0) {
		rc = -errno;
	} else {
		rc = copy_children(ffrom, fto);
		if (rc < 0)
			remove_tree(fto);
	}
	if (rc == -EEXIST)
		backend_set_error("copy: \"%s\" exists", to);
	else if (rc == -EAGAIN)
		backend_set_error("copy: \"%s\" changed while it was copied",
				  from);
	else if (rc < 0)
		rc = local_err(lb, -rc, true, "copy", from);
out:
	free(fto);
	free(ffrom);
	return rc;
}

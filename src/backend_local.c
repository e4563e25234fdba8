/*
 * The "local" backend: a directory (the root) plays the remote. Remote path
 * "" is the root itself and "/a/b" is root/a/b. It is the embedded default
 * and the backend the tests use, so it mirrors the Dropbox model closely
 * enough that the filesystem cannot tell the difference in the ways that
 * matter: revisions, content hashes, paged listings, never-overwriting
 * move/copy and conditional uploads.
 *
 * Availability. The root may live on a removable disk or a network mount.
 * If it is missing or inaccessible, that is "remote unavailable" (-EAGAIN),
 * never "file does not exist": the filesystem would otherwise delete local
 * files whose remote copy merely cannot be seen. So every method checks the
 * root first, and every failure is re-examined against the root before its
 * errno is passed on (local_err). The root is created once, at create time;
 * a root that disappears later is never re-created, since that would write
 * into the mount point of an absent disk.
 *
 * Revisions and hashes. An upload stores two xattrs on the file:
 *   user.huracanfs.rev   "<rev> <st_mtime in ns> <st_size>"
 *   user.huracanfs.hash  64 lowercase hex, the content hash
 * The mtime and size stamp the xattrs: when they no longer match the file
 * (someone edited it by hand), the xattrs are stale and ignored. A file
 * without valid xattrs gets a synthesized revision, the hex of (mtime ns,
 * size, inode), which changes whenever the file does, and no hash in
 * listings; stat computes its hash and caches it in the xattrs (stamped
 * with the values the hash was computed under), download computes it as a
 * side effect of a whole-file copy. If the filesystem keeps no user xattrs,
 * every revision is synthesized. Uploads give the file's mtime a random
 * nanosecond part (only seconds are part of the interface), so even a
 * synthesized revision changes on every upload although the inode number
 * of a replaced file may be reused.
 *
 * Uploads are written to a hidden temporary file in the destination folder
 * (".huracanfs-tmp.XXXXXX", never listed), fsynced, stamped, and renamed
 * into place, so a reader sees the old or the new file, never a mix. An
 * upload with a parent_rev compares and renames under commit_lock, which
 * makes the compare-and-swap atomic against this process's other threads
 * (not against hand edits, which the local remote cannot prevent).
 *
 * Listings read the whole folder, sort the names bytewise and return the
 * names after the cursor, which is "n:" followed by the last name returned
 * (or "n:" alone for the start). A cursor is thus self-contained and stays
 * valid whatever happens to the folder between calls.
 *
 * Symbolic links, devices and other special files are not part of the
 * remote: they are not listed, and stat and download say -ENOENT for them.
 *
 * Case. Like Dropbox, the remote is case-insensitive and case-preserving
 * (names compared by fold.h): local_full_path() resolves each component of a
 * remote path to the local entry of exactly that name or, failing that,
 * to the one whose name folds alike; stat and download report the stored
 * spelling. A local folder edited by hand may hold two names that fold
 * alike: the exact one wins, and listings show both.
 */
#include "backend_local_i.h"

static const struct backend_ops local_ops;

struct local_backend *local_lb_of(struct backend *be)
{
	return (struct local_backend *)be;
}

/*
 * Returns 0 if the root is a directory we may search and read (and write,
 * if @write), else -EAGAIN with the reason as the error detail.
 */
int local_root_check(struct local_backend *lb, bool write)
{
	struct stat st;
	int mode = R_OK | X_OK | (write ? W_OK : 0);

	if (stat(lb->root, &st) < 0) {
		backend_set_error("remote unavailable: %s: %s", lb->root,
				  strerror(errno));
		return -EAGAIN;
	}
	if (!S_ISDIR(st.st_mode)) {
		backend_set_error("remote unavailable: %s: not a directory",
				  lb->root);
		return -EAGAIN;
	}
	if (faccessat(AT_FDCWD, lb->root, mode, AT_EACCESS) < 0) {
		backend_set_error("remote unavailable: %s: %s", lb->root,
				  strerror(errno));
		return -EAGAIN;
	}
	return 0;
}

/*
 * Translates errno @e of a failed call about remote @path, once, here. A
 * failure while the root is unavailable is -EAGAIN whatever @e says.
 */
int local_err(struct local_backend *lb, int e, bool write, const char *what,
	      const char *path)
{
	int rc;

	rc = local_root_check(lb, write);
	if (rc < 0)
		return rc;
	backend_set_error("%s \"%s\": %s", what, path, strerror(e));
	switch (e) {
	case ENOTCONN:
	case ESTALE:
	case ETIMEDOUT:
	case EHOSTDOWN:
	case EHOSTUNREACH:
	case ENETDOWN:
	case ENETUNREACH:
		return -EAGAIN;
	case EDQUOT:
		return -ENOSPC;
	case 0:
		return -EIO;
	default:
		return -e;
	}
}

static bool is_tmp_name(const char *name)
{
	return strncmp(name, LOCAL_TMP_PREFIX, strlen(LOCAL_TMP_PREFIX)) == 0;
}

bool local_name_ok(const char *name)
{
	return backend_name_ok(name) && !is_tmp_name(name);
}

/* The last component of a valid remote path. */
const char *local_path_base(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

/* Returns "@a/@b" (malloc'd) in *@out, or -ENOMEM / -ENAMETOOLONG. */
int local_join(const char *a, const char *b, char **out)
{
	size_t la = strlen(a), lb = strlen(b);
	char *s;

	if (la + 1 + lb >= PATH_MAX)
		return -ENAMETOOLONG;
	s = malloc(la + 1 + lb + 1);
	if (!s)
		return -ENOMEM;
	memcpy(s, a, la);
	s[la] = '/';
	memcpy(s + la + 1, b, lb + 1);
	*out = s;
	return 0;
}

/* "" (with @allow_root) or "/c1/c2..." of names this backend accepts. */
static bool path_ok(const char *path, bool allow_root)
{
	return backend_path_ok(path, allow_root, local_name_ok);
}

/*
 * The name in local folder @dir of the entry that remote component @name
 * (@len bytes) names when no entry has exactly that name: the one whose
 * name folds alike (the smallest such name, bytewise, if several do; the
 * remote of this backend can be edited by hand). Copied to @found (up to
 * BACKEND_NAME_MAX + 1 bytes); false if there is none.
 */
static bool find_folded(const char *dir, const char *name, size_t len,
			char found[BACKEND_NAME_MAX + 1])
{
	DIR *d = opendir(dir);
	struct dirent *de;
	bool hit = false;

	if (!d)
		return false;
	while ((de = readdir(d))) {
		if (!local_name_ok(de->d_name) ||
		    !fold_equal_n(de->d_name, strlen(de->d_name), name, len))
			continue;
		if (!hit || strcmp(de->d_name, found) < 0)
			snprintf(found, BACKEND_NAME_MAX + 1, "%s", de->d_name);
		hit = true;
	}
	closedir(d);
	return hit;
}

/*
 * Returns the local path of remote @path (malloc'd) in *@out.
 *
 * Names are matched the way Dropbox matches them (fold.h): a component
 * with no local entry of exactly its name names the entry that folds
 * alike, so "/data/x" is "Data/x" where "Data" exists; components below
 * the first one that names nothing keep the caller's spelling (that of a
 * new entry). The match is looked up at each call: the local remote may
 * change under us.
 */
int local_full_path(struct local_backend *lb, const char *path, bool allow_root,
		    char **out)
{
	char found[BACKEND_NAME_MAX + 1];
	const char *p, *end;
	bool exists = true;
	size_t pos, len;
	struct stat st;
	char *s;

	if (!path_ok(path, allow_root)) {
		backend_set_error("invalid remote path \"%s\"",
				  path ? path : "(null)");
		return -EINVAL;
	}
	if (strlen(lb->root) + strlen(path) >= PATH_MAX) {
		backend_set_error("remote path too long: \"%s\"", path);
		return -ENAMETOOLONG;
	}
	s = malloc(PATH_MAX);
	if (!s)
		return -ENOMEM;
	pos = (size_t)snprintf(s, PATH_MAX, "%s", lb->root);
	for (p = path; *p; p = end) {
		p++; /* the '/' */
		end = strchr(p, '/');
		if (!end)
			end = p + strlen(p);
		len = (size_t)(end - p);
		if (pos + 1 + len >= PATH_MAX)
			goto too_long;
		s[pos] = '/';
		memcpy(s + pos + 1, p, len);
		s[pos + 1 + len] = '\0';
		if (exists && lstat(s, &st) < 0 && errno == ENOENT) {
			s[pos] = '\0';
			exists = find_folded(s, p, len, found);
			s[pos] = '/';
			if (exists) {
				len = strlen(found);
				if (pos + 1 + len >= PATH_MAX)
					goto too_long;
				memcpy(s + pos + 1, found, len + 1);
			}
		}
		pos += 1 + len;
	}
	*out = s;
	return 0;
too_long:
	free(s);
	backend_set_error("remote path too long: \"%s\"", path);
	return -ENAMETOOLONG;
}

/* The local folder that holds remote @path (malloc'd) in *@out. */
int local_parent_full_path(struct local_backend *lb, const char *path,
			   char **out)
{
	char *s;
	int rc;

	rc = local_full_path(lb, path, false, &s);
	if (rc < 0)
		return rc;
	*strrchr(s, '/') = '\0';
	*out = s;
	return 0;
}

/*
 * Creates the folders above remote @path (mkdir -p), below the root: the
 * root itself is never created here.
 */
int local_make_parents(struct local_backend *lb, const char *path)
{
	struct stat st;
	char *full, *p, *slash;
	int rc = 0;

	rc = local_full_path(lb, path, false, &full);
	if (rc < 0)
		return rc;
	p = full + strlen(lb->root) + 1;
	while ((slash = strchr(p, '/'))) {
		*slash = '\0';
		if (mkdir(full, 0700) < 0 && errno != EEXIST) {
			rc = local_err(lb, errno, true, "mkdir",
				       full + strlen(lb->root));
			goto out;
		}
		if (stat(full, &st) < 0) {
			rc = local_err(lb, errno, true, "stat",
				       full + strlen(lb->root));
			goto out;
		}
		if (!S_ISDIR(st.st_mode)) {
			rc = local_err(lb, ENOTDIR, true, "mkdir",
				       full + strlen(lb->root));
			goto out;
		}
		*slash = '/';
		p = slash + 1;
	}
out:
	free(full);
	return rc;
}

static int64_t mtime_ns(const struct stat *st)
{
	return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

bool local_same_stamp(const struct stat *a, const struct stat *b)
{
	return mtime_ns(a) == mtime_ns(b) && a->st_size == b->st_size;
}

void local_synth_rev(const struct stat *st, char rev[BACKEND_REV_MAX + 1])
{
	snprintf(rev, BACKEND_REV_MAX + 1,
		 "%016" PRIx64 "%016" PRIx64 "%016" PRIx64,
		 (uint64_t)mtime_ns(st), (uint64_t)st->st_size,
		 (uint64_t)st->st_ino);
}

uint64_t local_rand64(void)
{
	struct timespec ts;
	uint64_t r;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) == (ssize_t)sizeof(r))
		return r;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((uint64_t)gettid() << 40) ^ ((uint64_t)ts.tv_sec << 30) ^
	       (uint64_t)ts.tv_nsec;
}

/* A fresh revision for an upload: time in ns, then 64 random bits. */
void local_new_rev(char rev[BACKEND_REV_MAX + 1])
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(rev, BACKEND_REV_MAX + 1, "%016" PRIx64 "%016" PRIx64,
		 (uint64_t)ts.tv_sec * 1000000000 + (uint64_t)ts.tv_nsec,
		 local_rand64());
}

static bool xattr_absent(int e)
{
	return e == ENODATA || e == ENOTSUP || e == ERANGE;
}

/* Reads xattr @name of @fd (or of @full if @fd < 0) into @buf as a string. */
static ssize_t get_xattr(int fd, const char *full, const char *name, char *buf,
			 size_t len)
{
	ssize_t n;

	if (fd >= 0)
		n = fgetxattr(fd, name, buf, len - 1);
	else
		n = lgetxattr(full, name, buf, len - 1);
	if (n >= 0)
		buf[n] = '\0';
	return n;
}

/* Parses "<rev> <mtime ns> <size>"; true if well-formed and matching @st. */
static bool parse_rev_xattr(const char *val, const struct stat *st,
			    char rev[BACKEND_REV_MAX + 1])
{
	size_t len = strspn(val, "0123456789abcdef");
	long long ns;
	unsigned long long size;
	char *end;

	if (len == 0 || len > BACKEND_REV_MAX || val[len] != ' ')
		return false;
	errno = 0;
	ns = strtoll(val + len + 1, &end, 10);
	if (errno || *end != ' ' || end == val + len + 1)
		return false;
	size = strtoull(end + 1, &end, 10);
	if (errno || *end != '\0')
		return false;
	if (ns != mtime_ns(st) || size != (unsigned long long)st->st_size)
		return false;
	memcpy(rev, val, len);
	rev[len] = '\0';
	return true;
}

/*
 * Fills @m for the regular file @st describes, reading its xattrs from @fd
 * (or from @full if @fd < 0). Returns 0, or -errno for a failure other
 * than "no such xattr" (untranslated: the caller passes it to local_err).
 */
int local_read_meta(int fd, const char *full, const struct stat *st,
		    struct local_meta *m)
{
	char val[BACKEND_REV_MAX + 64];
	char hex[CHASH_HEXLEN + 2];
	ssize_t n;

	memset(m, 0, sizeof(*m));
	n = get_xattr(fd, full, LOCAL_XATTR_REV, val, sizeof(val));
	if (n < 0 && !xattr_absent(errno))
		return -errno;
	if (n > 0 && parse_rev_xattr(val, st, m->rev)) {
		m->rev_stored = true;
		n = get_xattr(fd, full, LOCAL_XATTR_HASH, hex, sizeof(hex));
		if (n < 0 && !xattr_absent(errno))
			return -errno;
		if (n == CHASH_HEXLEN && chash_from_hex(hex, m->hash) == 0)
			m->has_hash = true;
	}
	if (!m->rev_stored)
		local_synth_rev(st, m->rev);
	return 0;
}

/*
 * Stores @rev and @hash on @fd, stamped with @st (taken after the last
 * change of data and mtime). The hash goes first: until the rev is
 * written, a stale or absent rev makes readers ignore it. Returns 0,
 * -ENOTSUP if the filesystem keeps no user xattrs, or -errno.
 */
int local_write_meta(int fd, const struct stat *st, const char *rev,
		     const uint8_t hash[CHASH_LEN])
{
	char val[BACKEND_REV_MAX + 64];
	char hex[CHASH_HEXLEN + 1];
	int len;

	chash_to_hex(hash, hex);
	if (fsetxattr(fd, LOCAL_XATTR_HASH, hex, CHASH_HEXLEN, 0) < 0)
		return errno == EOPNOTSUPP ? -ENOTSUP : -errno;
	len = snprintf(val, sizeof(val), "%s %" PRId64 " %llu", rev,
		       mtime_ns(st), (unsigned long long)st->st_size);
	if (fsetxattr(fd, LOCAL_XATTR_REV, val, (size_t)len, 0) < 0)
		return errno == EOPNOTSUPP ? -ENOTSUP : -errno;
	return 0;
}

void local_fill_file(struct backend_entry *out, const char *name,
		     const struct stat *st, const struct local_meta *m)
{
	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", name);
	out->is_dir = false;
	out->size = (uint64_t)st->st_size;
	out->mtime = st->st_mtim.tv_sec;
	memcpy(out->rev, m->rev, sizeof(out->rev));
	out->has_hash = m->has_hash;
	if (m->has_hash)
		memcpy(out->hash, m->hash, CHASH_LEN);
}

static void fill_dir(struct backend_entry *out, const char *name)
{
	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", name);
	out->is_dir = true;
}

/* Writes all of @buf to @fd at @off. Returns 0 or -errno. */
static int pwrite_all(int fd, const uint8_t *buf, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, buf, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		buf += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* Errors of copy_file_range that say "not here": copy through a buffer. */
static bool no_kernel_copy(int e)
{
	return e == EXDEV || e == ENOSYS || e == EINVAL || e == EOPNOTSUPP;
}

int local_copy_bytes(int src, uint64_t off, int dst, uint64_t dst_off,
		     uint64_t len, struct chash *h, uint64_t *copied,
		     bool *write_failed)
{
	uint8_t *buf = NULL;
	bool kernel = h == NULL;
	uint64_t done = 0;
	int rc = 0;

	*write_failed = false;
	while (done < len) {
		size_t want = len - done < LOCAL_BUF ? (size_t)(len - done)
						     : LOCAL_BUF;
		ssize_t n;

		if (kernel) {
			loff_t in = (loff_t)(off + done);
			loff_t out = (loff_t)(dst_off + done);
			n = copy_file_range(src, &in, dst, &out, want, 0);
			if (n < 0 && no_kernel_copy(errno)) {
				kernel = false;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				rc = -errno;
				*write_failed =
					errno == ENOSPC || errno == EDQUOT ||
					errno == EFBIG || errno == EROFS;
				break;
			}
		} else {
			if (!buf && !(buf = malloc(LOCAL_BUF))) {
				rc = -ENOMEM;
				break;
			}
			n = pread(src, buf, want, (off_t)(off + done));
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				rc = -errno;
				break;
			}
			if (n > 0 && h) {
				rc = chash_update(h, buf, (size_t)n);
				if (rc < 0)
					break;
			}
			if (n > 0) {
				rc = pwrite_all(dst, buf, (size_t)n,
						dst_off + done);
				if (rc < 0) {
					*write_failed = true;
					break;
				}
			}
		}
		if (n == 0)
			break; /* the end of @src */
		done += (uint64_t)n;
	}
	free(buf);
	*copied = done;
	return rc;
}

/* Opens a fresh hidden temporary file in local folder @dir. */
int local_open_tmp(const char *dir, char **tmp_out)
{
	char *tmp;
	int rc, fd;

	rc = local_join(dir, LOCAL_TMP_PREFIX "XXXXXX", &tmp);
	if (rc < 0)
		return rc;
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		free(tmp);
		return rc;
	}
	*tmp_out = tmp;
	return fd;
}

/*
 * rename(2) that never replaces @dst: -EEXIST if it exists. Where the
 * filesystem lacks RENAME_NOREPLACE, checks first and accepts the window.
 */
int local_rename_noreplace(const char *src, const char *dst)
{
	struct stat st;

	if (renameat2(AT_FDCWD, src, AT_FDCWD, dst, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -errno;
	if (lstat(dst, &st) == 0)
		return -EEXIST;
	if (errno != ENOENT)
		return -errno;
	if (rename(src, dst) < 0)
		return -errno;
	return 0;
}

static int local_probe(struct backend *be)
{
	return local_root_check(local_lb_of(be), true);
}

/* Frees @n strings of @v and @v. */
static void free_names(char **v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Reads the names of local folder @full that are valid and sort after
 * @after (NULL: all), unsorted, into *@names_out / *@n_out.
 */
static int read_names(struct local_backend *lb, const char *full,
		      const char *path, const char *after, char ***names_out,
		      size_t *n_out)
{
	char **v = NULL, **nv;
	size_t n = 0, cap = 0;
	struct dirent *d;
	DIR *dir;
	int rc = 0;

	dir = opendir(full);
	if (!dir)
		return local_err(lb, errno, false, "list", path);
	for (;;) {
		errno = 0;
		d = readdir(dir);
		if (!d) {
			if (errno)
				rc = local_err(lb, errno, false, "list", path);
			break;
		}
		if (d->d_type != DT_UNKNOWN && d->d_type != DT_REG &&
		    d->d_type != DT_DIR)
			continue;
		if (!local_name_ok(d->d_name))
			continue;
		if (after && strcmp(d->d_name, after) <= 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				rc = -ENOMEM;
				break;
			}
			v = nv;
		}
		v[n] = strdup(d->d_name);
		if (!v[n]) {
			rc = -ENOMEM;
			break;
		}
		n++;
	}
	closedir(dir);
	if (rc < 0) {
		free_names(v, n);
		return rc;
	}
	*names_out = v;
	*n_out = n;
	return 0;
}

/*
 * Fills @out for name @name in local folder @dir. Returns 1 if it is a
 * file or folder, 0 if it is to be skipped (gone, or something else), or
 * -errno.
 */
static int list_one(struct local_backend *lb, const char *dir, const char *path,
		    const char *name, struct backend_entry *out)
{
	struct local_meta m;
	struct stat st;
	char *full;
	int rc;

	rc = local_join(dir, name, &full);
	if (rc < 0)
		return rc;
	if (lstat(full, &st) < 0) {
		rc = errno == ENOENT ? 0 : -errno;
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		fill_dir(out, name);
		rc = 1;
	} else if (S_ISREG(st.st_mode)) {
		rc = local_read_meta(-1, full, &st, &m);
		if (rc < 0)
			goto out;
		local_fill_file(out, name, &st, &m);
		rc = 1;
	} else {
		rc = 0;
	}
out:
	free(full);
	if (rc < 0)
		rc = local_err(lb, -rc, false, "list", path);
	return rc;
}

static int local_list(struct backend *be, const char *path, const char *cursor,
		      struct backend_page *page)
{
	struct local_backend *lb = local_lb_of(be);
	struct backend_entry *entries = NULL, probe;
	const char *after = NULL, *last = NULL;
	char **names = NULL;
	char *full = NULL, *next = NULL;
	size_t n_names = 0, n = 0, i;
	bool has_more = false;
	int rc;

	rc = local_full_path(lb, path, true, &full);
	if (rc < 0)
		goto out;
	if (cursor) {
		if (strncmp(cursor, LOCAL_CURSOR_TAG,
			    strlen(LOCAL_CURSOR_TAG)) != 0) {
			backend_set_error("invalid list cursor");
			rc = -EINVAL;
			goto out;
		}
		after = cursor + strlen(LOCAL_CURSOR_TAG);
		if (after[0] == '\0')
			after = NULL;
	}
	rc = local_root_check(lb, false);
	if (rc < 0)
		goto out;
	rc = read_names(lb, full, path, after, &names, &n_names);
	if (rc < 0)
		goto out;
	if (n_names > 1)
		qsort(names, n_names, sizeof(*names), cmp_names);
	entries = calloc(n_names < lb->page_size ? n_names + 1 : lb->page_size,
			 sizeof(*entries));
	if (!entries) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n_names; i++) {
		struct backend_entry *e =
			n < lb->page_size ? &entries[n] : &probe;

		rc = list_one(lb, full, path, names[i], e);
		if (rc < 0)
			goto out;
		if (rc == 0)
			continue;
		if (e == &probe) {
			has_more = true;
			break;
		}
		last = names[i];
		n++;
	}
	rc = 0;
	if (last) {
		if (asprintf(&next, "%s%s", LOCAL_CURSOR_TAG, last) < 0)
			next = NULL;
	} else {
		next = strdup(cursor ? cursor : LOCAL_CURSOR_TAG);
	}
	if (!next) {
		rc = -ENOMEM;
		goto out;
	}
	page->entries = entries;
	page->n = n;
	page->cursor = next;
	page->has_more = has_more;
	entries = NULL;
out:
	free(entries);
	free_names(names, n_names);
	free(full);
	return rc;
}

/*
 * Computes the hash of regular file @full and caches it in its xattrs.
 * @m and @st are updated to what was hashed. Retries if the file changes
 * while it is read.
 */
static int hash_file(struct local_backend *lb, const char *full,
		     const char *path, struct stat *st, struct local_meta *m)
{
	struct stat st1;
	int fd = -1, rc = 0, tries;

	fd = open(full, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		if (errno == EACCES || errno == EPERM)
			return 0; /* the metadata stands without a hash */
		if (errno == ELOOP)
			errno = ENOENT;
		return local_err(lb, errno, false, "open", path);
	}
	for (tries = 0; tries < LOCAL_STAT_TRIES; tries++) {
		if (fstat(fd, st) < 0) {
			rc = local_err(lb, errno, false, "stat", path);
			goto out;
		}
		if (!S_ISREG(st->st_mode)) {
			rc = local_err(lb, ENOENT, false, "stat", path);
			goto out;
		}
		rc = local_read_meta(fd, NULL, st, m);
		if (rc < 0) {
			rc = local_err(lb, -rc, false, "read xattrs of", path);
			goto out;
		}
		if (m->has_hash)
			goto out;
		rc = chash_fd(fd, m->hash, NULL);
		if (rc < 0) {
			rc = local_err(lb, -rc, false, "hash", path);
			goto out;
		}
		if (fstat(fd, &st1) < 0) {
			rc = local_err(lb, errno, false, "stat", path);
			goto out;
		}
		if (local_same_stamp(st, &st1)) {
			m->has_hash = true;
			/* A cache: failing to store it is harmless. */
			local_write_meta(fd, st, m->rev, m->hash);
			goto out;
		}
	}
	backend_set_error("\"%s\" keeps changing while it is hashed", path);
	rc = -EAGAIN;
out:
	close(fd);
	return rc;
}

static int local_stat(struct backend *be, const char *path,
		      struct backend_entry *out)
{
	struct local_backend *lb = local_lb_of(be);
	struct local_meta m;
	struct stat st;
	char *full = NULL;
	int rc;

	rc = local_full_path(lb, path, false, &full);
	if (rc < 0)
		goto out;
	rc = local_root_check(lb, false);
	if (rc < 0)
		goto out;
	if (lstat(full, &st) < 0) {
		rc = local_err(lb, errno, false, "stat", path);
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		fill_dir(out, local_path_base(full)); /* the stored spelling */
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = local_err(lb, ENOENT, false, "stat", path);
		goto out;
	}
	rc = local_read_meta(-1, full, &st, &m);
	if (rc < 0) {
		rc = local_err(lb, -rc, false, "read xattrs of", path);
		goto out;
	}
	if (!m.has_hash) {
		rc = hash_file(lb, full, path, &st, &m);
		if (rc < 0)
			goto out;
	}
	local_fill_file(out, local_path_base(full), &st, &m);
out:
	free(full);
	return rc;
}

static int local_space(struct backend *be, uint64_t *used, uint64_t *total)
{
	struct local_backend *lb = local_lb_of(be);
	struct statvfs sv;
	int rc;

	rc = local_root_check(lb, false);
	if (rc < 0)
		return rc;
	if (statvfs(lb->root, &sv) < 0)
		return local_err(lb, errno, false, "statvfs", "");
	*used = (uint64_t)(sv.f_blocks - sv.f_bfree) * sv.f_frsize;
	*total = (uint64_t)sv.f_blocks * sv.f_frsize;
	return 0;
}

static void local_destroy(struct backend *be)
{
	struct local_backend *lb = local_lb_of(be);

	if (!lb)
		return;
	pthread_mutex_destroy(&lb->commit_lock);
	free(lb->root);
	free(lb);
}

static const struct backend_ops local_ops = {
	.name = "local",
	.probe = local_probe,
	.list = local_list,
	.stat = local_stat,
	.download = local_download,
	.upload = local_upload,
	.mkdir = local_mkdir,
	.remove = local_remove,
	.remove_batch = local_remove_batch,
	.move = local_move,
	.copy = local_copy,
	.space = local_space,
	.destroy = local_destroy,
};

/* Returns @root made absolute (against the current directory, without
 * resolving symbolic links) and without trailing slashes, malloc'd. */
static int absolute_root(const char *root, char **out)
{
	char cwd[PATH_MAX];
	size_t len;
	char *s;

	if (root[0] == '/') {
		s = strdup(root);
	} else {
		if (!getcwd(cwd, sizeof(cwd)))
			return -errno;
		if (asprintf(&s, "%s/%s", cwd, root) < 0)
			s = NULL;
	}
	if (!s)
		return -ENOMEM;
	len = strlen(s);
	while (len > 1 && s[len - 1] == '/')
		s[--len] = '\0';
	if (len >= PATH_MAX) {
		free(s);
		return -ENAMETOOLONG;
	}
	*out = s;
	return 0;
}

/* mkdir -p @dir, creating what is missing with mode 0700. */
static int mkdir_p(char *dir)
{
	struct stat st;
	char *slash;

	for (slash = strchr(dir + 1, '/'); slash;
	     slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
			int e = errno;

			*slash = '/';
			return -e;
		}
		*slash = '/';
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	if (stat(dir, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	return 0;
}

int backend_local_create(const char *root, struct backend **out)
{
	return backend_local_open(root, true, out);
}

int backend_local_open(const char *root, bool create_root, struct backend **out)
{
	struct local_backend *lb;
	int rc;

	if (!root || !root[0]) {
		backend_set_error("no remote_dir configured");
		return -EINVAL;
	}
	lb = calloc(1, sizeof(*lb));
	if (!lb)
		return -ENOMEM;
	rc = absolute_root(root, &lb->root);
	if (rc < 0) {
		backend_set_error("remote_dir %s: %s", root, strerror(-rc));
		goto fail_root;
	}
	if (create_root) {
		rc = mkdir_p(lb->root);
	} else {
		/* Missing now (an unmounted share?): do not make an empty
		 * one, whose listing would say every file is gone. The ops
		 * report the remote unavailable until it is back. */
		struct stat st;
		rc = 0;
		if (stat(lb->root, &st) == 0 && !S_ISDIR(st.st_mode))
			rc = -ENOTDIR;
	}
	if (rc < 0) {
		backend_set_error("cannot create %s: %s", lb->root,
				  strerror(-rc));
		goto fail_mkdir;
	}
	rc = -pthread_mutex_init(&lb->commit_lock, NULL);
	if (rc < 0)
		goto fail_mkdir;
	lb->base.ops = &local_ops;
	lb->page_size = LOCAL_PAGE_DEFAULT;
	*out = &lb->base;
	return 0;

fail_mkdir:
	free(lb->root);
fail_root:
	free(lb);
	return rc;
}

void backend_local_set_page_size(struct backend *be, size_t n)
{
	struct local_backend *lb;

	if (!be || be->ops != &local_ops)
		return;
	lb = local_lb_of(be);
	if (n == 0 || n > LOCAL_PAGE_DEFAULT)
		n = LOCAL_PAGE_DEFAULT;
	lb->page_size = n;
}

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
 * (names compared by fold.h): full_path() resolves each component of a
 * remote path to the local entry of exactly that name or, failing that,
 * to the one whose name folds alike; stat and download report the stored
 * spelling. A local folder edited by hand may hold two names that fold
 * alike: the exact one wins, and listings show both.
 */
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

static const struct backend_ops local_ops;

static struct local_backend *lb_of(struct backend *be)
{
	return (struct local_backend *)be;
}

/*
 * Returns 0 if the root is a directory we may search and read (and write,
 * if @write), else -EAGAIN with the reason as the error detail.
 */
static int root_check(struct local_backend *lb, bool write)
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
static int local_err(struct local_backend *lb, int e, bool write,
		     const char *what, const char *path)
{
	int rc;

	rc = root_check(lb, write);
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

static bool local_name_ok(const char *name)
{
	return backend_name_ok(name) && !is_tmp_name(name);
}

/* The last component of a valid remote path. */
static const char *path_base(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

/* Returns "@a/@b" (malloc'd) in *@out, or -ENOMEM / -ENAMETOOLONG. */
static int join(const char *a, const char *b, char **out)
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
static int full_path(struct local_backend *lb, const char *path,
		     bool allow_root, char **out)
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
static int parent_full_path(struct local_backend *lb, const char *path,
			    char **out)
{
	char *s;
	int rc;

	rc = full_path(lb, path, false, &s);
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
static int make_parents(struct local_backend *lb, const char *path)
{
	struct stat st;
	char *full, *p, *slash;
	int rc = 0;

	rc = full_path(lb, path, false, &full);
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

static bool same_stamp(const struct stat *a, const struct stat *b)
{
	return mtime_ns(a) == mtime_ns(b) && a->st_size == b->st_size;
}

static void synth_rev(const struct stat *st, char rev[BACKEND_REV_MAX + 1])
{
	snprintf(rev, BACKEND_REV_MAX + 1,
		 "%016" PRIx64 "%016" PRIx64 "%016" PRIx64,
		 (uint64_t)mtime_ns(st), (uint64_t)st->st_size,
		 (uint64_t)st->st_ino);
}

static uint64_t rand64(void)
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
static void new_rev(char rev[BACKEND_REV_MAX + 1])
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(rev, BACKEND_REV_MAX + 1, "%016" PRIx64 "%016" PRIx64,
		 (uint64_t)ts.tv_sec * 1000000000 + (uint64_t)ts.tv_nsec,
		 rand64());
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
static int read_meta(int fd, const char *full, const struct stat *st,
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
		synth_rev(st, m->rev);
	return 0;
}

/*
 * Stores @rev and @hash on @fd, stamped with @st (taken after the last
 * change of data and mtime). The hash goes first: until the rev is
 * written, a stale or absent rev makes readers ignore it. Returns 0,
 * -ENOTSUP if the filesystem keeps no user xattrs, or -errno.
 */
static int write_meta(int fd, const struct stat *st, const char *rev,
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

static void fill_file(struct backend_entry *out, const char *name,
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
	ssize_t n;

	while (len > 0) {
		n = pwrite(fd, buf, len, (off_t)off);
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

/* Opens a fresh hidden temporary file in local folder @dir. */
static int open_tmp(const char *dir, char **tmp_out)
{
	char *tmp;
	int rc, fd;

	rc = join(dir, LOCAL_TMP_PREFIX "XXXXXX", &tmp);
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
static int rename_noreplace(const char *src, const char *dst)
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
	return root_check(lb_of(be), true);
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

	rc = join(dir, name, &full);
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
		rc = read_meta(-1, full, &st, &m);
		if (rc < 0)
			goto out;
		fill_file(out, name, &st, &m);
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
	struct local_backend *lb = lb_of(be);
	struct backend_entry *entries = NULL, probe;
	const char *after = NULL, *last = NULL;
	char **names = NULL;
	char *full = NULL, *next = NULL;
	size_t n_names = 0, n = 0, i;
	bool has_more = false;
	int rc;

	rc = full_path(lb, path, true, &full);
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
	rc = root_check(lb, false);
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
		rc = read_meta(fd, NULL, st, m);
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
		if (same_stamp(st, &st1)) {
			m->has_hash = true;
			/* A cache: failing to store it is harmless. */
			write_meta(fd, st, m->rev, m->hash);
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
	struct local_backend *lb = lb_of(be);
	struct local_meta m;
	struct stat st;
	char *full = NULL;
	int rc;

	rc = full_path(lb, path, false, &full);
	if (rc < 0)
		goto out;
	rc = root_check(lb, false);
	if (rc < 0)
		goto out;
	if (lstat(full, &st) < 0) {
		rc = local_err(lb, errno, false, "stat", path);
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		fill_dir(out, path_base(full)); /* the stored spelling */
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = local_err(lb, ENOENT, false, "stat", path);
		goto out;
	}
	rc = read_meta(-1, full, &st, &m);
	if (rc < 0) {
		rc = local_err(lb, -rc, false, "read xattrs of", path);
		goto out;
	}
	if (!m.has_hash) {
		rc = hash_file(lb, full, path, &st, &m);
		if (rc < 0)
			goto out;
	}
	fill_file(out, path_base(full), &st, &m);
out:
	free(full);
	return rc;
}

static int local_download(struct backend *be, const char *path, const char *rev,
			  uint64_t off, uint64_t len, int fd, uint64_t *got,
			  struct backend_entry *out)
{
	struct local_backend *lb = lb_of(be);
	struct chash h = {0};
	struct local_meta m;
	struct stat st0, st1;
	uint8_t hash[CHASH_LEN];
	uint8_t *buf = NULL;
	uint64_t size, end, pos;
	char *full = NULL;
	bool whole;
	int sfd = -1, rc;
	ssize_t n;

	rc = full_path(lb, path, true, &full);
	if (rc < 0)
		goto out;
	rc = root_check(lb, false);
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
	rc = read_meta(sfd, NULL, &st0, &m);
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
	buf = malloc(LOCAL_BUF);
	if (!buf) {
		rc = -ENOMEM;
		goto out;
	}
	for (pos = off; pos < end; pos += (uint64_t)n) {
		size_t want =
			end - pos < LOCAL_BUF ? (size_t)(end - pos) : LOCAL_BUF;

		n = pread(sfd, buf, want, (off_t)pos);
		if (n < 0 && errno == EINTR) {
			n = 0;
			continue;
		}
		if (n < 0) {
			rc = local_err(lb, errno, false, "read", path);
			goto out;
		}
		if (n == 0)
			break; /* it shrank; caught below */
		if (whole) {
			rc = chash_update(&h, buf, (size_t)n);
			if (rc < 0)
				goto out;
		}
		rc = pwrite_all(fd, buf, (size_t)n, pos);
		if (rc < 0) {
			backend_set_error("writing the download of \"%s\": %s",
					  path, strerror(-rc));
			goto out;
		}
	}
	if (fstat(sfd, &st1) < 0) {
		rc = local_err(lb, errno, false, "stat", path);
		goto out;
	}
	if (pos != end || !same_stamp(&st0, &st1)) {
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
		fill_file(out, path_base(full), &st0, &m);
	rc = 0;
out:
	chash_release(&h);
	free(buf);
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
	uint8_t *buf;
	uint64_t pos = 0;
	ssize_t n;
	int rc;

	buf = malloc(LOCAL_BUF);
	if (!buf)
		return -ENOMEM;
	rc = chash_init(&h);
	if (rc < 0)
		goto out;
	while (pos < up->size) {
		size_t want = up->size - pos < LOCAL_BUF
				      ? (size_t)(up->size - pos)
				      : LOCAL_BUF;

		n = pread(up->fd, buf, want, (off_t)pos);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			backend_set_error(
				"reading the upload source of \"%s\": %s",
				up->path,
				n < 0 ? strerror(-rc)
				      : "shorter than the size given");
			goto out;
		}
		rc = chash_update(&h, buf, (size_t)n);
		if (rc < 0)
			goto out;
		rc = pwrite_all(fd, buf, (size_t)n, pos);
		if (rc < 0) {
			rc = local_err(lb, -rc, true, "write", up->path);
			goto out;
		}
		pos += (uint64_t)n;
	}
	rc = chash_final(&h, hash);
out:
	chash_release(&h);
	free(buf);
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

	rc = parent_full_path(lb, path, &dir);
	if (rc < 0)
		return rc;
	for (i = 1; i <= LOCAL_CONFLICT_MAX; i++) {
		conflict_name(path_base(path), i, name);
		rc = join(dir, name, &dst);
		if (rc < 0)
			goto out;
		rc = rename_noreplace(tmp, dst);
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
	rc = read_meta(-1, full, &st, &m);
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

	snprintf(name, BACKEND_NAME_MAX + 1, "%s", path_base(up->path));
	if (!up->parent_rev) {
		if (rename(tmp, full) < 0)
			return local_err(lb, errno, true, "upload", up->path);
		return 0;
	}

	pthread_mutex_lock(&lb->commit_lock);
	kind = current_rev(full, cur);
	if (kind == 0)
		rc = rename_noreplace(tmp, full);
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

static int local_upload(struct backend *be, const struct backend_upload *up,
			struct backend_entry *out)
{
	struct local_backend *lb = lb_of(be);
	char rev[BACKEND_REV_MAX + 1];
	char name[BACKEND_NAME_MAX + 1];
	struct timespec ts[2];
	struct local_meta m;
	uint8_t hash[CHASH_LEN];
	char *full = NULL, *dir = NULL, *tmp = NULL;
	struct stat st;
	int fd = -1, rc;

	rc = full_path(lb, up->path, false, &full);
	if (rc < 0)
		goto out;
	rc = root_check(lb, true);
	if (rc < 0)
		goto out;
	rc = make_parents(lb, up->path);
	if (rc < 0)
		goto out;
	rc = parent_full_path(lb, up->path, &dir);
	if (rc < 0)
		goto out;
	fd = open_tmp(dir, &tmp);
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
	ts[1].tv_nsec = (long)(rand64() % 1000000000);
	if (futimens(fd, ts) < 0 || fstat(fd, &st) < 0) {
		rc = local_err(lb, errno, true, "set the mtime of", up->path);
		goto out;
	}
	new_rev(rev);
	rc = write_meta(fd, &st, rev, hash);
	if (rc == -ENOTSUP) {
		synth_rev(&st, rev);
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
		fill_file(out, name, &st, &m);
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

static int local_mkdir(struct backend *be, const char *path)
{
	struct local_backend *lb = lb_of(be);
	char *full = NULL;
	int rc;

	rc = full_path(lb, path, true, &full);
	if (rc < 0)
		goto out;
	rc = root_check(lb, true);
	if (rc < 0)
		goto out;
	if (path[0] == '\0') {
		backend_set_error("the root folder exists");
		rc = -EEXIST;
		goto out;
	}
	rc = make_parents(lb, path);
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

static int local_remove(struct backend *be, const char *path)
{
	struct local_backend *lb = lb_of(be);
	char *full = NULL;
	struct stat st;
	int rc;

	rc = full_path(lb, path, true, &full);
	if (rc < 0)
		goto out;
	rc = root_check(lb, true);
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

	rc = full_path(lb, path, false, &full);
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

static int local_remove_batch(struct backend *be,
			      const struct backend_delete *dels, size_t n,
			      int *rcs)
{
	struct local_backend *lb = lb_of(be);
	size_t i;
	int rc;

	rc = root_check(lb, true);
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

	rc = full_path(lb, from, false, ffrom);
	if (rc < 0)
		return rc;
	rc = full_path(lb, to, false, fto);
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
		 LOCAL_TMP_PREFIX, rand64());
	rc = join(dir, tmp_name, &tmp);
	if (rc < 0)
		goto out;
	rc = rename_noreplace(ffrom, tmp);
	if (rc < 0)
		goto out;
	rc = rename_noreplace(tmp, fto);
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
	rc = join(dir, name, out);
	free(dir);
	return rc;
}

static int local_move(struct backend *be, const char *from, const char *to)
{
	struct local_backend *lb = lb_of(be);
	char *ffrom = NULL, *fto = NULL;
	struct stat st;
	int rc;

	rc = two_paths(lb, from, to, &ffrom, &fto);
	if (rc < 0)
		goto out;
	rc = root_check(lb, true);
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
		rc = respelled(ffrom, path_base(to), &fto);
		if (rc == 0 && strcmp(ffrom, fto) != 0)
			rc = rename_case(ffrom, fto);
	} else {
		rc = make_parents(lb, to);
		if (rc < 0)
			goto out;
		rc = rename_noreplace(ffrom, fto);
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
	uint8_t *buf = NULL;
	loff_t in = 0, outoff = 0;
	bool fallback = false;
	int sfd = -1, dfd = -1, rc;
	ssize_t n;

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
	rc = read_meta(sfd, NULL, &st0, &m);
	if (rc < 0)
		goto out;
	dir = strdup(dst);
	if (!dir) {
		rc = -ENOMEM;
		goto out;
	}
	*strrchr(dir, '/') = '\0';
	dfd = open_tmp(dir, &tmp);
	if (dfd < 0) {
		rc = dfd;
		goto out;
	}
	while (in < st0.st_size) {
		size_t want = (uint64_t)(st0.st_size - in) < LOCAL_BUF
				      ? (size_t)(st0.st_size - in)
				      : LOCAL_BUF;

		if (!fallback) {
			n = copy_file_range(sfd, &in, dfd, &outoff, want, 0);
			if (n < 0 && (errno == EXDEV || errno == ENOSYS ||
				      errno == EINVAL || errno == EOPNOTSUPP)) {
				fallback = true;
				continue;
			}
		} else {
			if (!buf) {
				buf = malloc(LOCAL_BUF);
				if (!buf) {
					rc = -ENOMEM;
					goto out;
				}
			}
			n = pread(sfd, buf, want, in);
			if (n > 0) {
				rc = pwrite_all(dfd, buf, (size_t)n,
						(uint64_t)in);
				if (rc < 0)
					goto out;
				in += n;
			}
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			goto out;
		}
		if (n == 0)
			break;
	}
	if (fstat(sfd, &st1) < 0) {
		rc = -errno;
		goto out;
	}
	if (in != st0.st_size || !same_stamp(&st0, &st1)) {
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
		new_rev(rev);
		rc = write_meta(dfd, &dst_st, rev, m.hash);
		if (rc < 0 && rc != -ENOTSUP)
			goto out;
	}
	rc = close(dfd);
	dfd = -1;
	if (rc < 0) {
		rc = -errno;
		goto out;
	}
	rc = rename_noreplace(tmp, dst);
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
	free(buf);
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
		rc = join(src, de->d_name, &s);
		if (rc == 0)
			rc = join(dst, de->d_name, &d);
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

static int local_copy(struct backend *be, const char *from, const char *to)
{
	struct local_backend *lb = lb_of(be);
	char *ffrom = NULL, *fto = NULL;
	struct stat st;
	int rc;

	rc = two_paths(lb, from, to, &ffrom, &fto);
	if (rc < 0)
		goto out;
	rc = root_check(lb, true);
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
	rc = make_parents(lb, to);
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

static int local_space(struct backend *be, uint64_t *used, uint64_t *total)
{
	struct local_backend *lb = lb_of(be);
	struct statvfs sv;
	int rc;

	rc = root_check(lb, false);
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
	struct local_backend *lb = lb_of(be);

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
	lb = lb_of(be);
	if (n == 0 || n > LOCAL_PAGE_DEFAULT)
		n = LOCAL_PAGE_DEFAULT;
	lb->page_size = n;
}

/*
 * Content files. See cache.h.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "hfs/cache.h"
#include "hfs/log.h"

struct cache {
	char *dir; /* owned */
};

int cache_create(const char *dir, struct cache **out)
{
	struct cache *c = calloc(1, sizeof(*c));
	char path[PATH_MAX];
	int rc;
	if (!c)
		return -ENOMEM;
	c->dir = strdup(dir);
	if (!c->dir) {
		rc = -ENOMEM;
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/data", dir);
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		goto fail;
	}
	for (int i = 0; i < 256; i++) {
		snprintf(path, sizeof(path), "%s/data/%02x", dir, i);
		if (mkdir(path, 0700) < 0 && errno != EEXIST) {
			rc = -errno;
			goto fail;
		}
	}
	*out = c;
	return 0;
fail:
	cache_destroy(c);
	return rc;
}

void cache_destroy(struct cache *c)
{
	if (!c)
		return;
	free(c->dir);
	free(c);
}

const char *cache_dir(struct cache *c)
{
	return c->dir;
}

int cache_part_path(const char *dir, enum cache_part part, char *buf,
		    size_t len)
{
	static const char *const names[] = {
		[CACHE_INDEX] = "index",
		[CACHE_DATA] = "data",
		[CACHE_LOCK] = "lock",
		[CACHE_CONTROL] = "control.sock",
		[CACHE_SHUTDOWN] = "shutdown.json",
		[CACHE_RESERVE] = "reserve",
		[CACHE_LOG] = "huracanfs.log",
	};
	int n = snprintf(buf, len, "%s/%s", dir, names[part]);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int cache_walk(const char *dir, cache_walk_fn fn, void *arg)
{
	for (int b = 0; b < 256; b++) {
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "%s/data/%02x", dir, b);
		DIR *d = opendir(path);
		if (!d)
			continue;
		struct dirent *de;
		int rc = 0;
		while (!rc && (de = readdir(d))) {
			struct stat st;
			char *end;
			if (de->d_name[0] == '.' ||
			    fstatat(dirfd(d), de->d_name, &st,
				    AT_SYMLINK_NOFOLLOW) < 0)
				continue;
			unsigned long long ino = strtoull(de->d_name, &end, 16);
			struct cache_file f = {.st = &st};
			if (end != de->d_name && ino) {
				f.ino = ino;
				f.prev = strcmp(end, ".prev") == 0;
				f.undo = strcmp(end, ".undo") == 0;
				f.partial = strcmp(end, ".part") == 0;
				if (*end && !f.prev && !f.undo && !f.partial)
					f.ino = 0;
			}
			rc = fn(arg, &f);
		}
		closedir(d);
		if (rc)
			return rc;
	}
	return 0;
}

void cache_path(struct cache *c, uint64_t ino, char *buf)
{
	snprintf(buf, PATH_MAX, "%s/data/%02x/%llx", c->dir,
		 (unsigned)(ino & 0xff), (unsigned long long)ino);
}

int cache_open(struct cache *c, uint64_t ino, int create)
{
	char path[PATH_MAX];
	cache_path(c, ino, path);
	int fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
	return fd < 0 ? -errno : fd;
}

int cache_open_read(struct cache *c, uint64_t ino)
{
	char path[PATH_MAX];
	cache_path(c, ino, path);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOATIME);
	if (fd < 0 && errno == EPERM)
		fd = open(path, O_RDONLY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static void prev_path(struct cache *c, uint64_t ino, char *buf)
{
	snprintf(buf, PATH_MAX, "%s/data/%02x/%llx.prev", c->dir,
		 (unsigned)(ino & 0xff), (unsigned long long)ino);
}

static void undo_path(struct cache *c, uint64_t ino, char *buf)
{
	snprintf(buf, PATH_MAX, "%s/data/%02x/%llx.undo", c->dir,
		 (unsigned)(ino & 0xff), (unsigned long long)ino);
}

int cache_undo_open(struct cache *c, uint64_t ino, bool fresh)
{
	char path[PATH_MAX];
	undo_path(c, ino, path);
	int fd =
		open(path, O_RDWR | O_CREAT | O_CLOEXEC | (fresh ? O_TRUNC : 0),
		     0600);
	return fd < 0 ? -errno : fd;
}

bool cache_has_undo(struct cache *c, uint64_t ino)
{
	char path[PATH_MAX];
	undo_path(c, ino, path);
	return access(path, F_OK) == 0;
}

int cache_remove(struct cache *c, uint64_t ino)
{
	char path[PATH_MAX];
	int rc = cache_drop_prev(c, ino);
	cache_path(c, ino, path);
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return rc;
}

int cache_set_aside(struct cache *c, uint64_t ino)
{
	char path[PATH_MAX], prev[PATH_MAX];
	cache_path(c, ino, path);
	prev_path(c, ino, prev);
	if (rename(path, prev) < 0)
		return -errno;
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		int rc = -errno;
		if (rename(prev, path) < 0)
			hlog_warn("cache: cannot move \"%s\" back: %s", prev,
				  strerror(errno));
		return rc;
	}
	return fd;
}

int cache_restore_prev(struct cache *c, uint64_t ino)
{
	char path[PATH_MAX], prev[PATH_MAX];
	cache_path(c, ino, path);
	prev_path(c, ino, prev);
	return rename(prev, path) < 0 ? -errno : 0;
}

int cache_drop_prev(struct cache *c, uint64_t ino)
{
	char prev[PATH_MAX], undo[PATH_MAX];
	prev_path(c, ino, prev);
	undo_path(c, ino, undo);
	int rc = 0;
	if (unlink(prev) < 0 && errno != ENOENT)
		rc = -errno;
	if (unlink(undo) < 0 && errno != ENOENT && !rc)
		rc = -errno;
	return rc;
}

int cache_adopt_prev(struct cache *c, uint64_t from, uint64_t to)
{
	char path[PATH_MAX], prev[PATH_MAX], ufrom[PATH_MAX], uto[PATH_MAX];
	cache_path(c, from, path);
	prev_path(c, to, prev);
	if (rename(path, prev) < 0)
		return -errno;
	/* Patched since its fsync'd version: the undo records go along. */
	undo_path(c, from, ufrom);
	undo_path(c, to, uto);
	if (rename(ufrom, uto) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

bool cache_has_prev(struct cache *c, uint64_t ino)
{
	char prev[PATH_MAX];
	prev_path(c, ino, prev);
	return access(prev, F_OK) == 0;
}

int cache_tmpfile(struct cache *c)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/data", c->dir);
	int fd = open(path, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0)
		return fd;
	snprintf(path, sizeof(path), "%s/data/snap.XXXXXX", c->dir);
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	unlink(path);
	return fd;
}

int cache_open_tmp(struct cache *c, uint64_t ino)
{
	char path[PATH_MAX];
	cache_path(c, ino, path);
	strncat(path, ".part", PATH_MAX - strlen(path) - 1);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	return fd < 0 ? -errno : fd;
}

int cache_commit_tmp(struct cache *c, uint64_t ino)
{
	char path[PATH_MAX], tmp[PATH_MAX + 8];
	cache_path(c, ino, path);
	snprintf(tmp, sizeof(tmp), "%s.part", path);
	return rename(tmp, path) < 0 ? -errno : 0;
}

int cache_copy(int src, int dst, uint64_t len)
{
	loff_t in = 0, out = 0;
	while ((uint64_t)in < len) {
		ssize_t n = copy_file_range(src, &in, dst, &out,
					    (size_t)(len - (uint64_t)in), 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EXDEV || errno == ENOSYS ||
			    errno == EOPNOTSUPP || errno == EINVAL)
				goto fallback;
			return -errno;
		}
		if (n == 0)
			return -EIO; /* source shorter than @len */
	}
	return 0;
fallback:;
	char *buf = malloc(1 << 20);
	if (!buf)
		return -ENOMEM;
	int rc = 0;
	while ((uint64_t)in < len) {
		size_t want = len - (uint64_t)in > (1 << 20)
				      ? (1 << 20)
				      : (size_t)(len - (uint64_t)in);
		ssize_t n = pread(src, buf, want, in);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			break;
		}
		ssize_t w = pwrite(dst, buf, (size_t)n, out);
		if (w != n) {
			rc = w < 0 ? -errno : -EIO;
			break;
		}
		in += n;
		out += n;
	}
	free(buf);
	return rc;
}

/* The time of a use. Not UTIME_NOW: the kernel's coarse clock would give
 * uses a few milliseconds apart the same time, and eviction would pick
 * among them at random. */
static void use_time(struct timespec ts[2])
{
	clock_gettime(CLOCK_REALTIME, &ts[0]);
	ts[1].tv_sec = 0;
	ts[1].tv_nsec = UTIME_OMIT;
}

void cache_touch(struct cache *c, uint64_t ino)
{
	char path[PATH_MAX];
	struct timespec ts[2];
	use_time(ts);
	cache_path(c, ino, path);
	utimensat(AT_FDCWD, path, ts, 0); /* absent until fetched: fine */
}

void cache_touch_fd(int fd)
{
	struct timespec ts[2];
	use_time(ts);
	futimens(fd, ts);
}

int64_t cache_free_bytes(struct cache *c)
{
	struct statvfs st;
	if (statvfs(c->dir, &st) < 0)
		return -errno;
	return (int64_t)st.f_bavail * (int64_t)st.f_frsize;
}

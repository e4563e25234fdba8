/*
 * libplfs_sync.so: makes syncfs(2) and sync(2) reach plfs.
 *
 * The kernel sends FUSE_SYNCFS to virtiofs servers only, so plfs never
 * hears of a syncfs(2) or sync(2) on its mount. A program run with
 *
 *   LD_PRELOAD=.../libplfs_sync.so PLFS_CTL=/path/to/plfs/control.sock \
 *   PLFS_MNT=/path/of/the/plfs/mount
 *
 * gets these two calls wrapped: the real call is made, then plfs is told
 * "sync" on its control socket (every pending page written back, as
 * syncfs(2) does on a real filesystem), and the call returns only once
 * plfs answered. syncfs(fd) of a file on another filesystem is passed
 * through untouched (its st_dev is compared with PLFS_MNT's); after a cut the
 * wrapped call fails with EIO, as the filesystem is gone.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int syncfs(int fd);
void sync(void);

/* 0 if plfs wrote everything back, -1 (errno set) if not. */
static int plfs_sync(void)
{
	const char *path = getenv("PLFS_CTL");
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	char buf[4096];
	size_t n = 0;
	int saved = errno;
	if (!path || strlen(path) >= sizeof(a.sun_path))
		return 0;
	strcpy(a.sun_path, path);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		goto fail;
	if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    write(s, "sync\n", 5) != 5)
		goto fail;
	while (n < sizeof(buf) - 1) {
		ssize_t r = read(s, buf + n, sizeof(buf) - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	buf[n] = '\0';
	close(s);
	s = -1;
	if (!strstr(buf, "\"cut\": false"))
		goto fail; /* power is gone (or no answer) */
	errno = saved;
	return 0;
fail:
	if (s >= 0)
		close(s);
	errno = EIO;
	return -1;
}

int syncfs(int fd)
{
	int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "syncfs");
	int rc = real ? real(fd) : 0;
	const char *mnt = getenv("PLFS_MNT");
	struct stat a, b;
	if (rc == 0 && mnt && fstat(fd, &a) == 0 && stat(mnt, &b) == 0 &&
	    a.st_dev == b.st_dev)
		rc = plfs_sync();
	return rc;
}

void sync(void)
{
	void (*real)(void) = (void (*)(void))dlsym(RTLD_NEXT, "sync");
	if (real)
		real();
	plfs_sync();
}

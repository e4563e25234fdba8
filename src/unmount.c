/*
 * `huracanfs unmount` (mount.h): flush, unmount, wait for the daemon, read
 * its shutdown report.
 *
 * The kernel sends no DESTROY when a FUSE mount of ours goes away, so
 * umount(2) returns before the daemon's final flush. This command makes
 * the unmount synchronous: it asks the daemon to upload everything first
 * (the control socket's flush, as `flush --wait`), unmounts, and returns
 * only once the daemon has exited, with the daemon's own account of what
 * is still queued ({cache_dir}/shutdown.json, see mount.h). The umount(8)
 * helper umount.fuse.huracanfs runs it, so plain `umount MNT` does the
 * same.
 */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hfs/cache.h"
#include "hfs/control.h"
#include "hfs/log.h"
#include "mount.h"
#include "status_print.h"

/* How long a busy mount (the last close just happened) is retried. */
#define BUSY_RETRY_MS 5000
/* Beyond the flush bound, how long the daemon may take to exit (index
 * sync, threads). */
#define EXIT_SLACK_S 30

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* True if @abs is a mount point of /proc/self/mounts. */
static bool mounted(const char *abs)
{
	FILE *f = fopen("/proc/self/mounts", "r");
	char line[8192];
	bool hit = false;
	if (!f)
		return false;
	while (!hit && fgets(line, sizeof(line), f)) {
		char *sp = strchr(line, ' ');
		char *mp = sp ? sp + 1 : NULL;
		char *end = mp ? strchr(mp, ' ') : NULL;
		if (end) {
			*end = '\0';
			hit = strcmp(mp, abs) == 0;
		}
	}
	fclose(f);
	return hit;
}

/* Runs fusermount3 -u[z] @mp; its stderr only if @loud. Returns its exit
 * status, or -errno. */
static int fusermount(const char *mp, bool lazy, bool loud)
{
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		if (!loud && !freopen("/dev/null", "w", stderr))
			_exit(127);
		execlp("fusermount3", "fusermount3", lazy ? "-uz" : "-u", mp,
		       (char *)NULL);
		_exit(127);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}

/*
 * Unmounts @mp: umount2 as root (never the umount(8) helper: that would
 * be us again), else fusermount3. A busy mount is retried for a moment,
 * since the last close of a file may still be in flight. Returns 0 or -1
 * with a message on stderr.
 */
static int do_unmount(const char *mp, bool lazy)
{
	int64_t until = mono_ms() + BUSY_RETRY_MS;
	for (;;) {
		int e;
		if (geteuid() == 0) {
			if (umount2(mp, lazy ? MNT_DETACH : 0) == 0)
				return 0;
			e = errno;
		} else {
			bool last = mono_ms() >= until;
			int rc = fusermount(mp, lazy, last);
			if (rc == 0)
				return 0;
			if (last)
				return -1;
			e = EBUSY;
		}
		if (e != EBUSY || mono_ms() >= until) {
			fprintf(stderr, "huracanfs: unmount %s: %s%s\n", mp,
				strerror(e),
				e == EBUSY ? " (files are open on it; "
					     "--lazy detaches it now)"
					   : "");
			return -1;
		}
		sleep_ms(100);
	}
}

/* True while @pid exists and is not a zombie. */
static bool alive(pid_t pid)
{
	char p[64], buf[512];
	snprintf(p, sizeof(p), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(p, "r");
	if (!f)
		return kill(pid, 0) == 0 || errno == EPERM;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *rp = strrchr(buf, ')');
	return !(rp && rp[1] == ' ' &&
		 (rp[2] == 'Z' || rp[2] == 'X' || rp[2] == 'x'));
}

/* Waits until @pid has exited, at most @ms milliseconds; true if it has.
 * A pidfd wakes us at once; without one, polls. */
static bool wait_exit(pid_t pid, int64_t ms)
{
	int64_t until = mono_ms() + ms;
#ifdef SYS_pidfd_open
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (fd >= 0) {
		while (alive(pid)) {
			int64_t left = until - mono_ms();
			if (left <= 0)
				break;
			struct pollfd p = {.fd = fd, .events = POLLIN};
			/* Readable once it has exited; a zombie still counts
			 * as alive above, so re-check in short steps. */
			if (poll(&p, 1, left < 200 ? (int)left : 200) < 0 &&
			    errno != EINTR)
				break;
		}
		close(fd);
		return !alive(pid);
	}
#endif
	while (alive(pid) && mono_ms() < until)
		sleep_ms(50);
	return !alive(pid);
}

static void human_bytes(int64_t b, char *out, size_t len)
{
	if (b >= (int64_t)1 << 30)
		snprintf(out, len, "%.1f GiB", (double)b / (1 << 30));
	else if (b >= 1 << 20)
		snprintf(out, len, "%.1f MiB", (double)b / (1 << 20));
	else if (b >= 1 << 10)
		snprintf(out, len, "%.1f KiB", (double)b / (1 << 10));
	else
		snprintf(out, len, "%lld bytes", (long long)b);
}

/* Reads the daemon's shutdown report and says what is left. Returns the
 * exit status. */
static int report_leftovers(const char *path, const char *mp)
{
	json_error_t jerr;
	json_t *rep = json_load_file(path, 0, &jerr);
	if (!rep) {
		fprintf(stderr,
			"huracanfs: unmount %s: the daemon exited without a "
			"shutdown report (%s); what was pending stays queued "
			"in its cache for the next mount\n",
			mp, path);
		return 1;
	}
	int64_t files =
		json_integer_value(json_object_get(rep, "pending_files"));
	int64_t bytes =
		json_integer_value(json_object_get(rep, "pending_bytes"));
	int64_t off =
		json_integer_value(json_object_get(rep, "sync_off_files"));
	const char *cache =
		json_string_value(json_object_get(rep, "cache_dir"));
	char hb[64];
	if (off > 0) {
		human_bytes(json_integer_value(
				    json_object_get(rep, "sync_off_bytes")),
			    hb, sizeof(hb));
		fprintf(stderr,
			"huracanfs: %lld files (%s) of categories whose sync "
			"is switched off stay in %s\n",
			(long long)off, hb, cache ? cache : "the cache");
	}
	if (files <= 0) {
		json_decref(rep);
		return 0;
	}
	human_bytes(bytes, hb, sizeof(hb));
	fprintf(stderr,
		"huracanfs: unmount %s: %lld file%s (%s) still queued for "
		"upload (%s); kept in the cache %s and uploaded at the next "
		"mount with this cache_dir:\n",
		mp, (long long)files, files == 1 ? "" : "s", hb,
		json_string_value(json_object_get(rep, "result")),
		cache ? cache : "?");
	size_t i;
	json_t *f;
	json_array_foreach(json_object_get(rep, "files"), i, f)
	{
		char esc[1024];
		const char *err =
			json_string_value(json_object_get(f, "last_error"));
		const char *fp = json_string_value(json_object_get(f, "path"));
		hlog_escape(esc, sizeof(esc), fp ? fp : "",
			    fp ? strlen(fp) : 0);
		fprintf(stderr, "  %s (%lld bytes)%s%s\n", esc,
			(long long)json_integer_value(
				json_object_get(f, "bytes")),
			err ? ": " : "", err ? err : "");
	}
	if ((int64_t)json_array_size(json_object_get(rep, "files")) < files)
		fprintf(stderr, "  ...\n");
	json_decref(rep);
	return 1;
}

int unmount_run(const char *mountpoint, int64_t timeout_s, bool lazy)
{
	char err[512], abs[PATH_MAX], report[PATH_MAX + 32];
	void *reply = NULL;
	if (!realpath(mountpoint, abs)) {
		/* A dead mount answers ENOTCONN: unmount it as named. */
		if (errno != ENOTCONN) {
			fprintf(stderr, "huracanfs: unmount %s: %s\n",
				mountpoint, strerror(errno));
			return 1;
		}
		snprintf(abs, sizeof(abs), "%s", mountpoint);
	}
	json_t *req = json_pack("{s:s, s:b}", "cmd", "status", "files", 0);
	int rc = control_call(abs, req, &reply, err, sizeof(err));
	json_decref(req);
	if (rc) {
		if (!mounted(abs)) {
			fprintf(stderr,
				"huracanfs: unmount: %s is not mounted\n", abs);
			return 1;
		}
		/* No daemon answers (it crashed): remove the dead mount so
		 * the next mount works; its queue is in the index. */
		fprintf(stderr,
			"huracanfs: unmount: %s; unmounting the dead mount "
			"(what "
			"was pending stays queued in its cache for the next "
			"mount)\n",
			err);
		do_unmount(abs, true);
		return 1;
	}
	json_t *st = reply;
	pid_t pid = (pid_t)json_integer_value(json_object_get(st, "pid"));
	const char *cache = json_string_value(json_object_get(st, "cache_dir"));
	if (timeout_s <= 0)
		timeout_s = json_integer_value(
			json_object_get(st, "flush_timeout"));
	if (timeout_s <= 0)
		timeout_s = 120;
	cache_part_path(cache ? cache : "", CACHE_SHUTDOWN, report,
			sizeof(report));
	json_decref(st);

	/* 1. Upload everything pending while the mount still serves. */
	int64_t t0 = mono_ms();
	req = json_pack("{s:s, s:b, s:I, s:b}", "cmd", "flush", "wait", 1,
			"timeout", (json_int_t)timeout_s, "unmount", 1);
	reply = NULL;
	rc = control_call(abs, req, &reply, err, sizeof(err));
	json_decref(req);
	if (rc)
		fprintf(stderr, "huracanfs: unmount: flush: %s\n", err);
	else if (!json_is_true(json_object_get(reply, "ok")))
		fprintf(stderr, "huracanfs: unmount: flush: %s\n",
			json_string_value(json_object_get(reply, "error")));
	json_decref(reply);

	/* 2. Unmount; the daemon then uploads what came meanwhile, writes
	 * its report and exits. */
	if (cache)
		unlink(report);
	if (do_unmount(abs, lazy) < 0)
		return 1;

	/* 3. Wait for it, within what is left of the bound. */
	int64_t left = timeout_s * 1000 - (mono_ms() - t0);
	if (left < 0)
		left = 0;
	if (pid > 0 && !wait_exit(pid, left + EXIT_SLACK_S * 1000)) {
		fprintf(stderr,
			"huracanfs: unmount %s: the daemon (pid %d) is still "
			"running%s; what it has not uploaded stays queued in "
			"%s\n",
			abs, (int)pid,
			lazy ? " (files are still open on the detached mount)"
			     : "",
			cache ? cache : "its cache");
		return 1;
	}
	return report_leftovers(report, abs);
}

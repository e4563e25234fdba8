/*
 * `huracanfs mount` (mount.h). mount_run acquires in order (config,
 * mountpoint check, fork, log, backend, context, session, signals, mount,
 * threads, loop) and releases in reverse. Unless --foreground, the parent
 * waits on a pipe until the child reports that the mount is usable (exit
 * 0) or has failed (its message, exit 1), so a script can use the mount on
 * its next line. The housekeeping thread (free-space watch, index sync,
 * eviction) is here too.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hfs/backend.h"
#include "hfs/cache.h"
#include "hfs/category.h"
#include "hfs/config.h"
#include "hfs/index.h"
#include "hfs/control.h"
#include "hfs/evict.h"
#include "hfs/flusher.h"
#include "hfs/fs.h"
#include "hfs/fuse_ops.h"
#include "hfs/http.h"
#include "hfs/log.h"
#include "hfs/metrics.h"
#include "hfs/notify.h"
#include "hfs/refresh.h"
#include "hfs/restore.h"
#include "hfs/watcher.h"
#include "mount.h"

/* The pipe to the waiting parent; -1 in the foreground. */
static int ready_fd = -1;
/* Log lines go to a file (else to stderr). */
static bool log_to_file;

static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Tells the waiting parent (or stderr) why the mount failed. */
static void report(const char *fmt, ...)
{
	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (log_to_file)
		hlog_err("%s", msg);
	if (ready_fd >= 0) {
		if (write(ready_fd, msg, strlen(msg)) < 0)
			hlog_debug("parent went away");
		close(ready_fd);
		ready_fd = -1;
	} else {
		fprintf(stderr, "huracanfs: %s\n", msg);
	}
}

/* Where the daemon's stderr goes once it is detached (sanitizer reports,
 * libfuse's own messages): the log file. */
static char stderr_path[PATH_MAX];

static void report_ready(void)
{
	if (ready_fd >= 0) {
		if (write(ready_fd, "", 1) < 0)
			hlog_debug("parent went away");
		close(ready_fd);
		ready_fd = -1;
	}
	int fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		if (fd > 2)
			close(fd);
	}
	if (stderr_path[0]) {
		fd = open(stderr_path,
			  O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
		if (fd >= 0) {
			dup2(fd, 2);
			close(fd);
		}
	}
}

/*
 * Forks. The parent waits for the child's verdict and exits with it; the
 * child returns and carries on as the daemon.
 */
static void daemonize(void)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0) {
		fprintf(stderr, "huracanfs: pipe: %s\n", strerror(errno));
		exit(1);
	}
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "huracanfs: fork: %s\n", strerror(errno));
		exit(1);
	}
	if (pid > 0) {
		close(p[1]);
		char msg[2048];
		size_t len = 0;
		ssize_t n;
		while (len < sizeof(msg) - 1 &&
		       (n = read(p[0], msg + len, sizeof(msg) - 1 - len)) !=
			       0) {
			if (n < 0) {
				if (errno == EINTR)
					continue;
				break;
			}
			len += (size_t)n;
		}
		msg[len] = '\0';
		if (len == 1 && msg[0] == '\0')
			exit(0);
		if (len == 0) {
			int st;
			waitpid(pid, &st, 0);
			fprintf(stderr,
				"huracanfs: the daemon exited before the mount "
				"was ready\n");
			exit(1);
		}
		fprintf(stderr, "huracanfs: %s\n", msg);
		exit(1);
	}
	close(p[0]);
	ready_fd = p[1];
	setsid();
	if (chdir("/") < 0)
		exit(1);
}

static void banner(const struct hfs *fs, const struct hfs_config *cfg)
{
	hlog_info("huracanfs_started version=%s mountpoint=%s backend=%s "
		  "cache_dir=%s config=%s",
		  PACKAGE_VERSION, fs->mountpoint, fs->be->ops->name,
		  cfg->cache_dir, cfg->path ? cfg->path : "(embedded default)");
	if (cfg->backend == BACKEND_LOCAL && !cfg->backend_set)
		hlog_info("no Dropbox credentials configured: using the local "
			  "backend in %s",
			  cfg->remote_dir);
	static const char *const label[CAT_COUNT] = {
		"Learning data",   "Logs",
		"Monitoring",	   "Models",
		"Historical data", "Other (metrics, features, results)"};
	hlog_info("sync_intervals learning=%llds logs=%llds monitoring=%llds "
		  "models=%llds data_cache=%llds data_cache_new=%llds "
		  "other=%llds",
		  (long long)cfg->interval[CAT_LEARNING],
		  (long long)cfg->interval[CAT_LOGS],
		  (long long)cfg->interval[CAT_MONITORING],
		  (long long)cfg->interval[CAT_MODELS],
		  (long long)cfg->interval[CAT_DATA_CACHE],
		  (long long)cfg->new_data_interval,
		  (long long)cfg->interval[CAT_OTHER]);
	for (int c = 0; c < CAT_COUNT; c++) {
		if (!cfg->enabled[c])
			hlog_info("   %s: sync disabled", label[c]);
		else if (cfg->interval[c] % 60 == 0)
			hlog_info("   %s: every %lld min", label[c],
				  (long long)(cfg->interval[c] / 60));
		else
			hlog_info("   %s: every %lld s", label[c],
				  (long long)cfg->interval[c]);
	}
}

/* Set once the final flush begins: the status line then says so. */
static atomic_bool stopping;

/*
 * Tells the service manager (notify.h) how the queue stands, when it
 * changed since @last (a buffer of NOTIFY_LINE bytes, updated).
 */
#define NOTIFY_LINE 256
static void notify_queue(struct hfs *fs, char *last)
{
	uint64_t files;
	int64_t last_sync;
	char line[NOTIFY_LINE], when[32] = "";
	if (atomic_load(&stopping))
		return;
	flushers_queued(fs->fl, &files, &last_sync);
	if (last_sync) {
		time_t t = (time_t)last_sync;
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(when, sizeof(when), "; last upload %H:%M:%SZ", &tm);
	}
	snprintf(line, sizeof(line),
		 "STATUS=Mounted on %s; %llu file%s "
		 "waiting for upload%s%s",
		 fs->mountpoint, (unsigned long long)files,
		 files == 1 ? "" : "s", when,
		 atomic_load(&fs->offline_until) > hfs_now()
			 ? "; remote unreachable"
			 : "");
	if (strcmp(line, last) == 0)
		return;
	snprintf(last, NOTIFY_LINE, "%s", line);
	notify_send(line);
}

/* The housekeeping thread: space watch and periodic index sync. */
struct keeper {
	struct hfs *fs;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv; /* signals: stop */
	bool stop; /* mu */
};

static void *keeper_thread(void *arg)
{
	struct keeper *k = arg;
	sigset_t set;
	sigfillset(&set);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	pthread_setname_np(pthread_self(), "hfs-keeper");
	int tick = 0, next_evict = 2;
	char notified[NOTIFY_LINE] = "";
	bool notify = notify_wanted();
	pthread_mutex_lock(&k->mu);
	while (!k->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&k->cv, &k->mu, &ts);
		if (k->stop)
			break;
		pthread_mutex_unlock(&k->mu);
		bool was_low = atomic_load(&k->fs->low_space);
		int64_t free_b = hfs_check_space(k->fs);
		bool low = atomic_load(&k->fs->low_space);
		if (low != was_low)
			hlog_warn("cache filesystem %s: %lld MiB free%s",
				  low ? "nearly full" : "has room again",
				  (long long)(free_b >> 20),
				  low ? "; slowing writers down" : "");
		hfs_reap(k->fs);
		if (notify)
			notify_queue(k->fs, notified);
		if (++tick % 5 == 0) {
			index_sync(k->fs->ix);
			hfs_keep_reserve(k->fs);
		}
		if (tick >= next_evict || low) {
			/* Measure and evict; often while the cache is near
			 * its limit or the disk is full, seldom otherwise. */
			uint64_t limit = k->fs->cfg->cache_max_bytes, used = 0;
			int erc = evict_run(k->fs, limit, &used, NULL);
			if (erc == 0)
				metrics_set_cache(used, free_b);
			if (erc == 0 && low && free_b >= 0) {
				uint64_t need =
					k->fs->cfg->cache_min_free_bytes -
					(uint64_t)free_b;
				evict_run(k->fs, used > need ? used - need : 0,
					  &used, NULL);
			}
			next_evict = tick + (used > limit / 2 ? 2 : 10);
		}
		pthread_mutex_lock(&k->mu);
	}
	pthread_mutex_unlock(&k->mu);
	return NULL;
}

static void keeper_stop(struct keeper *k)
{
	pthread_mutex_lock(&k->mu);
	k->stop = true;
	pthread_cond_signal(&k->cv);
	pthread_mutex_unlock(&k->mu);
	pthread_join(k->thread, NULL);
}

/* The core's hooks (fs.h, struct hfs_hooks), wired to the workers and
 * the FUSE session. */
struct wiring {
	struct hfs *fs;
	struct fuse_session *se; /* set before the session serves */
};

static void hook_dirty(void *arg, uint64_t ino, int cat, int64_t since,
		       bool first)
{
	struct wiring *w = arg;
	flushers_schedule(w->fs->fl, ino, cat, since, first);
}

static void hook_journal(void *arg)
{
	struct wiring *w = arg;
	flushers_kick_journal(w->fs->fl);
}

static int64_t hook_next_upload(void *arg, uint64_t ino)
{
	struct wiring *w = arg;
	return flushers_next_upload(w->fs->fl, ino);
}

static void hook_inval_inode(void *arg, uint64_t ino, int64_t off, int64_t len)
{
	struct wiring *w = arg;
	if (w->se)
		fuse_lowlevel_notify_inval_inode(w->se, ino, off, len);
}

static void hook_inval_entry(void *arg, uint64_t parent, const char *name)
{
	struct wiring *w = arg;
	if (w->se)
		fuse_lowlevel_notify_inval_entry(w->se, parent, name,
						 strlen(name));
}

static int hook_evict(void *arg, uint64_t limit, uint64_t *used,
		      uint64_t *freed)
{
	struct wiring *w = arg;
	return evict_run(w->fs, limit, used, freed);
}

/* At most this many files are named in the shutdown report. */
#define REPORT_FILES_MAX 1000

/*
 * Writes {cache_dir}/shutdown.json (see mount.h) once the final flush is
 * over: what is still queued, for `huracanfs unmount`. Files of a category
 * whose sync is switched off are counted apart: they wait by design.
 */
static void write_shutdown_report(struct hfs *fs, const struct hfs_config *cfg,
				  const char *result)
{
	json_t *st = flushers_status(fs->fl, true);
	json_t *files = json_array(), *cats, *c;
	json_int_t nfiles = 0, nbytes = 0, off_files = 0, off_bytes = 0;
	size_t i, j;
	char path[PATH_MAX], tmp[PATH_MAX];
	if (!st || !files)
		goto out;
	cats = json_object_get(st, "categories");
	json_array_foreach(cats, i, c)
	{
		bool on = json_is_true(json_object_get(c, "enabled"));
		json_int_t f = json_integer_value(
				   json_object_get(c, "pending_files")),
			   b = json_integer_value(
				   json_object_get(c, "pending_bytes"));
		if (!on) {
			off_files += f;
			off_bytes += b;
			continue;
		}
		nfiles += f;
		nbytes += b;
		json_t *fe;
		json_array_foreach(json_object_get(c, "files"), j, fe)
		{
			if (json_array_size(files) >= REPORT_FILES_MAX)
				break;
			json_object_set(fe, "category",
					json_object_get(c, "name"));
			json_array_append(files, fe);
		}
	}
	json_t *rep = json_pack("{s:I, s:s, s:I, s:I, s:I, s:I, s:s, s:O}",
				"time", (json_int_t)time(NULL), "result",
				result, "pending_files", nfiles,
				"pending_bytes", nbytes, "sync_off_files",
				off_files, "sync_off_bytes", off_bytes,
				"cache_dir", cfg->cache_dir, "files", files);
	cache_part_path(cfg->cache_dir, CACHE_SHUTDOWN, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if (!rep || json_dump_file(rep, tmp, JSON_COMPACT) < 0 ||
	    rename(tmp, path) < 0)
		hlog_warn("cannot write %s: %s", path, strerror(errno));
	json_decref(rep);
out:
	json_decref(files);
	json_decref(st);
}

/* True if the comma-separated @opts holds @name (alone or as name=...). */
static bool has_option(const char *opts, const char *name)
{
	size_t nl = strlen(name);
	for (const char *p = opts; *p;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len >= nl && strncmp(p, name, nl) == 0 &&
		    (len == nl || p[nl] == '='))
			return true;
		p += len + (end ? 1 : 0);
	}
	return false;
}

static int check_mountpoint(const char *mp, char *abs)
{
	struct stat st;
	if (!realpath(mp, abs)) {
		fprintf(stderr, "huracanfs: mountpoint %s: %s\n", mp,
			strerror(errno));
		return -1;
	}
	if (stat(abs, &st) < 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "huracanfs: mountpoint %s: not a directory\n",
			mp);
		return -1;
	}
	if (access(abs, W_OK | X_OK) < 0) {
		fprintf(stderr, "huracanfs: mountpoint %s: %s\n", mp,
			strerror(errno));
		return -1;
	}
	return 0;
}

int mount_run(const struct mount_opts *mo)
{
	struct hfs_config cfg;
	char err[1024] = "", abs[PATH_MAX];
	struct backend *be = NULL;
	struct hfs *fs = NULL;
	struct fuse_session *se = NULL;
	struct control *ctl = NULL;
	struct metrics_server *metrics = NULL;
	struct watcher *watcher = NULL;
	struct refresher *lister = NULL;
	struct keeper keeper = {0};
	struct wiring wiring = {0};
	bool keeper_started = false, mounted = false, handlers = false;
	int rc, status = 1;

	if (config_init(&cfg) < 0) {
		fprintf(stderr, "huracanfs: out of memory\n");
		return 1;
	}
	rc = config_load(&cfg, mo->config, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "huracanfs: %s\n", err);
		config_release(&cfg);
		return 1;
	}
	if (check_mountpoint(mo->mountpoint, abs) < 0) {
		config_release(&cfg);
		return 1;
	}

	if (cfg.backend == BACKEND_LOCAL && !cfg.backend_set)
		fprintf(stderr,
			"huracanfs: %s; using the local backend in %s "
			"(configure Dropbox in %s)\n",
			cfg.path
				? "no Dropbox credentials in the configuration"
				: "no configuration and no Dropbox credentials",
			cfg.remote_dir,
			cfg.path ? cfg.path
				 : "~/.config/huracanfs/config.yaml");
	if (!mo->foreground)
		daemonize();
	hlog_threshold = cfg.log_level;
	if (cfg.log_file || !mo->foreground) {
		char lp[PATH_MAX];
		if (cfg.log_file)
			snprintf(lp, sizeof(lp), "%s", cfg.log_file);
		else
			cache_part_path(cfg.cache_dir, CACHE_LOG, lp,
					sizeof(lp));
		if (!mo->foreground)
			snprintf(stderr_path, sizeof(stderr_path), "%s", lp);
		rc = cfg.log_file ? 0 : hfs_mkdir_p(cfg.cache_dir, 0700);
		if (!rc)
			rc = hlog_open_file(lp);
		if (!rc)
			log_to_file = true;
		if (rc) {
			report("cannot open log file %s: %s", lp,
			       strerror(-rc));
			goto out;
		}
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	signal(SIGPIPE, SIG_IGN);
	if (cfg.access_token || cfg.refresh_token || cfg.app_secret) {
		/* A core file would hold the tokens: write none. */
		struct rlimit core = {0, 0};
		setrlimit(RLIMIT_CORE, &core);
	}
	/* Batched uploads hold a snapshot fd per file: allow what the hard
	 * limit allows. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	http_set_rate_limits(cfg.upload_bps, cfg.download_bps);
	char ixdir[PATH_MAX];
	cache_part_path(cfg.cache_dir, CACHE_INDEX, ixdir, sizeof(ixdir));
	rc = backend_create(&cfg, !index_exists(ixdir), &be, err, sizeof(err));
	if (rc) {
		report("%s", err);
		goto out;
	}
	rc = be->ops->probe(be);
	if (rc == -EACCES) {
		report("the remote refused our credentials (%s). Verify "
		       "Dropbox token is valid.",
		       backend_last_error());
		backend_destroy(be);
		goto out;
	}
	if (rc == -ECONNABORTED) {
		/* An untrusted certificate is a configuration error, not an
		 * outage: starting offline would hide it. */
		report("%s", backend_last_error());
		backend_destroy(be);
		goto out;
	}
	bool probe_failed = rc != 0;
	if (rc)
		hlog_warn("remote not reachable (%s): starting offline; "
			  "uploads wait until it is back",
			  backend_last_error());

	rc = hfs_create(&cfg, be, abs, &fs, err, sizeof(err));
	if (rc) {
		report("%s", err);
		goto out;
	}
	if (probe_failed) /* serve listings from the index for a while */
		atomic_store(&fs->offline_until, hfs_now() + 5);
	rc = flushers_create(fs, &fs->fl);
	if (rc) {
		report("cannot create the flushers: %s", strerror(-rc));
		goto out;
	}
	wiring.fs = fs;
	hfs_set_hooks(fs, &(struct hfs_hooks){.arg = &wiring,
					      .dirty = hook_dirty,
					      .journal = hook_journal,
					      .next_upload = hook_next_upload,
					      .evict = hook_evict,
					      .inval_inode = hook_inval_inode,
					      .inval_entry = hook_inval_entry});

	/*
	 * Only the mounting user can enter the mount unless allow_other (or
	 * allow_root) is given; then the kernel must check modes:
	 * default_permissions. Without other users it would cost a request
	 * per create and check nothing new.
	 */
	char optbuf[4200];
	bool others = has_option(mo->fuse_opts, "allow_other") ||
		      has_option(mo->fuse_opts, "allow_root");
	snprintf(optbuf, sizeof(optbuf),
		 "fsname=huracanfs,subtype=huracanfs%s%s%s",
		 others && !has_option(mo->fuse_opts, "default_permissions")
			 ? ",default_permissions"
			 : "",
		 mo->fuse_opts[0] ? "," : "", mo->fuse_opts);
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	if (fuse_opt_add_arg(&args, "huracanfs") ||
	    fuse_opt_add_arg(&args, "-o") || fuse_opt_add_arg(&args, optbuf)) {
		report("out of memory");
		goto out;
	}
	se = fuse_session_new(&args, &hfs_fuse_ops, sizeof(hfs_fuse_ops), fs);
	fuse_opt_free_args(&args);
	if (!se) {
		report("cannot create the FUSE session (bad -o option? see "
		       "the message above)");
		goto out;
	}
	wiring.se = se; /* before any thread can call a hook */
	if (fuse_set_signal_handlers(se) != 0) {
		report("cannot install signal handlers");
		goto out;
	}
	handlers = true;
	if (fuse_session_mount(se, abs) != 0) {
		report("cannot mount on %s (is it already mounted? is "
		       "/dev/fuse usable?)",
		       abs);
		goto out;
	}
	mounted = true;
	rc = flushers_start(fs->fl);
	if (!rc)
		rc = control_start(fs, &ctl);
	if (!rc && cfg.metrics_listen) {
		rc = metrics_start(fs, cfg.metrics_listen, &metrics, err,
				   sizeof(err));
		if (rc) {
			report("%s", err);
			goto out;
		}
	}
	if (!rc)
		rc = watcher_start(fs, &watcher);
	if (!rc)
		rc = restore_start(fs, &fs->restore);
	if (!rc)
		rc = refresher_start(fs, &lister);
	if (rc) {
		report("cannot start the daemon threads: %s", strerror(-rc));
		goto out;
	}
	keeper.fs = fs;
	pthread_mutex_init(&keeper.mu, NULL);
	pthread_cond_init(&keeper.cv, NULL);
	if (pthread_create(&keeper.thread, NULL, keeper_thread, &keeper) == 0)
		keeper_started = true;

	banner(fs, &cfg);
	report_ready();
	{
		/* Usable now: tell the service manager (Type=notify). A
		 * daemonized child is not the process it started. */
		char msg[PATH_MAX + 128];
		int n = snprintf(msg, sizeof(msg),
				 "READY=1\nSTATUS=Mounted on %s", abs);
		if (!mo->foreground && n > 0 && (size_t)n < sizeof(msg))
			snprintf(msg + n, sizeof(msg) - (size_t)n,
				 "\nMAINPID=%d", (int)getpid());
		notify_send(msg);
	}

	struct fuse_loop_config *lc = fuse_loop_cfg_create();
	if (lc) {
		fuse_loop_cfg_set_clone_fd(lc, 0);
		fuse_loop_cfg_set_max_threads(lc, 16);
		fuse_loop_cfg_set_idle_threads(lc, 4);
	}
	rc = fuse_session_loop_mt(se, lc);
	fuse_loop_cfg_destroy(lc);
	hlog_info("unmounting %s", abs);
	refresher_stop(lister);
	lister = NULL;
	watcher_stop(watcher);
	watcher = NULL;
	restore_stop(fs->restore);
	fs->restore = NULL;
	fuse_session_unmount(se);
	mounted = false;

	/* Upload what is pending, within flush_timeout_seconds (or the
	 * bound `huracanfs unmount` gave); what is left stays queued in the
	 * index for the next mount. */
	int64_t t0 = hfs_now_ns();
	int64_t bound = control_shutdown_timeout(ctl);
	if (notify_wanted()) {
		uint64_t files;
		int64_t last_sync;
		char msg[256];
		atomic_store(&stopping, true);
		flushers_queued(fs->fl, &files, &last_sync);
		/* The flush may take its whole bound: ask for that long. */
		snprintf(msg, sizeof(msg),
			 "STOPPING=1\nSTATUS=Unmounted; uploading the %llu "
			 "file%s still waiting\nEXTEND_TIMEOUT_USEC=%lld",
			 (unsigned long long)files, files == 1 ? "" : "s",
			 (long long)((bound ? bound : cfg.flush_timeout) + 30) *
				 1000000LL);
		notify_send(msg);
	}
	rc = flushers_flush(fs->fl, -1, true,
			    bound ? bound : cfg.flush_timeout);
	const char *result = "ok";
	if (rc == -ETIMEDOUT)
		result = "timeout (the rest stays queued)";
	else if (rc)
		result = "some uploads failed (they stay queued)";
	hlog_info("shutdown_flush result=%s ms=%lld", result,
		  (long long)((hfs_now_ns() - t0) / 1000000));
	write_shutdown_report(fs, &cfg, rc == 0 ? "ok" : result);
	status = 0;
out:
	refresher_stop(lister);
	watcher_stop(watcher);
	if (fs) {
		restore_stop(fs->restore);
		fs->restore = NULL;
	}
	if (keeper_started)
		keeper_stop(&keeper);
	metrics_stop(metrics);
	control_stop(ctl);
	if (fs) {
		/* No thread of ours is left that could call a hook. */
		flushers_destroy(fs->fl);
		fs->fl = NULL;
		hfs_set_hooks(fs, &(struct hfs_hooks){0});
	}
	if (mounted)
		fuse_session_unmount(se);
	if (handlers)
		fuse_remove_signal_handlers(se);
	if (se)
		fuse_session_destroy(se);
	hfs_destroy(fs);
	if (log_to_file || status == 0)
		hlog_info("huracanfs_stopped");
	config_release(&cfg);
	return status;
}

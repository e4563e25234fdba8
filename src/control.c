/*
 * The control socket (see control.h). One accept thread; each connection
 * is served by a short-lived detached thread, so a `flush --wait` never
 * holds up a `status`.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "hfs/category.h"
#include "hfs/control.h"
#include "hfs/flusher.h"
#include "hfs/fs.h"
#include "hfs/http.h"
#include "hfs/log.h"
#include "hfs/metrics.h"
#include "hfs/restore.h"

#define REQ_MAX 4096

struct control {
	struct hfs *fs;
	int sock;
	int stop_pipe[2];
	pthread_t thread;
	bool started;
	pthread_mutex_t mu;
	pthread_cond_t idle; /* signals: active dropped to 0 */
	int active; /* connections being served; mu */
	/* The bound of the final flush after the unmount, as the last
	 * `unmount` request asked (0: flush_timeout_seconds). */
	_Atomic int64_t shutdown_timeout;
};

struct conn {
	struct control *c;
	int fd;
};

static int add_local_link(void *arg, const char *path, const char *why)
{
	json_array_append_new(
		arg, json_pack("{s:s, s:s}", "path", path, "why", why));
	return 0;
}

void *control_status(struct hfs *fs, bool with_files)
{
	json_t *st = flushers_status(fs->fl, with_files);
	if (!st)
		return NULL;
	json_object_set_new(st, "backend", json_string(fs->be->ops->name));
	json_object_set_new(st, "mountpoint", json_string(fs->mountpoint));
	json_object_set_new(st, "cache_dir", json_string(cache_dir(fs->cache)));
	json_object_set_new(st, "pid", json_integer(getpid()));
	json_object_set_new(st, "flush_timeout",
			    json_integer(fs->cfg->flush_timeout));
	json_object_set_new(
		st, "offline",
		json_boolean(atomic_load(&fs->offline_until) > hfs_now()));
	json_object_set_new(st, "low_space",
			    json_boolean(atomic_load(&fs->low_space)));
	json_t *lost = json_array();
	pthread_mutex_lock(&fs->lost_lock);
	for (size_t i = 0; i < fs->nlost; i++)
		json_array_append_new(lost, json_string(fs->lost[i]));
	pthread_mutex_unlock(&fs->lost_lock);
	json_object_set_new(st, "lost", lost);
	json_t *found = json_array();
	pthread_mutex_lock(&fs->lost_lock);
	for (size_t i = 0; i < fs->nfound; i++)
		json_array_append_new(found, json_string(fs->found[i]));
	pthread_mutex_unlock(&fs->lost_lock);
	json_object_set_new(st, "recovered", found);
	json_t *links = json_array();
	hfs_local_links(fs, 100, add_local_link, links);
	json_object_set_new(st, "local_links", links);
	json_t *kept = json_array();
	pthread_mutex_lock(&fs->kept_lock);
	for (size_t i = 0; i < fs->nkept; i++) {
		const struct hfs_kept *k = &fs->kept[i];
		json_t *names = json_array();
		for (size_t j = 0; j < k->nnames; j++)
			json_array_append_new(names, json_string(k->names[j]));
		json_array_append_new(kept,
				      json_pack("{s:s, s:o, s:I, s:I}", "path",
						k->path, "kept", names, "count",
						(json_int_t)k->total, "time",
						(json_int_t)k->when));
	}
	pthread_mutex_unlock(&fs->kept_lock);
	json_object_set_new(st, "deletes_kept", kept);
	json_t *rs = restore_status(fs->restore);
	if (rs)
		json_object_set_new(st, "restore", rs);
	metrics_add_status(st);
	uint64_t up, down;
	http_get_rate_limits(&up, &down);
	json_object_set_new(st, "limits",
			    json_pack("{s:I, s:I}", "upload_bytes_per_second",
				      (json_int_t)up,
				      "download_bytes_per_second",
				      (json_int_t)down));
	/* Each counter as some value it had (relaxed, see fuse_stats.h). */
	json_t *reqs = json_object();
	for (int op = 0; op < HFS_FUSE_NOPS; op++)
		json_object_set_new(
			reqs, hfs_fuse_op_name((enum hfs_fuse_op)op),
			json_integer((json_int_t)atomic_load_explicit(
				&fs->fuse_stats.n[op], memory_order_relaxed)));
	json_object_set_new(st, "fuse_requests", reqs);
	return st;
}

static json_t *handle(struct control *c, json_t *req)
{
	const char *cmd = json_string_value(json_object_get(req, "cmd"));
	if (!cmd)
		return json_pack("{s:b, s:s}", "ok", 0, "error",
				 "request without cmd");
	if (strcmp(cmd, "status") == 0)
		return control_status(
			c->fs, json_is_true(json_object_get(req, "files")));
	if (strcmp(cmd, "flush") == 0) {
		json_t *jc = json_object_get(req, "category");
		int cat = -1;
		if (json_is_string(jc)) {
			cat = cat_from_name(json_string_value(jc));
			if (cat < 0)
				return json_pack(
					"{s:b, s:s}", "ok", 0, "error",
					"unknown category (learning, logs, "
					"monitoring, models, data_cache, "
					"other)");
		}
		bool wait = json_is_true(json_object_get(req, "wait"));
		int64_t timeout = c->fs->cfg->flush_timeout;
		json_t *jt = json_object_get(req, "timeout");
		if (json_is_integer(jt) && json_integer_value(jt) > 0)
			timeout = json_integer_value(jt);
		/* `huracanfs unmount` flushes first: its bound then also
		 * applies to the final flush after the unmount. */
		if (json_is_true(json_object_get(req, "unmount")))
			atomic_store(&c->shutdown_timeout, timeout);
		int rc = flushers_flush(c->fs->fl, cat, wait, timeout);
		if (rc == 0)
			return json_pack("{s:b}", "ok", 1);
		return json_pack("{s:b, s:s}", "ok", 0, "error",
				 rc == -ETIMEDOUT
					 ? "timed out waiting for uploads"
					 : "some uploads failed");
	}
	if (strcmp(cmd, "limit") == 0) {
		uint64_t up, down;
		json_t *ju = json_object_get(req, "up"),
		       *jd = json_object_get(req, "down");
		if ((ju &&
		     (!json_is_integer(ju) || json_integer_value(ju) < 0)) ||
		    (jd &&
		     (!json_is_integer(jd) || json_integer_value(jd) < 0)))
			return json_pack("{s:b, s:s}", "ok", 0, "error",
					 "a limit is a number of bytes per "
					 "second >= 0");
		http_get_rate_limits(&up, &down);
		if (ju)
			up = (uint64_t)json_integer_value(ju);
		if (jd)
			down = (uint64_t)json_integer_value(jd);
		if (ju || jd) {
			http_set_rate_limits(up, down);
			hlog_info("bandwidth limits: up=%llu down=%llu bytes/s",
				  (unsigned long long)up,
				  (unsigned long long)down);
		}
		return json_pack("{s:b, s:I, s:I}", "ok", 1,
				 "upload_bytes_per_second", (json_int_t)up,
				 "download_bytes_per_second", (json_int_t)down);
	}
	return json_pack("{s:b, s:s}", "ok", 0, "error", "unknown cmd");
}

static void *conn_thread(void *arg)
{
	struct conn *cn = arg;
	struct control *c = cn->c;
	char buf[REQ_MAX + 1];
	size_t len = 0;
	sigset_t set;
	sigfillset(&set);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	pthread_setname_np(pthread_self(), "hfs-control");

	while (len < REQ_MAX) {
		ssize_t n = read(cn->fd, buf + len, REQ_MAX - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (memchr(buf, '\n', len))
			break;
	}
	buf[len] = '\0';
	json_error_t jerr;
	json_t *req = json_loads(buf, JSON_DISABLE_EOF_CHECK, &jerr);
	json_t *reply = req ? handle(c, req)
			    : json_pack("{s:b, s:s}", "ok", 0, "error",
					"malformed request");
	char *out = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
	if (out) {
		size_t ol = strlen(out), off = 0;
		out[ol] = '\0';
		while (off < ol) {
			ssize_t w = write(cn->fd, out + off, ol - off);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				break;
			off += (size_t)w;
		}
		if (write(cn->fd, "\n", 1) < 0)
			hlog_debug("control: client went away");
	}
	free(out);
	json_decref(reply);
	json_decref(req);
	close(cn->fd);
	free(cn);

	pthread_mutex_lock(&c->mu);
	if (--c->active == 0)
		pthread_cond_broadcast(&c->idle);
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

static void *accept_thread(void *arg)
{
	struct control *c = arg;
	sigset_t set;
	sigfillset(&set);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	pthread_setname_np(pthread_self(), "hfs-ctl-accept");
	for (;;) {
		struct pollfd p[2] = {
			{.fd = c->sock, .events = POLLIN},
			{.fd = c->stop_pipe[0], .events = POLLIN}};
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		int fd = accept4(c->sock, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		struct conn *cn = malloc(sizeof(*cn));
		pthread_t th;
		if (!cn) {
			close(fd);
			continue;
		}
		cn->c = c;
		cn->fd = fd;
		pthread_mutex_lock(&c->mu);
		c->active++;
		pthread_mutex_unlock(&c->mu);
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&th, &attr, conn_thread, cn) != 0) {
			close(fd);
			free(cn);
			pthread_mutex_lock(&c->mu);
			c->active--;
			pthread_mutex_unlock(&c->mu);
		}
		pthread_attr_destroy(&attr);
	}
	return NULL;
}

int control_start(struct hfs *fs, struct control **out)
{
	struct control *c = calloc(1, sizeof(*c));
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int rc;
	if (!c)
		return -ENOMEM;
	c->fs = fs;
	c->sock = -1;
	c->stop_pipe[0] = c->stop_pipe[1] = -1;
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->idle, NULL);
	if (strlen(fs->control_path) >= sizeof(sa.sun_path)) {
		rc = -ENAMETOOLONG;
		goto fail;
	}
	strcpy(sa.sun_path, fs->control_path);
	unlink(fs->control_path); /* stale: the cache dir lock is ours */
	c->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->sock < 0 || pipe2(c->stop_pipe, O_CLOEXEC) < 0) {
		rc = -errno;
		goto fail;
	}
	mode_t old = umask(0177);
	rc = bind(c->sock, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (rc < 0 || listen(c->sock, 16) < 0) {
		rc = -errno;
		goto fail;
	}
	rc = -pthread_create(&c->thread, NULL, accept_thread, c);
	if (rc)
		goto fail;
	c->started = true;
	*out = c;
	return 0;
fail:
	control_stop(c);
	return rc;
}

int64_t control_shutdown_timeout(struct control *c)
{
	return c ? atomic_load(&c->shutdown_timeout) : 0;
}

void control_stop(struct control *c)
{
	if (!c)
		return;
	if (c->started) {
		if (write(c->stop_pipe[1], "x", 1) < 0)
			hlog_debug("control: stop pipe failed");
		pthread_join(c->thread, NULL);
	}
	pthread_mutex_lock(&c->mu);
	while (c->active > 0)
		pthread_cond_wait(&c->idle, &c->mu);
	pthread_mutex_unlock(&c->mu);
	if (c->sock >= 0) {
		close(c->sock);
		unlink(c->fs->control_path);
	}
	if (c->stop_pipe[0] >= 0)
		close(c->stop_pipe[0]);
	if (c->stop_pipe[1] >= 0)
		close(c->stop_pipe[1]);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->idle);
	free(c);
}

int control_call(const char *mountpoint, void *req, void **reply, char *err,
		 size_t errlen)
{
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	ssize_t n = getxattr(mountpoint, "user.huracanfs.control", path,
			     sizeof(path) - 1);
	if (n < 0) {
		int e = errno;
		snprintf(err, errlen,
			 "%s is not a running huracanfs mount (%s)", mountpoint,
			 e == ENODATA || e == ENOTSUP ? "no control socket"
						      : strerror(e));
		return -e;
	}
	path[n] = '\0';
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		snprintf(err, errlen, "cannot reach the daemon at %s: %s", path,
			 strerror(e));
		if (fd >= 0)
			close(fd);
		return -e;
	}
	char *msg = json_dumps(req, JSON_COMPACT);
	int rc = 0;
	if (!msg) {
		close(fd);
		return -ENOMEM;
	}
	size_t ml = strlen(msg), off = 0;
	while (off < ml) {
		ssize_t w = write(fd, msg + off, ml - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			rc = -EIO;
			break;
		}
		off += (size_t)w;
	}
	free(msg);
	if (!rc && write(fd, "\n", 1) != 1)
		rc = -EIO;
	char *buf = NULL;
	size_t len = 0, cap = 0;
	while (!rc) {
		if (len + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 8192;
			if (cap > (16u << 20)) {
				rc = -E2BIG;
				break;
			}
			char *nb = realloc(buf, cap);
			if (!nb) {
				rc = -ENOMEM;
				break;
			}
			buf = nb;
		}
		ssize_t r = read(fd, buf + len, cap - len - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			break;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	if (rc) {
		snprintf(err, errlen, "talking to the daemon failed: %s",
			 strerror(-rc));
		free(buf);
		return rc;
	}
	json_error_t jerr;
	json_t *j = buf ? json_loadb(buf, len, 0, &jerr) : NULL;
	free(buf);
	if (!j) {
		snprintf(err, errlen, "the daemon sent no valid reply");
		return -EIO;
	}
	*reply = j;
	return 0;
}

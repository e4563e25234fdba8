/*
 * Unit tests of the filesystem core without FUSE: an hfs over a temporary
 * cache directory, its backend the fault backend (backend_fault.h) around
 * the local backend over a temporary "remote" directory. The tests call
 * the hfs_* functions as src/fuse_ops.c would (writes from memory through
 * hfs_source_mem, readdir through a filler of their own), uploads and
 * journal replays as the flushers do (or start the flushers themselves),
 * and check the index (index.h) and the remote directory.
 *
 * Each test gets directories of its own under one mkdtemp directory,
 * removed at the end unless HFS_KEEP_TMP is set.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "fs_i.h" /* src/: the hnode, fs_get_node */
#include "hfs/backend_fault.h"
#include "hfs/backend_local.h"
#include "hfs/config.h"
#include "hfs/flusher.h"
#include "hfs/fs.h"
#include "hfs/index.h"
#include "hfs/log.h"

#define CHECK(expr)                                                       \
	do {                                                              \
		if (!(expr)) {                                            \
			fprintf(stderr, "%s:%d: %s: check failed: %s\n",  \
				__FILE__, __LINE__, current_test, #expr); \
			exit(1);                                          \
		}                                                         \
	} while (0)

/* A call that must return @want (0 or -errno): prints what it got. */
#define CHECK_RC(call, want)                                                   \
	do {                                                                   \
		long long got_ = (long long)(call);                            \
		if (got_ != (long long)(want)) {                               \
			fprintf(stderr,                                        \
				"%s:%d: %s: %s returned %lld (%s), want "      \
				"%lld\n",                                      \
				__FILE__, __LINE__, current_test, #call, got_, \
				got_ < 0 ? strerror((int)-got_) : "-",         \
				(long long)(want));                            \
			exit(1);                                               \
		}                                                              \
	} while (0)

#define ROOT INDEX_ROOT_INO

static const char *current_test = "";
static char tmpdir[] = "/tmp/test_core.XXXXXX";

/* One filesystem core over a cache directory and a remote directory. */
struct rig {
	char cache[PATH_MAX], remote[PATH_MAX];
	struct hfs_config cfg;
	struct backend *fb; /* borrowed from fs */
	struct hfs *fs;
};

static char *xstrdup(const char *s)
{
	char *d = strdup(s);
	CHECK(d);
	return d;
}

/* Builds the core over the rig's directories (they may hold a cache and
 * a remote from before: a new mount). */
static void rig_open(struct rig *r)
{
	struct backend *local = NULL;
	char err[1024] = "";
	CHECK(config_init(&r->cfg) == 0);
	free(r->cfg.cache_dir);
	free(r->cfg.remote_dir);
	free(r->cfg.today_link);
	r->cfg.cache_dir = xstrdup(r->cache);
	r->cfg.remote_dir = xstrdup(r->remote);
	r->cfg.today_link = xstrdup("");
	r->cfg.remote_wait_seconds = 5;
	CHECK_RC(backend_local_create(r->remote, &local), 0);
	CHECK_RC(backend_fault_create(local, &r->fb), 0);
	char mnt[PATH_MAX + 8];
	snprintf(mnt, sizeof(mnt), "%s/mnt", r->cache);
	int rc = hfs_create(&r->cfg, r->fb, mnt, &r->fs, err, sizeof(err));
	if (rc)
		fprintf(stderr, "hfs_create: %s\n", err);
	CHECK_RC(rc, 0);
}

static void rig_close(struct rig *r)
{
	hfs_destroy(r->fs);
	r->fs = NULL;
	r->fb = NULL;
	config_release(&r->cfg);
}

/* A new rig with empty directories of its own, named after @name. */
static void rig_new(struct rig *r, const char *name)
{
	memset(r, 0, sizeof(*r));
	current_test = name;
	snprintf(r->cache, sizeof(r->cache), "%s/%s/cache", tmpdir, name);
	snprintf(r->remote, sizeof(r->remote), "%s/%s/remote", tmpdir, name);
	CHECK_RC(hfs_mkdir_p(r->cache, 0700), 0);
	CHECK_RC(hfs_mkdir_p(r->remote, 0700), 0);
	rig_open(r);
}

/* ---- The remote directory, seen and changed behind the core's back ---- */

static void remote_full(const struct rig *r, const char *path, char *buf,
			size_t len)
{
	snprintf(buf, len, "%s%s", r->remote, path);
}

static bool remote_exists(const struct rig *r, const char *path)
{
	char full[PATH_MAX * 2];
	struct stat st;
	remote_full(r, path, full, sizeof(full));
	return stat(full, &st) == 0;
}

static bool remote_is_dir(const struct rig *r, const char *path)
{
	char full[PATH_MAX * 2];
	struct stat st;
	remote_full(r, path, full, sizeof(full));
	return stat(full, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The bytes of remote file @path as a string (static buffer), or
 * "(absent)". */
static const char *remote_read(const struct rig *r, const char *path)
{
	static char buf[65536];
	char full[PATH_MAX * 2];
	remote_full(r, path, full, sizeof(full));
	int fd = open(full, O_RDONLY);
	if (fd < 0)
		return "(absent)";
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	CHECK(n >= 0);
	buf[n] = '\0';
	return buf;
}

static void remote_write(const struct rig *r, const char *path,
			 const char *data)
{
	char full[PATH_MAX * 2];
	remote_full(r, path, full, sizeof(full));
	int fd = open(full, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0);
	CHECK(write(fd, data, strlen(data)) == (ssize_t)strlen(data));
	close(fd);
}

static void remote_mkdir(const struct rig *r, const char *path)
{
	char full[PATH_MAX * 2];
	remote_full(r, path, full, sizeof(full));
	CHECK(mkdir(full, 0755) == 0);
}

/* The names in remote folder @path, sorted, ", "-separated, hidden
 * temporary files left out (static buffer). */
static const char *remote_names(const struct rig *r, const char *path)
{
	static char out[4096];
	char full[PATH_MAX * 2];
	char *names[64];
	int n = 0;
	remote_full(r, path, full, sizeof(full));
	DIR *d = opendir(full);
	CHECK(d);
	struct dirent *e;
	while ((e = readdir(d)) && n < 64) {
		if (e->d_name[0] == '.')
			continue;
		names[n++] = xstrdup(e->d_name);
	}
	closedir(d);
	for (int i = 1; i < n; i++) /* insertion sort: few names */
		for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0;
		     j--) {
			char *t = names[j];
			names[j] = names[j - 1];
			names[j - 1] = t;
		}
	out[0] = '\0';
	for (int i = 0; i < n; i++) {
		if (i)
			strncat(out, ", ", sizeof(out) - strlen(out) - 1);
		strncat(out, names[i], sizeof(out) - strlen(out) - 1);
		free(names[i]);
	}
	return out;
}

/* ---- The index ---- */

/* Looks @name of @parent up in the index: 0 and its node in @n, or -ENOENT. */
static int ix_find(struct hfs *fs, uint64_t parent, const char *name,
		   struct node *n)
{
	struct ixtxn t;
	uint64_t ino;
	int rc = ix_begin(fs->ix, false, &t);
	if (rc)
		return rc;
	rc = ix_lookup(&t, parent, name, &ino, NULL);
	if (!rc)
		rc = ix_get(&t, ino, n);
	ix_abort(&t);
	return rc;
}

static struct node node_of(struct hfs *fs, uint64_t ino)
{
	struct node n;
	CHECK_RC(fs_get_node(fs, ino, &n), 0);
	return n;
}

static int find_dirty(void *arg, uint64_t ino)
{
	return *(uint64_t *)arg == ino ? 1 : 0;
}

/* True if @ino is in the dirty set. */
static bool in_dirty_set(struct hfs *fs, uint64_t ino)
{
	struct ixtxn t;
	CHECK_RC(ix_begin(fs->ix, false, &t), 0);
	int rc = ix_foreach_dirty(&t, find_dirty, &ino);
	ix_abort(&t);
	return rc == 1;
}

static int journal_line(void *arg, const struct journal_entry *e)
{
	char *out = arg;
	static const char *const ops[] = {"?", "mkdir", "unlink", "rmdir",
					  "rename"};
	size_t len = strlen(out);
	snprintf(out + len, 4096 - len, "%s %s%s%s\n",
		 e->op >= 1 && e->op <= 4 ? ops[e->op] : "?", e->path,
		 e->op == JOP_RENAME ? " " : "",
		 e->op == JOP_RENAME ? e->path2 : "");
	return 0;
}

/* The journal, one "op path [path2]" line per entry, oldest first
 * (static buffer). */
static const char *journal(struct hfs *fs)
{
	static char out[4096];
	struct ixtxn t;
	out[0] = '\0';
	CHECK_RC(ix_begin(fs->ix, false, &t), 0);
	CHECK_RC(ix_foreach_journal(&t, journal_line, out), 0);
	ix_abort(&t);
	return out;
}

/* The fault backend's trace (static buffer). */
static const char *trace(struct rig *r)
{
	static char out[8192];
	backend_fault_trace(r->fb, out, sizeof(out));
	return out;
}

/* ---- The core's API, as fuse_ops.c calls it ---- */

static uint64_t do_mkdir(struct hfs *fs, uint64_t parent, const char *name)
{
	struct stat st;
	CHECK_RC(hfs_mkdir(fs, parent, name, 0755, getuid(), getgid(), &st), 0);
	CHECK(S_ISDIR(st.st_mode));
	return st.st_ino;
}

static ssize_t write_at(struct hfs *fs, struct hfs_file *fh, const char *data,
			uint64_t off)
{
	struct hfs_source src;
	hfs_source_mem(&src, data, strlen(data));
	return hfs_write(fs, fh, &src, off, false);
}

/* create + write + release, as `echo data > name` does. */
static uint64_t new_file(struct hfs *fs, uint64_t parent, const char *name,
			 const char *data)
{
	struct stat st;
	struct hfs_file *fh;
	CHECK_RC(hfs_create_file(fs, parent, name, 0644, O_WRONLY | O_CREAT,
				 getuid(), getgid(), &st, &fh),
		 0);
	CHECK(S_ISREG(st.st_mode));
	CHECK_RC(write_at(fs, fh, data, 0), (ssize_t)strlen(data));
	CHECK_RC(hfs_release(fs, fh), 0);
	return st.st_ino;
}

/* open(O_WRONLY | O_TRUNC) + write + release. */
static void rewrite(struct hfs *fs, uint64_t ino, const char *data)
{
	struct hfs_file *fh;
	CHECK_RC(hfs_open(fs, ino, O_WRONLY | O_TRUNC, &fh), 0);
	CHECK_RC(write_at(fs, fh, data, 0), (ssize_t)strlen(data));
	CHECK_RC(hfs_release(fs, fh), 0);
}

/* Reads the whole file @ino as the read path does: 0 and the bytes in
 * @buf (NUL-terminated), or the -errno of the read. */
static int read_file(struct hfs *fs, uint64_t ino, char *buf, size_t len)
{
	struct hfs_file *fh;
	struct stat st;
	int rc = hfs_open(fs, ino, O_RDONLY, &fh);
	if (rc)
		return rc;
	rc = hfs_getattr(fs, ino, &st);
	if (!rc) {
		int fd = hfs_read_fd(fs, fh, 0, (size_t)st.st_size);
		if (fd < 0) {
			rc = fd;
		} else {
			ssize_t n = pread(fd, buf, len - 1, 0);
			rc = n < 0 ? -errno : 0;
			buf[n < 0 ? 0 : n] = '\0';
		}
	}
	int rrc = hfs_release(fs, fh);
	return rc ? rc : rrc;
}

static int lookup(struct hfs *fs, uint64_t parent, const char *name,
		  struct stat *st)
{
	bool other;
	struct stat tmp;
	return hfs_lookup(fs, parent, name, st ? st : &tmp, &other);
}

struct names {
	char s[4096];
};

/* The filler of hfs_readdir: collects the names. */
static int fill_name(void *ctx, const char *name, const struct stat *st,
		     uint64_t next, bool entry)
{
	struct names *n = ctx;
	(void)st;
	(void)next;
	(void)entry;
	size_t l = strlen(n->s);
	snprintf(n->s + l, sizeof(n->s) - l, "%s%s", l ? ", " : "", name);
	return 0;
}

/* The names readdir gives for directory @ino, in order, ", "-separated
 * (static buffer). */
static const char *readdir_names(struct hfs *fs, uint64_t ino)
{
	static struct names out;
	struct hfs_dir *dh;
	out.s[0] = '\0';
	CHECK_RC(hfs_opendir(fs, ino, &dh), 0);
	CHECK_RC(hfs_readdir(fs, dh, 0, false, fill_name, &out), 0);
	hfs_releasedir(fs, dh);
	return out.s;
}

/* One upload as a flusher makes it (fs->commit_lock held). */
static int upload(struct hfs *fs, uint64_t ino, struct upload_result *res)
{
	struct upload_result tmp;
	pthread_mutex_lock(&fs->commit_lock);
	int rc = hfs_upload(fs, ino, res ? res : &tmp);
	pthread_mutex_unlock(&fs->commit_lock);
	return rc;
}

static int replay(struct hfs *fs)
{
	pthread_mutex_lock(&fs->commit_lock);
	int rc = hfs_replay_journal(fs);
	pthread_mutex_unlock(&fs->commit_lock);
	return rc;
}

/* ---- Tests ---- */

/* The fault backend itself: counts, fails, loses replies, traces. */
static void test_fault_backend(void)
{
	struct rig r;
	struct backend_entry e;
	rig_new(&r, "fault_backend");
	struct backend *be = r.fb;
	CHECK(strcmp(be->ops->name, "fault") == 0);
	backend_fault_reset_counts(be);
	backend_fault_fail(be, FAULT_MKDIR, 2, -ETIMEDOUT);
	CHECK_RC(be->ops->mkdir(be, "/m"), -ETIMEDOUT);
	CHECK(strstr(backend_last_error(), "fault injected") != NULL);
	CHECK_RC(be->ops->mkdir(be, "/m"), -ETIMEDOUT);
	CHECK(!remote_exists(&r, "/m"));
	CHECK_RC(be->ops->mkdir(be, "/m"), 0);
	CHECK(remote_is_dir(&r, "/m"));
	CHECK(backend_fault_calls(be, FAULT_MKDIR) == 3);
	CHECK(backend_fault_injected(be, FAULT_MKDIR) == 2);
	/* A lost reply: done, and reported as failed. */
	backend_fault_lose_reply(be, FAULT_MOVE, 1, -EAGAIN);
	CHECK_RC(be->ops->move(be, "/m", "/n"), -EAGAIN);
	CHECK(!remote_exists(&r, "/m") && remote_is_dir(&r, "/n"));
	/* Forever, until cleared. */
	backend_fault_fail(be, FAULT_STAT, -1, -EIO);
	for (int i = 0; i < 5; i++)
		CHECK_RC(be->ops->stat(be, "/n", &e), -EIO);
	backend_fault_clear(be);
	CHECK_RC(be->ops->stat(be, "/n", &e), 0);
	CHECK(e.is_dir);
	CHECK(strcmp(trace(&r), "mkdir /m\nmove /m /n\n") == 0);
	rig_close(&r);
}

/* lookup, create, rename, unlink, mkdir, rmdir: the index follows. */
static void test_namespace(void)
{
	struct rig r;
	struct node n;
	struct stat st;
	bool other;
	rig_new(&r, "namespace");
	struct hfs *fs = r.fs;

	uint64_t a = do_mkdir(fs, ROOT, "a");
	CHECK_RC(ix_find(fs, ROOT, "a", &n), 0);
	CHECK(n.ino == a && S_ISDIR(n.r.mode));
	CHECK_RC(hfs_mkdir(fs, ROOT, "A", 0755, getuid(), getgid(), &st),
		 -EEXIST); /* names fold, as on Dropbox */
	CHECK(strcmp(journal(fs), "mkdir /a\n") == 0);

	uint64_t f = new_file(fs, a, "f.txt", "hello");
	CHECK_RC(ix_find(fs, a, "f.txt", &n), 0);
	CHECK(n.ino == f && S_ISREG(n.r.mode) && n.r.size == 5);
	CHECK((n.r.flags & NODE_DIRTY) && in_dirty_set(fs, f));
	CHECK(!(n.r.flags & NODE_ON_REMOTE));
	CHECK_RC(lookup(fs, a, "f.txt", &st), 0);
	CHECK(st.st_ino == f && st.st_size == 5);
	CHECK_RC(hfs_lookup(fs, a, "F.TXT", &st, &other), 0);
	CHECK(st.st_ino == f && other);
	CHECK(strcmp(readdir_names(fs, a), "., .., f.txt") == 0);
	char buf[64];
	CHECK_RC(read_file(fs, f, buf, sizeof(buf)), 0);
	CHECK(strcmp(buf, "hello") == 0);

	CHECK_RC(hfs_rename(fs, a, "f.txt", a, "g.txt", 0), 0);
	CHECK_RC(lookup(fs, a, "f.txt", NULL), -ENOENT);
	CHECK_RC(ix_find(fs, a, "f.txt", &n), -ENOENT);
	CHECK_RC(lookup(fs, a, "g.txt", &st), 0);
	CHECK(st.st_ino == f);
	CHECK_RC(ix_find(fs, a, "g.txt", &n), 0);
	CHECK(n.ino == f && n.r.parent == a && strcmp(n.name, "g.txt") == 0);

	uint64_t b = do_mkdir(fs, ROOT, "b");
	CHECK_RC(hfs_rename(fs, a, "g.txt", b, "h.txt", 0), 0);
	CHECK_RC(ix_find(fs, b, "h.txt", &n), 0);
	CHECK(n.ino == f && n.r.parent == b);
	CHECK(strcmp(readdir_names(fs, a), "., ..") == 0);
	CHECK(strcmp(readdir_names(fs, b), "., .., h.txt") == 0);

	CHECK_RC(hfs_rmdir(fs, ROOT, "b"), -ENOTEMPTY);
	CHECK_RC(hfs_unlink(fs, b, "h.txt"), 0);
	CHECK_RC(lookup(fs, b, "h.txt", NULL), -ENOENT);
	CHECK_RC(ix_find(fs, b, "h.txt", &n), -ENOENT);
	/* The kernel forgets it: its record and its place in the dirty set
	 * go. */
	hfs_forget(fs, f, 3);
	CHECK(!in_dirty_set(fs, f));
	CHECK_RC(fs_get_node(fs, f, &n), -ENOENT);
	CHECK_RC(hfs_rmdir(fs, ROOT, "b"), 0);
	CHECK_RC(ix_find(fs, ROOT, "b", &n), -ENOENT);

	/* The remote gets what is left: folder a, empty. Nothing of f ever
	 * reached it, nothing of b is left. */
	CHECK_RC(replay(fs), 0);
	CHECK(strcmp(journal(fs), "") == 0);
	CHECK(strcmp(remote_names(&r, ""), "a") == 0);
	CHECK(strcmp(remote_names(&r, "/a"), "") == 0);
	CHECK(backend_fault_calls(r.fb, FAULT_UPLOAD) == 0);
	rig_close(&r);
}

struct writer {
	struct rig *r;
	uint64_t ino;
};

/* Writes while the upload is held in the backend (FAULT_UPLOAD paused). */
static void *write_during_upload(void *arg)
{
	struct writer *w = arg;
	backend_fault_wait_calls(w->r->fb, FAULT_UPLOAD, 1);
	struct hfs_file *fh;
	CHECK_RC(hfs_open(w->r->fs, w->ino, O_WRONLY, &fh), 0);
	CHECK_RC(write_at(w->r->fs, fh, "NEW", 0), 3);
	CHECK_RC(hfs_release(w->r->fs, fh), 0);
	backend_fault_pause(w->r->fb, FAULT_UPLOAD, false);
	return NULL;
}

/* dirty -> upload -> clean, a write during an upload, a failed upload and
 * one whose reply was lost. */
static void test_upload_cycle(void)
{
	struct rig r;
	struct upload_result res;
	rig_new(&r, "upload_cycle");
	struct hfs *fs = r.fs;
	uint64_t d = do_mkdir(fs, ROOT, "d");
	uint64_t f = new_file(fs, d, "notes.txt", "v1");
	struct node n = node_of(fs, f);
	CHECK((n.r.flags & NODE_DIRTY) && in_dirty_set(fs, f));

	/* The upload replays the journal first (mkdir /d), then sends. */
	CHECK_RC(upload(fs, f, &res), 0);
	CHECK(!res.skipped && !res.not_dirty && !res.still_dirty);
	CHECK(strcmp(res.path, "/d/notes.txt") == 0);
	CHECK(strcmp(trace(&r), "mkdir /d\nupload /d/notes.txt\n") == 0);
	n = node_of(fs, f);
	CHECK(!(n.r.flags & (NODE_DIRTY | NODE_UPLOADING)));
	CHECK((n.r.flags & NODE_ON_REMOTE) && (n.r.flags & NODE_CACHED));
	CHECK(n.r.rev[0] && !in_dirty_set(fs, f));
	CHECK(strcmp(remote_read(&r, "/d/notes.txt"), "v1") == 0);
	struct backend_entry meta;
	struct backend *inner = backend_fault_inner(r.fb);
	CHECK_RC(inner->ops->stat(inner, "/d/notes.txt", &meta), 0);
	CHECK(strcmp(meta.rev, n.r.rev) == 0);

	/* Clean: nothing to do. */
	CHECK_RC(upload(fs, f, &res), 0);
	CHECK(res.not_dirty);
	CHECK(backend_fault_calls(r.fb, FAULT_UPLOAD) == 1);

	/* Written again: dirty, then clean with the new bytes. */
	rewrite(fs, f, "version 2");
	n = node_of(fs, f);
	CHECK((n.r.flags & NODE_DIRTY) && in_dirty_set(fs, f));
	CHECK_RC(upload(fs, f, NULL), 0);
	CHECK(!(node_of(fs, f).r.flags & NODE_DIRTY));
	CHECK(strcmp(remote_read(&r, "/d/notes.txt"), "version 2") == 0);

	/* The same bytes again: smart sync, nothing sent. */
	unsigned long sent = backend_fault_calls(r.fb, FAULT_UPLOAD);
	rewrite(fs, f, "version 2");
	CHECK(node_of(fs, f).r.flags & NODE_DIRTY);
	CHECK_RC(upload(fs, f, &res), 0);
	CHECK(res.skipped && !(node_of(fs, f).r.flags & NODE_DIRTY));
	CHECK(backend_fault_calls(r.fb, FAULT_UPLOAD) == sent);

	/* A write while the bytes are on their way: the upload sends the
	 * snapshot, and the file stays dirty for the next one. */
	rewrite(fs, f, "old");
	struct writer w = {&r, f};
	pthread_t th;
	backend_fault_pause(r.fb, FAULT_UPLOAD, true);
	backend_fault_reset_counts(r.fb);
	CHECK(pthread_create(&th, NULL, write_during_upload, &w) == 0);
	CHECK_RC(upload(fs, f, &res), 0);
	pthread_join(th, NULL);
	CHECK(res.still_dirty);
	CHECK(strcmp(remote_read(&r, "/d/notes.txt"), "old") == 0);
	n = node_of(fs, f);
	CHECK((n.r.flags & NODE_DIRTY) && in_dirty_set(fs, f));
	CHECK(!(n.r.flags & NODE_UPLOADING));
	CHECK_RC(upload(fs, f, &res), 0);
	CHECK(!res.still_dirty && !(node_of(fs, f).r.flags & NODE_DIRTY));
	CHECK(strcmp(remote_read(&r, "/d/notes.txt"), "NEW") == 0);

	/* A transient failure: still dirty, the remote as it was. */
	rewrite(fs, f, "v3");
	backend_fault_fail(r.fb, FAULT_UPLOAD, 1, -EAGAIN);
	CHECK_RC(upload(fs, f, NULL), -EAGAIN);
	n = node_of(fs, f);
	CHECK((n.r.flags & NODE_DIRTY) && in_dirty_set(fs, f));
	CHECK(!(n.r.flags & NODE_UPLOADING));
	CHECK(strcmp(remote_read(&r, "/d/notes.txt"), "NEW") == 0);
	CHECK(backend_fault_injected(r.fb, FAULT_UPLOAD) == 1);
	CHECK_RC(upload(fs, f, NULL), 0);
	CHECK(!(node_of(fs, f).r.flags & NODE_DIRTY));
	CHECK(strcmp(remote_read(&r, "/d/notes.txt"), "v3") == 0);

	/* The server stored it but the reply was lost: the next upload finds
	 * our bytes there (no conflicted copy) and the file is clean. */
	rewrite(fs, f, "v4, its reply lost");
	backend_fault_lose_reply(r.fb, FAULT_UPLOAD, 1, -ETIMEDOUT);
	CHECK(upload(fs, f, NULL) < 0);
	CHECK(node_of(fs, f).r.flags & NODE_DIRTY);
	CHECK(strcmp(remote_read(&r, "/d/notes.txt"), "v4, its reply lost") ==
	      0);
	CHECK_RC(upload(fs, f, NULL), 0);
	n = node_of(fs, f);
	CHECK(!(n.r.flags & NODE_DIRTY));
	CHECK(strcmp(remote_names(&r, "/d"), "notes.txt") == 0);
	CHECK_RC(inner->ops->stat(inner, "/d/notes.txt", &meta), 0);
	CHECK(strcmp(meta.rev, n.r.rev) == 0);
	rig_close(&r);
}

/* The core's hooks wired to the flushers, as mount.c does. */
static void hook_dirty(void *arg, uint64_t ino, int cat, int64_t since,
		       bool first)
{
	flushers_schedule(arg, ino, cat, since, first);
}

static void hook_journal(void *arg)
{
	flushers_kick_journal(arg);
}

/* The flushers themselves (threads, no FUSE): flush uploads what is
 * dirty, reports a failure, and a later flush cleans up. */
static void test_flushers(void)
{
	struct rig r;
	rig_new(&r, "flushers");
	struct hfs *fs = r.fs;
	CHECK_RC(flushers_create(fs, &fs->fl), 0);
	hfs_set_hooks(fs, &(struct hfs_hooks){.arg = fs->fl,
					      .dirty = hook_dirty,
					      .journal = hook_journal});
	CHECK_RC(flushers_start(fs->fl), 0);
	uint64_t d = do_mkdir(fs, ROOT, "logs");
	uint64_t f1 = new_file(fs, d, "one.log", "first");
	uint64_t f2 = new_file(fs, ROOT, "two.txt", "second");
	CHECK_RC(flushers_flush(fs->fl, -1, true, 30), 0);
	CHECK(!(node_of(fs, f1).r.flags & NODE_DIRTY));
	CHECK(!(node_of(fs, f2).r.flags & NODE_DIRTY));
	CHECK(strcmp(remote_read(&r, "/logs/one.log"), "first") == 0);
	CHECK(strcmp(remote_read(&r, "/two.txt"), "second") == 0);

	/* The remote refuses for a while: flush says so, nothing is
	 * lost. */
	backend_fault_fail(r.fb, FAULT_UPLOAD, -1, -EAGAIN);
	rewrite(fs, f2, "second, changed");
	CHECK(flushers_flush(fs->fl, -1, true, 30) < 0);
	CHECK(node_of(fs, f2).r.flags & NODE_DIRTY);
	CHECK(backend_fault_injected(r.fb, FAULT_UPLOAD) >= 1);
	CHECK(strcmp(remote_read(&r, "/two.txt"), "second") == 0);
	backend_fault_clear(r.fb);
	CHECK_RC(flushers_flush(fs->fl, -1, true, 30), 0);
	CHECK(!(node_of(fs, f2).r.flags & NODE_DIRTY));
	CHECK(strcmp(remote_read(&r, "/two.txt"), "second, changed") == 0);

	/* Namespace changes too: flush means the remote looks like the
	 * mount. */
	CHECK_RC(hfs_rename(fs, ROOT, "two.txt", d, "two.log", 0), 0);
	CHECK_RC(flushers_flush(fs->fl, -1, true, 30), 0);
	CHECK(strcmp(remote_names(&r, ""), "logs") == 0);
	CHECK(strcmp(remote_names(&r, "/logs"), "one.log, two.log") == 0);
	flushers_destroy(fs->fl);
	fs->fl = NULL;
	hfs_set_hooks(fs, &(struct hfs_hooks){0});
	rig_close(&r);
}

/* Another machine changed the file while we had changes of our own:
 * both versions stay. */
static void test_conflict(void)
{
	struct rig r;
	char buf[256];
	struct node n;
	rig_new(&r, "conflict");
	struct hfs *fs = r.fs;
	uint64_t f = new_file(fs, ROOT, "c.txt", "base");
	CHECK_RC(upload(fs, f, NULL), 0);
	CHECK(strcmp(remote_read(&r, "/c.txt"), "base") == 0);

	rewrite(fs, f, "ours, written here");
	remote_write(&r, "/c.txt", "theirs, from elsewhere");

	/* The check of what is there fails for a moment: nothing is decided
	 * on a transport error (no copy made, nothing overwritten). */
	backend_fault_fail(r.fb, FAULT_STAT, 1, -EAGAIN);
	CHECK_RC(upload(fs, f, NULL), -EAGAIN);
	CHECK(node_of(fs, f).r.flags & NODE_DIRTY);
	CHECK(strcmp(remote_names(&r, ""), "c.txt") == 0);
	CHECK(strcmp(remote_read(&r, "/c.txt"), "theirs, from elsewhere") == 0);

	CHECK_RC(upload(fs, f, NULL), 0);
	/* Theirs under the name, ours beside it. */
	CHECK(strcmp(remote_read(&r, "/c.txt"), "theirs, from elsewhere") == 0);
	n = node_of(fs, f);
	CHECK(!(n.r.flags & NODE_DIRTY));
	CHECK(strcmp(n.name, "c.txt") != 0);
	CHECK(strstr(n.name, "onflict") != NULL);
	char copy[PATH_MAX];
	snprintf(copy, sizeof(copy), "/%s", n.name);
	CHECK(strcmp(remote_read(&r, copy), "ours, written here") == 0);
	char want[600];
	snprintf(want, sizeof(want), "%s, c.txt", n.name);
	CHECK(strcmp(remote_names(&r, ""), want) == 0);

	/* Locally: ours under the copy's name, theirs under the original
	 * one once the folder is listed again; both readable. */
	struct stat st;
	CHECK_RC(lookup(fs, ROOT, "c.txt", &st), 0);
	CHECK(st.st_ino != f);
	CHECK_RC(read_file(fs, st.st_ino, buf, sizeof(buf)), 0);
	CHECK(strcmp(buf, "theirs, from elsewhere") == 0);
	CHECK_RC(read_file(fs, f, buf, sizeof(buf)), 0);
	CHECK(strcmp(buf, "ours, written here") == 0);
	rig_close(&r);
}

/* mkdir, rename, unlink, rmdir: journaled in order, replayed in order,
 * a transient failure stopping the replay where it was. */
static void test_journal_order(void)
{
	struct rig r;
	rig_new(&r, "journal_order");
	struct hfs *fs = r.fs;
	uint64_t a = do_mkdir(fs, ROOT, "a");
	uint64_t b = do_mkdir(fs, a, "b");
	uint64_t f = new_file(fs, b, "f", "bytes");
	CHECK(strcmp(journal(fs), "mkdir /a\nmkdir /a/b\n") == 0);
	CHECK_RC(upload(fs, f, NULL), 0);
	CHECK(strcmp(trace(&r), "mkdir /a\nmkdir /a/b\nupload /a/b/f\n") == 0);
	CHECK(strcmp(journal(fs), "") == 0);

	uint64_t x = do_mkdir(fs, ROOT, "x");
	CHECK_RC(hfs_rename(fs, a, "b", x, "b2", 0), 0);
	CHECK_RC(hfs_unlink(fs, b, "f"), 0);
	CHECK_RC(hfs_rmdir(fs, ROOT, "a"), 0);
	CHECK(strcmp(journal(fs), "mkdir /x\n"
				  "rename /a/b /x/b2\n"
				  "unlink /x/b2/f\n"
				  "rmdir /a\n") == 0);
	/* Nothing replayed yet: the remote as it was. */
	CHECK(strcmp(remote_read(&r, "/a/b/f"), "bytes") == 0);
	/* The journal outlives the mount. */
	rig_close(&r);
	rig_open(&r);
	fs = r.fs;
	CHECK(strcmp(journal(fs), "mkdir /x\n"
				  "rename /a/b /x/b2\n"
				  "unlink /x/b2/f\n"
				  "rmdir /a\n") == 0);
	/* A mkdir done whose reply was lost is done (the next try finds
	 * it there). */
	backend_fault_lose_reply(r.fb, FAULT_MKDIR, 1, -EAGAIN);
	CHECK_RC(replay(fs), -EAGAIN);
	CHECK(remote_is_dir(&r, "/x"));
	CHECK(strstr(journal(fs), "mkdir /x\n") == journal(fs));

	/* The move fails: the mkdir before it is done, the rest waits. */
	backend_fault_reset_counts(r.fb);
	backend_fault_fail(r.fb, FAULT_MOVE, 1, -EAGAIN);
	CHECK_RC(replay(fs), -EAGAIN);
	CHECK(backend_fault_calls(r.fb, FAULT_MKDIR) == 1);
	CHECK(strcmp(trace(&r), "") == 0); /* /x was there: EEXIST */
	CHECK(strcmp(journal(fs), "rename /a/b /x/b2\n"
				  "unlink /x/b2/f\n"
				  "rmdir /a\n") == 0);
	CHECK(remote_is_dir(&r, "/x"));
	CHECK(strcmp(remote_read(&r, "/a/b/f"), "bytes") == 0);

	/* Its reply is lost next time: done on the remote, so the replay
	 * after finds the source gone and goes on. */
	backend_fault_lose_reply(r.fb, FAULT_MOVE, 1, -EAGAIN);
	CHECK_RC(replay(fs), -EAGAIN);
	CHECK(strcmp(journal(fs), "rename /a/b /x/b2\n"
				  "unlink /x/b2/f\n"
				  "rmdir /a\n") == 0);
	CHECK(strcmp(remote_read(&r, "/x/b2/f"), "bytes") == 0);

	CHECK_RC(replay(fs), 0);
	CHECK(strcmp(journal(fs), "") == 0);
	/* The move came before the deletes: had the unlink gone first,
	 * /x/b2/f would not have existed then and would survive now. */
	const char *tr = trace(&r);
	const char *mv = strstr(tr, "move /a/b /x/b2\n");
	const char *del_f = strstr(tr, " /x/b2/f\n");
	const char *del_a = strstr(tr, " /a\n");
	CHECK(mv && del_f && del_a && mv < del_f && mv < del_a);
	CHECK(strcmp(remote_names(&r, ""), "x") == 0);
	CHECK(strcmp(remote_names(&r, "/x"), "b2") == 0);
	CHECK(strcmp(remote_names(&r, "/x/b2"), "") == 0);
	struct node n;
	CHECK_RC(ix_find(fs, x, "b2", &n), 0);
	CHECK(n.ino == b);
	rig_close(&r);
}

/* A file deleted here that another machine changed meanwhile: the
 * replay leaves theirs in place, and says so. */
static void test_delete_conflict(void)
{
	struct rig r;
	struct node n;
	rig_new(&r, "delete_conflict");
	struct hfs *fs = r.fs;
	uint64_t mine = new_file(fs, ROOT, "mine.txt", "only ours");
	uint64_t theirs = new_file(fs, ROOT, "shared.txt", "as we saw it");
	CHECK_RC(upload(fs, mine, NULL), 0);
	CHECK_RC(upload(fs, theirs, NULL), 0);
	CHECK_RC(hfs_unlink(fs, ROOT, "mine.txt"), 0);
	CHECK_RC(hfs_unlink(fs, ROOT, "shared.txt"), 0);
	remote_write(&r, "/shared.txt", "changed elsewhere since");
	CHECK(strcmp(journal(fs), "unlink /mine.txt\nunlink /shared.txt\n") ==
	      0);
	/* Its reply lost the first time: replayed again, harmlessly. */
	backend_fault_lose_reply(r.fb, FAULT_REMOVE_BATCH, 1, -EAGAIN);
	CHECK(replay(fs) < 0);
	CHECK(strcmp(journal(fs), "unlink /mine.txt\nunlink /shared.txt\n") ==
	      0);
	CHECK_RC(replay(fs), 0);
	CHECK(strcmp(journal(fs), "") == 0);
	CHECK(!remote_exists(&r, "/mine.txt"));
	CHECK(strcmp(remote_read(&r, "/shared.txt"),
		     "changed elsewhere since") == 0);
	CHECK(fs->nkept == 1);
	/* And the mount shows it again. */
	struct stat st;
	char buf[256];
	CHECK_RC(lookup(fs, ROOT, "shared.txt", &st), 0);
	CHECK_RC(read_file(fs, st.st_ino, buf, sizeof(buf)), 0);
	CHECK(strcmp(buf, "changed elsewhere since") == 0);
	CHECK_RC(ix_find(fs, ROOT, "mine.txt", &n), -ENOENT);
	rig_close(&r);
}

struct up_arg {
	struct hfs *fs;
	uint64_t ino;
	int rc;
};

static void *upload_in_thread(void *arg)
{
	struct up_arg *a = arg;
	a->rc = upload(a->fs, a->ino, NULL);
	return NULL;
}

/*
 * A log rotated twice over log.2 while the upload of the first log.2 is
 * on its way: both replaced files leave a tombstone at /log.2, and the
 * second must add to the first, not replace it, or the late upload that
 * lands there is taken for another machine's file and kept (it came back
 * in the crash soak).
 */
static void test_tombstones_add_up(void)
{
	struct rig r;
	rig_new(&r, "tombstones");
	struct hfs *fs = r.fs;
	uint64_t b = new_file(fs, ROOT, "log.2", "B: the rotation before");
	uint64_t a = new_file(fs, ROOT, "log", "A: the log");
	/* A reached the remote, its answer lost: its attempt stays. */
	backend_fault_lose_reply(r.fb, FAULT_UPLOAD, 1, -EAGAIN);
	CHECK(upload(fs, a, NULL) < 0);
	CHECK(strcmp(remote_read(&r, "/log"), "A: the log") == 0);
	/* B's upload is held in the backend while the log rotates twice. */
	backend_fault_pause(r.fb, FAULT_UPLOAD, true);
	struct up_arg ua = {fs, b, 0};
	pthread_t th;
	CHECK(pthread_create(&th, NULL, upload_in_thread, &ua) == 0);
	backend_fault_wait_calls(r.fb, FAULT_UPLOAD, 2);
	CHECK_RC(hfs_rename(fs, ROOT, "log", ROOT, "log.2", 0), 0);
	new_file(fs, ROOT, "log", "C: the next log");
	CHECK_RC(hfs_rename(fs, ROOT, "log", ROOT, "log.2", 0), 0);
	backend_fault_pause(r.fb, FAULT_UPLOAD, false);
	pthread_join(th, NULL);
	CHECK(strcmp(remote_read(&r, "/log.2"), "B: the rotation before") == 0);
	/* The replay deletes B's late upload and A: nothing is kept. */
	CHECK_RC(replay(fs), 0);
	CHECK(strcmp(journal(fs), "") == 0);
	CHECK(fs->nkept == 0);
	CHECK(!remote_exists(&r, "/log"));
	CHECK(!remote_exists(&r, "/log.2") ||
	      strcmp(remote_read(&r, "/log.2"), "C: the next log") == 0);
	rig_close(&r);
}

/*
 * The remote is unreachable (list, stat, download fail with -EAGAIN,
 * -ETIMEDOUT or -EIO): lookups answer from the index, reads fail with EIO,
 * and nothing is deleted, locally or remotely.
 */
static void test_transport_errors(void)
{
	struct rig r;
	struct stat st;
	struct node n;
	char buf[256];
	rig_new(&r, "transport");
	remote_mkdir(&r, "/t");
	remote_mkdir(&r, "/t/sub");
	remote_write(&r, "/t/keep.txt", "remote bytes");
	struct hfs *fs = r.fs;
	CHECK_RC(lookup(fs, ROOT, "t", &st), 0);
	uint64_t t = st.st_ino;
	CHECK_RC(lookup(fs, t, "keep.txt", &st), 0);
	uint64_t keep = st.st_ino;
	uint64_t local = new_file(fs, t, "local.txt", "made here");
	CHECK_RC(upload(fs, local, NULL), 0);
	CHECK(strcmp(remote_names(&r, "/t"), "keep.txt, local.txt, sub") == 0);

	/* A new mount: every listing is from before it, so every lookup
	 * wants the remote. */
	rig_close(&r);
	rig_open(&r);
	fs = r.fs;
	static const int errs[] = {-EAGAIN, -ETIMEDOUT, -EIO};
	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
		backend_fault_clear(r.fb);
		backend_fault_reset_counts(r.fb);
		atomic_store(&fs->offline_until, 0);
		backend_fault_fail(r.fb, FAULT_LIST, -1, errs[i]);
		backend_fault_fail(r.fb, FAULT_LIST_TREE, -1, errs[i]);
		backend_fault_fail(r.fb, FAULT_STAT, -1, errs[i]);
		backend_fault_fail(r.fb, FAULT_DOWNLOAD, -1, errs[i]);
		CHECK_RC(lookup(fs, ROOT, "t", &st), 0);
		CHECK(st.st_ino == t);
		CHECK(backend_fault_injected(r.fb, FAULT_LIST) >= 1);
		atomic_store(&fs->offline_until, 0);
		CHECK_RC(lookup(fs, t, "keep.txt", &st), 0);
		CHECK(st.st_ino == keep && st.st_size == 12);
		atomic_store(&fs->offline_until, 0);
		CHECK(strcmp(readdir_names(fs, t),
			     "., .., keep.txt, local.txt, sub") == 0);
		/* Bytes we do not have: EIO, never "no such file". */
		int rc = read_file(fs, keep, buf, sizeof(buf));
		CHECK(rc != -ENOENT && rc < 0);
		/* The backends report transport failures as -EAGAIN
		 * (backend_api.h); fetch.c makes that EIO. An -ETIMEDOUT,
		 * which no backend returns, passes through as it is. */
		if (errs[i] != -ETIMEDOUT)
			CHECK_RC(rc, -EIO);
		CHECK(backend_fault_injected(r.fb, FAULT_DOWNLOAD) >= 1);
		n = node_of(fs, keep);
		CHECK(!(n.r.flags & (NODE_LOST | NODE_CACHED)));
		/* Bytes we have: read as ever. */
		CHECK_RC(read_file(fs, local, buf, sizeof(buf)), 0);
		CHECK(strcmp(buf, "made here") == 0);
	}
	/* A download done whose reply was lost leaves nothing half-made:
	 * EIO, and the next read has every byte. */
	backend_fault_clear(r.fb);
	backend_fault_lose_reply(r.fb, FAULT_DOWNLOAD, 1, -EAGAIN);
	CHECK_RC(read_file(fs, keep, buf, sizeof(buf)), -EIO);
	CHECK_RC(read_file(fs, keep, buf, sizeof(buf)), 0);
	CHECK(strcmp(buf, "remote bytes") == 0);

	/* A delete the remote cannot take now stays in the journal. */
	CHECK_RC(hfs_unlink(fs, t, "keep.txt"), 0);
	backend_fault_fail(r.fb, FAULT_LIST, -1, -EAGAIN);
	backend_fault_fail(r.fb, FAULT_LIST_TREE, -1, -EAGAIN);
	backend_fault_fail(r.fb, FAULT_STAT, -1, -EAGAIN);
	backend_fault_fail(r.fb, FAULT_REMOVE, -1, -EAGAIN);
	backend_fault_fail(r.fb, FAULT_REMOVE_BATCH, -1, -EAGAIN);
	CHECK(replay(fs) < 0);
	CHECK(strcmp(journal(fs), "unlink /t/keep.txt\n") == 0);
	CHECK(strcmp(remote_read(&r, "/t/keep.txt"), "remote bytes") == 0);

	/* Back online: the delete goes, and nothing else did. */
	backend_fault_clear(r.fb);
	atomic_store(&fs->offline_until, 0);
	CHECK_RC(replay(fs), 0);
	CHECK(!remote_exists(&r, "/t/keep.txt"));
	CHECK(strcmp(remote_names(&r, "/t"), "local.txt, sub") == 0);
	CHECK(strcmp(readdir_names(fs, t), "., .., local.txt, sub") == 0);
	CHECK_RC(ix_find(fs, t, "local.txt", &n), 0);
	CHECK(n.ino == local);
	CHECK_RC(ix_find(fs, t, "sub", &n), 0);
	rig_close(&r);
}

/*
 * An explicit mtime (utime) is never overwritten by the times a release
 * of the same file read before it: with the index's writer held, a utime
 * waits for it, then a release of the file written just before (as the
 * kernel sends RELEASE after close(2) has returned) waits too. Whatever
 * order they then run in, the index ends with the utime's mtime.
 */
struct timed_call {
	struct hfs *fs;
	uint64_t ino;
	struct hfs_file *fh;
	int rc;
};

static void *utime_in_thread(void *arg)
{
	struct timed_call *c = arg;
	struct stat attr, out;
	memset(&attr, 0, sizeof(attr));
	attr.st_atim.tv_sec = 1500000000;
	attr.st_atim.tv_nsec = 111111111;
	attr.st_mtim.tv_sec = 1600000000;
	attr.st_mtim.tv_nsec = 222222222;
	c->rc = hfs_setattr(c->fs, c->ino, &attr, HFS_SET_ATIME | HFS_SET_MTIME,
			    NULL, &out);
	return NULL;
}

static void *release_in_thread(void *arg)
{
	struct timed_call *c = arg;
	c->rc = hfs_release(c->fs, c->fh);
	return NULL;
}

static void test_utime_beats_late_release(void)
{
	struct rig r;
	rig_new(&r, "utime_beats_late_release");
	const int64_t want = 1600000000222222222LL;
	for (int i = 0; i < 8; i++) {
		char name[32];
		snprintf(name, sizeof(name), "f%d", i);
		struct stat st;
		struct hfs_file *fh;
		CHECK_RC(hfs_create_file(r.fs, ROOT, name, 0644,
					 O_WRONLY | O_CREAT, getuid(), getgid(),
					 &st, &fh),
			 0);
		CHECK_RC(write_at(r.fs, fh, "bytes", 0), 5);
		struct timed_call u = {r.fs, st.st_ino, NULL, 1};
		struct timed_call rel = {r.fs, st.st_ino, fh, 1};
		struct ixtxn t;
		pthread_t tu, tr;
		CHECK_RC(ix_begin(r.fs->ix, true, &t), 0);
		CHECK(pthread_create(&tu, NULL, utime_in_thread, &u) == 0);
		usleep(30000);
		CHECK(pthread_create(&tr, NULL, release_in_thread, &rel) == 0);
		usleep(30000);
		ix_abort(&t);
		pthread_join(tu, NULL);
		pthread_join(tr, NULL);
		CHECK_RC(u.rc, 0);
		CHECK_RC(rel.rc, 0);
		CHECK_RC(hfs_getattr(r.fs, st.st_ino, &st), 0);
		CHECK(st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec ==
		      want);
		CHECK(node_of(r.fs, st.st_ino).r.mtime_ns == want);
		CHECK(node_of(r.fs, st.st_ino).r.size == 5);
	}
	rig_close(&r);
}

static int rm_entry(const char *path, const struct stat *st, int flag,
		    struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

int main(void)
{
	CHECK(mkdtemp(tmpdir));
	hlog_threshold = getenv("HFS_TEST_DEBUG") ? LOG_DEBUG : LOG_ERR;
	test_fault_backend();
	test_namespace();
	test_upload_cycle();
	test_flushers();
	test_conflict();
	test_journal_order();
	test_delete_conflict();
	test_tombstones_add_up();
	test_transport_errors();
	test_utime_beats_late_release();
	if (!getenv("HFS_KEEP_TMP"))
		nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	printf("core: all tests passed\n");
	return 0;
}

/*
 * Run folders (see runs.h).
 *
 * The pending set holds the run folders in which something was uploaded
 * since the last report; runs_report() looks at each once the flusher's
 * batch is done. A report is logged when nothing in the folder is left to
 * upload and its results differ from the last ones logged for it, so a
 * folder whose artefacts arrive over several flushes is reported as it
 * completes, once per change.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs_i.h"
#include "hfs/log.h"
#include "hfs/runs.h"
#include "hfs/watcher.h"

#define RUNS_MAX 4096

struct run_seen {
	char *path; /* the run folder, "/models/training/D/S" */
	char results[128]; /* the results last logged; "" if none */
	bool pending; /* uploaded into since the last report */
};

struct runs {
	pthread_mutex_t mu; /* protects everything below */
	struct run_seen *v;
	size_t n, cap;
};

int runs_create(struct runs **out)
{
	struct runs *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	pthread_mutex_init(&r->mu, NULL);
	*out = r;
	return 0;
}

void runs_destroy(struct runs *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n; i++)
		free(r->v[i].path);
	free(r->v);
	pthread_mutex_destroy(&r->mu);
	free(r);
}

/* Copies the @idx-th component of @path (from 0) into @out. */
static bool component(const char *path, int idx, char *out, size_t len)
{
	const char *p = path;
	for (int i = 0; i <= idx; i++) {
		while (*p == '/')
			p++;
		if (!*p)
			return false;
		const char *end = strchr(p, '/');
		size_t l = end ? (size_t)(end - p) : strlen(p);
		if (i == idx) {
			if (l + 1 > len)
				return false;
			memcpy(out, p, l);
			out[l] = '\0';
			return true;
		}
		p += l;
	}
	return false;
}

size_t runs_parse(const char *path, char *date, size_t datelen, char *symbol,
		  size_t symlen)
{
	char a[BACKEND_NAME_MAX + 1], b[BACKEND_NAME_MAX + 1];
	if (!component(path, 0, a, sizeof(a)) || strcmp(a, "models") != 0 ||
	    !component(path, 1, b, sizeof(b)) || strcmp(b, "training") != 0 ||
	    !component(path, 2, date, datelen) ||
	    !component(path, 3, symbol, symlen) ||
	    !component(path, 4, a, sizeof(a)))
		return 0;
	return strlen("/models/training/") + strlen(date) + 1 + strlen(symbol);
}

/* "SOL-USDT" -> "SOL/USDT", as the seed's log lines name symbols. */
static void pair_name(const char *symbol, char *out, size_t len)
{
	snprintf(out, len, "%s", symbol);
	for (char *p = out; *p; p++)
		if (*p == '-' || *p == '_')
			*p = '/';
}

static void mark_pending(struct hfs *fs, const char *run)
{
	struct runs *r = fs->runs;
	pthread_mutex_lock(&r->mu);
	for (size_t i = 0; i < r->n; i++) {
		if (strcmp(r->v[i].path, run) == 0) {
			r->v[i].pending = true;
			pthread_mutex_unlock(&r->mu);
			return;
		}
	}
	if (r->n == r->cap && r->cap < RUNS_MAX) {
		size_t cap = r->cap ? r->cap * 2 : 16;
		struct run_seen *nv = realloc(r->v, cap * sizeof(*nv));
		if (nv) {
			r->v = nv;
			r->cap = cap;
		}
	}
	if (r->n < r->cap) {
		r->v[r->n].path = strdup(run);
		if (r->v[r->n].path) {
			r->v[r->n].results[0] = '\0';
			r->v[r->n].pending = true;
			r->n++;
		}
	}
	pthread_mutex_unlock(&r->mu);
}

/* True if metadata file @mino was written by huracanfs and names another
 * content hash than @hash. */
static bool ours_and_stale(struct hfs *fs, uint64_t mino, const char *hash)
{
	char buf[8192];
	if (fs_fetch(fs, mino))
		return false;
	int fd = cache_open_read(fs->cache, mino);
	if (fd < 0)
		return false;
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	json_t *j = json_loads(buf, 0, NULL);
	const char *by = json_string_value(json_object_get(j, "generated_by"));
	const char *old = json_string_value(json_object_get(j, "content_hash"));
	bool stale = by && strcmp(by, "huracanfs") == 0 &&
		     (!old || strcmp(old, hash) != 0);
	json_decref(j);
	return stale;
}

/* Replaces the bytes of file @ino as a writer would (open O_TRUNC, write,
 * close), and drops what the kernel cached of it. */
static int rewrite_file(struct hfs *fs, uint64_t ino, const char *data,
			size_t len)
{
	struct hfs_file *fh;
	int rc = hfs_open(fs, ino, O_WRONLY | O_TRUNC, &fh);
	if (rc)
		return rc;
	struct hfs_source src;
	hfs_source_mem(&src, data, len);
	ssize_t w = hfs_write(fs, fh, &src, 0, true); /* all or nothing */
	rc = hfs_release(fs, fh);
	if (w < 0)
		return (int)w;
	fs_tell_inval_inode(fs, ino, 0, 0);
	return rc;
}

/* Writes and uploads model_metadata.json beside model.bin @ino. */
static void write_metadata(struct hfs *fs, uint64_t ino, const char *path,
			   const char *date, const char *symbol)
{
	struct node n;
	struct ixtxn t;
	uint64_t mino;
	if (fs_get_node(fs, ino, &n) || !(n.r.flags & NODE_HAS_HASH))
		return;
	/* Whatever the remote folder holds must be known first. */
	if (fs_ensure_listed(fs, n.r.parent, true))
		return;
	if (ix_begin(fs->ix, false, &t))
		return;
	int rc = ix_lookup(&t, n.r.parent, "model_metadata.json", &mino, NULL);
	ix_abort(&t);
	char hash[CHASH_HEXLEN + 1], when[32], pair[64];
	chash_to_hex(n.r.remote_hash, hash);
	bool replace = false;
	if (rc == 0) {
		/* One of ours describing an older model is brought up to
		 * date; the trainer's own is never touched. */
		if (!ours_and_stale(fs, mino, hash))
			return;
		replace = true;
	} else if (rc != -ENOENT) {
		return;
	}

	time_t now = (time_t)hfs_now();
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	pair_name(symbol, pair, sizeof(pair));
	json_t *j =
		json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:s, s:s}",
			  "symbol", pair, "symbol_folder", symbol, "date", date,
			  "model_path", path, "size", (json_int_t)n.r.size,
			  "content_hash", hash, "upload_timestamp", when,
			  "remote_rev", n.r.rev, "generated_by", "huracanfs");
	char *text =
		j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	json_decref(j);
	if (!text)
		return;
	size_t len = strlen(text);
	text[len++] = '\n'; /* json_dumps leaves room for the NUL */
	rc = replace ? rewrite_file(fs, mino, text, len)
		     : fs_create_file(fs, n.r.parent, "model_metadata.json",
				      text, len, &mino);
	free(text);
	if (rc) {
		hlog_warn("model_metadata for \"%s\" not written: %s", path,
			  strerror(-rc));
		return;
	}
	struct upload_result res;
	rc = hfs_upload(fs, mino, &res);
	if (rc)
		hlog_warn("model_metadata for \"%s\" written; its upload "
			  "failed (%s) and will be retried",
			  path, strerror(-rc));
	else
		hlog_info("model_metadata_created path=%s symbol=%s", res.path,
			  pair);
}

/* Copies run candles @path to data/candles/{symbol}/ on the remote. */
static void share_candles(struct hfs *fs, const char *path, const char *symbol)
{
	const char *base = strrchr(path, '/');
	char to[4096];
	if (!base)
		return;
	snprintf(to, sizeof(to), "/data/candles/%s%s", symbol, base);
	int rc = fs->be->ops->copy(fs->be, path, to);
	if (rc == -EEXIST) {
		hlog_debug("shared candles \"%s\" already there", to);
		return;
	}
	if (rc) {
		hlog_warn(
			"shared candles copy \"%s\" -> \"%s\" failed: %s (%s)",
			path, to, strerror(-rc), backend_last_error());
		return;
	}
	watcher_apply(fs, to); /* list that folder again when next used */
	hlog_info("candle_data_shared from=%s to=%s", path, to);
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t ls = strlen(s), lx = strlen(suffix);
	return ls >= lx && strcasecmp(s + ls - lx, suffix) == 0;
}

void runs_uploaded(struct hfs *fs, uint64_t ino, const char *path)
{
	char date[BACKEND_NAME_MAX + 1], symbol[BACKEND_NAME_MAX + 1];
	char part[BACKEND_NAME_MAX + 1];
	size_t prefix =
		runs_parse(path, date, sizeof(date), symbol, sizeof(symbol));
	if (!prefix || !component(path, 4, part, sizeof(part)))
		return;
	char run[4096];
	snprintf(run, sizeof(run), "%.*s", (int)prefix, path);
	mark_pending(fs, run);
	const char *base = strrchr(path, '/') + 1;
	if (fs->cfg->model_metadata && strcmp(part, "model") == 0 &&
	    strcmp(base, "model.bin") == 0 &&
	    !component(path, 6, part, sizeof(part)))
		write_metadata(fs, ino, path, date, symbol);
	if (fs->cfg->shared_candles && strcmp(part, "data") == 0 &&
	    ends_with(base, ".parquet"))
		share_candles(fs, path, symbol);
}

struct scan {
	struct ixtxn *t;
	bool busy; /* something in it is still to upload */
	int depth;
};

static int scan_child(void *arg, const char *name, uint64_t ino)
{
	struct scan *s = arg;
	struct node n;
	(void)name;
	if (ix_get(s->t, ino, &n))
		return 0;
	if (n.r.flags & (NODE_DIRTY | NODE_UPLOADING)) {
		s->busy = true;
		return 1;
	}
	if (S_ISDIR(n.r.mode) && s->depth < 16) {
		s->depth++;
		int rc = ix_foreach_child(s->t, ino, scan_child, s);
		s->depth--;
		return rc;
	}
	return 0;
}

struct finder {
	struct ixtxn *t;
	const char *suffix; /* NULL: any file */
	bool found;
};

static int find_uploaded(void *arg, const char *name, uint64_t ino)
{
	struct finder *f = arg;
	struct node n;
	if (f->suffix && !ends_with(name, f->suffix))
		return 0;
	if (ix_get(f->t, ino, &n) == 0 && S_ISREG(n.r.mode) &&
	    (n.r.flags & NODE_ON_REMOTE) && !(n.r.flags & NODE_DIRTY)) {
		f->found = true;
		return 1;
	}
	return 0;
}

/* True if folder @dir of run folder @run holds an uploaded file: @name,
 * or one ending in @suffix, or any. */
static bool has_uploaded(struct ixtxn *t, uint64_t run, const char *dir,
			 const char *name, const char *suffix)
{
	uint64_t d, f;
	struct node n;
	if (ix_lookup(t, run, dir, &d, NULL))
		return false;
	if (name)
		return ix_lookup(t, d, name, &f, NULL) == 0 &&
		       ix_get(t, f, &n) == 0 && (n.r.flags & NODE_ON_REMOTE) &&
		       !(n.r.flags & NODE_DIRTY);
	struct finder fd = {t, suffix, false};
	ix_foreach_child(t, d, find_uploaded, &fd);
	return fd.found;
}

/* Looks at run folder @run; fills @results if nothing is left to upload. */
static bool run_complete(struct hfs *fs, const char *run, char *results,
			 size_t len)
{
	uint64_t ino;
	if (fs_resolve(fs, run, &ino))
		return false;
	struct ixtxn t;
	if (ix_begin(fs->ix, false, &t))
		return false;
	struct scan s = {.t = &t};
	ix_foreach_child(&t, ino, scan_child, &s);
	if (!s.busy) {
		static const char *const T = "True", *const F = "False";
		snprintf(results, len,
			 "{'model': %s, 'metrics': %s, 'features': %s, "
			 "'candle_data': %s, 'trades': %s}",
			 has_uploaded(&t, ino, "model", "model.bin", NULL) ? T
									   : F,
			 has_uploaded(&t, ino, "metrics", NULL, NULL) ? T : F,
			 has_uploaded(&t, ino, "features", NULL, NULL) ? T : F,
			 has_uploaded(&t, ino, "data", NULL, ".parquet") ? T
									 : F,
			 has_uploaded(&t, ino, "results", "trades.csv", NULL)
				 ? T
				 : F);
	}
	ix_abort(&t);
	return !s.busy;
}

void runs_report(struct hfs *fs)
{
	struct runs *r = fs->runs;
	for (;;) {
		char run[4096] = "";
		pthread_mutex_lock(&r->mu);
		size_t i;
		for (i = 0; i < r->n; i++) {
			if (r->v[i].pending) {
				r->v[i].pending = false;
				snprintf(run, sizeof(run), "%s", r->v[i].path);
				break;
			}
		}
		pthread_mutex_unlock(&r->mu);
		if (!run[0])
			return;
		char results[128], date[BACKEND_NAME_MAX + 1],
			symbol[BACKEND_NAME_MAX + 1], pair[64];
		if (!run_complete(fs, run, results, sizeof(results)))
			continue;
		pthread_mutex_lock(&r->mu);
		bool same = i < r->n && strcmp(r->v[i].path, run) == 0 &&
			    strcmp(r->v[i].results, results) == 0;
		if (!same && i < r->n && strcmp(r->v[i].path, run) == 0)
			snprintf(r->v[i].results, sizeof(r->v[i].results), "%s",
				 results);
		pthread_mutex_unlock(&r->mu);
		if (same)
			continue;
		char probe[4200];
		snprintf(probe, sizeof(probe), "%s/x", run);
		runs_parse(probe, date, sizeof(date), symbol, sizeof(symbol));
		pair_name(symbol, pair, sizeof(pair));
		hlog_info("comprehensive_dropbox_upload_complete symbol=%s "
			  "date=%s path=%s results=%s",
			  pair, date, run, results);
	}
}

/*
 * The "dropbox" backend (see backend_dropbox.h, backend_api.h,
 * dropbox-api.md): its creation and ops table, and the reads (probe,
 * list, stat, download, list_tree, the change feed, space). Calls,
 * retries and tokens are in dbx_api.c, uploads in dbx_upload.c, namespace
 * changes in dbx_ns.c (the map is in dbx_i.h).
 *
 * A download that breaks after some bytes resumes with a Range request for
 * the rest, pinned to the revision the first reply named (dl_resume).
 * list_tree is a recursive list_folder that includes non-downloadable
 * files, so that a proof of what a folder holds misses nothing.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dbx_i.h"
#include "hfs/err.h"
#include "hfs/config.h"

#define MiB ((uint64_t)1024 * 1024)
#define DBX_LIST_LIMIT 2000
#define DBX_LONGPOLL_MIN 30
#define DBX_LONGPOLL_MAX 480
#define DBX_LONGPOLL_SLACK (90 + 30)

static const struct dbx_tuning dbx_defaults = {
	.max_attempts = 6,
	.backoff_base_ms = 1000,
	.backoff_cap_ms = 16000,
	.budget_ms = 60000,
	.single_max = 16 * MiB,
	.chunk = 32 * MiB,
};

static const struct backend_ops dbx_ops;

/* ---- probe ---- */

static int dbx_probe(struct backend *be)
{
	struct dbx *db = dbx_of(be);
	char detail[400];
	struct call c;
	int rc;

	dbx_api_call_init(&c, "users/get_current_account", HOST_API, STYLE_RPC,
			  NULL);
	c.max_attempts = 2;
	rc = dbx_api_call(db, &c);
	if (rc == 0 && dbx_parse_account(c.resp.body, c.resp.body_len) < 0) {
		backend_set_error("users/get_current_account: malformed reply");
		rc = -EIO;
	}
	if (rc == -EACCES) {
		snprintf(detail, sizeof(detail), "%s", backend_last_error());
		backend_set_error("Verify Dropbox token is valid: %s", detail);
	} else if (rc < 0 && c.transport_rc == -ECONNABORTED) {
		/* Not a network that is down: a server we do not trust, or a
		 * CA file we cannot use. That will not pass by itself. */
		const char *host = db->api_url + 8; /* after "https://" */
		size_t hlen = strcspn(host, "/");

		snprintf(detail, sizeof(detail), "%s", c.resp.error);
		backend_set_error(
			"TLS certificate of %.*s failed verification: "
			"%s; check huracanfs.ca_file and "
			"huracanfs.api_url",
			(int)hlen, host, detail);
		rc = -ECONNABORTED;
	}
	dbx_api_call_release(&c);
	return rc;
}

/* Creates the mount root folder; an existing one is fine. */
static int ensure_root(struct dbx *db)
{
	struct call c;
	char *arg;
	int rc;

	if (!db->root[0])
		return 0;
	arg = dbx_api_encode(
		json_pack("{s:s, s:b}", "path", db->root, "autorename", 0),
		false);
	if (!arg)
		return -ENOMEM;
	dbx_api_call_init(&c, "files/create_folder_v2", HOST_API, STYLE_RPC,
			  db->root);
	c.arg = arg;
	rc = dbx_api_call(db, &c);
	if (rc == -EEXIST)
		rc = 0;
	dbx_api_call_release(&c);
	free(arg);
	return rc;
}

/* ---- list, stat ---- */

static int dbx_list(struct backend *be, const char *path, const char *cursor,
		    struct backend_page *page)
{
	struct dbx *db = dbx_of(be);
	char *full = NULL, *arg = NULL;
	bool created = false;
	struct call c;
	int rc;

	rc = dbx_api_full_path(db, path, true, &full);
	if (rc < 0)
		return rc;
	if (cursor)
		arg = dbx_api_encode(json_pack("{s:s}", "cursor", cursor),
				     false);
	else
		arg = dbx_api_encode(json_pack("{s:s, s:b, s:b, s:b, s:i}",
					       "path", full, "recursive", 0,
					       "include_deleted", 0,
					       "include_non_downloadable_files",
					       0, "limit", DBX_LIST_LIMIT),
				     false);
	if (!arg) {
		free(full);
		return -ENOMEM;
	}
again:
	dbx_api_call_init(
		&c, cursor ? "files/list_folder/continue" : "files/list_folder",
		HOST_API, STYLE_RPC, path[0] ? path : "/");
	c.arg = arg;
	rc = dbx_api_call(db, &c);
	if (rc == -ENOENT && !cursor && !path[0] && !created) {
		/* The mount root does not exist yet: an empty folder. */
		dbx_api_call_release(&c);
		created = true;
		rc = ensure_root(db);
		if (rc == 0)
			goto again;
		goto out;
	}
	if (rc == 0) {
		rc = dbx_parse_list_page(c.resp.body, c.resp.body_len, full,
					 page);
		if (rc == -EIO)
			backend_set_error("%s %s: malformed reply", c.route,
					  path);
	}
	dbx_api_call_release(&c);
out:
	free(arg);
	free(full);
	return rc;
}

static int dbx_stat(struct backend *be, const char *path,
		    struct backend_entry *out)
{
	struct dbx *db = dbx_of(be);
	struct dbx_meta m;
	char *full;
	int rc;

	rc = dbx_api_full_path(db, path, false, &full);
	if (rc < 0)
		return rc;
	rc = dbx_api_get_meta(db, full, path, &m);
	if (rc == 0) {
		dbx_meta_to_entry(&m, out);
		dbx_meta_release(&m);
	}
	free(full);
	return rc;
}

/* ---- download ---- */

struct dl_state {
	const char *what;
	char rev[BACKEND_REV_MAX + 1]; /* pinned after the first reply */
	char *arg; /* owned: the current header arg */
};

/* Pins the rest of a broken download to the revision it started with. */
static int dl_resume(struct call *c, void *ud)
{
	struct dl_state *st = ud;
	struct dbx_meta m;
	char path[BACKEND_REV_MAX + 8];
	char *arg;

	if (!st->rev[0]) {
		if (!c->resp.api_result ||
		    dbx_meta_parse_text(c->resp.api_result,
					strlen(c->resp.api_result),
					DBX_FILE_ONLY, &m) < 0) {
			backend_set_error("files/download %s: malformed "
					  "Dropbox-API-Result",
					  st->what);
			return -EIO;
		}
		memcpy(st->rev, m.rev, sizeof(st->rev));
		dbx_meta_release(&m);
	}
	snprintf(path, sizeof(path), "rev:%s", st->rev);
	arg = dbx_api_encode(json_pack("{s:s}", "path", path), true);
	if (!arg)
		return -ENOMEM;
	free(st->arg);
	st->arg = arg;
	c->arg = arg;
	return 0;
}

static int dbx_download(struct backend *be, const char *path, const char *rev,
			uint64_t off, uint64_t len, int fd, uint64_t *got,
			struct backend_entry *out)
{
	struct dbx *db = dbx_of(be);
	struct dl_state st;
	struct dbx_meta m;
	struct chash h;
	uint8_t digest[CHASH_LEN];
	char rpath[BACKEND_REV_MAX + 8];
	bool whole = off == 0 && len == 0, hashing = false;
	char *full = NULL;
	struct call c;
	int rc;

	memset(&st, 0, sizeof(st));
	memset(&m, 0, sizeof(m));
	st.what = path;
	rc = dbx_api_full_path(db, path, false, &full);
	if (rc < 0)
		return rc;
	if (rev) {
		if (!dbx_rev_ok(rev)) {
			backend_set_error("invalid revision for \"%s\"", path);
			rc = -EINVAL;
			goto out;
		}
		snprintf(rpath, sizeof(rpath), "rev:%s", rev);
		snprintf(st.rev, sizeof(st.rev), "%s", rev);
	}
	st.arg = dbx_api_encode(json_pack("{s:s}", "path", rev ? rpath : full),
				true);
	if (!st.arg) {
		rc = -ENOMEM;
		goto out;
	}
	if (whole) {
		rc = chash_init(&h);
		if (rc < 0)
			goto out;
		hashing = true;
	}
	dbx_api_call_init(&c, "files/download", HOST_CONTENT, STYLE_DOWNLOAD,
			  path);
	c.arg = st.arg;
	c.sink_fd = fd;
	c.sink_off = off;
	c.range_start = off;
	c.range_len = len;
	c.range = !whole;
	c.hash = hashing ? &h : NULL;
	c.resume = dl_resume;
	c.resume_ud = &st;
	rc = dbx_api_call(db, &c);
	if (rc == 0 && c.resp.status == 416) {
		/* Asked for bytes past the end: nothing to read. */
		*got = 0;
		goto done;
	}
	if (rc < 0)
		goto done;
	c.got += c.resp.written;
	if (!c.resp.api_result ||
	    dbx_meta_parse_text(c.resp.api_result, strlen(c.resp.api_result),
				DBX_FILE_ONLY, &m) < 0 ||
	    !m.name_ok) {
		backend_set_error("files/download %s: malformed or missing "
				  "Dropbox-API-Result",
				  path);
		rc = -EIO;
		goto done;
	}
	if (whole) {
		rc = chash_final(&h, digest);
		hashing = false;
		if (rc < 0)
			goto done;
		if (c.got != m.size) {
			backend_set_error("files/download %s: got %" PRIu64
					  " bytes, the file has %" PRIu64,
					  path, c.got, m.size);
			rc = -EIO;
			goto done;
		}
		if (m.has_hash && memcmp(digest, m.hash, CHASH_LEN) != 0) {
			backend_set_error("files/download %s: content hash "
					  "mismatch; the downloaded bytes are "
					  "not trusted",
					  path);
			rc = -EIO;
			goto done;
		}
	} else if (off < m.size) {
		uint64_t want = len && len < m.size - off ? len : m.size - off;

		if (c.got != want) {
			backend_set_error("files/download %s: got %" PRIu64
					  " of %" PRIu64 " bytes",
					  path, c.got, want);
			rc = -EIO;
			goto done;
		}
	}
	*got = c.got;
	if (out) {
		dbx_meta_to_entry(&m, out);
		if (rev && !m.rev[0])
			snprintf(out->rev, sizeof(out->rev), "%s", rev);
	}
done:
	if (hashing)
		chash_release(&h);
	dbx_meta_release(&m);
	dbx_api_call_release(&c);
out:
	free(st.arg);
	free(full);
	return rc;
}

/* ---- list_tree ---- */

static int dbx_list_tree(struct backend *be, const char *path,
			 const char *cursor, struct backend_page *page)
{
	struct dbx *db = dbx_of(be);
	char *full = NULL, *arg;
	struct call c;
	size_t i, k;
	int rc;

	rc = dbx_api_full_path(db, path, false, &full);
	if (rc < 0)
		return rc;
	if (cursor)
		arg = dbx_api_encode(json_pack("{s:s}", "cursor", cursor),
				     false);
	else
		arg = dbx_api_encode(json_pack("{s:s, s:b, s:b, s:b, s:i}",
					       "path", full, "recursive", 1,
					       "include_deleted", 0,
					       "include_non_downloadable_files",
					       1, "limit", DBX_LIST_LIMIT),
				     false);
	free(full);
	if (!arg)
		return -ENOMEM;
	dbx_api_call_init(
		&c, cursor ? "files/list_folder/continue" : "files/list_folder",
		HOST_API, STYLE_RPC, path);
	c.arg = arg;
	rc = dbx_api_call(db, &c);
	if (rc == 0) {
		rc = dbx_parse_tree_page(c.resp.body, c.resp.body_len, db->root,
					 page);
		if (rc == -EIO)
			backend_set_error("%s %s: malformed reply", c.route,
					  path);
	}
	dbx_api_call_release(&c);
	free(arg);
	if (rc < 0)
		return rc;
	/* The folder itself is in a recursive listing: not below it. */
	for (i = k = 0; i < page->n; i++) {
		if (dbx_name_equal(page->entries[i].path, path)) {
			free(page->entries[i].path);
			continue;
		}
		page->entries[k++] = page->entries[i];
	}
	page->n = k;
	return 0;
}

/* ---- change tracking ---- */

static int dbx_latest_cursor(struct backend *be, char **cursor)
{
	struct dbx *db = dbx_of(be);
	bool created = false;
	struct call c;
	char *arg;
	int rc;

	arg = dbx_api_encode(json_pack("{s:s, s:b, s:b, s:b}", "path", db->root,
				       "recursive", 1, "include_deleted", 0,
				       "include_non_downloadable_files", 0),
			     false);
	if (!arg)
		return -ENOMEM;
again:
	dbx_api_call_init(&c, "files/list_folder/get_latest_cursor", HOST_API,
			  STYLE_RPC, "/");
	c.arg = arg;
	rc = dbx_api_call(db, &c);
	if (rc == -ENOENT && !created) {
		dbx_api_call_release(&c);
		created = true;
		rc = ensure_root(db);
		if (rc == 0)
			goto again;
		free(arg);
		return rc;
	}
	if (rc == 0) {
		rc = dbx_parse_cursor(c.resp.body, c.resp.body_len, cursor);
		if (rc == -EIO)
			backend_set_error("get_latest_cursor: malformed reply");
	}
	dbx_api_call_release(&c);
	free(arg);
	return rc;
}

static int dbx_longpoll(struct backend *be, const char *cursor, int timeout_s,
			bool *changes, int *backoff_s)
{
	struct dbx *db = dbx_of(be);
	struct call c;
	char *arg;
	int rc, t = timeout_s;

	if (t < DBX_LONGPOLL_MIN)
		t = DBX_LONGPOLL_MIN;
	if (t > DBX_LONGPOLL_MAX)
		t = DBX_LONGPOLL_MAX;
	arg = dbx_api_encode(
		json_pack("{s:s, s:i}", "cursor", cursor, "timeout", t), false);
	if (!arg)
		return -ENOMEM;
	dbx_api_call_init(&c, "files/list_folder/longpoll", HOST_NOTIFY,
			  STYLE_LONGPOLL, NULL);
	c.arg = arg;
	c.timeout_s = t + DBX_LONGPOLL_SLACK;
	rc = dbx_api_call(db, &c);
	if (rc == 0) {
		rc = dbx_parse_longpoll(c.resp.body, c.resp.body_len, changes,
					backoff_s);
		if (rc == -EIO)
			backend_set_error("longpoll: malformed reply");
	}
	dbx_api_call_release(&c);
	free(arg);
	return rc;
}

static int dbx_list_changes(struct backend *be, const char *cursor,
			    struct backend_page *page)
{
	struct dbx *db = dbx_of(be);
	struct call c;
	char *arg;
	int rc;

	arg = dbx_api_encode(json_pack("{s:s}", "cursor", cursor), false);
	if (!arg)
		return -ENOMEM;
	dbx_api_call_init(&c, "files/list_folder/continue", HOST_API, STYLE_RPC,
			  "/");
	c.arg = arg;
	rc = dbx_api_call(db, &c);
	if (rc == 0) {
		rc = dbx_parse_changes_page(c.resp.body, c.resp.body_len,
					    db->root, page);
		if (rc == -EIO)
			backend_set_error("list_folder/continue: malformed "
					  "reply");
	}
	dbx_api_call_release(&c);
	free(arg);
	return rc;
}

static int dbx_space(struct backend *be, uint64_t *used, uint64_t *total)
{
	return dbx_api_space_usage(dbx_of(be), 0, used, total);
}

/* ---- lifecycle ---- */

static void dbx_destroy(struct backend *be)
{
	struct dbx *db = dbx_of(be);

	if (!db)
		return;
	http_pool_destroy(db->pool);
	dbx_api_free_secret(&db->token);
	dbx_api_free_secret(&db->refresh_token);
	dbx_api_free_secret(&db->app_secret);
	free(db->app_key);
	free(db->api_url);
	free(db->content_url);
	free(db->notify_url);
	free(db->root);
	for (size_t i = 0; i < DBX_KEPT_MAX; i++)
		free(db->kept[i].sid);
	if (db->locks_ok) {
		pthread_mutex_destroy(&db->tok_lock);
		pthread_cond_destroy(&db->tok_cond);
		pthread_mutex_destroy(&db->hold_lock);
		pthread_mutex_destroy(&db->kept_lock);
		pthread_mutex_destroy(&db->batch_lock);
		pthread_cond_destroy(&db->batch_cond);
	}
	free(db);
}

/* Ends the watcher's long poll at shutdown. */
static void dbx_interrupt(struct backend *be)
{
	http_pool_interrupt(dbx_of(be)->pool);
}

static const struct backend_ops dbx_ops = {
	.name = "dropbox",
	.probe = dbx_probe,
	.list = dbx_list,
	.stat = dbx_stat,
	.download = dbx_download,
	.upload = dbx_upload,
	.mkdir = dbx_ns_mkdir,
	.remove = dbx_ns_remove,
	.remove_batch = dbx_ns_remove_batch,
	.list_tree = dbx_list_tree,
	.move = dbx_ns_move,
	.copy = dbx_ns_copy,
	.upload_batch = dbx_upload_batch,
	.latest_cursor = dbx_latest_cursor,
	.longpoll = dbx_longpoll,
	.list_changes = dbx_list_changes,
	.interrupt = dbx_interrupt,
	.space = dbx_space,
	.destroy = dbx_destroy,
};

/* Copies URL @url without trailing slashes; it must be https://. */
static int url_copy(const char *key, const char *url, char **out, char *err,
		    size_t errlen)
{
	size_t len;

	if (!url || strncasecmp(url, "https://", 8) != 0 || !url[8]) {
		err_set(err, errlen,
			"huracanfs.%s must be an https:// URL (got \"%s\")",
			key, url ? url : "");
		return -EINVAL;
	}
	len = strlen(url);
	while (len > 8 && url[len - 1] == '/')
		len--;
	*out = strndup(url, len);
	return *out ? 0 : -ENOMEM;
}

/* "/" + app_folder without stray slashes, each component checked. */
static int make_root(const char *folder, char **out, char *err, size_t errlen)
{
	const char *p = folder ? folder : "";
	size_t len;
	char *s;

	while (*p == '/')
		p++;
	len = strlen(p);
	while (len && p[len - 1] == '/')
		len--;
	if (len == 0) {
		*out = strdup("");
		return *out ? 0 : -ENOMEM;
	}
	if (asprintf(&s, "/%.*s", (int)len, p) < 0)
		return -ENOMEM;
	if (!dbx_api_path_ok(s, false)) {
		err_set(err, errlen,
			"dropbox.app_folder \"%s\" is not a valid "
			"Dropbox folder name",
			folder);
		free(s);
		return -EINVAL;
	}
	*out = s;
	return 0;
}

static int dup_opt(const char *s, char **out)
{
	*out = NULL;
	if (!s || !s[0])
		return 0;
	*out = strdup(s);
	return *out ? 0 : -ENOMEM;
}

int backend_dropbox_create(const struct hfs_config *cfg, struct backend **out,
			   char *err, size_t errlen)
{
	bool has_token = cfg->access_token && cfg->access_token[0];
	bool has_refresh = cfg->refresh_token && cfg->refresh_token[0] &&
			   cfg->app_key && cfg->app_key[0];
	struct dbx *db;
	int rc;

	err_set(err, errlen, "%s", "");
	if (!has_token && !has_refresh) {
		err_set(err, errlen,
			"no Dropbox credentials: set dropbox.access_token (or "
			"HURACANFS_DROPBOX_TOKEN), or dropbox.app_key and run "
			"`huracanfs auth`");
		return -EINVAL;
	}
	db = calloc(1, sizeof(*db));
	if (!db)
		return -ENOMEM;
	db->base.ops = &dbx_ops;
	db->tune = dbx_defaults;
	if (pthread_mutex_init(&db->tok_lock, NULL) != 0) {
		free(db);
		return -ENOMEM;
	}
	pthread_cond_init(&db->tok_cond, NULL);
	pthread_mutex_init(&db->hold_lock, NULL);
	pthread_mutex_init(&db->kept_lock, NULL);
	pthread_mutex_init(&db->batch_lock, NULL);
	pthread_cond_init(&db->batch_cond, NULL);
	db->locks_ok = true;

	rc = url_copy("api_url", cfg->api_url, &db->api_url, err, errlen);
	if (rc == 0)
		rc = url_copy("content_url", cfg->content_url, &db->content_url,
			      err, errlen);
	if (rc == 0)
		rc = url_copy("notify_url", cfg->notify_url, &db->notify_url,
			      err, errlen);
	if (rc == 0)
		rc = make_root(cfg->app_folder, &db->root, err, errlen);
	if (rc == 0 && has_token)
		rc = dup_opt(cfg->access_token, &db->token);
	if (rc == 0 && has_refresh) {
		rc = dup_opt(cfg->refresh_token, &db->refresh_token);
		if (rc == 0)
			rc = dup_opt(cfg->app_key, &db->app_key);
		if (rc == 0)
			rc = dup_opt(cfg->app_secret, &db->app_secret);
	}
	if (rc == 0)
		rc = http_pool_create(cfg->ca_file, 0, &db->pool);
	if (rc < 0) {
		if (rc == -ENOMEM)
			err_set(err, errlen, "out of memory");
		dbx_destroy(&db->base);
		return rc;
	}
	*out = &db->base;
	return 0;
}

void backend_dropbox_tune(struct backend *be, const struct dbx_tuning *t)
{
	struct dbx *db;

	if (!be || be->ops != &dbx_ops || !t)
		return;
	db = dbx_of(be);
	if (t->max_attempts)
		db->tune.max_attempts = t->max_attempts;
	if (t->backoff_base_ms)
		db->tune.backoff_base_ms = t->backoff_base_ms;
	if (t->backoff_cap_ms)
		db->tune.backoff_cap_ms = t->backoff_cap_ms;
	if (t->budget_ms)
		db->tune.budget_ms = t->budget_ms;
	if (t->single_max)
		db->tune.single_max = t->single_max;
	if (t->chunk && t->chunk % (4 * MiB) == 0)
		db->tune.chunk = t->chunk;
}

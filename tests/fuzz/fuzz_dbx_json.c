/*
 * Fuzz target for the Dropbox JSON module (hfs/dbx_json.h).
 *
 * Each input is treated as a reply body and given to every parser in the
 * header: metadata (as text, in all three shapes, and as the "metadata"
 * member of a namespace-operation result), folder listings and change
 * pages (for a few folders and roots), cursor, session, longpoll, space,
 * account and token replies, error replies under several HTTP statuses,
 * OAuth errors, finish_batch_v2 replies, recursive tree pages and
 * delete_batch job replies. The same bytes, split at the
 * first newline, also go through the path helpers, and as one string
 * through the time parser and the Dropbox-API-Arg encoder.
 *
 * Besides "no crash, no leak", the results are checked against the
 * header's promises, chief among them that no listed name or path can
 * escape the mount (backend_name_ok on every component).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz.h"
#include "hfs/backend.h"
#include "hfs/dbx_json.h"

/* The folders a listing is parsed for: the Dropbox root, the mount root
 * of the default app_folder, and a run folder below it. */
static const char *const folders[] = {
	"",
	"/Huracan",
	"/Huracan/models/training/2025-11-12/SOL-USDT",
};
#define N_FOLDERS (sizeof(folders) / sizeof(folders[0]))

static const long statuses[] = {200, 400, 401, 403, 409, 422, 429, 500, 503};
#define N_STATUSES (sizeof(statuses) / sizeof(statuses[0]))

/* Largest finish_batch_v2 reply the target sizes its arrays for. */
#define BATCH_MAX 1000

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

static bool all_zero(const void *p, size_t n)
{
	const unsigned char *b = p;
	size_t i;

	for (i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

static bool rev_ok(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && n <= BACKEND_REV_MAX &&
	       strspn(s, "0123456789abcdefghijklmnopqrstuvwxyz"
			 "ABCDEFGHIJKLMNOPQRSTUVWXYZ") == n;
}

/* What a parsed metadata object promises. */
static void check_meta(int rc, const struct dbx_meta *m, enum dbx_shape shape)
{
	FUZZ_CHECK(rc == 0 || rc == -EIO || rc == -ENOMEM);
	if (rc < 0) {
		FUZZ_CHECK(all_zero(m, sizeof(*m)));
		return;
	}
	if (shape == DBX_FILE_ONLY)
		FUZZ_CHECK(m->kind == DBX_FILE);
	if (shape == DBX_FOLDER_ONLY)
		FUZZ_CHECK(m->kind == DBX_FOLDER);
	FUZZ_CHECK(memchr(m->name, '\0', sizeof(m->name)) != NULL);
	FUZZ_CHECK(memchr(m->id, '\0', sizeof(m->id)) != NULL);
	FUZZ_CHECK(memchr(m->rev, '\0', sizeof(m->rev)) != NULL);
	if (m->name_ok)
		FUZZ_CHECK(backend_name_ok(m->name));
	else
		FUZZ_CHECK(m->name[0] == '\0');
	if (m->path_lower)
		FUZZ_CHECK(strlen(m->path_lower) <= DBX_PATH_MAX);
	if (m->kind == DBX_FILE)
		FUZZ_CHECK(rev_ok(m->rev));
}

static void fuzz_meta(const uint8_t *data, size_t size)
{
	static const enum dbx_shape shapes[] = {DBX_TAGGED, DBX_FILE_ONLY,
						DBX_FOLDER_ONLY};
	struct backend_entry e;
	struct dbx_meta m;
	size_t i;
	int rc;

	for (i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
		rc = dbx_meta_parse_text((const char *)data, size, shapes[i],
					 &m);
		check_meta(rc, &m, shapes[i]);
		if (rc == 0 && m.kind != DBX_OTHER) {
			dbx_meta_to_entry(&m, &e);
			FUZZ_CHECK(e.is_dir == (m.kind == DBX_FOLDER));
		}
		dbx_meta_release(&m);

		rc = dbx_parse_metadata_result((const char *)data, size,
					       shapes[i], &m);
		check_meta(rc, &m, shapes[i]);
		dbx_meta_release(&m);
	}
}

/* Every component of @path ("/a/b") is a valid name. */
static bool path_ok(const char *path)
{
	char comp[BACKEND_NAME_MAX + 1];
	const char *p = path, *end;
	size_t len;

	if (*p != '/')
		return false;
	do {
		p++;
		end = strchr(p, '/');
		len = end ? (size_t)(end - p) : strlen(p);
		if (len == 0 || len > BACKEND_NAME_MAX)
			return false;
		memcpy(comp, p, len);
		comp[len] = '\0';
		if (!backend_name_ok(comp))
			return false;
		p = end;
	} while (p);
	return true;
}

static void check_page(const struct backend_page *pg, bool changes)
{
	size_t i;

	FUZZ_CHECK(pg->cursor && strlen(pg->cursor) <= DBX_CURSOR_MAX);
	FUZZ_CHECK(pg->n == 0 || pg->entries);
	for (i = 0; i < pg->n; i++) {
		const struct backend_entry *e = &pg->entries[i];
		const char *last;

		FUZZ_CHECK(backend_name_ok(e->name));
		FUZZ_CHECK(e->rev[0] == '\0' || rev_ok(e->rev));
		if (!changes) {
			FUZZ_CHECK(e->path == NULL && !e->deleted);
			continue;
		}
		/* A change stays strictly below the root, and its last
		 * component is the entry's name. */
		FUZZ_CHECK(e->path && path_ok(e->path));
		last = strrchr(e->path, '/') + 1;
		FUZZ_CHECK(dbx_name_equal(last, e->name));
	}
}

static void fuzz_pages(const uint8_t *data, size_t size)
{
	struct backend_page pg;
	size_t i;
	int rc;

	for (i = 0; i < N_FOLDERS; i++) {
		memset(&pg, 0, sizeof(pg));
		rc = dbx_parse_list_page((const char *)data, size, folders[i],
					 &pg);
		FUZZ_CHECK(rc == 0 || rc == -EIO || rc == -ENOMEM);
		if (rc == 0)
			check_page(&pg, false);
		else
			FUZZ_CHECK(all_zero(&pg, sizeof(pg)));
		backend_page_release(&pg);

		rc = dbx_parse_changes_page((const char *)data, size,
					    folders[i], &pg);
		FUZZ_CHECK(rc == 0 || rc == -EIO || rc == -ENOMEM);
		if (rc == 0)
			check_page(&pg, true);
		else
			FUZZ_CHECK(all_zero(&pg, sizeof(pg)));
		FUZZ_CHECK(pg.skipped == 0);
		backend_page_release(&pg);

		rc = dbx_parse_tree_page((const char *)data, size, folders[i],
					 &pg);
		FUZZ_CHECK(rc == 0 || rc == -EIO || rc == -ENOMEM);
		if (rc == 0)
			check_page(&pg, true);
		else
			FUZZ_CHECK(all_zero(&pg, sizeof(pg)));
		backend_page_release(&pg);
	}
}

/* delete_batch launch and check replies, for a few entry counts. */
static void fuzz_delete_job(const uint8_t *data, size_t size)
{
	static const size_t counts[] = {0, 1, 3, BATCH_MAX};
	struct dbx_error *errs = calloc(BATCH_MAX, sizeof(*errs)), failed;
	bool *ok = calloc(BATCH_MAX, sizeof(*ok));
	enum dbx_job st;
	size_t i, k;
	int rc;

	FUZZ_CHECK(errs && ok);
	for (i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		for (k = 0; k < 2; k++) {
			char *job = NULL;

			rc = dbx_parse_delete_job(
				(const char *)data, size, counts[i], &st,
				k ? &job : NULL, ok, errs, &failed);
			FUZZ_CHECK(rc == 0 || rc == -EIO || rc == -ENOMEM);
			if (rc == 0 && st == DBX_JOB_ASYNC)
				FUZZ_CHECK(k && job && job[0] &&
					   strlen(job) <= DBX_JOB_ID_MAX);
			else
				FUZZ_CHECK(!job);
			if (rc == 0 && st == DBX_JOB_IN_PROGRESS)
				FUZZ_CHECK(!k);
			if (rc == 0 && st == DBX_JOB_FAILED)
				FUZZ_CHECK(!k && failed.err < 0);
			if (rc == 0 && st == DBX_JOB_COMPLETE)
				for (size_t j = 0; j < counts[i]; j++)
					FUZZ_CHECK(ok[j] || errs[j].err < 0);
			free(job);
		}
	}
	free(errs);
	free(ok);
}

static bool token_ok(const char *s)
{
	if (!s[0] || strlen(s) > DBX_TOKEN_MAX)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

static void fuzz_small(const uint8_t *data, size_t size)
{
	const char *body = (const char *)data;
	char *s = NULL, *r = NULL;
	uint64_t used, total;
	int64_t expires;
	bool changes;
	int backoff, rc;

	if (dbx_parse_cursor(body, size, &s) == 0) {
		FUZZ_CHECK(s[0] && strlen(s) <= DBX_CURSOR_MAX);
		free(s);
	}
	if (dbx_parse_session(body, size, &s) == 0) {
		FUZZ_CHECK(s[0] && strlen(s) <= DBX_SESSION_MAX);
		free(s);
	}
	if (dbx_parse_longpoll(body, size, &changes, &backoff) == 0)
		FUZZ_CHECK(backoff >= 0 && backoff <= 3600);
	if (dbx_parse_space(body, size, &used, &total) == 0)
		(void)(used + total);
	rc = dbx_parse_account(body, size);
	FUZZ_CHECK(rc == 0 || rc == -EIO);

	s = NULL;
	r = NULL;
	if (dbx_parse_token(body, size, &s, &expires, &r) == 0) {
		/* Both end up in an Authorization header or a file. */
		FUZZ_CHECK(token_ok(s));
		FUZZ_CHECK(!r || token_ok(r));
		FUZZ_CHECK(expires >= 0 && expires <= INT32_MAX);
		free(s);
		free(r);
	}
	if (dbx_parse_token(body, size, &s, &expires, NULL) == 0) {
		FUZZ_CHECK(token_ok(s));
		free(s);
	}
}

static void check_error(const struct dbx_error *e)
{
	FUZZ_CHECK(e->err < 0);
	FUZZ_CHECK(memchr(e->summary, '\0', sizeof(e->summary)) != NULL);
	FUZZ_CHECK(e->retry_after >= -1 && e->retry_after <= 86400);
	if (e->retry)
		FUZZ_CHECK(e->err == -EAGAIN);
}

static void fuzz_errors(const uint8_t *data, size_t size)
{
	static const size_t codelens[] = {1, 2, 8, 65};
	struct dbx_error e;
	json_error_t jerr;
	json_t *root;
	char code[65];
	size_t i, n;

	for (i = 0; i < N_STATUSES; i++) {
		dbx_error_parse(statuses[i], (const char *)data, size, &e);
		check_error(&e);
		if (statuses[i] == 401 || statuses[i] == 403)
			FUZZ_CHECK(e.err == -EACCES);
		if (statuses[i] >= 500 || statuses[i] == 429)
			FUZZ_CHECK(e.err == -EAGAIN && e.retry);
	}
	/* The body may be NULL. */
	dbx_error_parse(409, NULL, 0, &e);
	check_error(&e);

	/* An error value of any JSON type, e.g. a batch entry's failure. */
	root = json_loadb((const char *)data, size,
			  JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	if (root) {
		dbx_error_from_json(root, &e);
		check_error(&e);
		dbx_error_from_json(json_object_get(root, "error"), &e);
		check_error(&e);
		json_decref(root);
	}
	dbx_error_from_json(NULL, &e);
	check_error(&e);

	for (i = 0; i < sizeof(codelens) / sizeof(codelens[0]); i++) {
		memset(code, 'x', sizeof(code));
		dbx_oauth_error((const char *)data, size, code, codelens[i]);
		n = strnlen(code, codelens[i]);
		FUZZ_CHECK(n < codelens[i]);
		FUZZ_CHECK(strspn(code, "abcdefghijklmnopqrstuvwxyz_") == n);
	}
}

static void batch(const uint8_t *data, size_t size, size_t n)
{
	struct dbx_meta *metas = calloc(n ? n : 1, sizeof(*metas));
	struct dbx_error *errs = calloc(n ? n : 1, sizeof(*errs));
	bool *ok = calloc(n ? n : 1, sizeof(*ok));
	size_t i;
	int rc;

	if (!metas || !errs || !ok)
		abort();
	rc = dbx_parse_batch((const char *)data, size, n, metas, errs, ok);
	FUZZ_CHECK(rc == 0 || rc == -EIO || rc == -ENOMEM);
	for (i = 0; i < n; i++) {
		if (rc < 0) {
			FUZZ_CHECK(!ok[i]);
			continue;
		}
		if (ok[i]) {
			check_meta(0, &metas[i], DBX_FILE_ONLY);
			dbx_meta_release(&metas[i]);
		} else {
			check_error(&errs[i]);
		}
	}
	free(ok);
	free(errs);
	free(metas);
}

static void fuzz_batch(const uint8_t *data, size_t size)
{
	json_error_t jerr;
	json_t *root;
	size_t n = 0;

	root = json_loadb((const char *)data, size, JSON_ALLOW_NUL, &jerr);
	if (root) {
		n = json_array_size(json_object_get(root, "entries"));
		json_decref(root);
	}
	if (n <= BATCH_MAX)
		batch(data, size, n);
	/* The wrong count is refused, whatever the body. */
	batch(data, size, n + 1);
	if (n > 0)
		batch(data, size, n - 1);
}

/* Dropbox-API-Arg: pure printable ASCII that decodes to the same JSON. */
static void fuzz_header_arg(const uint8_t *data, size_t size)
{
	json_error_t jerr;
	json_t *obj, *back;
	char *arg;
	const char *p;

	/* NULL for a path that is not valid UTF-8: nothing to encode. */
	obj = json_pack("{s:s%, s:{s:s, s:s%}, s:b}", "path",
			(const char *)data, size, "mode", ".tag", "update",
			"update", (const char *)data, size, "autorename", 0);
	if (!obj)
		return;
	arg = dbx_json_header_arg(obj);
	FUZZ_CHECK(arg != NULL);
	for (p = arg; *p; p++)
		FUZZ_CHECK((unsigned char)*p >= 0x20 &&
			   (unsigned char)*p < 0x7f);
	back = json_loads(arg, JSON_ALLOW_NUL, &jerr);
	FUZZ_CHECK(back && json_equal(back, obj));
	json_decref(back);
	free(arg);
	json_decref(obj);
}

static void fuzz_strings(const uint8_t *data, size_t size)
{
	char out[DBX_TIME_LEN + 1];
	int64_t t, t2;
	char *s, *a, *b;
	const char *rest;

	s = fuzz_strndup(data, size);
	if (dbx_time_parse(s, &t) == 0 && t >= 0 &&
	    t <= (int64_t)253402300799) {
		/* Formatting is canonical: it parses back to the same time. */
		dbx_time_format(t, out);
		FUZZ_CHECK(strlen(out) == DBX_TIME_LEN);
		FUZZ_CHECK(dbx_time_parse(out, &t2) == 0 && t2 == t);
	}
	free(s);

	fuzz_split(data, size, &a, &b);
	FUZZ_CHECK(dbx_name_equal(a, a));
	FUZZ_CHECK(dbx_name_equal(a, b) == dbx_name_equal(b, a));
	rest = dbx_path_strip(a, b);
	if (rest) {
		/* A suffix of @a at a component boundary. */
		FUZZ_CHECK(rest >= a && rest <= a + strlen(a));
		FUZZ_CHECK(rest[0] == '\0' || rest[0] == '/');
	}
	FUZZ_CHECK(dbx_path_strip(a, "") == a || a[0] != '/');
	free(a);
	free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_meta(data, size);
	fuzz_pages(data, size);
	fuzz_small(data, size);
	fuzz_errors(data, size);
	fuzz_batch(data, size);
	fuzz_delete_job(data, size);
	fuzz_header_arg(data, size);
	fuzz_strings(data, size);
	return 0;
}

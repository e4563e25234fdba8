/*
 * Dropbox JSON: header encoding, reply parsers and the error translation
 * (see dbx_json.h).
 *
 * Every parser loads the text with jansson (which bounds nesting depth),
 * then reads fields through small typed getters that return -EIO when a
 * field has the wrong type or is too long. An absent optional field, or a
 * null one, is "absent"; an absent required field is malformed.
 *
 * Case folding. Dropbox reports path_lower, lowered with its own rule,
 * and our paths keep the user's case. Comparisons fold both sides with
 * fold.h, the rule the index uses too (folding path_lower again changes
 * nothing that Dropbox's rule already did).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hfs/dbx_json.h"
#include "hfs/fold.h"
#include "hfs/hash.h"

#define DBX_TIME_MAX ((int64_t)253402300799) /* 9999-12-31T23:59:59Z */
#define DBX_ERROR_DEPTH 12
#define DBX_BACKOFF_MAX 3600

/* ---- encoding ---- */

char *dbx_json_header_arg(const json_t *obj)
{
	char *s, *out, *p;
	size_t n = 0, len;
	const char *q;

	s = json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII);
	if (!s)
		return NULL;
	for (q = s; *q; q++)
		if (*q == 0x7f)
			n++;
	if (n == 0)
		return s;
	len = strlen(s);
	out = malloc(len + n * 5 + 1);
	if (!out) {
		free(s);
		return NULL;
	}
	for (q = s, p = out; *q; q++) {
		if (*q == 0x7f) {
			memcpy(p, "\\u007f", 6);
			p += 6;
		} else {
			*p++ = *q;
		}
	}
	*p = '\0';
	free(s);
	return out;
}

void dbx_time_format(int64_t t, char out[DBX_TIME_LEN + 1])
{
	struct tm tm;
	time_t tt;

	if (t < 0)
		t = 0;
	if (t > DBX_TIME_MAX)
		t = DBX_TIME_MAX;
	tt = (time_t)t;
	gmtime_r(&tt, &tm);
	snprintf(out, DBX_TIME_LEN + 1, "%04d-%02d-%02dT%02d:%02d:%02dZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec);
}

/* Reads @n digits at @s. */
static int digits(const char *s, int n)
{
	int v = 0, i;

	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

int dbx_time_parse(const char *s, int64_t *out)
{
	struct tm tm;
	int y, mo, d, h, mi, se;
	time_t t;

	if (!s || strlen(s) != DBX_TIME_LEN || s[4] != '-' || s[7] != '-' ||
	    s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[19] != 'Z')
		return -EINVAL;
	y = digits(s, 4);
	mo = digits(s + 5, 2);
	d = digits(s + 8, 2);
	h = digits(s + 11, 2);
	mi = digits(s + 14, 2);
	se = digits(s + 17, 2);
	if (y < 0 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 ||
	    mi < 0 || mi > 59 || se < 0 || se > 60)
		return -EINVAL;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = se;
	t = timegm(&tm);
	*out = (int64_t)t;
	return 0;
}

/* ---- case folding ---- */

const char *dbx_path_strip(const char *path_lower, const char *prefix)
{
	const char *p = path_lower, *q = prefix;

	if (!path_lower || !prefix)
		return NULL;
	while (*q) {
		size_t lp, lq;

		if (*q != '/' || *p != '/')
			return NULL;
		p++;
		q++;
		lp = strcspn(p, "/");
		lq = strcspn(q, "/");
		if (!fold_equal_n(p, lp, q, lq))
			return NULL;
		p += lp;
		q += lq;
	}
	if (*p != '\0' && *p != '/')
		return NULL;
	return p;
}

bool dbx_name_equal(const char *a, const char *b)
{
	return fold_equal(a, b);
}

/* ---- typed getters ---- */

static json_t *load(const char *body, size_t len)
{
	json_error_t jerr;
	json_t *root;

	if (!body || len == 0)
		return NULL;
	root = json_loadb(body, len, JSON_ALLOW_NUL, &jerr);
	if (root && !json_is_object(root)) {
		json_decref(root);
		return NULL;
	}
	return root;
}

/* The member @key of @obj, or NULL if absent or null. */
static json_t *member(const json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	return json_is_null(v) ? NULL : v;
}

/*
 * String member: 0 with *@out set (NULL if absent and optional), or -EIO
 * for a wrong type, an embedded NUL or more than @max bytes.
 */
static int get_str(const json_t *obj, const char *key, bool required,
		   size_t max, const char **out)
{
	json_t *v = member(obj, key);
	const char *s;

	*out = NULL;
	if (!v)
		return required ? -EIO : 0;
	if (!json_is_string(v))
		return -EIO;
	s = json_string_value(v);
	if (json_string_length(v) > max || strlen(s) != json_string_length(v))
		return -EIO;
	*out = s;
	return 0;
}

/* Unsigned integer member; -EIO for a wrong type or a negative value. */
static int get_u64(const json_t *obj, const char *key, bool required,
		   bool *present, uint64_t *out)
{
	json_t *v = member(obj, key);
	json_int_t i;

	*present = false;
	if (!v)
		return required ? -EIO : 0;
	if (!json_is_integer(v))
		return -EIO;
	i = json_integer_value(v);
	if (i < 0)
		return -EIO;
	*present = true;
	*out = (uint64_t)i;
	return 0;
}

static int get_bool(const json_t *obj, const char *key, bool required,
		    bool dflt, bool *out)
{
	json_t *v = member(obj, key);

	*out = dflt;
	if (!v)
		return required ? -EIO : 0;
	if (!json_is_boolean(v))
		return -EIO;
	*out = json_is_true(v);
	return 0;
}

/* The ".tag" of a union value: an object's ".tag" or a bare string. */
static const char *tag_of(const json_t *v)
{
	json_t *t;

	if (json_is_string(v))
		return json_string_value(v);
	if (!json_is_object(v))
		return NULL;
	t = json_object_get(v, ".tag");
	return json_is_string(t) ? json_string_value(t) : NULL;
}

/* Printable ASCII without spaces (for values sent in headers). */
static bool token_chars_ok(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

bool dbx_rev_ok(const char *s)
{
	size_t n = 0;

	for (; *s; s++, n++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') ||
		      (*s >= 'A' && *s <= 'Z')))
			return false;
	return n > 0 && n <= BACKEND_REV_MAX;
}

/* ---- metadata ---- */

void dbx_meta_release(struct dbx_meta *m)
{
	if (!m)
		return;
	free(m->path_lower);
	memset(m, 0, sizeof(*m));
}

static int meta_fields(const json_t *obj, struct dbx_meta *m)
{
	const char *s;
	bool present;
	json_t *v;
	int rc;

	v = member(obj, "name");
	if (!json_is_string(v))
		return -EIO;
	s = json_string_value(v);
	if (json_string_length(v) <= BACKEND_NAME_MAX &&
	    strlen(s) == json_string_length(v) && backend_name_ok(s)) {
		memcpy(m->name, s, json_string_length(v) + 1);
		m->name_ok = true;
	}
	v = member(obj, "path_lower");
	if (v && !json_is_string(v))
		return -EIO;
	rc = get_str(obj, "path_lower", false, DBX_PATH_MAX, &s);
	if (rc < 0) {
		/* A NUL inside, or absurdly long: an unusable entry. */
		m->name_ok = false;
		m->name[0] = '\0';
		s = NULL;
	}
	if (s) {
		m->path_lower = strdup(s);
		if (!m->path_lower)
			return -ENOMEM;
	}
	if (m->kind == DBX_DELETED)
		return 0;
	rc = get_str(obj, "id", false, DBX_ID_MAX, &s);
	if (rc < 0)
		return rc;
	if (s)
		memcpy(m->id, s, strlen(s) + 1);
	if (m->kind == DBX_FOLDER)
		return 0;

	rc = get_str(obj, "rev", true, BACKEND_REV_MAX, &s);
	if (rc < 0 || !dbx_rev_ok(s))
		return -EIO;
	memcpy(m->rev, s, strlen(s) + 1);
	rc = get_u64(obj, "size", true, &present, &m->size);
	if (rc < 0)
		return rc;
	rc = get_str(obj, "client_modified", true, DBX_TIME_LEN, &s);
	if (rc < 0 || dbx_time_parse(s, &m->mtime) < 0)
		return -EIO;
	rc = get_str(obj, "content_hash", false, CHASH_HEXLEN, &s);
	if (rc < 0)
		return rc;
	if (s) {
		if (chash_from_hex(s, m->hash) < 0)
			return -EIO;
		m->has_hash = true;
	}
	return get_bool(obj, "is_downloadable", false, true, &m->downloadable);
}

int dbx_meta_parse(const json_t *obj, enum dbx_shape shape,
		   struct dbx_meta *out)
{
	struct dbx_meta m;
	const char *tag;
	int rc;

	memset(out, 0, sizeof(*out));
	memset(&m, 0, sizeof(m));
	if (!json_is_object(obj))
		return -EIO;
	switch (shape) {
	case DBX_TAGGED:
		tag = tag_of(obj);
		if (!tag)
			return -EIO;
		if (strcmp(tag, "file") == 0)
			m.kind = DBX_FILE;
		else if (strcmp(tag, "folder") == 0)
			m.kind = DBX_FOLDER;
		else if (strcmp(tag, "deleted") == 0)
			m.kind = DBX_DELETED;
		else
			m.kind = DBX_OTHER;
		break;
	case DBX_FILE_ONLY:
		m.kind = DBX_FILE;
		break;
	case DBX_FOLDER_ONLY:
		m.kind = DBX_FOLDER;
		break;
	}
	if (m.kind == DBX_OTHER) {
		*out = m;
		return 0;
	}
	rc = meta_fields(obj, &m);
	if (rc < 0) {
		dbx_meta_release(&m);
		return rc;
	}
	*out = m;
	return 0;
}

int dbx_meta_parse_text(const char *text, size_t len, enum dbx_shape shape,
			struct dbx_meta *out)
{
	json_t *root = load(text, len);
	int rc;

	memset(out, 0, sizeof(*out));
	if (!root)
		return -EIO;
	rc = dbx_meta_parse(root, shape, out);
	json_decref(root);
	return rc;
}

void dbx_meta_to_entry(const struct dbx_meta *m, struct backend_entry *e)
{
	memset(e, 0, sizeof(*e));
	memcpy(e->name, m->name, sizeof(e->name));
	e->is_dir = m->kind == DBX_FOLDER;
	if (m->kind == DBX_FILE) {
		e->size = m->size;
		e->mtime = m->mtime;
		memcpy(e->rev, m->rev, sizeof(e->rev));
		e->has_hash = m->has_hash;
		memcpy(e->hash, m->hash, CHASH_LEN);
	}
	e->deleted = m->kind == DBX_DELETED;
}

/* ---- listings ---- */

/* Loads a list_folder reply; borrowed pointers into *@root. */
static int load_list(const char *body, size_t len, json_t **root,
		     json_t **entries, const char **cursor, bool *has_more)
{
	int rc;

	*root = load(body, len);
	if (!*root)
		return -EIO;
	*entries = json_object_get(*root, "entries");
	if (!json_is_array(*entries))
		goto bad;
	rc = get_str(*root, "cursor", true, DBX_CURSOR_MAX, cursor);
	if (rc < 0)
		goto bad;
	rc = get_bool(*root, "has_more", true, false, has_more);
	if (rc < 0)
		goto bad;
	return 0;
bad:
	json_decref(*root);
	*root = NULL;
	return -EIO;
}

static void free_entries(struct backend_entry *v, size_t n)
{
	size_t i;

	for (i = 0; v && i < n; i++)
		free(v[i].path);
	free(v);
}

/* Checks every component of @rest ("/a/b") and that the last one equals
 * @name; false if any is invalid. */
static bool rest_ok(const char *rest, const char *name)
{
	char comp[BACKEND_NAME_MAX + 1];
	const char *p = rest, *end;
	size_t len;

	if (*p != '/')
		return false;
	for (;;) {
		p++;
		end = strchr(p, '/');
		len = end ? (size_t)(end - p) : strlen(p);
		if (len == 0 || len > BACKEND_NAME_MAX)
			return false;
		memcpy(comp, p, len);
		comp[len] = '\0';
		if (!backend_name_ok(comp))
			return false;
		if (!end)
			return dbx_name_equal(comp, name);
		p = end;
	}
}

enum page_kind {
	PAGE_FOLDER, /* the direct children of @base */
	PAGE_CHANGES, /* every entry below @base, deleted ones too */
	PAGE_TREE, /* the same, non-downloadable files too, drops counted */
};

static int parse_page(const char *body, size_t len, const char *base,
		      enum page_kind kind, struct backend_page *page)
{
	bool changes = kind != PAGE_FOLDER;
	struct backend_entry *v = NULL;
	const char *cursor, *rest;
	size_t i, n = 0, cap, dropped = 0;
	json_t *root, *entries;
	struct dbx_meta m;
	bool has_more;
	char *cur = NULL;
	int rc;

	rc = load_list(body, len, &root, &entries, &cursor, &has_more);
	if (rc < 0)
		return rc;
	cap = json_array_size(entries);
	if (cap) {
		v = calloc(cap, sizeof(*v));
		if (!v) {
			rc = -ENOMEM;
			goto out;
		}
	}
	for (i = 0; i < cap; i++) {
		rc = dbx_meta_parse(json_array_get(entries, i), DBX_TAGGED, &m);
		if (rc < 0)
			goto out;
		if (m.kind == DBX_OTHER ||
		    (!changes && m.kind == DBX_DELETED) ||
		    (kind != PAGE_TREE && m.kind == DBX_FILE &&
		     !m.downloadable)) {
			if (m.kind == DBX_OTHER)
				dropped++;
			dbx_meta_release(&m);
			continue;
		}
		if (!m.name_ok) {
			dropped++;
			dbx_meta_release(&m);
			continue;
		}
		if (changes) {
			rest = dbx_path_strip(m.path_lower, base);
			if (!rest || !rest[0] || !rest_ok(rest, m.name)) {
				if (!rest || rest[0])
					dropped++;
				dbx_meta_release(&m);
				continue;
			}
		} else if (m.path_lower) {
			rest = dbx_path_strip(m.path_lower, base);
			if (!rest || rest[0] != '/' || strchr(rest + 1, '/') ||
			    !dbx_name_equal(rest + 1, m.name)) {
				dropped++;
				dbx_meta_release(&m);
				continue;
			}
		}
		dbx_meta_to_entry(&m, &v[n]);
		if (changes) {
			v[n].path = strdup(rest);
			if (!v[n].path) {
				dbx_meta_release(&m);
				rc = -ENOMEM;
				goto out;
			}
		}
		n++;
		dbx_meta_release(&m);
	}
	cur = strdup(cursor);
	if (!cur) {
		rc = -ENOMEM;
		goto out;
	}
	if (dropped)
		backend_set_error("dropped %zu listing entries with an invalid "
				  "name, an unknown kind or a path outside "
				  "the folder",
				  dropped);
	memset(page, 0, sizeof(*page));
	page->entries = v;
	page->n = n;
	page->cursor = cur;
	page->has_more = has_more;
	page->skipped = kind == PAGE_TREE ? dropped : 0;
	v = NULL;
	rc = 0;
out:
	free_entries(v, n);
	json_decref(root);
	return rc;
}

int dbx_parse_list_page(const char *body, size_t len, const char *folder,
			struct backend_page *page)
{
	return parse_page(body, len, folder, PAGE_FOLDER, page);
}

int dbx_parse_changes_page(const char *body, size_t len, const char *root,
			   struct backend_page *page)
{
	return parse_page(body, len, root, PAGE_CHANGES, page);
}

int dbx_parse_tree_page(const char *body, size_t len, const char *root,
			struct backend_page *page)
{
	return parse_page(body, len, root, PAGE_TREE, page);
}

/* ---- small replies ---- */

static int parse_string_field(const char *body, size_t len, const char *key,
			      size_t max, char **out)
{
	json_t *root = load(body, len);
	const char *s;
	int rc;

	if (!root)
		return -EIO;
	rc = get_str(root, key, true, max, &s);
	if (rc == 0 && !s[0])
		rc = -EIO;
	if (rc == 0) {
		*out = strdup(s);
		if (!*out)
			rc = -ENOMEM;
	}
	json_decref(root);
	return rc;
}

int dbx_parse_cursor(const char *body, size_t len, char **cursor)
{
	return parse_string_field(body, len, "cursor", DBX_CURSOR_MAX, cursor);
}

int dbx_parse_session(const char *body, size_t len, char **session_id)
{
	return parse_string_field(body, len, "session_id", DBX_SESSION_MAX,
				  session_id);
}

int dbx_parse_longpoll(const char *body, size_t len, bool *changes,
		       int *backoff)
{
	json_t *root = load(body, len);
	bool ch, present;
	uint64_t b = 0;
	int rc;

	if (!root)
		return -EIO;
	rc = get_bool(root, "changes", true, false, &ch);
	if (rc == 0)
		rc = get_u64(root, "backoff", false, &present, &b);
	json_decref(root);
	if (rc < 0)
		return -EIO;
	*changes = ch;
	*backoff = b > DBX_BACKOFF_MAX ? DBX_BACKOFF_MAX : (int)b;
	return 0;
}

int dbx_parse_space(const char *body, size_t len, uint64_t *used,
		    uint64_t *total)
{
	json_t *root = load(body, len), *alloc;
	uint64_t u = 0, t = 0;
	const char *tag;
	bool present;
	int rc;

	if (!root)
		return -EIO;
	rc = get_u64(root, "used", true, &present, &u);
	alloc = member(root, "allocation");
	if (rc == 0 && !json_is_object(alloc))
		rc = -EIO;
	if (rc == 0) {
		tag = tag_of(alloc);
		if (!tag)
			rc = -EIO;
		else if (strcmp(tag, "individual") == 0 ||
			 strcmp(tag, "team") == 0)
			rc = get_u64(alloc, "allocated", true, &present, &t);
	}
	json_decref(root);
	if (rc < 0)
		return -EIO;
	*used = u;
	*total = t;
	return 0;
}

int dbx_parse_account(const char *body, size_t len)
{
	json_t *root = load(body, len);
	const char *s;
	int rc;

	if (!root)
		return -EIO;
	rc = get_str(root, "account_id", true, 256, &s);
	json_decref(root);
	return rc < 0 ? -EIO : 0;
}

int dbx_parse_metadata_result(const char *body, size_t len,
			      enum dbx_shape shape, struct dbx_meta *out)
{
	json_t *root = load(body, len);
	int rc;

	memset(out, 0, sizeof(*out));
	if (!root)
		return -EIO;
	rc = dbx_meta_parse(member(root, "metadata"), shape, out);
	json_decref(root);
	return rc;
}

int dbx_parse_token(const char *body, size_t len, char **access,
		    int64_t *expires_in, char **refresh)
{
	json_t *root = load(body, len);
	const char *a, *r = NULL;
	uint64_t e = 0;
	bool present;
	char *ca = NULL, *cr = NULL;
	int rc;

	if (!root)
		return -EIO;
	rc = get_str(root, "access_token", true, DBX_TOKEN_MAX, &a);
	if (rc == 0 && (!a[0] || !token_chars_ok(a)))
		rc = -EIO;
	if (rc == 0)
		rc = get_u64(root, "expires_in", false, &present, &e);
	if (rc == 0 && refresh) {
		rc = get_str(root, "refresh_token", false, DBX_TOKEN_MAX, &r);
		if (rc == 0 && r && (!r[0] || !token_chars_ok(r)))
			rc = -EIO;
	}
	if (rc < 0) {
		json_decref(root);
		return -EIO;
	}
	ca = strdup(a);
	if (r)
		cr = strdup(r);
	json_decref(root);
	if (!ca || (r && !cr)) {
		free(ca);
		free(cr);
		return -ENOMEM;
	}
	*access = ca;
	*expires_in = e > (uint64_t)INT32_MAX ? INT32_MAX : (int64_t)e;
	if (refresh)
		*refresh = cr;
	return 0;
}

/* ---- errors ---- */

/* Appends tag @t (sanitized) to the summary. */
static void summary_add(struct dbx_error *out, const char *t)
{
	size_t len = strlen(out->summary);
	size_t i;

	if (len && len + 1 < sizeof(out->summary))
		out->summary[len++] = '/';
	for (i = 0; t[i] && len + 1 < sizeof(out->summary) && i < 64; i++) {
		char c = t[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '.'))
			c = '?';
		out->summary[len++] = c;
	}
	out->summary[len] = '\0';
}

/*
 * Maps tag @t met inside union value @v. Returns true if the tag decided
 * the error. @session is set once "lookup_failed" was seen.
 */
static bool classify(const char *t, const json_t *v, bool session,
		     struct dbx_error *out)
{
	static const struct {
		const char *tag;
		int err;
	} map[] = {
		{"not_folder", -ENOTDIR},
		{"not_file", -EISDIR},
		{"conflict", -EEXIST},
		{"insufficient_space", -ENOSPC},
		{"insufficient_quota", -ENOSPC},
		{"no_write_permission", -EACCES},
		{"restricted_content", -EACCES},
		{"disallowed_name", -EINVAL},
		{"malformed_path", -EINVAL},
		{"cant_move_folder_into_itself", -EINVAL},
		{"duplicated_or_nested_paths", -EINVAL},
		{"reset", -ESTALE},
		{"closed", -EIO},
		{"not_closed", -EIO},
		{"payload_too_large", -EIO},
		{"content_hash_mismatch", -EIO},
		{"too_many_files", -EIO},
		{"too_large", -EIO},
		{"unsupported_file", -EIO},
	};
	json_t *co;
	size_t i;

	if (strcmp(t, "not_found") == 0) {
		/* An upload session that expired or was consumed: not the
		 * path, so never "no such file". */
		out->err = session ? -EAGAIN : -ENOENT;
		return true;
	}
	if (strcmp(t, "too_many_write_operations") == 0 ||
	    strcmp(t, "too_many_requests") == 0 ||
	    strcmp(t, "internal_error") == 0) {
		out->err = -EAGAIN;
		out->retry = true;
		return true;
	}
	if (strcmp(t, "incorrect_offset") == 0) {
		out->err = -EIO;
		co = json_object_get(v, "correct_offset");
		if (json_is_integer(co) && json_integer_value(co) >= 0) {
			out->has_correct_offset = true;
			out->correct_offset = (uint64_t)json_integer_value(co);
		}
		return true;
	}
	for (i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		if (strcmp(t, map[i].tag) == 0) {
			out->err = map[i].err;
			return true;
		}
	}
	return false;
}

void dbx_error_from_json(const json_t *error, struct dbx_error *out)
{
	const json_t *e = error, *next;
	bool decided = false, session = false;
	const char *t, *key;
	json_t *val;
	int depth;

	memset(out, 0, sizeof(*out));
	out->retry_after = -1;
	out->err = -EIO;
	for (depth = 0; e && depth < DBX_ERROR_DEPTH; depth++) {
		t = tag_of(e);
		if (!t)
			break;
		summary_add(out, t);
		if (strcmp(t, "lookup_failed") == 0)
			session = true;
		if (!decided)
			decided = classify(t, e, session, out);
		if (!json_is_object(e))
			break;
		next = json_object_get(e, t);
		if (!json_is_object(next) && !json_is_string(next)) {
			/* A struct member is inlined: descend into the
			 * first other field that is a union (e.g. "reason"
			 * of UploadWriteFailed). */
			next = NULL;
			json_object_foreach((json_t *)e, key, val)
			{
				if (strcmp(key, ".tag") != 0 && tag_of(val) &&
				    json_is_object(val)) {
					next = val;
					break;
				}
			}
		}
		e = next;
	}
	if (!out->summary[0])
		snprintf(out->summary, sizeof(out->summary), "%s",
			 "malformed error reply");
	/* A file where a parent folder should be: the other type. */
	if (out->err == -EEXIST && strstr(out->summary, "/file_ancestor"))
		out->err = -ENOTDIR;
}

void dbx_error_parse(long status, const char *body, size_t len,
		     struct dbx_error *out)
{
	json_t *root = load(body, len), *err = NULL, *ra;
	const char *t;

	memset(out, 0, sizeof(*out));
	out->retry_after = -1;
	out->err = -EIO;
	if (root)
		err = member(root, "error");
	if (status == 409) {
		if (err && json_is_object(err))
			dbx_error_from_json(err, out);
		else
			snprintf(out->summary, sizeof(out->summary),
				 "malformed error reply");
	} else if (status == 401 || status == 403) {
		out->err = -EACCES;
		t = tag_of(err);
		if (t) {
			summary_add(out, t);
			if (strcmp(t, "expired_access_token") == 0)
				out->expired = true;
		} else {
			snprintf(out->summary, sizeof(out->summary), "HTTP %ld",
				 status);
		}
	} else if (status == 429) {
		out->err = -EAGAIN;
		out->retry = true;
		t = json_is_object(err) ? tag_of(json_object_get(err, "reason"))
					: NULL;
		summary_add(out, t ? t : "too_many_requests");
		ra = json_is_object(err) ? json_object_get(err, "retry_after")
					 : NULL;
		if (!ra && root)
			ra = json_object_get(root, "retry_after");
		if (json_is_integer(ra) && json_integer_value(ra) >= 0)
			out->retry_after =
				json_integer_value(ra) > 86400
					? 86400
					: (long)json_integer_value(ra);
	} else if (status >= 500 && status <= 599) {
		out->err = -EAGAIN;
		out->retry = true;
		snprintf(out->summary, sizeof(out->summary), "HTTP %ld",
			 status);
	} else {
		snprintf(out->summary, sizeof(out->summary), "HTTP %ld",
			 status);
	}
	json_decref(root);
}

void dbx_oauth_error(const char *body, size_t len, char *code, size_t codelen)
{
	json_t *root = load(body, len), *e;
	const char *s;
	size_t i, n = 0;

	if (codelen == 0)
		return;
	code[0] = '\0';
	if (!root)
		return;
	e = json_object_get(root, "error");
	s = json_is_string(e) ? json_string_value(e) : tag_of(e);
	for (i = 0; s && s[i] && n + 1 < codelen && i < 64; i++)
		if ((s[i] >= 'a' && s[i] <= 'z') || s[i] == '_')
			code[n++] = s[i];
	code[n] = '\0';
	json_decref(root);
}

int dbx_parse_batch(const char *body, size_t len, size_t n,
		    struct dbx_meta *metas, struct dbx_error *errs, bool *ok)
{
	json_t *root = load(body, len), *entries, *e, *f;
	const char *t;
	size_t i;
	int rc = 0;

	if (!root)
		return -EIO;
	entries = json_object_get(root, "entries");
	if (!json_is_array(entries) || json_array_size(entries) != n) {
		json_decref(root);
		return -EIO;
	}
	for (i = 0; i < n; i++) {
		memset(&metas[i], 0, sizeof(metas[i]));
		ok[i] = false;
	}
	for (i = 0; i < n && rc == 0; i++) {
		e = json_array_get(entries, i);
		t = tag_of(e);
		if (!t || !json_is_object(e)) {
			rc = -EIO;
		} else if (strcmp(t, "success") == 0) {
			rc = dbx_meta_parse(e, DBX_FILE_ONLY, &metas[i]);
			ok[i] = rc == 0;
		} else if (strcmp(t, "failure") == 0) {
			f = json_object_get(e, "failure");
			if (!json_is_object(f))
				rc = -EIO;
			else
				dbx_error_from_json(f, &errs[i]);
		} else {
			memset(&errs[i], 0, sizeof(errs[i]));
			errs[i].err = -EIO;
			errs[i].retry_after = -1;
			summary_add(&errs[i], t);
		}
	}
	if (rc < 0)
		for (i = 0; i < n; i++) {
			dbx_meta_release(&metas[i]);
			ok[i] = false;
		}
	json_decref(root);
	return rc;
}

/* ---- delete_batch ---- */

/* The "entries" of a complete DeleteBatchResult: @n of them. */
static int delete_entries(const json_t *obj, size_t n, bool *ok,
			  struct dbx_error *errs)
{
	const json_t *entries = json_object_get(obj, "entries"), *e, *f;
	const char *t;
	size_t i;

	if (!json_is_array(entries) || json_array_size(entries) != n)
		return -EIO;
	for (i = 0; i < n; i++) {
		e = json_array_get(entries, i);
		t = tag_of(e);
		ok[i] = false;
		memset(&errs[i], 0, sizeof(errs[i]));
		errs[i].err = -EIO;
		errs[i].retry_after = -1;
		if (!t || !json_is_object(e))
			return -EIO;
		if (strcmp(t, "success") == 0) {
			ok[i] = true;
		} else if (strcmp(t, "failure") == 0) {
			f = json_object_get(e, "failure");
			if (!json_is_object(f))
				return -EIO;
			dbx_error_from_json(f, &errs[i]);
		} else {
			summary_add(&errs[i], t);
		}
	}
	return 0;
}

int dbx_parse_delete_job(const char *body, size_t len, size_t n,
			 enum dbx_job *state, char **job, bool *ok,
			 struct dbx_error *errs, struct dbx_error *failed)
{
	json_t *root = load(body, len), *f;
	const char *t, *id = NULL;
	int rc = -EIO;

	if (!root)
		return -EIO;
	t = tag_of(root);
	if (!t || !json_is_object(root))
		goto out;
	if (strcmp(t, "async_job_id") == 0 && job) {
		rc = get_str(root, "async_job_id", true, DBX_JOB_ID_MAX, &id);
		if (rc < 0 || !id[0] || !token_chars_ok(id)) {
			rc = -EIO;
			goto out;
		}
		*job = strdup(id);
		rc = *job ? 0 : -ENOMEM;
		if (!rc)
			*state = DBX_JOB_ASYNC;
	} else if (strcmp(t, "in_progress") == 0 && !job) {
		*state = DBX_JOB_IN_PROGRESS;
		rc = 0;
	} else if (strcmp(t, "complete") == 0) {
		rc = delete_entries(root, n, ok, errs);
		if (!rc)
			*state = DBX_JOB_COMPLETE;
	} else if (strcmp(t, "failed") == 0 && !job) {
		f = json_object_get(root, "failed");
		if (json_is_object(f) || json_is_string(f)) {
			dbx_error_from_json(f, failed);
			*state = DBX_JOB_FAILED;
			rc = 0;
		}
	}
out:
	json_decref(root);
	return rc;
}

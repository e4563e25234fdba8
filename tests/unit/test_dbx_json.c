/*
 * Unit tests for the Dropbox JSON module (hfs/dbx_json.h): header
 * encoding, every parser with valid, unknown-tag, wrong-type, truncated
 * and hostile inputs, and the error-JSON to errno table.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hfs/backend.h"
#include "hfs/dbx_json.h"
#include "hfs/hash.h"

#define CHECK(expr)                                                            \
	do {                                                                   \
		if (!(expr)) {                                                 \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
				__LINE__, #expr);                              \
			exit(1);                                               \
		}                                                              \
	} while (0)

#define HASH_HEX \
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define FILE_FIELDS                                                       \
	"\"id\":\"id:abc\",\"client_modified\":\"2015-05-12T15:50:38Z\"," \
	"\"server_modified\":\"2015-05-12T15:50:38Z\",\"rev\":"           \
	"\"a1c10ce0dd78\",\"size\":7212,\"content_hash\":\"" HASH_HEX "\""

/* ---- encoding ---- */

static char *arg_of(const char *path)
{
	json_t *o = json_pack("{s:s}", "path", path);
	char *s;

	CHECK(o);
	s = dbx_json_header_arg(o);
	json_decref(o);
	CHECK(s);
	return s;
}

static bool ascii_only(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x7f || (unsigned char)*s < 0x20)
			return false;
	return true;
}

static void test_encoding(void)
{
	char *s;

	s = arg_of("/plain/a b.txt");
	CHECK(strcmp(s, "{\"path\":\"/plain/a b.txt\"}") == 0);
	free(s);

	s = arg_of("/Caf\xc3\xa9");
	CHECK(strcasecmp(s, "{\"path\":\"/Caf\\u00e9\"}") == 0);
	CHECK(ascii_only(s));
	free(s);

	s = arg_of("/\xf0\x9f\x98\x80.txt"); /* U+1F600 */
	CHECK(strcasecmp(s, "{\"path\":\"/\\ud83d\\ude00.txt\"}") == 0);
	CHECK(ascii_only(s));
	free(s);

	s = arg_of("/del\x7fname");
	CHECK(strcmp(s, "{\"path\":\"/del\\u007fname\"}") == 0);
	CHECK(ascii_only(s));
	free(s);

	s = arg_of("/\x7f\x7f");
	CHECK(strcmp(s, "{\"path\":\"/\\u007f\\u007f\"}") == 0);
	free(s);

	/* The encoding decodes back to the same string. */
	{
		json_t *o;
		json_error_t je;

		s = arg_of("/Caf\xc3\xa9/\xf0\x9f\x98\x80\x7f");
		o = json_loads(s, 0, &je);
		CHECK(o);
		CHECK(strcmp(json_string_value(json_object_get(o, "path")),
			     "/Caf\xc3\xa9/\xf0\x9f\x98\x80\x7f") == 0);
		json_decref(o);
		free(s);
	}
}

static void test_time(void)
{
	char buf[DBX_TIME_LEN + 1];
	int64_t t;

	dbx_time_format(0, buf);
	CHECK(strcmp(buf, "1970-01-01T00:00:00Z") == 0);
	dbx_time_format(1431445838, buf);
	CHECK(strcmp(buf, "2015-05-12T15:50:38Z") == 0);
	dbx_time_format(-5, buf);
	CHECK(strcmp(buf, "1970-01-01T00:00:00Z") == 0);
	CHECK(dbx_time_parse("2015-05-12T15:50:38Z", &t) == 0);
	CHECK(t == 1431445838);
	CHECK(dbx_time_parse("2015-05-12T15:50:38", &t) == -EINVAL);
	CHECK(dbx_time_parse("2015-05-12 15:50:38Z", &t) == -EINVAL);
	CHECK(dbx_time_parse("2015-13-12T15:50:38Z", &t) == -EINVAL);
	CHECK(dbx_time_parse("2015-05-12T15:50:38.5Z", &t) == -EINVAL);
	CHECK(dbx_time_parse("20a5-05-12T15:50:38Z", &t) == -EINVAL);
	CHECK(dbx_time_parse("", &t) == -EINVAL);
}

/* ---- metadata ---- */

static int meta(const char *text, enum dbx_shape shape, struct dbx_meta *m)
{
	return dbx_meta_parse_text(text, strlen(text), shape, m);
}

static void test_meta(void)
{
	struct dbx_meta m;
	struct backend_entry e;
	uint8_t empty[CHASH_LEN];

	CHECK(chash_from_hex(HASH_HEX, empty) == 0);
	CHECK(meta("{\".tag\":\"file\",\"name\":\"Prime.txt\",\"path_lower\":"
		   "\"/a/prime.txt\",\"unknown_field\":[1,{}]," FILE_FIELDS
		   ",\"is_downloadable\":true}",
		   DBX_TAGGED, &m) == 0);
	CHECK(m.kind == DBX_FILE && m.name_ok);
	CHECK(strcmp(m.name, "Prime.txt") == 0);
	CHECK(strcmp(m.path_lower, "/a/prime.txt") == 0);
	CHECK(strcmp(m.rev, "a1c10ce0dd78") == 0);
	CHECK(strcmp(m.id, "id:abc") == 0);
	CHECK(m.size == 7212 && m.mtime == 1431445838);
	CHECK(m.has_hash && memcmp(m.hash, empty, CHASH_LEN) == 0);
	CHECK(m.downloadable);
	dbx_meta_to_entry(&m, &e);
	CHECK(!e.is_dir && e.size == 7212 && e.has_hash && !e.path);
	dbx_meta_release(&m);

	/* FileMetadata without a tag (upload, download result). */
	CHECK(meta("{\"name\":\"x\"," FILE_FIELDS "}", DBX_FILE_ONLY, &m) == 0);
	CHECK(m.kind == DBX_FILE && m.size == 7212);
	dbx_meta_release(&m);
	/* Tagged shape without a tag is malformed. */
	CHECK(meta("{\"name\":\"x\"," FILE_FIELDS "}", DBX_TAGGED, &m) == -EIO);

	CHECK(meta("{\".tag\":\"folder\",\"name\":\"d\",\"id\":\"id:q\"}",
		   DBX_TAGGED, &m) == 0);
	CHECK(m.kind == DBX_FOLDER && !m.path_lower);
	dbx_meta_to_entry(&m, &e);
	CHECK(e.is_dir && e.size == 0);
	dbx_meta_release(&m);

	CHECK(meta("{\".tag\":\"deleted\",\"name\":\"gone\",\"path_lower\":"
		   "\"/gone\"}",
		   DBX_TAGGED, &m) == 0);
	CHECK(m.kind == DBX_DELETED);
	dbx_meta_release(&m);

	/* Unknown tag: kept as "other", not an error. */
	CHECK(meta("{\".tag\":\"symlink_from_the_future\",\"x\":1}", DBX_TAGGED,
		   &m) == 0);
	CHECK(m.kind == DBX_OTHER);
	dbx_meta_release(&m);

	/* Optional fields may be null or absent. */
	CHECK(meta("{\".tag\":\"file\",\"name\":\"n\",\"path_lower\":null,"
		   "\"content_hash\":null,\"id\":\"id:1\",\"rev\":"
		   "\"0123456789\","
		   "\"size\":0,\"client_modified\":\"2020-01-01T00:00:00Z\"}",
		   DBX_TAGGED, &m) == 0);
	CHECK(!m.has_hash && !m.path_lower && m.size == 0);
	dbx_meta_release(&m);

	/* Wrong types and malformed values: -EIO, never a crash. */
	static const char *const bad[] = {
		"{\".tag\":\"file\",\"name\":\"n\",\"id\":\"i\",\"rev\":"
		"\"abc1234567\","
		"\"size\":\"12\",\"client_modified\":\"2020-01-01T00:00:00Z\"}",
		"{\".tag\":\"file\",\"name\":\"n\",\"id\":\"i\",\"rev\":"
		"\"abc1234567\","
		"\"size\":-1,\"client_modified\":\"2020-01-01T00:00:00Z\"}",
		"{\".tag\":\"file\",\"name\":\"n\",\"id\":\"i\",\"rev\":"
		"\"abc1234567\","
		"\"size\":1.5,\"client_modified\":\"2020-01-01T00:00:00Z\"}",
		"{\".tag\":\"file\",\"name\":7,\"id\":\"i\",\"rev\":"
		"\"abc1234567\","
		"\"size\":1,\"client_modified\":\"2020-01-01T00:00:00Z\"}",
		"{\".tag\":\"file\",\"name\":\"n\",\"id\":\"i\",\"rev\":\"abc/"
		"../x\","
		"\"size\":1,\"client_modified\":\"2020-01-01T00:00:00Z\"}",
		"{\".tag\":\"file\",\"name\":\"n\",\"id\":\"i\","
		"\"size\":1,\"client_modified\":\"2020-01-01T00:00:00Z\"}",
		"{\".tag\":\"file\",\"name\":\"n\",\"id\":\"i\",\"rev\":"
		"\"abc1234567\","
		"\"size\":1,\"client_modified\":\"yesterday\"}",
		"{\".tag\":\"file\",\"name\":\"n\",\"id\":\"i\",\"rev\":"
		"\"abc1234567\","
		"\"size\":1,\"client_modified\":\"2020-01-01T00:00:00Z\","
		"\"content_hash\":\"abc\"}",
		"{\".tag\":\"file\",\"name\":\"n\",\"id\":\"i\",\"rev\":"
		"\"abc1234567\","
		"\"size\":1,\"client_modified\":\"2020-01-01T00:00:00Z\","
		"\"is_downloadable\":\"yes\"}",
		"{\".tag\":\"folder\",\"name\":\"n\",\"path_lower\":5}",
		"{\".tag\":7,\"name\":\"n\"}",
		"{\".tag\":\"folder\"}",
		"[1,2]",
		"{\".tag\":\"folder\",\"name\":\"n\"",
		"",
		"null",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK(meta(bad[i], DBX_TAGGED, &m) == -EIO);
		CHECK(m.path_lower == NULL);
	}
	/* A size beyond int64 does not parse. */
	CHECK(meta("{\".tag\":\"file\",\"name\":\"n\",\"rev\":\"abc1234567\","
		   "\"size\":99999999999999999999999,\"client_modified\":"
		   "\"2020-01-01T00:00:00Z\"}",
		   DBX_TAGGED, &m) == -EIO);

	/* Hostile names parse but are flagged. */
	static const char *const names[] = {"..",
					    ".",
					    "",
					    "a/b",
					    "../x",
					    "back\\\\slash",
					    "nul\\u0000name",
					    "trail "};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char buf[256];

		snprintf(buf, sizeof(buf),
			 "{\".tag\":\"folder\",\"name\":\"%s\"}", names[i]);
		CHECK(meta(buf, DBX_TAGGED, &m) == 0);
		CHECK(!m.name_ok);
		CHECK(m.name[0] == '\0');
		dbx_meta_release(&m);
	}
	{
		char *big = malloc(6000);
		size_t k;

		CHECK(big);
		strcpy(big, "{\".tag\":\"folder\",\"name\":\"");
		k = strlen(big);
		memset(big + k, 'x', 5000);
		strcpy(big + k + 5000, "\"}");
		CHECK(meta(big, DBX_TAGGED, &m) == 0);
		CHECK(!m.name_ok);
		dbx_meta_release(&m);
		free(big);
	}
}

/* ---- listings ---- */

static int list(const char *body, const char *folder, struct backend_page *p)
{
	return dbx_parse_list_page(body, strlen(body), folder, p);
}

static const char *find(const struct backend_page *p, const char *name)
{
	for (size_t i = 0; i < p->n; i++)
		if (strcmp(p->entries[i].name, name) == 0)
			return p->entries[i].name;
	return NULL;
}

static void test_list(void)
{
	struct backend_page p;
	char *buf;

	memset(&p, 0, sizeof(p));
	CHECK(list("{\"entries\":[{\".tag\":\"file\",\"name\":\"A.txt\","
		   "\"path_lower\":\"/huracan/d/a.txt\"," FILE_FIELDS "},"
		   "{\".tag\":\"folder\",\"name\":\"Sub\",\"path_lower\":"
		   "\"/huracan/d/sub\",\"id\":\"id:2\"},"
		   "{\".tag\":\"deleted\",\"name\":\"old\",\"path_lower\":"
		   "\"/huracan/d/old\"}],"
		   "\"cursor\":\"CUR\",\"has_more\":true,\"extra\":{}}",
		   "/Huracan/D", &p) == 0);
	CHECK(p.n == 2 && p.has_more && strcmp(p.cursor, "CUR") == 0);
	CHECK(find(&p, "A.txt") && find(&p, "Sub"));
	CHECK(p.entries[1].is_dir && !p.entries[0].is_dir);
	CHECK(p.entries[0].path == NULL);
	backend_page_release(&p);

	/* Root of the namespace. */
	CHECK(list("{\"entries\":[{\".tag\":\"folder\",\"name\":\"Huracan\","
		   "\"path_lower\":\"/huracan\"}],\"cursor\":\"c\","
		   "\"has_more\":false}",
		   "", &p) == 0);
	CHECK(p.n == 1 && !p.has_more);
	backend_page_release(&p);

	/* Non-ASCII folder: path_lower is lower-cased beyond ASCII. */
	CHECK(list("{\"entries\":[{\".tag\":\"folder\",\"name\":"
		   "\"\\u00c9t\\u00e9\","
		   "\"path_lower\":\"/huracan/\\u00e9t\\u00e9/"
		   "\\u00e9t\\u00e9\"}],"
		   "\"cursor\":\"c\",\"has_more\":false}",
		   "/Huracan/\xc3\x89t\xc3\xa9", &p) == 0);
	CHECK(p.n == 1 && strcmp(p.entries[0].name, "\xc3\x89t\xc3\xa9") == 0);
	backend_page_release(&p);

	/* Hostile entries are dropped, good ones kept. */
	CHECK(list("{\"entries\":["
		   "{\".tag\":\"file\",\"name\":\"evil/name\",\"path_lower\":"
		   "\"/r/evil/name\"," FILE_FIELDS "},"
		   "{\".tag\":\"file\",\"name\":\"..\",\"path_lower\":\"/r/"
		   "..\"," FILE_FIELDS "},"
		   "{\".tag\":\"file\",\"name\":\"../x\",\"path_lower\":\"/r/"
		   "../x\"," FILE_FIELDS "},"
		   "{\".tag\":\"file\",\"name\":\".\",\"path_lower\":\"/r/"
		   ".\"," FILE_FIELDS "},"
		   "{\".tag\":\"file\",\"name\":\"\",\"path_lower\":\"/r/"
		   "\"," FILE_FIELDS "},"
		   "{\".tag\":\"file\",\"name\":\"nul\\u0000name\",\"path_"
		   "lower\":"
		   "\"/r/nul\\u0000name\"," FILE_FIELDS "},"
		   "{\".tag\":\"file\",\"name\":\"escape.txt\",\"path_lower\":"
		   "\"/elsewhere/escape.txt\"," FILE_FIELDS "},"
		   "{\".tag\":\"file\",\"name\":\"deep.txt\",\"path_lower\":"
		   "\"/r/sub/deep.txt\"," FILE_FIELDS "},"
		   "{\".tag\":\"file\",\"name\":\"a.txt\",\"path_lower\":"
		   "\"/r/b.txt\"," FILE_FIELDS "},"
		   "{\".tag\":\"file\",\"name\":\"pre.txt\",\"path_lower\":"
		   "\"/rx/pre.txt\"," FILE_FIELDS "},"
		   "{\".tag\":\"symlink_from_the_future\",\"name\":\"future\"},"
		   "{\".tag\":\"file\",\"name\":\"paper\",\"path_lower\":"
		   "\"/r/paper\"," FILE_FIELDS ",\"is_downloadable\":false},"
		   "{\".tag\":\"file\",\"name\":\"ok.txt\",\"path_lower\":"
		   "\"/r/ok.txt\"," FILE_FIELDS "}],"
		   "\"cursor\":\"c\",\"has_more\":false}",
		   "/R", &p) == 0);
	CHECK(p.n == 1 && strcmp(p.entries[0].name, "ok.txt") == 0);
	CHECK(strstr(backend_last_error(), "dropped"));
	backend_page_release(&p);

	/* A huge name is dropped. */
	buf = malloc(20000);
	CHECK(buf);
	strcpy(buf, "{\"entries\":[{\".tag\":\"folder\",\"name\":\"");
	CHECK(strlen(buf) == 37);
	memset(buf + 37, 'x', 5000);
	strcpy(buf + 37 + 5000, "\"}],\"cursor\":\"c\",\"has_more\":false}");
	CHECK(list(buf, "/r", &p) == 0);
	CHECK(p.n == 0);
	backend_page_release(&p);
	free(buf);

	/* Malformed replies: -EIO and @p untouched. */
	static const char *const bad[] = {
		"{\"entries\":[{\".tag\":\"file\",\"name\":\"neg\",\"path_"
		"lower\":"
		"\"/r/neg\",\"rev\":\"abc1234567\",\"size\":-1,"
		"\"client_modified\":\"2020-01-01T00:00:00Z\"}],"
		"\"cursor\":\"c\",\"has_more\":false}",
		"{\"entries\":[],\"cursor\":\"c\"}",
		"{\"entries\":[],\"has_more\":false}",
		"{\"entries\":{},\"cursor\":\"c\",\"has_more\":false}",
		"{\"entries\":[],\"cursor\":5,\"has_more\":false}",
		"{\"entries\":[],\"cursor\":\"c\",\"has_more\":\"no\"}",
		"{\"entries\":[7],\"cursor\":\"c\",\"has_more\":false}",
		"{\"entries\": [{\".tag\": \"file\", \"name\": ",
		"not json at all",
		"[]",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&p, 0x5a, sizeof(p));
		CHECK(list(bad[i], "/r", &p) == -EIO);
		CHECK(p.n == 0x5a5a5a5a5a5a5a5aull);
	}
}

static void test_changes(void)
{
	struct backend_page p;
	const char *body =
		"{\"entries\":["
		"{\".tag\":\"folder\",\"name\":\"Huracan\",\"path_lower\":"
		"\"/huracan\"},"
		"{\".tag\":\"folder\",\"name\":\"A\",\"path_lower\":\"/huracan/"
		"a\"},"
		"{\".tag\":\"file\",\"name\":\"B.txt\",\"path_lower\":"
		"\"/huracan/a/b.txt\"," FILE_FIELDS "},"
		"{\".tag\":\"deleted\",\"name\":\"Gone\",\"path_lower\":"
		"\"/huracan/gone\"},"
		"{\".tag\":\"file\",\"name\":\"x\",\"path_lower\":\"/other/"
		"x\"," FILE_FIELDS "},"
		"{\".tag\":\"file\",\"name\":\"y\",\"path_lower\":\"/huracanx/"
		"y\"," FILE_FIELDS "},"
		"{\".tag\":\"file\",\"name\":\"x\",\"path_lower\":"
		"\"/huracan/../x\"," FILE_FIELDS "},"
		"{\".tag\":\"file\",\"name\":\"nopath\"," FILE_FIELDS "},"
		"{\".tag\":\"file\",\"name\":\"q\",\"path_lower\":"
		"\"/huracan/a/z\"," FILE_FIELDS "}],"
		"\"cursor\":\"next\",\"has_more\":false}";

	CHECK(dbx_parse_changes_page(body, strlen(body), "/Huracan", &p) == 0);
	CHECK(p.n == 3);
	CHECK(strcmp(p.entries[0].path, "/a") == 0 && p.entries[0].is_dir);
	CHECK(strcmp(p.entries[1].path, "/a/b.txt") == 0);
	CHECK(strcmp(p.entries[1].name, "B.txt") == 0);
	CHECK(!p.entries[1].deleted && p.entries[1].size == 7212);
	CHECK(strcmp(p.entries[2].path, "/gone") == 0 && p.entries[2].deleted);
	CHECK(strcmp(p.cursor, "next") == 0);
	backend_page_release(&p);

	/* Mount root = the app folder itself. */
	CHECK(dbx_parse_changes_page(body, strlen(body), "", &p) == 0);
	CHECK(p.n == 6);
	CHECK(strcmp(p.entries[0].path, "/huracan") == 0);
	backend_page_release(&p);

	CHECK(dbx_parse_changes_page("{}", 2, "/h", &p) == -EIO);
}

static void test_paths(void)
{
	CHECK(strcmp(dbx_path_strip("/huracan/a/b", "/Huracan"), "/a/b") == 0);
	CHECK(strcmp(dbx_path_strip("/huracan", "/HURACAN"), "") == 0);
	CHECK(dbx_path_strip("/huracanx", "/Huracan") == NULL);
	CHECK(dbx_path_strip("/hur", "/Huracan") == NULL);
	CHECK(dbx_path_strip("/other/x", "/Huracan") == NULL);
	CHECK(strcmp(dbx_path_strip("/x", ""), "/x") == 0);
	CHECK(strcmp(dbx_path_strip("/caf\xc3\xa9/x", "/CAF\xc3\x89"), "/x") ==
	      0);
	CHECK(dbx_name_equal("ABC", "abc"));
	CHECK(dbx_name_equal("\xc3\x89t\xc3\xa9", "\xc3\xa9t\xc3\xa9"));
	CHECK(!dbx_name_equal("abc", "abcd"));
	CHECK(!dbx_name_equal("a.txt", "b.txt"));
	/* Dropbox's rule (fold.h): simple lowercase, one normalization. */
	CHECK(strcmp(dbx_path_strip("/apps/huracan/a", "/Apps/Huracan"),
		     "/a") == 0);
	CHECK(dbx_path_strip("/apps/huracan", "/Apps/Hura") == NULL);
	CHECK(dbx_path_strip("/apps", "/Apps/Huracan") == NULL);
	CHECK(strcmp(dbx_path_strip("/cafe\xcc\x81/x", "/CAF\xc3\x89"), "/x") ==
	      0);
	CHECK(strcmp(dbx_path_strip("/istanbul", "/\xc4\xb0stanbul"), "") == 0);
	CHECK(dbx_name_equal("\xce\xa3\xce\xa3", "\xcf\x83\xcf\x83"));
	CHECK(!dbx_name_equal("\xcf\x83\xcf\x82", "\xcf\x83\xcf\x83"));
	CHECK(!dbx_name_equal("stra\xc3\x9f"
			      "e",
			      "strasse"));
	CHECK(dbx_name_equal("/Data/Candles", "/data/candles"));
}

/* ---- errors ---- */

static void err409(const char *error_json, int want, const char *summary)
{
	char body[1024];
	struct dbx_error e;

	snprintf(body, sizeof(body),
		 "{\"error_summary\":\"ignored/..\",\"error\":%s}", error_json);
	dbx_error_parse(409, body, strlen(body), &e);
	if (e.err != want) {
		fprintf(stderr, "%s: got %d (%s), want %d\n", error_json, e.err,
			e.summary, want);
		exit(1);
	}
	if (summary)
		CHECK(strcmp(e.summary, summary) == 0);
}

static void test_errors(void)
{
	struct dbx_error e;
	const char *b;

	err409("{\".tag\":\"path\",\"path\":{\".tag\":\"not_found\"}}", -ENOENT,
	       "path/not_found");
	err409("{\".tag\":\"path\",\"path\":\"not_found\"}", -ENOENT, NULL);
	err409("{\".tag\":\"path\",\"path\":{\".tag\":\"not_folder\"}}",
	       -ENOTDIR, NULL);
	err409("{\".tag\":\"path\",\"path\":{\".tag\":\"not_file\"}}", -EISDIR,
	       NULL);
	err409("{\".tag\":\"path\",\"path\":{\".tag\":\"conflict\","
	       "\"conflict\":"
	       "{\".tag\":\"file\"}}}",
	       -EEXIST, "path/conflict/file");
	err409("{\".tag\":\"path\",\"reason\":{\".tag\":\"conflict\","
	       "\"conflict\":{\".tag\":\"folder\"}},\"upload_session_id\":"
	       "\"s\"}",
	       -EEXIST, "path/conflict/folder");
	err409("{\".tag\":\"path\",\"reason\":{\".tag\":\"insufficient_space\"}"
	       ","
	       "\"upload_session_id\":\"s\"}",
	       -ENOSPC, NULL);
	err409("{\".tag\":\"path\",\"path\":{\".tag\":\"conflict\","
	       "\"conflict\":"
	       "{\".tag\":\"file_ancestor\"}}}",
	       -ENOTDIR, "path/conflict/file_ancestor");
	err409("{\".tag\":\"insufficient_quota\"}", -ENOSPC, NULL);
	err409("{\".tag\":\"path\",\"path\":{\".tag\":\"no_write_permission\"}"
	       "}",
	       -EACCES, NULL);
	err409("{\".tag\":\"path\",\"path\":{\".tag\":\"disallowed_name\"}}",
	       -EINVAL, NULL);
	err409("{\".tag\":\"path\",\"path\":{\".tag\":\"malformed_path\"}}",
	       -EINVAL, NULL);
	err409("{\".tag\":\"reset\"}", -ESTALE, "reset");
	err409("{\".tag\":\"to\",\"to\":{\".tag\":\"conflict\",\"conflict\":"
	       "{\".tag\":\"folder\"}}}",
	       -EEXIST, NULL);
	err409("{\".tag\":\"from_lookup\",\"from_lookup\":{\".tag\":"
	       "\"not_found\"}}",
	       -ENOENT, NULL);
	err409("{\".tag\":\"path_lookup\",\"path_lookup\":{\".tag\":"
	       "\"not_found\"}}",
	       -ENOENT, NULL);
	err409("{\".tag\":\"lookup_failed\",\"lookup_failed\":{\".tag\":"
	       "\"not_found\"}}",
	       -EAGAIN, "lookup_failed/not_found");
	err409("{\".tag\":\"cant_move_folder_into_itself\"}", -EINVAL, NULL);
	err409("{\".tag\":\"something_new\"}", -EIO, "something_new");
	err409("{\".tag\":\"other\"}", -EIO, NULL);
	err409("\"path\"", -EIO, NULL);
	err409("{}", -EIO, NULL);
	err409("{\".tag\":5}", -EIO, NULL);

	/* too_many_write_operations in its forms: retryable. */
	static const char *const tmwo[] = {
		"{\".tag\":\"too_many_write_operations\"}",
		"{\".tag\":\"path\",\"path\":{\".tag\":"
		"\"too_many_write_operations\"}}",
		"{\".tag\":\"path\",\"reason\":{\".tag\":"
		"\"too_many_write_operations\"},\"upload_session_id\":\"s\"}",
		"{\".tag\":\"to\",\"to\":{\".tag\":\"too_many_write_"
		"operations\"}}",
	};
	for (size_t i = 0; i < sizeof(tmwo) / sizeof(tmwo[0]); i++) {
		char body[512];

		snprintf(body, sizeof(body), "{\"error\":%s}", tmwo[i]);
		dbx_error_parse(409, body, strlen(body), &e);
		CHECK(e.err == -EAGAIN && e.retry);
	}

	b = "{\"error\":{\".tag\":\"lookup_failed\",\"lookup_failed\":{\"."
	    "tag\":"
	    "\"incorrect_offset\",\"correct_offset\":1048576}}}";
	dbx_error_parse(409, b, strlen(b), &e);
	CHECK(e.has_correct_offset && e.correct_offset == 1048576);
	b = "{\"error\":{\".tag\":\"incorrect_offset\",\"correct_offset\":42}}";
	dbx_error_parse(409, b, strlen(b), &e);
	CHECK(e.has_correct_offset && e.correct_offset == 42);
	b = "{\"error\":{\".tag\":\"incorrect_offset\",\"correct_offset\":-4}}";
	dbx_error_parse(409, b, strlen(b), &e);
	CHECK(!e.has_correct_offset && e.err == -EIO);

	dbx_error_parse(409, "{\"error\": {\".tag\"", 17, &e);
	CHECK(e.err == -EIO);
	dbx_error_parse(409, NULL, 0, &e);
	CHECK(e.err == -EIO);

	b = "{\"error_summary\":\"expired_access_token/.\",\"error\":{\".tag\":"
	    "\"expired_access_token\"}}";
	dbx_error_parse(401, b, strlen(b), &e);
	CHECK(e.err == -EACCES && e.expired);
	b = "{\"error\":{\".tag\":\"invalid_access_token\"}}";
	dbx_error_parse(401, b, strlen(b), &e);
	CHECK(e.err == -EACCES && !e.expired);
	CHECK(strcmp(e.summary, "invalid_access_token") == 0);
	dbx_error_parse(401, "Unauthorized", 12, &e);
	CHECK(e.err == -EACCES && !e.expired);
	dbx_error_parse(403, "{}", 2, &e);
	CHECK(e.err == -EACCES);

	b = "{\"error_summary\":\"too_many_requests/..\",\"error\":{\"reason\":"
	    "{\".tag\":\"too_many_requests\"},\"retry_after\":7}}";
	dbx_error_parse(429, b, strlen(b), &e);
	CHECK(e.err == -EAGAIN && e.retry && e.retry_after == 7);
	b = "{\"error\":{\"reason\":{\".tag\":\"too_many_write_operations\"},"
	    "\"retry_after\":2}}";
	dbx_error_parse(429, b, strlen(b), &e);
	CHECK(e.retry && e.retry_after == 2);
	CHECK(strcmp(e.summary, "too_many_write_operations") == 0);
	dbx_error_parse(429, "too_many_requests", 17, &e);
	CHECK(e.retry && e.retry_after == -1);
	dbx_error_parse(503, "Service Unavailable", 19, &e);
	CHECK(e.retry && e.err == -EAGAIN);
	dbx_error_parse(400, "Error in call to API function", 29, &e);
	CHECK(!e.retry && e.err == -EIO);

	/* Deep nesting does not crash. */
	{
		size_t depth = 3000, i, n = 0;
		char *deep = malloc(depth * 40 + 64);

		CHECK(deep);
		n += (size_t)sprintf(deep + n, "{\"error\":");
		for (i = 0; i < depth; i++)
			n += (size_t)sprintf(deep + n,
					     "{\".tag\":\"a\",\"a\":");
		n += (size_t)sprintf(deep + n, "{\".tag\":\"not_found\"}");
		for (i = 0; i < depth; i++)
			deep[n++] = '}';
		deep[n++] = '}';
		deep[n] = '\0';
		dbx_error_parse(409, deep, n, &e);
		CHECK(e.err == -EIO);
		free(deep);
	}
}

/* ---- small replies ---- */

static void test_small(void)
{
	char *s = NULL, *r = NULL, code[32];
	int64_t exp;
	bool changes;
	int backoff;
	uint64_t used, total;
	const char *b;

	b = "{\"access_token\":\"sl.AbC-123\",\"token_type\":\"bearer\","
	    "\"expires_in\":14400}";
	CHECK(dbx_parse_token(b, strlen(b), &s, &exp, NULL) == 0);
	CHECK(strcmp(s, "sl.AbC-123") == 0 && exp == 14400);
	free(s);
	b = "{\"access_token\":\"a\",\"refresh_token\":\"R-1\"}";
	CHECK(dbx_parse_token(b, strlen(b), &s, &exp, &r) == 0);
	CHECK(exp == 0 && strcmp(r, "R-1") == 0);
	free(s);
	free(r);
	b = "{\"access_token\":\"a b\"}";
	CHECK(dbx_parse_token(b, strlen(b), &s, &exp, NULL) == -EIO);
	b = "{\"access_token\":\"a\\r\\nX-Evil: 1\"}";
	CHECK(dbx_parse_token(b, strlen(b), &s, &exp, NULL) == -EIO);
	b = "{\"access_token\":5}";
	CHECK(dbx_parse_token(b, strlen(b), &s, &exp, NULL) == -EIO);
	b = "{\"access_token\":\"a\",\"expires_in\":\"14400\"}";
	CHECK(dbx_parse_token(b, strlen(b), &s, &exp, NULL) == -EIO);

	b = "{\"error\":\"invalid_grant\",\"error_description\":\"revoked\"}";
	dbx_oauth_error(b, strlen(b), code, sizeof(code));
	CHECK(strcmp(code, "invalid_grant") == 0);
	dbx_oauth_error("garbage", 7, code, sizeof(code));
	CHECK(code[0] == '\0');

	b = "{\"changes\":true,\"backoff\":60}";
	CHECK(dbx_parse_longpoll(b, strlen(b), &changes, &backoff) == 0);
	CHECK(changes && backoff == 60);
	b = "{\"changes\":false}";
	CHECK(dbx_parse_longpoll(b, strlen(b), &changes, &backoff) == 0);
	CHECK(!changes && backoff == 0);
	b = "{\"changes\":\"yes\"}";
	CHECK(dbx_parse_longpoll(b, strlen(b), &changes, &backoff) == -EIO);
	b = "{\"changes\":true,\"backoff\":-3}";
	CHECK(dbx_parse_longpoll(b, strlen(b), &changes, &backoff) == -EIO);

	b = "{\"used\":314,\"allocation\":{\".tag\":\"individual\","
	    "\"allocated\":10000}}";
	CHECK(dbx_parse_space(b, strlen(b), &used, &total) == 0);
	CHECK(used == 314 && total == 10000);
	b = "{\"used\":5,\"allocation\":{\".tag\":\"team\",\"used\":99,"
	    "\"allocated\":777,\"user_within_team_space_allocated\":0,"
	    "\"user_within_team_space_limit_type\":{\".tag\":\"off\"}}}";
	CHECK(dbx_parse_space(b, strlen(b), &used, &total) == 0);
	CHECK(used == 5 && total == 777);
	b = "{\"used\":5,\"allocation\":{\".tag\":\"galactic\"}}";
	CHECK(dbx_parse_space(b, strlen(b), &used, &total) == 0);
	CHECK(total == 0);
	b = "{\"used\":\"5\",\"allocation\":{\".tag\":\"individual\","
	    "\"allocated\":1}}";
	CHECK(dbx_parse_space(b, strlen(b), &used, &total) == -EIO);
	b = "{\"used\":5}";
	CHECK(dbx_parse_space(b, strlen(b), &used, &total) == -EIO);

	b = "{\"cursor\":\"AAE\"}";
	CHECK(dbx_parse_cursor(b, strlen(b), &s) == 0);
	CHECK(strcmp(s, "AAE") == 0);
	free(s);
	CHECK(dbx_parse_cursor("{\"cursor\":null}", 15, &s) == -EIO);
	b = "{\"session_id\":\"sid-1\"}";
	CHECK(dbx_parse_session(b, strlen(b), &s) == 0);
	CHECK(strcmp(s, "sid-1") == 0);
	free(s);
	CHECK(dbx_parse_session("{\"session_id\":\"\"}", 17, &s) == -EIO);
	b = "{\"account_id\":\"dbid:x\",\"name\":{}}";
	CHECK(dbx_parse_account(b, strlen(b)) == 0);
	CHECK(dbx_parse_account("{}", 2) == -EIO);
	CHECK(dbx_parse_account("null", 4) == -EIO);
}

static void test_batch(void)
{
	struct dbx_meta metas[3];
	struct dbx_error errs[3];
	bool ok[3];
	const char *b =
		"{\"entries\":[{\".tag\":\"success\",\"name\":\"a."
		"txt\"," FILE_FIELDS "},"
		"{\".tag\":\"failure\",\"failure\":{\".tag\":"
		"\"too_many_write_operations\"}},"
		"{\".tag\":\"failure\",\"failure\":{\".tag\":\"path\",\"path\":"
		"{\".tag\":\"insufficient_space\"}}}]}";

	CHECK(dbx_parse_batch(b, strlen(b), 3, metas, errs, ok) == 0);
	CHECK(ok[0] && !ok[1] && !ok[2]);
	CHECK(strcmp(metas[0].name, "a.txt") == 0 && metas[0].size == 7212);
	CHECK(errs[1].retry && errs[1].err == -EAGAIN);
	CHECK(errs[2].err == -ENOSPC && !errs[2].retry);
	dbx_meta_release(&metas[0]);

	CHECK(dbx_parse_batch(b, strlen(b), 2, metas, errs, ok) == -EIO);
	b = "{\"entries\":[{\".tag\":\"success\",\"name\":\"a\",\"size\":\"1\"}"
	    "]}";
	CHECK(dbx_parse_batch(b, strlen(b), 1, metas, errs, ok) == -EIO);
	b = "{\"entries\":[{\".tag\":\"failure\",\"failure\":7}]}";
	CHECK(dbx_parse_batch(b, strlen(b), 1, metas, errs, ok) == -EIO);
	b = "{\"entries\":[{\".tag\":\"maybe\"}]}";
	CHECK(dbx_parse_batch(b, strlen(b), 1, metas, errs, ok) == 0);
	CHECK(!ok[0] && errs[0].err == -EIO);
	CHECK(dbx_parse_batch("{\"entries\":", 11, 1, metas, errs, ok) == -EIO);
}

static void test_tree(void)
{
	struct backend_page p;
	const char *body =
		"{\"entries\":["
		"{\".tag\":\"folder\",\"name\":\"T\",\"path_lower\":"
		"\"/huracan/t\"},"
		"{\".tag\":\"file\",\"name\":\"paper\",\"path_lower\":"
		"\"/huracan/t/paper\",\"is_downloadable\":false," FILE_FIELDS
		"},"
		"{\".tag\":\"future\",\"name\":\"f\",\"path_lower\":"
		"\"/huracan/t/f\"},"
		"{\".tag\":\"file\",\"name\":\"a\\\\b\",\"path_lower\":"
		"\"/huracan/t/a\\\\b\"," FILE_FIELDS "},"
		"{\".tag\":\"file\",\"name\":\"ok\",\"path_lower\":"
		"\"/huracan/t/ok\"," FILE_FIELDS "}],"
		"\"cursor\":\"c\",\"has_more\":true}";

	/* Non-downloadable files are entries; what cannot be given is
	 * counted. */
	CHECK(dbx_parse_tree_page(body, strlen(body), "/Huracan", &p) == 0);
	CHECK(p.n == 3 && p.skipped == 2 && p.has_more);
	CHECK(strcmp(p.entries[0].path, "/t") == 0 && p.entries[0].is_dir);
	CHECK(strcmp(p.entries[1].path, "/t/paper") == 0);
	CHECK(strcmp(p.entries[2].path, "/t/ok") == 0);
	CHECK(strcmp(p.entries[2].rev, "a1c10ce0dd78") == 0);
	backend_page_release(&p);
	/* The change feed leaves both out and counts nothing. */
	CHECK(dbx_parse_changes_page(body, strlen(body), "/Huracan", &p) == 0);
	CHECK(p.n == 2 && p.skipped == 0);
	backend_page_release(&p);
}

static void test_delete_job(void)
{
	struct dbx_error errs[3], failed;
	enum dbx_job st;
	char *job = NULL;
	bool ok[3];
	const char *b = "{\".tag\":\"async_job_id\",\"async_job_id\":"
			"\"dbjid:AAB\"}";

	CHECK(dbx_parse_delete_job(b, strlen(b), 3, &st, &job, ok, errs,
				   &failed) == 0);
	CHECK(st == DBX_JOB_ASYNC && strcmp(job, "dbjid:AAB") == 0);
	free(job);
	job = NULL;
	/* A check never names a job; a launch is never in_progress. */
	CHECK(dbx_parse_delete_job(b, strlen(b), 3, &st, NULL, ok, errs,
				   &failed) == -EIO);
	b = "{\".tag\":\"in_progress\"}";
	CHECK(dbx_parse_delete_job(b, strlen(b), 3, &st, NULL, ok, errs,
				   &failed) == 0);
	CHECK(st == DBX_JOB_IN_PROGRESS);
	CHECK(dbx_parse_delete_job(b, strlen(b), 3, &st, &job, ok, errs,
				   &failed) == -EIO);
	b = "{\".tag\":\"complete\",\"entries\":["
	    "{\".tag\":\"success\",\"metadata\":{\".tag\":\"file\",\"name\":"
	    "\"a\"," FILE_FIELDS "}},"
	    "{\".tag\":\"failure\",\"failure\":{\".tag\":\"path_lookup\","
	    "\"path_lookup\":{\".tag\":\"not_found\"}}},"
	    "{\".tag\":\"failure\",\"failure\":{\".tag\":\"path_write\","
	    "\"path_write\":{\".tag\":\"conflict\",\"conflict\":{\".tag\":"
	    "\"file\"}}}}]}";
	CHECK(dbx_parse_delete_job(b, strlen(b), 3, &st, NULL, ok, errs,
				   &failed) == 0);
	CHECK(st == DBX_JOB_COMPLETE && ok[0] && !ok[1] && !ok[2]);
	CHECK(errs[1].err == -ENOENT && errs[2].err == -EEXIST);
	CHECK(strcmp(errs[2].summary, "path_write/conflict/file") == 0);
	/* complete may also come straight from the launch. */
	CHECK(dbx_parse_delete_job(b, strlen(b), 3, &st, &job, ok, errs,
				   &failed) == 0);
	CHECK(st == DBX_JOB_COMPLETE && !job);
	CHECK(dbx_parse_delete_job(b, strlen(b), 2, &st, NULL, ok, errs,
				   &failed) == -EIO);
	b = "{\".tag\":\"complete\",\"entries\":["
	    "{\".tag\":\"failure\",\"failure\":{\".tag\":"
	    "\"too_many_write_operations\"}}]}";
	CHECK(dbx_parse_delete_job(b, strlen(b), 1, &st, NULL, ok, errs,
				   &failed) == 0);
	CHECK(!ok[0] && errs[0].retry && errs[0].err == -EAGAIN);
	b = "{\".tag\":\"failed\",\"failed\":{\".tag\":"
	    "\"too_many_write_operations\"}}";
	CHECK(dbx_parse_delete_job(b, strlen(b), 1, &st, NULL, ok, errs,
				   &failed) == 0);
	CHECK(st == DBX_JOB_FAILED && failed.retry);
	b = "{\".tag\":\"other\"}";
	CHECK(dbx_parse_delete_job(b, strlen(b), 1, &st, NULL, ok, errs,
				   &failed) == -EIO);
	b = "{\".tag\":\"async_job_id\",\"async_job_id\":\"a b\"}";
	CHECK(dbx_parse_delete_job(b, strlen(b), 1, &st, &job, ok, errs,
				   &failed) == -EIO);
	b = "{\".tag\":\"async_job_id\",\"async_job_id\":7}";
	CHECK(dbx_parse_delete_job(b, strlen(b), 1, &st, &job, ok, errs,
				   &failed) == -EIO);
	CHECK(dbx_parse_delete_job("[", 1, 1, &st, &job, ok, errs, &failed) ==
	      -EIO);
	CHECK(!job);
}

int main(void)
{
	test_encoding();
	test_time();
	test_meta();
	test_list();
	test_changes();
	test_paths();
	test_errors();
	test_small();
	test_batch();
	test_tree();
	test_delete_job();
	printf("test_dbx_json: all checks passed\n");
	return 0;
}

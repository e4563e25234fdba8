/*
 * Unit tests for the YAML configuration (hfs/config.h).
 *
 * Every file is written into a mkdtemp directory that also serves as
 * $HOME, so the default path and "~" expansion are under the test's
 * control. Error tests compare the whole message, file and line included.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "hfs/config.h"

#define CHECK(expr)                                                            \
	do {                                                                   \
		if (!(expr)) {                                                 \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
				__LINE__, #expr);                              \
			if (errbuf[0])                                         \
				fprintf(stderr, "  last error: %s\n", errbuf); \
			exit(1);                                               \
		}                                                              \
	} while (0)

#define GIB ((uint64_t)1 << 30)
#define MIB ((uint64_t)1 << 20)

static char dir[] = "/tmp/test_config.XXXXXX";
static char errbuf[1024];

static bool streq(const char *a, const char *b)
{
	return a && b && strcmp(a, b) == 0;
}

/* Writes @text to DIR/@name with exactly @mode; returns a static path. */
static const char *write_file(const char *name, mode_t mode, const char *text)
{
	static char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	CHECK(f != NULL);
	CHECK(fputs(text, f) >= 0);
	CHECK(fclose(f) == 0);
	CHECK(chmod(path, mode) == 0);
	return path;
}

static const char *yaml(const char *text)
{
	return write_file("config.yaml", 0600, text);
}

static int load(struct hfs_config *cfg, const char *path)
{
	CHECK(config_init(cfg) == 0);
	errbuf[0] = '\0';
	return config_load(cfg, path, errbuf, sizeof(errbuf));
}

/* Loads @text, which must succeed; the caller releases @cfg. */
static void load_ok(struct hfs_config *cfg, const char *text)
{
	int rc = load(cfg, yaml(text));

	if (rc != 0)
		fprintf(stderr, "unexpected error %d: %s\n", rc, errbuf);
	CHECK(rc == 0);
	CHECK(errbuf[0] == '\0');
}

/*
 * Loads @text, which must fail with "PATH:@line: " followed by the printf
 * formatted message. Returns the errno.
 */
static int load_fails(int at, const char *text, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int load_fails(int at, const char *text, int line, const char *fmt, ...)
{
	struct hfs_config cfg;
	char want[512], msg[400];
	const char *path = yaml(text);
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(want, sizeof(want), "%s:%d: %s", path, line, msg);
	rc = load(&cfg, path);
	if (rc >= 0 || strcmp(errbuf, want) != 0) {
		fprintf(stderr,
			"%s:%d: config_load rc %d\n  got:  %s\n  want: %s\n",
			__FILE__, at, rc, errbuf, want);
		exit(1);
	}
	CHECK(cfg.path == NULL);
	config_release(&cfg);
	return rc;
}

#define FAILS(text, line, ...) load_fails(__LINE__, text, line, __VA_ARGS__)

static void check_defaults(const struct hfs_config *c)
{
	int i;

	CHECK(c->access_token == NULL);
	CHECK(c->refresh_token == NULL);
	CHECK(c->app_key == NULL);
	CHECK(c->app_secret == NULL);
	CHECK(streq(c->app_folder, "Huracan"));
	CHECK(c->interval[CAT_LEARNING] == 300);
	CHECK(c->interval[CAT_LOGS] == 300);
	CHECK(c->interval[CAT_MONITORING] == 300);
	CHECK(c->interval[CAT_MODELS] == 1800);
	CHECK(c->interval[CAT_DATA_CACHE] == 7200);
	CHECK(c->interval[CAT_OTHER] == 300);
	CHECK(c->new_data_interval == 300);
	for (i = 0; i < CAT_COUNT; i++)
		CHECK(c->enabled[i]);
	CHECK(c->restore_data_cache_on_startup);
	CHECK(c->backend_set == false);
	CHECK(c->cache_max_bytes == 20 * GIB);
	CHECK(c->cache_min_free_bytes == 512 * MIB);
	CHECK(streq(c->api_url, "https://api.dropboxapi.com"));
	CHECK(streq(c->content_url, "https://content.dropboxapi.com"));
	CHECK(streq(c->notify_url, "https://notify.dropboxapi.com"));
	CHECK(c->ca_file == NULL);
	CHECK(c->log_file == NULL);
	CHECK(c->log_level == LOG_INFO);
	CHECK(c->flush_timeout == 120);
	CHECK(c->dir_cache_seconds == 60);
	CHECK(c->writeback_cache);
	CHECK(c->rules == NULL);
	CHECK(c->n_rules == 0);
	CHECK(c->token_from_env == false);
}

/* Checks the "~"-expanded default paths. */
static void check_default_paths(const struct hfs_config *c)
{
	char want[600];

	snprintf(want, sizeof(want), "%s/.local/share/huracanfs/remote", dir);
	CHECK(streq(c->remote_dir, want));
	snprintf(want, sizeof(want), "%s/.cache/huracanfs", dir);
	CHECK(streq(c->cache_dir, want));
}

static void test_defaults(void)
{
	struct hfs_config c;

	CHECK(config_init(&c) == 0);
	check_defaults(&c);
	CHECK(c.backend == BACKEND_LOCAL);
	CHECK(c.path == NULL);
	config_release(&c);
	config_release(&c); /* twice is harmless */

	/* No file at the default location: the embedded default. */
	CHECK(load(&c, NULL) == 0);
	check_defaults(&c);
	check_default_paths(&c);
	CHECK(c.path == NULL);
	CHECK(c.backend == BACKEND_LOCAL);
	config_release(&c);
}

static void test_default_file(void)
{
	struct hfs_config c;
	char d[512], path[600], msg[1024];

	snprintf(d, sizeof(d), "%s/.config", dir);
	CHECK(mkdir(d, 0700) == 0);
	snprintf(d, sizeof(d), "%s/.config/huracanfs", dir);
	CHECK(mkdir(d, 0700) == 0);
	snprintf(path, sizeof(path), "%s/config.yaml", d);
	write_file(".config/huracanfs/config.yaml", 0600,
		   "dropbox:\n  app_folder: FromHome\n");
	CHECK(load(&c, NULL) == 0);
	CHECK(streq(c.path, path));
	CHECK(streq(c.app_folder, "FromHome"));
	config_release(&c);

	/* The default file gets the same checks as a named one. */
	write_file(".config/huracanfs/config.yaml", 0600,
		   "dropbox:\n  app_folder: x\n  bogus: 1\n");
	CHECK(load(&c, NULL) == -EINVAL);
	snprintf(msg, sizeof(msg), "%s:3: dropbox.bogus: unknown key", path);
	CHECK(streq(errbuf, msg));
	config_release(&c);

	CHECK(unlink(path) == 0);
	snprintf(d, sizeof(d), "%s/.config/huracanfs", dir);
	CHECK(rmdir(d) == 0);
	snprintf(d, sizeof(d), "%s/.config", dir);
	CHECK(rmdir(d) == 0);
}

static void test_empty(void)
{
	static const char *const texts[] = {
		"",
		"# nothing but a comment\n",
		"---\n",
		"~\n",
		"dropbox:\nhuracanfs:\n",
		"dropbox: ~\nhuracanfs: null\n",
		"dropbox: {}\nhuracanfs: {}\n",
	};
	struct hfs_config c;
	size_t i;

	for (i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		load_ok(&c, texts[i]);
		check_defaults(&c);
		check_default_paths(&c);
		CHECK(streq(c.path, dir) == false);
		CHECK(c.path && strstr(c.path, "/config.yaml"));
		config_release(&c);
	}
}

static void test_trainer_config(void)
{
	struct hfs_config c;

	load_ok(&c, "# The trainer's own config.yaml\n"
		    "training:\n"
		    "  symbols: [BTC-USDT, SOL-USDT]\n"
		    "  window: &win\n"
		    "    days: 30\n"
		    "    nested:\n"
		    "      - {a: 1, b: [1, 2]}\n"
		    "      - plain\n"
		    "  other_window: *win\n"
		    "  sync_logs: not a bool, and not ours\n"
		    "  access_token: also not ours\n"
		    "exchange:\n"
		    "  name: okx\n"
		    "  rate_limits:\n"
		    "    - endpoint: candles\n"
		    "      per_second: 20\n"
		    "dropbox:\n"
		    "  access_token: \"sl.FAKE-token-for-tests\"\n"
		    "  app_folder: \"Huracan\"  # optional\n"
		    "logging: [a, b]\n"
		    "42: answer\n"
		    "? [complex, key]\n"
		    ": value\n"
		    "huracanfs: ~\n");
	CHECK(streq(c.access_token, "sl.FAKE-token-for-tests"));
	CHECK(streq(c.app_folder, "Huracan"));
	CHECK(c.backend == BACKEND_DROPBOX);
	CHECK(c.backend_set == false);
	CHECK(c.interval[CAT_LOGS] == 300);
	CHECK(c.enabled[CAT_LOGS]);
	config_release(&c);

	/* Line numbers count the ignored sections too. */
	FAILS("training:\n"
	      "  a: 1\n"
	      "  b:\n"
	      "    - x\n"
	      "dropbox:\n"
	      "  sync_models: maybe\n",
	      6, "dropbox.sync_models: expected true or false");
}

static void test_dropbox_keys(void)
{
	struct hfs_config c;

	load_ok(&c, "dropbox:\n"
		    "  access_token: tok-a\n"
		    "  refresh_token: tok-r\n"
		    "  app_key: key123\n"
		    "  app_secret: sec-s\n"
		    "  app_folder: Elsewhere\n"
		    "  sync_interval_learning_seconds: 61\n"
		    "  sync_interval_logs_seconds: 62\n"
		    "  sync_interval_models_seconds: 63\n"
		    "  sync_interval_data_cache_seconds: 64\n"
		    "  sync_interval_new_data_seconds: 65\n"
		    "  sync_learning: false\n"
		    "  sync_logs: no\n"
		    "  sync_models: Off\n"
		    "  sync_data_cache: FALSE\n"
		    "  sync_monitoring: \"no\"\n"
		    "  restore_data_cache_on_startup: off\n");
	CHECK(streq(c.access_token, "tok-a"));
	CHECK(streq(c.refresh_token, "tok-r"));
	CHECK(streq(c.app_key, "key123"));
	CHECK(streq(c.app_secret, "sec-s"));
	CHECK(streq(c.app_folder, "Elsewhere"));
	CHECK(c.interval[CAT_LEARNING] == 61);
	CHECK(c.interval[CAT_LOGS] == 62);
	CHECK(c.interval[CAT_MONITORING] == 62);
	CHECK(c.interval[CAT_MODELS] == 63);
	CHECK(c.interval[CAT_DATA_CACHE] == 64);
	CHECK(c.new_data_interval == 65);
	CHECK(c.interval[CAT_OTHER] == 300);
	CHECK(!c.enabled[CAT_LEARNING]);
	CHECK(!c.enabled[CAT_LOGS]);
	CHECK(!c.enabled[CAT_MODELS]);
	CHECK(!c.enabled[CAT_DATA_CACHE]);
	CHECK(!c.enabled[CAT_MONITORING]);
	CHECK(c.enabled[CAT_OTHER]);
	CHECK(!c.restore_data_cache_on_startup);
	CHECK(c.backend == BACKEND_DROPBOX);
	config_release(&c);

	/* The true spellings, and each switch on its own. */
	load_ok(&c, "dropbox:\n"
		    "  sync_learning: yes\n"
		    "  sync_logs: ON\n"
		    "  sync_models: True\n"
		    "  sync_data_cache: true\n"
		    "  sync_monitoring: off\n"
		    "  restore_data_cache_on_startup: Yes\n");
	CHECK(c.enabled[CAT_LEARNING]);
	CHECK(c.enabled[CAT_LOGS]);
	CHECK(c.enabled[CAT_MODELS]);
	CHECK(c.enabled[CAT_DATA_CACHE]);
	CHECK(!c.enabled[CAT_MONITORING]);
	CHECK(c.restore_data_cache_on_startup);
	config_release(&c);

	/* Empty or null optional values leave a key unset. */
	load_ok(&c, "dropbox:\n"
		    "  access_token: \"\"\n"
		    "  refresh_token:\n"
		    "  app_key: ~\n"
		    "  sync_interval_logs_seconds: \"90\"\n");
	CHECK(c.access_token == NULL);
	CHECK(c.refresh_token == NULL);
	CHECK(c.app_key == NULL);
	CHECK(c.interval[CAT_LOGS] == 90);
	CHECK(c.backend == BACKEND_LOCAL);
	config_release(&c);
}

static void test_huracanfs_keys(void)
{
	struct hfs_config c;

	load_ok(&c, "huracanfs:\n"
		    "  backend: local\n"
		    "  remote_dir: /srv/huracan\n"
		    "  cache_dir: /var/cache/hfs\n"
		    "  cache_max_bytes: 1.5G\n"
		    "  cache_min_free_bytes: 100M\n"
		    "  api_url: http://127.0.0.1:8080\n"
		    "  content_url: http://127.0.0.1:8081\n"
		    "  notify_url: http://127.0.0.1:8082\n"
		    "  ca_file: /etc/ssl/test.pem\n"
		    "  log_file: /var/log/hfs.log\n"
		    "  log_level: debug\n"
		    "  flush_timeout_seconds: 5\n"
		    "  dir_cache_seconds: 0\n"
		    "  writeback_cache: no\n"
		    "  sync_interval_other_seconds: 99\n"
		    "  sync_other: off\n");
	CHECK(c.backend == BACKEND_LOCAL);
	CHECK(c.backend_set);
	CHECK(streq(c.remote_dir, "/srv/huracan"));
	CHECK(streq(c.cache_dir, "/var/cache/hfs"));
	CHECK(c.cache_max_bytes == 3 * GIB / 2);
	CHECK(c.cache_min_free_bytes == 100 * MIB);
	CHECK(streq(c.api_url, "http://127.0.0.1:8080"));
	CHECK(streq(c.content_url, "http://127.0.0.1:8081"));
	CHECK(streq(c.notify_url, "http://127.0.0.1:8082"));
	CHECK(streq(c.ca_file, "/etc/ssl/test.pem"));
	CHECK(streq(c.log_file, "/var/log/hfs.log"));
	CHECK(c.log_level == LOG_DEBUG);
	CHECK(c.flush_timeout == 5);
	CHECK(c.dir_cache_seconds == 0);
	CHECK(!c.writeback_cache);
	CHECK(c.interval[CAT_OTHER] == 99);
	CHECK(!c.enabled[CAT_OTHER]);
	CHECK(c.interval[CAT_LOGS] == 300);
	CHECK(c.enabled[CAT_LOGS]);
	config_release(&c);

	load_ok(&c, "huracanfs:\n"
		    "  backend: dropbox\n"
		    "  log_level: WARNING\n"
		    "  ca_file:\n"
		    "  cache_min_free_bytes: 0\n");
	CHECK(c.backend == BACKEND_DROPBOX);
	CHECK(c.backend_set);
	CHECK(c.log_level == LOG_WARNING);
	CHECK(c.ca_file == NULL);
	CHECK(c.cache_min_free_bytes == 0);
	config_release(&c);

	load_ok(&c, "huracanfs:\n  log_level: notice\n");
	CHECK(c.log_level == LOG_NOTICE);
	config_release(&c);
	load_ok(&c, "huracanfs:\n  log_level: error\n");
	CHECK(c.log_level == LOG_ERR);
	config_release(&c);
}

static void test_intervals(void)
{
	static const struct {
		const char *section, *key;
	} ints[] = {
		{"dropbox", "sync_interval_learning_seconds"},
		{"dropbox", "sync_interval_logs_seconds"},
		{"dropbox", "sync_interval_models_seconds"},
		{"dropbox", "sync_interval_data_cache_seconds"},
		{"dropbox", "sync_interval_new_data_seconds"},
		{"huracanfs", "sync_interval_other_seconds"},
		{"huracanfs", "flush_timeout_seconds"},
	};
	static const char *const bad[] = {
		"0",
		"-5",
		"abc",
		"1.5",
		"5m",
		"0x10",
		"99999999999999999999",
		"\"\"",
		"~",
		"1e3",
		"+",
		"-1x",
		"300 s",
	};
	static const char *const not_scalar[] = {"[1]", "{a: 1}"};
	char text[256];
	size_t i, j;

	for (i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		for (j = 0; j < sizeof(bad) / sizeof(bad[0]); j++) {
			snprintf(text, sizeof(text),
				 "# comment\n%s:\n  %s: %s\n", ints[i].section,
				 ints[i].key, bad[j]);
			FAILS(text, 3, "%s.%s: must be an integer > 0",
			      ints[i].section, ints[i].key);
		}
		for (j = 0; j < sizeof(not_scalar) / sizeof(not_scalar[0]);
		     j++) {
			snprintf(text, sizeof(text),
				 "# comment\n%s:\n  %s: %s\n", ints[i].section,
				 ints[i].key, not_scalar[j]);
			FAILS(text, 3,
			      "%s.%s: expected a single value, not a list or "
			      "mapping",
			      ints[i].section, ints[i].key);
		}
	}

	FAILS("huracanfs:\n  dir_cache_seconds: -1\n", 2,
	      "huracanfs.dir_cache_seconds: must be an integer >= 0");
	FAILS("huracanfs:\n  dir_cache_seconds: soon\n", 2,
	      "huracanfs.dir_cache_seconds: must be an integer >= 0");

	/* The boundary itself is fine. */
	{
		struct hfs_config c;

		load_ok(&c, "dropbox:\n  sync_interval_models_seconds: 1\n"
			    "huracanfs:\n  flush_timeout_seconds: +7\n");
		CHECK(c.interval[CAT_MODELS] == 1);
		CHECK(c.flush_timeout == 7);
		config_release(&c);
	}
}

static void test_unknown_keys(void)
{
	FAILS("dropbox:\n"
	      "  access_token: \"\"\n"
	      "  sync_intervall_logs_seconds: 5\n",
	      3, "dropbox.sync_intervall_logs_seconds: unknown key");
	FAILS("huracanfs:\n"
	      "  backend: local\n"
	      "\n"
	      "  cach_dir: /x\n",
	      4, "huracanfs.cach_dir: unknown key");
	/* A key of the other section is unknown here. */
	FAILS("dropbox:\n  cache_dir: /x\n", 2,
	      "dropbox.cache_dir: unknown key");
	FAILS("huracanfs:\n  app_folder: x\n", 2,
	      "huracanfs.app_folder: unknown key");
	/* Keys are case-sensitive, like the seed's setting names. */
	FAILS("dropbox:\n  Sync_Logs: true\n", 2,
	      "dropbox.Sync_Logs: unknown key");
	FAILS("dropbox:\n  [a, b]: 1\n", 2, "dropbox: keys must be strings");
}

static void test_bad_values(void)
{
	FAILS("dropbox:\n  sync_logs: maybe\n", 2,
	      "dropbox.sync_logs: expected true or false");
	FAILS("dropbox:\n  sync_logs: 1\n", 2,
	      "dropbox.sync_logs: expected true or false");
	FAILS("dropbox:\n  sync_logs:\n", 2,
	      "dropbox.sync_logs: expected true or false");
	FAILS("huracanfs:\n  writeback_cache: y\n", 2,
	      "huracanfs.writeback_cache: expected true or false");
	FAILS("huracanfs:\n  cache_max_bytes: 20X\n", 2,
	      "huracanfs.cache_max_bytes: expected a size > 0 such as 20G, "
	      "512M or 1024");
	FAILS("huracanfs:\n  cache_max_bytes: 0\n", 2,
	      "huracanfs.cache_max_bytes: expected a size > 0 such as 20G, "
	      "512M or 1024");
	FAILS("huracanfs:\n  cache_min_free_bytes: lots\n", 2,
	      "huracanfs.cache_min_free_bytes: expected a size such as 20G, "
	      "512M or 1024");
	FAILS("huracanfs:\n  backend: s3\n", 2,
	      "huracanfs.backend: expected local or dropbox");
	FAILS("huracanfs:\n  log_level: verbose\n", 2,
	      "huracanfs.log_level: expected debug, info, notice, warning or "
	      "error");
	FAILS("huracanfs:\n  api_url: \"\"\n", 2,
	      "huracanfs.api_url: must not be empty");
	FAILS("huracanfs:\n  content_url:\n", 2,
	      "huracanfs.content_url: must not be empty");
	FAILS("huracanfs:\n  notify_url: ''\n", 2,
	      "huracanfs.notify_url: must not be empty");
	FAILS("huracanfs:\n  remote_dir: \"\"\n", 2,
	      "huracanfs.remote_dir: must not be empty");
	FAILS("huracanfs:\n  cache_dir: ~\n", 2,
	      "huracanfs.cache_dir: must not be empty");
	FAILS("huracanfs:\n  ca_file: \"\"\n", 2,
	      "huracanfs.ca_file: must not be empty");
	FAILS("huracanfs:\n  log_file: \"\"\n", 2,
	      "huracanfs.log_file: must not be empty");
	FAILS("dropbox:\n  app_folder: \"\"\n", 2,
	      "dropbox.app_folder: must not be empty");
	FAILS("dropbox:\n  app_folder:\n    - a\n    - b\n", 3,
	      "dropbox.app_folder: expected a single value, not a list or "
	      "mapping");
	FAILS("dropbox:\n  app_folder: \"a\\0b\"\n", 2,
	      "dropbox.app_folder: must not contain a NUL character");

	/* Duplicates. */
	FAILS("dropbox:\n  sync_logs: true\n  sync_logs: false\n", 3,
	      "dropbox.sync_logs: duplicate key");
	FAILS("dropbox: {}\nhuracanfs: {}\ndropbox: {}\n", 3,
	      "dropbox: duplicate section");

	/* Shapes. */
	FAILS("dropbox: 5\n", 1, "dropbox: expected a mapping of settings");
	FAILS("huracanfs:\n  - a\n", 2,
	      "huracanfs: expected a mapping of settings");
	FAILS("- a\n- b\n", 1,
	      "the top level must be a mapping of sections (dropbox:, "
	      "huracanfs:)");
	FAILS("just some text\n", 1,
	      "the top level must be a mapping of sections (dropbox:, "
	      "huracanfs:)");
	FAILS("dropbox: {}\n---\nfoo: 1\n", 3,
	      "only one YAML document is allowed");
}

static void test_sizes(void)
{
	static const struct {
		const char *s;
		uint64_t v;
	} good[] = {
		{"0", 0},
		{"1024", 1024},
		{"1024B", 1024},
		{"1K", 1024},
		{"1k", 1024},
		{"1Ki", 1024},
		{"1KiB", 1024},
		{"1KB", 1024},
		{"1kb", 1024},
		{"512M", 512 * MIB},
		{"512MiB", 512 * MIB},
		{"20G", 20 * GIB},
		{"20GB", 20 * GIB},
		{"2T", (uint64_t)2 << 40},
		{"1.5G", 3 * GIB / 2},
		{"0.5K", 512},
		{"0.25M", 256 * 1024},
		{"18446744073709551615", UINT64_MAX},
		{"16777215T", (uint64_t)16777215 << 40},
	};
	static const char *const bad[] = {
		"",    "G",	"-1",	"1X",	     "1.5",
		"1GG", "1 G",	" 1G",	"1G ",	     "1.G",
		".5G", "1Gi B", "1iB",	"16777216T", "18446744073709551616",
		"1e9", "0x10",	"1,5G", "1P",
	};
	struct hfs_config c;
	uint64_t v;
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		v = 12345;
		if (config_parse_size(good[i].s, &v) != 0 || v != good[i].v) {
			fprintf(stderr, "config_parse_size(\"%s\") = %llu\n",
				good[i].s, (unsigned long long)v);
			CHECK(0);
		}
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = 12345;
		if (config_parse_size(bad[i], &v) != -EINVAL || v != 12345) {
			fprintf(stderr, "config_parse_size(\"%s\") accepted\n",
				bad[i]);
			CHECK(0);
		}
	}
	CHECK(config_parse_size(NULL, &v) == -EINVAL);

	load_ok(&c, "huracanfs:\n"
		    "  cache_max_bytes: 512K\n"
		    "  cache_min_free_bytes: 2Ti\n");
	CHECK(c.cache_max_bytes == 512 * 1024);
	CHECK(c.cache_min_free_bytes == (uint64_t)2 << 40);
	config_release(&c);
}

static void test_rules(void)
{
	struct hfs_config c;

	load_ok(&c, "huracanfs:\n"
		    "  rules:\n"
		    "    - pattern: \"exports/**\"\n"
		    "      category: data_cache\n"
		    "    - {pattern: \"*.log\", category: monitoring}\n"
		    "    - category: other\n"
		    "      pattern: scratch/*\n");
	CHECK(c.n_rules == 3);
	CHECK(streq(c.rules[0].pattern, "exports/**"));
	CHECK(c.rules[0].cat == CAT_DATA_CACHE);
	CHECK(streq(c.rules[1].pattern, "*.log"));
	CHECK(c.rules[1].cat == CAT_MONITORING);
	CHECK(streq(c.rules[2].pattern, "scratch/*"));
	CHECK(c.rules[2].cat == CAT_OTHER);
	/* And they take effect ahead of the built-in rules. */
	CHECK(cat_classify(c.rules, c.n_rules, "logs/engine.log") ==
	      CAT_MONITORING);
	CHECK(cat_classify(c.rules, c.n_rules, "exports/a.json") ==
	      CAT_DATA_CACHE);
	CHECK(cat_classify(c.rules, c.n_rules, "scratch/m.pkl") == CAT_OTHER);
	CHECK(cat_classify(c.rules, c.n_rules, "models/m.pkl") == CAT_MODELS);
	config_release(&c);

	load_ok(&c, "huracanfs:\n  rules:\n");
	CHECK(c.n_rules == 0 && c.rules == NULL);
	config_release(&c);
	load_ok(&c, "huracanfs:\n  rules: []\n");
	CHECK(c.n_rules == 0);
	config_release(&c);

	FAILS("huracanfs:\n"
	      "  rules:\n"
	      "    - pattern: \"a/**\"\n"
	      "      category: logs\n"
	      "    - pattern: \"b/**\"\n"
	      "      category: modles\n",
	      6,
	      "huracanfs.rules[1].category: unknown category (expected "
	      "learning, logs, monitoring, models, data_cache or other)");
	FAILS("huracanfs:\n  rules:\n    - {pattern: \"\", category: logs}\n",
	      3, "huracanfs.rules[0].pattern: must not be empty");
	FAILS("huracanfs:\n  rules:\n    - {pattern: ~, category: logs}\n", 3,
	      "huracanfs.rules[0].pattern: must not be empty");
	FAILS("huracanfs:\n  rules:\n    - {pattern: /a, category: logs}\n", 3,
	      "huracanfs.rules[0].pattern: must be relative to the mount "
	      "root (no leading '/')");
	FAILS("huracanfs:\n"
	      "  rules:\n"
	      "    - pattern: a\n"
	      "      category: logs\n"
	      "      priority: 1\n",
	      5, "huracanfs.rules[0].priority: unknown key");
	FAILS("huracanfs:\n  rules:\n    - {pattern: a}\n", 3,
	      "huracanfs.rules[0]: missing category");
	FAILS("huracanfs:\n  rules:\n    - {category: logs}\n", 3,
	      "huracanfs.rules[0]: missing pattern");
	FAILS("huracanfs:\n"
	      "  rules:\n"
	      "    - {pattern: a, category: logs}\n"
	      "    - {pattern: a, pattern: b, category: logs}\n",
	      4, "huracanfs.rules[1].pattern: duplicate key");
	FAILS("huracanfs:\n  rules:\n    - \"a/**\"\n", 3,
	      "huracanfs.rules[0]: expected a mapping with pattern and "
	      "category");
	FAILS("huracanfs:\n  rules:\n    - {pattern: [a], category: logs}\n", 3,
	      "huracanfs.rules[0].pattern: expected a string");
	FAILS("huracanfs:\n  rules: logs\n", 2,
	      "huracanfs.rules: expected a list of {pattern, category} "
	      "mappings");
}

static void secret_refused(mode_t mode, const char *text, const char *key,
			   const char *value)
{
	struct hfs_config c;
	char want[1200];
	const char *path = write_file("secret.yaml", mode, text);

	snprintf(want, sizeof(want),
		 "%s holds a secret (%s) and is readable by group or others; "
		 "run: chmod 600 %s",
		 path, key, path);
	CHECK(load(&c, path) == -EPERM);
	if (strcmp(errbuf, want) != 0)
		fprintf(stderr, "got:  %s\nwant: %s\n", errbuf, want);
	CHECK(strcmp(errbuf, want) == 0);
	CHECK(strstr(errbuf, value) == NULL);
	config_release(&c);
}

static void secret_accepted(mode_t mode, const char *text)
{
	struct hfs_config c;
	const char *path = write_file("secret.yaml", mode, text);

	CHECK(load(&c, path) == 0);
	config_release(&c);
}

static void test_secret_mode(void)
{
	const char *tok = "dropbox:\n  access_token: sl.SUPERSECRET-123\n";

	secret_refused(0644, tok, "dropbox.access_token", "SUPERSECRET");
	secret_refused(0640, tok, "dropbox.access_token", "SUPERSECRET");
	secret_refused(0604, tok, "dropbox.access_token", "SUPERSECRET");
	secret_refused(0610, tok, "dropbox.access_token", "SUPERSECRET");
	secret_refused(0644, "dropbox:\n  app_secret: SHHH-app\n",
		       "dropbox.app_secret", "SHHH");
	secret_refused(0644, "dropbox:\n  refresh_token: RTOKEN-xyz\n",
		       "dropbox.refresh_token", "RTOKEN");
	secret_accepted(0600, tok);
	secret_accepted(0400, tok);
	secret_accepted(0700, tok);

	/* No secret (or an empty one) in a readable file is fine. */
	secret_accepted(0644, "dropbox:\n  app_folder: Huracan\n");
	secret_accepted(0644, "dropbox:\n  access_token: \"\"\n"
			      "  app_key: not-a-secret\n");
	secret_accepted(0644, "training:\n  access_token: not-ours\n");

	/* Errors near a secret never quote it. */
	FAILS("dropbox:\n  access_tokn: sl.SECRET-typo\n", 2,
	      "dropbox.access_tokn: unknown key");
	CHECK(strstr(errbuf, "SECRET") == NULL);
	FAILS("dropbox:\n  access_token: [sl.SECRET-in-list]\n", 2,
	      "dropbox.access_token: expected a single value, not a list or "
	      "mapping");
	CHECK(strstr(errbuf, "SECRET") == NULL);
	FAILS("dropbox:\n  access_token: \"sl.SECRET-unterminated\n"
	      "  app_folder: x\n",
	      4, "YAML syntax error: found unexpected end of stream");
	CHECK(strstr(errbuf, "SECRET") == NULL);
}

static void test_env_token(void)
{
	struct hfs_config c;
	char *out = NULL;
	size_t outlen = 0;
	FILE *f;

	CHECK(setenv("HURACANFS_DROPBOX_TOKEN", "sl.ENV-token", 1) == 0);
	load_ok(&c, "dropbox:\n  access_token: sl.FILE-token\n");
	CHECK(streq(c.access_token, "sl.ENV-token"));
	CHECK(c.token_from_env);
	CHECK(c.backend == BACKEND_DROPBOX);
	f = open_memstream(&out, &outlen);
	CHECK(f);
	config_dump(&c, f);
	CHECK(fclose(f) == 0);
	CHECK(strstr(out, "dropbox.access_token: (set)\n"));
	CHECK(strstr(out, "ENV-token") == NULL);
	CHECK(strstr(out, "FILE-token") == NULL);
	free(out);
	config_release(&c);

	/* Without any file, too; and it picks the Dropbox backend. */
	CHECK(load(&c, NULL) == 0);
	CHECK(streq(c.access_token, "sl.ENV-token"));
	CHECK(c.token_from_env);
	CHECK(c.backend == BACKEND_DROPBOX);
	config_release(&c);

	/* An explicit backend still wins. */
	load_ok(&c, "huracanfs:\n  backend: local\n");
	CHECK(c.backend == BACKEND_LOCAL);
	CHECK(c.token_from_env);
	config_release(&c);

	/* Set but empty: ignored. */
	CHECK(setenv("HURACANFS_DROPBOX_TOKEN", "", 1) == 0);
	load_ok(&c, "dropbox:\n  access_token: sl.FILE-token\n");
	CHECK(streq(c.access_token, "sl.FILE-token"));
	CHECK(!c.token_from_env);
	config_release(&c);
	CHECK(unsetenv("HURACANFS_DROPBOX_TOKEN") == 0);
}

static void test_backend_default(void)
{
	struct hfs_config c;

	load_ok(&c, "dropbox:\n  app_folder: x\n");
	CHECK(c.backend == BACKEND_LOCAL && !c.backend_set);
	config_release(&c);
	load_ok(&c, "dropbox:\n  refresh_token: r\n  app_key: k\n");
	CHECK(c.backend == BACKEND_DROPBOX && !c.backend_set);
	config_release(&c);
	load_ok(&c, "dropbox:\n  access_token: a\n");
	CHECK(c.backend == BACKEND_DROPBOX && !c.backend_set);
	config_release(&c);
	load_ok(&c, "dropbox:\n  app_key: k\n  app_secret: s\n");
	CHECK(c.backend == BACKEND_LOCAL);
	config_release(&c);
	load_ok(&c, "dropbox:\n  access_token: a\nhuracanfs:\n"
		    "  backend: local\n");
	CHECK(c.backend == BACKEND_LOCAL && c.backend_set);
	config_release(&c);
	load_ok(&c, "huracanfs:\n  backend: dropbox\n");
	CHECK(c.backend == BACKEND_DROPBOX && c.backend_set);
	config_release(&c);
}

static void test_tilde(void)
{
	struct hfs_config c;
	char want[600];

	load_ok(&c, "huracanfs:\n"
		    "  remote_dir: ~/r\n"
		    "  cache_dir: \"~\"\n"
		    "  ca_file: ~/ca.pem\n"
		    "  log_file: ~/logs/hfs.log\n");
	snprintf(want, sizeof(want), "%s/r", dir);
	CHECK(streq(c.remote_dir, want));
	CHECK(streq(c.cache_dir, dir));
	snprintf(want, sizeof(want), "%s/ca.pem", dir);
	CHECK(streq(c.ca_file, want));
	snprintf(want, sizeof(want), "%s/logs/hfs.log", dir);
	CHECK(streq(c.log_file, want));
	config_release(&c);

	/* Only a leading "~" or "~/" of a path key. */
	load_ok(&c, "dropbox:\n"
		    "  app_folder: ~/x\n"
		    "huracanfs:\n"
		    "  remote_dir: ~other/r\n"
		    "  cache_dir: /abs/~/c\n"
		    "  api_url: ~/u\n");
	CHECK(streq(c.app_folder, "~/x"));
	CHECK(streq(c.remote_dir, "~other/r"));
	CHECK(streq(c.cache_dir, "/abs/~/c"));
	CHECK(streq(c.api_url, "~/u"));
	config_release(&c);
}

static void test_syntax_error(void)
{
	FAILS("dropbox:\n"
	      "  app_folder: x\n"
	      "  sync_logs: true\n"
	      " bad_indent: 1\n",
	      4, "YAML syntax error: did not find expected key");
	FAILS("dropbox:\n  app_folder: [a, b\n", 3,
	      "YAML syntax error: did not find expected ',' or ']'");
	FAILS("training: *nope\n", 1,
	      "YAML syntax error: found undefined alias");
	FAILS("dropbox:\n  app_folder: x\n\tsync_logs: true\n", 3,
	      "YAML syntax error: found a tab character that violates "
	      "indentation");
}

static void test_missing_file(void)
{
	struct hfs_config c;
	char path[600], want[700];

	snprintf(path, sizeof(path), "%s/does-not-exist.yaml", dir);
	CHECK(load(&c, path) == -ENOENT);
	snprintf(want, sizeof(want), "%s: No such file or directory", path);
	CHECK(streq(errbuf, want));
	CHECK(c.path == NULL);
	config_release(&c);

	CHECK(load(&c, dir) == -EISDIR);
	snprintf(want, sizeof(want), "%s: Is a directory", dir);
	CHECK(streq(errbuf, want));
	config_release(&c);
}

static void test_dump(void)
{
	static const char *const every_key[] = {
		"dropbox.access_token: ",
		"dropbox.refresh_token: ",
		"dropbox.app_key: ",
		"dropbox.app_secret: ",
		"dropbox.app_folder: ",
		"dropbox.sync_interval_learning_seconds: ",
		"dropbox.sync_interval_logs_seconds: ",
		"dropbox.sync_interval_models_seconds: ",
		"dropbox.sync_interval_data_cache_seconds: ",
		"dropbox.sync_interval_new_data_seconds: ",
		"dropbox.sync_learning: ",
		"dropbox.sync_logs: ",
		"dropbox.sync_models: ",
		"dropbox.sync_data_cache: ",
		"dropbox.sync_monitoring: ",
		"dropbox.restore_data_cache_on_startup: ",
		"huracanfs.backend: ",
		"huracanfs.remote_dir: ",
		"huracanfs.cache_dir: ",
		"huracanfs.cache_max_bytes: ",
		"huracanfs.cache_min_free_bytes: ",
		"huracanfs.api_url: ",
		"huracanfs.content_url: ",
		"huracanfs.notify_url: ",
		"huracanfs.ca_file: ",
		"huracanfs.log_file: ",
		"huracanfs.log_level: ",
		"huracanfs.flush_timeout_seconds: ",
		"huracanfs.dir_cache_seconds: ",
		"huracanfs.writeback_cache: ",
		"huracanfs.sync_interval_other_seconds: ",
		"huracanfs.sync_other: ",
	};
	static const char *const lines[] = {
		"dropbox.access_token: (set)\n",
		"dropbox.refresh_token: (unset)\n",
		"dropbox.app_key: appkey-visible\n",
		"dropbox.app_secret: (set)\n",
		"dropbox.app_folder: Huracan\n",
		"dropbox.sync_interval_logs_seconds: 42\n",
		"dropbox.sync_interval_models_seconds: 1800\n",
		"dropbox.sync_monitoring: false\n",
		"dropbox.sync_logs: true\n",
		"huracanfs.cache_max_bytes: 20G\n",
		"huracanfs.cache_min_free_bytes: 1000\n",
		"huracanfs.ca_file: (unset)\n",
		"huracanfs.log_level: warning\n",
		"huracanfs.rules[0]: exports/** -> data_cache\n",
		"huracanfs.rules[1]: *.tmp -> other\n",
	};
	struct hfs_config c;
	char *out = NULL, needle[128];
	size_t outlen = 0, i;
	FILE *f;

	load_ok(&c, "dropbox:\n"
		    "  access_token: sl.DUMP-SECRET-A\n"
		    "  app_secret: DUMP-SECRET-B\n"
		    "  app_key: appkey-visible\n"
		    "  sync_interval_logs_seconds: 42\n"
		    "  sync_monitoring: off\n"
		    "huracanfs:\n"
		    "  cache_min_free_bytes: 1000\n"
		    "  log_level: warning\n"
		    "  rules:\n"
		    "    - {pattern: \"exports/**\", category: data_cache}\n"
		    "    - {pattern: \"*.tmp\", category: other}\n");
	f = open_memstream(&out, &outlen);
	CHECK(f);
	config_dump(&c, f);
	CHECK(fclose(f) == 0);

	for (i = 0; i < sizeof(every_key) / sizeof(every_key[0]); i++) {
		snprintf(needle, sizeof(needle), "\n%s", every_key[i]);
		if (!strstr(out, needle) &&
		    strncmp(out, every_key[i], strlen(every_key[i])) != 0) {
			fprintf(stderr, "dump lacks %s\n%s", every_key[i], out);
			CHECK(0);
		}
	}
	for (i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		if (!strstr(out, lines[i])) {
			fprintf(stderr, "dump lacks %s%s", lines[i], out);
			CHECK(0);
		}
	}
	CHECK(strstr(out, "SECRET") == NULL);
	CHECK(outlen > 0);
	CHECK(strcmp(out + outlen - strlen("\nbackend in use: dropbox\n"),
		     "\nbackend in use: dropbox\n") == 0);
	free(out);
	config_release(&c);

	/* Defaults: no rules, local backend. */
	CHECK(config_init(&c) == 0);
	out = NULL;
	f = open_memstream(&out, &outlen);
	CHECK(f);
	config_dump(&c, f);
	CHECK(fclose(f) == 0);
	CHECK(strstr(out, "dropbox.access_token: (unset)\n"));
	CHECK(strstr(out, "huracanfs.rules: (none)\n"));
	CHECK(strstr(out, "huracanfs.cache_min_free_bytes: 512M\n"));
	CHECK(strstr(out, "huracanfs.log_level: info\n"));
	CHECK(strstr(out, "huracanfs.backend: local\n"));
	CHECK(strcmp(out + outlen - strlen("\nbackend in use: local\n"),
		     "\nbackend in use: local\n") == 0);
	free(out);
	config_release(&c);
}

int main(void)
{
	CHECK(mkdtemp(dir) != NULL);
	CHECK(setenv("HOME", dir, 1) == 0);
	CHECK(unsetenv("HURACANFS_DROPBOX_TOKEN") == 0);

	test_defaults();
	test_default_file();
	test_empty();
	test_trainer_config();
	test_dropbox_keys();
	test_huracanfs_keys();
	test_intervals();
	test_unknown_keys();
	test_bad_values();
	test_sizes();
	test_rules();
	test_secret_mode();
	test_env_token();
	test_backend_default();
	test_tilde();
	test_syntax_error();
	test_missing_file();
	test_dump();

	unlink(write_file("config.yaml", 0600, ""));
	unlink(write_file("secret.yaml", 0600, ""));
	CHECK(rmdir(dir) == 0);
	printf("test_config: all checks passed\n");
	return 0;
}

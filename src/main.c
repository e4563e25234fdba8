/*
 * huracanfs: the command line. One binary, subcommands:
 *
 *   huracanfs mount MOUNTPOINT [--config FILE] [--foreground] [-o OPTS]
 *   huracanfs status MOUNTPOINT [--json] [--files] [--check]
 *   huracanfs flush MOUNTPOINT [--category NAME] [--wait]
 *   huracanfs unmount MOUNTPOINT [--timeout S] [--lazy]
 *   huracanfs limit MOUNTPOINT [--up RATE] [--down RATE]
 *   huracanfs check-config [--config FILE]
 *   huracanfs auth [--config FILE]
 *   huracanfs repair MOUNTPOINT [--config FILE]
 *
 * This file parses the arguments and dispatches; mount is mount.c
 * (mount_run), the text form of status is status_print.c.
 */
#include <curl/curl.h>
#include <fuse_lowlevel.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hfs/auth.h"
#include "hfs/category.h"
#include "hfs/config.h"
#include "hfs/control.h"
#include "hfs/repair.h"
#include "mount.h"
#include "status_print.h"

#define EXIT_USAGE 2

static void usage(FILE *out)
{
	fprintf(out, "usage: huracanfs mount MOUNTPOINT [--config FILE] "
		     "[--foreground] [-o OPTION[,OPTION...]]\n"
		     "       huracanfs status MOUNTPOINT [--json] [--files] "
		     "[--check [--max-unreachable SECONDS]]\n"
		     "       huracanfs flush MOUNTPOINT [--category NAME] "
		     "[--wait]\n"
		     "       huracanfs unmount MOUNTPOINT [--timeout SECONDS] "
		     "[--lazy]\n"
		     "       huracanfs limit MOUNTPOINT [--up RATE] "
		     "[--down RATE]\n"
		     "       huracanfs check-config [--config FILE]\n"
		     "       huracanfs auth [--config FILE]\n"
		     "       huracanfs repair MOUNTPOINT [--config FILE]\n"
		     "       huracanfs --version\n");
}

/* ---- mount ---- */

static int cmd_mount(int argc, char **argv)
{
	struct mount_opts mo = {0};
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'},
		{"foreground", no_argument, NULL, 'f'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "c:fo:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			mo.config = optarg;
			break;
		case 'f':
			mo.foreground = true;
			break;
		case 'o': {
			size_t l = strlen(mo.fuse_opts);
			snprintf(mo.fuse_opts + l, sizeof(mo.fuse_opts) - l,
				 "%s%s", l ? "," : "", optarg);
			break;
		}
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return EXIT_USAGE;
	}
	mo.mountpoint = argv[optind];
	return mount_run(&mo);
}

/* ---- status, flush ---- */

/* The default of status --max-unreachable, seconds. */
#define MAX_UNREACHABLE_DEFAULT 300

static int cmd_status(int argc, char **argv)
{
	bool as_json = false, files = false, check = false;
	long long max_unreachable = MAX_UNREACHABLE_DEFAULT;
	static const struct option longopts[] = {
		{"json", no_argument, NULL, 'j'},
		{"files", no_argument, NULL, 'F'},
		{"check", no_argument, NULL, 'C'},
		{"max-unreachable", required_argument, NULL, 'U'},
		{NULL, 0, NULL, 0}};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "jF", longopts, NULL)) != -1) {
		if (c == 'j')
			as_json = true;
		else if (c == 'F')
			files = true;
		else if (c == 'C')
			check = true;
		else if (c == 'U') {
			char *end;
			max_unreachable = strtoll(optarg, &end, 10);
			if (!*optarg || *end || max_unreachable < 0) {
				fprintf(stderr, "huracanfs: --max-unreachable: "
						"a number of seconds >= 0\n");
				return EXIT_USAGE;
			}
		} else {
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (check) {
		files = true;
		if (as_json) {
			fprintf(stderr, "huracanfs: --check prints lines, "
					"not JSON\n");
			return EXIT_USAGE;
		}
	}
	char err[512];
	json_t *req = json_pack("{s:s, s:b}", "cmd", "status", "files", files);
	void *reply = NULL;
	int rc = control_call(argv[optind], req, &reply, err, sizeof(err));
	json_decref(req);
	if (rc) {
		fprintf(stderr, "huracanfs: %s\n", err);
		return 1;
	}
	if (check) {
		int n = status_problems(reply, max_unreachable, stdout, "");
		if (!n)
			printf("ok\n");
		json_decref(reply);
		return n ? 1 : 0;
	}
	if (as_json) {
		char *s = json_dumps(reply, JSON_INDENT(2) | JSON_SORT_KEYS);
		printf("%s\n", s ? s : "{}");
		free(s);
	} else {
		status_print(reply);
	}
	json_decref(reply);
	return 0;
}

/* After a failed flush --wait: which files failed and why, on stderr. */
static void print_failures(const char *mountpoint)
{
	char err[512];
	void *reply = NULL;
	json_t *req = json_pack("{s:s, s:b}", "cmd", "status", "files", 1);
	int rc = control_call(mountpoint, req, &reply, err, sizeof(err));
	json_decref(req);
	if (rc)
		return;
	status_problems(reply, -1, stderr, "huracanfs: ");
	json_decref(reply);
}

static int cmd_flush(int argc, char **argv)
{
	const char *category = NULL;
	bool wait = false;
	static const struct option longopts[] = {
		{"category", required_argument, NULL, 'c'},
		{"wait", no_argument, NULL, 'w'},
		{NULL, 0, NULL, 0}};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "c:w", longopts, NULL)) != -1) {
		if (c == 'c')
			category = optarg;
		else if (c == 'w')
			wait = true;
		else {
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (category && cat_from_name(category) < 0) {
		fprintf(stderr,
			"huracanfs: unknown category \"%s\" (learning, logs, "
			"monitoring, models, data_cache, other)\n",
			category);
		return EXIT_USAGE;
	}
	char err[512];
	json_t *req = json_pack("{s:s, s:b}", "cmd", "flush", "wait", wait);
	if (category)
		json_object_set_new(req, "category", json_string(category));
	void *reply = NULL;
	int rc = control_call(argv[optind], req, &reply, err, sizeof(err));
	json_decref(req);
	if (rc) {
		fprintf(stderr, "huracanfs: %s\n", err);
		return 1;
	}
	int ok = json_is_true(json_object_get(reply, "ok"));
	if (!ok)
		fprintf(stderr, "huracanfs: flush: %s\n",
			json_string_value(json_object_get(reply, "error")));
	json_decref(reply);
	if (!ok && wait)
		print_failures(argv[optind]);
	return ok ? 0 : 1;
}

static int cmd_unmount(int argc, char **argv)
{
	int64_t timeout = 0;
	bool lazy = false;
	static const struct option longopts[] = {
		{"timeout", required_argument, NULL, 't'},
		{"lazy", no_argument, NULL, 'l'},
		{NULL, 0, NULL, 0}};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "t:l", longopts, NULL)) != -1) {
		if (c == 't') {
			char *end;
			long long v = strtoll(optarg, &end, 10);
			if (*optarg == '\0' || *end || v <= 0) {
				fprintf(stderr,
					"huracanfs: --timeout: a number of "
					"seconds > 0\n");
				return EXIT_USAGE;
			}
			timeout = v;
		} else if (c == 'l') {
			lazy = true;
		} else {
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return EXIT_USAGE;
	}
	return unmount_run(argv[optind], timeout, lazy);
}

/* A rate as `limit` prints it: bytes per second, in the largest binary
 * unit that divides it. */
static void print_rate(const char *what, json_int_t v)
{
	static const char units[] = "KMGT";
	int u = -1;
	if (v == 0) {
		printf("%s: unlimited\n", what);
		return;
	}
	while (u < 3 && v % 1024 == 0) {
		v /= 1024;
		u++;
	}
	if (u < 0)
		printf("%s: %lld bytes/s\n", what, (long long)v);
	else
		printf("%s: %lld%ciB/s\n", what, (long long)v, units[u]);
}

static int cmd_limit(int argc, char **argv)
{
	const char *up = NULL, *down = NULL;
	static const struct option longopts[] = {
		{"up", required_argument, NULL, 'u'},
		{"down", required_argument, NULL, 'd'},
		{NULL, 0, NULL, 0}};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "u:d:", longopts, NULL)) != -1) {
		if (c == 'u')
			up = optarg;
		else if (c == 'd')
			down = optarg;
		else {
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return EXIT_USAGE;
	}
	json_t *req = json_pack("{s:s}", "cmd", "limit");
	const char *rates[2] = {up, down}, *keys[2] = {"up", "down"};
	for (int i = 0; i < 2; i++) {
		uint64_t v;
		if (!rates[i])
			continue;
		if (config_parse_size(rates[i], &v) < 0 || v > INT64_MAX) {
			fprintf(stderr,
				"huracanfs: --%s %s: a rate in bytes per "
				"second (binary units: 512K, 5M; 0: no "
				"limit)\n",
				keys[i], rates[i]);
			json_decref(req);
			return EXIT_USAGE;
		}
		json_object_set_new(req, keys[i], json_integer((json_int_t)v));
	}
	char err[512];
	void *reply = NULL;
	int rc = control_call(argv[optind], req, &reply, err, sizeof(err));
	json_decref(req);
	if (rc) {
		fprintf(stderr, "huracanfs: %s\n", err);
		return 1;
	}
	int ok = json_is_true(json_object_get(reply, "ok"));
	if (ok) {
		print_rate("upload",
			   json_integer_value(json_object_get(
				   reply, "upload_bytes_per_second")));
		print_rate("download",
			   json_integer_value(json_object_get(
				   reply, "download_bytes_per_second")));
	} else {
		fprintf(stderr, "huracanfs: limit: %s\n",
			json_string_value(json_object_get(reply, "error")));
	}
	json_decref(reply);
	return ok ? 0 : 1;
}

/* ---- check-config, auth ---- */

static int config_only(int argc, char **argv, const char **path)
{
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'}, {NULL, 0, NULL, 0}};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "c:", longopts, NULL)) != -1) {
		if (c != 'c') {
			usage(stderr);
			return EXIT_USAGE;
		}
		*path = optarg;
	}
	if (optind != argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	return 0;
}

static int cmd_check_config(int argc, char **argv)
{
	const char *path = NULL;
	int rc = config_only(argc, argv, &path);
	if (rc)
		return rc;
	struct hfs_config cfg;
	char err[1024];
	if (config_init(&cfg) < 0)
		return 1;
	rc = config_load(&cfg, path, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "huracanfs: %s\n", err);
		config_release(&cfg);
		return 1;
	}
	printf("config: %s\n", cfg.path ? cfg.path : "(embedded default)");
	config_dump(&cfg, stdout);
	printf("configuration OK\n");
	config_release(&cfg);
	return 0;
}

static int cmd_auth(int argc, char **argv)
{
	const char *path = NULL;
	int rc = config_only(argc, argv, &path);
	if (rc)
		return rc;
	char err[1024];
	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = auth_run(path, stdin, stdout, err, sizeof(err));
	curl_global_cleanup();
	if (rc < 0) {
		fprintf(stderr, "huracanfs: auth: %s\n", err);
		return 1;
	}
	return 0;
}

/* True if @abs is a mount point of /proc/self/mounts. */
static bool is_mounted(const char *abs)
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

static int cmd_repair(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'}, {NULL, 0, NULL, 0}};
	const char *path = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "c:", longopts, NULL)) != -1) {
		if (c != 'c') {
			usage(stderr);
			return EXIT_USAGE;
		}
		path = optarg;
	}
	if (optind != argc - 1) {
		usage(stderr);
		return EXIT_USAGE;
	}
	char abs[PATH_MAX];
	if (realpath(argv[optind], abs) && is_mounted(abs)) {
		fprintf(stderr,
			"huracanfs: repair: %s is mounted; unmount it first\n",
			argv[optind]);
		return 1;
	}
	struct hfs_config cfg;
	char err[1024] = "";
	if (config_init(&cfg) < 0)
		return 1;
	int rc = config_load(&cfg, path, err, sizeof(err));
	if (!rc)
		rc = repair_run(&cfg, stdout, err, sizeof(err));
	config_release(&cfg);
	if (rc) {
		fprintf(stderr, "huracanfs: repair: %s\n", err);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
		printf("huracanfs %s (libfuse %s)\n", PACKAGE_VERSION,
		       fuse_pkgversion());
		return 0;
	}
	if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 ||
	    strcmp(cmd, "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(cmd, "mount") == 0)
		return cmd_mount(argc - 1, argv + 1);
	if (strcmp(cmd, "status") == 0)
		return cmd_status(argc - 1, argv + 1);
	if (strcmp(cmd, "flush") == 0)
		return cmd_flush(argc - 1, argv + 1);
	if (strcmp(cmd, "limit") == 0)
		return cmd_limit(argc - 1, argv + 1);
	if (strcmp(cmd, "unmount") == 0)
		return cmd_unmount(argc - 1, argv + 1);
	if (strcmp(cmd, "check-config") == 0)
		return cmd_check_config(argc - 1, argv + 1);
	if (strcmp(cmd, "auth") == 0)
		return cmd_auth(argc - 1, argv + 1);
	if (strcmp(cmd, "repair") == 0)
		return cmd_repair(argc - 1, argv + 1);
	fprintf(stderr, "huracanfs: unknown command \"%s\"\n", cmd);
	usage(stderr);
	return EXIT_USAGE;
}

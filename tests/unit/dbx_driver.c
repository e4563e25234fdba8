/*
 * dbx_driver: runs one Dropbox backend operation and prints the result as
 * one JSON object on stdout, for tests/integration/test_dropbox_backend.py.
 *
 *   dbx_driver --config FILE [--fast-retry] [--single-max BYTES]
 *              [--chunk BYTES] COMMAND ARGS...
 *
 * Commands: probe | list PATH | stat PATH | download PATH OUT [OFF LEN]
 * [--rev REV] | upload PATH FILE [--parent-rev REV] [--autorename]
 * [--mtime T] | batch DIR FILE... | mkdir PATH | rm PATH |
 * rmbatch PATH[@PARENT_REV]... | tree PATH | mv FROM TO |
 * cp FROM TO | space | cursor | changes CURSOR | longpoll CURSOR TIMEOUT |
 * stress THREADS DIR (each thread uploads DIR/t<i>, stats it and
 * downloads it again, all at once on one backend).
 *
 * The object always has "rc" (0 or -errno), "errno" (its name) and
 * "error" (backend_last_error()). The exit status is 0 when the command
 * ran, whatever its rc, and 2 for a usage or setup error.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hfs/backend.h"
#include "hfs/config.h"
#include "hfs/backend_dropbox.h"
#include "hfs/hash.h"

static json_t *entry_json(const struct backend_entry *e)
{
	char hex[CHASH_HEXLEN + 1] = "";
	json_t *o;

	if (e->has_hash)
		chash_to_hex(e->hash, hex);
	o = json_pack("{s:s, s:b, s:I, s:I, s:s, s:s}", "name", e->name,
		      "is_dir", e->is_dir, "size", (json_int_t)e->size, "mtime",
		      (json_int_t)e->mtime, "rev", e->rev, "hash", hex);
	if (o && e->path) {
		json_object_set_new(o, "path", json_string(e->path));
		json_object_set_new(o, "deleted", json_boolean(e->deleted));
	}
	return o;
}

static int usage(void)
{
	fprintf(stderr, "usage: dbx_driver --config FILE [--fast-retry] "
			"[--single-max N] [--chunk N] COMMAND ARGS...\n");
	return 2;
}

enum pages_of { PAGES_LIST, PAGES_CHANGES, PAGES_TREE };

/* Fetches every page of list(), list_changes() or list_tree(). */
static int all_pages(struct backend *be, const char *path, const char *cursor0,
		     enum pages_of what, json_t *res)
{
	struct backend_page page;
	json_t *arr = json_array();
	char *cursor = cursor0 ? strdup(cursor0) : NULL;
	int rc = 0, pages = 0;
	size_t i, skipped = 0;

	for (;;) {
		memset(&page, 0, sizeof(page));
		if (what == PAGES_CHANGES)
			rc = be->ops->list_changes(be, cursor, &page);
		else if (what == PAGES_TREE)
			rc = be->ops->list_tree(be, path, cursor, &page);
		else
			rc = be->ops->list(be, path, cursor, &page);
		if (rc < 0)
			break;
		pages++;
		skipped += page.skipped;
		for (i = 0; i < page.n; i++)
			json_array_append_new(arr,
					      entry_json(&page.entries[i]));
		free(cursor);
		cursor = page.cursor;
		page.cursor = NULL;
		if (!page.has_more) {
			backend_page_release(&page);
			break;
		}
		backend_page_release(&page);
	}
	json_object_set_new(res, "entries", arr);
	json_object_set_new(res, "pages", json_integer(pages));
	json_object_set_new(res, "skipped", json_integer((json_int_t)skipped));
	if (cursor)
		json_object_set_new(res, "cursor", json_string(cursor));
	free(cursor);
	return rc;
}

static int open_in(const char *file, uint64_t *size)
{
	struct stat st;
	int fd = open(file, O_RDONLY);

	if (fd < 0 || fstat(fd, &st) < 0)
		return -1;
	*size = (uint64_t)st.st_size;
	return fd;
}

struct stress_job {
	struct backend *be;
	char path[256];
	int index;
	int rc;
	char error[512];
};

/* One thread of "stress": upload, stat, download, compare. */
static void *stress_thread(void *arg)
{
	struct stress_job *j = arg;
	struct backend_upload up;
	struct backend_entry e;
	char data[4096], back[4096];
	uint64_t got = 0;
	int fd, out;

	memset(&up, 0, sizeof(up));
	for (size_t k = 0; k < sizeof(data); k++)
		data[k] = (char)('a' + (j->index + (int)k) % 26);
	fd = memfd_create("up", 0);
	out = memfd_create("down", 0);
	if (fd < 0 || out < 0 ||
	    pwrite(fd, data, sizeof(data), 0) != (ssize_t)sizeof(data)) {
		j->rc = -EIO;
		goto done;
	}
	up.path = j->path;
	up.fd = fd;
	up.size = sizeof(data);
	up.mtime = 1700000000;
	j->rc = j->be->ops->upload(j->be, &up, &e);
	if (j->rc == 0)
		j->rc = j->be->ops->stat(j->be, j->path, &e);
	if (j->rc == 0 && e.size != sizeof(data))
		j->rc = -EIO;
	if (j->rc == 0)
		j->rc = j->be->ops->download(j->be, j->path, NULL, 0, 0, out,
					     &got, &e);
	if (j->rc == 0 &&
	    (got != sizeof(data) ||
	     pread(out, back, sizeof(back), 0) != (ssize_t)sizeof(back) ||
	     memcmp(back, data, sizeof(data)) != 0))
		j->rc = -EIO;
done:
	if (j->rc < 0)
		snprintf(j->error, sizeof(j->error), "%s",
			 backend_last_error());
	if (fd >= 0)
		close(fd);
	if (out >= 0)
		close(out);
	return NULL;
}

static int stress(struct backend *be, int n, const char *dir, json_t *res)
{
	struct stress_job *jobs = calloc((size_t)n, sizeof(*jobs));
	pthread_t *tids = calloc((size_t)n, sizeof(*tids));
	json_t *arr = json_array();
	int i, rc = 0;

	if (!jobs || !tids || n <= 0) {
		free(jobs);
		free(tids);
		json_decref(arr);
		return -EINVAL;
	}
	for (i = 0; i < n; i++) {
		jobs[i].be = be;
		jobs[i].index = i;
		snprintf(jobs[i].path, sizeof(jobs[i].path), "%s/t%d", dir, i);
		pthread_create(&tids[i], NULL, stress_thread, &jobs[i]);
	}
	for (i = 0; i < n; i++) {
		pthread_join(tids[i], NULL);
		json_array_append_new(arr,
				      json_pack("{s:i, s:s}", "rc", jobs[i].rc,
						"error", jobs[i].error));
		if (jobs[i].rc < 0 && rc == 0)
			rc = jobs[i].rc;
	}
	json_object_set_new(res, "results", arr);
	free(jobs);
	free(tids);
	return rc;
}

static int run(struct backend *be, int argc, char **argv, json_t *res)
{
	const char *cmd = argv[0];
	struct backend_entry e;
	int rc = -EINVAL, i;

	memset(&e, 0, sizeof(e));
	if (strcmp(cmd, "probe") == 0) {
		rc = be->ops->probe(be);
	} else if (strcmp(cmd, "list") == 0 && argc == 2) {
		rc = all_pages(be, argv[1], NULL, PAGES_LIST, res);
	} else if (strcmp(cmd, "tree") == 0 && argc == 2) {
		rc = all_pages(be, argv[1], NULL, PAGES_TREE, res);
	} else if (strcmp(cmd, "stat") == 0 && argc == 2) {
		rc = be->ops->stat(be, argv[1], &e);
		if (rc == 0)
			json_object_set_new(res, "entry", entry_json(&e));
	} else if (strcmp(cmd, "download") == 0 && argc >= 3) {
		const char *rev = NULL;
		uint64_t off = 0, len = 0, got = 0;
		int fd, n = 3;

		if (argc >= 5 && argv[3][0] != '-') {
			off = strtoull(argv[3], NULL, 10);
			len = strtoull(argv[4], NULL, 10);
			n = 5;
		}
		if (argc >= n + 2 && strcmp(argv[n], "--rev") == 0)
			rev = argv[n + 1];
		fd = open(argv[2], O_WRONLY | O_CREAT, 0600);
		if (fd < 0)
			return -errno;
		rc = be->ops->download(be, argv[1], rev, off, len, fd, &got,
				       &e);
		close(fd);
		if (rc == 0) {
			json_object_set_new(res, "got",
					    json_integer((json_int_t)got));
			json_object_set_new(res, "entry", entry_json(&e));
		}
	} else if (strcmp(cmd, "upload") == 0 && argc >= 3) {
		struct backend_upload up;

		memset(&up, 0, sizeof(up));
		up.path = argv[1];
		up.fd = open_in(argv[2], &up.size);
		if (up.fd < 0)
			return -errno;
		up.mtime = 1700000000;
		for (i = 3; i < argc; i++) {
			if (strcmp(argv[i], "--parent-rev") == 0 &&
			    i + 1 < argc)
				up.parent_rev = argv[++i];
			else if (strcmp(argv[i], "--autorename") == 0)
				up.autorename = true;
			else if (strcmp(argv[i], "--mtime") == 0 &&
				 i + 1 < argc)
				up.mtime = strtoll(argv[++i], NULL, 10);
		}
		rc = be->ops->upload(be, &up, &e);
		close(up.fd);
		if (rc == 0)
			json_object_set_new(res, "entry", entry_json(&e));
	} else if (strcmp(cmd, "batch") == 0 && argc >= 3) {
		size_t n = (size_t)argc - 2, k;
		struct backend_upload *ups = calloc(n, sizeof(*ups));
		struct backend_entry *outs = calloc(n, sizeof(*outs));
		int *rcs = calloc(n, sizeof(*rcs));
		char(*errs)[BACKEND_ERROR_MAX] = calloc(n, sizeof(*errs));
		char **paths = calloc(n, sizeof(*paths));
		json_t *arr = json_array();

		if (!ups || !outs || !rcs || !errs || !paths)
			return -ENOMEM;
		for (k = 0; k < n; k++) {
			const char *f = argv[k + 2], *b = strrchr(f, '/');

			if (asprintf(&paths[k], "%s/%s", argv[1],
				     b ? b + 1 : f) < 0)
				return -ENOMEM;
			ups[k].path = paths[k];
			ups[k].fd = open_in(f, &ups[k].size);
			ups[k].mtime = 1700000000;
		}
		rc = be->ops->upload_batch(be, ups, n, outs, rcs, errs);
		for (k = 0; k < n; k++) {
			json_t *o = rcs[k] == 0 ? entry_json(&outs[k])
						: json_object();

			json_object_set_new(o, "rc", json_integer(rcs[k]));
			if (rcs[k])
				json_object_set_new(o, "error",
						    json_string(errs[k]));
			json_array_append_new(arr, o);
			close(ups[k].fd);
			free(paths[k]);
		}
		json_object_set_new(res, "results", arr);
		free(ups);
		free(outs);
		free(rcs);
		free(errs);
		free(paths);
	} else if (strcmp(cmd, "rmbatch") == 0 && argc >= 2) {
		size_t n = (size_t)argc - 1, k;
		struct backend_delete *dels = calloc(n, sizeof(*dels));
		int *rcs = calloc(n, sizeof(*rcs));
		json_t *arr = json_array();

		if (!dels || !rcs)
			return -ENOMEM;
		for (k = 0; k < n; k++) {
			char *at = strchr(argv[k + 1], '@');

			if (at)
				*at = '\0';
			dels[k].path = argv[k + 1];
			dels[k].parent_rev = at ? at + 1 : NULL;
		}
		rc = be->ops->remove_batch(be, dels, n, rcs);
		for (k = 0; k < n; k++)
			json_array_append_new(arr, json_integer(rcs[k]));
		json_object_set_new(res, "results", arr);
		free(dels);
		free(rcs);
	} else if (strcmp(cmd, "mkdir") == 0 && argc == 2) {
		rc = be->ops->mkdir(be, argv[1]);
	} else if (strcmp(cmd, "rm") == 0 && argc == 2) {
		rc = be->ops->remove(be, argv[1]);
	} else if (strcmp(cmd, "mv") == 0 && argc == 3) {
		rc = be->ops->move(be, argv[1], argv[2]);
	} else if (strcmp(cmd, "cp") == 0 && argc == 3) {
		rc = be->ops->copy(be, argv[1], argv[2]);
	} else if (strcmp(cmd, "space") == 0) {
		uint64_t used = 0, total = 0;

		rc = be->ops->space(be, &used, &total);
		json_object_set_new(res, "used",
				    json_integer((json_int_t)used));
		json_object_set_new(res, "total",
				    json_integer((json_int_t)total));
	} else if (strcmp(cmd, "cursor") == 0) {
		char *cursor = NULL;

		rc = be->ops->latest_cursor(be, &cursor);
		if (rc == 0)
			json_object_set_new(res, "cursor", json_string(cursor));
		free(cursor);
	} else if (strcmp(cmd, "changes") == 0 && argc == 2) {
		rc = all_pages(be, NULL, argv[1], PAGES_CHANGES, res);
	} else if (strcmp(cmd, "stress") == 0 && argc == 3) {
		rc = stress(be, atoi(argv[1]), argv[2], res);
	} else if (strcmp(cmd, "longpoll") == 0 && argc == 3) {
		bool changes = false;
		int backoff = 0;

		rc = be->ops->longpoll(be, argv[1], atoi(argv[2]), &changes,
				       &backoff);
		json_object_set_new(res, "changes", json_boolean(changes));
		json_object_set_new(res, "backoff", json_integer(backoff));
	}
	return rc;
}

int main(int argc, char **argv)
{
	struct dbx_tuning tune;
	struct hfs_config cfg;
	struct backend *be = NULL;
	const char *config = NULL, *name;
	char err[1024];
	json_t *res;
	int i, rc;

	memset(&tune, 0, sizeof(tune));
	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
			config = argv[++i];
		} else if (strcmp(argv[i], "--fast-retry") == 0) {
			tune.backoff_base_ms = 50;
			tune.backoff_cap_ms = 400;
		} else if (strcmp(argv[i], "--single-max") == 0 &&
			   i + 1 < argc) {
			tune.single_max = strtoull(argv[++i], NULL, 10);
		} else if (strcmp(argv[i], "--chunk") == 0 && i + 1 < argc) {
			tune.chunk = strtoull(argv[++i], NULL, 10);
		} else {
			return usage();
		}
	}
	if (!config || i >= argc)
		return usage();
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (config_init(&cfg) < 0)
		return 2;
	rc = config_load(&cfg, config, err, sizeof(err));
	if (rc == 0)
		rc = backend_dropbox_create(&cfg, &be, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "dbx_driver: %s\n", err);
		config_release(&cfg);
		return 2;
	}
	backend_dropbox_tune(be, &tune);
	res = json_object();
	backend_set_error("%s", "");
	rc = run(be, argc - i, argv + i, res);
	name = rc < 0 ? strerrorname_np(-rc) : "";
	json_object_set_new(res, "rc", json_integer(rc));
	json_object_set_new(res, "errno", json_string(name ? name : "?"));
	json_object_set_new(res, "error", json_string(backend_last_error()));
	json_dumpf(res, stdout, JSON_COMPACT);
	fputc('\n', stdout);
	json_decref(res);
	backend_destroy(be);
	config_release(&cfg);
	curl_global_cleanup();
	return 0;
}

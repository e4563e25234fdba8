/*
 * Fuzz target for the YAML configuration (hfs/config.h).
 *
 * Each input is written to a private temporary file, mode 0600 so that the
 * secret-file permission check never refuses it, and loaded with
 * config_init() + config_load(); a successful load is checked against the
 * header's promises and dumped. The same bytes, as a C string, also go
 * through config_parse_size(), which is compared with a small independent
 * reading of the documented size syntax.
 *
 * The temporary directory is also $HOME (so "~" expansion stays inside it),
 * and HURACANFS_DROPBOX_TOKEN is removed from the environment so that the
 * result depends on the input alone.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "hfs/category.h"
#include "hfs/config.h"

static char dir[4096];
static char path[4096 + 32];
static int fd = -1;
static FILE *devnull;

static void cleanup(void)
{
	if (fd >= 0)
		close(fd);
	if (devnull)
		fclose(devnull);
	unlink(path);
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *tmp = getenv("TMPDIR");

	(void)argc;
	(void)argv;
	snprintf(dir, sizeof(dir), "%s/fuzz_config.XXXXXX",
		 tmp && tmp[0] ? tmp : "/tmp");
	if (!mkdtemp(dir)) {
		perror("fuzz_config: mkdtemp");
		abort();
	}
	snprintf(path, sizeof(path), "%s/config.yaml", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	/* fchmod too: the mode must not depend on the umask. */
	if (fd < 0 || fchmod(fd, 0600) < 0) {
		perror("fuzz_config: config file");
		abort();
	}
	devnull = fopen("/dev/null", "w");
	if (!devnull) {
		perror("fuzz_config: /dev/null");
		abort();
	}
	atexit(cleanup);
	setenv("HOME", dir, 1);
	unsetenv("HURACANFS_DROPBOX_TOKEN");
	return 0;
}

static void write_input(const uint8_t *data, size_t size)
{
	size_t done = 0;

	if (ftruncate(fd, 0) < 0)
		abort();
	while (done < size) {
		ssize_t n = pwrite(fd, data + done, size - done, (off_t)done);

		if (n <= 0)
			abort();
		done += (size_t)n;
	}
}

/* What a successful load promises (config.h and the README's table). */
static void check_loaded(const struct hfs_config *c)
{
	int i;

	FUZZ_CHECK(c->path && strcmp(c->path, path) == 0);
	FUZZ_CHECK(!c->token_from_env);
	for (i = 0; i < CAT_COUNT; i++)
		FUZZ_CHECK(c->interval[i] > 0);
	FUZZ_CHECK(c->new_data_interval > 0);
	FUZZ_CHECK(c->flush_timeout > 0);
	FUZZ_CHECK(c->dir_cache_seconds >= 0);
	FUZZ_CHECK(c->cache_max_bytes > 0);
	FUZZ_CHECK(c->backend == BACKEND_LOCAL ||
		   c->backend == BACKEND_DROPBOX);
	/* Without an explicit choice, credentials pick the backend. */
	if (!c->backend_set)
		FUZZ_CHECK(c->backend == ((c->access_token || c->refresh_token)
						  ? BACKEND_DROPBOX
						  : BACKEND_LOCAL));
	/* Non-empty settings that always have a value. */
	FUZZ_CHECK(c->app_folder && c->app_folder[0]);
	FUZZ_CHECK(c->remote_dir && c->remote_dir[0]);
	FUZZ_CHECK(c->cache_dir && c->cache_dir[0]);
	FUZZ_CHECK(c->api_url && c->api_url[0]);
	FUZZ_CHECK(c->content_url && c->content_url[0]);
	FUZZ_CHECK(c->notify_url && c->notify_url[0]);
	/* "~" was expanded. */
	FUZZ_CHECK(c->remote_dir[0] != '~' ||
		   (c->remote_dir[1] != '\0' && c->remote_dir[1] != '/'));
	FUZZ_CHECK(c->cache_dir[0] != '~' ||
		   (c->cache_dir[1] != '\0' && c->cache_dir[1] != '/'));
	FUZZ_CHECK(c->n_rules >= 0 && c->n_rules <= 1024);
	FUZZ_CHECK(c->n_rules == 0 || c->rules);
	for (i = 0; i < c->n_rules; i++) {
		const char *p = c->rules[i].pattern;

		FUZZ_CHECK(p && p[0] && p[0] != '/');
		FUZZ_CHECK(cat_name(c->rules[i].cat) != NULL);
	}
}

static void fuzz_load(const uint8_t *data, size_t size)
{
	struct hfs_config cfg;
	char err[512];
	int rc;

	write_input(data, size);
	if (config_init(&cfg) < 0)
		abort();
	memset(err, 'x', sizeof(err));
	rc = config_load(&cfg, path, err, sizeof(err));
	FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);
	FUZZ_CHECK(rc <= 0);
	if (rc == 0) {
		FUZZ_CHECK(err[0] == '\0');
		check_loaded(&cfg);
		config_dump(&cfg, devnull);
	} else {
		FUZZ_CHECK(err[0] != '\0');
		/* A 0600 file is never refused for its mode. */
		FUZZ_CHECK(rc != -EPERM);
	}
	config_release(&cfg);
}

/*
 * An independent reading of the size syntax (config.h): digits, optionally
 * ".digits" when a unit follows; a unit K, M, G or T, optionally followed by
 * "i", "iB" or "B"; or no unit, optionally "B". Case-insensitive.
 * Returns false if @s is not in that form; else *@whole and *@shift.
 */
static bool size_form(const char *s, unsigned __int128 *whole,
		      unsigned int *shift, bool *frac)
{
	const char *p = s;
	const char *units = "KMGT";
	const char *u;

	*whole = 0;
	*shift = 0;
	*frac = false;
	if (!isdigit((unsigned char)*p))
		return false;
	for (; isdigit((unsigned char)*p); p++) {
		/* Anything above 2^70 is too big either way; saturate. */
		if (*whole < ((unsigned __int128)1 << 70))
			*whole = *whole * 10 + (unsigned)(*p - '0');
	}
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return false;
		while (isdigit((unsigned char)*p))
			p++;
		*frac = true;
	}
	u = *p ? strchr(units, toupper((unsigned char)*p)) : NULL;
	if (u) {
		*shift = 10 * (unsigned int)(u - units + 1);
		p++;
		return !*p || !strcasecmp(p, "i") || !strcasecmp(p, "ib") ||
		       !strcasecmp(p, "b");
	}
	return !*frac && (!*p || !strcasecmp(p, "b"));
}

static void fuzz_size(const char *s)
{
	unsigned __int128 whole, lo, hi;
	unsigned int shift;
	uint64_t v = 0;
	bool frac, form;
	int rc;

	rc = config_parse_size(s, &v);
	FUZZ_CHECK(rc == 0 || rc == -EINVAL);
	form = size_form(s, &whole, &shift, &frac);
	lo = whole << shift;
	hi = frac ? (whole + 1) << shift : lo + 1;
	if (rc == 0) {
		/* Accepted: well-formed, and the value is what it says. */
		FUZZ_CHECK(form);
		FUZZ_CHECK(v >= lo && v < hi);
	} else if (form) {
		/* Refused although well-formed: only because it is too big. */
		FUZZ_CHECK(hi - 1 > UINT64_MAX);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;

	fuzz_load(data, size);
	s = fuzz_strndup(data, size);
	fuzz_size(s);
	free(s);
	return 0;
}

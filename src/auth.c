/*
 * `huracanfs auth` (see auth.h).
 *
 * PKCE: the verifier is 64 characters drawn uniformly from the 66 allowed
 * ([A-Za-z0-9-._~]) with OpenSSL's RAND_bytes (rejection sampling keeps it
 * unbiased); the challenge is base64url(SHA-256(verifier)) without
 * padding. No app secret is needed or sent.
 *
 * The config file is edited as text, not re-serialized, so that comments,
 * order and formatting survive: only the refresh_token line of the
 * top-level "dropbox:" block is replaced or inserted. The block is the
 * "dropbox:" line at column 0 and every following line that is blank, a
 * comment, or indented. Secrets (the code, the verifier, tokens) are kept
 * in memory only as long as needed and wiped before they are freed.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hfs/err.h"
#include "hfs/auth.h"
#include "hfs/config.h"
#include "hfs/dbx_json.h"
#include "hfs/http.h"

#define AUTH_DEFAULT_URL "https://www.dropbox.com/oauth2/authorize"
#define AUTH_VERIFIER_LEN 64
#define AUTH_CODE_MAX 2048
#define AUTH_FILE_MAX ((size_t)1024 * 1024)

static const char verifier_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				     "abcdefghijklmnopqrstuvwxyz"
				     "0123456789-._~";

static void wipe_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

/* ---- PKCE ---- */

static int make_verifier(char out[AUTH_VERIFIER_LEN + 1])
{
	const size_t nchars = sizeof(verifier_chars) - 1; /* 66 */
	const unsigned limit = 256 - 256 % nchars; /* 198 */
	unsigned char buf[128];
	size_t n = 0, i;

	while (n < AUTH_VERIFIER_LEN) {
		if (RAND_bytes(buf, sizeof(buf)) != 1)
			return -EIO;
		for (i = 0; i < sizeof(buf) && n < AUTH_VERIFIER_LEN; i++)
			if (buf[i] < limit)
				out[n++] = verifier_chars[buf[i] % nchars];
	}
	out[n] = '\0';
	explicit_bzero(buf, sizeof(buf));
	return 0;
}

/* base64url(SHA-256(@verifier)) without padding: 43 characters. */
static int make_challenge(const char *verifier, char out[64])
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				  "abcdefghijklmnopqrstuvwxyz0123456789-_";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0, i;
	size_t n = 0;
	uint32_t v;

	if (EVP_Digest(verifier, strlen(verifier), md, &mdlen, EVP_sha256(),
		       NULL) != 1 ||
	    mdlen != 32)
		return -EIO;
	for (i = 0; i + 3 <= mdlen; i += 3) {
		v = (uint32_t)md[i] << 16 | (uint32_t)md[i + 1] << 8 |
		    md[i + 2];
		out[n++] = b64[v >> 18 & 63];
		out[n++] = b64[v >> 12 & 63];
		out[n++] = b64[v >> 6 & 63];
		out[n++] = b64[v & 63];
	}
	/* 32 = 30 + 2: two bytes left, three characters. */
	v = (uint32_t)md[i] << 16 | (uint32_t)md[i + 1] << 8;
	out[n++] = b64[v >> 18 & 63];
	out[n++] = b64[v >> 12 & 63];
	out[n++] = b64[v >> 6 & 63];
	out[n] = '\0';
	return 0;
}

/* ---- the config file ---- */

static bool token_ok(const char *t)
{
	if (!t || !t[0] || strlen(t) > DBX_TOKEN_MAX)
		return false;
	for (; *t; t++)
		if (!((*t >= 'A' && *t <= 'Z') || (*t >= 'a' && *t <= 'z') ||
		      (*t >= '0' && *t <= '9') || strchr("-._~+/=", *t)))
			return false;
	return true;
}

/* Reads all of @path (at most AUTH_FILE_MAX bytes). -ENOENT if absent. */
static int read_file(const char *path, char **buf, size_t *len)
{
	struct stat st;
	char *b;
	ssize_t n;
	size_t got = 0;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    (size_t)st.st_size > AUTH_FILE_MAX) {
		int e = S_ISREG(st.st_mode) ? EFBIG : EINVAL;

		close(fd);
		return -e;
	}
	b = malloc((size_t)st.st_size + 1);
	if (!b) {
		close(fd);
		return -ENOMEM;
	}
	while (got < (size_t)st.st_size) {
		n = read(fd, b + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	b[got] = '\0';
	*buf = b;
	*len = got;
	return 0;
}

/* Length of the line at @p (up to @end), including its terminator. */
static size_t line_len(const char *p, const char *end)
{
	const char *nl = memchr(p, '\n', (size_t)(end - p));

	return nl ? (size_t)(nl - p + 1) : (size_t)(end - p);
}

/* Length of the line without "\n" or "\r\n". */
static size_t content_len(const char *p, size_t len)
{
	if (len && p[len - 1] == '\n')
		len--;
	if (len && p[len - 1] == '\r')
		len--;
	return len;
}

/* True if the line is blank or only a comment. */
static bool blank_or_comment(const char *p, size_t len)
{
	size_t i = 0;

	while (i < len && (p[i] == ' ' || p[i] == '\t'))
		i++;
	return i == len || p[i] == '#';
}

/*
 * "dropbox:" at column 0: returns 1 for a block header, 0 for another
 * line, -1 for "dropbox:" with a value on the same line (flow style).
 */
static int is_dropbox_header(const char *p, size_t len)
{
	size_t i = 8;

	if (len < 8 || memcmp(p, "dropbox:", 8) != 0)
		return 0;
	while (i < len && (p[i] == ' ' || p[i] == '\t'))
		i++;
	return (i == len || p[i] == '#') ? 1 : -1;
}

/* "<indent>refresh_token<spaces>:" */
static bool is_refresh_line(const char *p, size_t len)
{
	size_t i = 0;

	while (i < len && (p[i] == ' ' || p[i] == '\t'))
		i++;
	if (i == 0 || len - i < 13 || memcmp(p + i, "refresh_token", 13) != 0)
		return false;
	i += 13;
	while (i < len && (p[i] == ' ' || p[i] == '\t'))
		i++;
	return i < len && p[i] == ':';
}

/*
 * The new content of the file: @old (may be NULL) with the refresh token
 * set. Returns a malloc'd buffer in *@out (secret) and its length.
 */
static int edit_config(const char *old, size_t oldlen, const char *token,
		       char **out, size_t *outlen, char *err, size_t errlen)
{
	const char *end = old + oldlen, *p, *sec = NULL;
	const char *repl = NULL, *ins = NULL, *nl = "\n";
	char indent[64] = "  ";
	size_t len, clen, n = 0, cap, replen = 0;
	bool need_nl = false, indent_set = false;
	char *buf;
	int h;

	for (p = old; old && p < end; p += len) {
		len = line_len(p, end);
		clen = content_len(p, len);
		if (!sec) {
			h = is_dropbox_header(p, clen);
			if (h < 0) {
				err_set(err, errlen,
					"the dropbox: section is written in "
					"flow style; add refresh_token by "
					"hand");
				return -EINVAL;
			}
			if (h > 0) {
				sec = p;
				ins = p + len;
				if (clen + 2 <= len && p[clen] == '\r')
					nl = "\r\n";
				need_nl = len == clen;
			}
			continue;
		}
		if (!blank_or_comment(p, clen) && p[0] != ' ' && p[0] != '\t')
			break; /* the next top-level key: the section ends */
		if (!blank_or_comment(p, clen) && !indent_set) {
			size_t k = 0;

			while (k < clen && k + 1 < sizeof(indent) &&
			       (p[k] == ' ' || p[k] == '\t'))
				k++;
			memcpy(indent, p, k);
			indent[k] = '\0';
			indent_set = true;
		}
		if (!repl && is_refresh_line(p, clen)) {
			size_t k = 0;

			repl = p;
			replen = clen;
			while (k < clen && k + 1 < sizeof(indent) &&
			       (p[k] == ' ' || p[k] == '\t'))
				k++;
			memcpy(indent, p, k);
			indent[k] = '\0';
		}
	}

	cap = oldlen + strlen(token) + sizeof(indent) + 64;
	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
#define PUT(s, l)                          \
	do {                               \
		memcpy(buf + n, (s), (l)); \
		n += (l);                  \
	} while (0)
	if (repl) {
		PUT(old, (size_t)(repl - old));
		PUT(indent, strlen(indent));
		PUT("refresh_token: \"", 16);
		PUT(token, strlen(token));
		PUT("\"", 1);
		PUT(repl + replen, (size_t)(end - (repl + replen)));
	} else if (sec) {
		PUT(old, (size_t)(ins - old));
		if (need_nl)
			PUT(nl, strlen(nl));
		PUT(indent, strlen(indent));
		PUT("refresh_token: \"", 16);
		PUT(token, strlen(token));
		PUT("\"", 1);
		PUT(nl, strlen(nl));
		PUT(ins, (size_t)(end - ins));
	} else {
		if (old && oldlen) {
			PUT(old, oldlen);
			if (old[oldlen - 1] != '\n')
				PUT("\n", 1);
		}
		PUT("dropbox:\n  refresh_token: \"", 27);
		PUT(token, strlen(token));
		PUT("\"\n", 2);
	}
#undef PUT
	*out = buf;
	*outlen = n;
	return 0;
}

/* mkdir -p for the folder of @path (created 0700). */
static int make_parent(const char *path)
{
	char *dir = strdup(path), *slash, *p;
	int rc = 0;

	if (!dir)
		return -ENOMEM;
	slash = strrchr(dir, '/');
	if (!slash || slash == dir) {
		free(dir);
		return 0;
	}
	*slash = '\0';
	for (p = dir + 1; rc == 0; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;

		*p = '\0';
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			rc = -errno;
		*p = c;
		if (c == '\0')
			break;
	}
	free(dir);
	return rc;
}

static int write_all(int fd, const char *p, size_t len)
{
	ssize_t n;

	while (len) {
		n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int auth_store_refresh_token(const char *path, const char *refresh_token,
			     char *err, size_t errlen)
{
	char *old = NULL, *neu = NULL, *tmp = NULL, *dir = NULL, *slash;
	size_t oldlen = 0, neulen = 0;
	int fd = -1, dfd, rc;

	if (!token_ok(refresh_token)) {
		err_set(err, errlen,
			"Dropbox sent a refresh token with "
			"unexpected characters; not stored");
		return -EINVAL;
	}
	rc = read_file(path, &old, &oldlen);
	if (rc == -ENOENT) {
		old = NULL;
		oldlen = 0;
		rc = make_parent(path);
	}
	if (rc < 0) {
		err_set(err, errlen, "%s: %s", path, strerror(-rc));
		goto out;
	}
	rc = edit_config(old, oldlen, refresh_token, &neu, &neulen, err,
			 errlen);
	if (rc < 0)
		goto out;
	if (asprintf(&tmp, "%s.XXXXXX", path) < 0) {
		tmp = NULL;
		rc = -ENOMEM;
		goto out;
	}
	fd = mkstemp(tmp);
	if (fd < 0) {
		rc = -errno;
		err_set(err, errlen, "cannot create a file beside %s: %s", path,
			strerror(errno));
		free(tmp);
		tmp = NULL;
		goto out;
	}
	if (fchmod(fd, 0600) < 0 || (rc = write_all(fd, neu, neulen)) < 0 ||
	    fsync(fd) < 0) {
		rc = rc < 0 ? rc : -errno;
		err_set(err, errlen, "writing %s: %s", tmp, strerror(-rc));
		goto out;
	}
	rc = close(fd);
	fd = -1;
	if (rc < 0 || rename(tmp, path) < 0) {
		rc = -errno;
		err_set(err, errlen, "replacing %s: %s", path, strerror(errno));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	dir = strdup(path);
	if (dir) {
		slash = strrchr(dir, '/');
		if (slash)
			*(slash == dir ? slash + 1 : slash) = '\0';
		dfd = open(slash ? dir : ".",
			   O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			fsync(dfd);
			close(dfd);
		}
	}
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	if (old) {
		explicit_bzero(old, oldlen);
		free(old);
	}
	if (neu) {
		explicit_bzero(neu, neulen);
		free(neu);
	}
	free(dir);
	return rc;
}

/* ---- the flow ---- */

/* Reads one line from @in, trimmed, into @code. */
static int read_code(FILE *in, char code[AUTH_CODE_MAX])
{
	size_t len, start = 0;

	if (!fgets(code, AUTH_CODE_MAX, in))
		return -EINVAL;
	len = strlen(code);
	while (len && (code[len - 1] == '\n' || code[len - 1] == '\r' ||
		       code[len - 1] == ' ' || code[len - 1] == '\t'))
		code[--len] = '\0';
	while (code[start] == ' ' || code[start] == '\t')
		start++;
	memmove(code, code + start, len - start + 1);
	return code[0] ? 0 : -EINVAL;
}

/* Exchanges @code for a refresh token (*@refresh, secret). */
static int exchange(const struct hfs_config *cfg, const char *code,
		    const char *verifier, char **refresh, char *err,
		    size_t errlen)
{
	struct http_response resp;
	struct http_request req;
	struct http_pool *pool = NULL;
	char *form = NULL, *url = NULL, *access = NULL;
	char ecode[64];
	int64_t expires = 0;
	int rc, attempt;

	memset(&resp, 0, sizeof(resp));
	*refresh = NULL;
	if (!cfg->api_url || strncmp(cfg->api_url, "https://", 8) != 0) {
		err_set(err, errlen,
			"huracanfs.api_url must be an https:// "
			"URL");
		return -EINVAL;
	}
	rc = http_form_add(&form, "grant_type", "authorization_code");
	if (rc == 0)
		rc = http_form_add(&form, "code", code);
	if (rc == 0)
		rc = http_form_add(&form, "client_id", cfg->app_key);
	if (rc == 0)
		rc = http_form_add(&form, "code_verifier", verifier);
	if (rc == 0) {
		size_t ulen = strlen(cfg->api_url);

		while (ulen > 8 && cfg->api_url[ulen - 1] == '/')
			ulen--;
		if (asprintf(&url, "%.*s/oauth2/token", (int)ulen,
			     cfg->api_url) < 0) {
			url = NULL;
			rc = -ENOMEM;
		}
	}
	if (rc == 0)
		rc = http_pool_create(cfg->ca_file, 1, &pool);
	if (rc < 0) {
		err_set(err, errlen, "out of memory");
		goto out;
	}
	http_request_init(&req);
	req.url = url;
	req.content_type = "application/x-www-form-urlencoded";
	req.body = form;
	req.body_len = strlen(form);
	for (attempt = 0; attempt < 3; attempt++) {
		rc = http_perform(pool, &req, &resp);
		if (rc == 0 && resp.status >= 500 && attempt < 2) {
			sleep(1);
			continue;
		}
		if (rc < 0 && http_transient(rc) && attempt < 2) {
			sleep(1);
			continue;
		}
		break;
	}
	if (rc < 0) {
		err_set(err, errlen, "cannot reach Dropbox: %s", resp.error);
		rc = http_transient(rc) || rc == -ECONNABORTED ? -EAGAIN : rc;
		goto out;
	}
	if (resp.status == 200) {
		rc = dbx_parse_token(resp.body, resp.body_len, &access,
				     &expires, refresh);
		if (rc < 0) {
			err_set(err, errlen,
				"malformed reply of the Dropbox "
				"token endpoint");
		} else if (!*refresh) {
			err_set(err, errlen, "Dropbox sent no refresh token");
			rc = -EIO;
		}
		goto out;
	}
	dbx_oauth_error(resp.body, resp.body_len, ecode, sizeof(ecode));
	if (resp.status >= 400 && resp.status < 500) {
		err_set(err, errlen,
			"Dropbox refused the code (%s); run huracanfs auth "
			"again and paste a fresh code",
			ecode[0] ? ecode : "no reason given");
		rc = -EACCES;
	} else {
		err_set(err, errlen,
			"the Dropbox token endpoint answered "
			"HTTP %ld",
			resp.status);
		rc = resp.status >= 500 ? -EAGAIN : -EIO;
	}
out:
	wipe_free(access);
	wipe_free(form);
	free(url);
	http_response_release(&resp);
	http_pool_destroy(pool);
	return rc;
}

int auth_run(const char *config_path, FILE *in, FILE *out, char *err,
	     size_t errlen)
{
	char verifier[AUTH_VERIFIER_LEN + 1], challenge[64];
	char code[AUTH_CODE_MAX];
	struct hfs_config cfg;
	const char *base, *home;
	char *query = NULL, *target = NULL, *refresh = NULL;
	int rc;

	err_set(err, errlen, "%s", "");
	rc = config_init(&cfg);
	if (rc < 0) {
		err_set(err, errlen, "out of memory");
		return rc;
	}
	rc = config_load(&cfg, config_path, err, errlen);
	if (rc < 0)
		goto out;
	if (config_path) {
		target = strdup(config_path);
	} else if (cfg.path) {
		target = strdup(cfg.path);
	} else {
		home = getenv("HOME");
		if (!home || !home[0]) {
			err_set(err, errlen, "HOME is not set; use --config");
			rc = -EINVAL;
			goto out;
		}
		if (asprintf(&target, "%s/.config/huracanfs/config.yaml",
			     home) < 0)
			target = NULL;
	}
	if (!target) {
		rc = -ENOMEM;
		goto out;
	}
	if (!cfg.app_key || !cfg.app_key[0]) {
		err_set(err, errlen,
			"dropbox.app_key is not set in %s: create an "
			"App-folder "
			"app in the Dropbox App Console and put its app key "
			"there",
			target);
		rc = -EINVAL;
		goto out;
	}
	rc = make_verifier(verifier);
	if (rc == 0)
		rc = make_challenge(verifier, challenge);
	if (rc < 0) {
		err_set(err, errlen, "cannot generate a PKCE verifier");
		goto out;
	}
	rc = http_form_add(&query, "client_id", cfg.app_key);
	if (rc == 0)
		rc = http_form_add(&query, "response_type", "code");
	if (rc == 0)
		rc = http_form_add(&query, "token_access_type", "offline");
	if (rc == 0)
		rc = http_form_add(&query, "code_challenge", challenge);
	if (rc == 0)
		rc = http_form_add(&query, "code_challenge_method", "S256");
	if (rc < 0) {
		err_set(err, errlen, "out of memory");
		goto out;
	}
	base = getenv("HURACANFS_AUTHORIZE_URL");
	if (!base || !base[0])
		base = AUTH_DEFAULT_URL;
	fprintf(out,
		"1. Open this address in a browser and allow access:\n\n"
		"   %s%s%s\n\n"
		"2. Paste the authorization code Dropbox shows, then press "
		"Enter.\n\nCode: ",
		base, strchr(base, '?') ? "&" : "?", query);
	fflush(out);
	rc = read_code(in, code);
	if (rc < 0) {
		err_set(err, errlen, "no authorization code entered");
		goto out;
	}
	rc = exchange(&cfg, code, verifier, &refresh, err, errlen);
	if (rc < 0)
		goto out;
	rc = auth_store_refresh_token(target, refresh, err, errlen);
	if (rc < 0)
		goto out;
	fprintf(out, "\nStored a Dropbox refresh token in %s.\n", target);
	fflush(out);
out:
	explicit_bzero(code, sizeof(code));
	explicit_bzero(verifier, sizeof(verifier));
	wipe_free(refresh);
	free(query);
	free(target);
	config_release(&cfg);
	return rc;
}

/*
 * The "dropbox" backend: Dropbox API v2 over HTTPS (dropbox-api.md), for
 * an App-folder app. Backend path "" is the folder "/" + app_folder of
 * the app folder's namespace ("/a/b" -> "/Huracan/a/b"); with an empty
 * app_folder it is the app folder itself (Dropbox path "").
 *
 * Credentials: cfg->access_token (HURACANFS_DROPBOX_TOKEN already applied
 * by config_load), or cfg->refresh_token + cfg->app_key (+ optional
 * app_secret), from which short-lived access tokens are minted at
 * {api_url}/oauth2/token and refreshed ~300 s before they expire or when
 * Dropbox answers 401 expired_access_token. When both are configured the
 * access token is used first and the refresh token takes over once it
 * expires. api_url, content_url and notify_url must be https:// URLs.
 *
 * Every method follows backend_api.h; the error detail of a failure (never a
 * secret) is in backend_last_error(). All methods are thread-safe.
 */
#ifndef HFS_BACKEND_DROPBOX_H
#define HFS_BACKEND_DROPBOX_H

#include <stddef.h>
#include <stdint.h>

struct backend;
struct hfs_config;

/*
 * Creates the backend. No network I/O happens here (probe() checks the
 * credentials). Returns 0 and sets *@out, or -errno with a message in
 * @err (@errlen bytes): -EINVAL for missing credentials or a bad URL or
 * app_folder, -ENOMEM.
 */
int backend_dropbox_create(const struct hfs_config *cfg, struct backend **out,
			   char *err, size_t errlen);

/* Retry and size policy; the defaults are in backend_dropbox.c. */
struct dbx_tuning {
	unsigned max_attempts; /* per call, default 6 */
	unsigned backoff_base_ms; /* first backoff, default 1000 */
	unsigned backoff_cap_ms; /* largest backoff, default 16000 */
	unsigned budget_ms; /* total sleep per call, default 60000 */
	uint64_t single_max; /* largest files/upload body, default 16 MiB */
	uint64_t chunk; /* session chunk, multiple of 4 MiB, 32 MiB */
};

/*
 * Replaces the policy of Dropbox backend @be (zero fields keep their
 * current value). For tests; call it before @be is shared between
 * threads. Ignored for other backends.
 */
void backend_dropbox_tune(struct backend *be, const struct dbx_tuning *t);

#endif

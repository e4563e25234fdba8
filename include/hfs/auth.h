/*
 * `huracanfs auth`: OAuth 2 authorization code flow with PKCE (S256) for
 * Dropbox (dropbox-api.md section 2), storing the refresh token in the
 * config file.
 *
 * The user opens the printed authorize URL, allows the app, and pastes
 * the code Dropbox shows; the code is exchanged at {api_url}/oauth2/token
 * for a refresh token, which is written to the dropbox: section of the
 * YAML config. Nothing secret (code, verifier, tokens) is ever printed.
 */
#ifndef HFS_AUTH_H
#define HFS_AUTH_H

#include <stddef.h>
#include <stdio.h>

/*
 * Runs the flow with the config at @config_path (NULL: the default
 * location): needs dropbox.app_key there (dropbox.app_secret is not
 * used: PKCE needs none). Prints the instructions and the URL to @out,
 * reads the code (one line) from @in. The authorize base URL is
 * https://www.dropbox.com/oauth2/authorize unless the environment
 * variable HURACANFS_AUTHORIZE_URL overrides it (tests).
 *
 * Returns 0, or a negative errno with a message in @err (@errlen bytes):
 * -EINVAL (no app_key, empty code, bad config), -EACCES (the code was
 * refused), -EAGAIN (network), -EIO, -ENOMEM, or a file error.
 */
int auth_run(const char *config_path, FILE *in, FILE *out, char *err,
	     size_t errlen);

/*
 * Stores @refresh_token as dropbox.refresh_token in the YAML file @path:
 * replaces an existing "refresh_token:" line of the dropbox: section, or
 * inserts one right after "dropbox:", or appends a dropbox: section;
 * every other byte of the file is kept. A missing file (and its folder,
 * mode 0700) is created. The file is replaced atomically (temporary file,
 * fsync, rename) with mode 0600. Returns 0 or -errno with a message in
 * @err: -EINVAL if the token has characters outside [A-Za-z0-9._~+/=-]
 * or the dropbox: section is in flow style.
 */
int auth_store_refresh_token(const char *path, const char *refresh_token,
			     char *err, size_t errlen);

#endif

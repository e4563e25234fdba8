/*
 * Configuration: YAML, declarative.
 *
 * One table of {section, key, type, bounds, default, offset} drives parsing,
 * defaults, check-config and the unknown-key error. The trainer's own
 * config.yaml is accepted as is: the "dropbox:" section (the seed's
 * DropboxSettings names) and the "huracanfs:" section are read; every other
 * top-level section is ignored; an unknown key inside either of the two is
 * an error that names the key and its line.
 *
 * Ownership: every string in struct hfs_config is owned by it and released
 * by config_release().
 */
#ifndef HFS_CONFIG_H
#define HFS_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "hfs/category.h"

enum hfs_backend_kind { BACKEND_LOCAL = 0, BACKEND_DROPBOX = 1 };

struct hfs_config {
	/* dropbox: section */
	char *access_token; /* secret */
	char *refresh_token; /* secret */
	char *app_key;
	char *app_secret; /* secret */
	char *app_folder; /* default "Huracan" */
	int64_t interval[CAT_COUNT]; /* seconds, > 0 */
	int64_t new_data_interval; /* sync_interval_new_data_seconds, 300 */
	bool enabled[CAT_COUNT]; /* sync_learning ... default true */
	bool restore_data_cache_on_startup; /* default true */

	/* huracanfs: section */
	int backend; /* enum hfs_backend_kind; default: dropbox if any
			credential is configured, else local */
	bool backend_set; /* backend: given explicitly */
	char *remote_dir; /* default ~/.local/share/huracanfs/remote */
	char *cache_dir; /* default ~/.cache/huracanfs */
	uint64_t cache_max_bytes; /* default 20 GiB */
	uint64_t cache_min_free_bytes; /* default 512 MiB: writers slow down
					  below this much free space */
	char *api_url; /* https://api.dropboxapi.com */
	char *content_url; /* https://content.dropboxapi.com */
	char *notify_url; /* https://notify.dropboxapi.com */
	char *ca_file; /* optional */
	char *log_file; /* default: stderr in --foreground, else
			   {cache_dir}/huracanfs.log */
	int log_level; /* syslog level, default LOG_INFO */
	int64_t flush_timeout; /* flush_timeout_seconds: unmount/SIGTERM
				  flush bound, default 120 */
	int64_t dir_cache_seconds; /* re-list a remote directory after this
				      long, default 60 */
	int64_t remote_wait_seconds; /* the longest a user operation waits
					for the remote, default 15 */
	bool writeback_cache; /* default true */
	bool rclone_links; /* symbolic links uploaded as NAME.rclonelink
			      files, and such files listed as links;
			      default true */
	char *today_link; /* name of the mount root's link to the current
			     UTC date folder; "" disables; default "today" */
	bool model_metadata; /* write model_metadata.json beside an uploaded
				model.bin; default true */
	bool shared_candles; /* copy run candles to data/candles/{SYMBOL}/
				on the remote; default true */
	bool cache_keep[CAT_COUNT]; /* cache_keep_<category>: evicted last
				       (true) or first (false) */
	char *metrics_listen; /* HOST:PORT of the Prometheus endpoint, or NULL
				 (none, the default); loopback only unless
				 metrics_allow_public */
	bool metrics_allow_public; /* default false */
	uint64_t upload_bps; /* upload_bytes_per_second, 0: no limit */
	uint64_t download_bps; /* download_bytes_per_second, 0: no limit */
	struct cat_rule *rules; /* owned; user rules, tried before the
				   built-in ones */
	int n_rules;

	/* Where the values came from. */
	char *path; /* owned; NULL when the embedded default is used */
	bool token_from_env; /* HURACANFS_DROPBOX_TOKEN overrode the file */
};

/*
 * Fills @cfg with every default. Returns 0 or -ENOMEM.
 */
int config_init(struct hfs_config *cfg);

/*
 * Loads @path into @cfg (already config_init'ed). @path NULL means the
 * default location ~/.config/huracanfs/config.yaml, and a missing default
 * file is not an error (the embedded default applies). Then applies the
 * environment (HURACANFS_DROPBOX_TOKEN wins over access_token), expands
 * "~/" in paths, and picks the default backend.
 *
 * Returns 0, or a negative errno with a human-readable message in @err
 * (@errlen bytes, always NUL-terminated), for example:
 *   "/etc/hf.yaml:7: dropbox.sync_interval_logs_seconds: must be > 0"
 *   "/etc/hf.yaml:12: huracanfs.cach_dir: unknown key"
 *   "/etc/hf.yaml holds a secret (dropbox.access_token) and is readable by
 *    group or others; run: chmod 600 /etc/hf.yaml"
 * Never puts a secret value into @err. On failure @cfg may already hold
 * some values from the file; it stays valid for config_release().
 */
int config_load(struct hfs_config *cfg, const char *path, char *err,
		size_t errlen);

/*
 * Writes every effective setting, one "section.key: value" per line, to
 * @out, with secrets shown as "(set)" or "(unset)". For check-config.
 */
void config_dump(const struct hfs_config *cfg, void *out /* FILE * */);

/* Releases everything @cfg owns; safe on a config_init'ed struct. */
void config_release(struct hfs_config *cfg);

/*
 * Parses a size such as "20G", "512M", "1024", "1.5G" (binary units: K, M,
 * G, T, optionally followed by "i", "iB" or "B"). Returns 0 or -EINVAL.
 */
int config_parse_size(const char *s, uint64_t *out);

/*
 * Parses "HOST:PORT" or "[V6ADDR]:PORT" into @host (@hostlen bytes) and
 * @port (1-65535); *@loopback tells whether HOST is a loopback address
 * (127.0.0.0/8, ::1) or "localhost". Returns 0 or -EINVAL.
 */
int config_parse_listen(const char *s, char *host, size_t hostlen, int *port,
			bool *loopback);

#endif

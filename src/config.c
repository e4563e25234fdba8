/*
 * Configuration loading.
 *
 * Everything is driven by keys[] below: config_init() applies each entry's
 * default by feeding its text through the same parser as a value from the
 * file, the loader looks keys up there (so a key missing from the table is
 * an "unknown key" error), and config_dump() walks it to print every
 * setting. Adding a setting means adding a field to struct hfs_config and
 * one line to the table.
 *
 * The file is read with libyaml's document API: the whole file becomes a
 * node tree (anchors and aliases resolved by reference, never expanded), and
 * only the "dropbox" and "huracanfs" mappings are walked. Every other
 * top-level section belongs to the trainer and is not looked at.
 *
 * Error messages name the file, the line and the dotted key, and never a
 * value: some values are secrets, and a message must not have to know
 * which.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#include "hfs/err.h"
#include "hfs/config.h"
#include "hfs/log.h"

/* A config file bigger than this is refused rather than parsed. */
#define CONFIG_MAX_BYTES (4 * 1024 * 1024)
/* At most this many user rules. */
#define CONFIG_MAX_RULES 1024
/* Keys from the file are quoted in messages up to this length. */
#define KEY_QUOTE_MAX 80

enum ctype {
	CT_STRING, /* char *, owned */
	CT_SECRET, /* char *, owned, never printed */
	CT_INT, /* int64_t, >= min */
	CT_BOOL, /* bool */
	CT_SIZE, /* uint64_t, >= min, via config_parse_size() */
	CT_BACKEND, /* int, enum hfs_backend_kind; sets backend_set */
	CT_LOGLEVEL, /* int, syslog level via hlog_parse_level() */
	CT_RULES, /* rules + n_rules, a YAML sequence */
};

/* Flags of a table entry. */
#define CF_PATH 0x1 /* expand a leading "~" with $HOME after loading */
#define CF_NONEMPTY 0x2 /* an empty string is an error */
#define CF_NULLABLE 0x4 /* null (and "" without CF_NONEMPTY) means unset */
#define CF_MIRROR 0x8 /* also store the value at ->mirror */

struct ckey {
	const char *section;
	const char *key;
	enum ctype type;
	unsigned int flags;
	int64_t min; /* CT_INT and CT_SIZE */
	const char *def; /* default as it would be written in the file */
	size_t offset; /* of the field in struct hfs_config */
	size_t mirror; /* second field, with CF_MIRROR */
};

#define F(field) offsetof(struct hfs_config, field)

/* clang-format off */
#define STR(s, k, fl, d, field) { s, k, CT_STRING, fl, 0, d, F(field), 0 }
#define SECRET(k, field) \
	{ "dropbox", k, CT_SECRET, CF_NULLABLE, 0, NULL, F(field), 0 }
#define INT(s, k, min, d, field) { s, k, CT_INT, 0, min, d, F(field), 0 }
#define BOOL(s, k, d, field) { s, k, CT_BOOL, 0, 0, d, F(field), 0 }
#define SIZE(k, min, d, field) \
	{ "huracanfs", k, CT_SIZE, 0, min, d, F(field), 0 }
#define PATHKEY (CF_PATH | CF_NONEMPTY)
#define OPTPATH (CF_PATH | CF_NONEMPTY | CF_NULLABLE)

static const struct ckey keys[] = {
	SECRET("access_token", access_token),
	SECRET("refresh_token", refresh_token),
	STR("dropbox", "app_key", CF_NULLABLE, NULL, app_key),
	SECRET("app_secret", app_secret),
	STR("dropbox", "app_folder", CF_NONEMPTY, "Huracan", app_folder),
	INT("dropbox", "sync_interval_learning_seconds", 1, "300",
	    interval[CAT_LEARNING]),
	/* The seed syncs logs and monitoring together, on one interval. */
	{ "dropbox", "sync_interval_logs_seconds", CT_INT, CF_MIRROR, 1, "300",
	  F(interval[CAT_LOGS]), F(interval[CAT_MONITORING]) },
	INT("dropbox", "sync_interval_models_seconds", 1, "1800",
	    interval[CAT_MODELS]),
	INT("dropbox", "sync_interval_data_cache_seconds", 1, "7200",
	    interval[CAT_DATA_CACHE]),
	INT("dropbox", "sync_interval_new_data_seconds", 1, "300",
	    new_data_interval),
	BOOL("dropbox", "sync_learning", "true", enabled[CAT_LEARNING]),
	BOOL("dropbox", "sync_logs", "true", enabled[CAT_LOGS]),
	BOOL("dropbox", "sync_models", "true", enabled[CAT_MODELS]),
	BOOL("dropbox", "sync_data_cache", "true", enabled[CAT_DATA_CACHE]),
	BOOL("dropbox", "sync_monitoring", "true", enabled[CAT_MONITORING]),
	BOOL("dropbox", "restore_data_cache_on_startup", "true",
	     restore_data_cache_on_startup),

	{ "huracanfs", "backend", CT_BACKEND, 0, 0, NULL, F(backend), 0 },
	STR("huracanfs", "remote_dir", PATHKEY,
	    "~/.local/share/huracanfs/remote", remote_dir),
	STR("huracanfs", "cache_dir", PATHKEY, "~/.cache/huracanfs", cache_dir),
	SIZE("cache_max_bytes", 1, "20G", cache_max_bytes),
	SIZE("cache_min_free_bytes", 0, "512M", cache_min_free_bytes),
	STR("huracanfs", "api_url", CF_NONEMPTY, "https://api.dropboxapi.com",
	    api_url),
	STR("huracanfs", "content_url", CF_NONEMPTY,
	    "https://content.dropboxapi.com", content_url),
	STR("huracanfs", "notify_url", CF_NONEMPTY,
	    "https://notify.dropboxapi.com", notify_url),
	STR("huracanfs", "ca_file", OPTPATH, NULL, ca_file),
	STR("huracanfs", "log_file", OPTPATH, NULL, log_file),
	{ "huracanfs", "log_level", CT_LOGLEVEL, 0, 0, "info", F(log_level), 0 },
	INT("huracanfs", "flush_timeout_seconds", 1, "120", flush_timeout),
	INT("huracanfs", "dir_cache_seconds", 0, "60", dir_cache_seconds),
	INT("huracanfs", "remote_wait_seconds", 1, "15", remote_wait_seconds),
	BOOL("huracanfs", "writeback_cache", "true", writeback_cache),
	INT("huracanfs", "sync_interval_other_seconds", 1, "300",
	    interval[CAT_OTHER]),
	BOOL("huracanfs", "sync_other", "true", enabled[CAT_OTHER]),
	STR("huracanfs", "today_link", 0, "today", today_link),
	BOOL("huracanfs", "rclone_links", "true", rclone_links),
	BOOL("huracanfs", "model_metadata", "true", model_metadata),
	BOOL("huracanfs", "shared_candles", "true", shared_candles),
	BOOL("huracanfs", "cache_keep_learning", "false",
	     cache_keep[CAT_LEARNING]),
	BOOL("huracanfs", "cache_keep_logs", "false", cache_keep[CAT_LOGS]),
	BOOL("huracanfs", "cache_keep_monitoring", "false",
	     cache_keep[CAT_MONITORING]),
	BOOL("huracanfs", "cache_keep_models", "true", cache_keep[CAT_MODELS]),
	BOOL("huracanfs", "cache_keep_data_cache", "true",
	     cache_keep[CAT_DATA_CACHE]),
	BOOL("huracanfs", "cache_keep_other", "false", cache_keep[CAT_OTHER]),
	STR("huracanfs", "metrics_listen", CF_NONEMPTY | CF_NULLABLE, NULL,
	    metrics_listen),
	BOOL("huracanfs", "metrics_allow_public", "false",
	     metrics_allow_public),
	SIZE("upload_bytes_per_second", 0, "0", upload_bps),
	SIZE("download_bytes_per_second", 0, "0", download_bps),
	{ "huracanfs", "rules", CT_RULES, 0, 0, NULL, F(rules), 0 },
};
/* clang-format on */

#define N_KEYS (sizeof(keys) / sizeof(keys[0]))

static const char *const sections[] = {"dropbox", "huracanfs"};
#define N_SECTIONS (sizeof(sections) / sizeof(sections[0]))

static void *field(struct hfs_config *cfg, size_t offset)
{
	return (char *)cfg + offset;
}

static const void *cfield(const struct hfs_config *cfg, size_t offset)
{
	return (const char *)cfg + offset;
}

/* Parses a plain decimal integer with an optional sign. */
static int parse_int(const char *s, int64_t *out)
{
	const char *p = s;
	uint64_t v = 0;
	bool neg = false;

	if (*p == '-' || *p == '+')
		neg = *p++ == '-';
	if (!isdigit((unsigned char)*p))
		return -EINVAL;
	for (; isdigit((unsigned char)*p); p++) {
		unsigned int d = (unsigned int)(*p - '0');

		if (v > ((uint64_t)INT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	if (*p != '\0')
		return -EINVAL;
	*out = neg ? -(int64_t)v : (int64_t)v;
	return 0;
}

static int parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"true", "yes", "on"};
	static const char *const no[] = {"false", "no", "off"};
	size_t i;

	for (i = 0; i < 3; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

int config_parse_size(const char *s, uint64_t *out)
{
	const char *p = s;
	uint64_t whole = 0, frac = 0, scale = 1, value;
	unsigned int shift = 0;
	bool has_frac = false;

	if (!s || !isdigit((unsigned char)*p))
		return -EINVAL;
	for (; isdigit((unsigned char)*p); p++) {
		unsigned int d = (unsigned int)(*p - '0');

		if (whole > (UINT64_MAX - d) / 10)
			return -EINVAL;
		whole = whole * 10 + d;
	}
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return -EINVAL;
		has_frac = true;
		/* Six digits are finer than a byte of a tebibyte needs. */
		for (; isdigit((unsigned char)*p); p++) {
			if (scale < 1000000) {
				frac = frac * 10 + (uint64_t)(*p - '0');
				scale *= 10;
			}
		}
	}
	switch (toupper((unsigned char)*p)) {
	case 'K':
		shift = 10;
		break;
	case 'M':
		shift = 20;
		break;
	case 'G':
		shift = 30;
		break;
	case 'T':
		shift = 40;
		break;
	}
	if (shift) {
		p++;
		if (*p && strcasecmp(p, "i") != 0 && strcasecmp(p, "ib") != 0 &&
		    strcasecmp(p, "b") != 0)
			return -EINVAL;
	} else {
		/* Plain bytes: "1024" or "1024B", and no fraction. */
		if ((*p && strcasecmp(p, "b") != 0) || has_frac)
			return -EINVAL;
	}
	if (whole > (UINT64_MAX >> shift))
		return -EINVAL;
	value = whole << shift;
	/* frac < 10^6 and 1 << shift <= 2^40: the product fits. */
	frac = (frac << shift) / scale;
	if (value > UINT64_MAX - frac)
		return -EINVAL;
	*out = value + frac;
	return 0;
}

/* Replaces an owned string field. @v NULL clears it. */
static int set_string(char **dst, const char *v)
{
	char *copy = NULL;

	if (v) {
		copy = strdup(v);
		if (!copy)
			return -ENOMEM;
	}
	free(*dst);
	*dst = copy;
	return 0;
}

/*
 * Stores scalar @v (@is_null: YAML null) for @k. On a bad value returns
 * -EINVAL and describes the problem in @why, without the value.
 */
static int set_value(struct hfs_config *cfg, const struct ckey *k,
		     const char *v, bool is_null, char *why, size_t whylen)
{
	void *dst = field(cfg, k->offset);
	uint64_t size;
	int64_t i;
	bool b;
	int n;

	switch (k->type) {
	case CT_STRING:
	case CT_SECRET:
		if (is_null && (k->flags & CF_NULLABLE))
			return set_string(dst, NULL);
		if (is_null || v[0] == '\0') {
			if (k->flags & CF_NONEMPTY)
				break;
			return set_string(dst, NULL);
		}
		return set_string(dst, v);
	case CT_INT:
		if (parse_int(v, &i) < 0 || i < k->min)
			break;
		*(int64_t *)dst = i;
		if (k->flags & CF_MIRROR)
			*(int64_t *)field(cfg, k->mirror) = i;
		return 0;
	case CT_BOOL:
		if (parse_bool(v, &b) < 0)
			break;
		*(bool *)dst = b;
		return 0;
	case CT_SIZE:
		if (config_parse_size(v, &size) < 0 || size < (uint64_t)k->min)
			break;
		*(uint64_t *)dst = size;
		return 0;
	case CT_BACKEND:
		if (strcasecmp(v, "local") == 0)
			*(int *)dst = BACKEND_LOCAL;
		else if (strcasecmp(v, "dropbox") == 0)
			*(int *)dst = BACKEND_DROPBOX;
		else
			break;
		cfg->backend_set = true;
		return 0;
	case CT_LOGLEVEL:
		n = hlog_parse_level(v);
		if (n < 0)
			break;
		*(int *)dst = n;
		return 0;
	case CT_RULES:
		break;
	}

	switch (k->type) {
	case CT_STRING:
	case CT_SECRET:
		snprintf(why, whylen, "must not be empty");
		break;
	case CT_INT:
		if (k->min == 1)
			snprintf(why, whylen, "must be an integer > 0");
		else
			snprintf(why, whylen, "must be an integer >= %" PRId64,
				 k->min);
		break;
	case CT_BOOL:
		snprintf(why, whylen, "expected true or false");
		break;
	case CT_SIZE:
		snprintf(why, whylen, "%s such as 20G, 512M or 1024",
			 k->min > 0 ? "expected a size > 0"
				    : "expected a size");
		break;
	case CT_BACKEND:
		snprintf(why, whylen, "expected local or dropbox");
		break;
	case CT_LOGLEVEL:
		snprintf(why, whylen,
			 "expected debug, info, notice, warning or error");
		break;
	case CT_RULES:
		snprintf(why, whylen, "expected a list of rules");
		break;
	}
	return -EINVAL;
}

static void free_rules(struct cat_rule *rules, int n)
{
	int i;

	for (i = 0; i < n; i++)
		free(rules[i].pattern);
	free(rules);
}

int config_init(struct hfs_config *cfg)
{
	char why[128];
	size_t i;
	int rc;

	memset(cfg, 0, sizeof(*cfg));
	cfg->backend = BACKEND_LOCAL;
	for (i = 0; i < N_KEYS; i++) {
		if (!keys[i].def)
			continue;
		rc = set_value(cfg, &keys[i], keys[i].def, false, why,
			       sizeof(why));
		if (rc < 0) {
			/* The defaults are valid: only ENOMEM gets here. */
			config_release(cfg);
			return -ENOMEM;
		}
	}
	return 0;
}

void config_release(struct hfs_config *cfg)
{
	size_t i;

	for (i = 0; i < N_KEYS; i++) {
		if (keys[i].type == CT_STRING || keys[i].type == CT_SECRET) {
			char **s = field(cfg, keys[i].offset);

			free(*s);
			*s = NULL;
		}
	}
	free_rules(cfg->rules, cfg->n_rules);
	cfg->rules = NULL;
	cfg->n_rules = 0;
	free(cfg->path);
	cfg->path = NULL;
}

/* State of one config_load(). */
struct loader {
	struct hfs_config *cfg;
	const char *path;
	yaml_document_t *doc;
	char *err;
	size_t errlen;
	bool seen_key[N_KEYS];
	bool seen_section[N_SECTIONS];
	const struct ckey *secret; /* first secret given a value */
};

/* Formats "FILE:LINE: message" for @node and returns @rc. */
static int fail(struct loader *l, const yaml_node_t *node, int rc,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int fail(struct loader *l, const yaml_node_t *node, int rc,
		const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	err_set(l->err, l->errlen, "%s:%lu: %s", l->path,
		(unsigned long)node->start_mark.line + 1, msg);
	return rc;
}

static yaml_node_t *node_at(struct loader *l, int index)
{
	return yaml_document_get_node(l->doc, index);
}

static const char *scalar(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

/* A plain "", "~" or "null" scalar is YAML's null. */
static bool is_null(const yaml_node_t *n)
{
	const char *v;

	if (n->type != YAML_SCALAR_NODE ||
	    n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	v = scalar(n);
	return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
	       strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

/* A scalar with an embedded NUL cannot be a C string. */
static bool has_nul(const yaml_node_t *n)
{
	return strlen(scalar(n)) != n->data.scalar.length;
}

static const struct ckey *find_key(const char *section, const char *key)
{
	size_t i;

	for (i = 0; i < N_KEYS; i++) {
		if (strcmp(keys[i].section, section) == 0 &&
		    strcmp(keys[i].key, key) == 0)
			return &keys[i];
	}
	return NULL;
}

/* Parses one element of huracanfs.rules into @rule. */
static int load_rule(struct loader *l, const yaml_node_t *item, int idx,
		     struct cat_rule *rule)
{
	const yaml_node_t *pattern = NULL, *category = NULL;
	yaml_node_pair_t *pair;
	int cat;

	if (item->type != YAML_MAPPING_NODE)
		return fail(l, item, -EINVAL,
			    "huracanfs.rules[%d]: expected a mapping with "
			    "pattern and category",
			    idx);
	for (pair = item->data.mapping.pairs.start;
	     pair < item->data.mapping.pairs.top; pair++) {
		const yaml_node_t *k = node_at(l, pair->key);
		const yaml_node_t *v = node_at(l, pair->value);
		const yaml_node_t **slot;

		if (k->type != YAML_SCALAR_NODE)
			return fail(l, k, -EINVAL,
				    "huracanfs.rules[%d]: keys must be strings",
				    idx);
		if (strcmp(scalar(k), "pattern") == 0)
			slot = &pattern;
		else if (strcmp(scalar(k), "category") == 0)
			slot = &category;
		else
			return fail(l, k, -EINVAL,
				    "huracanfs.rules[%d].%.*s: unknown key",
				    idx, KEY_QUOTE_MAX, scalar(k));
		if (*slot)
			return fail(l, k, -EINVAL,
				    "huracanfs.rules[%d].%s: duplicate key",
				    idx, scalar(k));
		if (v->type != YAML_SCALAR_NODE || has_nul(v))
			return fail(l, v, -EINVAL,
				    "huracanfs.rules[%d].%s: expected a string",
				    idx, scalar(k));
		*slot = v;
	}
	if (!pattern)
		return fail(l, item, -EINVAL,
			    "huracanfs.rules[%d]: missing pattern", idx);
	if (!category)
		return fail(l, item, -EINVAL,
			    "huracanfs.rules[%d]: missing category", idx);
	if (is_null(pattern) || scalar(pattern)[0] == '\0')
		return fail(l, pattern, -EINVAL,
			    "huracanfs.rules[%d].pattern: must not be empty",
			    idx);
	if (scalar(pattern)[0] == '/')
		return fail(l, pattern, -EINVAL,
			    "huracanfs.rules[%d].pattern: must be relative to "
			    "the mount root (no leading '/')",
			    idx);
	cat = cat_from_name(scalar(category));
	if (cat < 0)
		return fail(l, category, -EINVAL,
			    "huracanfs.rules[%d].category: unknown category "
			    "(expected learning, logs, monitoring, models, "
			    "data_cache or other)",
			    idx);
	rule->pattern = strdup(scalar(pattern));
	if (!rule->pattern)
		return fail(l, item, -ENOMEM, "out of memory");
	rule->cat = cat;
	return 0;
}

static int load_rules(struct loader *l, const yaml_node_t *v)
{
	struct cat_rule *rules = NULL;
	yaml_node_item_t *it;
	int n = 0, count, rc;

	if (is_null(v)) {
		free_rules(l->cfg->rules, l->cfg->n_rules);
		l->cfg->rules = NULL;
		l->cfg->n_rules = 0;
		return 0;
	}
	if (v->type != YAML_SEQUENCE_NODE)
		return fail(l, v, -EINVAL,
			    "huracanfs.rules: expected a list of "
			    "{pattern, category} mappings");
	count = (int)(v->data.sequence.items.top -
		      v->data.sequence.items.start);
	if (count > CONFIG_MAX_RULES)
		return fail(l, v, -EINVAL,
			    "huracanfs.rules: too many rules (at most %d)",
			    CONFIG_MAX_RULES);
	if (count > 0) {
		rules = calloc((size_t)count, sizeof(*rules));
		if (!rules)
			return fail(l, v, -ENOMEM, "out of memory");
	}
	for (it = v->data.sequence.items.start; it < v->data.sequence.items.top;
	     it++) {
		rc = load_rule(l, node_at(l, *it), n, &rules[n]);
		if (rc < 0)
			goto fail;
		n++;
	}
	free_rules(l->cfg->rules, l->cfg->n_rules);
	l->cfg->rules = rules;
	l->cfg->n_rules = n;
	return 0;

fail:
	free_rules(rules, n);
	return rc;
}

static int load_section(struct loader *l, const char *section,
			const yaml_node_t *map)
{
	yaml_node_pair_t *pair;
	char why[128];
	int rc;

	if (is_null(map))
		return 0;
	if (map->type != YAML_MAPPING_NODE)
		return fail(l, map, -EINVAL,
			    "%s: expected a mapping of settings", section);

	for (pair = map->data.mapping.pairs.start;
	     pair < map->data.mapping.pairs.top; pair++) {
		const yaml_node_t *k = node_at(l, pair->key);
		const yaml_node_t *v = node_at(l, pair->value);
		const struct ckey *key;

		if (k->type != YAML_SCALAR_NODE)
			return fail(l, k, -EINVAL, "%s: keys must be strings",
				    section);
		/* A key with a NUL inside is not the key its prefix names. */
		key = has_nul(k) ? NULL : find_key(section, scalar(k));
		if (!key)
			return fail(l, k, -EINVAL, "%s.%.*s: unknown key",
				    section, KEY_QUOTE_MAX, scalar(k));
		if (l->seen_key[key - keys])
			return fail(l, k, -EINVAL, "%s.%s: duplicate key",
				    section, key->key);
		l->seen_key[key - keys] = true;

		if (key->type == CT_RULES) {
			rc = load_rules(l, v);
			if (rc < 0)
				return rc;
			continue;
		}
		if (v->type != YAML_SCALAR_NODE)
			return fail(l, v, -EINVAL,
				    "%s.%s: expected a single value, not a "
				    "list or mapping",
				    section, key->key);
		if (has_nul(v))
			return fail(l, v, -EINVAL,
				    "%s.%s: must not contain a NUL character",
				    section, key->key);
		rc = set_value(l->cfg, key, scalar(v), is_null(v), why,
			       sizeof(why));
		if (rc == -ENOMEM)
			return fail(l, v, rc, "out of memory");
		if (rc < 0)
			return fail(l, v, rc, "%s.%s: %s", section, key->key,
				    why);
		if (key->type == CT_SECRET && !l->secret &&
		    *(char **)field(l->cfg, key->offset))
			l->secret = key;
	}
	return 0;
}

static int load_root(struct loader *l)
{
	yaml_node_t *root = yaml_document_get_root_node(l->doc);
	yaml_node_pair_t *pair;
	size_t s;
	int rc;

	if (!root || is_null(root))
		return 0; /* An empty file: every default applies. */
	if (root->type != YAML_MAPPING_NODE)
		return fail(l, root, -EINVAL,
			    "the top level must be a mapping of sections "
			    "(dropbox:, huracanfs:)");

	for (pair = root->data.mapping.pairs.start;
	     pair < root->data.mapping.pairs.top; pair++) {
		const yaml_node_t *k = node_at(l, pair->key);

		/* Anything else at the top level is the trainer's. */
		if (k->type != YAML_SCALAR_NODE)
			continue;
		for (s = 0; s < N_SECTIONS; s++) {
			if (strcmp(scalar(k), sections[s]) == 0)
				break;
		}
		if (s == N_SECTIONS)
			continue;
		if (l->seen_section[s])
			return fail(l, k, -EINVAL, "%s: duplicate section",
				    sections[s]);
		l->seen_section[s] = true;
		rc = load_section(l, sections[s], node_at(l, pair->value));
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int yaml_error(struct loader *l, const yaml_parser_t *parser)
{
	unsigned long line;

	/* Reader errors (bad encoding) have no problem_mark. */
	if (parser->error == YAML_READER_ERROR)
		line = (unsigned long)parser->mark.line + 1;
	else
		line = (unsigned long)parser->problem_mark.line + 1;
	if (parser->error == YAML_MEMORY_ERROR) {
		err_set(l->err, l->errlen, "%s: out of memory", l->path);
		return -ENOMEM;
	}
	err_set(l->err, l->errlen, "%s:%lu: YAML syntax error: %s", l->path,
		line, parser->problem ? parser->problem : "unknown error");
	return -EINVAL;
}

/* Parses the open file @fp into l->cfg. */
static int parse_file(struct loader *l, FILE *fp)
{
	yaml_parser_t parser;
	yaml_document_t doc, extra;
	yaml_node_t *extra_root;
	int rc;

	if (!yaml_parser_initialize(&parser)) {
		err_set(l->err, l->errlen, "%s: out of memory", l->path);
		return -ENOMEM;
	}
	yaml_parser_set_input_file(&parser, fp);
	if (!yaml_parser_load(&parser, &doc)) {
		rc = yaml_error(l, &parser);
		goto out_parser;
	}
	l->doc = &doc;

	/* A second document would be silently ignored; refuse it. */
	if (!yaml_parser_load(&parser, &extra)) {
		rc = yaml_error(l, &parser);
		goto out_doc;
	}
	extra_root = yaml_document_get_root_node(&extra);
	if (extra_root) {
		rc = fail(l, extra_root, -EINVAL,
			  "only one YAML document is allowed");
		yaml_document_delete(&extra);
		goto out_doc;
	}
	yaml_document_delete(&extra);

	rc = load_root(l);
out_doc:
	l->doc = NULL;
	yaml_document_delete(&doc);
out_parser:
	yaml_parser_delete(&parser);
	return rc;
}

/* The user's home directory: $HOME, else the password database. */
static const char *home_dir(void)
{
	const char *home = getenv("HOME");
	struct passwd *pw;

	if (home && home[0])
		return home;
	pw = getpwuid(getuid());
	if (pw && pw->pw_dir && pw->pw_dir[0])
		return pw->pw_dir;
	return NULL;
}

/* Rewrites a leading "~" or "~/" of every CF_PATH value. */
static int expand_paths(struct hfs_config *cfg, char *err, size_t errlen)
{
	const char *home = NULL;
	size_t i;

	for (i = 0; i < N_KEYS; i++) {
		char **s = field(cfg, keys[i].offset);
		char *expanded;

		if (!(keys[i].flags & CF_PATH) || !*s || (*s)[0] != '~' ||
		    ((*s)[1] != '\0' && (*s)[1] != '/'))
			continue;
		if (!home)
			home = home_dir();
		if (!home) {
			err_set(err, errlen,
				"%s.%s: cannot expand \"~\": HOME is not set",
				keys[i].section, keys[i].key);
			return -EINVAL;
		}
		if (asprintf(&expanded, "%s%s", home, *s + 1) < 0) {
			err_set(err, errlen, "out of memory");
			return -ENOMEM;
		}
		free(*s);
		*s = expanded;
	}
	return 0;
}

/*
 * Opens @path for reading. Returns an open FILE or NULL with a negative
 * errno in *@rc. *@st gets the file's status, taken from the open file so
 * that the permission check looks at what was actually read.
 */
static FILE *open_config(const char *path, struct stat *st, int *rc)
{
	FILE *fp;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		*rc = -errno;
		return NULL;
	}
	if (fstat(fd, st) < 0) {
		*rc = -errno;
		goto fail;
	}
	if (S_ISDIR(st->st_mode)) {
		*rc = -EISDIR;
		goto fail;
	}
	if (S_ISREG(st->st_mode) && st->st_size > CONFIG_MAX_BYTES) {
		*rc = -EFBIG;
		goto fail;
	}
	fp = fdopen(fd, "r");
	if (!fp) {
		*rc = -errno;
		goto fail;
	}
	return fp;

fail:
	close(fd);
	return NULL;
}

int config_load(struct hfs_config *cfg, const char *path, char *err,
		size_t errlen)
{
	struct loader l;
	struct stat st;
	char *default_path = NULL;
	const char *env;
	FILE *fp = NULL;
	int rc = 0;

	err_set(err, errlen, "%s", "");
	if (!path) {
		const char *home = home_dir();

		if (home &&
		    asprintf(&default_path, "%s/.config/huracanfs/config.yaml",
			     home) < 0) {
			err_set(err, errlen, "out of memory");
			return -ENOMEM;
		}
		path = default_path;
	}

	if (path) {
		fp = open_config(path, &st, &rc);
		if (!fp) {
			/* The default file is optional; a named one is not. */
			if (default_path && (rc == -ENOENT || rc == -ENOTDIR)) {
				rc = 0;
			} else {
				err_set(err, errlen, "%s: %s", path,
					strerror(-rc));
				goto out;
			}
		}
	}

	if (fp) {
		memset(&l, 0, sizeof(l));
		l.cfg = cfg;
		l.path = path;
		l.err = err;
		l.errlen = errlen;
		rc = parse_file(&l, fp);
		if (rc < 0)
			goto out;
		if (l.secret && (st.st_mode & 077)) {
			err_set(err, errlen,
				"%s holds a secret (%s.%s) and is readable "
				"by group or others; run: chmod 600 %s",
				path, l.secret->section, l.secret->key, path);
			rc = -EPERM;
			goto out;
		}
		rc = set_string(&cfg->path, path);
		if (rc < 0) {
			err_set(err, errlen, "out of memory");
			goto out;
		}
	}

	env = getenv("HURACANFS_DROPBOX_TOKEN");
	if (env && env[0]) {
		rc = set_string(&cfg->access_token, env);
		if (rc < 0) {
			err_set(err, errlen, "out of memory");
			goto out;
		}
		cfg->token_from_env = true;
	}

	rc = expand_paths(cfg, err, errlen);
	if (rc < 0)
		goto out;

	if (cfg->metrics_listen) {
		char host[256];
		int port;
		bool loopback;
		rc = config_parse_listen(cfg->metrics_listen, host,
					 sizeof(host), &port, &loopback);
		if (rc < 0) {
			err_set(err, errlen,
				"huracanfs.metrics_listen: \"%s\" is not "
				"HOST:PORT (for example 127.0.0.1:9477)",
				cfg->metrics_listen);
			goto out;
		}
		if (!loopback && !cfg->metrics_allow_public) {
			rc = -EINVAL;
			err_set(err, errlen,
				"huracanfs.metrics_listen: %s is not a "
				"loopback address; metrics would be served "
				"to the network. Use 127.0.0.1:%d, or set "
				"huracanfs.metrics_allow_public: true",
				host, port);
			goto out;
		}
	}

	if (!cfg->backend_set)
		cfg->backend = cfg->access_token || cfg->refresh_token
				       ? BACKEND_DROPBOX
				       : BACKEND_LOCAL;
out:
	if (fp)
		fclose(fp);
	free(default_path);
	return rc;
}

static const char *level_name(int level)
{
	static const char *const names[] = {"debug", "info", "notice",
					    "warning", "error"};
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (hlog_parse_level(names[i]) == level)
			return names[i];
	}
	return "info";
}

/* Prints @v with the largest binary unit that divides it exactly. */
static void print_size(FILE *out, uint64_t v)
{
	static const char units[] = "KMGT";
	int u = -1;

	while (u < 3 && v != 0 && (v & 1023) == 0) {
		v >>= 10;
		u++;
	}
	if (u < 0)
		fprintf(out, "%" PRIu64 "\n", v);
	else
		fprintf(out, "%" PRIu64 "%c\n", v, units[u]);
}

int config_parse_listen(const char *s, char *host, size_t hostlen, int *port,
			bool *loopback)
{
	const char *colon, *h = s;
	size_t hl;
	if (s[0] == '[') { /* [v6]:port */
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		h = s + 1;
		hl = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || strchr(s, ':') != colon)
			return -EINVAL;
		hl = (size_t)(colon - s);
	}
	if (hl == 0 || hl >= hostlen)
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	int64_t p;
	if (parse_int(colon + 1, &p) < 0 || p < 1 || p > 65535)
		return -EINVAL;
	*port = (int)p;
	struct in_addr a4;
	struct in6_addr a6;
	if (inet_pton(AF_INET, host, &a4) == 1)
		*loopback = (ntohl(a4.s_addr) >> 24) == 127;
	else if (inet_pton(AF_INET6, host, &a6) == 1)
		*loopback = IN6_IS_ADDR_LOOPBACK(&a6);
	else
		*loopback = strcmp(host, "localhost") == 0;
	return 0;
}

void config_dump(const struct hfs_config *cfg, void *stream)
{
	FILE *out = stream;
	size_t i;
	int r;

	for (i = 0; i < N_KEYS; i++) {
		const struct ckey *k = &keys[i];
		const void *v = cfield(cfg, k->offset);

		if (k->type == CT_RULES) {
			if (cfg->n_rules == 0)
				fprintf(out, "%s.%s: (none)\n", k->section,
					k->key);
			for (r = 0; r < cfg->n_rules; r++)
				fprintf(out, "%s.%s[%d]: %s -> %s\n",
					k->section, k->key, r,
					cfg->rules[r].pattern,
					cat_name(cfg->rules[r].cat));
			continue;
		}
		fprintf(out, "%s.%s: ", k->section, k->key);
		switch (k->type) {
		case CT_STRING:
			fprintf(out, "%s\n",
				*(char *const *)v ? *(char *const *)v
						  : "(unset)");
			break;
		case CT_SECRET:
			fprintf(out, "%s\n",
				*(char *const *)v ? "(set)" : "(unset)");
			break;
		case CT_INT:
			fprintf(out, "%" PRId64 "\n", *(const int64_t *)v);
			break;
		case CT_BOOL:
			fprintf(out, "%s\n",
				*(const bool *)v ? "true" : "false");
			break;
		case CT_SIZE:
			print_size(out, *(const uint64_t *)v);
			break;
		case CT_BACKEND:
			fprintf(out, "%s\n",
				*(const int *)v == BACKEND_DROPBOX ? "dropbox"
								   : "local");
			break;
		case CT_LOGLEVEL:
			fprintf(out, "%s\n", level_name(*(const int *)v));
			break;
		case CT_RULES:
			break;
		}
	}
	fprintf(out, "backend in use: %s\n",
		cfg->backend == BACKEND_DROPBOX ? "dropbox" : "local");
}

/*
 * Upload categories and the rules that map a path to one.
 *
 * The categories come from the seeds (dropbox-sync-configuration-guide.md):
 * learning, logs, monitoring, models, data_cache; plus "other" for what no
 * rule names (run metrics, features, results). Each has its own flusher
 * thread, interval and on/off switch (see config.h).
 *
 * Rules are an ordered list of (glob, category); the first match wins.
 * Glob syntax, matched against the path relative to the mount root without
 * a leading slash ("models/training/2025-11-12/SOL-USDT/model/model.bin"):
 *   *      any run of characters except '/'
 *   ?      one character except '/'
 *   [abc]  a character class ([!x] negates), never '/'
 *   **     as a whole component: zero or more whole components
 *          ("logs/ **" matches "logs/a" and "logs/a/b"; "a/ ** /b" matches
 *          "a/b"; the spaces only keep this comment a valid C comment)
 * A pattern without '/' matches the last component at any depth
 * ("*.parquet" matches "x/y/z.parquet"), as in .gitignore.
 */
#ifndef HFS_CATEGORY_H
#define HFS_CATEGORY_H

#include <stdbool.h>

enum hfs_cat {
	CAT_LEARNING = 0,
	CAT_LOGS,
	CAT_MONITORING,
	CAT_MODELS,
	CAT_DATA_CACHE,
	CAT_OTHER,
	CAT_COUNT
};

/* "learning", "logs", ...; NULL for an out-of-range value. */
const char *cat_name(int cat);
/* The category with that name, or -EINVAL. */
int cat_from_name(const char *name);
/* The seed's log event for a finished flush: "learning_data_synced",
 * "logs_synced", "logs_synced" (monitoring), "models_synced",
 * "data_cache_synced", "other_synced". */
const char *cat_event(int cat);

/* True if @path matches @pattern (syntax above). */
bool glob_match(const char *pattern, const char *path);

struct cat_rule {
	char *pattern; /* owned */
	int cat;
};

/* The built-in rules, in order, terminated by {NULL, 0}. */
extern const struct cat_rule cat_default_rules[];

/*
 * Classifies @path using @rules (@n entries) first, then the built-in
 * rules; CAT_OTHER when nothing matches.
 */
int cat_classify(const struct cat_rule *rules, int n, const char *path);

#endif

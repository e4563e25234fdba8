/*
 * Unit tests for categories, the glob matcher and the default rules
 * (hfs/category.h). Paths are the seeds' layout.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hfs/category.h"

#define CHECK(expr)                                                            \
	do {                                                                   \
		if (!(expr)) {                                                 \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
				__LINE__, #expr);                              \
			exit(1);                                               \
		}                                                              \
	} while (0)

/* Like CHECK, but names the pattern and path that went wrong. */
static void check_glob(int line, const char *pat, const char *path, bool want)
{
	if (glob_match(pat, path) != want) {
		fprintf(stderr, "%s:%d: glob_match(\"%s\", \"%s\") != %s\n",
			__FILE__, line, pat, path, want ? "true" : "false");
		exit(1);
	}
}

#define GLOB(pat, path, want) check_glob(__LINE__, pat, path, want)

#define CLASSIFY(rules, n, path, want)                                         \
	do {                                                                   \
		int got_ = cat_classify(rules, n, path);                       \
		if (got_ != (want)) {                                          \
			fprintf(stderr,                                        \
				"%s:%d: cat_classify(\"%s\") = %s, want %s\n", \
				__FILE__, __LINE__, path, cat_name(got_),      \
				cat_name(want));                               \
			exit(1);                                               \
		}                                                              \
	} while (0)

static void test_names(void)
{
	static const char *const names[] = {"learning",	  "logs",
					    "monitoring", "models",
					    "data_cache", "other"};
	static const char *const events[] = {
		"learning_data_synced", "logs_synced",	     "logs_synced",
		"models_synced",	"data_cache_synced", "other_synced"};
	int i;

	CHECK(CAT_COUNT == 6);
	for (i = 0; i < CAT_COUNT; i++) {
		CHECK(strcmp(cat_name(i), names[i]) == 0);
		CHECK(cat_from_name(names[i]) == i);
		CHECK(strcmp(cat_event(i), events[i]) == 0);
	}
	CHECK(cat_name(-1) == NULL);
	CHECK(cat_name(CAT_COUNT) == NULL);
	CHECK(cat_event(-1) == NULL);
	CHECK(cat_event(CAT_COUNT) == NULL);
	CHECK(cat_from_name("model") == -EINVAL);
	CHECK(cat_from_name("Logs") == -EINVAL);
	CHECK(cat_from_name("") == -EINVAL);
	CHECK(cat_from_name(NULL) == -EINVAL);
}

static void test_glob(void)
{
	/* Literal and anchored patterns. */
	GLOB("logs/engine.log", "logs/engine.log", true);
	GLOB("logs/engine.log", "logs/engine.log2", false);
	GLOB("logs/engine.log", "x/logs/engine.log", false);
	GLOB("logs/*.log", "x/logs/a.log", false);

	/* '*' and '?' stay inside one component. */
	GLOB("logs/*", "logs/a", true);
	GLOB("logs/*", "logs/a/b", false);
	GLOB("a*b", "a/b", false);
	GLOB("a*b/c", "axxb/c", true);
	GLOB("a?b/c", "a/b/c", false);
	GLOB("?.log", "a.log", true);
	GLOB("?.log", "ab.log", false);
	GLOB("*/logs/**", "2025-11-08/logs/a.log", true);
	GLOB("*/logs/**", "a/b/logs/a.log", false);
	GLOB("*a*b*c", "xaybzc", true);
	GLOB("*a*b*c", "xaybzcd", false);
	GLOB("*.*.pt", "a.b", false);
	GLOB("*.*.pt", "a.b.pt", true);
	GLOB("a**b", "axyzb", true);
	GLOB("a**b", "a/b", false);

	/* "**" is zero or more whole components. */
	GLOB("logs/**", "logs/a", true);
	GLOB("logs/**", "logs/a/b/c", true);
	GLOB("logs/**", "logs", true);
	GLOB("logs/**", "logsx/a", false);
	GLOB("logs/**", "x/logs/a", false);
	GLOB("a/**/b", "a/b", true);
	GLOB("a/**/b", "a/x/b", true);
	GLOB("a/**/b", "a/x/y/z/b", true);
	GLOB("a/**/b", "a/x/y/z/c", false);
	GLOB("a/**/b", "a/xb", false);
	GLOB("**/b", "b", true);
	GLOB("**/b", "x/y/b", true);
	GLOB("**/b", "x/y/bb", false);
	GLOB("**", "a/b/c", true);
	GLOB("a/**/**/b", "a/b", true);
	GLOB("a/**/b/**/c", "a/1/b/2/3/c", true);
	GLOB("a/**/b/**/c", "a/1/b/2/3/d", false);

	/* A pattern without '/' matches the last component at any depth. */
	GLOB("*.parquet", "z.parquet", true);
	GLOB("*.parquet", "x/y/z.parquet", true);
	GLOB("*.parquet", "x/y/z.parquet.tmp", false);
	GLOB("*.parquet", "x.parquet/y", false);
	GLOB("model.bin", "a/b/model.bin", true);
	GLOB("model.bin", "a/model.bin/c", false);

	/* Character classes. */
	GLOB("[abc].txt", "b.txt", true);
	GLOB("[abc].txt", "d.txt", false);
	GLOB("[!abc].txt", "b.txt", false);
	GLOB("[!abc].txt", "d.txt", true);
	GLOB("[a-c]x", "bx", true);
	GLOB("[a-c]x", "dx", false);
	GLOB("[0-9][0-9][0-9][0-9]-*/logs/**", "2025-11-08/logs/a.log", true);
	GLOB("[0-9][0-9][0-9][0-9]-*/logs/**", "latest/logs/a.log", false);
	GLOB("x[]]y", "x]y", true);
	GLOB("x[!]]y", "x]y", false);
	GLOB("x[!]]y", "xay", true);
	GLOB("[a-]x", "-x", true);
	GLOB("x[ab", "x[ab", true); /* unclosed: a literal '[' */
	GLOB("x[ab", "xa", false);
	GLOB("a[/]b", "a/b", false); /* never '/' */

	GLOB("", "", true);
	GLOB("a", "", false);
	CHECK(!glob_match(NULL, "a"));
	CHECK(!glob_match("a", NULL));
}

static const struct {
	const char *pattern;
	int cat;
} expected_defaults[] = {
	{"logs/learning/**", CAT_LEARNING},
	{"*/learning/**", CAT_LEARNING},
	{"learning/**", CAT_LEARNING},
	{"logs/**", CAT_LOGS},
	{"*/logs/**", CAT_LOGS},
	{"monitoring/**", CAT_MONITORING},
	{"*/monitoring/**", CAT_MONITORING},
	{"data/candles/**", CAT_DATA_CACHE},
	{"models/training/*/*/data/**", CAT_DATA_CACHE},
	{"*.parquet", CAT_DATA_CACHE},
	{"models/training/*/*/metrics/**", CAT_OTHER},
	{"models/training/*/*/features/**", CAT_OTHER},
	{"models/training/*/*/results/**", CAT_OTHER},
	{"models/**", CAT_MODELS},
	{"*/models/**", CAT_MODELS},
	{"*.pkl", CAT_MODELS},
	{"*.pt", CAT_MODELS},
	{"*.bin", CAT_MODELS},
};

static void test_default_table(void)
{
	size_t i, n = sizeof(expected_defaults) / sizeof(expected_defaults[0]);

	for (i = 0; i < n; i++) {
		CHECK(cat_default_rules[i].pattern != NULL);
		CHECK(strcmp(cat_default_rules[i].pattern,
			     expected_defaults[i].pattern) == 0);
		CHECK(cat_default_rules[i].cat == expected_defaults[i].cat);
	}
	CHECK(cat_default_rules[n].pattern == NULL);
}

static void test_defaults(void)
{
	const char *run = "models/training/2025-11-12/SOL-USDT";
	char p[256];

	/* The per-run folders of a training run. */
	snprintf(p, sizeof(p), "%s/model/model.bin", run);
	CLASSIFY(NULL, 0, p, CAT_MODELS);
	snprintf(p, sizeof(p), "%s/model/rl_agent_SOL_USDT_20251112_164920.pt",
		 run);
	CLASSIFY(NULL, 0, p, CAT_MODELS);
	snprintf(p, sizeof(p),
		 "%s/data/SOL_USDT_20251112_164920_candles.parquet", run);
	CLASSIFY(NULL, 0, p, CAT_DATA_CACHE);
	snprintf(p, sizeof(p), "%s/data/meta.json", run);
	CLASSIFY(NULL, 0, p, CAT_DATA_CACHE);
	snprintf(p, sizeof(p), "%s/metrics/training_metrics.json", run);
	CLASSIFY(NULL, 0, p, CAT_OTHER);
	snprintf(p, sizeof(p), "%s/features/feature_metadata.json", run);
	CLASSIFY(NULL, 0, p, CAT_OTHER);
	snprintf(p, sizeof(p), "%s/results/backtest.csv", run);
	CLASSIFY(NULL, 0, p, CAT_OTHER);
	/* A model file in metrics/ is still a run metric. */
	snprintf(p, sizeof(p), "%s/metrics/scaler.pkl", run);
	CLASSIFY(NULL, 0, p, CAT_OTHER);
	snprintf(p, sizeof(p), "%s/README.md", run);
	CLASSIFY(NULL, 0, p, CAT_MODELS);

	/* The engine's own folders. */
	CLASSIFY(NULL, 0, "logs/learning/x.json", CAT_LEARNING);
	CLASSIFY(NULL, 0, "logs/learning/2025/11/insight.json", CAT_LEARNING);
	CLASSIFY(NULL, 0, "logs/engine.log", CAT_LOGS);
	CLASSIFY(NULL, 0, "logs/monitoring.json", CAT_LOGS);
	CLASSIFY(NULL, 0, "learning/patterns.json", CAT_LEARNING);
	CLASSIFY(NULL, 0, "monitoring/health.json", CAT_MONITORING);
	CLASSIFY(NULL, 0, "data/candles/BTC-USDT.parquet", CAT_DATA_CACHE);
	CLASSIFY(NULL, 0, "data/candles/1h/BTC-USDT.csv", CAT_DATA_CACHE);
	CLASSIFY(NULL, 0, "models/x.pkl", CAT_MODELS);
	CLASSIFY(NULL, 0, "models/registry.json", CAT_MODELS);

	/* The dated daily folders. */
	CLASSIFY(NULL, 0, "2025-11-08/logs/a.log", CAT_LOGS);
	CLASSIFY(NULL, 0, "2025-11-08/monitoring/m.json", CAT_MONITORING);
	CLASSIFY(NULL, 0, "2025-11-08/learning/i.json", CAT_LEARNING);
	CLASSIFY(NULL, 0, "2025-11-08/models/m.pkl", CAT_MODELS);
	CLASSIFY(NULL, 0, "2025-11-08/models/sub/m.json", CAT_MODELS);

	/* Extensions anywhere else. */
	CLASSIFY(NULL, 0, "exports/a/b.parquet", CAT_DATA_CACHE);
	CLASSIFY(NULL, 0, "scratch/agent.pt", CAT_MODELS);
	CLASSIFY(NULL, 0, "scratch/weights.bin", CAT_MODELS);
	CLASSIFY(NULL, 0, "scratch/model.pkl", CAT_MODELS);
	CLASSIFY(NULL, 0, "foo/bar.txt", CAT_OTHER);
	CLASSIFY(NULL, 0, "README.md", CAT_OTHER);
	CLASSIFY(NULL, 0, "a/b/c/logs/x.log", CAT_OTHER);
	CLASSIFY(NULL, 0, "logsx/a.log", CAT_OTHER);

	/* A leading slash is tolerated. */
	CLASSIFY(NULL, 0, "/logs/engine.log", CAT_LOGS);
}

static void test_user_rules(void)
{
	struct cat_rule rules[] = {
		{(char *)"models/**", CAT_OTHER},
		{(char *)"*.log", CAT_MONITORING},
		{(char *)"exports/**", CAT_DATA_CACHE},
		{(char *)"exports/**", CAT_LEARNING}, /* shadowed */
	};
	int n = (int)(sizeof(rules) / sizeof(rules[0]));

	/* User rules win over the built-in ones ... */
	CLASSIFY(rules, n, "models/x.pkl", CAT_OTHER);
	CLASSIFY(rules, n, "logs/engine.log", CAT_MONITORING);
	CLASSIFY(rules, n, "2025-11-08/logs/a.log", CAT_MONITORING);
	/* ... the first user rule that matches wins ... */
	CLASSIFY(rules, n, "exports/a.txt", CAT_DATA_CACHE);
	/* ... and paths they miss fall through to the built-in rules. */
	CLASSIFY(rules, n, "logs/engine.json", CAT_LOGS);
	CLASSIFY(rules, n, "2025-11-08/models/m.pkl", CAT_MODELS);
	CLASSIFY(rules, n, "foo/bar.txt", CAT_OTHER);
	/* n limits how many are tried. */
	CLASSIFY(rules, 1, "logs/engine.log", CAT_LOGS);
	CLASSIFY(rules, 0, "models/x.pkl", CAT_MODELS);
}

/*
 * Many "**" components, each tried at every split point, once took
 * exponential time (tests/fuzz/corpus/paths/regress-globstar-exponential).
 * These finish at once now; a regression shows as a test timeout.
 */
static void test_globstar_backtracking(void)
{
	char pat[1024] = "", path[1024] = "";
	int i;

	for (i = 0; i < 12; i++)
		strcat(pat, "**/");
	strcat(pat, "x");
	for (i = 0; i < 40; i++)
		strcat(path, "a/");
	GLOB(pat, strcat(path, "b"), false);
	path[strlen(path) - 1] = 'x';
	GLOB(pat, path, true);

	pat[0] = '\0';
	for (i = 0; i < 12; i++)
		strcat(pat, "**/a/");
	strcat(pat, "b");
	path[strlen(path) - 1] = 'c';
	GLOB(pat, path, false);
	path[strlen(path) - 1] = 'b';
	GLOB(pat, path, true);

	/* Only the last "**" moves, yet every split stays reachable. */
	GLOB("**/a/**/b/**/c", "a/b/a/b/x/c", true);
	GLOB("**/a/**/b/**/c", "b/a/c/b", false);
	GLOB("a/**/b/**", "a/b", true);
	GLOB("a/**/b/c", "a/b/x/b/c", true);
	GLOB("**/a/b", "a/a/a/b", true);
}

int main(void)
{
	test_names();
	test_glob();
	test_default_table();
	test_defaults();
	test_user_rules();
	test_globstar_backtracking();
	printf("test_category: all checks passed\n");
	return 0;
}

/*
 * Categories and path rules.
 *
 * The glob matcher works on '/'-separated components without copying or
 * allocating: match_component() handles '*', '?' and classes inside one
 * component (with the usual single-star backtracking, so it is linear in
 * practice), and match_path() does the same one level up, with "**" as the
 * star and whole components as the characters. Trying every split point of
 * every "**" instead takes exponential time: a pattern of a dozen "**"
 * components and an "x", against a path of forty components, ran for
 * minutes (tests/fuzz/corpus/paths/regress-globstar-exponential).
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "hfs/category.h"

static const char *const names[CAT_COUNT] = {
	[CAT_LEARNING] = "learning",	 [CAT_LOGS] = "logs",
	[CAT_MONITORING] = "monitoring", [CAT_MODELS] = "models",
	[CAT_DATA_CACHE] = "data_cache", [CAT_OTHER] = "other",
};

static const char *const events[CAT_COUNT] = {
	[CAT_LEARNING] = "learning_data_synced", [CAT_LOGS] = "logs_synced",
	[CAT_MONITORING] = "logs_synced",	 [CAT_MODELS] = "models_synced",
	[CAT_DATA_CACHE] = "data_cache_synced",	 [CAT_OTHER] = "other_synced",
};

/* The table is const; the cast only satisfies the owned "char *" field. */
#define RULE(p, c)               \
	{                        \
		(char *)(p), (c) \
	}

/*
 * The seeds' layout: learning insights under logs/learning, engine logs
 * under logs, candles under data/candles, per-run folders under
 * models/training/{date}/{symbol}/{model,data,metrics,features,results},
 * and the dated daily folders {date}/{logs,models,monitoring,learning}.
 * The order matters: the first match wins.
 */
const struct cat_rule cat_default_rules[] = {
	RULE("logs/learning/**", CAT_LEARNING),
	RULE("*/learning/**", CAT_LEARNING),
	RULE("learning/**", CAT_LEARNING),
	RULE("logs/**", CAT_LOGS),
	RULE("*/logs/**", CAT_LOGS),
	RULE("monitoring/**", CAT_MONITORING),
	RULE("*/monitoring/**", CAT_MONITORING),
	RULE("data/candles/**", CAT_DATA_CACHE),
	RULE("models/training/*/*/data/**", CAT_DATA_CACHE),
	RULE("*.parquet", CAT_DATA_CACHE),
	RULE("models/training/*/*/metrics/**", CAT_OTHER),
	RULE("models/training/*/*/features/**", CAT_OTHER),
	RULE("models/training/*/*/results/**", CAT_OTHER),
	RULE("models/**", CAT_MODELS),
	RULE("*/models/**", CAT_MODELS),
	RULE("*.pkl", CAT_MODELS),
	RULE("*.pt", CAT_MODELS),
	RULE("*.bin", CAT_MODELS),
	RULE(NULL, 0),
};

const char *cat_name(int cat)
{
	if (cat < 0 || cat >= CAT_COUNT)
		return NULL;
	return names[cat];
}

int cat_from_name(const char *name)
{
	int i;

	if (!name)
		return -EINVAL;
	for (i = 0; i < CAT_COUNT; i++) {
		if (strcmp(name, names[i]) == 0)
			return i;
	}
	return -EINVAL;
}

const char *cat_event(int cat)
{
	if (cat < 0 || cat >= CAT_COUNT)
		return NULL;
	return events[cat];
}

/*
 * Matches the character class starting at @p (pointing at '[') against
 * @c. Returns the length of the class in the pattern, or 0 if the class is
 * not closed before @pe (then '[' is an ordinary character). *@hit tells
 * whether @c is in the class.
 */
static size_t match_class(const char *p, const char *pe, char c, int *hit)
{
	const char *q = p + 1;
	int negate = 0;
	int found = 0;

	if (q < pe && (*q == '!' || *q == '^')) {
		negate = 1;
		q++;
	}
	/* A ']' right after the opening is a member, not the end. */
	if (q < pe && *q == ']') {
		found |= c == ']';
		q++;
	}
	while (q < pe && *q != ']') {
		if (q + 2 < pe && q[1] == '-' && q[2] != ']') {
			unsigned char lo = (unsigned char)q[0];
			unsigned char hi = (unsigned char)q[2];
			unsigned char uc = (unsigned char)c;

			found |= uc >= lo && uc <= hi;
			q += 3;
		} else {
			found |= *q == c;
			q++;
		}
	}
	if (q >= pe)
		return 0;
	*hit = found != negate;
	return (size_t)(q + 1 - p);
}

/* Matches pattern [@p, @pe) against one path component [@s, @se). */
static bool match_component(const char *p, const char *pe, const char *s,
			    const char *se)
{
	const char *star_p = NULL;
	const char *star_s = NULL;

	while (s < se) {
		if (p < pe && *p == '*') {
			/* Remember where to resume if the rest fails. */
			star_p = ++p;
			star_s = s;
			continue;
		}
		if (p < pe && *p == '?') {
			p++;
			s++;
			continue;
		}
		if (p < pe && *p == '[') {
			int hit = 0;
			size_t n = match_class(p, pe, *s, &hit);

			if (n > 0 && hit) {
				p += n;
				s++;
				continue;
			}
			if (n == 0 && *s == '[') {
				p++;
				s++;
				continue;
			}
		} else if (p < pe && *p == *s) {
			p++;
			s++;
			continue;
		}
		/* Mismatch: let the last '*' swallow one more character. */
		if (!star_p)
			return false;
		p = star_p;
		s = ++star_s;
	}
	while (p < pe && *p == '*')
		p++;
	return p == pe;
}

static const char *component_end(const char *s)
{
	const char *e = strchr(s, '/');

	return e ? e : s + strlen(s);
}

static bool is_globstar(const char *p)
{
	return p[0] == '*' && p[1] == '*' && (p[2] == '/' || p[2] == '\0');
}

/* True if @p is empty or consists only of "**" components. */
static bool only_globstars(const char *p)
{
	while (*p) {
		if (!is_globstar(p))
			return false;
		p += p[2] == '/' ? 3 : 2;
	}
	return true;
}

/*
 * Matches pattern @p against path @s, both at the start of a component.
 * Like match_component() one level up: a "**" component is remembered, and
 * on a mismatch only the last one swallows one more path component. Going
 * back to an earlier "**" cannot help (the last one can absorb whatever the
 * earlier one would have), so this takes O(components of @p x components
 * of @s) component matches instead of trying every split of every "**".
 */
static bool match_path(const char *p, const char *s)
{
	const char *star_p = NULL; /* the pattern after the last "**" */
	const char *star_s = NULL; /* where that "**" stops in the path */

	for (;;) {
		const char *pe, *se;

		if (is_globstar(p)) {
			p = p[2] == '/' ? p + 3 : p + 2;
			if (*p == '\0')
				return true;
			star_p = p;
			star_s = s;
			continue;
		}

		pe = component_end(p);
		se = component_end(s);
		if (match_component(p, pe, s, se)) {
			if (*se == '\0' &&
			    (*pe == '\0' || only_globstars(pe + 1)))
				return true;
			if (*se != '\0' && *pe != '\0') {
				p = pe + 1;
				s = se + 1;
				continue;
			}
		}
		/* Mismatch: let the last "**" swallow one more component. */
		if (!star_p)
			return false;
		star_s = strchr(star_s, '/');
		if (!star_s)
			return false;
		p = star_p;
		s = ++star_s;
	}
}

bool glob_match(const char *pattern, const char *path)
{
	const char *base;

	if (!pattern || !path)
		return false;
	if (!strchr(pattern, '/')) {
		/* Like .gitignore: a bare name matches at any depth. */
		base = strrchr(path, '/');
		base = base ? base + 1 : path;
		return match_component(pattern, pattern + strlen(pattern), base,
				       base + strlen(base));
	}
	return match_path(pattern, path);
}

int cat_classify(const struct cat_rule *rules, int n, const char *path)
{
	const struct cat_rule *r;
	int i;

	while (*path == '/')
		path++;
	for (i = 0; rules && i < n; i++) {
		if (glob_match(rules[i].pattern, path))
			return rules[i].cat;
	}
	for (r = cat_default_rules; r->pattern; r++) {
		if (glob_match(r->pattern, path))
			return r->cat;
	}
	return CAT_OTHER;
}

/*
 * The text form of `huracanfs status` (status_print.h): the control
 * socket's reply, one section a line group.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "hfs/log.h"
#include "status_print.h"

/* The string member @key of @o with control characters escaped (names may
 * hold any byte a terminal would act on), in @buf; NULL if absent. */
static const char *esc_member(json_t *o, const char *key, char *buf, size_t len)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_string(v))
		return NULL;
	hlog_escape(buf, len, json_string_value(v), json_string_length(v));
	return buf;
}

#define ESC_MAX 16384

/* Files named per category by status_problems. */
#define PROBLEM_FILES_MAX 50

int status_problems(json_t *st, long long max_unreachable_s, FILE *out,
		    const char *prefix)
{
	static char e1[ESC_MAX], e2[ESC_MAX];
	int n = 0;
	size_t i, j;
	json_t *c, *f;
	json_array_foreach(json_object_get(st, "categories"), i, c)
	{
		int shown = 0;
		/* A file without an error of its own waits on its category's
		 * (a journal replay that failed first). */
		static char ce[ESC_MAX];
		bool cat_err =
			esc_member(c, "last_error", ce, sizeof(ce)) != NULL;
		json_array_foreach(json_object_get(c, "files"), j, f)
		{
			const char *why =
				esc_member(f, "last_error", e2, sizeof(e2));
			if (!why && cat_err)
				why = ce;
			if (!why)
				continue;
			if (shown == PROBLEM_FILES_MAX) {
				fprintf(out, "%s... and more files in %s\n",
					prefix,
					json_string_value(
						json_object_get(c, "name")));
				shown++;
				continue;
			}
			if (shown > PROBLEM_FILES_MAX)
				continue;
			fprintf(out, "%supload failed: %s: %s\n", prefix,
				esc_member(f, "path", e1, sizeof(e1)), why);
			shown++;
		}
		if (!shown && esc_member(c, "last_error", e2, sizeof(e2))) {
			fprintf(out, "%s%s: last upload pass failed: %s\n",
				prefix,
				json_string_value(json_object_get(c, "name")),
				e2);
			shown++;
		}
		n += shown;
	}
	if (esc_member(st, "journal_error", e1, sizeof(e1))) {
		fprintf(out, "%snamespace replay failed: %s\n", prefix, e1);
		n++;
	}
	json_array_foreach(json_object_get(st, "lost"), i, f)
	{
		hlog_escape(e1, sizeof(e1), json_string_value(f),
			    json_string_length(f));
		fprintf(out, "%slost from the cache: %s\n", prefix, e1);
		n++;
	}
	json_t *secs = json_object_get(st, "remote_unreachable_seconds");
	if (max_unreachable_s >= 0 && json_is_integer(secs)) {
		long long d = (long long)json_integer_value(secs);
		if (d > max_unreachable_s) {
			fprintf(out,
				"%sremote unreachable for %lld s (more than "
				"%lld)\n",
				prefix, d, max_unreachable_s);
			n++;
		}
	}
	return n;
}

void status_print(json_t *st)
{
	static char e1[ESC_MAX], e2[ESC_MAX];
	printf("mountpoint: %s\nbackend: %s%s\n",
	       esc_member(st, "mountpoint", e1, sizeof(e1)),
	       json_string_value(json_object_get(st, "backend")),
	       json_is_true(json_object_get(st, "offline")) ? " (offline)"
							    : "");
	printf("cache_dir: %s\n", esc_member(st, "cache_dir", e1, sizeof(e1)));
	printf("namespace changes pending: %lld\n",
	       (long long)json_integer_value(
		       json_object_get(st, "journal_pending")));
	const char *jerr = esc_member(st, "journal_error", e1, sizeof(e1));
	if (jerr)
		printf("namespace replay error: %s\n", jerr);
	json_t *lost = json_object_get(st, "lost");
	if (json_array_size(lost)) {
		size_t k;
		json_t *p;
		printf("LOST: these files' changes since their last upload "
		       "were "
		       "removed from the cache behind huracanfs's back:\n");
		json_array_foreach(lost, k, p)
		{
			hlog_escape(e1, sizeof(e1), json_string_value(p),
				    json_string_length(p));
			printf("  %s\n", e1);
		}
	}
	json_t *found = json_object_get(st, "recovered");
	if (json_array_size(found)) {
		size_t k;
		json_t *p;
		printf("RECOVERED after an unclean stop (see the log):\n");
		json_array_foreach(found, k, p)
			printf("  %s\n", json_string_value(p));
	}
	json_t *links = json_object_get(st, "local_links");
	if (json_array_size(links)) {
		size_t k;
		json_t *l;
		printf("symbolic links kept on this machine only (no remote "
		       "form):\n");
		json_array_foreach(links, k, l)
		{
			const char *p =
				json_string_value(json_object_get(l, "path"));
			hlog_escape(e1, sizeof(e1), p ? p : "?",
				    p ? strlen(p) : 1);
			printf("  %s: %s\n", e1,
			       json_string_value(json_object_get(l, "why")));
		}
	}
	json_t *kept = json_object_get(st, "deletes_kept");
	if (json_array_size(kept)) {
		size_t k;
		json_t *d;
		printf("deletes that kept remote entries this mount had not "
		       "seen, or that another machine changed (they stay on "
		       "the remote and show again here):\n");
		json_array_foreach(kept, k, d)
		{
			size_t j;
			json_t *name;
			json_t *names = json_object_get(d, "kept");
			long long count = (long long)json_integer_value(
				json_object_get(d, "count"));
			printf("  %s: %lld kept:",
			       json_string_value(json_object_get(d, "path")),
			       count);
			json_array_foreach(names, j, name) printf(
				"%s %s", j ? "," : "", json_string_value(name));
			if (count > (long long)json_array_size(names))
				printf(" and %lld more",
				       count - (long long)json_array_size(
						       names));
			printf("\n");
		}
	}
	json_t *rs = json_object_get(st, "restore");
	if (json_is_object(rs))
		printf("data cache restore: %s, %lld/%lld files, %lld/%lld "
		       "bytes\n",
		       json_string_value(json_object_get(rs, "state")),
		       (long long)json_integer_value(
			       json_object_get(rs, "files_done")),
		       (long long)json_integer_value(
			       json_object_get(rs, "files_total")),
		       (long long)json_integer_value(
			       json_object_get(rs, "bytes_done")),
		       (long long)json_integer_value(
			       json_object_get(rs, "bytes_total")));
	if (json_is_true(json_object_get(st, "low_space")))
		printf("warning: the cache filesystem is nearly full; writers "
		       "are slowed down\n");
	printf("%-11s %-8s %9s %7s %12s  %-22s %-22s %s\n", "category",
	       "enabled", "interval", "files", "bytes", "next flush",
	       "last sync", "last error");
	size_t i;
	json_t *c;
	json_array_foreach(json_object_get(st, "categories"), i, c)
	{
		printf("%-11s %-8s %8llds %7lld %12lld  ",
		       json_string_value(json_object_get(c, "name")),
		       json_is_true(json_object_get(c, "enabled")) ? "yes"
								   : "no",
		       (long long)json_integer_value(
			       json_object_get(c, "interval")),
		       (long long)json_integer_value(
			       json_object_get(c, "pending_files")),
		       (long long)json_integer_value(
			       json_object_get(c, "pending_bytes")));
		json_t *nf = json_object_get(c, "next_flush");
		json_t *ls = json_object_get(c, "last_sync");
		char a[32] = "-", b[32] = "-";
		struct tm tm;
		if (json_is_integer(nf)) {
			time_t t = (time_t)json_integer_value(nf);
			gmtime_r(&t, &tm);
			strftime(a, sizeof(a), "%Y-%m-%dT%H:%M:%SZ", &tm);
		}
		if (json_is_integer(ls)) {
			time_t t = (time_t)json_integer_value(ls);
			gmtime_r(&t, &tm);
			strftime(b, sizeof(b), "%Y-%m-%dT%H:%M:%SZ", &tm);
		}
		const char *le = esc_member(c, "last_error", e1, sizeof(e1));
		printf("%-22s %-22s %s\n", a, b, le ? le : "-");
	}
	json_array_foreach(json_object_get(st, "categories"), i, c)
	{
		json_t *files = json_object_get(c, "files");
		if (!json_is_array(files) || json_array_size(files) == 0)
			continue;
		printf("\nwaiting in %s:\n",
		       json_string_value(json_object_get(c, "name")));
		size_t j;
		json_t *f;
		json_array_foreach(files, j, f)
		{
			char when[32] = "-";
			json_t *nu = json_object_get(f, "next_upload");
			if (json_integer_value(nu) > 0) {
				time_t t = (time_t)json_integer_value(nu);
				struct tm tm;
				gmtime_r(&t, &tm);
				strftime(when, sizeof(when),
					 "%Y-%m-%dT%H:%M:%SZ", &tm);
			}
			const char *fe =
				esc_member(f, "last_error", e1, sizeof(e1));
			const char *fp = esc_member(f, "path", e2, sizeof(e2));
			printf("  %-10s %12lld  next %s  %s%s%s\n",
			       json_string_value(json_object_get(f, "state")),
			       (long long)json_integer_value(
				       json_object_get(f, "bytes")),
			       when, fp ? fp : "?", fe ? "  error: " : "",
			       fe ? fe : "");
		}
	}
}

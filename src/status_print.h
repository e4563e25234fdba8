/*
 * The text form of `huracanfs status` (status_print.c).
 */
#ifndef HFS_STATUS_PRINT_H
#define HFS_STATUS_PRINT_H

#include <jansson.h>

/* Prints the control socket's status reply @st (control.h) to stdout as
 * text, with every name from the filesystem escaped (hlog_escape). */
void status_print(json_t *st);

/*
 * Writes one line per problem of status reply @st (taken with files) to
 * @out, each after @prefix: a file whose last upload failed, with the
 * error; a category's last error that no such file shows; a namespace
 * replay error; files lost from the cache; and, if @max_unreachable_s >=
 * 0, the remote unreachable for longer than that. Returns the number of
 * problems.
 */
int status_problems(json_t *st, long long max_unreachable_s, FILE *out,
		    const char *prefix);

#endif

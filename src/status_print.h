/*
 * The text form of `huracanfs status` (status_print.c).
 */
#ifndef HFS_STATUS_PRINT_H
#define HFS_STATUS_PRINT_H

#include <jansson.h>

/* Prints the control socket's status reply @st (control.h) to stdout as
 * text, with every name from the filesystem escaped (hlog_escape). */
void status_print(json_t *st);

#endif

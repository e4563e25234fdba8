/*
 * Error detail for a caller: functions that can fail in ways a person must
 * read about (configuration, setup, the command line) return -errno and
 * write one sentence into a buffer the caller gives (err, errlen). This is
 * the one helper that fills it.
 */
#ifndef HFS_ERR_H
#define HFS_ERR_H

#include <stddef.h>

/* Formats into @err (@errlen bytes, always terminated); a NULL @err or a
 * zero @errlen is allowed and ignored. */
void err_set(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif

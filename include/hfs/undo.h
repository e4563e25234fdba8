/*
 * Undo files: what a file's fsync'd version held where it is being patched
 * in place (durable.c, rule 6). One undo file per content file
 * (cache_undo_open), a sequence of records, each the bytes of one range of
 * the content file as they were before the patch, with a checksum:
 *
 *   magic (u32) | length (u32) | offset (u64) | content hash (32) | bytes
 *
 * The writer appends records of ranges it has not saved yet and syncs the
 * undo file before it changes those bytes; recovery (recover.c) writes
 * every whole record back, so the content file holds the fsync'd version
 * again. A record cut by the power (a checksum that does not match, or one
 * cut short) ends the file: the patch it came before never started.
 */
#ifndef HFS_UNDO_H
#define HFS_UNDO_H

#include <stdint.h>

/* Appends a record of bytes [@off, @off + @len) of @content to @undo (not
 * synced). A range past the end of @content is recorded as far as it goes.
 * Returns 0 or -errno. */
int undo_save(int undo, int content, uint64_t off, uint64_t len);

/* Calls @fn for each whole record of @undo, in order, with its range;
 * stops at the first torn one (or a non-zero return of @fn, returned).
 * 0 or -errno. */
typedef int (*undo_range_fn)(void *arg, uint64_t off, uint64_t len);
int undo_ranges(int undo, undo_range_fn fn, void *arg);

/* Writes every whole record of @undo back into @content, then syncs it;
 * *@records says how many. Returns 0 or -errno. */
int undo_apply(int undo, int content, unsigned *records);

#endif

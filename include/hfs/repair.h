/*
 * `huracanfs repair`: rebuilds a damaged index (see index_check) from
 * what can be read of it, the content files and the remote.
 *
 * The damaged index is moved aside (index.damaged-TIME) and read in a
 * child process, as far as it can be: every node record and journal entry
 * that reads back well is kept. A new index is built; each content file
 * goes back to its path when the salvaged record names one and vouches for
 * it (a dirty file: its bytes, still to upload, with the revision it
 * replaces, so the upload is conflict-checked; a clean file: only if its
 * content hash is the recorded one). Every other content file is kept in
 * /lost+found of the mount (local only): no byte is discarded. The tree
 * itself comes back from the remote, listed as it is used.
 *
 * Runs without a daemon on the cache (takes its lock). Returns 0 and
 * prints a summary to @out, or -errno with a message in @err.
 */
#ifndef HFS_REPAIR_H
#define HFS_REPAIR_H

#include <stddef.h>
#include <stdio.h>

#include "hfs/config.h"

int repair_run(const struct hfs_config *cfg, FILE *out, char *err,
	       size_t errlen);

#endif

/*
 * The backend factory: creates the backend the configuration names. This
 * is the one file that knows every implementation (backend_local.h,
 * backend_dropbox.h); the interface they implement is backend_api.h.
 */
#ifndef HFS_BACKEND_H
#define HFS_BACKEND_H

#include <stdatomic.h>

#include "hfs/backend_api.h"

struct hfs_config;

/*
 * Creates the backend @cfg names; @fresh_cache: the cache directory holds
 * no index yet (a first mount). Returns 0 and sets *@out (owned by the
 * caller, released with backend_destroy), or -errno with a message in @err.
 */
int backend_create(const struct hfs_config *cfg, bool fresh_cache,
		   struct backend **out, char *err, size_t errlen);

/* Gives the calling thread a cancel flag: once set, its backend calls in
 * flight and later ones fail soon with -EINTR (no retries, no waiting).
 * NULL removes it. */
void backend_set_thread_cancel(const atomic_bool *flag);

/* A user waits for the calling thread's backend calls (a lookup, an ls):
 * few retries, short waits (http.h, http_set_thread_quick). */
void backend_set_thread_quick(bool quick);
/* ... at most until @deadline_ns (backend_mono_ns()'s clock; 0: no
 * limit): see http.h, http_set_thread_deadline. */
void backend_set_thread_deadline(int64_t deadline_ns);
int64_t backend_mono_ns(void);

#endif

/*
 * The "local" backend: a directory plays the remote (backend_api.h). The
 * embedded default, and the backend of most tests.
 */
#ifndef HFS_BACKEND_LOCAL_H
#define HFS_BACKEND_LOCAL_H

#include <stdbool.h>
#include <stddef.h>

struct backend;

/*
 * Local backend: @root is the directory that plays the remote; it is
 * created (mode 0700, with its parents) if missing. Returns 0 and sets
 * *@out, or -errno with a detail in backend_last_error(). Remote path ""
 * is @root itself, "/a/b" is @root/a/b. If @root later disappears or
 * becomes inaccessible, every method returns -EAGAIN (remote unavailable);
 * it is never re-created behind the caller's back.
 */
int backend_local_create(const char *root, struct backend **out);
/* The same; @create_root false leaves a missing @root missing (every op is
 * then "unavailable", -EAGAIN, until it appears): used once the cache has
 * an index, so an absent remote never looks like an empty one. */
int backend_local_open(const char *root, bool create_root,
		       struct backend **out);
/*
 * Sets the number of entries per list() page of a local backend @be (1 to
 * 1000; 0 restores the default, 1000). For tests; call it before the
 * backend is shared between threads.
 */
void backend_local_set_page_size(struct backend *be, size_t n);

#endif /* HFS_BACKEND_LOCAL_H */

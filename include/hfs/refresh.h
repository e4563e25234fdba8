/*
 * The listing thread (src/refresh.c): serves the queue of directories
 * that user operations want listed (listing.c, "Listings in the background").
 */
#ifndef HFS_REFRESH_H
#define HFS_REFRESH_H

struct hfs;
struct refresher;

/* Starts the thread; until then, and after refresher_stop(), callers
 * list directories themselves. Returns 0 or -errno. */
int refresher_start(struct hfs *fs, struct refresher **out);
/* Stops it (a listing in progress is cancelled); NULL is a no-op. */
void refresher_stop(struct refresher *r);

#endif

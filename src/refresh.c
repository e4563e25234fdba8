/*
 * The listing thread: lists, in the background, the directories that
 * operations of users asked for (listing.c, "Listings in the background"), one
 * at a time, so a hanging or unreachable remote never holds a user up.
 * Its transfers are cancelled at stop (backend_set_thread_cancel), so an
 * unmount does not wait for a remote that does not answer.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "fs_i.h"
#include "hfs/backend.h"
#include "hfs/refresh.h"

struct refresher {
	struct hfs *fs;
	pthread_t thread;
	atomic_bool cancel;
};

static void *refresh_thread(void *arg)
{
	struct refresher *r = arg;
	uint64_t dir;
	backend_set_thread_cancel(&r->cancel);
	while (fs_listing_next(r->fs, &dir))
		fs_ensure_listed(r->fs, dir, true);
	return NULL;
}

int refresher_start(struct hfs *fs, struct refresher **out)
{
	struct refresher *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->fs = fs;
	atomic_init(&r->cancel, false);
	fs_listings_run(fs, true);
	int rc = -pthread_create(&r->thread, NULL, refresh_thread, r);
	if (rc) {
		fs_listings_run(fs, false);
		free(r);
		return rc;
	}
	*out = r;
	return 0;
}

void refresher_stop(struct refresher *r)
{
	if (!r)
		return;
	atomic_store(&r->cancel, true);
	fs_listings_run(r->fs, false);
	pthread_join(r->thread, NULL);
	free(r);
}

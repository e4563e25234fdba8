/*
 * Eviction (see evict.h).
 *
 * Why a walk of the cache directory rather than a running total: a total
 * kept in the index would need a write on every size change of every file;
 * a walk in the housekeeping thread costs a readdir and a stat per content
 * file, once a minute, and cannot drift from what is on disk.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs_i.h"
#include "hfs/evict.h"
#include "hfs/log.h"

struct cand {
	uint64_t ino;
	uint64_t bytes;
	int64_t atime_ns;
	bool keep; /* its category is kept: evicted only after the others */
};

/* Categories evicted first, then kept ones; oldest first within each. */
static int cmp_victim(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	if (x->keep != y->keep)
		return x->keep ? 1 : -1;
	return (x->atime_ns > y->atime_ns) - (x->atime_ns < y->atime_ns);
}

struct walk {
	struct cand *v;
	size_t n, cap;
	uint64_t total;
};

static int walk_one(void *arg, const struct cache_file *f)
{
	struct walk *w = arg;
	uint64_t bytes = (uint64_t)f->st->st_blocks * 512;
	w->total += bytes;
	if (!f->ino || f->prev || f->partial)
		return 0; /* not a content file one can evict */
	if (w->n == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 256;
		struct cand *nv = realloc(w->v, cap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		w->v = nv;
		w->cap = cap;
	}
	w->v[w->n].ino = f->ino;
	w->v[w->n].bytes = bytes;
	w->v[w->n].atime_ns =
		f->st->st_atim.tv_sec * 1000000000LL + f->st->st_atim.tv_nsec;
	w->v[w->n].keep = false;
	w->n++;
	return 0;
}

/* Lists every content file with its allocated size and atime. */
static int walk(struct hfs *fs, struct cand **out, size_t *n_out,
		uint64_t *total)
{
	struct walk w = {0};
	int rc = cache_walk(cache_dir(fs->cache), walk_one, &w);
	if (rc) {
		free(w.v);
		return rc;
	}
	*out = w.v;
	*n_out = w.n;
	*total = w.total;
	return 0;
}

/* Evicts @ino if it is clean and unused. Returns true if it did. */
static bool evict_one(struct hfs *fs, uint64_t ino)
{
	struct hnode *hn = hnode_get(fs, ino);
	bool done = false;
	if (!hn)
		return false;
	pthread_mutex_lock(&hn->mu);
	if (hn->nopen > 0 || hn->fetching || hn->live)
		goto out;
	struct ixtxn t;
	struct node n;
	if (ix_begin(fs->ix, true, &t))
		goto out;
	if (ix_get(&t, ino, &n) != 0 || n.r.parent == 0 ||
	    !(n.r.flags & NODE_ON_REMOTE) || !n.r.rev[0] ||
	    (n.r.flags & (NODE_DIRTY | NODE_UPLOADING | NODE_LOST)) ||
	    !(n.r.flags & (NODE_CACHED | NODE_PARTIAL))) {
		ix_abort(&t);
		goto out;
	}
	n.r.flags &= ~(NODE_CACHED | NODE_PARTIAL);
	ix_put(&t, &n);
	ix_chunks_del(&t, ino);
	/* The bytes go once this is durable (hfs_reap): a cut before must
	 * not leave the index naming a deleted file. */
	ix_doom_add(&t, ino);
	if (ix_commit(&t) != 0)
		goto out;
	if (hn->fd >= 0) {
		close(hn->fd);
		hn->fd = -1;
	}
	hn->complete = false;
	done = true;
out:
	pthread_mutex_unlock(&hn->mu);
	hnode_put(fs, hn);
	return done;
}

int evict_run(struct hfs *fs, uint64_t limit, uint64_t *used,
	      uint64_t *freed_out)
{
	struct cand *v = NULL;
	size_t n = 0;
	uint64_t total = 0, freed = 0;
	int rc = walk(fs, &v, &n, &total);
	if (rc)
		return rc;
	if (total > limit) {
		for (size_t i = 0; i < n; i++) {
			int cat = hfs_classify(fs, v[i].ino);
			v[i].keep = cat >= 0 && cat < CAT_COUNT &&
				    fs->cfg->cache_keep[cat];
		}
		qsort(v, n, sizeof(*v), cmp_victim);
		size_t count = 0;
		for (size_t i = 0; i < n && total - freed > limit; i++) {
			if (evict_one(fs, v[i].ino)) {
				freed += v[i].bytes;
				count++;
			}
		}
		hlog_info("cache_evicted files=%zu bytes=%llu in_use=%llu "
			  "limit=%llu",
			  count, (unsigned long long)freed,
			  (unsigned long long)(total - freed),
			  (unsigned long long)limit);
		if (total - freed > limit)
			hlog_warn("cache is over cache_max_bytes by %llu bytes "
				  "of dirty or open files; they stay until "
				  "uploaded",
				  (unsigned long long)(total - freed - limit));
	}
	free(v);
	if (used)
		*used = total - freed;
	if (freed_out)
		*freed_out = freed;
	return 0;
}

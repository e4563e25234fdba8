/*
 * Fetching remote bytes into content files: whole small files, 4 MiB
 * chunks of large ones as they are read; reads of a user wait
 * remote_wait_seconds at most.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs_i.h"
#include "hfs/backend.h"
#include "hfs/log.h"
#include "hfs/metrics.h"

/*
 * Small files are fetched whole, into a temporary file moved into place
 * when complete. Files larger than PARTIAL_MIN are fetched by 4 MiB chunk,
 * as they are read, into a sparse content file; the chunks present are
 * recorded in the index (chunks DBI) after their bytes are on disk, so a
 * crash never leaves a chunk marked present that is not. Once every chunk
 * is present, the file is CACHED and its content hash is checked.
 */
#define CHUNK ((uint64_t)4 << 20)
#define PARTIAL_MIN ((uint64_t)8 << 20)

static size_t bitmap_len(uint64_t size)
{
	return (size_t)(((size + CHUNK - 1) / CHUNK + 7) / 8);
}

static bool bit_get(const uint8_t *b, uint64_t i)
{
	return b[i / 8] & (1u << (i % 8));
}

/* Downloads the whole remote file into place. hn->mu not held. */
static int fetch_whole(struct hfs *fs, struct hnode *hn, const char *path,
		       struct node *n, uint64_t *got_out)
{
	struct backend_entry meta;
	uint64_t got = 0;
	uint8_t hash[CHASH_LEN];
	struct ixtxn t;
	memset(&meta, 0, sizeof(meta));
	int fd = cache_open_tmp(fs->cache, hn->ino);
	if (fd < 0)
		return fd;
	int rc = fs->be->ops->download(fs->be, path, NULL, 0, 0, fd, &got,
				       &meta);
	metrics_bytes_down(got);
	if (!rc && !meta.has_hash)
		rc = chash_fd(fd, hash, NULL);
	if (!rc && fsync(fd) < 0)
		rc = -errno;
	close(fd);
	if (!rc)
		rc = cache_commit_tmp(fs->cache, hn->ino);
	if (rc)
		return rc;
	rc = ix_begin(fs->ix, true, &t);
	if (rc)
		return rc;
	if (ix_get(&t, hn->ino, n) == 0) {
		n->r.flags |= NODE_CACHED | NODE_HAS_HASH;
		n->r.flags &= ~NODE_PARTIAL;
		n->r.size = got;
		if (meta.rev[0])
			snprintf(n->r.rev, sizeof(n->r.rev), "%s", meta.rev);
		memcpy(n->r.remote_hash, meta.has_hash ? meta.hash : hash,
		       CHASH_LEN);
		ix_put(&t, n);
		ix_rsize_put(&t, hn->ino, got);
		ix_chunks_del(&t, hn->ino);
	}
	*got_out = got;
	return ix_commit(&t);
}

/*
 * Fetches the missing chunks of [@off, @off + @len) of a large remote
 * file. hn->mu not held.
 */
static int fetch_chunks(struct hfs *fs, struct hnode *hn, const char *path,
			struct node *n, uint64_t off, uint64_t len)
{
	uint64_t size = n->r.size;
	size_t blen = bitmap_len(size);
	uint8_t *bits = calloc(1, blen ? blen : 1);
	struct ixtxn t;
	int rc, fd = -1;
	if (!bits)
		return -ENOMEM;
	rc = ix_begin(fs->ix, false, &t);
	if (rc)
		goto out;
	int64_t stored = ix_chunks_get(&t, hn->ino, bits, blen);
	ix_abort(&t);
	if (stored < 0) {
		rc = (int)stored;
		goto out;
	}
	fd = cache_open(fs->cache, hn->ino, 1);
	if (fd < 0) {
		rc = fd;
		goto out;
	}
	uint64_t nchunks = (size + CHUNK - 1) / CHUNK;
	uint64_t first = off / CHUNK;
	uint64_t last = len ? (off + len - 1) / CHUNK : nchunks - 1;
	if (last >= nchunks)
		last = nchunks - 1;
	for (uint64_t c = first; c <= last && c < nchunks; c++) {
		if (bit_get(bits, c))
			continue;
		uint64_t coff = c * CHUNK;
		uint64_t clen = size - coff < CHUNK ? size - coff : CHUNK;
		uint64_t got = 0;
		rc = fs->be->ops->download(fs->be, path,
					   n->r.rev[0] ? n->r.rev : NULL, coff,
					   clen, fd, &got, NULL);
		metrics_bytes_down(got);
		if (!rc && got != clen)
			rc = -EIO; /* the remote file changed size */
		if (!rc && fdatasync(fd) < 0)
			rc = -errno;
		if (rc)
			goto out;
		bits[c / 8] |= (uint8_t)(1u << (c % 8));
		rc = ix_begin(fs->ix, true, &t);
		if (rc)
			goto out;
		ix_chunks_put(&t, hn->ino, bits, blen);
		struct node cur;
		if (ix_get(&t, hn->ino, &cur) == 0 &&
		    !(cur.r.flags & NODE_PARTIAL)) {
			cur.r.flags |= NODE_PARTIAL;
			ix_put(&t, &cur);
		}
		rc = ix_commit(&t);
		if (rc)
			goto out;
	}
	bool all = true;
	for (uint64_t c = 0; c < nchunks && all; c++)
		all = bit_get(bits, c);
	if (!all)
		goto out;
	/* Complete: check it, then it is an ordinary cached file. */
	uint8_t hash[CHASH_LEN];
	uint64_t hashed = 0;
	rc = chash_fd(fd, hash, &hashed);
	if (rc)
		goto out;
	if (hashed != size || ((n->r.flags & NODE_HAS_HASH) &&
			       memcmp(hash, n->r.remote_hash, CHASH_LEN))) {
		hlog_warn("\"%s\": the assembled chunks do not match the "
			  "remote content hash; fetching again",
			  path);
		rc = ix_begin(fs->ix, true, &t);
		if (!rc) {
			ix_chunks_del(&t, hn->ino);
			ix_commit(&t);
		}
		if (ftruncate(fd, 0) < 0)
			hlog_debug("truncate of a bad content file failed");
		rc = -EIO;
		goto out;
	}
	rc = ix_begin(fs->ix, true, &t);
	if (rc)
		goto out;
	struct node cur;
	if (ix_get(&t, hn->ino, &cur) == 0) {
		cur.r.flags |= NODE_CACHED | NODE_HAS_HASH;
		cur.r.flags &= ~NODE_PARTIAL;
		memcpy(cur.r.remote_hash, hash, CHASH_LEN);
		ix_put(&t, &cur);
	}
	ix_chunks_del(&t, hn->ino);
	rc = ix_commit(&t);
out:
	if (fd >= 0)
		close(fd);
	free(bits);
	return rc;
}

void hfs_note_lost(struct hfs *fs, const char *path)
{
	pthread_mutex_lock(&fs->lost_lock);
	if (fs->nlost < HFS_LOST_MAX) {
		char **nl = realloc(fs->lost, (fs->nlost + 1) * sizeof(*nl));
		if (nl) {
			fs->lost = nl;
			fs->lost[fs->nlost] = strdup(path);
			if (fs->lost[fs->nlost])
				fs->nlost++;
		}
	}
	pthread_mutex_unlock(&fs->lost_lock);
}

/*
 * The content file of @hn (node @n, which is updated) was deleted or cut
 * short behind the daemon's back. A clean file is simply fetched again; a
 * dirty file's bytes are lost: never served as if good, reported in the
 * log and by the file's state ("lost"), and no longer queued. hn->mu held.
 */
static int content_lost(struct hfs *fs, struct hnode *hn, struct node *n)
{
	struct ixtxn t;
	char path[4096] = "?";
	bool dirty = n->r.flags & NODE_DIRTY;
	if (hn->fd >= 0) {
		close(hn->fd);
		hn->fd = -1;
	}
	hn->complete = false;
	cache_remove(fs->cache, hn->ino);
	int rc = ix_begin(fs->ix, true, &t);
	if (rc)
		return rc;
	if (ix_get(&t, hn->ino, n) == 0) {
		ix_path(&t, hn->ino, path, sizeof(path));
		n->r.flags &= ~(NODE_CACHED | NODE_PARTIAL);
		if (dirty) {
			n->r.flags &= ~NODE_DIRTY;
			n->r.flags |= NODE_LOST;
			ix_dirty_del(&t, hn->ino);
		}
		ix_put(&t, n);
		ix_chunks_del(&t, hn->ino);
	}
	if (t.err == -ENOENT)
		t.err = 0;
	rc = ix_commit(&t);
	if (rc)
		return rc;
	if (dirty) {
		hn->dirty_persisted = false;
		hfs_note_lost(fs, path);
		hlog_err(
			"the cached bytes of \"%s\" were removed behind "
			"huracanfs's back before they were uploaded: they are "
			"lost; reads fail with EIO until the file is rewritten "
			"or deleted",
			path);
		snprintf(hn->last_error, sizeof(hn->last_error),
			 "local bytes lost before upload");
	} else {
		hlog_warn("the cached bytes of \"%s\" were missing; fetching "
			  "them again",
			  path);
	}
	return 0;
}

/*
 * Makes bytes [@off, @off + @len) of @hn readable from its content file
 * (@len 0: the whole file), fetching what is missing from the remote.
 * Called and returns with hn->mu held; drops it while fetching.
 */
int fs_ensure_range_until(struct hfs *fs, struct hnode *hn, uint64_t off,
			  uint64_t len, int64_t deadline)
{
	while (hn->fetching) {
		if (!deadline) {
			pthread_cond_wait(&hn->fetched, &hn->mu);
			continue;
		}
		int64_t left = deadline - backend_mono_ns();
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		int64_t ns = until.tv_nsec + (left > 0 ? left : 0);
		until.tv_sec += ns / 1000000000LL;
		until.tv_nsec = ns % 1000000000LL;
		if (left <= 0 || pthread_cond_timedwait(&hn->fetched, &hn->mu,
							&until) == ETIMEDOUT) {
			hlog_warn("a read of inode %llu waited %lld s "
				  "(remote_wait_seconds) for a fetch of its "
				  "bytes in progress: EIO",
				  (unsigned long long)hn->ino,
				  (long long)fs->cfg->remote_wait_seconds);
			return -EIO;
		}
	}
	struct node n;
	int rc = fs_get_node(fs, hn->ino, &n);
	if (rc)
		return rc;
	if (n.r.flags & NODE_LOST)
		return -EIO; /* until rewritten or deleted */
	if (n.r.flags & (NODE_CACHED | NODE_DIRTY)) {
		rc = hnode_open_fd(fs, hn, false);
		struct stat st;
		if (rc == 0 && !(n.r.flags & NODE_DIRTY) && !hn->live &&
		    fstat(hn->fd, &st) == 0 && (uint64_t)st.st_size < n.r.size)
			rc = -ENOENT; /* cut short behind our back */
		if (rc == 0 || rc != -ENOENT) {
			hn->complete = rc == 0;
			return rc;
		}
		/* The content file is gone behind our back. */
		rc = content_lost(fs, hn, &n);
		if (rc)
			return rc;
		if (n.r.flags & NODE_LOST)
			return -EIO;
	}
	if (!(n.r.flags & NODE_ON_REMOTE)) {
		/* Nothing remote to fetch: the local bytes are all. */
		rc = hnode_open_fd(fs, hn, true);
		hn->complete = rc == 0;
		return rc;
	}
	bool chunked = n.r.size > PARTIAL_MIN;
	hn->fetching = true;
	pthread_mutex_unlock(&hn->mu);

	char path[4096];
	struct ixtxn t;
	uint64_t got = n.r.size;
	int64_t t0 = hfs_now_ns();
	rc = ix_begin(fs->ix, false, &t);
	if (!rc) {
		rc = ix_path(&t, hn->ino, path, sizeof(path));
		ix_abort(&t);
	}
	backend_set_thread_deadline(deadline);
	if (!rc && chunked)
		rc = fetch_chunks(fs, hn, path, &n, off, len);
	else if (!rc)
		rc = fetch_whole(fs, hn, path, &n, &got);
	backend_set_thread_deadline(0);
	if (rc && deadline && backend_mono_ns() >= deadline) {
		hlog_warn("fetch of \"%s\" failed: the remote did not answer "
			  "within remote_wait_seconds (%lld s): %s",
			  path, (long long)fs->cfg->remote_wait_seconds,
			  backend_last_error());
		rc = -EIO;
	} else if (rc) {
		hlog_warn("fetch of \"%s\" failed: %s (%s)", path,
			  strerror(-rc), backend_last_error());
		if (rc == -EAGAIN || rc == -EACCES || rc == -ENOENT ||
		    rc == -ETIMEDOUT || rc == -ECONNRESET ||
		    rc == -ECONNREFUSED || rc == -EHOSTUNREACH ||
		    rc == -ENETUNREACH)
			rc = -EIO; /* never "no such file" for a transport
				      failure or a vanished revision */
	} else {
		hlog_debug("fetched \"%s\" off=%llu len=%llu ms=%lld", path,
			   (unsigned long long)off, (unsigned long long)len,
			   (long long)((hfs_now_ns() - t0) / 1000000));
	}

	pthread_mutex_lock(&hn->mu);
	hn->fetching = false;
	pthread_cond_broadcast(&hn->fetched);
	if (!rc && !chunked) {
		if (hn->fd >= 0) {
			close(hn->fd); /* the old content file was replaced */
			hn->fd = -1;
		}
		hn->size = got;
		hn->live = false;
	}
	if (!rc)
		rc = hnode_open_fd(fs, hn, chunked);
	if (!rc && !chunked)
		hn->complete = true;
	if (!rc && chunked && fs_get_node(fs, hn->ino, &n) == 0)
		hn->complete = (n.r.flags & NODE_CACHED) != 0;
	return rc;
}

/* A user waits for bytes not in the cache at most remote_wait_seconds:
 * then EIO, and the log says why. */
int fs_ensure_range(struct hfs *fs, struct hnode *hn, uint64_t off,
		    uint64_t len)
{
	return fs_ensure_range_until(fs, hn, off, len,
				     backend_mono_ns() +
					     fs->cfg->remote_wait_seconds *
						     1000000000LL);
}

/* Makes the content file of @hn complete. hn->mu held. */
int fs_ensure_cached(struct hfs *fs, struct hnode *hn)
{
	return fs_ensure_range(fs, hn, 0, 0);
}

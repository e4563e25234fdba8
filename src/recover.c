/*
 * Recovery after an unclean stop (kill -9, a crash, a power cut): orphans
 * purged, dirty files checked against their content files, files made
 * after the last sync point kept in /lost+found, clean files checked
 * (durable.c, rule 5). Called by hfs_create() before the mount serves
 * anything.
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
#include "hfs/log.h"
#include "hfs/undo.h"

static int purge_orphan(void *arg, uint64_t ino)
{
	struct ixtxn *t = arg;
	ix_del(t, ino);
	if (t->err == -ENOENT)
		t->err = 0;
	return 0;
}

/* A growable array of inodes. */
struct ino_list {
	uint64_t *v;
	size_t n, cap;
};

static int collect_ino(void *arg, uint64_t ino)
{
	struct ino_list *l = arg;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		uint64_t *nv = realloc(l->v, cap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		l->v = nv;
		l->cap = cap;
	}
	l->v[l->n++] = ino;
	return 0;
}

/* The folder, at the mount root, where recovery keeps bytes it could not
 * vouch for: local only (never uploaded), never evicted. */
#define FOUND_DIR "lost+found"

void hfs_note_found(struct hfs *fs, const char *what)
{
	pthread_mutex_lock(&fs->lost_lock);
	if (fs->nfound < HFS_LOST_MAX) {
		char **nf = realloc(fs->found, (fs->nfound + 1) * sizeof(*nf));
		if (nf) {
			fs->found = nf;
			fs->found[fs->nfound] = strdup(what);
			if (fs->found[fs->nfound])
				fs->nfound++;
		}
	}
	pthread_mutex_unlock(&fs->lost_lock);
}

/* The inode of /lost+found, made (local only) if missing, inside @t. */
static int found_dir(struct ixtxn *t, uint64_t *out)
{
	uint64_t ino;
	int rc = ix_lookup(t, INDEX_ROOT_INO, FOUND_DIR, &ino, NULL);
	if (rc == 0) {
		*out = ino;
		return 0;
	}
	if (rc != -ENOENT)
		return rc;
	struct node d;
	memset(&d, 0, sizeof(d));
	rc = ix_alloc_ino(t, &d.ino);
	if (rc)
		return rc;
	snprintf(d.name, sizeof(d.name), "%s", FOUND_DIR);
	d.r.parent = INDEX_ROOT_INO;
	d.r.mode = S_IFDIR | 0700;
	d.r.uid = getuid();
	d.r.gid = getgid();
	d.r.atime_ns = d.r.mtime_ns = d.r.ctime_ns = hfs_now_ns();
	d.r.flags = NODE_LISTED;
	d.r.listed_at = INT64_MAX; /* never listed remotely: local only */
	ix_put(t, &d);
	ix_link(t, INDEX_ROOT_INO, d.name, d.ino);
	*out = d.ino;
	return t->err;
}

/*
 * Moves the content file of @n into /lost+found as a file of its own
 * (local only: clean, not on the remote) named after it, inside @t.
 * Returns 0 and the new name in @found (@len bytes), or -errno.
 */
static int keep_as_found(struct hfs *fs, struct ixtxn *t, const struct node *n,
			 uint64_t bytes, char *found, size_t len)
{
	uint64_t dir;
	int rc = found_dir(t, &dir);
	if (rc)
		return rc;
	struct node f;
	memset(&f, 0, sizeof(f));
	rc = ix_alloc_ino(t, &f.ino);
	if (rc)
		return rc;
	char from[PATH_MAX], to[PATH_MAX];
	cache_path(fs->cache, n->ino, from);
	cache_path(fs->cache, f.ino, to);
	if (rename(from, to) < 0)
		return -errno;
	/* Short enough for any name: the suffix names the old inode. */
	snprintf(f.name, sizeof(f.name), "%.200s.recovered-%llu", n->name,
		 (unsigned long long)n->ino);
	f.r = n->r;
	f.r.parent = dir;
	f.r.size = bytes;
	f.r.flags = NODE_CACHED;
	f.r.dirty_since = 0;
	f.r.rev[0] = '\0';
	f.r.namelen = 0;
	ix_put(t, &f);
	ix_link(t, dir, f.name, f.ino);
	snprintf(found, len, "/%s/%s", FOUND_DIR, f.name);
	return t->err;
}

/* What recover() found, for one message at the end. */
struct recovery {
	struct hfs *fs;
	struct ixtxn *t;
	size_t orphans, lost, reverted, kept_short, refetch;
	uint64_t *clean; /* cached clean files (unclean stops only) */
	size_t nclean, capclean;
};

/*
 * A dirty file after an unclean stop. Its content file is what writers
 * left (kill -9) or what reached the disk (a power cut). As long as the
 * size the index recorded, or longer (writes after the last close): the
 * writer's bytes, trusted. Shorter: not a version anyone wrote (a cut
 * took the tail, or the new bytes of a replacement), never served or
 * uploaded as if good: if the remote has the file, the node goes back to
 * the remote's version and the local bytes are kept in /lost+found; with
 * no remote copy they are all there is, and stay, reported. Missing: the
 * remote's version if it has one, else lost (as before).
 */
/* Brings back the version of @n set aside for a rewrite (fs.c,
 * rewrite_begin), cut to the @proven bytes that were fsync'd. */
static bool restore_prev(struct recovery *r, struct node *n, uint64_t proven,
			 const char *path, uint32_t aside)
{
	struct cache *c = r->fs->cache;
	char cpath[PATH_MAX];
	struct stat st;
	/* Only the kind the index names is that version; the other is
	 * stale (index.h, NODE_ASIDE_*). */
	bool prev =
		(aside & NODE_ASIDE_PREV) && cache_restore_prev(c, n->ino) == 0;
	bool undone = false;
	bool undo = (aside & NODE_ASIDE_UNDO) && cache_has_undo(c, n->ino);
	if (undo) {
		/* Patched in place after it: the bytes it had there back. */
		int u = cache_undo_open(c, n->ino, false);
		int fd = u < 0 ? u : cache_open(c, n->ino, 0);
		int rc = fd < 0 ? fd : undo_apply(u, fd, NULL);
		if (rc)
			hlog_err("recovery: the undo records of \"%s\" cannot "
				 "be applied: %s",
				 path, strerror(-rc));
		undone = rc == 0;
		if (fd >= 0)
			close(fd);
		if (u >= 0)
			close(u);
		if (undone)
			cache_drop_prev(c, n->ino);
	}
	if ((!prev && !undone) || (undo && !undone))
		return false; /* not its fsync'd version: unproven */
	cache_path(c, n->ino, cpath);
	if (stat(cpath, &st) < 0)
		return false;
	uint64_t size = (uint64_t)st.st_size;
	if (size > proven && truncate(cpath, (off_t)proven) == 0)
		size = proven;
	hlog_warn("recovery: \"%s\" is its last fsync'd version again (%llu "
		  "bytes): the %s after it never reached the disk whole",
		  path, (unsigned long long)size,
		  prev ? "rewrite begun" : "changes in place made");
	n->r.size = size;
	ix_put(r->t, n);
	return true;
}

static void recover_dirty(struct recovery *r, uint64_t ino)
{
	struct ixtxn *t = r->t;
	struct hfs *fs = r->fs;
	struct node n;
	char path[4096] = "?", cpath[PATH_MAX], found[4096];
	struct stat st;
	if (ix_get(t, ino, &n)) {
		ix_dirty_del(t, ino);
		return;
	}
	n.r.flags &= ~NODE_UPLOADING;
	if (S_ISLNK(n.r.mode)) {
		/* A link's bytes are its target, kept in the index: its
		 * content file is written again from there. */
		char target[HFS_LINK_MAX + 1];
		int64_t tl = ix_target_get(t, ino, target, sizeof(target));
		if (tl > 0 && tl <= HFS_LINK_MAX &&
		    fs_link_content(fs, ino, target, (size_t)tl) == 0) {
			n.r.size = (uint64_t)tl;
			n.r.flags |= NODE_CACHED;
			ix_put(t, &n);
		}
		return;
	}
	ix_path(t, ino, path, sizeof(path));
	cache_path(fs->cache, ino, cpath);
	bool present = stat(cpath, &st) == 0;
	bool remote = (n.r.flags & NODE_ON_REMOTE) && n.r.rev[0];
	/* A rewrite in progress matters only after a power cut: after
	 * kill -9 the content file is what the writer wrote, whole. */
	bool rewriting = fs->rolled_back && (n.r.flags & NODE_REWRITING);
	uint32_t aside = n.r.flags & NODE_ASIDE;
	n.r.flags &= ~(NODE_REWRITING | NODE_ASIDE);
	uint64_t proven = ix_proven_get(t, ino);
	if (aside) {
		/* Its fsync'd version, kept aside for a rewrite or patches
		 * (file.c, rewrite_begin, undo_before) whose bytes never
		 * reached the disk: that version again. After kill -9 the
		 * new bytes are whole: they stay. */
		if (fs->rolled_back && proven > 0 &&
		    restore_prev(r, &n, proven, path, aside)) {
			cache_drop_prev(fs->cache, ino);
			return;
		}
		ix_proven_put(t, ino, 0);
		proven = 0;
	}
	/* What is left of an earlier version kept aside is stale. */
	cache_drop_prev(fs->cache, ino);
	if (fs->rolled_back && present && proven > 0 &&
	    (uint64_t)st.st_size >= proven) {
		/*
		 * After a power cut: it was fsync'd at @proven bytes and
		 * not cut shorter since; what was written past them never
		 * was synced (and may be torn): the file is its fsync'd
		 * length again. (Bytes changed in place since, without a
		 * sync, are on disk or not, as on any filesystem.)
		 */
		if ((uint64_t)st.st_size > proven &&
		    truncate(cpath, (off_t)proven) == 0)
			hlog_warn("recovery: \"%s\" back to its last fsync'd "
				  "%llu bytes (%llu written after it never "
				  "reached the disk whole)",
				  path, (unsigned long long)proven,
				  (unsigned long long)((uint64_t)st.st_size -
						       proven));
		n.r.size = proven;
		ix_put(t, &n);
		return;
	}
	/* After a power cut, bytes never synced may be torn: never sent
	 * over a remote copy. */
	bool unproven = fs->rolled_back;
	if (present && (uint64_t)st.st_size >= n.r.size &&
	    !((rewriting || unproven) && remote)) {
		n.r.size = (uint64_t)st.st_size;
		ix_put(t, &n);
		return;
	}
	if (present && !remote) {
		hlog_warn("recovery: \"%s\" holds %llu of the %llu bytes last "
			  "recorded%s; kept as it is, and uploaded",
			  path, (unsigned long long)st.st_size,
			  (unsigned long long)n.r.size,
			  rewriting ? " and was being written again" : "");
		snprintf(found, sizeof(found), "%s: %llu of %llu bytes kept",
			 path, (unsigned long long)st.st_size,
			 (unsigned long long)n.r.size);
		hfs_note_found(fs, found);
		n.r.size = (uint64_t)st.st_size;
		ix_put(t, &n);
		r->kept_short++;
		return;
	}
	if (remote) {
		found[0] = '\0';
		if (present && st.st_size > 0 &&
		    keep_as_found(fs, t, &n, (uint64_t)st.st_size, found,
				  sizeof(found)) != 0)
			return; /* left dirty, as it was */
		if (!found[0])
			ix_doom_add(t, ino);
		n.r.flags &=
			~(NODE_DIRTY | NODE_CACHED | NODE_PARTIAL | NODE_LOST);
		n.r.dirty_since = 0;
		uint64_t rsize;
		if (ix_rsize_get(t, ino, &rsize) == 0)
			n.r.size = rsize;
		ix_put(t, &n);
		ix_dirty_del(t, ino);
		ix_chunks_del(t, ino);
		struct node d;
		if (ix_get(t, n.r.parent, &d) == 0) {
			d.r.listed_at = 0; /* the remote's size comes back */
			ix_put(t, &d);
		}
		char msg[8300];
		snprintf(msg, sizeof(msg),
			 "%s: the local change did not reach the disk whole; "
			 "the remote's version is served%s%s",
			 path, found[0] ? ", the local bytes are in " : "",
			 found);
		hlog_warn("recovery: %s", msg);
		hfs_note_found(fs, msg);
		r->reverted++;
		return;
	}
	/* The bytes are gone and the remote never had them. */
	hfs_note_lost(fs, path);
	hlog_err("the cached bytes of \"%s\" are missing: its changes since "
		 "the last upload are lost",
		 path);
	n.r.flags |= NODE_LOST;
	n.r.flags &= ~(NODE_DIRTY | NODE_CACHED);
	ix_dirty_del(t, ino);
	ix_put(t, &n);
	r->lost++;
}

/*
 * After the index went back to its last sync point: content files of
 * files made since (never synced) are in no node. Their bytes are kept in
 * /lost+found, never deleted.
 */
struct unref {
	uint64_t *inos, *prevs;
	size_t n, cap, nprev, capprev;
};

static int push_ino(uint64_t **v, size_t *n, size_t *cap, uint64_t ino)
{
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 64;
		uint64_t *nv = realloc(*v, nc * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		*v = nv;
		*cap = nc;
	}
	(*v)[(*n)++] = ino;
	return 0;
}

static int collect_unref(void *arg, const struct cache_file *f)
{
	struct unref *u = arg;
	if (!f->ino || f->partial)
		return 0;
	if (f->prev || f->undo)
		return push_ino(&u->prevs, &u->nprev, &u->capprev, f->ino);
	return push_ino(&u->inos, &u->n, &u->cap, f->ino);
}

static void recover_unreferenced(struct recovery *r)
{
	struct ixtxn *t = r->t;
	struct unref u = {0};
	int rc = cache_walk(cache_dir(r->fs->cache), collect_unref, &u);
	if (rc) {
		if (!t->err)
			t->err = rc;
		goto out;
	}
	for (size_t i = 0; i < u.nprev; i++) {
		struct node old;
		if (ix_get(t, u.prevs[i], &old) != 0 ||
		    !(old.r.flags & NODE_ASIDE))
			cache_drop_prev(r->fs->cache, u.prevs[i]);
	}
	for (size_t i = 0; i < u.n && !t->err; i++) {
		struct node old, found;
		struct stat st;
		char cpath[PATH_MAX], where[4096];
		if (ix_get(t, u.inos[i], &old) != -ENOENT)
			continue;
		cache_path(r->fs->cache, u.inos[i], cpath);
		if (stat(cpath, &st) < 0 || !S_ISREG(st.st_mode))
			continue;
		if (st.st_size == 0) {
			unlink(cpath);
			continue;
		}
		memset(&found, 0, sizeof(found));
		found.ino = u.inos[i];
		snprintf(found.name, sizeof(found.name), "content");
		found.r.mode = S_IFREG | 0600;
		found.r.uid = getuid();
		found.r.gid = getgid();
		found.r.mtime_ns = found.r.ctime_ns = found.r.atime_ns =
			st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
		if (keep_as_found(r->fs, t, &found, (uint64_t)st.st_size, where,
				  sizeof(where)) == 0) {
			char msg[4200];
			snprintf(msg, sizeof(msg),
				 "bytes of a file made after the last "
				 "sync point kept in %s",
				 where);
			hfs_note_found(r->fs, msg);
			r->kept_short++;
		}
	}
out:
	free(u.inos);
	free(u.prevs);
}

static int collect_clean(void *arg, const struct node *n)
{
	struct recovery *r = arg;
	if (!S_ISREG(n->r.mode) || (n->r.flags & NODE_DIRTY) ||
	    !(n->r.flags & (NODE_CACHED | NODE_PARTIAL)))
		return 0;
	if (r->nclean == r->capclean) {
		size_t cap = r->capclean ? r->capclean * 2 : 256;
		uint64_t *nc = realloc(r->clean, cap * sizeof(*nc));
		if (!nc)
			return -ENOMEM;
		r->clean = nc;
		r->capclean = cap;
	}
	r->clean[r->nclean++] = n->ino;
	return 0;
}

/*
 * A cached clean file after an unclean stop: a content file missing, or
 * of another size than the index recorded, holds nothing to serve; the
 * file is remote-only again (fetched on the next read), never "lost".
 * Local-only files (lost+found) are left alone.
 */
static void recover_clean(struct recovery *r, uint64_t ino)
{
	struct ixtxn *t = r->t;
	struct node n;
	char cpath[PATH_MAX];
	struct stat st;
	if (ix_get(t, ino, &n) || !(n.r.flags & NODE_ON_REMOTE) || !n.r.rev[0])
		return;
	cache_path(r->fs->cache, ino, cpath);
	bool present = stat(cpath, &st) == 0;
	if (present && (n.r.flags & NODE_CACHED) &&
	    (uint64_t)st.st_size == n.r.size)
		return;
	if (present && (n.r.flags & NODE_PARTIAL) &&
	    (uint64_t)st.st_size <= n.r.size)
		return; /* chunks are synced before they are recorded */
	n.r.flags &= ~(NODE_CACHED | NODE_PARTIAL);
	ix_put(t, &n);
	ix_chunks_del(t, ino);
	ix_doom_add(t, ino);
	r->refetch++;
}

/*
 * At mount: purge orphans (unlinked while open), and after an unclean
 * stop (kill -9, a crash of the machine) check what the index says
 * against the content files without guessing (recover_dirty,
 * recover_clean). Work is proportional to the dirty files and orphans,
 * plus one stat per cached file after an unclean stop. Doomed content
 * files are reaped afterwards.
 */
int fs_recover(struct hfs *fs)
{
	struct ixtxn t;
	struct ino_list orphans = {0}, dirty = {0};
	struct recovery r = {.fs = fs, .t = &t};
	int rc = ix_begin(fs->ix, false, &t);
	if (rc)
		return rc;
	rc = ix_foreach_orphan(&t, collect_ino, &orphans);
	if (!rc)
		rc = ix_foreach_dirty(&t, collect_ino, &dirty);
	if (!rc && fs->unclean)
		rc = ix_foreach_node(&t, collect_clean, &r);
	ix_abort(&t);
	if (rc)
		goto out;
	uint64_t *oa = orphans.v, *da = dirty.v;
	/* Content files doomed before the stop go first: they are in no
	 * node, and are not to be found again below. */
	rc = hfs_reap(fs);
	if (!rc)
		rc = ix_begin(fs->ix, true, &t);
	if (rc)
		goto out;
	if (fs->rolled_back)
		recover_unreferenced(&r);
	for (size_t i = 0; i < orphans.n; i++) {
		purge_orphan(&t, oa[i]);
		ix_orphan_del(&t, oa[i]);
		ix_dirty_del(&t, oa[i]);
		ix_doom_add(&t, oa[i]);
	}
	r.orphans = orphans.n;
	for (size_t i = 0; i < dirty.n && !t.err; i++)
		recover_dirty(&r, da[i]);
	for (size_t i = 0; i < r.nclean && !t.err; i++)
		recover_clean(&r, r.clean[i]);
	rc = ix_commit(&t);
	if (r.orphans || r.lost || r.reverted || r.kept_short || r.refetch)
		hlog_warn("recovery: purged %zu orphans; %zu dirty files lost "
			  "their cached bytes, %zu went back to the remote's "
			  "version, %zu were kept shorter than recorded; %zu "
			  "cached clean files will be fetched again",
			  r.orphans, r.lost, r.reverted, r.kept_short,
			  r.refetch);
	if (!rc)
		rc = hfs_reap(fs);
out:
	free(orphans.v);
	free(dirty.v);
	free(r.clean);
	return rc;
}

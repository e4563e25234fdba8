/*
 * Listings of remote directories, merged into the index with the journal
 * in mind, and the queue of listings user operations ask for (served by
 * refresh.c).
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
#include "hfs/fold.h"
#include "hfs/backend.h"
#include "hfs/log.h"
#include "hfs/metrics.h"

/* After a failed listing, the remote counts as unreachable (listings
 * come from the index) for this long (s). */
#define OFFLINE_BACKOFF 5

/* ---- Journal-aware listing of remote directories ---- */

struct pending {
	char **paths; /* folded remote paths touched by the journal */
	size_t n, cap;
};

static int pending_add(struct pending *p, const char *path)
{
	if (!path[0])
		return 0;
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 16;
		char **np = realloc(p->paths, cap * sizeof(*np));
		if (!np)
			return -ENOMEM;
		p->paths = np;
		p->cap = cap;
	}
	char *s;
	int rc = fold_path_dup(path, &s);
	if (rc)
		return rc;
	p->paths[p->n++] = s;
	return 0;
}

static int pending_collect(void *arg, const struct journal_entry *e)
{
	struct pending *p = arg;
	int rc = pending_add(p, e->path);
	if (!rc && e->op == JOP_RENAME)
		rc = pending_add(p, e->path2);
	return rc;
}

static int cmp_folded(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorts the paths for pending_hit (after the last pending_collect). */
static void pending_sort(struct pending *p)
{
	if (p->n)
		qsort(p->paths, p->n, sizeof(*p->paths), cmp_folded);
}

/* True if @path (folded) or one of its ancestors is touched by a pending
 * journal entry: a binary search per ancestor, since the journal may
 * hold the deletes of a whole tree. @p is sorted. */
static bool pending_hit(const struct pending *p, const char *folded)
{
	char buf[4096];
	size_t len = strlen(folded);
	if (p->n == 0)
		return false;
	if (len >= sizeof(buf))
		return true; /* cannot happen; err on the side of local */
	memcpy(buf, folded, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		char c = buf[i];
		buf[i] = '\0';
		char *key = buf;
		bool hit = bsearch(&key, p->paths, p->n, sizeof(*p->paths),
				   cmp_folded) != NULL;
		buf[i] = c;
		if (hit)
			return true;
	}
	return false;
}

static void pending_release(struct pending *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->paths[i]);
	free(p->paths);
	memset(p, 0, sizeof(*p));
}

struct listing {
	struct backend_entry *e;
	size_t n, cap;
};

static int listing_fetch(struct hfs *fs, const char *path, struct listing *l)
{
	char *cursor = NULL;
	int rc;
	for (;;) {
		struct backend_page page = {0};
		rc = fs->be->ops->list(fs->be, path, cursor, &page);
		free(cursor);
		cursor = NULL;
		if (rc)
			break;
		if (l->n + page.n > l->cap) {
			size_t cap = (l->n + page.n) * 2 + 16;
			struct backend_entry *ne =
				realloc(l->e, cap * sizeof(*ne));
			if (!ne) {
				backend_page_release(&page);
				rc = -ENOMEM;
				break;
			}
			l->e = ne;
			l->cap = cap;
		}
		if (page.n)
			memcpy(l->e + l->n, page.entries,
			       page.n * sizeof(*page.entries));
		l->n += page.n;
		bool more = page.has_more;
		cursor = page.cursor;
		page.cursor = NULL;
		backend_page_release(&page);
		if (!more)
			break;
		if (!cursor) {
			rc = -EIO;
			break;
		}
	}
	free(cursor);
	return rc;
}

/* A name of a listing, folded, and where it stands in the listing. */
struct listed {
	char *folded; /* malloc'd */
	size_t idx;
};

static int cmp_listed(const void *a, const void *b)
{
	const struct listed *x = a, *y = b;
	int c = strcmp(x->folded, y->folded);
	return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A node a listing merge dropped. */
struct freed {
	uint64_t ino;
	bool known; /* to the kernel: orphaned, not deleted */
};

struct merge_ctx {
	struct hfs *fs;
	struct ixtxn *t;
	struct listed *names; /* the listing's names folded, sorted */
	size_t n;
	const char **exact; /* the listing's names as they are, sorted */
	/* Per listing entry: the inode it was merged into, 0 if none. */
	uint64_t *claimed;
	const char *dirpath;
	struct pending *pend;
	uint64_t *doomed;
	size_t ndoomed, capdoomed;
	/* Nodes dropped; their content goes after commit. */
	struct freed *freed;
	size_t nfreed, capfreed;
	size_t late; /* late uploads of ours found and deleted again */
};

/* Adds a node for remote entry @e to directory @dir inside @t; returns
 * its inode (0 after a failure, which is @t's sticky error). */
static uint64_t add_remote_node(struct ixtxn *t, uint64_t dir,
				const struct backend_entry *e, int64_t now_ns,
				bool link)
{
	struct node n;
	memset(&n, 0, sizeof(n));
	if (ix_alloc_ino(t, &n.ino))
		return 0;
	snprintf(n.name, sizeof(n.name), "%s", e->name);
	n.r.parent = dir;
	n.r.mode = e->is_dir ? (S_IFDIR | 0755)
		   : link    ? (S_IFLNK | 0777)
			     : (S_IFREG | 0644);
	n.r.uid = getuid();
	n.r.gid = getgid();
	n.r.flags = NODE_ON_REMOTE | (link ? NODE_RCLONELINK : 0);
	n.r.size = e->is_dir ? 0 : e->size;
	n.r.mtime_ns = e->is_dir ? now_ns : e->mtime * 1000000000LL;
	n.r.atime_ns = n.r.ctime_ns = n.r.mtime_ns;
	snprintf(n.r.rev, sizeof(n.r.rev), "%s", e->rev);
	if (e->has_hash) {
		n.r.flags |= NODE_HAS_HASH;
		memcpy(n.r.remote_hash, e->hash, CHASH_LEN);
	}
	ix_put(t, &n);
	if (!e->is_dir)
		ix_rsize_put(t, n.ino, e->size);
	ix_link(t, dir, e->name, n.ino);
	return t->err ? 0 : n.ino;
}

/* True if the listing holds an entry named exactly @name. */
static bool listed_exact(const struct merge_ctx *m, const char *name)
{
	return bsearch(&name, m->exact, m->n, sizeof(*m->exact), cmp_str);
}

/* Gives node @n of @dir the remote's spelling @name of its name (a name
 * changed elsewhere in case only, or a name of ours Dropbox stores under
 * the spelling it already had). */
static void adopt_name(struct ixtxn *t, uint64_t dir, struct node *n,
		       const char *name)
{
	ix_unlink(t, dir, n->name);
	snprintf(n->name, sizeof(n->name), "%s", name);
	ix_put(t, n);
	ix_link(t, dir, n->name, n->ino);
}

/*
 * Removes clean node @n from directory @dir inside @t because the remote
 * no longer has it (or has another file under its name). An inode the
 * kernel knows becomes an orphan; its content goes when it is released.
 */
static int drop_node(struct hfs *fs, struct ixtxn *t, uint64_t dir,
		     struct node *n, struct merge_ctx *m)
{
	if (m->nfreed == m->capfreed) {
		size_t cap = m->capfreed ? m->capfreed * 2 : 16;
		struct freed *nf = realloc(m->freed, cap * sizeof(*nf));
		if (!nf)
			return -ENOMEM;
		m->freed = nf;
		m->capfreed = cap;
	}
	bool known = fs_inode_known(fs, n->ino);
	ix_unlink(t, dir, n->name);
	ix_chunks_del(t, n->ino);
	if (known) {
		n->r.parent = 0;
		ix_put(t, n);
		ix_orphan_add(t, n->ino);
	} else {
		ix_del(t, n->ino);
		ix_doom_add(t, n->ino);
	}
	m->freed[m->nfreed].ino = n->ino;
	m->freed[m->nfreed].known = known;
	m->nfreed++;
	return 0;
}

/*
 * True if entry @name (node @ino) is still on the remote: the listing
 * holds that very name, or a name that folds alike and was not merged
 * into another node (two entries folding alike are both kept only while
 * the remote holds both).
 */
static bool still_listed(const struct merge_ctx *m, const char *name,
			 uint64_t ino)
{
	char folded[FOLD_NAME_MAX + 1];
	if (listed_exact(m, name))
		return true;
	if (fold_name(name, strlen(name), folded, sizeof(folded)) < 0)
		return true; /* cannot tell: keep it */
	size_t lo = 0, hi = m->n;
	while (lo < hi) { /* the first listed name folding alike */
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(m->names[mid].folded, folded) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < m->n && strcmp(m->names[lo].folded, folded) == 0; lo++) {
		uint64_t c = m->claimed[m->names[lo].idx];
		if (c == 0 || c == ino)
			return true;
	}
	return false;
}

static int collect_absent(void *arg, const char *name, uint64_t ino)
{
	struct merge_ctx *m = arg;
	if (still_listed(m, name, ino))
		return 0;
	/* A link is listed under its remote name. */
	struct node n;
	char rname[BACKEND_NAME_MAX + HFS_LINK_SUFFIX_LEN + 1];
	snprintf(rname, sizeof(rname), "%s%s", name, HFS_LINK_SUFFIX);
	if (ix_get(m->t, ino, &n) == 0 && (n.r.flags & NODE_RCLONELINK) &&
	    listed_exact(m, rname))
		return 0;
	if (m->ndoomed == m->capdoomed) {
		size_t cap = m->capdoomed ? m->capdoomed * 2 : 16;
		uint64_t *nd = realloc(m->doomed, cap * sizeof(*nd));
		if (!nd)
			return -ENOMEM;
		m->doomed = nd;
		m->capdoomed = cap;
	}
	m->doomed[m->ndoomed++] = ino;
	return 0;
}

/* True if remote file @e at @folded is an upload of ours that landed
 * after its file was deleted or renamed away (a tombstone matches). */
static bool late_upload(struct ixtxn *t, const char *folded,
			const struct backend_entry *e)
{
	uint8_t h[IX_TOMB_MAX][CHASH_LEN];
	int64_t expires = 0;
	int n = ix_tomb_get(t, folded, &expires, h);
	if (n > 0 && expires < hfs_now()) {
		ix_tomb_del(t, folded);
		return false;
	}
	for (int i = 0; i < n; i++)
		if (memcmp(h[i], e->hash, CHASH_LEN) == 0)
			return true;
	return false;
}

/*
 * Symbolic links in rclone's form: remote file NAME.rclonelink (holding
 * the target) is link NAME, unless rclone_links is off, or the listing
 * also holds a NAME (then both are what they are: files), or it holds
 * no target (empty, or longer than HFS_LINK_MAX: a plain file), or the
 * directory holds a local NAME that is no link of that form (the local
 * entry wins, as with any type clash). Gives NAME in @stem.
 */
static bool remote_link(const struct merge_ctx *m, uint64_t dir,
			const struct backend_entry *e, char *stem)
{
	size_t nl = strlen(e->name);
	if (!m->fs->cfg->rclone_links || e->is_dir || e->size == 0 ||
	    e->size > HFS_LINK_MAX || nl <= HFS_LINK_SUFFIX_LEN ||
	    strcmp(e->name + nl - HFS_LINK_SUFFIX_LEN, HFS_LINK_SUFFIX) != 0)
		return false;
	memcpy(stem, e->name, nl - HFS_LINK_SUFFIX_LEN);
	stem[nl - HFS_LINK_SUFFIX_LEN] = '\0';
	if (listed_exact(m, stem))
		return false;
	uint64_t ino;
	struct node n;
	if (ix_lookup(m->t, dir, stem, &ino, NULL) == 0 &&
	    ix_get(m->t, ino, &n) == 0 &&
	    !(S_ISLNK(n.r.mode) && (n.r.flags & NODE_RCLONELINK)))
		return false;
	return true;
}

/*
 * Merges a complete remote listing of directory @dir into the index.
 * Local changes win: dirty, uploading or journaled entries are kept as
 * they are. Clean entries take the remote's attributes; clean files the
 * remote no longer has are removed. -ECANCELED, and nothing merged, if
 * fs->ns_gen moved from @gen (read before the listing was fetched): it
 * may predate a change of ours.
 */
static int merge_listing(struct hfs *fs, uint64_t dir, const char *dirpath,
			 struct listing *l, struct pending *pend, uint64_t gen)
{
	struct merge_ctx m = {.fs = fs, .dirpath = dirpath, .pend = pend};
	struct ixtxn t;
	int rc = 0;
	int64_t now_ns = hfs_now_ns();

	/* Paths are at most 4095 bytes (below): folded, at most this. */
	size_t fcap = FOLD_RATIO * 4096 + 1;
	char *folded = malloc(fcap);
	m.names = calloc(l->n + 1, sizeof(*m.names));
	m.exact = calloc(l->n + 1, sizeof(*m.exact));
	m.claimed = calloc(l->n + 1, sizeof(*m.claimed));
	if (!folded || !m.names || !m.exact || !m.claimed) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < l->n; i++) {
		rc = fold_path_dup(l->e[i].name, &m.names[i].folded);
		if (rc)
			goto out;
		m.names[i].idx = i;
		m.exact[i] = l->e[i].name;
		m.n++;
	}
	qsort(m.names, m.n, sizeof(*m.names), cmp_listed);
	qsort(m.exact, m.n, sizeof(*m.exact), cmp_str);

	rc = ix_begin(fs->ix, true, &t);
	if (rc)
		goto out;
	if (atomic_load(&fs->ns_gen) != gen) {
		/* We changed something meanwhile: the listing may predate
		 * it. */
		ix_abort(&t);
		rc = -ECANCELED;
		goto out;
	}
	struct node d0;
	uint32_t subdirs0 = ix_get(&t, dir, &d0) == 0 ? d0.r.nsubdirs : 0;
	/* What is pending now, not only when the fetch began. */
	rc = ix_foreach_journal(&t, pending_collect, pend);
	if (rc) {
		ix_abort(&t);
		goto out;
	}
	pending_sort(pend);
	m.t = &t;
	for (size_t i = 0; i < l->n && !t.err; i++) {
		const struct backend_entry *e = &l->e[i];
		struct backend_entry le;
		char stem[BACKEND_NAME_MAX + 1];
		bool link = remote_link(&m, dir, e, stem);
		char path[4096];
		int pl =
			snprintf(path, sizeof(path), "%s/%s", dirpath, e->name);
		if (pl < 0 || (size_t)pl >= sizeof(path) ||
		    fold_path(path, folded, fcap) < 0)
			continue;
		if (pending_hit(pend, folded))
			continue;
		if (link) {
			/* From here on the entry is the link NAME. */
			le = *e;
			snprintf(le.name, sizeof(le.name), "%s", stem);
			e = &le;
		}
		uint64_t ino;
		char exact[BACKEND_NAME_MAX + 1];
		struct node n;
		int lrc = ix_lookup(&t, dir, e->name, &ino, exact);
		if (lrc == 0 && strcmp(exact, e->name) != 0 &&
		    listed_exact(&m, exact))
			lrc = -ENOENT; /* the remote holds both names */
		if (lrc == -ENOENT && !e->is_dir && e->has_hash &&
		    late_upload(&t, folded, e)) {
			/* Nothing of ours is there, but an upload of a file
			 * since deleted or renamed away landed after that:
			 * it goes again. */
			hlog_info("late upload of \"%s\" (deleted or renamed "
				  "since) found; deleting it again",
				  path);
			ix_journal_append_delete(&t, JOP_UNLINK, path, e->rev,
						 e->hash);
			m.late++;
			continue;
		}
		if (lrc == -ENOENT) {
			m.claimed[i] =
				add_remote_node(&t, dir, e, now_ns, link);
			continue;
		}
		if (lrc)
			break;
		if (ix_get(&t, ino, &n))
			break;
		m.claimed[i] = ino;
		if (n.r.xlinks > 0 &&
		    !(n.r.parent == dir && strcmp(n.name, exact) == 0))
			continue; /* another name of a file: its copy there */
		if (S_ISDIR(n.r.mode) != e->is_dir ||
		    S_ISLNK(n.r.mode) != link || (n.r.flags & NODE_LOCAL) ||
		    !(S_ISDIR(n.r.mode) || S_ISREG(n.r.mode) ||
		      S_ISLNK(n.r.mode)))
			continue; /* local type wins until it is replayed */
		if (strcmp(n.name, e->name) != 0 &&
		    !(n.r.flags & (NODE_DIRTY | NODE_UPLOADING)))
			adopt_name(&t, dir, &n, e->name);
		if (e->is_dir) {
			if (!(n.r.flags & NODE_ON_REMOTE)) {
				n.r.flags |= NODE_ON_REMOTE;
				ix_put(&t, &n);
			}
			continue;
		}
		if (n.r.flags & (NODE_DIRTY | NODE_UPLOADING))
			continue;
		if (strcmp(n.r.rev, e->rev) == 0 &&
		    (n.r.flags & NODE_ON_REMOTE))
			continue;
		if ((n.r.flags & NODE_ON_REMOTE) &&
		    (n.r.flags & NODE_HAS_HASH) && e->has_hash &&
		    memcmp(n.r.remote_hash, e->hash, CHASH_LEN) == 0) {
			/* Same bytes, new revision (a move gives one): keep
			 * the inode and what is cached. */
			snprintf(n.r.rev, sizeof(n.r.rev), "%s", e->rev);
			ix_put(&t, &n);
			ix_rsize_put(&t, n.ino, e->size);
			continue;
		}
		if (fs_inode_busy(fs, ino))
			continue;
		if (link) {
			/* Another target: read again when next asked for. */
			ix_target_del(&t, ino);
			ix_chunks_del(&t, ino);
			if (n.r.flags & (NODE_CACHED | NODE_PARTIAL))
				ix_doom_add(&t, ino);
			n.r.flags &= ~(NODE_CACHED | NODE_PARTIAL);
		}
		if (!(n.r.flags & (NODE_CACHED | NODE_PARTIAL)) &&
		    (link || !fs_inode_known(fs, ino))) {
			/* Nothing cached and no kernel state: update in
			 * place. */
			n.r.flags |= NODE_ON_REMOTE;
			n.r.flags &= ~NODE_HAS_HASH;
			n.r.size = e->size;
			n.r.mtime_ns = e->mtime * 1000000000LL;
			n.r.ctime_ns = now_ns;
			snprintf(n.r.rev, sizeof(n.r.rev), "%s", e->rev);
			if (e->has_hash) {
				n.r.flags |= NODE_HAS_HASH;
				memcpy(n.r.remote_hash, e->hash, CHASH_LEN);
			}
			ix_put(&t, &n);
			ix_rsize_put(&t, n.ino, e->size);
			continue;
		}
		/*
		 * The remote holds another file under this name now: give it
		 * a new inode, so the kernel (which trusts its own size and
		 * pages with the writeback cache) sees a new file, as after
		 * a rename over it. The old inode goes when unused.
		 */
		if (drop_node(fs, &t, dir, &n, &m) < 0)
			break;
		m.claimed[i] = add_remote_node(&t, dir, e, now_ns, link);
	}
	/* Clean files the remote no longer has. */
	if (!t.err)
		ix_foreach_child(&t, dir, collect_absent, &m);
	for (size_t i = 0; i < m.ndoomed && !t.err; i++) {
		struct node n;
		char path[4096];
		if (ix_get(&t, m.doomed[i], &n))
			break;
		if (S_ISDIR(n.r.mode) || !(n.r.flags & NODE_ON_REMOTE) ||
		    (n.r.flags & (NODE_DIRTY | NODE_UPLOADING)) ||
		    n.r.xlinks > 0)
			continue; /* hard links: docs/posix.md */
		int pl = snprintf(
			path, sizeof(path), "%s/%s%s", dirpath, n.name,
			(n.r.flags & NODE_RCLONELINK) ? HFS_LINK_SUFFIX : "");
		if (pl < 0 || (size_t)pl >= sizeof(path) ||
		    fold_path(path, folded, fcap) < 0)
			continue;
		if (pending_hit(pend, folded) || fs_inode_busy(fs, n.ino))
			continue;
		if (drop_node(fs, &t, dir, &n, &m) < 0)
			break;
	}
	struct node d;
	d.r.nsubdirs = subdirs0;
	if (!t.err && ix_get(&t, dir, &d) == 0) {
		d.r.flags |= NODE_LISTED | NODE_ON_REMOTE;
		d.r.listed_at = hfs_now_ns();
		ix_put(&t, &d);
	}
	bool recount = !t.err && d.r.nsubdirs != subdirs0;
	rc = ix_commit(&t);
	if (rc == 0 && m.late)
		fs_tell_journal(fs);
	if (rc == 0 && recount)
		fs_tell_inval_inode(fs, dir, -1, 0); /* its link count */
	for (size_t i = 0; i < m.nfreed; i++)
		if (rc == 0 && m.freed[i].known)
			fs_mark_unlinked(fs, m.freed[i].ino);
out:
	for (size_t i = 0; i < m.n; i++)
		free(m.names[i].folded);
	free(m.names);
	free(m.exact);
	free(m.claimed);
	free(folded);
	free(m.doomed);
	free(m.freed);
	return rc;
}

static void mark_listed(struct hfs *fs, uint64_t dir)
{
	struct ixtxn t;
	struct node d;
	if (ix_begin(fs->ix, true, &t))
		return;
	if (ix_get(&t, dir, &d) == 0) {
		d.r.flags |= NODE_LISTED;
		d.r.listed_at = hfs_now_ns();
		ix_put(&t, &d);
	}
	ix_commit(&t);
}

/*
 * Makes sure the children of directory @dir are in the index: lists it
 * remotely if it was never listed, or if @refresh and the listing is older
 * than dir_cache_seconds. If the remote is unreachable, the index is
 * served as it is (and the listing tried again later).
 */
/*
 * True if directory @d's listing can be used as it is. listed_at (ns)
 * before this mount, or 0 (invalidated: a remote change was seen, or a
 * conflict), means list again on any access; otherwise, with @refresh, a
 * listing older than dir_cache_seconds is listed again.
 */
static bool listing_fresh(struct hfs *fs, const struct node *d, bool refresh)
{
	if (!(d->r.flags & NODE_LISTED))
		return false;
	if (d->r.listed_at < fs->mounted_at)
		return false;
	/* A folder made here is listed again too: others (another
	 * machine, a process in the local backend's directory) may have
	 * put files in it since. */
	return !refresh || hfs_now_ns() - d->r.listed_at <
				   fs->cfg->dir_cache_seconds * 1000000000LL;
}

int fs_ensure_listed(struct hfs *fs, uint64_t dir, bool refresh)
{
	struct node d;
	int rc = fs_get_node(fs, dir, &d);
	if (rc)
		return rc;
	if (!S_ISDIR(d.r.mode))
		return -ENOTDIR;
	if (listing_fresh(fs, &d, refresh) ||
	    atomic_load(&fs->offline_until) > hfs_now())
		return 0;

	pthread_mutex_lock(&fs->list_lock);
	/* Someone may have listed it, or found the remote unreachable,
	 * while we waited. */
	if (fs_get_node(fs, dir, &d) != 0 || listing_fresh(fs, &d, refresh) ||
	    atomic_load(&fs->offline_until) > hfs_now()) {
		pthread_mutex_unlock(&fs->list_lock);
		return 0;
	}
	char path[4096];
	struct ixtxn t;
	struct pending pend = {0};
	struct listing l = {0};
	for (int tries = 0;; tries++) {
		/* A listing is merged only if nothing of ours changed the
		 * namespace or the remote while it was fetched. */
		uint64_t gen = atomic_load(&fs->ns_gen);
		rc = ix_begin(fs->ix, false, &t);
		if (!rc) {
			rc = ix_path(&t, dir, path, sizeof(path));
			if (!rc)
				rc = ix_foreach_journal(&t, pending_collect,
							&pend);
			ix_abort(&t);
		}
		if (rc == -ENAMETOOLONG) {
			/* Deeper than the remote takes: nothing of it can be
			 * there. */
			mark_listed(fs, dir);
			rc = 0;
			goto out;
		}
		if (rc)
			goto out;
		/* Someone waits on this listing (a lookup, an ls): few
		 * retries; if the remote is unreachable the index answers. */
		backend_set_thread_quick(true);
		l.n = 0;
		rc = listing_fetch(fs, path, &l);
		if (rc == -ESTALE) {
			/* The cursor expired between pages: start over. */
			l.n = 0;
			rc = listing_fetch(fs, path, &l);
		}
		backend_set_thread_quick(false);
		if (rc == 0)
			rc = merge_listing(fs, dir, path, &l, &pend, gen);
		if (rc != -ECANCELED) /* not merged: the listing is stale */
			break;
		pending_release(&pend);
		if (tries == 2) {
			/* Busy: the index answers; listed again next time. */
			hlog_debug("listing of \"%s\" not merged: the "
				   "namespace kept changing",
				   path[0] ? path : "/");
			rc = 0;
			goto out;
		}
	}
	if (rc == 0) {
		/* merged */
		metrics_remote_result(0);
	} else if (rc == -ENOENT || rc == -ENOTDIR) {
		/* Not on the remote (yet): what we have is all there is. */
		mark_listed(fs, dir);
		rc = 0;
	} else {
		hlog_warn("listing of \"%s\" failed: %s (%s); serving the "
			  "cached listing",
			  path[0] ? path : "/", strerror(-rc),
			  backend_last_error());
		atomic_store(&fs->offline_until, hfs_now() + OFFLINE_BACKOFF);
		metrics_remote_result(rc);
		rc = 0;
	}
out:
	free(l.e);
	pending_release(&pend);
	pthread_mutex_unlock(&fs->list_lock);
	return rc;
}

/* ---- Listings in the background ----
 *
 * An operation of a user never waits for the network on a folder listed
 * before: the index answers, and a listing that is stale (from before this
 * mount, invalidated by a change seen elsewhere, or, where the caller asks
 * for fresh, older than dir_cache_seconds) is queued for the listing
 * thread (refresh.c), which lists and merges it as fs_ensure_listed()
 * does. A folder never listed waits for its first listing, at most
 * remote_wait_seconds (then the index answers: what this mount made
 * there). A name not found in a stale folder, and a folder whose listing
 * is known to be out of date (listed before this mount, or invalidated)
 * wait for the refresh at most MISS_WAIT_MS, so what another machine just
 * added is seen at once when the remote answers quickly; one merely older
 * than dir_cache_seconds does not wait. Failures back off through
 * offline_until. Without a listing thread (before it starts, after it stops)
 * the caller lists itself, as fs_ensure_listed() does.
 *
 * Locking: listings.mu guards the queue; it is never held across a
 * listing.
 */
#define MISS_WAIT_MS 500

static bool listing_pending(const struct hfs_listings *ls, uint64_t dir)
{
	if (ls->busy == dir)
		return true;
	for (int i = 0; i < ls->n; i++)
		if (ls->q[i] == dir)
			return true;
	return false;
}

int fs_visit_dir(struct hfs *fs, uint64_t dir, enum fs_visit how)
{
	struct node d;
	int rc = fs_get_node(fs, dir, &d);
	if (rc)
		return rc;
	if (!S_ISDIR(d.r.mode))
		return -ENOTDIR;
	if (listing_fresh(fs, &d, how != FS_VISIT_USE) ||
	    atomic_load(&fs->offline_until) > hfs_now())
		return 0;
	bool listed = d.r.flags & NODE_LISTED;
	struct hfs_listings *ls = &fs->listings;
	pthread_mutex_lock(&ls->mu);
	if (!ls->running) {
		pthread_mutex_unlock(&ls->mu);
		return fs_ensure_listed(fs, dir, how != FS_VISIT_USE);
	}
	if (!listing_pending(ls, dir)) {
		if (ls->n == HFS_LISTINGS_MAX) {
			/* Full: the index answers; asked again next time. */
			pthread_mutex_unlock(&ls->mu);
			return 0;
		}
		ls->q[ls->n++] = dir;
		pthread_cond_broadcast(&ls->cv);
	}
	/* Known to be out of date (from before this mount, or a change
	 * seen elsewhere): the refresh is worth a moment's wait too. */
	bool outdated = d.r.listed_at < fs->mounted_at;
	if (!listed || outdated || how == FS_VISIT_MISS) {
		int64_t ms = listed ? MISS_WAIT_MS
				    : fs->cfg->remote_wait_seconds * 1000;
		struct timespec until;
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += ms / 1000;
		until.tv_nsec += (ms % 1000) * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		while (ls->running && listing_pending(ls, dir))
			if (pthread_cond_timedwait(&ls->cv, &ls->mu, &until) ==
			    ETIMEDOUT)
				break;
	}
	pthread_mutex_unlock(&ls->mu);
	return 0;
}

bool fs_listing_next(struct hfs *fs, uint64_t *dir)
{
	struct hfs_listings *ls = &fs->listings;
	pthread_mutex_lock(&ls->mu);
	ls->busy = 0;
	pthread_cond_broadcast(&ls->cv);
	while (ls->n == 0 && ls->running)
		pthread_cond_wait(&ls->cv, &ls->mu);
	bool got = ls->running;
	if (got) {
		*dir = ls->q[0];
		memmove(ls->q, ls->q + 1,
			(size_t)(ls->n - 1) * sizeof(ls->q[0]));
		ls->n--;
		ls->busy = *dir;
	}
	pthread_mutex_unlock(&ls->mu);
	return got;
}

void fs_listings_run(struct hfs *fs, bool running)
{
	struct hfs_listings *ls = &fs->listings;
	pthread_mutex_lock(&ls->mu);
	ls->running = running;
	if (!running)
		ls->n = 0;
	pthread_cond_broadcast(&ls->cv);
	pthread_mutex_unlock(&ls->mu);
}

void hfs_ns_changed(struct hfs *fs)
{
	atomic_fetch_add(&fs->ns_gen, 1);
}

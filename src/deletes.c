/*
 * Replaying deletes: a run of consecutive unlink and rmdir entries at the
 * head of the journal, in as few remote requests as it takes, deleting
 * nothing this mount did not see.
 *
 * Why. Several machines share one Dropbox. Dropbox deletes a folder with
 * everything in it, also what another machine put there after our last
 * listing; and a file deleted here may have been changed there since we
 * last saw it. So, as dropbox-api.md 5.7 ("Deleting a folder safely")
 * says:
 *
 *   1. The run is read from the journal (at most RUN_MAX entries) and
 *      sorted by folded path. A folder the run deletes that lies in no
 *      other folder the run deletes is a "top"; every other entry lies in
 *      a top, or stands alone (a file whose folder stays).
 *   2. Each top is listed recursively right before it is deleted, so the
 *      window in which another machine's write can still be lost is one
 *      listing and one request long. An entry of that listing is "known"
 *      if the run deletes it: a folder by an rmdir entry; a file by an
 *      unlink entry at its path that recorded the remote's revision (or
 *      its content hash, or whose bytes a tombstone says are a late
 *      upload of ours). An unlink entry written before revisions were
 *      recorded knows whatever is there, as before.
 *   3. A top whose listing is all known goes with one remove() (one
 *      delete_v2), which satisfies every entry of the run inside it.
 *      Otherwise its known entries go with one remove_batch: files at the
 *      revision the listing showed, folders whose subtree is all known
 *      whole. Unknown entries, and the folders that hold them, stay.
 *   4. Standalone files go with one remove_batch, each at the revision we
 *      knew. A mismatch means another machine changed the file: it stays,
 *      unless its bytes are ours after all (an upload whose answer was
 *      lost), in which case it goes at its current revision.
 *   5. What stayed is logged and shown by status, and the listings that
 *      must show it again are invalidated, in the txn that takes the
 *      run's entries out of the journal.
 *
 * A transient failure (network, rate limits after the backend's own
 * retries) leaves the whole run in the journal to be replayed later;
 * doing it again is harmless, since what went already is "not found",
 * which is fine.
 *
 * Paths are compared folded (fold.h) and ordered with '/' before every
 * other byte, so that a folder's subtree directly follows it in a sorted
 * array.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs_i.h"
#include "hfs/fold.h"
#include "hfs/log.h"
#include "hfs/watcher.h"

/* Journal entries replayed together at most. */
#define RUN_MAX 100000
/* Entries of one proof listing at most; beyond, the rest counts as
 * unknown (and the top stays). */
#define TREE_MAX 1000000

/* One journal entry of the run. */
struct del {
	uint64_t seq;
	int op; /* JOP_UNLINK or JOP_RMDIR */
	bool known, has_hash;
	bool dup; /* a later entry of the run has the same path */
	bool covered; /* lies in a folder the run deletes */
	char rev[BACKEND_REV_MAX + 1];
	uint8_t hash[CHASH_LEN];
	char *path, *folded; /* owned */
};

/* One entry of a proof listing. */
struct rent {
	char *path; /* owned: as the remote names it */
	char *folded; /* owned */
	char *shown; /* owned: for messages (the name in its own case) */
	bool is_dir, known, has_hash;
	char rev[BACKEND_REV_MAX + 1];
	uint8_t hash[CHASH_LEN];
};

struct tree {
	struct rent *e;
	size_t n, cap;
	size_t skipped; /* entries the remote holds that were not given */
};

/* Paths, owned, in a growable array. */
struct strs {
	char **s;
	size_t n, cap;
};

struct run {
	struct hfs *fs;
	struct del *d;
	size_t n, cap;
	struct del **ord; /* d sorted by folded path, then seq */
	struct strs inval; /* paths whose listings must be read again */
	struct kept_note {
		char *path;
		struct strs names;
		size_t total;
	} * notes;
	size_t nnotes;
	size_t folders, batches, requests, kept;
};

/* strcmp with '/' ordered before every other byte. */
static int path_cmp(const char *a, const char *b)
{
	for (;; a++, b++) {
		unsigned char x = (unsigned char)*a, y = (unsigned char)*b;
		if (x != y) {
			if (x == '/')
				return y ? -1 : 1;
			if (y == '/')
				return x ? 1 : -1;
			return x < y ? -1 : 1;
		}
		if (!x)
			return 0;
	}
}

/* True if @path lies below folder @dir (both folded). */
static bool below(const char *path, const char *dir)
{
	size_t l = strlen(dir);
	return strncmp(path, dir, l) == 0 && path[l] == '/';
}

static char *folded_dup(const char *path)
{
	char *f = NULL;
	return fold_path_dup(path, &f) == 0 ? f : NULL;
}

static int strs_add(struct strs *v, const char *s)
{
	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 8;
		char **ns = realloc(v->s, cap * sizeof(*ns));
		if (!ns)
			return -ENOMEM;
		v->s = ns;
		v->cap = cap;
	}
	v->s[v->n] = strdup(s);
	if (!v->s[v->n])
		return -ENOMEM;
	v->n++;
	return 0;
}

static void strs_release(struct strs *v)
{
	for (size_t i = 0; i < v->n; i++)
		free(v->s[i]);
	free(v->s);
	memset(v, 0, sizeof(*v));
}

static void tree_release(struct tree *t)
{
	for (size_t i = 0; i < t->n; i++) {
		free(t->e[i].path);
		free(t->e[i].folded);
		free(t->e[i].shown);
	}
	free(t->e);
	memset(t, 0, sizeof(*t));
}

static void run_release(struct run *r)
{
	for (size_t i = 0; i < r->n; i++) {
		free(r->d[i].path);
		free(r->d[i].folded);
	}
	free(r->d);
	free(r->ord);
	strs_release(&r->inval);
	for (size_t i = 0; i < r->nnotes; i++) {
		free(r->notes[i].path);
		strs_release(&r->notes[i].names);
	}
	free(r->notes);
}

/* ---- reading the run ---- */

static int gather(void *arg, const struct journal_entry *e)
{
	struct run *r = arg;
	if ((e->op != JOP_UNLINK && e->op != JOP_RMDIR) || r->n >= RUN_MAX)
		return 1; /* the run ends here */
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 64;
		struct del *nd = realloc(r->d, cap * sizeof(*nd));
		if (!nd)
			return -ENOMEM;
		r->d = nd;
		r->cap = cap;
	}
	struct del *d = &r->d[r->n];
	memset(d, 0, sizeof(*d));
	d->seq = e->seq;
	d->op = e->op;
	d->known = e->known;
	d->has_hash = e->has_hash;
	memcpy(d->rev, e->rev, sizeof(d->rev));
	memcpy(d->hash, e->hash, CHASH_LEN);
	d->path = strdup(e->path);
	d->folded = d->path ? folded_dup(e->path) : NULL;
	if (!d->folded) {
		free(d->path);
		return -ENOMEM;
	}
	r->n++;
	return 0;
}

static int cmp_del(const void *a, const void *b)
{
	const struct del *x = *(struct del *const *)a;
	const struct del *y = *(struct del *const *)b;
	int c = path_cmp(x->folded, y->folded);
	if (c)
		return c;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The entry of the run at folded path @f (the latest, if several). */
static struct del *run_find(const struct run *r, const char *f)
{
	size_t lo = 0, hi = r->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (path_cmp(r->ord[mid]->folded, f) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	struct del *found = NULL;
	for (; lo < r->n && strcmp(r->ord[lo]->folded, f) == 0; lo++)
		found = r->ord[lo];
	return found;
}

/* Sorts the run, marks duplicates and the entries inside deleted
 * folders. */
static int run_index(struct run *r)
{
	r->ord = malloc((r->n ? r->n : 1) * sizeof(*r->ord));
	if (!r->ord)
		return -ENOMEM;
	for (size_t i = 0; i < r->n; i++)
		r->ord[i] = &r->d[i];
	qsort(r->ord, r->n, sizeof(*r->ord), cmp_del);
	for (size_t i = 0; i + 1 < r->n; i++)
		if (strcmp(r->ord[i]->folded, r->ord[i + 1]->folded) == 0)
			r->ord[i]->dup = true;
	char f[4096];
	for (size_t i = 0; i < r->n; i++) {
		struct del *d = &r->d[i];
		snprintf(f, sizeof(f), "%s", d->folded);
		for (char *s = strchr(f + 1, '/'); s && !d->covered;
		     s = strchr(s + 1, '/')) {
			*s = '\0';
			struct del *a = run_find(r, f);
			*s = '/';
			d->covered = a && a->op == JOP_RMDIR;
		}
	}
	return 0;
}

/* ---- what is known ---- */

/* True if a tombstone at folded @f says bytes @hash are a late upload of
 * ours. */
static bool ours(struct ixtxn *t, const char *f, const uint8_t hash[CHASH_LEN])
{
	uint8_t h[IX_TOMB_MAX][CHASH_LEN];
	int64_t expires = 0;
	int n = ix_tomb_get(t, f, &expires, h);
	if (n <= 0 || expires < hfs_now())
		return false;
	for (int i = 0; i < n; i++)
		if (memcmp(h[i], hash, CHASH_LEN) == 0)
			return true;
	return false;
}

/* True if unlink entry @d knows the remote file (@rev, @hash). */
static bool file_known(struct ixtxn *t, const struct del *d, const char *f,
		       const char *rev, bool has_hash,
		       const uint8_t hash[CHASH_LEN])
{
	if (!d || d->op != JOP_UNLINK)
		return false;
	if (!d->known)
		return true; /* written before revisions were recorded */
	if (d->rev[0] && strcmp(d->rev, rev) == 0)
		return true;
	if (!has_hash)
		return false;
	if (d->has_hash && memcmp(d->hash, hash, CHASH_LEN) == 0)
		return true;
	return t && ours(t, f, hash);
}

/* ---- the proof listing ---- */

static int tree_add(struct tree *tr, const char *path,
		    const struct backend_entry *e)
{
	const char *slash = strrchr(path, '/');
	int dirlen = slash ? (int)(slash - path) : 0;
	if (tr->n >= TREE_MAX) {
		tr->skipped++;
		return 0;
	}
	if (tr->n == tr->cap) {
		size_t cap = tr->cap ? tr->cap * 2 : 64;
		struct rent *ne = realloc(tr->e, cap * sizeof(*ne));
		if (!ne)
			return -ENOMEM;
		tr->e = ne;
		tr->cap = cap;
	}
	struct rent *r = &tr->e[tr->n];
	memset(r, 0, sizeof(*r));
	r->path = strdup(path);
	r->folded = r->path ? folded_dup(path) : NULL;
	if (r->folded &&
	    asprintf(&r->shown, "%.*s/%s", dirlen, path, e->name) < 0)
		r->shown = NULL;
	if (!r->shown) {
		free(r->path);
		free(r->folded);
		return -ENOMEM;
	}
	r->is_dir = e->is_dir;
	r->has_hash = e->has_hash;
	memcpy(r->hash, e->hash, CHASH_LEN);
	snprintf(r->rev, sizeof(r->rev), "%s", e->rev);
	tr->n++;
	return 0;
}

/* Every page of one listing (list_tree, or list of one folder). */
static int list_pages(struct run *r, const char *dir, bool recursive,
		      struct tree *tr, struct strs *subdirs)
{
	struct backend *be = r->fs->be;
	char *cursor = NULL;
	int rc = 0;
	for (;;) {
		struct backend_page page = {0};
		r->requests++;
		rc = recursive ? be->ops->list_tree(be, dir, cursor, &page)
			       : be->ops->list(be, dir, cursor, &page);
		free(cursor);
		cursor = NULL;
		if (rc)
			break;
		tr->skipped += page.skipped;
		for (size_t i = 0; i < page.n && !rc; i++) {
			const struct backend_entry *e = &page.entries[i];
			char path[4096];
			if (recursive) {
				if (e->deleted || !e->path)
					continue;
				snprintf(path, sizeof(path), "%s", e->path);
			} else if (snprintf(path, sizeof(path), "%s/%s", dir,
					    e->name) >= (int)sizeof(path)) {
				tr->skipped++;
				continue;
			}
			rc = tree_add(tr, path, e);
			if (!rc && !recursive && e->is_dir)
				rc = strs_add(subdirs, path);
		}
		bool more = page.has_more;
		cursor = page.cursor;
		page.cursor = NULL;
		backend_page_release(&page);
		if (rc || !more)
			break;
		if (!cursor) {
			rc = -EIO;
			break;
		}
	}
	free(cursor);
	return rc;
}

static int cmp_rent(const void *a, const void *b)
{
	return path_cmp(((const struct rent *)a)->folded,
			((const struct rent *)b)->folded);
}

/*
 * Lists everything below folder @top into @tr, sorted: one recursive
 * listing if the backend has it, else folder by folder. -ENOENT if @top
 * is gone, -ENOTDIR if it is a file.
 */
static int list_below(struct run *r, const char *top, struct tree *tr)
{
	int rc;
	if (r->fs->be->ops->list_tree) {
		rc = list_pages(r, top, true, tr, NULL);
	} else {
		struct strs dirs = {0};
		rc = strs_add(&dirs, top);
		for (size_t i = 0; !rc && i < dirs.n; i++) {
			rc = list_pages(r, dirs.s[i], false, tr, &dirs);
			if (rc == -ENOENT && i > 0)
				rc = 0; /* went meanwhile: nothing below */
		}
		strs_release(&dirs);
	}
	if (!rc && tr->n)
		qsort(tr->e, tr->n, sizeof(*tr->e), cmp_rent);
	return rc;
}

/* ---- results ---- */

/* Failures that pass by themselves: the run is tried again later. */
static bool transient(int rc)
{
	return rc == -EAGAIN || rc == -EACCES || rc == -ENOSPC || rc == -EIO ||
	       rc == -EINTR || rc == -ENOMEM;
}

/* Records that deleting @path kept @names (@total in all). */
static int note(struct run *r, const char *path, const struct strs *names,
		size_t total)
{
	struct kept_note *nn = realloc(r->notes, (r->nnotes + 1) * sizeof(*nn));
	if (!nn)
		return -ENOMEM;
	r->notes = nn;
	struct kept_note *k = &r->notes[r->nnotes];
	memset(k, 0, sizeof(*k));
	k->path = strdup(path);
	if (!k->path)
		return -ENOMEM;
	r->nnotes++;
	k->total = total;
	for (size_t i = 0; i < names->n && i < HFS_KEPT_NAMES; i++)
		if (strs_add(&k->names, names->s[i]) < 0)
			break;
	r->kept += total;
	return 0;
}

/* Deletes @n entries with one remove_batch; results in @rcs. */
static int batch(struct run *r, const struct backend_delete *dels, size_t n,
		 int *rcs)
{
	if (n == 0)
		return 0;
	r->batches++;
	r->requests += (n + BACKEND_DELETE_BATCH - 1) / BACKEND_DELETE_BATCH;
	return r->fs->be->ops->remove_batch(r->fs->be, dels, n, rcs);
}

static void refused(const char *path, int rc)
{
	hlog_warn("remote refused delete of \"%s\": %s (%s); dropped", path,
		  strerror(-rc), backend_last_error());
}

/* ---- tops ---- */

/* True if one of @v (sorted folded paths) lies below folder @dir. */
static bool unknown_below(const struct strs *v, const char *dir)
{
	size_t lo = 0, hi = v->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (path_cmp(v->s[mid], dir) <= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < v->n && below(v->s[lo], dir);
}

/* Marks what @r's run knows of @tr; fills @unknown (folded, sorted) and
 * @shown (the topmost unknown entries, as the remote names them). */
static int classify(struct run *r, struct tree *tr, struct strs *unknown,
		    struct strs *shown)
{
	struct ixtxn t;
	bool txn = ix_begin(r->fs->ix, false, &t) == 0;
	const char *last = NULL;
	int rc = 0;
	for (size_t i = 0; i < tr->n && !rc; i++) {
		struct rent *e = &tr->e[i];
		struct del *d = run_find(r, e->folded);
		if (e->is_dir)
			e->known = d && d->op == JOP_RMDIR;
		else
			e->known = file_known(txn ? &t : NULL, d, e->folded,
					      e->rev, e->has_hash, e->hash);
		if (e->known)
			continue;
		rc = strs_add(unknown, e->folded);
		if (!rc && !(last && below(e->folded, last))) {
			rc = strs_add(shown, e->shown);
			last = e->folded;
		}
	}
	if (txn)
		ix_abort(&t);
	return rc;
}

/* Proves and deletes top folder @top (see the top of the file). */
static int replay_top(struct run *r, const struct del *top)
{
	struct tree tr = {0};
	struct strs unknown = {0}, shown = {0};
	struct backend_delete *dels = NULL;
	const char *whole = NULL;
	size_t *of = NULL, nd = 0, kept;
	int *rcs = NULL, rc;

	rc = list_below(r, top->path, &tr);
	if (rc == -ENOENT) {
		rc = 0; /* gone already: nothing to do */
		goto out;
	}
	if (rc == -ENOTDIR) {
		/* Another machine put a file there. */
		rc = strs_add(&shown, top->path);
		if (!rc)
			rc = note(r, top->path, &shown, 1);
		if (!rc)
			rc = strs_add(&r->inval, top->path);
		goto out;
	}
	if (rc) {
		if (!transient(rc)) {
			refused(top->path, rc);
			rc = 0;
		}
		goto out;
	}
	rc = classify(r, &tr, &unknown, &shown);
	if (rc)
		goto out;
	if (unknown.n == 0 && tr.skipped == 0) {
		/* All known: one folder delete does it all. */
		r->folders++;
		r->requests++;
		rc = r->fs->be->ops->remove(r->fs->be, top->path);
		if (rc == -ENOENT)
			rc = 0;
		if (rc && !transient(rc)) {
			refused(top->path, rc);
			rc = 0;
		}
		goto out;
	}
	/* Only what is known: files at the listed revision, folders whose
	 * subtree is all known whole. */
	kept = shown.n + tr.skipped;
	dels = calloc(tr.n ? tr.n : 1, sizeof(*dels));
	rcs = calloc(tr.n ? tr.n : 1, sizeof(*rcs));
	of = calloc(tr.n ? tr.n : 1, sizeof(*of));
	if (!dels || !rcs || !of) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < tr.n; i++) {
		const struct rent *e = &tr.e[i];
		if (whole && below(e->folded, whole))
			continue;
		whole = NULL;
		if (!e->known)
			continue;
		if (e->is_dir) {
			if (tr.skipped || unknown_below(&unknown, e->folded))
				continue; /* holds something unknown */
			whole = e->folded;
		}
		dels[nd].path = e->path;
		dels[nd].parent_rev = !e->is_dir && e->rev[0] ? e->rev : NULL;
		of[nd++] = i;
	}
	rc = batch(r, dels, nd, rcs);
	for (size_t i = 0; !rc && i < nd; i++) {
		int x = rcs[i];
		if (x == 0 || x == -ENOENT)
			continue;
		if (x == -EEXIST || x == -EISDIR || x == -ENOTDIR) {
			/* Changed between the listing and the delete. */
			rc = strs_add(&shown, tr.e[of[i]].shown);
			kept++;
		} else if (transient(x)) {
			rc = x;
		} else {
			refused(tr.e[of[i]].path, x);
		}
	}
	if (!rc)
		rc = note(r, top->path, &shown, kept);
	if (!rc)
		rc = strs_add(&r->inval, top->path);
out:
	free(dels);
	free(rcs);
	free(of);
	strs_release(&unknown);
	strs_release(&shown);
	tree_release(&tr);
	return rc;
}

/* ---- standalone files ---- */

/* The parent folder of @path, in @buf. */
static const char *parent_of(const char *path, char *buf, size_t len)
{
	snprintf(buf, len, "%s", path);
	char *s = strrchr(buf, '/');
	if (s)
		*s = '\0';
	return buf;
}

/*
 * A file another machine seems to have changed (its revision is not the
 * one we knew): if its bytes are ours (the hash we knew, or a late upload
 * a tombstone knows), its current revision goes into @retry (which owns
 * it); otherwise it stays. Returns 1 if kept, 0 or -errno.
 */
static int look_again(struct run *r, const struct del *d,
		      struct backend_delete *retry, char *revbuf)
{
	struct backend_entry cur;
	r->requests++;
	int rc = r->fs->be->ops->stat(r->fs->be, d->path, &cur);
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return transient(rc) ? rc : 1;
	if (cur.is_dir)
		return 1;
	struct ixtxn t;
	bool txn = ix_begin(r->fs->ix, false, &t) == 0;
	struct del mine = *d;
	mine.rev[0] = '\0'; /* not by revision: it is not ours */
	bool known = file_known(txn ? &t : NULL, &mine, d->folded, cur.rev,
				cur.has_hash, cur.hash);
	if (txn)
		ix_abort(&t);
	if (!known || !cur.rev[0])
		return 1;
	snprintf(revbuf, BACKEND_REV_MAX + 1, "%s", cur.rev);
	retry->path = d->path;
	retry->parent_rev = revbuf;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return path_cmp(*(char *const *)a, *(char *const *)b);
}

/* Notes the files of @kept (sorted here), one note per folder. */
static int note_files(struct run *r, struct strs *kept)
{
	char pa[4096], pb[4096];
	int rc = 0;
	if (kept->n)
		qsort(kept->s, kept->n, sizeof(*kept->s), cmp_str);
	for (size_t i = 0; i < kept->n && !rc;) {
		struct strs group = {0};
		size_t j = i;
		parent_of(kept->s[i], pa, sizeof(pa));
		for (; j < kept->n && !rc &&
		       strcmp(parent_of(kept->s[j], pb, sizeof(pb)), pa) == 0;
		     j++)
			rc = strs_add(&group, kept->s[j]);
		if (!rc)
			rc = note(r, pa[0] ? pa : "/", &group, group.n);
		for (size_t k = i; k < j && !rc; k++)
			rc = strs_add(&r->inval, kept->s[k]);
		strs_release(&group);
		i = j;
	}
	return rc;
}

static int replay_files(struct run *r)
{
	size_t n = 0;
	for (size_t i = 0; i < r->n; i++)
		if (r->d[i].op == JOP_UNLINK && !r->d[i].covered &&
		    !r->d[i].dup)
			n++;
	if (n == 0)
		return 0;
	struct del **who = calloc(n, sizeof(*who));
	struct backend_delete *dels = calloc(n, sizeof(*dels));
	struct backend_delete *again = calloc(n, sizeof(*again));
	char(*revs)[BACKEND_REV_MAX + 1] = calloc(n, sizeof(*revs));
	int *rcs = calloc(n, sizeof(*rcs));
	struct del **awho = calloc(n, sizeof(*awho));
	struct strs kept = {0};
	size_t nd = 0, na = 0;
	int rc = 0;
	if (!who || !dels || !again || !revs || !rcs || !awho) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < r->n; i++) {
		struct del *d = &r->d[i];
		if (d->op != JOP_UNLINK || d->covered || d->dup)
			continue;
		if (d->known && !d->rev[0]) {
			/* No revision known (an upload whose answer was
			 * lost): look at what is there first. */
			int k = look_again(r, d, &again[na], revs[na]);
			if (k < 0) {
				rc = k;
				goto out;
			}
			if (k == 1)
				rc = strs_add(&kept, d->path);
			else if (again[na].path)
				awho[na++] = d;
			if (rc)
				goto out;
			continue;
		}
		dels[nd].path = d->path;
		dels[nd].parent_rev = d->known ? d->rev : NULL;
		who[nd++] = d;
	}
	rc = batch(r, dels, nd, rcs);
	for (size_t i = 0; !rc && i < nd; i++) {
		int x = rcs[i];
		if (x == 0 || x == -ENOENT)
			continue;
		if (x == -EEXIST) {
			int k = look_again(r, who[i], &again[na], revs[na]);
			if (k < 0)
				rc = k;
			else if (k == 1)
				rc = strs_add(&kept, who[i]->path);
			else if (again[na].path)
				awho[na++] = who[i];
		} else if (x == -EISDIR || x == -ENOTDIR) {
			rc = strs_add(&kept, who[i]->path); /* a folder now */
		} else if (transient(x)) {
			rc = x;
		} else {
			refused(who[i]->path, x);
		}
	}
	if (!rc)
		rc = batch(r, again, na, rcs);
	for (size_t i = 0; !rc && i < na; i++) {
		int x = rcs[i];
		if (x == 0 || x == -ENOENT)
			continue;
		if (x == -EEXIST || x == -EISDIR || x == -ENOTDIR)
			rc = strs_add(&kept, awho[i]->path);
		else if (transient(x))
			rc = x;
		else
			refused(awho[i]->path, x);
	}
	if (!rc)
		rc = note_files(r, &kept);
out:
	strs_release(&kept);
	free(who);
	free(dels);
	free(again);
	free(revs);
	free(rcs);
	free(awho);
	return rc;
}

/* ---- the whole run ---- */

/* Takes the run out of the journal and invalidates what must show
 * again, in one txn. */
static int finish(struct run *r)
{
	struct ixtxn t;
	int rc = ix_begin(r->fs->ix, true, &t);
	if (rc)
		return rc;
	for (size_t i = 0; i < r->n; i++)
		ix_journal_del(&t, r->d[i].seq);
	for (size_t i = 0; i < r->inval.n; i++)
		watcher_invalidate(&t, r->inval.s[i]);
	hfs_ns_changed(r->fs);
	return ix_commit(&t);
}

/* Logs and records the notes. */
static void report(struct run *r)
{
	for (size_t i = 0; i < r->nnotes; i++) {
		const struct kept_note *k = &r->notes[i];
		char list[1024];
		size_t used = 0;
		list[0] = '\0';
		for (size_t j = 0; j < k->names.n && used < sizeof(list); j++)
			used += (size_t)snprintf(
				list + used, sizeof(list) - used, "%s\"%s\"",
				j ? ", " : "", k->names.s[j]);
		if (k->total > k->names.n && used < sizeof(list))
			snprintf(list + used, sizeof(list) - used,
				 " and %zu more", k->total - k->names.n);
		hlog_warn("delete of \"%s\": kept %zu remote entr%s that this "
			  "mount had not seen, or that changed on the remote "
			  "since it did: %s",
			  k->path, k->total, k->total == 1 ? "y" : "ies", list);
		hfs_note_kept(r->fs, k->path, k->names.s, k->names.n, k->total);
	}
}

int hfs_replay_deletes(struct hfs *fs)
{
	struct run r = {.fs = fs};
	struct ixtxn t;
	int64_t t0 = hfs_now_ns();
	int rc = ix_begin(fs->ix, false, &t);
	if (rc)
		return rc;
	rc = ix_foreach_journal(&t, gather, &r);
	ix_abort(&t);
	if (rc > 0)
		rc = 0;
	if (!rc && r.n == 0)
		goto out;
	if (!rc)
		rc = run_index(&r);
	for (size_t i = 0; !rc && i < r.n; i++) {
		struct del *d = r.ord[i];
		if (d->op == JOP_RMDIR && !d->covered && !d->dup)
			rc = replay_top(&r, d);
	}
	if (!rc)
		rc = replay_files(&r);
	if (!rc)
		rc = finish(&r);
	if (rc)
		goto out;
	report(&r);
	hlog_info("deletes_replayed entries=%zu folder_deletes=%zu "
		  "batches=%zu requests=%zu kept=%zu ms=%lld",
		  r.n, r.folders, r.batches, r.requests, r.kept,
		  (long long)((hfs_now_ns() - t0) / 1000000));
out:
	run_release(&r);
	return rc;
}

void hfs_note_kept(struct hfs *fs, const char *path, char *const *names,
		   size_t n, size_t total)
{
	struct hfs_kept k = {.when = hfs_now(), .total = total};
	k.path = strdup(path);
	for (size_t i = 0; k.path && i < n && i < HFS_KEPT_NAMES; i++) {
		k.names[k.nnames] = strdup(names[i]);
		if (k.names[k.nnames])
			k.nnames++;
	}
	if (!k.path)
		return;
	pthread_mutex_lock(&fs->kept_lock);
	if (fs->nkept == HFS_KEPT_MAX) {
		free(fs->kept[0].path);
		for (size_t i = 0; i < fs->kept[0].nnames; i++)
			free(fs->kept[0].names[i]);
		memmove(fs->kept, fs->kept + 1,
			(fs->nkept - 1) * sizeof(*fs->kept));
		fs->nkept--;
	}
	struct hfs_kept *nk =
		realloc(fs->kept, (fs->nkept + 1) * sizeof(*fs->kept));
	if (nk) {
		fs->kept = nk;
		fs->kept[fs->nkept++] = k;
	}
	pthread_mutex_unlock(&fs->kept_lock);
	if (!nk) {
		free(k.path);
		for (size_t i = 0; i < k.nnames; i++)
			free(k.names[i]);
	}
}

/*
 * The index: what its DBIs hold -- nodes, directory entries (folded names and
 * their spellings), the dirty, orphan and doomed sets, per-file records,
 * tombstones, the namespace journal.
 */
#include "index_i.h"

/* Records @rc as the sticky error of @t if it is the first one, except
 * -ENOENT, which is an answer rather than a failure. */
int ix_sticky(struct ixtxn *t, int rc)
{
	if (rc && rc != -ENOENT && !t->err)
		t->err = rc;
	return rc;
}

MDB_val ix_u64_val(uint64_t *v)
{
	MDB_val m = {.mv_size = sizeof(*v), .mv_data = v};
	return m;
}

static int hlinks_drop(struct ixtxn *t, uint64_t ino);

int ix_get(struct ixtxn *t, uint64_t ino, struct node *out)
{
	if (t->err)
		return t->err;
	MDB_val k = ix_u64_val(&ino), v;
	int rc = ix_mdb_to_errno(mdb_get(t->txn, t->ix->nodes, &k, &v));
	if (rc)
		return ix_sticky(t, rc);
	if (v.mv_size < sizeof(struct node_rec))
		return ix_sticky(t, -EIO);
	memcpy(&out->r, v.mv_data, sizeof(struct node_rec));
	size_t nl = v.mv_size - sizeof(struct node_rec);
	if (nl > BACKEND_NAME_MAX)
		return ix_sticky(t, -EIO);
	memcpy(out->name, (char *)v.mv_data + sizeof(struct node_rec), nl);
	out->name[nl] = '\0';
	out->ino = ino;
	return 0;
}

int ix_put(struct ixtxn *t, const struct node *n)
{
	if (t->err)
		return t->err;
	size_t nl = strlen(n->name);
	char buf[sizeof(struct node_rec) + BACKEND_NAME_MAX + 1];
	struct node_rec r = n->r;
	r.namelen = (uint16_t)nl;
	memcpy(buf, &r, sizeof(r));
	memcpy(buf + sizeof(r), n->name, nl);
	uint64_t ino = n->ino;
	MDB_val k = ix_u64_val(&ino);
	MDB_val v = {.mv_size = sizeof(r) + nl, .mv_data = buf};
	return ix_sticky(
		t, ix_mdb_to_errno(mdb_put(t->txn, t->ix->nodes, &k, &v, 0)));
}

int ix_del(struct ixtxn *t, uint64_t ino)
{
	if (t->err)
		return t->err;
	MDB_val k = ix_u64_val(&ino);
	int rc = ix_mdb_to_errno(mdb_del(t->txn, t->ix->nodes, &k, NULL));
	if (rc)
		return ix_sticky(t, rc);
	rc = ix_mdb_to_errno(mdb_del(t->txn, t->ix->rsize, &k, NULL));
	if (rc && rc != -ENOENT)
		return ix_sticky(t, rc);
	rc = ix_mdb_to_errno(mdb_del(t->txn, t->ix->proven, &k, NULL));
	if (rc && rc != -ENOENT)
		return ix_sticky(t, rc);
	rc = ix_mdb_to_errno(mdb_del(t->txn, t->ix->links, &k, NULL));
	if (rc && rc != -ENOENT)
		return ix_sticky(t, rc);
	rc = hlinks_drop(t, ino);
	if (rc)
		return rc;
	return ix_attempts_del(t, ino);
}

int ix_alloc_ino(struct ixtxn *t, uint64_t *ino)
{
	if (t->err)
		return t->err;
	MDB_val k = {.mv_size = 8, .mv_data = (void *)"next_ino"}, v;
	int rc = ix_mdb_to_errno(mdb_get(t->txn, t->ix->meta, &k, &v));
	if (rc)
		return ix_sticky(t, rc == -ENOENT ? -EIO : rc);
	uint64_t next;
	if (v.mv_size != sizeof(next))
		return ix_sticky(t, -EIO);
	memcpy(&next, v.mv_data, sizeof(next));
	uint64_t after = next + 1;
	MDB_val nv = ix_u64_val(&after);
	rc = ix_mdb_to_errno(mdb_put(t->txn, t->ix->meta, &k, &nv, 0));
	if (rc)
		return ix_sticky(t, rc);
	*ino = next;
	return 0;
}

/*
 * Directory entries (layout 2).
 *
 * The key of an entry is its parent (big-endian) and its folded name
 * (fold.h). A folded name longer than DKEY_FOLD_MAX bytes (possible only
 * for names full of characters that fold longer) is cut there and
 * followed by 0x00 'h' and the hash of the whole folded name, so that
 * every key fits LMDB's 511 bytes; names hold no NUL, so such a key
 * equals no other. The value is the inode and the exact name.
 *
 * Collisions. Two entries of one directory whose names fold alike exist
 * only where the remote holds both (a listing) or an index of layout 1
 * held both (migration). The first is the primary, under the key above;
 * each other is an alias, under the primary's key followed by 0x00 'a'
 * and 16 bytes of the hash of its exact name. Invariant: whenever an
 * entry of a folded name exists, its primary does (unlinking a primary
 * promotes an alias), so a lookup that misses the primary is done. A
 * lookup returns the entry of exactly that name if there is one, else
 * the primary.
 */
#define DKEY_FOLD_MAX 400
#define DKEY_ALIAS_HASH 16
#define DKEY_MAX (8 + DKEY_FOLD_MAX + 2 + CHASH_LEN + 2 + DKEY_ALIAS_HASH)
#define DVAL_MAX (8 + BACKEND_NAME_MAX)

/* Builds the primary key of @name in @parent into @buf (DKEY_MAX bytes).
 * Returns its length or -errno. */
static int dirent_key(uint8_t *buf, uint64_t parent, const char *name)
{
	char f[FOLD_NAME_MAX + 1];
	uint64_t be = htobe64(parent);
	int n = fold_name(name, strlen(name), f, sizeof(f));
	if (n < 0)
		return n;
	memcpy(buf, &be, 8);
	if (n <= DKEY_FOLD_MAX) {
		memcpy(buf + 8, f, (size_t)n);
		return 8 + n;
	}
	memcpy(buf + 8, f, DKEY_FOLD_MAX);
	buf[8 + DKEY_FOLD_MAX] = 0;
	buf[8 + DKEY_FOLD_MAX + 1] = 'h';
	int rc = chash_buf(f, (size_t)n, buf + 8 + DKEY_FOLD_MAX + 2);
	if (rc)
		return rc;
	return 8 + DKEY_FOLD_MAX + 2 + CHASH_LEN;
}

/* Appends the alias suffix of exact name @name to the primary key of
 * @klen bytes in @buf. Returns the alias key's length or -errno. */
static int alias_key(uint8_t *buf, int klen, const char *name)
{
	uint8_t h[CHASH_LEN];
	int rc = chash_buf(name, strlen(name), h);
	if (rc)
		return rc;
	buf[klen] = 0;
	buf[klen + 1] = 'a';
	memcpy(buf + klen + 2, h, DKEY_ALIAS_HASH);
	return klen + 2 + DKEY_ALIAS_HASH;
}

/* Copies the inode and the name (BACKEND_NAME_MAX + 1 bytes, may be
 * NULL) out of dirents value @v. */
static int dirent_val(const MDB_val *v, uint64_t *ino, char *name)
{
	if (v->mv_size < 8 || v->mv_size > DVAL_MAX)
		return -EIO;
	memcpy(ino, v->mv_data, 8);
	if (name) {
		memcpy(name, (char *)v->mv_data + 8, v->mv_size - 8);
		name[v->mv_size - 8] = '\0';
	}
	return 0;
}

/* Reads the dirents entry under key @kb (@klen bytes): 0, -ENOENT or
 * another -errno (not sticky). */
static int dirent_get(struct ixtxn *t, const uint8_t *kb, int klen,
		      uint64_t *ino, char *name)
{
	MDB_val k = {.mv_size = (size_t)klen, .mv_data = (void *)kb}, v;
	int rc = ix_mdb_to_errno(mdb_get(t->txn, t->ix->dirents, &k, &v));
	return rc ? rc : dirent_val(&v, ino, name);
}

static int dirent_put(struct ixtxn *t, const uint8_t *kb, int klen,
		      const char *name, uint64_t ino)
{
	uint8_t vb[DVAL_MAX];
	size_t nl = strlen(name);
	memcpy(vb, &ino, 8);
	memcpy(vb + 8, name, nl);
	MDB_val k = {.mv_size = (size_t)klen, .mv_data = (void *)kb};
	MDB_val v = {.mv_size = 8 + nl, .mv_data = vb};
	return ix_mdb_to_errno(mdb_put(t->txn, t->ix->dirents, &k, &v, 0));
}

static int dirent_del(struct ixtxn *t, const uint8_t *kb, int klen)
{
	MDB_val k = {.mv_size = (size_t)klen, .mv_data = (void *)kb};
	return ix_mdb_to_errno(mdb_del(t->txn, t->ix->dirents, &k, NULL));
}

/* The alias of exact name @name under primary key @kb (@klen bytes):
 * its key in @ab and length in *@alen; 0 if it exists, -ENOENT if not. */
static int alias_find(struct ixtxn *t, const uint8_t *kb, int klen,
		      const char *name, uint8_t *ab, int *alen, uint64_t *ino,
		      char *exact)
{
	char got[BACKEND_NAME_MAX + 1];
	memcpy(ab, kb, (size_t)klen);
	int n = alias_key(ab, klen, name);
	if (n < 0)
		return n;
	*alen = n;
	int rc = dirent_get(t, ab, n, ino, got);
	if (rc)
		return rc;
	if (strcmp(got, name) != 0)
		return -ENOENT; /* another name with the same hash prefix */
	if (exact)
		strcpy(exact, got);
	return 0;
}

/* After the primary under @kb (@klen bytes) was deleted: moves its first
 * alias, if any, to the primary key. */
static int alias_promote(struct ixtxn *t, const uint8_t *kb, int klen)
{
	uint8_t from[DKEY_MAX], ab[DKEY_MAX];
	char name[BACKEND_NAME_MAX + 1];
	uint64_t ino;
	MDB_cursor *c;
	int rc = ix_mdb_to_errno(mdb_cursor_open(t->txn, t->ix->dirents, &c));
	if (rc)
		return rc;
	memcpy(from, kb, (size_t)klen);
	from[klen] = 0;
	from[klen + 1] = 'a';
	MDB_val k = {.mv_size = (size_t)klen + 2, .mv_data = from}, v;
	rc = ix_mdb_to_errno(mdb_cursor_get(c, &k, &v, MDB_SET_RANGE));
	int alen = 0;
	if (!rc) {
		if (k.mv_size != (size_t)klen + 2 + DKEY_ALIAS_HASH ||
		    memcmp(k.mv_data, from, (size_t)klen + 2) != 0)
			rc = -ENOENT; /* past this name's aliases */
		else
			rc = dirent_val(&v, &ino, name);
		if (!rc) {
			alen = (int)k.mv_size;
			memcpy(ab, k.mv_data, k.mv_size);
		}
	}
	mdb_cursor_close(c);
	if (rc)
		return rc == -ENOENT ? 0 : rc;
	rc = dirent_del(t, ab, alen);
	if (!rc)
		rc = dirent_put(t, kb, klen, name, ino);
	return rc;
}

int ix_lookup(struct ixtxn *t, uint64_t parent, const char *name, uint64_t *ino,
	      char *exact)
{
	if (t->err)
		return t->err;
	size_t nl = strlen(name);
	if (nl == 0 || nl > BACKEND_NAME_MAX)
		return -ENOENT;
	uint8_t kb[DKEY_MAX], ab[DKEY_MAX];
	char pname[BACKEND_NAME_MAX + 1];
	uint64_t pino;
	int alen;
	int klen = dirent_key(kb, parent, name);
	if (klen < 0)
		return ix_sticky(t, klen);
	int rc = dirent_get(t, kb, klen, &pino, pname);
	if (rc)
		return ix_sticky(t, rc);
	if (strcmp(pname, name) != 0) {
		/* Folds like the primary: an alias may have that very name. */
		rc = alias_find(t, kb, klen, name, ab, &alen, ino, exact);
		if (rc != -ENOENT)
			return ix_sticky(t, rc);
	}
	*ino = pino;
	if (exact)
		strcpy(exact, pname);
	return 0;
}

/*
 * Link counts: @parent's nsubdirs moves by @delta if the node of @child is
 * a directory (a node not stored counts as none).
 */
static void subdirs_adjust(struct ixtxn *t, uint64_t parent, uint64_t child,
			   int delta)
{
	struct node c, p;
	if (t->err || child == parent || ix_get(t, child, &c) != 0 ||
	    !S_ISDIR(c.r.mode) || ix_get(t, parent, &p) != 0)
		return;
	if (delta < 0 && p.r.nsubdirs == 0)
		return;
	p.r.nsubdirs = (uint32_t)((int64_t)p.r.nsubdirs + delta);
	ix_put(t, &p);
}

int ix_link(struct ixtxn *t, uint64_t parent, const char *name, uint64_t ino)
{
	if (t->err)
		return t->err;
	size_t nl = strlen(name);
	if (nl == 0 || nl > BACKEND_NAME_MAX)
		return ix_sticky(t, -ENAMETOOLONG);
	uint8_t kb[DKEY_MAX];
	char pname[BACKEND_NAME_MAX + 1];
	uint64_t pino;
	int klen = dirent_key(kb, parent, name);
	if (klen < 0)
		return ix_sticky(t, klen);
	int rc = dirent_get(t, kb, klen, &pino, pname);
	if (rc == -ENOENT ||
	    (rc == 0 && (pino == ino || strcmp(pname, name) == 0))) {
		if (rc == 0 && pino != ino)
			subdirs_adjust(t, parent, pino, -1); /* replaced */
		if (rc != 0 || pino != ino)
			subdirs_adjust(t, parent, ino, 1);
		return ix_sticky(t, dirent_put(t, kb, klen, name, ino));
	}
	if (rc)
		return ix_sticky(t, rc);
	/* Another entry folds alike: this one becomes an alias. */
	int alen = alias_key(kb, klen, name);
	if (alen < 0)
		return ix_sticky(t, alen);
	uint64_t old;
	char oname[BACKEND_NAME_MAX + 1];
	if (dirent_get(t, kb, alen, &old, oname) == 0)
		subdirs_adjust(t, parent, old, -1);
	subdirs_adjust(t, parent, ino, 1);
	return ix_sticky(t, dirent_put(t, kb, alen, name, ino));
}

int ix_unlink(struct ixtxn *t, uint64_t parent, const char *name)
{
	if (t->err)
		return t->err;
	if (strlen(name) > BACKEND_NAME_MAX)
		return -ENOENT;
	uint8_t kb[DKEY_MAX], ab[DKEY_MAX];
	char pname[BACKEND_NAME_MAX + 1];
	uint64_t pino, aino;
	int alen;
	int klen = dirent_key(kb, parent, name);
	if (klen < 0)
		return ix_sticky(t, klen);
	int rc = dirent_get(t, kb, klen, &pino, pname);
	if (rc)
		return ix_sticky(t, rc);
	if (strcmp(pname, name) != 0) {
		rc = alias_find(t, kb, klen, name, ab, &alen, &aino, NULL);
		if (rc == 0) {
			subdirs_adjust(t, parent, aino, -1);
			return ix_sticky(t, dirent_del(t, ab, alen));
		}
		if (rc != -ENOENT)
			return ix_sticky(t, rc);
		/* No entry of exactly that name: the one it folds like. */
	}
	subdirs_adjust(t, parent, pino, -1);
	rc = dirent_del(t, kb, klen);
	if (!rc)
		rc = alias_promote(t, kb, klen);
	return ix_sticky(t, rc);
}

/*
 * Migration from layout 1, whose dirents keys had ASCII letters lowered
 * and nothing else. A name of ASCII bytes has the same key in both
 * layouts and stays; every other entry is taken out and linked again
 * under its new key, in the order of the old keys. Where two entries of a
 * folder now fold alike, both stay (ix_link keeps the second as an
 * alias, reachable by its exact name and listed) and a warning names
 * them: the remote can hold only one of them. All of it, and the new
 * layout number, in one txn. Tombstone keys of non-ASCII paths (hashes of
 * the old folding) are not rekeyed: they cannot be, and they expire
 * within the hour; meanwhile a late upload to such a path shows as a
 * file instead of being deleted again.
 */
struct old_dirent {
	uint64_t parent, ino;
	uint8_t key[8 + BACKEND_NAME_MAX];
	size_t klen;
	char name[BACKEND_NAME_MAX + 1];
};

static bool bytes_ascii(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] >= 0x80)
			return false;
	return true;
}

/* Collects the layout-1 entries of non-ASCII names into *@out. */
static int old_non_ascii(struct ixtxn *t, struct old_dirent **out, size_t *nout)
{
	struct old_dirent *v = NULL;
	size_t n = 0, cap = 0;
	MDB_cursor *c;
	MDB_val k, val;
	int rc = ix_mdb_to_errno(mdb_cursor_open(t->txn, t->ix->dirents, &c));
	if (rc)
		return rc;
	int mrc = mdb_cursor_get(c, &k, &val, MDB_FIRST);
	for (; mrc == MDB_SUCCESS && !rc;
	     mrc = mdb_cursor_get(c, &k, &val, MDB_NEXT)) {
		if (k.mv_size <= 8 || k.mv_size > 8 + BACKEND_NAME_MAX) {
			rc = -EIO;
			break;
		}
		if (bytes_ascii((uint8_t *)k.mv_data + 8, k.mv_size - 8))
			continue;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 64;
			struct old_dirent *nv = realloc(v, nc * sizeof(*nv));
			if (!nv) {
				rc = -ENOMEM;
				break;
			}
			v = nv;
			cap = nc;
		}
		struct old_dirent *d = &v[n];
		uint64_t be;
		memcpy(&be, k.mv_data, 8);
		d->parent = be64toh(be);
		d->klen = k.mv_size;
		memcpy(d->key, k.mv_data, k.mv_size);
		rc = dirent_val(&val, &d->ino, d->name);
		if (!rc && !d->name[0])
			rc = -EIO;
		n++;
	}
	if (!rc && mrc != MDB_SUCCESS && mrc != MDB_NOTFOUND)
		rc = ix_mdb_to_errno(mrc);
	mdb_cursor_close(c);
	if (rc) {
		free(v);
		return rc;
	}
	*out = v;
	*nout = n;
	return 0;
}

int ix_migrate_v1(struct hfs_index *ix)
{
	struct old_dirent *v = NULL;
	size_t n = 0, collisions = 0;
	struct ixtxn t;
	int rc = ix_begin(ix, true, &t);
	if (rc)
		return rc;
	rc = old_non_ascii(&t, &v, &n);
	for (size_t i = 0; i < n && !rc; i++)
		rc = dirent_del(&t, v[i].key, (int)v[i].klen);
	if (rc)
		t.err = rc;
	for (size_t i = 0; i < n && !t.err; i++) {
		char other[BACKEND_NAME_MAX + 1], dir[4096];
		uint64_t ino;
		if (ix_lookup(&t, v[i].parent, v[i].name, &ino, other) == 0 &&
		    ino != v[i].ino) {
			collisions++;
			if (ix_path(&t, v[i].parent, dir, sizeof(dir)) != 0)
				snprintf(dir, sizeof(dir),
					 "(folder inode %llu)",
					 (unsigned long long)v[i].parent);
			hlog_warn("index_name_collision folder=\"%s\" "
				  "name=\"%s\" other=\"%s\": the names are "
				  "one name for Dropbox; both are kept, rename "
				  "one of them",
				  dir[0] ? dir : "/", v[i].name, other);
		}
		ix_link(&t, v[i].parent, v[i].name, v[i].ino);
	}
	uint32_t layout = INDEX_LAYOUT;
	MDB_val k = {.mv_size = 6, .mv_data = (void *)"layout"};
	MDB_val val = {.mv_size = sizeof(layout), .mv_data = &layout};
	if (!t.err)
		t.err = ix_mdb_to_errno(mdb_put(t.txn, ix->meta, &k, &val, 0));
	rc = ix_commit(&t);
	free(v);
	if (!rc)
		hlog_info("index_migrated layout=%d rekeyed=%zu collisions=%zu",
			  INDEX_LAYOUT, n, collisions);
	return rc;
}

/* A step of ix_walk() that ends the walk without an error. */
#define WALK_END 0x7fff0001

/*
 * Walks @dbi in key order from the first key (@from NULL) or the first key
 * >= @from, calling @step for each record until it returns non-zero:
 * WALK_END ends the walk with 0, anything else is returned (and a negative
 * errno also becomes @t's sticky error).
 */
int ix_walk(struct ixtxn *t, MDB_dbi dbi, const MDB_val *from,
	    int (*step)(void *ctx, const MDB_val *k, const MDB_val *v),
	    void *ctx)
{
	if (t->err)
		return t->err;
	MDB_cursor *c;
	int rc = ix_mdb_to_errno(mdb_cursor_open(t->txn, dbi, &c));
	if (rc)
		return ix_sticky(t, rc);
	MDB_val k = {0}, v;
	if (from)
		k = *from;
	int mrc = mdb_cursor_get(c, &k, &v, from ? MDB_SET_RANGE : MDB_FIRST);
	rc = 0;
	while (mrc == MDB_SUCCESS) {
		rc = step(ctx, &k, &v);
		if (rc)
			break;
		mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	if (!rc && mrc != MDB_SUCCESS && mrc != MDB_NOTFOUND)
		rc = ix_mdb_to_errno(mrc);
	mdb_cursor_close(c);
	if (rc == WALK_END)
		rc = 0;
	if (rc < 0)
		ix_sticky(t, rc);
	return rc;
}

/* ---- Hard links: key ino (BE) + parent (BE) + name ---- */

static int hlink_key(uint8_t *kb, uint64_t ino, uint64_t parent,
		     const char *name)
{
	size_t nl = strlen(name);
	if (nl == 0 || nl > BACKEND_NAME_MAX)
		return -ENAMETOOLONG;
	uint64_t bi = htobe64(ino), bp = htobe64(parent);
	memcpy(kb, &bi, 8);
	memcpy(kb + 8, &bp, 8);
	memcpy(kb + 16, name, nl);
	return (int)(16 + nl);
}

int ix_hlink_add(struct ixtxn *t, uint64_t ino, uint64_t parent,
		 const char *name)
{
	if (t->err)
		return t->err;
	uint8_t kb[16 + BACKEND_NAME_MAX];
	int kl = hlink_key(kb, ino, parent, name);
	if (kl < 0)
		return ix_sticky(t, kl);
	MDB_val k = {.mv_size = (size_t)kl, .mv_data = kb};
	MDB_val v = {.mv_size = 0, .mv_data = NULL};
	return ix_sticky(t, ix_mdb_to_errno(mdb_put(t->txn, t->ix->hardlinks,
						    &k, &v, 0)));
}

int ix_hlink_del(struct ixtxn *t, uint64_t ino, uint64_t parent,
		 const char *name)
{
	if (t->err)
		return t->err;
	uint8_t kb[16 + BACKEND_NAME_MAX];
	int kl = hlink_key(kb, ino, parent, name);
	if (kl < 0)
		return ix_sticky(t, kl);
	MDB_val k = {.mv_size = (size_t)kl, .mv_data = kb};
	return ix_sticky(t, ix_mdb_to_errno(mdb_del(t->txn, t->ix->hardlinks,
						    &k, NULL)));
}

struct hlink_walk {
	uint64_t be;
	int (*fn)(void *arg, uint64_t parent, const char *name);
	void *arg;
};

static int hlink_step(void *ctx, const MDB_val *k, const MDB_val *v)
{
	struct hlink_walk *w = ctx;
	char name[BACKEND_NAME_MAX + 1];
	uint64_t bp;
	(void)v;
	if (k->mv_size < 17 || k->mv_size > 16 + BACKEND_NAME_MAX ||
	    memcmp(k->mv_data, &w->be, 8) != 0)
		return WALK_END;
	memcpy(&bp, (const uint8_t *)k->mv_data + 8, 8);
	memcpy(name, (const uint8_t *)k->mv_data + 16, k->mv_size - 16);
	name[k->mv_size - 16] = '\0';
	return w->fn(w->arg, be64toh(bp), name);
}

int ix_foreach_hlink(struct ixtxn *t, uint64_t ino,
		     int (*fn)(void *arg, uint64_t parent, const char *name),
		     void *arg)
{
	struct hlink_walk w = {htobe64(ino), fn, arg};
	MDB_val from = {.mv_size = 8, .mv_data = &w.be};
	return ix_walk(t, t->ix->hardlinks, &from, hlink_step, &w);
}

/* Gathers the names to drop first: the walk must not see its own
 * deletes. */
struct hlink_names {
	uint64_t parent[16];
	char name[16][BACKEND_NAME_MAX + 1];
	int n;
};

static int hlink_gather(void *arg, uint64_t parent, const char *name)
{
	struct hlink_names *h = arg;
	if (h->n == 16)
		return 1;
	h->parent[h->n] = parent;
	snprintf(h->name[h->n], sizeof(h->name[0]), "%s", name);
	h->n++;
	return 0;
}

static int hlinks_drop(struct ixtxn *t, uint64_t ino)
{
	for (;;) {
		struct hlink_names *h = calloc(1, sizeof(*h));
		if (!h)
			return ix_sticky(t, -ENOMEM);
		int rc = ix_foreach_hlink(t, ino, hlink_gather, h);
		for (int i = 0; i < h->n && rc >= 0; i++)
			rc = ix_hlink_del(t, ino, h->parent[i], h->name[i]);
		bool more = h->n == 16;
		free(h);
		if (rc < 0)
			return rc;
		if (!more)
			return 0;
	}
}

struct child_walk {
	int (*fn)(void *arg, const char *name, uint64_t ino);
	void *arg;
	uint64_t be; /* the parent, big-endian: the key prefix */
};

static int child_step(void *ctx, const MDB_val *k, const MDB_val *v)
{
	struct child_walk *w = ctx;
	if (k->mv_size < 8 || memcmp(k->mv_data, &w->be, 8) != 0)
		return WALK_END; /* past the parent's entries */
	if (v->mv_size < 8 || v->mv_size > 8 + BACKEND_NAME_MAX)
		return -EIO;
	char name[BACKEND_NAME_MAX + 1];
	uint64_t ino;
	memcpy(&ino, v->mv_data, 8);
	memcpy(name, (char *)v->mv_data + 8, v->mv_size - 8);
	name[v->mv_size - 8] = '\0';
	return w->fn(w->arg, name, ino);
}

int ix_foreach_child(struct ixtxn *t, uint64_t parent,
		     int (*fn)(void *arg, const char *name, uint64_t ino),
		     void *arg)
{
	struct child_walk w = {fn, arg, htobe64(parent)};
	MDB_val from = {.mv_size = 8, .mv_data = &w.be};
	return ix_walk(t, t->ix->dirents, &from, child_step, &w);
}

static int stop_at_first(void *arg, const char *name, uint64_t ino)
{
	(void)arg;
	(void)name;
	(void)ino;
	return 1;
}

int ix_has_children(struct ixtxn *t, uint64_t parent)
{
	return ix_foreach_child(t, parent, stop_at_first, NULL);
}

/*
 * Paths have no fixed cap: the components are collected from the leaf up
 * into a buffer that grows, then reversed. A loop in the parents (a
 * damaged index) ends at 65536 levels with -ELOOP.
 */
int ix_path_dup(struct ixtxn *t, uint64_t ino, char **out)
{
	if (t->err)
		return t->err;
	size_t cap = 512, pos;
	char *tmp = malloc(cap);
	if (!tmp)
		return -ENOMEM;
	struct node n;
	int depth = 0;
	bool leaf = true;
	pos = cap;
	tmp[--pos] = '\0';
	while (ino != INDEX_ROOT_INO) {
		int rc = ix_get(t, ino, &n);
		if (rc || ++depth > 65536) {
			free(tmp);
			return rc ? rc : -ELOOP;
		}
		size_t nl = strlen(n.name);
		bool suffix = leaf && (n.r.flags & NODE_RCLONELINK);
		size_t need = nl + 1 + (suffix ? HFS_LINK_SUFFIX_LEN : 0);
		if (need > pos) {
			size_t ncap = cap * 2 + need;
			char *nt = malloc(ncap);
			if (!nt) {
				free(tmp);
				return -ENOMEM;
			}
			memcpy(nt + ncap - (cap - pos), tmp + pos, cap - pos);
			pos = ncap - (cap - pos);
			free(tmp);
			tmp = nt;
			cap = ncap;
		}
		if (suffix) {
			pos -= HFS_LINK_SUFFIX_LEN;
			memcpy(tmp + pos, HFS_LINK_SUFFIX, HFS_LINK_SUFFIX_LEN);
		}
		pos -= nl;
		memcpy(tmp + pos, n.name, nl);
		tmp[--pos] = '/';
		ino = n.r.parent;
		leaf = false;
	}
	memmove(tmp, tmp + pos, cap - pos);
	*out = tmp;
	return 0;
}

int ix_path(struct ixtxn *t, uint64_t ino, char *buf, size_t len)
{
	char *p;
	int rc = ix_path_dup(t, ino, &p);
	if (rc)
		return rc;
	size_t total = strlen(p) + 1;
	if (total > len)
		rc = -ENAMETOOLONG;
	else
		memcpy(buf, p, total);
	free(p);
	return rc;
}

static int set_put(struct ixtxn *t, MDB_dbi dbi, uint64_t ino)
{
	if (t->err)
		return t->err;
	MDB_val k = ix_u64_val(&ino), v = {.mv_size = 0, .mv_data = NULL};
	return ix_sticky(t, ix_mdb_to_errno(mdb_put(t->txn, dbi, &k, &v, 0)));
}

static int set_del(struct ixtxn *t, MDB_dbi dbi, uint64_t ino)
{
	if (t->err)
		return t->err;
	MDB_val k = ix_u64_val(&ino);
	int rc = ix_mdb_to_errno(mdb_del(t->txn, dbi, &k, NULL));
	return rc == -ENOENT ? 0 : ix_sticky(t, rc);
}

struct set_walk {
	int (*fn)(void *arg, uint64_t ino);
	void *arg;
};

static int set_step(void *ctx, const MDB_val *k, const MDB_val *v)
{
	struct set_walk *w = ctx;
	uint64_t ino;
	(void)v;
	if (k->mv_size != 8)
		return -EIO;
	memcpy(&ino, k->mv_data, 8);
	return w->fn(w->arg, ino);
}

static int set_foreach(struct ixtxn *t, MDB_dbi dbi,
		       int (*fn)(void *arg, uint64_t ino), void *arg)
{
	struct set_walk w = {fn, arg};
	return ix_walk(t, dbi, NULL, set_step, &w);
}

int ix_dirty_add(struct ixtxn *t, uint64_t ino)
{
	return set_put(t, t->ix->dirty, ino);
}

int ix_dirty_del(struct ixtxn *t, uint64_t ino)
{
	return set_del(t, t->ix->dirty, ino);
}

int ix_foreach_dirty(struct ixtxn *t, int (*fn)(void *arg, uint64_t ino),
		     void *arg)
{
	return set_foreach(t, t->ix->dirty, fn, arg);
}

int ix_orphan_add(struct ixtxn *t, uint64_t ino)
{
	return set_put(t, t->ix->orphans, ino);
}

int ix_orphan_del(struct ixtxn *t, uint64_t ino)
{
	return set_del(t, t->ix->orphans, ino);
}

int ix_foreach_orphan(struct ixtxn *t, int (*fn)(void *arg, uint64_t ino),
		      void *arg)
{
	return set_foreach(t, t->ix->orphans, fn, arg);
}

/* A value per inode in @dbi: copies at most @cap bytes into @buf and
 * returns the stored length (0 if none). */
static int64_t blob_get(struct ixtxn *t, MDB_dbi dbi, uint64_t ino,
			uint8_t *buf, size_t cap)
{
	if (t->err)
		return t->err;
	MDB_val k = ix_u64_val(&ino), v;
	int rc = ix_mdb_to_errno(mdb_get(t->txn, dbi, &k, &v));
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return ix_sticky(t, rc);
	memcpy(buf, v.mv_data, v.mv_size < cap ? v.mv_size : cap);
	return (int64_t)v.mv_size;
}

static int blob_put(struct ixtxn *t, MDB_dbi dbi, uint64_t ino,
		    const uint8_t *buf, size_t len)
{
	if (t->err)
		return t->err;
	MDB_val k = ix_u64_val(&ino);
	MDB_val v = {.mv_size = len, .mv_data = (void *)buf};
	return ix_sticky(t, ix_mdb_to_errno(mdb_put(t->txn, dbi, &k, &v, 0)));
}

int ix_rsize_put(struct ixtxn *t, uint64_t ino, uint64_t size)
{
	return blob_put(t, t->ix->rsize, ino, (const uint8_t *)&size,
			sizeof(size));
}

int ix_proven_put(struct ixtxn *t, uint64_t ino, uint64_t bytes)
{
	if (bytes == 0)
		return set_del(t, t->ix->proven, ino);
	return blob_put(t, t->ix->proven, ino, (const uint8_t *)&bytes,
			sizeof(bytes));
}

uint64_t ix_proven_get(struct ixtxn *t, uint64_t ino)
{
	uint64_t v = 0;
	int64_t n = blob_get(t, t->ix->proven, ino, (uint8_t *)&v, sizeof(v));
	return n == sizeof(v) ? v : 0;
}

int ix_rsize_get(struct ixtxn *t, uint64_t ino, uint64_t *size)
{
	uint64_t v;
	int64_t n = blob_get(t, t->ix->rsize, ino, (uint8_t *)&v, sizeof(v));
	if (n < 0)
		return (int)n;
	if (n != sizeof(v))
		return -ENOENT;
	*size = v;
	return 0;
}

int ix_target_put(struct ixtxn *t, uint64_t ino, const char *target, size_t len)
{
	return blob_put(t, t->ix->links, ino, (const uint8_t *)target, len);
}

int64_t ix_target_get(struct ixtxn *t, uint64_t ino, char *buf, size_t cap)
{
	if (t->err)
		return t->err;
	MDB_val k = ix_u64_val(&ino), v;
	int rc = ix_mdb_to_errno(mdb_get(t->txn, t->ix->links, &k, &v));
	if (rc)
		return ix_sticky(t, rc);
	memcpy(buf, v.mv_data, v.mv_size < cap ? v.mv_size : cap);
	return (int64_t)v.mv_size;
}

int ix_target_del(struct ixtxn *t, uint64_t ino)
{
	return set_del(t, t->ix->links, ino);
}

int ix_foreach_target(struct ixtxn *t, int (*fn)(void *arg, uint64_t ino),
		      void *arg)
{
	return set_foreach(t, t->ix->links, fn, arg);
}

/* Counting: every directory and its parent, gathered first (the nodes
 * are not changed while walked). */
struct dirlist {
	uint64_t (*v)[2]; /* ino, parent */
	size_t n, cap;
};

static int gather_dir(void *arg, const struct node *n)
{
	struct dirlist *l = arg;
	if (!S_ISDIR(n->r.mode))
		return 0;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 256;
		void *nv = realloc(l->v, cap * sizeof(*l->v));
		if (!nv)
			return -ENOMEM;
		l->v = nv;
		l->cap = cap;
	}
	l->v[l->n][0] = n->ino;
	l->v[l->n][1] = n->ino == INDEX_ROOT_INO ? 0 : n->r.parent;
	l->n++;
	return 0;
}

int ix_count_subdirs(struct hfs_index *ix)
{
	struct ixtxn t;
	struct dirlist l = {0};
	int rc = ix_begin(ix, true, &t);
	if (rc)
		return rc;
	MDB_val k = {.mv_size = 8, .mv_data = (void *)"nsubdirs"}, v;
	rc = mdb_get(t.txn, ix->meta, &k, &v);
	if (rc == MDB_SUCCESS) {
		ix_abort(&t);
		return 0;
	}
	rc = ix_foreach_node(&t, gather_dir, &l);
	if (rc < 0 && !t.err)
		t.err = rc;
	struct node n;
	for (size_t i = 0; i < l.n && !t.err; i++) {
		if (ix_get(&t, l.v[i][0], &n) == 0 && n.r.nsubdirs) {
			n.r.nsubdirs = 0;
			ix_put(&t, &n);
		}
	}
	for (size_t i = 0; i < l.n && !t.err; i++) {
		if (l.v[i][1] == 0 || ix_get(&t, l.v[i][1], &n) != 0)
			continue;
		n.r.nsubdirs++;
		ix_put(&t, &n);
	}
	free(l.v);
	if (t.err == -ENOENT)
		t.err = 0;
	uint32_t one = 1;
	v.mv_size = sizeof(one);
	v.mv_data = &one;
	if (!t.err)
		t.err = ix_mdb_to_errno(mdb_put(t.txn, ix->meta, &k, &v, 0));
	return ix_commit(&t);
}

int64_t ix_chunks_get(struct ixtxn *t, uint64_t ino, uint8_t *buf, size_t cap)
{
	return blob_get(t, t->ix->chunks, ino, buf, cap);
}

int ix_chunks_put(struct ixtxn *t, uint64_t ino, const uint8_t *buf, size_t len)
{
	return blob_put(t, t->ix->chunks, ino, buf, len);
}

int ix_chunks_del(struct ixtxn *t, uint64_t ino)
{
	return set_del(t, t->ix->chunks, ino);
}

int ix_attempts_get(struct ixtxn *t, uint64_t ino,
		    uint8_t out[IX_ATTEMPTS][CHASH_LEN])
{
	int64_t len = blob_get(t, t->ix->attempts, ino, &out[0][0],
			       IX_ATTEMPTS * CHASH_LEN);
	if (len < 0)
		return (int)len;
	len /= CHASH_LEN;
	return (int)(len < IX_ATTEMPTS ? len : IX_ATTEMPTS);
}

int ix_attempt_add(struct ixtxn *t, uint64_t ino, const uint8_t hash[CHASH_LEN])
{
	uint8_t h[IX_ATTEMPTS][CHASH_LEN];
	int n = ix_attempts_get(t, ino, h);
	if (n < 0)
		return n;
	if (n == IX_ATTEMPTS)
		n--; /* the oldest goes */
	memmove(h[1], h[0], (size_t)n * CHASH_LEN);
	memcpy(h[0], hash, CHASH_LEN);
	return blob_put(t, t->ix->attempts, ino, &h[0][0],
			(size_t)(n + 1) * CHASH_LEN);
}

int ix_attempt_answered(struct ixtxn *t, uint64_t ino,
			const uint8_t hash[CHASH_LEN])
{
	uint8_t h[IX_ATTEMPTS][CHASH_LEN];
	int n = ix_attempts_get(t, ino, h), kept = 0;
	if (n <= 0)
		return n;
	for (int i = 0; i < n; i++)
		if (memcmp(h[i], hash, CHASH_LEN) != 0)
			memmove(h[kept++], h[i], CHASH_LEN);
	if (kept == n)
		return 0;
	if (kept == 0)
		return ix_attempts_del(t, ino);
	return blob_put(t, t->ix->attempts, ino, &h[0][0],
			(size_t)kept * CHASH_LEN);
}

int ix_attempts_del(struct ixtxn *t, uint64_t ino)
{
	return set_del(t, t->ix->attempts, ino);
}

/* Tombstone keys: the content hash of the folded path (paths may be
 * longer than an LMDB key), in @key, described by @k. Values: i64 expiry,
 * then the hashes. */
static int tomb_key(struct ixtxn *t, const char *folded, uint8_t key[CHASH_LEN],
		    MDB_val *k)
{
	if (t->err)
		return t->err;
	int rc = chash_buf(folded, strlen(folded), key);
	if (rc)
		return ix_sticky(t, rc);
	k->mv_size = CHASH_LEN;
	k->mv_data = key;
	return 0;
}

int ix_tomb_put(struct ixtxn *t, const char *folded, int64_t expires,
		const uint8_t h[][CHASH_LEN], int n)
{
	uint8_t key[CHASH_LEN], val[8 + IX_TOMB_MAX * CHASH_LEN];
	MDB_val k;
	if (n < 1 || n > IX_TOMB_MAX)
		return -EINVAL;
	int rc = tomb_key(t, folded, key, &k);
	if (rc)
		return rc;
	memcpy(val, &expires, 8);
	memcpy(val + 8, h, (size_t)n * CHASH_LEN);
	MDB_val v = {.mv_size = 8 + (size_t)n * CHASH_LEN, .mv_data = val};
	return ix_sticky(
		t, ix_mdb_to_errno(mdb_put(t->txn, t->ix->tombs, &k, &v, 0)));
}

int ix_tomb_get(struct ixtxn *t, const char *folded, int64_t *expires,
		uint8_t h[IX_TOMB_MAX][CHASH_LEN])
{
	uint8_t key[CHASH_LEN];
	MDB_val k, v;
	int rc = tomb_key(t, folded, key, &k);
	if (rc)
		return rc;
	rc = ix_mdb_to_errno(mdb_get(t->txn, t->ix->tombs, &k, &v));
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return ix_sticky(t, rc);
	if (v.mv_size < 8 + CHASH_LEN)
		return ix_sticky(t, -EIO);
	size_t n = (v.mv_size - 8) / CHASH_LEN;
	if (n > IX_TOMB_MAX)
		n = IX_TOMB_MAX;
	memcpy(expires, v.mv_data, 8);
	memcpy(h, (uint8_t *)v.mv_data + 8, n * CHASH_LEN);
	return (int)n;
}

int ix_tomb_del(struct ixtxn *t, const char *folded)
{
	uint8_t key[CHASH_LEN];
	MDB_val k;
	int rc = tomb_key(t, folded, key, &k);
	if (rc)
		return rc;
	rc = ix_mdb_to_errno(mdb_del(t->txn, t->ix->tombs, &k, NULL));
	return rc == -ENOENT ? 0 : ix_sticky(t, rc);
}

/*
 * Journal values: u8 op, u16 length of path, path, then the rest: path2,
 * optionally followed by a NUL byte and the delete record of
 * ix_journal_append_delete(): u8 version (1), u8 length of rev, rev,
 * u8 1 + the 32-byte content hash, or u8 0. Renames never have a record
 * (their path2 holds no NUL); versions that predate the record read the
 * rest as path2 up to the NUL, which is empty for deletes.
 */
#define JOURNAL_REC_V1 1
#define JOURNAL_REC_MAX (2 + BACKEND_REV_MAX + 1 + CHASH_LEN)

static int journal_put(struct ixtxn *t, int op, const char *path,
		       const char *path2, const uint8_t *rec, size_t reclen)
{
	if (t->err)
		return t->err;
	size_t l1 = strlen(path), l2 = path2 ? strlen(path2) : 0;
	/* Deeper than the remote takes: nothing there to change (such
	 * nodes are never uploaded; docs/posix.md, "Deep paths"). */
	if (l1 > IX_REMOTE_PATH_MAX || l2 > IX_REMOTE_PATH_MAX)
		return 0;
	MDB_cursor *c;
	int rc = ix_mdb_to_errno(mdb_cursor_open(t->txn, t->ix->journal, &c));
	if (rc)
		return ix_sticky(t, rc);
	MDB_val k, v;
	uint64_t seq = 1;
	if (mdb_cursor_get(c, &k, &v, MDB_LAST) == MDB_SUCCESS &&
	    k.mv_size == 8) {
		memcpy(&seq, k.mv_data, 8);
		seq++;
	}
	mdb_cursor_close(c);
	/* Sequence numbers never repeat, even after the journal drained:
	 * "next_seq" in meta remembers the high-water mark. */
	MDB_val mk = {.mv_size = 8, .mv_data = (void *)"next_seq"}, mv;
	if (mdb_get(t->txn, t->ix->meta, &mk, &mv) == MDB_SUCCESS &&
	    mv.mv_size == 8) {
		uint64_t hw;
		memcpy(&hw, mv.mv_data, 8);
		if (hw > seq)
			seq = hw;
	}
	uint64_t next = seq + 1;
	mv.mv_size = 8;
	mv.mv_data = &next;
	rc = ix_mdb_to_errno(mdb_put(t->txn, t->ix->meta, &mk, &mv, 0));
	if (rc)
		return ix_sticky(t, rc);
	char buf[3 + 8192 + 1 + JOURNAL_REC_MAX];
	uint16_t l1s = (uint16_t)l1;
	buf[0] = (char)op;
	memcpy(buf + 1, &l1s, 2);
	memcpy(buf + 3, path, l1);
	if (l2)
		memcpy(buf + 3 + l1, path2, l2);
	size_t len = 3 + l1 + l2;
	if (reclen) {
		buf[len++] = '\0';
		memcpy(buf + len, rec, reclen);
		len += reclen;
	}
	k = ix_u64_val(&seq);
	v.mv_size = len;
	v.mv_data = buf;
	return ix_sticky(t, ix_mdb_to_errno(mdb_put(t->txn, t->ix->journal, &k,
						    &v, MDB_APPEND)));
}

int ix_journal_append(struct ixtxn *t, int op, const char *path,
		      const char *path2)
{
	return journal_put(t, op, path, path2, NULL, 0);
}

int ix_journal_append_delete(struct ixtxn *t, int op, const char *path,
			     const char *rev, const uint8_t *hash)
{
	uint8_t rec[JOURNAL_REC_MAX];
	size_t rl = rev ? strlen(rev) : 0, len = 0;
	if (rl > BACKEND_REV_MAX)
		return ix_sticky(t, -EINVAL);
	rec[len++] = JOURNAL_REC_V1;
	rec[len++] = (uint8_t)rl;
	if (rl)
		memcpy(rec + len, rev, rl);
	len += rl;
	rec[len++] = hash ? 1 : 0;
	if (hash) {
		memcpy(rec + len, hash, CHASH_LEN);
		len += CHASH_LEN;
	}
	return journal_put(t, op, path, NULL, rec, len);
}

/* Reads the delete record @p (@len bytes) into @out; a record of another
 * version is left alone (the entry replays as an unconditional one). */
static int decode_delete_record(const uint8_t *p, size_t len,
				struct journal_entry *out)
{
	if (len < 1 || p[0] != JOURNAL_REC_V1)
		return 0;
	if (len < 3 || (size_t)p[1] > BACKEND_REV_MAX || len < 3u + p[1])
		return -EIO;
	size_t rl = p[1];
	memcpy(out->rev, p + 2, rl);
	out->rev[rl] = '\0';
	const uint8_t *h = p + 2 + rl;
	if (h[0] == 1) {
		if (len < 3 + rl + CHASH_LEN)
			return -EIO;
		memcpy(out->hash, h + 1, CHASH_LEN);
		out->has_hash = true;
	}
	out->known = true;
	return 0;
}

static int decode_journal(const MDB_val *k, const MDB_val *v,
			  struct journal_entry *out)
{
	uint16_t l1;
	if (k->mv_size != 8 || v->mv_size < 3)
		return -EIO;
	memcpy(&out->seq, k->mv_data, 8);
	const char *p = v->mv_data;
	out->op = (unsigned char)p[0];
	memcpy(&l1, p + 1, 2);
	if (3 + (size_t)l1 > v->mv_size || l1 >= sizeof(out->path))
		return -EIO;
	size_t rest = v->mv_size - 3 - l1;
	const char *p2 = p + 3 + l1;
	const char *nul = memchr(p2, '\0', rest);
	size_t l2 = nul ? (size_t)(nul - p2) : rest;
	if (l2 >= sizeof(out->path2))
		return -EIO;
	memcpy(out->path, p + 3, l1);
	out->path[l1] = '\0';
	memcpy(out->path2, p2, l2);
	out->path2[l2] = '\0';
	out->known = out->has_hash = false;
	out->rev[0] = '\0';
	if (!nul)
		return 0;
	return decode_delete_record((const uint8_t *)nul + 1, rest - l2 - 1,
				    out);
}

int ix_journal_first(struct ixtxn *t, struct journal_entry *out)
{
	if (t->err)
		return t->err;
	MDB_cursor *c;
	int rc = ix_mdb_to_errno(mdb_cursor_open(t->txn, t->ix->journal, &c));
	if (rc)
		return ix_sticky(t, rc);
	MDB_val k, v;
	rc = ix_mdb_to_errno(mdb_cursor_get(c, &k, &v, MDB_FIRST));
	if (!rc)
		rc = decode_journal(&k, &v, out);
	mdb_cursor_close(c);
	return ix_sticky(t, rc);
}

struct journal_walk {
	int (*fn)(void *arg, const struct journal_entry *e);
	void *arg;
	struct journal_entry *e;
};

static int journal_step(void *ctx, const MDB_val *k, const MDB_val *v)
{
	struct journal_walk *w = ctx;
	int rc = decode_journal(k, v, w->e);
	return rc ? rc : w->fn(w->arg, w->e);
}

int ix_foreach_journal(struct ixtxn *t,
		       int (*fn)(void *arg, const struct journal_entry *e),
		       void *arg)
{
	if (t->err)
		return t->err;
	struct journal_walk w = {fn, arg, malloc(sizeof(*w.e))};
	if (!w.e)
		return ix_sticky(t, -ENOMEM);
	int rc = ix_walk(t, t->ix->journal, NULL, journal_step, &w);
	free(w.e);
	return rc;
}

int ix_journal_del(struct ixtxn *t, uint64_t seq)
{
	return set_del(t, t->ix->journal, seq);
}

int64_t ix_journal_count(struct ixtxn *t)
{
	if (t->err)
		return t->err;
	MDB_stat st;
	int rc = ix_mdb_to_errno(mdb_stat(t->txn, t->ix->journal, &st));
	if (rc)
		return ix_sticky(t, rc);
	return (int64_t)st.ms_entries;
}

int ix_doom_add(struct ixtxn *t, uint64_t ino)
{
	return set_put(t, t->ix->doomed, ino);
}

int ix_doom_del(struct ixtxn *t, uint64_t ino)
{
	return set_del(t, t->ix->doomed, ino);
}

int ix_foreach_doomed(struct ixtxn *t, int (*fn)(void *arg, uint64_t ino),
		      void *arg)
{
	return set_foreach(t, t->ix->doomed, fn, arg);
}

/*
 * Unit tests for the LMDB index (hfs/index.h), against a real LMDB
 * environment in a mkdtemp directory.
 *
 * Each test opens its own index directory under tmpdir, so the inode and
 * sequence numbers it sees depend only on what it did. After every write
 * txn, and after every open, check_invariants() looks at the whole index
 * through the API: the root node, the journal (count, order, first entry)
 * and the dirty and orphan sets (each member listed once).
 */
#include <endian.h>
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lmdb.h>

#include "hfs/category.h"
#include "hfs/index.h"

#define CHECK(expr)                                                            \
	do {                                                                   \
		if (!(expr)) {                                                 \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
				__LINE__, #expr);                              \
			exit(1);                                               \
		}                                                              \
	} while (0)

#define NCHILD 16
#define NSET 16
#define NJOURNAL 16

static char tmpdir[] = "/tmp/test_index.XXXXXX";

/* What ix_foreach_child reported. */
struct child_list {
	size_t n;
	size_t stop_after; /* return 7 after this many calls; 0: never */
	char name[NCHILD][BACKEND_NAME_MAX + 1];
	uint64_t ino[NCHILD];
};

/* What ix_foreach_dirty or ix_foreach_orphan reported. */
struct ino_list {
	size_t n;
	uint64_t ino[NSET];
};

/* What ix_foreach_journal reported. */
struct journal_list {
	size_t n;
	size_t stop_after; /* return 7 after this many calls; 0: never */
	struct journal_entry e[NJOURNAL];
};

static struct journal_list inv_journal, test_journal;

static int collect_child(void *arg, const char *name, uint64_t ino)
{
	struct child_list *l = arg;

	CHECK(l->n < NCHILD);
	CHECK(strlen(name) <= BACKEND_NAME_MAX);
	strcpy(l->name[l->n], name);
	l->ino[l->n] = ino;
	l->n++;
	return l->stop_after && l->n == l->stop_after ? 7 : 0;
}

static int collect_ino(void *arg, uint64_t ino)
{
	struct ino_list *l = arg;

	CHECK(l->n < NSET);
	l->ino[l->n++] = ino;
	return 0;
}

static int collect_journal(void *arg, const struct journal_entry *e)
{
	struct journal_list *l = arg;

	CHECK(l->n < NJOURNAL);
	l->e[l->n++] = *e;
	return l->stop_after && l->n == l->stop_after ? 7 : 0;
}

static int never_called_child(void *arg, const char *name, uint64_t ino)
{
	(void)arg;
	(void)name;
	(void)ino;
	CHECK(!"callback called");
	return 0;
}

static int never_called_ino(void *arg, uint64_t ino)
{
	(void)arg;
	(void)ino;
	CHECK(!"callback called");
	return 0;
}

static int never_called_journal(void *arg, const struct journal_entry *e)
{
	(void)arg;
	(void)e;
	CHECK(!"callback called");
	return 0;
}

/* The list holds exactly the @n inodes of @want, each once. */
static bool ino_list_is(const struct ino_list *l, const uint64_t *want,
			size_t n)
{
	if (l->n != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		size_t seen = 0;

		for (size_t j = 0; j < l->n; j++)
			if (l->ino[j] == want[i])
				seen++;
		if (seen != 1)
			return false;
	}
	return true;
}

static void list_dirty(struct ixtxn *t, struct ino_list *l)
{
	memset(l, 0, sizeof(*l));
	CHECK(ix_foreach_dirty(t, collect_ino, l) == 0);
}

static void list_orphans(struct ixtxn *t, struct ino_list *l)
{
	memset(l, 0, sizeof(*l));
	CHECK(ix_foreach_orphan(t, collect_ino, l) == 0);
}

static void list_children(struct ixtxn *t, uint64_t parent,
			  struct child_list *l)
{
	memset(l, 0, sizeof(*l));
	CHECK(ix_foreach_child(t, parent, collect_child, l) == 0);
}

static void list_journal(struct ixtxn *t, struct journal_list *l)
{
	memset(l, 0, sizeof(*l));
	CHECK(ix_foreach_journal(t, collect_journal, l) == 0);
}

static bool journal_entry_eq(const struct journal_entry *a,
			     const struct journal_entry *b)
{
	return a->seq == b->seq && a->op == b->op &&
	       strcmp(a->path, b->path) == 0 && strcmp(a->path2, b->path2) == 0;
}

static void rbegin(struct hfs_index *ix, struct ixtxn *t)
{
	CHECK(ix_begin(ix, false, t) == 0);
	CHECK(t->txn != NULL);
}

static void wbegin(struct hfs_index *ix, struct ixtxn *t)
{
	CHECK(ix_begin(ix, true, t) == 0);
	CHECK(t->txn != NULL);
}

/* Whole-index invariants, seen from a fresh read txn. */
static void check_invariants(struct hfs_index *ix)
{
	struct ino_list dirty, orphans;
	struct journal_entry first;
	struct journal_list *jl = &inv_journal;
	struct ixtxn t;
	struct node root;
	char path[16];
	int64_t count;

	rbegin(ix, &t);

	CHECK(ix_get(&t, INDEX_ROOT_INO, &root) == 0);
	CHECK(root.ino == INDEX_ROOT_INO);
	CHECK(S_ISDIR(root.r.mode));
	CHECK(root.r.parent == INDEX_ROOT_INO);
	memset(path, 'x', sizeof(path));
	CHECK(ix_path(&t, INDEX_ROOT_INO, path, sizeof(path)) == 0);
	CHECK(path[0] == '\0');

	count = ix_journal_count(&t);
	CHECK(count >= 0);
	list_journal(&t, jl);
	CHECK((int64_t)jl->n == count);
	for (size_t i = 1; i < jl->n; i++)
		CHECK(jl->e[i].seq > jl->e[i - 1].seq);
	if (jl->n > 0) {
		CHECK(ix_journal_first(&t, &first) == 0);
		CHECK(journal_entry_eq(&first, &jl->e[0]));
	} else {
		CHECK(ix_journal_first(&t, &first) == -ENOENT);
	}

	list_dirty(&t, &dirty);
	CHECK(ino_list_is(&dirty, dirty.ino, dirty.n));
	list_orphans(&t, &orphans);
	CHECK(ino_list_is(&orphans, orphans.ino, orphans.n));

	CHECK(ix_commit(&t) == 0);
	CHECK(t.txn == NULL);
}

static void commit_ok(struct ixtxn *t)
{
	struct hfs_index *ix = t->ix;

	CHECK(ix_commit(t) == 0);
	check_invariants(ix);
}

static void abort_txn(struct ixtxn *t)
{
	struct hfs_index *ix = t->ix;

	ix_abort(t);
	CHECK(t->txn == NULL);
	check_invariants(ix);
}

static void ix_dir(const char *name, char *buf, size_t len)
{
	CHECK((size_t)snprintf(buf, len, "%s/%s", tmpdir, name) < len);
}

static struct hfs_index *open_ix(const char *dir)
{
	struct hfs_index *ix = NULL;

	CHECK(index_open(dir, &ix) == 0);
	CHECK(ix != NULL);
	check_invariants(ix);
	return ix;
}

/* Sets every field of @n to a value derived from @seed. */
static void fill_node(struct node *n, uint64_t ino, uint64_t parent,
		      const char *name, unsigned seed)
{
	memset(n, 0, sizeof(*n));
	n->ino = ino;
	n->r.parent = parent;
	n->r.size = 0x0123456789abcdefULL + seed;
	n->r.atime_ns = 1700000000123456789LL + seed;
	n->r.mtime_ns = 1700000001987654321LL + seed;
	n->r.ctime_ns = -1234567890LL - seed;
	n->r.dirty_since = 1700000002LL + seed;
	n->r.listed_at = 1700000003LL + seed;
	n->r.last_upload = 1700000004LL + seed;
	n->r.gen = 0xfedcba9876543210ULL - seed;
	n->r.mode = (seed & 1 ? S_IFDIR | 0750 : S_IFREG | 0640) + seed % 8;
	n->r.uid = 1000 + seed;
	n->r.gid = 2000 + seed;
	n->r.flags =
		(NODE_DIRTY | NODE_PARTIAL | NODE_HAS_HASH | NODE_LOST) ^ seed;
	n->r.cat = (uint8_t)(CAT_MODELS + seed % 2);
	for (size_t i = 0; i < CHASH_LEN; i++)
		n->r.remote_hash[i] = (uint8_t)(i * 7 + seed);
	for (size_t i = 0; i < BACKEND_REV_MAX; i++)
		n->r.rev[i] = (char)('0' + (i + seed) % 10);
	n->r.namelen = 0; /* ix_put stores the name's length */
	strcpy(n->name, name);
}

static void check_node_eq(const struct node *got, const struct node *want)
{
	CHECK(got->ino == want->ino);
	CHECK(got->r.parent == want->r.parent);
	CHECK(got->r.size == want->r.size);
	CHECK(got->r.atime_ns == want->r.atime_ns);
	CHECK(got->r.mtime_ns == want->r.mtime_ns);
	CHECK(got->r.ctime_ns == want->r.ctime_ns);
	CHECK(got->r.dirty_since == want->r.dirty_since);
	CHECK(got->r.listed_at == want->r.listed_at);
	CHECK(got->r.last_upload == want->r.last_upload);
	CHECK(got->r.gen == want->r.gen);
	CHECK(got->r.mode == want->r.mode);
	CHECK(got->r.uid == want->r.uid);
	CHECK(got->r.gid == want->r.gid);
	CHECK(got->r.flags == want->r.flags);
	CHECK(got->r.cat == want->r.cat);
	CHECK(memcmp(got->r.remote_hash, want->r.remote_hash, CHASH_LEN) == 0);
	CHECK(strcmp(got->r.rev, want->r.rev) == 0);
	CHECK(got->r.namelen == strlen(want->name));
	CHECK(strcmp(got->name, want->name) == 0);
}

/* Puts a node in its own write txn. */
static void put_node(struct hfs_index *ix, const struct node *n)
{
	struct ixtxn t;

	wbegin(ix, &t);
	CHECK(ix_put(&t, n) == 0);
	commit_ok(&t);
}

static uint64_t alloc_ino(struct hfs_index *ix)
{
	struct ixtxn t;
	uint64_t ino = 0;

	wbegin(ix, &t);
	CHECK(ix_alloc_ino(&t, &ino) == 0);
	commit_ok(&t);
	return ino;
}

static void expect_node(struct hfs_index *ix, const struct node *want)
{
	struct ixtxn t;
	struct node got;

	rbegin(ix, &t);
	CHECK(ix_get(&t, want->ino, &got) == 0);
	check_node_eq(&got, want);
	CHECK(ix_commit(&t) == 0);
}

/* ix_get gives -ENOENT and leaves its out-parameter alone. */
static void expect_no_node(struct ixtxn *t, uint64_t ino)
{
	struct node got, before;

	memset(&got, 0x5a, sizeof(got));
	before = got;
	CHECK(ix_get(t, ino, &got) == -ENOENT);
	CHECK(memcmp(&got, &before, sizeof(got)) == 0);
}

static void expect_lookup(struct ixtxn *t, uint64_t parent, const char *name,
			  uint64_t want_ino, const char *want_exact)
{
	char exact[BACKEND_NAME_MAX + 1];
	uint64_t ino = 0;

	memset(exact, 'z', sizeof(exact));
	CHECK(ix_lookup(t, parent, name, &ino, exact) == 0);
	CHECK(ino == want_ino);
	CHECK(strcmp(exact, want_exact) == 0);
	ino = 0;
	CHECK(ix_lookup(t, parent, name, &ino, NULL) == 0);
	CHECK(ino == want_ino);
}

static void expect_no_lookup(struct ixtxn *t, uint64_t parent, const char *name)
{
	char exact[BACKEND_NAME_MAX + 1];
	uint64_t ino = 4242;

	memset(exact, 'z', sizeof(exact));
	CHECK(ix_lookup(t, parent, name, &ino, exact) == -ENOENT);
	CHECK(ino == 4242);
	CHECK(exact[0] == 'z');
}

/* ix_path in its own read txn. */
static int path_of(struct hfs_index *ix, uint64_t ino, char *buf, size_t len)
{
	struct ixtxn t;
	int rc;

	rbegin(ix, &t);
	rc = ix_path(&t, ino, buf, len);
	ix_abort(&t);
	return rc;
}

/*
 * Directory entries are keyed by fold_name (fold.h): names that fold
 * alike are one entry, whatever their byte lengths.
 */
static void test_fold(void)
{
	char sig[BACKEND_NAME_MAX + 1], sig2[BACKEND_NAME_MAX + 1];
	struct hfs_index *ix;
	struct child_list l;
	struct ixtxn t;
	char dir[256];
	size_t i;

	ix_dir("fold", dir, sizeof(dir));
	ix = open_ix(dir);
	/* Two names folding to more than 400 bytes (hashed keys), differing
	 * only in their last character. */
	for (i = 0; i + 4 <= BACKEND_NAME_MAX; i += 4)
		memcpy(sig + i, "\xf0\x9d\x85\xa0", 4);
	sig[i] = '\0';
	strcpy(sig2, sig);
	memcpy(sig2 + i - 4, "\xf0\x9d\x85\xa1", 4);

	wbegin(ix, &t);
	CHECK(ix_link(&t, 1, "Caf\xc3\xa9", 10) == 0);
	CHECK(ix_link(&t, 1,
		      "Stra\xc3\x9f"
		      "e",
		      11) == 0);
	CHECK(ix_link(&t, 1, "\xce\xa3\xce\x9f\xce\xa6\xce\x9f\xce\xa3", 12) ==
	      0);
	CHECK(ix_link(&t, 1, "\xc4\xb0stanbul", 13) == 0);
	CHECK(ix_link(&t, 1, "\xe2\x84\xaa", 14) == 0); /* Kelvin sign */
	CHECK(ix_link(&t, 1, "BAD\xff", 15) == 0);
	CHECK(ix_link(&t, 1, sig, 16) == 0);
	CHECK(ix_link(&t, 1, sig2, 17) == 0);
	commit_ok(&t);

	rbegin(ix, &t);
	expect_lookup(&t, 1, "CAF\xc3\x89", 10, "Caf\xc3\xa9");
	expect_lookup(&t, 1, "cafe\xcc\x81", 10, "Caf\xc3\xa9"); /* NFD */
	expect_lookup(&t, 1,
		      "STRA\xc3\x9f"
		      "E",
		      11,
		      "Stra\xc3\x9f"
		      "e");
	expect_lookup(&t, 1,
		      "stra\xe1\xba\x9e"
		      "e",
		      11,
		      "Stra\xc3\x9f"
		      "e");
	expect_no_lookup(&t, 1, "STRASSE");
	expect_lookup(&t, 1, "\xcf\x83\xce\xbf\xcf\x86\xce\xbf\xcf\x83", 12,
		      "\xce\xa3\xce\x9f\xce\xa6\xce\x9f\xce\xa3");
	expect_no_lookup(&t, 1, "\xcf\x83\xce\xbf\xcf\x86\xce\xbf\xcf\x82");
	expect_lookup(&t, 1, "ISTANBUL", 13, "\xc4\xb0stanbul");
	expect_no_lookup(&t, 1, "\xc4\xb1stanbul");
	expect_lookup(&t, 1, "K", 14, "\xe2\x84\xaa");
	expect_lookup(&t, 1, "bad\xff", 15, "BAD\xff");
	expect_no_lookup(&t, 1, "bad\xfe");
	expect_lookup(&t, 1, sig, 16, sig);
	expect_lookup(&t, 1, sig2, 17, sig2);
	list_children(&t, 1, &l);
	CHECK(l.n == 8);
	CHECK(ix_commit(&t) == 0);

	/* Linking a name that folds like another inode's entry keeps both:
	 * the second as an alias, found by its exact name. */
	wbegin(ix, &t);
	CHECK(ix_link(&t, 1, "CAF\xc3\x89", 20) == 0);
	CHECK(ix_link(&t, 1, "cafe\xcc\x81", 21) == 0);
	commit_ok(&t);
	rbegin(ix, &t);
	expect_lookup(&t, 1, "Caf\xc3\xa9", 10, "Caf\xc3\xa9");
	expect_lookup(&t, 1, "CAF\xc3\x89", 20, "CAF\xc3\x89");
	expect_lookup(&t, 1, "cafe\xcc\x81", 21, "cafe\xcc\x81");
	expect_lookup(&t, 1, "caf\xc3\xa9", 10, "Caf\xc3\xa9"); /* primary */
	list_children(&t, 1, &l);
	CHECK(l.n == 10);
	CHECK(ix_commit(&t) == 0);

	/* Relinking a name replaces its own entry, primary or alias. */
	wbegin(ix, &t);
	CHECK(ix_link(&t, 1, "CAF\xc3\x89", 22) == 0);
	CHECK(ix_link(&t, 1, "Caf\xc3\xa9", 23) == 0);
	expect_lookup(&t, 1, "CAF\xc3\x89", 22, "CAF\xc3\x89");
	expect_lookup(&t, 1, "Caf\xc3\xa9", 23, "Caf\xc3\xa9");
	list_children(&t, 1, &l);
	CHECK(l.n == 10);
	/* An inode relinked under another spelling replaces its entry. */
	CHECK(ix_link(&t, 1, "CAF\xc3\xa9", 23) == 0);
	expect_lookup(&t, 1, "caf\xc3\xa9", 23, "CAF\xc3\xa9");
	commit_ok(&t);

	/* Unlinking the primary promotes an alias; an alias goes alone. */
	wbegin(ix, &t);
	CHECK(ix_unlink(&t, 1, "CAF\xc3\xa9") == 0);
	expect_lookup(&t, 1, "Caf\xc3\xa9", 22, "CAF\xc3\x89");
	expect_lookup(&t, 1, "cafe\xcc\x81", 21, "cafe\xcc\x81");
	CHECK(ix_unlink(&t, 1, "cafe\xcc\x81") == 0);
	expect_lookup(&t, 1, "cafe\xcc\x81", 22, "CAF\xc3\x89");
	list_children(&t, 1, &l);
	CHECK(l.n == 8);
	CHECK(ix_unlink(&t, 1, "caf\xc3\xa9") == 0); /* the one it folds like */
	expect_no_lookup(&t, 1, "CAF\xc3\x89");
	CHECK(ix_unlink(&t, 1, "CAF\xc3\x89") == -ENOENT);
	CHECK(ix_unlink(&t, 1, sig) == 0);
	expect_no_lookup(&t, 1, sig);
	expect_lookup(&t, 1, sig2, 17, sig2);
	list_children(&t, 1, &l);
	CHECK(l.n == 6);
	commit_ok(&t);
	index_close(ix);
}

/*
 * index_open creates the directory and the root; a reopen keeps the root
 * as it was and everything committed.
 */
static void test_open(void)
{
	struct ino_list l;
	struct hfs_index *ix;
	struct journal_entry je;
	struct node root0, root1, n;
	struct stat st;
	struct ixtxn t;
	char dir[256];
	uint64_t ino;

	ix_dir("open", dir, sizeof(dir));
	CHECK(stat(dir, &st) < 0 && errno == ENOENT);
	ix = open_ix(dir);
	CHECK(stat(dir, &st) == 0 && S_ISDIR(st.st_mode));

	rbegin(ix, &t);
	CHECK(ix_get(&t, INDEX_ROOT_INO, &root0) == 0);
	CHECK(root0.ino == INDEX_ROOT_INO);
	CHECK(S_ISDIR(root0.r.mode));
	CHECK(root0.r.parent == INDEX_ROOT_INO);
	CHECK(ix_has_children(&t, INDEX_ROOT_INO) == 0);
	CHECK(ix_journal_count(&t) == 0);
	CHECK(ix_commit(&t) == 0);

	ino = alloc_ino(ix);
	CHECK(ino != INDEX_ROOT_INO);
	fill_node(&n, ino, INDEX_ROOT_INO, "Keep.txt", 1);
	wbegin(ix, &t);
	CHECK(ix_put(&t, &n) == 0);
	CHECK(ix_link(&t, INDEX_ROOT_INO, n.name, ino) == 0);
	CHECK(ix_dirty_add(&t, ino) == 0);
	CHECK(ix_orphan_add(&t, ino) == 0);
	CHECK(ix_journal_append(&t, JOP_MKDIR, "/Keep.txt", NULL) == 0);
	commit_ok(&t);
	CHECK(index_sync(ix) == 0);
	index_close(ix);

	ix = open_ix(dir);
	rbegin(ix, &t);
	CHECK(ix_get(&t, INDEX_ROOT_INO, &root1) == 0);
	check_node_eq(&root1, &root0);
	CHECK(ix_get(&t, ino, &root1) == 0);
	check_node_eq(&root1, &n);
	expect_lookup(&t, INDEX_ROOT_INO, "keep.TXT", ino, "Keep.txt");
	CHECK(ix_has_children(&t, INDEX_ROOT_INO) == 1);
	list_dirty(&t, &l);
	CHECK(ino_list_is(&l, &ino, 1));
	list_orphans(&t, &l);
	CHECK(ino_list_is(&l, &ino, 1));
	CHECK(ix_journal_count(&t) == 1);
	CHECK(ix_journal_first(&t, &je) == 0);
	CHECK(je.op == JOP_MKDIR);
	CHECK(strcmp(je.path, "/Keep.txt") == 0);
	CHECK(ix_commit(&t) == 0);
	index_close(ix);
}

/* Writes @layout as the "layout" value of the closed index in @dir. */
static void set_layout(const char *dir, uint32_t layout)
{
	MDB_val k = {.mv_size = 6, .mv_data = (void *)"layout"};
	MDB_val v = {.mv_size = sizeof(layout), .mv_data = &layout};
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;

	CHECK(mdb_env_create(&env) == 0);
	CHECK(mdb_env_set_maxdbs(env, 8) == 0);
	CHECK(mdb_env_open(env, dir, 0, 0600) == 0);
	CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0);
	CHECK(mdb_dbi_open(txn, "meta", 0, &dbi) == 0);
	CHECK(mdb_put(txn, dbi, &k, &v, 0) == 0);
	CHECK(mdb_txn_commit(txn) == 0);
	mdb_env_close(env);
}

static void test_layout(void)
{
	struct hfs_index *ix, *sentinel = (struct hfs_index *)&ix;
	struct node n;
	char dir[256];

	ix_dir("layout", dir, sizeof(dir));
	ix = open_ix(dir);
	fill_node(&n, alloc_ino(ix), INDEX_ROOT_INO, "data", 2);
	put_node(ix, &n);
	index_close(ix);

	set_layout(dir, INDEX_LAYOUT + 1);
	ix = sentinel;
	CHECK(index_open(dir, &ix) == -EPROTO);
	CHECK(ix == sentinel);
	/* Refused twice: the failed open changed nothing. */
	CHECK(index_open(dir, &ix) == -EPROTO);
	CHECK(ix == sentinel);

	/* With the right version back, the data is still there. */
	set_layout(dir, INDEX_LAYOUT);
	ix = open_ix(dir);
	expect_node(ix, &n);
	index_close(ix);
}

/* An index of layout 1, written with LMDB directly as that layout did. */
struct v1_entry {
	uint64_t parent, ino;
	const char *name;
};

static void write_v1_index(const char *dir, const struct v1_entry *e, size_t n)
{
	MDB_dbi meta, nodes, dirents;
	uint32_t layout = 1;
	uint64_t next = 100;
	MDB_env *env;
	MDB_txn *txn;

	CHECK(mkdir(dir, 0700) == 0);
	CHECK(mdb_env_create(&env) == 0);
	CHECK(mdb_env_set_maxdbs(env, 16) == 0);
	CHECK(mdb_env_open(env, dir, 0, 0600) == 0);
	CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0);
	CHECK(mdb_dbi_open(txn, "meta", MDB_CREATE, &meta) == 0);
	CHECK(mdb_dbi_open(txn, "nodes", MDB_CREATE | MDB_INTEGERKEY, &nodes) ==
	      0);
	CHECK(mdb_dbi_open(txn, "dirents", MDB_CREATE, &dirents) == 0);
	MDB_val k = {.mv_size = 6, .mv_data = (void *)"layout"};
	MDB_val v = {.mv_size = sizeof(layout), .mv_data = &layout};
	CHECK(mdb_put(txn, meta, &k, &v, 0) == 0);
	k.mv_size = 8;
	k.mv_data = (void *)"next_ino";
	v.mv_size = sizeof(next);
	v.mv_data = &next;
	CHECK(mdb_put(txn, meta, &k, &v, 0) == 0);
	for (size_t i = 0; i <= n; i++) {
		/* The root first, then each entry's node and dirent. */
		struct node nd;
		char buf[sizeof(struct node_rec) + BACKEND_NAME_MAX];
		char kb[8 + BACKEND_NAME_MAX], vb[8 + BACKEND_NAME_MAX];
		uint64_t ino = i ? e[i - 1].ino : INDEX_ROOT_INO;
		const char *name = i ? e[i - 1].name : "";
		size_t nl = strlen(name);

		fill_node(&nd, ino, i ? e[i - 1].parent : INDEX_ROOT_INO, name,
			  (unsigned)i);
		nd.r.mode = i == 0 || ino < 5 ? S_IFDIR | 0755 : S_IFREG | 0644;
		nd.r.namelen = (uint16_t)nl;
		memcpy(buf, &nd.r, sizeof(nd.r));
		memcpy(buf + sizeof(nd.r), name, nl);
		k.mv_size = sizeof(ino);
		k.mv_data = &ino;
		v.mv_size = sizeof(nd.r) + nl;
		v.mv_data = buf;
		CHECK(mdb_put(txn, nodes, &k, &v, 0) == 0);
		if (i == 0)
			continue;
		uint64_t be = htobe64(e[i - 1].parent);
		memcpy(kb, &be, 8);
		for (size_t j = 0; j < nl; j++) /* layout 1: ASCII lowered */
			kb[8 + j] = name[j] >= 'A' && name[j] <= 'Z'
					    ? (char)(name[j] - 'A' + 'a')
					    : name[j];
		memcpy(vb, &ino, 8);
		memcpy(vb + 8, name, nl);
		k.mv_size = 8 + nl;
		k.mv_data = kb;
		v.mv_size = 8 + nl;
		v.mv_data = vb;
		CHECK(mdb_put(txn, dirents, &k, &v, MDB_NOOVERWRITE) == 0);
	}
	CHECK(mdb_txn_commit(txn) == 0);
	mdb_env_close(env);
}

/* Reads the layout number of the closed index in @dir. */
static uint32_t read_layout(const char *dir)
{
	MDB_val k = {.mv_size = 6, .mv_data = (void *)"layout"}, v;
	uint32_t layout = 0;
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;

	CHECK(mdb_env_create(&env) == 0);
	CHECK(mdb_env_set_maxdbs(env, 16) == 0);
	CHECK(mdb_env_open(env, dir, MDB_RDONLY, 0600) == 0);
	CHECK(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) == 0);
	CHECK(mdb_dbi_open(txn, "meta", 0, &dbi) == 0);
	CHECK(mdb_get(txn, dbi, &k, &v) == 0);
	CHECK(v.mv_size == sizeof(layout));
	memcpy(&layout, v.mv_data, sizeof(layout));
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return layout;
}

/* The migrated index of test_migrate_v1, as it must be. */
static void expect_migrated(struct hfs_index *ix)
{
	struct child_list l;
	struct ixtxn t;
	char path[64];
	bool seen[16] = {false};

	rbegin(ix, &t);
	/* ASCII names as before. */
	expect_lookup(&t, INDEX_ROOT_INO, "DATA", 2, "Data");
	expect_lookup(&t, 2, "candles", 3, "Candles");
	/* Café and CAFÉ were two entries; each stays, by its exact name. */
	expect_lookup(&t, INDEX_ROOT_INO, "Caf\xc3\xa9", 5, "Caf\xc3\xa9");
	expect_lookup(&t, INDEX_ROOT_INO, "CAF\xc3\x89", 6, "CAF\xc3\x89");
	/* Another spelling finds one of them. */
	uint64_t ino = 0;
	CHECK(ix_lookup(&t, INDEX_ROOT_INO, "caf\xc3\xa9", &ino, NULL) == 0);
	CHECK(ino == 5 || ino == 6);
	/* Non-ASCII names now fold as Unicode. */
	expect_lookup(&t, 2, "\xc3\xa9t\xc3\xa9", 7, "\xc3\xa9t\xc3\xa9");
	expect_lookup(&t, 2, "E\xcc\x81te\xcc\x81", 8, "E\xcc\x81te\xcc\x81");
	CHECK(ix_lookup(&t, 2, "\xc3\x89T\xc3\x89", &ino, NULL) == 0);
	CHECK(ino == 7 || ino == 8);
	/* The Kelvin sign folds to k: it meets the ASCII k. */
	expect_lookup(&t, INDEX_ROOT_INO, "k", 9, "k");
	expect_lookup(&t, INDEX_ROOT_INO, "\xe2\x84\xaa", 10, "\xe2\x84\xaa");
	expect_lookup(&t, INDEX_ROOT_INO, "K", 9, "k");
	/* Not UTF-8: as it was. */
	expect_lookup(&t, 3, "X\xff", 11, "x\xff");
	/* Every node is reachable by a listing, and its path is intact. */
	list_children(&t, INDEX_ROOT_INO, &l);
	CHECK(l.n == 5);
	for (size_t i = 0; i < l.n; i++)
		seen[l.ino[i]] = true;
	list_children(&t, 2, &l);
	CHECK(l.n == 3);
	for (size_t i = 0; i < l.n; i++)
		seen[l.ino[i]] = true;
	list_children(&t, 3, &l);
	CHECK(l.n == 1 && l.ino[0] == 11);
	seen[11] = true;
	for (uint64_t i = 2; i <= 11; i++)
		CHECK(seen[i] || i == 4);
	CHECK(ix_path(&t, 11, path, sizeof(path)) == 0);
	CHECK(strcmp(path, "/Data/Candles/x\xff") == 0);
	CHECK(ix_commit(&t) == 0);
}

/*
 * An index of layout 1 (dirents keyed with ASCII letters lowered) is
 * migrated at open: rekeyed by fold_name, the layout number bumped, two
 * entries that now fold alike both kept, no node lost; a second open
 * finds layout 2 and changes nothing.
 */
static void test_migrate_v1(void)
{
	static const struct v1_entry e[] = {
		{INDEX_ROOT_INO, 2, "Data"},
		{2, 3, "Candles"},
		{INDEX_ROOT_INO, 5, "Caf\xc3\xa9"},
		{INDEX_ROOT_INO, 6, "CAF\xc3\x89"},
		{2, 7, "\xc3\xa9t\xc3\xa9"},
		{2, 8, "E\xcc\x81te\xcc\x81"}, /* NFD: folds like 7 */
		{INDEX_ROOT_INO, 9, "k"},
		{INDEX_ROOT_INO, 10, "\xe2\x84\xaa"},
		{3, 11, "x\xff"},
	};
	struct hfs_index *ix;
	struct node n;
	struct ixtxn t;
	char dir[256];

	ix_dir("migrate", dir, sizeof(dir));
	write_v1_index(dir, e, sizeof(e) / sizeof(e[0]));
	CHECK(read_layout(dir) == 1);

	ix = open_ix(dir);
	expect_migrated(ix);
	/* The nodes themselves are untouched. */
	rbegin(ix, &t);
	CHECK(ix_get(&t, 6, &n) == 0);
	CHECK(strcmp(n.name, "CAF\xc3\x89") == 0 &&
	      n.r.parent == INDEX_ROOT_INO);
	CHECK(ix_commit(&t) == 0);
	/* The index works on: a new entry, an alias unlinked. */
	wbegin(ix, &t);
	CHECK(ix_unlink(&t, 2, "E\xcc\x81te\xcc\x81") == 0);
	expect_lookup(&t, 2, "\xc3\x89T\xc3\x89", 7, "\xc3\xa9t\xc3\xa9");
	CHECK(ix_link(&t, 2, "E\xcc\x81te\xcc\x81", 8) == 0);
	commit_ok(&t);
	index_close(ix);
	CHECK(read_layout(dir) == INDEX_LAYOUT);

	/* Reopened: already layout 2, the same. */
	ix = open_ix(dir);
	expect_migrated(ix);
	index_close(ix);
}

static void test_alloc_ino(void)
{
	struct hfs_index *ix;
	struct ixtxn t;
	uint64_t a = 0, b = 0, c, d = 0, e, f;
	char dir[256];

	ix_dir("alloc", dir, sizeof(dir));
	ix = open_ix(dir);

	wbegin(ix, &t);
	CHECK(ix_alloc_ino(&t, &a) == 0);
	CHECK(a > INDEX_ROOT_INO);
	CHECK(ix_alloc_ino(&t, &b) == 0);
	CHECK(b > a);
	commit_ok(&t);

	c = alloc_ino(ix);
	CHECK(c > b);

	wbegin(ix, &t);
	CHECK(ix_alloc_ino(&t, &d) == 0);
	CHECK(d > c);
	abort_txn(&t);

	e = alloc_ino(ix);
	CHECK(e > c);
	index_close(ix);

	ix = open_ix(dir);
	f = alloc_ino(ix);
	CHECK(f > e);
	index_close(ix);
}

static void test_nodes(void)
{
	char long_name[BACKEND_NAME_MAX + 1];
	struct node a, b, got;
	struct hfs_index *ix;
	struct ixtxn t;
	char dir[256];

	for (size_t i = 0; i < BACKEND_NAME_MAX; i++)
		long_name[i] = (char)((i % 2 ? 'a' : 'A') + i % 26);
	long_name[BACKEND_NAME_MAX] = '\0';

	ix_dir("nodes", dir, sizeof(dir));
	ix = open_ix(dir);
	fill_node(&a, alloc_ino(ix), INDEX_ROOT_INO, "x", 3);
	fill_node(&b, alloc_ino(ix), a.ino, long_name, 4);

	/* A txn sees its own puts; the next txn sees them committed. */
	wbegin(ix, &t);
	CHECK(ix_put(&t, &a) == 0);
	CHECK(ix_put(&t, &b) == 0);
	CHECK(ix_get(&t, a.ino, &got) == 0);
	check_node_eq(&got, &a);
	CHECK(ix_get(&t, b.ino, &got) == 0);
	check_node_eq(&got, &b);
	commit_ok(&t);
	expect_node(ix, &a);
	expect_node(ix, &b);
	CHECK(strlen(b.name) == BACKEND_NAME_MAX);

	/* Replacing: every field changes, and the name shrinks to 1 byte. */
	fill_node(&b, b.ino, INDEX_ROOT_INO, "y", 5);
	put_node(ix, &b);
	expect_node(ix, &b);
	expect_node(ix, &a);

	/* And grows back to 255. */
	fill_node(&a, a.ino, b.ino, long_name, 6);
	put_node(ix, &a);
	expect_node(ix, &a);
	expect_node(ix, &b);

	wbegin(ix, &t);
	CHECK(ix_del(&t, a.ino) == 0);
	expect_no_node(&t, a.ino);
	commit_ok(&t);
	rbegin(ix, &t);
	expect_no_node(&t, a.ino);
	CHECK(ix_get(&t, b.ino, &got) == 0);
	check_node_eq(&got, &b);
	CHECK(ix_commit(&t) == 0);

	index_close(ix);
	ix = open_ix(dir);
	rbegin(ix, &t);
	expect_no_node(&t, a.ino);
	ix_abort(&t);
	expect_node(ix, &b);
	index_close(ix);
}

/*
 * Parents chosen so their numbers share leading bytes, big- or
 * little-endian: 1 and 256 and 65536, 2 and 257, 1 and 65537 and
 * 0x100000001. Parent 3 has no children and sits between two that do.
 */
static const uint64_t parents[] = {1, 2, 256, 257, 65536, 65537, 0x100000001};
#define NPARENTS (sizeof(parents) / sizeof(parents[0]))

/* Linked in this order; listed in folded-key order. */
static const char *const child_names[] = {"beta", "Alpha", "GAMMA", "alpha2"};
static const size_t child_order[] = {1, 3, 0, 2};
#define NCHILDREN (sizeof(child_names) / sizeof(child_names[0]))

static uint64_t child_ino(size_t pi, size_t ci)
{
	return ((uint64_t)1 << 40) * (pi + 1) + ci;
}

static void expect_children(struct ixtxn *t, size_t pi)
{
	struct child_list l;

	list_children(t, parents[pi], &l);
	CHECK(l.n == NCHILDREN);
	for (size_t i = 0; i < NCHILDREN; i++) {
		size_t ci = child_order[i];

		CHECK(strcmp(l.name[i], child_names[ci]) == 0);
		CHECK(l.ino[i] == child_ino(pi, ci));
	}
	CHECK(ix_has_children(t, parents[pi]) == 1);
}

static void test_dirents(void)
{
	char name255[BACKEND_NAME_MAX + 2], upper255[BACKEND_NAME_MAX + 2];
	struct hfs_index *ix;
	struct child_list l;
	struct ixtxn t;
	char dir[256];

	ix_dir("dirents", dir, sizeof(dir));
	ix = open_ix(dir);

	wbegin(ix, &t);
	for (size_t pi = 0; pi < NPARENTS; pi++)
		for (size_t ci = 0; ci < NCHILDREN; ci++)
			CHECK(ix_link(&t, parents[pi], child_names[ci],
				      child_ino(pi, ci)) == 0);
	/* Visible in the writing txn already. */
	expect_lookup(&t, 256, "Alpha", child_ino(2, 1), "Alpha");
	commit_ok(&t);

	rbegin(ix, &t);
	for (size_t pi = 0; pi < NPARENTS; pi++) {
		uint64_t p = parents[pi];

		expect_children(&t, pi);
		for (size_t ci = 0; ci < NCHILDREN; ci++)
			expect_lookup(&t, p, child_names[ci], child_ino(pi, ci),
				      child_names[ci]);
		/* Case differs: same entry, the stored exact name. */
		expect_lookup(&t, p, "alpha", child_ino(pi, 1), "Alpha");
		expect_lookup(&t, p, "ALPHA2", child_ino(pi, 3), "alpha2");
		expect_lookup(&t, p, "BeTa", child_ino(pi, 0), "beta");
		expect_lookup(&t, p, "gamma", child_ino(pi, 2), "GAMMA");
		expect_no_lookup(&t, p, "delta");
		expect_no_lookup(&t, p, "alph");
		expect_no_lookup(&t, p, "alpha22");
	}
	/* A parent with no entries, between two with some. */
	memset(&l, 0, sizeof(l));
	CHECK(ix_foreach_child(&t, 3, never_called_child, NULL) == 0);
	CHECK(ix_has_children(&t, 3) == 0);
	CHECK(ix_has_children(&t, 0x100000000) == 0);
	CHECK(ix_has_children(&t, 258) == 0);
	expect_no_lookup(&t, 3, "Alpha");
	/* The callback's non-zero return stops the walk and is returned. */
	memset(&l, 0, sizeof(l));
	l.stop_after = 2;
	CHECK(ix_foreach_child(&t, 256, collect_child, &l) == 7);
	CHECK(l.n == 2);
	CHECK(strcmp(l.name[0], "Alpha") == 0);
	CHECK(strcmp(l.name[1], "alpha2") == 0);
	memset(&l, 0, sizeof(l));
	l.stop_after = 1;
	CHECK(ix_foreach_child(&t, 0x100000001, collect_child, &l) == 7);
	CHECK(l.n == 1);
	CHECK(ix_commit(&t) == 0);

	/* Unlink one entry of parent 256. */
	wbegin(ix, &t);
	CHECK(ix_unlink(&t, 256, "Alpha") == 0);
	expect_no_lookup(&t, 256, "Alpha");
	expect_no_lookup(&t, 256, "alpha");
	commit_ok(&t);
	rbegin(ix, &t);
	expect_no_lookup(&t, 256, "Alpha");
	list_children(&t, 256, &l);
	CHECK(l.n == 3);
	CHECK(strcmp(l.name[0], "alpha2") == 0 && l.ino[0] == child_ino(2, 3));
	CHECK(strcmp(l.name[1], "beta") == 0 && l.ino[1] == child_ino(2, 0));
	CHECK(strcmp(l.name[2], "GAMMA") == 0 && l.ino[2] == child_ino(2, 2));
	for (size_t pi = 0; pi < NPARENTS; pi++)
		if (parents[pi] != 256)
			expect_children(&t, pi);
	CHECK(ix_commit(&t) == 0);

	/* Empty parent 256; its neighbours keep theirs. */
	wbegin(ix, &t);
	CHECK(ix_unlink(&t, 256, "alpha2") == 0);
	CHECK(ix_unlink(&t, 256, "beta") == 0);
	CHECK(ix_unlink(&t, 256, "GAMMA") == 0);
	CHECK(ix_has_children(&t, 256) == 0);
	commit_ok(&t);
	rbegin(ix, &t);
	CHECK(ix_has_children(&t, 256) == 0);
	CHECK(ix_foreach_child(&t, 256, never_called_child, NULL) == 0);
	for (size_t pi = 0; pi < NPARENTS; pi++)
		if (parents[pi] != 256)
			expect_children(&t, pi);
	CHECK(ix_commit(&t) == 0);

	/* Names of 255 bytes link; 256 do not. */
	for (size_t i = 0; i < BACKEND_NAME_MAX + 1; i++) {
		name255[i] = (char)('a' + i % 26);
		upper255[i] = (char)('A' + i % 26);
	}
	name255[BACKEND_NAME_MAX] = upper255[BACKEND_NAME_MAX] = '\0';
	wbegin(ix, &t);
	CHECK(ix_link(&t, 4, name255, 77) == 0);
	commit_ok(&t);
	rbegin(ix, &t);
	expect_lookup(&t, 4, upper255, 77, name255);
	list_children(&t, 4, &l);
	CHECK(l.n == 1 && l.ino[0] == 77 && strcmp(l.name[0], name255) == 0);
	CHECK(ix_commit(&t) == 0);
	name255[BACKEND_NAME_MAX] = 'v';
	name255[BACKEND_NAME_MAX + 1] = '\0';
	wbegin(ix, &t);
	CHECK(ix_link(&t, 5, name255, 78) == -ENAMETOOLONG);
	abort_txn(&t);
	rbegin(ix, &t);
	CHECK(ix_has_children(&t, 5) == 0);
	CHECK(ix_commit(&t) == 0);

	/* All of it survives a reopen. */
	index_close(ix);
	ix = open_ix(dir);
	rbegin(ix, &t);
	for (size_t pi = 0; pi < NPARENTS; pi++)
		if (parents[pi] != 256)
			expect_children(&t, pi);
	CHECK(ix_has_children(&t, 256) == 0);
	CHECK(ix_commit(&t) == 0);
	index_close(ix);
}

static void test_path(void)
{
	struct node a, b, c;
	struct hfs_index *ix;
	struct ixtxn t;
	char buf[64], dir[256];

	ix_dir("path", dir, sizeof(dir));
	ix = open_ix(dir);
	fill_node(&a, alloc_ino(ix), INDEX_ROOT_INO, "a", 1);
	fill_node(&b, alloc_ino(ix), a.ino, "b", 3);
	fill_node(&c, alloc_ino(ix), b.ino, "c", 4);
	wbegin(ix, &t);
	CHECK(ix_put(&t, &a) == 0);
	CHECK(ix_put(&t, &b) == 0);
	CHECK(ix_put(&t, &c) == 0);
	CHECK(ix_link(&t, INDEX_ROOT_INO, "a", a.ino) == 0);
	CHECK(ix_link(&t, a.ino, "b", b.ino) == 0);
	CHECK(ix_link(&t, b.ino, "c", c.ino) == 0);
	CHECK(ix_path(&t, c.ino, buf, sizeof(buf)) == 0);
	CHECK(strcmp(buf, "/a/b/c") == 0);
	commit_ok(&t);

	memset(buf, 'x', sizeof(buf));
	CHECK(path_of(ix, INDEX_ROOT_INO, buf, 1) == 0);
	CHECK(buf[0] == '\0');
	CHECK(path_of(ix, a.ino, buf, sizeof(buf)) == 0);
	CHECK(strcmp(buf, "/a") == 0);
	CHECK(path_of(ix, b.ino, buf, sizeof(buf)) == 0);
	CHECK(strcmp(buf, "/a/b") == 0);
	memset(buf, 'x', sizeof(buf));
	CHECK(path_of(ix, c.ino, buf, 7) == 0);
	CHECK(strcmp(buf, "/a/b/c") == 0);

	/* Too small: refused, the buffer untouched. */
	memset(buf, 'x', sizeof(buf));
	CHECK(path_of(ix, c.ino, buf, 6) == -ENAMETOOLONG);
	CHECK(path_of(ix, c.ino, buf, 3) == -ENAMETOOLONG);
	CHECK(path_of(ix, a.ino, buf, 2) == -ENAMETOOLONG);
	CHECK(path_of(ix, INDEX_ROOT_INO, buf, 0) == -ENAMETOOLONG);
	for (size_t i = 0; i < sizeof(buf); i++)
		CHECK(buf[i] == 'x');

	/* A rename is a new parent in the record. */
	c.r.parent = a.ino;
	put_node(ix, &c);
	CHECK(path_of(ix, c.ino, buf, sizeof(buf)) == 0);
	CHECK(strcmp(buf, "/a/c") == 0);
	index_close(ix);
}

static uint32_t subdirs_of(struct hfs_index *ix, uint64_t ino)
{
	struct ixtxn t;
	struct node n;
	rbegin(ix, &t);
	CHECK(ix_get(&t, ino, &n) == 0);
	CHECK(ix_commit(&t) == 0);
	return n.r.nsubdirs;
}

static int count_hlink(void *arg, uint64_t parent, const char *name)
{
	(void)parent;
	(void)name;
	(*(int *)arg)++;
	return 0;
}

/* Link counts, hard link names, link targets, paths of any length. */
static void test_posix_nodes(void)
{
	struct node d1, d2, f, l, deep;
	struct hfs_index *ix;
	struct ixtxn t;
	char dir[256], buf[64];

	ix_dir("posix", dir, sizeof(dir));
	ix = open_ix(dir);
	fill_node(&d1, alloc_ino(ix), INDEX_ROOT_INO, "d1", 1); /* dirs */
	fill_node(&d2, alloc_ino(ix), d1.ino, "d2", 3);
	fill_node(&f, alloc_ino(ix), d1.ino, "f", 4); /* a file */
	d1.r.nsubdirs = d2.r.nsubdirs = 0;
	uint32_t root0 = subdirs_of(ix, INDEX_ROOT_INO);
	wbegin(ix, &t);
	CHECK(ix_put(&t, &d1) == 0);
	CHECK(ix_put(&t, &d2) == 0);
	CHECK(ix_put(&t, &f) == 0);
	CHECK(ix_link(&t, INDEX_ROOT_INO, "d1", d1.ino) == 0);
	CHECK(ix_link(&t, d1.ino, "d2", d2.ino) == 0);
	CHECK(ix_link(&t, d1.ino, "f", f.ino) == 0);
	CHECK(ix_link(&t, d1.ino, "f", f.ino) == 0); /* again: no change */
	commit_ok(&t);
	CHECK(subdirs_of(ix, INDEX_ROOT_INO) == root0 + 1);
	CHECK(subdirs_of(ix, d1.ino) == 1);
	/* An entry replaced by a file, an alias, an unlink. */
	wbegin(ix, &t);
	CHECK(ix_link(&t, d1.ino, "d2", f.ino) == 0);
	commit_ok(&t);
	CHECK(subdirs_of(ix, d1.ino) == 0);
	wbegin(ix, &t);
	CHECK(ix_link(&t, d1.ino, "d2", d2.ino) == 0);
	CHECK(ix_link(&t, d1.ino, "D2", d2.ino) == 0); /* same inode */
	commit_ok(&t);
	CHECK(subdirs_of(ix, d1.ino) == 1);
	wbegin(ix, &t);
	CHECK(ix_unlink(&t, d1.ino, "d2") == 0);
	commit_ok(&t);
	CHECK(subdirs_of(ix, d1.ino) == 0);

	/* Hard link names; ix_del drops them. */
	wbegin(ix, &t);
	CHECK(ix_hlink_add(&t, f.ino, INDEX_ROOT_INO, "f2") == 0);
	CHECK(ix_hlink_add(&t, f.ino, d1.ino, "f3") == 0);
	CHECK(ix_hlink_add(&t, f.ino + 1000, d1.ino, "other") == 0);
	int k = 0;
	CHECK(ix_foreach_hlink(&t, f.ino, count_hlink, &k) == 0);
	CHECK(k == 2);
	CHECK(ix_hlink_del(&t, f.ino, INDEX_ROOT_INO, "f2") == 0);
	k = 0;
	CHECK(ix_foreach_hlink(&t, f.ino, count_hlink, &k) == 0);
	CHECK(k == 1);
	commit_ok(&t);

	/* Targets, and a link's remote path. */
	fill_node(&l, alloc_ino(ix), d1.ino, "sl", 4);
	l.r.mode = S_IFLNK | 0777;
	l.r.flags = NODE_RCLONELINK;
	wbegin(ix, &t);
	CHECK(ix_put(&t, &l) == 0);
	CHECK(ix_link(&t, d1.ino, "sl", l.ino) == 0);
	CHECK(ix_target_put(&t, l.ino, "../x", 4) == 0);
	CHECK(ix_target_get(&t, l.ino, buf, sizeof(buf)) == 4);
	CHECK(memcmp(buf, "../x", 4) == 0);
	CHECK(ix_path(&t, l.ino, buf, sizeof(buf)) == 0);
	CHECK(strcmp(buf, "/d1/sl.rclonelink") == 0);
	CHECK(ix_del(&t, l.ino) == 0);
	CHECK(ix_target_get(&t, l.ino, buf, sizeof(buf)) == -ENOENT);
	CHECK(ix_del(&t, f.ino) == 0);
	k = 0;
	CHECK(ix_foreach_hlink(&t, f.ino, count_hlink, &k) == 0);
	CHECK(k == 0);
	k = 0;
	CHECK(ix_foreach_hlink(&t, f.ino + 1000, count_hlink, &k) == 0);
	CHECK(k == 1);
	commit_ok(&t);

	/* A path of 60 components of 250 bytes: no cap. */
	uint64_t parent = d1.ino;
	for (int i = 0; i < 60; i++) {
		char name[251];
		memset(name, 'a' + i % 26, 250);
		name[250] = '\0';
		fill_node(&deep, alloc_ino(ix), parent, name, 1);
		wbegin(ix, &t);
		CHECK(ix_put(&t, &deep) == 0);
		CHECK(ix_link(&t, parent, name, deep.ino) == 0);
		commit_ok(&t);
		parent = deep.ino;
	}
	char *p = NULL;
	rbegin(ix, &t);
	CHECK(ix_path_dup(&t, parent, &p) == 0);
	CHECK(strlen(p) == 3 + 60 * 251);
	CHECK(strncmp(p, "/d1/aaa", 7) == 0);
	CHECK(ix_path(&t, parent, buf, sizeof(buf)) == -ENAMETOOLONG);
	CHECK(ix_commit(&t) == 0);
	free(p);
	index_close(ix);
}

static void test_sets(void)
{
	const uint64_t dirty1[] = {5, 3, 256, 1, 300, 0x100000001};
	const uint64_t dirty2[] = {3, 256, 1, 300, 0x100000001};
	const uint64_t orphans1[] = {7, 256};
	const uint64_t orphans2[] = {7};
	struct hfs_index *ix;
	struct ino_list l;
	struct ixtxn t;
	char dir[256];

	ix_dir("sets", dir, sizeof(dir));
	ix = open_ix(dir);

	wbegin(ix, &t);
	for (size_t i = 0; i < 6; i++)
		CHECK(ix_dirty_add(&t, dirty1[i]) == 0);
	CHECK(ix_dirty_add(&t, 5) == 0); /* twice: still one member */
	CHECK(ix_orphan_add(&t, 7) == 0);
	CHECK(ix_orphan_add(&t, 256) == 0);
	commit_ok(&t);
	rbegin(ix, &t);
	list_dirty(&t, &l);
	CHECK(ino_list_is(&l, dirty1, 6));
	list_orphans(&t, &l);
	CHECK(ino_list_is(&l, orphans1, 2));
	CHECK(ix_commit(&t) == 0);

	/* Deleting a missing member is fine and does not fail the txn. */
	wbegin(ix, &t);
	CHECK(ix_dirty_del(&t, 5) == 0);
	CHECK(ix_dirty_del(&t, 999) == 0);
	CHECK(ix_dirty_del(&t, 7) == 0); /* an orphan, not dirty */
	CHECK(ix_orphan_del(&t, 256) == 0);
	CHECK(ix_orphan_del(&t, 256) == 0);
	CHECK(ix_orphan_del(&t, 3) == 0); /* dirty, not an orphan */
	list_dirty(&t, &l);
	CHECK(ino_list_is(&l, dirty2, 5));
	commit_ok(&t);
	rbegin(ix, &t);
	list_dirty(&t, &l);
	CHECK(ino_list_is(&l, dirty2, 5));
	list_orphans(&t, &l);
	CHECK(ino_list_is(&l, orphans2, 1));
	CHECK(ix_commit(&t) == 0);

	index_close(ix);
	ix = open_ix(dir);
	rbegin(ix, &t);
	list_dirty(&t, &l);
	CHECK(ino_list_is(&l, dirty2, 5));
	list_orphans(&t, &l);
	CHECK(ino_list_is(&l, orphans2, 1));
	CHECK(ix_commit(&t) == 0);

	wbegin(ix, &t);
	for (size_t i = 0; i < 5; i++)
		CHECK(ix_dirty_del(&t, dirty2[i]) == 0);
	CHECK(ix_orphan_del(&t, 7) == 0);
	commit_ok(&t);
	rbegin(ix, &t);
	CHECK(ix_foreach_dirty(&t, never_called_ino, NULL) == 0);
	CHECK(ix_foreach_orphan(&t, never_called_ino, NULL) == 0);
	CHECK(ix_commit(&t) == 0);
	index_close(ix);
}

/* Deletes every journal entry; returns the largest sequence number seen. */
static uint64_t drain_journal(struct hfs_index *ix)
{
	struct journal_list *jl = &test_journal;
	struct journal_entry e;
	struct ixtxn t;
	uint64_t max = 0;

	wbegin(ix, &t);
	list_journal(&t, jl);
	for (size_t i = 0; i < jl->n; i++) {
		if (jl->e[i].seq > max)
			max = jl->e[i].seq;
		CHECK(ix_journal_del(&t, jl->e[i].seq) == 0);
	}
	CHECK(ix_journal_count(&t) == 0);
	CHECK(ix_journal_first(&t, &e) == -ENOENT);
	commit_ok(&t);
	return max;
}

/* Appends one entry in its own txn; returns its sequence number. */
static uint64_t append_one(struct hfs_index *ix, int op, const char *path,
			   const char *path2)
{
	struct journal_entry e;
	struct ixtxn t;
	int64_t n;

	wbegin(ix, &t);
	n = ix_journal_count(&t);
	CHECK(ix_journal_append(&t, op, path, path2) == 0);
	CHECK(ix_journal_count(&t) == n + 1);
	commit_ok(&t);
	rbegin(ix, &t);
	list_journal(&t, &test_journal);
	CHECK((int64_t)test_journal.n == n + 1);
	e = test_journal.e[test_journal.n - 1];
	CHECK(e.op == op);
	CHECK(strcmp(e.path, path) == 0);
	if (path2)
		CHECK(strcmp(e.path2, path2) == 0);
	CHECK(ix_commit(&t) == 0);
	return e.seq;
}

static void test_journal_ops(void)
{
	static char long1[4097], long2[4097];
	struct journal_list *jl = &test_journal;
	struct journal_entry first, keep[4];
	struct hfs_index *ix;
	struct ixtxn t;
	uint64_t max, seq;
	char dir[256];

	ix_dir("journal", dir, sizeof(dir));
	ix = open_ix(dir);

	rbegin(ix, &t);
	CHECK(ix_journal_count(&t) == 0);
	memset(&first, 0x5a, sizeof(first));
	keep[0] = first;
	CHECK(ix_journal_first(&t, &first) == -ENOENT);
	CHECK(memcmp(&first, &keep[0], sizeof(first)) == 0);
	CHECK(ix_foreach_journal(&t, never_called_journal, NULL) == 0);
	CHECK(ix_commit(&t) == 0);

	wbegin(ix, &t);
	CHECK(ix_journal_append(&t, JOP_MKDIR, "/a", NULL) == 0);
	CHECK(ix_journal_append(&t, JOP_UNLINK, "/b/f", NULL) == 0);
	CHECK(ix_journal_append(&t, JOP_RENAME, "/c", "/d/e") == 0);
	CHECK(ix_journal_count(&t) == 3);
	commit_ok(&t);
	wbegin(ix, &t);
	CHECK(ix_journal_append(&t, JOP_RMDIR, "/Z", NULL) == 0);
	commit_ok(&t);

	rbegin(ix, &t);
	CHECK(ix_journal_count(&t) == 4);
	list_journal(&t, jl);
	CHECK(jl->n == 4);
	CHECK(jl->e[0].op == JOP_MKDIR && strcmp(jl->e[0].path, "/a") == 0);
	CHECK(jl->e[1].op == JOP_UNLINK && strcmp(jl->e[1].path, "/b/f") == 0);
	CHECK(jl->e[2].op == JOP_RENAME && strcmp(jl->e[2].path, "/c") == 0);
	CHECK(strcmp(jl->e[2].path2, "/d/e") == 0);
	CHECK(jl->e[3].op == JOP_RMDIR && strcmp(jl->e[3].path, "/Z") == 0);
	for (size_t i = 1; i < 4; i++)
		CHECK(jl->e[i].seq > jl->e[i - 1].seq);
	memcpy(keep, jl->e, sizeof(keep));
	CHECK(ix_journal_first(&t, &first) == 0);
	CHECK(journal_entry_eq(&first, &keep[0]));
	/* The callback's non-zero return stops the walk and is returned. */
	memset(jl, 0, sizeof(*jl));
	jl->stop_after = 2;
	CHECK(ix_foreach_journal(&t, collect_journal, jl) == 7);
	CHECK(jl->n == 2);
	CHECK(journal_entry_eq(&jl->e[1], &keep[1]));
	CHECK(ix_commit(&t) == 0);

	/* The same entries after a reopen. */
	index_close(ix);
	ix = open_ix(dir);
	rbegin(ix, &t);
	list_journal(&t, jl);
	CHECK(jl->n == 4);
	for (size_t i = 0; i < 4; i++)
		CHECK(journal_entry_eq(&jl->e[i], &keep[i]));
	CHECK(ix_commit(&t) == 0);

	/* Deleting the oldest makes the next one first. */
	wbegin(ix, &t);
	CHECK(ix_journal_del(&t, keep[0].seq) == 0);
	CHECK(ix_journal_first(&t, &first) == 0);
	CHECK(journal_entry_eq(&first, &keep[1]));
	commit_ok(&t);
	rbegin(ix, &t);
	CHECK(ix_journal_count(&t) == 3);
	CHECK(ix_journal_first(&t, &first) == 0);
	CHECK(journal_entry_eq(&first, &keep[1]));
	CHECK(ix_commit(&t) == 0);
	wbegin(ix, &t);
	CHECK(ix_journal_del(&t, keep[1].seq) == 0);
	commit_ok(&t);
	rbegin(ix, &t);
	CHECK(ix_journal_count(&t) == 2);
	CHECK(ix_journal_first(&t, &first) == 0);
	CHECK(journal_entry_eq(&first, &keep[2]));
	CHECK(ix_commit(&t) == 0);

	/* Paths of 4095 bytes round trip, in both slots; 4096 do not. */
	long1[0] = long2[0] = '/';
	for (size_t i = 1; i < 4095; i++) {
		long1[i] = (char)(i % 64 ? 'a' + i % 26 : '/');
		long2[i] = (char)(i % 50 ? 'A' + i % 26 : '/');
	}
	long1[4095] = long2[4095] = '\0';
	seq = append_one(ix, JOP_RENAME, long1, long2);
	CHECK(seq > keep[3].seq);
	seq = append_one(ix, JOP_UNLINK, long1, NULL);
	rbegin(ix, &t);
	list_journal(&t, jl);
	CHECK(jl->n == 4);
	CHECK(journal_entry_eq(&jl->e[0], &keep[2]));
	CHECK(journal_entry_eq(&jl->e[1], &keep[3]));
	CHECK(jl->e[2].op == JOP_RENAME);
	CHECK(strlen(jl->e[2].path) == 4095 &&
	      strcmp(jl->e[2].path, long1) == 0);
	CHECK(strlen(jl->e[2].path2) == 4095 &&
	      strcmp(jl->e[2].path2, long2) == 0);
	CHECK(jl->e[3].seq == seq && strcmp(jl->e[3].path, long1) == 0);
	CHECK(ix_commit(&t) == 0);
	long1[4095] = 'x';
	long1[4096] = '\0';
	/* Deeper than the remote takes: not journaled, and no error (such
	 * nodes stay local; docs/posix.md, "Deep paths"). */
	wbegin(ix, &t);
	CHECK(ix_journal_append(&t, JOP_MKDIR, long1, NULL) == 0);
	CHECK(ix_journal_append(&t, JOP_RENAME, "/x", long1) == 0);
	CHECK(ix_commit(&t) == 0);
	rbegin(ix, &t);
	CHECK(ix_journal_count(&t) == 4);
	CHECK(ix_commit(&t) == 0);

	/* Sequence numbers never repeat, even once the journal is empty. */
	max = drain_journal(ix);
	CHECK(max == seq);
	seq = append_one(ix, JOP_MKDIR, "/after-drain", NULL);
	CHECK(seq > max);
	max = drain_journal(ix);
	CHECK(max == seq);

	/* Nor across a reopen of an empty journal. */
	index_close(ix);
	ix = open_ix(dir);
	seq = append_one(ix, JOP_MKDIR, "/after-reopen", NULL);
	CHECK(seq > max);
	max = seq;
	seq = append_one(ix, JOP_MKDIR, "/second", NULL);
	CHECK(seq > max);
	index_close(ix);
}

/* Deletes that record what was deleted: revision and content hash. */
static void test_journal_deletes(void)
{
	static char long1[4096];
	struct journal_list *jl = &test_journal;
	uint8_t hash[CHASH_LEN];
	char rev[BACKEND_REV_MAX + 1], toolong[BACKEND_REV_MAX + 2];
	struct hfs_index *ix;
	struct ixtxn t;
	char dir[256];

	for (size_t i = 0; i < CHASH_LEN; i++)
		hash[i] = (uint8_t)(i * 7 + 1);
	memset(rev, 'f', BACKEND_REV_MAX);
	rev[BACKEND_REV_MAX] = '\0';
	ix_dir("journal-deletes", dir, sizeof(dir));
	ix = open_ix(dir);
	wbegin(ix, &t);
	CHECK(ix_journal_append(&t, JOP_UNLINK, "/old", NULL) == 0);
	CHECK(ix_journal_append_delete(&t, JOP_UNLINK, "/a/f", "015e0001abc",
				       hash) == 0);
	CHECK(ix_journal_append_delete(&t, JOP_UNLINK, "/a/g", "", NULL) == 0);
	CHECK(ix_journal_append_delete(&t, JOP_RMDIR, "/a", NULL, NULL) == 0);
	CHECK(ix_journal_append_delete(&t, JOP_UNLINK, "/a/h", rev, NULL) == 0);
	CHECK(ix_journal_append(&t, JOP_RENAME, "/b", "/c") == 0);
	commit_ok(&t);
	wbegin(ix, &t);
	memset(toolong, 'e', sizeof(toolong) - 1);
	toolong[sizeof(toolong) - 1] = '\0';
	CHECK(ix_journal_append_delete(&t, JOP_UNLINK, "/x", toolong, NULL) ==
	      -EINVAL);
	abort_txn(&t);

	index_close(ix);
	ix = open_ix(dir);
	rbegin(ix, &t);
	list_journal(&t, jl);
	CHECK(jl->n == 6);
	/* Entries without a record: nothing known, replayed as before. */
	CHECK(strcmp(jl->e[0].path, "/old") == 0 && !jl->e[0].known);
	CHECK(!jl->e[0].has_hash && jl->e[0].rev[0] == '\0');
	CHECK(jl->e[5].op == JOP_RENAME && !jl->e[5].known);
	CHECK(strcmp(jl->e[5].path2, "/c") == 0);
	/* What older versions read as the rename target of a delete (the
	 * bytes up to the NUL) is empty, and so it is here. */
	for (size_t i = 1; i < 5; i++) {
		CHECK(jl->e[i].known);
		CHECK(jl->e[i].path2[0] == '\0');
	}
	CHECK(jl->e[1].op == JOP_UNLINK && strcmp(jl->e[1].path, "/a/f") == 0);
	CHECK(strcmp(jl->e[1].rev, "015e0001abc") == 0 && jl->e[1].has_hash);
	CHECK(memcmp(jl->e[1].hash, hash, CHASH_LEN) == 0);
	CHECK(jl->e[2].rev[0] == '\0' && !jl->e[2].has_hash);
	CHECK(jl->e[3].op == JOP_RMDIR && strcmp(jl->e[3].path, "/a") == 0);
	CHECK(strlen(jl->e[4].rev) == BACKEND_REV_MAX && !jl->e[4].has_hash);
	CHECK(ix_commit(&t) == 0);

	/* The longest path still fits with its record. */
	long1[0] = '/';
	memset(long1 + 1, 'q', 4094);
	long1[4095] = '\0';
	wbegin(ix, &t);
	CHECK(ix_journal_append_delete(&t, JOP_UNLINK, long1,
				       "0123456789abcdef", hash) == 0);
	commit_ok(&t);
	rbegin(ix, &t);
	list_journal(&t, jl);
	CHECK(jl->n == 7 && strcmp(jl->e[6].path, long1) == 0);
	CHECK(strcmp(jl->e[6].rev, "0123456789abcdef") == 0);
	CHECK(jl->e[6].has_hash);
	CHECK(ix_commit(&t) == 0);
	index_close(ix);
}

/* An aborted write txn leaves nothing behind. */
static void test_abort(void)
{
	struct hfs_index *ix;
	struct ino_list l;
	struct node k, x;
	struct ixtxn t;
	char dir[256];
	uint64_t xi = 0;

	ix_dir("abort", dir, sizeof(dir));
	ix = open_ix(dir);
	fill_node(&k, alloc_ino(ix), INDEX_ROOT_INO, "k", 1);
	wbegin(ix, &t);
	CHECK(ix_put(&t, &k) == 0);
	CHECK(ix_link(&t, INDEX_ROOT_INO, "k", k.ino) == 0);
	commit_ok(&t);

	wbegin(ix, &t);
	CHECK(ix_alloc_ino(&t, &xi) == 0);
	fill_node(&x, xi, INDEX_ROOT_INO, "x", 2);
	CHECK(ix_put(&t, &x) == 0);
	CHECK(ix_link(&t, INDEX_ROOT_INO, "x", xi) == 0);
	CHECK(ix_dirty_add(&t, xi) == 0);
	CHECK(ix_orphan_add(&t, xi) == 0);
	CHECK(ix_journal_append(&t, JOP_MKDIR, "/x", NULL) == 0);
	CHECK(ix_del(&t, k.ino) == 0);
	CHECK(ix_unlink(&t, INDEX_ROOT_INO, "k") == 0);
	abort_txn(&t);

	rbegin(ix, &t);
	expect_no_node(&t, xi);
	expect_no_lookup(&t, INDEX_ROOT_INO, "x");
	list_dirty(&t, &l);
	CHECK(l.n == 0);
	list_orphans(&t, &l);
	CHECK(l.n == 0);
	CHECK(ix_journal_count(&t) == 0);
	expect_lookup(&t, INDEX_ROOT_INO, "k", k.ino, "k");
	CHECK(ix_commit(&t) == 0);
	expect_node(ix, &k);
	index_close(ix);
}

/*
 * After a failed step every further step returns the same error, and
 * commit returns it and commits nothing. An -ENOENT answer is no failure.
 */
static void test_sticky(void)
{
	struct journal_entry je, je0;
	struct hfs_index *ix;
	struct ino_list l;
	struct node k, x, y, got;
	struct ixtxn t;
	char dir[256], buf[64];
	uint64_t xi = 0, ino;
	const int E = -ENAMETOOLONG;

	ix_dir("sticky", dir, sizeof(dir));
	ix = open_ix(dir);
	fill_node(&k, alloc_ino(ix), INDEX_ROOT_INO, "k", 1);
	wbegin(ix, &t);
	CHECK(ix_put(&t, &k) == 0);
	CHECK(ix_link(&t, INDEX_ROOT_INO, "k", k.ino) == 0);
	CHECK(ix_dirty_add(&t, k.ino) == 0);
	CHECK(ix_journal_append(&t, JOP_MKDIR, "/k", NULL) == 0);
	commit_ok(&t);
	rbegin(ix, &t);
	CHECK(ix_journal_first(&t, &je0) == 0);
	CHECK(ix_commit(&t) == 0);

	wbegin(ix, &t);
	CHECK(ix_alloc_ino(&t, &xi) == 0);
	fill_node(&x, xi, INDEX_ROOT_INO, "x", 2);
	CHECK(ix_put(&t, &x) == 0);
	CHECK(ix_link(&t, INDEX_ROOT_INO, "x", xi) == 0);
	CHECK(ix_dirty_add(&t, xi) == 0);
	CHECK(ix_orphan_add(&t, xi) == 0);
	CHECK(ix_journal_append(&t, JOP_MKDIR, "/x", NULL) == 0);

	CHECK(ix_link(&t, INDEX_ROOT_INO, "", xi) == E);

	CHECK(ix_get(&t, INDEX_ROOT_INO, &got) == E);
	CHECK(ix_get(&t, xi, &got) == E);
	CHECK(ix_put(&t, &x) == E);
	CHECK(ix_del(&t, k.ino) == E);
	ino = 4242;
	CHECK(ix_alloc_ino(&t, &ino) == E);
	CHECK(ino == 4242);
	CHECK(ix_lookup(&t, INDEX_ROOT_INO, "k", &ino, NULL) == E);
	CHECK(ino == 4242);
	CHECK(ix_link(&t, INDEX_ROOT_INO, "y", xi) == E);
	CHECK(ix_unlink(&t, INDEX_ROOT_INO, "k") == E);
	CHECK(ix_foreach_child(&t, INDEX_ROOT_INO, never_called_child, NULL) ==
	      E);
	CHECK(ix_has_children(&t, INDEX_ROOT_INO) == E);
	memset(buf, 'q', sizeof(buf));
	CHECK(ix_path(&t, INDEX_ROOT_INO, buf, sizeof(buf)) == E);
	CHECK(ix_path(&t, xi, buf, sizeof(buf)) == E);
	CHECK(buf[0] == 'q');
	CHECK(ix_dirty_add(&t, 99) == E);
	CHECK(ix_dirty_del(&t, k.ino) == E);
	CHECK(ix_foreach_dirty(&t, never_called_ino, NULL) == E);
	CHECK(ix_orphan_add(&t, 99) == E);
	CHECK(ix_orphan_del(&t, xi) == E);
	CHECK(ix_foreach_orphan(&t, never_called_ino, NULL) == E);
	CHECK(ix_journal_append(&t, JOP_RMDIR, "/y", NULL) == E);
	CHECK(ix_journal_first(&t, &je) == E);
	CHECK(ix_journal_del(&t, je0.seq) == E);
	CHECK(ix_foreach_journal(&t, never_called_journal, NULL) == E);
	CHECK(ix_journal_count(&t) == E);
	CHECK(ix_commit(&t) == E);
	CHECK(t.txn == NULL);
	check_invariants(ix);

	/* Nothing of that txn, not even the steps before the failure. */
	rbegin(ix, &t);
	expect_no_node(&t, xi);
	expect_no_lookup(&t, INDEX_ROOT_INO, "x");
	expect_lookup(&t, INDEX_ROOT_INO, "k", k.ino, "k");
	list_dirty(&t, &l);
	CHECK(ino_list_is(&l, &k.ino, 1));
	list_orphans(&t, &l);
	CHECK(l.n == 0);
	CHECK(ix_journal_count(&t) == 1);
	CHECK(ix_journal_first(&t, &je) == 0);
	CHECK(journal_entry_eq(&je, &je0));
	CHECK(ix_commit(&t) == 0);
	expect_node(ix, &k);

	/*
	 * -ENOENT answers (a lookup or get that finds nothing) do not fail the
	 * txn: callers look a name up before they create it (index.c, sticky;
	 * fs.c create and rename).
	 */
	wbegin(ix, &t);
	expect_no_lookup(&t, INDEX_ROOT_INO, "y");
	expect_no_node(&t, 424242);
	CHECK(ix_alloc_ino(&t, &ino) == 0);
	fill_node(&y, ino, INDEX_ROOT_INO, "y", 3);
	CHECK(ix_put(&t, &y) == 0);
	CHECK(ix_link(&t, INDEX_ROOT_INO, "y", ino) == 0);
	commit_ok(&t);
	expect_node(ix, &y);
	index_close(ix);
}

/* A read txn cannot write, and its failed write leaves nothing. */
static void test_read_only(void)
{
	struct hfs_index *ix;
	struct ino_list l;
	struct node n;
	struct ixtxn t;
	char dir[256];
	uint64_t ino = 4242;
	int rc;

	ix_dir("readonly", dir, sizeof(dir));
	ix = open_ix(dir);
	fill_node(&n, 50, INDEX_ROOT_INO, "n", 1);

	rbegin(ix, &t);
	rc = ix_put(&t, &n);
	CHECK(rc < 0);
	CHECK(ix_commit(&t) == rc);
	rbegin(ix, &t);
	CHECK(ix_alloc_ino(&t, &ino) < 0);
	CHECK(ino == 4242);
	ix_abort(&t);
	rbegin(ix, &t);
	CHECK(ix_link(&t, INDEX_ROOT_INO, "n", 50) < 0);
	ix_abort(&t);
	rbegin(ix, &t);
	CHECK(ix_dirty_add(&t, 50) < 0);
	ix_abort(&t);
	rbegin(ix, &t);
	CHECK(ix_journal_append(&t, JOP_MKDIR, "/n", NULL) < 0);
	ix_abort(&t);
	check_invariants(ix);

	rbegin(ix, &t);
	expect_no_node(&t, 50);
	expect_no_lookup(&t, INDEX_ROOT_INO, "n");
	list_dirty(&t, &l);
	CHECK(l.n == 0);
	CHECK(ix_journal_count(&t) == 0);
	CHECK(ix_commit(&t) == 0);

	/* Writers are not blocked by what the readers tried. */
	put_node(ix, &n);
	expect_node(ix, &n);
	index_close(ix);
}

/* MDB_NOTLS: one thread holds several read txns, each on its snapshot. */
static void test_readers(void)
{
	struct ixtxn r1, r2, r3, w;
	struct hfs_index *ix;
	struct node n, got;
	char dir[256];

	ix_dir("readers", dir, sizeof(dir));
	ix = open_ix(dir);
	fill_node(&n, alloc_ino(ix), INDEX_ROOT_INO, "n", 1);

	rbegin(ix, &r1);
	rbegin(ix, &r2);
	CHECK(ix_get(&r1, INDEX_ROOT_INO, &got) == 0);
	CHECK(ix_get(&r2, INDEX_ROOT_INO, &got) == 0);

	/* A write committed while r1 and r2 are open; r3 starts after it. */
	wbegin(ix, &w);
	CHECK(ix_put(&w, &n) == 0);
	CHECK(ix_link(&w, INDEX_ROOT_INO, "n", n.ino) == 0);
	commit_ok(&w);
	rbegin(ix, &r3);

	expect_no_node(&r1, n.ino);
	expect_no_node(&r2, n.ino);
	CHECK(ix_has_children(&r1, INDEX_ROOT_INO) == 0);
	CHECK(ix_get(&r3, n.ino, &got) == 0);
	check_node_eq(&got, &n);
	CHECK(ix_has_children(&r3, INDEX_ROOT_INO) == 1);
	CHECK(ix_commit(&r2) == 0);
	CHECK(ix_get(&r1, INDEX_ROOT_INO, &got) == 0);
	CHECK(ix_commit(&r1) == 0);
	CHECK(ix_commit(&r3) == 0);
	index_close(ix);
}

/* The hashes of unconfirmed uploads: newest first, IX_ATTEMPTS kept; an
 * answered one leaves the others; all gone with ix_attempts_del and with
 * the node. */
static void test_attempts(void)
{
	char dir[256];
	struct ixtxn t;
	struct node n;
	enum { N = IX_ATTEMPTS + 1 };
	uint8_t h[N][CHASH_LEN], got[IX_ATTEMPTS][CHASH_LEN];
	for (int i = 0; i < N; i++)
		memset(h[i], 0x11 * (i + 1), CHASH_LEN);
	ix_dir("attempts", dir, sizeof(dir));
	struct hfs_index *ix = open_ix(dir);
	uint64_t ino = alloc_ino(ix);
	fill_node(&n, ino, INDEX_ROOT_INO, "a", 3);

	wbegin(ix, &t);
	CHECK(ix_put(&t, &n) == 0);
	CHECK(ix_attempts_get(&t, ino, got) == 0);
	CHECK(ix_attempt_add(&t, ino, h[0]) == 0);
	CHECK(ix_attempts_get(&t, ino, got) == 1);
	CHECK(memcmp(got[0], h[0], CHASH_LEN) == 0);
	for (int i = 1; i < N; i++)
		CHECK(ix_attempt_add(&t, ino, h[i]) == 0);
	commit_ok(&t);

	/* After a reopen: the newest IX_ATTEMPTS, newest first. */
	index_close(ix);
	ix = open_ix(dir);
	rbegin(ix, &t);
	CHECK(ix_attempts_get(&t, ino, got) == IX_ATTEMPTS);
	for (int i = 0; i < IX_ATTEMPTS; i++)
		CHECK(memcmp(got[i], h[N - 1 - i], CHASH_LEN) == 0);
	CHECK(ix_commit(&t) == 0);

	/* An answer takes its own hash out, the others stay in order. */
	wbegin(ix, &t);
	CHECK(ix_attempt_answered(&t, ino, h[N - 2]) == 0);
	CHECK(ix_attempts_get(&t, ino, got) == IX_ATTEMPTS - 1);
	CHECK(memcmp(got[0], h[N - 1], CHASH_LEN) == 0);
	CHECK(memcmp(got[1], h[N - 3], CHASH_LEN) == 0);
	CHECK(ix_attempt_answered(&t, ino, h[0]) == 0); /* not there */
	CHECK(ix_attempts_get(&t, ino, got) == IX_ATTEMPTS - 1);
	CHECK(ix_attempts_del(&t, ino) == 0);
	CHECK(ix_attempts_get(&t, ino, got) == 0);
	CHECK(ix_attempts_del(&t, ino) == 0); /* none: fine */
	CHECK(ix_attempt_add(&t, ino, h[0]) == 0);
	CHECK(ix_attempt_answered(&t, ino, h[0]) == 0); /* the last one */
	CHECK(ix_attempts_get(&t, ino, got) == 0);
	CHECK(ix_attempt_add(&t, ino, h[0]) == 0);
	CHECK(ix_del(&t, ino) == 0); /* the node takes them along */
	CHECK(ix_attempts_get(&t, ino, got) == 0);
	commit_ok(&t);
	index_close(ix);
}

/* Tombstones: by folded path (any length), with their expiry and up to
 * IX_ATTEMPTS hashes. */
static void test_tombstones(void)
{
	char dir[256], longpath[3000];
	struct ixtxn t;
	uint8_t h[2][CHASH_LEN], got[IX_TOMB_MAX][CHASH_LEN];
	int64_t exp = 0;
	memset(h[0], 0xaa, CHASH_LEN);
	memset(h[1], 0xbb, CHASH_LEN);
	memset(longpath, 'x', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	ix_dir("tombs", dir, sizeof(dir));
	struct hfs_index *ix = open_ix(dir);

	wbegin(ix, &t);
	CHECK(ix_tomb_get(&t, "/a/b.log", &exp, got) == 0);
	CHECK(ix_tomb_put(&t, "/a/b.log", 1234, h, 2) == 0);
	CHECK(ix_tomb_put(&t, longpath, 99, h, 1) == 0);
	CHECK(ix_tomb_put(&t, "/bad", 1, h, 0) == -EINVAL);
	commit_ok(&t);

	rbegin(ix, &t);
	CHECK(ix_tomb_get(&t, "/a/b.log", &exp, got) == 2);
	CHECK(exp == 1234);
	CHECK(memcmp(got[0], h[0], CHASH_LEN) == 0);
	CHECK(memcmp(got[1], h[1], CHASH_LEN) == 0);
	CHECK(ix_tomb_get(&t, longpath, &exp, got) == 1 && exp == 99);
	CHECK(ix_tomb_get(&t, "/a/b.lo", &exp, got) == 0);
	CHECK(ix_commit(&t) == 0);

	wbegin(ix, &t);
	CHECK(ix_tomb_del(&t, "/a/b.log") == 0);
	CHECK(ix_tomb_del(&t, "/a/b.log") == 0); /* none: fine */
	CHECK(ix_tomb_get(&t, "/a/b.log", &exp, got) == 0);
	commit_ok(&t);
	index_close(ix);
}

/* Inserts nodes @first..@first+@count-1 under the root in one txn. */
static int put_many(struct hfs_index *ix, uint64_t first, unsigned count)
{
	struct ixtxn t;
	struct node n;
	char name[32];
	int rc = ix_begin(ix, true, &t);
	if (rc)
		return rc;
	for (unsigned i = 0; i < count; i++) {
		snprintf(name, sizeof(name), "g%llu",
			 (unsigned long long)(first + i));
		fill_node(&n, first + i, INDEX_ROOT_INO, name, i);
		ix_put(&t, &n);
		ix_link(&t, INDEX_ROOT_INO, name, first + i);
	}
	return ix_commit(&t);
}

/*
 * Map growth: an index started with a tiny map grows as it fills, through
 * many small txns (grown before they begin) and one txn too large for the
 * map (fails with -ENOSPC, index_retry_full() says so, and it fits once
 * repeated); everything committed reads back after a reopen.
 */
static void test_map_growth(void)
{
	char dir[256];
	struct ixtxn t;
	struct node got;
	ix_dir("growth", dir, sizeof(dir));
	CHECK(setenv("HURACANFS_INDEX_MAP_SIZE", "131072", 1) == 0);
	struct hfs_index *ix = open_ix(dir);
	size_t start = index_map_size(ix);
	CHECK(start == 131072);

	uint64_t next = 1000;
	for (int i = 0; i < 400; i++, next += 10)
		CHECK(put_many(ix, next, 10) == 0);
	CHECK(index_map_size(ix) > start);

	/* More nodes in one txn than the map has room for (a node takes
	 * well over 256 bytes with its entry). */
	size_t before = index_map_size(ix);
	int big = (int)(before / 256);
	int rc = put_many(ix, next, big);
	CHECK(rc == -ENOSPC);
	CHECK(index_retry_full(ix));
	CHECK(!index_retry_full(ix)); /* answered once */
	int tries = 1;
	while ((rc = put_many(ix, next, big)) == -ENOSPC && tries < 16) {
		CHECK(index_retry_full(ix));
		tries++;
	}
	CHECK(rc == 0);
	CHECK(index_map_size(ix) > before);
	next += (uint64_t)big;
	index_close(ix);
	CHECK(unsetenv("HURACANFS_INDEX_MAP_SIZE") == 0);

	/* Reopened with the default map: every node is there. */
	ix = open_ix(dir);
	rbegin(ix, &t);
	for (uint64_t ino = 1000; ino < next; ino += 7) {
		CHECK(ix_get(&t, ino, &got) == 0);
		CHECK(got.r.parent == INDEX_ROOT_INO);
	}
	CHECK(ix_get(&t, next - 1, &got) == 0);
	CHECK(ix_commit(&t) == 0);
	index_close(ix);
}

/* One thread of test_map_growth_threads: small write txns of its own
 * range of inodes, each read back in a read txn of its own. In a map this
 * small one txn may need more than the half left free: such a txn fails
 * with -ENOSPC and is repeated, as fs.c does (HFS_RETRY_NOSPC). */
struct grower {
	struct hfs_index *ix;
	uint64_t first;
	int failures;
};

#define GROWER_TXNS 300
#define GROWER_BATCH 8

static void *grower_main(void *arg)
{
	struct grower *g = arg;
	struct ixtxn t;
	struct node got;
	for (int i = 0; i < GROWER_TXNS; i++) {
		uint64_t first = g->first + (uint64_t)i * GROWER_BATCH;
		/* As the filesystem does: again once the map has grown. */
		int rc = put_many(g->ix, first, GROWER_BATCH);
		for (int tries = 1; rc == -ENOSPC && tries < 3; tries++) {
			if (!index_retry_full(g->ix))
				break;
			rc = put_many(g->ix, first, GROWER_BATCH);
		}
		if (rc != 0) {
			fprintf(stderr, "grower: put_many: %s\n",
				strerror(-rc));
			g->failures++;
			continue;
		}
		if (ix_begin(g->ix, false, &t) != 0) {
			g->failures++;
			continue;
		}
		for (uint64_t k = 0; k < GROWER_BATCH; k++)
			if (ix_get(&t, first + k, &got) != 0)
				g->failures++;
		ix_abort(&t);
	}
	return NULL;
}

/* Map growth while other threads read and write: every txn succeeds and
 * sees its data (a resize under a reader would crash, under ASan at
 * least). */
static void test_map_growth_threads(void)
{
	char dir[256];
	enum { NTHREADS = 4 };
	pthread_t th[NTHREADS];
	struct grower g[NTHREADS];
	ix_dir("growth-threads", dir, sizeof(dir));
	CHECK(setenv("HURACANFS_INDEX_MAP_SIZE", "65536", 1) == 0);
	struct hfs_index *ix = open_ix(dir);
	CHECK(unsetenv("HURACANFS_INDEX_MAP_SIZE") == 0);
	for (int i = 0; i < NTHREADS; i++) {
		g[i] = (struct grower){.ix = ix, .first = 100000 * (i + 1)};
		CHECK(pthread_create(&th[i], NULL, grower_main, &g[i]) == 0);
	}
	for (int i = 0; i < NTHREADS; i++) {
		CHECK(pthread_join(th[i], NULL) == 0);
		CHECK(g[i].failures == 0);
	}
	CHECK(index_map_size(ix) >= 4 * 65536);
	/* Grown as needed, not run away (about 4 MiB of data). */
	CHECK(index_map_size(ix) <= (size_t)64 << 20);
	index_close(ix);
}

static int rm_cb(const char *p, const struct stat *sb, int flag,
		 struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	return flag == FTW_DP ? rmdir(p) : unlink(p);
}

int main(void)
{
	CHECK(mkdtemp(tmpdir) != NULL);

	test_fold();
	test_open();
	test_layout();
	test_migrate_v1();
	test_alloc_ino();
	test_nodes();
	test_dirents();
	test_path();
	test_posix_nodes();
	test_sets();
	test_journal_ops();
	test_journal_deletes();
	test_abort();
	test_sticky();
	test_read_only();
	test_readers();
	test_attempts();
	test_tombstones();
	test_map_growth();
	test_map_growth_threads();

	CHECK(nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS) == 0);
	printf("test_index: all checks passed\n");
	return 0;
}

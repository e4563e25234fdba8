/*
 * `huracanfs repair` (see repair.h).
 *
 * Salvage: a child process opens the damaged environment read-only and
 * streams what it can read through a pipe as records (u8 kind, u32 length,
 * payload): kind 1 a node (u64 ino, struct node_rec, name), kind 2 a
 * journal entry (u64 seq, the stored value). A crash of the child (LMDB
 * asserts or faults on a damaged page) ends the stream; what came before
 * is kept.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <lmdb.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hfs/cache.h"
#include "hfs/fs.h"
#include "hfs/hash.h"
#include "hfs/index.h"
#include "hfs/log.h"
#include "hfs/repair.h"

enum { REC_NODE = 1, REC_JOURNAL = 2 };

struct salvaged {
	struct node *nodes; /* sorted by ino */
	size_t n, cap;
	struct jrec {
		uint64_t seq;
		size_t len;
		char *val;
	} * journal;
	size_t nj, capj;
};

static int put_rec(int fd, int kind, const void *a, size_t alen, const void *b,
		   size_t blen)
{
	uint8_t k = (uint8_t)kind;
	uint32_t len = (uint32_t)(alen + blen);
	if (write(fd, &k, 1) != 1 || write(fd, &len, 4) != 4 ||
	    write(fd, a, alen) != (ssize_t)alen ||
	    (blen && write(fd, b, blen) != (ssize_t)blen))
		return -1;
	return 0;
}

/* The child: streams every readable node and journal entry. */
static int salvage_child(const char *dir, int fd)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_cursor *c;
	MDB_val k, v;
	if (mdb_env_create(&env))
		return 1;
	mdb_env_set_maxdbs(env, 16);
	if (mdb_env_open(env, dir, MDB_RDONLY | MDB_NOTLS | MDB_NOLOCK, 0600) ||
	    mdb_txn_begin(env, NULL, MDB_RDONLY, &txn))
		return 1;
	if (mdb_dbi_open(txn, "nodes", MDB_INTEGERKEY, &dbi) == 0 &&
	    mdb_cursor_open(txn, dbi, &c) == 0) {
		while (mdb_cursor_get(c, &k, &v, MDB_NEXT) == 0) {
			if (k.mv_size != 8 ||
			    v.mv_size < sizeof(struct node_rec) ||
			    v.mv_size >
				    sizeof(struct node_rec) + BACKEND_NAME_MAX)
				continue;
			if (put_rec(fd, REC_NODE, k.mv_data, 8, v.mv_data,
				    v.mv_size))
				return 1;
		}
		mdb_cursor_close(c);
	}
	if (mdb_dbi_open(txn, "journal", MDB_INTEGERKEY, &dbi) == 0 &&
	    mdb_cursor_open(txn, dbi, &c) == 0) {
		while (mdb_cursor_get(c, &k, &v, MDB_NEXT) == 0) {
			if (k.mv_size != 8 || v.mv_size > 3 + 8192)
				continue;
			if (put_rec(fd, REC_JOURNAL, k.mv_data, 8, v.mv_data,
				    v.mv_size))
				return 1;
		}
		mdb_cursor_close(c);
	}
	return 0;
}

static int read_full(int fd, void *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t r = read(fd, (char *)buf + got, len - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

static int cmp_node(const void *a, const void *b)
{
	const struct node *x = a, *y = b;
	return (x->ino > y->ino) - (x->ino < y->ino);
}

/* Reads the damaged index at @dir into @s, as far as it goes. */
static int salvage(const char *dir, struct salvaged *s)
{
	int p[2];
	if (pipe(p) < 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(p[0]);
		close(p[1]);
		return -e;
	}
	if (pid == 0) {
		struct rlimit no_core = {0, 0};
		setrlimit(RLIMIT_CORE, &no_core);
		/* Die of the signal, quietly (a sanitizer would report). */
		signal(SIGBUS, SIG_DFL);
		signal(SIGSEGV, SIG_DFL);
		signal(SIGABRT, SIG_DFL);
		close(p[0]);
		_exit(salvage_child(dir, p[1]));
	}
	close(p[1]);
	int rc = 0;
	for (;;) {
		uint8_t kind;
		uint32_t len;
		if (read_full(p[0], &kind, 1) || read_full(p[0], &len, 4))
			break;
		char *buf = malloc(len ? len : 1);
		if (!buf) {
			rc = -ENOMEM;
			break;
		}
		if (read_full(p[0], buf, len)) {
			free(buf);
			break;
		}
		if (kind == REC_NODE && len >= 8 + sizeof(struct node_rec)) {
			if (s->n == s->cap) {
				size_t cap = s->cap ? s->cap * 2 : 256;
				struct node *nn =
					realloc(s->nodes, cap * sizeof(*nn));
				if (!nn) {
					free(buf);
					rc = -ENOMEM;
					break;
				}
				s->nodes = nn;
				s->cap = cap;
			}
			struct node *n = &s->nodes[s->n++];
			memset(n, 0, sizeof(*n));
			memcpy(&n->ino, buf, 8);
			memcpy(&n->r, buf + 8, sizeof(n->r));
			size_t nl = len - 8 - sizeof(n->r);
			memcpy(n->name, buf + 8 + sizeof(n->r), nl);
			n->name[nl] = '\0';
			free(buf);
		} else if (kind == REC_JOURNAL && len > 8) {
			if (s->nj == s->capj) {
				size_t cap = s->capj ? s->capj * 2 : 64;
				struct jrec *nj =
					realloc(s->journal, cap * sizeof(*nj));
				if (!nj) {
					free(buf);
					rc = -ENOMEM;
					break;
				}
				s->journal = nj;
				s->capj = cap;
			}
			struct jrec *j = &s->journal[s->nj++];
			memcpy(&j->seq, buf, 8);
			j->len = len - 8;
			j->val = buf; /* payload at +8 */
		} else {
			free(buf);
		}
	}
	close(p[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (s->n)
		qsort(s->nodes, s->n, sizeof(*s->nodes), cmp_node);
	return rc;
}

static const struct node *find_node(const struct salvaged *s, uint64_t ino)
{
	struct node key = {.ino = ino};
	if (!s->n)
		return NULL;
	return bsearch(&key, s->nodes, s->n, sizeof(*s->nodes), cmp_node);
}

/* The salvaged path of @ino ("/a/b"), or -ENOENT if a link is missing. */
static int salvaged_path(const struct salvaged *s, uint64_t ino, char *buf,
			 size_t len)
{
	char tmp[4096];
	size_t at = sizeof(tmp) - 1;
	tmp[at] = '\0';
	for (int depth = 0; ino != INDEX_ROOT_INO; depth++) {
		const struct node *n = find_node(s, ino);
		if (!n || n->r.parent == 0 || depth > 512)
			return -ENOENT;
		size_t nl = strlen(n->name);
		if (nl == 0 || nl + 1 > at)
			return -ENAMETOOLONG;
		at -= nl;
		memcpy(tmp + at, n->name, nl);
		tmp[--at] = '/';
		ino = n->r.parent;
	}
	if (sizeof(tmp) - 1 - at >= len)
		return -ENAMETOOLONG;
	snprintf(buf, len, "%s", tmp + at);
	return 0;
}

/* The directory @path ("/a/b") in the new index, made (as neither listed
 * nor known remotely: the next listing merges the remote's) if missing. */
static int make_dirs(struct ixtxn *t, const char *path, uint64_t *out)
{
	uint64_t cur = INDEX_ROOT_INO;
	char comp[BACKEND_NAME_MAX + 1];
	const char *p = path;
	while (*p == '/') {
		p++;
		const char *e = strchr(p, '/');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		if (l == 0 || l > BACKEND_NAME_MAX)
			return -EINVAL;
		memcpy(comp, p, l);
		comp[l] = '\0';
		uint64_t ino;
		int rc = ix_lookup(t, cur, comp, &ino, NULL);
		if (rc == -ENOENT) {
			struct node d;
			memset(&d, 0, sizeof(d));
			rc = ix_alloc_ino(t, &d.ino);
			if (rc)
				return rc;
			snprintf(d.name, sizeof(d.name), "%s", comp);
			d.r.parent = cur;
			d.r.mode = S_IFDIR | 0755;
			d.r.uid = getuid();
			d.r.gid = getgid();
			d.r.atime_ns = d.r.mtime_ns = d.r.ctime_ns =
				hfs_now_ns();
			ix_put(t, &d);
			ix_link(t, cur, comp, d.ino);
			ino = d.ino;
			rc = t->err;
		}
		if (rc)
			return rc;
		cur = ino;
		p += l;
	}
	*out = cur;
	return 0;
}

struct tally {
	size_t placed, to_upload, found, journal;
};

/*
 * Puts content file @ino (its bytes @size, hash @h) into the new index:
 * at its salvaged path if the record vouches for it, else in /lost+found.
 */
static int place(struct ixtxn *t, struct cache *c, const struct salvaged *s,
		 uint64_t ino, uint64_t size, const uint8_t h[CHASH_LEN],
		 struct tally *tl)
{
	const struct node *old = find_node(s, ino);
	char path[4096];
	bool ok = old && S_ISREG(old->r.mode) && old->r.parent &&
		  salvaged_path(s, ino, path, sizeof(path)) == 0;
	bool dirty = ok && (old->r.flags & NODE_DIRTY);
	if (ok && !dirty)
		ok = (old->r.flags & NODE_HAS_HASH) &&
		     memcmp(old->r.remote_hash, h, CHASH_LEN) == 0;
	struct node n;
	memset(&n, 0, sizeof(n));
	int rc = ix_alloc_ino(t, &n.ino);
	if (rc)
		return rc;
	uint64_t dir;
	if (ok) {
		char *slash = strrchr(path, '/');
		*slash = '\0';
		rc = make_dirs(t, path, &dir);
		if (!rc && ix_lookup(t, dir, slash + 1, NULL, NULL) != -ENOENT)
			rc = -EEXIST;
		if (rc)
			ok = false;
		else
			snprintf(n.name, sizeof(n.name), "%s", slash + 1);
	}
	if (ok) {
		n.r = old->r;
		n.r.flags &= NODE_DIRTY | NODE_ON_REMOTE | NODE_HAS_HASH;
		n.r.flags |= NODE_CACHED;
		if (dirty)
			n.r.dirty_since =
				n.r.dirty_since ? n.r.dirty_since : hfs_now();
	} else {
		rc = make_dirs(t, "/lost+found", &dir);
		if (rc)
			return rc;
		snprintf(n.name, sizeof(n.name), "%.200s.recovered-%llu",
			 old && old->name[0] ? old->name : "content",
			 (unsigned long long)ino);
		n.r.mode = S_IFREG | 0600;
		n.r.uid = getuid();
		n.r.gid = getgid();
		n.r.atime_ns = n.r.mtime_ns = n.r.ctime_ns = hfs_now_ns();
		n.r.flags = NODE_CACHED; /* local only, never evicted */
		dirty = false;
	}
	n.r.parent = dir;
	n.r.size = size;
	n.r.namelen = 0;
	char from[PATH_MAX], to[PATH_MAX];
	cache_path(c, ino, from);
	cache_path(c, n.ino, to);
	if (rename(from, to) < 0)
		return -errno;
	ix_put(t, &n);
	ix_link(t, dir, n.name, n.ino);
	if (dirty)
		ix_dirty_add(t, n.ino);
	if (ok)
		tl->placed++;
	else
		tl->found++;
	if (dirty)
		tl->to_upload++;
	return t->err;
}

/* Every content file under data/: inode numbers, bytes. */
struct content {
	uint64_t ino;
	uint64_t size;
};

struct contents {
	struct content *v;
	size_t n, cap;
};

static int list_one(void *arg, const struct cache_file *f)
{
	struct contents *c = arg;
	if (!f->ino || f->prev || f->partial || !S_ISREG(f->st->st_mode))
		return 0;
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 256;
		struct content *nv = realloc(c->v, cap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		c->v = nv;
		c->cap = cap;
	}
	c->v[c->n].ino = f->ino;
	c->v[c->n].size = (uint64_t)f->st->st_size;
	c->n++;
	return 0;
}

static int list_content(const char *cache_dir, struct content **out,
			size_t *nout)
{
	struct contents c = {0};
	int rc = cache_walk(cache_dir, list_one, &c);
	if (rc) {
		free(c.v);
		return rc;
	}
	*out = c.v;
	*nout = c.n;
	return 0;
}

int repair_run(const struct hfs_config *cfg, FILE *out, char *err,
	       size_t errlen)
{
	char ixdir[PATH_MAX], aside[PATH_MAX + 64];
	struct salvaged s = {0};
	struct content *files = NULL;
	size_t nfiles = 0;
	struct hfs_index *ix = NULL;
	struct cache *c = NULL;
	struct tally tl = {0};
	int lock = -1;
	int rc = hfs_take_lock(cfg->cache_dir, &lock, err, errlen);
	if (rc)
		return rc;
	cache_part_path(cfg->cache_dir, CACHE_INDEX, ixdir, sizeof(ixdir));
	snprintf(aside, sizeof(aside), "%s.damaged-%lld", ixdir,
		 (long long)hfs_now());
	char why[512] = "";
	rc = index_check(ixdir, why, sizeof(why));
	if (rc == 0) {
		fprintf(out, "the index in %s is sound: nothing to repair\n",
			cfg->cache_dir);
		goto out;
	}
	if (rc != -EUCLEAN) {
		snprintf(err, errlen, "cannot check the index in %s: %s",
			 cfg->cache_dir, strerror(-rc));
		goto out;
	}
	fprintf(out, "the index in %s is damaged: %s\n", cfg->cache_dir, why);
	rc = salvage(ixdir, &s);
	if (rc) {
		snprintf(err, errlen, "reading the damaged index: %s",
			 strerror(-rc));
		goto out;
	}
	if (rename(ixdir, aside) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot move %s aside: %s", ixdir,
			 strerror(errno));
		goto out;
	}
	rc = index_open(ixdir, &ix);
	if (!rc)
		rc = cache_create(cfg->cache_dir, &c);
	if (!rc)
		rc = list_content(cfg->cache_dir, &files, &nfiles);
	if (rc) {
		snprintf(err, errlen, "cannot build a new index in %s: %s",
			 cfg->cache_dir, strerror(-rc));
		goto out;
	}
	for (size_t i = 0; i < nfiles; i++) {
		uint8_t h[CHASH_LEN];
		uint64_t hashed = 0;
		int fd = cache_open_read(c, files[i].ino);
		if (fd < 0)
			continue;
		rc = chash_fd(fd, h, &hashed);
		close(fd);
		if (rc)
			memset(h, 0, sizeof(h));
		struct ixtxn t;
		rc = ix_begin(ix, true, &t);
		if (rc)
			break;
		rc = place(&t, c, &s, files[i].ino, hashed, h, &tl);
		if (rc) {
			ix_abort(&t);
			hlog_warn("repair: content file %llx left in place: %s",
				  (unsigned long long)files[i].ino,
				  strerror(-rc));
			continue;
		}
		rc = ix_commit(&t);
		if (rc)
			break;
	}
	if (!rc && s.nj) {
		struct ixtxn t;
		rc = ix_begin(ix, true, &t);
		for (size_t i = 0; !rc && i < s.nj; i++)
			rc = ix_journal_restore(&t, s.journal[i].seq,
						s.journal[i].val + 8,
						s.journal[i].len);
		if (!rc)
			rc = ix_commit(&t);
		else
			ix_abort(&t);
		if (!rc)
			tl.journal = s.nj;
	}
	if (!rc)
		rc = index_sync(ix);
	if (rc) {
		snprintf(err, errlen, "writing the new index: %s",
			 strerror(-rc));
		goto out;
	}
	fprintf(out,
		"repaired: %zu records read back from the damaged index; %zu "
		"content files back at their paths (%zu to upload), %zu kept "
		"in /lost+found of the mount, %zu namespace changes kept; the "
		"rest of the tree comes back from the remote. The damaged "
		"index is kept in %s\n",
		s.n, tl.placed, tl.to_upload, tl.found, tl.journal, aside);
out:
	index_close(ix);
	cache_destroy(c);
	for (size_t i = 0; i < s.nj; i++)
		free(s.journal[i].val);
	free(s.journal);
	free(s.nodes);
	free(files);
	if (lock >= 0)
		close(lock);
	return rc;
}

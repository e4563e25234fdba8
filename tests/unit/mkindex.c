/*
 * mkindex: builds a large huracanfs cache (LMDB index + cache layout)
 * directly through the index API, for the scale tests and bench/scale.sh.
 * It is a tool, not a test: it checks nothing about the index beyond the
 * return codes of the calls it makes.
 *
 *   mkindex CACHE_DIR NODES [--files-per-dir N] [--big-dir N] [--dirty N]
 *                           [--txn N]
 *
 * The tree looks like a trainer's mount that has seen a lot of runs:
 *
 *   /logs/archive/engine-2026-01-01T00-00.log ...     --big-dir files (10000)
 *   /learning/notes/note-000001.md ...                --dirty files, dirty
 *   /models/training/2026-01-01/BTC-USDT/
 *       model/model.bin
 *       metrics/epoch-000001.json ...                 --files-per-dir (1000)
 *       features/features-000001.parquet ...          each
 *       results/trades-000001.csv ...
 *       logs/train-000001.log ...
 *   /models/training/2026-01-01/ETH-USDT/ ...         16 symbols a day, as
 *                                                     many days as needed
 *
 * NODES counts every node, the root included; the last directory may hold
 * fewer files than the others so that the total is exact.
 *
 * Clean files are remote-only (NODE_ON_REMOTE, a rev and a content hash,
 * no content file), as after a listing of the remote. Directories are
 * marked listed an hour ago. The --dirty files are new local files waiting
 * for their upload: NODE_DIRTY | NODE_CACHED, in the dirty set, with a small
 * content file of their size under CACHE_DIR/data.
 *
 * Nodes are written in write transactions of --txn nodes (100000), in inode
 * order, and every directory's children in name order, so LMDB mostly
 * appends.
 *
 * On success it prints key=value lines for scripts:
 *   nodes= dirs= files= dirty= big_dir= big_dir_entries= deep_file=
 *   index_bytes= seconds=
 * The paths are relative to the mount root, with a leading '/'.
 * CACHE_DIR must not hold an index with nodes already.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hfs/cache.h"
#include "hfs/category.h"
#include "hfs/index.h"

static const char *const symbols[] = {
	"BTC-USDT",  "ETH-USDT",  "SOL-USDT",  "BNB-USDT",
	"XRP-USDT",  "ADA-USDT",  "DOGE-USDT", "AVAX-USDT",
	"DOT-USDT",  "LINK-USDT", "LTC-USDT",  "TRX-USDT",
	"ATOM-USDT", "NEAR-USDT", "UNI-USDT",  "OP-USDT",
};
#define NSYMBOLS (sizeof(symbols) / sizeof(symbols[0]))

/* Leaf directories of a run folder: name, file name prefix, suffix. */
static const struct {
	const char *dir, *prefix, *suffix;
} leaves[] = {
	{"metrics", "epoch-", ".json"},
	{"features", "features-", ".parquet"},
	{"results", "trades-", ".csv"},
	{"logs", "train-", ".log"},
};
#define NLEAVES (sizeof(leaves) / sizeof(leaves[0]))

struct gen {
	struct hfs_index *ix;
	struct cache *cache;
	struct ixtxn t;
	bool open;
	uint64_t target; /* nodes wanted, the root included */
	uint64_t made; /* nodes that exist, the root included */
	uint64_t dirs, files, dirty, archived;
	uint64_t per_txn, in_txn;
	int64_t now_s;
	char deep[4096];
	uid_t uid;
	gid_t gid;
};

static void die(const char *what, int rc)
{
	fprintf(stderr, "mkindex: %s: %s\n", what, strerror(rc < 0 ? -rc : rc));
	exit(1);
}

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static bool full(const struct gen *g)
{
	return g->made >= g->target;
}

/* Commits the current txn if it holds --txn nodes, and opens the next. */
static void txn_step(struct gen *g)
{
	if (g->open && g->in_txn < g->per_txn)
		return;
	if (g->open) {
		int rc = ix_commit(&g->t);
		if (rc)
			die("commit", rc);
		g->open = false;
	}
	int rc = ix_begin(g->ix, true, &g->t);
	if (rc)
		die("begin", rc);
	g->open = true;
	g->in_txn = 0;
}

/* Creates one node named @name in @parent; returns its inode number. */
static uint64_t add(struct gen *g, uint64_t parent, const char *path,
		    const char *name, bool dir, bool dirty)
{
	struct node n;
	txn_step(g);
	memset(&n, 0, sizeof(n));
	int rc = ix_alloc_ino(&g->t, &n.ino);
	if (rc)
		die("ix_alloc_ino", rc);
	snprintf(n.name, sizeof(n.name), "%s", name);
	uint64_t h = mix64(n.ino);
	n.r.parent = parent;
	n.r.uid = g->uid;
	n.r.gid = g->gid;
	/* A spread of past times, whole seconds as the remote gives them. */
	int64_t mt = g->now_s - 86400 * 30 + (int64_t)(h % (86400 * 29));
	n.r.mtime_ns = n.r.atime_ns = n.r.ctime_ns = mt * 1000000000LL;
	if (dir) {
		n.r.mode = S_IFDIR | 0755;
		n.r.flags = NODE_ON_REMOTE | NODE_LISTED;
		n.r.listed_at = g->now_s - 3600;
		g->dirs++;
	} else {
		n.r.mode = S_IFREG | 0644;
		n.r.cat = (uint8_t)cat_classify(NULL, 0, path + 1);
		g->files++;
	}
	if (!dir && !dirty) {
		n.r.size = 200 + h % (2u << 20);
		n.r.flags = NODE_ON_REMOTE | NODE_HAS_HASH;
		snprintf(n.r.rev, sizeof(n.r.rev), "%09llx%06llx",
			 (unsigned long long)(h >> 28),
			 (unsigned long long)(n.ino & 0xffffff));
		for (int i = 0; i < CHASH_LEN; i += 8) {
			uint64_t w = mix64(h + (uint64_t)i);
			memcpy(n.r.remote_hash + i, &w, 8);
		}
	} else if (dirty) {
		/* A new file written locally and not uploaded yet. */
		n.r.size = 64 + h % 4000;
		n.r.flags = NODE_DIRTY | NODE_CACHED;
		n.r.dirty_since = g->now_s - 60;
		n.r.gen = 1;
		n.r.mtime_ns = n.r.ctime_ns = (g->now_s - 60) * 1000000000LL;
		int fd = cache_open(g->cache, n.ino, 1);
		if (fd < 0)
			die("content file", fd);
		char buf[4096];
		for (size_t i = 0; i < n.r.size; i++)
			buf[i] = (char)('a' + (h + i) % 26);
		buf[n.r.size - 1] = '\n';
		if (write(fd, buf, n.r.size) != (ssize_t)n.r.size)
			die("write content file", errno ? errno : EIO);
		close(fd);
		g->dirty++;
	}
	rc = ix_put(&g->t, &n);
	if (!rc)
		rc = ix_link(&g->t, parent, name, n.ino);
	if (!rc && dirty)
		rc = ix_dirty_add(&g->t, n.ino);
	if (rc)
		die(path, rc);
	g->made++;
	g->in_txn++;
	if (!dir && strlen(path) < sizeof(g->deep))
		snprintf(g->deep, sizeof(g->deep), "%s", path);
	return n.ino;
}

/* Creates directory @name in @parent (path @ppath) if there is room;
 * returns its inode number, or 0. */
static uint64_t add_dir(struct gen *g, uint64_t parent, const char *ppath,
			const char *name, char *path, size_t len)
{
	if (full(g))
		return 0;
	snprintf(path, len, "%s/%s", ppath, name);
	return add(g, parent, path, name, true, false);
}

/* Creates up to @count files named PREFIX%06uSUFFIX in @dir. */
static void add_files(struct gen *g, uint64_t dir, const char *dpath,
		      const char *prefix, const char *suffix, uint64_t count,
		      bool dirty)
{
	char name[256], path[4096];
	for (uint64_t i = 1; i <= count && !full(g); i++) {
		snprintf(name, sizeof(name), "%s%06llu%s", prefix,
			 (unsigned long long)i, suffix);
		snprintf(path, sizeof(path), "%s/%s", dpath, name);
		add(g, dir, path, name, false, dirty);
	}
}

/* The big directory: log files ten minutes apart. */
static void add_archive(struct gen *g, uint64_t dir, const char *dpath,
			uint64_t count)
{
	char name[256], path[4096];
	time_t base = 1767225600; /* 2026-01-01T00:00:00Z */
	for (uint64_t i = 0; i < count && !full(g); i++) {
		time_t t = base + (time_t)i * 600;
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(name, sizeof(name), "engine-%Y-%m-%dT%H-%M.log", &tm);
		snprintf(path, sizeof(path), "%s/%s", dpath, name);
		add(g, dir, path, name, false, false);
		g->archived++;
	}
}

static uint64_t parse_count(const char *s, const char *what)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || v == 0) {
		fprintf(stderr, "mkindex: %s: not a count > 0: %s\n", what, s);
		exit(2);
	}
	return v;
}

static void usage(void)
{
	fprintf(stderr, "usage: mkindex CACHE_DIR NODES [--files-per-dir N] "
			"[--big-dir N] [--dirty N] [--txn N]\n");
	exit(2);
}

static int count_children(void *arg, const char *name, uint64_t ino)
{
	(void)name;
	(void)ino;
	(*(uint64_t *)arg)++;
	return 0;
}

int main(int argc, char **argv)
{
	struct gen g;
	uint64_t per_dir = 1000, big = 10000, ndirty = 100;
	const char *dir = NULL;
	char path[4096], sub[4096];
	int rc;

	memset(&g, 0, sizeof(g));
	g.per_txn = 100000;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (a[0] == '-' && i + 1 >= argc)
			usage();
		if (strcmp(a, "--files-per-dir") == 0)
			per_dir = parse_count(argv[++i], a);
		else if (strcmp(a, "--big-dir") == 0)
			big = parse_count(argv[++i], a);
		else if (strcmp(a, "--dirty") == 0)
			ndirty = parse_count(argv[++i], a);
		else if (strcmp(a, "--txn") == 0)
			g.per_txn = parse_count(argv[++i], a);
		else if (a[0] == '-')
			usage();
		else if (!dir)
			dir = a;
		else if (!g.target)
			g.target = parse_count(a, "NODES");
		else
			usage();
	}
	if (!dir || !g.target)
		usage();
	/* The fixed part (root, /logs/archive, /learning/notes,
	 * /models/training) is 6 directories; keep room for a run. */
	if (g.target < 64) {
		fprintf(stderr, "mkindex: NODES must be at least 64\n");
		return 2;
	}
	if (big > g.target / 2)
		big = g.target / 2;
	if (ndirty > g.target / 4)
		ndirty = g.target / 4;

	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	g.now_s = time(NULL);
	g.uid = getuid();
	g.gid = getgid();
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		die(dir, errno);
	rc = cache_create(dir, &g.cache);
	if (rc)
		die("cache_create", rc);
	snprintf(path, sizeof(path), "%s/index", dir);
	rc = index_open(path, &g.ix);
	if (rc)
		die(rc == -EPROTO ? "index of another layout" : "index_open",
		    rc);

	/* Refuse to add to an index that has nodes already. */
	uint64_t root_children = 0;
	rc = ix_begin(g.ix, false, &g.t);
	if (!rc) {
		rc = ix_foreach_child(&g.t, INDEX_ROOT_INO, count_children,
				      &root_children);
		ix_abort(&g.t);
	}
	if (rc < 0)
		die("reading the index", rc);
	if (root_children) {
		fprintf(stderr, "mkindex: the index in %s has nodes already\n",
			dir);
		return 1;
	}

	g.made = 1; /* the root */
	uint64_t logs =
		add_dir(&g, INDEX_ROOT_INO, "", "logs", path, sizeof(path));
	uint64_t archive =
		add_dir(&g, logs, "/logs", "archive", sub, sizeof(sub));
	add_archive(&g, archive, "/logs/archive", big);
	uint64_t learning =
		add_dir(&g, INDEX_ROOT_INO, "", "learning", path, sizeof(path));
	uint64_t notes =
		add_dir(&g, learning, "/learning", "notes", sub, sizeof(sub));
	if (notes)
		add_files(&g, notes, "/learning/notes", "note-", ".md", ndirty,
			  true);
	uint64_t models =
		add_dir(&g, INDEX_ROOT_INO, "", "models", path, sizeof(path));
	uint64_t training =
		add_dir(&g, models, "/models", "training", sub, sizeof(sub));
	char dpath[4096], rpath[4096], lpath[4096];
	time_t day = 1767225600; /* 2026-01-01 */
	while (training && !full(&g)) {
		struct tm tm;
		char date[32];
		gmtime_r(&day, &tm);
		strftime(date, sizeof(date), "%Y-%m-%d", &tm);
		day += 86400;
		uint64_t d = add_dir(&g, training, "/models/training", date,
				     dpath, sizeof(dpath));
		for (size_t s = 0; s < NSYMBOLS && d && !full(&g); s++) {
			uint64_t run = add_dir(&g, d, dpath, symbols[s], rpath,
					       sizeof(rpath));
			if (!run)
				break;
			/* Children in name order: features, logs, metrics,
			 * model, results. */
			const size_t order[] = {1, 3, 0, 99, 2};
			for (size_t k = 0; k < 5 && !full(&g); k++) {
				if (order[k] == 99) {
					uint64_t m =
						add_dir(&g, run, rpath, "model",
							lpath, sizeof(lpath));
					if (m && !full(&g)) {
						char fp[4096];
						snprintf(fp, sizeof(fp),
							 "%s/model.bin", lpath);
						add(&g, m, fp, "model.bin",
						    false, false);
					}
					continue;
				}
				size_t l = order[k];
				uint64_t leaf =
					add_dir(&g, run, rpath, leaves[l].dir,
						lpath, sizeof(lpath));
				if (leaf)
					add_files(&g, leaf, lpath,
						  leaves[l].prefix,
						  leaves[l].suffix, per_dir,
						  false);
			}
		}
	}
	if (g.open) {
		rc = ix_commit(&g.t);
		if (rc)
			die("commit", rc);
	}
	rc = index_sync(g.ix);
	if (rc)
		die("index_sync", rc);
	index_close(g.ix);
	cache_destroy(g.cache);
	clock_gettime(CLOCK_MONOTONIC, &t1);

	struct stat st;
	snprintf(path, sizeof(path), "%s/index/data.mdb", dir);
	long long ibytes = stat(path, &st) == 0 ? (long long)st.st_size : -1;
	printf("nodes=%llu\ndirs=%llu\nfiles=%llu\ndirty=%llu\n",
	       (unsigned long long)g.made, (unsigned long long)g.dirs + 1,
	       (unsigned long long)g.files, (unsigned long long)g.dirty);
	printf("big_dir=/logs/archive\nbig_dir_entries=%llu\n",
	       (unsigned long long)g.archived);
	printf("deep_file=%s\nindex_bytes=%lld\nseconds=%.3f\n", g.deep, ibytes,
	       (double)(t1.tv_sec - t0.tv_sec) +
		       (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	return 0;
}

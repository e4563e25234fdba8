/*
 * plfs: a pass-through FUSE filesystem that loses power on command.
 *
 *   plfs [--ctl SOCKET] [--max-pending BYTES] [--verbose]
 *        BACKING_DIR MOUNTPOINT [FUSE options...]
 *
 * Everything is passed through to BACKING_DIR, except the DATA of regular
 * files: writes are kept in memory, per file (per backing inode), as 4 KiB
 * pages, until that file is fsync'd or fdatasync'd (or a "sync" command
 * comes on the control socket). Reads, mmap and getattr see the overlay
 * (backing bytes + pending pages, and the size the writes gave), so
 * programs on top work as on any filesystem.
 *
 * What is applied to BACKING_DIR at once ("metadata is journaled before
 * data", the harshest realistic model: ext4 with delalloc and without
 * auto_da_alloc): create, mkdir, mknod, symlink, link, unlink, rmdir,
 * rename (with its flags), chmod, chown, utimens, truncate (both ways, so
 * O_TRUNC too) and fallocate. A new name is thus durable before its bytes,
 * and a file replaced without fsync comes back empty or short.
 *
 * The control socket (a Unix stream socket; one command line in, one JSON
 * line out, then the connection closes):
 *   stats                      counters, as JSON
 *   sync                       write every pending page back (sync(1))
 *   cut drop                   power is gone: every later operation fails
 *                              with EIO; every pending page is dropped
 *   cut subset SEED PERMILLE   the same, but first each pending page is
 *                              written back with probability PERMILLE/1000
 *                              (chosen by a hash of SEED, the inode and
 *                              the page, so any order is possible: a
 *                              kernel writes dirty pages in any order)
 *   cut keep                   the same, all pending pages written first
 * After a cut plfs stays mounted, refusing everything, until it is
 * unmounted (fusermount3 -u); then it exits.
 *
 * syncfs(2) and sync(2) do not reach a FUSE server (the kernel sends
 * FUSE_SYNCFS to virtiofs only), so they write nothing back here; see
 * README.md.
 *
 * One mutex serializes every operation, so a cut falls between two
 * operations: each one either happened entirely before it or fails.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define PG 4096
#define NBUCKETS 4096

struct page {
	uint64_t idx;
	unsigned char data[PG];
};

/* One backing inode with pending pages or open handles. */
struct pnode {
	dev_t dev;
	ino_t ino;
	int fd; /* O_RDWR (else O_RDONLY) on the backing inode: pins it */
	uint64_t size; /* what readers see; >= the backing file's size */
	struct timespec mtime; /* what readers see */
	struct page **tab; /* open addressing on idx, cap a power of 2 */
	size_t cap, n;
	unsigned opens;
	uint64_t last_write; /* sequence number, for pressure writeback */
	struct pnode *hnext; /* bucket chain */
};

struct handle {
	struct pnode *pn; /* NULL for a file we could not pin (not regular) */
	int flags;
};

static struct {
	pthread_mutex_t mu;
	int bfd; /* the backing directory */
	const char *backing;
	const char *ctl_path;
	uint64_t max_pending;
	bool verbose;
	bool cut;
	uint64_t seq;
	struct pnode *buckets[NBUCKETS];
	/* counters */
	uint64_t pending_bytes; /* bytes of pending pages */
	uint64_t pending_pages;
	uint64_t written_bytes; /* bytes accepted by write() */
	uint64_t synced_pages, synced_bytes; /* by fsync / sync */
	uint64_t fsyncs;
	uint64_t pressure_pages;
	uint64_t cut_pending_pages, cut_pending_bytes, cut_pending_files;
	uint64_t cut_written_pages, cut_written_bytes;
	uint64_t cut_dropped_pages, cut_dropped_bytes;
	uint64_t refused; /* operations refused after the cut */
	char cut_mode[16];
} G = {.mu = PTHREAD_MUTEX_INITIALIZER, .bfd = -1};

static void vlog(const char *fmt, ...)
{
	if (!G.verbose)
		return;
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "plfs: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static const char *rel(const char *path)
{
	while (*path == '/')
		path++;
	return *path ? path : ".";
}

/* -- pages of one pnode ------------------------------------------------ */

static size_t slot_of(uint64_t idx, size_t cap)
{
	uint64_t h = idx * 0x9e3779b97f4a7c15ULL;
	return (size_t)(h >> 17) & (cap - 1);
}

static struct page *page_find(struct pnode *pn, uint64_t idx)
{
	if (!pn->cap)
		return NULL;
	for (size_t s = slot_of(idx, pn->cap);; s = (s + 1) & (pn->cap - 1)) {
		struct page *p = pn->tab[s];
		if (!p)
			return NULL;
		if (p->idx == idx)
			return p;
	}
}

static void tab_insert(struct page **tab, size_t cap, struct page *p)
{
	size_t s = slot_of(p->idx, cap);
	while (tab[s])
		s = (s + 1) & (cap - 1);
	tab[s] = p;
}

static int tab_grow(struct pnode *pn)
{
	size_t ncap = pn->cap ? pn->cap * 2 : 64;
	struct page **nt = calloc(ncap, sizeof(*nt));
	if (!nt)
		return -ENOMEM;
	for (size_t i = 0; i < pn->cap; i++)
		if (pn->tab[i])
			tab_insert(nt, ncap, pn->tab[i]);
	free(pn->tab);
	pn->tab = nt;
	pn->cap = ncap;
	return 0;
}

/* Valid bytes of page @p of @pn (the size cuts the last one short). */
static size_t page_len(const struct pnode *pn, const struct page *p)
{
	uint64_t off = p->idx * PG;
	if (off >= pn->size)
		return 0;
	return pn->size - off < PG ? (size_t)(pn->size - off) : PG;
}

/* Pages of @pn in index order (a new array, or NULL if none/no memory). */
static int cmp_page(const void *a, const void *b)
{
	const struct page *x = *(struct page *const *)a;
	const struct page *y = *(struct page *const *)b;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static struct page **pages_sorted(struct pnode *pn)
{
	if (!pn->n)
		return NULL;
	struct page **v = malloc(pn->n * sizeof(*v));
	if (!v)
		return NULL;
	size_t k = 0;
	for (size_t i = 0; i < pn->cap; i++)
		if (pn->tab[i])
			v[k++] = pn->tab[i];
	qsort(v, k, sizeof(*v), cmp_page);
	return v;
}

static void pages_clear(struct pnode *pn)
{
	for (size_t i = 0; i < pn->cap; i++) {
		if (pn->tab[i]) {
			G.pending_pages--;
			G.pending_bytes -= PG;
			free(pn->tab[i]);
		}
	}
	free(pn->tab);
	pn->tab = NULL;
	pn->cap = pn->n = 0;
}

/* Removes pages with idx >= @from (a shrink). The table is rebuilt, as
 * open addressing needs its chains intact; -ENOMEM leaves all as it was. */
static int pages_drop_from(struct pnode *pn, uint64_t from)
{
	if (!pn->n)
		return 0;
	struct page **nt = calloc(pn->cap, sizeof(*nt));
	if (!nt)
		return -ENOMEM;
	size_t n = 0;
	for (size_t i = 0; i < pn->cap; i++) {
		struct page *p = pn->tab[i];
		if (!p)
			continue;
		if (p->idx >= from) {
			free(p);
			G.pending_pages--;
			G.pending_bytes -= PG;
		} else {
			tab_insert(nt, pn->cap, p);
			n++;
		}
	}
	free(pn->tab);
	pn->tab = nt;
	pn->n = n;
	return 0;
}

/* The page @idx of @pn, made if missing from the bytes readers see. */
static int page_get(struct pnode *pn, uint64_t idx, struct page **out)
{
	struct page *p = page_find(pn, idx);
	if (p) {
		*out = p;
		return 0;
	}
	if ((pn->n + 1) * 2 > pn->cap) {
		int rc = tab_grow(pn);
		if (rc)
			return rc;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->idx = idx;
	uint64_t off = idx * PG;
	if (off < pn->size) {
		size_t want = page_len(pn, p);
		ssize_t got = pread(pn->fd, p->data, want, (off_t)off);
		if (got < 0) {
			int e = errno;
			free(p);
			return -e;
		}
		/* Short: the rest reads as zeros (calloc). */
	}
	tab_insert(pn->tab, pn->cap, p);
	pn->n++;
	G.pending_pages++;
	G.pending_bytes += PG;
	*out = p;
	return 0;
}

/* Writes page @p of @pn to the backing file. */
static int page_write(struct pnode *pn, struct page *p, uint64_t *bytes)
{
	size_t len = page_len(pn, p);
	size_t done = 0;
	while (done < len) {
		ssize_t w = pwrite(pn->fd, p->data + done, len - done,
				   (off_t)(p->idx * PG + done));
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (size_t)w;
	}
	*bytes += len;
	return 0;
}

/* Gives the backing file the mtime readers saw. */
static void keep_mtime(struct pnode *pn)
{
	struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, pn->mtime};
	futimens(pn->fd, ts);
}

/* Writes every pending page of @pn back; counts into *pages, *bytes. */
static int pn_writeback(struct pnode *pn, uint64_t *pages, uint64_t *bytes)
{
	struct page **v = pages_sorted(pn);
	int rc = 0;
	if (!v && pn->n)
		return -ENOMEM;
	for (size_t i = 0; i < pn->n && !rc; i++)
		rc = page_write(pn, v[i], bytes);
	if (rc) {
		free(v);
		return rc; /* the pages stay pending */
	}
	*pages += pn->n;
	free(v);
	struct stat st;
	if (fstat(pn->fd, &st) == 0 && (uint64_t)st.st_size < pn->size)
		if (ftruncate(pn->fd, (off_t)pn->size) < 0)
			rc = -errno;
	bool had = pn->n > 0;
	pages_clear(pn);
	if (had)
		keep_mtime(pn);
	return rc;
}

/* -- the pnode table ---------------------------------------------------- */

static size_t bucket_of(dev_t dev, ino_t ino)
{
	uint64_t h = ((uint64_t)ino * 0x9e3779b97f4a7c15ULL) ^ (uint64_t)dev;
	return (size_t)(h >> 20) % NBUCKETS;
}

static struct pnode *pn_lookup(dev_t dev, ino_t ino)
{
	for (struct pnode *p = G.buckets[bucket_of(dev, ino)]; p; p = p->hnext)
		if (p->dev == dev && p->ino == ino)
			return p;
	return NULL;
}

static void pn_free(struct pnode *pn)
{
	struct pnode **pp = &G.buckets[bucket_of(pn->dev, pn->ino)];
	while (*pp && *pp != pn)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = pn->hnext;
	pages_clear(pn);
	close(pn->fd);
	free(pn);
}

/* Frees @pn once nothing needs it: no handle, and no pending page, or no
 * name left (its bytes can never be read again). */
static void pn_maybe_free(struct pnode *pn)
{
	if (!pn || pn->opens)
		return;
	if (pn->n) {
		struct stat st;
		if (fstat(pn->fd, &st) < 0 || st.st_nlink > 0)
			return;
	}
	pn_free(pn);
}

/* The pnode of the backing inode open as @fd (stolen: closed if a pnode
 * for it exists already). */
static int pn_from_fd(int fd, struct pnode **out)
{
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	struct pnode *pn = pn_lookup(st.st_dev, st.st_ino);
	if (pn) {
		close(fd);
		*out = pn;
		return 0;
	}
	pn = calloc(1, sizeof(*pn));
	if (!pn) {
		close(fd);
		return -ENOMEM;
	}
	pn->dev = st.st_dev;
	pn->ino = st.st_ino;
	pn->fd = fd;
	pn->size = (uint64_t)st.st_size;
	pn->mtime = st.st_mtim;
	size_t b = bucket_of(pn->dev, pn->ino);
	pn->hnext = G.buckets[b];
	G.buckets[b] = pn;
	*out = pn;
	return 0;
}

static int open_backing(const char *r)
{
	int fd = openat(G.bfd, r, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && (errno == EACCES || errno == EPERM || errno == EROFS))
		fd = openat(G.bfd, r, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	return fd < 0 ? -errno : fd;
}

/* The pnode of the regular file at @path (made if @create). */
static int pn_by_path(const char *path, bool create, struct pnode **out)
{
	struct stat st;
	const char *r = rel(path);
	if (fstatat(G.bfd, r, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	struct pnode *pn = pn_lookup(st.st_dev, st.st_ino);
	if (pn || !create || !S_ISREG(st.st_mode)) {
		*out = pn;
		return 0;
	}
	int fd = open_backing(r);
	if (fd < 0)
		return fd;
	return pn_from_fd(fd, out);
}

static uint64_t total_pending(void)
{
	return G.pending_bytes;
}

/* Over --max-pending: write whole files back, least recently written
 * first, until half of it is left (the kernel's background writeback). */
static void relieve_pressure(void)
{
	if (!G.max_pending || total_pending() <= G.max_pending)
		return;
	while (total_pending() > G.max_pending / 2) {
		struct pnode *old = NULL;
		for (size_t b = 0; b < NBUCKETS; b++)
			for (struct pnode *p = G.buckets[b]; p; p = p->hnext)
				if (p->n &&
				    (!old || p->last_write < old->last_write))
					old = p;
		if (!old)
			return;
		uint64_t pages = 0, bytes = 0;
		if (pn_writeback(old, &pages, &bytes) < 0)
			return;
		G.pressure_pages += pages;
		vlog("pressure: wrote back %" PRIu64 " pages of inode %llu",
		     pages, (unsigned long long)old->ino);
		pn_maybe_free(old);
	}
}

/* -- data operations on a pnode ---------------------------------------- */

static int pn_write(struct pnode *pn, const char *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		uint64_t o = off + done;
		struct page *p = NULL;
		int rc = page_get(pn, o / PG, &p);
		if (rc)
			return done ? (int)done : rc;
		size_t in = (size_t)(o % PG);
		size_t n = PG - in < len - done ? PG - in : len - done;
		memcpy(p->data + in, buf + done, n);
		done += n;
		if (o + n > pn->size)
			pn->size = o + n;
	}
	clock_gettime(CLOCK_REALTIME, &pn->mtime);
	pn->last_write = ++G.seq;
	G.written_bytes += len;
	return (int)len;
}

static int pn_read(struct pnode *pn, char *buf, size_t len, uint64_t off)
{
	if (off >= pn->size)
		return 0;
	if (len > pn->size - off)
		len = (size_t)(pn->size - off);
	size_t got = 0;
	while (got < len) {
		ssize_t r =
			pread(pn->fd, buf + got, len - got, (off_t)(off + got));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	memset(buf + got, 0, len - got);
	if (!pn->n)
		return (int)len;
	for (uint64_t idx = off / PG; idx * PG < off + len; idx++) {
		struct page *p = page_find(pn, idx);
		if (!p)
			continue;
		uint64_t ps = idx * PG, a = ps > off ? ps : off;
		uint64_t e = ps + PG < off + len ? ps + PG : off + len;
		memcpy(buf + (a - off), p->data + (a - ps), (size_t)(e - a));
	}
	return (int)len;
}

/* Zeros bytes [@a, @b) of the pending pages (a shrink or a punched hole). */
static void pages_zero(struct pnode *pn, uint64_t a, uint64_t b)
{
	if (a >= b || !pn->n)
		return;
	for (uint64_t idx = a / PG; idx * PG < b; idx++) {
		struct page *p = page_find(pn, idx);
		if (!p)
			continue;
		uint64_t ps = idx * PG, x = ps > a ? ps : a;
		uint64_t y = ps + PG < b ? ps + PG : b;
		memset(p->data + (x - ps), 0, (size_t)(y - x));
	}
}

/* truncate: applied to the backing file at once (journaled metadata). */
static int pn_truncate(struct pnode *pn, uint64_t size)
{
	if (size < pn->size) {
		int rc = pages_drop_from(pn, (size + PG - 1) / PG);
		if (rc)
			return rc;
		pages_zero(pn, size, (size + PG - 1) / PG * PG);
	}
	if (ftruncate(pn->fd, (off_t)size) < 0)
		return -errno;
	pn->size = size;
	clock_gettime(CLOCK_REALTIME, &pn->mtime);
	return 0;
}

/* -- FUSE operations ----------------------------------------------------- */

#define ENTER()                              \
	pthread_mutex_lock(&G.mu);           \
	if (G.cut) {                         \
		G.refused++;                 \
		pthread_mutex_unlock(&G.mu); \
		return -EIO;                 \
	}
#define LEAVE(rc)                            \
	do {                                 \
		int rc_ = (rc);              \
		pthread_mutex_unlock(&G.mu); \
		return rc_;                  \
	} while (0)

static struct handle *hd(struct fuse_file_info *fi)
{
	return fi ? (struct handle *)(uintptr_t)fi->fh : NULL;
}

static void overlay_stat(struct pnode *pn, struct stat *st)
{
	if (!pn)
		return;
	st->st_size = (off_t)pn->size;
	st->st_mtim = pn->mtime;
	if (st->st_ctim.tv_sec < pn->mtime.tv_sec)
		st->st_ctim = pn->mtime;
	blkcnt_t b = (blkcnt_t)((pn->size + 511) / 512);
	if (st->st_blocks < b)
		st->st_blocks = b;
}

static int op_getattr(const char *path, struct stat *st,
		      struct fuse_file_info *fi)
{
	ENTER();
	struct handle *h = hd(fi);
	int rc = 0;
	if (h && h->pn) {
		if (fstat(h->pn->fd, st) < 0)
			rc = -errno;
		else
			overlay_stat(h->pn, st);
		LEAVE(rc);
	}
	if (!path)
		LEAVE(-EBADF);
	if (fstatat(G.bfd, rel(path), st, AT_SYMLINK_NOFOLLOW) < 0)
		LEAVE(-errno);
	overlay_stat(pn_lookup(st->st_dev, st->st_ino), st);
	LEAVE(0);
}

static int op_readlink(const char *path, char *buf, size_t size)
{
	ENTER();
	ssize_t n = readlinkat(G.bfd, rel(path), buf, size - 1);
	if (n < 0)
		LEAVE(-errno);
	buf[n] = '\0';
	LEAVE(0);
}

static int op_mknod(const char *path, mode_t mode, dev_t dev)
{
	ENTER();
	LEAVE(mknodat(G.bfd, rel(path), mode, dev) < 0 ? -errno : 0);
}

static int op_mkdir(const char *path, mode_t mode)
{
	ENTER();
	LEAVE(mkdirat(G.bfd, rel(path), mode) < 0 ? -errno : 0);
}

/* The pnode of the name @r (if any), before it goes away. */
static struct pnode *pn_of_name(const char *r)
{
	struct stat st;
	if (fstatat(G.bfd, r, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return NULL;
	return pn_lookup(st.st_dev, st.st_ino);
}

static int op_unlink(const char *path)
{
	ENTER();
	const char *r = rel(path);
	struct pnode *pn = pn_of_name(r);
	if (unlinkat(G.bfd, r, 0) < 0)
		LEAVE(-errno);
	pn_maybe_free(pn);
	LEAVE(0);
}

static int op_rmdir(const char *path)
{
	ENTER();
	LEAVE(unlinkat(G.bfd, rel(path), AT_REMOVEDIR) < 0 ? -errno : 0);
}

static int op_symlink(const char *target, const char *path)
{
	ENTER();
	LEAVE(symlinkat(target, G.bfd, rel(path)) < 0 ? -errno : 0);
}

static int op_rename(const char *from, const char *to, unsigned int flags)
{
	ENTER();
	const char *t = rel(to);
	struct pnode *pn = (flags & RENAME_EXCHANGE) ? NULL : pn_of_name(t);
	if (renameat2(G.bfd, rel(from), G.bfd, t, flags) < 0)
		LEAVE(-errno);
	pn_maybe_free(pn);
	LEAVE(0);
}

static int op_link(const char *from, const char *to)
{
	ENTER();
	LEAVE(linkat(G.bfd, rel(from), G.bfd, rel(to), 0) < 0 ? -errno : 0);
}

static int op_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	ENTER();
	struct handle *h = hd(fi);
	if (h && h->pn)
		LEAVE(fchmod(h->pn->fd, mode) < 0 ? -errno : 0);
	if (!path)
		LEAVE(-EBADF);
	LEAVE(fchmodat(G.bfd, rel(path), mode, 0) < 0 ? -errno : 0);
}

static int op_chown(const char *path, uid_t uid, gid_t gid,
		    struct fuse_file_info *fi)
{
	ENTER();
	struct handle *h = hd(fi);
	if (h && h->pn)
		LEAVE(fchown(h->pn->fd, uid, gid) < 0 ? -errno : 0);
	if (!path)
		LEAVE(-EBADF);
	LEAVE(fchownat(G.bfd, rel(path), uid, gid, AT_SYMLINK_NOFOLLOW) < 0
		      ? -errno
		      : 0);
}

static int op_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	ENTER();
	if (size < 0)
		LEAVE(-EINVAL);
	struct handle *h = hd(fi);
	struct pnode *pn = h ? h->pn : NULL;
	int rc = 0;
	if (!pn) {
		if (!path)
			LEAVE(-EBADF);
		rc = pn_by_path(path, true, &pn);
		if (rc)
			LEAVE(rc);
		if (!pn)
			LEAVE(-EINVAL); /* not a regular file */
	}
	rc = pn_truncate(pn, (uint64_t)size);
	pn_maybe_free(pn);
	LEAVE(rc);
}

static int op_utimens(const char *path, const struct timespec ts[2],
		      struct fuse_file_info *fi)
{
	ENTER();
	struct handle *h = hd(fi);
	struct pnode *pn = h ? h->pn : NULL;
	int rc;
	if (pn) {
		rc = futimens(pn->fd, ts) < 0 ? -errno : 0;
	} else {
		if (!path)
			LEAVE(-EBADF);
		rc = utimensat(G.bfd, rel(path), ts, AT_SYMLINK_NOFOLLOW) < 0
			     ? -errno
			     : 0;
		if (!rc)
			pn_by_path(path, false, &pn);
	}
	if (!rc && pn) {
		struct stat st;
		if (fstat(pn->fd, &st) == 0)
			pn->mtime = st.st_mtim;
	}
	LEAVE(rc);
}

static int handle_new(struct pnode *pn, int flags, struct fuse_file_info *fi)
{
	struct handle *h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->pn = pn;
	h->flags = flags;
	if (pn)
		pn->opens++;
	fi->fh = (uint64_t)(uintptr_t)h;
	fi->direct_io = 0;
	fi->keep_cache = 0;
	return 0;
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
	ENTER();
	struct pnode *pn;
	int rc = pn_by_path(path, true, &pn);
	if (rc)
		LEAVE(rc);
	if (!pn)
		LEAVE(-EINVAL);
	if (fi->flags & O_TRUNC) {
		rc = pn_truncate(pn, 0);
		if (rc) {
			pn_maybe_free(pn);
			LEAVE(rc);
		}
	}
	rc = handle_new(pn, fi->flags, fi);
	if (rc)
		pn_maybe_free(pn);
	LEAVE(rc);
}

static int op_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	ENTER();
	const char *r = rel(path);
	int fl = (fi->flags & (O_EXCL | O_TRUNC)) | O_CREAT | O_RDWR |
		 O_CLOEXEC | O_NOFOLLOW;
	int fd = openat(G.bfd, r, fl, mode);
	if (fd < 0)
		LEAVE(-errno);
	struct pnode *pn;
	int rc = pn_from_fd(fd, &pn);
	if (rc)
		LEAVE(rc);
	if (fi->flags & O_TRUNC) {
		rc = pn_truncate(pn, 0);
		if (rc) {
			pn_maybe_free(pn);
			LEAVE(rc);
		}
	}
	rc = handle_new(pn, fi->flags, fi);
	if (rc)
		pn_maybe_free(pn);
	LEAVE(rc);
}

static int op_read(const char *path, char *buf, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	(void)path;
	ENTER();
	struct handle *h = hd(fi);
	if (!h || !h->pn || off < 0)
		LEAVE(-EBADF);
	LEAVE(pn_read(h->pn, buf, size, (uint64_t)off));
}

static int op_write(const char *path, const char *buf, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	(void)path;
	ENTER();
	struct handle *h = hd(fi);
	if (!h || !h->pn || off < 0)
		LEAVE(-EBADF);
	int rc = pn_write(h->pn, buf, size, (uint64_t)off);
	relieve_pressure();
	LEAVE(rc);
}

static int op_statfs(const char *path, struct statvfs *sv)
{
	(void)path;
	ENTER();
	LEAVE(fstatvfs(G.bfd, sv) < 0 ? -errno : 0);
}

static int op_flush(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	(void)fi;
	ENTER();
	LEAVE(0);
}

static int op_release(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	pthread_mutex_lock(&G.mu);
	struct handle *h = hd(fi);
	if (h) {
		if (h->pn) {
			h->pn->opens--;
			pn_maybe_free(h->pn);
		}
		free(h);
		fi->fh = 0;
	}
	pthread_mutex_unlock(&G.mu);
	return 0;
}

static int op_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	ENTER();
	struct handle *h = hd(fi);
	if (!h || !h->pn)
		LEAVE(-EBADF);
	uint64_t pages = 0, bytes = 0;
	int rc = pn_writeback(h->pn, &pages, &bytes);
	G.fsyncs++;
	G.synced_pages += pages;
	G.synced_bytes += bytes;
	vlog("fsync%s %s: %" PRIu64 " pages, %" PRIu64 " bytes -> %d",
	     datasync ? " (data)" : "", path ? path : "(unlinked)", pages,
	     bytes, rc);
	LEAVE(rc);
}

static int op_fallocate(const char *path, int mode, off_t off, off_t len,
			struct fuse_file_info *fi)
{
	(void)path;
	ENTER();
	struct handle *h = hd(fi);
	if (!h || !h->pn)
		LEAVE(-EBADF);
	if (off < 0 || len <= 0)
		LEAVE(-EINVAL);
	struct pnode *pn = h->pn;
	const int known = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE |
			  FALLOC_FL_ZERO_RANGE;
	if (mode & ~known)
		LEAVE(-EOPNOTSUPP); /* collapse/insert would shift pages */
	if (fallocate(pn->fd, mode, off, len) < 0)
		LEAVE(-errno);
	uint64_t end = (uint64_t)off + (uint64_t)len;
	if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
		pages_zero(pn, (uint64_t)off, end);
	if (!(mode & FALLOC_FL_KEEP_SIZE) && end > pn->size)
		pn->size = end;
	LEAVE(0);
}

static int op_opendir(const char *path, struct fuse_file_info *fi)
{
	ENTER();
	int fd = openat(G.bfd, rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		LEAVE(-errno);
	DIR *d = fdopendir(fd);
	if (!d) {
		int e = errno;
		close(fd);
		LEAVE(-e);
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	LEAVE(0);
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t fill,
		      off_t off, struct fuse_file_info *fi,
		      enum fuse_readdir_flags flags)
{
	(void)path;
	(void)off;
	(void)flags;
	ENTER();
	DIR *d = (DIR *)(uintptr_t)fi->fh;
	rewinddir(d);
	struct dirent *de;
	while ((de = readdir(d))) {
		struct stat st = {.st_ino = de->d_ino,
				  .st_mode = (mode_t)DTTOIF(de->d_type)};
		if (fill(buf, de->d_name, &st, 0, 0))
			break;
	}
	LEAVE(0);
}

static int op_releasedir(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	pthread_mutex_lock(&G.mu);
	DIR *d = (DIR *)(uintptr_t)fi->fh;
	if (d)
		closedir(d);
	fi->fh = 0;
	pthread_mutex_unlock(&G.mu);
	return 0;
}

static int op_fsyncdir(const char *path, int datasync,
		       struct fuse_file_info *fi)
{
	(void)path;
	(void)datasync;
	(void)fi;
	ENTER();
	LEAVE(0); /* namespace changes are durable at once */
}

static int op_access(const char *path, int mask)
{
	ENTER();
	LEAVE(faccessat(G.bfd, rel(path), mask, 0) < 0 ? -errno : 0);
}

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	/* Nothing the kernel caches may hide the model. */
	conn->want &=
		~(unsigned)(FUSE_CAP_WRITEBACK_CACHE |
			    FUSE_CAP_AUTO_INVAL_DATA | FUSE_CAP_SPLICE_READ);
	cfg->use_ino = 1;
	cfg->hard_remove = 1;
	cfg->nullpath_ok = 1;
	cfg->attr_timeout = 0;
	cfg->entry_timeout = 0;
	cfg->negative_timeout = 0;
	cfg->direct_io = 0;
	cfg->kernel_cache = 0;
	cfg->auto_cache = 0;
	return NULL;
}

static const struct fuse_operations ops = {
	.init = op_init,
	.getattr = op_getattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.chmod = op_chmod,
	.chown = op_chown,
	.truncate = op_truncate,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.statfs = op_statfs,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.fsyncdir = op_fsyncdir,
	.access = op_access,
	.create = op_create,
	.utimens = op_utimens,
	.fallocate = op_fallocate,
};

/* -- the control socket -------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* The cut. G.mu held. @mode "drop", "subset" or "keep". */
static void cut(const char *mode, uint64_t seed, unsigned permille)
{
	G.cut = true;
	snprintf(G.cut_mode, sizeof(G.cut_mode), "%s", mode);
	for (size_t b = 0; b < NBUCKETS; b++) {
		for (struct pnode *pn = G.buckets[b]; pn; pn = pn->hnext) {
			if (!pn->n)
				continue;
			G.cut_pending_files++;
			struct page **v = pages_sorted(pn);
			for (size_t i = 0; v && i < pn->n; i++) {
				struct page *p = v[i];
				uint64_t len = page_len(pn, p);
				G.cut_pending_pages++;
				G.cut_pending_bytes += len;
				bool wb = !strcmp(mode, "keep");
				if (!strcmp(mode, "subset")) {
					uint64_t h = mix64(
						seed ^ mix64((uint64_t)pn->ino ^
							     mix64(p->idx)));
					wb = h % 1000 < permille;
				}
				uint64_t bytes = 0;
				if (wb && page_write(pn, p, &bytes) == 0) {
					G.cut_written_pages++;
					G.cut_written_bytes += bytes;
				} else {
					G.cut_dropped_pages++;
					G.cut_dropped_bytes += len;
				}
			}
			free(v);
			pages_clear(pn);
		}
	}
	vlog("cut (%s): %" PRIu64 " pending pages in %" PRIu64
	     " files; %" PRIu64 " written back, %" PRIu64 " dropped",
	     mode, G.cut_pending_pages, G.cut_pending_files,
	     G.cut_written_pages, G.cut_dropped_pages);
}

static void sync_all(void)
{
	for (size_t b = 0; b < NBUCKETS; b++) {
		struct pnode *pn = G.buckets[b];
		while (pn) {
			struct pnode *next = pn->hnext;
			uint64_t pages = 0, bytes = 0;
			if (pn->n && pn_writeback(pn, &pages, &bytes) == 0) {
				G.synced_pages += pages;
				G.synced_bytes += bytes;
			}
			pn_maybe_free(pn);
			pn = next;
		}
	}
}

static void stats_json(char *buf, size_t sz)
{
	uint64_t files = 0;
	for (size_t b = 0; b < NBUCKETS; b++)
		for (struct pnode *p = G.buckets[b]; p; p = p->hnext)
			files += p->n > 0;
	snprintf(buf, sz,
		 "{\"cut\": %s, \"cut_mode\": \"%s\", \"pending_pages\": "
		 "%" PRIu64 ", \"pending_files\": %" PRIu64
		 ", \"written_bytes\": %" PRIu64 ", \"fsyncs\": %" PRIu64
		 ", \"synced_pages\": %" PRIu64 ", \"synced_bytes\": %" PRIu64
		 ", \"pressure_pages\": %" PRIu64
		 ", \"cut_pending_files\": %" PRIu64
		 ", \"cut_pending_pages\": %" PRIu64
		 ", \"cut_pending_bytes\": %" PRIu64
		 ", \"cut_written_pages\": %" PRIu64
		 ", \"cut_written_bytes\": %" PRIu64
		 ", \"cut_dropped_pages\": %" PRIu64
		 ", \"cut_dropped_bytes\": %" PRIu64 ", \"refused\": %" PRIu64
		 "}\n",
		 G.cut ? "true" : "false", G.cut_mode, G.pending_pages, files,
		 G.written_bytes, G.fsyncs, G.synced_pages, G.synced_bytes,
		 G.pressure_pages, G.cut_pending_files, G.cut_pending_pages,
		 G.cut_pending_bytes, G.cut_written_pages, G.cut_written_bytes,
		 G.cut_dropped_pages, G.cut_dropped_bytes, G.refused);
}

static void ctl_serve(int c)
{
	char line[256], out[2048];
	size_t n = 0;
	while (n < sizeof(line) - 1) {
		ssize_t r = read(c, line + n, sizeof(line) - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
		if (memchr(line, '\n', n))
			break;
	}
	line[n] = '\0';
	line[strcspn(line, "\r\n")] = '\0';
	char word[16] = "", mode[16] = "";
	unsigned long long seed = 0;
	unsigned permille = 500;
	int k = sscanf(line, "%15s %15s %llu %u", word, mode, &seed, &permille);
	pthread_mutex_lock(&G.mu);
	if (k >= 1 && !strcmp(word, "stats")) {
		stats_json(out, sizeof(out));
	} else if (k >= 1 && !strcmp(word, "sync")) {
		if (!G.cut)
			sync_all();
		stats_json(out, sizeof(out));
	} else if (k >= 2 && !strcmp(word, "cut") &&
		   (!strcmp(mode, "drop") || !strcmp(mode, "keep") ||
		    (!strcmp(mode, "subset") && k >= 3 && permille <= 1000))) {
		if (!G.cut)
			cut(mode, seed, permille);
		stats_json(out, sizeof(out));
	} else {
		snprintf(out, sizeof(out),
			 "{\"error\": \"unknown command; stats | sync | cut "
			 "drop | cut keep | cut subset SEED PERMILLE\"}\n");
	}
	pthread_mutex_unlock(&G.mu);
	size_t len = strlen(out), off = 0;
	while (off < len) {
		ssize_t w = write(c, out + off, len - off);
		if (w <= 0)
			break;
		off += (size_t)w;
	}
}

static void *ctl_thread(void *arg)
{
	int s = (int)(intptr_t)arg;
	for (;;) {
		int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			break;
		}
		struct timeval tv = {.tv_sec = 10};
		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		ctl_serve(c);
		close(c);
	}
	return NULL;
}

static int ctl_start(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(a.sun_path)) {
		fprintf(stderr, "plfs: control socket path too long: %s\n",
			path);
		return -1;
	}
	strcpy(a.sun_path, path);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		perror("plfs: socket");
		return -1;
	}
	unlink(path);
	mode_t old = umask(0077);
	int rc = bind(s, (struct sockaddr *)&a, sizeof(a));
	umask(old);
	if (rc < 0 || listen(s, 8) < 0) {
		fprintf(stderr, "plfs: control socket %s: %s\n", path,
			strerror(errno));
		close(s);
		return -1;
	}
	pthread_t t;
	if (pthread_create(&t, NULL, ctl_thread, (void *)(intptr_t)s) != 0) {
		fprintf(stderr, "plfs: cannot start the control thread\n");
		close(s);
		return -1;
	}
	pthread_detach(t);
	return 0;
}

/* -- main ------------------------------------------------------------------ */

static void usage(void)
{
	fprintf(stderr,
		"usage: plfs [--ctl SOCKET] [--max-pending BYTES] [--verbose] "
		"BACKING_DIR MOUNTPOINT [FUSE options...]\n");
}

int main(int argc, char **argv)
{
	const char *ctl = NULL;
	int i = 1;
	G.max_pending = (uint64_t)4 << 30;
	for (; i < argc && !strncmp(argv[i], "--", 2); i++) {
		if (!strcmp(argv[i], "--ctl") && i + 1 < argc) {
			ctl = argv[++i];
		} else if (!strcmp(argv[i], "--max-pending") && i + 1 < argc) {
			char *end;
			G.max_pending = strtoull(argv[++i], &end, 10);
			if (*end) {
				usage();
				return 2;
			}
		} else if (!strcmp(argv[i], "--verbose")) {
			G.verbose = true;
		} else {
			usage();
			return 2;
		}
	}
	if (argc - i < 2) {
		usage();
		return 2;
	}
	G.backing = argv[i];
	G.bfd = open(G.backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (G.bfd < 0) {
		fprintf(stderr, "plfs: %s: %s\n", G.backing, strerror(errno));
		return 1;
	}
	if (ctl && ctl_start(ctl) < 0)
		return 1;
	G.ctl_path = ctl;
	/* fuse_main gets: argv[0] MOUNTPOINT -f [the rest]. */
	int fargc = 0;
	char **fargv = calloc((size_t)argc + 4, sizeof(*fargv));
	if (!fargv)
		return 1;
	fargv[fargc++] = argv[0];
	fargv[fargc++] = argv[i + 1];
	fargv[fargc++] = (char *)"-f";
	fargv[fargc++] = (char *)"-ofsname=plfs,subtype=plfs";
	for (int j = i + 2; j < argc; j++)
		fargv[fargc++] = argv[j];
	int rc = fuse_main(fargc, fargv, &ops, NULL);
	if (ctl)
		unlink(ctl);
	free(fargv);
	return rc;
}

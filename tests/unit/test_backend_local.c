/*
 * Unit tests for the shared backend helpers (backend.c) and the local
 * backend (backend_local.c), against a mkdtemp directory.
 *
 * The remote root is <tmp>/remote, created by the backend. The tests look
 * at the root directly (readdir, stat, xattrs) to check what the backend
 * claims, and edit it by hand to play a user or another machine.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "hfs/backend.h"
#include "hfs/backend_local.h"
#include "hfs/config.h"
#include "hfs/hash.h"

#define CHECK(expr)                                                       \
	do {                                                              \
		if (!(expr)) {                                            \
			fprintf(stderr, "%s:%d: check failed: %s (%s)\n", \
				__FILE__, __LINE__, #expr,                \
				backend_last_error());                    \
			exit(1);                                          \
		}                                                         \
	} while (0)

#define MTIME 1700000000

/*
 * While set, the xattr calls the backend makes fail with ENOTSUP, as on a
 * filesystem without user xattrs. These definitions take the place of
 * libc's for the whole executable and otherwise make the system call.
 */
static bool no_xattrs;

ssize_t fgetxattr(int fd, const char *name, void *value, size_t size)
{
	if (no_xattrs) {
		errno = ENOTSUP;
		return -1;
	}
	return syscall(SYS_fgetxattr, fd, name, value, size);
}

ssize_t lgetxattr(const char *path, const char *name, void *value, size_t size)
{
	if (no_xattrs) {
		errno = ENOTSUP;
		return -1;
	}
	return syscall(SYS_lgetxattr, path, name, value, size);
}

int fsetxattr(int fd, const char *name, const void *value, size_t size,
	      int flags)
{
	if (no_xattrs) {
		errno = ENOTSUP;
		return -1;
	}
	return (int)syscall(SYS_fsetxattr, fd, name, value, size, flags);
}
#define BIG_SIZE ((size_t)3 * 1024 * 1024 + 12345)

static char tmpdir[] = "/tmp/test_backend_local.XXXXXX";
static char root[256];
static struct backend *be;

/* root + remote path */
static const char *loc(const char *path)
{
	static char buf[1024];

	snprintf(buf, sizeof(buf), "%s%s", root, path);
	return buf;
}

/* A memfd holding @len bytes of @data. */
static int mem_with(const void *data, size_t len)
{
	int fd = memfd_create("src", MFD_CLOEXEC);

	CHECK(fd >= 0);
	if (len)
		CHECK(pwrite(fd, data, len, 0) == (ssize_t)len);
	return fd;
}

/* Reads all of @fd into a malloc'd buffer; *@len gets its size. */
static uint8_t *slurp_fd(int fd, size_t *len)
{
	struct stat st;
	uint8_t *buf;

	CHECK(fstat(fd, &st) == 0);
	buf = malloc((size_t)st.st_size + 1);
	CHECK(buf);
	if (st.st_size)
		CHECK(pread(fd, buf, (size_t)st.st_size, 0) == st.st_size);
	*len = (size_t)st.st_size;
	return buf;
}

/* True if local file at remote @path holds exactly @data. */
static bool remote_is(const char *path, const void *data, size_t len)
{
	size_t got;
	uint8_t *buf;
	bool same;
	int fd;

	fd = open(loc(path), O_RDONLY);
	if (fd < 0)
		return false;
	buf = slurp_fd(fd, &got);
	close(fd);
	same = got == len && memcmp(buf, data, len) == 0;
	free(buf);
	return same;
}

static void put_file(const char *path, const char *text)
{
	int fd = open(loc(path), O_WRONLY | O_CREAT | O_TRUNC, 0600);

	CHECK(fd >= 0);
	CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	CHECK(close(fd) == 0);
}

static bool exists(const char *path)
{
	struct stat st;

	return lstat(loc(path), &st) == 0;
}

static int do_upload(const char *path, const void *data, size_t len,
		     const char *parent_rev, bool autorename,
		     struct backend_entry *out)
{
	struct backend_upload up = {0};
	int fd, rc;

	fd = mem_with(data, len);
	up.path = path;
	up.fd = fd;
	up.size = len;
	up.mtime = MTIME;
	up.parent_rev = parent_rev;
	up.autorename = autorename;
	rc = be->ops->upload(be, &up, out);
	close(fd);
	return rc;
}

static int upload_text(const char *path, const char *text,
		       struct backend_entry *out)
{
	return do_upload(path, text, strlen(text), NULL, false, out);
}

/* Number of entries in local folder @path whose name starts with @prefix. */
static int count_local(const char *path, const char *prefix)
{
	struct dirent *d;
	DIR *dir;
	int n = 0;

	dir = opendir(loc(path));
	CHECK(dir);
	while ((d = readdir(dir)))
		if (strncmp(d->d_name, prefix, strlen(prefix)) == 0)
			n++;
	closedir(dir);
	return n;
}

static int rm_cb(const char *p, const struct stat *sb, int flag,
		 struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	return flag == FTW_DP ? rmdir(p) : unlink(p);
}

static void *other_thread_error(void *arg)
{
	(void)arg;
	return (void *)backend_last_error();
}

static void test_helpers(void)
{
	char name[300];
	char longmsg[1000];
	struct backend_page page = {0};
	pthread_t t;
	void *res;

	CHECK(!backend_name_ok(""));
	CHECK(!backend_name_ok("."));
	CHECK(!backend_name_ok(".."));
	CHECK(!backend_name_ok("a/b"));
	CHECK(!backend_name_ok("/"));
	CHECK(!backend_name_ok("a\\b"));
	CHECK(!backend_name_ok("trailing "));
	CHECK(!backend_name_ok("del\x7f"));
	CHECK(!backend_name_ok("\xff"));
	CHECK(!backend_name_ok("bad\xc3"));
	CHECK(!backend_name_ok("\xc0\x80"));
	CHECK(!backend_name_ok("\xe0\x80\xaf"));
	CHECK(!backend_name_ok("\xed\xa0\x80"));
	CHECK(!backend_name_ok("\xf4\x90\x80\x80"));
	CHECK(!backend_name_ok("\x80"));
	CHECK(backend_name_ok("a"));
	CHECK(backend_name_ok(" lead"));
	CHECK(backend_name_ok("..."));
	CHECK(backend_name_ok(".hidden"));
	CHECK(backend_name_ok("caf\xc3\xa9 \xe6\x97\xa5\xf0\x9f\x98\x80.txt"));
	memset(name, 'x', sizeof(name));
	name[255] = '\0';
	CHECK(backend_name_ok(name));
	name[255] = 'x';
	name[256] = '\0';
	CHECK(!backend_name_ok(name));

	backend_set_error("detail %d", 42);
	CHECK(strcmp(backend_last_error(), "detail 42") == 0);
	CHECK(pthread_create(&t, NULL, other_thread_error, NULL) == 0);
	CHECK(pthread_join(t, &res) == 0);
	CHECK(strcmp((const char *)res, "") == 0);
	memset(longmsg, 'm', sizeof(longmsg) - 1);
	longmsg[sizeof(longmsg) - 1] = '\0';
	backend_set_error("%s", longmsg);
	CHECK(strlen(backend_last_error()) == 511);

	backend_page_release(NULL);
	page.entries = calloc(2, sizeof(*page.entries));
	page.cursor = strdup("x");
	page.n = 2;
	page.has_more = true;
	backend_page_release(&page);
	CHECK(!page.entries && !page.cursor && page.n == 0 && !page.has_more);
	backend_destroy(NULL);
}

static void test_create(void)
{
	struct hfs_config cfg;
	struct backend *b = NULL;
	char err[256];
	struct stat st;

	memset(&cfg, 0, sizeof(cfg));
	cfg.backend = BACKEND_DROPBOX;
	/* The dropbox backend without credentials says what is missing. */
	CHECK(backend_create(&cfg, true, &b, err, sizeof(err)) == -EINVAL);
	CHECK(!b);
	CHECK(strstr(err, "no Dropbox credentials"));

	/* The root is created (with its parents) mode 0700. */
	cfg.backend = BACKEND_LOCAL;
	cfg.remote_dir = root;
	CHECK(stat(root, &st) < 0 && errno == ENOENT);
	CHECK(backend_create(&cfg, true, &be, err, sizeof(err)) == 0);
	CHECK(be && strcmp(be->ops->name, "local") == 0);
	CHECK(stat(root, &st) == 0 && S_ISDIR(st.st_mode));
	CHECK((st.st_mode & 07777) == 0700);
	CHECK(be->ops->probe(be) == 0);

	/* A root that is a file cannot be created. */
	put_file("/../remote-file", "x");
	CHECK(backend_local_create(loc("/../remote-file"), &b) == -ENOTDIR);
	CHECK(backend_local_create("", &b) == -EINVAL);
}

static void check_hash_of(const struct backend_entry *e, const void *data,
			  size_t len)
{
	uint8_t h[CHASH_LEN];

	CHECK(chash_buf(data, len, h) == 0);
	CHECK(e->has_hash);
	CHECK(memcmp(e->hash, h, CHASH_LEN) == 0);
}

static void test_round_trip(void)
{
	struct backend_entry up_e, st_e, dl_e;
	struct backend_upload up = {0};
	uint8_t hash[CHASH_LEN];
	uint8_t *data, *got_buf;
	char val[256];
	uint64_t got;
	size_t i, len;
	struct stat st;
	int fd;

	data = malloc(BIG_SIZE);
	CHECK(data);
	for (i = 0; i < BIG_SIZE; i++)
		data[i] = (uint8_t)(i * 7 + i / 4096);
	CHECK(chash_buf(data, BIG_SIZE, hash) == 0);

	/* Upload with the right hash; parents are created. */
	fd = mem_with(data, BIG_SIZE);
	up.path = "/d1/d2/file.bin";
	up.fd = fd;
	up.size = BIG_SIZE;
	up.hash = hash;
	up.mtime = MTIME;
	CHECK(be->ops->upload(be, &up, &up_e) == 0);
	close(fd);
	CHECK(strcmp(up_e.name, "file.bin") == 0);
	CHECK(!up_e.is_dir);
	CHECK(up_e.size == BIG_SIZE);
	CHECK(up_e.mtime == MTIME);
	CHECK(up_e.rev[0] != '\0');
	check_hash_of(&up_e, data, BIG_SIZE);
	CHECK(remote_is("/d1/d2/file.bin", data, BIG_SIZE));
	CHECK(stat(loc("/d1/d2/file.bin"), &st) == 0 && st.st_mtime == MTIME);
	CHECK(count_local("/d1/d2", ".huracanfs-tmp.") == 0);
	/* The revision and hash are stored in xattrs. */
	CHECK(getxattr(loc("/d1/d2/file.bin"), "user.huracanfs.rev", val,
		       sizeof(val)) > 0);
	CHECK(strncmp(val, up_e.rev, strlen(up_e.rev)) == 0);

	/* stat agrees with the upload. */
	CHECK(be->ops->stat(be, "/d1/d2/file.bin", &st_e) == 0);
	CHECK(strcmp(st_e.name, "file.bin") == 0);
	CHECK(!st_e.is_dir && st_e.size == BIG_SIZE && st_e.mtime == MTIME);
	CHECK(strcmp(st_e.rev, up_e.rev) == 0);
	check_hash_of(&st_e, data, BIG_SIZE);
	CHECK(be->ops->stat(be, "/d1/d2", &st_e) == 0);
	CHECK(st_e.is_dir && strcmp(st_e.name, "d2") == 0);
	CHECK(be->ops->stat(be, "/d1/none", &st_e) == -ENOENT);
	CHECK(be->ops->stat(be, "", &st_e) == -EINVAL);

	/* Whole download, at the current revision. */
	fd = mem_with(NULL, 0);
	CHECK(be->ops->download(be, "/d1/d2/file.bin", up_e.rev, 0, 0, fd, &got,
				&dl_e) == 0);
	CHECK(got == BIG_SIZE);
	got_buf = slurp_fd(fd, &len);
	CHECK(len == BIG_SIZE && memcmp(got_buf, data, len) == 0);
	free(got_buf);
	close(fd);
	CHECK(strcmp(dl_e.rev, up_e.rev) == 0 && dl_e.size == BIG_SIZE);
	check_hash_of(&dl_e, data, BIG_SIZE);

	/* A range lands at the same offsets and nothing else is written. */
	fd = mem_with(NULL, 0);
	CHECK(be->ops->download(be, "/d1/d2/file.bin", NULL, 1000000, 1500000,
				fd, &got, NULL) == 0);
	CHECK(got == 1500000);
	got_buf = slurp_fd(fd, &len);
	CHECK(len == 2500000);
	for (i = 0; i < 1000000; i++)
		CHECK(got_buf[i] == 0);
	CHECK(memcmp(got_buf + 1000000, data + 1000000, 1500000) == 0);
	free(got_buf);
	close(fd);

	/* len 0 from an offset: to the end; past the end: nothing. */
	fd = mem_with(NULL, 0);
	CHECK(be->ops->download(be, "/d1/d2/file.bin", NULL, BIG_SIZE - 10, 0,
				fd, &got, NULL) == 0);
	CHECK(got == 10);
	got_buf = slurp_fd(fd, &len);
	CHECK(len == BIG_SIZE);
	CHECK(memcmp(got_buf + BIG_SIZE - 10, data + BIG_SIZE - 10, 10) == 0);
	free(got_buf);
	CHECK(be->ops->download(be, "/d1/d2/file.bin", NULL, BIG_SIZE + 5, 3,
				fd, &got, NULL) == 0);
	CHECK(got == 0);
	/* A revision that is not the current one is gone. */
	got = 12345;
	CHECK(be->ops->download(be, "/d1/d2/file.bin", "0123abcd", 0, 0, fd,
				&got, NULL) == -ENOENT);
	CHECK(got == 12345);
	CHECK(be->ops->download(be, "/d1/d2", NULL, 0, 0, fd, &got, NULL) ==
	      -EISDIR);
	CHECK(be->ops->download(be, "/d1/nothing", NULL, 0, 0, fd, &got,
				NULL) == -ENOENT);
	close(fd);

	/* A wrong hash fails the upload and leaves the old file alone. */
	hash[0] ^= 1;
	fd = mem_with("other", 5);
	up.fd = fd;
	up.size = 5;
	CHECK(be->ops->upload(be, &up, &up_e) == -EIO);
	CHECK(strstr(backend_last_error(), "hash mismatch"));
	close(fd);
	CHECK(remote_is("/d1/d2/file.bin", data, BIG_SIZE));
	CHECK(count_local("/d1/d2", ".huracanfs-tmp.") == 0);

	/* A source shorter than the size given fails. */
	fd = mem_with("short", 5);
	up.fd = fd;
	up.size = 10;
	up.hash = NULL;
	CHECK(be->ops->upload(be, &up, &up_e) == -EIO);
	close(fd);
	CHECK(remote_is("/d1/d2/file.bin", data, BIG_SIZE));
	CHECK(count_local("/d1/d2", ".huracanfs-tmp.") == 0);
	free(data);
}

static void test_rev_and_hash(void)
{
	struct backend_entry a, b, c, e;
	struct timespec ts[2];
	struct stat st;
	uint64_t got;
	int fd;

	/* Every upload makes a new revision, even of the same bytes. */
	CHECK(upload_text("/r.txt", "same", &a) == 0);
	CHECK(upload_text("/r.txt", "same", &b) == 0);
	CHECK(upload_text("/r.txt", "same", &c) == 0);
	CHECK(strcmp(a.rev, b.rev) != 0 && strcmp(b.rev, c.rev) != 0 &&
	      strcmp(a.rev, c.rev) != 0);
	CHECK(be->ops->stat(be, "/r.txt", &e) == 0);
	CHECK(strcmp(e.rev, c.rev) == 0);

	/*
	 * Corrupt the bytes by hand, keeping size and mtime: the stored hash
	 * still looks valid, and the whole download must catch the mismatch.
	 */
	CHECK(stat(loc("/r.txt"), &st) == 0);
	fd = open(loc("/r.txt"), O_WRONLY);
	CHECK(fd >= 0);
	CHECK(pwrite(fd, "SAME", 4, 0) == 4);
	ts[0] = st.st_atim;
	ts[1] = st.st_mtim;
	CHECK(futimens(fd, ts) == 0);
	close(fd);
	fd = mem_with(NULL, 0);
	CHECK(be->ops->download(be, "/r.txt", NULL, 0, 0, fd, &got, NULL) ==
	      -EIO);
	CHECK(strstr(backend_last_error(), "hash mismatch"));
	/* A range is not verified. */
	CHECK(be->ops->download(be, "/r.txt", NULL, 1, 2, fd, &got, NULL) == 0);
	CHECK(got == 2);
	close(fd);

	/* An edit by hand (size changes) makes the xattrs stale. */
	put_file("/r.txt", "edited by hand");
	CHECK(be->ops->stat(be, "/r.txt", &e) == 0);
	CHECK(strcmp(e.rev, c.rev) != 0);
	CHECK(e.size == 14);
	check_hash_of(&e, "edited by hand", 14);
}

/* Finds @name in @page; NULL if absent. */
static const struct backend_entry *find(const struct backend_page *page,
					const char *name)
{
	size_t i;

	for (i = 0; i < page->n; i++)
		if (strcmp(page->entries[i].name, name) == 0)
			return &page->entries[i];
	return NULL;
}

static void test_hand_placed(void)
{
	struct backend_page page = {0};
	const struct backend_entry *le;
	struct backend_entry e, e2;
	uint64_t got;
	int fd;

	CHECK(be->ops->mkdir(be, "/hand") == 0);
	put_file("/hand/h.txt", "placed by hand");
	CHECK(be->ops->list(be, "/hand", NULL, &page) == 0);
	le = find(&page, "h.txt");
	CHECK(le && !le->is_dir && le->size == 14);
	CHECK(!le->has_hash);
	CHECK(le->rev[0] != '\0');
	CHECK(be->ops->stat(be, "/hand/h.txt", &e) == 0);
	check_hash_of(&e, "placed by hand", 14);
	/* The revision is stable: list and stat agree. */
	CHECK(strcmp(e.rev, le->rev) == 0);
	backend_page_release(&page);
	CHECK(be->ops->stat(be, "/hand/h.txt", &e2) == 0);
	CHECK(strcmp(e2.rev, e.rev) == 0);
	/* Download of a hand-placed file works at that revision. */
	fd = mem_with(NULL, 0);
	CHECK(be->ops->download(be, "/hand/h.txt", e.rev, 0, 0, fd, &got,
				&e2) == 0);
	CHECK(got == 14);
	check_hash_of(&e2, "placed by hand", 14);
	close(fd);

	/* Another hand edit changes rev and hash. */
	put_file("/hand/h.txt", "changed");
	CHECK(be->ops->stat(be, "/hand/h.txt", &e2) == 0);
	CHECK(strcmp(e2.rev, e.rev) != 0);
	check_hash_of(&e2, "changed", 7);
	fd = mem_with(NULL, 0);
	CHECK(be->ops->download(be, "/hand/h.txt", e.rev, 0, 0, fd, &got,
				NULL) == -ENOENT);
	close(fd);
}

static void test_list(void)
{
	struct backend_page page = {0};
	const struct backend_entry *le;
	struct backend_entry e;
	char path[64], name[16], cursor[512] = "";
	int seen[10] = {0};
	int i, pages = 0, total = 0, more_pages = 0;
	bool more = true;

	for (i = 0; i < 10; i++) {
		snprintf(path, sizeof(path), "/many/e%d", i);
		if (i % 3 == 0)
			CHECK(be->ops->mkdir(be, path) == 0);
		else
			CHECK(upload_text(path, "x", NULL) == 0);
	}
	/* None of these may appear. */
	CHECK(symlink("e1", loc("/many/link")) == 0);
	CHECK(mkfifo(loc("/many/fifo"), 0600) == 0);
	put_file("/many/back\\slash", "x");
	put_file("/many/trailing ", "x");
	put_file("/many/\xff\xfe", "x");
	put_file("/many/.huracanfs-tmp.abcdef", "x");

	backend_local_set_page_size(be, 3);
	while (more) {
		CHECK(be->ops->list(be, "/many", cursor[0] ? cursor : NULL,
				    &page) == 0);
		CHECK(page.n <= 3);
		CHECK(page.cursor);
		for (i = 0; i < (int)page.n; i++) {
			int k;

			le = &page.entries[i];
			CHECK(sscanf(le->name, "e%d", &k) == 1);
			CHECK(k >= 0 && k < 10);
			snprintf(name, sizeof(name), "e%d", k);
			CHECK(strcmp(name, le->name) == 0);
			seen[k]++;
			total++;
			CHECK(le->is_dir == (k % 3 == 0));
			if (!le->is_dir) {
				CHECK(le->size == 1 && le->rev[0]);
				check_hash_of(le, "x", 1);
			}
		}
		more = page.has_more;
		if (more)
			more_pages++;
		snprintf(cursor, sizeof(cursor), "%s", page.cursor);
		backend_page_release(&page);
		pages++;
		CHECK(pages <= 10);
	}
	CHECK(total == 10);
	for (i = 0; i < 10; i++)
		CHECK(seen[i] == 1);
	CHECK(pages == 4 && more_pages == 3);

	/* Exactly page-sized: no empty trailing page is promised. */
	backend_local_set_page_size(be, 10);
	CHECK(be->ops->list(be, "/many", NULL, &page) == 0);
	CHECK(page.n == 10 && !page.has_more);
	backend_page_release(&page);
	backend_local_set_page_size(be, 9);
	CHECK(be->ops->list(be, "/many", NULL, &page) == 0);
	CHECK(page.n == 9 && page.has_more);
	backend_page_release(&page);

	/* The default page holds everything. */
	backend_local_set_page_size(be, 0);
	CHECK(be->ops->list(be, "/many", NULL, &page) == 0);
	CHECK(page.n == 10 && !page.has_more);
	CHECK(!find(&page, ".") && !find(&page, "..") && !find(&page, "link") &&
	      !find(&page, "fifo"));
	backend_page_release(&page);

	/* The root lists too. */
	CHECK(be->ops->list(be, "", NULL, &page) == 0);
	le = find(&page, "many");
	CHECK(le && le->is_dir);
	backend_page_release(&page);

	CHECK(be->ops->list(be, "/many", "bogus", &page) == -EINVAL);
	CHECK(be->ops->list(be, "/many/e1", NULL, &page) == -ENOTDIR);
	CHECK(be->ops->list(be, "/nothing", NULL, &page) == -ENOENT);
	/* Special files are not part of the remote. */
	CHECK(be->ops->stat(be, "/many/link", &e) == -ENOENT);
	CHECK(be->ops->stat(be, "/many/fifo", &e) == -ENOENT);
}

static void test_bad_paths(void)
{
	struct backend_page page = {0};
	struct backend_entry e;
	static const char *const bad[] = {
		"/..",
		"/../etc",
		"/a/../..",
		"relative",
		"/a/",
		"//a",
		"/a/./b",
		"/a\\b",
		"/x ",
		"/\xff",
		"/.huracanfs-tmp.x",
	};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK(be->ops->stat(be, bad[i], &e) == -EINVAL);
		CHECK(be->ops->list(be, bad[i], NULL, &page) == -EINVAL);
		CHECK(upload_text(bad[i], "x", NULL) == -EINVAL);
		CHECK(be->ops->mkdir(be, bad[i]) == -EINVAL);
		CHECK(be->ops->remove(be, bad[i]) == -EINVAL);
		CHECK(be->ops->move(be, "/r.txt", bad[i]) == -EINVAL);
		CHECK(be->ops->copy(be, "/r.txt", bad[i]) == -EINVAL);
	}
	CHECK(!exists("/../x"));
}

static void test_conflicts(void)
{
	struct backend_entry v1, v2, out;

	CHECK(upload_text("/c/doc.txt", "v1", &v1) == 0);
	CHECK(do_upload("/c/doc.txt", "v2", 2, v1.rev, false, &v2) == 0);
	CHECK(strcmp(v2.name, "doc.txt") == 0);
	CHECK(remote_is("/c/doc.txt", "v2", 2));

	/* Based on v1, which is no longer current. */
	CHECK(do_upload("/c/doc.txt", "v3", 2, v1.rev, false, &out) == -EEXIST);
	CHECK(remote_is("/c/doc.txt", "v2", 2));
	CHECK(count_local("/c", ".huracanfs-tmp.") == 0);
	CHECK(do_upload("/c/doc.txt", "v3", 2, v1.rev, true, &out) == 0);
	CHECK(strcmp(out.name, "doc (conflicted copy 1).txt") == 0);
	CHECK(remote_is("/c/doc.txt", "v2", 2));
	CHECK(remote_is("/c/doc (conflicted copy 1).txt", "v3", 2));
	CHECK(do_upload("/c/doc.txt", "v4", 2, v1.rev, true, &out) == 0);
	CHECK(strcmp(out.name, "doc (conflicted copy 2).txt") == 0);
	CHECK(remote_is("/c/doc (conflicted copy 2).txt", "v4", 2));
	check_hash_of(&out, "v4", 2);

	/* No extension, and a dot file. */
	CHECK(upload_text("/c/noext", "a", &v1) == 0);
	CHECK(do_upload("/c/noext", "b", 1, "ffff", true, &out) == 0);
	CHECK(strcmp(out.name, "noext (conflicted copy 1)") == 0);
	CHECK(upload_text("/c/.dot", "a", &v1) == 0);
	CHECK(do_upload("/c/.dot", "b", 1, "ffff", true, &out) == 0);
	CHECK(strcmp(out.name, ".dot (conflicted copy 1)") == 0);

	/* A missing target with a parent_rev is simply written. */
	CHECK(do_upload("/c/gone.txt", "g", 1, v1.rev, false, &out) == 0);
	CHECK(strcmp(out.name, "gone.txt") == 0);
	CHECK(remote_is("/c/gone.txt", "g", 1));

	/* A folder in the way. */
	CHECK(be->ops->mkdir(be, "/c/dir") == 0);
	CHECK(upload_text("/c/dir", "x", &out) == -EISDIR);
	CHECK(do_upload("/c/dir", "x", 1, v1.rev, false, &out) == -EEXIST);
	/* A file in the way of a parent. */
	CHECK(upload_text("/c/doc.txt/x", "x", &out) == -ENOTDIR);
	CHECK(count_local("/c", ".huracanfs-tmp.") == 0);
}

static void test_move(void)
{
	struct backend_entry a, e;

	CHECK(upload_text("/m/a", "A", &a) == 0);
	CHECK(upload_text("/m/c", "C", NULL) == 0);
	CHECK(be->ops->move(be, "/m/a", "/m/b") == 0);
	CHECK(!exists("/m/a") && remote_is("/m/b", "A", 1));
	/* The revision travels with the file. */
	CHECK(be->ops->stat(be, "/m/b", &e) == 0);
	CHECK(strcmp(e.rev, a.rev) == 0);

	CHECK(be->ops->move(be, "/m/b", "/m/c") == -EEXIST);
	CHECK(remote_is("/m/b", "A", 1) && remote_is("/m/c", "C", 1));
	CHECK(be->ops->move(be, "/m/b", "/m/b") == -EEXIST);
	CHECK(be->ops->move(be, "/m/none", "/m/z") == -ENOENT);
	CHECK(!exists("/m/z"));

	/* Parents of the target are created. */
	CHECK(be->ops->move(be, "/m/b", "/n/deep/b") == 0);
	CHECK(remote_is("/n/deep/b", "A", 1));
	/* Folders move, but never into themselves. */
	CHECK(be->ops->mkdir(be, "/m/sub") == 0);
	CHECK(be->ops->move(be, "/m", "/m/sub/m") == -EINVAL);
	CHECK(be->ops->move(be, "/m", "/m2") == 0);
	CHECK(remote_is("/m2/c", "C", 1) && !exists("/m"));
	CHECK(be->ops->move(be, "/m2", "/n") == -EEXIST);
	/* Case-only rename. */
	CHECK(be->ops->move(be, "/m2/c", "/m2/C") == 0);
	CHECK(remote_is("/m2/C", "C", 1) && !exists("/m2/c"));
}

static void test_copy(void)
{
	struct backend_page page = {0};
	const struct backend_entry *le;
	struct backend_entry src, dst;
	struct stat st;

	CHECK(upload_text("/cp/src.txt", "copy me", &src) == 0);
	CHECK(be->ops->copy(be, "/cp/src.txt", "/cp/dst.txt") == 0);
	CHECK(remote_is("/cp/src.txt", "copy me", 7));
	CHECK(remote_is("/cp/dst.txt", "copy me", 7));
	/* The hash carried over: a listing (which never hashes) knows it. */
	CHECK(be->ops->list(be, "/cp", NULL, &page) == 0);
	le = find(&page, "dst.txt");
	CHECK(le && le->size == 7 && le->mtime == MTIME);
	check_hash_of(le, "copy me", 7);
	backend_page_release(&page);
	CHECK(be->ops->stat(be, "/cp/dst.txt", &dst) == 0);
	CHECK(dst.mtime == MTIME && dst.size == 7);
	check_hash_of(&dst, "copy me", 7);
	CHECK(strcmp(dst.rev, src.rev) != 0);

	CHECK(be->ops->copy(be, "/cp/src.txt", "/cp/dst.txt") == -EEXIST);
	CHECK(be->ops->copy(be, "/cp/none", "/cp/x") == -ENOENT);

	/* A folder, recursively, into new parents. */
	CHECK(upload_text("/cp/tree/a.txt", "a", NULL) == 0);
	CHECK(upload_text("/cp/tree/sub/b.txt", "bb", NULL) == 0);
	CHECK(be->ops->mkdir(be, "/cp/tree/empty") == 0);
	put_file("/cp/tree/sub/hand.txt", "hand");
	CHECK(be->ops->copy(be, "/cp/tree", "/cp2/deep/tree") == 0);
	CHECK(remote_is("/cp2/deep/tree/a.txt", "a", 1));
	CHECK(remote_is("/cp2/deep/tree/sub/b.txt", "bb", 2));
	CHECK(remote_is("/cp2/deep/tree/sub/hand.txt", "hand", 4));
	CHECK(stat(loc("/cp2/deep/tree/empty"), &st) == 0 &&
	      S_ISDIR(st.st_mode));
	CHECK(remote_is("/cp/tree/sub/b.txt", "bb", 2));
	CHECK(be->ops->copy(be, "/cp/tree", "/cp/tree/sub/t") == -EINVAL);
	CHECK(be->ops->copy(be, "/cp/tree", "/cp2/deep/tree") == -EEXIST);
	CHECK(count_local("/cp2/deep/tree", ".huracanfs-tmp.") == 0);
}

static void test_remove_mkdir(void)
{
	struct backend_entry e;

	CHECK(upload_text("/rm/a/b/c.txt", "c", NULL) == 0);
	CHECK(upload_text("/rm/a/d.txt", "d", NULL) == 0);
	CHECK(symlink("/etc/hostname", loc("/rm/a/link")) == 0);
	CHECK(be->ops->remove(be, "/rm/a") == 0);
	CHECK(!exists("/rm/a") && exists("/rm"));
	CHECK(be->ops->remove(be, "/rm/a") == -ENOENT);
	CHECK(upload_text("/rm/f", "f", NULL) == 0);
	CHECK(be->ops->remove(be, "/rm/f") == 0);
	CHECK(!exists("/rm/f"));
	CHECK(be->ops->remove(be, "") == -EINVAL);
	CHECK(exists(""));

	CHECK(be->ops->mkdir(be, "/mk/a/b") == 0);
	CHECK(be->ops->stat(be, "/mk/a/b", &e) == 0 && e.is_dir);
	CHECK(be->ops->mkdir(be, "/mk/a/b") == -EEXIST);
	CHECK(be->ops->mkdir(be, "/mk/a") == -EEXIST);
	CHECK(upload_text("/mk/file", "x", NULL) == 0);
	CHECK(be->ops->mkdir(be, "/mk/file") == -EEXIST);
	CHECK(be->ops->mkdir(be, "/mk/file/sub") == -ENOTDIR);
	CHECK(be->ops->mkdir(be, "") == -EEXIST);
}

/*
 * Names match as on Dropbox (fold.h): a path whose components fold like
 * existing entries names those entries, whatever the spelling; new
 * entries keep the caller's spelling; a move to another spelling of the
 * same path renames the entry to it.
 */
static void test_case(void)
{
	struct backend_page page = {0};
	struct backend_entry e;

	CHECK(be->ops->mkdir(be, "/ci/Data") == 0);
	/* Into the existing folder, under the new name as given. */
	CHECK(upload_text("/ci/data/candles/SOL.parquet", "c1", &e) == 0);
	CHECK(strcmp(e.name, "SOL.parquet") == 0);
	CHECK(remote_is("/ci/Data/candles/SOL.parquet", "c1", 2));
	CHECK(!exists("/ci/data"));
	CHECK(be->ops->mkdir(be, "/ci/DATA") == -EEXIST);
	CHECK(be->ops->mkdir(be, "/CI/DATA/CANDLES") == -EEXIST);
	/* Stat and list under any spelling; the stored spelling comes back. */
	CHECK(be->ops->stat(be, "/CI/DATA/CANDLES/sol.PARQUET", &e) == 0);
	CHECK(strcmp(e.name, "SOL.parquet") == 0 && e.size == 2);
	CHECK(be->ops->stat(be, "/ci/data", &e) == 0);
	CHECK(e.is_dir && strcmp(e.name, "Data") == 0);
	CHECK(be->ops->list(be, "/ci/DATA/candles", NULL, &page) == 0);
	CHECK(page.n == 1 && strcmp(page.entries[0].name, "SOL.parquet") == 0);
	backend_page_release(&page);
	/* An upload to another spelling of a file replaces that file (or
	 * conflicts, with a parent_rev that is not its revision). */
	CHECK(upload_text("/ci/Data/candles/sol.parquet", "c2", NULL) == 0);
	CHECK(remote_is("/ci/Data/candles/SOL.parquet", "c2", 2));
	CHECK(count_local("/ci/Data/candles", "") == 3); /* . .. SOL */
	CHECK(do_upload("/ci/DATA/candles/Sol.parquet", "c3", 2, "ffff", false,
			&e) == -EEXIST);

	/* Unicode: Café and CAFÉ (and the decomposed spelling) are one. */
	CHECK(upload_text("/ci/Caf\xc3\xa9", "u", NULL) == 0);
	CHECK(be->ops->stat(be, "/ci/CAF\xc3\x89", &e) == 0);
	CHECK(strcmp(e.name, "Caf\xc3\xa9") == 0);
	CHECK(be->ops->stat(be, "/ci/cafe\xcc\x81", &e) == 0);
	CHECK(be->ops->copy(be, "/ci/Data/candles/SOL.parquet",
			    "/ci/CAF\xc3\x89") == -EEXIST);
	/* ß is not ss. */
	CHECK(upload_text("/ci/Stra\xc3\x9f"
			  "e",
			  "s", NULL) == 0);
	CHECK(be->ops->stat(be, "/ci/STRASSE", &e) == -ENOENT);

	/* A case-only rename, of a file and of a folder. */
	CHECK(be->ops->move(be, "/ci/caf\xc3\xa9", "/ci/CAF\xc3\x89") == 0);
	CHECK(exists("/ci/CAF\xc3\x89") && !exists("/ci/Caf\xc3\xa9"));
	CHECK(be->ops->move(be, "/ci/Data", "/ci/data") == 0);
	CHECK(remote_is("/ci/data/candles/SOL.parquet", "c2", 2));
	CHECK(!exists("/ci/Data"));
	CHECK(count_local("/ci", ".huracanfs-tmp.") == 0);
	/* Moving into another spelling of itself is moving into itself. */
	CHECK(be->ops->move(be, "/ci/data", "/ci/DATA/sub") == -EINVAL);
	/* Removing under another spelling removes the entry. */
	CHECK(be->ops->remove(be, "/CI/DATA/CANDLES/sol.parquet") == 0);
	CHECK(!exists("/ci/data/candles/SOL.parquet"));

	/* A remote holding two spellings (edited by hand): the exact one
	 * wins, and both are listed. */
	put_file("/ci/data/candles/x.txt", "lower");
	put_file("/ci/data/candles/X.txt", "upper");
	CHECK(be->ops->stat(be, "/ci/data/candles/X.txt", &e) == 0 &&
	      strcmp(e.name, "X.txt") == 0);
	CHECK(be->ops->stat(be, "/ci/data/candles/x.txt", &e) == 0 &&
	      strcmp(e.name, "x.txt") == 0);
	CHECK(be->ops->list(be, "/ci/data/candles", NULL, &page) == 0);
	CHECK(page.n == 2);
	backend_page_release(&page);
}

/* Batch deletes: each entry on its own, files only at the revision named. */
static void test_remove_batch(void)
{
	struct backend_entry a, b, c;
	struct backend_delete d[7];
	int rcs[7];

	CHECK(upload_text("/rb/a.txt", "a", &a) == 0);
	CHECK(upload_text("/rb/b.txt", "b", &b) == 0);
	CHECK(upload_text("/rb/c.txt", "c", &c) == 0);
	CHECK(upload_text("/rb/sub/x.txt", "x", NULL) == 0);
	/* Another machine changes b: its revision is no longer ours. */
	put_file("/rb/b.txt", "b, changed elsewhere");
	memset(d, 0, sizeof(d));
	d[0].path = "/rb/a.txt";
	d[0].parent_rev = a.rev;
	d[1].path = "/rb/b.txt";
	d[1].parent_rev = b.rev;
	d[2].path = "/rb/gone.txt";
	d[2].parent_rev = "0123456789";
	d[3].path = "/rb/sub";
	d[4].path = "/rb/c.txt"; /* no revision: whatever is there */
	d[5].path = "/rb/nothing";
	d[6].path = "/rb/../x";
	memset(rcs, 0x55, sizeof(rcs));
	CHECK(be->ops->remove_batch(be, d, 7, rcs) == 0);
	CHECK(rcs[0] == 0 && !exists("/rb/a.txt"));
	CHECK(rcs[1] == -EEXIST &&
	      remote_is("/rb/b.txt", "b, changed elsewhere", 20));
	CHECK(rcs[2] == -ENOENT);
	CHECK(rcs[3] == 0 && !exists("/rb/sub"));
	CHECK(rcs[4] == 0 && !exists("/rb/c.txt"));
	CHECK(rcs[5] == -ENOENT);
	CHECK(rcs[6] == -EINVAL);
	/* A folder is not deleted by revision. */
	CHECK(be->ops->mkdir(be, "/rb/dir") == 0);
	d[0].path = "/rb/dir";
	d[0].parent_rev = a.rev;
	CHECK(be->ops->remove_batch(be, d, 1, rcs) == 0);
	CHECK(rcs[0] == -EISDIR && exists("/rb/dir"));
	CHECK(be->ops->remove_batch(be, d, 0, rcs) == 0);
}

static void test_space(void)
{
	uint64_t used = 0, total = 0;

	CHECK(be->ops->space(be, &used, &total) == 0);
	CHECK(total > 0 && used > 0 && used <= total);
}

/* Every method says -EAGAIN, and nothing is created. */
static void check_unavailable(void)
{
	struct backend_page page = {0};
	struct backend_entry e;
	uint64_t got, used, total;
	int fd;

	CHECK(be->ops->probe(be) == -EAGAIN);
	CHECK(strstr(backend_last_error(), "remote unavailable"));
	CHECK(be->ops->list(be, "", NULL, &page) == -EAGAIN);
	CHECK(be->ops->list(be, "/d1", NULL, &page) == -EAGAIN);
	CHECK(be->ops->list(be, "/nothing", NULL, &page) == -EAGAIN);
	CHECK(be->ops->stat(be, "/d1/d2/file.bin", &e) == -EAGAIN);
	CHECK(be->ops->stat(be, "/nothing", &e) == -EAGAIN);
	fd = mem_with(NULL, 0);
	CHECK(be->ops->download(be, "/d1/d2/file.bin", NULL, 0, 0, fd, &got,
				NULL) == -EAGAIN);
	close(fd);
	CHECK(upload_text("/d1/new.txt", "x", &e) == -EAGAIN);
	CHECK(upload_text("/new/deep/x.txt", "x", &e) == -EAGAIN);
	CHECK(be->ops->mkdir(be, "/newdir") == -EAGAIN);
	CHECK(be->ops->remove(be, "/d1") == -EAGAIN);
	{
		struct backend_delete d[2] = {{"/d1", NULL},
					      {"/x", "0123456789"}};
		int rcs[2] = {1, 1};

		CHECK(be->ops->remove_batch(be, d, 2, rcs) == -EAGAIN);
		CHECK(rcs[0] == -EAGAIN && rcs[1] == -EAGAIN);
	}
	CHECK(be->ops->move(be, "/d1", "/d9") == -EAGAIN);
	CHECK(be->ops->copy(be, "/d1", "/d9") == -EAGAIN);
	CHECK(be->ops->space(be, &used, &total) == -EAGAIN);
}

static void test_unavailable(void)
{
	char moved[300];
	struct backend_entry e;

	snprintf(moved, sizeof(moved), "%s.away", root);

	/* Root removed (a disk that is not mounted). */
	CHECK(rename(root, moved) == 0);
	check_unavailable();
	CHECK(!exists("")); /* never re-created */
	CHECK(rename(moved, root) == 0);
	CHECK(be->ops->probe(be) == 0);
	CHECK(be->ops->stat(be, "/d1/d2/file.bin", &e) == 0);

	/*
	 * Root inaccessible. CAP_DAC_OVERRIDE ignores the mode, so as root
	 * the check runs in a child that has given up its privileges.
	 */
	CHECK(chmod(root, 0) == 0);
	if (access(root, R_OK) < 0) {
		check_unavailable();
	} else {
		pid_t pid = fork();
		int status;

		CHECK(pid >= 0);
		if (pid == 0) {
			CHECK(setgid(65534) == 0 && setuid(65534) == 0);
			CHECK(access(root, R_OK) < 0);
			check_unavailable();
			_exit(0);
		}
		CHECK(waitpid(pid, &status, 0) == pid);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	CHECK(chmod(root, 0700) == 0);
	CHECK(be->ops->probe(be) == 0);

	/* Root replaced by a file. */
	CHECK(rename(root, moved) == 0);
	put_file("", "not a folder");
	check_unavailable();
	CHECK(unlink(root) == 0);
	CHECK(rename(moved, root) == 0);
	CHECK(be->ops->stat(be, "/d1/d2/file.bin", &e) == 0);
}

/* Without user xattrs, revisions are synthesized and hashes computed. */
static void test_no_xattrs(void)
{
	struct backend_page page = {0};
	const struct backend_entry *le;
	struct backend_entry a, b, e;
	uint64_t got;
	int fd;

	no_xattrs = true;
	CHECK(upload_text("/nx/a.txt", "no xattrs", &a) == 0);
	check_hash_of(&a, "no xattrs", 9);
	CHECK(be->ops->list(be, "/nx", NULL, &page) == 0);
	le = find(&page, "a.txt");
	CHECK(le && !le->has_hash && strcmp(le->rev, a.rev) == 0);
	backend_page_release(&page);
	CHECK(be->ops->stat(be, "/nx/a.txt", &e) == 0);
	CHECK(strcmp(e.rev, a.rev) == 0 && e.mtime == MTIME);
	check_hash_of(&e, "no xattrs", 9);

	/* The same bytes again still make a new revision. */
	CHECK(upload_text("/nx/a.txt", "no xattrs", &b) == 0);
	CHECK(strcmp(a.rev, b.rev) != 0);
	CHECK(be->ops->stat(be, "/nx/a.txt", &e) == 0);
	CHECK(strcmp(e.rev, b.rev) == 0);
	fd = mem_with(NULL, 0);
	CHECK(be->ops->download(be, "/nx/a.txt", a.rev, 0, 0, fd, &got, NULL) ==
	      -ENOENT);
	CHECK(be->ops->download(be, "/nx/a.txt", b.rev, 0, 0, fd, &got, &e) ==
	      0);
	CHECK(got == 9);
	check_hash_of(&e, "no xattrs", 9);
	close(fd);
	CHECK(do_upload("/nx/a.txt", "x", 1, a.rev, false, &e) == -EEXIST);
	CHECK(do_upload("/nx/a.txt", "x", 1, b.rev, false, &e) == 0);
	CHECK(be->ops->copy(be, "/nx/a.txt", "/nx/b.txt") == 0);
	CHECK(remote_is("/nx/b.txt", "x", 1));
	no_xattrs = false;
	CHECK(getxattr(loc("/nx/b.txt"), "user.huracanfs.rev", NULL, 0) < 0 &&
	      errno == ENODATA);
}

struct worker {
	int id;
	int rc;
};

static void *upload_worker(void *arg)
{
	struct worker *w = arg;
	struct backend_entry e;
	char path[64];
	int i, rc;

	for (i = 0; i < 20; i++) {
		snprintf(path, sizeof(path), "/mt/w%d/f%d", w->id, i);
		rc = upload_text(path, path, &e);
		if (rc == 0)
			rc = be->ops->stat(be, path, &e);
		if (rc < 0) {
			w->rc = rc;
			return NULL;
		}
	}
	return NULL;
}

static void test_threads(void)
{
	struct worker w[4];
	pthread_t t[4];
	int i;

	for (i = 0; i < 4; i++) {
		w[i].id = i;
		w[i].rc = 0;
		CHECK(pthread_create(&t[i], NULL, upload_worker, &w[i]) == 0);
	}
	for (i = 0; i < 4; i++) {
		CHECK(pthread_join(t[i], NULL) == 0);
		CHECK(w[i].rc == 0);
	}
	CHECK(remote_is("/mt/w3/f19", "/mt/w3/f19", 10));
}

int main(void)
{
	CHECK(mkdtemp(tmpdir));
	snprintf(root, sizeof(root), "%s/deep/remote", tmpdir);

	test_helpers();
	test_create();
	test_round_trip();
	test_rev_and_hash();
	test_hand_placed();
	test_list();
	test_bad_paths();
	test_conflicts();
	test_move();
	test_copy();
	test_remove_mkdir();
	test_case();
	test_remove_batch();
	test_space();
	test_unavailable();
	test_no_xattrs();
	test_threads();

	backend_destroy(be);
	CHECK(nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS) == 0);
	printf("ok\n");
	return 0;
}

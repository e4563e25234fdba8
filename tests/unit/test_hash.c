/*
 * Unit tests for the Dropbox content hash (hfs/hash.h).
 *
 * argv[1] is tests/data/dropbox-content-hash/ruby.png; the expected values
 * come from tests/data/dropbox-content-hash/README.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "hfs/hash.h"

#define CHECK(expr)                                                            \
	do {                                                                   \
		if (!(expr)) {                                                 \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
				__LINE__, #expr);                              \
			exit(1);                                               \
		}                                                              \
	} while (0)

#define MIB ((size_t)1024 * 1024)

static const char ruby_hash[] =
	"78a5497e5094c82060997bd21c3a1233fb3e783c08c0b2ec9a3b32fcb5635e66";
static const char ruby_sha256[] =
	"b0855dcb45468aeb7a9cefd818acc97a6153e15475fb778b1418bb7d3763557a";
static const char empty_hash[] =
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
static const char zero_4m[] =
	"c7e946d101855255d919ef0c70718633adf77d3dfb3adeeecf5d0cb4e951be58";
static const char zero_4m1[] =
	"14a4d47f23a30177885d9820122f17d2d3a55fe63f7f5c27b95f689e0b2accd6";
static const char zero_8m[] =
	"03ae066c707c588592d9e27aa2444ca98423e0999024f1ceaa11a153790b37de";
static const char mod251_10m[] =
	"9b168152f37a1b2c33d9b26ca4a679d5f99f84f8c070fd3a4491d52cbfe96af4";

static char tmpdir[] = "/tmp/test_hash.XXXXXX";

static void hex_of(const uint8_t h[CHASH_LEN], char out[CHASH_HEXLEN + 1])
{
	chash_to_hex(h, out);
}

static void check_buf(const void *buf, size_t len, const char *expect)
{
	uint8_t h[CHASH_LEN];
	char hex[CHASH_HEXLEN + 1];

	CHECK(chash_buf(buf, len, h) == 0);
	hex_of(h, hex);
	if (strcmp(hex, expect) != 0)
		fprintf(stderr, "len %zu: got %s want %s\n", len, hex, expect);
	CHECK(strcmp(hex, expect) == 0);
}

/* Writes @buf to a new file in tmpdir and returns an fd open for reading. */
static int temp_file(const char *name, const void *buf, size_t len)
{
	char path[256];
	const char *p = buf;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(fd >= 0);
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		CHECK(n > 0);
		p += n;
		len -= (size_t)n;
	}
	CHECK(unlink(path) == 0);
	return fd;
}

static void check_fd(int fd, uint64_t size, const char *expect)
{
	uint8_t h[CHASH_LEN];
	char hex[CHASH_HEXLEN + 1];
	uint64_t got = 12345;

	CHECK(chash_fd(fd, h, &got) == 0);
	CHECK(got == size);
	hex_of(h, hex);
	if (strcmp(hex, expect) != 0)
		fprintf(stderr, "fd size %llu: got %s want %s\n",
			(unsigned long long)size, hex, expect);
	CHECK(strcmp(hex, expect) == 0);
}

static void check_buf_and_fd(const char *name, const void *buf, size_t len,
			     const char *expect)
{
	int fd;

	check_buf(buf, len, expect);
	fd = temp_file(name, buf, len);
	check_fd(fd, len, expect);
	close(fd);
}

static void test_ruby(const char *path)
{
	uint8_t h[CHASH_LEN], h2[CHASH_LEN];
	char hex[CHASH_HEXLEN + 1];
	uint64_t size = 0;
	struct stat st;
	char *data;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		perror(path);
	CHECK(fd >= 0);
	CHECK(fstat(fd, &st) == 0);
	CHECK(st.st_size == 57610);

	/* The file offset is neither used nor moved. */
	CHECK(lseek(fd, 1000, SEEK_SET) == 1000);
	CHECK(chash_fd(fd, h, &size) == 0);
	CHECK(size == 57610);
	CHECK(lseek(fd, 0, SEEK_CUR) == 1000);
	hex_of(h, hex);
	CHECK(strcmp(hex, ruby_hash) == 0);
	CHECK(strcmp(hex, ruby_sha256) != 0);

	/* size_out may be NULL. */
	CHECK(chash_fd(fd, h2, NULL) == 0);
	CHECK(memcmp(h, h2, CHASH_LEN) == 0);

	data = malloc((size_t)st.st_size);
	CHECK(data);
	CHECK(pread(fd, data, (size_t)st.st_size, 0) == st.st_size);
	check_buf(data, (size_t)st.st_size, ruby_hash);
	free(data);
	close(fd);
}

/* SHA-256 via OpenSSL directly, independent of the code under test. */
static void sha256(const void *data, size_t len, uint8_t out[32])
{
	unsigned int n = 0;

	CHECK(EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1);
	CHECK(n == 32);
}

static void test_small(void)
{
	uint8_t byte = 0x5a, inner[32], outer[32], h[CHASH_LEN];
	char expect[CHASH_HEXLEN + 1];
	int fd;

	check_buf("", 0, empty_hash);
	check_buf(NULL, 0, empty_hash);
	fd = temp_file("empty", "", 0);
	check_fd(fd, 0, empty_hash);
	close(fd);

	/* One byte: one block, so SHA256(SHA256(byte)). */
	sha256(&byte, 1, inner);
	sha256(inner, 32, outer);
	chash_to_hex(outer, expect);
	check_buf_and_fd("one", &byte, 1, expect);
	/* And it is not the plain SHA-256 of the byte. */
	CHECK(chash_buf(&byte, 1, h) == 0);
	CHECK(memcmp(h, inner, 32) != 0);
}

static void test_blocks(void)
{
	size_t i, len = 10 * MIB;
	unsigned char *buf = calloc(1, len);

	CHECK(buf);
	check_buf_and_fd("z4", buf, 4 * MIB, zero_4m);
	check_buf_and_fd("z4+1", buf, 4 * MIB + 1, zero_4m1);
	check_buf_and_fd("z8", buf, 8 * MIB, zero_8m);
	for (i = 0; i < len; i++)
		buf[i] = (unsigned char)(i % 251);
	check_buf_and_fd("m251", buf, len, mod251_10m);
	free(buf);
}

/* Feeding any chunk sizes, crossing block edges anywhere, changes nothing. */
static void test_streaming(void)
{
	static const size_t chunks[] = {1,	 7,	  4093,	   65537,
					4194303, 2,	  1048576, 3,
					4194304, 4194305, 0,	   999};
	size_t i, off, k, len = 10 * MIB;
	unsigned char *buf = malloc(len);
	uint8_t one[CHASH_LEN], streamed[CHASH_LEN];
	char hex[CHASH_HEXLEN + 1];
	struct chash h;

	CHECK(buf);
	for (i = 0; i < len; i++)
		buf[i] = (unsigned char)(i % 251);
	CHECK(chash_buf(buf, len, one) == 0);

	CHECK(chash_init(&h) == 0);
	for (off = 0, k = 0; off < len; k++) {
		size_t n = chunks[k % (sizeof(chunks) / sizeof(chunks[0]))];

		if (n > len - off)
			n = len - off;
		CHECK(chash_update(&h, buf + off, n) == 0);
		off += n;
	}
	memset(streamed, 0, sizeof(streamed));
	CHECK(chash_final(&h, streamed) == 0);
	CHECK(memcmp(one, streamed, CHASH_LEN) == 0);
	chash_to_hex(streamed, hex);
	CHECK(strcmp(hex, mod251_10m) == 0);

	/* Byte by byte across the first block edge. */
	CHECK(chash_init(&h) == 0);
	CHECK(chash_update(&h, buf, 4 * MIB - 2) == 0);
	for (i = 4 * MIB - 2; i < 4 * MIB + 3; i++)
		CHECK(chash_update(&h, buf + i, 1) == 0);
	CHECK(chash_update(&h, buf + 4 * MIB + 3, len - 4 * MIB - 3) == 0);
	CHECK(chash_final(&h, streamed) == 0);
	CHECK(memcmp(one, streamed, CHASH_LEN) == 0);

	/* release is safe on a zeroed, a live and a finalized hasher. */
	memset(&h, 0, sizeof(h));
	chash_release(&h);
	CHECK(chash_init(&h) == 0);
	CHECK(chash_update(&h, buf, 5 * MIB) == 0);
	chash_release(&h);
	CHECK(h.outer == NULL && h.block == NULL);
	chash_release(&h);
	CHECK(chash_init(&h) == 0);
	CHECK(chash_final(&h, streamed) == 0);
	chash_release(&h);
	free(buf);
}

static void test_hex(void)
{
	uint8_t h[CHASH_LEN], back[CHASH_LEN], keep[CHASH_LEN];
	char hex[CHASH_HEXLEN + 1], bad[CHASH_HEXLEN + 2];
	int i;

	for (i = 0; i < CHASH_LEN; i++)
		h[i] = (uint8_t)(i * 37 + 11);
	chash_to_hex(h, hex);
	CHECK(strlen(hex) == CHASH_HEXLEN);
	CHECK(strncmp(hex, "0b30557a9f", 10) == 0);
	CHECK(chash_from_hex(hex, back) == 0);
	CHECK(memcmp(h, back, CHASH_LEN) == 0);

	CHECK(chash_from_hex(ruby_hash, back) == 0);
	chash_to_hex(back, hex);
	CHECK(strcmp(hex, ruby_hash) == 0);
	CHECK(back[0] == 0x78 && back[31] == 0x66);

	/* Upper case is the same value. */
	for (i = 0; i < CHASH_HEXLEN; i++)
		bad[i] = (char)(ruby_hash[i] >= 'a' ? ruby_hash[i] - 32
						    : ruby_hash[i]);
	bad[CHASH_HEXLEN] = '\0';
	memset(h, 0, sizeof(h));
	CHECK(chash_from_hex(bad, h) == 0);
	CHECK(memcmp(h, back, CHASH_LEN) == 0);

	/* Bad input is refused and the output left alone. */
	memset(keep, 0xa5, sizeof(keep));
	memcpy(h, keep, sizeof(h));
	CHECK(chash_from_hex("", h) == -EINVAL);
	CHECK(chash_from_hex(NULL, h) == -EINVAL);
	CHECK(chash_from_hex("abc", h) == -EINVAL);
	memcpy(bad, ruby_hash, CHASH_HEXLEN);
	bad[CHASH_HEXLEN - 1] = '\0'; /* 63 characters */
	CHECK(chash_from_hex(bad, h) == -EINVAL);
	memcpy(bad, ruby_hash, CHASH_HEXLEN);
	bad[CHASH_HEXLEN] = '0'; /* 65 characters */
	bad[CHASH_HEXLEN + 1] = '\0';
	CHECK(chash_from_hex(bad, h) == -EINVAL);
	memcpy(bad, ruby_hash, CHASH_HEXLEN + 1);
	bad[40] = 'g';
	CHECK(chash_from_hex(bad, h) == -EINVAL);
	bad[40] = ' ';
	CHECK(chash_from_hex(bad, h) == -EINVAL);
	memcpy(bad, ruby_hash, CHASH_HEXLEN + 1);
	bad[63] = 'x';
	CHECK(chash_from_hex(bad, h) == -EINVAL);
	CHECK(memcmp(h, keep, sizeof(h)) == 0);
}

static void test_fd_errors(void)
{
	uint8_t h[CHASH_LEN];
	uint64_t size = 77;
	int fd;

	CHECK(chash_fd(-1, h, &size) == -EBADF);
	CHECK(size == 77);
	fd = open(tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CHECK(fd >= 0);
	CHECK(chash_fd(fd, h, &size) == -EISDIR);
	CHECK(size == 77);
	close(fd);
}

/*
 * chash_fd reads in bounded chunks: hashing a 256 MiB (sparse) file must
 * not grow the peak resident size by anything near the file size. Runs
 * first, while the peak is still low.
 */
static void test_flat_memory(void)
{
	struct rusage before, after;
	uint8_t h[CHASH_LEN];
	uint64_t size = 0;
	char path[256];
	int fd;

	snprintf(path, sizeof(path), "%s/sparse", tmpdir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(fd >= 0);
	CHECK(unlink(path) == 0);
	CHECK(ftruncate(fd, (off_t)(256 * MIB)) == 0);
	CHECK(getrusage(RUSAGE_SELF, &before) == 0);
	CHECK(chash_fd(fd, h, &size) == 0);
	CHECK(getrusage(RUSAGE_SELF, &after) == 0);
	CHECK(size == 256 * MIB);
	/* ru_maxrss is in KiB. */
	CHECK(after.ru_maxrss - before.ru_maxrss < 64 * 1024);
	close(fd);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s PATH/TO/ruby.png\n", argv[0]);
		return 2;
	}
	CHECK(mkdtemp(tmpdir) != NULL);

	test_flat_memory();
	test_ruby(argv[1]);
	test_small();
	test_blocks();
	test_streaming();
	test_hex();
	test_fd_errors();

	CHECK(rmdir(tmpdir) == 0);
	printf("test_hash: all checks passed\n");
	return 0;
}

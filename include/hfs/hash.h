/*
 * The Dropbox content hash (dropbox-api.md section 9): SHA-256 of each
 * 4 MiB block, then SHA-256 over the concatenated block digests. Used for
 * every backend, so "smart sync" compares like with like.
 *
 * A struct chash is a streaming hasher: init, any number of updates of any
 * size, final. It is not thread-safe; one per thread or per job.
 */
#ifndef HFS_HASH_H
#define HFS_HASH_H

#include <stddef.h>
#include <stdint.h>

#define CHASH_BLOCK ((uint64_t)4 * 1024 * 1024)
#define CHASH_LEN 32
#define CHASH_HEXLEN 64

struct chash {
	void *outer; /* EVP_MD_CTX over block digests */
	void *block; /* EVP_MD_CTX of the current block */
	uint64_t block_fill; /* bytes in the current block */
};

/* Returns 0 or -ENOMEM. */
int chash_init(struct chash *h);
/* Feeds bytes. Returns 0 or -EIO (OpenSSL failure). */
int chash_update(struct chash *h, const void *data, size_t len);
/* Writes the 32-byte digest to @out and releases @h. Returns 0 or -EIO. */
int chash_final(struct chash *h, uint8_t out[CHASH_LEN]);
/* Releases @h without a result; safe on a zeroed or finalized struct. */
void chash_release(struct chash *h);

/* Hashes @len bytes of @buf in one call. Returns 0 or -errno. */
int chash_buf(const void *buf, size_t len, uint8_t out[CHASH_LEN]);
/*
 * Hashes the whole file behind @fd (read with pread from offset 0 to EOF;
 * the file offset is not used). Returns 0 or -errno; *@size_out (may be
 * NULL) gets the number of bytes hashed.
 */
int chash_fd(int fd, uint8_t out[CHASH_LEN], uint64_t *size_out);

/* 64 lowercase hex characters plus NUL. */
void chash_to_hex(const uint8_t h[CHASH_LEN], char out[CHASH_HEXLEN + 1]);
/* Parses exactly 64 hex characters. Returns 0 or -EINVAL. */
int chash_from_hex(const char *hex, uint8_t out[CHASH_LEN]);

#endif

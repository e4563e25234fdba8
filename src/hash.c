/*
 * The Dropbox content hash.
 *
 * Two SHA-256 contexts: "block" digests the current 4 MiB block; whenever a
 * block is full its digest is fed to "outer" and "block" starts over. The
 * final, possibly short, block is only digested if it holds at least one
 * byte, so an input of exactly N blocks has N block digests and the empty
 * input hashes to SHA-256 of nothing, as Dropbox defines it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "hfs/hash.h"

/* chash_fd reads this much at a time: the buffer is the only memory used. */
#define CHASH_READ_CHUNK ((size_t)1024 * 1024)

int chash_init(struct chash *h)
{
	EVP_MD_CTX *outer;
	EVP_MD_CTX *block;

	outer = EVP_MD_CTX_new();
	block = EVP_MD_CTX_new();
	if (!outer || !block)
		goto fail;
	/* Initialisation only fails when OpenSSL cannot allocate. */
	if (!EVP_DigestInit_ex(outer, EVP_sha256(), NULL) ||
	    !EVP_DigestInit_ex(block, EVP_sha256(), NULL))
		goto fail;
	h->outer = outer;
	h->block = block;
	h->block_fill = 0;
	return 0;

fail:
	EVP_MD_CTX_free(block);
	EVP_MD_CTX_free(outer);
	return -ENOMEM;
}

/* Moves the digest of the current block into the outer hash. */
static int finish_block(struct chash *h)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;

	if (!EVP_DigestFinal_ex(h->block, digest, &dlen) || dlen != CHASH_LEN)
		return -EIO;
	if (!EVP_DigestUpdate(h->outer, digest, dlen))
		return -EIO;
	if (!EVP_DigestInit_ex(h->block, EVP_sha256(), NULL))
		return -EIO;
	h->block_fill = 0;
	return 0;
}

int chash_update(struct chash *h, const void *data, size_t len)
{
	const unsigned char *p = data;
	int rc;

	while (len > 0) {
		uint64_t room = CHASH_BLOCK - h->block_fill;
		size_t n = len < room ? len : (size_t)room;

		if (!EVP_DigestUpdate(h->block, p, n))
			return -EIO;
		h->block_fill += n;
		p += n;
		len -= n;
		if (h->block_fill == CHASH_BLOCK) {
			rc = finish_block(h);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

int chash_final(struct chash *h, uint8_t out[CHASH_LEN])
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;
	int rc = 0;

	if (h->block_fill > 0) {
		rc = finish_block(h);
		if (rc < 0)
			goto out;
	}
	if (!EVP_DigestFinal_ex(h->outer, digest, &dlen) || dlen != CHASH_LEN) {
		rc = -EIO;
		goto out;
	}
	memcpy(out, digest, CHASH_LEN);
out:
	chash_release(h);
	return rc;
}

void chash_release(struct chash *h)
{
	EVP_MD_CTX_free(h->block);
	EVP_MD_CTX_free(h->outer);
	h->block = NULL;
	h->outer = NULL;
	h->block_fill = 0;
}

int chash_buf(const void *buf, size_t len, uint8_t out[CHASH_LEN])
{
	struct chash h;
	int rc;

	rc = chash_init(&h);
	if (rc < 0)
		return rc;
	rc = chash_update(&h, buf, len);
	if (rc < 0) {
		chash_release(&h);
		return rc;
	}
	return chash_final(&h, out);
}

int chash_fd(int fd, uint8_t out[CHASH_LEN], uint64_t *size_out)
{
	struct chash h;
	uint64_t off = 0;
	char *buf;
	int rc;

	buf = malloc(CHASH_READ_CHUNK);
	if (!buf)
		return -ENOMEM;
	rc = chash_init(&h);
	if (rc < 0)
		goto out_buf;

	for (;;) {
		ssize_t n = pread(fd, buf, CHASH_READ_CHUNK, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			goto out_hash;
		}
		if (n == 0)
			break;
		rc = chash_update(&h, buf, (size_t)n);
		if (rc < 0)
			goto out_hash;
		off += (uint64_t)n;
	}

	rc = chash_final(&h, out);
	if (rc == 0 && size_out)
		*size_out = off;
	goto out_buf;

out_hash:
	chash_release(&h);
out_buf:
	free(buf);
	return rc;
}

void chash_to_hex(const uint8_t h[CHASH_LEN], char out[CHASH_HEXLEN + 1])
{
	static const char digits[] = "0123456789abcdef";
	int i;

	for (i = 0; i < CHASH_LEN; i++) {
		out[2 * i] = digits[h[i] >> 4];
		out[2 * i + 1] = digits[h[i] & 0xf];
	}
	out[CHASH_HEXLEN] = '\0';
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int chash_from_hex(const char *hex, uint8_t out[CHASH_LEN])
{
	uint8_t tmp[CHASH_LEN];
	int i;

	if (!hex)
		return -EINVAL;
	for (i = 0; i < CHASH_LEN; i++) {
		int hi, lo;

		/* A NUL stops hex_value, so a short string never overruns. */
		hi = hex_value(hex[2 * i]);
		if (hi < 0)
			return -EINVAL;
		lo = hex_value(hex[2 * i + 1]);
		if (lo < 0)
			return -EINVAL;
		tmp[i] = (uint8_t)(hi << 4 | lo);
	}
	if (hex[CHASH_HEXLEN] != '\0')
		return -EINVAL;
	memcpy(out, tmp, CHASH_LEN);
	return 0;
}

/*
 * Undo files (see undo.h).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hfs/hash.h"
#include "hfs/undo.h"

#define UNDO_MAGIC 0x444e5548u /* "HUND" */
/* A record's bytes at most (a longer range is several records). */
#define UNDO_REC_MAX ((uint64_t)1 << 20)

struct undo_head {
	uint32_t magic;
	uint32_t len;
	uint64_t off;
	uint8_t hash[CHASH_LEN];
};

static int pread_all(int fd, void *buf, size_t len, uint64_t off, size_t *got)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done,
				  (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	*got = done;
	return 0;
}

static int pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = pwrite(fd, (const char *)buf + done, len - done,
				   (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		done += (size_t)n;
	}
	return 0;
}

int undo_save(int undo, int content, uint64_t off, uint64_t len)
{
	struct stat st;
	if (fstat(undo, &st) < 0)
		return -errno;
	uint64_t at = (uint64_t)st.st_size;
	uint8_t *buf = malloc(len < UNDO_REC_MAX ? (size_t)len : UNDO_REC_MAX);
	if (!buf)
		return -ENOMEM;
	int rc = 0;
	while (len > 0) {
		size_t want = len < UNDO_REC_MAX ? (size_t)len : UNDO_REC_MAX;
		size_t got = 0;
		rc = pread_all(content, buf, want, off, &got);
		if (rc || got == 0)
			break; /* the end of the content file */
		struct undo_head h = {
			.magic = UNDO_MAGIC, .len = (uint32_t)got, .off = off};
		rc = chash_buf(buf, got, h.hash);
		if (!rc)
			rc = pwrite_all(undo, &h, sizeof(h), at);
		if (!rc)
			rc = pwrite_all(undo, buf, got, at + sizeof(h));
		if (rc)
			break;
		at += sizeof(h) + got;
		off += got;
		len -= got;
		if (got < want)
			break;
	}
	free(buf);
	return rc;
}

/* Reads the record at @at: 1 (and its head and bytes in @buf), 0 at the
 * end or at a torn record, or -errno. */
static int read_rec(int undo, uint64_t at, struct undo_head *h, uint8_t *buf)
{
	size_t got = 0;
	int rc = pread_all(undo, h, sizeof(*h), at, &got);
	if (rc)
		return rc;
	if (got < sizeof(*h) || h->magic != UNDO_MAGIC || h->len == 0 ||
	    h->len > UNDO_REC_MAX)
		return 0;
	rc = pread_all(undo, buf, h->len, at + sizeof(*h), &got);
	if (rc)
		return rc;
	if (got < h->len)
		return 0;
	uint8_t sum[CHASH_LEN];
	rc = chash_buf(buf, h->len, sum);
	if (rc)
		return rc;
	return memcmp(sum, h->hash, CHASH_LEN) == 0 ? 1 : 0;
}

/* Calls @fn (or writes back into @content if >= 0) for each record. */
static int walk(int undo, int content, undo_range_fn fn, void *arg,
		unsigned *records)
{
	uint8_t *buf = malloc(UNDO_REC_MAX);
	if (!buf)
		return -ENOMEM;
	uint64_t at = 0;
	unsigned n = 0;
	int rc;
	struct undo_head h;
	while ((rc = read_rec(undo, at, &h, buf)) == 1) {
		if (content >= 0)
			rc = pwrite_all(content, buf, h.len, h.off);
		else
			rc = fn(arg, h.off, h.len);
		if (rc)
			break;
		n++;
		at += sizeof(h) + h.len;
	}
	free(buf);
	if (records)
		*records = n;
	return rc < 0 || rc > 1 ? rc : 0;
}

int undo_ranges(int undo, undo_range_fn fn, void *arg)
{
	return walk(undo, -1, fn, arg, NULL);
}

int undo_apply(int undo, int content, unsigned *records)
{
	int rc = walk(undo, content, NULL, NULL, records);
	if (!rc && fsync(content) < 0)
		rc = -errno;
	return rc;
}

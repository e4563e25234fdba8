/*
 * The Dropbox backend's uploads (dbx_i.h): upload and upload_batch.
 *
 * Large uploads (> single_max) use an upload session, state by state:
 *   START   upload_session/start with the first chunk -> APPEND (offset)
 *   APPEND  append_v2 at offset -> offset += chunk; at size -> FINISH
 *           409 incorrect_offset N (a lost reply: the server has N
 *           bytes) -> APPEND at N, never from zero
 *   FINISH  finish with an empty body -> done
 *           incorrect_offset N < size -> APPEND at N
 *           lookup_failed/not_found (the session is gone: typically the
 *           commit happened but its reply was lost, and libcurl or we sent
 *           it again) -> get_metadata; done if the file has our content
 *           hash and size, else -EAGAIN (a kept session: START again)
 *           another error -> the session is kept (see "Kept sessions")
 * A kept session of the same bytes starts at FINISH with offset = size.
 * Invariant: 0 <= offset <= size; each chunk ends on a multiple of chunk.
 *
 * upload_batch: one upload_session/start (close: true) per small file
 * (or a kept session, closed if need be), then one finish_batch_v2 per
 * 1000 files. Each entry is judged on its own, with its own error detail:
 * too_many_write_operations goes into a further batch after a backoff,
 * lookup_failed/not_found is checked with get_metadata as for FINISH,
 * other failures keep their session. Batch commits of one backend run one
 * at a time (dbx_api_batch_enter), and so do they with batch deletes.
 *
 * Before any upload, space_gate() holds it back while Dropbox is out of
 * space (see "Space" below).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dbx_i.h"

#define DBX_OFFSET_RECOVERIES 64
#define DBX_KEPT_TTL_S (6 * 86400) /* Dropbox keeps them 7 days */
/* While Dropbox is out of space: get_space_usage at most this often, and
 * a retry regardless of it after a pause doubling between these. */
#define DBX_SPACE_POLL_MS 10000
#define DBX_SPACE_BACKOFF_MIN_S 60
#define DBX_SPACE_BACKOFF_MAX_S 3600

/* ---- upload ---- */

/* Content hash of [0, @size) of @fd. */
static int hash_range(int fd, uint64_t size, uint8_t out[CHASH_LEN])
{
	size_t bufsz = 1024 * 1024;
	uint64_t pos = 0;
	struct chash h;
	char *buf;
	ssize_t n;
	int rc;

	buf = malloc(bufsz);
	if (!buf)
		return -ENOMEM;
	rc = chash_init(&h);
	if (rc < 0) {
		free(buf);
		return rc;
	}
	while (pos < size) {
		size_t want = size - pos < bufsz ? (size_t)(size - pos) : bufsz;

		n = pread(fd, buf, want, (off_t)pos);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			break;
		}
		rc = chash_update(&h, buf, (size_t)n);
		if (rc < 0)
			break;
		pos += (uint64_t)n;
	}
	if (rc == 0)
		rc = chash_final(&h, out);
	else
		chash_release(&h);
	free(buf);
	return rc;
}

/*
 * Fills @out from the FileMetadata @m of a finished upload of @up, and
 * checks its content hash against @hash (if known).
 */
static int upload_result(const struct backend_upload *up, struct dbx_meta *m,
			 const uint8_t *hash, struct backend_entry *out)
{
	if (!m->name_ok) {
		backend_set_error("upload %s: the reply names an invalid file",
				  up->path);
		return -EIO;
	}
	if (hash && m->has_hash && memcmp(hash, m->hash, CHASH_LEN) != 0) {
		backend_set_error("upload %s: the stored content hash differs "
				  "from the uploaded file's",
				  up->path);
		return -EIO;
	}
	if (out) {
		dbx_meta_to_entry(m, out);
		/* Report our own spelling unless Dropbox stored the bytes
		 * under another name (a conflicted copy). */
		if (dbx_name_equal(m->name, dbx_api_base_name(up->path)))
			snprintf(out->name, sizeof(out->name), "%s",
				 dbx_api_base_name(up->path));
	}
	return 0;
}

static int check_upload(struct dbx *db, const struct backend_upload *up,
			char **full)
{
	int rc;

	if (!up || up->fd < 0) {
		backend_set_error("upload: no file");
		return -EINVAL;
	}
	rc = dbx_api_full_path(db, up->path, false, full);
	if (rc < 0)
		return rc;
	if (up->parent_rev && !dbx_rev_ok(up->parent_rev)) {
		backend_set_error("upload %s: invalid parent revision",
				  up->path);
		free(*full);
		*full = NULL;
		return -EINVAL;
	}
	return 0;
}

/* ---- kept sessions and the remote's space ---- */

/*
 * Kept sessions. When a commit fails (insufficient_space, a conflict, a
 * name refused, a lost reply...), Dropbox still holds the uploaded bytes
 * in the upload session (files/upload names it in its error) for 7 days.
 * We keep the session id with the content hash and size of its bytes;
 * a later upload of the same bytes (same hash and size: the file did not
 * change, wherever it now goes) only finishes that session. A session is
 * taken out of the table while it is used, so two threads never finish
 * the same one, and is kept again if that finish fails too. The table is
 * small (DBX_KEPT_MAX, the oldest goes first) and forgets sessions after
 * DBX_KEPT_TTL_S; a session the server no longer knows
 * (lookup_failed/not_found) means sending the bytes again.
 */

/* Keeps session @sid (stolen) of @size bytes with hash @hash. */
static void kept_put(struct dbx *db, char *sid, const uint8_t *hash,
		     uint64_t size, bool closed)
{
	struct kept_session *k, *slot = NULL;
	size_t i;

	if (!sid)
		return;
	if (!hash) {
		free(sid);
		return;
	}
	pthread_mutex_lock(&db->kept_lock);
	for (i = 0; i < DBX_KEPT_MAX; i++) {
		k = &db->kept[i];
		if (k->sid && k->size == size &&
		    memcmp(k->hash, hash, CHASH_LEN) == 0) {
			slot = k; /* the newer session of the same bytes */
			break;
		}
		if (!slot || (slot->sid && (!k->sid || k->since < slot->since)))
			slot = k;
	}
	free(slot->sid);
	slot->sid = sid;
	memcpy(slot->hash, hash, CHASH_LEN);
	slot->size = size;
	slot->closed = closed;
	slot->since = dbx_api_now_s();
	pthread_mutex_unlock(&db->kept_lock);
}

/* Takes out a kept session of the bytes @hash/@size (closed ones only if
 * @closed_only): *@sid (owned by the caller) and *@closed, or NULL. */
static void kept_take(struct dbx *db, const uint8_t *hash, uint64_t size,
		      bool closed_only, char **sid, bool *closed)
{
	int64_t now = dbx_api_now_s();
	size_t i;

	*sid = NULL;
	*closed = false;
	if (!hash)
		return;
	pthread_mutex_lock(&db->kept_lock);
	for (i = 0; i < DBX_KEPT_MAX; i++) {
		struct kept_session *k = &db->kept[i];

		if (k->sid && now - k->since > DBX_KEPT_TTL_S) {
			free(k->sid);
			k->sid = NULL;
		}
		if (!k->sid || k->size != size ||
		    memcmp(k->hash, hash, CHASH_LEN) != 0 ||
		    (closed_only && !k->closed))
			continue;
		*sid = k->sid;
		*closed = k->closed;
		k->sid = NULL;
		break;
	}
	pthread_mutex_unlock(&db->kept_lock);
}

/* True if a finish that failed with @e left its session usable for
 * another try. */
static bool session_survives(const struct dbx_error *e)
{
	return !e->has_correct_offset &&
	       strncmp(e->summary, "lookup_failed", 13) != 0;
}

/*
 * Space. Once an upload is refused with insufficient_space, sending it (or
 * any other) again cannot help until space is freed. From then on, before
 * each upload, the free space is read with users/get_space_usage (at
 * most every DBX_SPACE_POLL_MS; one cheap call shared by every upload),
 * and an upload goes ahead only if the free space is at least its size,
 * or grew since the refusal and its bytes wait in a kept session (a file
 * replacing another needs less), or once a pause that doubles with each
 * refusal (1 min to 1 h) has passed; otherwise it fails at once with
 * -ENOSPC, without a request. A successful upload ends the state.
 */

/* The free space now (UINT64_MAX if the allocation is unknown). */
static int space_free(struct dbx *db, uint64_t *free_bytes)
{
	uint64_t used = 0, total = 0;
	int rc = dbx_api_space_usage(db, 2, &used, &total);

	if (rc == 0)
		*free_bytes = total == 0     ? UINT64_MAX
			      : total > used ? total - used
					     : 0;
	return rc;
}

/* An upload was refused for the lack of space. Keeps the caller's error
 * detail. */
static void space_refused(struct dbx *db)
{
	char saved[BACKEND_ERROR_MAX];
	uint64_t f = UINT64_MAX, d = DBX_SPACE_BACKOFF_MIN_S;
	int rc;

	snprintf(saved, sizeof(saved), "%s", backend_last_error());
	rc = space_free(db, &f);
	backend_set_error("%s", saved);
	pthread_mutex_lock(&db->kept_lock);
	for (unsigned i = 0;
	     i < db->space.refusals && d < DBX_SPACE_BACKOFF_MAX_S; i++)
		d *= 2;
	if (d > DBX_SPACE_BACKOFF_MAX_S)
		d = DBX_SPACE_BACKOFF_MAX_S;
	db->space.short_of_space = true;
	db->space.refusals++;
	db->space.retry_at_ms = dbx_api_now_ms() + d * 1000;
	db->space.free_at_refusal = rc == 0 ? f : UINT64_MAX;
	db->space.free_now = rc == 0 ? f : UINT64_MAX;
	db->space.checked_ms = rc == 0 ? dbx_api_now_ms() : 0;
	pthread_mutex_unlock(&db->kept_lock);
}

static void space_fine(struct dbx *db)
{
	pthread_mutex_lock(&db->kept_lock);
	db->space.short_of_space = false;
	db->space.refusals = 0;
	pthread_mutex_unlock(&db->kept_lock);
}

/*
 * Before an upload of @up (@send: its bytes must be sent, no kept
 * session): 0 to go ahead, -ENOSPC while Dropbox is still out of space,
 * or the -errno of get_space_usage.
 */
static int space_gate(struct dbx *db, const struct backend_upload *up,
		      bool send)
{
	uint64_t f = 0, now = dbx_api_now_ms();
	bool poll, grew, ok;
	int rc;

	pthread_mutex_lock(&db->kept_lock);
	if (!db->space.short_of_space) {
		pthread_mutex_unlock(&db->kept_lock);
		return 0;
	}
	poll = !db->space.checked_ms ||
	       now - db->space.checked_ms >= DBX_SPACE_POLL_MS;
	pthread_mutex_unlock(&db->kept_lock);
	if (poll) {
		rc = space_free(db, &f);
		if (rc < 0)
			return rc;
	}
	pthread_mutex_lock(&db->kept_lock);
	if (poll) {
		db->space.free_now = f;
		db->space.checked_ms = dbx_api_now_ms();
	}
	f = db->space.free_now;
	grew = f != UINT64_MAX && db->space.free_at_refusal != UINT64_MAX &&
	       f > db->space.free_at_refusal;
	ok = now >= db->space.retry_at_ms ||
	     (f != UINT64_MAX && f >= up->size) || (grew && !send);
	pthread_mutex_unlock(&db->kept_lock);
	if (ok)
		return 0;
	if (f == UINT64_MAX)
		backend_set_error("upload %s: Dropbox is out of space; "
				  "waiting for space to be freed",
				  up->path);
	else
		backend_set_error("upload %s: Dropbox is out of space (%" PRIu64
				  " bytes free, the file has %" PRIu64
				  "); waiting for space to be freed",
				  up->path, f, up->size);
	return -ENOSPC;
}

/* The upload_session_id a files/upload error names, or NULL. */
static char *error_session(const struct call *c)
{
	json_t *root, *e, *sid;
	char *out = NULL;

	if (c->resp.status != 409 || !c->resp.body)
		return NULL;
	root = json_loadb(c->resp.body, c->resp.body_len, 0, NULL);
	e = json_is_object(root) ? json_object_get(root, "error") : NULL;
	sid = json_is_object(e) ? json_object_get(e, "upload_session_id")
				: NULL;
	if (json_is_string(sid) && json_string_length(sid) > 0 &&
	    json_string_length(sid) <= 256)
		out = strdup(json_string_value(sid));
	json_decref(root);
	return out;
}

/* ---- single uploads and sessions ---- */

/* CommitInfo of an upload of @up to Dropbox path @full. NULL: ENOMEM or
 * invalid UTF-8. */
static json_t *commit_info(const char *full, const struct backend_upload *up)
{
	char when[DBX_TIME_LEN + 1];
	json_t *mode;

	dbx_time_format(up->mtime, when);
	if (up->parent_rev)
		mode = json_pack("{s:s, s:s}", ".tag", "update", "update",
				 up->parent_rev);
	else
		mode = json_string("overwrite");
	if (!mode)
		return NULL;
	return json_pack("{s:s, s:o, s:b, s:s, s:b, s:b}", "path", full, "mode",
			 mode, "autorename", up->autorename, "client_modified",
			 when, "mute", 1, "strict_conflict", 0);
}

static int upload_single(struct dbx *db, const struct backend_upload *up,
			 const char *full, const uint8_t *hash,
			 struct backend_entry *out)
{
	char hex[CHASH_HEXLEN + 1];
	struct dbx_meta m;
	struct call c;
	json_t *ci;
	char *arg;
	int rc;

	ci = commit_info(full, up);
	if (ci && hash) {
		chash_to_hex(hash, hex);
		json_object_set_new(ci, "content_hash", json_string(hex));
	}
	arg = dbx_api_encode(ci, true);
	if (!arg)
		return -ENOMEM;
	dbx_api_call_init(&c, "files/upload", HOST_CONTENT, STYLE_UPLOAD,
			  up->path);
	c.arg = arg;
	c.fd = up->fd;
	c.off = 0;
	c.len = up->size;
	rc = dbx_api_call(db, &c);
	if (rc == 0) {
		rc = dbx_meta_parse_text(c.resp.body, c.resp.body_len,
					 DBX_FILE_ONLY, &m);
		if (rc == 0) {
			rc = upload_result(up, &m, hash, out);
			dbx_meta_release(&m);
		} else {
			backend_set_error("files/upload %s: malformed reply",
					  up->path);
		}
	} else {
		/* The bytes wait in a session: a retry only finishes it. */
		kept_put(db, error_session(&c), hash, up->size, false);
	}
	dbx_api_call_release(&c);
	free(arg);
	return rc;
}

/* The session cursor {"session_id": ..., "offset": ...}. */
static json_t *cursor_json(const char *sid, uint64_t offset)
{
	return json_pack("{s:s, s:I}", "session_id", sid, "offset",
			 (json_int_t)offset);
}

/* start (no @sid yet) or append_v2 of [@off, @end); sets *@sid. */
static int session_send(struct dbx *db, const struct backend_upload *up,
			char **sid, uint64_t off, uint64_t end, bool close,
			struct call *c)
{
	char *arg;
	int rc;

	dbx_api_call_init(c,
			  *sid ? "files/upload_session/append_v2"
			       : "files/upload_session/start",
			  HOST_CONTENT, STYLE_UPLOAD, up->path);
	if (!*sid)
		arg = dbx_api_encode(json_pack("{s:b}", "close", close), true);
	else
		arg = dbx_api_encode(json_pack("{s:o, s:b}", "cursor",
					       cursor_json(*sid, off), "close",
					       close),
				     true);
	if (!arg)
		return -ENOMEM;
	c->arg = arg;
	c->fd = up->fd;
	c->off = off;
	c->len = end - off;
	rc = dbx_api_call(db, c);
	c->arg = NULL;
	if (rc == 0 && !*sid) {
		rc = dbx_parse_session(c->resp.body, c->resp.body_len, sid);
		if (rc == -EIO)
			backend_set_error("upload_session/start %s: malformed "
					  "reply",
					  up->path);
	}
	free(arg);
	return rc;
}

/*
 * After a finish whose reply was lost and whose retry found no session:
 * the commit happened if the file now has our content hash.
 */
static int finish_lost(struct dbx *db, const struct backend_upload *up,
		       const char *full, const uint8_t *hash,
		       struct backend_entry *out)
{
	struct dbx_meta m;
	int rc;

	rc = dbx_api_get_meta(db, full, up->path, &m);
	if (rc < 0)
		return -EAGAIN;
	if (m.kind != DBX_FILE || !m.has_hash ||
	    memcmp(m.hash, hash, CHASH_LEN) != 0 || m.size != up->size) {
		dbx_meta_release(&m);
		backend_set_error("upload %s: the upload session vanished",
				  up->path);
		return -EAGAIN;
	}
	rc = upload_result(up, &m, hash, out);
	dbx_meta_release(&m);
	return rc;
}

/*
 * Uploads @up through an upload session: a new one, or @sid (stolen: a
 * kept session that already holds the bytes, which is then only
 * finished; if the server no longer knows it, the bytes are sent once
 * more in a new session).
 */
static int upload_session(struct dbx *db, const struct backend_upload *up,
			  const char *full, const uint8_t *hash, char *sid,
			  bool closed, struct backend_entry *out)
{
	uint64_t off = sid ? up->size : 0, end, chunk = db->tune.chunk;
	bool kept = sid != NULL;
	unsigned recoveries = 0;
	struct dbx_meta m;
	char *arg = NULL;
	struct call c;
	int rc;

	for (;;) {
		/* Send data until the server has all of it. */
		while (!sid || off < up->size) {
			end = (off / chunk + 1) * chunk;
			if (end > up->size)
				end = up->size;
			rc = session_send(db, up, &sid, off, end, false, &c);
			if (rc == 0) {
				off = end;
			} else if (c.err.has_correct_offset &&
				   c.err.correct_offset <= up->size &&
				   ++recoveries <= DBX_OFFSET_RECOVERIES) {
				/* A lost reply: resume where the server is. */
				off = c.err.correct_offset;
				rc = 0;
			} else if (c.err.has_correct_offset) {
				rc = -EIO;
			} else if (rc == -ENOENT && sid) {
				/* The session expired: not the path. */
				rc = -EAGAIN;
			}
			dbx_api_call_release(&c);
			if (rc < 0)
				goto out;
		}

		json_t *ci = commit_info(full, up);

		arg = dbx_api_encode(json_pack("{s:o, s:o}", "cursor",
					       cursor_json(sid, up->size),
					       "commit", ci),
				     true);
		if (!arg) {
			rc = -ENOMEM;
			goto out;
		}
		dbx_api_call_init(&c, "files/upload_session/finish",
				  HOST_CONTENT, STYLE_UPLOAD, up->path);
		c.arg = arg;
		rc = dbx_api_call(db, &c);
		free(arg);
		arg = NULL;
		if (rc == 0) {
			rc = dbx_meta_parse_text(c.resp.body, c.resp.body_len,
						 DBX_FILE_ONLY, &m);
			if (rc == 0) {
				rc = upload_result(up, &m, hash, out);
				dbx_meta_release(&m);
			} else {
				backend_set_error("upload_session/finish %s: "
						  "malformed reply",
						  up->path);
			}
			dbx_api_call_release(&c);
			goto out;
		}
		if (c.err.has_correct_offset &&
		    c.err.correct_offset < up->size &&
		    ++recoveries <= DBX_OFFSET_RECOVERIES) {
			off = c.err.correct_offset;
			dbx_api_call_release(&c);
			continue;
		}
		if (rc == -EAGAIN &&
		    strncmp(c.err.summary, "lookup_failed/not_found", 23) ==
			    0) {
			rc = finish_lost(db, up, full, hash, out);
			if (rc == -EAGAIN && kept) {
				/* The kept session is gone: send again. */
				kept = false;
				closed = false;
				free(sid);
				sid = NULL;
				off = 0;
				dbx_api_call_release(&c);
				continue;
			}
		} else if (c.err.has_correct_offset) {
			rc = -EIO;
		} else if (session_survives(&c.err)) {
			kept_put(db, sid, hash, up->size, closed);
			sid = NULL;
		}
		dbx_api_call_release(&c);
		goto out;
	}
out:
	free(sid);
	return rc;
}

/* An upload of @up to Dropbox path @full (checked by check_upload). */
static int upload_one(struct dbx *db, const struct backend_upload *up,
		      const char *full, struct backend_entry *out)
{
	uint8_t hash[CHASH_LEN];
	char *sid = NULL;
	bool closed = false;
	int rc;

	if (up->hash) {
		memcpy(hash, up->hash, CHASH_LEN);
	} else {
		rc = hash_range(up->fd, up->size, hash);
		if (rc < 0) {
			backend_set_error("upload %s: reading the file: %s",
					  up->path, strerror(-rc));
			return rc;
		}
	}
	kept_take(db, hash, up->size, false, &sid, &closed);
	rc = space_gate(db, up, sid == NULL);
	if (rc < 0) {
		kept_put(db, sid, hash, up->size, closed);
		return rc;
	}
	if (sid || up->size > db->tune.single_max)
		rc = upload_session(db, up, full, hash, sid, closed, out);
	else
		rc = upload_single(db, up, full, hash, out);
	if (rc == -ENOSPC)
		space_refused(db);
	else if (rc == 0)
		space_fine(db);
	return rc;
}

int dbx_upload(struct backend *be, const struct backend_upload *up,
	       struct backend_entry *out)
{
	struct dbx *db = dbx_of(be);
	char *full = NULL;
	int rc;

	rc = check_upload(db, up, &full);
	if (rc < 0)
		return rc;
	rc = upload_one(db, up, full, out);
	free(full);
	return rc;
}

/* ---- upload_batch ---- */

/* One upload_session/start with the whole of @up and close: true. */
static int batch_start(struct dbx *db, const struct backend_upload *up,
		       const uint8_t *hash, char **sid)
{
	char hex[CHASH_HEXLEN + 1];
	struct call c;
	json_t *o;
	char *arg;
	int rc;

	o = json_pack("{s:b}", "close", 1);
	if (o && hash) {
		chash_to_hex(hash, hex);
		json_object_set_new(o, "content_hash", json_string(hex));
	}
	arg = dbx_api_encode(o, true);
	if (!arg)
		return -ENOMEM;
	dbx_api_call_init(&c, "files/upload_session/start", HOST_CONTENT,
			  STYLE_UPLOAD, up->path);
	c.arg = arg;
	c.fd = up->fd;
	c.len = up->size;
	rc = dbx_api_call(db, &c);
	if (rc == 0) {
		rc = dbx_parse_session(c.resp.body, c.resp.body_len, sid);
		if (rc == -EIO)
			backend_set_error("upload_session/start %s: malformed "
					  "reply",
					  up->path);
	}
	dbx_api_call_release(&c);
	free(arg);
	return rc;
}

/* Closes kept session @sid holding all of @up (an empty append_v2 with
 * close: true), so that finish_batch_v2 can commit it. */
static int batch_close(struct dbx *db, const struct backend_upload *up,
		       char **sid)
{
	struct call c;
	int rc = session_send(db, up, sid, up->size, up->size, true, &c);

	dbx_api_call_release(&c);
	return rc;
}

struct batch_item {
	size_t i; /* index in the caller's arrays */
	char *sid; /* owned */
	char *full; /* owned */
	uint8_t hash[CHASH_LEN];
	bool has_hash;
};

/* The per-file results of a batch: rcs[i], and the failure's detail in
 * errs[i] (if @errs) and in the thread's last error. */
struct batch_out {
	struct backend_entry *outs;
	int *rcs;
	char (*errs)[BACKEND_ERROR_MAX];
	size_t no_space; /* commits refused with insufficient_space */
};

/* File @i failed with @rc; its detail is the thread's last error. */
static void item_failed(struct batch_out *bo, size_t i, int rc)
{
	bo->rcs[i] = rc;
	if (bo->errs)
		snprintf(bo->errs[i], BACKEND_ERROR_MAX, "%s",
			 backend_last_error());
}

/* Done with @it: its session is kept for another try if the server may
 * still hold it (@keep), else forgotten. */
static void item_release(struct dbx *db, const struct backend_upload *up,
			 struct batch_item *it, bool keep)
{
	if (keep && it->has_hash)
		kept_put(db, it->sid, it->hash, up->size, true);
	else
		free(it->sid);
	it->sid = NULL;
	free(it->full);
	it->full = NULL;
}

/*
 * Commits @n items with one finish_batch_v2. Each entry is judged on its
 * own: results go to @bo; items to retry (too_many_write_operations) are
 * moved to the front of @items and their number returned in *@again. An
 * entry whose session is gone (lookup_failed/not_found: a lost reply
 * committed it) succeeds if the file now has our bytes. Returns 0 or the
 * call's -errno (then every item got it).
 */
static int batch_finish(struct dbx *db, const struct backend_upload *ups,
			struct batch_item *items, size_t n,
			struct batch_out *bo, size_t *again)
{
	struct dbx_meta *metas = NULL;
	struct dbx_error *errs = NULL;
	bool *ok = NULL;
	json_t *entries, *e;
	struct call c;
	char *arg = NULL;
	size_t k, keep = 0;
	int rc = -ENOMEM;

	*again = 0;
	entries = json_array();
	if (!entries)
		goto fail;
	for (k = 0; k < n; k++) {
		const struct backend_upload *up = &ups[items[k].i];

		e = json_pack("{s:o, s:o}", "cursor",
			      cursor_json(items[k].sid, up->size), "commit",
			      commit_info(items[k].full, up));
		if (!e || json_array_append_new(entries, e) < 0) {
			json_decref(entries);
			goto fail;
		}
	}
	arg = dbx_api_encode(json_pack("{s:o}", "entries", entries), false);
	metas = calloc(n, sizeof(*metas));
	errs = calloc(n, sizeof(*errs));
	ok = calloc(n, sizeof(*ok));
	if (!arg || !metas || !errs || !ok)
		goto fail;
	dbx_api_call_init(&c, "files/upload_session/finish_batch_v2", HOST_API,
			  STYLE_RPC, NULL);
	c.arg = arg;
	rc = dbx_api_call(db, &c);
	if (rc == 0) {
		rc = dbx_parse_batch(c.resp.body, c.resp.body_len, n, metas,
				     errs, ok);
		if (rc < 0)
			backend_set_error("upload_session/finish_batch_v2: "
					  "malformed reply");
	}
	dbx_api_call_release(&c);
	if (rc < 0)
		goto fail;
	for (k = 0; k < n; k++) {
		struct batch_item *it = &items[k];
		const struct backend_upload *up = &ups[it->i];
		size_t i = it->i;
		int r;

		if (ok[k]) {
			r = upload_result(up, &metas[k],
					  it->has_hash ? it->hash : NULL,
					  &bo->outs[i]);
			dbx_meta_release(&metas[k]);
			if (r < 0)
				item_failed(bo, i, r);
			else
				bo->rcs[i] = 0;
			item_release(db, up, it, false);
			continue;
		}
		if (errs[k].retry) {
			bo->rcs[i] = -EAGAIN;
			items[keep++] = *it;
			continue;
		}
		r = errs[k].err;
		backend_set_error("upload %s: %s", up->path, errs[k].summary);
		if (r == -EAGAIN && it->has_hash &&
		    strncmp(errs[k].summary, "lookup_failed/not_found", 23) ==
			    0)
			r = finish_lost(db, up, it->full, it->hash,
					&bo->outs[i]);
		if (r == 0)
			bo->rcs[i] = 0;
		else
			item_failed(bo, i, r);
		if (r == -ENOSPC)
			bo->no_space++;
		item_release(db, up, it, r != 0 && session_survives(&errs[k]));
	}
	*again = keep;
	rc = 0;
	goto out;
fail:
	/* The sessions are still open unless a lost reply committed them;
	 * a later finish tells (finish_lost). */
	for (k = 0; k < n; k++) {
		item_failed(bo, items[k].i, rc);
		item_release(db, &ups[items[k].i], &items[k], rc != -ENOMEM);
	}
out:
	free(arg);
	free(metas);
	free(errs);
	free(ok);
	return rc;
}

int dbx_upload_batch(struct backend *be, const struct backend_upload *ups,
		     size_t n, struct backend_entry *outs, int *rcs,
		     char (*errs)[BACKEND_ERROR_MAX])
{
	struct dbx *db = dbx_of(be);
	struct batch_out bo = {.outs = outs, .rcs = rcs, .errs = errs};
	struct batch_item *items;
	size_t i, m = 0, done, again, chunk_n, k;
	unsigned round = 0;
	bool closed, committed = false;
	int rc;

	for (i = 0; i < n; i++) {
		rcs[i] = -EIO;
		memset(&outs[i], 0, sizeof(outs[i]));
		if (errs)
			errs[i][0] = '\0';
	}
	if (n == 0)
		return 0;
	items = calloc(n, sizeof(*items));
	if (!items)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		const struct backend_upload *up = &ups[i];
		struct batch_item *it = &items[m];

		memset(it, 0, sizeof(*it));
		rc = check_upload(db, up, &it->full);
		if (rc < 0) {
			item_failed(&bo, i, rc);
			continue;
		}
		if (up->size > db->tune.single_max) {
			rc = upload_one(db, up, it->full, &outs[i]);
			if (rc < 0)
				item_failed(&bo, i, rc);
			else
				rcs[i] = 0;
			free(it->full);
			it->full = NULL;
			continue;
		}
		if (up->hash) {
			memcpy(it->hash, up->hash, CHASH_LEN);
			it->has_hash = true;
		} else if (hash_range(up->fd, up->size, it->hash) == 0) {
			it->has_hash = true;
		}
		/* Bytes the server holds already are only committed. */
		kept_take(db, it->has_hash ? it->hash : NULL, up->size, false,
			  &it->sid, &closed);
		if (it->sid && !closed && batch_close(db, up, &it->sid) < 0) {
			free(it->sid);
			it->sid = NULL;
		}
		rc = space_gate(db, up, it->sid == NULL);
		if (rc == 0 && !it->sid)
			rc = batch_start(db, up, it->has_hash ? it->hash : NULL,
					 &it->sid);
		if (rc < 0) {
			item_failed(&bo, i, rc);
			item_release(db, up, it, true);
			continue;
		}
		it->i = i;
		m++;
	}

	dbx_api_batch_enter(db);
	while (m > 0) {
		/* Commit every item, 1000 at a time; collect the retries
		 * at the front of @items. */
		done = 0;
		k = 0;
		while (done < m) {
			chunk_n = m - done < DBX_BATCH_MAX ? m - done
							   : DBX_BATCH_MAX;
			batch_finish(db, ups, items + done, chunk_n, &bo,
				     &again);
			memmove(items + k, items + done,
				again * sizeof(*items));
			k += again;
			done += chunk_n;
		}
		m = k;
		if (m == 0)
			break;
		if (++round >= db->tune.max_attempts) {
			for (k = 0; k < m; k++) {
				backend_set_error(
					"upload %s: too_many_write_operations",
					ups[items[k].i].path);
				item_failed(&bo, items[k].i, -EAGAIN);
				item_release(db, &ups[items[k].i], &items[k],
					     true);
			}
			break;
		}
		dbx_api_sleep_ms(dbx_api_backoff_ms(db, round - 1));
	}
	dbx_api_batch_leave(db);
	free(items);

	for (i = 0; i < n; i++)
		if (rcs[i] == 0)
			committed = true;
	if (bo.no_space)
		space_refused(db);
	else if (committed)
		space_fine(db);
	return 0;
}

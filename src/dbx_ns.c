/*
 * The Dropbox backend's namespace changes (dbx_i.h): mkdir, remove,
 * remove_batch, move, copy.
 *
 * remove_batch: one files/delete_batch per 1000 entries; its async job is
 * polled with delete_batch/check after 100 ms, the delay doubling up to
 * 5 s, for at most 10 minutes. A job that failed as a whole
 * (too_many_write_operations), was lost or ran too long is submitted
 * again after a backoff, and so are the entries that failed with
 * too_many_write_operations, for up to max_attempts rounds; every other
 * entry is judged on its own. Batch deletes share the batch gate
 * (dbx_api_batch_enter) with batch commits.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dbx_i.h"

#define DBX_JOB_POLL_MS 100
#define DBX_JOB_POLL_MAX_MS 5000
#define DBX_JOB_BUDGET_MS 600000
#define DBX_JOB_BUSY 1 /* delete_chunk: submit the batch again later */

/* ---- namespace operations ---- */

/* An RPC on one path: {"path": full} plus @extra fields (stolen). */
static int path_rpc(struct dbx *db, const char *route, const char *path,
		    const char *full, json_t *extra, struct call *c)
{
	json_t *o;
	char *arg;
	int rc;

	o = json_pack("{s:s}", "path", full);
	if (o && extra)
		json_object_update(o, extra);
	json_decref(extra);
	arg = dbx_api_encode(o, false);
	if (!arg)
		return -ENOMEM;
	dbx_api_call_init(c, route, HOST_API, STYLE_RPC, path);
	c->arg = arg;
	rc = dbx_api_call(db, c);
	free(arg);
	c->arg = NULL;
	return rc;
}

int dbx_ns_mkdir(struct backend *be, const char *path)
{
	struct dbx *db = dbx_of(be);
	struct call c;
	char *full;
	int rc;

	rc = dbx_api_full_path(db, path, true, &full);
	if (rc < 0)
		return rc;
	if (!path[0]) {
		free(full);
		backend_set_error("the root folder exists");
		return -EEXIST;
	}
	rc = path_rpc(db, "files/create_folder_v2", path, full,
		      json_pack("{s:b}", "autorename", 0), &c);
	if (rc == 0 && !c.resp.body) {
		backend_set_error("files/create_folder_v2 %s: empty reply",
				  path);
		rc = -EIO;
	}
	dbx_api_call_release(&c);
	free(full);
	return rc;
}

int dbx_ns_remove(struct backend *be, const char *path)
{
	struct dbx *db = dbx_of(be);
	struct call c;
	char *full;
	int rc;

	rc = dbx_api_full_path(db, path, true, &full);
	if (rc < 0)
		return rc;
	if (!path[0]) {
		free(full);
		backend_set_error("the root folder cannot be removed");
		return -EINVAL;
	}
	rc = path_rpc(db, "files/delete_v2", path, full, NULL, &c);
	dbx_api_call_release(&c);
	free(full);
	return rc;
}

/* ---- remove_batch ---- */

/*
 * One files/delete_batch of @n entries (at most DBX_BATCH_MAX) and its
 * job, polled with files/delete_batch/check after a delay that doubles
 * from DBX_JOB_POLL_MS to DBX_JOB_POLL_MAX_MS. Per-entry results go to
 * @rcs (-EAGAIN: too_many_write_operations for that entry). Returns 0
 * (look at @rcs), DBX_JOB_BUSY if the job failed as a whole
 * (too_many_write_operations; or it was lost, or ran too long: the
 * caller submits the batch again after a backoff), or the -errno of a
 * call.
 */
static int delete_chunk(struct dbx *db, const struct backend_delete *dels,
			char *const *fulls, size_t n, int *rcs)
{
	struct dbx_error *errs = NULL, failed;
	uint64_t delay = DBX_JOB_POLL_MS, waited = 0;
	enum dbx_job state;
	json_t *entries, *e;
	char *arg = NULL, *job = NULL;
	bool *ok = NULL;
	struct call c;
	size_t i;
	int rc = -ENOMEM;

	entries = json_array();
	for (i = 0; entries && i < n; i++) {
		e = json_pack("{s:s}", "path", fulls[i]);
		if (e && dels[i].parent_rev)
			json_object_set_new(e, "parent_rev",
					    json_string(dels[i].parent_rev));
		if (!e || json_array_append_new(entries, e) < 0) {
			json_decref(entries);
			entries = NULL;
		}
	}
	if (!entries)
		goto out;
	arg = dbx_api_encode(json_pack("{s:o}", "entries", entries), false);
	errs = calloc(n, sizeof(*errs));
	ok = calloc(n, sizeof(*ok));
	if (!arg || !errs || !ok)
		goto out;
	dbx_api_call_init(&c, "files/delete_batch", HOST_API, STYLE_RPC,
			  dels[0].path);
	c.arg = arg;
	rc = dbx_api_call(db, &c);
	if (rc == 0) {
		rc = dbx_parse_delete_job(c.resp.body, c.resp.body_len, n,
					  &state, &job, ok, errs, &failed);
		if (rc < 0)
			backend_set_error(
				"files/delete_batch: malformed reply");
	}
	dbx_api_call_release(&c);
	free(arg);
	arg = NULL;
	if (rc == 0 && state == DBX_JOB_ASYNC)
		arg = dbx_api_encode(json_pack("{s:s}", "async_job_id", job),
				     false);
	while (rc == 0 && state == DBX_JOB_ASYNC) {
		if (!arg) {
			rc = -ENOMEM;
			break;
		}
		if (waited >= DBX_JOB_BUDGET_MS) {
			backend_set_error("files/delete_batch/check: the job "
					  "is still running after %llu s",
					  (unsigned long long)waited / 1000);
			rc = DBX_JOB_BUSY;
			break;
		}
		dbx_api_sleep_ms(delay);
		waited += delay;
		delay = delay * 2 > DBX_JOB_POLL_MAX_MS ? DBX_JOB_POLL_MAX_MS
							: delay * 2;
		dbx_api_call_init(&c, "files/delete_batch/check", HOST_API,
				  STYLE_RPC, NULL);
		c.arg = arg;
		rc = dbx_api_call(db, &c);
		if (rc == 0) {
			rc = dbx_parse_delete_job(c.resp.body, c.resp.body_len,
						  n, &state, NULL, ok, errs,
						  &failed);
			if (rc < 0)
				backend_set_error("files/delete_batch/check: "
						  "malformed reply");
		} else if (rc == -EIO) {
			/* An unknown or lost job (invalid_async_job_id):
			 * submit the batch again; deleting what is gone
			 * already is harmless. */
			rc = DBX_JOB_BUSY;
		}
		dbx_api_call_release(&c);
		if (rc == 0 && state == DBX_JOB_IN_PROGRESS)
			state = DBX_JOB_ASYNC;
	}
	if (rc == 0 && state == DBX_JOB_FAILED) {
		backend_set_error("files/delete_batch: %s", failed.summary);
		rc = failed.retry ? DBX_JOB_BUSY : failed.err;
	}
	if (rc == 0) {
		for (i = 0; i < n; i++) {
			if (ok[i]) {
				rcs[i] = 0;
				continue;
			}
			rcs[i] = errs[i].retry ? -EAGAIN : errs[i].err;
			if (errs[i].err != -ENOENT)
				backend_set_error("delete %s: %s", dels[i].path,
						  errs[i].summary);
		}
	}
out:
	free(arg);
	free(job);
	free(errs);
	free(ok);
	return rc;
}

int dbx_ns_remove_batch(struct backend *be, const struct backend_delete *dels,
			size_t n, int *rcs)
{
	struct dbx *db = dbx_of(be);
	struct backend_delete *todo = NULL;
	char **owned = NULL, **fulls = NULL;
	size_t *where = NULL;
	int *crcs = NULL;
	size_t i, j, m = 0, done, chunk_n, k;
	unsigned round = 0;
	bool answered = false;
	int rc = 0, crc, first_err = 0;

	for (i = 0; i < n; i++)
		rcs[i] = -EIO;
	if (n == 0)
		return 0;
	todo = calloc(n, sizeof(*todo));
	owned = calloc(n, sizeof(*owned));
	fulls = calloc(n, sizeof(*fulls));
	where = calloc(n, sizeof(*where));
	crcs = calloc(n, sizeof(*crcs));
	if (!todo || !owned || !fulls || !where || !crcs) {
		rc = -ENOMEM;
		for (i = 0; i < n; i++)
			rcs[i] = rc;
		goto out;
	}
	for (i = 0; i < n; i++) {
		if (dels[i].parent_rev && !dbx_rev_ok(dels[i].parent_rev)) {
			backend_set_error("invalid revision \"%s\"",
					  dels[i].parent_rev);
			rcs[i] = -EINVAL;
			answered = true;
			continue;
		}
		crc = dbx_api_full_path(db, dels[i].path, false, &owned[i]);
		if (crc < 0) {
			rcs[i] = crc;
			answered = true;
			continue;
		}
		todo[m] = dels[i];
		fulls[m] = owned[i];
		where[m++] = i;
	}
	dbx_api_batch_enter(db);
	while (m > 0) {
		/* Every entry, DBX_BATCH_MAX at a time; those to try again
		 * (too_many_write_operations) move to the front. */
		for (done = k = 0; done < m; done += chunk_n) {
			chunk_n = m - done < DBX_BATCH_MAX ? m - done
							   : DBX_BATCH_MAX;
			crc = delete_chunk(db, todo + done, fulls + done,
					   chunk_n, crcs + done);
			if (crc < 0 && !first_err)
				first_err = crc;
			for (j = done; j < done + chunk_n; j++) {
				int r = crc ? crc : crcs[j];

				if (crc == DBX_JOB_BUSY ||
				    (crc == 0 && r == -EAGAIN)) {
					todo[k] = todo[j];
					fulls[k] = fulls[j];
					where[k++] = where[j];
					answered = true;
					continue;
				}
				rcs[where[j]] = r;
				if (crc == 0)
					answered = true;
			}
		}
		m = k;
		if (m == 0)
			break;
		if (++round >= db->tune.max_attempts) {
			for (j = 0; j < m; j++)
				rcs[where[j]] = -EAGAIN;
			backend_set_error("files/delete_batch: "
					  "too_many_write_operations, gave up "
					  "after %u rounds",
					  round);
			break;
		}
		dbx_api_sleep_ms(dbx_api_backoff_ms(db, round - 1));
	}
	dbx_api_batch_leave(db);
	if (!answered && first_err)
		rc = first_err;
out:
	if (owned)
		for (i = 0; i < n; i++)
			free(owned[i]);
	free(owned);
	free(fulls);
	free(todo);
	free(where);
	free(crcs);
	return rc;
}

/* move_v2 or copy_v2 of Dropbox paths; *@name gets the stored name. */
static int relocate(struct dbx *db, bool copy, const char *from, const char *to,
		    const char *ffrom, const char *fto,
		    char name[BACKEND_NAME_MAX + 1])
{
	const char *route = copy ? "files/copy_v2" : "files/move_v2";
	struct dbx_meta m;
	struct call c;
	char *arg;
	int rc;

	arg = dbx_api_encode(json_pack("{s:s, s:s, s:b, s:b}", "from_path",
				       ffrom, "to_path", fto, "autorename", 0,
				       "allow_ownership_transfer", 0),
			     false);
	if (!arg)
		return -ENOMEM;
	dbx_api_call_init(&c, route, HOST_API, STYLE_RPC, from);
	c.arg = arg;
	rc = dbx_api_call(db, &c);
	if (rc == 0) {
		rc = dbx_parse_metadata_result(c.resp.body, c.resp.body_len,
					       DBX_TAGGED, &m);
		if (rc == 0 && m.name_ok && name)
			memcpy(name, m.name, BACKEND_NAME_MAX + 1);
		else if (rc == 0 && name)
			name[0] = '\0';
		if (rc == -EIO)
			backend_set_error("%s %s: malformed reply", route,
					  from);
		dbx_meta_release(&m);
	} else if (rc == -EEXIST) {
		backend_set_error("%s: \"%s\" exists", route, to);
	}
	dbx_api_call_release(&c);
	free(arg);
	return rc;
}

/* Renames @from to @to, which differ only in case, through a temporary
 * name (move_v2 refuses or ignores case-only renames). */
static int rename_case(struct dbx *db, const char *from, const char *to,
		       const char *ffrom, const char *fto)
{
	char *tmp = NULL;
	const char *slash = strrchr(ffrom, '/');
	int dirlen = slash ? (int)(slash - ffrom) : 0;
	int rc, rc2;

	if (asprintf(&tmp, "%.*s/.huracanfs-case-%016" PRIx64, dirlen, ffrom,
		     dbx_api_rand64()) < 0)
		return -ENOMEM;
	rc = relocate(db, false, from, to, ffrom, tmp, NULL);
	if (rc == 0) {
		rc = relocate(db, false, from, to, tmp, fto, NULL);
		if (rc < 0) {
			rc2 = relocate(db, false, from, from, tmp, ffrom, NULL);
			(void)rc2;
		}
	}
	free(tmp);
	return rc;
}

/* True if Dropbox paths @a and @b name the same entry (same id). */
static bool same_entry(struct dbx *db, const char *a, const char *b)
{
	struct dbx_meta ma, mb;
	bool same = false;

	if (dbx_api_get_meta(db, a, a, &ma) < 0)
		return false;
	if (dbx_api_get_meta(db, b, b, &mb) == 0) {
		same = ma.id[0] && strcmp(ma.id, mb.id) == 0;
		dbx_meta_release(&mb);
	}
	dbx_meta_release(&ma);
	return same;
}

/* True if remote @to is @from or lies inside folder @from. */
static bool inside(const char *from, const char *to)
{
	size_t lf = strlen(from);

	return strncmp(from, to, lf) == 0 && (to[lf] == '/' || to[lf] == '\0');
}

static int two_paths(struct dbx *db, const char *from, const char *to,
		     char **ffrom, char **fto)
{
	int rc;

	*ffrom = *fto = NULL;
	rc = dbx_api_full_path(db, from, false, ffrom);
	if (rc == 0)
		rc = dbx_api_full_path(db, to, false, fto);
	if (rc == 0 && strcmp(from, to) != 0 && inside(from, to)) {
		backend_set_error("cannot put \"%s\" inside itself (\"%s\")",
				  from, to);
		rc = -EINVAL;
	}
	if (rc == 0 && strcmp(from, to) == 0) {
		backend_set_error("\"%s\" exists", to);
		rc = -EEXIST;
	}
	if (rc < 0) {
		free(*ffrom);
		free(*fto);
		*ffrom = *fto = NULL;
	}
	return rc;
}

int dbx_ns_move(struct backend *be, const char *from, const char *to)
{
	struct dbx *db = dbx_of(be);
	char name[BACKEND_NAME_MAX + 1] = "";
	char *ffrom, *fto;
	int rc;

	rc = two_paths(db, from, to, &ffrom, &fto);
	if (rc < 0)
		return rc;
	if (dbx_name_equal(from, to)) {
		/* Another spelling of the same path (fold.h). */
		rc = rename_case(db, from, to, ffrom, fto);
		goto out;
	}
	rc = relocate(db, false, from, to, ffrom, fto, name);
	if (rc == 0 && name[0] && strcmp(name, dbx_api_base_name(to)) != 0 &&
	    dbx_name_equal(name, dbx_api_base_name(to))) {
		/* A case-only rename outside ASCII that Dropbox accepted
		 * without changing anything. */
		rc = rename_case(db, from, to, ffrom, fto);
	} else if (rc == -EEXIST && dbx_name_equal(ffrom, fto) &&
		   same_entry(db, ffrom, fto)) {
		rc = rename_case(db, from, to, ffrom, fto);
	}
out:
	free(ffrom);
	free(fto);
	return rc;
}

int dbx_ns_copy(struct backend *be, const char *from, const char *to)
{
	struct dbx *db = dbx_of(be);
	char *ffrom, *fto;
	int rc;

	rc = two_paths(db, from, to, &ffrom, &fto);
	if (rc < 0)
		return rc;
	rc = relocate(db, true, from, to, ffrom, fto, NULL);
	free(ffrom);
	free(fto);
	return rc;
}

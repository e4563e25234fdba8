/*
 * ixjournal: reads or extends the namespace journal of an unmounted
 * huracanfs cache, for the integration tests (tests/integration/
 * test_deletes.py). A tool, not a test.
 *
 *   ixjournal CACHE_DIR list
 *       one JSON object per entry, oldest first:
 *       {"seq":N,"op":"unlink","path":"/a","path2":"","known":true,
 *        "rev":"...","hash":"..."}  (hash "" if none)
 *   ixjournal CACHE_DIR append-legacy unlink|rmdir PATH
 *       appends a delete the way versions before the delete record wrote
 *       it (no revision, no hash), to check that such entries replay.
 *
 * Exit status 0 on success, 1 on failure (with a message), 2 for usage.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "hfs/hash.h"
#include "hfs/index.h"

static const char *op_name(int op)
{
	switch (op) {
	case JOP_MKDIR:
		return "mkdir";
	case JOP_UNLINK:
		return "unlink";
	case JOP_RMDIR:
		return "rmdir";
	case JOP_RENAME:
		return "rename";
	default:
		return "?";
	}
}

static int print_entry(void *arg, const struct journal_entry *e)
{
	char hex[CHASH_HEXLEN + 1] = "";
	(void)arg;
	if (e->has_hash)
		chash_to_hex(e->hash, hex);
	json_t *o = json_pack("{s:I, s:s, s:s, s:s, s:b, s:s, s:s}", "seq",
			      (json_int_t)e->seq, "op", op_name(e->op), "path",
			      e->path, "path2", e->path2, "known", e->known,
			      "rev", e->rev, "hash", hex);
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!s)
		return -ENOMEM;
	printf("%s\n", s);
	free(s);
	return 0;
}

int main(int argc, char **argv)
{
	struct hfs_index *ix;
	struct ixtxn t;
	char dir[4096];
	int rc;

	if (argc < 3 ||
	    (strcmp(argv[2], "list") != 0 &&
	     (strcmp(argv[2], "append-legacy") != 0 || argc != 5))) {
		fprintf(stderr, "usage: ixjournal CACHE_DIR list | "
				"append-legacy unlink|rmdir PATH\n");
		return 2;
	}
	snprintf(dir, sizeof(dir), "%s/index", argv[1]);
	rc = index_open(dir, &ix);
	if (rc) {
		fprintf(stderr, "ixjournal: %s: %s\n", dir, strerror(-rc));
		return 1;
	}
	if (strcmp(argv[2], "list") == 0) {
		rc = ix_begin(ix, false, &t);
		if (!rc) {
			rc = ix_foreach_journal(&t, print_entry, NULL);
			ix_abort(&t);
		}
	} else {
		int op = strcmp(argv[3], "rmdir") == 0 ? JOP_RMDIR : JOP_UNLINK;
		rc = ix_begin(ix, true, &t);
		if (!rc) {
			ix_journal_append(&t, op, argv[4], NULL);
			rc = ix_commit(&t);
		}
	}
	index_close(ix);
	if (rc) {
		fprintf(stderr, "ixjournal: %s\n", strerror(-rc));
		return 1;
	}
	return 0;
}

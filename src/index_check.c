/*
 * The index: clean and unclean stops (the running marker), and the consistency
 * check at mount (in a child process).
 */
#include "index_i.h"

/* ---- Clean and unclean stops ---- */

#define RUNNING_KEY "running"

int index_mark_running(struct hfs_index *ix, bool *unclean)
{
	struct ixtxn t;
	int rc = ix_begin(ix, true, &t);
	if (rc)
		return rc;
	MDB_val k = {.mv_size = strlen(RUNNING_KEY),
		     .mv_data = (void *)RUNNING_KEY},
		v;
	rc = mdb_get(t.txn, ix->meta, &k, &v);
	if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
		ix_abort(&t);
		return ix_mdb_to_errno(rc);
	}
	bool was = rc == MDB_SUCCESS;
	uint64_t pid = (uint64_t)getpid();
	v.mv_size = sizeof(pid);
	v.mv_data = &pid;
	ix_sticky(&t, ix_mdb_to_errno(mdb_put(t.txn, ix->meta, &k, &v, 0)));
	rc = ix_commit(&t);
	if (!rc)
		rc = index_sync(ix);
	if (!rc)
		*unclean = was;
	return rc;
}

int index_mark_stopped(struct hfs_index *ix)
{
	struct ixtxn t;
	int rc = index_sync(ix);
	if (rc)
		return rc;
	rc = ix_begin(ix, true, &t);
	if (rc)
		return rc;
	MDB_val k = {.mv_size = strlen(RUNNING_KEY),
		     .mv_data = (void *)RUNNING_KEY};
	rc = mdb_del(t.txn, ix->meta, &k, NULL);
	if (rc && rc != MDB_NOTFOUND)
		ix_sticky(&t, ix_mdb_to_errno(rc));
	rc = ix_commit(&t);
	if (!rc)
		rc = index_sync(ix);
	if (rc)
		return rc;
	/* The state is the last sync point: nothing to go back to. */
	char stopped[PATH_MAX];
	snprintf(stopped, sizeof(stopped), "%s/stopped", ix->dir);
	int fd = open(stopped, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	rc = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	return rc ? rc : ix_sync_dir(ix->dir);
}

/* ---- The consistency check ---- */

/* Writes a reason to @fd (the child's pipe) and returns 1. */
static int bad(int fd, const char *fmt, unsigned long long a)
{
	char msg[256];
	int n = snprintf(msg, sizeof(msg), fmt, a);
	if (n > 0 && write(fd, msg, (size_t)n) < 0)
		return 1;
	return 1;
}

/* Every key of set DBI @name is an inode number. */
static int check_set(MDB_txn *txn, const char *name, int fd)
{
	MDB_dbi dbi;
	MDB_cursor *c;
	MDB_val k, v;
	int rc = mdb_dbi_open(txn, name, MDB_INTEGERKEY, &dbi);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc || mdb_cursor_open(txn, dbi, &c))
		return bad(fd, "cannot open table %s", 0);
	int bad_rc = 0;
	while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0)
		if (k.mv_size != 8)
			bad_rc = bad(fd, "a key of %zu bytes in a set table",
				     k.mv_size);
	mdb_cursor_close(c);
	if (rc != MDB_NOTFOUND)
		return bad(fd, "a set table cannot be read (LMDB error %d)",
			   (unsigned long long)rc);
	return bad_rc;
}

/* The child's work: 0 if every table reads back and holds together. */
static int check_env(const char *dir, int fd)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi nodes, dirents, meta;
	MDB_cursor *c;
	MDB_val k, v;
	if (mdb_env_create(&env))
		return bad(fd, "out of memory", 0);
	mdb_env_set_maxdbs(env, 16);
	int rc = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOTLS | MDB_NOLOCK,
			      0600);
	if (rc)
		return bad(fd, "LMDB cannot open it (error %d)",
			   (unsigned long long)rc);
	MDB_envinfo info;
	MDB_stat est;
	struct stat fst;
	int dfd;
	if (mdb_env_info(env, &info) || mdb_env_stat(env, &est) ||
	    mdb_env_get_fd(env, &dfd) || fstat(dfd, &fst) < 0 ||
	    (uint64_t)fst.st_size <
		    ((uint64_t)info.me_last_pgno + 1) * est.ms_psize)
		return bad(fd, "the data file is shorter than its pages", 0);
	if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn))
		return bad(fd, "no read transaction", 0);
	if (mdb_dbi_open(txn, "meta", 0, &meta) ||
	    mdb_dbi_open(txn, "nodes", MDB_INTEGERKEY, &nodes) ||
	    mdb_dbi_open(txn, "dirents", 0, &dirents))
		return bad(fd, "a table is missing", 0);
	k.mv_size = 6;
	k.mv_data = (void *)"layout";
	if (mdb_get(txn, meta, &k, &v) || v.mv_size != 4)
		return bad(fd, "no layout version", 0);
	/* Nodes: well-formed records whose parent exists. */
	if (mdb_cursor_open(txn, nodes, &c))
		return bad(fd, "cannot read the nodes", 0);
	size_t count = 0;
	bool root = false;
	while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0) {
		struct node_rec r;
		uint64_t ino;
		if (k.mv_size != 8 || v.mv_size < sizeof(r))
			return bad(fd, "a node record of %zu bytes", v.mv_size);
		memcpy(&ino, k.mv_data, 8);
		memcpy(&r, v.mv_data, sizeof(r));
		if (v.mv_size != sizeof(r) + r.namelen ||
		    r.namelen > BACKEND_NAME_MAX)
			return bad(fd, "node %llu has a bad name length",
				   (unsigned long long)ino);
		if (ino == INDEX_ROOT_INO)
			root = true;
		if (r.parent && r.parent != ino) {
			MDB_val pk = {.mv_size = 8, .mv_data = &r.parent}, pv;
			if (mdb_get(txn, nodes, &pk, &pv))
				return bad(fd, "node %llu has no parent",
					   (unsigned long long)ino);
		}
		count++;
	}
	mdb_cursor_close(c);
	if (rc != MDB_NOTFOUND)
		return bad(fd, "the nodes cannot be read (LMDB error %d)",
			   (unsigned long long)rc);
	if (!root)
		return bad(fd, "the root node is missing", 0);
	/* Directory entries: each names an existing node. */
	if (mdb_cursor_open(txn, dirents, &c))
		return bad(fd, "cannot read the directory entries", 0);
	while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0) {
		if (k.mv_size < 8 || v.mv_size < 8)
			return bad(fd, "a directory entry of %zu bytes",
				   v.mv_size);
		MDB_val nk = {.mv_size = 8, .mv_data = v.mv_data}, nv;
		if (mdb_get(txn, nodes, &nk, &nv))
			return bad(
				fd,
				"a directory entry names missing "
				"node %llu",
				(unsigned long long)(*(uint64_t *)v.mv_data));
	}
	mdb_cursor_close(c);
	if (rc != MDB_NOTFOUND)
		return bad(fd, "the directory entries cannot be read (%d)",
			   (unsigned long long)rc);
	if (check_set(txn, "dirty", fd) || check_set(txn, "orphans", fd) ||
	    check_set(txn, "doomed", fd) || check_set(txn, "journal", fd))
		return 1;
	(void)count;
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return 0;
}

int index_check(const char *dir, char *why, size_t len)
{
	int p[2];
	char data[PATH_MAX];
	snprintf(data, sizeof(data), "%s/data.mdb", dir);
	if (access(data, F_OK) < 0)
		return 0; /* a new index */
	if (pipe(p) < 0)
		return -errno;
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(p[0]);
		close(p[1]);
		return -e;
	}
	if (pid == 0) {
		/* A damaged file may crash LMDB (an assertion, SIGBUS): in a
		 * child, that is an answer. No core dump: it would hold the
		 * index's pages. */
		struct rlimit no_core = {0, 0};
		setrlimit(RLIMIT_CORE, &no_core);
		/* Die of the signal, quietly (a sanitizer would report). */
		signal(SIGBUS, SIG_DFL);
		signal(SIGSEGV, SIG_DFL);
		signal(SIGABRT, SIG_DFL);
		close(p[0]);
		_exit(check_env(dir, p[1]));
	}
	close(p[1]);
	char msg[256];
	ssize_t n = 0, r;
	while ((size_t)n < sizeof(msg) - 1 &&
	       (r = read(p[0], msg + n, sizeof(msg) - 1 - (size_t)n)) > 0)
		n += r;
	msg[n > 0 ? n : 0] = '\0';
	close(p[0]);
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFSIGNALED(status))
		snprintf(why, len, "reading it crashed LMDB (signal %d)%s%s",
			 WTERMSIG(status), msg[0] ? ": " : "", msg);
	else
		snprintf(why, len, "%s", msg[0] ? msg : "it cannot be read");
	return -EUCLEAN;
}

struct node_walk {
	int (*fn)(void *arg, const struct node *n);
	void *arg;
};

static int node_step(void *ctx, const MDB_val *k, const MDB_val *v)
{
	struct node_walk *w = ctx;
	struct node n;
	if (k->mv_size != 8 || v->mv_size < sizeof(n.r))
		return -EUCLEAN;
	memcpy(&n.ino, k->mv_data, 8);
	memcpy(&n.r, v->mv_data, sizeof(n.r));
	size_t nl = v->mv_size - sizeof(n.r);
	if (nl > BACKEND_NAME_MAX)
		return -EUCLEAN;
	memcpy(n.name, (const char *)v->mv_data + sizeof(n.r), nl);
	n.name[nl] = '\0';
	return w->fn(w->arg, &n);
}

int ix_foreach_node(struct ixtxn *t, int (*fn)(void *arg, const struct node *n),
		    void *arg)
{
	struct node_walk w = {fn, arg};
	return ix_walk(t, t->ix->nodes, NULL, node_step, &w);
}

int ix_journal_restore(struct ixtxn *t, uint64_t seq, const void *val,
		       size_t len)
{
	if (t->err)
		return t->err;
	MDB_val k = ix_u64_val(&seq),
		v = {.mv_size = len, .mv_data = (void *)val};
	int rc =
		ix_sticky(t, ix_mdb_to_errno(mdb_put(t->txn, t->ix->journal, &k,
						     &v, MDB_NOOVERWRITE)));
	if (rc)
		return rc;
	uint64_t next = seq + 1, hw = 0;
	MDB_val mk = {.mv_size = 8, .mv_data = (void *)"next_seq"}, mv;
	if (mdb_get(t->txn, t->ix->meta, &mk, &mv) == MDB_SUCCESS &&
	    mv.mv_size == 8)
		memcpy(&hw, mv.mv_data, 8);
	if (hw >= next)
		return 0;
	mv.mv_size = 8;
	mv.mv_data = &next;
	return ix_sticky(
		t, ix_mdb_to_errno(mdb_put(t->txn, t->ix->meta, &mk, &mv, 0)));
}

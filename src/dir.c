/*
 * Directories (opendir, readdir from a snapshot of the entries), statfs, and
 * extended attributes (the user.huracanfs.* state of a file, and the user's
 * own).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs_i.h"
#include "hfs/category.h"
#include "hfs/fold.h"
#include "hfs/log.h"

/* ---- Directories ---- */

struct dirent_snap {
	uint64_t ino;
	char *name;
};

/*
 * The entries as they were at opendir, or at the last readdir from
 * offset 0 that found the directory changed since (or came after other
 * reads: a rewinddir), which takes them again: a rewound stream shows the
 * directory as it is now (POSIX rewinddir), as does a first read after
 * changes made through another descriptor.
 */
struct hfs_dir {
	uint64_t ino, parent;
	struct dirent_snap *e;
	size_t n, cap;
	int64_t ctime_ns; /* the directory's, at the snapshot */
	bool fresh; /* no readdir since the snapshot */
};

static int snap_child(void *arg, const char *name, uint64_t ino)
{
	struct hfs_dir *d = arg;
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 64;
		struct dirent_snap *ne = realloc(d->e, cap * sizeof(*ne));
		if (!ne)
			return -ENOMEM;
		d->e = ne;
		d->cap = cap;
	}
	d->e[d->n].name = strdup(name);
	if (!d->e[d->n].name)
		return -ENOMEM;
	d->e[d->n].ino = ino;
	d->n++;
	return 0;
}

void hfs_releasedir(struct hfs *fs, struct hfs_dir *dh)
{
	(void)fs;
	if (!dh)
		return;
	for (size_t i = 0; i < dh->n; i++)
		free(dh->e[i].name);
	free(dh->e);
	free(dh);
}

int hfs_opendir(struct hfs *fs, uint64_t ino, struct hfs_dir **out)
{
	int rc = fs_visit_dir(fs, ino, FS_VISIT_FRESH);
	if (rc)
		return rc;
	struct hfs_dir *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	struct ixtxn t;
	struct node n;
	rc = ix_begin(fs->ix, false, &t);
	if (rc)
		goto fail;
	rc = ix_get(&t, ino, &n);
	if (!rc && !S_ISDIR(n.r.mode))
		rc = -ENOTDIR;
	if (!rc)
		rc = ix_foreach_child(&t, ino, snap_child, d);
	ix_abort(&t);
	if (rc)
		goto fail;
	d->ino = ino;
	d->parent = n.r.parent ? n.r.parent : INDEX_ROOT_INO;
	d->ctime_ns = n.r.ctime_ns;
	d->fresh = true;
	*out = d;
	return 0;
fail:
	hfs_releasedir(fs, d);
	return rc;
}

int hfs_readdir(struct hfs *fs, struct hfs_dir *dh, uint64_t off, bool plus,
		hfs_fill_fn fill, void *ctx)
{
	struct ixtxn t;
	bool txn = false;
	int rc = 0;
	if (off == 0) {
		struct node d;
		rc = ix_begin(fs->ix, false, &t);
		if (rc)
			return rc;
		if (ix_get(&t, dh->ino, &d) == 0 &&
		    (!dh->fresh || d.r.ctime_ns != dh->ctime_ns)) {
			for (size_t i = 0; i < dh->n; i++)
				free(dh->e[i].name);
			dh->n = 0;
			dh->ctime_ns = d.r.ctime_ns;
			rc = ix_foreach_child(&t, dh->ino, snap_child, dh);
		}
		ix_abort(&t);
		if (rc)
			return rc;
	}
	dh->fresh = false;
	/* Offsets: 0 ".", 1 "..", 2 + i for entry i. */
	for (uint64_t pos = off; pos < dh->n + 2; pos++) {
		struct stat st;
		const char *name;
		memset(&st, 0, sizeof(st));
		struct node n;
		if (pos < 2) {
			name = pos == 0 ? "." : "..";
			st.st_ino = pos == 0 ? dh->ino : dh->parent;
			st.st_mode = S_IFDIR;
		} else {
			const struct dirent_snap *e = &dh->e[pos - 2];
			name = e->name;
			if (!txn) {
				rc = ix_begin(fs->ix, false, &t);
				if (rc)
					break;
				txn = true;
			}
			if (ix_get(&t, e->ino, &n))
				continue; /* removed since opendir */
			if (S_ISREG(n.r.mode) && plus)
				fs_overlay_live(fs, &n);
			hfs_fill_stat(&n, &st);
		}
		if (fill(ctx, name, &st, pos + 1, pos >= 2) > 0)
			break;
		if (plus && pos >= 2)
			fs_hnode_add_lookup(fs, st.st_ino);
	}
	if (txn)
		ix_abort(&t);
	return rc;
}

/* ---- statfs, xattrs ---- */

int hfs_statfs(struct hfs *fs, struct statvfs *st)
{
	if (statvfs(cache_dir(fs->cache), st) < 0)
		return -errno;
	st->f_namemax = BACKEND_NAME_MAX;
	return 0;
}

#define XA_PREFIX "user.huracanfs."

static const char *const xattr_names[] = {
	XA_PREFIX "state",	 XA_PREFIX "category",
	XA_PREFIX "rev",	 XA_PREFIX "content_hash",
	XA_PREFIX "next_upload", XA_PREFIX "last_error",
};

static const char *state_name(const struct node *n, bool dir)
{
	if (dir)
		return (n->r.flags & NODE_ON_REMOTE) ? "synced" : "local";
	if (n->r.flags & NODE_LOCAL)
		return "local"; /* never uploaded (docs/posix.md) */
	if (n->r.flags & NODE_LOST)
		return "lost";
	if (n->r.flags & NODE_UPLOADING)
		return "uploading";
	if (n->r.flags & NODE_DIRTY)
		return "dirty";
	if (n->r.flags & NODE_CACHED)
		return "cached";
	if (n->r.flags & NODE_PARTIAL)
		return "partial";
	return "remote";
}

ssize_t hfs_getxattr(struct hfs *fs, uint64_t ino, const char *name, char *buf,
		     size_t size)
{
	char val[256];
	struct node n;
	/* Before anything else: the kernel asks for security.capability
	 * on every write. Only the user namespace is stored (and of it only
	 * our names): security.*, system.* (POSIX ACLs) and trusted.* are
	 * not supported at all, which EOPNOTSUPP says, so that ls -l
	 * (libselinux, gnulib's file_has_acl) stops asking for
	 * security.selinux and system.posix_acl_access after the first file
	 * of the mount instead of a round trip for each. */
	if (strncmp(name, "user.", 5) != 0)
		return -EOPNOTSUPP;
	if (strncmp(name, XA_PREFIX, strlen(XA_PREFIX)) != 0)
		return -ENODATA;
	if (ino == HFS_TODAY_INO)
		return -ENODATA;
	int rc = fs_get_node(fs, ino, &n);
	if (rc)
		return rc;
	bool dir = S_ISDIR(n.r.mode);
	val[0] = '\0';
	const char *key = name + strlen(XA_PREFIX);
	if (strcmp(key, "control") == 0 && ino == INDEX_ROOT_INO) {
		snprintf(val, sizeof(val), "%s", fs->control_path);
	} else if (strcmp(key, "state") == 0) {
		snprintf(val, sizeof(val), "%s", state_name(&n, dir));
	} else if (strcmp(key, "category") == 0 && !dir) {
		int cat = hfs_classify(fs, ino);
		if (cat < 0)
			return cat;
		snprintf(val, sizeof(val), "%s", cat_name(cat));
	} else if (strcmp(key, "rev") == 0 && !dir) {
		if (!n.r.rev[0])
			return -ENODATA;
		snprintf(val, sizeof(val), "%s", n.r.rev);
	} else if (strcmp(key, "content_hash") == 0 && !dir) {
		if (!(n.r.flags & NODE_HAS_HASH))
			return -ENODATA;
		chash_to_hex(n.r.remote_hash, val);
	} else if (strcmp(key, "next_upload") == 0 && !dir) {
		int64_t next =
			fs->hooks.next_upload
				? fs->hooks.next_upload(fs->hooks.arg, ino)
				: 0;
		if (!next)
			return -ENODATA;
		struct tm tm;
		time_t tt = (time_t)next;
		gmtime_r(&tt, &tm);
		strftime(val, sizeof(val), "%Y-%m-%dT%H:%M:%SZ", &tm);
	} else if (strcmp(key, "last_error") == 0 && !dir) {
		pthread_mutex_lock(&fs->itab_lock);
		struct hnode *h = fs_itab_find(fs, ino);
		if (h)
			snprintf(val, sizeof(val), "%s", h->last_error);
		pthread_mutex_unlock(&fs->itab_lock);
		if (!val[0])
			return -ENODATA;
	} else {
		return -ENODATA;
	}
	size_t len = strlen(val);
	if (size == 0)
		return (ssize_t)len;
	if (size < len)
		return -ERANGE;
	memcpy(buf, val, len);
	return (ssize_t)len;
}

ssize_t hfs_listxattr(struct hfs *fs, uint64_t ino, char *buf, size_t size)
{
	struct node n;
	if (ino == HFS_TODAY_INO)
		return 0;
	int rc = fs_get_node(fs, ino, &n);
	if (rc)
		return rc;
	/* Only the attributes that have a value now, so that
	 * `getfattr -d` reads every name it is given. */
	bool has[sizeof(xattr_names) / sizeof(xattr_names[0])];
	size_t total = 0, count = sizeof(xattr_names) / sizeof(xattr_names[0]);
	for (size_t i = 0; i < count; i++) {
		has[i] = hfs_getxattr(fs, ino, xattr_names[i], NULL, 0) > 0;
		if (has[i])
			total += strlen(xattr_names[i]) + 1;
	}
	if (size == 0)
		return (ssize_t)total;
	if (size < total)
		return -ERANGE;
	size_t pos = 0;
	for (size_t i = 0; i < count; i++) {
		if (!has[i])
			continue;
		size_t l = strlen(xattr_names[i]) + 1;
		memcpy(buf + pos, xattr_names[i], l);
		pos += l;
	}
	return (ssize_t)total;
}

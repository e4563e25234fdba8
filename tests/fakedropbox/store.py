"""The fake's namespace: the App folder's tree, its revisions, change log,
cursors, file contents (blobs) and upload sessions.

Model
-----
* One namespace (the App folder). Root is the empty path "" and is not a
  node. Every node is keyed by its lowercased path (`path_lower`, lowered
  the way Dropbox lowers: `dbx_lower`) and keeps
  the case it was created with (`name`, `path_display`): lookups are
  case-insensitive, names case-preserving.
* Files have an immutable content blob (keyed by its Dropbox content hash,
  shared between identical files), a `rev` that changes on every write
  (and on move), `client_modified`/`server_modified` and a stable `id`.
* Every mutation appends `(seq, path_lower)` records to a change log, one
  per path touched (a recursive delete or a move logs every path below
  too). Cursors are stateless and opaque (base64 of a small JSON state +
  an HMAC): an initial listing pages by "last path_lower returned"; once
  complete, a cursor holds the sequence number `seq` and `continue`
  returns the current state (file/folder, or `deleted`) of every path in
  scope that changed after `seq`, oldest change first. Case-only renames
  (only possible through the control API, as from a desktop client) are
  not logged, as on Dropbox.
* Memory is bounded: blobs larger than MEM_BLOB_LIMIT (and all blobs when
  a state directory is used) live in files; upload-session data spools to
  temporary files; the change log, revision history and tombstones are
  capped (a cursor older than the kept log gets `reset`).

Locking: one RLock (`lock`) guards every structure; `cond` (on the same
lock) is notified on each change, for longpoll. Upload sessions also have
their own lock held while their data is written.
"""

import base64
import bisect
import collections
import hashlib
import hmac
import json
import os
import secrets
import shutil
import tempfile
import threading
import time

from .stone import ContentHasher, timestamp

MEM_BLOB_LIMIT = 256 * 1024
MEM_BLOB_TOTAL = 128 * 1024 * 1024
SESSION_SPOOL = 1024 * 1024
MAX_LOG = 1_000_000
MAX_REVS = 20_000
MAX_TOMBSTONES = 200_000
MAX_SESSION_SIZE = 2**41 - 2**22
RESERVED_NAMES = {'desktop.ini', 'thumbs.db', '.ds_store', 'icon\r', '.dropbox', '.dropbox.attr'}
MAX_NAME_LEN = 255
COPY_CHUNK = 1024 * 1024


def dbx_lower(s):
    """Dropbox's lowercase form of a name or path (`path_lower`).

    Dropbox lowers each character by its simple, one-to-one lowercase
    mapping, as Python 2's unicode.lower() did when Dropbox was written:
    without context (a final capital sigma becomes σ, not ς) and without
    expansion (İ becomes i, not i + combining dot above). Python 3's
    str.lower() applies both rules, so it is applied here per character,
    and of a character whose full mapping is longer the first code point
    is its simple mapping (U+0130 is the only such character). Dropbox's
    table is Unicode 4.1's; Python's (like libutf8proc's in the mount) is
    newer. Nothing is normalized: Dropbox documents no normalization.
    """
    if s.isascii():
        return s.lower()
    out = []
    for c in s:
        low = c.lower()
        out.append(low[0] if len(low) > 1 else low)
    return ''.join(out)


class Lookup(Exception):
    """A LookupError tag: malformed_path, not_found, not_file, not_folder."""

    def __init__(self, tagname):
        super().__init__(tagname)
        self.tag = tagname


class Write(Exception):
    """A WriteError union value (dict)."""

    def __init__(self, err):
        super().__init__(err['.tag'])
        self.err = err


class Reloc(Exception):
    """A RelocationError union value (dict)."""

    def __init__(self, err):
        super().__init__(err['.tag'])
        self.err = err


class Reset(Exception):
    """The cursor is invalid or too old."""


def conflict(kind):
    return {'.tag': 'conflict', 'conflict': {'.tag': kind}}


def parent_of(pl):
    return pl.rpartition('/')[0]


def structural_problem(path):
    """Problems that make any path malformed (reads and writes)."""
    if path == '':
        return None
    if not path.startswith('/'):
        return 'path must start with "/"'
    if path.endswith('/'):
        return 'trailing slash'
    for comp in path[1:].split('/'):
        if comp == '':
            return 'empty path component'
        if comp in ('.', '..'):
            return 'path component "%s"' % comp
    return None


def name_problem(name):
    """Rules for names being created. Returns a WriteError dict or None."""
    if ('\\' in name or '\x7f' in name or '\x00' in name or name[-1].isspace()
            or len(name) > MAX_NAME_LEN):
        return {'.tag': 'malformed_path'}
    if dbx_lower(name) in RESERVED_NAMES:
        return {'.tag': 'disallowed_name'}
    return None


class Node:
    __slots__ = ('tag', 'name', 'path_lower', 'path_display', 'id', 'rev', 'size',
                 'hash', 'client_modified', 'server_modified')

    def __init__(self, tag, path_display, id_, rev=None, size=0, hash_=None,
                 client_modified=None, server_modified=None):
        self.tag = tag
        self.path_display = path_display
        self.path_lower = dbx_lower(path_display)
        self.name = path_display.rpartition('/')[2]
        self.id = id_
        self.rev = rev
        self.size = size
        self.hash = hash_
        self.client_modified = client_modified
        self.server_modified = server_modified

    def set_path(self, path_display):
        self.path_display = path_display
        self.path_lower = dbx_lower(path_display)
        self.name = path_display.rpartition('/')[2]

    def meta(self, with_tag=True):
        d = {}
        if with_tag:
            d['.tag'] = self.tag
        d['name'] = self.name
        d['path_lower'] = self.path_lower
        d['path_display'] = self.path_display
        d['id'] = self.id
        if self.tag == 'file':
            d['client_modified'] = self.client_modified
            d['server_modified'] = self.server_modified
            d['rev'] = self.rev
            d['size'] = self.size
            d['is_downloadable'] = True
            d['content_hash'] = self.hash
        return d

    def to_json(self):
        return [self.tag, self.path_display, self.id, self.rev, self.size, self.hash,
                self.client_modified, self.server_modified]

    @classmethod
    def from_json(cls, a):
        return cls(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7])


def deleted_meta(path_display):
    return {'.tag': 'deleted', 'name': path_display.rpartition('/')[2],
            'path_lower': dbx_lower(path_display), 'path_display': path_display}


# --------------------------------------------------------------------------

class BlobStore:
    """Immutable file contents keyed by content hash, reference counted.

    Small blobs stay in memory (up to MEM_BLOB_TOTAL in all) unless
    `persistent`; the others are files named `<hash>.<random>`. A file is
    registered under the lock only after it is complete, and a release
    deletes exactly the file it unregistered, so adding and dropping the
    same content concurrently cannot lose data."""

    def __init__(self, directory, persistent):
        self.dir = directory
        self.persistent = persistent
        os.makedirs(directory, exist_ok=True)
        self.mem = {}
        self.mem_total = 0
        self.files = {}
        self.sizes = {}
        self.refs = collections.Counter()
        self.lock = threading.Lock()

    def add_stream(self, f, size, key):
        """Store `size` bytes read from file object `f` (positioned at the
        start) whose content hash is `key`; returns key with one reference
        owned by the caller."""
        with self.lock:
            if self.refs[key] > 0:
                self.refs[key] += 1
                return key
            in_mem = (not self.persistent and size <= MEM_BLOB_LIMIT
                      and self.mem_total + size <= MEM_BLOB_TOTAL)
            if in_mem:
                self.mem_total += size      # reserved
        if in_mem:
            data = f.read(size)
            path = None
        else:
            data = None
            path = os.path.join(self.dir, '%s.%s' % (key, secrets.token_hex(4)))
            with open(path, 'wb') as out:
                left = size
                while left:
                    chunk = f.read(min(COPY_CHUNK, left))
                    if not chunk:
                        raise IOError('short read while storing blob')
                    out.write(chunk)
                    left -= len(chunk)
        with self.lock:
            if self.refs[key] > 0:          # someone stored it meanwhile
                self.refs[key] += 1
                if in_mem:
                    self.mem_total -= size
                elif path:
                    os.unlink(path)
                return key
            if in_mem:
                self.mem[key] = data
            else:
                self.files[key] = path
            self.sizes[key] = size
            self.refs[key] = 1
        return key

    def add_bytes(self, data, key):
        import io
        return self.add_stream(io.BytesIO(data), len(data), key)

    def incref(self, key):
        with self.lock:
            self.refs[key] += 1

    def release(self, key):
        with self.lock:
            self.refs[key] -= 1
            if self.refs[key] > 0:
                return
            del self.refs[key]
            size = self.sizes.pop(key, 0)
            if self.mem.pop(key, None) is not None:
                self.mem_total -= size
                return
            path = self.files.pop(key, None)
            if path:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    def open(self, key):
        """A readable binary file object with the blob."""
        import io
        with self.lock:
            data = self.mem.get(key)
            path = self.files.get(key)
        if data is not None:
            return io.BytesIO(data)
        return open(path, 'rb')

    def read(self, key, start=0, length=None):
        with self.open(key) as f:
            f.seek(start)
            return f.read() if length is None else f.read(length)

    def load_files(self):
        """After loading state (refs filled in): adopt one file per
        referenced hash, delete every other file."""
        for fn in sorted(os.listdir(self.dir)):
            key = fn.split('.')[0]
            path = os.path.join(self.dir, fn)
            if key in self.refs and key not in self.files and '.tmp' not in fn:
                self.files[key] = path
                self.sizes[key] = os.path.getsize(path)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        missing = [k for k in self.refs if k not in self.files]
        if missing:
            raise IOError('state directory is missing %d blob files' % len(missing))


# --------------------------------------------------------------------------

class UploadSession:
    """Upload session data. Sequential: bytes 0..size. Concurrent: a set
    of (offset, length) pieces; `size` is known once closed."""

    def __init__(self, sid, stype, path=None):
        self.id = sid
        self.type = stype
        self.closed = False
        self.size = 0 if stype == 'sequential' else None
        self.pieces = []
        self.created = time.time()
        self.lock = threading.Lock()
        self.path = path
        if path:
            self.file = open(path, 'w+b')
        else:
            self.file = tempfile.SpooledTemporaryFile(max_size=SESSION_SPOOL)

    def write_at(self, offset, src, length):
        """Copy `length` bytes from file object `src` to `offset`."""
        self.file.seek(offset)
        left = length
        while left:
            chunk = src.read(min(COPY_CHUNK, left))
            if not chunk:
                raise IOError('short read')
            self.file.write(chunk)
            left -= len(chunk)
        self.file.flush()

    def received(self):
        return sum(n for _, n in self.pieces) if self.type == 'concurrent' else self.size

    def missing_data(self):
        """Concurrent sessions: True if the pieces leave a gap below size."""
        pos = 0
        for off, n in sorted(self.pieces):
            if off > pos:
                return True
            pos = max(pos, off + n)
        return pos < (self.size or 0)

    def overlaps(self, off, n):
        return any(off < o + m and o < off + n for o, m in self.pieces)

    def hash_and_rewind(self):
        """Content hash of the data; leaves the file at offset 0."""
        h = ContentHasher()
        self.file.seek(0)
        left = self.size
        while left:
            chunk = self.file.read(min(COPY_CHUNK, left))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
        self.file.seek(0)
        return h.hexdigest()

    def discard(self):
        try:
            self.file.close()
        except Exception:
            pass
        if self.path:
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def to_json(self):
        return {'id': self.id, 'type': self.type, 'closed': self.closed, 'size': self.size,
                'pieces': self.pieces, 'created': self.created}


# --------------------------------------------------------------------------

class Store:
    def __init__(self, config, state_dir=None):
        self.config = config
        self.state_dir = state_dir
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.dirty = False
        self._tmpdir = None
        if state_dir:
            os.makedirs(os.path.join(state_dir, 'sessions'), exist_ok=True)
            self.blobs = BlobStore(os.path.join(state_dir, 'blobs'), persistent=True)
        else:
            self._tmpdir = tempfile.mkdtemp(prefix='fakedropbox-')
            self.blobs = BlobStore(os.path.join(self._tmpdir, 'blobs'), persistent=False)
        self._clear()
        if state_dir and os.path.exists(self._state_file()):
            self._load()

    # ---------------------------------------------------------------- state

    def _clear(self):
        self.nodes = {}
        self._used = 0
        self.children = collections.defaultdict(set)
        self.by_id = {}
        self.revs = collections.OrderedDict()
        self.tombstones = collections.OrderedDict()
        self.log_seqs = []
        self.log_paths = []
        self.log_base = 0
        self.seq = 0
        self.rev_counter = 0
        self.epoch = secrets.token_hex(8)
        self.secret = secrets.token_bytes(16)
        self.sessions = {}
        self.jobs = {}

    def reset(self):
        """Empty namespace; every cursor, session and job becomes invalid."""
        with self.lock:
            for n in self.nodes.values():
                if n.tag == 'file':
                    self.blobs.release(n.hash)
            for snap in self.revs.values():
                self.blobs.release(snap['hash'])
            for s in self.sessions.values():
                s.discard()
            self._clear()
            self.dirty = True
            self.cond.notify_all()

    def close(self):
        with self.lock:
            if self.state_dir:
                self.save()
            for s in self.sessions.values():
                try:
                    s.file.close()
                except Exception:
                    pass
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def _state_file(self):
        return os.path.join(self.state_dir, 'state.json')

    def save(self):
        """Write state.json atomically (blobs and session files are already
        on disk in a state directory)."""
        if not self.state_dir:
            return
        with self.lock:
            state = {
                'version': 1,
                'nodes': [n.to_json() for n in self.nodes.values()],
                'revs': list(self.revs.values()),
                'tombstones': list(self.tombstones.items()),
                'log': [self.log_seqs, self.log_paths],
                'log_base': self.log_base,
                'seq': self.seq,
                'rev_counter': self.rev_counter,
                'epoch': self.epoch,
                'secret': self.secret.hex(),
                'sessions': [s.to_json() for s in self.sessions.values()],
                'jobs': self.jobs,
            }
            for s in self.sessions.values():
                try:
                    s.file.flush()
                except ValueError:
                    pass
            self.dirty = False
        tmp = self._state_file() + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(state, f)
        os.replace(tmp, self._state_file())

    def _load(self):
        with open(self._state_file()) as f:
            st = json.load(f)
        for a in st['nodes']:
            n = Node.from_json(a)
            self._insert(n)
            if n.tag == 'file':
                self.blobs.refs[n.hash] += 1
        for snap in st['revs']:
            self.revs[snap['rev']] = snap
            self.blobs.refs[snap['hash']] += 1
        self.tombstones = collections.OrderedDict((k, v) for k, v in st['tombstones'])
        self.log_seqs, self.log_paths = st['log']
        self.log_base = st['log_base']
        self.seq = st['seq']
        self.rev_counter = st['rev_counter']
        self.epoch = st['epoch']
        self.secret = bytes.fromhex(st['secret'])
        self.jobs = st.get('jobs', {})
        for sj in st['sessions']:
            path = os.path.join(self.state_dir, 'sessions', _safe(sj['id']))
            s = UploadSession.__new__(UploadSession)
            s.id, s.type, s.closed, s.size = sj['id'], sj['type'], sj['closed'], sj['size']
            s.pieces = [tuple(p) for p in sj['pieces']]
            s.created = sj['created']
            s.lock = threading.Lock()
            s.path = path
            s.file = open(path, 'r+b') if os.path.exists(path) else open(path, 'w+b')
            self.sessions[s.id] = s
        self.blobs.load_files()

    # -------------------------------------------------------------- helpers

    def _insert(self, n):
        if n.tag == 'file':
            self._used += n.size
        self.nodes[n.path_lower] = n
        self.children[parent_of(n.path_lower)].add(n.path_lower)
        self.by_id[n.id] = n.path_lower

    def _remove(self, pl):
        n = self.nodes.pop(pl)
        if n.tag == 'file':
            self._used -= n.size
        self.children[parent_of(pl)].discard(pl)
        self.children.pop(pl, None)
        self.by_id.pop(n.id, None)
        return n

    def _new_rev(self):
        self.rev_counter += 1
        return '%x%06x' % (0x5e0000000 + self.rev_counter, secrets.randbits(24))

    @staticmethod
    def _new_id():
        return 'id:' + secrets.token_urlsafe(16)

    def _changed(self, pl):
        self.seq += 1
        self.log_seqs.append(self.seq)
        self.log_paths.append(pl)
        if len(self.log_seqs) > MAX_LOG:
            cut = len(self.log_seqs) - MAX_LOG // 2
            self.log_base = self.log_seqs[cut - 1]
            del self.log_seqs[:cut]
            del self.log_paths[:cut]
        self.dirty = True
        self.cond.notify_all()

    def _tombstone(self, n):
        self.tombstones.pop(n.path_lower, None)
        self.tombstones[n.path_lower] = n.path_display
        while len(self.tombstones) > MAX_TOMBSTONES:
            self.tombstones.popitem(last=False)

    def _record_rev(self, n):
        self.revs[n.rev] = {'rev': n.rev, 'path_display': n.path_display, 'id': n.id,
                            'size': n.size, 'hash': n.hash,
                            'client_modified': n.client_modified,
                            'server_modified': n.server_modified}
        self.blobs.incref(n.hash)
        while len(self.revs) > MAX_REVS:
            _, old = self.revs.popitem(last=False)
            self.blobs.release(old['hash'])

    def subtree(self, pl):
        """Path_lowers of pl and everything below it, parents first."""
        out = [pl]
        i = 0
        while i < len(out):
            out.extend(sorted(self.children.get(out[i], ())))
            i += 1
        return out

    def used(self):
        return self._used

    # ------------------------------------------------------------ resolving

    def expand_id(self, path):
        """`id:xxx[/rest]` -> display path; raises Lookup(not_found)."""
        ident, slash, rest = path.partition('/')
        base = self.by_id.get(ident)
        if base is None:
            raise Lookup('not_found')
        disp = self.nodes[base].path_display
        return disp + slash + rest if rest else disp

    def normalize(self, path):
        """A request path -> display path ("" for root). Raises Lookup."""
        with self.lock:
            if path.startswith('ns:'):
                raise Lookup('not_found')
            if path.startswith('id:'):
                rest = path.partition('/')[2]
                if structural_problem('/' + rest if rest else ''):
                    raise Lookup('malformed_path')
                return self.expand_id(path)
            if structural_problem(path):
                raise Lookup('malformed_path')
            return path

    def lookup(self, path):
        """Node at a read path (path, id:, rev:); None for the root."""
        with self.lock:
            if path.startswith('rev:'):
                snap = self.revs.get(path[4:])
                if snap is None:
                    raise Lookup('not_found')
                return self._rev_node(snap)
            disp = self.normalize(path)
            if disp == '':
                return None
            n = self.nodes.get(dbx_lower(disp))
            if n is None:
                raise Lookup('not_found')
            return n

    def _rev_node(self, snap):
        return Node('file', snap['path_display'], snap['id'], snap['rev'], snap['size'],
                    snap['hash'], snap['client_modified'], snap['server_modified'])

    def lookup_rev(self, rev):
        with self.lock:
            snap = self.revs.get(rev)
            if snap is None:
                raise Lookup('not_found')
            return self._rev_node(snap)

    def deleted_at(self, path):
        """Display path of a tombstone at `path`, or None."""
        with self.lock:
            try:
                disp = self.normalize(path)
            except Lookup:
                return None
            return self.tombstones.get(dbx_lower(disp))

    # --------------------------------------------------------------- writes

    def _write_target(self, path):
        """Resolve a write path (path or id:) to its display form; raises
        Write(malformed_path) for bad syntax or an unknown id."""
        if path.startswith('ns:'):
            raise Write({'.tag': 'malformed_path'})
        if path.startswith('id:'):
            rest = path.partition('/')[2]
            if rest and structural_problem('/' + rest):
                raise Write({'.tag': 'malformed_path'})
            try:
                return self.expand_id(path)
            except Lookup:
                raise Write({'.tag': 'malformed_path'})
        if path == '' or structural_problem(path):
            raise Write({'.tag': 'malformed_path'})
        return path

    def _plan_parents(self, disp):
        """Check the ancestors of display path `disp`. Returns (parent
        display path in stored case, [display paths of folders to create]).
        Raises Write for a file ancestor or a bad new name."""
        comps = disp[1:].split('/')[:-1]
        cur_disp = ''
        create = []
        for c in comps:
            cand = cur_disp + '/' + c
            n = self.nodes.get(dbx_lower(cand)) if not create else None
            if n is None:
                err = name_problem(c)
                if err:
                    raise Write(err)
                create.append(cand)
                cur_disp = cand
            elif n.tag == 'file':
                raise Write(conflict('file_ancestor'))
            else:
                cur_disp = n.path_display
        return cur_disp, create

    def _make_folders(self, paths):
        for p in paths:
            n = Node('folder', p, self._new_id())
            self.tombstones.pop(n.path_lower, None)
            self._insert(n)
            self._changed(n.path_lower)

    def _autorename(self, parent_disp, name, update_mode=False):
        stem, ext = _splitext(name)
        if update_mode:
            base = '%s (conflicted copy %s)' % (stem, time.strftime('%Y-%m-%d', time.gmtime()))
            cand = base + ext
            if dbx_lower(parent_disp + '/' + cand) not in self.nodes:
                return cand
            stem = base
        i = 1
        while True:
            cand = '%s (%d)%s' % (stem, i, ext)
            if dbx_lower(parent_disp + '/' + cand) not in self.nodes:
                return cand
            i += 1

    def commit_file(self, path, blob_key, size, mode=('add', None), autorename=False,
                    client_modified=None, strict_conflict=False):
        """Write a file whose content is blob `blob_key` (one reference owned
        by the caller, always consumed). Returns the Node. Raises Write."""
        consumed = False
        try:
            with self.lock:
                disp = self._write_target(path)
                parent_disp, create = self._plan_parents(disp)
                name = disp.rpartition('/')[2]
                disp = parent_disp + '/' + name
                existing = self.nodes.get(dbx_lower(disp))
                if existing is None:
                    err = name_problem(name)
                    if err:
                        raise Write(err)
                mtag, mrev = mode
                kind = None
                if existing is not None and existing.tag == 'folder':
                    kind = 'folder'
                elif existing is not None:
                    same = existing.hash == blob_key
                    if mtag == 'add':
                        if same and not strict_conflict:
                            return existing
                        kind = 'file'
                    elif mtag == 'overwrite':
                        if same:
                            return existing
                    else:  # update
                        if existing.rev == mrev:
                            if same:
                                return existing
                        elif same and not strict_conflict:
                            return existing
                        else:
                            kind = 'file'
                elif mtag == 'update' and strict_conflict:
                    kind = 'file'
                if kind is not None:
                    if not autorename:
                        raise Write(conflict(kind))
                    name = self._autorename(parent_disp, name, update_mode=(mtag == 'update'))
                    disp = parent_disp + '/' + name
                    existing = None
                replaced = existing.size if existing is not None else 0
                if self.used() - replaced + size > self.config['allocated']:
                    raise Write({'.tag': 'insufficient_space'})
                self._make_folders(create)
                now = timestamp()
                if existing is not None:
                    old_hash = existing.hash
                    existing.rev = self._new_rev()
                    self._used += size - existing.size
                    existing.size = size
                    existing.hash = blob_key
                    existing.client_modified = client_modified or now
                    existing.server_modified = now
                    consumed = True
                    self.blobs.release(old_hash)
                    n = existing
                else:
                    n = Node('file', disp, self._new_id(), self._new_rev(), size, blob_key,
                             client_modified or now, now)
                    consumed = True
                    self.tombstones.pop(n.path_lower, None)
                    self._insert(n)
                self._record_rev(n)
                self._changed(n.path_lower)
                return n
        finally:
            if not consumed:
                self.blobs.release(blob_key)

    def create_folder(self, path, autorename=False):
        with self.lock:
            disp = self._write_target(path)
            parent_disp, create = self._plan_parents(disp)
            name = disp.rpartition('/')[2]
            disp = parent_disp + '/' + name
            existing = self.nodes.get(dbx_lower(disp))
            if existing is not None:
                if not autorename:
                    raise Write(conflict(existing.tag))
                name = self._autorename(parent_disp, name)
                disp = parent_disp + '/' + name
            err = name_problem(name)
            if err:
                raise Write(err)
            self._make_folders(create + [disp])
            return self.nodes[dbx_lower(disp)]

    def delete(self, path, parent_rev=None):
        """Returns the metadata the item had. Raises ('path_lookup', Lookup)
        or ('path_write', Write) as DeleteError tuples."""
        with self.lock:
            try:
                if path.startswith('ns:'):
                    raise Lookup('not_found')
                if path == '' or (not path.startswith('id:') and structural_problem(path)):
                    raise Lookup('malformed_path')
                n = self.lookup(path)
            except Lookup as e:
                raise DeleteFailed('path_lookup', {'.tag': e.tag})
            if parent_rev is not None:
                if n.tag != 'file':
                    raise DeleteFailed('path_lookup', {'.tag': 'not_file'})
                if n.rev != parent_rev:
                    raise DeleteFailed('path_write', conflict('file'))
            meta = n.meta()
            self._delete_subtree(n.path_lower)
            return meta

    def _delete_subtree(self, pl):
        for p in reversed(self.subtree(pl)):
            n = self._remove(p)
            if n.tag == 'file':
                self.blobs.release(n.hash)
            self._tombstone(n)
            self._changed(p)

    def relocate(self, from_path, to_path, copy=False, autorename=False, case_rename=False):
        """move_v2 / copy_v2. Returns the Node at the destination. Raises
        Reloc with a RelocationError. `case_rename` lets the control API
        rename case-only like a desktop client (not logged, as on Dropbox)."""
        with self.lock:
            try:
                if from_path.startswith('ns:'):
                    raise Lookup('not_found')
                if not from_path.startswith('id:') and structural_problem(from_path):
                    raise Lookup('malformed_path')
                src = self.lookup(from_path)
            except Lookup as e:
                raise Reloc({'.tag': 'from_lookup', 'from_lookup': {'.tag': e.tag}})
            try:
                disp = self._write_target(to_path)
                parent_disp, create = self._plan_parents(disp)
            except Write as e:
                raise Reloc({'.tag': 'to', 'to': e.err})
            name = disp.rpartition('/')[2]
            disp = parent_disp + '/' + name
            dl = dbx_lower(disp)
            if dl == src.path_lower:
                if copy:
                    raise Reloc({'.tag': 'to', 'to': conflict(src.tag)})
                if case_rename and disp != src.path_display:
                    self._rename_case(src, disp)
                # move_v2 accepts a case-only rename but changes nothing.
                return src
            if src.tag == 'folder' and dl.startswith(src.path_lower + '/'):
                raise Reloc({'.tag': 'cant_move_folder_into_itself'})
            existing = self.nodes.get(dl)
            if existing is not None:
                if not autorename:
                    raise Reloc({'.tag': 'to', 'to': conflict(existing.tag)})
                name = self._autorename(parent_disp, name)
                disp = parent_disp + '/' + name
                dl = dbx_lower(disp)
            err = name_problem(name)
            if err:
                raise Reloc({'.tag': 'to', 'to': err})
            paths = self.subtree(src.path_lower)
            if len(paths) > self.config['max_relocation_entries']:
                raise Reloc({'.tag': 'too_many_files'})
            if copy:
                add = sum(self.nodes[p].size for p in paths if self.nodes[p].tag == 'file')
                if self.used() + add > self.config['allocated']:
                    raise Reloc({'.tag': 'insufficient_quota'})
            self._make_folders(create)
            old_root = src.path_lower
            nodes = [self.nodes[p] for p in paths]
            if not copy:
                for p in reversed(paths):
                    n = self._remove(p)
                    self._tombstone(n)
                    self._changed(p)
            for n in nodes:
                new_disp = disp + n.path_display[len(old_root):]
                if copy:
                    m = Node(n.tag, new_disp, self._new_id(), size=n.size, hash_=n.hash,
                             client_modified=n.client_modified, server_modified=timestamp())
                    if m.tag == 'file':
                        self.blobs.incref(m.hash)
                else:
                    m = n
                    m.set_path(new_disp)
                if m.tag == 'file':
                    m.rev = self._new_rev()
                    self._record_rev(m)
                self.tombstones.pop(m.path_lower, None)
                self._insert(m)
                self._changed(m.path_lower)
            return self.nodes[dl]

    def _rename_case(self, src, disp):
        old_disp = src.path_display
        for p in self.subtree(src.path_lower):
            n = self.nodes[p]
            n.set_path(disp + n.path_display[len(old_disp):])
        self.dirty = True

    # -------------------------------------------------------------- listing

    def _in_scope(self, pl, fp, recursive):
        if recursive:
            return fp == '' or pl == fp or pl.startswith(fp + '/')
        return parent_of(pl) == fp

    def folder_for_listing(self, path):
        """Display path of the folder to list ("" = root). Raises Lookup."""
        with self.lock:
            disp = self.normalize(path)
            if disp == '':
                return ''
            n = self.nodes.get(dbx_lower(disp))
            if n is None:
                raise Lookup('not_found')
            if n.tag != 'folder':
                raise Lookup('not_folder')
            return n.path_display

    def list_page(self, fp, recursive, include_deleted, after, limit):
        """One page of an initial listing. Returns (entries, last_key, more)."""
        with self.lock:
            if fp and fp not in self.nodes:
                raise Lookup('not_found')
            if recursive:
                if fp == '':
                    keys = list(self.nodes)
                else:
                    keys = [pl for pl in self.nodes if pl == fp or pl.startswith(fp + '/')]
            else:
                keys = list(self.children.get(fp, ()))
            if include_deleted:
                keys += [pl for pl in self.tombstones
                         if pl not in self.nodes and self._in_scope(pl, fp, recursive)]
            keys.sort()
            if after is not None:
                keys = keys[bisect.bisect_right(keys, after):]
            page = keys[:limit]
            entries = [self.nodes[pl].meta() if pl in self.nodes
                       else deleted_meta(self.tombstones[pl]) for pl in page]
            return entries, (page[-1] if page else after), len(keys) > limit

    def changes(self, fp, recursive, since, limit):
        """Changes in scope after `since`. Returns (entries, new_seq, more)."""
        with self.lock:
            if since < self.log_base:
                raise Reset()
            i = bisect.bisect_right(self.log_seqs, since)
            last = {}
            for s, pl in zip(self.log_seqs[i:], self.log_paths[i:]):
                if self._in_scope(pl, fp, recursive):
                    last[pl] = s
            items = sorted(last.items(), key=lambda kv: kv[1])
            page = items[:limit]
            more = len(items) > limit
            entries = []
            for pl, _ in page:
                n = self.nodes.get(pl)
                if n is not None:
                    entries.append(n.meta())
                else:
                    entries.append(deleted_meta(self.tombstones.get(pl, pl)))
            new_seq = page[-1][1] if more else self.seq
            return entries, new_seq, more

    def has_changes(self, fp, recursive, since):
        with self.lock:
            if since < self.log_base:
                raise Reset()
            i = bisect.bisect_right(self.log_seqs, since)
            return any(self._in_scope(pl, fp, recursive) for pl in self.log_paths[i:])

    # -------------------------------------------------------------- cursors

    def make_cursor(self, fp, recursive, include_deleted, limit, seq, after, done):
        st = {'e': self.epoch, 'p': dbx_lower(fp), 'r': recursive, 'd': include_deleted,
              'l': limit, 's': seq, 'a': after, 'c': done}
        raw = json.dumps(st, separators=(',', ':')).encode('utf-8')
        mac = hmac.new(self.secret, raw, hashlib.sha256).digest()[:12]
        return base64.urlsafe_b64encode(mac + raw).decode('ascii').rstrip('=')

    def parse_cursor(self, cursor):
        try:
            blob = base64.urlsafe_b64decode(cursor + '=' * (-len(cursor) % 4))
            mac, raw = blob[:12], blob[12:]
            if not hmac.compare_digest(mac, hmac.new(self.secret, raw, hashlib.sha256).digest()[:12]):
                raise Reset()
            st = json.loads(raw)
        except (ValueError, TypeError, UnicodeDecodeError):
            raise Reset()
        if st.get('e') != self.epoch:
            raise Reset()
        if st['s'] < self.log_base:
            raise Reset()
        return st

    def invalidate_cursors(self):
        with self.lock:
            self.epoch = secrets.token_hex(8)
            self.dirty = True
            self.cond.notify_all()

    # ------------------------------------------------------------- sessions

    def new_session(self, stype):
        with self.lock:
            sid = 'pid_upload_session:' + secrets.token_urlsafe(24)
            path = os.path.join(self.state_dir, 'sessions', _safe(sid)) if self.state_dir else None
            s = UploadSession(sid, stype, path)
            self.sessions[sid] = s
            self.dirty = True
            return s

    def get_session(self, sid):
        with self.lock:
            s = self.sessions.get(sid)
            if s is None:
                return None
            if time.time() - s.created > self.config['session_ttl']:
                del self.sessions[sid]
                s.discard()
                return None
            return s

    def drop_session(self, sid):
        with self.lock:
            s = self.sessions.pop(sid, None)
            self.dirty = True
        if s is not None:
            s.discard()

    def expire_sessions(self):
        with self.lock:
            for s in self.sessions.values():
                s.discard()
            self.sessions.clear()
            self.dirty = True

    # ----------------------------------------------------------- inspection

    def tree(self):
        with self.lock:
            return [self.nodes[pl].meta() for pl in sorted(self.nodes)]


class DeleteFailed(Exception):
    def __init__(self, tagname, value):
        super().__init__(tagname)
        self.err = {'.tag': tagname, tagname: value}


def _splitext(name):
    dot = name.rfind('.')
    if dot <= 0:
        return name, ''
    return name[:dot], name[dot:]


def _safe(sid):
    return hashlib.sha256(sid.encode()).hexdigest()[:32]

#!/usr/bin/python3
"""Crash soak: a trainer-like workload on a huracanfs mount while the
daemon is killed with SIGKILL at random moments and the (fake) Dropbox
misbehaves; at the end every file's remote bytes must equal the last bytes
written locally, and nothing deleted may come back.

    /usr/bin/python3 tests/soak/soak.py --seconds N [--seed S]
        [--backend dropbox|local] [--workdir D] [--keep]

What it does
  * starts the fake Dropbox (tests/fakedropbox) in process, over HTTPS
    with a throw-away CA, and mounts huracanfs on it (short intervals,
    1-3 s; dir_cache_seconds 2 so listings are merged with the remote all
    the time); with --backend local the remote is a directory;
  * runs four worker threads, each in its own subtree of the mount (so
    each owns an exact model of its files): a logger (JSON/log appends,
    a log held open and appended for a while, rotations, deletes), a model
    saver (whole rewrites with O_TRUNC, tmp + fsync + rename-over saves,
    mmap rewrites, pwrites, truncates, run folders renamed and deleted), a
    candle writer (files of 1-6 MiB and now and then 17-20 MiB, written by
    Python or by `cp`/`dd` child processes, rewritten, appended, deleted,
    their folders renamed) and a namespace shaker (mkdir, renames of files
    and directories, also over existing targets, unlinks, rmdir, trees
    removed and names re-created);
  * kills the daemon (pid from `huracanfs status --json`) with SIGKILL at
    random moments, lazily unmounts the dead mount (fusermount3 -uz),
    mounts again on the same cache directory and carries on;
  * injects random bounded faults into the fake: 429 with Retry-After
    (too_many_requests and too_many_write_operations), 5xx, connections
    dropped mid-body in both directions (request bodies cut, replies cut
    or lost after the request took effect), slow and throttled replies,
    409 too_many_write_operations (also per batch entry), short outages
    (refused, closed and hanging connections). With --backend local the
    remote directory is taken away for short outages instead;
  * at the end: faults off, `huracanfs flush --wait`, the whole mount read
    back and compared with the model, unmount, and the remote (the fake's
    store under /Huracan, or the remote directory) compared with the
    model: same files with the same bytes, the same folders, nothing else.

The durability rule (what the model accepts)
  The contract: bytes written to a file and then closed or fsync'd survive
  kill -9; bytes of a file still open for writing at the kill may be
  partially lost; an operation the daemon acknowledged (mkdir, rename,
  unlink, a successful close) stays done. The model follows it exactly:
  * an operation that returned success before the kill is done: the model
    holds its result, and after the remount the mount must show it;
  * an operation cut by the kill (it was running, it failed because the
    daemon died) may have happened or not: both the state before it and
    the state after it are accepted, and for the bytes of a write that
    was cut, any state the lost pages can give: a prefix of the new bytes
    with lost pages read as zeros (O_TRUNC rewrites, creates, appends on
    top of the old bytes), or for writes into the middle of a file
    (pwrite, mmap, truncate) every byte either old, new or zero;
  * a file held open across several appends: what was written since its
    last fsync or close is pending; after a kill the file must hold its
    durable bytes followed by a prefix of the pending ones (lost pages as
    zeros).
  Workers only start operations while the mount is up: the killer closes
  a gate, kills, waits for the operations in flight to fail, unmounts,
  mounts again and reopens the gate, so no operation ever lands in the
  bare mountpoint directory. After every remount each worker reads its
  whole subtree back and checks it against the accepted states (so every
  kill also checks that everything closed before it survived); what it
  finds becomes the model from then on. The final comparison is exact.

It prints the counts (operations, kills, faults injected and fired, files
and bytes verified, mismatches) and exits 1 on any mismatch, any
unexpected error of an operation, a hung operation, a daemon that died by
itself, an [error] line in the daemon log, a sanitizer report, or a final
flush that fails; 0 otherwise.
"""

import argparse
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS / 'integration'))

from hfsutil import (FUSERMOUNT, SANITIZER_PATTERNS,  # noqa: E402
                     build_config, is_mounted, pid_alive, write_private)

ROOT = '/Huracan'
TOKEN = 'fake-static-token'
DIR = 'DIR'            # the model's value of a directory
KiB = 1024
MiB = 1024 * 1024

INTERVALS = {'learning': 1, 'logs': 1, 'models': 3, 'data_cache': 3,
             'new_data': 2, 'other': 1}
HUNG_AFTER = 120       # s: an operation running longer is a hung mount
CMD_TIMEOUT = 60


class Interrupted(Exception):
    """The operation or check did not complete because of a kill."""


class Fatal(Exception):
    """A worker cannot go on."""


# ---------------------------------------------------------------- helpers

def write_all(fd, data, rng=None, max_chunk=None):
    """Writes all of data, in chunks of random (unaligned) sizes."""
    view = memoryview(data)
    off = 0
    while off < len(view):
        n = len(view) - off
        if rng is not None and max_chunk:
            n = min(n, rng.randint(1, max_chunk))
        off += os.write(fd, view[off:off + n])


def read_file(path):
    with open(path, 'rb') as f:
        return f.read()


def partial_tail_ok(obs, base, tail):
    """obs = base + a prefix of tail in which lost pages read as zeros."""
    if not isinstance(obs, bytes) or not obs.startswith(base):
        return False
    x = obs[len(base):]
    if len(x) > len(tail):
        return False
    return zero_or_equal(x, tail[:len(x)])


def zero_or_equal(x, t):
    if x == t:
        return True
    step = 4096
    for i in range(0, len(x), step):
        a, b = x[i:i + step], t[i:i + step]
        if a == b or a.count(0) == len(a):
            continue
        if any(u != v and u != 0 for u, v in zip(a, b)):
            return False
    return True


def mix_ok(obs, old, new):
    """Every byte of obs is the old byte, the new byte or zero (writes into
    the middle of a file cut by a kill)."""
    if not isinstance(obs, bytes):
        return False
    if len(obs) > max(len(old), len(new)):
        return False
    if obs == new or obs == old:
        return True
    step = 4096
    for i in range(0, len(obs), step):
        a = obs[i:i + step]
        n = new[i:i + step]
        o = old[i:i + step]
        if a == n[:len(a)] or a == o[:len(a)] or a.count(0) == len(a):
            continue
        for j, u in enumerate(a):
            k = i + j
            if u == 0:
                continue
            if k < len(new) and new[k] == u:
                continue
            if k < len(old) and old[k] == u:
                continue
            return False
    return True


def allowed(obs, rule):
    kind = rule[0]
    if kind == 'tail':
        return partial_tail_ok(obs, rule[1], rule[2])
    if kind == 'mix':
        return mix_ok(obs, rule[1], rule[2])
    raise ValueError(kind)


def apply_changes(model, changes):
    new = dict(model)
    for k, v in changes.items():
        if v is None:
            new.pop(k, None)
        else:
            new[k] = v
    return new


def under(k, top):
    return k == top or k.startswith(top + '/')


def rename_changes(model, src, dst):
    """The changes of rename(src, dst) (a file or a whole directory; an
    existing dst file or empty directory is replaced)."""
    ch = {}
    moved = {k: v for k, v in model.items() if under(k, src)}
    for k in moved:
        ch[k] = None
    for k in [k for k in model if under(k, dst)]:
        ch.setdefault(k, None)
    for k, v in moved.items():
        ch[dst + k[len(src):]] = v
    return ch


def describe(v):
    if v is None:
        return 'absent'
    if v == DIR:
        return 'dir'
    if isinstance(v, bytes):
        return '%d bytes' % len(v)
    return repr(v)


def diff_text(obs, cand, allow, limit=8):
    msgs = []
    for k in sorted(set(obs) | set(cand)):
        o, c = obs.get(k), cand.get(k)
        if o == c:
            continue
        if k in allow and isinstance(c, bytes) and allowed(o, allow[k]):
            continue
        extra = ''
        if isinstance(o, bytes) and isinstance(c, bytes):
            n = min(len(o), len(c))
            first = next((i for i in range(n) if o[i] != c[i]), n)
            extra = ' (first difference at byte %d)' % first
        msgs.append('%s: found %s, expected %s%s'
                    % (k, describe(o), describe(c), extra))
    more = len(msgs) - limit
    return '; '.join(msgs[:limit]) + ('; ... %d more' % more if more > 0
                                      else '')


def mmap_pieces(size, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(rng.randint(1, 8)):
        off = rng.randrange(0, size)
        out.append((off, rng.randbytes(min(size - off,
                                           rng.randint(1, 64 * KiB)))))
    return out


MMAP_CHILD = r"""
import mmap, os, random, sys
sys.path.insert(0, %r)
from soak import mmap_pieces
path, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
os.ftruncate(fd, size)
m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
for off, data in mmap_pieces(size, seed):
    m[off:off + len(data)] = data
m.flush()
m.close()
os.close(fd)
print('ok')
""" % str(HERE)


def json_line(rng, i):
    return (json.dumps({'ts': time.time(), 'step': i,
                        'loss': round(rng.random(), 6),
                        'reward': round(rng.uniform(-5, 5), 4),
                        'note': 'x' * rng.randint(0, 200)}) + '\n').encode()


# ------------------------------------------------------------------ gate

class Gate:
    """Workers enter it for each operation; the killer closes it before a
    kill and opens it again once the mount is back, so no operation runs
    while the mountpoint is not our mount."""

    def __init__(self):
        self.cv = threading.Condition()
        self.is_open = True
        self.active = 0
        self.kill_gen = 0

    def enter(self, stop=None):
        with self.cv:
            while not self.is_open:
                self.cv.wait(0.5)
            self.active += 1
            return self.kill_gen

    def leave(self):
        with self.cv:
            self.active -= 1
            self.cv.notify_all()

    def close_for_kill(self):
        with self.cv:
            self.is_open = False
            self.kill_gen += 1

    def wait_drained(self, timeout):
        deadline = time.monotonic() + timeout
        with self.cv:
            while self.active:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cv.wait(min(left, 0.2))
            return True

    def reopen(self):
        with self.cv:
            self.is_open = True
            self.cv.notify_all()


# ----------------------------------------------------------------- mount

class Mount:
    """One cache directory mounted again and again on one mountpoint."""

    def __init__(self, binary, base, config_text):
        self.bin = binary
        self.base = Path(base)
        self.mnt = self.base / 'mnt'
        self.cache = self.base / 'cache'
        self.config = self.base / 'config.yaml'
        self.log = self.base / 'daemon.log'
        self.stderr = self.base / 'mount.stderr'
        self.mnt.mkdir(parents=True, exist_ok=True)
        write_private(self.config, config_text)
        self.pid = None
        self.mounts = 0

    def env(self):
        env = dict(os.environ)
        env.pop('HURACANFS_DROPBOX_TOKEN', None)
        san = 'log_path=%s' % (self.base / 'sanitizer')
        for var in ('ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LSAN_OPTIONS'):
            env[var] = (env[var] + ':' + san) if env.get(var) else san
        return env

    def run(self, *args, timeout=CMD_TIMEOUT):
        r = subprocess.run([self.bin] + [str(a) for a in args],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=self.env(),
                           timeout=timeout)
        return (r.returncode, r.stdout.decode('utf-8', 'replace'),
                r.stderr.decode('utf-8', 'replace'))

    def start(self):
        """Mounts; returns None or the reason it failed."""
        with open(self.stderr, 'ab') as err, \
                open(self.base / 'mount.stdout', 'ab') as out:
            p = subprocess.Popen([self.bin, 'mount', str(self.mnt),
                                  '--config', str(self.config)],
                                 stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=err, env=self.env(),
                                 cwd=str(self.base))
            try:
                rc = p.wait(timeout=CMD_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                return 'huracanfs mount did not return within %d s' \
                    % CMD_TIMEOUT
        if rc != 0:
            return 'huracanfs mount exited %d: %s' % (
                rc, self.stderr.read_text(errors='replace')[-500:])
        if not is_mounted(self.mnt):
            return 'huracanfs mount exited 0 but nothing is mounted'
        self.pid = None
        pid = self.status_pid()
        if not pid:
            return 'huracanfs status --json gave no pid after mount'
        self.pid = pid
        self.mounts += 1
        return None

    def status(self, timeout=CMD_TIMEOUT):
        rc, out, err = self.run('status', self.mnt, '--json',
                                timeout=timeout)
        if rc != 0:
            raise RuntimeError('huracanfs status exited %d: %s'
                               % (rc, err.strip()))
        return json.loads(out)

    def status_pid(self):
        try:
            pid = self.status().get('pid')
        except Exception:
            return None
        return pid if isinstance(pid, int) and pid_alive(pid) else None

    def fusermount(self, lazy):
        return subprocess.run([FUSERMOUNT, '-uz' if lazy else '-u',
                               str(self.mnt)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=CMD_TIMEOUT)

    def unmount(self, timeout):
        """fusermount3 -u, then waits for the daemon to exit. Returns None
        or a problem."""
        pid = self.pid
        deadline = time.monotonic() + 10
        while True:
            r = self.fusermount(False)
            if r.returncode == 0 or not is_mounted(self.mnt):
                break
            if b'busy' not in r.stderr or time.monotonic() > deadline:
                return 'fusermount3 -u failed: %s' % r.stderr.decode(
                    errors='replace').strip()
            time.sleep(0.2)
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() > deadline:
                return 'daemon %d still running %d s after unmount' % (
                    pid, timeout)
            time.sleep(0.1)
        self.pid = None
        return None

    def log_text(self):
        try:
            return self.log.read_text(errors='replace')
        except FileNotFoundError:
            return ''


# --------------------------------------------------------------- workers

class Worker(threading.Thread):
    """Owns the subtree `root` of the mount and an exact model of it:
    {relative path: bytes | DIR}."""

    SLEEP = (0.0, 0.03)

    def __init__(self, soak, name, root, seed):
        super().__init__(name='soak-' + name, daemon=True)
        self.s = soak
        self.root = root
        self.rng = random.Random(seed)
        self.model = {}
        self.held = {}          # rel -> {'fd', 'pending', 'trying'}
        self.held_allow = {}    # rel -> rule, for pending bytes of a kill
        self.cands = None       # [(model, allow)] after a cut operation
        self.need_verify = False
        self.last_gen = 0
        self.cur = None         # (description, start) of the operation
        self.stopping = False
        self.dead = None
        self.counter = 0
        self.setup_done = False
        self.staging = os.path.join(soak.workdir, 'staging-%s.bin' % name)

    # -- paths
    def p(self, rel):
        return os.path.join(self.s.mount.mnt, rel)

    def exists(self, rel):
        return rel in self.model

    def files(self, top=None):
        top = top or self.root
        return sorted(k for k, v in self.model.items()
                      if v != DIR and under(k, top))

    def dirs(self, top=None):
        top = top or self.root
        return sorted(k for k, v in self.model.items()
                      if v == DIR and under(k, top))

    # -- the operation primitive
    def op(self, desc, fn, changes, allow=None):
        """Runs fn() (syscalls on the mount) as one operation whose success
        changes the model by `changes` ({rel: bytes | DIR | None}). If it
        is cut by a kill, the states before and after (with `allow`: rel ->
        rule for the bytes of a cut write) are both accepted. Raises
        Interrupted unless it succeeded."""
        g = self.s.gate
        gen = g.enter()
        self.cur = (desc, time.monotonic())
        try:
            if gen != self.last_gen or self.need_verify:
                # A kill came since the caller made its plan: check the
                # subtree, then let the caller plan again.
                self.sync(gen)
                raise Interrupted()
            post = apply_changes(self.model, changes)
            try:
                fn()
            except (OSError, subprocess.SubprocessError) as e:
                self.drop_held()
                self.cands = [(self.model, {}), (post, allow or {})]
                self.need_verify = True
                if g.kill_gen == gen:
                    self.s.problem('%s: %s failed without a kill: %s'
                                   % (self.name, desc, e))
                else:
                    self.s.count('ops_cut_by_kill')
                raise Interrupted()
            self.model = post
            self.s.count('operations')
        finally:
            self.cur = None
            g.leave()

    def sync(self, gen):
        """After a kill: forget the dead descriptors and check the subtree
        against the accepted states."""
        if gen != self.last_gen:
            self.drop_held()
            self.need_verify = True
        if self.need_verify:
            self.verify(gen)
            self.need_verify = False
        self.last_gen = gen

    def drop_held(self):
        for rel, h in list(self.held.items()):
            try:
                os.close(h['fd'])
            except OSError:
                pass
            if h['pending'] or h['trying']:
                self.held_allow[rel] = ('tail', self.model[rel],
                                        h['pending'] + h['trying'])
        self.held.clear()

    def walk(self):
        out = {}
        mnt = str(self.s.mount.mnt)

        def rec(rel):
            out[rel] = DIR
            with os.scandir(os.path.join(mnt, rel)) as it:
                entries = list(it)
            for e in entries:
                r = rel + '/' + e.name
                if e.is_symlink():
                    out[r] = ('SYMLINK',)
                elif e.is_dir(follow_symlinks=False):
                    rec(r)
                else:
                    try:
                        out[r] = read_file(os.path.join(mnt, r))
                    except OSError as ex:
                        out[r] = ('ERR', errno.errorcode.get(ex.errno,
                                                             ex.errno))
        rec(self.root)
        return out

    def verify(self, gen):
        g = self.s.gate
        try:
            obs = self.walk()
        except OSError as e:
            if g.kill_gen != gen:
                raise Interrupted()
            self.s.problem('%s: reading its tree back failed: %s'
                           % (self.name, e))
            raise Fatal()
        if g.kill_gen != gen:
            raise Interrupted()
        cands = self.cands or [(self.model, {})]
        for m, allow in cands:
            a = dict(self.held_allow)
            a.update(allow)
            if self.matches(obs, m, a):
                break
        else:
            m, allow = cands[-1]
            a = dict(self.held_allow)
            a.update(allow)
            text = diff_text(obs, m, a)
            if len(cands) > 1:
                m0 = cands[0][0]
                text = ('neither the state before the cut operation (%s)'
                        ' nor after it (%s)'
                        % (diff_text(obs, m0, self.held_allow), text))
            n = max(1, text.count(': found '))
            self.s.mismatch(n, '%s after kill #%d: %s'
                            % (self.name, self.s.kills, text))
        self.s.count('checks_after_kill')
        self.model = {k: v for k, v in obs.items()
                      if isinstance(v, bytes) or v == DIR}
        self.cands = None
        self.held_allow = {}

    @staticmethod
    def matches(obs, cand, allow):
        if set(obs) != set(cand):
            # A file a cut create never made is only acceptable as the
            # "before" state, which is another candidate.
            return False
        for k, o in obs.items():
            c = cand[k]
            if o == c:
                continue
            if k in allow and isinstance(c, bytes) and allowed(o, allow[k]):
                continue
            return False
        return True

    # -- common operations
    def mkdir(self, rel):
        self.op('mkdir %s' % rel, lambda: os.mkdir(self.p(rel)), {rel: DIR})

    def makedirs(self, rel):
        parts = rel.split('/')
        for i in range(1, len(parts) + 1):
            d = '/'.join(parts[:i])
            if d not in self.model:
                self.mkdir(d)

    def write(self, rel, data, append=False, fsync=False, max_chunk=256 * KiB):
        old = self.model.get(rel, b'')
        if append:
            new, allow = old + data, {rel: ('tail', old, data)}
        else:
            new, allow = data, {rel: ('tail', b'', data)}
        rng = random.Random(self.rng.random())

        def fn():
            flags = os.O_WRONLY | os.O_CREAT | (
                os.O_APPEND if append else os.O_TRUNC)
            fd = os.open(self.p(rel), flags, 0o644)
            try:
                write_all(fd, data, rng, max_chunk)
                if fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        self.op('%s %s (%d bytes%s)' % ('append' if append else 'write',
                                        rel, len(data),
                                        ', fsync' if fsync else ''),
                fn, {rel: new}, allow)
        self.s.count('bytes_written', len(data))

    def pwrites(self, rel, nwrites, max_len):
        old = self.model[rel]
        buf = bytearray(old)
        writes = []
        for _ in range(nwrites):
            off = self.rng.randint(0, len(buf) + 64 * KiB)
            data = self.rng.randbytes(self.rng.randint(1, max_len))
            if off > len(buf):
                buf.extend(b'\0' * (off - len(buf)))
            end = off + len(data)
            if end > len(buf):
                buf.extend(b'\0' * (end - len(buf)))
            buf[off:end] = data
            writes.append((off, data))
        new = bytes(buf)

        def fn():
            fd = os.open(self.p(rel), os.O_RDWR)
            try:
                for off, data in writes:
                    os.pwrite(fd, data, off)
            finally:
                os.close(fd)
        self.op('pwrite x%d %s' % (nwrites, rel), fn, {rel: new},
                {rel: ('mix', old, new)})
        self.s.count('bytes_written', sum(len(d) for _, d in writes))

    def truncate(self, rel, size):
        old = self.model[rel]
        new = old[:size] + b'\0' * max(0, size - len(old))
        self.op('truncate %s to %d' % (rel, size),
                lambda: os.truncate(self.p(rel), size), {rel: new},
                {rel: ('mix', old, new)})

    def mmap_write(self, rel, size):
        """A rewrite through a shared mapping, by a child process (a page
        fault waits for the daemon, which may wait for the fake server in
        this process: never fault on the mount here)."""
        old = self.model.get(rel, b'')
        seed = self.rng.randrange(1 << 30)
        pieces = mmap_pieces(size, seed)
        buf = bytearray(old[:size] + b'\0' * max(0, size - len(old)))
        for off, data in pieces:
            buf[off:off + len(data)] = data
        new = bytes(buf)

        def fn():
            r = subprocess.run([sys.executable, '-c', MMAP_CHILD,
                                self.p(rel), str(size), str(seed)],
                               stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=HUNG_AFTER)
            if r.returncode != 0 or r.stdout != b'ok\n':
                raise OSError(errno.EIO, 'mmap writer: %s %s' % (
                    'signal %d' % -r.returncode if r.returncode < 0
                    else 'exit %d' % r.returncode,
                    r.stderr.decode(errors='replace').strip()[-300:]))
        self.op('mmap write %s (%d bytes)' % (rel, size), fn, {rel: new},
                {rel: ('mix', old, new)})
        self.s.count('bytes_written', sum(len(d) for _, d in pieces))

    def rename(self, src, dst):
        self.op('rename %s -> %s' % (src, dst),
                lambda: os.rename(self.p(src), self.p(dst)),
                rename_changes(self.model, src, dst))

    def unlink(self, rel):
        self.op('unlink %s' % rel, lambda: os.unlink(self.p(rel)),
                {rel: None})

    def rmdir(self, rel):
        self.op('rmdir %s' % rel, lambda: os.rmdir(self.p(rel)),
                {rel: None})

    def rmtree(self, top):
        """Deepest first, one operation per entry."""
        for k in sorted([k for k in self.model if under(k, top)],
                        key=lambda k: (-k.count('/'), k)):
            if self.model.get(k) == DIR:
                self.rmdir(k)
            elif k in self.model:
                self.unlink(k)

    # held-open files (a logger)
    def held_open(self, rel):
        h = {'fd': None, 'pending': b'', 'trying': b''}

        def fn():
            h['fd'] = os.open(self.p(rel), os.O_WRONLY | os.O_APPEND
                              | os.O_CREAT, 0o644)
        self.op('open %s for appending' % rel, fn,
                {rel: self.model.get(rel, b'')})
        self.held[rel] = h

    def held_write(self, rel, data):
        h = self.held[rel]
        h['trying'] = data

        def fn():
            write_all(h['fd'], data)
            h['pending'] += data
            h['trying'] = b''
        self.op('append %d bytes to open %s' % (len(data), rel), fn, {})
        self.s.count('bytes_written', len(data))

    def held_commit(self, rel, close):
        h = self.held[rel]
        durable = self.model[rel] + h['pending']

        def fn():
            if close:
                fd = h['fd']
                self.held.pop(rel, None)
                os.close(fd)
            else:
                os.fsync(h['fd'])
            h['pending'] = b''
        self.op('%s %s' % ('close' if close else 'fsync', rel), fn,
                {rel: durable}, {rel: ('tail', self.model[rel],
                                       h['pending'])})

    # -- the loop
    def run(self):
        try:
            self.last_gen = self.s.gate.kill_gen
            while True:
                try:
                    if not self.setup_done:
                        self.makedirs(self.root)
                        self.setup()
                        self.setup_done = True
                    if self.stopping:
                        self.finish()
                        return
                    self.action()
                except Interrupted:
                    continue
                time.sleep(self.rng.uniform(*self.SLEEP))
        except Fatal:
            self.dead = 'fatal'
        except Exception as e:
            self.dead = repr(e)
            self.s.problem('%s crashed: %s' % (
                self.name, traceback.format_exc()))

    def finish(self):
        """Closes what is held (committing it) and checks the subtree."""
        while True:
            try:
                for rel in list(self.held):
                    self.held_commit(rel, close=True)
                self.op('final check', lambda: None, {})
                return
            except Interrupted:
                continue

    def setup(self):
        pass

    def choose(self, table):
        total = sum(w for w, _ in table)
        x = self.rng.uniform(0, total)
        for w, f in table:
            x -= w
            if x <= 0:
                return f
        return table[-1][1]

    def action(self):
        self.choose(self.table())()

    def uniq(self):
        self.counter += 1
        return self.counter


class LogWorker(Worker):
    """Trainer logs: JSON-line appends, a log held open and appended with
    an fsync now and then, rotations (also over an older rotation),
    deletes, a small status JSON rewritten whole."""

    LOGS = ['logs/engine.log', 'logs/trades.log', 'learning/notes.jsonl',
            'monitoring/health.log']

    def setup(self):
        for d in ('logs', 'learning', 'monitoring'):
            self.makedirs(self.root + '/' + d)

    def rel(self, r):
        return self.root + '/' + r

    def table(self):
        return [(35, self.a_append), (35, self.a_held), (6, self.a_rotate),
                (12, self.a_status), (6, self.a_delete)]

    def lines(self):
        return b''.join(json_line(self.rng, self.uniq())
                        for _ in range(self.rng.randint(1, 20)))

    def a_append(self):
        rel = self.rel(self.rng.choice(self.LOGS))
        if rel in self.held:
            return
        self.write(rel, self.lines(), append=True,
                   fsync=self.rng.random() < 0.2)

    def a_held(self):
        if not self.held:
            streams = [f for f in self.files() if '/logs/stream_' in f]
            if streams and self.rng.random() < 0.5:
                rel = self.rng.choice(streams)
            else:
                rel = self.rel('logs/stream_%d.log' % self.uniq())
            self.held_open(rel)
            return
        rel = next(iter(self.held))
        x = self.rng.random()
        if x < 0.08:
            self.held_commit(rel, close=True)
        elif x < 0.18:
            self.held_commit(rel, close=False)
        else:
            self.held_write(rel, self.lines())

    def a_rotate(self):
        rel = self.rel(self.rng.choice(self.LOGS))
        if rel in self.held or rel not in self.model:
            return
        self.rename(rel, '%s.%d' % (rel, self.rng.randint(1, 3)))

    def a_status(self):
        rel = self.rel('monitoring/status.json')
        data = json.dumps({'t': time.time(), 'n': self.uniq(),
                           'pad': 'y' * self.rng.randint(0, 3000)}).encode()
        if self.rng.random() < 0.5:
            self.write(rel, data)
        else:
            tmp = rel + '.tmp'
            self.write(tmp, data, fsync=True)
            self.rename(tmp, rel)

    def a_delete(self):
        cands = [f for f in self.files() if f not in self.held and (
            '.log.' in f or '/logs/stream_' in f or f.endswith('.jsonl.1')
            or self.rng.random() < 0.2)]
        if cands:
            self.unlink(self.rng.choice(cands))


class ModelWorker(Worker):
    """Model files: whole rewrites (O_TRUNC), atomic saves (tmp, fsync,
    rename over), mmap rewrites, pwrites, truncates; run folders with
    metrics, archived (renamed) and removed."""

    SLEEP = (0.05, 0.25)

    def setup(self):
        self.makedirs(self.root + '/models')
        self.makedirs(self.root + '/archive')

    def table(self):
        return [(22, self.a_pkl), (22, self.a_save), (18, self.a_metrics),
                (4, self.a_archive), (4, self.a_drop_archive),
                (8, self.a_mmap), (8, self.a_pwrite), (5, self.a_truncate)]

    def size(self):
        return self.rng.choice([self.rng.randint(1, 64 * KiB),
                                self.rng.randint(10 * KiB, 1536 * KiB)])

    def a_pkl(self):
        rel = '%s/models/agent_%d.pkl' % (self.root, self.rng.randint(0, 3))
        self.write(rel, self.rng.randbytes(self.size()),
                   fsync=self.rng.random() < 0.3,
                   max_chunk=self.rng.choice([4096, 65536, 1 * MiB]))

    def run_dir(self):
        return '%s/run_%d' % (self.root, self.rng.randint(0, 2))

    def a_save(self):
        run = self.run_dir()
        self.makedirs(run + '/model')
        rel = run + '/model/model.bin'
        tmp = rel + '.tmp'
        self.write(tmp, self.rng.randbytes(self.size()), fsync=True)
        self.rename(tmp, rel)

    def a_metrics(self):
        run = self.run_dir()
        self.makedirs(run + '/metrics')
        rel = run + '/metrics/metrics.json'
        data = json.dumps({'sharpe': self.rng.random(),
                           'n': self.uniq()}).encode() + b'\n'
        self.write(rel, data, append=self.rng.random() < 0.5)

    def a_archive(self):
        runs = [d for d in self.dirs() if d.count('/') == 1
                and d.split('/')[1].startswith('run_')]
        if runs:
            src = self.rng.choice(runs)
            self.rename(src, '%s/archive/%s_%d' % (
                self.root, src.split('/')[1], self.uniq()))

    def a_drop_archive(self):
        old = [d for d in self.dirs(self.root + '/archive')
               if d.count('/') == 2]
        if len(old) > 1:
            self.rmtree(self.rng.choice(old))

    def a_mmap(self):
        rel = '%s/models/weights_%d.npy' % (self.root, self.rng.randint(0, 1))
        self.mmap_write(rel, self.rng.randint(4 * KiB, 512 * KiB))

    def a_pwrite(self):
        pk = [f for f in self.files(self.root + '/models')
              if f.endswith('.pkl')]
        if pk:
            self.pwrites(self.rng.choice(pk), self.rng.randint(1, 10),
                         self.rng.choice([100, 5000, 70000]))

    def a_truncate(self):
        pk = [f for f in self.files(self.root + '/models')
              if f.endswith('.pkl')]
        if pk:
            rel = self.rng.choice(pk)
            n = len(self.model[rel])
            self.truncate(rel, self.rng.randint(0, n + 100 * KiB))


class CandleWorker(Worker):
    """Candle data: files of several MiB (now and then past the 16 MiB
    single-upload limit, so upload sessions are used), written by Python
    or by cp/dd child processes, rewritten, appended, deleted, their
    folders renamed away and removed."""

    SLEEP = (0.3, 1.0)
    SYMS = ['btc-usdt', 'eth-usdt', 'sol-usdt']

    def setup(self):
        self.makedirs(self.root + '/candles')
        self.makedirs(self.root + '/old')

    def table(self):
        return [(35, self.a_new), (22, self.a_prune), (8, self.a_rewrite),
                (7, self.a_append), (5, self.a_move_dir),
                (5, self.a_drop_old)]

    def size(self):
        if self.rng.random() < 0.05:
            return self.rng.randint(17 * MiB, 20 * MiB)
        return self.rng.randint(1 * MiB, 6 * MiB)

    def put(self, rel, data):
        """Writes a whole file with O_TRUNC, by us or a child process."""
        how = self.rng.choice(['python', 'cp', 'dd'])
        if how == 'python':
            self.write(rel, data, max_chunk=self.rng.choice(
                [131072, 1 * MiB, 3 * MiB + 7]))
            return
        with open(self.staging, 'wb') as f:
            f.write(data)
        if how == 'cp':
            cmd = ['cp', self.staging, self.p(rel)]
        else:
            cmd = ['dd', 'if=' + self.staging, 'of=' + self.p(rel),
                   'bs=%d' % self.rng.choice([4096, 65536, 1000000]),
                   'status=none'] + (['conv=fsync']
                                     if self.rng.random() < 0.5 else [])

        def fn():
            r = subprocess.run(cmd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=HUNG_AFTER)
            if r.returncode != 0:
                raise OSError(errno.EIO, '%s exited %d: %s' % (
                    cmd[0], r.returncode, r.stderr.decode(errors='replace')
                    .strip()))
        self.op('%s to %s (%d bytes)' % (how, rel, len(data)), fn,
                {rel: data}, {rel: ('tail', b'', data)})
        self.s.count('bytes_written', len(data))

    def a_new(self):
        sym = self.rng.choice(self.SYMS)
        d = '%s/candles/%s' % (self.root, sym)
        self.makedirs(d)
        rel = '%s/%s_%d_candles.parquet' % (d, sym.split('-')[0],
                                             self.uniq())
        data = self.rng.randbytes(self.size())
        if self.rng.random() < 0.2:
            self.put(rel + '.part', data)
            self.rename(rel + '.part', rel)
        else:
            self.put(rel, data)

    def candles(self):
        return [f for f in self.files(self.root + '/candles')
                if f.endswith('.parquet')]

    def a_prune(self):
        for sym in self.SYMS:
            fs = [f for f in self.candles() if '/%s/' % sym in f]
            if len(fs) > 3:
                self.unlink(fs[0])

    def a_rewrite(self):
        fs = self.candles()
        if fs:
            self.put(self.rng.choice(fs), self.rng.randbytes(self.size()))

    def a_append(self):
        fs = self.candles()
        if fs:
            self.write(self.rng.choice(fs),
                       self.rng.randbytes(self.rng.randint(1, 300 * KiB)),
                       append=True)

    def a_move_dir(self):
        ds = [d for d in self.dirs(self.root + '/candles')
              if d.count('/') == 2]
        if ds:
            src = self.rng.choice(ds)
            self.rename(src, '%s/old/%s_%d' % (self.root,
                                               src.rsplit('/', 1)[1],
                                               self.uniq()))

    def a_drop_old(self):
        ds = [d for d in self.dirs(self.root + '/old') if d.count('/') == 2]
        if ds:
            self.rmtree(self.rng.choice(ds))


class NamespaceWorker(Worker):
    """A random tree of small files: mkdir, creates and rewrites, renames
    of files and directories (over existing files and empty directories
    too), unlinks, rmdir, whole trees removed, names used again."""

    SLEEP = (0.02, 0.2)
    DNAMES = ['a', 'b', 'c', 'd']
    FNAMES = ['x.json', 'y.txt', 'z.csv', 'r.json', 'results.json']

    def table(self):
        return [(15, self.a_mkdir), (30, self.a_write), (12, self.a_mvfile),
                (10, self.a_mvdir), (12, self.a_unlink), (5, self.a_rmdir),
                (4, self.a_rmtree), (8, self.a_append)]

    def a_mkdir(self):
        parents = [d for d in self.dirs() if d.count('/') < 3]
        p = self.rng.choice(parents)
        rel = p + '/' + self.rng.choice(self.DNAMES)
        if rel not in self.model:
            self.mkdir(rel)

    def a_write(self):
        p = self.rng.choice(self.dirs())
        rel = p + '/' + self.rng.choice(self.FNAMES)
        if self.model.get(rel, b'') == DIR:
            return
        n = self.rng.choice([0, self.rng.randint(1, 2000),
                             self.rng.randint(1, 100 * KiB)])
        self.write(rel, self.rng.randbytes(n),
                   fsync=self.rng.random() < 0.1)

    def a_append(self):
        fs = self.files()
        if fs:
            self.write(self.rng.choice(fs),
                       self.rng.randbytes(self.rng.randint(1, 5000)),
                       append=True)

    def a_mvfile(self):
        fs = self.files()
        if not fs:
            return
        src = self.rng.choice(fs)
        dst = self.rng.choice(self.dirs()) + '/' + self.rng.choice(
            self.FNAMES)
        if dst == src or self.model.get(dst) == DIR:
            return
        self.rename(src, dst)

    def a_mvdir(self):
        ds = [d for d in self.dirs() if d != self.root]
        if not ds:
            return
        src = self.rng.choice(ds)
        parent = self.rng.choice([d for d in self.dirs()
                                  if not under(d, src)])
        dst = parent + '/' + self.rng.choice(self.DNAMES)
        if under(dst, src) or dst == src:
            return
        depth = max(k.count('/') for k in self.model if under(k, src)) \
            - src.count('/') + dst.count('/')
        if depth > 5:
            return
        if dst in self.model:
            if self.model[dst] != DIR or any(
                    under(k, dst) and k != dst for k in self.model):
                return      # only an empty directory may be replaced
        self.rename(src, dst)

    def a_unlink(self):
        fs = self.files()
        if fs:
            self.unlink(self.rng.choice(fs))

    def a_rmdir(self):
        empty = [d for d in self.dirs() if d != self.root and not any(
            under(k, d) and k != d for k in self.model)]
        if empty:
            self.rmdir(self.rng.choice(empty))

    def a_rmtree(self):
        ds = [d for d in self.dirs() if d.count('/') == 1]
        if ds:
            self.rmtree(self.rng.choice(ds))


# ----------------------------------------------------------------- faults

UPLOAD_ROUTES = ['files/upload', 'files/upload_session/start',
                 'files/upload_session/append_v2',
                 'files/upload_session/finish',
                 'files/upload_session/finish_batch_v2']
NS_ROUTES = ['files/create_folder_v2', 'files/delete_v2', 'files/move_v2']
READ_ROUTES = ['files/list_folder', 'files/list_folder/continue',
               'files/get_metadata', 'files/download']
ALL_ROUTES = UPLOAD_ROUTES + NS_ROUTES + READ_ROUTES


def random_fault(rng):
    """(kind, rule) for FakeDropbox.add_fault, or (kind, outage args)."""
    n = rng.randint(1, 3)
    k = rng.randrange(15)
    if k == 0:
        return '429', {'route': rng.choice(ALL_ROUTES + ['*']),
                       'status': 429, 'retry_after': rng.choice([1, 2]),
                       'count': n}
    if k == 1:
        return '429 too_many_write_operations', {
            'route': rng.choice(UPLOAD_ROUTES + NS_ROUTES + ['*']),
            'status': 429, 'reason': 'too_many_write_operations',
            'retry_after': 1, 'count': n}
    if k == 2:
        return '5xx', {'route': rng.choice(ALL_ROUTES + ['*']),
                       'status': rng.choice([500, 502, 503, 504]),
                       'count': n}
    if k == 3:
        return 'request body cut', {
            'route': rng.choice(UPLOAD_ROUTES),
            'drop_request_after': rng.choice([0, 100, 4096, 65536, MiB]),
            'count': rng.randint(1, 2)}
    if k == 4:
        return 'reply body cut', {
            'route': rng.choice(ALL_ROUTES),
            'drop_response_after': rng.choice([0, 10, 100]),
            'count': rng.randint(1, 2)}
    if k == 5:
        return 'reply lost', {'route': rng.choice(UPLOAD_ROUTES + NS_ROUTES),
                              'lose_response': True, 'count': 1}
    if k == 6:
        return 'reply truncated', {
            'route': rng.choice(['files/download', 'files/list_folder',
                                 'files/list_folder/continue',
                                 'files/get_metadata']),
            'truncate': True, 'count': 1}
    if k == 7:
        return 'slow', {'route': rng.choice(ALL_ROUTES + ['*']),
                        'delay': round(rng.uniform(0.3, 3.0), 2),
                        'count': n}
    if k == 8:
        return 'throttled', {'route': rng.choice(['files/upload',
                                                  'files/download',
                                                  'files/upload_session/'
                                                  'append_v2']),
                             'bandwidth': rng.choice([256 * KiB, MiB,
                                                      4 * MiB]),
                             'count': 1}
    if k == 9:
        return '409 too_many_write_operations', {
            'route': rng.choice(['files/upload', 'files/upload_session/'
                                 'finish'] + NS_ROUTES),
            'error': 'too_many_write_operations', 'count': n}
    if k == 10:
        return 'batch entries too_many_write_operations', {
            'route': 'files/upload_session/finish_batch_v2',
            'batch_entry_error': 'too_many_write_operations',
            'count': rng.randint(1, 2)}
    if k == 11:
        return 'batch entries internal_error', {
            'route': 'files/upload_session/finish_batch_v2',
            'batch_entry_error': 'internal_error', 'count': 1}
    if k == 12:
        return '5xx after processing', {
            'route': rng.choice(UPLOAD_ROUTES + NS_ROUTES),
            'status': rng.choice([500, 503]), 'process': True, 'count': 1}
    mode = rng.choice(['refuse', 'refuse', 'close', 'hang'])
    secs = round(rng.uniform(0.5, 2.0 if mode == 'hang' else 3.0), 2)
    return 'outage (%s)' % mode, (secs, mode)


# ------------------------------------------------------------------ soak

class Soak:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
        self.counts = {}
        self.fault_kinds = {}
        self.problems = []
        self.mismatch_count = 0
        self.kills = 0
        self.gate = Gate()
        self.stop = threading.Event()
        self.fake = None
        self.remote_dir = None
        self.workdir = None
        self.mount = None
        self.fatal = False
        self.final_flush_s = None
        self.outage_lock = threading.Lock()

    # -- bookkeeping
    def count(self, what, n=1):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + n

    def problem(self, text):
        with self.lock:
            self.problems.append(text)
        print('soak: PROBLEM: %s' % text, flush=True)

    def mismatch(self, n, text):
        with self.lock:
            self.mismatch_count += n
        self.problem('MISMATCH: ' + text)

    def say(self, text):
        if self.args.verbose:
            print('soak: %7.1f s %s' % (time.monotonic() - self.t0, text),
                  flush=True)

    # -- setup
    def setup(self):
        a = self.args
        if a.workdir:
            self.workdir = os.path.abspath(a.workdir)
            os.makedirs(self.workdir, exist_ok=True)
            if os.listdir(self.workdir):
                wd, self.workdir = self.workdir, None
                raise RuntimeError('--workdir %s is not empty' % wd)
        else:
            self.workdir = tempfile.mkdtemp(prefix='hfs-soak-')
        base = Path(self.workdir)
        # The daemon's own bound on flush --wait matches the harness's:
        # after a storm of renames the journal takes a while to replay.
        hfs_extra = {'dir_cache_seconds': a.dir_cache_seconds,
                     'log_level': a.log_level,
                     'flush_timeout_seconds': a.flush_timeout}
        dropbox_extra = {}
        if a.backend == 'dropbox':
            from fakedropbox import FakeDropbox, make_test_ca
            ca_dir = base / 'ca'
            ca_dir.mkdir(exist_ok=True)
            ca = make_test_ca(str(ca_dir))
            self.fake = FakeDropbox(tls=ca).start()
            hfs_extra.update({'backend': 'dropbox', 'api_url': self.fake.url,
                              'content_url': self.fake.url,
                              'notify_url': self.fake.url,
                              'ca_file': ca[0]})
            dropbox_extra['access_token'] = TOKEN
        self.remote_dir = base / 'remote'
        self.remote_dir.mkdir(exist_ok=True)
        text = build_config(self.remote_dir, base / 'cache',
                            base / 'daemon.log', INTERVALS, dropbox_extra,
                            hfs_extra)
        self.mount = Mount(self.binary(), base, text)
        err = self.mount.start()
        if err:
            raise RuntimeError('first mount failed: %s' % err)

    def binary(self):
        b = os.environ.get('HURACANFS_BIN') or str(
            REPO / 'build/src/huracanfs')
        if not os.access(b, os.X_OK):
            raise RuntimeError('huracanfs binary %s is missing; build it or'
                               ' set HURACANFS_BIN' % b)
        return os.path.abspath(b)

    # -- the killer
    def killer(self):
        lo, hi = self.args.kill_every
        while not self.stop.is_set():
            t_next = time.monotonic() + self.rng.uniform(lo, hi)
            while time.monotonic() < t_next and not self.stop.is_set():
                if self.mount.pid and not pid_alive(self.mount.pid):
                    self.problem('daemon %d died by itself; log tail:\n%s'
                                 % (self.mount.pid,
                                    self.mount.log_text()[-3000:]))
                    self.recover(kill=False)
                time.sleep(0.1)
            if self.stop.is_set() or self.fatal:
                return
            self.recover(kill=True)

    def recover(self, kill):
        m = self.mount
        pid = m.status_pid() if kill else None
        if kill and pid is None:
            if m.pid and pid_alive(m.pid):
                self.problem('huracanfs status --json failed before a kill;'
                             ' using the pid from the mount')
                pid = m.pid
            else:
                return
        self.gate.close_for_kill()
        try:
            if kill:
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
                while pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.02)
                with self.lock:
                    self.kills += 1
                self.say('kill #%d (pid %d)' % (self.kills, pid))
            if not self.gate.wait_drained(HUNG_AFTER):
                self.problem('operations still running %d s after the'
                             ' daemon died' % HUNG_AFTER)
                self.fatal = True
                return
            m.fusermount(lazy=True)
            if is_mounted(m.mnt):
                self.problem('fusermount3 -uz left %s mounted' % m.mnt)
                self.fatal = True
                return
            for attempt in range(5):
                with self.outage_lock:
                    err = m.start()
                if not err:
                    break
                self.problem('remount failed (attempt %d): %s'
                             % (attempt + 1, err))
                if is_mounted(m.mnt):
                    m.fusermount(lazy=True)
                time.sleep(1)
            else:
                self.fatal = True
                return
        finally:
            if not self.fatal:
                self.gate.reopen()

    # -- faults
    def injector(self):
        lo, hi = self.args.fault_every
        while not self.stop.wait(self.rng.uniform(lo, hi)):
            if self.fake is None:
                self.local_outage()
                continue
            kind, rule = random_fault(self.rng)
            if isinstance(rule, tuple):
                secs, mode = rule
                self.fake.outage(secs, mode)
                # An outage does not last past the next fault.
            else:
                self.fake.add_fault(**rule)
            self.count('faults_injected')
            with self.lock:
                self.fault_kinds[kind] = self.fault_kinds.get(kind, 0) + 1
            self.say('fault: %s %s' % (kind, rule))

    def local_outage(self):
        """The local backend's outage: its directory goes away a while."""
        off = self.remote_dir.with_name('remote.offline')
        # A mount creates a missing remote_dir: no remount meanwhile.
        with self.outage_lock:
            os.rename(self.remote_dir, off)
            self.count('faults_injected')
            with self.lock:
                self.fault_kinds['outage'] = \
                    self.fault_kinds.get('outage', 0) + 1
            self.stop.wait(self.rng.uniform(0.5, 3.0))
            if self.remote_dir.exists():
                self.problem('remote_dir was created again while it was'
                             ' away')
                shutil.rmtree(self.remote_dir)
            os.rename(off, self.remote_dir)

    # -- run
    def run(self):
        a = self.args
        self.t0 = time.monotonic()
        self.setup()
        print('soak: seed %d, %d s, backend %s, binary %s, workdir %s'
              % (a.seed, a.seconds, a.backend, self.mount.bin, self.workdir),
              flush=True)
        seeds = [self.rng.randrange(1 << 30) for _ in range(4)]
        self.workers = [LogWorker(self, 'logger', 'lg', seeds[0]),
                        ModelWorker(self, 'models', 'md', seeds[1]),
                        CandleWorker(self, 'candles', 'cd', seeds[2]),
                        NamespaceWorker(self, 'namespace', 'ns', seeds[3])]
        for w in self.workers:
            w.start()
        threads = [threading.Thread(target=self.killer, name='killer',
                                    daemon=True),
                   threading.Thread(target=self.injector, name='faults',
                                    daemon=True)]
        for t in threads:
            t.start()
        end = self.t0 + a.seconds
        while time.monotonic() < end and not self.fatal:
            time.sleep(0.2)
            self.watchdog()
            if all(not w.is_alive() for w in self.workers):
                break
        self.stop.set()
        for t in threads:
            t.join(HUNG_AFTER + 60)
        self.say('workload over; finishing')
        if not self.fatal:
            for w in self.workers:
                w.stopping = True
            deadline = time.monotonic() + HUNG_AFTER
            for w in self.workers:
                while w.is_alive() and time.monotonic() < deadline:
                    w.join(0.5)
                    self.watchdog()
                if w.is_alive():
                    self.problem('%s did not finish' % w.name)
                    self.fatal = True
        return self.finish()

    def watchdog(self):
        for w in self.workers:
            cur = w.cur
            if cur and time.monotonic() - cur[1] > HUNG_AFTER:
                self.problem('%s: operation hung for more than %d s: %s'
                             % (w.name, HUNG_AFTER, cur[0]))
                self.fatal = True
                if self.mount.pid:
                    try:
                        os.kill(self.mount.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                return

    # -- the end
    def expected(self):
        exp = {}
        for w in self.workers:
            exp.update(w.model)
        return exp

    def finish(self):
        m = self.mount
        verified_files = verified_bytes = 0
        if self.fake is not None:
            self.fake.clear_faults()
            self.fake.end_outage()
        off = self.remote_dir.with_name('remote.offline')
        if off.exists():
            os.rename(off, self.remote_dir)
        if not self.fatal and is_mounted(m.mnt):
            t = time.monotonic()
            rc, out, err = m.run('flush', m.mnt, '--wait',
                                 timeout=self.args.flush_timeout)
            self.final_flush_s = round(time.monotonic() - t, 1)
            self.say('flush --wait: exit %d in %.1f s'
                     % (rc, self.final_flush_s))
            if rc != 0:
                self.problem('final huracanfs flush --wait exited %d: %s %s'
                             % (rc, out.strip(), err.strip()))
            try:
                st = m.status()
                pend = sum(c.get('pending_files', 0)
                           for c in st.get('categories', []))
                if pend or st.get('journal_pending') or st.get('lost'):
                    files = []
                    rc, out, err = m.run('status', m.mnt, '--json',
                                         '--files')
                    try:
                        for c in json.loads(out)['categories']:
                            files += ['%s (%s)' % (f['path'], c['name'])
                                      for f in c.get('files') or []]
                    except (ValueError, KeyError):
                        pass
                    self.problem('flush --wait exited %d but %d files are '
                                 'still pending (%s), journal %s, lost %s'
                                 % (rc, pend, ', '.join(files[:10]),
                                    st.get('journal_pending'),
                                    st.get('lost')))
            except Exception as e:
                self.problem('status after the final flush: %s' % e)
            self.check_local()
            err = m.unmount(self.args.flush_timeout)
            if err:
                self.problem(err)
            verified_files, verified_bytes = self.check_remote()
        elif is_mounted(m.mnt):
            m.fusermount(lazy=True)
        if m.pid and pid_alive(m.pid):
            os.kill(m.pid, signal.SIGKILL)
        if self.fake is not None:
            stats = self.fake.get_stats()
            self.counts['faults_fired'] = sum(
                stats['faults_fired'].values())
            self.counts['requests'] = stats['requests']
            self.counts['bytes_uploaded'] = stats['bytes_uploaded']
            self.fake.stop()
        self.check_logs()
        return self.report(verified_files, verified_bytes)

    def check_local(self):
        """The whole mount against the model, before unmounting."""
        exp = self.expected()
        mnt = str(self.mount.mnt)
        obs = {}
        for top in sorted(os.listdir(mnt)):
            p = os.path.join(mnt, top)
            if os.path.islink(p):
                continue
            if top not in {w.root for w in self.workers}:
                obs[top] = DIR if os.path.isdir(p) else b'?'
                continue
        for w in self.workers:
            try:
                obs.update(w.walk())
            except OSError as e:
                self.problem('reading %s back at the end: %s' % (w.root, e))
        text = diff_text(obs, exp, {}, limit=20)
        if text:
            self.mismatch(max(1, text.count(': found ')),
                          'the mount at the end differs from the model: '
                          + text)
        self.count('local_files_verified',
                   sum(1 for v in exp.values() if v != DIR))

    def remote_tree(self):
        """{rel: bytes | DIR} of the remote."""
        out = {}
        if self.fake is not None:
            root = ROOT.lower() + '/'
            for e in self.fake.tree():
                pl = e['path_lower']
                if not pl.startswith(root):
                    continue
                rel = e['path_display'][len(ROOT) + 1:]
                if e['.tag'] == 'folder':
                    out[rel] = DIR
                else:
                    out[rel] = self.fake.get_file(e['path_display'])
            return out
        for dirpath, dirnames, filenames in os.walk(self.remote_dir):
            rel = os.path.relpath(dirpath, self.remote_dir)
            if rel != '.':
                out[rel] = DIR
            for n in filenames:
                p = os.path.join(dirpath, n)
                out[os.path.normpath(os.path.join(rel, n))] = read_file(p)
        return out

    def check_remote(self):
        exp = self.expected()
        obs = self.remote_tree()
        text = diff_text(obs, exp, {}, limit=30)
        if text:
            self.mismatch(max(1, text.count(': found ')),
                          'the remote differs from the last bytes written:'
                          ' ' + text)
        files = [k for k, v in exp.items() if v != DIR]
        good = [k for k in files if obs.get(k) == exp[k]]
        return len(good), sum(len(exp[k]) for k in good)

    def check_logs(self):
        m = self.mount
        text = m.log_text()
        errors = [ln for ln in text.splitlines() if '[error]' in ln]
        for ln in errors[:20]:
            self.problem('daemon log: ' + ln)
        self.counts['daemon_log_errors'] = len(errors)
        sans = []
        files = [m.log, m.stderr] + sorted(m.base.glob('sanitizer*'))
        for p in files:
            try:
                t = p.read_text(errors='replace')
            except (FileNotFoundError, IsADirectoryError):
                continue
            sans += ['%s: %s' % (p.name, ln) for ln in t.splitlines()
                     if any(s in ln for s in SANITIZER_PATTERNS)]
        for ln in sans[:20]:
            self.problem('sanitizer report: ' + ln)
        self.counts['sanitizer_reports'] = len(sans)

    def report(self, files, nbytes):
        c = self.counts
        res = {
            'seed': self.args.seed, 'seconds': self.args.seconds,
            'backend': self.args.backend,
            'operations': c.get('operations', 0),
            'operations_cut_by_kill': c.get('ops_cut_by_kill', 0),
            'bytes_written': c.get('bytes_written', 0),
            'kills': self.kills, 'mounts': self.mount.mounts,
            'checks_after_kill': c.get('checks_after_kill', 0),
            'faults_injected': c.get('faults_injected', 0),
            'faults_fired': c.get('faults_fired'),
            'fault_kinds': self.fault_kinds,
            'requests': c.get('requests'),
            'files_verified': files, 'bytes_verified': nbytes,
            'mismatches': self.mismatch_count,
            'daemon_log_errors': c.get('daemon_log_errors', 0),
            'sanitizer_reports': c.get('sanitizer_reports', 0),
            'problems': len(self.problems),
            'final_flush_seconds': self.final_flush_s,
            'elapsed': round(time.monotonic() - self.t0, 1),
        }
        print('soak: operations %d (%d cut by a kill), %d bytes written'
              % (res['operations'], res['operations_cut_by_kill'],
                 res['bytes_written']))
        print('soak: kills %d, mounts %d, checks after a kill %d'
              % (res['kills'], res['mounts'], res['checks_after_kill']))
        print('soak: faults injected %d (fired %s): %s' % (
            res['faults_injected'], res['faults_fired'],
            ', '.join('%s %d' % kv
                      for kv in sorted(self.fault_kinds.items()))))
        print('soak: final flush --wait took %s s; verified %d files, %d'
              ' bytes on the remote' % (res['final_flush_seconds'], files,
                                        nbytes))
        print('soak: mismatches %d' % self.mismatch_count)
        print('soak: problems %d' % len(self.problems))
        for p in self.problems[:50]:
            print('soak:   - %s' % p)
        print('SOAK-RESULT ' + json.dumps(res, sort_keys=True), flush=True)
        ok = not self.problems and not self.mismatch_count and not self.fatal
        print('soak: %s in %.1f s' % ('PASS' if ok else 'FAIL',
                                      res['elapsed']), flush=True)
        return ok


def parse_pair(text):
    a, b = (float(x) for x in text.split(','))
    return a, b


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--seconds', type=float, required=True,
                    help='how long the workload runs (the end checks come'
                    ' after)')
    ap.add_argument('--seed', type=int, default=None)
    ap.add_argument('--backend', choices=['dropbox', 'local'],
                    default='dropbox')
    ap.add_argument('--workdir', help='where mount, cache, remote and logs'
                    ' go (default: a new temporary directory, removed after'
                    ' a passing run)')
    ap.add_argument('--keep', action='store_true',
                    help='keep the work directory after a passing run')
    ap.add_argument('--kill-every', type=parse_pair, default=(2.0, 7.0),
                    metavar='MIN,MAX', help='seconds between kills')
    ap.add_argument('--fault-every', type=parse_pair, default=(0.3, 2.0),
                    metavar='MIN,MAX', help='seconds between faults')
    ap.add_argument('--dir-cache-seconds', type=int, default=2)
    ap.add_argument('--log-level', default='debug')
    ap.add_argument('--flush-timeout', type=int, default=600)
    ap.add_argument('-v', '--verbose', action='store_true')
    args = ap.parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(1 << 31)
    soak = Soak(args)
    ok = False
    try:
        ok = soak.run()
    except Exception:
        traceback.print_exc()
        ok = False
    finally:
        m = soak.mount
        if m is not None:
            if m.pid and pid_alive(m.pid):
                try:
                    os.kill(m.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if is_mounted(m.mnt):
                m.fusermount(lazy=True)
        if soak.fake is not None and not soak.fake.stopping:
            soak.fake.stop()
    if soak.workdir:
        if ok and not args.keep and not args.workdir:
            shutil.rmtree(soak.workdir, ignore_errors=True)
        else:
            print('soak: work directory kept: %s' % soak.workdir)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())

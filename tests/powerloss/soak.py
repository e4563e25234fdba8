#!/usr/bin/python3
"""Power-loss soak: a trainer-like workload on huracanfs whose cache is on
plfs, with power cuts at random moments; after each cut, every file must
read back as its durable version or a later one, nothing the remote holds
may be reported lost, the remote must not regress, and the index must
open (or `huracanfs repair` fix it).

    /usr/bin/python3 tests/powerloss/soak.py --duration 600 [--seed S]
        [--cuts N] [--keep] [--workdir D] [--log-level L] [-v]

See tests/powerloss/README.md for the model and the outcome classes.
Prints the number of cuts, files checked and a count per outcome class,
then a line `PL-RESULT {json}`; exits 1 on any bad outcome.
"""

import argparse
import collections
import errno
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import plrig  # noqa: E402
from plrig import Rig, read_remote  # noqa: E402

KiB = 1024
MiB = 1024 * 1024
ABSENT = None

INTERVALS = {'learning': 1, 'logs': 1, 'models': 3, 'data_cache': 3,
             'new_data': 2, 'other': 1}
FSYNC_P = 0.35
# Outcome classes that are reported but do not fail the run.
INFO = ('ok', 'repaired', 'nondurable', 'nondurable_lost', 'unexpected',
        'flush_failed')
# Classes of the soak itself that fail it, besides plrig.BAD.
SOAK_BAD = ('resurrected', 'remote_garbage', 'false_conflict', 'daemon_died',
            'op_error')


class Cut(Exception):
    """The power was cut in the middle of an operation."""


def digest(state):
    if state is ABSENT:
        return 'absent'
    return hashlib.sha256(state).hexdigest()


class PathModel:
    """Every state a path had since its last durable one.

    hist: states (bytes, or ABSENT) in the order they were made; durable:
    the index in hist of the newest durable state, or None (never made
    durable). A few versions before the durable one are kept, to tell
    'stale' from 'garbage'. seen: the digest of every state the path ever
    had -> its sequence number (the newest), to order remote copies.
    """

    def __init__(self):
        self.hist = []
        self.durable = None
        self.n = 0
        self.seen = {}

    def cur(self):
        return self.hist[-1] if self.hist else ABSENT

    def add(self, state):
        self.n += 1
        self.seen[digest(state)] = self.n
        if not self.hist or self.hist[-1] != state:
            self.hist.append(state)

    def saw(self, state):
        """A state the path had inside a write session (not a version; an
        upload of an open file may still have taken it)."""
        self.n += 1
        self.seen[digest(state)] = self.n

    def make_durable(self):
        if not self.hist:
            self.add(ABSENT)
        self.durable = len(self.hist) - 1
        self.prune()

    def prune(self, keep_older=3):
        if self.durable is None or self.durable <= keep_older:
            return
        drop = self.durable - keep_older
        self.hist = self.hist[drop:]
        self.durable -= drop

    def reset(self, state):
        """After a check: what was found is the only state."""
        self.add(state)
        self.hist = [state]
        self.durable = None

    def inherit(self, src):
        """A rename brings src's states here (a remote copy of one of
        them may come along by a rename on the remote)."""
        for d, _ in sorted(src.seen.items(), key=lambda kv: kv[1]):
            if d != 'absent':
                self.n += 1
                self.seen[d] = self.n

    def seq_of(self, state):
        """Sequence number of the newest time the path held `state`."""
        return self.seen.get(digest(state))

    def copy(self):
        c = PathModel()
        c.hist = list(self.hist)
        c.durable = self.durable
        c.n = self.n
        c.seen = dict(self.seen)
        return c


def content(rng, tag, size):
    """`size` bytes, distinct per call (a header, then random pages)."""
    head = ('%s-%d-%016x\n' % (tag, size, rng.getrandbits(64))).encode()
    if size <= len(head):
        return head[:size]
    return head + rng.randbytes(size - len(head))


class Soak:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.model = {}
        self.counts = Counter()
        self.details = []
        self.seen_unexpected = set()
        # What was done to each path lately (printed with a bad read).
        self.trace = collections.defaultdict(
            lambda: collections.deque(maxlen=16))
        self.files_checked = 0
        self.ops = 0
        self.op_counts = Counter()
        self.flushes = 0
        self.cut_totals = Counter()
        self.next_cut = None
        self.cut_pending = False
        self.session = None    # (path, [states]) of a write in progress
        self.rig = None
        self.touched = set()
        self.op_errors_seen = set()

    # -- the model ------------------------------------------------------

    def pm(self, rel):
        self.touched.add(rel)
        m = self.model.get(rel)
        if m is None:
            m = self.model[rel] = PathModel()
        return m

    def note(self, cls, what, detail=''):
        self.counts[cls] += 1
        if cls not in INFO or cls in ('unexpected', 'flush_failed'):
            self.details.append('%s: %s %s' % (cls, what, detail))
            if self.args.verbose:
                print('powerloss: BAD %s: %s %s' % (cls, what, detail),
                      flush=True)

    # -- cuts -----------------------------------------------------------

    def schedule_cut(self):
        a = self.args
        if a.cuts:
            mean = a.duration / a.cuts
            gap = self.rng.uniform(0.5 * mean, 1.5 * mean)
        else:
            gap = self.rng.uniform(4, 12)
        self.next_cut = time.monotonic() + gap

    def maybe_cut(self):
        """Called between syscalls: cuts the power when it is time."""
        if time.monotonic() < self.next_cut:
            return
        mode = self.args.cut_mode
        if mode == 'mix':
            mode = self.rng.choice(['drop', 'subset'])
        seed = self.rng.getrandbits(32)
        permille = self.rng.randint(200, 800)
        if self.args.verbose:
            print('powerloss: cut %d (%s%s) after %d ops' % (
                self.rig.cuts + 1, mode,
                ' %d/1000' % permille if mode == 'subset' else '',
                self.ops), flush=True)
        self.rig.cut_power(mode, seed, permille)
        for t in self.trace.values():
            t.append('CUT(%s)' % mode)
        raise Cut()

    # -- operations -------------------------------------------------------

    def p(self, rel):
        return self.rig.mnt / rel

    def write_session(self, rel, data, flags, fsync, keep=b''):
        """open(flags), write data in chunks, maybe fsync, close. `keep` is
        what the file holds after open (b'' with O_TRUNC, the old bytes
        for appends). Appends are versions at every write; a rewrite only
        at fsync and close. States between are kept in self.session, for
        a cut."""
        path = self.p(rel)
        append = bool(flags & os.O_APPEND)
        states = [keep]
        self.session = (rel, states)
        created = self.pm(rel).cur() is ABSENT
        fd = os.open(path, flags, 0o644)
        self.trace[rel].append('open%s%s %d bytes%s' % (
            ' O_TRUNC' if flags & os.O_TRUNC else '',
            ' O_APPEND' if append else '', len(data),
            ' fsync' if fsync else ''))
        if created:
            # A new file is empty until written: a version too (a cut
            # before its bytes are synced may leave it so, as on ext4).
            self.pm(rel).add(b'')
        try:
            off = 0
            while off < len(data):
                self.maybe_cut()
                n = min(len(data) - off, self.rng.choice(
                    [4 * KiB, 64 * KiB, 256 * KiB, 1 * MiB]))
                w = os.write(fd, data[off:off + n])
                off += w
                states.append(keep + data[:off])
                if append:
                    self.pm(rel).add(keep + data[:off])
            if fsync:
                self.maybe_cut()
                os.fsync(fd)
                m = self.pm(rel)
                m.add(keep + data)
                m.make_durable()
        finally:
            try:
                os.close(fd)
            except OSError:
                pass
        self.session = None
        self.pm(rel).add(keep + data)

    def op_log_append(self):
        rel = 'logs/%s.log' % self.rng.choice(['train', 'events'])
        old = self.pm(rel).cur() or b''
        lines = b''.join(b'{"t": %.3f, "step": %d, "loss": %.5f}\n' % (
            time.time(), self.ops, self.rng.random())
            for _ in range(self.rng.randint(1, 40)))
        self.write_session(rel, lines, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                           self.rng.random() < FSYNC_P, keep=old)

    def op_log_rotate(self):
        name = self.rng.choice(['train', 'events'])
        src, dst = 'logs/%s.log' % name, 'logs/%s.log.1' % name
        if self.pm(src).cur() is ABSENT:
            return
        self.maybe_cut()
        os.rename(self.p(src), self.p(dst))
        self.pm(dst).inherit(self.pm(src))
        self.pm(dst).add(self.pm(src).cur())
        self.pm(src).add(ABSENT)

    def op_model_save(self):
        rel = 'models/m%d/model.bin' % self.rng.randrange(3)
        tmp = rel + '.tmp'
        data = content(self.rng, rel, self.rng.randint(20 * KiB, 900 * KiB))
        self.write_session(tmp, data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                           self.rng.random() < FSYNC_P)
        self.maybe_cut()
        os.rename(self.p(tmp), self.p(rel))
        self.pm(rel).inherit(self.pm(tmp))
        self.pm(rel).add(data)
        self.pm(tmp).add(ABSENT)

    def op_pkl_rewrite(self):
        rel = 'models/agent%d.pkl' % self.rng.randrange(3)
        data = content(self.rng, rel, self.rng.randint(1 * KiB, 400 * KiB))
        self.write_session(rel, data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                           self.rng.random() < FSYNC_P)

    def op_state_recreate(self):
        rel = 'models/state%d.json' % self.rng.randrange(3)
        data = content(self.rng, rel, self.rng.randint(100, 30 * KiB))
        if self.pm(rel).cur() is not ABSENT:
            self.maybe_cut()
            os.unlink(self.p(rel))
            self.pm(rel).add(ABSENT)
        self.write_session(rel, data, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                           self.rng.random() < FSYNC_P)

    def monitoring_file(self):
        rel = 'monitoring/metrics%d.bin' % self.rng.randrange(3)
        if self.pm(rel).cur() is ABSENT:
            data = content(self.rng, rel, self.rng.randint(8 * KiB,
                                                           300 * KiB))
            self.write_session(rel, data, os.O_WRONLY | os.O_CREAT |
                               os.O_TRUNC, self.rng.random() < FSYNC_P)
            return None
        return rel

    def op_patch(self):
        rel = self.monitoring_file()
        if rel is None:
            return
        cur = bytearray(self.pm(rel).cur())
        states = [bytes(cur)]
        self.session = (rel, states)
        fd = os.open(self.p(rel), os.O_WRONLY)
        try:
            for _ in range(self.rng.randint(1, 3)):
                self.maybe_cut()
                off = self.rng.randrange(0, len(cur) + 1)
                patch = self.rng.randbytes(self.rng.randint(1, 9000))
                os.pwrite(fd, patch, off)
                self.trace[rel].append('pwrite %d+%d (size %d)' % (
                    off, len(patch), max(len(cur), off + len(patch))))
                if off + len(patch) > len(cur):
                    cur.extend(b'\0' * (off + len(patch) - len(cur)))
                cur[off:off + len(patch)] = patch
                states.append(bytes(cur))
                self.pm(rel).saw(bytes(cur))
            if self.rng.random() < FSYNC_P:
                self.maybe_cut()
                os.fsync(fd)
                self.trace[rel].append('fsync')
                self.pm(rel).add(bytes(cur))
                self.pm(rel).make_durable()
        finally:
            try:
                os.close(fd)
                self.trace[rel].append('close')
            except OSError:
                pass
        self.session = None
        self.pm(rel).add(bytes(cur))

    def op_truncate(self):
        rel = self.monitoring_file()
        if rel is None:
            return
        cur = self.pm(rel).cur()
        size = self.rng.choice([self.rng.randrange(0, len(cur) + 1),
                                len(cur) + self.rng.randint(1, 20000)])
        self.maybe_cut()
        os.truncate(self.p(rel), size)
        self.trace[rel].append('truncate %d' % size)
        new = cur[:size] + b'\0' * max(0, size - len(cur))
        self.pm(rel).add(new)

    def op_candle(self):
        sym = self.rng.choice(['BTC-USDT', 'ETH-USDT'])
        rel = 'data/candles/%s/c%d.parquet' % (sym, self.rng.randrange(4))
        size = int(self.rng.choice([0.1, 0.5, 1, 2, 6]) * MiB) + \
            self.rng.randint(0, 4095)
        data = content(self.rng, rel, size)
        self.write_session(rel, data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                           self.rng.random() < FSYNC_P)

    def op_delete(self):
        live = [k for k, m in self.model.items()
                if m.cur() is not ABSENT and (k.startswith('data/candles/')
                                              or k.startswith('learning/'))]
        if not live:
            return
        rel = self.rng.choice(sorted(live))
        self.maybe_cut()
        os.unlink(self.p(rel))
        self.pm(rel).add(ABSENT)

    def op_note(self):
        rel = 'learning/notes/n%02d.md' % self.rng.randrange(12)
        data = content(self.rng, rel, self.rng.randint(50, 6000))
        self.write_session(rel, data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                           self.rng.random() < FSYNC_P)

    def op_flush(self):
        self.maybe_cut()
        self.flush_wait('workload')
        for t in self.trace.values():
            t.append('flush')

    def op_idle(self):
        time.sleep(self.rng.uniform(0.05, 0.4))

    OPS = [('log_append', 25), ('log_rotate', 3), ('model_save', 8),
           ('pkl_rewrite', 8), ('state_recreate', 6), ('patch', 8),
           ('truncate', 4), ('candle', 3), ('delete', 3), ('note', 8),
           ('flush', 2), ('idle', 5)]

    def flush_wait(self, why):
        """`flush --wait`; on success every current state is durable."""
        cur = {k: m.cur() for k, m in self.model.items()}
        r = self.rig.hfs.flush(check=False, timeout=300)
        self.flushes += 1
        if r.returncode != 0:
            self.note('flush_failed', why, r.stderr.strip()[:300])
            return False
        for k, m in self.model.items():
            if m.cur() == cur[k]:
                m.make_durable()
        return True

    # -- after a cut --------------------------------------------------------

    def check_after_cut(self, remote_before):
        rig = self.rig
        log0 = rig.hfs.log_size()
        res = rig.power_on()
        if res.outcome == 'repaired':
            self.note('repaired', 'index', res.detail[:300])
        if res.outcome == 'index_damaged':
            self.note('index_damaged', 'mount after cut %d' % rig.cuts,
                      res.detail[:500])
            # Go on with a new cache: what the remote holds is the truth.
            rig.plfs.stop()
            shutil.rmtree(rig.backing / 'cache', ignore_errors=True)
            r = rig.power_on()
            if r.outcome != 'ok':
                raise RuntimeError('cannot mount even on an empty cache: %s'
                                   % r.detail)
            self.rebaseline(check=False)
            return
        for ln in rig.index_damage_in_log(log0):
            self.note('index_damaged', 'daemon log', ln[:300])
        lost_paths = set()
        try:
            lost = [p.lstrip('/') for p in rig.lost_list()]
        except Exception as e:
            self.note('op_error', 'status --json', repr(e))
            lost = []
        observed = {}
        for rel in sorted(self.model):
            m = self.model[rel]
            obs = plrig.read_obs(self.p(rel))
            observed[rel] = obs
            cls = self.classify(rel, m, obs, remote_before)
            self.files_checked += 1
            self.note(cls, rel, self.describe(obs, m) + (
                ' | ops: ' + '; '.join(self.trace[rel])
                if cls not in INFO else ''))
            if cls in ('false_lost', 'lost', 'nondurable_lost'):
                lost_paths.add(rel)
        for rel in lost:
            if rel in lost_paths:
                continue
            lost_paths.add(rel)
            m = self.model.get(rel)
            if rel in remote_before:
                self.note('false_lost', 'status lost ' + rel)
            elif m is not None and m.durable is not None and \
                    m.hist[m.durable] is not ABSENT:
                self.note('lost', 'status lost ' + rel)
            else:
                self.note('nondurable_lost', 'status lost ' + rel)
        self.unexpected(observed)
        # What we found is the model from now on; lost files are deleted
        # (they read EIO until rewritten or deleted).
        for rel in sorted(self.model):
            obs = observed.get(rel)
            if isinstance(obs, OSError) and obs.errno == errno.EIO or \
                    rel in lost_paths:
                try:
                    os.unlink(self.p(rel))
                except OSError:
                    pass
                obs = ABSENT
            elif isinstance(obs, OSError):
                obs = ABSENT
            self.model[rel].reset(obs)
        # Folders the index forgot are made again, so the workload goes on.
        self.make_dirs()
        old_hist = self.old_hist
        if self.flush_wait('after cut %d' % rig.cuts):
            self.check_remote(remote_before, read_remote(rig.remote),
                              old_hist, lost_paths)

    def resync(self, rels):
        """After an unexpected error: the model takes what is there."""
        for rel in sorted(rels):
            obs = plrig.read_obs(self.p(rel))
            self.model[rel].reset(ABSENT if isinstance(obs, OSError)
                                  else obs)

    def daemon_died(self, during):
        """The daemon died by itself (not a cut): report, mount again."""
        rig = self.rig
        err = ''
        try:
            err = rig.hfs.stderr_file.read_text(errors='replace')[-400:]
        except OSError:
            pass
        self.note('daemon_died', 'during ' + during, err.strip())
        rig.hfs.pid = None
        plrig.fusermount_u(rig.mnt)
        res = rig.power_on_daemon()
        if res.outcome == 'index_damaged':
            self.note('index_damaged', 'mount after the daemon died',
                      res.detail[:500])
            rig.plfs.stop()
            shutil.rmtree(rig.backing / 'cache', ignore_errors=True)
            r = rig.power_on()
            if r.outcome != 'ok':
                raise RuntimeError('cannot mount even on an empty cache: %s'
                                   % r.detail)
        self.rebaseline(check=False)

    def rebaseline(self, check):
        for rel in sorted(self.model):
            obs = plrig.read_obs(self.p(rel))
            if isinstance(obs, OSError):
                obs = ABSENT
            self.model[rel].reset(obs)
        self.make_dirs()
        self.flush_wait('rebaseline')

    def classify(self, rel, m, obs, remote_before):
        remote_has = rel in remote_before
        # Durably absent (deleted, or renamed away, and that synced):
        # what was written there since was never synced either; a cut may
        # leave any part of it, as on any filesystem.
        if m.durable is None or (
                m.hist[m.durable] is ABSENT and
                any(s is not ABSENT for s in m.hist[m.durable:]) and
                not isinstance(obs, FileNotFoundError)):
            if isinstance(obs, OSError) and obs.errno == errno.EIO:
                return 'false_lost' if remote_has else 'nondurable_lost'
            st = ABSENT if isinstance(obs, FileNotFoundError) else obs
            if isinstance(st, OSError):
                return 'read_error'
            return 'ok' if st in m.hist else 'nondurable'
        accepted = m.hist[m.durable:]
        older = [s for s in m.hist[:m.durable] if s not in accepted]
        if isinstance(obs, FileNotFoundError):
            return 'ok' if ABSENT in accepted else 'missing'
        if all(s is ABSENT for s in accepted):
            return 'resurrected'
        return plrig.classify(obs, [s for s in accepted if s is not ABSENT],
                              [s for s in older if s is not ABSENT],
                              remote_has=remote_has)

    @staticmethod
    def describe(obs, m):
        if isinstance(obs, OSError):
            return str(obs)
        want = m.hist[m.durable] if m.durable is not None else None
        return '%d bytes read; durable %s; %d states' % (
            len(obs), 'absent' if want is None else '%d bytes' % len(want),
            len(m.hist))

    def unexpected(self, observed):
        known = set(self.model)
        for dirpath, dirnames, filenames in os.walk(self.rig.mnt):
            for n in filenames:
                rel = os.path.relpath(os.path.join(dirpath, n),
                                      self.rig.mnt)
                if rel in known:
                    continue
                if rel in self.seen_unexpected:
                    continue  # noted at an earlier check
                self.seen_unexpected.add(rel)
                if '(conflicted copy' in n:
                    # One machine, one writer: a conflict is the daemon
                    # taking its own upload for another machine's change.
                    self.note('false_conflict', rel)
                else:
                    self.note('unexpected', rel)

    def check_remote(self, before, after, old_hist, lost_paths):
        """The remote after the flush must not be older than before."""
        for rel, b in sorted(before.items()):
            if rel in lost_paths:
                continue
            hist = old_hist.get(rel)
            if hist is None:
                continue
            bi = hist.seq_of(b)
            a = after.get(rel, ABSENT)
            if bi is None:
                # A snapshot of a rewrite in progress (a prefix of the
                # version it became) is something a writer wrote too.
                for s in reversed(hist.hist):
                    if s is not ABSENT and len(s) > len(b) and \
                            s.startswith(b):
                        bi = hist.seq_of(s) - 0.5
                        break
            if bi is None:
                self.note('remote_garbage', rel, 'the remote held %d bytes'
                          ' no writer wrote' % len(b))
                continue
            if a == b:
                continue
            ai = hist.seq_of(a)
            if ai is not None and ai >= bi:
                continue
            self.note('remote_regressed', rel, 'remote held state %d of %d'
                      ' (%d bytes), now %s' % (
                          bi, hist.n, len(b),
                          'nothing' if a is ABSENT else
                          'state %s (%d bytes)' % (ai, len(a))))

    # -- the run ------------------------------------------------------------

    DIRS = ('logs', 'models/m0', 'models/m1', 'models/m2', 'monitoring',
            'data/candles/BTC-USDT', 'data/candles/ETH-USDT',
            'learning/notes')

    def make_dirs(self):
        for d in self.DIRS:
            try:
                os.makedirs(self.p(d), exist_ok=True)
            except OSError as e:
                self.note('op_error', 'mkdir ' + d, repr(e))

    def setup_tree(self):
        self.make_dirs()
        if not self.flush_wait('setup'):
            raise RuntimeError('the first flush --wait failed')

    def run(self):
        a = self.args
        base = Path(a.workdir) if a.workdir else Path(
            tempfile.mkdtemp(prefix='hfs-powerloss-'))
        base.mkdir(parents=True, exist_ok=True)
        print('powerloss: seed %d, duration %d s, cut mode %s, workdir %s'
              % (a.seed, a.duration, a.cut_mode, base), flush=True)
        t0 = time.monotonic()
        ok = False
        self.rig = Rig(base, intervals=INTERVALS, hfs_extra={
            'today_link': '', 'cache_max_bytes': '8M',
            'log_level': a.log_level}, verbose=a.verbose)
        try:
            self.rig.start()
            self.setup_tree()
            self.loop()
            ok = True
        except Exception:
            traceback.print_exc()
            self.note('op_error', 'harness', traceback.format_exc(
                limit=3).replace('\n', ' | ')[-600:])
        finally:
            problems = self.rig.cleanup()
            for p in problems:
                self.note('op_error', 'cleanup', p)
        bad = {k: v for k, v in self.counts.items()
               if k not in INFO and v}
        # What fails the run first, then what is only reported.
        first = [d for d in self.details
                 if d.split(':', 1)[0] not in INFO]
        rest = [d for d in self.details if d not in first]
        for d in (first + rest)[:60]:
            print('powerloss: ' + d)
        cs = self.cut_totals
        print('powerloss: cuts %d, operations %d, flushes %d' % (
            self.rig.cuts, self.ops, self.flushes))
        print('powerloss: pages pending at the cuts %d: written back %d,'
              ' dropped %d (%d bytes)' % (
                  cs['cut_pending_pages'], cs['cut_written_pages'],
                  cs['cut_dropped_pages'], cs['cut_dropped_bytes']))
        print('powerloss: files checked %d' % self.files_checked)
        print('powerloss: outcomes ' + ', '.join(
            '%s %d' % kv for kv in sorted(self.counts.items())))
        res = {'cuts': self.rig.cuts, 'operations': self.ops,
               'files_checked': self.files_checked,
               'outcomes': dict(self.counts), 'bad': bad,
               'cut_pending_pages': cs['cut_pending_pages'],
               'cut_written_pages': cs['cut_written_pages'],
               'cut_dropped_pages': cs['cut_dropped_pages'],
               'op_counts': dict(self.op_counts),
               'seconds': round(time.monotonic() - t0, 1)}
        print('PL-RESULT ' + json.dumps(res, sort_keys=True))
        passed = ok and not bad
        print('powerloss: %s in %.1f s' % ('PASS' if passed else 'FAIL',
                                          time.monotonic() - t0), flush=True)
        if (passed and not a.keep and not a.workdir):
            shutil.rmtree(base, ignore_errors=True)
        elif not passed or a.keep:
            print('powerloss: kept %s' % base)
        return 0 if passed else 1

    def loop(self):
        names = [n for n, w in self.OPS]
        weights = [w for n, w in self.OPS]
        work = 0.0
        last_flush = time.monotonic()
        self.schedule_cut()
        while True:
            t = time.monotonic()
            name = self.rng.choices(names, weights)[0]
            if t - last_flush > 10:
                name = 'flush'
            self.touched = set()
            try:
                getattr(self, 'op_' + name)()
                self.ops += 1
                self.op_counts[name] += 1
                if name == 'flush':
                    last_flush = time.monotonic()
            except Cut:
                work += time.monotonic() - t
                self.after_cut()
                last_flush = time.monotonic()
                if work >= self.args.duration:
                    return
                self.schedule_cut()
                continue
            except OSError as e:
                self.session = None
                if e.errno in (errno.ENOTCONN, errno.ECONNABORTED):
                    self.daemon_died(name)
                else:
                    # Once per kind of error and cut: a broken index
                    # fails every create the same way.
                    key = (self.rig.cuts, name, e.errno)
                    if key not in self.op_errors_seen:
                        self.op_errors_seen.add(key)
                        self.note('op_error', name, repr(e))
                    self.resync(self.touched)
            work += time.monotonic() - t
            if work >= self.args.duration:
                # The last cut, so that every run ends with a check.
                self.next_cut = 0
                try:
                    self.maybe_cut()
                except Cut:
                    self.after_cut()
                return

    def after_cut(self):
        """The power is off: the op cut short leaves its states; the
        mounts come down, the remote is read, then power on and check."""
        if self.session:
            rel, states = self.session
            for s in states:
                self.pm(rel).add(s)
            self.session = None
        st = self.rig.finish_cut() or {}
        for k, v in st.items():
            if k.startswith('cut_') and isinstance(v, int):
                self.cut_totals[k] += v
        # A copy of the model before the check changes it.
        self.old_hist = {k: m.copy() for k, m in self.model.items()}
        remote_before = read_remote(self.rig.remote)
        self.check_after_cut(remote_before)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--duration', type=float, default=60,
                    help='seconds of workload (checks come on top)')
    ap.add_argument('--seed', type=int, default=None)
    ap.add_argument('--cuts', type=int, default=0,
                    help='about this many cuts over the duration (default:'
                    ' one every 4-12 s)')
    ap.add_argument('--cut-mode', default='mix',
                    choices=['mix', 'drop', 'subset', 'keep'],
                    help='what a cut does with pending pages: drop all,'
                    ' write back a random subset, a mix of both (default),'
                    ' or keep all (a kill -9 without power loss: checks the'
                    ' harness)')
    ap.add_argument('--keep', action='store_true',
                    help='keep the work directory')
    ap.add_argument('--workdir', default=None)
    ap.add_argument('--log-level', default='info')
    ap.add_argument('-v', '--verbose', action='store_true')
    a = ap.parse_args()
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1 << 31)
    if not os.path.exists('/dev/fuse') or not shutil.which('fusermount3'):
        print('powerloss: FUSE is not available', file=sys.stderr)
        return 2
    return Soak(a).run()


if __name__ == '__main__':
    sys.exit(main())

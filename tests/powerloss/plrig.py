"""The power-loss rig: plfs under huracanfs's cache, and power cuts.

    rig = Rig(base)                # base: an empty directory
    rig.start()                    # plfs on base/plfs, huracanfs on base/hfs/mnt
    ... use rig.hfs.mnt ...
    stats = rig.power_cut('drop')  # or ('subset', seed, permille), 'keep'
    res = rig.power_on()           # res.outcome: 'ok', 'repaired', 'index_damaged'
    rig.cleanup()                  # always: unmounts everything, never raises

Layout under base: backing/ (plfs's backing directory: the cache lives in
backing/cache), plfs/ (the plfs mount; huracanfs's cache_dir is
plfs/cache), plfs.sock (its control socket), plfs.log, hfs/ (an
hfsutil.HfsMount: mnt/, remote/ on the normal disk, config.yaml,
daemon.log).

A power cut: SIGSTOP the daemon (it does nothing more), cut plfs (every
later operation fails with EIO; pending pages dropped or some written
back), SIGKILL the daemon, unmount both mounts. Power on: plfs again on the
same backing directory, `huracanfs mount` again on the same cache; if that
fails, `huracanfs repair` when the binary has it.

The binaries: $HURACANFS_BIN (else build/src/huracanfs), $PLFS_BIN (else
tests/powerloss/plfs of the build tree of huracanfs), $PLFS_SYNC_LIB (else
libplfs_sync.so beside plfs; preloaded into the daemon so that its
syncfs(2)/sync(2) reach plfs, which the kernel does not do for FUSE).
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS / 'integration'))

from hfsutil import (FUSERMOUNT, HfsMount, LONG_INTERVALS,  # noqa: E402,F401
                     is_mounted, pid_alive, wait_until, WaitTimeout)

CMD_TIMEOUT = 60


def hfs_binary():
    b = os.environ.get('HURACANFS_BIN') or str(REPO / 'build/src/huracanfs')
    return os.path.abspath(b)


def plfs_binary():
    b = os.environ.get('PLFS_BIN')
    if b:
        return os.path.abspath(b)
    build = Path(hfs_binary()).parent.parent
    return str(build / 'tests/powerloss/plfs')


def plfs_sync_lib():
    b = os.environ.get('PLFS_SYNC_LIB')
    if b:
        return os.path.abspath(b)
    return str(Path(plfs_binary()).parent / 'libplfs_sync.so')


def fusermount_u(path, retries_for=5.0):
    """fusermount3 -u, then -uz if still mounted. True if unmounted."""
    deadline = time.monotonic() + retries_for
    while is_mounted(path):
        r = subprocess.run([FUSERMOUNT, '-u', str(path)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=CMD_TIMEOUT)
        if r.returncode == 0 or not is_mounted(path):
            break
        if time.monotonic() > deadline:
            subprocess.run([FUSERMOUNT, '-uz', str(path)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=CMD_TIMEOUT)
            break
        time.sleep(0.1)
    return not is_mounted(path)


class Plfs:
    """One plfs process (foreground child) over `backing`, mounted on
    `mnt`, with its control socket at `ctl`."""

    def __init__(self, backing, mnt, ctl, log, verbose=False,
                 binary=None):
        self.bin = binary or plfs_binary()
        self.backing = Path(backing)
        self.mnt = Path(mnt)
        self.ctl = Path(ctl)
        self.logpath = Path(log)
        self.verbose = verbose
        self.proc = None
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mnt.mkdir(parents=True, exist_ok=True)

    def start(self, timeout=20):
        assert not is_mounted(self.mnt), '%s is mounted already' % self.mnt
        if not os.access(self.bin, os.X_OK):
            raise AssertionError('plfs binary %s is missing (ninja -C build,'
                                 ' or set PLFS_BIN)' % self.bin)
        args = [self.bin, '--ctl', str(self.ctl)]
        if self.verbose:
            args.append('--verbose')
        args += [str(self.backing), str(self.mnt)]
        with open(self.logpath, 'ab') as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while not (is_mounted(self.mnt) and self.ctl.exists()):
            if self.proc.poll() is not None:
                raise AssertionError('plfs exited %s at start; see %s'
                                     % (self.proc.returncode, self.logpath))
            if time.monotonic() > deadline:
                raise AssertionError('plfs did not mount %s in %d s'
                                     % (self.mnt, timeout))
            time.sleep(0.02)
        os.stat(self.mnt)
        return self

    def command(self, line, timeout=60):
        """Sends one command line; returns the parsed JSON answer."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(str(self.ctl))
            s.sendall(line.encode() + b'\n')
            data = b''
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
        finally:
            s.close()
        ans = json.loads(data.decode())
        if 'error' in ans:
            raise AssertionError('plfs: %s: %s' % (line, ans['error']))
        return ans

    def stats(self):
        return self.command('stats')

    def sync(self):
        return self.command('sync')

    def cut(self, mode='drop', seed=0, permille=500):
        if mode == 'subset':
            return self.command('cut subset %d %d' % (seed, permille))
        return self.command('cut %s' % mode)

    def stop(self, timeout=20):
        """Unmounts and waits for the process to exit."""
        ok = fusermount_u(self.mnt)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                ok = False
            self.proc = None
        return ok

    def cleanup(self):
        problems = []
        try:
            if not self.stop():
                problems.append('plfs %s did not unmount cleanly' % self.mnt)
        except Exception as e:  # never raises
            problems.append('plfs cleanup: %r' % e)
        return problems


class PlHfsMount(HfsMount):
    """An HfsMount whose daemon's syncfs(2)/sync(2) reach plfs."""

    plfs = None

    def env(self):
        env = super().env()
        if self.plfs is not None:
            lib = plfs_sync_lib()
            if os.path.exists(lib):
                env['LD_PRELOAD'] = ((env.get('LD_PRELOAD', '') + ':' + lib)
                                     .lstrip(':'))
                env['PLFS_CTL'] = str(self.plfs.ctl)
                env['PLFS_MNT'] = str(self.plfs.mnt)
                # An ASan build wants its runtime first; ours is plain.
                a = env.get('ASAN_OPTIONS', '')
                env['ASAN_OPTIONS'] = (a + ':verify_asan_link_order=0'
                                       ).lstrip(':')
        return env


class PowerOn:
    """What a power-on gave: outcome 'ok' (mounted), 'repaired' (mounted
    after `huracanfs repair`), 'index_damaged' (no mount); detail text."""

    def __init__(self, outcome, detail=''):
        self.outcome = outcome
        self.detail = detail

    def __repr__(self):
        return 'PowerOn(%s, %r)' % (self.outcome, self.detail[:200])


INDEX_DAMAGE_RE = re.compile(r'MDB_|corrupt|mdb_|index.*(damaged|invalid)',
                             re.I)


class Rig:
    def __init__(self, base, intervals=None, hfs_extra=None,
                 dropbox_extra=None, verbose=False):
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.backing = self.base / 'backing'
        self.plfs = Plfs(self.backing, self.base / 'plfs',
                         self.base / 'plfs.sock', self.base / 'plfs.log',
                         verbose=verbose)
        extra = {'cache_dir': str(self.plfs.mnt / 'cache')}
        extra.update(hfs_extra or {})
        self.hfs = PlHfsMount(hfs_binary(), self.base / 'hfs',
                              intervals=intervals, hfs_extra=extra,
                              dropbox_extra=dropbox_extra)
        self.hfs.plfs = self.plfs
        self.hfs.cache = self.plfs.mnt / 'cache'
        self.cuts = 0
        self.cut_stats = []
        self._has_repair = None
        self._cut_stats = None

    @property
    def mnt(self):
        return self.hfs.mnt

    @property
    def remote(self):
        return self.hfs.remote

    def start(self):
        self.plfs.start()
        self.hfs.start()
        return self

    def has_repair(self):
        if self._has_repair is None:
            r = self.hfs.run('--help')
            self._has_repair = bool(re.search(r'\brepair\b',
                                              r.stdout + r.stderr))
        return self._has_repair

    def cut_power(self, mode='drop', seed=0, permille=500):
        """The power goes: the daemon is stopped (SIGSTOP), plfs is cut,
        the daemon is killed. Returns plfs's counters of the cut. The
        mounts stay until finish_cut() (close files of the mount first)."""
        pid = self.hfs.pid
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGSTOP)
        try:
            st = self.plfs.cut(mode, seed, permille)
        finally:
            if pid and pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGCONT)
        self._cut_stats = st
        return st

    def finish_cut(self):
        """After cut_power(): both mounts down. Returns the cut's counters."""
        pid = self.hfs.pid
        if pid:
            wait_until(lambda: not pid_alive(pid), 20,
                       'daemon %d to die' % pid)
        self.hfs.pid = None
        if not fusermount_u(self.hfs.mnt):
            raise AssertionError('could not unmount %s' % self.hfs.mnt)
        if not self.plfs.stop():
            raise AssertionError('could not unmount plfs %s' % self.plfs.mnt)
        self.cuts += 1
        st, self._cut_stats = self._cut_stats, None
        self.cut_stats.append(st)
        return st

    def power_cut(self, mode='drop', seed=0, permille=500):
        """cut_power() then finish_cut()."""
        self.cut_power(mode, seed, permille)
        return self.finish_cut()

    def power_on(self):
        """plfs and huracanfs up again on the same backing directory."""
        self.plfs.start()
        return self.power_on_daemon()

    def power_on_daemon(self):
        """huracanfs up again (plfs is up): mount, else repair + mount."""
        log0 = self.hfs.log_size()
        rc, out, err = self.hfs.try_start()
        if rc == 0 and is_mounted(self.hfs.mnt):
            if self._adopt_daemon():
                return PowerOn('ok')
            return PowerOn('index_damaged', 'the daemon died right after'
                           ' mounting: ' + self._stderr_tail())
        detail = 'mount exited %d: %s %s %s' % (
            rc, out.strip(), err.strip(),
            self.hfs.log_since(log0).strip()[-2000:])
        if is_mounted(self.hfs.mnt):
            fusermount_u(self.hfs.mnt)
        if not self.has_repair():
            return PowerOn('index_damaged',
                           detail + ' (this huracanfs has no repair)')
        r = self.hfs.run('repair', self.hfs.mnt, '--config', self.hfs.config,
                         timeout=300)
        detail += ' | repair exited %d: %s %s' % (r.returncode,
                                                  r.stdout.strip(),
                                                  r.stderr.strip())
        rc, out, err = self.hfs.try_start()
        if rc == 0 and is_mounted(self.hfs.mnt):
            if self._adopt_daemon():
                return PowerOn('repaired', detail)
            return PowerOn('index_damaged', detail + ' | the daemon died'
                           ' right after mounting: ' + self._stderr_tail())
        if is_mounted(self.hfs.mnt):
            fusermount_u(self.hfs.mnt)
        return PowerOn('index_damaged', detail + ' | mount after repair'
                       ' exited %d: %s' % (rc, err.strip()))

    def _adopt_daemon(self):
        """The pid of the daemon just mounted; False (and the dead mount
        unmounted) if it died already."""
        try:
            pid = self.hfs._find_pid()
        except (AssertionError, WaitTimeout):
            pid = None
        if pid is None or not pid_alive(pid):
            fusermount_u(self.hfs.mnt)
            return False
        self.hfs.pid = pid
        self.hfs.all_pids.append(pid)
        return True

    def _stderr_tail(self):
        try:
            return self.hfs.stderr_file.read_text(errors='replace')[-500:]
        except OSError:
            return ''

    def index_damage_in_log(self, since):
        """Log lines since offset `since` that tell of a damaged index."""
        return [ln for ln in self.hfs.log_since(since).splitlines()
                if INDEX_DAMAGE_RE.search(ln) and
                ('[error]' in ln or '[warning]' in ln)]

    def lost_list(self):
        """`huracanfs status --json`'s lost list."""
        return list(self.hfs.status().get('lost') or [])

    def cleanup(self):
        """Unmounts everything, whatever state things are in; returns a
        list of problems and never raises."""
        problems = []
        pid = self.hfs.pid
        if pid and pid_alive(pid):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        try:
            problems += self.hfs.cleanup()
        except Exception as e:
            problems.append('huracanfs cleanup: %r' % e)
        problems += self.plfs.cleanup()
        return problems


def read_remote(remote):
    """{relative path: bytes} of the local backend's remote directory
    (its temporary upload files left out)."""
    out = {}
    remote = Path(remote)
    for dirpath, dirnames, filenames in os.walk(remote):
        for n in filenames:
            if n.startswith('.huracanfs-tmp'):
                continue
            p = os.path.join(dirpath, n)
            try:
                with open(p, 'rb') as f:
                    out[os.path.relpath(p, remote)] = f.read()
            except OSError:
                pass
    return out


# -- outcome classes -----------------------------------------------------

# Outcome classes that fail a run (see README.md). 'ok', 'repaired',
# 'nondurable_lost' are fine.
BAD = ('empty', 'truncated', 'stale', 'garbage', 'false_lost', 'lost',
       'missing', 'read_error', 'remote_regressed', 'index_damaged',
       'resurrected', 'remote_garbage', 'false_conflict', 'daemon_died',
       'op_error')


def classify(obs, accepted, older=(), remote_has=False):
    """The outcome class of what a file read back as.

    obs: the bytes read, or an OSError. accepted: the byte strings that are
    right (the durable version and every later version). older: versions
    before the durable one (reading one of them back is 'stale').
    remote_has: the remote holds some version of the file (an EIO is then
    a false 'lost').
    """
    if isinstance(obs, OSError):
        if isinstance(obs, FileNotFoundError):
            return 'missing'
        if obs.errno == 5:
            return 'false_lost' if remote_has else 'lost'
        return 'read_error'
    if any(obs == a for a in accepted):
        return 'ok'
    if any(obs == o for o in older):
        return 'stale'
    if len(obs) == 0:
        return 'empty'
    if any(len(obs) < len(a) and a.startswith(obs) for a in accepted):
        return 'truncated'
    return 'garbage'


def read_obs(path):
    """The bytes of `path`, or the OSError reading it raised."""
    try:
        with open(path, 'rb') as f:
            return f.read()
    except OSError as e:
        return e

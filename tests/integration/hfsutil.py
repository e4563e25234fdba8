"""Helpers for the huracanfs integration tests.

The tests drive the real binary the way a user does: `huracanfs mount`,
plain syscalls on the mount, `fusermount3 -u`. This module holds what the
fixture and the tests share: the config writer, the HfsMount object that
owns one daemon, bounded polling, and small file helpers.

Everything that waits is a bounded poll (wait_until); nothing sleeps for
long. Every process we act on is one we started, addressed by its pid.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

# Intervals of the default test config, in seconds (the brief's config).
DEFAULT_INTERVALS = {
    'learning': 1,
    'logs': 1,
    'models': 3,
    'data_cache': 6,
    'new_data': 2,
    'other': 1,
}

# Every category interval long enough that nothing is uploaded by a timer
# during a test: only flush, unmount or SIGTERM upload.
LONG_INTERVALS = {k: 300 for k in DEFAULT_INTERVALS}

CATEGORIES = ['learning', 'logs', 'monitoring', 'models', 'data_cache', 'other']

# Where each interval lives in the YAML.
INTERVAL_KEYS = {
    'learning': ('dropbox', 'sync_interval_learning_seconds'),
    'logs': ('dropbox', 'sync_interval_logs_seconds'),
    'models': ('dropbox', 'sync_interval_models_seconds'),
    'data_cache': ('dropbox', 'sync_interval_data_cache_seconds'),
    'new_data': ('dropbox', 'sync_interval_new_data_seconds'),
    'other': ('huracanfs', 'sync_interval_other_seconds'),
}

# Lines in the daemon log, or in a sanitizer log, that fail a test.
SANITIZER_PATTERNS = [
    'ERROR: AddressSanitizer',
    'ERROR: LeakSanitizer',
    'runtime error:',
    'WARNING: ThreadSanitizer',
]
LOG_ERROR_RE = re.compile(r'\[error\]')

FUSERMOUNT = shutil.which('fusermount3') or '/usr/bin/fusermount3'
CMD_TIMEOUT = 30


class WaitTimeout(AssertionError):
    pass


def wait_until(pred, timeout, what='condition', interval=0.05):
    """Polls pred() until it returns a truthy value, which is returned.

    Raises WaitTimeout (an AssertionError) naming `what` after `timeout`
    seconds. pred() is always called at least once more after the
    deadline passed, so a slow first call cannot cause a false failure.
    """
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise WaitTimeout('timed out after %.1f s waiting for %s'
                              % (timeout, what))
        time.sleep(interval)


def yaml_scalar(v):
    if isinstance(v, bool):
        return 'true' if v else 'false'
    if isinstance(v, (int, float)):
        return str(v)
    # JSON strings are valid YAML double-quoted scalars.
    return json.dumps(str(v))


def build_config(remote, cache, log, intervals=None, dropbox_extra=None,
                 hfs_extra=None):
    """Returns the text of a config.yaml for the local backend."""
    iv = dict(DEFAULT_INTERVALS)
    iv.update(intervals or {})
    sections = {'dropbox': {}, 'huracanfs': {}}
    for cat, (sec, key) in INTERVAL_KEYS.items():
        sections[sec][key] = iv[cat]
    sections['huracanfs'].update({
        'backend': 'local',
        'remote_dir': str(remote),
        'cache_dir': str(cache),
        'log_file': str(log),
        'log_level': 'debug',
    })
    sections['dropbox'].update(dropbox_extra or {})
    sections['huracanfs'].update(hfs_extra or {})
    lines = []
    for sec in ('dropbox', 'huracanfs'):
        lines.append(sec + ':')
        for k, v in sections[sec].items():
            lines.append('  %s: %s' % (k, yaml_scalar(v)))
    return '\n'.join(lines) + '\n'


def write_private(path, text, mode=0o600):
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, 'w') as f:
        f.write(text)
    os.chmod(path, mode)


def _unescape_mountinfo(field):
    return re.sub(rb'\\([0-7]{3})', lambda m: bytes([int(m.group(1), 8)]),
                  field)


def mount_entry(path):
    """The /proc/self/mountinfo fstype of the mount at `path`, or None.

    os.path.ismount() cannot tell a dead FUSE mount (ENOTCONN) from no
    mount, so the tests use this instead.
    """
    want = os.fsencode(os.path.abspath(path))
    with open('/proc/self/mountinfo', 'rb') as f:
        for line in f:
            parts = line.split()
            if len(parts) < 5:
                continue
            if _unescape_mountinfo(parts[4]) == want:
                try:
                    sep = parts.index(b'-')
                    return os.fsdecode(parts[sep + 1])
                except (ValueError, IndexError):
                    return '?'
    return None


def is_mounted(path):
    return mount_entry(path) is not None


def pid_alive(pid):
    """True while `pid` exists and is not a zombie."""
    if pid is None:
        return False
    try:
        with open('/proc/%d/stat' % pid, 'rb') as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = data[data.rindex(b')') + 2:data.rindex(b')') + 3]
    return state not in (b'Z', b'X', b'x')


def find_daemon_pids(binary, mnt):
    """Pids of live processes running `binary mount ... MNT ...`."""
    mnt = os.path.abspath(str(mnt))
    names = {os.path.basename(binary), 'huracanfs'}
    pids = []
    for d in os.listdir('/proc'):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open('/proc/%s/cmdline' % d, 'rb') as f:
                args = [os.fsdecode(a) for a in f.read().split(b'\0') if a]
        except OSError:
            continue
        if not args or mnt not in [os.path.abspath(a) for a in args]:
            continue
        if not any(os.path.basename(a) in names for a in args[:2]):
            continue
        if 'mount' not in args:
            continue
        if pid_alive(int(d)):
            pids.append(int(d))
    return pids


def sha256_file(path, bs=1 << 20):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        while True:
            b = f.read(bs)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def write_bytes(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)


def file_equals(path, data):
    """True if `path` exists and holds exactly `data`."""
    try:
        with open(path, 'rb') as f:
            return f.read() == data
    except (FileNotFoundError, NotADirectoryError):
        return False


def snapshot(root):
    """{relative path: bytes, or 'DIR'} for a whole tree (no symlinks)."""
    root = Path(root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel != '.':
            out[rel] = 'DIR'
        for n in filenames:
            p = os.path.join(dirpath, n)
            try:
                with open(p, 'rb') as f:
                    data = f.read()
            except OSError as e:
                # Vanished or unreadable while we looked: never equal to
                # real content, so a poll simply tries again.
                data = 'UNREADABLE: %s' % e.strerror
            out[os.path.normpath(os.path.join(rel, n))] = data
    return out


def describe_diff(a, b):
    """A short text naming what differs between two snapshots."""
    msgs = []
    for k in sorted(set(a) | set(b)):
        if k not in a:
            msgs.append('only in second: %s' % k)
        elif k not in b:
            msgs.append('only in first: %s' % k)
        elif a[k] != b[k]:
            if isinstance(a[k], str) or isinstance(b[k], str):
                msgs.append('%s: %s vs %s' % (
                    k, a[k] if isinstance(a[k], str) else 'file',
                    b[k] if isinstance(b[k], str) else 'file'))
            else:
                msgs.append('content differs: %s (%d vs %d bytes)'
                            % (k, len(a[k]), len(b[k])))
    return '; '.join(msgs[:20]) + ('' if len(msgs) <= 20 else '; ...')


def ls_R(root):
    """`ls -R .` run inside root, in the C locale."""
    env = dict(os.environ, LC_ALL='C')
    r = subprocess.run(['ls', '-R', '.'], cwd=str(root), env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=CMD_TIMEOUT)
    assert r.returncode == 0, 'ls -R %s failed: %s' % (root, r.stderr)
    return r.stdout.decode('utf-8', 'surrogateescape')


class HfsMount:
    """One huracanfs daemon with its own remote, cache, config and log.

    Layout under `base`: mnt/, remote/, cache/, config.yaml, daemon.log,
    mount.stderr, sanitizer.* (ASan/UBSan reports of every process we ran).
    """

    def __init__(self, binary, base, intervals=None, dropbox_extra=None,
                 hfs_extra=None):
        self.bin = str(binary)
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.mnt = self.base / 'mnt'
        self.remote = self.base / 'remote'
        self.cache = self.base / 'cache'
        self.config = self.base / 'config.yaml'
        self.log = self.base / 'daemon.log'
        self.stderr_file = self.base / 'mount.stderr'
        self.offline_remote = self.base / 'remote.offline'
        self.intervals = dict(DEFAULT_INTERVALS)
        self.intervals.update(intervals or {})
        self.dropbox_extra = dropbox_extra or {}
        self.hfs_extra = hfs_extra or {}
        self.pid = None
        self.all_pids = []
        self.mnt.mkdir(exist_ok=True)
        self.remote.mkdir(exist_ok=True)
        self.write_config()

    # -- configuration and environment ---------------------------------

    def write_config(self):
        write_private(self.config, build_config(
            self.remote, self.cache, self.log, self.intervals,
            self.dropbox_extra, self.hfs_extra))

    def env(self):
        env = dict(os.environ)
        env.pop('HURACANFS_DROPBOX_TOKEN', None)
        san = 'log_path=%s' % (self.base / 'sanitizer')
        for var in ('ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LSAN_OPTIONS'):
            env[var] = (env[var] + ':' + san) if env.get(var) else san
        return env

    def run(self, *args, timeout=CMD_TIMEOUT, check=False):
        """Runs `huracanfs ARGS...` and returns the CompletedProcess."""
        r = subprocess.run([self.bin] + [str(a) for a in args],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=self.env(),
                           timeout=timeout)
        r.stdout = r.stdout.decode('utf-8', 'replace')
        r.stderr = r.stderr.decode('utf-8', 'replace')
        if check:
            assert r.returncode == 0, (
                'huracanfs %s exited %d\nstdout: %s\nstderr: %s'
                % (' '.join(map(str, args)), r.returncode, r.stdout,
                   r.stderr))
        return r

    # -- lifecycle -----------------------------------------------------

    def start(self, extra_args=(), timeout=CMD_TIMEOUT):
        """Runs `huracanfs mount`, which must exit 0 with the mount up."""
        rc, out, err = self.try_start(extra_args, timeout)
        assert rc == 0, ('huracanfs mount exited %d\nstdout: %s\nstderr: %s'
                         % (rc, out, err))
        assert is_mounted(self.mnt), (
            'huracanfs mount exited 0 but %s is not mounted' % self.mnt)
        # The mount must be usable at once, not some time later.
        os.stat(self.mnt)
        os.listdir(self.mnt)
        self.pid = self._find_pid()
        self.all_pids.append(self.pid)
        return self

    def try_start(self, extra_args=(), timeout=CMD_TIMEOUT, mnt=None,
                  config=None):
        """Runs `huracanfs mount`; returns (exit code, stdout, stderr).

        Output goes to files, not pipes: a daemon that keeps an inherited
        pipe open would otherwise hang the test.
        """
        mnt = str(mnt or self.mnt)
        config = str(config or self.config)
        outp = self.base / 'mount.stdout'
        start_err = self.stderr_file.stat().st_size \
            if self.stderr_file.exists() else 0
        start_out = outp.stat().st_size if outp.exists() else 0
        with open(outp, 'ab') as out, open(self.stderr_file, 'ab') as err:
            p = subprocess.Popen(
                [self.bin, 'mount', mnt, '--config', config]
                + list(extra_args),
                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=self.env(), cwd=str(self.base))
            try:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                raise AssertionError('huracanfs mount did not return within'
                                     ' %d s' % timeout)
        with open(self.stderr_file, 'rb') as f:
            f.seek(start_err)
            err_text = f.read().decode('utf-8', 'replace')
        with open(outp, 'rb') as f:
            f.seek(start_out)
            out_text = f.read().decode('utf-8', 'replace')
        return rc, out_text, err_text

    def _find_pid(self):
        pid = None
        try:
            st = self.status()
            pid = st.get('pid')
        except Exception:
            pid = None
        if isinstance(pid, int) and pid_alive(pid):
            return pid
        pids = wait_until(lambda: find_daemon_pids(self.bin, self.mnt), 5,
                          'the daemon process of %s' % self.mnt)
        assert len(pids) == 1, 'several daemons for %s: %s' % (self.mnt, pids)
        return pids[0]

    def fusermount_u(self, lazy=False, retries_for=5.0):
        args = [FUSERMOUNT, '-uz' if lazy else '-u', str(self.mnt)]
        deadline = time.monotonic() + retries_for
        while True:
            r = subprocess.run(args, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=CMD_TIMEOUT)
            if r.returncode == 0 or not is_mounted(self.mnt):
                return r
            # EBUSY right after the last close is transient; retry briefly.
            if b'busy' not in r.stderr or time.monotonic() > deadline:
                return r
            time.sleep(0.1)

    def unmount(self, timeout=60):
        """fusermount3 -u, then waits for the daemon to flush and exit."""
        assert is_mounted(self.mnt), '%s is not mounted' % self.mnt
        pid = self.pid
        r = self.fusermount_u()
        assert r.returncode == 0, ('fusermount3 -u %s failed: %s'
                                   % (self.mnt, r.stderr.decode()))
        wait_until(lambda: not pid_alive(pid), timeout,
                   'daemon %s to exit after unmount' % pid, interval=0.1)
        self.pid = None

    def kill9(self):
        """kill -9 the daemon, then unmount the dead mount."""
        pid = self.pid
        assert pid_alive(pid), 'daemon %s is not running' % pid
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 10, 'daemon %s to die' % pid)
        self.pid = None
        r = self.fusermount_u()
        if is_mounted(self.mnt):
            r = self.fusermount_u(lazy=True)
        assert not is_mounted(self.mnt), (
            'could not unmount dead mount %s: %s' % (self.mnt, r.stderr))

    def remount(self):
        self.unmount()
        return self.start()

    def cleanup(self):
        """Unmounts and ends the daemon, whatever state things are in.

        Returns a list of problems (strings); never raises.
        """
        problems = []
        try:
            self.bring_remote_back()
        except Exception as e:  # pragma: no cover - best effort
            problems.append('could not restore remote: %r' % e)
        if is_mounted(self.mnt):
            r = self.fusermount_u()
            if r.returncode != 0 and is_mounted(self.mnt):
                problems.append('fusermount3 -u failed at cleanup: %s'
                                % r.stderr.decode(errors='replace').strip())
        for pid in set(p for p in self.all_pids if p):
            try:
                wait_until(lambda: not pid_alive(pid), 30,
                           'daemon %d to exit' % pid, interval=0.1)
            except WaitTimeout:
                problems.append('daemon %d still running 30 s after unmount;'
                                ' killed with SIGKILL' % pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if is_mounted(self.mnt):
            self.fusermount_u(lazy=True)
            if is_mounted(self.mnt):
                problems.append('%s still mounted after fusermount3 -uz'
                                % self.mnt)
        self.pid = None
        return problems

    # -- remote availability -------------------------------------------

    def take_remote_offline(self):
        """Makes the remote unavailable by renaming remote_dir away."""
        os.rename(self.remote, self.offline_remote)

    def bring_remote_back(self):
        if self.offline_remote.exists():
            assert not self.remote.exists(), (
                'remote_dir %s was re-created while the remote was'
                ' unavailable' % self.remote)
            os.rename(self.offline_remote, self.remote)

    # -- control -------------------------------------------------------

    def status(self):
        r = self.run('status', self.mnt, '--json', check=True)
        try:
            return json.loads(r.stdout)
        except ValueError as e:
            raise AssertionError('status --json printed invalid JSON (%s):'
                                 ' %r' % (e, r.stdout))

    def cat_status(self, name, st=None):
        st = st or self.status()
        for c in st['categories']:
            if c['name'] == name:
                return c
        raise AssertionError('category %s missing from status: %s'
                             % (name, st))

    def flush(self, category=None, wait=True, check=True, timeout=60):
        args = ['flush', self.mnt]
        if category:
            args += ['--category', category]
        if wait:
            args.append('--wait')
        return self.run(*args, check=check, timeout=timeout)

    # -- paths and checks ----------------------------------------------

    def m(self, rel):
        return self.mnt / rel

    def r(self, rel):
        return self.remote / rel

    def wait_until(self, pred, timeout, what='condition', interval=0.05):
        return wait_until(pred, timeout, what, interval)

    def wait_remote(self, rel, data, timeout, what=None):
        """Waits until remote_dir/rel holds exactly `data`."""
        return wait_until(lambda: file_equals(self.r(rel), data), timeout,
                          what or 'remote %s to hold the written bytes'
                          % rel)

    def log_text(self):
        try:
            return self.log.read_text(errors='replace')
        except FileNotFoundError:
            return ''

    def log_size(self):
        try:
            return self.log.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, offset):
        try:
            with open(self.log, 'rb') as f:
                f.seek(offset)
                return f.read().decode('utf-8', 'replace')
        except FileNotFoundError:
            return ''

    def problems(self, allowed_error_res=(), allow_all_errors=False):
        """[error] log lines and sanitizer reports, as a list of strings."""
        out = []
        for line in self.log_text().splitlines():
            if any(p in line for p in SANITIZER_PATTERNS):
                out.append('sanitizer report in daemon log: ' + line)
            elif LOG_ERROR_RE.search(line):
                if allow_all_errors or any(re.search(a, line)
                                           for a in allowed_error_res):
                    continue
                out.append('daemon log: ' + line)
        files = [self.stderr_file] + sorted(self.base.glob('sanitizer*'))
        for p in files:
            try:
                text = p.read_text(errors='replace')
            except (FileNotFoundError, IsADirectoryError):
                continue
            for line in text.splitlines():
                if any(s in line for s in SANITIZER_PATTERNS):
                    out.append('sanitizer report in %s: %s' % (p.name, line))
        return out


def errno_of(fn, *args, **kw):
    """Calls fn and returns the errno of the OSError it raised, or None."""
    try:
        fn(*args, **kw)
    except OSError as e:
        return e.errno
    return None



class NotifySocket:
    """The service manager's end of sd_notify: a unix datagram socket that
    a daemon started with env NOTIFY_SOCKET=self.name sends to.

    `name` is an abstract name ('@...') unless `path` is given. A thread
    collects every datagram, as a dict of its VAR=value lines, in
    self.messages (in order of arrival, each with the time.monotonic() of
    its arrival under '_t').
    """

    def __init__(self, path=None):
        import socket
        import threading
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path:
            self.name = str(path)
            self.sock.bind(self.name)
        else:
            self.name = '@huracanfs-test-%d-%d' % (os.getpid(), id(self))
            self.sock.bind('\0' + self.name[1:])
        self.sock.settimeout(0.2)
        self.messages = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import socket
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            msg = {'_t': time.monotonic()}
            for line in data.decode('utf-8', 'replace').split('\n'):
                if '=' in line:
                    k, v = line.split('=', 1)
                    msg[k] = v
            with self._lock:
                self.messages.append(msg)

    def all(self):
        with self._lock:
            return list(self.messages)

    def find(self, key, value=None):
        """The first message with `key` (equal to `value` if given)."""
        for msg in self.all():
            if key in msg and (value is None or msg[key] == value):
                return msg
        return None

    def close(self):
        self._stop = True
        self._thread.join(timeout=5)
        self.sock.close()

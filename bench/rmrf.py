#!/usr/bin/python3
"""huracanfs delete benchmark: `rm -rf` of one folder of N files through a
mount on the Dropbox backend (against the fake Dropbox of tests/fakedropbox,
over HTTPS), beside `rm -rf` of the same tree on a native directory, in one
run; then what the remote was asked to do, by endpoint.

    bench/rmrf.py [BUILD_DIR] [N]      BUILD_DIR defaults to ./build, N to 20000

Environment:
    RMRF_DIR        where the work directory is made   (default /var/tmp)
    RMRF_FILE_B     bytes in each file                 (default 100)
    RMRF_KEEP=1     keep the work directory (config, daemon log) afterwards
    RMRF_TIMEOUT    seconds allowed for the mount's rm -rf and for the flush
                    (default 1800 each)
    RMRF_TMPFS      a tmpfs directory for a second native figure, from
                    memory (default /dev/shm if it is a tmpfs; "" for none)
    HURACANFS_BIN   the binary (default BUILD_DIR/src/huracanfs)

Steps: the fake holds /Huracan/bench/tree/f00000.txt ... (put "from another
machine"); the native directory (beside the cache, so on the same
filesystem) holds the same tree, and so does a tmpfs directory if there is
one (the native figure without any disk). The mount lists the
folder once (`ls`), as a user who looks before deleting does. Then, with
the fake's counters reset: `rm -rf` natively and through the mount (each
timed), `huracanfs flush --wait` (timed: the remote catching up), and the
request counts and reply bytes per endpoint, the watcher's change feed
included (counted until the counters stop moving). It checks that the remote
folder is gone and that a remount shows nothing of it. It builds nothing.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / 'tests'))
from fakedropbox import FakeDropbox, make_test_ca  # noqa: E402
sys.path.insert(0, str(HERE))
from procs import alive, mounted  # noqa: E402

FUSERMOUNT = shutil.which('fusermount3') or '/usr/bin/fusermount3'
TOKEN = 'fake-static-token'
ROOT = '/Huracan'


def die(msg):
    sys.stderr.write('rmrf: %s\n' % msg)
    sys.exit(1)


def say(msg):
    sys.stderr.write('rmrf: %s\n' % msg)


def timed(args, timeout, cwd=None):
    t0 = time.perf_counter()
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, cwd=cwd)
    t = time.perf_counter() - t0
    if r.returncode:
        die('%s failed (%d): %s' % (' '.join(map(str, args)), r.returncode,
                                     r.stderr.decode(errors='replace')))
    return t


class Mount:
    def __init__(self, binary, work, fake, ca):
        self.bin = binary
        self.mnt = work / 'mnt'
        self.cfg = work / 'config.yaml'
        self.log = work / 'daemon.log'
        self.pid = None
        self.mnt.mkdir()
        long_ = 86400
        text = '\n'.join([
            'dropbox:',
            '  access_token: "%s"' % TOKEN,
            '  sync_interval_learning_seconds: %d' % long_,
            '  sync_interval_logs_seconds: %d' % long_,
            '  sync_interval_models_seconds: %d' % long_,
            '  sync_interval_data_cache_seconds: %d' % long_,
            '  sync_interval_new_data_seconds: %d' % long_,
            '  restore_data_cache_on_startup: false',
            'huracanfs:',
            '  backend: dropbox',
            '  api_url: "%s"' % fake.url,
            '  content_url: "%s"' % fake.url,
            '  notify_url: "%s"' % fake.url,
            '  ca_file: "%s"' % ca,
            '  cache_dir: "%s"' % (work / 'cache'),
            '  sync_interval_other_seconds: %d' % long_,
            '  log_file: "%s"' % self.log,
            '  log_level: info',
            '  flush_timeout_seconds: 3600',
            ''])
        fd = os.open(self.cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as f:
            f.write(text)

    def run(self, *args, timeout=60):
        r = subprocess.run([self.bin] + [str(a) for a in args],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
        if r.returncode:
            die('huracanfs %s failed: %s' % (args[0], r.stderr.decode()))
        return r.stdout.decode()

    def start(self):
        self.run('mount', self.mnt, '--config', self.cfg)
        if not mounted(self.mnt):
            die('huracanfs mount returned 0 but %s is not mounted' % self.mnt)
        self.pid = json.loads(self.run('status', self.mnt, '--json'))['pid']

    def stop(self):
        if mounted(self.mnt):
            subprocess.run([FUSERMOUNT, '-u', str(self.mnt)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if self.pid:
            deadline = time.monotonic() + 120
            while alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if alive(self.pid):
                say('daemon %d did not exit; killing it' % self.pid)
                os.kill(self.pid, 9)
        if mounted(self.mnt):
            subprocess.run([FUSERMOUNT, '-uz', str(self.mnt)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = None


def tmpfs_dir():
    d = os.environ.get('RMRF_TMPFS')
    if d is not None:
        return d or None
    try:
        with open('/proc/self/mountinfo') as f:
            for line in f:
                parts = line.split()
                sep = parts.index('-')
                if parts[4] == '/dev/shm' and parts[sep + 1] == 'tmpfs':
                    return '/dev/shm'
    except (OSError, ValueError, IndexError):
        pass
    return None


def buildinfo(build):
    try:
        p = build / 'meson-info' / 'intro-buildoptions.json'
        opts = {o['name']: o['value'] for o in json.load(open(p))}
        san = opts.get('b_sanitize', 'none')
        return 'buildtype=%s sanitize=%s' % (
            opts.get('buildtype'), ','.join(san) if isinstance(san, list) else san)
    except (OSError, ValueError, KeyError):
        return 'unknown'


def main():
    build = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / 'build').resolve()
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    if n < 1:
        die('N must be at least 1')
    binary = os.environ.get('HURACANFS_BIN') or str(build / 'src/huracanfs')
    if not os.access(binary, os.X_OK):
        die('no huracanfs binary at %s (build first, or pass BUILD_DIR)' % binary)
    if not os.path.exists('/dev/fuse'):
        die('/dev/fuse is missing')
    size = int(os.environ.get('RMRF_FILE_B', '100'))
    limit = int(os.environ.get('RMRF_TIMEOUT', '1800'))
    work = Path(tempfile.mkdtemp(prefix='hfs-rmrf.',
                                 dir=os.environ.get('RMRF_DIR', '/var/tmp')))
    fake = mount = None
    shm = tmpfs_dir()
    shm_work = Path(tempfile.mkdtemp(prefix='hfs-rmrf.', dir=shm)) if shm else None
    try:
        ca = make_test_ca(work / 'ca')
        fake = FakeDropbox(tls=ca).start()
        say('putting %d files of %d bytes on the fake Dropbox and natively'
            % (n, size))
        native = work / 'native' / 'tree'
        native.mkdir(parents=True)
        natives = [native]
        if shm_work:
            natives.append(shm_work / 'tree')
            natives[-1].mkdir()
        for i in range(n):
            name = 'f%05d.txt' % i
            data = (b'%s\n' % name.encode()).ljust(size, b'.')[:size]
            fake.put_file('%s/bench/tree/%s' % (ROOT, name), data)
            for d in natives:
                with open(d / name, 'wb') as f:
                    f.write(data)
        mount = Mount(binary, work, fake, ca[0])
        mount.start()
        tree = mount.mnt / 'bench' / 'tree'
        t_ls = time.perf_counter()
        seen = len(os.listdir(tree))
        t_ls = time.perf_counter() - t_ls
        if seen != n:
            die('the mount lists %d of %d files' % (seen, n))
        time.sleep(1)  # the watcher's first long poll is under way
        subprocess.run(['sync'])
        fake.reset_stats()

        say('rm -rf natively')
        t_native = timed(['rm', '-rf', str(native)], limit)
        t_shm = timed(['rm', '-rf', str(natives[1])], limit) if shm_work else None
        say('rm -rf through the mount')
        t_mount = timed(['rm', '-rf', str(tree)], limit)
        say('flush --wait')
        t0 = time.perf_counter()
        mount.run('flush', mount.mnt, '--wait', timeout=limit)
        t_flush = time.perf_counter() - t0
        # The change feed reports our deletes back to the watcher: count
        # those requests too (until the counters stop moving).
        st = fake.get_stats()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(1)
            now = fake.get_stats()
            if now['routes'] == st['routes']:
                break
            st = now
        left = [e for e in fake.tree()
                if e['path_lower'].startswith('/huracan/bench/tree')]
        if left:
            die('%d entries of the folder are still on the remote' % len(left))
        mount.stop()
        mount.start()
        if os.listdir(mount.mnt / 'bench'):
            die('after a remount the mount shows %s'
                % os.listdir(mount.mnt / 'bench'))
        mount.stop()

        print()
        print('huracanfs rm -rf benchmark  %s' % time.strftime(
            '%Y-%m-%dT%H:%M:%SZ', time.gmtime()))
        print('binary:   %s (%s)' % (binary, buildinfo(build)))
        print('machine:  %d cpus, kernel %s' % (os.cpu_count(), os.uname().release))
        print('tree:     one folder of %d files of %d bytes, listed once by '
              'the mount (ls: %.2f s)' % (n, size, t_ls))
        print('backend:  dropbox, against tests/fakedropbox over HTTPS')
        print()
        print('%-40s %10s' % ('step', 'seconds'))
        print('%-40s %10.3f' % ('rm -rf, native (same filesystem)', t_native))
        if t_shm is not None:
            print('%-40s %10.3f' % ('rm -rf, native on tmpfs (%s)' % shm, t_shm))
        print('%-40s %10.3f' % ('rm -rf, through the mount', t_mount))
        print('%-40s %10.1f' % ('mount / native', t_mount / t_native))
        if t_shm is not None:
            print('%-40s %10.1f' % ('mount / native on tmpfs', t_mount / t_shm))
        print('%-40s %10.3f' % ('flush --wait after it (remote side)', t_flush))
        print()
        print('remote requests during rm -rf and flush (%d in all):'
              % st['requests'])
        print('%-40s %10s %14s' % ('endpoint', 'requests', 'reply bytes'))
        for route in sorted(st['routes']):
            print('%-40s %10d %14d' % (route, st['routes'][route],
                                       st.get('reply_bytes', {}).get(route, 0)))
    finally:
        if mount:
            mount.stop()
        if fake:
            fake.stop()
        if shm_work:
            shutil.rmtree(shm_work, ignore_errors=True)
        if os.environ.get('RMRF_KEEP') == '1':
            say('kept %s' % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()

#!/usr/bin/python3
"""huracanfs against its peers, in one run: the same work on a native
directory, on huracanfs (local backend, uploads held back), on libfuse's
low-level passthrough example (passthrough_ll, over a native directory) and,
if `rclone` is installed, on an rclone mount with the full VFS cache. It
prints each figure natively and each peer's ratio to native, then the FUSE
requests huracanfs served in each phase, per file (or per MiB, per I/O),
from the daemon's own counters (`status --json`, "fuse_requests").

    bench/peers.py [BUILD_DIR] [options]        BUILD_DIR defaults to ./build

Options:
    --quick          64 MiB and 2,000 files, fio for 5 s (about a minute)
    --size-mb N      sequential file, MiB                 (default 1024)
    --files N        small files                          (default 10000)
    --file-kb N      size of each small file, KiB         (default 4)
    --fio-mb N       fio's file, MiB                      (default 256)
    --fio-seconds N  fio's run time per target            (default 20)
    --runs N         rounds; each figure is their median  (default 1)
    --peers LIST     comma-separated, out of native,huracanfs,passthrough_ll,
                     rclone (default: all that are there; native always runs)
    --dir DIR        where the work directory is made     (default /var/tmp)
    --keep           keep the work directory (configs, logs)
    --base BIN       also measure another huracanfs binary (the peer
                     huracanfs@base: a change before and after, one run)

Phases, each on every target in turn (native first):
    seq write     dd if=/dev/zero bs=1M count=SIZE conv=fsync
    seq read      drop the page cache, dd of=/dev/null bs=1M
    create        FILES files of FILE_KB KiB (open, write, close; 100 a
                  directory), then syncfs(2) of the target
    ls -lR cold   drop the page cache, ls -lR of the tree
    ls -lR warm   ls -lR again at once
    stat all      drop the page cache, stat(2) of every file
    delete        unlink(2) of every file, rmdir(2) of the directories
    fio randrw    fio 4 KiB random read/write 50/50, buffered (psync),
                  on a file of FIO_MB MiB, for FIO_SECONDS s

Needs /dev/fuse, fusermount3, build the tree first (`ninja -C build`
builds BUILD_DIR/bench/passthrough_ll from libfuse3-dev's example; without
it that peer is skipped). Optional: `fio` (.ci/install-deps installs it)
and `rclone` (apt-get install rclone); a missing one is skipped with a
note. Root is needed to drop the page cache (/proc/sys/vm/drop_caches);
without it the cold phases run warm and are labelled so. It is a
measurement: it fails only if something does not work.
"""

import argparse
import ctypes
import errno
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from fileops import PER_DIR, paths  # noqa: E402
from procs import alive, mounted  # noqa: E402

FUSERMOUNT = shutil.which('fusermount3') or '/usr/bin/fusermount3'
LIBC = ctypes.CDLL(None, use_errno=True)
LONG = 86400


def die(msg):
    sys.stderr.write('peers: %s\n' % msg)
    sys.exit(1)


def say(msg):
    sys.stderr.write('peers: %s\n' % msg)
    sys.stderr.flush()


def vm_hwm(pid):
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def run(args, timeout=600, **kw):
    r = subprocess.run([str(a) for a in args], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, **kw)
    if r.returncode:
        die('%s failed (%d): %s' % (' '.join(map(str, args)), r.returncode,
                                     r.stderr.decode(errors='replace')))
    return r.stdout.decode(errors='replace')


CAN_DROP = None


def drop_caches():
    """Drops the page, dentry and inode caches (root only)."""
    global CAN_DROP
    os.sync()
    if CAN_DROP is False:
        return
    try:
        with open('/proc/sys/vm/drop_caches', 'w') as f:
            f.write('3\n')
        CAN_DROP = True
    except OSError:
        CAN_DROP = False


SYNCFS_ERRORS = {}  # target directory -> [errno names]


def syncfs(path):
    """syncfs(2) of @path's filesystem. A failure is noted, not fatal: it
    reports a writeback error the kernel recorded on the filesystem since
    the last syncfs (such as a SETATTR the daemon refused while the kernel
    wrote back an inode), which the report shows."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if LIBC.syncfs(fd) != 0:
            e = ctypes.get_errno()
            SYNCFS_ERRORS.setdefault(path, []).append(
                errno.errorcode.get(e, str(e)))
    finally:
        os.close(fd)


# -- targets -------------------------------------------------------------

class Target:
    """Where the work happens: .dir; .start() and .stop() around the run."""
    name = '?'
    pid = None

    def start(self):
        pass

    def stop(self):
        pass

    def requests(self):
        return None


class Native(Target):
    name = 'native'

    def __init__(self, work):
        self.dir = work / 'native'
        self.dir.mkdir()


class FuseChild(Target):
    """A FUSE daemon we run in the foreground as our child."""

    def __init__(self, work, name):
        self.base = work / name
        self.base.mkdir()
        self.dir = self.base / 'mnt'
        self.dir.mkdir()
        self.log = self.base / 'daemon.log'
        self.proc = None

    def command(self):
        raise NotImplementedError

    def start(self):
        with open(self.log, 'ab') as log:
            self.proc = subprocess.Popen(
                [str(a) for a in self.command()], stdin=subprocess.DEVNULL,
                stdout=log, stderr=log)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 30
        while not mounted(self.dir):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                die('%s did not mount (see %s): %s' % (
                    self.name, self.log,
                    self.log.read_text(errors='replace')[-2000:]))
            time.sleep(0.05)
        os.listdir(self.dir)

    def stop(self):
        if self.proc is None:
            return
        if mounted(self.dir):
            subprocess.run([FUSERMOUNT, '-u', str(self.dir)],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            say('%s (pid %d) did not exit; killing it' % (self.name,
                                                          self.proc.pid))
            self.proc.kill()
            self.proc.wait()
        if mounted(self.dir):
            subprocess.run([FUSERMOUNT, '-uz', str(self.dir)],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        self.proc = None


class PassthroughLL(FuseChild):
    name = 'passthrough_ll'

    def __init__(self, work, binary):
        super().__init__(work, 'passthrough_ll')
        self.bin = binary
        self.src = self.base / 'src'
        self.src.mkdir()

    def command(self):
        # As shipped: cache=normal (1 s entry and attribute timeouts),
        # no writeback cache, no xattrs.
        return [self.bin, '-f', '-o', 'source=%s' % self.src, self.dir]


class Rclone(FuseChild):
    name = 'rclone'

    def __init__(self, work, binary):
        super().__init__(work, 'rclone')
        self.bin = binary
        self.remote = self.base / 'remote'
        self.remote.mkdir()
        self.cache = self.base / 'cache'
        self.config = self.base / 'rclone.conf'
        self.config.write_text('')

    def command(self):
        # The full VFS cache; write-back held back for a day, as
        # huracanfs's uploads are.
        return [self.bin, 'mount', self.remote, self.dir,
                '--config', self.config, '--cache-dir', self.cache,
                '--vfs-cache-mode', 'full', '--vfs-write-back', '%ds' % LONG,
                '--log-file', self.log, '--log-level', 'NOTICE']


class Huracanfs(Target):
    name = 'huracanfs'

    def __init__(self, work, binary, name='huracanfs'):
        self.bin = binary
        self.name = name
        self.base = work / name
        self.base.mkdir()
        self.dir = self.base / 'mnt'
        self.dir.mkdir()
        (self.base / 'remote').mkdir()
        self.config = self.base / 'config.yaml'
        text = '\n'.join(
            ['dropbox:']
            + ['  sync_interval_%s_seconds: %d' % (c, LONG)
               for c in ('learning', 'logs', 'models', 'data_cache',
                         'new_data')]
            + ['huracanfs:',
               '  backend: local',
               '  remote_dir: "%s"' % (self.base / 'remote'),
               '  cache_dir: "%s"' % (self.base / 'cache'),
               '  sync_interval_other_seconds: %d' % LONG,
               '  log_file: "%s"' % (self.base / 'daemon.log'),
               '  log_level: info', ''])
        fd = os.open(self.config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                     0o600)
        with os.fdopen(fd, 'w') as f:
            f.write(text)

    def status(self):
        return json.loads(run([self.bin, 'status', self.dir, '--json'],
                              timeout=60))

    def start(self):
        run([self.bin, 'mount', self.dir, '--config', self.config],
            timeout=120)
        if not mounted(self.dir):
            die('huracanfs mount returned 0 but %s is not mounted' % self.dir)
        self.pid = self.status()['pid']

    def requests(self):
        return self.status()['fuse_requests']

    def stop(self):
        if mounted(self.dir):
            subprocess.run([FUSERMOUNT, '-u', str(self.dir)],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        if self.pid:
            deadline = time.monotonic() + 120
            while alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if alive(self.pid):
                say('huracanfs daemon %d did not exit; killing it' % self.pid)
                os.kill(self.pid, 9)
        if mounted(self.dir):
            subprocess.run([FUSERMOUNT, '-uz', str(self.dir)],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        self.pid = None


# -- phases --------------------------------------------------------------
# Each takes the target's directory and returns (rate, items): the rate is
# higher-is-better; items is what the FUSE requests are divided by.

def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def seq_write(d, o):
    f = d / 'big'
    t = timed(lambda: run(['dd', 'if=/dev/zero', 'of=%s' % f, 'bs=1M',
                           'count=%d' % o.size_mb, 'conv=fsync',
                           'status=none']))
    return o.size_mb * 1048576 / 1e6 / t, o.size_mb


def seq_read(d, o):
    f = d / 'big'
    drop_caches()
    t = timed(lambda: run(['dd', 'if=%s' % f, 'of=/dev/null', 'bs=1M',
                           'status=none']))
    os.unlink(f)
    return o.size_mb * 1048576 / 1e6 / t, o.size_mb


def create(d, o):
    root = d / 'files'
    data = b'x' * (o.file_kb * 1024)

    def work():
        os.mkdir(root)
        for i, p in enumerate(paths(str(root), o.files)):
            if i % PER_DIR == 0:
                os.mkdir(os.path.dirname(p))
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, data)
            os.close(fd)
        syncfs(str(d))
    return o.files / timed(work), o.files


def lsr_cold(d, o):
    drop_caches()
    return lsr_warm(d, o)


def lsr_warm(d, o):
    t = timed(lambda: subprocess.run(['ls', '-lR', str(d / 'files')],
                                     stdout=subprocess.DEVNULL, check=True))
    return o.files / t, o.files


def stat_all(d, o):
    drop_caches()
    ps = list(paths(str(d / 'files'), o.files))

    def work():
        for p in ps:
            os.stat(p)
    return o.files / timed(work), o.files


def delete(d, o):
    root = str(d / 'files')

    def work():
        for p in paths(root, o.files):
            os.unlink(p)
        for i in range(0, o.files, PER_DIR):
            os.rmdir(os.path.join(root, 'd%04d' % (i // PER_DIR)))
        os.rmdir(root)
    return o.files / timed(work), o.files


def fio(d, o):
    out = run(['fio', '--name=randrw', '--directory=%s' % d,
               '--filename=fio.dat', '--size=%dM' % o.fio_mb, '--bs=4k',
               '--rw=randrw', '--rwmixread=50', '--ioengine=psync',
               '--direct=0', '--fallocate=none', '--randrepeat=1',
               '--time_based', '--runtime=%d' % o.fio_seconds,
               '--output-format=json'], timeout=o.fio_seconds * 10 + 600)
    job = json.loads(out[out.index('{'):])['jobs'][0]
    iops = job['read']['iops'] + job['write']['iops']
    ios = job['read']['total_ios'] + job['write']['total_ios']
    os.unlink(d / 'fio.dat')
    return iops, max(ios, 1)


def phases(o):
    c = 'cold' if CAN_DROP is not False else 'warm (no drop_caches)'
    ph = [
        ('seq write %d MiB, dd conv=fsync' % o.size_mb, 'MB/s', 'MiB',
         seq_write),
        ('seq read, page cache dropped' if c == 'cold'
         else 'seq read, warm', 'MB/s', 'MiB', seq_read),
        ('create %d x %d KiB + syncfs' % (o.files, o.file_kb), 'files/s',
         'file', create),
        ('ls -lR, %s' % c, 'files/s', 'file', lsr_cold),
        ('ls -lR, warm', 'files/s', 'file', lsr_warm),
        ('stat all, %s' % c, 'files/s', 'file', stat_all),
        ('delete the tree', 'files/s', 'file', delete),
    ]
    if shutil.which('fio'):
        ph.append(('fio 4 KiB randrw 50/50, buffered', 'IOPS', 'I/O', fio))
    return ph


# -- report --------------------------------------------------------------

def buildinfo(build):
    try:
        p = build / 'meson-info' / 'intro-buildoptions.json'
        opts = {x['name']: x['value'] for x in json.load(open(p))}
        san = opts.get('b_sanitize', 'none')
        return 'buildtype=%s sanitize=%s' % (
            opts.get('buildtype'),
            ','.join(san) if isinstance(san, list) else san)
    except (OSError, ValueError, KeyError):
        return 'unknown'


def fs_type(path):
    r = subprocess.run(['df', '--output=fstype', str(path)],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    lines = r.stdout.decode().split()
    return lines[-1] if lines else '?'


def req_delta(before, after):
    d = {k: after[k] - before.get(k, 0) for k in after}
    d['getxattr'] -= 1  # the status call's own (control socket lookup)
    return {k: v for k, v in d.items() if v}


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='See the top of bench/peers.py and bench/README.md.')
    ap.add_argument('build', nargs='?', default=str(REPO / 'build'))
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--size-mb', type=int)
    ap.add_argument('--files', type=int)
    ap.add_argument('--file-kb', type=int, default=4)
    ap.add_argument('--fio-mb', type=int)
    ap.add_argument('--fio-seconds', type=int)
    ap.add_argument('--runs', type=int, default=1)
    ap.add_argument('--peers', default='huracanfs,passthrough_ll,rclone')
    ap.add_argument('--dir', default='/var/tmp')
    ap.add_argument('--keep', action='store_true')
    ap.add_argument('--base')
    o = ap.parse_args()
    o.size_mb = o.size_mb or (64 if o.quick else 1024)
    o.files = o.files or (2000 if o.quick else 10000)
    o.fio_mb = o.fio_mb or (64 if o.quick else 256)
    o.fio_seconds = o.fio_seconds or (5 if o.quick else 20)
    if min(o.size_mb, o.files, o.file_kb, o.fio_mb, o.fio_seconds,
           o.runs) < 1:
        die('sizes, counts and --runs must be at least 1')
    want = [p for p in o.peers.split(',') if p and p != 'native']
    for p in want:
        if p not in ('huracanfs', 'passthrough_ll', 'rclone'):
            die('unknown peer %s' % p)

    build = Path(o.build).resolve()
    hfs_bin = os.environ.get('HURACANFS_BIN') or str(build / 'src/huracanfs')
    pll_bin = build / 'bench' / 'passthrough_ll'
    if not os.path.exists('/dev/fuse') or not os.access(FUSERMOUNT, os.X_OK):
        die('/dev/fuse or fusermount3 is missing')
    notes = []
    work = Path(tempfile.mkdtemp(prefix='hfs-peers.', dir=o.dir))
    need = (o.size_mb * 2 + o.fio_mb * 2
            + o.files * (o.file_kb + 4) // 1024 * 2 + 256)
    st = os.statvfs(work)
    if st.f_bavail * st.f_frsize // 1048576 < need:
        shutil.rmtree(work)
        die('%s has less than the %d MiB free the run needs' % (work, need))

    targets = [Native(work)]
    if 'huracanfs' in want:
        if not os.access(hfs_bin, os.X_OK):
            die('no huracanfs binary at %s (build first, or pass BUILD_DIR)'
                % hfs_bin)
        targets.append(Huracanfs(work, hfs_bin))
    if o.base:
        if not os.access(o.base, os.X_OK):
            die('no huracanfs binary at %s' % o.base)
        targets.append(Huracanfs(work, o.base, 'huracanfs@base'))
    if 'passthrough_ll' in want:
        if os.access(pll_bin, os.X_OK):
            targets.append(PassthroughLL(work, pll_bin))
        else:
            notes.append('passthrough_ll: skipped, no %s (install '
                         'libfuse3-dev, then ninja -C %s)' % (pll_bin, build))
    if 'rclone' in want:
        rc = shutil.which('rclone')
        if rc:
            targets.append(Rclone(work, rc))
        else:
            notes.append('rclone: skipped, not installed '
                         '(apt-get install rclone)')
    if not shutil.which('fio'):
        notes.append('fio: skipped, not installed (apt-get install fio, or '
                     '.ci/install-deps)')

    drop_caches()
    if CAN_DROP is False:
        notes.append('cold phases run warm: cannot write '
                     '/proc/sys/vm/drop_caches (run as root)')
    ph = phases(o)
    # values[phase][target] = [rate per round]; reqs[phase] = [dict per round]
    values = {p[0]: {t.name: [] for t in targets} for p in ph}
    reqs = {t.name: {p[0]: [] for p in ph} for t in targets}
    items = {}
    hwm = {}
    try:
        for t in targets:
            say('starting %s' % t.name)
            t.start()
        for rnd in range(o.runs):
            for name, unit, per, fn in ph:
                say('round %d/%d: %s' % (rnd + 1, o.runs, name))
                for t in targets:
                    before = t.requests()
                    rate, n = fn(t.dir, o)
                    values[name][t.name].append(rate)
                    if before is not None:
                        reqs[t.name][name].append(
                            (req_delta(before, t.requests()), n))
                    items[name] = per
        for t in targets:
            if t.pid:
                hwm[t.name] = vm_hwm(t.pid)
    finally:
        for t in targets:
            try:
                t.stop()
            except Exception as e:  # keep stopping the others
                say('stopping %s: %r' % (t.name, e))
        if o.keep:
            say('kept %s' % work)
        else:
            shutil.rmtree(work, ignore_errors=True)

    names = [t.name for t in targets]
    print()
    print('huracanfs and peers  %s' % time.strftime('%Y-%m-%dT%H:%M:%SZ',
                                                    time.gmtime()))
    print('binary:    %s (%s)' % (hfs_bin, buildinfo(build)))
    if o.base:
        print('base:      %s (huracanfs@base)' % o.base)
    print('machine:   %d cpus, %.0f GiB, kernel %s; work dir on %s' % (
        os.cpu_count(), os.sysconf('SC_PHYS_PAGES') * os.sysconf(
            'SC_PAGE_SIZE') / 2**30, os.uname().release, fs_type(o.dir)))
    print('peers:     huracanfs: local backend, upload intervals %d s; '
          'passthrough_ll: libfuse example as shipped; rclone: '
          '--vfs-cache-mode full, write-back %d s' % (LONG, LONG))
    print('figures:   %s; median of %d round(s); higher is better; '
          'peers as ratio to native' % (
              'rates', o.runs))
    for t in targets:
        errs = SYNCFS_ERRORS.get(str(t.dir))
        if errs:
            notes.append('%s: syncfs failed %d time(s) (%s): a writeback '
                         'error recorded earlier on the filesystem' % (
                             t.name, len(errs), ', '.join(sorted(set(errs)))))
    for n in notes:
        print('note:      %s' % n)
    print()
    w = max(len(p[0]) for p in ph) + 1
    head = '%-*s %-8s %12s' % (w, 'figure', 'unit', 'native')
    for n in names[1:]:
        head += ' %15s' % n
    print(head)
    print('-' * len(head))
    med = {}
    for name, unit, per, fn in ph:
        med[name] = {n: statistics.median(values[name][n]) for n in names}
        nat = med[name]['native']
        line = '%-*s %-8s %12.1f' % (w, name, unit, nat)
        for n in names[1:]:
            line += ' %15s' % ('%.2f' % (med[name][n] / nat) if nat else '-')
        print(line)
    if len(names) > 1:
        print()
        print('absolute figures (same units):')
        head = '%-*s' % (w, 'figure') + ''.join(' %15s' % n for n in names)
        print(head)
        for name, unit, per, fn in ph:
            print('%-*s' % (w, name)
                  + ''.join(' %15.1f' % med[name][n] for n in names))
    if hwm:
        print()
        print('peak RSS (VmHWM): ' + ', '.join(
            '%s %.1f MiB' % (n, v / 1024) for n, v in hwm.items() if v))
    for tname, treqs in reqs.items():
        if not any(treqs.values()):
            continue
        print()
        print('%s: FUSE requests per phase (status --json '
              'fuse_requests, before/after; last round)' % tname)
        print('%-*s %9s %10s  %s' % (w, 'phase', 'requests', 'per item',
                                     'by operation, per item'))
        for name, unit, per, fn in ph:
            if not treqs[name]:
                continue
            d, n = treqs[name][-1]
            total = sum(d.values())
            ops = sorted(d.items(), key=lambda kv: -kv[1])
            shown = [(k, v) for k, v in ops if v / n >= 0.005]
            by = ' '.join('%s %.2f' % (k, v / n) for k, v in shown)
            rest = sum(v for k, v in ops) - sum(v for k, v in shown)
            if rest:
                by += ' (+%d more)' % rest
            print('%-*s %9d %10s  %s' % (w, name, total,
                                         '%.2f/%s' % (total / n, per), by))


if __name__ == '__main__':
    main()

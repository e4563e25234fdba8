#!/usr/bin/python3
"""huracanfs partial reads: what a columnar query of a remote-only file
downloads. A parquet-shaped file (row groups of column chunks, a footer)
is put on the fake Dropbox (tests/fakedropbox, over HTTPS on 127.0.0.1,
run in this process); through a fresh mount a reader reads it as a
parquet reader does for a query of some of its columns: the last 8 bytes
(footer length and magic), the footer, then the chunks of the selected
columns of every row group, each in one pread. The fake's byte counters
say what the mount downloaded for it. A sequential reader of a second
file (1 MiB reads) is the other row: it must still download the file once,
in few requests.

    bench/partial_read.py [BUILD_DIR] [--size-mb N] [--row-groups N]
                          [--columns 1,4] [--threads N] [--dir DIR] [--keep]

    --size-mb     the file, MiB (default 88)
    --row-groups  row groups (default 10)
    --columns     the columns read, of 6 (default 1,4: about 35% of the
                  file, as the query of issue 12)
    --threads     readers, one row group at a time each (default 1;
                  DuckDB reads row groups in parallel)

pyarrow and DuckDB are not packaged by Debian 12, so the access pattern
is simulated; the column chunks have the sizes a real file of candles
had (weights in COLUMN_WEIGHTS). It builds nothing, and is a measurement:
it fails only if something does not work (a byte read differs).
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / 'tests'))
from fakedropbox import FakeDropbox, make_test_ca  # noqa: E402
sys.path.insert(0, str(HERE))
from procs import alive, mounted  # noqa: E402

FUSERMOUNT = shutil.which('fusermount3') or '/usr/bin/fusermount3'
TOKEN = 'fake-static-token'  # the fake's static token, not a secret
ROOT = '/Huracan'
MiB = 1048576
# Relative sizes of the 6 column chunks of a row group (timestamp, open,
# high, low, close, volume of a candles file): 2 of them ~35%.
COLUMN_WEIGHTS = (0.12, 0.19, 0.16, 0.16, 0.16, 0.21)
FOOTER = 48 * 1024


def die(msg):
    sys.stderr.write('partial_read: %s\n' % msg)
    sys.exit(1)


def say(msg):
    sys.stderr.write('partial_read: %s\n' % msg)
    sys.stderr.flush()


def run(args, timeout=3600):
    r = subprocess.run([str(a) for a in args], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    if r.returncode:
        die('%s failed (%d): %s' % (os.path.basename(str(args[0])),
                                     r.returncode,
                                     r.stderr.decode(errors='replace')))
    return r.stdout.decode(errors='replace')


def layout(size, groups):
    """[(group, column, offset, length)] of the column chunks, and the
    footer's offset: 'PAR1', the chunks, the footer, its length, 'PAR1'."""
    rng = random.Random(12)
    body = size - 4 - FOOTER - 8
    per_group = body // groups
    chunks, off = [], 4
    for g in range(groups):
        left = per_group if g < groups - 1 else body - per_group * g
        for c, w in enumerate(COLUMN_WEIGHTS):
            n = int(left * w * rng.uniform(0.9, 1.1)) if c < 5 else \
                left - sum(x[3] for x in chunks if x[0] == g)
            chunks.append((g, c, off, n))
            off += n
    return chunks, off


class Mount:
    def __init__(self, binary, work, fake, ca):
        self.bin = binary
        self.mnt = work / 'mnt'
        self.cfg = work / 'config.yaml'
        self.pid = None
        self.mnt.mkdir()
        text = '\n'.join(
            ['dropbox:', '  access_token: "%s"' % TOKEN]
            + ['  sync_interval_%s_seconds: 86400' % c
               for c in ('learning', 'logs', 'models', 'data_cache',
                         'new_data')]
            + ['  restore_data_cache_on_startup: false',
               'huracanfs:',
               '  backend: dropbox',
               '  api_url: "%s"' % fake.url,
               '  content_url: "%s"' % fake.url,
               '  notify_url: "%s"' % fake.url,
               '  ca_file: "%s"' % ca,
               '  cache_dir: "%s"' % (work / 'cache'),
               '  sync_interval_other_seconds: 86400',
               '  log_file: "%s"' % (work / 'daemon.log'),
               '  log_level: %s' % os.environ.get('PARTIAL_LOG', 'info'), ''])
        fd = os.open(self.cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as f:
            f.write(text)

    def start(self):
        run([self.bin, 'mount', self.mnt, '--config', self.cfg], timeout=120)
        if not mounted(self.mnt):
            die('huracanfs mount returned 0 but %s is not mounted' % self.mnt)
        self.pid = json.loads(run([self.bin, 'status', self.mnt,
                                   '--json']))['pid']

    def stop(self):
        if mounted(self.mnt):
            subprocess.run([FUSERMOUNT, '-u', str(self.mnt)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if self.pid:
            deadline = time.monotonic() + 300
            while alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if alive(self.pid):
                say('daemon %d did not exit; killing it' % self.pid)
                os.kill(self.pid, 9)
        self.pid = None


def measure(fake, fn):
    s0 = fake.get_stats()
    t0 = time.perf_counter()
    read = fn()
    t = time.perf_counter() - t0
    s1 = fake.get_stats()
    return (read, s1['bytes_downloaded'] - s0['bytes_downloaded'],
            s1['requests'] - s0['requests'], t)


def query(path, data, chunks, columns, threads):
    """The reads of a parquet reader; returns the bytes read."""
    size = len(data)
    fd = os.open(path, os.O_RDONLY)
    total = [0]
    lock = threading.Lock()

    def pread(n, off):
        b = os.pread(fd, n, off)
        if b != data[off:off + n]:
            die('bytes [%d, +%d) differ from the remote file' % (off, n))
        with lock:
            total[0] += n

    try:
        pread(8, size - 8)
        pread(FOOTER, size - 8 - FOOTER)
        groups = sorted({g for g, _, _, _ in chunks})
        todo = list(groups)

        def worker():
            while True:
                with lock:
                    if not todo:
                        return
                    g = todo.pop(0)
                for gg, c, off, n in chunks:
                    if gg == g and c in columns:
                        pread(n, off)

        ts = [threading.Thread(target=worker) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        os.close(fd)
    return total[0]


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('build', nargs='?', default=str(REPO / 'build'))
    ap.add_argument('--size-mb', type=int, default=88)
    ap.add_argument('--row-groups', type=int, default=10)
    ap.add_argument('--columns', default='1,4')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--dir', default='/var/tmp')
    ap.add_argument('--keep', action='store_true')
    o = ap.parse_args()
    columns = {int(x) for x in o.columns.split(',')}
    if not columns <= set(range(6)):
        die('--columns are of 0..5')
    build = Path(o.build).resolve()
    binary = os.environ.get('HURACANFS_BIN') or str(build / 'src/huracanfs')
    if not os.access(binary, os.X_OK):
        die('no huracanfs binary at %s (build first, or pass BUILD_DIR)'
            % binary)
    size = o.size_mb * MiB
    work = Path(tempfile.mkdtemp(prefix='hfs-partial.', dir=o.dir))
    tempfile.tempdir = str(work)
    fake = mount = None
    try:
        ca = make_test_ca(work / 'ca')
        fake = FakeDropbox(tls=ca, allocated=4 * size + (1 << 30)).start()
        data = os.urandom(size)
        chunks, foot = layout(size, o.row_groups)
        assert foot == size - 8 - FOOTER, (foot, size)
        fake.put_file(ROOT + '/bench/q.parquet', data)
        fake.put_file(ROOT + '/bench/seq.bin', data)
        mount = Mount(binary, work, fake, ca[0])
        mount.start()
        q = mount.mnt / 'bench' / 'q.parquet'
        if os.stat(q).st_size != size:  # lists /bench, not timed
            die('the mount shows %s with %d bytes' % (q, os.stat(q).st_size))
        want = sum(n for _, c, _, n in chunks if c in columns) + FOOTER + 8
        say('query of columns %s (%d threads)' % (
            ','.join(map(str, sorted(columns))), o.threads))
        rq = measure(fake, lambda: query(q, data, chunks, columns,
                                          o.threads))
        if rq[0] != want:
            die('the query read %d bytes, not %d' % (rq[0], want))
        s = mount.mnt / 'bench' / 'seq.bin'

        def seq():
            with open(s, 'rb', buffering=0) as f:
                off = 0
                while True:
                    b = f.read(MiB)
                    if not b:
                        break
                    if b != data[off:off + len(b)]:
                        die('%s differs at %d' % (s, off))
                    off += len(b)
            if off != size:
                die('%s: read %d bytes of %d' % (s, off, size))
            return size
        say('sequential read (1 MiB reads)')
        rs = measure(fake, seq)
        mount.stop()
    finally:
        if mount:
            mount.stop()
        if fake:
            fake.stop()
        if o.keep:
            say('kept %s' % work)
        else:
            shutil.rmtree(work, ignore_errors=True)

    print('file:   %d MiB, %d row groups x 6 columns, footer %d KiB; '
          'columns read: %s' % (o.size_mb, o.row_groups, FOOTER // 1024,
                                ','.join(map(str, sorted(columns)))))
    print('binary: %s' % binary)
    print()
    print('%-26s %10s %12s %6s %9s %12s %9s' % (
        'reader', 'read MiB', 'fetched MiB', 'reqs', 'seconds',
        'fetched/read', 'of file'))
    for name, (read, got, reqs, t) in (
            ('query, %d of 6 columns' % len(columns), rq),
            ('sequential, 1 MiB reads', rs)):
        print('%-26s %10.1f %12.1f %6d %9.3f %12.2f %8.0f%%' % (
            name, read / MiB, got / MiB, reqs, t, got / read,
            100.0 * got / size))


if __name__ == '__main__':
    main()

#!/usr/bin/python3
"""huracanfs bandwidth limits: the rate achieved under
upload_bytes_per_second / download_bytes_per_second against the limit,
through a mount on the Dropbox backend and the fake Dropbox
(tests/fakedropbox, over HTTPS on 127.0.0.1, run in this process, as
bench/transfer.py does). The limits are set at run time with
`huracanfs limit MNT --up RATE --down RATE`, as an operator would.

    bench/limit.py [BUILD_DIR] [--rates 2M,8M] [--seconds S] [--files N]
                   [--dir DIR] [--keep]

    --rates    the limits to measure (binary units, 4M = 4 MiB/s);
               default 2M,8M
    --seconds  how long each transfer should take at the limit (default 6):
               the bytes moved are RATE * SECONDS
    --files    that many files moved at once (default 4, one per category:
               learning, logs, models, other), so the limit must hold across
               several connections together, not per connection
    --dir      where the work directory is made (default /var/tmp)
    --keep     keep the work directory (config, daemon log)

For each rate:
  upload    N files of RATE*SECONDS/N random bytes written into the mount
            (not timed), then the timed `huracanfs flush --wait`; the
            remote's content is checked
  download  the same bytes put on the fake "by another machine", read
            through a fresh mount (nothing cached) by N readers at once
            (timed); checked against what was put
and once without a limit, for reference. It prints the achieved MiB/s, the
ratio achieved/limit and whether that is within 10% of the limit (the
issue's goal). It is a measurement: it fails only if something does not
work, never on a number.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import transfer  # noqa: E402  (the Mount helper, the fake, run())
from transfer import REPO, ROOT, MiB, Mount, die, run, say  # noqa: E402
from fakedropbox import FakeDropbox, make_test_ca  # noqa: E402

DIRS = ['logs/learning', 'logs', 'models', 'other']


def parse_rate(s):
    units = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}
    s = s.strip().upper().rstrip('B').rstrip('I')
    if s and s[-1] in units:
        return int(float(s[:-1]) * units[s[-1]])
    return int(s)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def up_round(mount, fake, rate, total, nfiles, tag):
    """Writes nfiles files (not timed), then times flush --wait."""
    per = total // nfiles
    files = {}
    for i in range(nfiles):
        rel = '%s/up-%s-%d.bin' % (DIRS[i % len(DIRS)], tag, i)
        data = os.urandom(per)
        p = mount.mnt / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, 'wb') as f:
            f.write(data)
            os.fsync(f.fileno())
        files[rel] = sha(data)
    mount.hfs('limit', mount.mnt, '--up', str(rate))
    t0 = time.perf_counter()
    mount.hfs('flush', mount.mnt, '--wait')
    t = time.perf_counter() - t0
    for rel, h in files.items():
        if sha(fake.get_file(ROOT + '/' + rel)) != h:
            die('the remote holds other bytes for %s' % rel)
    return per * nfiles, t


def down_round(binary, work, fake, ca, rate, total, nfiles, tag):
    """Puts nfiles files on the fake, then times N readers of a fresh
    mount."""
    per = total // nfiles
    files = {}
    for i in range(nfiles):
        rel = 'down/%s-%d.bin' % (tag, i)
        data = os.urandom(per)
        fake.put_file(ROOT + '/' + rel, data)
        files[rel] = sha(data)
    mdir = work / ('m-%s' % tag)
    mdir.mkdir()
    mount = Mount(binary, mdir, fake, ca)
    mount.start()
    try:
        mount.hfs('limit', mount.mnt, '--down', str(rate))
        for rel in files:  # list and stat first: not timed
            os.stat(mount.mnt / rel)
        got, errs = {}, []

        def read(rel):
            try:
                h = hashlib.sha256()
                with open(mount.mnt / rel, 'rb') as f:
                    while True:
                        b = f.read(MiB)
                        if not b:
                            break
                        h.update(b)
                got[rel] = h.hexdigest()
            except OSError as e:
                errs.append('%s: %s' % (rel, e))

        threads = [threading.Thread(target=read, args=(rel,))
                   for rel in files]
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        t = time.perf_counter() - t0
        if errs:
            die('reading through the mount: %s' % '; '.join(errs))
        if got != files:
            die('the mount read other bytes than the fake holds')
    finally:
        mount.stop()
    return per * nfiles, t


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('build', nargs='?', default=str(REPO / 'build'))
    ap.add_argument('--rates', default='2M,8M')
    ap.add_argument('--seconds', type=float, default=6.0)
    ap.add_argument('--files', type=int, default=4)
    ap.add_argument('--dir', default='/var/tmp')
    ap.add_argument('--keep', action='store_true')
    o = ap.parse_args()
    rates = [parse_rate(r) for r in o.rates.split(',')]
    if min(rates) < 4096 or o.files < 1 or o.seconds <= 0:
        die('rates of at least 4K, --files >= 1, --seconds > 0')
    build = Path(o.build).resolve()
    binary = os.environ.get('HURACANFS_BIN') or str(build / 'src/huracanfs')
    if not os.access(binary, os.X_OK):
        die('no huracanfs binary at %s' % binary)
    work = Path(tempfile.mkdtemp(prefix='hfs-limit.', dir=o.dir))
    tempfile.tempdir = str(work)
    total_all = sum(int(r * o.seconds) for r in rates) * 2 + 64 * MiB
    fake = mount = None
    rows = []  # (direction, limit, bytes, seconds)
    try:
        ca = make_test_ca(work / 'ca')
        fake = FakeDropbox(tls=ca, allocated=total_all * 4 + (1 << 30)
                           ).start()
        mount = Mount(binary, work, fake, ca[0])
        mount.start()
        for rate in [0] + rates:
            # Unlimited: as many bytes as the largest limited round.
            total = int((rate or max(rates)) * o.seconds)
            total -= total % o.files
            tag = 'r%d' % rate
            say('upload, limit %s, %.1f MiB' % (rate or 'none', total / MiB))
            n, t = up_round(mount, fake, rate, total, o.files, tag)
            rows.append(('upload', rate, n, t))
        mount.hfs('limit', mount.mnt, '--up', '0')
        mount.stop()
        mount = None
        for rate in [0] + rates:
            total = int((rate or max(rates)) * o.seconds)
            total -= total % o.files
            tag = 'r%d' % rate
            say('download, limit %s, %.1f MiB' % (rate or 'none',
                                                   total / MiB))
            n, t = down_round(binary, work, fake, ca[0], rate, total,
                              o.files, tag)
            rows.append(('download', rate, n, t))
    finally:
        if mount:
            mount.stop()
        if fake:
            fake.stop()
        if o.keep:
            say('kept %s' % work)
        else:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print('huracanfs bandwidth limits  %s' % time.strftime(
        '%Y-%m-%dT%H:%M:%SZ', time.gmtime()))
    print('binary:   %s (%s)' % (binary, transfer.buildinfo(build)))
    print('server:   tests/fakedropbox over HTTPS on 127.0.0.1; %d files '
          'at once; limits set with `huracanfs limit`' % o.files)
    print('columns:  MiB/s = 2^20 bytes/s (the unit of the limits); '
          'achieved/limit; within 10%')
    print()
    print('%-9s %10s %9s %9s %9s %9s %7s' % (
        'direction', 'limit', 'MiB', 'seconds', 'MiB/s', 'ratio',
        'in 10%'))
    for what, rate, n, t in rows:
        got = n / t
        print('%-9s %10s %9.1f %9.2f %9.2f %9s %7s' % (
            what, '%.1f MiB/s' % (rate / MiB) if rate else 'none', n / MiB,
            t, got / MiB, '%.3f' % (got / rate) if rate else '-',
            ('yes' if abs(got / rate - 1) <= 0.10 else 'NO') if rate
            else '-'))
    print(json.dumps({'rows': [{'direction': w, 'limit': r, 'bytes': n,
                                'seconds': round(t, 3)}
                               for w, r, n, t in rows]}))


if __name__ == '__main__':
    main()

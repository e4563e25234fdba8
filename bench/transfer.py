#!/usr/bin/python3
"""huracanfs transfers against curl: a lazy download and an upload through
a mount on the Dropbox backend, beside `curl` moving the same bytes to and
from the same fake Dropbox (tests/fakedropbox, over HTTPS on 127.0.0.1,
run in this process), in one run. It prints MB/s (10^6 bytes/s) for both
and the ratio mount/curl.

    bench/transfer.py [BUILD_DIR] [--quick] [--sizes MiB,MiB,...]
                      [--dir DIR] [--keep]

    --sizes    file sizes in MiB (default 64,256,1024; --quick: 64,256)
    --dir      where the work directory is made (default /var/tmp): the
               fake's blobs, the mount's cache and curl's files all live
               there, on one filesystem
    --keep     keep the work directory (config, daemon log)

For each size, a file of random bytes SRC, then:
  curl upload     upload_session/start with the first chunk, append_v2 for
                  each next one, finish (empty): the daemon's own sequence
                  for a file above its single-request limit, with its
                  chunk size (32 MiB); one curl process for the start, one
                  for the rest (one kept-alive connection, as the daemon's)
  curl download   /2/files/download of that file into a file beside the
                  cache
  mount download  a fresh mount (nothing in its cache): stat, then the
                  timed `dd if=MNT/FILE of=/dev/null bs=1M` (the lazy
                  fetch of a remote-only file); checked against SRC
  mount upload    dd of SRC into the mount (not timed), then the timed
                  `huracanfs flush --wait`; the remote's content hash is
                  checked
Each row also shows the bytes the fake counted (download amplification
shows there), the CPU time of this process (the fake's threads: near
100% of one core means the fake is the bottleneck) and of the daemon.

Needs /dev/fuse, fusermount3, curl and the openssl CLI. It builds nothing,
and is a measurement: it fails only if something does not work.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / 'tests'))
from fakedropbox import FakeDropbox, content_hash, make_test_ca  # noqa: E402
sys.path.insert(0, str(HERE))
from procs import alive, mounted  # noqa: E402

FUSERMOUNT = shutil.which('fusermount3') or '/usr/bin/fusermount3'
TOKEN = 'fake-static-token'  # the fake's static token, not a secret
ROOT = '/Huracan'
CHUNK = 32 * 1048576  # the daemon's upload chunk (backend_dropbox.c)
MiB = 1048576
TICK = os.sysconf('SC_CLK_TCK')


def die(msg):
    sys.stderr.write('transfer: %s\n' % msg)
    sys.exit(1)


def say(msg):
    sys.stderr.write('transfer: %s\n' % msg)
    sys.stderr.flush()


def cpu_of(pid):
    """utime + stime of @pid in seconds, or 0."""
    try:
        with open('/proc/%d/stat' % pid, 'rb') as f:
            data = f.read()
    except OSError:
        return 0.0
    fields = data[data.rindex(b')') + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def self_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(args, timeout=3600):
    r = subprocess.run([str(a) for a in args], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    if r.returncode:
        die('%s failed (%d): %s' % (os.path.basename(str(args[0])),
                                     r.returncode,
                                     r.stderr.decode(errors='replace')))
    return r.stdout.decode(errors='replace')


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
               '  log_level: info',
               '  flush_timeout_seconds: 3600', ''])
        fd = os.open(self.cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as f:
            f.write(text)

    def hfs(self, *args, timeout=3600):
        return run([self.bin] + list(args), timeout=timeout)

    def start(self):
        self.hfs('mount', self.mnt, '--config', self.cfg, timeout=120)
        if not mounted(self.mnt):
            die('huracanfs mount returned 0 but %s is not mounted' % self.mnt)
        self.pid = json.loads(self.hfs('status', self.mnt, '--json'))['pid']

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
        if mounted(self.mnt):
            subprocess.run([FUSERMOUNT, '-uz', str(self.mnt)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = None


class Curl:
    def __init__(self, fake, ca):
        self.url = fake.url
        # Options of each request (repeated after every --next).
        self.base = ['-sS', '--cacert', ca,
                     '-H', 'Authorization: Bearer %s' % TOKEN]

    @staticmethod
    def arg(obj):
        return 'Dropbox-API-Arg: %s' % json.dumps(obj, separators=(',', ':'))

    def upload_args(self, route, arg, body):
        return ['-X', 'POST', self.url + '/2/' + route,
                '-H', 'Content-Type: application/octet-stream',
                '-H', self.arg(arg), '--data-binary', '@%s' % body]

    def codes(self, args):
        """Runs curl on @args; checks every request answered 200."""
        out = run(['curl'] + self.base + args)
        lines = out.split('\n')
        codes = [l for l in lines if l.startswith('HTTP=')]
        if not codes or any(c != 'HTTP=200' for c in codes):
            die('curl: %s' % out[-2000:])
        return lines

    def upload(self, chunks, path, empty):
        """upload_session/start with chunks[0], append_v2 of the others,
        finish with an empty body."""
        out = self.codes(self.upload_args(
            'files/upload_session/start', {'close': False}, chunks[0])
            + ['-w', '\nHTTP=%{http_code}\n'])
        sid = json.loads(out[0])['session_id']
        args, off = [], os.path.getsize(chunks[0])
        for c in chunks[1:]:
            if args:
                args.append('--next')
                args += self.base
            args += self.upload_args(
                'files/upload_session/append_v2',
                {'cursor': {'session_id': sid, 'offset': off},
                 'close': False}, c)
            args += ['-o', '/dev/null', '-w', 'HTTP=%{http_code}\n']
            off += os.path.getsize(c)
        if args:
            args.append('--next')
            args += self.base
        args += self.upload_args(
            'files/upload_session/finish',
            {'cursor': {'session_id': sid, 'offset': off},
             'commit': {'path': path, 'mode': 'overwrite'}}, empty)
        args += ['-o', '/dev/null', '-w', 'HTTP=%{http_code}\n']
        self.codes(args)

    def download(self, path, out):
        self.codes(['-X', 'POST', self.url + '/2/files/download',
                    '-H', self.arg({'path': path}), '-o', str(out),
                    '-w', 'HTTP=%{http_code}\n'])


def measure(fake, fn, daemon=None):
    """Runs @fn; returns (seconds, fake stats delta, our CPU s, daemon
    CPU s)."""
    s0 = fake.get_stats()
    c0, d0 = self_cpu(), cpu_of(daemon) if daemon else 0.0
    t0 = time.perf_counter()
    fn()
    t = time.perf_counter() - t0
    c1, d1 = self_cpu(), cpu_of(daemon) if daemon else 0.0
    s1 = fake.get_stats()
    delta = {k: s1.get(k, 0) - s0.get(k, 0)
             for k in ('bytes_uploaded', 'bytes_downloaded', 'requests')}
    return t, delta, c1 - c0, d1 - d0


def entry(fake, path):
    for e in fake.tree():
        if e.get('path_lower') == path.lower():
            return e
    return None


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


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='See the top of bench/transfer.py and bench/README.md.')
    ap.add_argument('build', nargs='?', default=str(REPO / 'build'))
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--sizes')
    ap.add_argument('--dir', default='/var/tmp')
    ap.add_argument('--keep', action='store_true')
    o = ap.parse_args()
    sizes = [int(x) for x in (o.sizes or ('64,256' if o.quick
                                          else '64,256,1024')).split(',')]
    if min(sizes) < 1:
        die('sizes must be at least 1 MiB')
    build = Path(o.build).resolve()
    binary = os.environ.get('HURACANFS_BIN') or str(build / 'src/huracanfs')
    if not os.access(binary, os.X_OK):
        die('no huracanfs binary at %s (build first, or pass BUILD_DIR)'
            % binary)
    for need in ('curl', 'openssl'):
        if not shutil.which(need):
            die('%s is missing' % need)
    if not os.path.exists('/dev/fuse'):
        die('/dev/fuse is missing')
    work = Path(tempfile.mkdtemp(prefix='hfs-transfer.', dir=o.dir))
    need = sum(sizes) * 6 + 256
    st = os.statvfs(work)
    if st.f_bavail * st.f_frsize // MiB < need:
        shutil.rmtree(work)
        die('%s has less than the %d MiB free the run needs' % (work, need))
    tempfile.tempdir = str(work)  # the fake's blobs: beside the cache
    fake = mount = None
    rows = []  # (size, what, seconds, stats, our cpu, daemon cpu)
    try:
        ca = make_test_ca(work / 'ca')
        fake = FakeDropbox(tls=ca, allocated=sum(sizes) * MiB * 4
                           + (1 << 30)).start()
        curl = Curl(fake, ca[0])
        empty = work / 'empty'
        empty.write_bytes(b'')
        srcs, hashes = {}, {}
        for n in sizes:
            say('making %d MiB of random bytes' % n)
            src = work / ('src-%d.bin' % n)
            cdir = work / ('chunks-%d' % n)
            cdir.mkdir()
            with open(src, 'wb') as f:
                for i in range(0, n * MiB, CHUNK):
                    b = os.urandom(min(CHUNK, n * MiB - i))
                    f.write(b)
                    (cdir / ('c%05d' % (i // CHUNK))).write_bytes(b)
            srcs[n] = src
            hashes[n] = content_hash(src.read_bytes())

        for n in sizes:
            path = '%s/bench/curl-%d.bin' % (ROOT, n)
            chunks = sorted(str(p) for p in (work / ('chunks-%d' % n))
                            .iterdir())
            say('curl upload, %d MiB' % n)
            m = measure(fake, lambda: curl.upload(chunks, path, empty))
            e = entry(fake, path)
            if not e or e.get('size') != n * MiB or \
                    e.get('content_hash') != hashes[n]:
                die('curl upload of %s: the remote holds %s' % (path, e))
            rows.append((n, 'upload', 'curl') + m)
            say('curl download, %d MiB' % n)
            out = work / ('curl-dl-%d.bin' % n)
            m = measure(fake, lambda: curl.download(path, out))
            if os.path.getsize(out) != n * MiB:
                die('curl download of %s: %d bytes' % (path,
                                                      os.path.getsize(out)))
            rows.append((n, 'download', 'curl') + m)
            os.unlink(out)

        mount = Mount(binary, work, fake, ca[0])
        mount.start()
        for n in sizes:
            f = mount.mnt / 'bench' / ('curl-%d.bin' % n)
            if os.stat(f).st_size != n * MiB:  # lists /bench, not timed
                die('the mount shows %s with %d bytes' % (
                    f, os.stat(f).st_size))
            say('mount download (lazy fetch), %d MiB' % n)
            m = measure(fake, lambda: run(['dd', 'if=%s' % f, 'of=/dev/null',
                                           'bs=1M', 'status=none']),
                        mount.pid)
            rows.append((n, 'download', 'mount') + m)
            if run(['cmp', f, srcs[n]]) != '':
                die('%s differs from what was uploaded' % f)
        for n in sizes:
            f = mount.mnt / 'bench' / ('up-%d.bin' % n)
            run(['dd', 'if=%s' % srcs[n], 'of=%s' % f, 'bs=1M',
                 'conv=fsync', 'status=none'])
            say('mount upload (flush --wait), %d MiB' % n)
            m = measure(fake, lambda: mount.hfs('flush', mount.mnt, '--wait'),
                        mount.pid)
            path = '%s/bench/up-%d.bin' % (ROOT, n)
            e = entry(fake, path)
            if not e or e.get('size') != n * MiB or \
                    e.get('content_hash') != hashes[n]:
                die('the upload of %s left on the remote: %s' % (path, e))
            rows.append((n, 'upload', 'mount') + m)
        hwm = None
        with open('/proc/%d/status' % mount.pid) as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    hwm = int(line.split()[1])
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

    print()
    print('huracanfs transfers against curl  %s' % time.strftime(
        '%Y-%m-%dT%H:%M:%SZ', time.gmtime()))
    print('binary:   %s (%s)' % (binary, buildinfo(build)))
    print('machine:  %d cpus, kernel %s' % (os.cpu_count(),
                                            os.uname().release))
    print('server:   tests/fakedropbox over HTTPS on 127.0.0.1, in the '
          'bench process; upload chunks of %d MiB' % (CHUNK // MiB))
    print('columns:  MB/s = 10^6 bytes/s; remote MB = bytes the fake '
          'counted; fake CPU = this process (the fake), daemon CPU = '
          'huracanfs, each as % of one core over the transfer')
    print()
    print('%-8s %-9s %-6s %9s %9s %10s %6s %9s %10s' % (
        'size', 'direction', 'who', 'seconds', 'MB/s', 'remote MB',
        'reqs', 'fake CPU', 'daemon CPU'))
    by = {}
    for n, what, who, t, d, cpu, dcpu in rows:
        moved = d['bytes_uploaded'] if what == 'upload' \
            else d['bytes_downloaded']
        rate = n * MiB / 1e6 / t
        by[(n, what, who)] = rate
        print('%-8s %-9s %-6s %9.3f %9.1f %10.1f %6d %8.0f%% %10s' % (
            '%d MiB' % n, what, who, t, rate, moved / 1e6, d['requests'],
            100 * cpu / t, '%.0f%%' % (100 * dcpu / t) if who == 'mount'
            else '-'))
    print()
    print('%-8s %-9s %12s' % ('size', 'direction', 'mount/curl'))
    for n in sizes:
        for what in ('download', 'upload'):
            c, m = by.get((n, what, 'curl')), by.get((n, what, 'mount'))
            if c and m:
                print('%-8s %-9s %12.2f' % ('%d MiB' % n, what, m / c))
    if hwm:
        print()
        print('daemon peak RSS (VmHWM): %.1f MiB' % (hwm / 1024))


if __name__ == '__main__':
    main()

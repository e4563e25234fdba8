"""The trainer's workflows from the seeds, end to end (issue 4).

A trainer uses the mount as its data and models directory: the run tree
reaches the remote with its model metadata and shared candle copies, a new
machine (a fresh cache_dir on the same remote) reads everything back and
gets its candles restored in the background, the `today` link leads into
the dated daily folders and rolls over at midnight UTC, clean files are
evicted under cache_max_bytes, and extended attributes and `status
--files` tell where each file stands.

The trainer is examples/trainer.py, run as a user would run it.
"""

import datetime
import errno
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from hfsutil import (LONG_INTERVALS, describe_diff, file_equals, snapshot,
                     wait_until, write_bytes)

REPO = Path(__file__).resolve().parents[2]
TRAINER = REPO / 'examples' / 'trainer.py'
SYMBOLS = ['SOL-USDT', 'BTC-USDT', 'ETH-USDT']
RUN_DATE = '2025-11-12'
ARTEFACTS = ('model', 'metrics', 'features', 'candle_data', 'trades')
XA = 'user.huracanfs.'
BLOCK = 4 * 1024 * 1024


# -- helpers -------------------------------------------------------------

def dropbox_hash(data):
    """The Dropbox content hash: SHA-256 over the SHA-256 of each 4 MiB
    block."""
    h = hashlib.sha256()
    for off in range(0, len(data), BLOCK):
        h.update(hashlib.sha256(data[off:off + BLOCK]).digest())
    return h.hexdigest()


def test_dropbox_hash_vectors():
    """The vectors of tests/data/dropbox-content-hash/README.md, so the
    hash the tests compare against is itself right."""
    png = REPO / 'tests/data/dropbox-content-hash/ruby.png'
    assert dropbox_hash(png.read_bytes()) == \
        '78a5497e5094c82060997bd21c3a1233fb3e783c08c0b2ec9a3b32fcb5635e66'
    assert dropbox_hash(bytes(4194305)) == \
        '14a4d47f23a30177885d9820122f17d2d3a55fe63f7f5c27b95f689e0b2accd6'
    assert dropbox_hash(bytes(range(251)) * (10485760 // 251) +
                        bytes(range(10485760 % 251))) == \
        '9b168152f37a1b2c33d9b26ca4a679d5f99f84f8c070fd3a4491d52cbfe96af4'


def run_trainer(root, *args):
    r = subprocess.run([sys.executable, str(TRAINER), str(root)]
                       + [str(a) for a in args],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    assert r.returncode == 0, 'trainer failed: %s%s' % (
        r.stdout.decode(), r.stderr.decode())
    return r.stdout.decode()


def written_files(out):
    """{relative path: size} from the trainer's output lines
    "    SIZE  PATH" (the appended log excluded)."""
    files = {}
    for line in out.splitlines():
        m = re.match(r'^\s*(\d+)  (\S+)$', line)
        if m:
            files[m.group(2)] = int(m.group(1))
    return files


def tree(root):
    """The set of relative paths (directories end in "/") under root."""
    root = str(root)
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            out.add(os.path.normpath(os.path.join(rel, d)) + '/')
        for f in filenames:
            out.add(os.path.normpath(os.path.join(rel, f)))
    return out


def files_of(root):
    return sorted(p for p in tree(root) if not p.endswith('/'))


def cache_usage(cache):
    """Bytes allocated to content files: st_blocks * 512 under cache/data."""
    used = 0
    for dirpath, _, names in os.walk(Path(cache) / 'data'):
        for n in names:
            try:
                used += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
            except FileNotFoundError:
                pass
    return used


def read_uncached(path):
    """Reads a file after dropping its pages from the kernel's page cache,
    so the read reaches the filesystem."""
    with open(path, 'rb') as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        return f.read()


def xattr(path, name):
    """user.huracanfs.NAME of path as a string, or None if absent."""
    try:
        return os.getxattr(path, XA + name).decode()
    except OSError as e:
        if e.errno == errno.ENODATA:
            return None
        raise


def utc_date(offset=0):
    return datetime.datetime.fromtimestamp(
        time.time() + offset, datetime.timezone.utc).strftime('%Y-%m-%d')


def complete_lines(log):
    """{symbol: [results dict, ...]} of comprehensive_dropbox_upload_complete
    lines."""
    out = {}
    for m in re.finditer(
            r'comprehensive_dropbox_upload_complete symbol=(\S+) date=(\S+)'
            r' path=(\S+) results=(\{[^}]*\})', log):
        res = dict(re.findall(r"'(\w+)': (True|False)", m.group(4)))
        out.setdefault(m.group(1), []).append(
            dict(date=m.group(2), path=m.group(3), results=res))
    return out


def train_and_flush(m, symbols=SYMBOLS, seed=7):
    """Runs the example trainer (--small) into mount m and flushes."""
    out = run_trainer(m.mnt, '--small', '--seed', seed, '--date', RUN_DATE,
                      '--symbols', ','.join(symbols))
    written = written_files(out)
    assert len(written) == 5 * len(symbols) + 2, out
    m.flush()
    return written


def run_dir(symbol):
    return 'models/training/%s/%s' % (RUN_DATE, symbol)


def candle_name(written, symbol):
    names = [p for p in written
             if p.startswith(run_dir(symbol) + '/data/')
             and p.endswith('_candles.parquet')]
    assert len(names) == 1, written
    return names[0]


# -- the run tree --------------------------------------------------------

def test_trainer_run_reaches_remote(hfs):
    m = hfs()
    written = train_and_flush(m)
    # The today link led the health file into today's dated folder.
    health = 'today/monitoring/health.json'
    assert health in written
    day = os.readlink(m.m('today'))

    for rel, size in written.items():
        data = m.m(rel).read_bytes()
        assert len(data) == size, rel
        remote_rel = rel.replace('today/', day + '/', 1)
        assert file_equals(m.r(remote_rel), data), \
            'remote %s differs from what the trainer wrote' % remote_rel
    assert file_equals(m.r('logs/engine.log'),
                       m.m('logs/engine.log').read_bytes())

    for sym in SYMBOLS:
        run = run_dir(sym)
        model = m.m(run + '/model/model.bin').read_bytes()
        meta = json.loads(m.r(run + '/model/model_metadata.json')
                          .read_bytes())
        assert meta['symbol'] == sym.replace('-', '/'), meta
        assert meta['date'] == RUN_DATE, meta
        assert meta['size'] == len(model), meta
        assert meta['content_hash'] == dropbox_hash(model), meta
        assert meta['remote_rev'] == xattr(m.m(run + '/model/model.bin'),
                                           'rev'), meta
        assert meta.get('upload_timestamp'), meta

        cname = candle_name(written, sym)
        shared = 'data/candles/%s/%s' % (sym, os.path.basename(cname))
        assert file_equals(m.r(shared), m.m(cname).read_bytes()), \
            'shared candle copy %s missing or different' % shared

    # One completion line per run folder, every artefact True.
    lines = wait_until(
        lambda: (lambda c: c if len(c) == len(SYMBOLS) else None)(
            complete_lines(m.log_text())), 10,
        'a comprehensive_dropbox_upload_complete line per symbol')
    for sym in SYMBOLS:
        got = lines.get(sym.replace('-', '/'))
        assert got and len(got) == 1, lines
        assert got[0]['date'] == RUN_DATE, got
        assert got[0]['results'] == {a: 'True' for a in ARTEFACTS}, got

    # The shared copies were made on the remote, not uploaded: the only
    # candle uploads are the runs' own.
    log = m.log_text()
    up = [(int(f), int(b)) for f, b in re.findall(
        r'data_cache_synced files=(\d+) bytes=(\d+)', log)]
    run_candles = [p for p in written if p.endswith('.parquet')]
    assert sum(f for f, _ in up) == len(run_candles), up
    assert sum(b for _, b in up) == sum(written[p] for p in run_candles), up

    # The mount shows what the remote holds, copies and metadata included.
    want = snapshot(m.remote)
    got = snapshot(m.mnt)
    assert got == want, describe_diff(want, got)
    assert all(c['pending_files'] == 0 for c in m.status()['categories'])


def test_new_machine_reads_everything_back(hfs):
    m1 = hfs('machine1')
    train_and_flush(m1)
    wait_until(lambda: len(complete_lines(m1.log_text())) == len(SYMBOLS),
               10, 'the runs to be complete')
    m1.unmount()
    remote_files = files_of(m1.remote)
    candles = [p for p in remote_files if p.startswith('data/candles/')]
    assert len(candles) == len(SYMBOLS), remote_files

    # A new machine: a fresh cache_dir against the same remote.
    m2 = hfs('machine2', start=False)
    m2.remote = m1.remote
    m2.write_config()
    m2.start()

    assert tree(m2.mnt) == tree(m1.remote)
    others = [p for p in remote_files if not p.startswith('data/candles/')]
    # Listing fetched nothing; the restore fetches candles only.
    for rel in others:
        assert xattr(m2.m(rel), 'state') == 'remote', rel

    st = wait_until(lambda: (lambda s: s if s.get('restore') and
                             s['restore']['state'] == 'done' else None)(
                                 m2.status()), 15,
                    'the data cache restore to finish')
    rs = st['restore']
    sizes = sum(os.path.getsize(m1.r(p)) for p in candles)
    assert rs['files_total'] == len(candles), rs
    assert rs['files_done'] == len(candles), rs
    assert rs['bytes_done'] == rs['bytes_total'] == sizes, rs
    assert re.search(r'data_cache_restored files=%d bytes=%d ms=\d+'
                     % (len(candles), sizes), m2.log_text()), \
        'no data_cache_restored line for the candles'
    for rel in candles:
        assert xattr(m2.m(rel), 'state') == 'cached', rel
    assert cache_usage(m2.cache) >= sizes
    for rel in others:
        assert xattr(m2.m(rel), 'state') == 'remote', \
            '%s was fetched before it was read' % rel

    want = snapshot(m1.remote)
    got = snapshot(m2.mnt)
    assert got == want, describe_diff(want, got)
    for rel in remote_files:
        assert xattr(m2.m(rel), 'state') == 'cached', rel
    assert all(c['pending_files'] == 0 for c in m2.status()['categories'])


# -- restore on startup --------------------------------------------------

def _candle_remote(m, n, size, seed=1):
    """n candle files of `size` bytes under m's remote data/candles."""
    import random
    rng = random.Random(seed)
    files = {}
    for i in range(n):
        sym = SYMBOLS[i % len(SYMBOLS)]
        rel = 'data/candles/%s/%s_%d_candles.parquet' % (
            sym, sym.replace('-', '_'), 20251110 + i)
        data = b'PAR1' + rng.randbytes(size - 8) + b'PAR1'
        write_bytes(m.r(rel), data)
        files[rel] = data
    write_bytes(m.r(run_dir('SOL-USDT') + '/results/trades.csv'),
                b'trade_id,symbol\n1,SOL/USDT\n')
    return files


def test_restore_off_fetches_nothing_until_read(hfs):
    m = hfs(start=False, dropbox_extra={
        'restore_data_cache_on_startup': False})
    files = _candle_remote(m, 3, 100_000)
    m.start()
    assert sorted(files_of(m.mnt)) == sorted(files_of(m.remote))
    # A restore would be done well within this (milliseconds for these
    # sizes; see test_new_machine_reads_everything_back).
    time.sleep(2)
    st = m.status()
    assert not st.get('restore'), st.get('restore')
    assert 'data_cache_restore' not in m.log_text()
    for rel in files:
        assert xattr(m.m(rel), 'state') == 'remote', rel
    assert cache_usage(m.cache) == 0
    for rel, data in files.items():
        assert m.m(rel).read_bytes() == data
        assert xattr(m.m(rel), 'state') == 'cached', rel


def test_restore_empty_remote(hfs):
    m = hfs()
    wait_until(lambda: 'data_cache_restore nothing to restore'
               in m.log_text(), 10, 'the nothing-to-restore line')
    assert 'data_cache_restored' not in m.log_text()
    assert m.status()['restore']['state'] == 'done'
    write_bytes(m.m('data/candles/SOL-USDT/new.parquet'), b'PAR1xPAR1')
    assert m.m('data/candles/SOL-USDT/new.parquet').read_bytes() == \
        b'PAR1xPAR1'
    m.wait_remote('data/candles/SOL-USDT/new.parquet', b'PAR1xPAR1', 15)


def test_restore_respects_cache_max_bytes(hfs):
    limit = 1024 * 1024
    m = hfs(start=False, hfs_extra={'cache_max_bytes': '1M'})
    files = _candle_remote(m, 6, 300 * 1024)
    m.start()
    st = wait_until(lambda: (lambda s: s if s['restore']['state'] == 'done'
                             else None)(m.status()), 15,
                    'the data cache restore to finish')
    rs = st['restore']
    assert rs['files_total'] == 6, rs
    assert 0 < rs['files_done'] < 6, rs
    assert rs['files_done'] + rs['files_left_unfetched'] == 6, rs
    assert rs['bytes_done'] <= limit, rs
    used = cache_usage(m.cache)
    assert used <= limit, 'restore filled the cache to %d bytes' % used
    cached = [r for r in files if xattr(m.m(r), 'state') == 'cached']
    assert len(cached) == rs['files_done'], cached
    for rel, data in files.items():
        assert m.m(rel).read_bytes() == data, rel


# -- model metadata and shared candles ------------------------------------

def test_trainer_model_metadata_is_never_replaced(hfs):
    m = hfs(start=False, intervals=LONG_INTERVALS)
    # BTC: a metadata file already on the remote, from an earlier machine.
    theirs = b'{"written_by": "trainer on another machine"}\n'
    write_bytes(m.r(run_dir('BTC-USDT') + '/model/model_metadata.json'),
                theirs)
    m.start()
    # SOL: the trainer writes its own beside the model.
    ours = b'{"written_by": "trainer", "symbol": "SOL/USDT"}\n'
    write_bytes(m.m(run_dir('SOL-USDT') + '/model/model_metadata.json'),
                ours)
    for sym in ('SOL-USDT', 'BTC-USDT'):
        write_bytes(m.m(run_dir(sym) + '/model/model.bin'),
                    os.urandom(70_000))
    m.flush()
    for sym in ('SOL-USDT', 'BTC-USDT'):
        assert m.r(run_dir(sym) + '/model/model.bin').exists()
    # A new model is uploaded again over the same run folder.
    write_bytes(m.m(run_dir('SOL-USDT') + '/model/model.bin'),
                os.urandom(80_000))
    m.flush()
    assert m.r(run_dir('SOL-USDT') + '/model/model_metadata.json') \
        .read_bytes() == ours
    assert m.m(run_dir('SOL-USDT') + '/model/model_metadata.json') \
        .read_bytes() == ours
    assert m.r(run_dir('BTC-USDT') + '/model/model_metadata.json') \
        .read_bytes() == theirs
    assert m.m(run_dir('BTC-USDT') + '/model/model_metadata.json') \
        .read_bytes() == theirs
    assert 'model_metadata_created' not in m.log_text()


def test_metadata_and_shared_candles_can_be_switched_off(hfs):
    m = hfs(hfs_extra={'model_metadata': False, 'shared_candles': False})
    written = train_and_flush(m, symbols=['SOL-USDT'])
    # The run was processed: its completion line is the sync point.
    wait_until(lambda: 'SOL/USDT' in complete_lines(m.log_text()), 10,
               'the completion line of the SOL-USDT run')
    remote = files_of(m.remote)
    assert not [p for p in remote if p.endswith('model_metadata.json')], \
        remote
    assert not m.r('data/candles').exists(), remote
    for rel in written:
        if not rel.startswith('today/'):
            assert m.r(rel).exists(), rel


# -- the today link ------------------------------------------------------

def test_today_link_rolls_over_at_midnight(hfs, tmp_path, monkeypatch):
    clock = tmp_path / 'clock'
    clock.write_text('0\n')
    monkeypatch.setenv('HURACANFS_CLOCK_FILE', str(clock))
    m = hfs('m')

    assert 'today' not in os.listdir(m.mnt)
    assert os.path.islink(m.m('today'))
    d0 = wait_until(lambda: (lambda d: d if os.readlink(m.m('today')) == d
                             else None)(utc_date()), 5,
                    'today to name the current UTC date')
    write_bytes(m.m('today/logs/x.log'), b'first day\n')
    m.wait_remote(d0 + '/logs/x.log', b'first day\n', 10)

    # Two minutes past the next midnight UTC, without a remount.
    now = time.time()
    offset = int(86400 - now % 86400) + 120
    tmp = tmp_path / 'clock.tmp'
    tmp.write_text('%d\n' % offset)
    os.rename(tmp, clock)
    d1 = utc_date(offset)
    assert d1 != d0
    wait_until(lambda: os.readlink(m.m('today')) == d1, 5,
               'today to roll over to %s' % d1)
    write_bytes(m.m('today/logs/y.log'), b'second day\n')
    m.wait_remote(d1 + '/logs/y.log', b'second day\n', 10)
    assert not m.r(d0 + '/logs/y.log').exists()
    assert m.m(d0 + '/logs/x.log').read_bytes() == b'first day\n'

    m.flush()
    names = os.listdir(m.mnt)
    assert 'today' not in names and d0 in names and d1 in names, names
    assert 'today' not in os.listdir(m.remote)
    assert not os.path.lexists(m.r('today'))
    assert not [p for p in tree(m.remote) if '/today' in '/' + p], \
        tree(m.remote)


# -- eviction ------------------------------------------------------------

def test_eviction_under_cache_max_bytes(hfs):
    limit = 1024 * 1024
    m = hfs(hfs_extra={'cache_max_bytes': '1M'})
    clean = {'reports/r%d.dat' % i: os.urandom(256 * 1024) for i in range(8)}
    for rel, data in clean.items():
        write_bytes(m.m(rel), data)
    for rel, data in clean.items():
        m.wait_remote(rel, data, 15)
    wait_until(lambda: cache_usage(m.cache) <= limit, 20,
               'the cache to shrink under cache_max_bytes (now %d)'
               % cache_usage(m.cache))
    evicted = [r for r in clean if xattr(m.m(r), 'state') == 'remote']
    assert evicted, 'cache is under the limit but no file was evicted'
    for rel in evicted:
        # Fetched again (not served from the kernel's page cache); the
        # file just read is the last to be evicted.
        assert read_uncached(m.m(rel)) == clean[rel], rel
        assert xattr(m.m(rel), 'state') == 'cached', rel
    for rel, data in clean.items():
        assert m.m(rel).read_bytes() == data, rel

    # Dirty files are never evicted, however far over the limit.
    m.take_remote_offline()
    try:
        dirty = {'reports/offline%d.dat' % i: os.urandom(256 * 1024)
                 for i in range(8)}
        for rel, data in dirty.items():
            write_bytes(m.m(rel), data)
        mark = m.log_size()
        wait_until(lambda: 'cache is over cache_max_bytes'
                   in m.log_since(mark), 20,
                   'an eviction pass over the limit with dirty files')
        assert cache_usage(m.cache) >= len(dirty) * 256 * 1024
        for rel, data in dirty.items():
            # Dirty, or in an upload attempt that is about to fail.
            assert xattr(m.m(rel), 'state') in ('dirty', 'uploading'), rel
            assert m.m(rel).read_bytes() == data, rel
    finally:
        m.bring_remote_back()
    for rel, data in dirty.items():
        m.wait_remote(rel, data, 30)


def test_eviction_least_recently_opened_first(hfs):
    m = hfs(intervals=LONG_INTERVALS, hfs_extra={'cache_max_bytes': '1M'})
    files = {'reports/r%d.dat' % i: os.urandom(256 * 1024) for i in range(8)}
    for rel, data in files.items():
        write_bytes(m.m(rel), data)
    # Opened again: r0..r3 are now the most recently used.
    for i in range(4):
        with open(m.m('reports/r%d.dat' % i), 'rb') as f:
            f.read(1)
    m.flush()   # all clean from here on: evictable
    wait_until(lambda: cache_usage(m.cache) <= 1024 * 1024, 20,
               'the cache to shrink under cache_max_bytes')
    evicted = {r for r in files if xattr(m.m(r), 'state') == 'remote'}
    assert evicted, 'nothing evicted'
    assert evicted <= {'reports/r%d.dat' % i for i in range(4, 8)}, \
        'recently opened files evicted before older ones: %s' % sorted(
            evicted)


def test_eviction_keeps_models_until_last(hfs):
    """cache_keep_models (default true): models stay cached while files of
    other categories can go, although the models are older."""
    m = hfs(intervals=LONG_INTERVALS, hfs_extra={'cache_max_bytes': '1M'})
    models = {'models/agent%d.pkl' % i: os.urandom(256 * 1024)
              for i in range(3)}
    others = {'reports/r%d.dat' % i: os.urandom(256 * 1024) for i in range(4)}
    for rel, data in list(models.items()) + list(others.items()):
        write_bytes(m.m(rel), data)
    m.flush()
    wait_until(lambda: cache_usage(m.cache) <= 1024 * 1024, 20,
               'the cache to shrink under cache_max_bytes')
    for rel in models:
        assert xattr(m.m(rel), 'state') == 'cached', \
            '%s (cache_keep_models) evicted before other files' % rel
    assert [r for r in others if xattr(m.m(r), 'state') == 'remote']
    for rel, data in list(models.items()) + list(others.items()):
        assert read_uncached(m.m(rel)) == data, rel


# -- extended attributes and status --files --------------------------------

CATEGORY_OF = {
    run_dir('SOL-USDT') + '/model/model.bin': 'models',
    run_dir('SOL-USDT') + '/metrics/training_metrics.json': 'other',
    run_dir('SOL-USDT') + '/data/SOL_USDT_20251112_164920_candles.parquet':
        'data_cache',
    'data/candles/BTC-USDT/BTC_USDT_20251112_091545_candles.parquet':
        'data_cache',
    'logs/engine.log': 'logs',
    'logs/learning/insights.json': 'learning',
    '2025-11-12/monitoring/health.json': 'monitoring',
    'models/agent.pkl': 'models',
    'notes.txt': 'other',
}


def test_xattrs_follow_the_file_state(hfs):
    m = hfs(intervals=LONG_INTERVALS)
    data = {}
    for rel in CATEGORY_OF:
        size = 6 * 1024 * 1024 + 17 if rel.endswith('model.bin') else 3000
        data[rel] = os.urandom(size)
        write_bytes(m.m(rel), data[rel])
    t_written = time.time()
    for rel, cat in CATEGORY_OF.items():
        p = m.m(rel)
        # Listed: the names that have a value now (a new file has no
        # rev or hash yet, and no error).
        names = set(os.listxattr(p))
        for key in ('state', 'category', 'next_upload'):
            assert XA + key in names, (rel, names)
        for key in ('rev', 'content_hash', 'last_error'):
            assert XA + key not in names, (rel, names)
        assert xattr(p, 'state') == 'dirty', rel
        assert xattr(p, 'category') == cat, rel
        nu = xattr(p, 'next_upload')
        assert nu, 'no next_upload on dirty %s' % rel
        when = datetime.datetime.strptime(nu, '%Y-%m-%dT%H:%M:%SZ').replace(
            tzinfo=datetime.timezone.utc).timestamp()
        # LONG_INTERVALS: 300 s after the write.
        assert t_written + 290 <= when <= t_written + 310, (rel, nu)
        assert xattr(p, 'last_error') is None, rel

    m.flush()
    for rel in CATEGORY_OF:
        p = m.m(rel)
        assert xattr(p, 'state') == 'cached', rel
        assert xattr(p, 'content_hash') == dropbox_hash(data[rel]), rel
        assert xattr(p, 'rev'), rel
        assert xattr(p, 'next_upload') is None, rel
        names = set(os.listxattr(p))
        assert {XA + 'rev', XA + 'content_hash'} <= names, (rel, names)
        assert XA + 'next_upload' not in names, (rel, names)
        assert m.r(rel).read_bytes() == data[rel], rel
    assert xattr(m.mnt / 'logs', 'state') == 'synced'


def test_listed_xattrs_can_be_read(hfs):
    """getfattr -d -m user.huracanfs FILE (the README's command) reads every
    name listxattr gives: a name listed must exist."""
    m = hfs(intervals=LONG_INTERVALS)
    write_bytes(m.m('notes.txt'), b'note\n')
    m.flush()
    p = m.m('notes.txt')
    missing = []
    for name in os.listxattr(p):
        try:
            os.getxattr(p, name)
        except OSError as e:
            missing.append('%s: %s' % (name, os.strerror(e.errno)))
    assert not missing, 'listed but unreadable: %s' % missing
    r = subprocess.run(['getfattr', '--absolute-names', '-d', '-m',
                        'user.huracanfs', str(p)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30) if os.path.exists('/usr/bin/getfattr') \
        else None
    if r is not None:
        assert r.returncode == 0 and not r.stderr, r.stderr.decode()
        assert b'user.huracanfs.state="cached"' in r.stdout, r.stdout


def test_status_files_lists_waiting_files(hfs):
    m = hfs(intervals=LONG_INTERVALS)
    model = run_dir('SOL-USDT') + '/model/model.bin'
    notes = 'logs/learning/insights.json'
    write_bytes(m.m(model), os.urandom(123_456))
    write_bytes(m.m(notes), b'{"insight": 1}\n')

    out = m.run('status', m.mnt, '--files', check=True).stdout
    assert re.search(r'waiting in models:\n(  .*\n)*  dirty +123456 .*/%s'
                     % re.escape(model), out), out
    assert re.search(r'waiting in learning:\n(  .*\n)*  dirty .*/%s'
                     % re.escape(notes), out), out

    st = json.loads(m.run('status', m.mnt, '--json', '--files',
                          check=True).stdout)
    where = {}
    for c in st['categories']:
        for f in c['files']:
            where[f['path'].lstrip('/')] = (c['name'], f)
    assert set(where) == {model, notes}, where
    cat, f = where[model]
    assert cat == 'models', where
    assert f['bytes'] == 123_456 and f['state'] == 'dirty', f
    assert f['next_upload'] >= f['dirty_since'] + 300, f
    assert f['last_error'] is None, f
    assert where[notes][0] == 'learning', where

    m.flush()
    st = json.loads(m.run('status', m.mnt, '--json', '--files',
                          check=True).stdout)
    assert all(c['files'] == [] for c in st['categories']), st

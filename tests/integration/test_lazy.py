"""Files that exist only on the remote are listed and fetched on read;
listings and read bytes stay available when the remote goes away."""

import os
import random

import pytest

from hfsutil import snapshot, describe_diff, ls_R, wait_until


def _populate(root, rng):
    files = {
        'models/training/2025-11-12/SOL-USDT/model/model.bin':
            rng.randbytes(6 * 1024 * 1024 + 123),
        'models/training/2025-11-12/SOL-USDT/metrics/training_metrics.json':
            b'{"win_rate": 0.55}\n',
        'models/training/2025-11-12/SOL-USDT/results/trades.csv':
            b'entry,exit\n' + b'1,2\n' * 5000,
        'data/candles/BTC-USDT/btc_20251112_candles.parquet':
            rng.randbytes(1024 * 1024),
        'logs/engine.log': b'old log\n',
        'top.txt': b'top level\n',
        'empty.bin': b'',
        'ünï/名前.txt': 'unicode'.encode(),
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (root / 'emptydir').mkdir()
    return files


def test_lazy_listing_and_read(hfs):
    m = hfs(start=False)
    _populate(m.remote, random.Random(11))
    m.start()
    # Another machine adds a tree after the mount, in a directory the
    # mount has not listed yet (not data/: the startup restore lists it).
    fresh = m.remote / 'logs' / 'fresh' / 'ETH-USDT'
    fresh.mkdir(parents=True)
    (fresh / 'eth.parquet').write_bytes(os.urandom(70_000))
    (fresh / 'notes.txt').write_bytes(b'fresh\n')

    assert ls_R(m.mnt) == ls_R(m.remote)
    want = snapshot(m.remote)
    got = snapshot(m.mnt)
    assert got == want, describe_diff(want, got)
    st = os.stat(m.m('models/training/2025-11-12/SOL-USDT/model/model.bin'))
    assert st.st_size == 6 * 1024 * 1024 + 123

    # Reading does not make files dirty: nothing to upload.
    for c in m.status()['categories']:
        assert c['pending_files'] == 0, c


@pytest.mark.log_errors_expected()
def test_listing_and_cached_files_survive_remote_loss(hfs):
    m = hfs(start=False)
    files = _populate(m.remote, random.Random(12))
    m.start()
    first = ls_R(m.mnt)
    assert first == ls_R(m.remote)
    read_now = ['top.txt', 'logs/engine.log',
                'models/training/2025-11-12/SOL-USDT/model/model.bin']
    for rel in read_now:
        assert m.m(rel).read_bytes() == files[rel]

    m.take_remote_offline()
    try:
        assert ls_R(m.mnt) == first, 'listing changed with the remote gone'
        for rel in read_now:
            assert m.m(rel).read_bytes() == files[rel], \
                'cached %s unreadable with the remote gone' % rel
        st = os.stat(m.m('models/training/2025-11-12/SOL-USDT/results/'
                         'trades.csv'))
        assert st.st_size == len(files['models/training/2025-11-12/'
                                       'SOL-USDT/results/trades.csv'])
    finally:
        m.bring_remote_back()
    # Back online, an unread file is fetched.
    rel = 'data/candles/BTC-USDT/btc_20251112_candles.parquet'
    assert m.m(rel).read_bytes() == files[rel]


def test_partial_read_of_large_remote_file(hfs):
    """A parquet reader reads the footer first: only a range is fetched."""
    # The startup restore would fetch data/candles/** whole: off here.
    m = hfs(start=False,
            dropbox_extra={'restore_data_cache_on_startup': False})
    data = os.urandom(48 * 1024 * 1024)
    rel = 'data/candles/big.parquet'
    (m.remote / 'data' / 'candles').mkdir(parents=True)
    (m.remote / rel).write_bytes(data)
    m.start()
    with open(m.m(rel), 'rb') as f:
        f.seek(-8, os.SEEK_END)
        assert f.read(8) == data[-8:]
        f.seek(len(data) - 65536)
        assert f.read(65536) == data[-65536:]
    # The cache must not hold the whole file after a footer read.
    used = 0
    for dirpath, _, names in os.walk(m.cache):
        for n in names:
            used += os.stat(os.path.join(dirpath, n)).st_blocks * 512
    assert used < 24 * 1024 * 1024, (
        'a footer read of a 48 MiB file put %d bytes in the cache' % used)
    with open(m.m(rel), 'rb') as f:
        f.seek(20 * 1024 * 1024)
        assert f.read(100_000) == data[20 * 1024 * 1024:][:100_000]
    assert m.m(rel).read_bytes() == data


def test_scattered_reads_fetch_what_they_read(hfs):
    """Reads of a few hundred KiB here and there in a large remote file (a
    parquet query: the footer, then some column chunks) download ranges
    sized to the reads, not 4 MiB chunks around each; a reader from the
    start still reads it whole, in large ranges; the bytes are right."""
    m = hfs(start=False,
            dropbox_extra={'restore_data_cache_on_startup': False})
    MiB = 1 << 20
    data = os.urandom(40 * MiB)
    (m.remote / 'big').mkdir()
    (m.remote / 'big' / 'q.parquet').write_bytes(data)
    (m.remote / 'big' / 'seq.bin').write_bytes(data)
    m.start()
    q = m.m('big/q.parquet')
    q.stat()

    def down():
        return m.status()['counters']['bytes_downloaded']

    d0 = down()
    read = 0
    with open(q, 'rb', buffering=0) as f:
        fd = f.fileno()
        assert os.pread(fd, 8, len(data) - 8) == data[-8:]
        assert os.pread(fd, 40000, len(data) - 40008) == \
            data[-40008:-8]
        read += 40008
        for i in range(12):   # 300 KiB at the start of every 3.3 MiB
            off = 4 + i * 3500000
            assert os.pread(fd, 300000, off) == data[off:off + 300000]
            read += 300000
    got = down() - d0
    # The kernel rounds a random read up to a power of two of pages (its
    # readahead: 300 KB become 512 KiB); the daemon adds 16 KiB blocks.
    # Whole 4 MiB chunks would be 12 x 4 MiB + the footer's.
    assert got <= 2 * read, (got, read)

    d0 = down()
    assert m.m('big/seq.bin').read_bytes() == data
    assert down() - d0 == len(data)


def test_remote_changes_become_visible(hfs):
    """Another machine's changes show up once the listing is re-read
    (dir_cache_seconds: 1 instead of the default 60)."""
    m = hfs(start=False, hfs_extra={'dir_cache_seconds': 1})
    (m.remote / 'shared').mkdir()
    (m.remote / 'shared' / 'a.txt').write_bytes(b'version 1\n')
    (m.remote / 'shared' / 'gone.txt').write_bytes(b'to be deleted\n')
    m.start()
    assert sorted(os.listdir(m.m('shared'))) == ['a.txt', 'gone.txt']
    assert m.m('shared/a.txt').read_bytes() == b'version 1\n'

    (m.remote / 'shared' / 'new.txt').write_bytes(b'added remotely\n')
    os.unlink(m.remote / 'shared' / 'gone.txt')
    tmp = m.remote / 'shared' / '.a.tmp'
    tmp.write_bytes(b'version 2, longer\n')
    os.rename(tmp, m.remote / 'shared' / 'a.txt')

    wait_until(lambda: sorted(os.listdir(m.m('shared'))) ==
               ['a.txt', 'new.txt'], 5,
               'the remote add and delete to show in the listing')
    assert m.m('shared/new.txt').read_bytes() == b'added remotely\n'
    wait_until(lambda: m.m('shared/a.txt').read_bytes() ==
               b'version 2, longer\n', 5,
               'the remote change of a cached file to show')

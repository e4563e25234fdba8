"""Durability: what a writer wrote and closed survives kill -9 of the
daemon and reaches the remote after the next mount; an open, growing file
keeps reaching the remote on its interval."""

import errno
import os
import time

import pytest

from hfsutil import wait_until, file_equals, is_mounted


def test_kill9_then_remount_keeps_and_uploads(mount):
    m, r = mount.m, mount.r
    files = {
        'models/training/2025-11-12/SOL-USDT/model/model.bin':
            os.urandom(3 * 1024 * 1024 + 5),
        'models/agent.pkl': os.urandom(20_000),
        'data/candles/BTC-USDT/btc_1.parquet': os.urandom(200_000),
        'notes/renamed.txt': b'moved before the crash\n',
    }
    for rel, data in files.items():
        p = m(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        if rel == 'notes/renamed.txt':
            p = m('notes/original.txt')
        with open(p, 'wb') as f:
            f.write(data)
    os.rename(m('notes/original.txt'), m('notes/renamed.txt'))
    # An append to a file, then a close.
    with open(m('models/agent.pkl'), 'ab') as f:
        f.write(b'appended')
    files['models/agent.pkl'] += b'appended'

    # Well before the 2 s (new data) and 3 s (models) intervals.
    mount.kill9()
    for rel in files:
        if rel != 'notes/renamed.txt':
            assert not r(rel).exists(), (
                '%s was already uploaded; the test needs it pending' % rel)

    mount.start()
    for rel, data in files.items():
        assert file_equals(m(rel), data), \
            '%s lost or changed across kill -9 + remount' % rel
    assert not m('notes/original.txt').exists()
    for rel, data in files.items():
        mount.wait_remote(rel, data, 10,
                          '%s to reach the remote after remount' % rel)
    wait_until(lambda: not r('notes/original.txt').exists(), 3,
               'the renamed-away name to be gone from the remote')


def test_kill9_keeps_namespace_journal(mount):
    """mkdir/rename/unlink done just before the crash are replayed."""
    m, r = mount.m, mount.r
    m('keep/a').mkdir(parents=True)
    m('keep/a/f.txt').write_bytes(b'f')
    mount.wait_remote('keep/a/f.txt', b'f', 5)
    os.rename(m('keep/a'), m('keep/b'))
    os.unlink(m('keep/b/f.txt'))
    m('keep/c').mkdir()
    mount.kill9()
    mount.start()
    assert sorted(os.listdir(m('keep'))) == ['b', 'c']
    assert os.listdir(m('keep/b')) == []
    wait_until(lambda: r('keep/b').is_dir() and r('keep/c').is_dir()
               and not r('keep/a').exists()
               and not r('keep/b/f.txt').exists(), 5,
               'the journal to be replayed after remount')


def test_open_file_keeps_reaching_remote(mount):
    rel = 'logs/training.log'
    mount.m('logs').mkdir()
    written = b''
    seen = []          # distinct non-empty remote sizes, in order
    deadline = time.monotonic() + 8
    # A logger: append + flush() each record, never fsync, never close.
    f = open(mount.m(rel), 'ab')
    try:
        last_write = 0.0
        i = 0
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now - last_write >= 0.2:
                line = b'%06d step loss=0.1234 reward=5.6\n' % i
                f.write(line)
                f.flush()
                written += line
                i += 1
                last_write = now
            try:
                remote = mount.r(rel).read_bytes()
            except FileNotFoundError:
                remote = b''
            if remote:
                assert written.startswith(remote), \
                    'remote copy is not a prefix of what was written'
                if not seen or len(remote) > seen[-1]:
                    seen.append(len(remote))
            if len(seen) >= 3:
                break
            time.sleep(0.05)
        assert len(seen) >= 3, (
            'remote copy of a file open for append did not keep growing'
            ' (1 s interval, 8 s of writes): remote sizes seen %r, %d bytes'
            ' written' % (seen, len(written)))
        assert not f.closed
    finally:
        f.close()
    mount.wait_remote(rel, written, 5, 'the final log after close')
    assert is_mounted(mount.mnt)



def test_file_patched_while_open_waits_for_close_or_fsync(hfs):
    """A file patched in place while open is not uploaded until a close or
    fsync makes it a whole version: a snapshot taken between the pieces
    of a write would hold bytes nobody wrote. Appends keep flowing (see
    test_open_file_keeps_reaching_remote)."""
    m = hfs(intervals={'models': 1},
            hfs_extra={'writeback_cache': False})
    rel = 'models/weights.bin'
    m.m('models').mkdir()
    old = b'a' * (256 * 1024)
    m.m(rel).write_bytes(old)
    m.wait_remote(rel, old, 10, 'the first version')
    fd = os.open(m.m(rel), os.O_RDWR)
    try:
        patch = b'b' * (64 * 1024)
        assert os.pwrite(fd, patch, 8192) == len(patch)
        new = old[:8192] + patch + old[8192 + len(patch):]
        # Three upload intervals while it stays open and unsynced.
        end = time.monotonic() + 3.5
        while time.monotonic() < end:
            assert file_equals(m.r(rel), old), \
                'a file patched while open was uploaded before its fsync'
            time.sleep(0.1)
        os.fsync(fd)
        m.wait_remote(rel, new, 10, 'the version made whole by fsync')
        assert os.pwrite(fd, b'c' * 8192, 0) == 8192
    finally:
        os.close(fd)
    m.wait_remote(rel, b'c' * 8192 + new[8192:], 10,
                  'the version made whole by close')



def test_rewrite_while_open_waits_for_close(hfs):
    """An fsync'd file rewritten with O_TRUNC keeps its old version aside
    until the new one is synced at close; an upload meanwhile would make
    half the new version the one a power cut brings back, so none is
    taken while the writer holds it."""
    m = hfs(intervals={'models': 1},
            hfs_extra={'writeback_cache': False})
    rel = 'models/policy.pt'
    m.m('models').mkdir()
    old = b'o' * (128 * 1024)
    fd = os.open(m.m(rel), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, old)
    os.fsync(fd)
    os.close(fd)
    m.wait_remote(rel, old, 10, 'the first version')
    fd = os.open(m.m(rel), os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, b'n' * 4096)
        end = time.monotonic() + 3.5
        while time.monotonic() < end:
            assert file_equals(m.r(rel), old), \
                'half a rewrite was uploaded while its writer held it'
            time.sleep(0.1)
        os.write(fd, b'n' * 4096)
    finally:
        os.close(fd)
    m.wait_remote(rel, b'n' * 8192, 10, 'the new version after close')


@pytest.mark.log_errors_expected('lost')
def test_content_removed_behind_our_back(hfs):
    """A clean file's cached bytes deleted behind the daemon's back are
    fetched again; a dirty file's are reported lost, never served."""
    m = hfs(start=False, intervals={'models': 300})
    (m.remote / 'clean.txt').write_bytes(b'remote bytes\n')
    m.start()
    assert m.m('clean.txt').read_bytes() == b'remote bytes\n'
    m.m('models').mkdir()
    m.m('models/d.pkl').write_bytes(b'dirty bytes\n')
    for p in (m.cache / 'data').rglob('*'):
        if p.is_file() and p.read_bytes() in (b'remote bytes\n',
                                              b'dirty bytes\n'):
            p.unlink()
    os.sync()
    with open('/proc/sys/vm/drop_caches', 'w') as f:
        f.write('3\n')
    assert m.m('clean.txt').read_bytes() == b'remote bytes\n'
    with pytest.raises(OSError) as e:
        m.m('models/d.pkl').read_bytes()
    assert e.value.errno == errno.EIO
    assert os.getxattr(m.m('models/d.pkl'), 'user.huracanfs.state') == \
        b'lost'
    assert '/models/d.pkl' in m.status()['lost']
    m.m('models/d.pkl').write_bytes(b'rewritten\n')
    assert m.m('models/d.pkl').read_bytes() == b'rewritten\n'


@pytest.mark.log_errors_expected('another layout version')
def test_index_of_another_layout_is_set_aside(hfs):
    """An index of another layout version is detected: kept aside
    untouched, a new one is built, and the remote is listed again."""
    import shutil
    import subprocess
    if not shutil.which('mdb_dump') or not shutil.which('mdb_load'):
        pytest.skip('lmdb-utils (mdb_dump, mdb_load) not installed')
    m = hfs()
    m.m('a.txt').write_bytes(b'uploaded\n')
    m.flush()
    m.unmount()
    index = str(m.cache / 'index')
    dump = subprocess.run(['mdb_dump', '-p', '-s', 'meta', index],
                          check=True, stdout=subprocess.PIPE).stdout
    import re
    # The layout version follows its key; make it one we do not know.
    assert re.search(rb' layout\n \\0[0-9]\\00\\00\\00\n', dump), dump
    dump = re.sub(rb'( layout\n) \\0[0-9]\\00\\00\\00\n',
                  rb'\1 \\63\\00\\00\\00\n', dump)
    subprocess.run(['mdb_load', '-s', 'meta', index], input=dump,
                   check=True, stderr=subprocess.DEVNULL)
    m.start()
    assert m.m('a.txt').read_bytes() == b'uploaded\n'
    aside = [p.name for p in m.cache.iterdir() if p.name.startswith(
        'index.old-')]
    assert aside, sorted(p.name for p in m.cache.iterdir())
    assert 'another layout version' in m.log_text()


def test_times_set_on_open_file_survive_kill9(mount):
    """A setattr of mtime only (the writeback cache's before each close,
    or futimens with UTIME_OMIT for atime) on an open file is kept in
    memory and persisted by the close: after it, kill -9 keeps it."""
    import ctypes
    m = mount.m
    libc = ctypes.CDLL(None, use_errno=True)

    class Timespec(ctypes.Structure):
        _fields_ = [('tv_sec', ctypes.c_long), ('tv_nsec', ctypes.c_long)]
    UTIME_OMIT = (1 << 30) - 2
    m('times').mkdir()
    with open(m('times/written.txt'), 'wb') as f:
        f.write(b'x' * 5000)
    written = os.stat(m('times/written.txt')).st_mtime_ns
    fd = os.open(m('times/set.txt'), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b'y' * 100)
    ts = (Timespec * 2)((0, UTIME_OMIT), (1_600_000_000, 123456789))
    assert libc.futimens(fd, ts) == 0, os.strerror(ctypes.get_errno())
    assert os.stat(m('times/set.txt')).st_mtime_ns == \
        1_600_000_000_123_456_789
    os.close(fd)
    mount.kill9()
    mount.start()
    assert os.stat(m('times/written.txt')).st_mtime_ns == written
    assert os.stat(m('times/set.txt')).st_mtime_ns == \
        1_600_000_000_123_456_789
    assert os.stat(m('times/set.txt')).st_size == 100

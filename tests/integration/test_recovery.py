"""Recovery after an unclean stop, and a damaged index (issue 15).

The power-loss soak in tests/powerloss cuts power under load; these tests
put the cache into each state a cut can leave, by hand, and check that
recovery neither guesses nor loses a byte."""

import json
import os

import pytest

from hfsutil import wait_until

LONG = {'models': 3600, 'logs': 3600, 'learning': 3600, 'new_data': 3600,
        'data_cache': 3600}


def content_files(m):
    return [p for p in (m.cache / 'data').rglob('*') if p.is_file()]


def read_or_none(p):
    try:
        return p.read_bytes()
    except FileNotFoundError:  # reaped meanwhile
        return None


def content_file_of(m, data):
    hits = [p for p in content_files(m) if read_or_none(p) == data]
    assert len(hits) == 1, (hits, data[:40])
    return hits[0]


def test_short_dirty_file_goes_back_to_the_remote(hfs):
    """A dirty file whose content file is shorter than the index recorded
    (the tail never reached the disk) is not served, nor uploaded over the
    remote copy: the remote's version is served, the short bytes are kept
    in /lost+found, and status says so."""
    m = hfs(intervals=LONG)
    good = b'good version on the remote\n' * 100
    m.m('notes.txt').write_bytes(good)
    m.flush()
    assert m.r('notes.txt').read_bytes() == good
    newer = b'a newer version, longer\n' * 300
    with open(m.m('notes.txt'), 'wb') as f:
        f.write(newer)
        f.flush()
        os.fsync(f.fileno())  # its size is recorded
    m.kill9()
    cf = content_file_of(m, newer)
    with open(cf, 'r+b') as f:
        f.truncate(1000)  # what a power cut may leave
    m.start()
    assert m.m('notes.txt').read_bytes() == good
    found = list((m.mnt / 'lost+found').iterdir())
    assert [p.name for p in found] == [
        p.name for p in found if p.name.startswith('notes.txt.recovered-')]
    assert len(found) == 1 and found[0].read_bytes() == newer[:1000]
    st = m.status()
    assert any('/notes.txt' in line for line in st['recovered']), st
    assert '/notes.txt' not in st['lost']
    m.flush()
    # The remote did not regress, and lost+found stays local.
    assert m.r('notes.txt').read_bytes() == good
    assert not (m.remote / 'lost+found').exists()
    text = m.run('status', m.mnt, check=True).stdout
    assert 'RECOVERED' in text and 'notes.txt' in text


def test_short_new_file_is_kept_and_reported(hfs):
    """A dirty file the remote never had keeps what reached the disk:
    all there is, reported, never dropped."""
    m = hfs(intervals=LONG)
    data = os.urandom(50_000)
    with open(m.m('fresh.bin'), 'wb') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())  # its size is recorded
    m.kill9()
    with open(content_file_of(m, data), 'r+b') as f:
        f.truncate(20_000)
    m.start()
    assert m.m('fresh.bin').read_bytes() == data[:20_000]
    assert any('fresh.bin' in line for line in m.status()['recovered'])


def test_clean_file_with_missing_or_short_content_is_fetched_again(hfs):
    """After an unclean stop a clean file whose content file is gone or
    has another size is remote-only again: read from the remote, never
    reported lost."""
    m = hfs(intervals=LONG)
    a, b = os.urandom(30_000), os.urandom(40_000)
    m.m('a.bin').write_bytes(a)
    m.m('b.bin').write_bytes(b)
    m.flush()
    m.kill9()
    content_file_of(m, a).unlink()
    with open(content_file_of(m, b), 'r+b') as f:
        f.truncate(10)
    m.start()
    assert m.m('a.bin').read_bytes() == a
    assert m.m('b.bin').read_bytes() == b
    assert m.status()['lost'] == []
    assert os.getxattr(m.m('a.bin'), 'user.huracanfs.state') != b'lost'


def test_deleted_content_goes_once_the_index_is_durable(mount):
    """Content files of deleted and replaced files are removed (after the
    index change is on disk), not leaked."""
    m = mount
    old, new = os.urandom(10_000), os.urandom(12_000)
    m.m('f.bin').write_bytes(old)
    m.m('tmp.bin').write_bytes(new)
    os.rename(m.m('tmp.bin'), m.m('f.bin'))
    m.m('g.bin').write_bytes(b'to delete')
    os.unlink(m.m('g.bin'))

    def gone():
        datas = [read_or_none(p) for p in content_files(m)]
        return old not in datas and b'to delete' not in datas
    wait_until(gone, 10, 'content files of replaced/deleted files to go')
    assert m.m('f.bin').read_bytes() == new


def corrupt_index(m):
    data = m.cache / 'index' / 'data.mdb'
    size = data.stat().st_size
    with open(data, 'r+b') as f:
        # Both meta pages point into pages that are now garbage.
        f.seek(2 * 4096)
        f.write(os.urandom(size - 2 * 4096))


@pytest.mark.log_errors_expected('damaged')
def test_damaged_index_is_refused_and_repaired(hfs):
    m = hfs(intervals={'models': 3600})
    m.m('up.txt').write_bytes(b'uploaded before\n')
    m.flush()
    dirty = os.urandom(70_000)
    (m.mnt / 'models').mkdir()
    m.m('models/dirty.pkl').write_bytes(dirty)
    m.unmount()
    corrupt_index(m)
    rc, out, err = m.try_start()
    assert rc != 0
    assert 'is damaged' in err and 'huracanfs repair' in err, err
    r = m.run('repair', m.mnt, '--config', m.config)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert 'repaired' in r.stdout
    assert list(m.cache.glob('index.damaged-*'))
    m.start()
    # The remote's files come back from the remote ...
    assert m.m('up.txt').read_bytes() == b'uploaded before\n'
    # ... and no byte of the cache was discarded: the dirty file is at
    # its path (if the damaged index still named it) or in lost+found.
    places = [m.m('models/dirty.pkl')] + (
        list((m.mnt / 'lost+found').iterdir())
        if (m.mnt / 'lost+found').exists() else [])
    assert any(p.exists() and p.read_bytes() == dirty for p in places)


def test_repair_of_a_sound_index_changes_nothing(hfs):
    m = hfs()
    m.m('a.txt').write_bytes(b'a')
    m.unmount()
    r = m.run('repair', m.mnt, '--config', m.config)
    assert r.returncode == 0 and 'nothing to repair' in r.stdout
    m.start()
    assert m.m('a.txt').read_bytes() == b'a'


def test_repair_refuses_a_mounted_mountpoint(mount):
    r = mount.run('repair', mount.mnt, '--config', mount.config)
    assert r.returncode != 0 and 'unmount' in r.stderr


def prev_files(m):
    return [p for p in content_files(m) if p.name.endswith('.prev')]


def test_rewrite_keeps_the_fsyncd_version_aside_until_synced(hfs):
    """A file with fsync'd bytes truncated to 0 and written again keeps its
    old version in a .prev file of the cache until the new bytes are
    synced (what a power cut would bring back; tests/powerloss). After
    kill -9 mid-rewrite the new bytes the daemon was given are whole and
    stay (no writeback cache here, so they all were); once a rewrite is
    closed the .prev file goes."""
    m = hfs(intervals=LONG, hfs_extra={'writeback_cache': False})
    v1, v2 = b'first version\n' * 2000, b'second\n' * 700
    with open(m.m('model.bin'), 'wb') as f:
        f.write(v1)
        f.flush()
        os.fsync(f.fileno())
    f = open(m.m('model.bin'), 'r+b')
    f.truncate(0)
    f.write(v2)
    f.flush()
    [prev] = prev_files(m)
    assert prev.read_bytes() == v1
    m.kill9()
    f.close()
    m.start()
    assert m.m('model.bin').read_bytes() == v2
    assert prev_files(m) == []
    # A rewrite that closes: the .prev goes once the new bytes are synced.
    v3 = b'third\n' * 900
    with open(m.m('model.bin'), 'wb') as f:
        f.write(v2 + b'more')
        f.flush()
        os.fsync(f.fileno())
    with open(m.m('model.bin'), 'wb') as f:
        f.write(v3)
    wait_until(lambda: prev_files(m) == [], 20, 'the .prev file to go')
    assert m.m('model.bin').read_bytes() == v3
    m.flush()
    assert m.r('model.bin').read_bytes() == v3

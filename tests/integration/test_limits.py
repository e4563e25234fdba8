"""Bandwidth limits: upload_bytes_per_second / download_bytes_per_second
in the configuration, and `huracanfs limit` at run time.

Whether the achieved rate matches the limit is measured in bench/limit.py;
here only that the settings take effect, with a sanity bound far from the
limit (a transfer that should take 4 s at the limit takes at least 2).
"""

import os
import threading
import time

from hfsutil import LONG_INTERVALS

ROOT = '/Huracan'
KiB = 1024
MiB = 1024 * 1024


def limits(m):
    return m.status()['limits']


def test_configured_upload_limit_holds_and_limit_lifts_it(dbx, fake):
    m = dbx(intervals=LONG_INTERVALS,
            hfs_extra={'upload_bytes_per_second': '256K'})
    assert limits(m) == {'upload_bytes_per_second': 256 * KiB,
                         'download_bytes_per_second': 0}
    r = m.run('limit', m.mnt, check=True)
    assert r.stdout == 'upload: 256KiB/s\ndownload: unlimited\n', r.stdout
    data = os.urandom(1 * MiB)         # 4 s at 256 KiB/s
    m.m('models').mkdir()
    m.m('models/slow.bin').write_bytes(data)
    t0 = time.monotonic()
    m.flush(timeout=120)
    took = time.monotonic() - t0
    assert took >= 2.0, 'a 1 MiB upload at 256 KiB/s took %.2f s' % took
    assert fake.get_file(ROOT + '/models/slow.bin') == data

    # Lifted at run time: the next upload is not held back.
    r = m.run('limit', m.mnt, '--up', '0', check=True)
    assert r.stdout.startswith('upload: unlimited\n'), r.stdout
    assert limits(m)['upload_bytes_per_second'] == 0
    data2 = os.urandom(1 * MiB)
    m.m('models/fast.bin').write_bytes(data2)
    t0 = time.monotonic()
    m.flush(timeout=120)
    assert time.monotonic() - t0 < took
    assert fake.get_file(ROOT + '/models/fast.bin') == data2


def test_limit_command_sets_download_limit(dbx, fake):
    data = os.urandom(512 * KiB)       # 4 s at 128 KiB/s
    fake.put_file(ROOT + '/remote.bin', data)
    m = dbx(intervals=LONG_INTERVALS)
    assert limits(m) == {'upload_bytes_per_second': 0,
                         'download_bytes_per_second': 0}
    r = m.run('limit', m.mnt, '--down', '128K', check=True)
    assert r.stdout == 'upload: unlimited\ndownload: 128KiB/s\n', r.stdout
    assert limits(m)['download_bytes_per_second'] == 128 * KiB
    assert 'bandwidth limits: up=0 down=131072' in m.log_text()
    os.stat(m.m('remote.bin'))
    t0 = time.monotonic()
    assert m.m('remote.bin').read_bytes() == data
    took = time.monotonic() - t0
    assert took >= 2.0, 'a 512 KiB read at 128 KiB/s took %.2f s' % took


def test_lifting_the_limit_frees_a_transfer_in_flight(dbx, fake):
    data = os.urandom(2 * MiB)         # 64 s at 32 KiB/s
    fake.put_file(ROOT + '/big.bin', data)
    m = dbx(intervals=LONG_INTERVALS,
            hfs_extra={'download_bytes_per_second': '32K'})
    os.stat(m.m('big.bin'))
    got = []
    th = threading.Thread(target=lambda: got.append(
        m.m('big.bin').read_bytes()))
    th.start()
    time.sleep(1)
    assert th.is_alive()
    m.run('limit', m.mnt, '--down', '0', check=True)
    th.join(timeout=30)
    assert not th.is_alive(), 'the read still crawls after the limit went'
    assert got == [data]


def test_limit_usage_errors(mount):
    r = mount.run('limit', mount.mnt, '--up', 'fast')
    assert r.returncode == 2
    assert 'a rate in bytes per second' in r.stderr
    r = mount.run('limit', mount.base / 'nowhere', '--up', '1M')
    assert r.returncode == 1
    # The local backend has no HTTP layer, but the setting is kept and
    # shown.
    r = mount.run('limit', mount.mnt, '--up', '1.5M', check=True)
    assert r.stdout.startswith('upload: 1536KiB/s\n'), r.stdout

"""Offline: with the remote unavailable the mount still works as a local
store; uploads wait and resume when the remote is back."""

import os
import time

import pytest

from hfsutil import snapshot, describe_diff, wait_until


@pytest.mark.log_errors_expected()
def test_writes_succeed_offline_and_upload_later(mount):
    m = mount.m
    m('logs').mkdir()
    m('logs/before.log').write_bytes(b'before\n')
    mount.wait_remote('logs/before.log', b'before\n', 5)

    mount.take_remote_offline()
    try:
        files = {
            'logs/offline.log': b'written offline\n' * 100,
            'models/offline.pkl': os.urandom(100_000),
            'new/dir/tree/file.txt': b'deep\n',
            'data/candles/X/x.parquet': os.urandom(10_000),
        }
        for rel, data in files.items():
            p = m(rel)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        os.rename(m('logs/before.log'), m('logs/renamed.log'))
        for rel, data in files.items():
            assert m(rel).read_bytes() == data
        # Past every interval: the uploads are tried and must fail softly.
        t0 = time.monotonic()
        wait_until(lambda: time.monotonic() - t0 > 3.5 and
                   mount.cat_status('logs')['last_error'], 5,
                   'status to report the failed logs upload')
        st = mount.status()
        assert sum(c['pending_files'] for c in st['categories']) >= 4, st
        assert not mount.remote.exists(), \
            'remote_dir was re-created while the remote was unavailable'
        # The mount keeps working while uploads fail.
        m('logs/offline2.log').write_bytes(b'more\n')
        files['logs/offline2.log'] = b'more\n'
        assert sorted(os.listdir(m('logs'))) == \
            ['offline.log', 'offline2.log', 'renamed.log']
    finally:
        mount.bring_remote_back()

    want = snapshot(mount.mnt)
    try:
        wait_until(lambda: snapshot(mount.remote) == want, 20,
                   'the remote to catch up after coming back')
    except AssertionError as e:
        raise AssertionError('%s: %s' % (e, describe_diff(
            want, snapshot(mount.remote))))
    wait_until(lambda: all(c['pending_files'] == 0
                           for c in mount.status()['categories']), 5,
               'nothing pending')
    assert mount.status()['journal_pending'] == 0

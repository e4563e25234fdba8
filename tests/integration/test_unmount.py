"""Unmount flushes what is pending, then the daemon exits."""

import json
import os
import signal
import subprocess

from hfsutil import (LONG_INTERVALS, snapshot, describe_diff, is_mounted,
                     pid_alive, wait_until)


def test_unmount_flushes_pending(hfs):
    m = hfs(intervals=LONG_INTERVALS)
    files = {
        'logs/learning/insight.json': b'{"i": 1}\n',
        'logs/engine.log': b'line\n' * 1000,
        '2025-11-12/monitoring/health.json': b'{"ok": true}\n',
        'models/training/2025-11-12/SOL-USDT/model/model.bin':
            os.urandom(2 * 1024 * 1024),
        'models/training/2025-11-12/SOL-USDT/metrics/training_metrics.json':
            b'{"sharpe": 1.2}\n',
        'data/candles/SOL-USDT/sol_20251112_candles.parquet':
            os.urandom(500_000),
        'README.txt': b'other\n',
    }
    for rel, data in files.items():
        p = m.m(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    m.m('empty/dir').mkdir(parents=True)
    st = m.status()
    pending = sum(c['pending_files'] for c in st['categories'])
    assert pending == len(files), 'status before unmount: %r' % st
    for rel in files:
        assert not m.r(rel).exists(), '%s uploaded before unmount' % rel
    want = snapshot(m.mnt)

    m.unmount()   # waits for the daemon to exit
    assert not is_mounted(m.mnt)
    got = snapshot(m.remote)
    # The uploaded model got its model_metadata.json (runs.h).
    meta = json.loads(got.pop(
        'models/training/2025-11-12/SOL-USDT/model/model_metadata.json'))
    assert meta['symbol'] == 'SOL/USDT' and meta['date'] == '2025-11-12'
    assert meta['size'] == len(
        files['models/training/2025-11-12/SOL-USDT/model/model.bin'])
    assert got == want, describe_diff(want, got)
    log = m.log_text()
    for event in ('learning_data_synced', 'logs_synced', 'models_synced',
                  'data_cache_synced', 'other_synced'):
        assert event in log, '%s missing from the daemon log' % event


def test_unmount_then_mount_again_sees_everything(hfs):
    m = hfs(intervals=LONG_INTERVALS)
    m.m('models').mkdir()
    m.m('models/a.pkl').write_bytes(b'a' * 1000)
    m.remount()
    assert m.r('models/a.pkl').read_bytes() == b'a' * 1000
    assert m.m('models/a.pkl').read_bytes() == b'a' * 1000
    assert m.cat_status('models')['pending_files'] == 0


def test_sigterm_flushes_and_unmounts(hfs):
    m = hfs(intervals=LONG_INTERVALS)
    m.m('models').mkdir()
    data = os.urandom(300_000)
    m.m('models/sig.pkl').write_bytes(data)
    pid = m.pid
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pid_alive(pid), 30,
               'the daemon to exit after SIGTERM', interval=0.1)
    m.pid = None
    assert m.r('models/sig.pkl').read_bytes() == data
    assert not is_mounted(m.mnt), 'SIGTERM left the mount behind'


def test_foreground_mode(hfs):
    m = hfs(start=False)
    out = open(m.base / 'fg.out', 'wb')
    p = subprocess.Popen([m.bin, 'mount', str(m.mnt), '--config',
                          str(m.config), '--foreground'],
                         stdin=subprocess.DEVNULL, stdout=out,
                         stderr=subprocess.STDOUT, env=m.env())
    m.all_pids.append(p.pid)
    try:
        wait_until(lambda: is_mounted(m.mnt) or p.poll() is not None, 15,
                   'the foreground mount to come up')
        assert p.poll() is None, 'huracanfs mount --foreground exited'
        m.pid = p.pid
        m.m('fg.txt').write_bytes(b'foreground')
        m.wait_remote('fg.txt', b'foreground', 5)
        r = m.fusermount_u()
        assert r.returncode == 0, r.stderr
        assert p.wait(timeout=30) == 0
        m.pid = None
    finally:
        if p.poll() is None:
            m.fusermount_u(lazy=True)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        out.close()


# -- huracanfs unmount and the umount(8) helper ---------------------------

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
UMOUNT_HELPER = os.path.join(REPO, 'mount-helpers', 'umount.huracanfs')


def _write_pending(m):
    files = {
        'models/u.pkl': os.urandom(700_000),
        'logs/u.log': b'line\n' * 5000,
        'notes.txt': b'other category\n',
    }
    for rel, data in files.items():
        p = m.m(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    for rel in files:
        assert not m.r(rel).exists(), '%s uploaded before unmount' % rel
    return files


def test_unmount_command_uploads_everything_before_it_returns(hfs):
    m = hfs(intervals=LONG_INTERVALS)
    files = _write_pending(m)
    pid = m.pid
    r = m.run('unmount', m.mnt, timeout=120)
    assert r.returncode == 0, r.stderr
    # The moment it returns: unmounted, the daemon gone, the bytes remote.
    assert not is_mounted(m.mnt)
    assert not pid_alive(pid), 'unmount returned before the daemon exited'
    m.pid = None
    for rel, data in files.items():
        assert m.r(rel).read_bytes() == data, rel
    assert 'shutdown_flush result=ok' in m.log_text()


def test_umount_helper_as_umount_runs_it(hfs):
    """umount(8) runs /sbin/umount.fuse.huracanfs MNT -t fuse.huracanfs
    (see test_mount_helper.py for umount itself): called that way, it
    returns once the remote holds the bytes."""
    m = hfs(intervals=LONG_INTERVALS)
    files = _write_pending(m)
    pid = m.pid
    env = m.env()
    env['HURACANFS_BIN'] = m.bin
    r = subprocess.run([UMOUNT_HELPER, str(m.mnt), '-t', 'fuse.huracanfs'],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert not is_mounted(m.mnt)
    assert not pid_alive(pid)
    m.pid = None
    for rel, data in files.items():
        assert m.r(rel).read_bytes() == data, rel


def test_unmount_lazy(hfs):
    m = hfs(intervals=LONG_INTERVALS)
    m.m('models').mkdir()
    m.m('models/lazy.pkl').write_bytes(b'lazy' * 1000)
    pid = m.pid
    r = m.run('unmount', m.mnt, '--lazy', timeout=120)
    assert r.returncode == 0, r.stderr
    assert not is_mounted(m.mnt)
    assert not pid_alive(pid)
    m.pid = None
    assert m.r('models/lazy.pkl').read_bytes() == b'lazy' * 1000


def test_unmount_reports_what_stays_queued(hfs):
    m = hfs(intervals=LONG_INTERVALS)
    m.m('models').mkdir()
    data = os.urandom(12_345)
    m.m('models/stuck.pkl').write_bytes(data)
    m.take_remote_offline()
    pid = m.pid
    r = m.run('unmount', m.mnt, '--timeout', '3', timeout=120)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert not is_mounted(m.mnt)
    assert not pid_alive(pid)
    m.pid = None
    # The count, the bytes, the file and where it is kept.
    assert '1 file (12.1 KiB) still queued' in r.stderr, r.stderr
    assert '/models/stuck.pkl (12345 bytes)' in r.stderr, r.stderr
    assert str(m.cache) in r.stderr, r.stderr
    # Kept: the next mount uploads it.
    m.bring_remote_back()
    m.start()
    m.flush()
    assert m.r('models/stuck.pkl').read_bytes() == data


def test_unmount_of_a_dead_mount(hfs):
    m = hfs(intervals=LONG_INTERVALS)
    pid = m.pid
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), 10, 'the daemon to die')
    m.pid = None
    r = m.run('unmount', m.mnt)
    assert r.returncode == 1
    assert 'dead mount' in r.stderr, r.stderr
    assert not is_mounted(m.mnt)


def test_unmount_of_what_is_not_mounted(hfs, tmp_path):
    m = hfs(start=False)
    r = m.run('unmount', m.mnt)
    assert r.returncode == 1
    assert 'not mounted' in r.stderr, r.stderr

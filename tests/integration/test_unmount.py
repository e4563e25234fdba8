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

"""Unmount flushes what is pending, then the daemon exits."""

import os

from hfsutil import LONG_INTERVALS, snapshot, describe_diff, is_mounted


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

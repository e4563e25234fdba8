"""`huracanfs flush` and `huracanfs status --json`."""

import os
import time

from hfsutil import LONG_INTERVALS, CATEGORIES, DEFAULT_INTERVALS


def test_status_json_shape(mount):
    st = mount.status()
    assert st['backend'] == 'local'
    assert os.path.realpath(st['mountpoint']) == os.path.realpath(mount.mnt)
    assert os.path.realpath(st['cache_dir']) == os.path.realpath(mount.cache)
    assert st['journal_pending'] == 0
    assert isinstance(st.get('pid'), int) and st['pid'] == mount.pid
    assert [c['name'] for c in st['categories']] == CATEGORIES
    want = dict(DEFAULT_INTERVALS, monitoring=DEFAULT_INTERVALS['logs'])
    for c in st['categories']:
        assert c['enabled'] is True
        assert c['interval'] == want[c['name']], c
        assert c['pending_files'] == 0 and c['pending_bytes'] == 0
        for k in ('next_flush', 'last_sync', 'last_error'):
            assert k in c
        assert c['last_error'] is None
    # The human form works too.
    r = mount.run('status', mount.mnt, check=True)
    assert 'models' in r.stdout


def test_status_shows_disabled_category(hfs):
    m = hfs(dropbox_extra={'sync_models': False})
    assert m.cat_status('models')['enabled'] is False
    assert m.cat_status('logs')['enabled'] is True


def test_flush_wait_by_category(hfs):
    m = hfs(intervals=LONG_INTERVALS)
    m.m('models').mkdir()
    m.m('logs').mkdir()
    model = os.urandom(1024 * 1024 + 7)
    m.m('models/agent.pkl').write_bytes(model)
    m.m('logs/a.log').write_bytes(b'log\n')
    st = m.status()
    ms = m.cat_status('models', st)
    assert ms['pending_files'] == 1, ms
    assert ms['pending_bytes'] == len(model), ms
    assert ms['next_flush'] is not None and \
        ms['next_flush'] > time.time() + 200, ms
    assert m.cat_status('logs', st)['pending_files'] == 1
    assert not m.r('models/agent.pkl').exists()

    t0 = time.monotonic()
    m.flush('models', wait=True)
    assert time.monotonic() - t0 < 10
    # --wait returned: the file is there now, no polling.
    assert m.r('models/agent.pkl').read_bytes() == model
    assert not m.r('logs/a.log').exists(), \
        'flush --category models uploaded a logs file'
    st = m.status()
    ms = m.cat_status('models', st)
    assert ms['pending_files'] == 0 and ms['pending_bytes'] == 0, ms
    assert ms['last_sync'] is not None and \
        abs(ms['last_sync'] - time.time()) < 30, ms
    assert ms['last_error'] is None
    assert m.cat_status('logs', st)['pending_files'] == 1
    assert 'models_synced' in m.log_text()

    m.flush(wait=True)
    assert m.r('logs/a.log').read_bytes() == b'log\n'
    st = m.status()
    assert all(c['pending_files'] == 0 for c in st['categories']), st
    assert st['journal_pending'] == 0


def test_flush_without_wait_and_bad_category(hfs):
    m = hfs(intervals=LONG_INTERVALS)
    m.m('x.txt').write_bytes(b'x')
    r = m.flush(wait=False)
    assert r.returncode == 0
    m.wait_remote('x.txt', b'x', 5, 'flush without --wait to upload')
    r = m.flush('no_such_category', check=False)
    assert r.returncode != 0
    assert r.stderr.strip(), 'no message for an unknown category'


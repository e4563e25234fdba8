"""`huracanfs flush` and `huracanfs status --json`."""

import json
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



def test_flush_wait_after_a_lost_batch_reply(dbx, fake):
    """The reply of a finish_batch_v2 is lost after Dropbox committed it;
    the retry finds the sessions consumed. The files are recognised by
    their content hash, so flush --wait says they landed (exit 0)."""
    m = dbx(intervals=LONG_INTERVALS)
    m.m('b').mkdir()
    m.flush()
    files = {'b/f%d.txt' % i: b'x%d\n' % i for i in range(3)}
    for rel, data in files.items():
        m.m(rel).write_bytes(data)
    fake.add_fault(route='files/upload_session/finish_batch_v2',
                   lose_response=True)
    fake.reset_stats()
    r = m.flush(check=False)
    assert r.returncode == 0, r.stderr
    st = fake.get_stats()
    assert st['routes']['files/upload_session/finish_batch_v2'] == 2, st
    assert st['faults_fired'], 'the reply was not lost'
    for rel, data in files.items():
        assert fake.get_file('/Huracan/' + rel) == data
    assert 'files/upload' not in st['routes'], 'sent again'
    assert all(c['pending_files'] == 0 and c['last_error'] is None
               for c in m.status()['categories'])
    assert 'will retry' not in m.log_text()


def test_status_escapes_control_characters(hfs):
    m = hfs(intervals=LONG_INTERVALS)
    # (DEL is refused: Dropbox does not take it.)
    name = 'odd\rname\x1b[2J\x07\u0085.txt'
    m.m(name).write_bytes(b'x')
    r = m.run('status', m.mnt, '--files', check=True)
    for c in '\r\x1b\x07\u0085':
        assert c not in r.stdout, repr(r.stdout)
    assert 'odd\\rname\\x1b[2J\\x07\\u0085.txt' in r.stdout, \
        repr(r.stdout)
    # JSON escapes them itself, and says the name exactly.
    r = m.run('status', m.mnt, '--json', '--files', check=True)
    for c in '\r\x1b\x07':
        assert c not in r.stdout, repr(r.stdout)
    other = [c for c in json.loads(r.stdout)['categories']
             if c['name'] == 'other'][0]
    assert [f['path'] for f in other['files']] == ['/' + name]
    # And the log's lines stay lines.
    m.flush()
    assert m.r(name).read_bytes() == b'x'
    for line in m.log_text().split('\n'):
        assert '\r' not in line and '\x1b' not in line, repr(line)

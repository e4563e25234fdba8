"""What reaches the remote, when, and under which category.

The default test config uploads learning, logs and other after 1 s,
models after 3 s, data_cache after 6 s and new data_cache files after 2 s.
"""

import os
import random
import time

from hfsutil import snapshot, describe_diff, file_equals, wait_until


def test_files_reach_remote(mount):
    rng = random.Random(3)
    files = {
        'notes.txt': b'plain\n',
        'empty.txt': b'',
        'runs/r1/results.csv': rng.randbytes(70_000),
        'runs/r1/deep/er/blob.dat': rng.randbytes(9 * 1024 * 1024 + 17),
        'résumé 🚀.txt': 'unicode'.encode(),
    }
    for rel, data in files.items():
        p = mount.m(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (mount.m('runs/empty_dir')).mkdir()
    want = snapshot(mount.mnt)
    assert set(k for k, v in want.items() if v != 'DIR') == set(files)
    try:
        wait_until(lambda: snapshot(mount.remote) == want, 10,
                   'the remote to hold the same tree as the mount')
    except AssertionError as e:
        raise AssertionError('%s: %s' % (e, describe_diff(
            want, snapshot(mount.remote))))


def test_mkdir_unlink_rmdir_replayed(mount):
    m, r = mount.m, mount.r
    m('a/b/c').mkdir(parents=True)
    wait_until(lambda: r('a/b/c').is_dir(), 3,
               'mkdir to reach the remote')
    m('a/b/c/f.txt').write_bytes(b'payload')
    mount.wait_remote('a/b/c/f.txt', b'payload', 5)
    os.unlink(m('a/b/c/f.txt'))
    wait_until(lambda: not r('a/b/c/f.txt').exists(), 3,
               'unlink to reach the remote')
    os.rmdir(m('a/b/c'))
    wait_until(lambda: not r('a/b/c').exists(), 3,
               'rmdir to reach the remote')
    assert r('a/b').is_dir()
    # A file deleted before it was ever uploaded must not appear at all.
    m('a/ghost.txt').write_bytes(b'boo')
    os.unlink(m('a/ghost.txt'))
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        assert not r('a/ghost.txt').exists(), \
            'a file unlinked before upload reached the remote'
        time.sleep(0.1)


def test_dir_rename_is_a_remote_rename(mount):
    m, r = mount.m, mount.r
    m('runs/old/sub').mkdir(parents=True)
    m('runs/old/sub/data.txt').write_bytes(b'data')
    m('runs/old/top.txt').write_bytes(b'top')
    mount.wait_remote('runs/old/sub/data.txt', b'data', 5)
    mount.wait_remote('runs/old/top.txt', b'top', 5)
    dir_ino = os.stat(r('runs/old')).st_ino
    file_ino = os.stat(r('runs/old/sub/data.txt')).st_ino
    os.rename(m('runs/old'), m('runs/new'))
    wait_until(lambda: r('runs/new/sub/data.txt').exists()
               and not r('runs/old').exists(), 3,
               'the directory rename to reach the remote')
    assert os.stat(r('runs/new')).st_ino == dir_ino, \
        'the remote directory was re-created instead of renamed'
    assert os.stat(r('runs/new/sub/data.txt')).st_ino == file_ino, \
        'the remote file was uploaded again instead of renamed'
    assert snapshot(r('runs')) == snapshot(m('runs'))


def test_file_rename_and_overwrite(mount):
    m, r = mount.m, mount.r
    m('x.txt').write_bytes(b'x-content')
    m('y.txt').write_bytes(b'y-old')
    mount.wait_remote('x.txt', b'x-content', 5)
    mount.wait_remote('y.txt', b'y-old', 5)
    os.rename(m('x.txt'), m('y.txt'))
    wait_until(lambda: not r('x.txt').exists()
               and file_equals(r('y.txt'), b'x-content'), 5,
               'rename over an existing file to reach the remote')


def test_namespace_ops_in_order(mount):
    """A burst of namespace changes ends in the same state remotely."""
    m = mount.m
    m('s/a').mkdir(parents=True)
    m('s/a/f1').write_bytes(b'1')
    os.rename(m('s/a'), m('s/b'))
    m('s/a').mkdir()
    m('s/a/f2').write_bytes(b'2')
    os.unlink(m('s/b/f1'))
    os.rmdir(m('s/b'))
    os.rename(m('s/a'), m('s/b'))
    m('s/c').mkdir()
    os.rename(m('s/b/f2'), m('s/c/f2'))
    want = snapshot(m('s'))
    assert want == {'b': 'DIR', 'c': 'DIR', 'c/f2': b'2'}
    wait_until(lambda: mount.r('s').is_dir()
               and snapshot(mount.r('s')) == want, 6,
               'the remote to end in the state of the mount')


def test_category_timing_logs_before_models(mount):
    logs_rel = 'logs/engine.log'
    models_rel = 'models/agent.pkl'
    mount.m('logs').mkdir()
    mount.m('models').mkdir()
    logs_data, models_data = b'log line\n' * 100, os.urandom(50_000)
    t0 = time.monotonic()
    mount.m(logs_rel).write_bytes(logs_data)
    mount.m(models_rel).write_bytes(models_data)
    t_logs = t_models = None
    while time.monotonic() - t0 < 7:
        now = time.monotonic() - t0
        if t_logs is None and file_equals(mount.r(logs_rel), logs_data):
            t_logs = now
        if t_models is None and mount.r(models_rel).exists():
            t_models = now
        if t_logs is not None and t_models is not None:
            break
        time.sleep(0.05)
    assert t_logs is not None and t_logs <= 2.5, \
        'logs file (1 s interval) not on the remote by 2.5 s (t=%s)' % t_logs
    assert t_models is not None, 'models file not on the remote after 7 s'
    assert t_models >= 2.5, \
        'models file (3 s interval) uploaded too early, at %.2f s' % t_models
    assert t_models <= 5.5, \
        'models file (3 s interval) uploaded late, at %.2f s' % t_models
    mount.wait_remote(models_rel, models_data, 2)
    log = mount.log_text()
    assert 'logs_synced' in log and 'models_synced' in log


def test_new_data_cache_file_goes_early(mount):
    rel = 'data/candles/BTC-USDT/btc_usdt_20251112_164920_candles.parquet'
    mount.m(rel).parent.mkdir(parents=True)
    data = os.urandom(300_000)
    t0 = time.monotonic()
    mount.m(rel).write_bytes(data)
    mount.wait_remote(rel, data, 4.5,
                      'a new parquet (new-data interval 2 s, full 6 s)')
    t_new = time.monotonic() - t0
    assert t_new >= 1.5, 'new parquet uploaded at %.2f s, before 2 s' % t_new
    assert 'data_cache_synced' in mount.log_text()
    # Once uploaded, it is no longer new: a change waits the full 6 s.
    data2 = os.urandom(300_000)
    t1 = time.monotonic()
    mount.m(rel).write_bytes(data2)
    while not file_equals(mount.r(rel), data2):
        assert time.monotonic() - t1 < 10, \
            'changed parquet not uploaded within 10 s'
        time.sleep(0.05)
    t_upd = time.monotonic() - t1
    assert t_upd >= 4.5, ('a changed, already uploaded parquet was uploaded'
                          ' after %.2f s, not at the 6 s interval' % t_upd)


CLASSIFY = {
    'logs/learning/insight.json': 'learning',
    '2025-11-12/learning/pattern.json': 'learning',
    'logs/engine.log': 'logs',
    'logs/sub/x.json': 'logs',
    'logs/model.pkl': 'logs',
    '2025-11-12/logs/a.log': 'logs',
    '2025-11-12/monitoring/health.json': 'monitoring',
    'data/candles/BTC-USDT/btc.parquet': 'data_cache',
    'data/candles/ETH.parquet': 'data_cache',
    'models/training/2025-11-12/SOL-USDT/data/sol_candles.parquet':
        'data_cache',
    'scratch/loose.parquet': 'data_cache',
    'models/training/2025-11-12/SOL-USDT/metrics/training_metrics.json':
        'other',
    'models/training/2025-11-12/SOL-USDT/features/features.json': 'other',
    'models/training/2025-11-12/SOL-USDT/results/trades.csv': 'other',
    'models/training/2025-11-12/SOL-USDT/model/model.bin': 'models',
    'models/training/2025-11-12/SOL-USDT/model/model_metadata.json':
        'models',
    'models/agent.pkl': 'models',
    '2025-11-12/models/m.pkl': 'models',
    'tmp/rl_agent.pt': 'models',
    'weights.bin': 'models',
    'README.txt': 'other',
    'data/other.csv': 'other',
}


def test_category_xattr(mount):
    for rel in CLASSIFY:
        p = mount.m(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b'x')
    got = {rel: os.getxattr(mount.m(rel), 'user.huracanfs.category')
           .rstrip(b'\0').decode() for rel in CLASSIFY}
    wrong = {k: (got[k], v) for k, v in CLASSIFY.items() if got[k] != v}
    assert not wrong, 'path: (got, expected): %r' % wrong
    assert 'user.huracanfs.category' in os.listxattr(mount.m('README.txt'))


def test_category_follows_rename(mount):
    mount.m('logs').mkdir()
    mount.m('models').mkdir()
    mount.m('logs/thing.pkl').write_bytes(b'x')
    assert os.getxattr(mount.m('logs/thing.pkl'),
                       'user.huracanfs.category').rstrip(b'\0') == b'logs'
    os.rename(mount.m('logs/thing.pkl'), mount.m('models/thing.pkl'))
    assert os.getxattr(mount.m('models/thing.pkl'),
                       'user.huracanfs.category').rstrip(b'\0') == b'models'


def test_state_xattr_changes_on_upload(mount):
    p = mount.m('state.txt')
    p.write_bytes(b'one')
    dirty = os.getxattr(p, 'user.huracanfs.state').rstrip(b'\0')
    assert dirty, 'empty user.huracanfs.state'
    mount.wait_remote('state.txt', b'one', 5)
    def state():
        return os.getxattr(p, 'user.huracanfs.state').rstrip(b'\0')
    clean = wait_until(lambda: state() != dirty and state(), 3,
                       'state xattr to change after the upload')
    p.write_bytes(b'two')
    again = state()
    assert again != clean, ('state stayed %r after the file was written'
                            ' again' % again)


def test_folder_made_here_shows_what_others_put_in_it(hfs):
    """A folder created through the mount is listed again after
    dir_cache_seconds like any other (issue 10, item 7): a file another
    process puts in the local backend's directory appears in it."""
    m = hfs(hfs_extra={'dir_cache_seconds': 1})
    m.m('shared').mkdir()
    m.m('shared/deep').mkdir()
    m.flush()
    assert os.listdir(m.m('shared/deep')) == []
    assert (m.remote / 'shared' / 'deep').is_dir()
    (m.remote / 'shared' / 'deep' / 'theirs.txt').write_bytes(b'theirs\n')
    (m.remote / 'shared' / 'also.txt').write_bytes(b'also\n')
    wait_until(lambda: os.listdir(m.m('shared/deep')) == ['theirs.txt'], 20,
               'a file put in the folder by another process to show')
    wait_until(lambda: sorted(os.listdir(m.m('shared'))) ==
               ['also.txt', 'deep'], 20, 'and in its parent')
    assert m.m('shared/deep/theirs.txt').read_bytes() == b'theirs\n'

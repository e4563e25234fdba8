"""Reliability: Dropbox outages, a full cache disk, and data integrity
under load (fio with crc32c verification, concurrent writers, a reader of
a log while it is appended, an mmap writer), each also after the files
were uploaded, evicted from the cache and fetched again.

Every operation that could hang is bounded (bounded()): a mount that
blocks is a failure, not a stuck test run. The Dropbox tests run against
the fake server over HTTPS (tests/fakedropbox); the others on the local
backend."""

import errno
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import dropbox_mounts
from fakedropbox.store import Lookup
from hfsutil import LONG_INTERVALS, describe_diff, file_equals, \
    is_mounted, snapshot, wait_until

ROOT = '/Huracan'
MiB = 1024 * 1024
# How long an operation on cached data may take while Dropbox is down:
# the mount must not wait for the network.
OFFLINE_OP_S = 5


# ------------------------------------------------------------- helpers

class Hung(AssertionError):
    pass


# Threads of bounded() calls that did not return: the fake fixture waits
# for them (once the outage is over) before the mount is cleaned up, so
# a blocked call does not keep the mount busy.
LEFT_BEHIND = []


def bounded(fn, timeout, what):
    """Runs fn() in a thread; returns its result, re-raises its exception,
    or fails if it is still running after `timeout` seconds (the thread is
    left behind: a blocked system call cannot be interrupted)."""
    box = {}

    def run():
        try:
            box['r'] = fn()
        except BaseException as e:  # noqa: B902 - handed to the caller
            box['e'] = e
    t = threading.Thread(target=run, daemon=True)
    t0 = time.monotonic()
    t.start()
    t.join(timeout)
    if t.is_alive():
        LEFT_BEHIND.append(t)
        raise Hung('%s did not return within %.0f s' % (what, timeout))
    if 'e' in box:
        raise box['e']
    box['s'] = time.monotonic() - t0
    return box.get('r')


def remote_tree(fake):
    """{rel: bytes | 'DIR'} of everything under /Huracan on the fake. The
    daemon may move or delete a file between the listing and the read:
    the read is then tried again on a fresh listing."""
    for _ in range(20):
        out = {}
        try:
            for e in fake.tree():
                if not e['path_lower'].startswith(ROOT.lower() + '/'):
                    continue
                rel = e['path_display'][len(ROOT) + 1:]
                out[rel] = 'DIR' if e['.tag'] == 'folder' else \
                    fake.get_file(e['path_display'])
            return out
        except Lookup:
            time.sleep(0.05)
    raise AssertionError('the remote tree kept changing while read')


def first_difference(a, b):
    n = min(len(a), len(b))
    step = 65536
    for i in range(0, n, step):
        if a[i:i + step] != b[i:i + step]:
            return next((k for k in range(i, min(n, i + step))
                         if a[k] != b[k]), n)
    return n


def same(got, want, what):
    """Bytes equality without pytest's assertion introspection (a diff of
    megabytes would take hours)."""
    if got == want:
        return
    raise AssertionError('%s: %s bytes, expected %d; first difference at'
                         ' byte %d' % (what, len(got) if got is not None
                                       else 'no', len(want),
                                       first_difference(got or b'', want)))


def state(path):
    return os.getxattr(path, 'user.huracanfs.state').decode()


def drop_page_cache():
    """So the next reads reach the daemon, not the kernel's pages."""
    os.sync()
    try:
        with open('/proc/sys/vm/drop_caches', 'w') as f:
            f.write('3\n')
    except OSError:
        pass


def wait_evicted(paths, timeout=30):
    """Waits until every file's bytes left the cache (cache_max_bytes is
    tiny in these tests; eviction runs every 2 s while over it)."""
    try:
        wait_until(lambda: all(state(p) == 'remote' for p in paths),
                   timeout, 'eviction', interval=0.2)
    except AssertionError:
        raise AssertionError('not evicted after %d s: %s' % (
            timeout, ', '.join('%s=%s' % (os.path.basename(p), state(p))
                               for p in paths)))


def nothing_pending(m):
    st = m.status()
    return (all(c['pending_files'] == 0 for c in st['categories'])
            and st['journal_pending'] == 0)


def put(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)


# ------------------------------------------------------------- fixtures

@pytest.fixture
def fake(fake):
    """conftest's fake, and the threads of bounded() calls that did not
    return are waited for once the outage is over."""
    yield fake
    fake.end_outage()
    fake.clear_faults()
    while LEFT_BEHIND:
        LEFT_BEHIND.pop().join(90)


@pytest.fixture
def dbx(hfs, fake, ca):
    """A factory of mounts on the Dropbox backend of the fake."""
    return dropbox_mounts(hfs, fake, ca, hfs_defaults={'today_link': ''})


# --------------------------------------------------------------- outage

OUTAGE_FILES = {
    'logs/train.log': b'step 1 loss=0.5\n' * 200,
    'models/agent.pkl': os.urandom(300_000),
    'data/candles/BTC-USDT/btc_1_candles.parquet': os.urandom(6 * MiB),
    'notes/plan.txt': b'buy low\n',
}


def offline_ops(m, label):
    """Work that must go on while Dropbox is down, each bounded: reads
    and listings of cached data, new files, new folders, appends,
    rewrites, renames, deletes. Returns the expected new tree content."""
    expect = dict(OUTAGE_FILES)

    def op(what, fn):
        return bounded(fn, OFFLINE_OP_S, '%s (%s, Dropbox down)'
                       % (what, label))
    for rel, data in OUTAGE_FILES.items():
        same(op('reading cached %s' % rel, lambda: m.m(rel).read_bytes()),
             data, rel)
    for d in ('logs', 'models', 'data/candles/BTC-USDT', 'notes'):
        op('listing %s' % d, lambda: os.listdir(m.m(d)))
    assert sorted(op('listing logs', lambda: os.listdir(m.m('logs')))) == \
        ['train.log']
    new = {
        'logs/offline_%s.log' % label: b'written while down\n' * 50,
        'new_%s/deep/file.json' % label: b'{"offline": true}\n',
        'models/offline_%s.pkl' % label: os.urandom(70_000),
    }
    for rel, data in new.items():
        op('writing new %s' % rel, lambda: put(m.m(rel), data))
        expect[rel] = data

    def append():
        with open(m.m('logs/train.log'), 'ab') as f:
            f.write(b'appended while down\n')
    op('appending to logs/train.log', append)
    expect['logs/train.log'] += b'appended while down\n'
    data = os.urandom(50_000)
    op('rewriting models/agent.pkl', lambda: put(m.m('models/agent.pkl'),
                                                  data))
    expect['models/agent.pkl'] = data
    op('renaming notes/plan.txt', lambda: os.rename(
        m.m('notes/plan.txt'), m.m('notes/plan_%s.txt' % label)))
    expect['notes/plan_%s.txt' % label] = expect.pop('notes/plan.txt')
    victim = 'logs/offline_%s.log' % label
    op('deleting %s' % victim, lambda: os.unlink(m.m(victim)))
    del expect[victim]
    for rel, data in expect.items():
        same(op('reading back %s' % rel, lambda: m.m(rel).read_bytes()),
             data, rel)
    op('status', m.status)
    return expect


def check_drained(m, fake, expect, timeout=30):
    """The queue drains by itself (no flush command) and nothing keeps
    failing: every file reads back, and the remote equals the mount."""
    for rel, data in expect.items():
        got = bounded(lambda: m.m(rel).read_bytes(), 30,
                      'reading %s after recovery' % rel)
        same(got, data, '%s after the outage' % rel)
    local = snapshot(m.mnt)
    try:
        wait_until(lambda: remote_tree(fake) == local, timeout,
                   'the queue to drain by itself after the outage')
    except AssertionError as e:
        raise AssertionError('%s: %s' % (e, describe_diff(
            local, remote_tree(fake))))
    wait_until(lambda: nothing_pending(m), 10, 'status to show nothing'
               ' pending after the outage: %s' % json.dumps(m.status()))
    for c in m.status()['categories']:
        assert not c['last_error'], c


def test_outage_keeps_serving_and_drains(dbx, fake):
    m = dbx(hfs_extra={'dir_cache_seconds': 1})
    for rel, data in OUTAGE_FILES.items():
        put(m.m(rel), data)
    fake.put_file(ROOT + '/remote/seen.txt', b'read before the outage\n')
    fake.put_file(ROOT + '/remote/unseen.txt', b'read only after it\n')
    m.flush()
    assert m.m('remote/seen.txt').read_bytes() == b'read before the outage\n'

    fake.outage(300)           # connections refused until end_outage()
    late = {}

    def read_unseen():
        # Not cached: fails (or waits) while Dropbox is down; must not
        # keep failing once it is back.
        try:
            late['data'] = m.m('remote/unseen.txt').read_bytes()
        except OSError as e:
            late['errno'] = e.errno
    reader = threading.Thread(target=read_unseen, daemon=True)
    try:
        time.sleep(1.2)        # the cached listings are now stale
        expect = offline_ops(m, 'mounted')
        expect['remote/seen.txt'] = b'read before the outage\n'
        reader.start()
        time.sleep(1.5)        # past the upload intervals: uploads fail
        bounded(m.status, OFFLINE_OP_S, 'status (Dropbox down)')
        for rel in ('models/agent.pkl', 'logs/train.log',
                    'models/offline_mounted.pkl'):
            assert state(m.m(rel)) in ('dirty', 'uploading'), (
                rel, state(m.m(rel)))
        same(remote_tree(fake).get('models/agent.pkl'),
             OUTAGE_FILES['models/agent.pkl'], 'models/agent.pkl on the'
             ' remote during the outage')
    finally:
        fake.end_outage()
    reader.join(120)
    assert not reader.is_alive(), 'a read of an uncached file hung'
    assert late.get('data') in (None, b'read only after it\n'), late
    assert late.get('errno') in (None, errno.EIO, errno.EAGAIN,
                                 errno.ENETUNREACH, errno.ETIMEDOUT), late
    expect['remote/unseen.txt'] = b'read only after it\n'
    check_drained(m, fake, expect)


def test_a_hanging_remote_never_holds_up_visited_paths(dbx, fake):
    """The server accepts connections and never answers (issue 10, item
    3): on folders listed before and files in the cache, ls, stat, open
    and cat answer at once (from the index; stale listings are refreshed
    in the background); a name not known answers ENOENT soon; only a read
    of bytes not in the cache waits, remote_wait_seconds at most, then
    EIO with the reason in the log. Once the server answers again, the
    background refresh shows what another machine added meanwhile."""
    fake.put_file(ROOT + '/runs/r1/metrics.json', b'{"loss": 0.1}\n')
    fake.put_file(ROOT + '/runs/r1/sub/notes.md', b'notes\n')
    fake.put_file(ROOT + '/runs/big.bin', b'b' * (1 << 20))
    m = dbx(hfs_extra={'dir_cache_seconds': 1, 'remote_wait_seconds': 3})
    assert sorted(os.listdir(m.m('runs'))) == ['big.bin', 'r1']
    assert sorted(os.listdir(m.m('runs/r1'))) == ['metrics.json', 'sub']
    assert m.m('runs/r1/sub/notes.md').read_bytes() == b'notes\n'
    assert m.m('runs/r1/metrics.json').read_bytes() == b'{"loss": 0.1}\n'
    time.sleep(1.5)  # every listing is older than dir_cache_seconds now
    fake.outage(120, mode='hang')
    try:
        def write_new():
            with open(m.m('runs/r1/new.txt'), 'w') as f:
                f.write('written while the remote hangs\n')
        bounded(write_new, OFFLINE_OP_S, 'a create (hang)')

        def visit():
            return (sorted(os.listdir(m.m('runs'))),
                    sorted(os.listdir(m.m('runs/r1'))),
                    os.listdir(m.m('runs/r1/sub')),
                    os.stat(m.m('runs/big.bin')).st_size,
                    m.m('runs/r1/metrics.json').read_bytes(),
                    m.m('runs/r1/sub/notes.md').read_bytes())
        for _ in range(3):  # the background refresh keeps failing
            assert bounded(visit, OFFLINE_OP_S, 'visited paths (hang)') == (
                ['big.bin', 'r1'], ['metrics.json', 'new.txt', 'sub'],
                ['notes.md'], 1 << 20, b'{"loss": 0.1}\n', b'notes\n')
            time.sleep(1.1)

        def missing():
            return os.path.exists(m.m('runs/r1/nothing.here'))
        assert bounded(missing, OFFLINE_OP_S, 'an unknown name') is False

        def read_uncached():
            try:
                m.m('runs/big.bin').read_bytes()
                return 'read'
            except OSError as e:
                return e.errno
        log0 = m.log_size()
        assert bounded(read_uncached, 3 + 12, 'a read of bytes not cached'
                       ) == errno.EIO
        assert 'remote_wait_seconds' in m.log_since(log0)
        fake.put_file(ROOT + '/runs/r1/from_elsewhere.txt', b'x\n')
    finally:
        fake.end_outage()
    wait_until(lambda: 'from_elsewhere.txt' in os.listdir(m.m('runs/r1')),
               60, 'the background refresh after the hang')
    assert m.m('runs/big.bin').read_bytes() == b'b' * (1 << 20)
    m.flush()
    assert fake.get_file(ROOT + '/runs/r1/new.txt') == \
        b'written while the remote hangs\n'


def test_mount_from_index_while_dropbox_is_down(dbx, fake):
    m = dbx(hfs_extra={'flush_timeout_seconds': 5})
    for rel, data in OUTAGE_FILES.items():
        put(m.m(rel), data)
    m.flush()
    m.unmount()
    fake.outage(300)
    try:
        t0 = time.monotonic()
        rc, out, err = m.try_start()
        assert rc == 0, 'mount while Dropbox is down failed: %s' % err
        assert is_mounted(m.mnt)
        assert time.monotonic() - t0 < 20, 'mount took %.0f s' % (
            time.monotonic() - t0)
        m.pid = m._find_pid()
        m.all_pids.append(m.pid)
        assert sorted(bounded(lambda: os.listdir(m.mnt), OFFLINE_OP_S,
                              'listing the root (Dropbox down)')) == \
            ['data', 'logs', 'models', 'notes']
        expect = offline_ops(m, 'remounted')
        assert bounded(m.status, OFFLINE_OP_S, 'status')['offline'] is True
    finally:
        fake.end_outage()
    check_drained(m, fake, expect)


def test_unmount_during_outage_is_bounded(dbx, fake):
    """flush_timeout_seconds bounds what unmount waits for the remote."""
    m = dbx(intervals=LONG_INTERVALS, hfs_extra={'flush_timeout_seconds': 3})
    m.m('notes').mkdir()
    m.m('notes/a.txt').write_bytes(b'a\n')
    m.flush()
    fake.outage(300)
    try:
        m.m('notes/new').mkdir()
        m.m('notes/new/b.txt').write_bytes(b'pending\n')
        time.sleep(1)
        t0 = time.monotonic()
        try:
            m.unmount(timeout=15)
        except AssertionError as e:
            raise AssertionError(
                'with flush_timeout_seconds 3 and Dropbox down, the daemon'
                ' was still running %.0f s after fusermount3 -u (%s)'
                % (time.monotonic() - t0, e))
    finally:
        fake.end_outage()
    m.start()
    assert m.m('notes/new/b.txt').read_bytes() == b'pending\n'
    m.flush()
    assert fake.get_file(ROOT + '/notes/new/b.txt') == b'pending\n'


def test_renamed_folder_stays_cached_for_an_outage(dbx, fake):
    """Renaming a folder (one move on Dropbox, which gives its files new
    revisions) must not cost the cached bytes of its files: after the
    move and a new listing they are still served from the cache, with no
    download, and so still readable when Dropbox goes down."""
    m = dbx(hfs_extra={'dir_cache_seconds': 1})
    m.m('runs/a').mkdir(parents=True)
    data = os.urandom(5 * MiB)
    put(m.m('runs/a/btc_candles.parquet'), data)
    m.flush()
    os.rename(m.m('runs/a'), m.m('runs/b'))
    m.flush()
    assert fake.metadata(ROOT + '/runs/b/btc_candles.parquet')['size'] == \
        len(data)
    time.sleep(1.5)                  # the listing of runs/b is stale
    os.listdir(m.m('runs/b'))        # listed again: new revisions
    assert state(m.m('runs/b/btc_candles.parquet')) == 'cached', \
        'the renamed folder\'s file lost its cached bytes'
    fake.reset_stats()
    fake.outage(300)
    try:
        same(bounded(lambda: m.m('runs/b/btc_candles.parquet').read_bytes(),
                     OFFLINE_OP_S, 'reading a file of the renamed folder'
                     ' (Dropbox down)'), data, 'runs/b/btc_candles.parquet')
    finally:
        fake.end_outage()
    assert fake.get_stats()['bytes_downloaded'] == 0


def test_flush_wait_covers_a_file_renamed_into_another_category(hfs):
    """The trainer's atomic save: written as model.bin.tmp (category
    other), renamed to model.bin (models). `flush --wait` returns only
    once it is uploaded, whichever flusher sees the rename first."""
    m = hfs(intervals=LONG_INTERVALS, hfs_extra={'today_link': ''})
    m.m('run').mkdir()
    # A large file of the same category (other) queued first, so that
    # its flusher reaches the renamed file after the models flusher has
    # finished its part of the flush.
    put(m.m('run/big.dat'), os.urandom(64 * MiB))
    put(m.m('run/model.bin.tmp'), b'weights' * 1000)
    os.rename(m.m('run/model.bin.tmp'), m.m('run/model.bin'))
    m.flush()
    assert file_equals(m.r('run/model.bin'), b'weights' * 1000), (
        'flush --wait exited 0 but run/model.bin is not on the remote;'
        ' pending: %s' % {c['name']: c['pending_files']
                          for c in m.status()['categories']
                          if c['pending_files']})
    assert nothing_pending(m), m.status()


# --------------------------------------------- what the journal sends

def test_files_that_never_reached_dropbox_cost_no_requests(dbx, fake):
    """The trainer's saves (write model.bin.tmp, rename it over model.bin)
    and scratch files deleted before their upload send no move or delete
    to Dropbox: only the final bytes are uploaded, where they end up.
    Files that are on Dropbox are moved and deleted there, and folders
    always are."""
    m = dbx(intervals=LONG_INTERVALS)
    fake.reset_stats()
    m.m('run').mkdir()
    for i in range(5):
        put(m.m('run/model.bin.tmp'), b'weights %d' % i)
        os.rename(m.m('run/model.bin.tmp'), m.m('run/model.bin'))
        put(m.m('run/scratch_%d.tmp' % i), b'scratch')
        os.unlink(m.m('run/scratch_%d.tmp' % i))
    m.m('d').mkdir()
    put(m.m('d/a.txt'), b'a')
    os.rename(m.m('d'), m.m('e'))
    m.flush()
    assert fake.get_file(ROOT + '/run/model.bin') == b'weights 4'
    assert fake.get_file(ROOT + '/e/a.txt') == b'a'
    tree = remote_tree(fake)
    assert 'run/model.bin.tmp' not in tree and 'd/a.txt' not in tree, tree
    assert not [p for p in tree if 'scratch' in p], tree
    assert len(fake.requests('files/delete_v2')) == 0, \
        fake.requests('files/delete_v2')
    assert len(fake.requests('files/delete_batch')) == 0, \
        fake.requests('files/delete_batch')
    moves = [r['arg'] for r in fake.requests('files/move_v2')]
    assert [(a['from_path'], a['to_path']) for a in moves] == \
        [(ROOT + '/d', ROOT + '/e')], moves

    # On Dropbox now: renames and deletes go there.
    fake.reset_stats()
    os.rename(m.m('run/model.bin'), m.m('run/model2.bin'))
    os.unlink(m.m('e/a.txt'))
    put(m.m('run/model.bin.tmp'), b'weights 5')
    os.rename(m.m('run/model.bin.tmp'), m.m('run/model2.bin'))
    m.flush()
    assert fake.get_file(ROOT + '/run/model2.bin') == b'weights 5'
    tree = remote_tree(fake)
    assert 'run/model.bin' not in tree and 'e/a.txt' not in tree, tree
    assert len(fake.requests('files/move_v2')) == 1
    # a.txt and model2.bin, in one batch, each at the revision we knew
    # (model2.bin once more at the revision its move gave it: the
    # mount looks, finds its own bytes there, and deletes those).
    deleted = [e for r in fake.requests('files/delete_batch')
               for e in r['arg']['entries']]
    assert sorted(set(e['path'] for e in deleted)) == \
        [ROOT + '/e/a.txt', ROOT + '/run/model2.bin'], deleted
    assert all(e.get('parent_rev') for e in deleted), deleted
    assert len(fake.requests('files/delete_v2')) == 0
    assert nothing_pending(m), m.status()


def test_our_own_upload_with_a_lost_answer_is_no_conflict(dbx, fake):
    """An upload Dropbox stored but whose answer we never saw (here: it
    answers insufficient_space after storing the bytes) leaves a revision
    we did not hear of. It is ours: the next upload replaces it, whether
    or not the file changed meanwhile, and no conflicted copy appears."""
    m = dbx(intervals=LONG_INTERVALS)
    m.m('models').mkdir()
    put(m.m('models/agent.pkl'), b'v1' * 1000)
    m.flush()
    def send_unheard(data):
        put(m.m('models/agent.pkl'), data)
        fake.add_fault(route='files/upload', path='*agent.pkl', count=1,
                       process=True, status=409, error='insufficient_space')
        r = m.flush(check=False)
        assert r.returncode != 0, 'the upload did not fail'
        assert fake.get_file(ROOT + '/models/agent.pkl') == data

    # Changed meanwhile: ours replaces our unheard revision.
    send_unheard(b'v2' * 1000)
    put(m.m('models/agent.pkl'), b'v3' * 1000)
    m.flush()
    assert fake.get_file(ROOT + '/models/agent.pkl') == b'v3' * 1000
    # Unchanged since: its bytes are there already.
    send_unheard(b'v4' * 1000)
    m.flush()
    assert fake.get_file(ROOT + '/models/agent.pkl') == b'v4' * 1000
    assert sorted(os.listdir(m.m('models'))) == ['agent.pkl']
    assert list(remote_tree(fake)) == ['models', 'models/agent.pkl'], \
        remote_tree(fake)
    assert 'conflict' not in m.log_text()
    assert nothing_pending(m), m.status()


def test_a_late_upload_of_a_deleted_file_does_not_bring_it_back(dbx, fake):
    """The server holds an upload while the daemon is killed and stores
    it only after the next daemon has deleted the file there: that is
    our own late upload (the tombstone the delete left says so), deleted
    again, not a new file to show."""
    m = dbx(intervals=LONG_INTERVALS, hfs_extra={'dir_cache_seconds': 1})
    m.m('logs').mkdir()
    m.flush()
    data = b'line\n' * 100
    put(m.m('logs/x.log'), data)
    fake.add_fault(route='files/upload', path='*x.log', delay=3, count=1)
    m.flush(wait=False)
    time.sleep(1)  # the upload is sent; the server holds it for 3 s
    m.kill9()
    m.start()
    os.unlink(m.m('logs/x.log'))
    m.flush()
    wait_until(lambda: fake_has(fake, 'logs/x.log'), 15,
               'the held upload to land')
    assert fake.get_file(ROOT + '/logs/x.log') == data
    # The listing shows it: ours, late.
    wait_until(lambda: 'x.log' not in os.listdir(m.m('logs')) and
               not fake_has(fake, 'logs/x.log'), 20,
               'the late upload to be deleted again', interval=0.2)
    m.flush()
    assert 'x.log' not in os.listdir(m.m('logs'))
    assert not fake_has(fake, 'logs/x.log')
    assert 'late upload of "/logs/x.log"' in m.log_text()
    # The same bytes written there again are a file of ours, not a late
    # upload: they stay (the tombstone is for paths we have nothing at).
    put(m.m('logs/x.log'), data)
    m.flush()
    fake.reset_stats()
    for _ in range(3):
        assert 'x.log' in os.listdir(m.m('logs'))
        time.sleep(1.5)  # past dir_cache_seconds: listed again
    m.flush()
    assert fake.get_file(ROOT + '/logs/x.log') == data
    assert not fake.requests('files/delete_v2')


def fake_has(fake, rel):
    try:
        fake.get_file(ROOT + '/' + rel)
        return True
    except Exception:
        return False


# ------------------------------------------------------ index map growth

def test_index_map_grows_as_the_index_fills(hfs, monkeypatch):
    """The LMDB map starts tiny (HURACANFS_INDEX_MAP_SIZE, a test knob);
    thousands of creates, writes and renames through the mount all
    succeed while the map is doubled again and again, the index survives
    kill -9, and everything reaches the remote."""
    monkeypatch.setenv('HURACANFS_INDEX_MAP_SIZE', str(128 * 1024))
    m = hfs(intervals=LONG_INTERVALS, hfs_extra={'today_link': ''})
    want = {}
    for d in range(10):
        m.m('runs/r%d' % d).mkdir(parents=True)
        for i in range(300):
            rel = 'runs/r%d/metrics_%03d.json' % (d, i)
            data = (b'{"run": %d, "step": %d}\n' % (d, i)) * (i % 5 + 1)
            put(m.m(rel), data)
            want[rel] = data
    for i in range(0, 300, 3):
        src = 'runs/r0/metrics_%03d.json' % i
        dst = 'runs/r0/moved_%03d.json' % i
        os.rename(m.m(src), m.m(dst))
        want[dst] = want.pop(src)
    grown = m.log_text().count('index_map_grown')
    assert grown >= 4, 'the map grew %d times from 128 KiB' % grown
    for rel, data in want.items():
        assert file_equals(m.m(rel), data), rel

    m.kill9()
    monkeypatch.delenv('HURACANFS_INDEX_MAP_SIZE')
    m.start()
    got = {str(p.relative_to(m.mnt)) for p in m.m('runs').rglob('*')
           if p.is_file()}
    assert got == set(want), ('lost: %s; extra: %s'
                              % (sorted(set(want) - got)[:5],
                                 sorted(got - set(want))[:5]))
    for rel, data in want.items():
        assert file_equals(m.m(rel), data), rel
    m.flush(timeout=120)
    for rel, data in want.items():
        assert file_equals(m.r(rel), data), 'remote ' + rel
    assert nothing_pending(m), m.status()


# ----------------------------------------------------- full cache disk

@pytest.fixture
def small_tmpfs(tmp_path):
    """A 16 MiB tmpfs for the cache directory (needs root)."""
    if os.geteuid() != 0:
        pytest.skip('mounting a tmpfs needs root')
    d = tmp_path / 'cachefs'
    d.mkdir()
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=16m,mode=0700',
                        'tmpfs', str(d)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    if r.returncode != 0:
        pytest.skip('cannot mount a tmpfs: %s' % r.stderr.decode().strip())
    yield d
    # After the hfs fixture (requested later) has stopped the daemon.
    if subprocess.run(['umount', str(d)], stderr=subprocess.PIPE
                      ).returncode != 0:
        subprocess.run(['umount', '-l', str(d)])


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_full_cache_disk(small_tmpfs, hfs):
    m = hfs(start=False, intervals=LONG_INTERVALS, hfs_extra={
        'cache_dir': str(small_tmpfs / 'cache'), 'cache_max_bytes': '1G',
        'cache_min_free_bytes': '2M', 'today_link': ''})
    m.start()
    # Clean files: uploaded, still cached, evictable.
    clean = {'clean/c%d.bin' % i: os.urandom(2 * MiB) for i in range(3)}
    for rel, data in clean.items():
        put(m.m(rel), data)
    m.flush()
    for rel, data in clean.items():
        same(m.r(rel).read_bytes(), data, 'remote ' + rel)
    # Dirty files: not uploaded (long intervals), never evictable.
    dirty = {'dirty/d%d.bin' % i: os.urandom(MiB) for i in range(2)}
    for rel, data in dirty.items():
        put(m.m(rel), data)

    def fill(name, pause):
        """A writer writing 24 MiB (more than the disk holds) must get
        ENOSPC; then the mount answers, the other files are intact, and
        the partial file holds a prefix of what was written, with its
        true size (also once the kernel's pages are dropped)."""
        big = os.urandom(24 * MiB)
        got = {}

        def writer():
            f = open(m.m(name), 'wb', buffering=0)
            try:
                for off in range(0, len(big), MiB):
                    chunk = memoryview(big[off:off + MiB])
                    while chunk:   # a short write: the rest again
                        chunk = chunk[f.write(chunk):]
                    time.sleep(pause)
                os.fsync(f.fileno())
            except OSError as e:
                got['error'] = (e.errno, 'write/fsync')
            try:
                f.close()
            except OSError as e:
                got.setdefault('error', (e.errno, 'close'))
        bounded(writer, 90, 'a writer filling the cache disk')
        assert 'error' in got, (
            'writing 24 MiB into a cache on a 16 MiB disk succeeded (%d MiB'
            ' free now)' % (free_bytes(small_tmpfs) // MiB))
        assert got['error'][0] == errno.ENOSPC, (
            'the writer got %s at %s, not ENOSPC'
            % (errno.errorcode.get(got['error'][0]), got['error'][1]))
        st = bounded(m.status, 15, 'status with the cache disk full')
        assert 'categories' in st, st
        for rel, data in dirty.items():
            same(bounded(lambda: m.m(rel).read_bytes(), 15,
                         'reading %s' % rel), data, rel)
        for label in ('right after ENOSPC', 'after dropping the page'
                      ' cache'):
            size = os.stat(m.m(name)).st_size
            data = bounded(lambda: m.m(name).read_bytes(), 15,
                           'reading %s' % name)
            assert len(data) == size, (
                '%s: %s reports %d bytes but %d can be read'
                % (label, name, size, len(data)))
            same(data, big[:size], '%s: %s is not a prefix of what was'
                 ' written' % (label, name))
            drop_page_cache()

    fill('big.bin', 0)

    # The writer got ENOSPC only once nothing was left to evict: the
    # clean (uploaded) files made room for it, the dirty ones stayed.
    assert all(state(m.m(rel)) == 'remote' for rel in clean), {
        rel: state(m.m(rel)) for rel in clean}
    for rel in dirty:
        assert state(m.m(rel)) != 'remote', rel

    def user_deletes(name):
        """Deleting a file is how a user frees space: it must work on a
        full cache disk."""
        try:
            bounded(lambda: os.unlink(m.m(name)), 15,
                    'deleting %s on a full cache disk' % name)
        except OSError as e:
            raise AssertionError(
                'deleting %s to free space failed with %s (%d KiB free on'
                ' the cache disk)' % (name, errno.errorcode.get(e.errno),
                                      free_bytes(small_tmpfs) // 1024))
        wait_until(lambda: free_bytes(small_tmpfs) > 6 * MiB, 10,
                   'the space of the deleted %s to be freed (%d KiB free)'
                   % (name, free_bytes(small_tmpfs) // 1024))

    user_deletes('big.bin')
    small = os.urandom(MiB)

    def write_small():
        with open(m.m('after/small.bin'), 'wb') as f:
            f.write(small)
            os.fsync(f.fileno())
    m.m('after').mkdir()
    bounded(write_small, 30, 'writing 1 MiB once space was freed')
    same(m.m('after/small.bin').read_bytes(), small, 'after/small.bin')

    # The disk fills up again, twice, each time after the user deleted
    # the partial file (a gradual writer too: eviction runs meanwhile).
    fill('big2.bin', 0.03)
    user_deletes('big2.bin')
    fill('big3.bin', 0)
    user_deletes('big3.bin')

    # Writing and uploading go on.
    more = os.urandom(3 * MiB)

    def write_more():
        with open(m.m('after/more.bin'), 'wb') as f:
            f.write(more)
            os.fsync(f.fileno())
    bounded(write_more, 30, 'writing after space was freed')
    for rel, data in clean.items():   # fetched again from the remote
        same(bounded(lambda: m.m(rel).read_bytes(), 30,
                     'reading evicted %s' % rel), data, rel)
    # Uploading goes on: a flush starts it (the intervals are long); what
    # fails for want of cache space is retried by itself within seconds.
    done = list(dirty.items()) + [('after/more.bin', more),
                                  ('after/small.bin', small)]
    bounded(lambda: m.flush(check=False), 60, 'flush after space was freed')
    try:
        wait_until(lambda: all(file_equals(m.r(rel), data)
                               for rel, data in done), 30,
                   'uploads', interval=0.2)
    except AssertionError:
        raise AssertionError(
            'uploads did not go on once space was freed (%d KiB free);'
            ' not on the remote: %s; status: %s' % (
                free_bytes(small_tmpfs) // 1024,
                [rel for rel, data in done
                 if not file_equals(m.r(rel), data)],
                json.dumps(m.status()['categories'])))
    bounded(m.flush, 60, 'flush --wait once everything is uploaded')
    for name in ('big.bin', 'big2.bin', 'big3.bin'):
        assert not m.r(name).exists(), name
    assert nothing_pending(m), m.status()
    # And the index survives a restart.
    m.unmount()
    m.start()
    for rel, data in done + list(clean.items()):
        same(m.m(rel).read_bytes(), data, rel + ' after a remount')
    assert sorted(os.listdir(m.mnt)) == ['after', 'clean', 'dirty']


def test_delete_on_a_completely_full_cache_disk(small_tmpfs, hfs):
    """With nothing left to evict and not a byte free, deleting files
    (how a user makes room) works, and so does writing afterwards."""
    m = hfs(start=False, intervals=LONG_INTERVALS, hfs_extra={
        'cache_dir': str(small_tmpfs / 'cache'), 'cache_max_bytes': '1G',
        'cache_min_free_bytes': '0', 'today_link': ''})
    m.start()
    m.m('d').mkdir()
    for i in range(5):
        put(m.m('d/f%d.txt' % i), b'small file %d\n' % i)

    def fill():
        fd = os.open(m.m('fill.bin'), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for _ in range(64):
                os.write(fd, os.urandom(MiB))
                os.fsync(fd)
        except OSError as e:
            return e.errno
        finally:
            try:
                os.close(fd)
            except OSError:
                pass
    assert bounded(fill, 60, 'filling the cache disk') == errno.ENOSPC
    for name in ('d/f0.txt', 'fill.bin'):
        try:
            bounded(lambda: os.unlink(m.m(name)), 15,
                    'deleting %s on a full cache disk' % name)
        except OSError as e:
            raise AssertionError(
                'deleting %s on a full cache disk failed with %s (%d KiB'
                ' free)' % (name, errno.errorcode.get(e.errno),
                            free_bytes(small_tmpfs) // 1024))
    wait_until(lambda: free_bytes(small_tmpfs) > 8 * MiB, 10,
               'the space of the deleted file to be freed')
    put(m.m('d/after.txt'), b'written after\n')
    assert sorted(os.listdir(m.m('d'))) == \
        ['after.txt', 'f1.txt', 'f2.txt', 'f3.txt', 'f4.txt']
    m.flush()
    assert sorted(os.listdir(m.r('d'))) == \
        ['after.txt', 'f1.txt', 'f2.txt', 'f3.txt', 'f4.txt']
    assert not m.r('fill.bin').exists()


def test_dirty_files_filling_the_cache_disk_still_upload(small_tmpfs, hfs):
    """Dirty files alone fill the cache disk (nothing is evictable, not
    a byte free): flush --wait still uploads every one of them (uploads
    are what make room), and once clean they are evicted so that
    writing goes on."""
    m = hfs(start=False, intervals=LONG_INTERVALS, hfs_extra={
        'cache_dir': str(small_tmpfs / 'cache'), 'cache_max_bytes': '1G',
        'cache_min_free_bytes': '0', 'today_link': ''})
    m.start()
    m.m('d').mkdir()
    files = {}
    for i in range(64):   # more than the 16 MiB disk holds
        rel = 'd/f%02d.bin' % i
        data = os.urandom(MiB // 2 + i)
        try:
            bounded(lambda: put(m.m(rel), data), 30, 'writing ' + rel)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
            break
        files[rel] = data
    else:
        raise AssertionError('64 files of 512 KiB fit on a 16 MiB disk')
    # The file cut short by ENOSPC holds a prefix; keep what it has.
    files[rel] = m.m(rel).read_bytes()
    assert free_bytes(small_tmpfs) < MiB, free_bytes(small_tmpfs)
    bounded(lambda: m.flush(timeout=90), 100, 'flush --wait on a full disk')
    for rel, data in files.items():
        same(m.r(rel).read_bytes(), data, 'remote ' + rel)
    assert nothing_pending(m), m.status()
    # Clean now, so evictable: writing goes on.
    more = os.urandom(2 * MiB)
    bounded(lambda: put(m.m('d/after.bin'), more), 30,
            'writing once the dirty files were uploaded')
    same(m.m('d/after.bin').read_bytes(), more, 'd/after.bin')


# ------------------------------------------------- integrity under load

FIO = shutil.which('fio')


def fio(args, directory, timeout=120):
    # fio lays new files out with fallocate(), as on a native
    # filesystem (the mount supports it), then writes at random.
    cmd = [FIO, '--name=hfs', '--directory=%s' % directory,
           '--nrfiles=4', '--size=50M', '--numjobs=2', '--rw=randwrite',
           '--bsrange=1k-256k', '--bs_unaligned=1', '--ioengine=psync',
           '--verify=crc32c', '--verify_fatal=1', '--randseed=4242',
           '--verify_state_save=0', '--group_reporting'] + args
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout, cwd=str(Path(directory).parents[1]))
    out = r.stdout.decode(errors='replace')
    assert r.returncode == 0 and 'verify failed' not in out, (
        'fio %s failed (exit %d):\n%s' % (' '.join(args), r.returncode,
                                          out[-3000:]))
    return out


@pytest.mark.skipif(FIO is None, reason='fio is not installed')
def test_fio_crc32c_verify_after_upload_evict_refetch(dbx, fake):
    m = dbx(hfs_extra={'cache_max_bytes': '1K'})
    m.m('fio').mkdir()
    # 2 jobs x 4 files x 12.5 MiB of random writes of unaligned sizes
    # (uploaded meanwhile: the 'other' interval is 1 s), then verified.
    bounded(lambda: fio(['--do_verify=1'], m.m('fio')), 150, 'fio')
    m.flush()
    files = sorted(m.m('fio').iterdir())
    assert len(files) == 8, files
    for p in files:
        same(fake.get_file('%s/fio/%s' % (ROOT, p.name)), p.read_bytes(),
             '%s on the remote' % p.name)
    wait_evicted(files)
    drop_page_cache()
    fake.reset_stats()
    bounded(lambda: fio(['--verify_only=1'], m.m('fio')), 150,
            'fio --verify_only after eviction')
    assert fake.get_stats()['bytes_downloaded'] >= 90 * MiB, \
        'the verification did not fetch the evicted files again'


def test_concurrent_writers(hfs):
    """Writers on different files at once: random pwrites, appends,
    truncates, fsyncs; each file ends as its writer's model, locally, on
    the remote, and after eviction and re-fetch."""
    m = hfs(hfs_extra={'cache_max_bytes': '1K', 'today_link': ''})
    m.m('conc').mkdir()
    n = 6
    models = [bytearray() for _ in range(n)]
    errors = []
    stop = time.monotonic() + 3

    def writer(i):
        rng = random.Random(i)
        path = m.m('conc/w%d.bin' % i)
        buf = models[i]
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            afd = os.open(path, os.O_WRONLY | os.O_APPEND)
            while time.monotonic() < stop:
                x = rng.random()
                if x < 0.6:
                    off = rng.randint(0, len(buf) + 10000)
                    data = rng.randbytes(rng.randint(1, 200_000))
                    os.pwrite(fd, data, off)
                    if off > len(buf):
                        buf.extend(bytes(off - len(buf)))
                    buf[off:off + len(data)] = data
                elif x < 0.85:
                    data = rng.randbytes(rng.randint(1, 5000))
                    os.write(afd, data)
                    buf.extend(data)
                elif x < 0.93:
                    size = rng.randint(0, len(buf) + 50_000)
                    os.ftruncate(fd, size)
                    if size < len(buf):
                        del buf[size:]
                    else:
                        buf.extend(bytes(size - len(buf)))
                else:
                    os.fsync(fd)
            os.close(afd)
            os.close(fd)
        except OSError as e:
            errors.append('writer %d: %s' % (i, e))
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), 'a writer hung'
    assert not errors, errors
    paths = [m.m('conc/w%d.bin' % i) for i in range(n)]

    def check(where, read):
        for i, p in enumerate(paths):
            same(read(i, p), bytes(models[i]), '%s: w%d.bin' % (where, i))
    check('through the mount', lambda i, p: p.read_bytes())
    m.flush()
    check('on the remote', lambda i, p: m.r('conc/w%d.bin' % i).read_bytes())
    wait_evicted(paths)
    drop_page_cache()
    check('after eviction and re-fetch', lambda i, p: p.read_bytes())


def test_reader_of_a_log_while_it_is_appended(hfs):
    """A reader never sees bytes that were not written: whatever it reads
    (tailing, or the whole file again and again) is a prefix of what the
    writer wrote, while the log is also uploaded every second."""
    m = hfs(hfs_extra={'today_link': ''})
    m.m('logs').mkdir()
    rel = 'logs/train.log'
    lock = threading.Lock()
    written = bytearray()
    done = threading.Event()
    problems = []
    reads = {'tail': 0, 'whole': 0, 'remote': 0}

    def writer():
        rng = random.Random(7)
        fd = os.open(m.m(rel), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            i = 0
            t_end = time.monotonic() + 4
            while time.monotonic() < t_end:
                line = b'%08d %s\n' % (i, rng.randbytes(
                    rng.choice([10, 100, 3000, 9000])).hex().encode())
                with lock:
                    written.extend(line)   # before: readers may see it
                os.write(fd, line)
                i += 1
                time.sleep(rng.choice([0, 0, 0.001, 0.01]))
        finally:
            os.close(fd)
            done.set()

    def prefix_ok(data, who):
        with lock:
            ok = bytes(written[:len(data)]) == data
            total = len(written)
        if not ok:
            k = next(k for k in range(len(data)) if data[k] != written[k])
            problems.append('%s read %d bytes (of %d written) that are not'
                            ' a prefix of the log: first wrong byte at %d'
                            ' (%r, written %r)' % (who, len(data), total, k,
                                                   data[k:k + 16],
                                                   bytes(written[k:k + 16])))
        return ok

    def tail():
        got = bytearray()
        while not os.path.exists(m.m(rel)):
            time.sleep(0.001)
        with open(m.m(rel), 'rb', buffering=0) as f:
            while True:
                finished = done.is_set()
                chunk = f.read(65536)
                if chunk:
                    got.extend(chunk)
                    reads['tail'] += 1
                    if not prefix_ok(bytes(got), 'the tail reader'):
                        return
                elif finished:
                    break
                else:
                    time.sleep(0.002)
        with lock:
            if bytes(got) != bytes(written):
                problems.append('the tail reader ended with %d bytes of %d'
                                % (len(got), len(written)))

    def whole():
        while not done.is_set():
            try:
                data = m.m(rel).read_bytes()
            except FileNotFoundError:
                continue
            reads['whole'] += 1
            if not prefix_ok(data, 'a whole-file reader'):
                return

    def remote():
        while not done.is_set():
            try:
                data = m.r(rel).read_bytes()
            except FileNotFoundError:
                data = b''
            if data:
                reads['remote'] += 1
                if not prefix_ok(data, 'the remote copy'):
                    return
            time.sleep(0.05)
    threads = [threading.Thread(target=f) for f in (writer, tail, whole,
                                                    remote)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), 'a reader or writer hung'
    assert not problems, problems
    assert reads['tail'] > 10 and reads['whole'] > 10, reads
    assert reads['remote'] >= 2, (
        'the log was not uploaded while it was appended: %s' % reads)
    same(m.m(rel).read_bytes(), bytes(written), rel)
    m.flush()
    same(m.r(rel).read_bytes(), bytes(written), 'remote ' + rel)


# Runs in a child process: a SIGBUS (a page the mount could not supply)
# kills the child, not the test run with its in-process fake server.
MMAP_WRITER = r"""
import json, mmap, os, random, sys
path, size, seed, nwrites, create = sys.argv[1:6]
size, nwrites, create = int(size), int(nwrites), create == '1'
rng = random.Random(int(seed))
fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
if create:
    os.ftruncate(fd, size)
mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
for k in range(nwrites):
    off = rng.randrange(size)
    data = rng.randbytes(min(size - off, rng.randint(1, 300000)))
    print(json.dumps([off, len(data)]), flush=True)
    mm[off:off + len(data)] = data
    if k % 50 == 0:
        mm.flush()
print(json.dumps(['whole', len(mm[:])]), flush=True)
mm.flush()
mm.close()
os.close(fd)
print(json.dumps(['done']), flush=True)
"""


def mmap_writer(path, size, seed, nwrites, create, buf):
    """Runs MMAP_WRITER; applies its writes to buf (the same random
    bytes, from the same seed)."""
    r = subprocess.run([sys.executable, '-c', MMAP_WRITER, str(path),
                        str(size), str(seed), str(nwrites),
                        '1' if create else '0'], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=90)
    steps = [json.loads(x) for x in r.stdout.decode().splitlines()]
    rng = random.Random(seed)
    for step in steps:
        if isinstance(step[0], int):
            off = rng.randrange(size)
            data = rng.randbytes(min(size - off, rng.randint(1, 300000)))
            assert [off, len(data)] == step
            buf[off:off + len(data)] = data
    if r.returncode != 0 or steps[-1:] != [['done']]:
        last = steps[-1] if steps else None
        raise AssertionError(
            'the mmap writer died (%s) after %d steps; last step %r:'
            ' %s' % ('signal %s' % -r.returncode if r.returncode < 0
                     else 'exit %d' % r.returncode, len(steps), last,
                     r.stderr.decode(errors='replace')[-500:]))


def test_mmap_writer_before_and_after_eviction(dbx, fake):
    """Writes through a shared mapping reach the file, the remote, and
    survive eviction; a mapping of an evicted (remote-only) file fetches
    the bytes it does not overwrite."""
    m = dbx(hfs_extra={'cache_max_bytes': '1K'})
    m.m('models').mkdir()
    p = m.m('models/weights.npy')
    size = 9 * MiB + 123          # three 4 MiB fetch chunks
    buf = bytearray(size)
    mmap_writer(p, size, 1, 200, True, buf)
    same(p.read_bytes(), bytes(buf), 'weights.npy')
    m.flush()
    same(fake.get_file(ROOT + '/models/weights.npy'), bytes(buf),
         'weights.npy on the remote')
    wait_evicted([p])
    drop_page_cache()
    mmap_writer(p, size, 2, 20, False, buf)
    drop_page_cache()
    same(p.read_bytes(), bytes(buf), 'weights.npy after an mmap writer'
         ' changed it while it was evicted')
    m.flush()
    same(fake.get_file(ROOT + '/models/weights.npy'), bytes(buf),
         'weights.npy on the remote at the end')

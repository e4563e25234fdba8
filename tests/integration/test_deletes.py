"""Deletes on a remote that other machines write to (issue 10, items 1
and 2): a delete never removes what this mount did not see, and a big
`rm -rf` is cheap, locally and remotely.

"Another machine" is the local backend's remote_dir written directly, or
the fake Dropbox's control API (put_file, and a hook that writes right
after a listing of ours). On Dropbox the watcher would tell the mount of
another machine's write within moments, and a mount that saw the write
rightly deletes it with the rest; so where a test needs the mount not to
have seen it yet, it holds the change feed back (a delay on
list_folder/continue, the watcher's feed), as a slow feed or a busy link
would.
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from hfsutil import LONG_INTERVALS, wait_until

ROOT = '/Huracan'


def rm_rf(path):
    r = subprocess.run(['rm', '-rf', str(path)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=600)
    assert r.returncode == 0, r.stderr.decode()
    assert not os.path.exists(path)


def remote(fake, rel):
    try:
        return fake.get_file(ROOT + '/' + rel)
    except Exception:
        return None


def remote_paths(fake, prefix):
    """path_lower of every fake entry under /Huracan/PREFIX."""
    p = (ROOT + '/' + prefix).lower()
    return sorted(e['path_lower'] for e in fake.tree()
                  if e['path_lower'] == p or e['path_lower'].startswith(p + '/'))


def routes(fake):
    return fake.get_stats()['routes']


def hold_change_feed(fake, seconds=6):
    """The watcher's feed (list_folder/continue) answers late: the mount
    does not learn of another machine's writes for a while."""
    fake.add_fault(route='files/list_folder/continue', delay=seconds,
                   count=None)


def kept_records(m):
    return m.status()['deletes_kept']


def check_kept_reported(m, folder, entry, log_from):
    """Status (JSON and text) and the log name @folder and @entry."""
    recs = [r for r in kept_records(m) if r['path'] == folder]
    assert recs, 'status --json: no kept record for %s: %s' % (
        folder, kept_records(m))
    assert any(entry.lower() == k.lower() for k in recs[-1]['kept']), recs
    assert recs[-1]['count'] >= 1
    text = m.run('status', m.mnt, check=True).stdout
    assert 'deletes that kept remote entries' in text, text
    assert folder in text and entry.lower() in text.lower(), text
    log = m.log_since(log_from)
    lines = [l for l in log.splitlines()
             if 'delete of "%s": kept' % folder in l]
    assert lines, 'no log line about the kept entries of %s:\n%s' % (
        folder, log[-3000:])
    assert entry.lower() in lines[-1].lower(), lines[-1]


@pytest.fixture(scope='session')
def ixjournal(hfs_bin):
    p = os.environ.get('HFS_IXJOURNAL') or \
        str(Path(hfs_bin).resolve().parents[1] / 'tests/unit/ixjournal')
    if not os.access(p, os.X_OK):
        pytest.skip('ixjournal is missing (%s); build tests/unit/ixjournal'
                    ' or set HFS_IXJOURNAL' % p)

    def run(cache, *args):
        r = subprocess.run([p, str(cache)] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30)
        assert r.returncode == 0, r.stderr.decode()
        return [json.loads(l) for l in r.stdout.decode().splitlines()]
    return run


# ---------------------------------------------------------- the local backend

def test_rm_rf_keeps_a_file_this_mount_never_saw_local(hfs):
    """The issue's reproduction on the local backend."""
    m = hfs(start=False)
    sub = m.remote / 't1' / 'sub'
    sub.mkdir(parents=True)
    for i in range(1, 31):
        (sub / ('f%d.txt' % i)).write_bytes(b'file %d\n' % i)
    m.start()
    assert len(os.listdir(m.m('t1/sub'))) == 30
    (sub / 'UNSEEN.txt').write_bytes(b'written by another pod\n')
    log_from = m.log_size()
    rm_rf(m.m('t1'))
    m.flush()
    assert sorted(os.listdir(sub)) == ['UNSEEN.txt']
    assert (sub / 'UNSEEN.txt').read_bytes() == b'written by another pod\n'
    # It shows again in the mount; the 30 known files stay deleted.
    assert os.listdir(m.m('t1/sub')) == ['UNSEEN.txt']
    assert m.m('t1/sub/UNSEEN.txt').read_bytes() == \
        b'written by another pod\n'
    check_kept_reported(m, '/t1', '/t1/sub/UNSEEN.txt', log_from)
    assert m.status()['journal_pending'] == 0


def test_unlink_of_a_file_changed_elsewhere_keeps_the_change_local(hfs):
    m = hfs(start=False)
    (m.remote / 'e').mkdir()
    (m.remote / 'e' / 'a.txt').write_bytes(b'version 1\n')
    (m.remote / 'e' / 'b.txt').write_bytes(b'b\n')
    m.start()
    assert sorted(os.listdir(m.m('e'))) == ['a.txt', 'b.txt']
    assert m.m('e/a.txt').read_bytes() == b'version 1\n'
    # Another machine rewrites a.txt after we saw it.
    (m.remote / 'e' / 'a.txt').write_bytes(b'version 2, from elsewhere\n')
    log_from = m.log_size()
    os.unlink(m.m('e/a.txt'))
    os.unlink(m.m('e/b.txt'))
    m.flush()
    assert (m.remote / 'e' / 'a.txt').read_bytes() == \
        b'version 2, from elsewhere\n'
    assert not (m.remote / 'e' / 'b.txt').exists()
    assert os.listdir(m.m('e')) == ['a.txt']
    assert m.m('e/a.txt').read_bytes() == b'version 2, from elsewhere\n'
    check_kept_reported(m, '/e', '/e/a.txt', log_from)


def test_rename_over_a_file_changed_elsewhere_keeps_both_local(hfs):
    """A rename over a file another machine rewrote since we saw it
    deletes nothing of theirs: theirs stays under the name, ours under
    its old name, and the mount shows both."""
    m = hfs(start=False)
    (m.remote / 'r').mkdir()
    (m.remote / 'r' / 'model.bin').write_bytes(b'old model\n')
    (m.remote / 'r' / 'model.tmp').write_bytes(b'our new model\n')
    m.start()
    assert sorted(os.listdir(m.m('r'))) == ['model.bin', 'model.tmp']
    (m.remote / 'r' / 'model.bin').write_bytes(b'their model, newer\n')
    log_from = m.log_size()
    os.rename(m.m('r/model.tmp'), m.m('r/model.bin'))
    m.flush()
    assert (m.remote / 'r' / 'model.bin').read_bytes() == \
        b'their model, newer\n'
    assert (m.remote / 'r' / 'model.tmp').read_bytes() == b'our new model\n'
    assert sorted(os.listdir(m.m('r'))) == ['model.bin', 'model.tmp']
    assert m.m('r/model.bin').read_bytes() == b'their model, newer\n'
    assert m.m('r/model.tmp').read_bytes() == b'our new model\n'
    assert 'both stay, ours as "/r/model.tmp"' in m.log_since(log_from)


def test_rm_rf_of_a_known_tree_leaves_nothing_local(hfs):
    m = hfs(intervals=LONG_INTERVALS, start=False)
    (m.remote / 'run' / 'theirs').mkdir(parents=True)
    (m.remote / 'run' / 'theirs' / 'x.txt').write_bytes(b'x')
    m.start()
    for i in range(40):
        p = m.m('run/d%d/f%02d.txt' % (i % 4, i))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b'%d\n' % i)
    m.flush()
    assert sorted(os.listdir(m.m('run'))) == ['d0', 'd1', 'd2', 'd3',
                                              'theirs']
    assert os.listdir(m.m('run/theirs')) == ['x.txt']
    rm_rf(m.m('run'))
    m.flush()
    assert not (m.remote / 'run').exists()
    assert kept_records(m) == []
    m.remount()
    assert os.listdir(m.mnt) == []


def test_rm_rf_of_3000_files_nothing_comes_back_local(hfs):
    m = hfs(intervals=LONG_INTERVALS, start=False)
    big = m.remote / 'big'
    big.mkdir()
    for i in range(3000):
        (big / ('f%04d' % i)).write_bytes(b'%d' % i)
    m.start()
    assert len(os.listdir(m.m('big'))) == 3000
    rm_rf(m.m('big'))
    assert os.listdir(m.mnt) == []
    m.flush()
    assert not big.exists()
    m.remount()
    assert os.listdir(m.mnt) == []
    assert 'folder_deletes=1' in m.log_text()


# ------------------------------------------------------ the Dropbox backend

def test_rm_rf_keeps_a_file_this_mount_never_saw_dropbox(dbx, fake):
    """The issue's reproduction: another machine puts t1/sub/f1..f30.txt;
    ls; another machine puts t1/sub/UNSEEN.txt (right after our listing,
    by a hook of the fake); rm -rf t1; flush. UNSEEN.txt survives and
    shows again; the 30 known files are gone remotely."""
    for i in range(1, 31):
        fake.put_file(ROOT + '/t1/sub/f%d.txt' % i, b'file %d\n' % i)
    m = dbx()
    fake.add_hook(route='files/list_folder', path=ROOT + '/t1/sub',
                  put={'path': ROOT + '/t1/sub/UNSEEN.txt',
                       'data': b'written by another pod\n'})
    hold_change_feed(fake)
    assert len(os.listdir(m.m('t1/sub'))) == 30
    assert fake.list_hooks()[0]['fired'] == 1
    log_from = m.log_size()
    fake.reset_stats()
    rm_rf(m.m('t1'))
    m.flush()
    assert remote_paths(fake, 't1') == ['/huracan/t1', '/huracan/t1/sub',
                                        '/huracan/t1/sub/unseen.txt']
    assert remote(fake, 't1/sub/UNSEEN.txt') == b'written by another pod\n'
    st = routes(fake)
    assert 'files/delete_v2' not in st, st          # no folder delete
    assert st['files/delete_batch'] == 1, st         # the 30 known files
    deleted = fake.requests('files/delete_batch')[0]['arg']['entries']
    assert len(deleted) == 30 and all('parent_rev' in e for e in deleted)
    fake.clear_faults()
    assert os.listdir(m.m('t1/sub')) == ['UNSEEN.txt']
    assert m.m('t1/sub/UNSEEN.txt').read_bytes() == \
        b'written by another pod\n'
    check_kept_reported(m, '/t1', '/t1/sub/UNSEEN.txt', log_from)


def test_unlink_of_a_file_changed_elsewhere_keeps_the_change_dropbox(dbx,
                                                                      fake):
    fake.put_file(ROOT + '/e/a.txt', b'version 1\n')
    m = dbx()
    assert os.listdir(m.m('e')) == ['a.txt']
    assert m.m('e/a.txt').read_bytes() == b'version 1\n'
    hold_change_feed(fake)
    fake.put_file(ROOT + '/e/a.txt', b'version 2, from elsewhere\n')
    log_from = m.log_size()
    os.unlink(m.m('e/a.txt'))
    m.flush()
    assert remote(fake, 'e/a.txt') == b'version 2, from elsewhere\n'
    # The delete named the revision we knew; the remote refused it.
    sent = fake.requests('files/delete_batch')[-1]['arg']['entries']
    assert len(sent) == 1 and sent[0]['parent_rev']
    fake.clear_faults()
    wait_until(lambda: os.listdir(m.m('e')) == ['a.txt'], 10,
               'the other machine\'s version to show again')
    assert m.m('e/a.txt').read_bytes() == b'version 2, from elsewhere\n'
    check_kept_reported(m, '/e', '/e/a.txt', log_from)


def test_rm_rf_of_a_known_tree_is_one_folder_delete(dbx, fake):
    m = dbx(intervals=LONG_INTERVALS)
    for rel in ('run/a/x.txt', 'run/b/c/y.txt', 'run/b/z.txt', 'run/top.txt'):
        p = m.m(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rel.encode())
    m.m('run/empty').mkdir()
    m.flush()
    assert remote(fake, 'run/b/c/y.txt') == b'run/b/c/y.txt'
    fake.reset_stats()
    rm_rf(m.m('run'))
    m.flush()
    st = routes(fake)
    assert st.get('files/delete_v2') == 1, st
    assert 'files/delete_batch' not in st, st
    assert fake.requests('files/delete_v2')[0]['arg'] == {'path': ROOT + '/run'}
    # The proof: one recursive listing of the folder, right before.
    proof = [r['arg'] for r in fake.requests('files/list_folder')
             if r['arg'].get('recursive')]
    assert proof == [{'path': ROOT + '/run', 'recursive': True,
                      'include_deleted': False,
                      'include_non_downloadable_files': True, 'limit': 2000}]
    assert remote_paths(fake, 'run') == []
    assert kept_records(m) == []
    m.remount()
    assert os.listdir(m.mnt) == []


def test_rm_rf_of_3000_files_costs_a_handful_of_requests(dbx, fake):
    for i in range(3000):
        fake.put_file(ROOT + '/big/f%04d.txt' % i, b'%d\n' % i)
    m = dbx(intervals=LONG_INTERVALS)
    assert len(os.listdir(m.m('big'))) == 3000
    fake.reset_stats()
    rm_rf(m.m('big'))
    assert os.listdir(m.mnt) == []
    m.flush()
    st = routes(fake)
    writes = {r: n for r, n in st.items()
              if r.startswith('files/delete') or r in ('files/upload',
                                                       'files/move_v2')}
    assert writes == {'files/delete_v2': 1}, st
    # The proof listing (2 pages of 2000) and the watcher's feed (which
    # also reports our 3001 deletes back, in pages of 2000): a handful.
    lists = st.get('files/list_folder', 0) + \
        st.get('files/list_folder/continue', 0)
    assert lists <= 12, st
    assert sum(n for r, n in st.items()
               if r != 'files/list_folder/longpoll') <= 20, st
    assert remote_paths(fake, 'big') == []
    m.remount()
    assert os.listdir(m.mnt) == []
    # Nothing comes back once the watcher has reported every delete.
    time.sleep(1)
    assert os.listdir(m.mnt) == []


def test_journal_deletes_survive_an_outage(dbx, fake):
    """Deletes made while Dropbox is down go once it is back (and
    nothing is lost or deleted twice meanwhile)."""
    for i in range(20):
        fake.put_file(ROOT + '/o/f%02d' % i, b'x')
    fake.put_file(ROOT + '/keep.txt', b'k')
    m = dbx()
    assert len(os.listdir(m.m('o'))) == 20
    fake.outage(60)
    try:
        rm_rf(m.m('o'))
        assert os.listdir(m.mnt) == ['keep.txt']
        time.sleep(1)
    finally:
        fake.end_outage()
    m.flush()
    assert remote_paths(fake, 'o') == []
    assert remote(fake, 'keep.txt') == b'k'


def test_unlink_entries_record_the_revision_they_delete(dbx, fake, ixjournal):
    """What the journal holds while the remote is down: the revision and
    content hash the mount knew of each deleted file."""
    meta = fake.put_file(ROOT + '/j/a.txt', b'a\n')
    m = dbx(intervals=LONG_INTERVALS)
    assert os.listdir(m.m('j')) == ['a.txt']
    fake.outage(120)
    try:
        os.unlink(m.m('j/a.txt'))
        os.rmdir(m.m('j'))
        m.kill9()
    finally:
        fake.end_outage()
    entries = ixjournal(m.cache, 'list')
    assert [(e['op'], e['path']) for e in entries] == [('unlink', '/j/a.txt'),
                                                       ('rmdir', '/j')]
    assert entries[0]['known'] and entries[0]['rev'] == meta['rev']
    assert entries[0]['hash'] == meta['content_hash']
    assert entries[1]['known'] and entries[1]['rev'] == ''
    # Replayed at the next mount.
    m.start()
    m.flush()
    assert remote_paths(fake, 'j') == []
    assert ixjournal_pending(m) == 0


def ixjournal_pending(m):
    return m.status()['journal_pending']


def test_old_journal_entries_without_a_revision_still_replay(hfs, ixjournal):
    """Entries written before deletes recorded revisions delete whatever
    is at their path, as they did then."""
    m = hfs(intervals=LONG_INTERVALS, start=False)
    (m.remote / 'old' / 'sub').mkdir(parents=True)
    (m.remote / 'old' / 'a.txt').write_bytes(b'a')
    (m.remote / 'old' / 'sub' / 'c.txt').write_bytes(b'c')
    (m.remote / 'stay.txt').write_bytes(b's')
    m.start()
    assert sorted(os.listdir(m.m('old'))) == ['a.txt', 'sub']
    assert os.listdir(m.m('old/sub')) == ['c.txt']
    m.unmount()
    # Changed since, and still deleted: an old entry knows no revision.
    (m.remote / 'old' / 'a.txt').write_bytes(b'a, changed')
    ixjournal(m.cache, 'append-legacy', 'unlink', '/old/a.txt')
    ixjournal(m.cache, 'append-legacy', 'unlink', '/old/sub/c.txt')
    ixjournal(m.cache, 'append-legacy', 'rmdir', '/old/sub')
    assert [e['known'] for e in ixjournal(m.cache, 'list')] == [False] * 3
    m.start()
    m.flush()
    assert sorted(os.listdir(m.remote / 'old')) == []
    assert (m.remote / 'stay.txt').read_bytes() == b's'
    assert ixjournal_pending(m) == 0

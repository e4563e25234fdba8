"""Uploads name the revision they replace: a change made on the remote by
another machine while we had changes of our own keeps both versions."""
import json
import os
import time

import pytest

from hfsutil import LONG_INTERVALS, wait_until

ROOT = '/Huracan'


def test_remote_change_meanwhile_keeps_both_versions(hfs):
    # A long listing cache: the remote change is not merged before our
    # upload, so the upload itself must detect it.
    m = hfs(hfs_extra={'dir_cache_seconds': 600})
    m.m('runs').mkdir()
    m.m('runs/notes.txt').write_bytes(b'version 1\n')
    m.wait_remote('runs/notes.txt', b'version 1\n', 5, 'the first upload')

    # Another machine replaces the file.
    tmp = m.r('runs/.notes.tmp')
    tmp.write_bytes(b'theirs\n')
    os.rename(tmp, m.r('runs/notes.txt'))
    # We change it too, from the old version.
    m.m('runs/notes.txt').write_bytes(b'ours\n')

    def remote_names():
        # Not the local backend's temporary file of a write in progress.
        return sorted(n for n in os.listdir(m.r('runs'))
                      if not n.startswith('.huracanfs-tmp.'))

    def both_remote():
        names = remote_names()
        return len(names) == 2 and 'notes.txt' in names
    wait_until(both_remote, 6, 'a conflicted copy beside the original')
    names = remote_names()
    copy = [n for n in names if n != 'notes.txt'][0]
    assert 'conflicted copy' in copy
    assert m.r('runs/notes.txt').read_bytes() == b'theirs\n'
    assert m.r('runs/' + copy).read_bytes() == b'ours\n'

    # The mount shows the same two files with the same bytes.
    wait_until(lambda: sorted(os.listdir(m.m('runs'))) == names, 5,
               'the mount to show both versions')
    assert m.m('runs/notes.txt').read_bytes() == b'theirs\n'
    assert m.m('runs/' + copy).read_bytes() == b'ours\n'
    assert 'conflict:' in m.log_text()


def test_unchanged_remote_with_new_revision_is_not_a_conflict(hfs):
    """A new revision with the same bytes (as after a move) is replaced,
    not forked into a conflicted copy."""
    m = hfs(hfs_extra={'dir_cache_seconds': 600})
    m.m('a.txt').write_bytes(b'same\n')
    m.wait_remote('a.txt', b'same\n', 5, 'the first upload')
    # Rewrite the remote file with the same bytes: a new revision.
    tmp = m.r('.a.tmp')
    tmp.write_bytes(b'same\n')
    os.rename(tmp, m.r('a.txt'))
    m.m('a.txt').write_bytes(b'changed\n')
    m.wait_remote('a.txt', b'changed\n', 5, 'our change to replace it')
    assert sorted(os.listdir(m.remote)) == ['a.txt']


@pytest.mark.log_errors_expected('refused by the remote')
def test_batch_with_a_refused_name_and_a_remote_change(dbx, fake):
    """One finish_batch_v2 holds a file Dropbox refuses (a name ending in
    \\r) and a file another machine changed since our revision. Each is
    judged on its own: the changed one gets the conflicted copy a single
    upload gets, the refused one its hourly retry, and every message
    names its own file."""
    m = dbx(intervals=LONG_INTERVALS, hfs_extra={'dir_cache_seconds': 600})
    m.m('runs').mkdir()
    m.m('runs/notes.txt').write_bytes(b'version 1\n')
    m.flush()
    assert fake.get_file(ROOT + '/runs/notes.txt') == b'version 1\n'

    fake.put_file(ROOT + '/runs/notes.txt', b'theirs\n')
    m.m('runs/notes.txt').write_bytes(b'ours\n')
    m.m('runs/bad\r').write_bytes(b'kept locally\n')
    fake.reset_stats()
    r = m.flush(check=False)
    assert r.returncode != 0, 'the refused file did not count as failed'

    # Both went up in one batch commit.
    batches = [q['arg'] for q in fake.requests(
        'files/upload_session/finish_batch_v2')]
    assert [sorted(e['commit']['path'] for e in b['entries'])
            for b in batches] == \
        [[ROOT + '/runs/bad\r', ROOT + '/runs/notes.txt']], batches
    # The refused one was not sent again on its own.
    assert not [q for q in fake.requests('files/upload')
                if 'bad' in q['arg']['path']]

    # The changed one: both versions kept, as for a single upload.
    tree = {p: e for p, e in
            ((e['path_display'], e) for e in fake.tree())}
    copies = [p for p in tree if 'conflicted copy' in p]
    assert len(copies) == 1, sorted(tree)
    assert fake.get_file(ROOT + '/runs/notes.txt') == b'theirs\n'
    assert fake.get_file(copies[0]) == b'ours\n'
    copy_name = copies[0].rsplit('/', 1)[1]
    wait_until(lambda: copy_name in os.listdir(m.m('runs')), 10,
               'the conflicted copy to show in the mount')
    assert m.m('runs/' + copy_name).read_bytes() == b'ours\n'
    wait_until(lambda: m.m('runs/notes.txt').read_bytes() == b'theirs\n', 10,
               'their version to show under the original name')

    # The refused one: still here, its own error, retried in an hour.
    assert m.m('runs/bad\r').read_bytes() == b'kept locally\n'
    assert ROOT + '/runs/bad\r' not in tree
    err = os.getxattr(m.m('runs/bad\r'), 'user.huracanfs.last_error')
    assert b'bad\r' in err and b'notes' not in err, err
    st = m.cat_status('other')
    assert 'bad\r' in st['last_error'] and 'notes' not in st['last_error'], st
    assert st['pending_files'] == 1, st
    files = json.loads(m.run('status', m.mnt, '--json', '--files',
                             check=True).stdout)
    other = [c for c in files['categories'] if c['name'] == 'other'][0]
    assert [f['path'] for f in other['files']] == ['/runs/bad\r']
    assert other['files'][0]['next_upload'] > time.time() + 3000
    log = m.log_text()
    assert 'refused by the remote' in log and 'conflict:' in log
    for line in log.splitlines():
        if 'refused by the remote' in line or 'upload of' in line:
            assert 'bad' in line and 'notes' not in line, line
        if 'conflict:' in line:
            assert 'notes.txt' in line and 'bad' not in line, line

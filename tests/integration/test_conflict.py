"""Uploads name the revision they replace: a change made on the remote by
another machine while we had changes of our own keeps both versions."""
import os

from hfsutil import wait_until


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

    def both_remote():
        names = sorted(os.listdir(m.r('runs')))
        return len(names) == 2 and 'notes.txt' in names
    wait_until(both_remote, 6, 'a conflicted copy beside the original')
    names = sorted(os.listdir(m.r('runs')))
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

"""POSIX conformance of the mount, in the spirit of pjdfstest and xfstests.

Every operation the mount supports is driven through plain syscalls and
checked against what POSIX and Linux specify: the exact errno of each
refusal, and the side effects of each success (contents, sizes, inode
numbers, modes, owners, timestamps of the file and of its parent). The
deliberate exceptions of docs/posix.md (names folded as Dropbox folds them,
names Dropbox refuses, atime not updated by reads, RENAME_EXCHANGE) are
checked as documented, not as POSIX would have them. Symbolic links, hard
links, special files and link counts: test_posix_nodes.py.

Data and timestamp tests run with and without the FUSE writeback cache:
with it the kernel keeps sizes and mtimes, without it the daemon does, and
both must give the same answers.

Permission tests need root: a forked child drops to uid/gid 65534 on a
mount with `-o allow_other` (which adds default_permissions) and reports
the errno of each attempt through a pipe.
"""

import ctypes
import errno
import fcntl
import json
import mmap
import os
import stat
import subprocess
import threading
import time

import pytest

from hfsutil import errno_of

NOBODY = 65534
NAME_MAX = 255

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2


class _Timespec(ctypes.Structure):
    _fields_ = [('tv_sec', ctypes.c_long), ('tv_nsec', ctypes.c_long)]


def renameat2(src, dst, flags):
    """renameat2(2) through glibc; raises OSError like os.rename."""
    f = _libc.renameat2
    f.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                  ctypes.c_char_p, ctypes.c_uint]
    if f(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst),
         flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(src))


def utimensat(path, atime, mtime):
    """utimensat(2) with (sec, nsec) pairs, or UTIME_NOW / UTIME_OMIT."""
    def ts(v):
        if v in (UTIME_NOW, UTIME_OMIT):
            return _Timespec(0, v)
        return _Timespec(v[0], v[1])
    times = (_Timespec * 2)(ts(atime), ts(mtime))
    f = _libc.utimensat
    f.argtypes = [ctypes.c_int, ctypes.c_char_p,
                  ctypes.POINTER(_Timespec), ctypes.c_int]
    if f(AT_FDCWD, os.fsencode(path), times, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(path))


def tick():
    """Long enough for the kernel's coarse clock to move on."""
    time.sleep(0.03)


def near_now(t_ns, slack=5.0):
    return abs(t_ns / 1e9 - time.time()) < slack


def listing(d):
    return sorted(os.listdir(d))


@pytest.fixture(params=[True, False], ids=['writeback', 'no_writeback'])
def wmount(request, hfs):
    """A mount with the writeback cache on, and one with it off."""
    return hfs(hfs_extra={'writeback_cache': request.param})


# ---------------------------------------------------------------------------
# open, lookup and names


def test_open_errors(mount):
    m = mount.m
    m('f').write_bytes(b'data')
    os.mkdir(m('d'))
    W = os.O_WRONLY
    # O_EXCL on what exists, file or directory.
    assert errno_of(os.open, m('f'), os.O_CREAT | os.O_EXCL | W) \
        == errno.EEXIST
    assert errno_of(os.open, m('d'), os.O_CREAT | os.O_EXCL | W) \
        == errno.EEXIST
    assert m('f').read_bytes() == b'data'
    # Missing file, missing parent (with and without O_CREAT).
    assert errno_of(os.open, m('missing'), os.O_RDONLY) == errno.ENOENT
    assert errno_of(os.open, m('missing'), W) == errno.ENOENT
    assert errno_of(os.open, m('nodir/x'), os.O_CREAT | W) == errno.ENOENT
    assert errno_of(os.stat, m('nodir/x')) == errno.ENOENT
    # Directories cannot be opened for writing.
    assert errno_of(os.open, m('d'), W) == errno.EISDIR
    assert errno_of(os.open, m('d'), os.O_RDWR) == errno.EISDIR
    assert errno_of(os.open, m('d'), os.O_CREAT | W) == errno.EISDIR
    assert errno_of(os.open, m('d'), os.O_RDONLY | os.O_TRUNC) \
        == errno.EISDIR
    fd = os.open(m('d'), os.O_RDONLY | os.O_DIRECTORY)
    os.close(fd)
    # A file used as a directory.
    assert errno_of(os.open, m('f'), os.O_RDONLY | os.O_DIRECTORY) \
        == errno.ENOTDIR
    assert errno_of(os.open, m('f/x'), os.O_CREAT | W) == errno.ENOTDIR
    assert errno_of(os.open, m('f/x'), os.O_RDONLY) == errno.ENOTDIR
    assert errno_of(os.stat, m('f/x')) == errno.ENOTDIR
    assert errno_of(os.mkdir, m('f/x')) == errno.ENOTDIR
    assert errno_of(os.unlink, m('f/x')) == errno.ENOTDIR
    assert errno_of(os.listdir, m('f')) == errno.ENOTDIR
    assert errno_of(os.open, str(m('f')) + '/', os.O_RDONLY) \
        == errno.ENOTDIR
    # O_CREAT without O_EXCL opens what exists and does not truncate.
    fd = os.open(m('f'), os.O_CREAT | W, 0o600)
    os.close(fd)
    assert m('f').read_bytes() == b'data'
    assert listing(mount.mnt) == ['d', 'f']


def test_name_length(mount):
    m = mount.m
    ok = 'a' * NAME_MAX
    long = 'a' * (NAME_MAX + 1)
    # 255 bytes of UTF-8 are fine, 256 are not, whatever the characters.
    ok_utf8 = 'é' * 127 + 'x'
    long_utf8 = 'é' * 128
    assert len(ok_utf8.encode()) == 255 and len(long_utf8.encode()) == 256
    m('f').write_bytes(b'f')
    os.mkdir(m('d'))
    for n in (long, long_utf8):
        assert errno_of(os.open, m(n), os.O_CREAT | os.O_WRONLY) \
            == errno.ENAMETOOLONG
        assert errno_of(os.open, m(n), os.O_RDONLY) == errno.ENAMETOOLONG
        assert errno_of(os.stat, m(n)) == errno.ENAMETOOLONG
        assert errno_of(os.stat, m(n + '/x')) == errno.ENAMETOOLONG
        assert errno_of(os.mkdir, m(n)) == errno.ENAMETOOLONG
        assert errno_of(os.mkdir, m('d/' + n)) == errno.ENAMETOOLONG
        assert errno_of(os.unlink, m(n)) == errno.ENAMETOOLONG
        assert errno_of(os.rmdir, m(n)) == errno.ENAMETOOLONG
        assert errno_of(os.rename, m('f'), m(n)) == errno.ENAMETOOLONG
        assert errno_of(os.rename, m('d'), m(n)) == errno.ENAMETOOLONG
    assert listing(mount.mnt) == ['d', 'f']
    for n in (ok, ok_utf8):
        m(n).write_bytes(n.encode())
        assert m(n).read_bytes() == n.encode()
    os.mkdir(m('d/' + ok))
    os.rename(m('f'), m('d/' + ok_utf8))
    assert listing(m('d')) == sorted([ok, ok_utf8])
    assert m('d/' + ok_utf8).read_bytes() == b'f'
    assert set(os.listdir(mount.mnt)) == {'d', ok, ok_utf8}


def test_create_mode_umask_owner(wmount):
    m = wmount.m
    old = os.umask(0o022)
    try:
        before = time.time_ns()
        fd = os.open(m('c'), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        os.close(fd)
        os.mkdir(m('d'), 0o777)
        os.umask(0o077)
        fd = os.open(m('p'), os.O_CREAT | os.O_WRONLY, 0o644)
        os.close(fd)
        os.mkdir(m('pd'), 0o755)
        os.umask(0)
        fd = os.open(m('x'), os.O_CREAT | os.O_WRONLY, 0o751)
        os.close(fd)
        os.mknod(m('n'), stat.S_IFREG | 0o640)
    finally:
        os.umask(old)
    assert os.stat(m('c')).st_mode == stat.S_IFREG | 0o644
    assert os.stat(m('d')).st_mode == stat.S_IFDIR | 0o755
    assert os.stat(m('p')).st_mode == stat.S_IFREG | 0o600
    assert os.stat(m('pd')).st_mode == stat.S_IFDIR | 0o700
    assert os.stat(m('x')).st_mode == stat.S_IFREG | 0o751
    assert os.stat(m('n')).st_mode == stat.S_IFREG | 0o640
    for n in ('c', 'd', 'p', 'x', 'n'):
        st = os.stat(m(n))
        assert st.st_uid == os.geteuid() and st.st_gid == os.getegid(), n
        # A new file's three times are all "now".
        for t in (st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns):
            assert t >= before - 1_000_000_000 and near_now(t), n
    assert os.stat(m('c')).st_size == 0
    assert os.stat(m('c')).st_nlink == 1
    assert os.stat(m('d')).st_nlink == 2  # docs/posix.md


def test_inode_numbers(mount):
    m = mount.m
    os.makedirs(m('a/b'))
    for n in ('f1', 'f2', 'a/f3', 'a/b/f4'):
        m(n).write_bytes(n.encode())
    inos = {n: os.stat(m(n)).st_ino for n in
            ('a', 'a/b', 'f1', 'f2', 'a/f3', 'a/b/f4')}
    assert len(set(inos.values())) == len(inos)
    assert os.stat(mount.mnt).st_ino not in inos.values()
    with os.scandir(mount.mnt) as it:
        for e in it:
            assert e.inode() == inos[e.name]
    # Rename keeps the inode, of a file and of a directory with its tree.
    os.rename(m('f1'), m('a/g1'))
    os.rename(m('a'), m('z'))
    assert os.stat(m('z/g1')).st_ino == inos['f1']
    assert os.stat(m('z')).st_ino == inos['a']
    assert os.stat(m('z/b/f4')).st_ino == inos['a/b/f4']
    with open(m('z/b/f4'), 'rb') as f:
        assert os.fstat(f.fileno()).st_ino == inos['a/b/f4']


def test_refused_names(mount):
    """docs/posix.md: names Dropbox refuses are EINVAL."""
    m = mount.m
    m('Case.txt').write_bytes(b'c')
    for bad in ('back\\slash', 'del\x7f', 'trailing ', b'bad\xffutf8'):
        path = os.path.join(os.fsencode(mount.mnt), os.fsencode(bad))
        assert errno_of(os.open, path, os.O_CREAT | os.O_WRONLY) \
            == errno.EINVAL, bad
        assert errno_of(os.mkdir, path) == errno.EINVAL, bad
        assert errno_of(os.rename, m('Case.txt'), path) == errno.EINVAL, bad
    assert listing(mount.mnt) == ['Case.txt']


# ---------------------------------------------------------------------------
# Names and case (docs/posix.md): names that Dropbox takes for one are one


CAFE = 'Caf\u00e9'            # composed é
CAFE_UPPER = 'CAF\u00c9'
CAFE_NFD = 'Cafe\u0301'       # e + combining acute


def test_names_fold_as_on_dropbox(mount):
    m = mount.m
    os.mkdir(m(CAFE))
    assert errno_of(os.mkdir, m(CAFE_UPPER)) == errno.EEXIST
    assert errno_of(os.mkdir, m(CAFE_NFD)) == errno.EEXIST
    assert os.stat(m(CAFE_UPPER)).st_ino == os.stat(m(CAFE)).st_ino
    # A file created under one spelling is opened under another.
    with open(m(CAFE_UPPER + '/Notes.txt'), 'w') as f:
        f.write('one ')
    with open(m('caf\u00e9/NOTES.TXT'), 'a') as f:      # O_CREAT | O_APPEND
        f.write('two')
    assert errno_of(os.open, m(CAFE_NFD + '/notes.txt'),
                    os.O_CREAT | os.O_EXCL | os.O_WRONLY) == errno.EEXIST
    assert listing(mount.mnt) == [CAFE]
    assert listing(m(CAFE)) == ['Notes.txt']
    assert m(CAFE + '/Notes.txt').read_text() == 'one two'
    # Dropbox lowers by the simple mapping: ß is not ss, a final Σ is σ
    # (not ς), İ is i.
    os.mkdir(m('Stra\u00dfe'))
    os.mkdir(m('STRASSE'))
    os.mkdir(m('\u039f\u0394\u039f\u03a3'))                    # ΟΔΟΣ
    assert errno_of(os.mkdir, m('\u03bf\u03b4\u03bf\u03c3')) == errno.EEXIST
    os.mkdir(m('\u03bf\u03b4\u03bf\u03c2'))                    # οδος
    os.mkdir(m('\u0130stanbul'))
    assert errno_of(os.mkdir, m('ISTANBUL')) == errno.EEXIST
    assert len(os.listdir(mount.mnt)) == 6
    # The remote gets one folder of each, spelled as created.
    mount.flush()
    assert sorted(os.listdir(mount.remote)) == sorted(os.listdir(mount.mnt))
    assert mount.r(CAFE + '/Notes.txt').read_bytes() == b'one two'


def test_remote_folder_in_another_case(hfs):
    """The trainer's `mkdir -p data/candles` on a remote that has `Data`:
    the candles land in the remote's Data/candles, and ls shows Data."""
    m = hfs(start=False)
    m.r('Data').mkdir()
    m.r('Data/old.csv').write_bytes(b'old')
    m.start()
    r = subprocess.run(['mkdir', '-p', str(m.m('data/candles'))],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    m.m('data/candles/SOL.parquet').write_bytes(b'candles')
    assert listing(m.mnt) == ['Data']
    assert listing(m.m('data')) == ['candles', 'old.csv']
    assert m.m('DATA/CANDLES/sol.parquet').read_bytes() == b'candles'
    m.flush()
    assert listing(m.remote) == ['Data']
    assert m.r('Data/candles/SOL.parquet').read_bytes() == b'candles'
    # Removed under the other spelling, everywhere.
    r = subprocess.run(['rm', '-rf', str(m.m('data'))], capture_output=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert listing(m.mnt) == []
    m.flush()
    assert listing(m.remote) == []


def test_case_only_rename(mount):
    """rename(2) between two spellings of one name is a no-op in the
    kernel (both are one inode); through another name it works, and the
    remote follows."""
    m = mount.m
    m('a.txt').write_bytes(b'a')
    os.mkdir(m('Dir'))
    m('Dir/in.txt').write_bytes(b'in')
    mount.flush()
    os.rename(m('a.txt'), m('A.txt'))
    assert listing(mount.mnt) == ['Dir', 'a.txt']
    assert m('A.txt').read_bytes() == b'a'
    r = subprocess.run(['mv', str(m('a.txt')), str(m('A.txt'))],
                       capture_output=True, timeout=30)
    assert r.returncode != 0 and b'same file' in r.stderr
    os.rename(m('a.txt'), m('a.tmp'))
    os.rename(m('a.tmp'), m('A.txt'))
    os.rename(m('Dir'), m('dir.tmp'))
    os.rename(m('dir.tmp'), m('dir'))
    assert listing(mount.mnt) == ['A.txt', 'dir']
    assert m('A.txt').read_bytes() == b'a'
    assert m('DIR/in.txt').read_bytes() == b'in'
    mount.flush()
    assert listing(mount.remote) == ['A.txt', 'dir']
    assert mount.r('dir/in.txt').read_bytes() == b'in'


def read_or_none(path):
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def test_rename_and_unlink_under_other_spellings(mount):
    m = mount.m
    m('data.txt').write_bytes(b'old')
    m('new.txt').write_bytes(b'new')
    # Renaming over another spelling of a name replaces that entry; the
    # name is then spelled as given.
    os.rename(m('new.txt'), m('DATA.txt'))
    assert listing(mount.mnt) == ['DATA.txt']
    assert m('DATA.TXT').read_bytes() == b'new'
    # The kernel's entry of the old spelling is dropped just after the
    # rename returns (hfs_drop_stale_names): a bounded wait, not a sleep.
    mount.wait_until(lambda: read_or_none(m('data.txt')) == b'new', 5,
                     'the old spelling to name the new file')
    assert errno_of(renameat2, m('DATA.txt'), m('Data.TXT'),
                    RENAME_NOREPLACE) == errno.EEXIST
    m('other').write_bytes(b'o')
    assert errno_of(renameat2, m('other'), m('data.TXT'),
                    RENAME_NOREPLACE) == errno.EEXIST
    os.unlink(m('OTHER'))
    os.mkdir(m('Sub'))
    os.rmdir(m('SUB'))
    assert listing(mount.mnt) == ['DATA.txt']
    mount.wait_until(lambda: not os.path.exists(m('other')), 5,
                     'the removed file to be gone under its own spelling')
    assert errno_of(os.rmdir, m('Sub')) == errno.ENOENT
    mount.flush()
    assert listing(mount.remote) == ['DATA.txt']
    assert mount.r('DATA.txt').read_bytes() == b'new'


def test_remote_spellings(hfs):
    """A clean entry takes the remote's spelling when the remote changed
    it; a remote that holds two names folding alike (edited by hand)
    shows both, each with its own bytes."""
    m = hfs(hfs_extra={'dir_cache_seconds': 1})
    m.m('report.txt').write_bytes(b'r')
    m.flush()
    os.rename(m.r('report.txt'), m.r('Report.txt'))
    m.r('x.txt').write_bytes(b'lower')
    m.r('X.txt').write_bytes(b'upper')
    m.wait_until(lambda: listing(m.mnt) == ['Report.txt', 'X.txt', 'x.txt'],
                 10, 'the listing to show the remote spellings')
    assert m.m('report.txt').read_bytes() == b'r'
    assert m.m('x.txt').read_bytes() == b'lower'
    assert m.m('X.txt').read_bytes() == b'upper'
    # One of them goes remotely: the other stays, and takes its place
    # (once the kernel's entry of the deleted one times out, as after any
    # remote change).
    os.unlink(m.r('x.txt'))
    m.wait_until(lambda: listing(m.mnt) == ['Report.txt', 'X.txt'], 10,
                 'the listing to drop the deleted spelling')
    m.wait_until(lambda: m.m('x.txt').read_bytes() == b'upper', 10,
                 'x.txt to name the remaining X.txt')


# ---------------------------------------------------------------------------
# mkdir, rmdir, unlink


def test_mkdir_rmdir_unlink_errors(mount):
    m = mount.m
    os.mkdir(m('d'))
    m('d/f').write_bytes(b'x')
    os.mkdir(m('e'))
    os.mkdir(m('e/sub'))
    m('file').write_bytes(b'y')
    assert errno_of(os.mkdir, m('d')) == errno.EEXIST
    assert errno_of(os.mkdir, m('file')) == errno.EEXIST
    assert errno_of(os.mkdir, m('nodir/x')) == errno.ENOENT
    assert errno_of(os.rmdir, m('d')) == errno.ENOTEMPTY
    assert errno_of(os.rmdir, m('e')) == errno.ENOTEMPTY
    assert errno_of(os.rmdir, m('file')) == errno.ENOTDIR
    assert errno_of(os.rmdir, m('missing')) == errno.ENOENT
    assert errno_of(os.unlink, m('d')) == errno.EISDIR
    assert errno_of(os.unlink, m('missing')) == errno.ENOENT
    assert errno_of(os.unlink, m('nodir/x')) == errno.ENOENT
    assert errno_of(os.truncate, m('d'), 0) == errno.EISDIR
    # Nothing was changed by the refusals.
    assert listing(mount.mnt) == ['d', 'e', 'file']
    assert listing(m('d')) == ['f'] and listing(m('e')) == ['sub']
    assert m('d/f').read_bytes() == b'x'
    # Success removes exactly the entry.
    os.unlink(m('d/f'))
    assert errno_of(os.stat, m('d/f')) == errno.ENOENT
    assert listing(m('d')) == []
    os.rmdir(m('d'))
    assert errno_of(os.stat, m('d')) == errno.ENOENT
    assert errno_of(os.open, m('d/f'), os.O_CREAT | os.O_WRONLY) \
        == errno.ENOENT
    os.rmdir(m('e/sub'))
    os.rmdir(m('e'))
    os.unlink(m('file'))
    assert listing(mount.mnt) == []
    # The names are free again, for either type.
    os.mkdir(m('file'))
    m('d').write_bytes(b'now a file')
    assert stat.S_ISDIR(os.stat(m('file')).st_mode)
    assert m('d').read_bytes() == b'now a file'


def test_rmdir_with_unlinked_open_file(mount):
    """A directory whose only file was unlinked while open is empty."""
    m = mount.m
    os.mkdir(m('d'))
    fd = os.open(m('d/f'), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b'abc')
        os.unlink(m('d/f'))
        assert listing(m('d')) == []
        os.rmdir(m('d'))
        assert os.pread(fd, 10, 0) == b'abc'
    finally:
        os.close(fd)
    assert listing(mount.mnt) == []


# ---------------------------------------------------------------------------
# rename


def test_rename_file_over_file(wmount):
    m = wmount.m
    m('a').write_bytes(b'AAA')
    m('b').write_bytes(b'BBBBB')
    ino_a = os.stat(m('a')).st_ino
    ino_b = os.stat(m('b')).st_ino
    fd = os.open(m('b'), os.O_RDONLY)
    try:
        os.rename(m('a'), m('b'))
        assert listing(wmount.mnt) == ['b']
        st = os.stat(m('b'))
        assert st.st_ino == ino_a and st.st_size == 3
        assert m('b').read_bytes() == b'AAA'
        assert errno_of(os.stat, m('a')) == errno.ENOENT
        # The old target inode is gone from the tree but alive for its fd.
        fst = os.fstat(fd)
        assert fst.st_ino == ino_b
        assert fst.st_nlink == 0
        assert os.pread(fd, 100, 0) == b'BBBBB'
    finally:
        os.close(fd)
    # Across directories, over a file there.
    os.mkdir(m('d'))
    m('d/t').write_bytes(b'old')
    os.rename(m('b'), m('d/t'))
    assert listing(wmount.mnt) == ['d'] and listing(m('d')) == ['t']
    assert m('d/t').read_bytes() == b'AAA'
    assert os.stat(m('d/t')).st_ino == ino_a


def test_rename_errors_and_dirs(mount):
    m = mount.m
    m('f').write_bytes(b'f')
    m('g').write_bytes(b'g')
    os.makedirs(m('d/sub'))
    m('d/sub/deep').write_bytes(b'deep')
    os.mkdir(m('empty'))
    os.mkdir(m('full'))
    m('full/x').write_bytes(b'x')
    # File over directory, directory over file.
    assert errno_of(os.rename, m('f'), m('empty')) == errno.EISDIR
    assert errno_of(os.rename, m('d'), m('f')) == errno.ENOTDIR
    # Directory over a non-empty directory.
    assert errno_of(os.rename, m('d'), m('full')) == errno.ENOTEMPTY
    # Directory into its own subtree, or onto its own ancestor.
    assert errno_of(os.rename, m('d'), m('d/sub/d')) == errno.EINVAL
    assert errno_of(os.rename, m('d'), m('d/new')) == errno.EINVAL
    assert errno_of(os.rename, m('d/sub'), m('d')) == errno.ENOTEMPTY
    # Missing source, missing target directory, file as a directory.
    assert errno_of(os.rename, m('missing'), m('x')) == errno.ENOENT
    assert errno_of(os.rename, m('f'), m('nodir/f')) == errno.ENOENT
    assert errno_of(os.rename, m('f'), m('g/f')) == errno.ENOTDIR
    assert errno_of(os.rename, m('g/f'), m('h')) == errno.ENOTDIR
    # Nothing moved.
    assert listing(mount.mnt) == ['d', 'empty', 'f', 'full', 'g']
    assert listing(m('d')) == ['sub'] and listing(m('full')) == ['x']
    assert m('d/sub/deep').read_bytes() == b'deep'
    # Rename to itself is a successful no-op, for a file and a directory.
    ino_f = os.stat(m('f')).st_ino
    os.rename(m('f'), m('f'))
    os.rename(m('d'), m('d'))
    assert m('f').read_bytes() == b'f' and os.stat(m('f')).st_ino == ino_f
    assert listing(m('d')) == ['sub']
    # Directory over an empty directory replaces it.
    ino_d = os.stat(m('d')).st_ino
    os.rename(m('d'), m('empty'))
    assert listing(mount.mnt) == ['empty', 'f', 'full', 'g']
    assert os.stat(m('empty')).st_ino == ino_d
    assert listing(m('empty')) == ['sub']
    assert m('empty/sub/deep').read_bytes() == b'deep'
    assert errno_of(os.stat, m('d/sub/deep')) == errno.ENOENT
    # Move a directory into another one, then a file out of it.
    os.rename(m('empty'), m('full/moved'))
    os.rename(m('full/moved/sub/deep'), m('deep'))
    assert listing(mount.mnt) == ['deep', 'f', 'full', 'g']
    assert listing(m('full')) == ['moved', 'x']
    assert listing(m('full/moved/sub')) == []
    assert m('deep').read_bytes() == b'deep'


def test_renameat2(mount):
    m = mount.m
    m('a').write_bytes(b'a')
    m('b').write_bytes(b'b')
    os.mkdir(m('d'))
    os.mkdir(m('e'))
    assert errno_of(renameat2, m('a'), m('b'), RENAME_NOREPLACE) \
        == errno.EEXIST
    assert errno_of(renameat2, m('d'), m('e'), RENAME_NOREPLACE) \
        == errno.EEXIST
    assert errno_of(renameat2, m('a'), m('d'), RENAME_NOREPLACE) \
        == errno.EEXIST
    assert m('a').read_bytes() == b'a' and m('b').read_bytes() == b'b'
    renameat2(m('a'), m('c'), RENAME_NOREPLACE)
    assert listing(mount.mnt) == ['b', 'c', 'd', 'e']
    assert m('c').read_bytes() == b'a'
    renameat2(m('d'), m('e/d'), RENAME_NOREPLACE)
    assert listing(m('e')) == ['d']
    # docs/posix.md: RENAME_EXCHANGE is not supported.
    assert errno_of(renameat2, m('b'), m('c'), RENAME_EXCHANGE) \
        == errno.EINVAL
    assert m('b').read_bytes() == b'b' and m('c').read_bytes() == b'a'


def test_rename_keeps_open_files_and_data(wmount):
    m = wmount.m
    os.mkdir(m('d'))
    fd = os.open(m('d/f'), os.O_CREAT | os.O_RDWR, 0o640)
    try:
        os.write(fd, b'before ')
        os.rename(m('d'), m('d2'))
        os.write(fd, b'after')
        assert m('d2/f').read_bytes() == b'before after'
        os.rename(m('d2/f'), m('g'))
        os.write(fd, b'!')
        assert m('g').read_bytes() == b'before after!'
    finally:
        os.close(fd)
    st = os.stat(m('g'))
    assert st.st_mode == stat.S_IFREG | 0o640 and st.st_size == 13
    assert listing(wmount.mnt) == ['d2', 'g']
    assert listing(m('d2')) == []


# ---------------------------------------------------------------------------
# data: append, truncation, holes, seeks


def test_o_append_two_fds(wmount):
    p = wmount.m('log')
    p.write_bytes(b'start\n')
    a1 = os.open(p, os.O_WRONLY | os.O_APPEND)
    a2 = os.open(p, os.O_WRONLY | os.O_APPEND)
    plain = os.open(p, os.O_RDWR)
    try:
        os.write(a1, b'one\n')
        os.write(a2, b'two\n')
        os.lseek(a1, 0, os.SEEK_SET)
        os.write(a1, b'three\n')
        assert os.lseek(a1, 0, os.SEEK_CUR) == 20
        # Another writer extends the file: appends follow its new end.
        os.pwrite(plain, b'XX', 20)
        os.write(a2, b'four\n')
        os.ftruncate(plain, 10)
        os.write(a1, b'five\n')
        assert os.fstat(a1).st_size == 15
        assert os.pread(plain, 100, 0) == b'start\none\nfive\n'
    finally:
        for fd in (a1, a2, plain):
            os.close(fd)
    assert p.read_bytes() == b'start\none\nfive\n'
    assert os.stat(p).st_size == 15


def test_o_trunc(wmount):
    p = wmount.m('t')
    p.write_bytes(b'hello world')
    reader = os.open(p, os.O_RDONLY)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
        try:
            assert os.fstat(fd).st_size == 0
            assert os.stat(p).st_size == 0
            assert os.pread(reader, 100, 0) == b''
            os.write(fd, b'x')
        finally:
            os.close(fd)
        assert os.pread(reader, 100, 0) == b'x'
    finally:
        os.close(reader)
    assert p.read_bytes() == b'x'
    # O_TRUNC|O_CREAT on an existing file truncates as well.
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.close(fd)
    assert p.read_bytes() == b'' and os.stat(p).st_size == 0


def test_truncate_extend_shrink(wmount):
    p = wmount.m('tr')
    data = bytes(range(256)) * 40  # 10240 bytes
    p.write_bytes(data)
    os.truncate(p, 20000)
    assert os.stat(p).st_size == 20000
    assert p.read_bytes() == data + b'\0' * (20000 - len(data))
    os.truncate(p, 100)
    assert os.stat(p).st_size == 100
    assert p.read_bytes() == data[:100]
    # Shrink, then extend: what was cut off must come back as zeros.
    fd = os.open(p, os.O_RDWR)
    try:
        os.pwrite(fd, b'Z' * 5000, 50)
        os.ftruncate(fd, 60)
        assert os.fstat(fd).st_size == 60
        os.ftruncate(fd, 9000)
        assert os.fstat(fd).st_size == 9000
        assert os.pread(fd, 9000, 0) == \
            data[:50] + b'Z' * 10 + b'\0' * 8940
        os.ftruncate(fd, 0)
        assert os.pread(fd, 10, 0) == b''
        os.ftruncate(fd, 3)
        assert os.pread(fd, 10, 0) == b'\0\0\0'
    finally:
        os.close(fd)
    assert p.read_bytes() == b'\0\0\0'
    assert errno_of(os.truncate, p, -1) == errno.EINVAL
    assert errno_of(os.truncate, wmount.m('missing'), 0) == errno.ENOENT


def test_holes_and_reads_past_eof(wmount):
    p = wmount.m('sparse')
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b'head')
        os.pwrite(fd, b'tail', 70001)
        assert os.fstat(fd).st_size == 70005
        assert os.pread(fd, 70005, 0) == b'head' + b'\0' * 69997 + b'tail'
        # lseek past the end and write: another hole.
        assert os.lseek(fd, 1 << 20, os.SEEK_SET) == 1 << 20
        assert os.read(fd, 10) == b''
        os.write(fd, b'far')
        assert os.fstat(fd).st_size == (1 << 20) + 3
        assert os.pread(fd, 1 << 20, 70005) == \
            b'\0' * ((1 << 20) - 70005) + b'far'
        # Reads at and past the end return no bytes.
        assert os.pread(fd, 100, (1 << 20) + 3) == b''
        assert os.pread(fd, 100, (1 << 20) + 1000) == b''
        assert os.pread(fd, 100, (1 << 20) + 1) == b'ar'
        # lseek: SEEK_END, SEEK_CUR, negative results refused.
        assert os.lseek(fd, 0, os.SEEK_END) == (1 << 20) + 3
        assert os.lseek(fd, -3, os.SEEK_END) == 1 << 20
        assert os.read(fd, 100) == b'far'
        assert os.lseek(fd, -4, os.SEEK_CUR) == (1 << 20) - 1
        assert os.read(fd, 2) == b'\0f'
        assert errno_of(os.lseek, fd, -1, os.SEEK_SET) == errno.EINVAL
        assert errno_of(os.lseek, fd, -(2 << 20), os.SEEK_END) \
            == errno.EINVAL
        # SEEK_DATA/SEEK_HOLE: at least "the whole file is data".
        assert os.lseek(fd, 0, os.SEEK_DATA) == 0
        h = os.lseek(fd, 0, os.SEEK_HOLE)
        assert 0 < h <= (1 << 20) + 3
        assert errno_of(os.lseek, fd, (1 << 20) + 3, os.SEEK_DATA) \
            == errno.ENXIO
    finally:
        os.close(fd)
    assert os.stat(p).st_size == (1 << 20) + 3
    with open(p, 'rb') as f:
        f.seek(70001)
        assert f.read(4) == b'tail'


def test_sizes_blocks_and_coherence(wmount):
    p = wmount.m('sz')
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    r = os.open(p, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        assert st.st_size == 0 and st.st_blocks == 0
        assert st.st_blksize > 0
        total = 0
        for n in (1, 4095, 4096, 100_000, 1 << 20):
            chunk = os.urandom(n)
            assert os.write(fd, chunk) == n
            total += n
            assert os.fstat(fd).st_size == total
            assert os.stat(p).st_size == total
            # Another fd sees the bytes at once.
            assert os.pread(r, n, total - n) == chunk
        os.fsync(fd)
        st = os.stat(p)
        assert st.st_blocks * 512 >= total
        assert st.st_blocks * 512 <= total + (1 << 20)
        # Wrong-direction I/O is refused by the fd's access mode.
        assert errno_of(os.write, r, b'x') == errno.EBADF
    finally:
        os.close(fd)
        os.close(r)
    w = os.open(p, os.O_WRONLY)
    try:
        assert errno_of(os.read, w, 1) == errno.EBADF
    finally:
        os.close(w)
    assert os.stat(p).st_size == total


def test_fsync_fdatasync_fallocate(wmount):
    m = wmount.m
    p = m('s')
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b'abc')
        assert os.fsync(fd) is None
        assert os.fdatasync(fd) is None
        # posix_fallocate extends with zeros and keeps the data (glibc
        # emulates it if the filesystem has no fallocate).
        os.posix_fallocate(fd, 0, 10000)
        assert os.fstat(fd).st_size == 10000
        assert os.pread(fd, 10000, 0) == b'abc' + b'\0' * 9997
        os.posix_fallocate(fd, 0, 5)
        assert os.fstat(fd).st_size == 10000
    finally:
        os.close(fd)
    ro = os.open(p, os.O_RDONLY)
    try:
        os.fsync(ro)
        os.fdatasync(ro)
    finally:
        os.close(ro)
    os.mkdir(m('d'))
    dfd = os.open(m('d'), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    assert p.read_bytes() == b'abc' + b'\0' * 9997


FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10


def fallocate(fd, mode, off, length):
    """fallocate(2) through glibc; raises OSError."""
    f = _libc.fallocate
    f.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    if f(fd, mode, off, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def test_fallocate_modes(wmount):
    """fallocate(2) itself (not glibc's emulation): mode 0 extends with
    zeros, KEEP_SIZE reserves without growing, PUNCH_HOLE and ZERO_RANGE
    zero a range; the remote gets the same bytes."""
    m = wmount
    p = m.m('alloc.bin')
    data = bytes(range(256)) * 64  # 16 KiB
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, data)
        fallocate(fd, 0, 0, 40000)
        assert os.fstat(fd).st_size == 40000
        want = bytearray(data + b'\0' * (40000 - len(data)))
        assert os.pread(fd, 50000, 0) == want
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 1 << 20)
        assert os.fstat(fd).st_size == 40000
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 8192)
        want[4096:12288] = b'\0' * 8192
        assert os.fstat(fd).st_size == 40000
        assert os.pread(fd, 50000, 0) == want
        try:
            fallocate(fd, FALLOC_FL_ZERO_RANGE, 100, 200)
            want[100:300] = b'\0' * 200
        except OSError as e:
            # As the cache filesystem does (tmpfs has no ZERO_RANGE).
            assert e.errno == errno.EOPNOTSUPP
        # Writes after it land as usual.
        os.pwrite(fd, b'tail', 39996)
        want[39996:40000] = b'tail'
        assert os.pread(fd, 50000, 0) == want
        assert errno_of(fallocate, fd, 0, -1, 10) == errno.EINVAL
        assert errno_of(fallocate, fd, 0, 0, 0) == errno.EINVAL
    finally:
        os.close(fd)
    ro = os.open(p, os.O_RDONLY)
    try:
        assert errno_of(fallocate, ro, 0, 0, 100) == errno.EBADF
    finally:
        os.close(ro)
    assert p.read_bytes() == want
    m.flush()
    assert m.r('alloc.bin').read_bytes() == want


def test_flock(mount):
    p = mount.m('lock')
    p.write_bytes(b'')
    a = os.open(p, os.O_RDWR)
    b = os.open(p, os.O_RDWR)
    try:
        fcntl.flock(a, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert errno_of(fcntl.flock, b, fcntl.LOCK_EX | fcntl.LOCK_NB) \
            == errno.EWOULDBLOCK
        fcntl.flock(a, fcntl.LOCK_UN)
        fcntl.flock(b, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(a, fcntl.LOCK_SH | fcntl.LOCK_NB)
    finally:
        os.close(a)
        os.close(b)


# ---------------------------------------------------------------------------
# timestamps


def test_file_times_on_write_truncate_chmod(wmount):
    p = wmount.m('ts')
    p.write_bytes(b'0123456789')
    st0 = os.stat(p)
    tick()
    # Reading changes neither mtime nor ctime (nor atime: docs/posix.md).
    assert p.read_bytes() == b'0123456789'
    st = os.stat(p)
    assert (st.st_mtime_ns, st.st_ctime_ns, st.st_atime_ns) == \
        (st0.st_mtime_ns, st0.st_ctime_ns, st0.st_atime_ns)
    # write: mtime and ctime move, to "now".
    fd = os.open(p, os.O_WRONLY)
    try:
        os.pwrite(fd, b'ab', 3)
        fst = os.fstat(fd)
        assert fst.st_mtime_ns > st0.st_mtime_ns
        assert fst.st_ctime_ns > st0.st_ctime_ns
    finally:
        os.close(fd)
    st1 = os.stat(p)
    assert st1.st_mtime_ns > st0.st_mtime_ns and near_now(st1.st_mtime_ns)
    assert st1.st_ctime_ns > st0.st_ctime_ns and near_now(st1.st_ctime_ns)
    tick()
    # truncate (path) and ftruncate.
    os.truncate(p, 4)
    st2 = os.stat(p)
    assert st2.st_mtime_ns > st1.st_mtime_ns
    assert st2.st_ctime_ns > st1.st_ctime_ns
    tick()
    fd = os.open(p, os.O_WRONLY)
    try:
        os.ftruncate(fd, 100)
    finally:
        os.close(fd)
    st3 = os.stat(p)
    assert st3.st_mtime_ns > st2.st_mtime_ns
    assert st3.st_ctime_ns > st2.st_ctime_ns
    tick()
    # O_TRUNC of a non-empty file.
    fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    st4 = os.stat(p)
    assert st4.st_mtime_ns > st3.st_mtime_ns
    assert st4.st_ctime_ns > st3.st_ctime_ns
    tick()
    # chmod and chown: ctime only.
    os.chmod(p, 0o600)
    st5 = os.stat(p)
    assert st5.st_mtime_ns == st4.st_mtime_ns
    assert st5.st_ctime_ns > st4.st_ctime_ns
    assert st5.st_mode == stat.S_IFREG | 0o600
    tick()
    os.chown(p, os.geteuid(), os.getegid())
    st6 = os.stat(p)
    assert st6.st_mtime_ns == st5.st_mtime_ns
    assert st6.st_ctime_ns > st5.st_ctime_ns
    # rename leaves the file's mtime alone.
    os.rename(p, wmount.m('ts2'))
    assert os.stat(wmount.m('ts2')).st_mtime_ns == st6.st_mtime_ns


def test_parent_times(wmount):
    m = wmount.m
    os.mkdir(m('d'))
    os.mkdir(m('e'))
    m('d/keep').write_bytes(b'k')

    def changes(op, *dirs):
        before = [os.stat(m(d)) for d in dirs]
        tick()
        op()
        for d, b in zip(dirs, before):
            a = os.stat(m(d))
            assert a.st_mtime_ns > b.st_mtime_ns, (op, d, 'mtime')
            assert a.st_ctime_ns > b.st_ctime_ns, (op, d, 'ctime')
            assert near_now(a.st_mtime_ns) and near_now(a.st_ctime_ns)

    changes(lambda: m('d/new').write_bytes(b'n'), 'd')
    changes(lambda: os.mknod(m('d/nod'), stat.S_IFREG | 0o644), 'd')
    changes(lambda: os.mkdir(m('d/sub')), 'd')
    changes(lambda: os.rename(m('d/new'), m('d/renamed')), 'd')
    changes(lambda: os.rename(m('d/renamed'), m('e/moved')), 'd', 'e')
    changes(lambda: os.rename(m('e/moved'), m('d/keep')), 'd', 'e')
    changes(lambda: os.rename(m('d/sub'), m('e/sub')), 'd', 'e')
    changes(lambda: os.unlink(m('d/keep')), 'd')
    changes(lambda: os.rmdir(m('e/sub')), 'e')
    # Writing to a file leaves its directory's times alone.
    b = os.stat(m('d'))
    tick()
    with open(m('d/nod'), 'r+b') as f:
        f.write(b'content')
    a = os.stat(m('d'))
    assert (a.st_mtime_ns, a.st_ctime_ns) == (b.st_mtime_ns, b.st_ctime_ns)


def test_utime_exact_and_now(wmount):
    p = wmount.m('u')
    p.write_bytes(b'u')
    at, mt = 1_000_000_123_456_789, 1_100_000_987_654_321
    st0 = os.stat(p)
    tick()
    os.utime(p, ns=(at, mt))
    st = os.stat(p)
    assert (st.st_atime_ns, st.st_mtime_ns) == (at, mt)
    # utime marks ctime for update; ctime is never set to the past.
    assert st.st_ctime_ns > st0.st_ctime_ns and near_now(st.st_ctime_ns)
    # Reads do not touch atime (docs/posix.md), and the data is intact.
    assert p.read_bytes() == b'u'
    assert os.stat(p).st_atime_ns == at
    # futimens on an fd.
    fd = os.open(p, os.O_RDWR)
    try:
        os.utime(fd, ns=(5_000_000_001, 6_000_000_002))
        fst = os.fstat(fd)
        assert (fst.st_atime_ns, fst.st_mtime_ns) == \
            (5_000_000_001, 6_000_000_002)
    finally:
        os.close(fd)
    st = os.stat(p)
    assert (st.st_atime_ns, st.st_mtime_ns) == (5_000_000_001, 6_000_000_002)
    # UTIME_NOW for mtime only, UTIME_OMIT for atime.
    utimensat(p, UTIME_OMIT, UTIME_NOW)
    st = os.stat(p)
    assert st.st_atime_ns == 5_000_000_001
    assert near_now(st.st_mtime_ns)
    # And the other way round.
    utimensat(p, UTIME_NOW, (7, 8))
    st = os.stat(p)
    assert near_now(st.st_atime_ns)
    assert st.st_mtime_ns == 7_000_000_008
    # utime(NULL): both now.
    os.utime(p)
    st = os.stat(p)
    assert near_now(st.st_atime_ns) and near_now(st.st_mtime_ns)
    # Directories keep exact times too.
    os.mkdir(wmount.m('d'))
    os.utime(wmount.m('d'), ns=(at, mt))
    st = os.stat(wmount.m('d'))
    assert (st.st_atime_ns, st.st_mtime_ns) == (at, mt)
    assert p.read_bytes() == b'u'


def test_mode_owner_persist_across_remount(hfs):
    m = hfs()
    os.makedirs(m.m('d'))
    m.m('d/f').write_bytes(b'f')
    os.chmod(m.m('d/f'), 0o4751)
    os.chmod(m.m('d'), 0o1750)
    os.chown(m.m('d/f'), NOBODY, NOBODY)
    os.utime(m.m('d/f'), ns=(1_500_000_000_111_111_111,
                             1_600_000_000_222_222_222))
    # chown clears set-user-ID (Linux does so even when root chowns).
    want_f = os.stat(m.m('d/f'))
    assert want_f.st_mode == stat.S_IFREG | 0o751
    assert (want_f.st_uid, want_f.st_gid) == (NOBODY, NOBODY)
    assert os.stat(m.m('d')).st_mode == stat.S_IFDIR | 0o1750
    m.remount()
    st = os.stat(m.m('d/f'))
    assert st.st_mode == want_f.st_mode
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
    assert (st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns) == \
        (want_f.st_atime_ns, want_f.st_mtime_ns, want_f.st_ctime_ns)
    assert os.stat(m.m('d')).st_mode == stat.S_IFDIR | 0o1750
    assert m.m('d/f').read_bytes() == b'f'


# ---------------------------------------------------------------------------
# permissions for other users (default_permissions)


def _as_user(cwd, uid, fn):
    """Runs fn() in a child chdir'ed to cwd as uid/gid; returns its result.

    The child enters cwd while still root (the test's tmp_path is 0700),
    then drops privileges; fn uses paths relative to cwd and returns a
    JSON-able value, sent back through a pipe.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            os.chdir(cwd)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            out = {'ok': fn()}
        except BaseException as e:  # report, never raise in the child
            out = {'error': repr(e)}
        try:
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    os.waitpid(pid, 0)
    res = json.loads(b''.join(chunks).decode())
    assert 'error' not in res, 'child failed: %s' % res['error']
    return res['ok']


def _try(fn, *args):
    try:
        v = fn(*args)
        if isinstance(v, bytes):
            return v.decode('latin-1')
        return 'ok'
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def _read(path):
    with open(path, 'rb') as f:
        return f.read()


def _append(path):
    with open(path, 'ab') as f:
        f.write(b'+')


def _create(path):
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))


@pytest.mark.skipif(os.geteuid() != 0, reason='needs root to switch users')
def test_permissions_for_other_user(hfs):
    mnt = hfs(start=False)
    mnt.start(extra_args=('-o', 'allow_other'))
    m = mnt.m
    os.chmod(mnt.mnt, 0o755)
    m('secret').write_bytes(b'secret')
    os.chmod(m('secret'), 0o600)
    m('public').write_bytes(b'public')
    os.chmod(m('public'), 0o644)
    m('shared').write_bytes(b'shared')
    os.chmod(m('shared'), 0o666)
    os.mkdir(m('rodir'), 0o755)
    m('rodir/victim').write_bytes(b'v')
    os.chmod(m('rodir/victim'), 0o666)
    os.mkdir(m('private'), 0o700)
    m('private/f').write_bytes(b'p')
    os.chmod(m('private/f'), 0o644)
    os.mkdir(m('open'))
    os.chmod(m('open'), 0o777)
    os.mkdir(m('sticky'))
    os.chmod(m('sticky'), 0o1777)
    m('sticky/rootfile').write_bytes(b'r')
    os.chmod(m('sticky/rootfile'), 0o666)
    m('suid').write_bytes(b's')
    os.chmod(m('suid'), 0o6777)
    os.mkdir(m('sgid'))
    os.chown(m('sgid'), 0, 0)
    os.chmod(m('sgid'), 0o2777)
    m('suid_tr').write_bytes(b's')
    os.chmod(m('suid_tr'), 0o6777)

    def child():
        return {
            'read secret': _try(_read, 'secret'),
            'access secret': os.access('secret', os.R_OK),
            'access shared': os.access('shared', os.R_OK | os.W_OK),
            'read public': _try(_read, 'public'),
            'write public': _try(_append, 'public'),
            'truncate public': _try(os.truncate, 'public', 0),
            'write shared': _try(_append, 'shared'),
            'create in rodir': _try(_create, 'rodir/new'),
            'mkdir in rodir': _try(os.mkdir, 'rodir/newdir'),
            'unlink in rodir': _try(os.unlink, 'rodir/victim'),
            'rename in rodir': _try(os.rename, 'rodir/victim', 'open/v'),
            'list private': _try(os.listdir, 'private'),
            'stat in private': _try(os.stat, 'private/f'),
            'read in private': _try(_read, 'private/f'),
            'chmod public': _try(os.chmod, 'public', 0o666),
            'chown public': _try(os.chown, 'public', NOBODY, NOBODY),
            'utime set shared': _try(os.utime, 'shared', (1, 1)),
            'utime now shared': _try(os.utime, 'shared'),
            'utime now public': _try(os.utime, 'public'),
            'create in open': _try(_create, 'open/mine'),
            'chmod own': _try(os.chmod, 'open/mine', 0o600),
            'read own': _try(_read, 'open/mine'),
            'unlink root in sticky': _try(os.unlink, 'sticky/rootfile'),
            'rename root in sticky': _try(os.rename, 'sticky/rootfile',
                                          'sticky/x'),
            'create in sticky': _try(_create, 'sticky/own'),
            'unlink own in sticky': _try(os.unlink, 'sticky/own'),
            'mkdir in open': _try(os.mkdir, 'open/mydir', 0o755),
            'create in sgid': _try(_create, 'sgid/f'),
            'mkdir in sgid': _try(os.mkdir, 'sgid/sd', 0o755),
            'write suid': _try(_append, 'suid'),
            'truncate suid': _try(os.truncate, 'suid_tr', 0),
        }

    got = _as_user(str(mnt.mnt), NOBODY, child)
    want = {
        'read secret': 'EACCES',
        'access secret': False,
        'access shared': True,
        'read public': 'public',
        'write public': 'EACCES',
        'truncate public': 'EACCES',
        'write shared': 'ok',
        'create in rodir': 'EACCES',
        'mkdir in rodir': 'EACCES',
        'unlink in rodir': 'EACCES',
        'rename in rodir': 'EACCES',
        'list private': 'EACCES',
        'stat in private': 'EACCES',
        'read in private': 'EACCES',
        'chmod public': 'EPERM',
        'chown public': 'EPERM',
        'utime set shared': 'EPERM',
        'utime now shared': 'ok',
        'utime now public': 'EACCES',
        'create in open': 'ok',
        'chmod own': 'ok',
        'read own': '',
        'unlink root in sticky': 'EPERM',
        'rename root in sticky': 'EPERM',
        'create in sticky': 'ok',
        'unlink own in sticky': 'ok',
        'mkdir in open': 'ok',
        'create in sgid': 'ok',
        'mkdir in sgid': 'ok',
        'write suid': 'ok',
        'truncate suid': 'ok',
    }
    assert got == want
    # Side effects: only what was allowed happened.
    assert m('secret').read_bytes() == b'secret'
    assert m('public').read_bytes() == b'public'
    assert m('shared').read_bytes() == b'shared+'
    assert listing(m('rodir')) == ['victim']
    assert listing(m('sticky')) == ['rootfile']
    assert listing(m('open')) == ['mine', 'mydir']
    st = os.stat(m('open/mine'))
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
    assert st.st_mode == stat.S_IFREG | 0o600
    st = os.stat(m('open/mydir'))
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
    st = os.stat(m('public'))
    assert st.st_mode == stat.S_IFREG | 0o644 and st.st_uid == 0
    # A write or truncate by another user clears set-user-ID and
    # set-group-ID (with group execute), as Linux does.
    assert os.stat(m('suid')).st_mode == stat.S_IFREG | 0o777
    assert os.stat(m('suid_tr')).st_mode == stat.S_IFREG | 0o777
    assert m('suid').read_bytes() == b's+'
    # Root is not bound by the mode bits of another user's file.
    assert m('open/mine').read_bytes() == b''
    # In a set-group-ID directory new entries take the directory's group,
    # and new directories keep the set-group-ID bit.
    st = os.stat(m('sgid/f'))
    assert (st.st_uid, st.st_gid) == (NOBODY, 0)
    st = os.stat(m('sgid/sd'))
    assert (st.st_uid, st.st_gid) == (NOBODY, 0)
    assert st.st_mode & stat.S_ISGID


# ---------------------------------------------------------------------------
# statfs, readdir, special files, xattrs


def test_statvfs(mount):
    m = mount.m
    m('f').write_bytes(b'x' * 10000)
    for st in (os.statvfs(mount.mnt), os.statvfs(m('f'))):
        assert st.f_bsize > 0 and st.f_frsize > 0
        assert st.f_blocks > 0
        assert 0 <= st.f_bfree <= st.f_blocks
        assert 0 <= st.f_bavail <= st.f_bfree
        assert 0 <= st.f_ffree <= st.f_files
        assert st.f_namemax == NAME_MAX
    fd = os.open(m('f'), os.O_RDONLY)
    try:
        assert os.fstatvfs(fd).f_namemax == NAME_MAX
    finally:
        os.close(fd)
    assert os.pathconf(mount.mnt, 'PC_NAME_MAX') == NAME_MAX


def test_readdir_entries_and_types(mount):
    m = mount.m
    assert listing(mount.mnt) == []
    os.mkdir(m('dir1'))
    os.mkdir(m('dir2'))
    m('file1').write_bytes(b'1')
    m('file2').write_bytes(b'')
    m('dir1/inner').write_bytes(b'i')
    os.mknod(m('node'), stat.S_IFREG | 0o600)
    want = {'dir1': 'd', 'dir2': 'd', 'file1': 'f', 'file2': 'f',
            'node': 'f'}
    for _ in range(2):  # fresh, then from whatever the kernel cached
        got = {}
        with os.scandir(mount.mnt) as it:
            for e in it:
                assert not e.is_symlink()
                assert e.is_dir(follow_symlinks=False) != \
                    e.is_file(follow_symlinks=False), e.name
                got[e.name] = 'd' if e.is_dir(follow_symlinks=False) else 'f'
                assert e.inode() == os.stat(e.path).st_ino
        assert got == want
    with os.scandir(m('dir1')) as it:
        assert [(e.name, e.is_file()) for e in it] == [('inner', True)]
    assert listing(m('dir2')) == []
    # The listing follows changes exactly.
    os.unlink(m('file1'))
    os.rename(m('file2'), m('dir2/file2'))
    assert listing(mount.mnt) == ['dir1', 'dir2', 'node']
    assert listing(m('dir2')) == ['file2']
    # A directory listed while it changes does not list twice or invent.
    names = {'n%03d' % i for i in range(300)}
    for n in names:
        m('dir1/' + n).write_bytes(b'')
    seen = []
    with os.scandir(m('dir1')) as it:
        for i, e in enumerate(it):
            seen.append(e.name)
            if i == 10:
                m('dir1/late').write_bytes(b'')
    assert len(seen) == len(set(seen))
    assert set(seen) - {'late'} == names | {'inner'}
    assert set(os.listdir(m('dir1'))) == names | {'inner', 'late'}


def test_xattrs(mount):
    """docs/posix.md: read-only user.huracanfs.* attributes."""
    p = mount.m('x')
    p.write_bytes(b'x')
    names = os.listxattr(p)
    assert names and all(n.startswith('user.huracanfs.') for n in names)
    for n in names:
        os.getxattr(p, n)
    assert errno_of(os.getxattr, p, 'user.nothere') == errno.ENODATA
    assert errno_of(os.setxattr, p, 'user.mine', b'1') == errno.ENOTSUP
    assert errno_of(os.setxattr, p, names[0], b'1') == errno.ENOTSUP
    assert errno_of(os.removexattr, p, names[0]) == errno.ENOTSUP
    assert sorted(os.listxattr(p)) == sorted(names)


# ---------------------------------------------------------------------------
# open-unlinked files, mmap


def test_unlink_open_file(wmount):
    m = wmount.m
    m('f').write_bytes(b'12345')
    fd = os.open(m('f'), os.O_RDWR)
    try:
        ino = os.fstat(fd).st_ino
        os.unlink(m('f'))
        assert errno_of(os.stat, m('f')) == errno.ENOENT
        assert listing(wmount.mnt) == []
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, 100, 0) == b'12345'
        os.pwrite(fd, b'67890', 5)
        os.ftruncate(fd, 8)
        assert os.fstat(fd).st_size == 8
        assert os.pread(fd, 100, 0) == b'12345678'
        # A new file of the same name is a different file.
        m('f').write_bytes(b'new')
        assert os.stat(m('f')).st_ino != ino
        assert os.pread(fd, 100, 0) == b'12345678'
        assert m('f').read_bytes() == b'new'
    finally:
        os.close(fd)
    assert listing(wmount.mnt) == ['f']
    assert m('f').read_bytes() == b'new'


def test_mmap_shared(wmount):
    p = wmount.m('mm')
    size = 3 * mmap.PAGESIZE + 123
    p.write_bytes(b'\0' * size)
    fd = os.open(p, os.O_RDWR)
    rd = os.open(p, os.O_RDONLY)
    try:
        st0 = os.fstat(fd)
        tick()
        mm = mmap.mmap(fd, size, mmap.MAP_SHARED,
                       mmap.PROT_READ | mmap.PROT_WRITE)
        mm[0:5] = b'hello'
        mm[size - 5:size] = b'world'
        mm.flush()  # msync(MS_SYNC)
        assert os.pread(rd, 5, 0) == b'hello'
        assert os.pread(rd, 5, size - 5) == b'world'
        st1 = os.fstat(fd)
        assert st1.st_mtime_ns > st0.st_mtime_ns
        assert st1.st_size == size
        # A write() through another fd is seen through the mapping.
        os.pwrite(fd, b'XYZ', mmap.PAGESIZE)
        assert mm[mmap.PAGESIZE:mmap.PAGESIZE + 3] == b'XYZ'
        # Stores then munmap without msync: read() sees them.
        mm[2 * mmap.PAGESIZE:2 * mmap.PAGESIZE + 4] = b'last'
        mm.close()
        assert os.pread(rd, 4, 2 * mmap.PAGESIZE) == b'last'
    finally:
        os.close(fd)
        os.close(rd)
    want = bytearray(size)
    want[0:5] = b'hello'
    want[size - 5:] = b'world'
    want[mmap.PAGESIZE:mmap.PAGESIZE + 3] = b'XYZ'
    want[2 * mmap.PAGESIZE:2 * mmap.PAGESIZE + 4] = b'last'
    assert p.read_bytes() == bytes(want)
    assert os.stat(p).st_size == size


# ---------------------------------------------------------------------------
# concurrency


def test_concurrent_creates_and_renames(hfs):
    mnt = hfs()
    d = mnt.m('c')
    os.mkdir(d)
    nthreads, nfiles = 8, 30
    barrier = threading.Barrier(nthreads)
    errors = []
    excl_wins = []
    mkdir_wins = []
    shared_payloads = set()

    def worker(k):
        try:
            barrier.wait(timeout=30)
            # All race for one O_EXCL name and one mkdir.
            try:
                os.close(os.open(d / 'excl',
                                 os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                excl_wins.append(k)
            except FileExistsError:
                pass
            try:
                os.mkdir(d / 'race_dir')
                mkdir_wins.append(k)
            except FileExistsError:
                pass
            for i in range(nfiles):
                name = 'f.%d.%d' % (k, i)
                tmp = d / ('tmp.' + name)
                data = ('%s\n' % name).encode() * (i + 1)
                with open(tmp, 'wb') as f:
                    f.write(data)
                os.rename(tmp, d / name)
                if i % 3 == 0:
                    os.rename(d / name, d / ('g.%d.%d' % (k, i)))
                if i % 5 == 0:
                    os.unlink(d / ('g.%d.%d' % (k, i) if i % 3 == 0
                                   else name))
                # Everybody renames over one shared name.
                payload = ('shared %d %d' % (k, i)).encode()
                stmp = d / ('stmp.%d.%d' % (k, i))
                stmp.write_bytes(payload)
                shared_payloads.add(payload)
                os.rename(stmp, d / 'shared')
                # And a directory moves around per thread.
                if i == 0:
                    os.mkdir(d / ('dir.%d' % k))
                else:
                    os.rename(d / ('dir.%d' % k), d / ('dir.%d' % k))
                    os.rename(d / ('dir.%d' % k), d / ('xdir.%d' % k))
                    os.rename(d / ('xdir.%d' % k), d / ('dir.%d' % k))
        except Exception as e:  # collected, reported below
            errors.append('%d: %r' % (k, e))

    threads = [threading.Thread(target=worker, args=(k,))
               for k in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(excl_wins) == 1 and len(mkdir_wins) == 1

    expect = {}
    for k in range(nthreads):
        expect['dir.%d' % k] = None
        for i in range(nfiles):
            name = 'f.%d.%d' % (k, i)
            data = ('%s\n' % name).encode() * (i + 1)
            if i % 5 == 0:
                continue
            expect[('g.%d.%d' % (k, i)) if i % 3 == 0 else name] = data
    expect['excl'] = b''
    expect['race_dir'] = None

    def check():
        names = set(os.listdir(d))
        assert names == set(expect) | {'shared'}, (
            sorted(names ^ (set(expect) | {'shared'}))[:20])
        for n, data in expect.items():
            if data is None:
                assert stat.S_ISDIR(os.stat(d / n).st_mode), n
            else:
                assert (d / n).read_bytes() == data, n
        assert (d / 'shared').read_bytes() in shared_payloads
        with os.scandir(d) as it:
            assert len({e.inode() for e in it}) == len(names)

    check()
    shared = (d / 'shared').read_bytes()
    # The index keeps the same picture across a remount.
    mnt.remount()
    check()
    assert (d / 'shared').read_bytes() == shared


def test_syncfs_after_a_delete_succeeds(mount):
    """After a file is removed the kernel still writes back the times it
    kept for it (a setattr of an inode whose record is gone): that is no
    error, and the next syncfs(2) of the mount returns 0."""
    libc = ctypes.CDLL(None, use_errno=True)
    p = mount.m('gone.bin')
    p.write_bytes(b'x' * 100000)
    with open(p, 'rb') as f:
        assert len(f.read()) == 100000
    with open(p, 'r+b') as f:
        f.write(b'y')  # times the kernel keeps and writes back later
    os.unlink(p)
    fd = os.open(mount.mnt, os.O_RDONLY)
    try:
        rc = libc.syncfs(fd)
        assert rc == 0, os.strerror(ctypes.get_errno())
    finally:
        os.close(fd)

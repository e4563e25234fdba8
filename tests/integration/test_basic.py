"""POSIX behaviour of the mount, through plain syscalls and tools."""

import errno
import filecmp
import hashlib
import mmap
import os
import random
import stat
import subprocess
import time

from hfsutil import errno_of, snapshot, describe_diff


def test_write_read_stat(mount):
    p = mount.m('hello.txt')
    before = time.time()
    with open(p, 'wb') as f:
        f.write(b'hello, world\n')
    with open(p, 'rb') as f:
        assert f.read() == b'hello, world\n'
    st = os.stat(p)
    assert stat.S_ISREG(st.st_mode)
    assert st.st_size == 13
    assert st.st_nlink == 1
    assert before - 2 <= st.st_mtime <= time.time() + 2
    assert 'hello.txt' in os.listdir(mount.mnt)
    os.mkdir(mount.m('d'))
    st = os.stat(mount.m('d'))
    assert stat.S_ISDIR(st.st_mode)
    # ls sees the same, and so does a fresh open after overwrite.
    out = subprocess.run(['ls', '-la', str(mount.mnt)], check=True,
                         stdout=subprocess.PIPE, timeout=30).stdout.decode()
    assert 'hello.txt' in out and ' d\n' in out
    with open(p, 'wb') as f:
        f.write(b'short')
    assert p.read_bytes() == b'short'
    assert os.stat(p).st_size == 5


def test_partial_writes_and_reads(mount):
    p = mount.m('rw.bin')
    data = bytearray(os.urandom(300_000))
    p.write_bytes(data)
    fd = os.open(p, os.O_RDWR)
    try:
        os.pwrite(fd, b'X' * 5000, 100_000)
        data[100_000:105_000] = b'X' * 5000
        os.pwrite(fd, b'tail', 300_000)
        data += b'tail'
        assert os.pread(fd, 10_000, 99_000) == bytes(data[99_000:109_000])
    finally:
        os.close(fd)
    assert p.read_bytes() == bytes(data)


def test_many_files_listing(mount):
    d = mount.m('many')
    d.mkdir()
    names = {'f%04d.txt' % i for i in range(600)}
    for n in names:
        (d / n).write_bytes(n.encode())
    assert set(os.listdir(d)) == names
    for n in random.Random(1).sample(sorted(names), 50):
        assert (d / n).read_bytes() == n.encode()


def _make_tree(root, rng):
    sizes = [0, 1, 4095, 4096, 4097, 128 * 1024 + 1, 5 * 1024 * 1024 + 3]
    (root / 'empty_dir').mkdir(parents=True)
    for i, size in enumerate(sizes):
        sub = root / ('d%d' % (i % 3)) / ('e%d' % (i % 2))
        sub.mkdir(parents=True, exist_ok=True)
        (sub / ('file%d.bin' % i)).write_bytes(rng.randbytes(size))
    (root / 'top.json').write_bytes(b'{"a": 1}\n')


def test_cp_r_roundtrip(mount, tmp_path):
    src = tmp_path / 'src_tree'
    _make_tree(src, random.Random(7))
    subprocess.run(['cp', '-r', str(src), str(mount.m('tree'))], check=True,
                   timeout=60)
    back = tmp_path / 'back_tree'
    subprocess.run(['cp', '-r', str(mount.m('tree')), str(back)], check=True,
                   timeout=60)
    for a, b in ((src, mount.m('tree')), (src, back)):
        sa, sb = snapshot(a), snapshot(b)
        assert sa == sb, describe_diff(sa, sb)
    # filecmp with shallow=False compares bytes, file by file.
    def deep(dc):
        assert not dc.left_only and not dc.right_only and not dc.funny_files
        _, mismatch, errors = filecmp.cmpfiles(dc.left, dc.right,
                                               dc.common_files, shallow=False)
        assert not mismatch and not errors, (mismatch, errors)
        for sub in dc.subdirs.values():
            deep(sub)
    deep(filecmp.dircmp(src, mount.m('tree')))
    deep(filecmp.dircmp(src, back))


def test_mv_files_and_dirs(mount):
    m = mount.m
    m('a.txt').write_bytes(b'A')
    m('b.txt').write_bytes(b'B-old')
    os.rename(m('a.txt'), m('a2.txt'))
    assert not m('a.txt').exists() and m('a2.txt').read_bytes() == b'A'
    # mv over an existing file replaces it.
    subprocess.run(['mv', str(m('a2.txt')), str(m('b.txt'))], check=True,
                   timeout=30)
    assert m('b.txt').read_bytes() == b'A'
    assert sorted(os.listdir(mount.mnt)) == ['b.txt']
    # A directory with content moves as a whole, into another directory.
    m('dir1/sub').mkdir(parents=True)
    m('dir1/sub/f').write_bytes(b'F')
    m('dir1/g').write_bytes(b'G')
    m('other').mkdir()
    subprocess.run(['mv', str(m('dir1')), str(m('other/dir2'))], check=True,
                   timeout=30)
    assert not m('dir1').exists()
    assert m('other/dir2/sub/f').read_bytes() == b'F'
    assert m('other/dir2/g').read_bytes() == b'G'
    # A file moved across directories keeps its bytes.
    os.rename(m('other/dir2/g'), m('g-moved'))
    assert m('g-moved').read_bytes() == b'G'
    assert sorted(os.listdir(m('other/dir2'))) == ['sub']
    # rename onto a non-empty directory fails, onto an empty one works.
    m('full').mkdir()
    m('full/x').write_bytes(b'x')
    m('emptyd').mkdir()
    assert errno_of(os.rename, m('emptyd'), m('full')) in (errno.ENOTEMPTY,
                                                           errno.EEXIST)
    os.rename(m('full'), m('emptyd'))
    assert m('emptyd/x').read_bytes() == b'x' and not m('full').exists()


def test_rm_rmdir(mount):
    m = mount.m
    m('d/e').mkdir(parents=True)
    m('d/e/f').write_bytes(b'f')
    assert errno_of(os.rmdir, m('d')) == errno.ENOTEMPTY
    assert errno_of(os.rmdir, m('d/e')) == errno.ENOTEMPTY
    assert errno_of(os.unlink, m('d')) in (errno.EISDIR, errno.EPERM)
    assert errno_of(os.rmdir, m('d/e/f')) == errno.ENOTDIR
    os.unlink(m('d/e/f'))
    assert errno_of(os.stat, m('d/e/f')) == errno.ENOENT
    os.rmdir(m('d/e'))
    os.rmdir(m('d'))
    assert os.listdir(mount.mnt) == []
    m('x/y/z').mkdir(parents=True)
    m('x/y/z/w').write_bytes(b'w')
    subprocess.run(['rm', '-r', str(m('x'))], check=True, timeout=30)
    assert not m('x').exists()


def test_error_codes(mount):
    m = mount.m
    assert errno_of(open, m('nope'), 'rb') == errno.ENOENT
    assert errno_of(os.stat, m('nope/deeper')) == errno.ENOENT
    m('d').mkdir()
    assert errno_of(os.mkdir, m('d')) == errno.EEXIST
    m('f').write_bytes(b'1')
    assert errno_of(os.mkdir, m('f')) == errno.EEXIST
    assert errno_of(os.open, m('f'), os.O_CREAT | os.O_EXCL | os.O_WRONLY) \
        == errno.EEXIST
    assert errno_of(open, m('d'), 'wb') == errno.EISDIR
    assert errno_of(os.stat, m('f/child')) == errno.ENOTDIR
    assert errno_of(os.listdir, m('f')) == errno.ENOTDIR


def test_mkdir_p_deep(mount):
    parts = ['level%02d' % i for i in range(25)]
    deep = mount.mnt.joinpath(*parts)
    subprocess.run(['mkdir', '-p', str(deep)], check=True, timeout=30)
    assert deep.is_dir()
    (deep / 'leaf.txt').write_bytes(b'leaf')
    assert mount.mnt.joinpath(*parts, 'leaf.txt').read_bytes() == b'leaf'
    walked = [d for d, _, _ in os.walk(mount.mnt)]
    assert len(walked) == 26


def test_o_append(mount):
    p = mount.m('app.log')
    p.write_bytes(b'start\n')
    fd1 = os.open(p, os.O_WRONLY | os.O_APPEND)
    fd2 = os.open(p, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd1, b'one\n')
        os.write(fd2, b'two\n')
        os.lseek(fd1, 0, os.SEEK_SET)
        os.write(fd1, b'three\n')  # O_APPEND ignores the seek
        os.write(fd2, b'four\n')
    finally:
        os.close(fd1)
        os.close(fd2)
    assert p.read_bytes() == b'start\none\ntwo\nthree\nfour\n'
    with open(p, 'ab') as f:
        f.write(b'five\n')
    assert p.read_bytes().endswith(b'four\nfive\n')


def test_truncate(mount):
    p = mount.m('t.bin')
    p.write_bytes(b'abcdef')
    os.truncate(p, 100_000)
    data = p.read_bytes()
    assert len(data) == 100_000 and data[:6] == b'abcdef'
    assert data[6:] == bytes(100_000 - 6)
    assert os.stat(p).st_size == 100_000
    os.truncate(p, 3)
    assert p.read_bytes() == b'abc'
    with open(p, 'r+b') as f:
        f.truncate(1)
        f.seek(0, os.SEEK_END)
        f.write(b'Z')
    assert p.read_bytes() == b'aZ'
    # O_TRUNC on open.
    with open(p, 'wb') as f:
        pass
    assert os.stat(p).st_size == 0 and p.read_bytes() == b''
    # Extending past the end by writing leaves a zero-filled hole.
    fd = os.open(p, os.O_WRONLY)
    os.pwrite(fd, b'end', 1_000_000)
    os.close(fd)
    data = p.read_bytes()
    assert len(data) == 1_000_003 and data[-3:] == b'end'
    assert data[:1_000_000] == bytes(1_000_000)


def test_large_file(mount):
    p = mount.m('big/large.bin')
    p.parent.mkdir()
    h = hashlib.sha256()
    block = os.urandom(1 << 20)
    with open(p, 'wb') as f:
        for i in range(64):
            b = bytes([i]) + block[1:]
            h.update(b)
            f.write(b)
    assert os.stat(p).st_size == 64 << 20
    h2 = hashlib.sha256()
    with open(p, 'rb') as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h2.update(b)
    assert h2.hexdigest() == h.hexdigest()
    # A read in the middle, across a 4 MiB boundary.
    with open(p, 'rb') as f:
        f.seek((4 << 20) - 10)
        b = f.read(20)
    assert b == block[(4 << 20) - 10 - (3 << 20):][:10] + bytes([4]) + \
        block[1:10]


def test_mmap_shared_write(mount):
    p = mount.m('mm.bin')
    size = 1 << 20
    with open(p, 'wb') as f:
        f.truncate(size)
    pattern = bytes(range(256)) * (size // 256)
    fd = os.open(p, os.O_RDWR)
    try:
        mm = mmap.mmap(fd, size, mmap.MAP_SHARED,
                       mmap.PROT_READ | mmap.PROT_WRITE)
        mm[:] = pattern
        mm[10:15] = b'HELLO'
        mm.flush()
        mm.close()
    finally:
        os.close(fd)
    expect = pattern[:10] + b'HELLO' + pattern[15:]
    fd = os.open(p, os.O_RDONLY)
    try:
        got = b''
        while len(got) < size:
            chunk = os.read(fd, size - len(got))
            if not chunk:
                break
            got += chunk
    finally:
        os.close(fd)
    assert got == expect


def test_statvfs(mount):
    st = os.statvfs(mount.mnt)
    assert st.f_bsize > 0
    assert st.f_namemax >= 255
    assert st.f_blocks > 0
    assert st.f_bavail <= st.f_blocks
    r = subprocess.run(['df', str(mount.mnt)], stdout=subprocess.PIPE,
                       timeout=30)
    assert r.returncode == 0


def test_unicode_names(mount):
    names = ['résumé.txt', 'Ünïcödé ✓', '日本語のファイル.json',
             'emoji 🚀 rocket.bin', 'spaces and\ttab']
    for i, n in enumerate(names):
        (mount.mnt / n).write_bytes(n.encode() * (i + 1))
    os.mkdir(mount.m('dossier été'))
    (mount.m('dossier été') / 'naïve.csv').write_bytes(b'1,2\n')
    assert set(os.listdir(mount.mnt)) == set(names) | {'dossier été'}
    for i, n in enumerate(names):
        assert (mount.mnt / n).read_bytes() == n.encode() * (i + 1)
    assert os.listdir(mount.m('dossier été')) == ['naïve.csv']
    os.rename(mount.mnt / names[0], mount.mnt / 'rés2.txt')
    assert (mount.mnt / 'rés2.txt').read_bytes() == names[0].encode()


def test_utime(mount):
    p = mount.m('u.txt')
    p.write_bytes(b'u')
    t = 1_700_000_000
    os.utime(p, (t, t))
    assert int(os.stat(p).st_mtime) == t
    subprocess.run(['touch', str(p)], check=True, timeout=30)
    assert abs(os.stat(p).st_mtime - time.time()) < 5
    assert p.read_bytes() == b'u'


def test_unlink_while_open(mount):
    p = mount.m('tmpfile')
    with open(p, 'w+b') as f:
        f.write(b'still here')
        f.flush()
        os.unlink(p)
        assert not p.exists()
        f.seek(0)
        assert f.read() == b'still here'
        f.write(b' and more')
        f.seek(0)
        assert f.read() == b'still here and more'
    assert os.listdir(mount.mnt) == []


def test_fsync_and_reopen(mount):
    p = mount.m('sync.bin')
    data = os.urandom(200_000)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    assert p.read_bytes() == data

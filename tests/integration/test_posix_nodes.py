"""Symbolic links, FIFOs, sockets, device nodes and link counts through the
mount (docs/posix.md), in the manner of pjdfstest: each call's errno, and
the timestamps each call touches (the node's ctime, the parent's mtime and
ctime). Every test runs on the local backend and on the fake Dropbox.

Remote forms: a symbolic link NAME is the remote file NAME.rclonelink
holding its target (rclone's convention); FIFOs, sockets and device nodes
are never uploaded.
"""

import errno
import os
import socket
import stat
import subprocess
import threading
import time

import pytest

from hfsutil import errno_of

ROOT = '/Huracan'
SUFFIX = '.rclonelink'


def tick():
    """Long enough for the kernel's coarse clock to move on."""
    time.sleep(0.02)


@pytest.fixture(params=['local', 'dropbox'])
def backend(request, hfs, fake, ca):
    """(make, remote) for one backend: make(name=None, **kw) starts a
    mount; remote(m) gives {path: bytes} of what its remote holds."""
    if request.param == 'local':
        def make(name=None, **kw):
            return hfs(name, **kw)

        def remote(m):
            out = {}
            for dp, dns, fns in os.walk(m.remote):
                for f in fns:
                    p = os.path.join(dp, f)
                    out['/' + os.path.relpath(p, m.remote)] = \
                        open(p, 'rb').read()
            return out

        def put(m, rel, data):
            p = m.remote / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)

        def delete(m, rel):
            os.unlink(m.remote / rel)
        make.kind = 'local'
    else:
        from conftest import dropbox_mounts
        mk = dropbox_mounts(hfs, fake, ca)

        def make(name=None, **kw):
            return mk(name=name, **kw)

        def remote(m):
            return {e['path_display'][len(ROOT):]:
                    fake.get_file(e['path_display'])
                    for e in fake.tree()
                    if e['.tag'] == 'file' and
                    e['path_display'].startswith(ROOT + '/')}

        def put(m, rel, data):
            fake.put_file(ROOT + '/' + rel, data)

        def delete(m, rel):
            fake.delete(ROOT + '/' + rel)
        make.kind = 'dropbox'
    make.remote = remote
    make.put = put
    make.delete = delete
    return make


def fresh(backend, m, name):
    """A second mount with an empty cache on @m's remote."""
    if backend.kind == 'dropbox':
        return backend(name)
    m2 = backend(name, start=False)
    os.rmdir(m2.remote)
    os.symlink(m.remote, m2.remote)
    m2.start()
    return m2


def times(p):
    st = os.lstat(p)
    return st.st_mtime_ns, st.st_ctime_ns


# -- symbolic links -----------------------------------------------------

def test_symlink_calls(backend):
    m = backend()
    os.mkdir(m.m('d'))
    m.m('d/target').write_bytes(b'hello')
    before = times(m.m('d'))
    tick()
    assert errno_of(os.symlink, 'target', m.m('d/sl')) is None
    after = times(m.m('d'))
    assert after[0] > before[0] and after[1] > before[1]
    st = os.lstat(m.m('d/sl'))
    assert stat.S_ISLNK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o777
    assert st.st_size == len('target') and st.st_nlink == 1
    assert st.st_uid == os.getuid()
    assert st.st_mtime_ns == st.st_ctime_ns >= after[1]
    assert os.readlink(m.m('d/sl')) == 'target'
    assert m.m('d/sl').read_bytes() == b'hello'  # followed by the kernel
    assert os.stat(m.m('d/sl')).st_ino == os.stat(m.m('d/target')).st_ino
    # errors, as on any filesystem
    assert errno_of(os.symlink, 'x', m.m('d/sl')) == errno.EEXIST
    assert errno_of(os.symlink, 'x', m.m('d/target')) == errno.EEXIST
    assert errno_of(os.symlink, 'x', m.m('missing/sl')) == errno.ENOENT
    assert errno_of(os.symlink, 'x', m.m('d/target/sl')) == errno.ENOTDIR
    assert errno_of(os.symlink, '', m.m('d/empty')) == errno.ENOENT
    assert errno_of(os.symlink, 'x' * 4096, m.m('d/long')) == \
        errno.ENAMETOOLONG
    assert errno_of(os.symlink, 'x', m.m('d/' + 'n' * 256)) == \
        errno.ENAMETOOLONG
    assert errno_of(os.readlink, m.m('d/target')) == errno.EINVAL
    assert errno_of(os.readlink, m.m('d')) == errno.EINVAL
    assert errno_of(os.readlink, m.m('d/none')) == errno.ENOENT
    assert errno_of(os.open, m.m('d/sl'), os.O_RDONLY | os.O_NOFOLLOW) == \
        errno.ELOOP
    assert errno_of(os.rmdir, m.m('d/sl')) == errno.ENOTDIR
    assert errno_of(os.mkdir, m.m('d/sl')) == errno.EEXIST
    # a long target, every byte kept
    target = '/'.join(['seg%04d' % i for i in range(500)])[:4095]
    os.symlink(target, m.m('d/longtarget'))
    assert os.readlink(m.m('d/longtarget')) == target
    assert os.lstat(m.m('d/longtarget')).st_size == len(target)
    # dangling, then its target appears
    os.symlink('later', m.m('d/dangling'))
    assert errno_of(os.stat, m.m('d/dangling')) == errno.ENOENT
    m.m('d/later').write_bytes(b'now')
    assert m.m('d/dangling').read_bytes() == b'now'
    # a link to a directory, and through it
    os.symlink('.', m.m('d/self'))
    assert sorted(os.listdir(m.m('d/self'))) == sorted(os.listdir(m.m('d')))
    assert os.path.islink(m.m('d/self'))
    # readdir shows links as links
    kinds = {e.name: e.is_symlink() for e in os.scandir(m.m('d'))}
    assert kinds['sl'] and not kinds['target']
    # the today link keeps working beside them
    assert os.path.islink(m.m('today'))
    assert os.path.isdir(m.m('today'))


def test_symlink_rename_unlink(backend):
    m = backend()
    os.mkdir(m.m('a'))
    os.mkdir(m.m('b'))
    m.m('a/t').write_bytes(b't')
    os.symlink('../a/t', m.m('a/sl'))
    ino = os.lstat(m.m('a/sl')).st_ino
    ba, bb, bl = times(m.m('a')), times(m.m('b')), times(m.m('a/sl'))
    tick()
    os.rename(m.m('a/sl'), m.m('b/sl2'))
    st = os.lstat(m.m('b/sl2'))
    assert st.st_ino == ino and stat.S_ISLNK(st.st_mode)
    assert st.st_ctime_ns > bl[1] and st.st_mtime_ns == bl[0]
    assert times(m.m('a'))[0] > ba[0] and times(m.m('b'))[0] > bb[0]
    assert os.readlink(m.m('b/sl2')) == '../a/t'
    assert m.m('b/sl2').read_bytes() == b't'
    assert not os.path.lexists(m.m('a/sl'))
    # rename over a file replaces it; a file over a link too
    m.m('b/f').write_bytes(b'f')
    os.rename(m.m('b/sl2'), m.m('b/f'))
    assert os.readlink(m.m('b/f')) == '../a/t'
    os.symlink('x', m.m('b/sl3'))
    m.m('b/g').write_bytes(b'g')
    os.rename(m.m('b/g'), m.m('b/sl3'))
    assert not os.path.islink(m.m('b/sl3'))
    assert errno_of(os.rename, m.m('b/f'), m.m('a')) == errno.EISDIR
    # unlink removes the link, never its target
    bb = times(m.m('b'))
    tick()
    assert errno_of(os.unlink, m.m('b/f')) is None
    assert times(m.m('b'))[0] > bb[0]
    assert m.m('a/t').read_bytes() == b't'
    assert errno_of(os.unlink, m.m('b/f')) == errno.ENOENT
    m.flush()
    rem = backend.remote(m)
    assert rem.get('/a/t') == b't'
    assert not any(p.endswith(SUFFIX) for p in rem), rem
    assert rem.get('/b/sl3') == b'g'


def test_symlink_remote_form_and_round_trip(backend):
    """A link is uploaded as NAME.rclonelink holding its target; a fresh
    cache on the same remote reads it back as the link."""
    m = backend()
    os.makedirs(m.m('runs/r1'))
    m.m('runs/r1/ckpt-3').write_bytes(b'weights')
    os.symlink('ckpt-3', m.m('runs/r1/latest'))
    os.symlink('/absolute/elsewhere', m.m('abs'))
    m.flush()
    rem = backend.remote(m)
    assert rem['/runs/r1/latest' + SUFFIX] == b'ckpt-3'
    assert rem['/abs' + SUFFIX] == b'/absolute/elsewhere'
    assert '/runs/r1/latest' not in rem
    assert not m.status()['local_links']
    # ln -sf: replaced in place
    subprocess.run(['ln', '-sfn', 'ckpt-4', str(m.m('runs/r1/latest'))],
                   check=True, timeout=30)
    m.m('runs/r1/ckpt-4').write_bytes(b'newer')
    m.flush()
    assert backend.remote(m)['/runs/r1/latest' + SUFFIX] == b'ckpt-4'
    # the same cache after a remount
    m.remount()
    assert os.readlink(m.m('runs/r1/latest')) == 'ckpt-4'
    # a fresh cache
    m2 = fresh(backend, m, 'two')
    st = os.lstat(m2.m('runs/r1/latest'))
    assert stat.S_ISLNK(st.st_mode) and st.st_size == len('ckpt-4')
    assert os.readlink(m2.m('runs/r1/latest')) == 'ckpt-4'
    assert m2.m('runs/r1/latest').read_bytes() == b'newer'
    assert os.readlink(m2.m('abs')) == '/absolute/elsewhere'
    assert sorted(os.listdir(m2.m('runs/r1'))) == \
        ['ckpt-3', 'ckpt-4', 'latest']
    # renamed and deleted there: the remote form follows
    os.rename(m2.m('runs/r1/latest'), m2.m('runs/r1/best'))
    os.unlink(m2.m('abs'))
    m2.flush()
    rem = backend.remote(m2)
    assert rem['/runs/r1/best' + SUFFIX] == b'ckpt-4'
    assert '/runs/r1/latest' + SUFFIX not in rem
    assert '/abs' + SUFFIX not in rem


def test_rclone_pushed_tree(backend):
    """Files NAME.rclonelink put on the remote by another tool (rclone
    --links) are links; beside a real NAME both stay files."""
    m = backend(start=False)
    backend.put(m, 'tree/link' + SUFFIX, b'file.txt')
    backend.put(m, 'tree/file.txt', b'content')
    backend.put(m, 'tree/both', b'real')
    backend.put(m, 'tree/both' + SUFFIX, b'file.txt')
    backend.put(m, 'tree/big' + SUFFIX, b'x' * 5000)  # no target: a file
    m.start()
    assert sorted(os.listdir(m.m('tree'))) == \
        ['big' + SUFFIX, 'both', 'both' + SUFFIX, 'file.txt', 'link']
    assert os.readlink(m.m('tree/link')) == 'file.txt'
    assert m.m('tree/link').read_bytes() == b'content'
    assert m.m('tree/both').read_bytes() == b'real'
    assert m.m('tree/both' + SUFFIX).read_bytes() == b'file.txt'
    # changed on the remote: the new target shows after a listing
    backend.put(m, 'tree/link' + SUFFIX, b'both')
    m.remount()
    assert os.readlink(m.m('tree/link')) == 'both'
    # gone from the remote: gone here
    backend.delete(m, 'tree/link' + SUFFIX)
    m.remount()
    assert not os.path.lexists(m.m('tree/link'))
    assert sorted(os.listdir(m.m('tree'))) == \
        ['big' + SUFFIX, 'both', 'both' + SUFFIX, 'file.txt']


def test_links_without_remote_form_stay_local(backend):
    m = backend()
    long_name = 'L' * 250  # fits, but not with the suffix
    os.symlink('t', m.m(long_name))
    m.m('x' + SUFFIX).write_bytes(b'a plain file')
    os.symlink('t', m.m('x'))  # its remote name is taken
    os.symlink('t', m.m('y'))
    # the remote name of a link is no free name
    assert errno_of(os.open, m.m('y' + SUFFIX),
                    os.O_CREAT | os.O_WRONLY, 0o644) == errno.EEXIST
    assert errno_of(os.mkdir, m.m('y' + SUFFIX)) == errno.EEXIST
    m.m('z').write_bytes(b'z')
    assert errno_of(os.rename, m.m('z'), m.m('y' + SUFFIX)) == errno.EEXIST
    m.flush()
    rem = backend.remote(m)
    assert rem == {'/x' + SUFFIX: b'a plain file',
                   '/y' + SUFFIX: b't', '/z': b'z'}, rem
    local = {e['path']: e['why'] for e in m.status()['local_links']}
    assert set(local) == {'/' + long_name, '/x'}, local
    assert 'too long' in local['/' + long_name]
    r = m.run('status', m.mnt, check=True)
    assert 'kept on this machine only' in r.stdout
    # kept across a remount, still reported
    m.remount()
    assert os.readlink(m.m(long_name)) == 't'
    assert os.readlink(m.m('x')) == 't'
    assert len(m.status()['local_links']) == 2
    # renamed to a name too long for the suffix: its remote form goes
    os.rename(m.m('y'), m.m('Y' * 250))
    m.flush()
    assert '/y' + SUFFIX not in backend.remote(m)
    assert os.readlink(m.m('Y' * 250)) == 't'
    assert len(m.status()['local_links']) == 3


def test_rclone_links_off(backend):
    m = backend(start=False, hfs_extra={'rclone_links': 'false'})
    backend.put(m, 'l' + SUFFIX, b'target')
    m.start()
    assert not os.path.islink(m.m('l' + SUFFIX))
    assert m.m('l' + SUFFIX).read_bytes() == b'target'
    assert not os.path.lexists(m.m('l'))
    os.symlink('target', m.m('mine'))
    m.flush()
    assert set(backend.remote(m)) == {'/l' + SUFFIX}
    assert [e['path'] for e in m.status()['local_links']] == ['/mine']
    m.remount()
    assert os.readlink(m.m('mine')) == 'target'


def test_symlink_category_is_its_own_path(backend):
    """A link is uploaded with the category of its own path (model.bin is
    a model by `*.bin`), not its remote name's (model.bin.rclonelink)."""
    m = backend()
    os.mkdir(m.m('exp'))
    m.m('exp/weights-7.bin').write_bytes(b'x')
    os.symlink('weights-7.bin', m.m('exp/model.bin'))
    assert os.getxattr(m.m('exp/weights-7.bin'),
                       'user.huracanfs.category') == b'models'
    m.flush(category='models')
    rem = backend.remote(m)
    assert rem.get('/exp/model.bin' + SUFFIX) == b'weights-7.bin', rem


def test_hugging_face_cache_tree(backend):
    m = backend()
    base = 'hub/models--org--model'
    blobs = {'aa11': b'{"config": 1}', 'bb22': b'W' * 100000}
    os.makedirs(m.m(base + '/blobs'))
    os.makedirs(m.m(base + '/snapshots/rev1'))
    os.makedirs(m.m(base + '/refs'))
    for h, data in blobs.items():
        m.m(base + '/blobs/' + h).write_bytes(data)
    os.symlink('../../blobs/aa11', m.m(base + '/snapshots/rev1/config.json'))
    os.symlink('../../blobs/bb22',
               m.m(base + '/snapshots/rev1/model.safetensors'))
    m.m(base + '/refs/main').write_bytes(b'rev1')
    m.flush()
    m.remount()
    snap = m.m(base + '/snapshots/rev1')
    assert (snap / 'config.json').read_bytes() == blobs['aa11']
    m2 = fresh(backend, m, 'two')
    snap = m2.m(base + '/snapshots/rev1')
    assert os.readlink(snap / 'model.safetensors') == '../../blobs/bb22'
    assert (snap / 'model.safetensors').read_bytes() == blobs['bb22']
    assert (snap / 'config.json').read_bytes() == blobs['aa11']
    assert os.path.realpath(snap / 'config.json') == \
        str(m2.m(base + '/blobs/aa11'))


def test_git_checkout_with_symlinks(backend, tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    env = dict(os.environ, GIT_AUTHOR_NAME='t', GIT_AUTHOR_EMAIL='t@t',
               GIT_COMMITTER_NAME='t', GIT_COMMITTER_EMAIL='t@t',
               HOME=str(tmp_path))

    def git(*args, cwd=src):
        r = subprocess.run(['git'] + list(args), cwd=cwd, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=120)
        assert r.returncode == 0, r.stderr.decode()
        return r.stdout.decode()
    git('init', '-q')
    (src / 'README').write_text('hi\n')
    os.mkdir(src / 'lib')
    (src / 'lib/impl.py').write_text('x = 1\n')
    os.symlink('lib/impl.py', src / 'impl.py')
    os.symlink('lib', src / 'lib-link')
    os.symlink('missing', src / 'dangling')
    git('add', '-A')
    git('commit', '-q', '-m', 'c')
    m = backend()
    git('clone', '-q', str(src), str(m.m('repo')), cwd=tmp_path)
    repo = m.m('repo')
    assert os.readlink(repo / 'impl.py') == 'lib/impl.py'
    assert os.readlink(repo / 'lib-link') == 'lib'
    assert os.readlink(repo / 'dangling') == 'missing'
    assert git('status', '--porcelain', cwd=repo) == ''
    m.flush()
    m.remount()
    assert git('status', '--porcelain', cwd=repo) == ''
    assert (repo / 'impl.py').read_text() == 'x = 1\n'


# -- hard links ---------------------------------------------------------

def test_link_calls(backend):
    m = backend()
    os.mkdir(m.m('a'))
    os.mkdir(m.m('b'))
    m.m('a/f').write_bytes(b'one')
    ino = os.stat(m.m('a/f')).st_ino
    bf, bb = times(m.m('a/f')), times(m.m('b'))
    tick()
    assert errno_of(os.link, m.m('a/f'), m.m('b/g')) is None
    st = os.stat(m.m('b/g'))
    assert st.st_ino == ino and st.st_nlink == 2
    assert os.stat(m.m('a/f')).st_nlink == 2
    assert st.st_ctime_ns > bf[1] and st.st_mtime_ns == bf[0]
    ab = times(m.m('b'))
    assert ab[0] > bb[0] and ab[1] > bb[1]
    # errors
    assert errno_of(os.link, m.m('a/f'), m.m('b/g')) == errno.EEXIST
    assert errno_of(os.link, m.m('a/f'), m.m('b')) == errno.EEXIST
    assert errno_of(os.link, m.m('a/none'), m.m('b/x')) == errno.ENOENT
    assert errno_of(os.link, m.m('a/f'), m.m('none/x')) == errno.ENOENT
    assert errno_of(os.link, m.m('a/f'), m.m('a/f/x')) == errno.ENOTDIR
    assert errno_of(os.link, m.m('a'), m.m('b/dir')) == errno.EPERM
    assert errno_of(os.link, m.m('a/f'), m.m('b/' + 'n' * 256)) == \
        errno.ENAMETOOLONG
    # one inode: writes through one name are seen through the other
    with open(m.m('b/g'), 'r+b') as f:
        f.seek(0, 2)
        f.write(b' two')
    assert m.m('a/f').read_bytes() == b'one two'
    with open(m.m('a/f'), 'ab') as f:
        f.write(b' three')
        f.flush()
        assert m.m('b/g').read_bytes() == b'one two three'
    os.chmod(m.m('a/f'), 0o600)
    assert stat.S_IMODE(os.stat(m.m('b/g')).st_mode) == 0o600
    # a third name, then unlink names one by one
    os.link(m.m('b/g'), m.m('a/h'))
    assert os.stat(m.m('a/f')).st_nlink == 3
    bf, ba = times(m.m('a/h')), times(m.m('a'))
    tick()
    assert errno_of(os.unlink, m.m('a/f')) is None  # its first name
    st = os.stat(m.m('a/h'))
    assert st.st_nlink == 2 and st.st_ino == ino
    assert st.st_ctime_ns > bf[1]
    assert times(m.m('a'))[0] > ba[0]
    assert m.m('b/g').read_bytes() == b'one two three'
    assert not os.path.exists(m.m('a/f'))
    assert sorted(os.listdir(m.m('a'))) == ['h']
    # rename of a name, and over a name
    os.rename(m.m('b/g'), m.m('b/g2'))
    assert os.stat(m.m('b/g2')).st_nlink == 2
    m.m('b/other').write_bytes(b'other')
    os.rename(m.m('b/other'), m.m('a/h'))
    assert m.m('a/h').read_bytes() == b'other'
    assert os.stat(m.m('b/g2')).st_nlink == 1
    assert m.m('b/g2').read_bytes() == b'one two three'
    # rename onto another name of the same file does nothing
    os.link(m.m('b/g2'), m.m('b/g3'))
    os.rename(m.m('b/g2'), m.m('b/g3'))
    assert os.path.exists(m.m('b/g2')) and os.path.exists(m.m('b/g3'))
    assert os.stat(m.m('b/g3')).st_nlink == 2
    # an open file keeps its bytes when its last name goes
    fd = os.open(m.m('b/g3'), os.O_RDONLY)
    try:
        os.unlink(m.m('b/g2'))
        os.unlink(m.m('b/g3'))
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, 100, 0) == b'one two three'
    finally:
        os.close(fd)


def test_link_of_every_kind(backend):
    """As pjdfstest link/00.t: every kind of node takes a second name,
    st_nlink counts both, the node's ctime and the directory's times
    move; lchown and utimes without following work on links."""
    m = backend()
    os.mkdir(m.m('d'))
    m.m('d/reg').write_bytes(b'r')
    os.symlink('reg', m.m('d/sym'))
    os.mkfifo(m.m('d/fifo'))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(m.m('d/sock')))
    s.close()
    for kind in ('reg', 'sym', 'fifo', 'sock'):
        src, dst = m.m('d/' + kind), m.m('d/' + kind + '.2')
        b, bd = times(src), times(m.m('d'))
        tick()
        assert errno_of(os.link, src, dst, follow_symlinks=False) is None
        a = os.lstat(dst)
        assert a.st_ino == os.lstat(src).st_ino, kind
        assert a.st_nlink == os.lstat(src).st_nlink == 2, kind
        assert a.st_ctime_ns > b[1] and a.st_mtime_ns == b[0], kind
        ad = times(m.m('d'))
        assert ad[0] > bd[0] and ad[1] > bd[1], kind
        tick()
        os.unlink(src)
        a2 = os.lstat(dst)
        assert a2.st_nlink == 1 and a2.st_ctime_ns > a.st_ctime_ns, kind
    assert os.readlink(m.m('d/sym.2')) == 'reg'
    assert stat.S_ISFIFO(os.lstat(m.m('d/fifo.2')).st_mode)
    os.utime(m.m('d/sym.2'), ns=(10**18, 2 * 10**18), follow_symlinks=False)
    st = os.lstat(m.m('d/sym.2'))
    assert st.st_mtime_ns == 2 * 10**18
    if os.geteuid() == 0:
        os.chown(m.m('d/sym.2'), 123, 456, follow_symlinks=False)
        st = os.lstat(m.m('d/sym.2'))
        assert (st.st_uid, st.st_gid) == (123, 456)
        assert os.stat(m.m('d/reg.2')).st_uid == os.getuid()
    m.flush()
    rem = backend.remote(m)
    assert rem == {'/d/reg.2': b'r', '/d/sym.2' + SUFFIX: b'reg'}, rem
    m.remount()
    assert os.lstat(m.m('d/sym.2')).st_mtime_ns == 2 * 10**18


def test_hard_links_remote_form(backend):
    """Each name is a file of its own on the remote; the local inode keeps
    its names across a remount; a fresh cache gets separate files."""
    m = backend()
    os.mkdir(m.m('d'))
    m.m('d/data.bin').write_bytes(b'payload')
    os.link(m.m('d/data.bin'), m.m('d/alias.bin'))
    os.link(m.m('d/data.bin'), m.m('copy.bin'))
    m.flush()
    rem = backend.remote(m)
    assert rem['/d/data.bin'] == rem['/d/alias.bin'] == \
        rem['/copy.bin'] == b'payload', rem
    # written again: every name gets the new bytes
    with open(m.m('d/alias.bin'), 'wb') as f:
        f.write(b'second')
    m.flush()
    rem = backend.remote(m)
    assert rem['/d/data.bin'] == rem['/d/alias.bin'] == \
        rem['/copy.bin'] == b'second', rem
    m.remount()
    os.listdir(m.m('d'))
    st = os.stat(m.m('d/alias.bin'))
    assert st.st_nlink == 3
    assert st.st_ino == os.stat(m.m('copy.bin')).st_ino
    assert m.m('copy.bin').read_bytes() == b'second'
    # names removed and renamed: the remote follows
    os.unlink(m.m('d/data.bin'))
    os.rename(m.m('copy.bin'), m.m('d/moved.bin'))
    m.flush()
    rem = backend.remote(m)
    assert set(rem) == {'/d/alias.bin', '/d/moved.bin'}, rem
    assert rem['/d/moved.bin'] == b'second'
    # a link made while the file is open (clean) uploads once and is clean
    fd = os.open(m.m('d/alias.bin'), os.O_RDONLY)
    try:
        os.link(m.m('d/alias.bin'), m.m('third.bin'))
        m.flush()
        assert backend.remote(m)['/third.bin'] == b'second'
        assert os.getxattr(m.m('third.bin'),
                           'user.huracanfs.state') == b'cached'
    finally:
        os.close(fd)
    os.unlink(m.m('third.bin'))
    m.flush()
    m2 = fresh(backend, m, 'two')
    a, b = os.stat(m2.m('d/alias.bin')), os.stat(m2.m('d/moved.bin'))
    assert a.st_nlink == b.st_nlink == 1 and a.st_ino != b.st_ino
    assert m2.m('d/alias.bin').read_bytes() == b'second'


# -- FIFOs, sockets, device nodes ---------------------------------------

def test_fifo_calls(backend):
    m = backend()
    os.mkdir(m.m('d'))
    before = times(m.m('d'))
    tick()
    assert errno_of(os.mkfifo, m.m('d/fifo'), 0o640) is None
    after = times(m.m('d'))
    assert after[0] > before[0] and after[1] > before[1]
    st = os.lstat(m.m('d/fifo'))
    assert stat.S_ISFIFO(st.st_mode) and st.st_nlink == 1
    assert stat.S_IMODE(st.st_mode) == 0o640 & ~_umask()
    assert st.st_size == 0 and st.st_mtime_ns >= after[0]
    assert errno_of(os.mkfifo, m.m('d/fifo')) == errno.EEXIST
    assert errno_of(os.mkfifo, m.m('missing/fifo')) == errno.ENOENT
    assert errno_of(os.mknod, m.m('d/fifo2'), stat.S_IFIFO | 0o600) is None
    assert stat.S_ISFIFO(os.lstat(m.m('d/fifo2')).st_mode)
    assert errno_of(os.truncate, m.m('d/fifo2'), 0) in (errno.EINVAL, None)
    _fifo_round_trip(m.m('d/fifo'))
    # chmod and utime on it, as on a file
    os.chmod(m.m('d/fifo'), 0o600)
    assert stat.S_IMODE(os.lstat(m.m('d/fifo')).st_mode) == 0o600
    os.utime(m.m('d/fifo'), ns=(10**18, 10**18))
    assert os.lstat(m.m('d/fifo')).st_mtime_ns == 10**18
    ls = subprocess.run(['ls', '-l', str(m.m('d'))], stdout=subprocess.PIPE,
                        check=True, timeout=30).stdout.decode()
    assert any(line.startswith('p') and line.endswith(' fifo')
               for line in ls.splitlines()), ls
    # local only: never uploaded, kept across a remount
    m.m('d/file').write_bytes(b'f')
    m.flush()
    assert set(backend.remote(m)) == {'/d/file'}
    m.remount()
    assert stat.S_ISFIFO(os.lstat(m.m('d/fifo')).st_mode)
    assert stat.S_IMODE(os.lstat(m.m('d/fifo')).st_mode) == 0o600
    _fifo_round_trip(m.m('d/fifo'))
    # a directory holding one is not empty
    assert errno_of(os.rmdir, m.m('d')) == errno.ENOTEMPTY
    os.rename(m.m('d/fifo'), m.m('moved'))
    assert stat.S_ISFIFO(os.lstat(m.m('moved')).st_mode)
    before = times(m.m('d'))
    tick()
    os.unlink(m.m('d/fifo2'))
    assert times(m.m('d'))[0] > before[0]
    assert not os.path.lexists(m.m('d/fifo2'))
    m.flush()
    assert set(backend.remote(m)) == {'/d/file'}


def _umask():
    u = os.umask(0)
    os.umask(u)
    return u


def _fifo_round_trip(path):
    got = []

    def reader():
        with open(path, 'rb') as f:
            got.append(f.read())
    t = threading.Thread(target=reader)
    t.start()
    with open(path, 'wb') as f:
        f.write(b'through the pipe')
    t.join(30)
    assert got == [b'through the pipe']


def test_socket_node(backend):
    m = backend()
    os.mkdir(m.m('run'))
    path = str(m.m('run/s.sock'))
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        assert errno_of(srv.bind, path) is None
        srv.listen(1)
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode)
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(path)
        a, _ = srv.accept()
        c.sendall(b'ping')
        assert a.recv(4) == b'ping'
        a.close()
        c.close()
        s2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        assert errno_of(s2.bind, path) == errno.EADDRINUSE
        s2.close()
    finally:
        srv.close()
    assert os.listdir(m.m('run')) == ['s.sock']
    m.flush()
    assert backend.remote(m) == {}
    m.remount()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    os.unlink(path)
    assert os.listdir(m.m('run')) == []


@pytest.mark.skipif(os.geteuid() != 0, reason='device nodes need root')
def test_device_nodes(backend):
    m = backend()
    assert errno_of(os.mknod, m.m('null'), stat.S_IFCHR | 0o666,
                    os.makedev(1, 3)) is None
    assert errno_of(os.mknod, m.m('loop'), stat.S_IFBLK | 0o600,
                    os.makedev(7, 0)) is None
    st = os.lstat(m.m('null'))
    assert stat.S_ISCHR(st.st_mode)
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
    st = os.lstat(m.m('loop'))
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(7, 0)
    assert errno_of(os.mknod, m.m('null'), stat.S_IFCHR | 0o666,
                    os.makedev(1, 3)) == errno.EEXIST
    ls = subprocess.run(['ls', '-l', str(m.mnt)], stdout=subprocess.PIPE,
                        check=True, timeout=30).stdout.decode()
    assert any(line.startswith('c') and '1, 3' in line and
               line.endswith(' null') for line in ls.splitlines()), ls
    m.flush()
    assert backend.remote(m) == {}
    m.remount()
    st = os.lstat(m.m('null'))
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    # a child without CAP_MKNOD is refused, as everywhere
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(65534)
            os.setuid(65534)
            os._exit(errno_of(os.mknod, '/tmp/../' + str(m.m('x'))[1:],
                              stat.S_IFCHR | 0o600, os.makedev(1, 3)) or 0)
        except BaseException:
            os._exit(99)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) in (errno.EPERM, errno.EACCES)


# -- link counts --------------------------------------------------------

def test_directory_link_counts(backend):
    m = backend()
    root = os.stat(m.mnt).st_nlink
    os.mkdir(m.m('p'))
    assert os.stat(m.mnt).st_nlink == root + 1
    assert os.stat(m.m('p')).st_nlink == 2
    for n in ('a', 'b', 'c'):
        os.mkdir(m.m('p/' + n))
    m.m('p/file').write_bytes(b'f')
    os.symlink('a', m.m('p/link'))
    os.mkfifo(m.m('p/fifo'))
    assert os.stat(m.m('p')).st_nlink == 5
    os.rmdir(m.m('p/c'))
    assert os.stat(m.m('p')).st_nlink == 4
    os.mkdir(m.m('q'))
    os.rename(m.m('p/b'), m.m('q/b'))
    assert os.stat(m.m('p')).st_nlink == 3
    assert os.stat(m.m('q')).st_nlink == 3
    os.rename(m.m('q/b'), m.m('q/b2'))  # same parent
    assert os.stat(m.m('q')).st_nlink == 3
    os.mkdir(m.m('q/empty'))
    os.rename(m.m('p/a'), m.m('q/empty'))  # over an empty directory
    assert os.stat(m.m('p')).st_nlink == 2
    assert os.stat(m.m('q')).st_nlink == 4
    os.rename(m.m('p/file'), m.m('q/file'))
    assert os.stat(m.m('q')).st_nlink == 4
    m.flush()
    m.remount()
    assert os.stat(m.m('p')).st_nlink == 2
    assert os.stat(m.m('q')).st_nlink == 4
    assert os.stat(m.mnt).st_nlink == root + 2
    # merged from the remote: a fresh cache counts the same
    # (a folder is counted once it is listed: docs/posix.md)
    m2 = fresh(backend, m, 'two')
    assert os.stat(m2.mnt).st_nlink == root + 2
    os.listdir(m2.m('q'))
    assert os.stat(m2.m('q')).st_nlink == 4
    assert os.stat(m2.m('p')).st_nlink == 2
    # folders made on the remote by another machine
    backend.put(m2, 'q/new1/x', b'x')
    backend.put(m2, 'q/new2/y', b'y')
    m2.remount()
    assert sorted(os.listdir(m2.m('q'))) == \
        ['b2', 'empty', 'file', 'new1', 'new2']
    assert os.stat(m2.m('q')).st_nlink == 6
    # readdir's and stat's counts agree with find's
    r = subprocess.run(['find', str(m2.m('q')), '-maxdepth', '1',
                        '-type', 'd'], stdout=subprocess.PIPE, check=True,
                       timeout=30)
    assert len(r.stdout.split()) + 1 == os.stat(m2.m('q')).st_nlink


def test_file_link_counts(backend):
    m = backend()
    m.m('f').write_bytes(b'f')
    assert os.stat(m.m('f')).st_nlink == 1
    fd = os.open(m.m('f'), os.O_RDONLY)
    try:
        os.unlink(m.m('f'))
        assert os.fstat(fd).st_nlink == 0
    finally:
        os.close(fd)


# -- deep paths ---------------------------------------------------------

def _deep(base_fd, levels, name_len=200):
    """mkdir a chain of @levels directories below @base_fd, each through
    the one above (short paths per call); returns the fds, deepest last."""
    fds = [base_fd]
    for i in range(levels):
        n = ('%03d' % i) + 'd' * (name_len - 3)
        assert errno_of(os.mkdir, n, dir_fd=fds[-1]) is None
        fds.append(os.open(n, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
    return fds


@pytest.mark.log_errors_expected('refused by the remote')
def test_deep_paths(backend):
    """Paths more than 4,095 bytes below the mount root work through
    calls given short paths; such files are kept here, never uploaded,
    and say so in status."""
    m = backend()
    root = os.open(m.mnt, os.O_RDONLY | os.O_DIRECTORY)
    fds = _deep(root, 25)  # 25 * 201 bytes: about 5,000
    d = fds[-1]
    try:
        before = os.stat('.', dir_fd=d).st_mtime_ns
        tick()
        fd = os.open('f', os.O_CREAT | os.O_RDWR, 0o644, dir_fd=d)
        os.write(fd, b'deep bytes')
        os.fsync(fd)
        os.close(fd)
        assert os.stat('.', dir_fd=d).st_mtime_ns > before
        fd = os.open('f', os.O_RDONLY, dir_fd=d)
        assert os.read(fd, 100) == b'deep bytes'
        os.close(fd)
        assert os.stat('f', dir_fd=d).st_size == 10
        os.rename('f', 'g', src_dir_fd=d, dst_dir_fd=d)
        os.symlink('g', 'sl', dir_fd=d)
        assert os.readlink('sl', dir_fd=d) == 'g'
        os.link('g', 'h', src_dir_fd=d, dst_dir_fd=d)
        assert os.stat('g', dir_fd=d).st_nlink == 2
        os.mkfifo('p', dir_fd=d)
        os.mkdir('sub', dir_fd=d)
        assert os.stat('.', dir_fd=d).st_nlink == 3
        os.rmdir('sub', dir_fd=d)
        os.unlink('h', dir_fd=d)
        assert sorted(os.listdir(d)) == ['g', 'p', 'sl']
        os.utime('g', ns=(10**18, 10**18), dir_fd=d)
        os.chmod('g', 0o600, dir_fd=d)
        st = os.stat('g', dir_fd=d)
        assert st.st_mtime_ns == 10**18 and stat.S_IMODE(st.st_mode) == 0o600
    finally:
        for f in fds:
            os.close(f)
    # a shallow file beside them uploads as ever; the deep one cannot
    m.m('shallow').write_bytes(b's')
    m.flush(check=False)
    assert backend.remote(m).get('/shallow') == b's'
    assert not any(len(p) > 4095 for p in backend.remote(m))
    st = m.run('status', m.mnt, '--json', '--files', check=True).stdout
    assert 'longer than the remote takes' in st, st
    # kept across a remount
    m.remount()
    root = os.open(m.mnt, os.O_RDONLY | os.O_DIRECTORY)
    fds = [root]
    try:
        for i in range(25):
            n = ('%03d' % i) + 'd' * 197
            fds.append(os.open(n, os.O_RDONLY | os.O_DIRECTORY,
                               dir_fd=fds[-1]))
        fd = os.open('g', os.O_RDONLY, dir_fd=fds[-1])
        assert os.read(fd, 100) == b'deep bytes'
        os.close(fd)
        assert os.readlink('sl', dir_fd=fds[-1]) == 'g'
        assert stat.S_ISFIFO(os.lstat('p', dir_fd=fds[-1]).st_mode)
    finally:
        for f in fds:
            os.close(f)

"""The daemon's count of FUSE requests per operation (status --json,
"fuse_requests"), which bench/peers.py reads to say what each phase cost.

Each `huracanfs status` finds the control socket with one getxattr of the
mountpoint, so every status call itself adds exactly one getxattr; the
helper below takes it off. FORGET and BATCH_FORGET are left out of the
exact checks: the kernel sends them whenever it drops inodes (memory
pressure, another process writing /proc/sys/vm/drop_caches).
"""

import errno
import os

from hfsutil import LONG_INTERVALS, errno_of

OPS = ('lookup', 'forget', 'batch_forget', 'getattr', 'setattr', 'mknod',
       'mkdir', 'unlink', 'rmdir', 'readlink', 'symlink', 'link', 'rename',
       'open', 'create', 'read', 'write', 'fallocate', 'flush', 'release',
       'fsync', 'opendir', 'readdir', 'readdirplus', 'releasedir',
       'fsyncdir', 'statfs', 'setxattr', 'getxattr', 'listxattr',
       'removexattr')
BACKGROUND = ('forget', 'batch_forget')


def counts(m):
    return m.status()['fuse_requests']


def delta(m, before):
    """The requests since @before, without the getxattr of this status."""
    now = counts(m)
    d = {k: now[k] - before[k] for k in now}
    d['getxattr'] -= 1
    return d, now


def delta_when(m, before, op, n):
    """delta() once @op moved by @n: RELEASE and RELEASEDIR are sent after
    close() returns."""
    got = []

    def ready():
        got[:] = delta(m, before)
        return got[0][op] >= n

    m.wait_until(ready, 10, '%d %s request(s)' % (n, op))
    return got[0], got[1]


def moved(d):
    return {k: v for k, v in d.items() if v and k not in BACKGROUND}


def test_every_operation_is_counted_from_zero(hfs):
    m = hfs(intervals=LONG_INTERVALS)
    c = counts(m)
    assert set(c) == set(OPS), set(c) ^ set(OPS)
    assert all(isinstance(v, int) and v >= 0 for v in c.values()), c
    # The mount's own checks (stat and listdir of the root) went through.
    assert c['opendir'] >= 1 and c['releasedir'] >= 1, c
    assert c['readdir'] + c['readdirplus'] >= 1, c


def test_status_costs_one_getxattr_and_nothing_else(hfs):
    m = hfs(intervals=LONG_INTERVALS)
    c0 = counts(m)
    d, _ = delta(m, c0)
    assert moved(d) == {}, d


def test_counters_follow_the_operations(hfs):
    m = hfs(intervals=LONG_INTERVALS)
    c = counts(m)

    # A stat of a name that does not exist: one LOOKUP each, and nothing
    # is created.
    for i in range(3):
        assert errno_of(os.stat, m.m('absent-%d' % i)) == errno.ENOENT
    d, c = delta(m, c)
    assert d['lookup'] == 3, d
    assert d['mkdir'] == d['create'] == d['mknod'] == 0, d

    os.mkdir(m.m('d'))
    d, c = delta(m, c)
    assert d['mkdir'] == 1, d
    assert d['create'] == d['unlink'] == 0, d

    # create, write, fsync, close.
    fd = os.open(m.m('d/f'), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, b'x' * 5000)
        os.fsync(fd)
    finally:
        os.close(fd)
    d, c = delta_when(m, c, 'release', 1)
    assert d['release'] == 1, d
    assert d['create'] == 1 and d['fsync'] == 1, d
    assert d['write'] >= 1 and d['mkdir'] == 0, d

    os.chmod(m.m('d/f'), 0o600)
    os.truncate(m.m('d/f'), 3)
    d, c = delta(m, c)
    assert d['setattr'] == 2, d

    os.rename(m.m('d/f'), m.m('d/g'))
    d, c = delta(m, c)
    assert d['rename'] == 1 and d['unlink'] == 0, d

    assert sorted(os.listdir(m.m('d'))) == ['g']
    d, c = delta_when(m, c, 'releasedir', 1)
    assert d['releasedir'] == 1, d
    assert d['opendir'] == 1, d
    assert d['readdir'] + d['readdirplus'] >= 1, d

    os.statvfs(m.mnt)
    d, c = delta(m, c)
    assert d['statfs'] == 1, d

    os.listxattr(m.m('d/g'))
    d, c = delta(m, c)
    assert d['listxattr'] == 1, d
    assert d['getxattr'] == 0, moved(d)

    assert errno_of(os.getxattr, m.m('d/g'), 'user.none') in (
        errno.ENODATA, errno.ENOTSUP)
    d, c = delta(m, c)
    assert d['getxattr'] == 1, moved(d)

    os.unlink(m.m('d/g'))
    d, c = delta(m, c)
    assert d['unlink'] == 1 and d['rmdir'] == 0, d

    os.rmdir(m.m('d'))
    d, c = delta(m, c)
    assert d['rmdir'] == 1 and d['unlink'] == 0, d


def test_reads_are_counted(hfs):
    m = hfs(intervals=LONG_INTERVALS)
    data = os.urandom(300 * 1024)
    with open(m.m('big.bin'), 'wb') as f:
        f.write(data)
    # A new mount: nothing of the file is in the page cache.
    m.remount()
    c = counts(m)
    with open(m.m('big.bin'), 'rb') as f:
        assert f.read() == data
    d, _ = delta_when(m, c, 'release', 1)
    assert d['release'] == 1, d
    assert d['open'] == 1 and d['read'] >= 1, d
    assert d['write'] == 0 and d['create'] == 0, d


def test_unsupported_xattr_namespaces_cost_ls_one_round_trip(hfs):
    """security.*, system.* and trusted.* names are not stored: getxattr
    says EOPNOTSUPP (not ENODATA), which tells `ls -l` (libselinux,
    gnulib's file_has_acl) the mount has none, so it stops asking after
    the first file instead of two getxattr requests per file. The user
    namespace is supported: a name of ours answers, another is ENODATA."""
    m = hfs(intervals=LONG_INTERVALS)
    os.mkdir(m.m('many'))
    for i in range(40):
        with open(m.m('many/f%02d' % i), 'wb') as f:
            f.write(b'x')
    p = m.m('many/f00')
    for name in ('security.selinux', 'security.capability',
                 'system.posix_acl_access', 'trusted.x'):
        assert errno_of(os.getxattr, p, name) == errno.EOPNOTSUPP, name
    assert errno_of(os.getxattr, p, 'user.none') == errno.ENODATA
    assert os.getxattr(p, 'user.huracanfs.state') == b'dirty'

    import subprocess
    c = counts(m)
    out = subprocess.run(['ls', '-l', m.m('many')], check=True,
                         capture_output=True, text=True).stdout
    assert out.count('\n') == 41, out
    d, _ = delta(m, c)
    # One security.selinux and one ACL question for the first file (and
    # perhaps the directory itself), none for the other 39.
    assert d['getxattr'] <= 4, moved(d)

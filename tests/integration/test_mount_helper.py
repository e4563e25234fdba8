"""The mount helper, driven by mount(8): `mount -t fuse.huracanfs`.

mount(8) runs /sbin/mount.fuse.huracanfs for the type fuse.huracanfs, and
umount(8) /sbin/umount.fuse.huracanfs. The tests put symbolic links to
mount-helpers/mount.huracanfs and umount.huracanfs of this checkout there
for the module's duration (and remove them after), and point the helper
at the built binary with HURACANFS_BIN. They need root (mount(8) and
/sbin); otherwise they skip.

What is checked: a mount through mount(8) with the options of an fstab line
works and its writes reach the remote; options huracanfs does not know go to
FUSE (allow_other, ro, and a bogus one that FUSE refuses); an alternative
fstab file drives it like /etc/fstab would; `umount` (not fusermount3)
runs /sbin/umount.fuse.huracanfs (linked the same way), which returns only
once the daemon has uploaded what was pending and exited.
"""

import os
import shutil
import subprocess

import pytest

from hfsutil import (LONG_INTERVALS, CMD_TIMEOUT, file_equals, is_mounted,
                     pid_alive, wait_until)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
HELPER = os.path.join(REPO, 'mount-helpers', 'mount.huracanfs')
LINK = '/sbin/mount.fuse.huracanfs'
UHELPER = os.path.join(REPO, 'mount-helpers', 'umount.huracanfs')
ULINK = '/sbin/umount.fuse.huracanfs'


def _same_helper(path, helper=HELPER):
    """True if `path` is our helper: a link to it, or a copy of it."""
    try:
        if os.path.realpath(path) == os.path.realpath(helper):
            return True
        with open(path, 'rb') as a, open(helper, 'rb') as b:
            return a.read() == b.read()
    except OSError:
        return False


def _link(helper, link):
    """Links /sbin/`link` to `helper`; True if we created it (skips the
    test if another program has that name)."""
    try:
        os.symlink(helper, link)
        return True
    except FileExistsError:
        if not _same_helper(link, helper):
            pytest.skip('%s exists and is not this checkout\'s helper; not'
                        ' replacing it' % link)
    except OSError as e:
        pytest.skip('cannot create %s: %s' % (link, e))
    return False


def _unlink(helper, link):
    try:
        if os.path.islink(link) and os.readlink(link) == helper:
            os.unlink(link)
    except OSError:
        pass


@pytest.fixture(scope='module')
def helper_link():
    if os.geteuid() != 0:
        pytest.skip('mount(8) with a helper in /sbin needs root')
    if not shutil.which('mount') or not shutil.which('umount'):
        pytest.skip('mount(8) or umount(8) is missing')
    if not os.path.isdir('/sbin'):
        pytest.skip('/sbin is missing')
    created = []
    try:
        for helper, link in ((HELPER, LINK), (UHELPER, ULINK)):
            if _link(helper, link):
                created.append((helper, link))
        yield LINK
    finally:
        for helper, link in created:
            _unlink(helper, link)


def mount_cmd(m, args, timeout=CMD_TIMEOUT):
    """Runs mount(8) (or umount) with the helper's environment."""
    env = m.env()
    env['HURACANFS_BIN'] = m.bin
    r = subprocess.run(args, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env, timeout=timeout, cwd=str(m.base))
    r.stdout = r.stdout.decode('utf-8', 'replace')
    r.stderr = r.stderr.decode('utf-8', 'replace')
    return r


def mount_t(m, options, extra=()):
    """mount -t fuse.huracanfs none MNT -o OPTIONS; adopts the daemon."""
    r = mount_cmd(m, ['mount', '-t', 'fuse.huracanfs', 'none', str(m.mnt),
                      '-o', options] + list(extra))
    if r.returncode == 0:
        adopt(m)
    return r


def adopt(m):
    """Makes the HfsMount own the daemon that mount(8) started."""
    assert is_mounted(m.mnt), '%s is not mounted' % m.mnt
    os.listdir(m.mnt)      # usable at once, as with huracanfs mount
    m.pid = m._find_pid()
    m.all_pids.append(m.pid)


def mount_options(path):
    """(fstype, source, super options) of the mount at `path`."""
    want = os.path.abspath(str(path))
    with open('/proc/self/mountinfo') as f:
        for line in f:
            parts = line.split()
            if parts[4] == want:
                sep = parts.index('-')
                return (parts[sep + 1], parts[sep + 2],
                        set(parts[sep + 3].split(',')))
    return None


def test_mount_t_fstab_options_write_reaches_remote(hfs, helper_link):
    m = hfs(start=False)
    r = mount_t(m, 'config=%s,_netdev,noauto' % m.config)
    assert r.returncode == 0, 'mount failed: %s' % r.stderr
    fstype, source, opts = mount_options(m.mnt)
    assert fstype == 'fuse.huracanfs'
    assert source == 'huracanfs'
    # mount(8)'s own options were not handed to FUSE.
    assert '_netdev' not in opts and 'noauto' not in opts
    # The write lands in the cache at once and reaches the remote on the
    # logs interval (1 s in the test config).
    data = b'through mount(8)\n' * 100
    (m.mnt / 'logs').mkdir()
    (m.mnt / 'logs' / 'helper.log').write_bytes(data)
    m.wait_remote('logs/helper.log', data, 20)
    st = m.status()
    assert st['mountpoint'] == str(m.mnt)
    assert st['backend'] == 'local'


@pytest.mark.log_errors_expected('cannot create the FUSE session')
def test_unknown_options_go_to_fuse(hfs, helper_link):
    m = hfs(start=False)
    # allow_other is FUSE's: it shows in the mount's options, and huracanfs
    # adds default_permissions; x-systemd.* and nofail are not FUSE's.
    r = mount_t(m, 'config=%s,_netdev,noauto,x-systemd.automount,nofail,'
                'allow_other' % m.config)
    assert r.returncode == 0, 'mount failed: %s' % r.stderr
    fstype, source, opts = mount_options(m.mnt)
    assert 'allow_other' in opts, opts
    assert 'default_permissions' in opts, opts
    assert not any(o.startswith('x-systemd') for o in opts), opts
    m.unmount()

    # ro reaches the kernel: writes fail with EROFS.
    r = mount_t(m, 'config=%s,ro' % m.config)
    assert r.returncode == 0, 'mount ro failed: %s' % r.stderr
    assert 'ro' in mount_options(m.mnt)[2]
    with pytest.raises(OSError) as e:
        (m.mnt / 'x.txt').write_bytes(b'x')
    assert e.value.errno == 30  # EROFS
    m.unmount()

    # An option nobody knows is FUSE's to refuse: the mount fails with a
    # message naming it, and nothing stays mounted.
    r = mount_t(m, 'config=%s,no_such_fuse_option' % m.config)
    assert r.returncode != 0
    assert 'no_such_fuse_option' in r.stderr, r.stderr
    assert not is_mounted(m.mnt)


def test_alternative_fstab_line(hfs, helper_link, tmp_path):
    m = hfs(start=False)
    fstab = tmp_path / 'fstab'
    fstab.write_text('none %s fuse.huracanfs config=%s,_netdev,noauto,'
                     'x-systemd.automount 0 0\n' % (m.mnt, m.config))
    r = mount_cmd(m, ['mount', '--fstab', str(fstab), str(m.mnt)])
    assert r.returncode == 0, 'mount --fstab failed: %s' % r.stderr
    adopt(m)
    assert mount_options(m.mnt)[0] == 'fuse.huracanfs'
    (m.mnt / 'a.txt').write_bytes(b'from fstab\n')
    m.flush()
    assert file_equals(m.remote / 'a.txt', b'from fstab\n')


def test_umount_flushes(hfs, helper_link):
    # Long intervals: nothing is uploaded by a timer during the test, so
    # only the unmount can upload these files.
    m = hfs(start=False, intervals=LONG_INTERVALS)
    r = mount_t(m, 'config=%s,_netdev,noauto' % m.config)
    assert r.returncode == 0, 'mount failed: %s' % r.stderr
    files = {
        'models/m.pkl': os.urandom(200_000),
        'logs/l.log': b'line\n' * 1000,
    }
    for rel, data in files.items():
        p = m.mnt / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    assert not (m.remote / 'models/m.pkl').exists()
    pid = m.pid
    r = mount_cmd(m, ['umount', str(m.mnt)], timeout=120)
    assert r.returncode == 0, 'umount failed: %s' % r.stderr
    # umount(8) ran umount.fuse.huracanfs: when it returns, the daemon
    # has uploaded everything and exited.
    assert not is_mounted(m.mnt)
    assert not pid_alive(pid), 'umount returned before the daemon exited'
    m.pid = None
    for rel, data in files.items():
        assert file_equals(m.remote / rel, data), rel
    assert 'shutdown_flush result=ok' in m.log_text()

"""Readiness for service managers: the sd_notify datagram protocol.

The test binds the NOTIFY_SOCKET itself (a path, or an abstract name for
'@...') and reads what the daemon sends: READY=1 once the mount serves
requests, STATUS= lines with the upload queue, STOPPING=1 (and a longer
stop timeout) when the final flush begins.
"""

import os
import subprocess
import tempfile

from hfsutil import (LONG_INTERVALS, NotifySocket, is_mounted, pid_alive,
                     wait_until)


def _foreground(m, notify):
    env = m.env()
    env['NOTIFY_SOCKET'] = notify.name
    out = open(m.base / 'fg.out', 'ab')
    p = subprocess.Popen([m.bin, 'mount', str(m.mnt), '--config',
                          str(m.config), '--foreground'],
                         stdin=subprocess.DEVNULL, stdout=out,
                         stderr=subprocess.STDOUT, env=env)
    out.close()
    m.all_pids.append(p.pid)
    return p


def test_foreground_notifies_ready_status_and_stopping(hfs):
    m = hfs(start=False, intervals=LONG_INTERVALS)
    # A path socket (sun_path holds 108 bytes: a short directory).
    d = tempfile.mkdtemp(prefix='hfsn', dir='/tmp')
    notify = NotifySocket(os.path.join(d, 'n.sock'))
    p = _foreground(m, notify)
    try:
        ready = wait_until(lambda: notify.find('READY', '1')
                           or p.poll() is not None, 30, 'READY=1')
        assert p.poll() is None, 'the daemon exited'
        assert ready is not True and 'READY' in ready
        # Ready means usable.
        assert is_mounted(m.mnt)
        os.listdir(m.mnt)
        m.pid = p.pid
        assert m.status()['pid'] == p.pid
        assert 'Mounted on %s' % m.mnt in ready.get('STATUS', '')
        assert 'MAINPID' not in ready   # the main process itself

        # The queue shows in STATUS=.
        m.m('models').mkdir()
        m.m('models/q.pkl').write_bytes(b'q' * 1000)
        wait_until(lambda: any('1 file waiting' in x.get('STATUS', '')
                               for x in notify.all()), 30,
                   'a STATUS= line with the queued file')
        n_before = len(notify.all())

        r = m.fusermount_u()
        assert r.returncode == 0, r.stderr
        assert p.wait(timeout=60) == 0
        m.pid = None
        stop = [x for x in notify.all()[n_before:] if 'STOPPING' in x]
        assert stop, notify.all()
        assert stop[0]['STOPPING'] == '1'
        assert int(stop[0]['EXTEND_TIMEOUT_USEC']) >= 120 * 1000000
        assert 'uploading the 1 file' in stop[0]['STATUS']
        assert m.r('models/q.pkl').read_bytes() == b'q' * 1000
    finally:
        if p.poll() is None:
            m.fusermount_u(lazy=True)
            p.wait(timeout=30)
        notify.close()
        os.unlink(os.path.join(d, 'n.sock'))
        os.rmdir(d)


def test_daemonized_mount_names_its_pid(hfs):
    """Without --foreground the daemon is a child of the command systemd
    started: it says which process it is (MAINPID=), on an abstract
    socket."""
    m = hfs(start=False)
    notify = NotifySocket()
    assert notify.name.startswith('@')
    env = m.env()
    env['NOTIFY_SOCKET'] = notify.name
    try:
        r = subprocess.run([m.bin, 'mount', str(m.mnt), '--config',
                            str(m.config)], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=env, timeout=30)
        assert r.returncode == 0, r.stderr
        m.pid = m.status()['pid']
        m.all_pids.append(m.pid)
        ready = wait_until(lambda: notify.find('READY', '1'), 10, 'READY=1')
        assert int(ready['MAINPID']) == m.pid
        assert pid_alive(m.pid)
    finally:
        notify.close()


def test_no_notify_socket_no_harm(mount):
    # Without NOTIFY_SOCKET nothing is sent and nothing breaks.
    assert 'NOTIFY_SOCKET' not in os.environ
    mount.m('x.txt').write_bytes(b'x')
    mount.flush()
    assert mount.r('x.txt').read_bytes() == b'x'

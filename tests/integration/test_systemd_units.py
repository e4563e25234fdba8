"""The systemd units' commands, run the way systemd runs them.

There is no systemd to start the units under test, so this module plays its
part for one unit: it reads systemd/huracanfs@.service.in and
systemd/huracanfs.service.in (with @BINDIR@ the built binary's directory),
splits each Exec line into words, expands the specifiers (%i, %f, %h) and
$$, and runs the commands in systemd's order: ExecStartPre, ExecStart (the
main process, with $NOTIFY_SOCKET: Type=notify) until it sends READY=1, when
the unit would be active, ExecStop, SIGTERM to the main process if it is
still there, ExecStopPost. For the system unit, /etc/huracanfs is replaced
by a temporary directory.

What is checked: the unit is "active" (READY=1) only once the mount
answers; ExecStart picks /etc/huracanfs/INSTANCE.yaml over config.yaml;
ExecStop (huracanfs unmount) returns once everything pending is uploaded and
the daemon has exited 0, after STOPPING=1; a daemon that fails to start
exits without READY=1; after a crash ExecStop or ExecStopPost removes the
dead mount so a restart mounts again, and ExecStopPost leaves a working
mount alone.
"""

import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from hfsutil import (LONG_INTERVALS, NotifySocket, build_config,
                     file_equals, is_mounted, pid_alive, write_private)

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / 'systemd'


def unit_exec(name, bindir):
    """{ExecX: [command line, ...]} of the [Service] section of a unit."""
    text = (UNITS / (name + '.in')).read_text().replace('@BINDIR@',
                                                        str(bindir))
    cmds = {}
    section = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith('['):
            section = line
        elif section == '[Service]' and line.startswith('Exec'):
            key, value = line.split('=', 1)
            cmds.setdefault(key, []).append(value)
    return cmds, text


def words_of(cmdline, spec):
    """(ignore failure?, argv) of an Exec line, as systemd builds them."""
    ignore = cmdline.startswith('-')
    cmdline = cmdline.lstrip('-')
    # systemd substitutes $VAR and ${VAR}; the units must write every
    # literal $ as $$.
    assert not re.search(r'\$(?!\$)', cmdline.replace('$$', '')), (
        'a single $ in %r would be expanded by systemd' % cmdline)
    argv = []
    for w in shlex.split(cmdline):
        w = re.sub(r'%([a-zA-Z%])', lambda m: spec[m.group(1)], w)
        argv.append(w.replace('$$', '$'))
    return ignore, argv


class Unit:
    """Runs one unit's commands for one instance, as systemd would."""

    def __init__(self, m, name, spec, replace=None):
        self.m = m
        self.cmds, self.text = unit_exec(name, os.path.dirname(m.bin))
        self.spec = spec
        self.replace = replace or {}
        self.main = None
        self.notify = None
        self.journal = m.base / ('%s.journal' % name)

    def argv(self, key, i=0):
        ignore, argv = words_of(self.cmds[key][i], self.spec)
        for a, b in self.replace.items():
            argv = [w.replace(a, b) for w in argv]
        return ignore, argv

    def env(self):
        env = self.m.env()
        env['HOME'] = self.spec['h']
        if self.main:
            env['MAINPID'] = str(self.main.pid)
        return env

    def ready(self, timeout=200):
        """Type=notify: 0 once the main process sent READY=1, 1 if it
        exited first (or never sent it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.notify.find('READY', '1'):
                return 0
            if self.main.poll() is not None:
                return 0 if self.notify.find('READY', '1') else 1
            time.sleep(0.05)
        return 1

    def run(self, key, timeout=120):
        """Runs every ExecX line in order; returns the last exit code."""
        rc = 0
        for i in range(len(self.cmds.get(key, []))):
            ignore, argv = self.argv(key, i)
            with open(self.journal, 'ab') as j:
                rc = subprocess.run(argv, stdin=subprocess.DEVNULL,
                                    stdout=j, stderr=j, env=self.env(),
                                    timeout=timeout).returncode
            if rc != 0 and not ignore:
                return rc
        return rc

    def start(self):
        """ExecStartPre, ExecStart; 0 once the main process is ready."""
        assert self.run('ExecStartPre') == 0
        ignore, argv = self.argv('ExecStart')
        if self.notify:
            self.notify.close()
        self.notify = NotifySocket()
        env = self.env()
        env['NOTIFY_SOCKET'] = self.notify.name
        with open(self.journal, 'ab') as j:
            self.main = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=j, stderr=j, env=env)
        self.m.all_pids.append(self.main.pid)
        # systemd reaps its main process as soon as it exits; so do we, or
        # a zombie would still answer `kill -0 $MAINPID`.
        threading.Thread(target=self.main.wait, daemon=True).start()
        assert 'ExecStartPost' not in self.cmds
        return self.ready()

    def stop(self, timeout=60):
        """ExecStop, SIGTERM, wait, ExecStopPost; returns the main's rc."""
        self.run('ExecStop')
        if self.main.poll() is None:
            self.main.send_signal(signal.SIGTERM)
        rc = self.main.wait(timeout=timeout)
        self.run('ExecStopPost')
        return rc

    def journal_text(self):
        try:
            return self.journal.read_text(errors='replace')
        except FileNotFoundError:
            return ''


def escape_path(path):
    r = subprocess.run(['systemd-escape', '--path', str(path)],
                       stdout=subprocess.PIPE, check=True)
    return r.stdout.decode().strip()


@pytest.fixture
def escape():
    if not shutil.which('systemd-escape'):
        pytest.skip('systemd-escape is missing')
    return escape_path


def test_unit_files_are_what_systemd_needs():
    for name in ('huracanfs@.service', 'huracanfs.service'):
        cmds, text = unit_exec(name, '/usr/bin')
        assert 'Type=notify' in text
        assert 'Restart=on-failure' in text
        assert re.search(r'^TimeoutStopSec=(\d+)$', text, re.M)
        assert len(cmds['ExecStart']) == 1
        assert '--foreground' in cmds['ExecStart'][0]
        assert 'ExecStartPost' not in cmds
        assert re.match(r'\S*/huracanfs unmount ', cmds['ExecStop'][0])
        for lines in cmds.values():
            for line in lines:
                words_of(line, {'i': 'x', 'f': '/x', 'h': '/root', '%': '%'})
        # Namespacing would hide the mount from everyone else.
        for opt in ('PrivateTmp=', 'ProtectSystem=', 'ProtectHome=',
                    'PrivateMounts='):
            assert not re.search('^' + opt, text, re.M), opt
    text = unit_exec('huracanfs@.service', '/usr/bin')[1]
    assert 'After=network-online.target' in text
    # TimeoutStopSec covers ExecStop's flush and the final flush at the
    # default flush_timeout_seconds (120 s, the bound of both together).
    assert int(re.search(r'^TimeoutStopSec=(\d+)$', text, re.M).group(1)) \
        >= 240


# The system unit runs as root (its ExecStopPost uses umount -l).
needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason='the system unit runs as root')


@needs_root
def test_system_unit_start_ready_stop_flush(hfs, escape, tmp_path):
    m = hfs(start=False, intervals=LONG_INTERVALS)
    etc = tmp_path / 'etc-huracanfs'
    etc.mkdir()
    instance = escape(m.mnt)
    # The instance's own file wins over config.yaml, whose remote would be
    # another directory.
    other_remote = tmp_path / 'other-remote'
    other_remote.mkdir()
    write_private(etc / 'config.yaml', build_config(
        other_remote, tmp_path / 'other-cache', tmp_path / 'other.log',
        LONG_INTERVALS))
    write_private(etc / (instance + '.yaml'), m.config.read_text())
    spec = {'i': instance, 'f': str(m.mnt), 'h': str(tmp_path), '%': '%'}
    u = Unit(m, 'huracanfs@.service', spec, {'/etc/huracanfs': str(etc)})

    rc = u.start()
    assert rc == 0, 'no READY=1: %s' % u.journal_text()
    # Active means usable: mounted, answering, and the main process is the
    # daemon itself (ExecStart execs it).
    assert is_mounted(m.mnt)
    os.listdir(m.mnt)
    st = m.status()
    assert st['pid'] == u.main.pid
    m.pid = u.main.pid
    assert st['cache_dir'] == str(m.cache)

    (m.mnt / 'models').mkdir()
    (m.mnt / 'models' / 'a.pkl').write_bytes(b'before stop\n')
    # ExecStop (huracanfs unmount) returns once what was pending is
    # uploaded and the daemon has exited: no SIGTERM needed.
    assert u.run('ExecStop') == 0, u.journal_text()
    assert file_equals(m.remote / 'models/a.pkl', b'before stop\n')
    assert not (other_remote / 'models').exists()
    assert not pid_alive(u.main.pid)
    assert u.main.wait(timeout=10) == 0
    m.pid = None
    assert u.notify.find('STOPPING', '1'), u.notify.all()
    assert u.run('ExecStopPost') == 0
    assert not is_mounted(m.mnt)

    # Without the instance's file, config.yaml applies.
    (etc / (instance + '.yaml')).unlink()
    u = Unit(m, 'huracanfs@.service', spec, {'/etc/huracanfs': str(etc)})
    assert u.start() == 0, u.journal_text()
    assert m.status()['cache_dir'] == str(tmp_path / 'other-cache')
    (m.mnt / 'c.txt').write_bytes(b'config.yaml\n')
    assert u.stop() == 0
    assert file_equals(other_remote / 'c.txt', b'config.yaml\n')


@needs_root
def test_system_unit_crash_then_restart(hfs, escape, tmp_path):
    m = hfs(start=False, intervals=LONG_INTERVALS)
    etc = tmp_path / 'etc-huracanfs'
    etc.mkdir()
    write_private(etc / 'config.yaml', m.config.read_text())
    instance = escape(m.mnt)
    spec = {'i': instance, 'f': str(m.mnt), 'h': str(tmp_path), '%': '%'}
    u = Unit(m, 'huracanfs@.service', spec, {'/etc/huracanfs': str(etc)})
    assert u.start() == 0, u.journal_text()
    (m.mnt / 'kept.txt').write_bytes(b'written before the crash\n')

    # ExecStopPost leaves a working mount alone.
    assert u.run('ExecStopPost') == 0
    assert is_mounted(m.mnt) and os.listdir(m.mnt) == ['kept.txt']

    u.main.kill()
    u.main.wait(timeout=30)
    assert is_mounted(m.mnt)           # a dead mount is left behind
    # ExecStop cannot flush a dead mount: it removes it and fails, and
    # ExecStopPost would have removed it too.
    assert u.run('ExecStop') != 0
    assert u.run('ExecStopPost') == 0
    assert not is_mounted(m.mnt)

    # Restart=on-failure: the same commands mount again, and what was
    # written before the crash reaches the remote.
    u2 = Unit(m, 'huracanfs@.service', spec, {'/etc/huracanfs': str(etc)})
    assert u2.start() == 0, u2.journal_text()
    assert (m.mnt / 'kept.txt').read_bytes() == b'written before the crash\n'
    assert u2.stop() == 0
    assert file_equals(m.remote / 'kept.txt', b'written before the crash\n')


@needs_root
@pytest.mark.log_errors_expected()
def test_start_fails_fast_when_the_daemon_fails(hfs, escape, tmp_path):
    m = hfs(start=False)
    etc = tmp_path / 'etc-huracanfs'
    etc.mkdir()
    write_private(etc / 'config.yaml', 'huracanfs:\n  cach_dir: /tmp/x\n')
    spec = {'i': escape(m.mnt), 'f': str(m.mnt), 'h': str(tmp_path),
            '%': '%'}
    u = Unit(m, 'huracanfs@.service', spec, {'/etc/huracanfs': str(etc)})
    t0 = time.monotonic()
    rc = u.start()
    assert rc != 0
    assert time.monotonic() - t0 < 30
    assert u.main.wait(timeout=10) == 1
    assert 'huracanfs.cach_dir: unknown key' in u.journal_text()
    assert not is_mounted(m.mnt)


def test_user_unit(hfs, tmp_path):
    home = tmp_path / 'home'
    (home / '.config' / 'huracanfs').mkdir(parents=True)
    m = hfs(start=False, intervals=LONG_INTERVALS)
    write_private(home / '.config' / 'huracanfs' / 'config.yaml',
                  m.config.read_text())
    # The user unit mounts %h/huracan: let the HfsMount look there.
    m.mnt = home / 'huracan'
    spec = {'h': str(home), '%': '%'}
    u = Unit(m, 'huracanfs.service', spec)
    assert u.start() == 0, u.journal_text()
    assert is_mounted(home / 'huracan')
    m.pid = u.main.pid
    assert m.status()['pid'] == u.main.pid
    (home / 'huracan' / 'u.txt').write_bytes(b'user unit\n')
    assert u.run('ExecStop') == 0, u.journal_text()
    assert file_equals(m.remote / 'u.txt', b'user unit\n')
    assert u.main.wait(timeout=10) == 0
    m.pid = None
    assert u.run('ExecStopPost') == 0
    assert not is_mounted(home / 'huracan')

"""Errors a script can see: `status --check` (exit 1 and one line per
problem) and `flush --wait` naming the files that failed and why."""

import time

from hfsutil import LONG_INTERVALS, wait_until


def test_check_ok_on_a_healthy_mount(mount):
    mount.m('a.txt').write_bytes(b'a')
    mount.flush()
    r = mount.run('status', mount.mnt, '--check')
    assert (r.returncode, r.stdout) == (0, 'ok\n'), (r.stdout, r.stderr)


def test_failed_uploads_and_unreachable_remote_are_reported(hfs):
    m = hfs(intervals=LONG_INTERVALS)
    m.m('models').mkdir()
    m.m('models/x.pkl').write_bytes(b'x' * 100)
    m.take_remote_offline()
    r = m.flush(check=False)
    assert r.returncode == 1
    # flush --wait says which file failed, and why.
    assert 'huracanfs: upload failed: /models/x.pkl: ' in r.stderr, r.stderr
    assert 'unavailable' in r.stderr, r.stderr

    r = m.run('status', m.mnt, '--check', '--max-unreachable', '3600')
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert any(l.startswith('upload failed: /models/x.pkl: ')
               for l in lines), r.stdout
    assert not any('unreachable' in l for l in lines), r.stdout

    # Unreachable for longer than the threshold: one more line.
    time.sleep(1.2)
    r = m.run('status', m.mnt, '--check', '--max-unreachable', '0')
    assert r.returncode == 1
    assert any(l.startswith('remote unreachable for ')
               for l in r.stdout.splitlines()), r.stdout

    m.bring_remote_back()
    m.flush()
    r = m.run('status', m.mnt, '--check', '--max-unreachable', '0')
    assert (r.returncode, r.stdout) == (0, 'ok\n'), r.stdout


def test_check_usage(mount):
    r = mount.run('status', mount.mnt, '--check', '--json')
    assert r.returncode == 2
    r = mount.run('status', mount.mnt, '--check', '--max-unreachable', 'x')
    assert r.returncode == 2
    r = mount.run('status', mount.base / 'nowhere', '--check')
    assert r.returncode == 1

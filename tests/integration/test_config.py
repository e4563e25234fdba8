"""Configuration errors are refused with a clear message; so are unusable
mountpoints and a second daemon on the same cache directory."""

import os
import re

import pytest

from hfsutil import write_private, is_mounted, build_config, wait_until


def _cfg(tmp_path, body, name='config.yaml', mode=0o600):
    p = tmp_path / name
    write_private(p, body, mode)
    return p


def _local(tmp_path):
    return ('  backend: local\n'
            '  remote_dir: "%s"\n'
            '  cache_dir: "%s"\n'
            '  log_file: "%s"\n') % (tmp_path / 'remote', tmp_path / 'cache',
                                     tmp_path / 'daemon.log')


def _check(hfs_bin_mount, cfg):
    return hfs_bin_mount.run('check-config', '--config', cfg)


@pytest.fixture
def idle(hfs):
    """An HfsMount used only to run commands; never mounted."""
    return hfs(start=False)


def test_check_config_valid_prints_settings(idle, tmp_path):
    cfg = _cfg(tmp_path, build_config(tmp_path / 'remote', tmp_path / 'c',
                                      tmp_path / 'l'), 'ok.yaml')
    r = _check(idle, cfg)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert re.search(r'sync_interval_models_seconds\D*3\b', out), out
    assert re.search(r'sync_interval_data_cache_seconds\D*6\b', out), out
    assert re.search(r'sync_interval_other_seconds\D*1\b', out), out
    assert 'local' in out and str(tmp_path / 'remote') in out


def test_defaults_are_the_seeds(idle, tmp_path):
    cfg = _cfg(tmp_path, 'huracanfs:\n' + _local(tmp_path), 'min.yaml')
    r = _check(idle, cfg)
    assert r.returncode == 0, r.stderr
    for key, val in (('learning', 300), ('logs', 300), ('models', 1800),
                     ('data_cache', 7200), ('new_data', 300)):
        assert re.search(r'sync_interval_%s_seconds\D*%d\b' % (key, val),
                         r.stdout), (key, r.stdout)


def test_trainer_config_with_other_sections_is_accepted(idle, tmp_path):
    body = ('training:\n'
            '  symbols: [SOL-USDT, BTC-USDT]\n'
            '  lookback_days: 90\n'
            'dropbox:\n'
            '  app_folder: "Huracan"\n'
            '  sync_interval_models_seconds: 60\n'
            'huracanfs:\n' + _local(tmp_path) +
            'exchange:\n'
            '  name: kraken\n')
    r = _check(idle, _cfg(tmp_path, body))
    assert r.returncode == 0, r.stderr
    assert re.search(r'sync_interval_models_seconds\D*60\b', r.stdout)


def _assert_refused(r, line, key, problem_re=None, path='config.yaml'):
    assert r.returncode != 0, 'accepted a bad config: %s' % r.stdout
    text = r.stderr + r.stdout
    pat = r'%s:%d: %s: ' % (re.escape(path), line, re.escape(key))
    assert re.search(pat, text), \
        'message does not say "FILE:%d: %s: ...": %r' % (line, key, text)
    if problem_re:
        assert re.search(problem_re, text, re.IGNORECASE), text


def test_unknown_key_names_key_and_line(idle, tmp_path):
    body = ('training:\n'
            '  epochs: 3\n'
            'dropbox:\n'
            '  sync_interval_logs_seconds: 1\n'
            'huracanfs:\n' + _local(tmp_path) +   # lines 6-9
            '  cach_dir: "/tmp/typo"\n')          # line 10
    cfg = _cfg(tmp_path, body)
    _assert_refused(_check(idle, cfg), 10, 'huracanfs.cach_dir', 'unknown')
    # mount refuses it too, on stderr, and mounts nothing.
    rc, out, err = idle.try_start(config=cfg)
    assert rc != 0
    assert re.search(r'config\.yaml:10: huracanfs\.cach_dir: ', err), err
    assert not is_mounted(idle.mnt)


def test_unknown_dropbox_key(idle, tmp_path):
    body = ('dropbox:\n'
            '  sync_interval_models_seconds: 5\n'
            '  sync_intervall_logs_seconds: 5\n'
            'huracanfs:\n' + _local(tmp_path))
    _assert_refused(_check(idle, _cfg(tmp_path, body)), 3,
                    'dropbox.sync_intervall_logs_seconds', 'unknown')


@pytest.mark.parametrize('value', ['0', '-5', 'abc', '1.5x'])
def test_bad_interval(idle, tmp_path, value):
    body = ('dropbox:\n'
            '  sync_interval_models_seconds: 5\n'
            '  sync_interval_logs_seconds: %s\n'
            'huracanfs:\n' % value + _local(tmp_path))
    cfg = _cfg(tmp_path, body)
    _assert_refused(_check(idle, cfg), 3,
                    'dropbox.sync_interval_logs_seconds')
    rc, out, err = idle.try_start(config=cfg)
    assert rc != 0 and 'sync_interval_logs_seconds' in err, err
    assert not is_mounted(idle.mnt)


def test_bad_other_interval(idle, tmp_path):
    body = 'huracanfs:\n' + _local(tmp_path) + \
        '  sync_interval_other_seconds: 0\n'
    _assert_refused(_check(idle, _cfg(tmp_path, body)), 6,
                    'huracanfs.sync_interval_other_seconds')


def test_secret_in_world_readable_config(idle, tmp_path):
    secret = 'sl.TESTSECRET-do-not-print-0123456789'
    body = ('dropbox:\n'
            '  access_token: "%s"\n'
            'huracanfs:\n' % secret + _local(tmp_path))
    cfg = _cfg(tmp_path, body, mode=0o644)
    r = _check(idle, cfg)
    assert r.returncode != 0
    assert 'chmod 600' in r.stderr + r.stdout, r.stderr
    assert secret not in r.stderr + r.stdout
    rc, out, err = idle.try_start(config=cfg)
    assert rc != 0 and 'chmod 600' in err, err
    assert secret not in err + out
    assert not is_mounted(idle.mnt)
    os.chmod(cfg, 0o600)
    r = _check(idle, cfg)
    assert r.returncode == 0, r.stderr
    assert secret not in r.stdout + r.stderr


def test_mount_on_missing_mountpoint(idle, tmp_path):
    missing = tmp_path / 'no' / 'such' / 'dir'
    rc, out, err = idle.try_start(mnt=missing)
    assert rc != 0
    assert err.strip(), 'no message on stderr'
    assert str(missing) in err or 'mountpoint' in err.lower(), err
    assert not missing.exists() or not is_mounted(missing)


def test_mount_on_a_file(idle, tmp_path):
    f = tmp_path / 'plainfile'
    f.write_bytes(b'x')
    rc, out, err = idle.try_start(mnt=f)
    assert rc != 0
    assert err.strip()
    assert not is_mounted(f)


@pytest.mark.log_errors_expected()
def test_second_daemon_on_same_cache_refused(hfs):
    first = hfs('first')
    second = hfs('second', start=False,
                 hfs_extra={'cache_dir': str(first.cache),
                            'remote_dir': str(first.remote)})
    rc, out, err = second.try_start()
    assert rc != 0, 'a second daemon started on a cache dir in use'
    assert not is_mounted(second.mnt)
    assert re.search(r'lock|in use|already|running|another',
                     err, re.IGNORECASE), err
    # The first one is unharmed.
    first.m('still.txt').write_bytes(b'ok')
    assert first.m('still.txt').read_bytes() == b'ok'
    first.wait_remote('still.txt', b'ok', 5)


def test_banner_and_status_show_intervals(hfs):
    iv = {'learning': 11, 'logs': 13, 'models': 17, 'data_cache': 19,
          'new_data': 23, 'other': 29}
    m = hfs(intervals=iv)
    want = dict(iv, monitoring=13)
    for c in m.status()['categories']:
        assert c['interval'] == want[c['name']], c
    log = wait_until(lambda: m.log_text(), 3, 'a daemon log')
    for name in ('learning', 'logs', 'models', 'data_cache', 'other'):
        assert re.search(r'\b%s\b[^\n]*?(?<!\d)%d(?!\d)' % (name, iv[name]),
                         log, re.IGNORECASE), \
            'startup banner does not show %s=%d:\n%s' % (name, iv[name],
                                                         log[:2000])

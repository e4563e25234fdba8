"""The Dropbox backend end to end, against the fake Dropbox server over HTTPS.

Each test runs tests/unit/dbx_driver (one backend operation per run,
printing a JSON object) against an in-process FakeDropbox with a throw-away
CA passed through huracanfs.ca_file, and checks the results and the fake's
counters. No FUSE is needed.

The driver sits beside the huracanfs binary's build: $DBX_DRIVER, else
<build>/tests/unit/dbx_driver for <build>/src/huracanfs = $HURACANFS_BIN,
else build/tests/unit/dbx_driver of this checkout.
"""

import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / 'tests'))

from fakedropbox import content_hash  # noqa: E402

MiB = 1024 * 1024
SANITIZER = re.compile(r'AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer'
                       r'|runtime error:')


def build_dir():
    b = os.environ.get('HURACANFS_BIN')
    if b:
        return Path(b).resolve().parent.parent
    return REPO / 'build'


def driver_path():
    d = os.environ.get('DBX_DRIVER') or str(build_dir() / 'tests/unit/dbx_driver')
    if not os.access(d, os.X_OK):
        pytest.skip('dbx_driver is not built (%s)' % d)
    return d


def hfs_path():
    b = os.environ.get('HURACANFS_BIN') or str(REPO / 'build/src/huracanfs')
    if not os.access(b, os.X_OK):
        pytest.skip('huracanfs is not built (%s)' % b)
    return b


def write_config(path, fake, ca, **dropbox):
    lines = ['dropbox:']
    if not dropbox:
        dropbox = {'access_token': 'fake-static-token'}
    dropbox.setdefault('app_folder', 'Huracan')
    for k, v in dropbox.items():
        lines.append('  %s: "%s"' % (k, v))
    lines += ['huracanfs:', '  backend: dropbox',
              '  api_url: %s' % fake.url, '  content_url: %s' % fake.url,
              '  notify_url: %s' % fake.url, '  ca_file: %s' % ca[0], '']
    path.write_text('\n'.join(lines))
    path.chmod(0o600)
    return path


class Driver:
    def __init__(self, exe, config):
        self.exe = exe
        self.config = config

    def __call__(self, *args, fast=True, opts=(), timeout=300):
        cmd = [self.exe, '--config', str(self.config)]
        if fast:
            cmd.append('--fast-retry')
        cmd += list(opts) + [str(a) for a in args]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout)
        err = p.stderr.decode('utf-8', 'replace')
        assert not SANITIZER.search(err), err
        assert p.returncode == 0, (p.returncode, err)
        return json.loads(p.stdout)


@pytest.fixture
def drv(fake, ca, tmp_path):
    return Driver(driver_path(), write_config(tmp_path / 'config.yaml', fake, ca))


def ok(r):
    assert r['rc'] == 0, r
    return r


def names(r):
    return sorted(e['name'] for e in ok(r)['entries'])


def routes(fake):
    return fake.get_stats()['routes']


def put(fake, path, data):
    return fake.put_file('/Huracan' + path, data)


# ------------------------------------------------------------------ basics

def test_probe_and_fresh_root(fake, drv):
    ok(drv('probe'))
    r = ok(drv('list', ''))
    assert r['entries'] == [] and r['pages'] == 1
    # The missing mount root was created on the way.
    assert fake.metadata('/Huracan')['.tag'] == 'folder'
    assert routes(fake)['users/get_current_account'] == 1


def test_every_operation(fake, drv, tmp_path):
    src = tmp_path / 'a.txt'
    src.write_bytes(b'hello dropbox\n')
    ok(drv('mkdir', '/d'))
    assert drv('mkdir', '/d')['errno'] == 'EEXIST'
    assert drv('mkdir', '')['errno'] == 'EEXIST'
    up = ok(drv('upload', '/d/a.txt', src))['entry']
    assert up['name'] == 'a.txt' and up['size'] == 14 and up['mtime'] == 1700000000
    assert up['hash'] == content_hash(b'hello dropbox\n')
    st = ok(drv('stat', '/d/a.txt'))['entry']
    assert st['rev'] == up['rev'] and st['hash'] == up['hash']
    assert ok(drv('stat', '/d'))['entry']['is_dir']
    assert names(drv('list', '/d')) == ['a.txt']
    assert names(drv('list', '')) == ['d']

    ok(drv('cp', '/d/a.txt', '/d/b.txt'))
    assert drv('cp', '/d/a.txt', '/d/b.txt')['errno'] == 'EEXIST'
    ok(drv('mv', '/d/b.txt', '/e/c.txt'))       # creates /e
    assert drv('mv', '/d/nope', '/d/x')['errno'] == 'ENOENT'
    assert drv('mv', '/d/a.txt', '/e/c.txt')['errno'] == 'EEXIST'
    assert drv('mv', '/d', '/d/sub')['errno'] == 'EINVAL'
    assert names(drv('list', '/e')) == ['c.txt']
    assert fake.get_file('/Huracan/e/c.txt') == b'hello dropbox\n'

    out = tmp_path / 'out'
    r = ok(drv('download', '/e/c.txt', out))
    assert r['got'] == 14 and out.read_bytes() == b'hello dropbox\n'
    assert drv('download', '/d', out)['errno'] == 'EISDIR'
    assert drv('download', '/zzz', out)['errno'] == 'ENOENT'
    assert drv('stat', '/zzz')['errno'] == 'ENOENT'
    assert drv('list', '/zzz')['errno'] == 'ENOENT'
    assert drv('list', '/d/a.txt')['errno'] == 'ENOTDIR'
    assert drv('upload', '/d/a.txt/x', src)['errno'] == 'ENOTDIR'
    assert drv('mkdir', '/d/a.txt/sub')['errno'] == 'ENOTDIR'

    ok(drv('rm', '/d'))                          # recursive
    assert drv('stat', '/d/a.txt')['errno'] == 'ENOENT'
    assert drv('rm', '/d')['errno'] == 'ENOENT'
    assert drv('rm', '')['errno'] == 'EINVAL'
    assert drv('stat', '/bad/../x')['errno'] == 'EINVAL'

    r = ok(drv('space'))
    assert r['total'] == 2 * 1024 ** 3 and r['used'] >= 14


def test_conditional_upload_and_conflicted_copy(fake, drv, tmp_path):
    a = tmp_path / 'a'
    a.write_bytes(b'one')
    rev1 = ok(drv('upload', '/c.txt', a))['entry']['rev']
    a.write_bytes(b'two')
    rev2 = ok(drv('upload', '/c.txt', a, '--parent-rev', rev1))['entry']['rev']
    assert rev2 != rev1
    a.write_bytes(b'three')
    # Stale parent revision: a conflict, nothing written.
    assert drv('upload', '/c.txt', a, '--parent-rev', rev1)['errno'] == 'EEXIST'
    assert fake.get_file('/Huracan/c.txt') == b'two'
    # With autorename: a conflicted copy, named in the result.
    r = ok(drv('upload', '/c.txt', a, '--parent-rev', rev1, '--autorename'))
    assert r['entry']['name'] != 'c.txt' and 'conflicted copy' in r['entry']['name']
    assert fake.get_file('/Huracan/c.txt') == b'two'
    assert fake.get_file('/Huracan/' + r['entry']['name']) == b'three'
    # The mode went out as {".tag": "update"} and mute/client_modified too.
    arg = [q for q in fake.requests('files/upload')][-1]['arg']
    assert arg['mode'] == {'.tag': 'update', 'update': rev1}
    assert arg['mute'] is True and arg['client_modified'] == '2023-11-14T22:13:20Z'


def test_case_only_rename(fake, drv, tmp_path):
    put(fake, '/x/a.txt', b'case')
    ok(drv('mv', '/x/a.txt', '/x/A.txt'))
    assert names(drv('list', '/x')) == ['A.txt']
    put(fake, '/x/\u00e9t\u00e9.txt', b'e')
    ok(drv('mv', '/x/\u00e9t\u00e9.txt', '/x/\u00c9t\u00e9.txt'))
    assert '\u00c9t\u00e9.txt' in names(drv('list', '/x'))


def test_non_ascii_names_round_trip(fake, drv, tmp_path):
    name = 'Caf\u00e9 \U0001F600 na\u00efve \u65e5\u672c.txt'
    src = tmp_path / 'src'
    src.write_bytes(b'unicode')
    r = ok(drv('upload', '/\u00dcber/' + name, src))
    assert r['entry']['name'] == name
    assert names(drv('list', '/\u00dcber')) == [name]
    assert fake.get_file('/Huracan/\u00dcber/' + name) == b'unicode'
    out = tmp_path / 'out'
    ok(drv('download', '/\u00dcber/' + name, out))
    assert out.read_bytes() == b'unicode'
    # DEL and a backslash are refused before anything is sent.
    assert drv('upload', '/del\x7fname', src)['errno'] == 'EINVAL'
    assert drv('upload', '/back\\slash', src)['errno'] == 'EINVAL'


def test_paging_2500_entries(fake, drv):
    for i in range(2500):
        put(fake, '/many/f%04d' % i, b'')
    fake.reset_stats()
    r = ok(drv('list', '/many'))
    assert len(r['entries']) == 2500
    assert sorted(e['name'] for e in r['entries']) == ['f%04d' % i for i in range(2500)]
    assert r['pages'] >= 2
    st = routes(fake)
    assert st['files/list_folder'] == 1 and st['files/list_folder/continue'] >= 1
    arg = fake.requests('files/list_folder')[-1]['arg']
    assert arg['limit'] == 2000 and arg['include_non_downloadable_files'] is False


# ----------------------------------------------------------------- uploads

def big_file(path, size):
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def test_large_upload_dropped_connection(fake, drv, tmp_path):
    src = tmp_path / 'big'
    data = big_file(src, 40 * MiB)
    # The first append (the last 8 MiB) breaks after 1 MiB of its body.
    fake.add_fault(route='files/upload_session/append_v2', drop_request_after=MiB)
    r = ok(drv('upload', '/models/big.bin', src))
    assert r['entry']['size'] == 40 * MiB
    assert r['entry']['hash'] == content_hash(data)
    assert fake.get_file('/Huracan/models/big.bin') == data
    st = fake.get_stats()
    assert st['routes']['files/upload_session/start'] == 1
    assert st['routes']['files/upload_session/append_v2'] == 2
    assert st['routes']['files/upload_session/finish'] == 1
    assert 'files/upload' not in st['routes']
    # Only the broken chunk was sent again: no restart from zero.
    assert st['bytes_uploaded'] <= 40 * MiB + MiB + 8 * MiB
    reqs = fake.requests('files/upload_session/append_v2')
    assert reqs[0]['status'] == 'dropped'
    assert reqs[1]['arg']['cursor']['offset'] == 32 * MiB


def test_incorrect_offset_recovery(fake, drv, tmp_path):
    src = tmp_path / 'big'
    data = big_file(src, 20 * MiB)
    # A lost reply: the server has the chunk, the client does not know.
    fake.add_fault(route='files/upload_session/append_v2', lose_response=True)
    r = ok(drv('upload', '/big.bin', src, opts=['--chunk', str(4 * MiB)]))
    assert r['entry']['hash'] == content_hash(data)
    assert fake.get_file('/Huracan/big.bin') == data
    reqs = fake.requests('files/upload_session/append_v2')
    statuses = [q['status'] for q in reqs]
    assert statuses.count(409) == 1          # incorrect_offset, then skip ahead
    offsets = [q['arg']['cursor']['offset'] for q in reqs]
    assert offsets == [4 * MiB, 4 * MiB, 8 * MiB, 12 * MiB, 16 * MiB]
    assert fake.get_stats()['bytes_uploaded'] <= 24 * MiB


def test_finish_reply_lost(fake, drv, tmp_path):
    src = tmp_path / 'big'
    data = big_file(src, 9 * MiB)
    fake.add_fault(route='files/upload_session/finish', lose_response=True)
    r = ok(drv('upload', '/f.bin', src, opts=['--single-max', str(4 * MiB),
                                              '--chunk', str(4 * MiB)]))
    assert r['entry']['hash'] == content_hash(data)
    assert fake.get_file('/Huracan/f.bin') == data


def test_batch_upload_one_commit(fake, drv, tmp_path):
    files = []
    for i in range(50):
        f = tmp_path / ('small%02d.txt' % i)
        f.write_bytes(b'content %d\n' % i)
        files.append(f)
    r = ok(drv('batch', '/logs', *files))
    assert len(r['results']) == 50
    for i, e in enumerate(r['results']):
        assert e['rc'] == 0 and e['name'] == 'small%02d.txt' % i
        assert e['hash'] == content_hash(b'content %d\n' % i)
    st = routes(fake)
    assert st['files/upload_session/finish_batch_v2'] == 1
    assert st['files/upload_session/start'] == 50
    assert 'files/upload' not in st
    arg = fake.requests('files/upload_session/start')[0]['arg']
    assert arg['close'] is True and len(arg['content_hash']) == 64
    assert len(names(drv('list', '/logs'))) == 50


def test_batch_retries_too_many_write_operations(fake, drv, tmp_path):
    files = []
    for i in range(5):
        f = tmp_path / ('b%d' % i)
        f.write_bytes(b'x' * i)
        files.append(f)
    fake.add_fault(route='files/upload_session/finish_batch_v2',
                   batch_entry_error='too_many_write_operations', entries=[0, 3])
    r = ok(drv('batch', '/b', *files))
    assert [e['rc'] for e in r['results']] == [0] * 5
    assert routes(fake)['files/upload_session/finish_batch_v2'] == 2
    second = fake.requests('files/upload_session/finish_batch_v2')[1]['arg']
    assert [e['commit']['path'] for e in second['entries']] == ['/Huracan/b/b0', '/Huracan/b/b3']


def test_batch_entry_failure(fake, drv, tmp_path):
    f1, f2 = tmp_path / 'f1', tmp_path / 'f2'
    f1.write_bytes(b'1')
    f2.write_bytes(b'2')
    fake.add_fault(route='files/upload_session/finish_batch_v2',
                   batch_entry_error='insufficient_space', entries=[1])
    r = ok(drv('batch', '/q', f1, f2))
    assert [e['rc'] for e in r['results']] == [0, -28]      # ENOSPC


# ------------------------------------------------------------ deletes

def test_batch_delete_judges_each_entry(fake, drv):
    a = put(fake, '/del/a.txt', b'a')
    b = put(fake, '/del/b.txt', b'b')
    put(fake, '/del/sub/x.txt', b'x')
    put(fake, '/del/c.txt', b'c')
    # Another machine changes b after we knew its rev.
    put(fake, '/del/b.txt', b'b, changed elsewhere')
    fake.set_config(batch_check_in_progress=2)
    r = ok(drv('rmbatch', '/del/a.txt@' + a['rev'], '/del/b.txt@' + b['rev'],
               '/del/gone.txt@' + a['rev'], '/del/sub', '/del/c.txt'))
    assert r['results'] == [0, -17, -2, 0, 0]       # -, EEXIST, ENOENT, -, -
    assert [e['path_lower'] for e in fake.tree()] == ['/huracan', '/huracan/del',
                                                      '/huracan/del/b.txt']
    st = routes(fake)
    assert st['files/delete_batch'] == 1
    # The job was polled until complete, with pauses in between.
    assert st['files/delete_batch/check'] == 3
    assert 'files/delete_v2' not in st
    arg = fake.requests('files/delete_batch')[0]['arg']
    assert arg['entries'][0] == {'path': '/Huracan/del/a.txt', 'parent_rev': a['rev']}
    assert arg['entries'][3] == {'path': '/Huracan/del/sub'}
    # A complete answer at once needs no check.
    fake.reset_stats()
    fake.set_config(delete_batch_sync=True)
    put(fake, '/del/d.txt', b'd')
    assert ok(drv('rmbatch', '/del/d.txt', '/del/e.txt'))['results'] == [0, -2]
    assert 'files/delete_batch/check' not in routes(fake)


def test_batch_delete_of_2500_is_three_batches(fake, drv):
    for i in range(2500):
        put(fake, '/many/f%04d' % i, b'%d' % i)
    r = ok(drv('rmbatch', *['/many/f%04d' % i for i in range(2500)]))
    assert r['results'] == [0] * 2500
    assert routes(fake)['files/delete_batch'] == 3
    assert [e['path_lower'] for e in fake.tree()] == ['/huracan', '/huracan/many']


def test_batch_delete_retries_too_many_write_operations(fake, drv):
    for n in 'abcd':
        put(fake, '/t/' + n, n.encode())
    # The whole job fails once, then one entry is busy once.
    fake.add_fault(route='files/delete_batch', job_failed='too_many_write_operations')
    fake.add_fault(route='files/delete_batch', batch_entry_error='too_many_write_operations',
                   entries=[2])
    r = ok(drv('rmbatch', '/t/a', '/t/b', '/t/c', '/t/d'))
    assert r['results'] == [0, 0, 0, 0]
    assert routes(fake)['files/delete_batch'] == 3
    third = fake.requests('files/delete_batch')[2]['arg']
    assert third['entries'] == [{'path': '/Huracan/t/c'}]
    # Busy for good: -EAGAIN for what is left, after a bounded number of rounds.
    put(fake, '/t/e', b'e')
    fake.reset_stats()
    fake.add_fault(route='files/delete_batch', job_failed='too_many_write_operations',
                   count=None)
    r = ok(drv('rmbatch', '/t/e'))
    assert r['results'] == [-11]
    assert 2 <= routes(fake)['files/delete_batch'] <= 10
    assert fake.metadata('/Huracan/t/e')['name'] == 'e'


def test_batch_delete_unreachable_is_eagain(fake, drv):
    put(fake, '/u/a', b'a')
    fake.outage(60)
    try:
        r = drv('rmbatch', '/u/a', '/u/b')
    finally:
        fake.end_outage()
    assert r['errno'] == 'EAGAIN' and r['results'] == [-11, -11]
    assert fake.metadata('/Huracan/u/a')['name'] == 'a'


def test_tree_listing(fake, drv):
    put(fake, '/tr/a.txt', b'a')
    put(fake, '/tr/sub/deep/b.txt', b'b')
    for i in range(2100):
        put(fake, '/tr/big/f%04d' % i, b'')
    r = ok(drv('tree', '/TR'))
    paths = [e['path'] for e in r['entries']]
    assert '/tr' not in paths and len(paths) == 2 + 2 + 1 + 2100
    assert '/tr/sub/deep/b.txt' in paths and '/tr/big' in paths
    assert r['pages'] == 2 and r['skipped'] == 0
    arg = fake.requests('files/list_folder')[-1]['arg']
    assert arg['recursive'] is True and arg['include_non_downloadable_files'] is True
    assert drv('tree', '/nothing')['errno'] == 'ENOENT'
    assert drv('tree', '/tr/a.txt')['errno'] == 'ENOTDIR'


# ------------------------------------------------------------- retries

def test_429_retry_after_honoured(fake, drv):
    put(fake, '/r.txt', b'r')
    fake.add_fault(route='files/get_metadata', status=429, retry_after=2)
    t0 = time.monotonic()
    ok(drv('stat', '/r.txt'))
    assert time.monotonic() - t0 >= 2.0
    assert fake.get_stats()['route_statuses']['files/get_metadata'] == {'429': 1, '200': 1}
    # Without the header, the body's retry_after; plain text: 1 s.
    fake.add_fault(route='files/get_metadata', status=429, retry_after=1,
                   retry_after_header=False)
    fake.add_fault(route='files/get_metadata', status=429, plain=True,
                   retry_after_header=False)
    t0 = time.monotonic()
    ok(drv('stat', '/r.txt'))
    assert time.monotonic() - t0 >= 2.0


def test_too_many_write_operations_409_retried(fake, drv):
    fake.add_fault(route='files/create_folder_v2', error='too_many_write_operations',
                   count=2)
    ok(drv('mkdir', '/w'))
    assert routes(fake)['files/create_folder_v2'] == 3


def test_5xx_retried(fake, drv, tmp_path):
    put(fake, '/s.txt', b'five')
    fake.add_fault(route='*', status=503, count=2)
    fake.add_fault(route='files/download', status=500, count=1)
    out = tmp_path / 'o'
    ok(drv('download', '/s.txt', out))
    assert out.read_bytes() == b'five'
    assert fake.get_stats()['route_statuses']['files/download'] == {'503': 2, '500': 1, '200': 1}


def test_persistent_5xx_gives_eagain(fake, drv):
    fake.add_fault(route='files/get_metadata', status=502, count=None)
    r = drv('stat', '/x')
    assert r['errno'] == 'EAGAIN'
    assert routes(fake)['files/get_metadata'] == 6


def test_outage_is_eagain_not_enoent(fake, drv, tmp_path):
    src = tmp_path / 's'
    src.write_bytes(b'z')
    fake.outage(60, mode='refuse')
    t0 = time.monotonic()
    for args in (('stat', '/x'), ('list', ''), ('download', '/x', tmp_path / 'o'),
                 ('upload', '/x', src), ('rm', '/x'), ('probe',)):
        r = drv(*args)
        assert r['errno'] == 'EAGAIN', (args, r)
        assert 'ENOENT' not in r['errno']
    assert time.monotonic() - t0 < 60
    fake.end_outage()
    ok(drv('probe'))


def test_dropped_download_resumes(fake, drv, tmp_path):
    data = os.urandom(3 * MiB)
    put(fake, '/dl.bin', data)
    fake.add_fault(route='files/download', drop_response_after=MiB)
    out = tmp_path / 'o'
    r = ok(drv('download', '/dl.bin', out))
    assert r['got'] == 3 * MiB and out.read_bytes() == data
    reqs = fake.requests('files/download')
    assert len(reqs) == 2
    assert reqs[1]['arg']['path'].startswith('rev:')       # pinned to the revision
    assert fake.get_stats()['bytes_downloaded'] < 5 * MiB


# ----------------------------------------------------------------- auth

def test_invalid_token_is_eacces(fake, ca, tmp_path):
    d = Driver(driver_path(), write_config(tmp_path / 'c.yaml', fake, ca,
                                           access_token='not-a-token'))
    r = d('probe')
    assert r['errno'] == 'EACCES'
    assert r['error'].startswith('Verify Dropbox token is valid')
    assert 'not-a-token' not in r['error']
    assert d('stat', '/x')['errno'] == 'EACCES'


def run_auth(fake, ca, cfg):
    env = dict(os.environ, HURACANFS_AUTHORIZE_URL=fake.url + '/oauth2/authorize')
    env.pop('HURACANFS_DROPBOX_TOKEN', None)
    p = subprocess.Popen([hfs_path(), 'auth', '--config', str(cfg)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    text = b''
    while b'Code: ' not in text:
        c = p.stdout.read1(4096)
        assert c, text
        text += c
    m = re.search(rb'(https://\S+)', text)
    url = m.group(1).decode()
    assert url.startswith(fake.url + '/oauth2/authorize?client_id=fakeappkey&')
    q = dict(kv.split('=', 1) for kv in url.split('?', 1)[1].split('&'))
    assert q['response_type'] == 'code' and q['token_access_type'] == 'offline'
    assert q['code_challenge_method'] == 'S256' and len(q['code_challenge']) == 43
    code = fake.mint_auth_code(code_challenge=q['code_challenge'])
    out, err = p.communicate(code.encode() + b'\n', timeout=60)
    assert not SANITIZER.search(err.decode('utf-8', 'replace')), err
    return p.returncode, (text + out).decode(), err.decode(), code


def test_auth_command_and_refresh(fake, ca, tmp_path):
    cfg = tmp_path / 'auth.yaml'
    original = ('# my settings\ndropbox:\n    app_key: fakeappkey   # the key\n'
                '    app_folder: Huracan\n'
                'huracanfs:\n  backend: dropbox\n'
                '  api_url: %s\n  content_url: %s\n  notify_url: %s\n  ca_file: %s\n'
                'trainer:\n  refresh_token: keep-me\n'
                % (fake.url, fake.url, fake.url, ca[0]))
    cfg.write_text(original)
    cfg.chmod(0o600)
    rc, out, err, code = run_auth(fake, ca, cfg)
    assert rc == 0, err
    new = cfg.read_text()
    m = re.search(r'\n    refresh_token: "([^"]+)"\n', new)
    assert m, new
    refresh = m.group(1)
    assert new.replace('    refresh_token: "%s"\n' % refresh, '') == original
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert refresh not in out and code not in out and refresh not in err
    token_req = fake.requests('oauth2/token')[-1]['arg']
    assert token_req['grant_type'] == ['authorization_code']

    # The stored refresh token works: one refresh, then calls succeed.
    fake.reset_stats()
    d = Driver(driver_path(), cfg)
    ok(d('probe'))
    assert routes(fake)['oauth2/token'] == 1

    # A second run replaces the line instead of adding one.
    rc, out, err, code = run_auth(fake, ca, cfg)
    assert rc == 0, err
    assert cfg.read_text().count('refresh_token:') == 2     # ours + trainer's

    # A revoked refresh token: EACCES with advice.
    fake.revoke_refresh_token(re.search(r'\n    refresh_token: "([^"]+)"\n',
                                        cfg.read_text()).group(1))
    r = d('probe')
    assert r['errno'] == 'EACCES' and 'huracanfs auth' in r['error']


def test_auth_creates_missing_config_section(fake, ca, tmp_path):
    cfg = tmp_path / 'only-key.yaml'
    cfg.write_text('huracanfs:\n  backend: local\n  api_url: %s\n  ca_file: %s\n'
                   'dropbox:\n  app_key: fakeappkey\n' % (fake.url, ca[0]))
    cfg.chmod(0o644)
    rc, out, err, _ = run_auth(fake, ca, cfg)
    assert rc == 0, err
    assert re.search(r'\ndropbox:\n  refresh_token: "[^"]+"\n  app_key: fakeappkey\n$',
                     cfg.read_text())
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600


def test_auth_without_app_key(fake, ca, tmp_path):
    cfg = tmp_path / 'nokey.yaml'
    cfg.write_text('huracanfs:\n  backend: local\n')
    p = subprocess.run([hfs_path(), 'auth', '--config', str(cfg)], input=b'',
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert p.returncode != 0 and b'app_key' in p.stderr


def test_expired_token_refreshed_once(fake, ca, tmp_path):
    # Get a refresh token through the token endpoint, as `auth` would.
    cfg = tmp_path / 'r.yaml'
    cfg.write_text('dropbox:\n  app_key: fakeappkey\n')
    cfg.chmod(0o600)
    write_config(cfg, fake, ca, app_key='fakeappkey')
    rc, _, err, _ = run_auth(fake, ca, cfg)
    assert rc == 0, err
    refresh = re.search(r'refresh_token: "([^"]+)"', cfg.read_text()).group(1)
    fake.add_token('short-lived', expires_in=3600)
    fake.expire_token('short-lived')
    write_config(cfg, fake, ca, access_token='short-lived', refresh_token=refresh,
                 app_key='fakeappkey')
    fake.reset_stats()
    put(fake, '/t.txt', b't')
    d = Driver(driver_path(), cfg)
    ok(d('stat', '/t.txt'))
    st = fake.get_stats()
    assert st['routes']['oauth2/token'] == 1
    assert st['route_statuses']['files/get_metadata'] == {'401': 1, '200': 1}


# ------------------------------------------------------ errors and hostility

def test_insufficient_space(fake, drv, tmp_path):
    src = tmp_path / 's'
    src.write_bytes(b'q' * 100)
    fake.add_fault(route='files/upload', error='insufficient_space')
    assert drv('upload', '/q', src)['errno'] == 'ENOSPC'
    fake.set_config(allocated=50)
    assert drv('upload', '/q', src)['errno'] == 'ENOSPC'
    assert drv('mkdir', '/ok')['rc'] == 0


def test_range_download(fake, drv, tmp_path):
    data = os.urandom(MiB)
    put(fake, '/r.bin', data)
    out = tmp_path / 'o'
    out.write_bytes(b'\0' * MiB)
    r = ok(drv('download', '/r.bin', out, 1000, 5000))
    assert r['got'] == 5000
    assert out.read_bytes()[1000:6000] == data[1000:6000]
    assert fake.get_stats()['route_statuses']['files/download'] == {'206': 1}
    assert fake.get_stats()['bytes_downloaded'] == 5000
    # Past the end: nothing; up to the end: the rest.
    assert ok(drv('download', '/r.bin', out, MiB + 10, 5))['got'] == 0
    assert ok(drv('download', '/r.bin', out, MiB - 10, 100))['got'] == 10
    # An old revision by rev.
    rev = fake.metadata('/Huracan/r.bin')['rev']
    put(fake, '/r.bin', b'new')
    r = ok(drv('download', '/r.bin', out, 0, 4, '--rev', rev))
    assert r['got'] == 4 and out.read_bytes()[:4] == data[:4]


@pytest.mark.parametrize('variant', ['corrupt_body', 'wrong_content_hash', 'wrong_size',
                                     'bad_result_header', 'missing_result_header'])
def test_download_verification(fake, drv, tmp_path, variant):
    put(fake, '/h.bin', os.urandom(100000))
    fake.add_fault(route='files/download', hostile=variant)
    r = drv('download', '/h.bin', tmp_path / 'o')
    assert r['errno'] == 'EIO', r
    if variant == 'corrupt_body':
        assert 'content hash mismatch' in r['error']


def test_invalid_json_reply(fake, drv):
    put(fake, '/j/x', b'')
    fake.add_fault(route='files/list_folder', invalid_json=True)
    assert drv('list', '/j')['errno'] == 'EIO'
    fake.add_fault(route='files/get_metadata', status=200, raw_body='{"name": 5}')
    assert drv('stat', '/j/x')['errno'] == 'EIO'


@pytest.mark.parametrize('variant', ['name_slash', 'name_dotdot', 'name_dot', 'name_empty',
                                     'name_nul', 'outside_path', 'path_mismatch', 'unknown_tag',
                                     'huge_name'])
def test_hostile_names_dropped(fake, drv, variant):
    put(fake, '/h/good.txt', b'g')
    fake.add_fault(route='files/list_folder', hostile=variant)
    r = ok(drv('list', '/h'))
    assert names(r) == ['good.txt']
    assert 'dropped' in r['error']


def test_hostile_negative_size_is_eio(fake, drv):
    put(fake, '/h/good.txt', b'g')
    fake.add_fault(route='files/list_folder', hostile='negative_size')
    assert drv('list', '/h')['errno'] == 'EIO'


# --------------------------------------------------------- change tracking

def test_cursor_changes_longpoll(fake, drv):
    fake.set_config(longpoll_time_scale=0.02)
    cur = ok(drv('cursor'))['cursor']
    assert fake.metadata('/Huracan')['.tag'] == 'folder'     # created
    r = ok(drv('longpoll', cur, 30))
    assert r['changes'] is False
    put(fake, '/new/X.txt', b'x')
    fake.put_file('/Elsewhere/y.txt', b'y')
    fake.put_file('/HuracanOther/z.txt', b'z')
    r = ok(drv('longpoll', cur, 30))
    assert r['changes'] is True and r['backoff'] == 0
    r = ok(drv('changes', cur))
    got = {e['path']: e for e in r['entries']}
    assert set(got) == {'/new', '/new/x.txt'}
    assert got['/new/x.txt']['name'] == 'X.txt' and got['/new']['is_dir']
    cur2 = r['cursor']
    fake.delete('/Huracan/new')
    r = ok(drv('changes', cur2))
    assert any(e['path'] == '/new' and e['deleted'] for e in r['entries'])
    # Longpoll takes no Authorization header and honours backoff.
    fake.set_config(longpoll_backoff=5)
    assert ok(drv('longpoll', r['cursor'], 30))['backoff'] == 5
    fake.invalidate_cursors()
    assert drv('changes', r['cursor'])['errno'] == 'ESTALE'
    assert drv('longpoll', r['cursor'], 30)['errno'] == 'ESTALE'


# ------------------------------------------------- threads, TLS, transport

def test_threads_share_one_refresh(fake, ca, tmp_path):
    cfg = tmp_path / 'r.yaml'
    write_config(cfg, fake, ca, app_key='fakeappkey')
    rc, _, err, _ = run_auth(fake, ca, cfg)
    assert rc == 0, err
    refresh = re.search(r'refresh_token: "([^"]+)"', cfg.read_text()).group(1)
    fake.add_token('short-lived', expires_in=3600)
    fake.expire_token('short-lived')
    write_config(cfg, fake, ca, access_token='short-lived', refresh_token=refresh,
                 app_key='fakeappkey')
    fake.reset_stats()
    d = Driver(driver_path(), cfg)
    r = d('stress', 24, '/stress')
    assert r['rc'] == 0, r
    assert [x['rc'] for x in r['results']] == [0] * 24
    assert routes(fake)['oauth2/token'] == 1
    assert len(names(d('list', '/stress'))) == 24


def test_untrusted_certificate(fake, ca, tmp_path):
    cfg = write_config(tmp_path / 'c.yaml', fake, ca)
    cfg.write_text(re.sub(r'  ca_file: .*\n', '', cfg.read_text()))
    fake.reset_stats()
    d = Driver(driver_path(), cfg)
    # At mount (probe): a configuration error of its own, not an outage.
    r = d('probe')
    assert r['errno'] == 'ECONNABORTED'
    assert r['error'].startswith('TLS certificate of 127.0.0.1:%d failed'
                                 ' verification: ' % fake.port), r
    assert 'ca_file' in r['error'] and 'api_url' in r['error']
    # Later calls take it as the network failing: retried, EAGAIN.
    assert d('stat', '/x')['errno'] == 'EAGAIN'
    assert fake.get_stats()['requests'] == 0


def test_plain_http_refused(fake, ca, tmp_path):
    cfg = write_config(tmp_path / 'c.yaml', fake, ca)
    cfg.write_text(cfg.read_text().replace('api_url: https://', 'api_url: http://'))
    p = subprocess.run([driver_path(), '--config', str(cfg), 'probe'],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 2 and b'https://' in p.stderr


def test_range_answered_with_plain_200(fake, ca, tmp_path):
    """A server that ignores Range: the client skips to the range."""
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    data = os.urandom(300000)
    meta = {'name': 'p.bin', 'id': 'id:plain200', 'rev': '0123456789a',
            'size': len(data), 'client_modified': '2024-01-01T00:00:00Z',
            'server_modified': '2024-01-01T00:00:00Z',
            'content_hash': content_hash(data)}

    class H(BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'

        def do_POST(self):
            self.rfile.read(int(self.headers.get('Content-Length') or 0))
            self.send_response(200)
            self.send_header('Dropbox-API-Result', json.dumps(meta))
            self.send_header('Content-Type', 'application/octet-stream')
            self.send_header('Content-Length', str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except OSError:
                pass

        def log_message(self, *a):
            pass

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(ca[1], ca[2])
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), H)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        cfg = write_config(tmp_path / 'c.yaml', fake, ca)
        cfg.write_text(cfg.read_text().replace(
            'content_url: %s' % fake.url, 'content_url: https://127.0.0.1:%d'
            % httpd.server_address[1]))
        d = Driver(driver_path(), cfg)
        out = tmp_path / 'o'
        out.write_bytes(b'')
        r = ok(d('download', '/p.bin', out, 100000, 5000))
        assert r['got'] == 5000
        assert out.read_bytes()[100000:] == data[100000:105000]
        r = ok(d('download', '/p.bin', out, 299990, 0))
        assert r['got'] == 10 and out.read_bytes()[299990:] == data[299990:]
        out2 = tmp_path / 'o2'
        r = ok(d('download', '/p.bin', out2))
        assert r['got'] == len(data) and out2.read_bytes() == data
    finally:
        httpd.shutdown()
        httpd.server_close()

"""The whole filesystem on the Dropbox backend, against the fake Dropbox
server over HTTPS (tests/fakedropbox): the mount is used through ordinary
file operations, and the fake's store and request counters say what
reached "Dropbox" and how."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FAKE_TOKEN as TOKEN
from fakedropbox import content_hash, make_test_ca
from hfsutil import LONG_INTERVALS, is_mounted, wait_until

ROOT = '/Huracan'
MiB = 1024 * 1024


def remote(fake, rel):
    """The bytes of /Huracan/REL on the fake, or None."""
    try:
        return fake.get_file(ROOT + '/' + rel)
    except Exception:
        return None


def count(fake, route):
    return fake.get_stats()['routes'].get(route, 0)


def test_writes_reach_dropbox_per_category(dbx, fake):
    m = dbx()
    files = {
        'logs/engine.log': b'line\n' * 100,
        'models/training/2026-11-21/SOL-USDT/metrics/training_metrics.json':
            b'{"sharpe": 1.1}\n',
        'notes/caf\u00e9 \U0001F600.txt': b'unicode name\n',
    }
    for rel, data in files.items():
        p = m.m(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    for rel, data in files.items():
        wait_until(lambda: remote(fake, rel) == data, 8,
                   '%s to reach the fake Dropbox' % rel)
    meta = fake.metadata(ROOT + '/logs/engine.log')
    assert meta['content_hash'] == content_hash(files['logs/engine.log'])
    assert os.getxattr(m.m('logs/engine.log'),
                       'user.huracanfs.content_hash').decode() == \
        meta['content_hash']


def test_remote_files_listed_and_read_lazily(dbx, fake):
    big = os.urandom(24 * 1024 * 1024)
    fake.put_file(ROOT + '/data/candles/BTC-USDT/big.parquet', big)
    fake.put_file(ROOT + '/data/candles/BTC-USDT/small.json', b'{"a": 1}')
    m = dbx(dropbox_extra={'restore_data_cache_on_startup': False})
    assert sorted(os.listdir(m.m('data/candles/BTC-USDT'))) == \
        ['big.parquet', 'small.json']
    assert m.m('data/candles/BTC-USDT/small.json').read_bytes() == b'{"a": 1}'
    fake.reset_stats()
    with open(m.m('data/candles/BTC-USDT/big.parquet'), 'rb') as f:
        f.seek(len(big) - 8)
        assert f.read(8) == big[-8:]
    st = fake.get_stats()
    assert st['bytes_downloaded'] < len(big) // 2, \
        'a footer read fetched %d bytes of a %d-byte file' % (
            st['bytes_downloaded'], len(big))
    assert m.m('data/candles/BTC-USDT/big.parquet').read_bytes() == big


def test_rename_of_a_folder_is_one_move(dbx, fake):
    m = dbx()
    m.m('runs/a').mkdir(parents=True)
    for i in range(5):
        m.m('runs/a/f%d.txt' % i).write_bytes(b'%d' % i)
    m.flush()
    assert remote(fake, 'runs/a/f4.txt') == b'4'
    fake.reset_stats()
    os.rename(m.m('runs/a'), m.m('runs/b'))
    wait_until(lambda: remote(fake, 'runs/b/f4.txt') == b'4', 5,
               'the folder move to reach the fake')
    assert remote(fake, 'runs/a/f0.txt') is None
    assert count(fake, 'files/move_v2') == 1
    assert count(fake, 'files/upload') == 0
    os.unlink(m.m('runs/b/f0.txt'))
    wait_until(lambda: remote(fake, 'runs/b/f0.txt') is None, 5,
               'the delete to reach the fake')


def test_many_small_files_in_one_batch_commit(dbx, fake):
    m = dbx(intervals=LONG_INTERVALS)
    m.m('batch').mkdir()
    for i in range(30):
        m.m('batch/f%02d.json' % i).write_bytes(b'{"i": %d}\n' % i)
    fake.reset_stats()
    m.flush()
    for i in range(30):
        assert remote(fake, 'batch/f%02d.json' % i) == b'{"i": %d}\n' % i
    assert count(fake, 'files/upload_session/finish_batch_v2') == 1
    assert count(fake, 'files/upload') == 0


def test_outage_then_recovery(dbx, fake):
    m = dbx()
    m.m('logs').mkdir()
    m.flush()
    fake.outage(30)
    m.m('logs/during.log').write_bytes(b'written while Dropbox is down\n')
    assert m.m('logs/during.log').read_bytes() == \
        b'written while Dropbox is down\n'
    time.sleep(1.5)  # the logs interval passes during the outage
    assert remote(fake, 'logs/during.log') is None
    fake.end_outage()
    wait_until(lambda: remote(fake, 'logs/during.log') ==
               b'written while Dropbox is down\n', 30,
               'the queue to drain after the outage')


def test_change_from_another_machine_becomes_visible(dbx, fake):
    m = dbx()
    m.m('shared').mkdir()
    m.m('shared/a.txt').write_bytes(b'version 1\n')
    wait_until(lambda: remote(fake, 'shared/a.txt') == b'version 1\n', 5,
               'the first upload')
    assert m.m('shared/a.txt').read_bytes() == b'version 1\n'
    fake.put_file(ROOT + '/shared/a.txt', b'version 2 from elsewhere\n')
    fake.put_file(ROOT + '/shared/new.txt', b'new\n')
    wait_until(lambda: sorted(os.listdir(m.m('shared'))) ==
               ['a.txt', 'new.txt'], 20, 'the new remote file to show')
    wait_until(lambda: m.m('shared/a.txt').read_bytes() ==
               b'version 2 from elsewhere\n', 20,
               'the remote change to show')


def test_kill9_then_remount_reaches_dropbox(dbx, fake):
    m = dbx(intervals=LONG_INTERVALS)
    data = os.urandom(300_000)
    m.m('models').mkdir()
    m.m('models/m.pkl').write_bytes(data)
    m.kill9()
    m.start()
    assert m.m('models/m.pkl').read_bytes() == data
    m.flush()
    assert remote(fake, 'models/m.pkl') == data


@pytest.mark.log_errors_expected()
def test_bad_token_fails_mount(dbx, fake):
    m = dbx(start=False, dropbox_extra={'access_token': 'wrong-token'})
    rc, out, err = m.try_start()
    assert rc != 0
    assert 'Verify Dropbox token is valid' in err
    assert 'wrong-token' not in err + out


@pytest.mark.log_errors_expected()
def test_quota_keeps_files_dirty_and_shows_in_status(dbx, fake):
    m = dbx()
    fake.set_config(allocated=4)
    m.m('full.txt').write_bytes(b'no room\n')

    def has_error():
        c = m.cat_status('other')
        return c['pending_files'] == 1 and c['last_error'] and \
            'out of space' in c['last_error']
    wait_until(has_error, 8, 'status to show the quota error')
    fake.set_config(allocated=2 ** 31)
    wait_until(lambda: remote(fake, 'full.txt') == b'no room\n', 20,
               'the upload once there is room')


def test_full_dropbox_sends_a_big_file_once(dbx, fake):
    """Dropbox refuses a 40 MB model for the lack of space. The bytes it
    holds in the upload session are not sent again: while space is short
    the retries cost one get_space_usage now and then, and once space is
    freed only the session's finish is sent."""
    m = dbx()
    fake.set_config(allocated=16 * MiB)
    data = os.urandom(40 * 1000 * 1000)
    m.m('models').mkdir()
    fake.reset_stats()
    m.m('models/big.pkl').write_bytes(data)

    def refusals():
        return m.log_text().count('upload of "/models/big.pkl" failed')
    wait_until(lambda: refusals() >= 4, 60,
               'several retries while Dropbox is full')
    st = m.cat_status('models')
    assert st['pending_files'] == 1 and 'out of space' in st['last_error'], st
    stats = fake.get_stats()
    assert stats['routes'].get('files/upload_session/start') == 1, stats
    assert stats['bytes_uploaded'] < 41 * 1000 * 1000, stats
    # No request loop: a space check per retry at most.
    assert stats['routes'].get('users/get_space_usage', 0) <= refusals() + 1

    fake.set_config(allocated=2 ** 31)
    wait_until(lambda: remote(fake, 'models/big.pkl') == data, 60,
               'the model to land once space is freed')
    stats = fake.get_stats()
    assert stats['routes'].get('files/upload_session/start') == 1, stats
    assert stats['bytes_uploaded'] < 41 * 1000 * 1000, stats
    wait_until(lambda: m.cat_status('models')['pending_files'] == 0, 10,
               'nothing pending')


def refresh_mount(dbx, fake, expires_in=None):
    """A mount that gets its access tokens from a refresh token."""
    rt = fake.add_refresh_token(expires_in=expires_in)
    return rt, dbx(dropbox_extra={'access_token': '', 'refresh_token': rt,
                                  'app_key': 'fakeappkey'})


@pytest.mark.parametrize('expires_in', [60, 2])
def test_short_lived_tokens_are_not_refreshed_in_a_loop(dbx, fake, expires_in):
    """Tokens that live 60 s (or 2 s) are refreshed ahead by half their
    life at most, and never more than once every few seconds."""
    fake.reset_stats()
    rt, m = refresh_mount(dbx, fake, expires_in)
    m.m('logs').mkdir()
    t0 = time.monotonic()
    for i in range(6):
        m.m('logs/t%d.log' % i).write_bytes(b'%d\n' % i)
        m.flush()
        assert remote(fake, 'logs/t%d.log' % i) == b'%d\n' % i
        time.sleep(1)
    elapsed = time.monotonic() - t0
    calls = count(fake, 'oauth2/token')
    if expires_in == 60:
        assert calls == 1, calls
    else:
        # At most one per 5 s, and the first.
        assert calls <= 2 + elapsed / 4, (calls, elapsed)
    assert rt not in m.log_text()


@pytest.mark.log_errors_expected()
def test_revoked_refresh_token_backs_off(dbx, fake):
    rt, m = refresh_mount(dbx, fake)
    m.m('logs').mkdir()
    m.m('logs/a.log').write_bytes(b'a\n')
    wait_until(lambda: remote(fake, 'logs/a.log') == b'a\n', 8,
               'the first upload')
    fake.revoke_refresh_token(rt)
    fake.reset_stats()
    m.m('logs/b.log').write_bytes(b'b\n')

    def refused():
        e = m.cat_status('logs')['last_error']
        return e and 'refresh token revoked or invalid' in e and \
            'huracanfs auth' in e
    wait_until(refused, 10, 'status to say the refresh token was revoked')
    # More writes, more retries: they wait without asking Dropbox.
    for i in range(8):
        m.m('logs/c%d.log' % i).write_bytes(b'c\n')
        time.sleep(1)
    assert refused()
    st = fake.get_stats()['routes']
    assert st.get('oauth2/token') == 1, st
    asked = sum(n for r, n in st.items()
                if r not in ('files/list_folder/longpoll',))
    assert asked <= 3, st
    assert remote(fake, 'logs/b.log') is None


@pytest.mark.log_errors_expected('TLS certificate')
def test_untrusted_certificate_fails_mount(dbx, fake, tmp_path):
    """A certificate that fails verification is a configuration error:
    mount says so and exits non-zero, rather than starting offline."""
    other_ca = make_test_ca(tmp_path / 'other-ca')[0]
    m = dbx(start=False, hfs_extra={'ca_file': other_ca})
    rc, out, err = m.try_start()
    assert rc != 0, 'mount started with an untrusted certificate'
    assert 'TLS certificate of 127.0.0.1:%d failed verification' \
        % fake.port in err, err
    assert 'ca_file' in err and 'api_url' in err, err
    assert not is_mounted(m.mnt)
    assert TOKEN not in err + out


def test_unreachable_dropbox_still_starts_offline(dbx, fake):
    """A network that is down is no configuration error: the mount starts
    offline and the uploads go once Dropbox is back."""
    fake.outage(120)
    try:
        m = dbx(start=False)
        rc, out, err = m.try_start()
        assert rc == 0, err
        m.pid = m._find_pid()
        m.all_pids.append(m.pid)
        m.m('a.txt').write_bytes(b'written offline\n')
        assert m.m('a.txt').read_bytes() == b'written offline\n'
    finally:
        fake.end_outage()
    wait_until(lambda: remote(fake, 'a.txt') == b'written offline\n', 60,
               'the upload once Dropbox is back')


def test_secrets_never_written(dbx, fake):
    m = dbx()
    m.m('a.txt').write_bytes(b'x')
    m.flush()
    st = m.run('status', m.mnt, '--json', check=True)
    assert TOKEN not in st.stdout
    m.unmount()
    for p in m.base.rglob('*'):
        if p.is_file() and p.name != 'config.yaml':
            assert TOKEN.encode() not in p.read_bytes(), \
                'the token appears in %s' % p


@pytest.mark.log_errors_expected('refused by the remote')
def test_refused_name_reported_not_retried_in_a_loop(dbx, fake):
    m = dbx()
    fake.add_fault(route='files/upload', path=ROOT + '/refused.txt',
                   status=409, count=None,
                   body={'error_summary': 'path/disallowed_name/..',
                         'error': {'.tag': 'path',
                                   'reason': {'.tag': 'disallowed_name'},
                                   'upload_session_id': 'x'}})
    # Alone, so it goes up as a single files/upload (many files would
    # share one batch commit).
    m.m('refused.txt').write_bytes(b'kept locally\n')

    def refused():
        c = m.cat_status('other')
        return c['last_error'] and 'refused' in c['last_error']
    wait_until(refused, 8, 'status to report the refused name')
    m.m('fine.txt').write_bytes(b'uploaded\n')
    wait_until(lambda: remote(fake, 'fine.txt') == b'uploaded\n', 8,
               'another file to be uploaded meanwhile')
    err = os.getxattr(m.m('refused.txt'), 'user.huracanfs.last_error')
    assert b'upload failed' in err
    assert m.m('refused.txt').read_bytes() == b'kept locally\n'
    assert remote(fake, 'refused.txt') is None
    assert m.cat_status('other')['pending_files'] == 1
    tries = len([r for r in fake.requests('files/upload')
                 if 'refused' in str(r)])
    time.sleep(3)
    again = len([r for r in fake.requests('files/upload')
                 if 'refused' in str(r)])
    assert again == tries, 'a refused name was retried in a loop'


def test_flush_wait_waits_for_namespace_changes(dbx, fake):
    """flush --wait returns only once a rename reached the remote, even
    with no file to upload (a slow move on the server side)."""
    m = dbx(intervals=LONG_INTERVALS)
    m.m('runs/a').mkdir(parents=True)
    m.m('runs/a/f.txt').write_bytes(b'f\n')
    m.flush()
    assert remote(fake, 'runs/a/f.txt') == b'f\n'
    fake.add_fault(route='files/move_v2', delay=1.5)
    os.rename(m.m('runs/a'), m.m('runs/z'))
    m.flush()
    assert remote(fake, 'runs/z/f.txt') == b'f\n'
    assert remote(fake, 'runs/a/f.txt') is None


def _names(path):
    return sorted(os.listdir(path))


def test_remote_folder_in_another_case_on_dropbox(dbx, fake):
    """The trainer's `mkdir -p data/candles` when Dropbox has `Data`: it
    succeeds, the candles land in Data/candles, and ls shows Data."""
    fake.mkdir(ROOT + '/Data')
    fake.put_file(ROOT + '/Data/old.csv', b'old')
    m = dbx(dropbox_extra={'restore_data_cache_on_startup': False})
    r = subprocess.run(['mkdir', '-p', str(m.m('data/candles'))],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    m.m('data/candles/SOL_candles.parquet').write_bytes(b'candles')
    assert _names(m.mnt) == ['Data']
    assert _names(m.m('DATA')) == ['candles', 'old.csv']
    m.flush()
    meta = fake.metadata(ROOT + '/data/candles/sol_candles.parquet')
    assert meta['path_display'] == ROOT + '/Data/candles/SOL_candles.parquet'
    assert [e['path_display'] for e in fake.tree()
            if e['path_display'].lower() == (ROOT + '/data').lower()] == \
        [ROOT + '/Data']
    assert remote(fake, 'Data/candles/SOL_candles.parquet') == b'candles'


def test_names_fold_as_on_dropbox_mount(dbx, fake):
    m = dbx()
    m.m('Caf\u00e9').mkdir()
    with pytest.raises(FileExistsError):
        m.m('CAF\u00c9').mkdir()
    with open(m.m('Caf\u00e9/notes.txt'), 'w') as f:
        f.write('one ')
    with open(m.m('CAF\u00c9/Notes.TXT'), 'a') as f:
        f.write('two')
    assert _names(m.mnt) == ['Caf\u00e9']
    assert _names(m.m('Caf\u00e9')) == ['notes.txt']
    m.flush()
    assert remote(fake, 'caf\u00e9/NOTES.txt') == b'one two'
    assert fake.metadata(ROOT + '/CAF\u00c9/notes.txt')['path_display'] == \
        ROOT + '/Caf\u00e9/notes.txt'


def test_remote_names_that_fold_alike_both_kept(dbx, fake):
    """Our folding normalizes (NFC), Dropbox's does not say it does: where
    Dropbox holds the composed and the decomposed spelling of a name, both
    are listed and each reads its own bytes."""
    fake.put_file(ROOT + '/n/Caf\u00e9.txt', b'composed')
    fake.put_file(ROOT + '/n/Cafe\u0301.txt', b'decomposed')
    m = dbx()
    assert _names(m.m('n')) == sorted(['Caf\u00e9.txt', 'Cafe\u0301.txt'])
    assert m.m('n/Caf\u00e9.txt').read_bytes() == b'composed'
    assert m.m('n/Cafe\u0301.txt').read_bytes() == b'decomposed'
    # A new name folding like them is refused: Dropbox may take it for one.
    with pytest.raises(FileExistsError):
        m.m('n/CAF\u00c9.txt').mkdir()


def test_case_renames_on_dropbox(dbx, fake):
    """A case-only rename through another name reaches Dropbox; one made
    elsewhere (not reported to cursors) shows once the folder is listed
    again."""
    m = dbx(hfs_extra={'dir_cache_seconds': 1})
    m.m('a.txt').write_bytes(b'a')
    m.m('report.txt').write_bytes(b'r')
    m.flush()
    os.rename(m.m('a.txt'), m.m('a.tmp'))
    os.rename(m.m('a.tmp'), m.m('A.txt'))
    m.flush()
    assert fake.metadata(ROOT + '/a.txt')['name'] == 'A.txt'
    assert remote(fake, 'A.txt') == b'a'
    fake.move(ROOT + '/report.txt', ROOT + '/Report.txt')
    wait_until(lambda: _names(m.mnt) == ['A.txt', 'Report.txt'], 10,
               'the listing to show the new spelling')
    assert m.m('report.txt').read_bytes() == b'r'


def _walk(root):
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def test_trainer_run_and_new_machine_on_dropbox(dbx, fake, hfs):
    """The example trainer against the fake Dropbox; the metadata and the
    shared candle copies are made without uploading their bytes again;
    a second machine (empty cache) reads everything back and restores
    the candles in the background."""
    import subprocess
    trainer = Path(__file__).resolve().parents[2] / 'examples' / 'trainer.py'
    m = dbx(intervals=LONG_INTERVALS)
    r = subprocess.run([sys.executable, str(trainer), str(m.mnt), '--small',
                        '--seed', '7', '--date', '2026-11-20',
                        '--symbols', 'SOL-USDT,BTC-USDT'],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    written = _walk(m.mnt)
    fake.reset_stats()
    m.flush()
    st = fake.get_stats()
    uploaded = st['bytes_uploaded']
    run = 'models/training/2026-11-20/%s'
    for sym in ('SOL-USDT', 'BTC-USDT'):
        meta = json.loads(remote(fake, (run % sym) + '/model/model_metadata.json'))
        model = remote(fake, (run % sym) + '/model/model.bin')
        assert meta['content_hash'] == content_hash(model)
        assert meta['size'] == len(model)
        candles = [n for n in written if n.startswith((run % sym) + '/data/')
                   and n.endswith('.parquet')]
        assert candles
        for c in candles:
            shared = 'data/candles/%s/%s' % (sym, c.rsplit('/', 1)[1])
            assert remote(fake, shared) == written[c], shared
    assert st['routes'].get('files/copy_v2', 0) == 2
    # Every byte went up once: what the trainer wrote plus the two small
    # metadata files; the candle copies cost no upload.
    total = sum(len(v) for v in written.values())
    assert uploaded < total + 64 * 1024, (uploaded, total)
    for rel, data in written.items():
        assert remote(fake, rel) == data, rel
    m.unmount()

    # A new machine: empty cache, same Dropbox.
    m2 = dbx(name='machine2')
    def restored():
        rs = m2.status().get('restore', {})
        return rs.get('state') == 'done' and rs.get('files_done') == 2
    wait_until(restored, 20, 'the candles to be restored in the background')
    got = _walk(m2.mnt)
    for rel, data in written.items():
        assert got.get(rel) == data, rel

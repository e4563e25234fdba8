"""The opt-in Prometheus endpoint (metrics_listen) and its numbers in
status --json.

Scraped over HTTP from 127.0.0.1 and parsed with prometheus_client's own
parser (Debian's python3-prometheus-client): the text must be valid
exposition format, the names must follow the conventions (counters end in
_total, sizes in _bytes, times in _seconds), and the values must move with
real operations and agree with status --json.
"""

import os
import socket
import urllib.error
import urllib.request

import pytest

from hfsutil import LONG_INTERVALS, wait_until
from conftest import dropbox_mounts

parser = pytest.importorskip('prometheus_client.parser')

ROOT = '/Huracan'


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def scrape(port):
    """{(sample name, frozenset of labels): value}, and the families."""
    with urllib.request.urlopen('http://127.0.0.1:%d/metrics' % port,
                                timeout=10) as r:
        assert r.status == 200
        assert r.headers['Content-Type'].startswith('text/plain')
        text = r.read().decode('utf-8')
    fams = list(parser.text_string_to_metric_families(text))
    samples = {}
    for f in fams:
        for s in f.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, fams, text


def val(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def test_names_types_and_values_move(hfs):
    port = free_port()
    m = hfs(intervals=LONG_INTERVALS,
            hfs_extra={'metrics_listen': '127.0.0.1:%d' % port})
    samples, fams, text = scrape(port)
    types = {f.name: f.type for f in fams}
    for f in fams:
        assert f.name.startswith('huracanfs_'), f.name
        assert f.documentation, 'no HELP for %s' % f.name
        for s in f.samples:
            if f.type == 'counter':
                assert s.name.endswith('_total'), s.name
    # The parser strips _total from counter family names.
    for name in ('huracanfs_uploads', 'huracanfs_upload_failures',
                 'huracanfs_uploaded_bytes', 'huracanfs_downloaded_bytes',
                 'huracanfs_remote_requests', 'huracanfs_remote_retries',
                 'huracanfs_upload_retries', 'huracanfs_conflicts',
                 'huracanfs_fuse_requests'):
        assert types.get(name) == 'counter', (name, types.get(name))
    for name in ('huracanfs_pending_files', 'huracanfs_pending_bytes',
                 'huracanfs_cache_bytes', 'huracanfs_remote_reachable'):
        assert types.get(name) == 'gauge', (name, types.get(name))
    assert '# TYPE huracanfs_uploads_total counter' in text

    assert val(samples, 'huracanfs_uploads_total', category='models') == 0
    writes0 = val(samples, 'huracanfs_fuse_requests_total', op='write')

    m.m('models').mkdir()
    data = os.urandom(300_000)
    m.m('models/a.pkl').write_bytes(data)
    samples, _, _ = scrape(port)
    assert val(samples, 'huracanfs_pending_files', category='models') == 1
    assert val(samples, 'huracanfs_pending_bytes',
               category='models') == len(data)
    assert val(samples, 'huracanfs_fuse_requests_total',
               op='write') > writes0

    m.flush()
    samples, _, _ = scrape(port)
    assert val(samples, 'huracanfs_pending_files', category='models') == 0
    assert val(samples, 'huracanfs_uploads_total', category='models') == 1
    assert val(samples, 'huracanfs_uploaded_bytes_total',
               category='models') >= len(data)
    assert val(samples, 'huracanfs_last_upload_timestamp_seconds',
               category='models') > 0
    assert val(samples, 'huracanfs_remote_reachable') == 1

    # status --json carries the same numbers.
    st = m.status()
    cat = m.cat_status('models', st)
    assert cat['uploads_done'] == 1
    assert cat['bytes_uploaded'] == val(
        samples, 'huracanfs_uploaded_bytes_total', category='models')
    assert st['fuse_requests']['write'] >= val(
        samples, 'huracanfs_fuse_requests_total', op='write')
    for key in ('bytes_downloaded', 'remote_retries', 'upload_retries',
                'conflicts'):
        assert key in st['counters'], key
    # The cache gauges arrive with the first measure (the keeper thread).
    wait_until(lambda: m.status()['cache']['free_bytes'], 15,
               'the cache to be measured')
    samples, _, _ = scrape(port)
    assert val(samples, 'huracanfs_cache_free_bytes') > 0
    assert val(samples, 'huracanfs_cache_bytes') > 0

    # An upload that fails counts, and the remote shows unreachable.
    m.m('models/b.pkl').write_bytes(b'b' * 1000)
    m.take_remote_offline()
    r = m.flush(check=False)
    assert r.returncode != 0
    samples, _, _ = scrape(port)
    assert val(samples, 'huracanfs_upload_failures_total',
               category='models') >= 1
    assert val(samples, 'huracanfs_remote_reachable') == 0
    assert val(samples, 'huracanfs_remote_unreachable_since_seconds') > 0
    m.bring_remote_back()
    m.flush()
    samples, _, _ = scrape(port)
    assert val(samples, 'huracanfs_remote_reachable') == 1
    assert val(samples, 'huracanfs_uploads_total', category='models') == 2


def test_other_paths_and_methods(hfs):
    port = free_port()
    hfs(hfs_extra={'metrics_listen': '127.0.0.1:%d' % port})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen('http://127.0.0.1:%d/' % port, timeout=10)
    assert e.value.code == 404
    req = urllib.request.Request('http://127.0.0.1:%d/metrics' % port,
                                 data=b'x', method='POST')
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 405


def test_no_endpoint_unless_configured(mount):
    st = mount.status()
    assert 'counters' in st   # the numbers are in status --json anyway
    r = mount.run('check-config', '--config', mount.config, check=True)
    assert 'huracanfs.metrics_listen: (unset)' in r.stdout


@pytest.mark.log_errors_expected()
def test_public_address_refused_unless_allowed(hfs):
    m = hfs(start=False, hfs_extra={'metrics_listen': '0.0.0.0:9477'})
    rc, out, err = m.try_start()
    assert rc != 0
    assert 'not a loopback address' in err, err
    assert 'metrics_allow_public' in err, err
    m.hfs_extra['metrics_allow_public'] = True
    m.write_config()
    # Allowed now (checked without binding anything: tests listen on
    # 127.0.0.1 only).
    r = m.run('check-config', '--config', m.config)
    assert r.returncode == 0, r.stderr


@pytest.fixture
def dbxm(hfs, fake, ca):
    return dropbox_mounts(hfs, fake, ca)


def test_remote_requests_retries_and_bytes_down(dbxm, fake):
    port = free_port()
    m = dbxm(intervals=LONG_INTERVALS,
             hfs_extra={'metrics_listen': '127.0.0.1:%d' % port})
    data = os.urandom(200_000)
    fake.put_file(ROOT + '/remote.bin', data)
    # Two 503s before the upload goes through: two retries.
    fake.add_fault(route='files/upload', status=503, count=2)
    m.m('up.txt').write_bytes(b'up\n')
    m.flush()
    assert m.m('remote.bin').read_bytes() == data
    samples, _, _ = scrape(port)
    assert val(samples, 'huracanfs_remote_requests_total',
               endpoint='files/upload', code='5xx') == 2
    assert val(samples, 'huracanfs_remote_requests_total',
               endpoint='files/upload', code='2xx') == 1
    assert val(samples, 'huracanfs_remote_requests_total',
               endpoint='files/download', code='2xx') >= 1
    assert val(samples, 'huracanfs_remote_retries_total') >= 2
    assert val(samples, 'huracanfs_downloaded_bytes_total') >= len(data)
    assert m.status()['counters']['bytes_downloaded'] >= len(data)

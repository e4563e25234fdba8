"""Tests of the fake Dropbox server (run: /usr/bin/pytest-3 tests/fakedropbox).

They talk to it over real HTTP/HTTPS with urllib (http.client where the
transport itself is checked) and check the wire shapes of
shared/docs/dropbox-api.md.
"""

import base64
import hashlib
import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from .server import FakeDropbox, make_test_ca, DEFAULT_TOKEN
from .stone import content_hash
from .auth import pkce_challenge

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RUBY = REPO / 'tests/data/dropbox-content-hash/ruby.png'
RUBY_HASH = '78a5497e5094c82060997bd21c3a1233fb3e783c08c0b2ec9a3b32fcb5635e66'
PYTHON = '/usr/bin/python3' if os.path.exists('/usr/bin/python3') else sys.executable
MiB = 1024 * 1024
REV_RE = re.compile(r'^[0-9a-f]{9,}$')
TS_RE = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$')


# --------------------------------------------------------------------------
# Client helpers

class Reply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self):
        return json.loads(self.body)

    @property
    def result(self):
        return json.loads(self.headers['Dropbox-API-Result'])

    def __repr__(self):
        return 'Reply(%d, %r)' % (self.status, self.body[:300])


def arg_header(obj):
    """Dropbox-API-Arg encoding of dropbox-api.md §1.2 (ASCII, \\uXXXX)."""
    return json.dumps(obj, ensure_ascii=True, separators=(',', ':'))


class Client:
    def __init__(self, url, token=DEFAULT_TOKEN, ctx=None):
        self.url = url
        self.token = token
        self.ctx = ctx

    def _open(self, req, timeout=30):
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ctx) as r:
                return Reply(r.status, r.headers, r.read())
        except urllib.error.HTTPError as e:
            return Reply(e.code, e.headers, e.read())

    def _auth(self, headers, token):
        token = self.token if token is Ellipsis else token
        if token is not None:
            headers['Authorization'] = 'Bearer ' + token

    def rpc(self, route, arg=None, token=Ellipsis, content_type='application/json',
            raw=None, headers=None, timeout=30):
        h = dict(headers or {})
        self._auth(h, token)
        if content_type is not None:
            h['Content-Type'] = content_type
        data = raw if raw is not None else json.dumps(arg).encode()
        return self._open(urllib.request.Request(self.url + '/2/' + route, data=data,
                                                 headers=h, method='POST'), timeout)

    def void(self, route, token=Ellipsis):
        """A no-argument route the way Dropbox's curl examples call it."""
        h = {}
        self._auth(h, token)
        return self._open(urllib.request.Request(self.url + '/2/' + route, data=None,
                                                 headers=h, method='POST'))

    def upload(self, route, arg, data=b'', token=Ellipsis,
               content_type='application/octet-stream', headers=None):
        h = {'Dropbox-API-Arg': arg_header(arg)}
        h.update(headers or {})
        self._auth(h, token)
        if content_type is not None:
            h['Content-Type'] = content_type
        return self._open(urllib.request.Request(self.url + '/2/' + route, data=data,
                                                 headers=h, method='POST'))

    def download(self, arg, headers=None, token=Ellipsis):
        h = {'Dropbox-API-Arg': arg if isinstance(arg, str) else arg_header(arg)}
        h.update(headers or {})
        self._auth(h, token)
        return self._open(urllib.request.Request(self.url + '/2/files/download', data=None,
                                                 headers=h, method='POST'))

    def control(self, name, **kw):
        req = urllib.request.Request(self.url + '/__control/' + name,
                                     data=json.dumps(kw).encode(), method='POST')
        r = self._open(req)
        assert r.status == 200, r
        return r.json

    # conveniences
    def put(self, path, data, **kw):
        arg = {'path': path, 'mode': 'overwrite'}
        arg.update(kw)
        r = self.upload('files/upload', arg, data)
        assert r.status == 200, r
        return r.json

    def list_all(self, path='', **kw):
        r = self.rpc('files/list_folder', dict(path=path, **kw))
        assert r.status == 200, r
        entries, cursor, more = r.json['entries'], r.json['cursor'], r.json['has_more']
        while more:
            r = self.rpc('files/list_folder/continue', {'cursor': cursor})
            assert r.status == 200, r
            entries += r.json['entries']
            cursor, more = r.json['cursor'], r.json['has_more']
        return entries, cursor


def assert_error(r, status, summary_prefix):
    assert r.status == status, r
    assert r.headers['Content-Type'] == 'application/json'
    body = r.json
    assert set(body) >= {'error_summary', 'error'}
    assert re.fullmatch(re.escape(summary_prefix) + r'/\.+', body['error_summary']), body
    return body['error']


def assert_400(r, needle=''):
    assert r.status == 400, r
    assert r.headers['Content-Type'].startswith('text/plain')
    text = r.body.decode()
    assert text.startswith('Error in call to API function "'), text
    assert needle in text, text
    return text


@pytest.fixture
def fd():
    s = FakeDropbox().start()
    yield s
    s.stop()


@pytest.fixture
def c(fd):
    return Client(fd.url)


@pytest.fixture(scope='module')
def ca(tmp_path_factory):
    return make_test_ca(tmp_path_factory.mktemp('ca'))


# --------------------------------------------------------------------------
# Content hash

def test_content_hash_vectors():
    assert content_hash(RUBY.read_bytes()) == RUBY_HASH
    assert content_hash(b'') == 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
    z = bytes(4 * MiB)
    assert content_hash(z) == 'c7e946d101855255d919ef0c70718633adf77d3dfb3adeeecf5d0cb4e951be58'
    assert content_hash(z + b'\0') == '14a4d47f23a30177885d9820122f17d2d3a55fe63f7f5c27b95f689e0b2accd6'
    assert content_hash(z + z) == '03ae066c707c588592d9e27aa2444ca98423e0999024f1ceaa11a153790b37de'
    seq = bytes(range(251)) * (10 * MiB // 251 + 1)
    assert content_hash(seq[:10 * MiB]) == \
        '9b168152f37a1b2c33d9b26ca4a679d5f99f84f8c070fd3a4491d52cbfe96af4'
    blocks = ['2a846fa617c3361fc117e1c5c1e1838c336b6a5cef982c1a2d9bdf68f2f1992a',
              'c68469027410ea393eba6551b9fa1e26db775f00eae70a0c3c129a0011a39cf9',
              '7376192de020925ce6c5ef5a8a0405e931b0a9a8c75517aacd9ca24a8a56818b']
    assert hashlib.sha256(b''.join(bytes.fromhex(b) for b in blocks)).hexdigest() == \
        '485291fa0ee50c016982abbfa943957bcd231aae0492ccbaa22c58e3997b35e0'


def test_upload_ruby_and_download(c):
    data = RUBY.read_bytes()
    r = c.upload('files/upload', {'path': '/img/ruby.png', 'content_hash': RUBY_HASH}, data)
    assert r.status == 200, r
    m = r.json
    assert '.tag' not in m                      # declared type is FileMetadata
    assert m['name'] == 'ruby.png' and m['path_display'] == '/img/ruby.png'
    assert m['path_lower'] == '/img/ruby.png' and m['id'].startswith('id:')
    assert m['size'] == 57610 and m['content_hash'] == RUBY_HASH
    assert m['is_downloadable'] is True
    assert REV_RE.match(m['rev'])
    assert TS_RE.match(m['client_modified']) and TS_RE.match(m['server_modified'])
    d = c.download({'path': '/img/ruby.png'})
    assert d.status == 200 and d.body == data
    assert d.headers['Content-Type'] == 'application/octet-stream'
    assert int(d.headers['Content-Length']) == len(data)
    assert d.result == m
    assert d.headers['ETag']
    # the parent folder was created
    e, _ = c.list_all('')
    assert [x['.tag'] for x in e] == ['folder'] and e[0]['name'] == 'img'


# --------------------------------------------------------------------------
# Wire conventions: Content-Type, Dropbox-API-Arg, Authorization

def test_content_type_and_arg_errors(c):
    # urllib's default Content-Type for POST data (as curl's POSTFIELDS)
    r = c.rpc('files/list_folder', {'path': ''},
              content_type='application/x-www-form-urlencoded')
    assert_400(r, 'files/list_folder": Bad HTTP "Content-Type" header: '
                  '"application/x-www-form-urlencoded"')
    assert c.rpc('files/list_folder', {'path': ''},
                 content_type='application/json; charset=utf-8').status == 200
    assert_400(c.rpc('files/list_folder', raw=b'{"path": '), 'could not decode input as JSON')
    r = c.upload('files/upload', {'path': '/a.txt'}, b'x', content_type='application/json')
    assert_400(r, 'Expecting one of "application/octet-stream"')
    r = c.upload('files/upload', {'path': '/a.txt'}, b'', content_type=None)
    assert_400(r, 'Bad HTTP "Content-Type" header')
    # an empty upload body still needs the octet-stream Content-Type
    assert c.upload('files/upload', {'path': '/empty'}, b'').status == 200
    # downloads: no Content-Type, no body
    req_h = {'Dropbox-API-Arg': arg_header({'path': '/empty'}),
             'Content-Type': 'application/x-www-form-urlencoded'}
    r = c.download({'path': '/empty'}, headers=req_h)
    assert_400(r, 'non-empty HTTP "Content-Type" header')
    r = c.download('{"path": "/empty"')
    assert_400(r, 'HTTP header "Dropbox-API-Arg": could not decode input as JSON')
    req = urllib.request.Request(c.url + '/2/files/download', data=None, method='POST',
                                 headers={'Authorization': 'Bearer ' + c.token})
    assert_400(c._open(req), 'Must provide HTTP header "Dropbox-API-Arg"')


def test_argument_validation(c):
    assert_400(c.rpc('files/list_folder', {'path': '', 'bogus': 1}), "unknown field 'bogus'")
    assert_400(c.rpc('files/list_folder', {}), "missing required field 'path'")
    assert_400(c.rpc('files/list_folder', {'path': 3}), 'path: expected string, got integer')
    assert_400(c.rpc('files/list_folder', {'path': '', 'recursive': 'yes'}),
               'recursive: expected boolean')
    assert_400(c.rpc('files/list_folder', {'path': '', 'limit': 0}), 'limit')
    assert_400(c.rpc('files/list_folder', {'path': '', 'limit': 2001}), 'limit')
    assert_400(c.rpc('files/list_folder', {'path': 'relative'}), 'did not match pattern')
    assert_400(c.rpc('files/list_folder', {'path': '/'}),
               'Specify the root folder as an empty string')
    # get_metadata of the root is a 400 (ReadPath does not match "")
    assert_400(c.rpc('files/get_metadata', {'path': ''}), "path: '' did not match pattern")
    # trailing slash, empty component, dot components: path/malformed_path
    for p in ('/a/', '/a//b', '/a/./b', '/a/../b'):
        err = assert_error(c.rpc('files/get_metadata', {'path': p}), 409, 'path/malformed_path')
        assert err == {'.tag': 'path', 'path': {'.tag': 'malformed_path'}}
    r = c.upload('files/upload', {'path': '/x', 'mode': 'replace'}, b'x')
    assert_400(r, "HTTP header \"Dropbox-API-Arg\": mode: unknown tag 'replace'")
    r = c.upload('files/upload', {'path': '/x', 'mode': {'.tag': 'update', 'update': 'abc'}}, b'')
    assert_400(r, 'mode.update')
    r = c.upload('files/upload', {'path': '/x', 'client_modified': '2020-01-01T00:00:00.5Z'}, b'')
    assert_400(r, 'client_modified')
    # a lone surrogate is not valid Unicode
    r = c.upload('files/upload', {'path': '/x'}, b'', headers={
        'Dropbox-API-Arg': '{"path": "/\\ud83d.txt"}'})
    assert_400(r, 'Unicode')


def test_auth_errors(fd, c):
    r = c.rpc('files/list_folder', {'path': ''}, token=None)
    assert_400(r, 'Must provide HTTP header "Authorization"')
    r = c.rpc('files/list_folder', {'path': ''}, token=None,
              headers={'Authorization': 'Basic Zm9vOmJhcg=='})
    assert_400(r, 'Expecting "Bearer <oauth2-access-token>"')
    r = c.rpc('files/list_folder', {'path': ''}, token='nope')
    assert r.status == 401
    assert r.json['error'] == {'.tag': 'invalid_access_token'}
    assert re.fullmatch(r'invalid_access_token/\.+', r.json['error_summary'])
    fd.add_token('short', expires_in=0.2)
    assert c.rpc('files/list_folder', {'path': ''}, token='short').status == 200
    time.sleep(0.3)
    r = c.rpc('files/list_folder', {'path': ''}, token='short')
    assert r.status == 401 and r.json['error'] == {'.tag': 'expired_access_token'}
    assert re.fullmatch(r'expired_access_token/\.+', r.json['error_summary'])
    # longpoll must come without Authorization
    cur = c.rpc('files/list_folder/get_latest_cursor', {'path': ''}).json['cursor']
    r = c.rpc('files/list_folder/longpoll', {'cursor': cur, 'timeout': 30})
    assert_400(r, 'Authorization')


# --------------------------------------------------------------------------
# Paths: case, non-ASCII

def test_case_insensitive_case_preserving(c):
    c.put('/Docs/ReadMe.TXT', b'hello')
    r = c.rpc('files/get_metadata', {'path': '/DOCS/readme.txt'})
    assert r.status == 200
    m = r.json
    assert m['.tag'] == 'file' and m['name'] == 'ReadMe.TXT'
    assert m['path_display'] == '/Docs/ReadMe.TXT' and m['path_lower'] == '/docs/readme.txt'
    # a new file under the existing folder spelled differently keeps the folder's case
    m2 = c.put('/docs/Other.txt', b'x')
    assert m2['path_display'] == '/Docs/Other.txt'
    # an overwrite spelled differently keeps the stored name
    m3 = c.put('/DOCS/README.txt', b'changed')
    assert m3['name'] == 'ReadMe.TXT' and m3['id'] == m['id'] and m3['rev'] != m['rev']
    assert c.download({'path': '/docs/readme.TXT'}).body == b'changed'
    # lookup by id
    assert c.rpc('files/get_metadata', {'path': m['id']}).json['name'] == 'ReadMe.TXT'
    # add mode: a differently cased name is the same file -> conflict
    r = c.upload('files/upload', {'path': '/docs/readme.txt'}, b'other')
    assert_error(r, 409, 'path/conflict/file')


def test_lowercase_rule_is_dropboxs(c):
    """path_lower lowers each character by its simple mapping (as Python 2's
    unicode.lower() did): É and é are one name, a final capital sigma is σ
    (not ς), İ is i (not i + U+0307), ß is not ss; nothing is normalized."""
    m = c.put('/CAF\u00c9', b'1')
    assert m['path_lower'] == '/caf\u00e9' and m['name'] == 'CAF\u00c9'
    assert c.download({'path': '/Caf\u00e9'}).body == b'1'
    assert_error(c.upload('files/upload', {'path': '/caf\u00e9'}, b'2'), 409,
                 'path/conflict/file')
    m = c.put('/\u039f\u0394\u039f\u03a3', b's')      # ΟΔΟΣ
    assert m['path_lower'] == '/\u03bf\u03b4\u03bf\u03c3'  # οδοσ, not οδος
    # ς is a letter of its own: a second file
    m2 = c.put('/\u03bf\u03b4\u03bf\u03c2', b'f')
    assert m2['id'] != m['id']
    m = c.put('/\u0130stanbul', b'i')                    # İstanbul
    assert m['path_lower'] == '/istanbul'
    assert c.download({'path': '/ISTANBUL'}).body == b'i'
    c.put('/Stra\u00dfe', b'ss')
    r = c.rpc('files/get_metadata', {'path': '/strasse'})
    assert_error(r, 409, 'path/not_found')
    # the decomposed spelling is another name: no normalization
    r = c.rpc('files/get_metadata', {'path': '/cafe\u0301'})
    assert_error(r, 409, 'path/not_found')


def test_non_ascii_names(c):
    path = '/Caf\u00e9/na\u00efve \U0001F600.txt'
    hdr = arg_header({'path': path, 'mode': 'add'})
    assert '\\u00e9' in hdr and '\\ud83d\\ude00' in hdr and hdr.isascii()
    r = c.upload('files/upload', None, b'smile', headers={'Dropbox-API-Arg': hdr})
    assert r.status == 200, r
    assert r.json['name'] == 'na\u00efve \U0001F600.txt'
    assert r.json['path_display'] == path
    # jansson writes uppercase hex: also valid JSON
    up = '{"path":"/Caf\\u00E9/NA\\u00CFVE \\uD83D\\uDE00.TXT"}'
    d = c.download(up)
    assert d.status == 200 and d.body == b'smile'
    raw = d.headers['Dropbox-API-Result']
    assert raw.isascii() and '\\ud83d\\ude00' in raw
    assert d.result['name'] == 'na\u00efve \U0001F600.txt'
    # U+007F must be escaped too; names may not contain it
    r = c.upload('files/upload', {'path': '/del\x7f.txt'}, b'')
    assert_error(r, 409, 'path/malformed_path')
    # raw UTF-8 in the header is not accepted
    req = urllib.request.Request(c.url + '/2/files/download', data=None, method='POST',
                                 headers={'Authorization': 'Bearer ' + c.token})
    req.headers['Dropbox-API-Arg'] = '{"path": "/Caf\u00e9"}'.encode('utf-8').decode('latin-1')
    assert_400(c._open(req), 'Dropbox-API-Arg')
    # the RPC body is plain JSON: UTF-8 or escapes
    r = c.rpc('files/list_folder', raw=json.dumps({'path': '/caf\u00e9'},
                                                  ensure_ascii=False).encode())
    assert r.status == 200 and r.json['entries'][0]['name'] == 'na\u00efve \U0001F600.txt'


def test_write_name_rules(c):
    for name, tag in (('desktop.ini', 'disallowed_name'), ('.DS_Store', 'disallowed_name'),
                      ('trailing ', 'malformed_path'), ('back\\slash', 'malformed_path'),
                      ('x' * 256, 'malformed_path')):
        r = c.upload('files/upload', {'path': '/d/' + name}, b'')
        err = assert_error(r, 409, 'path/' + tag)
        assert err['reason'] == {'.tag': tag} and 'upload_session_id' in err
    assert c.put('/d/' + 'x' * 255, b'')['name'] == 'x' * 255


# --------------------------------------------------------------------------
# Listing, cursors, longpoll

def test_paging_2500_entries(fd, c):
    for i in range(2500):
        fd.put_file('/big/f%04d.txt' % i, b'%d' % i)
    r = c.rpc('files/list_folder', {'path': '/big', 'limit': 1000})
    assert r.status == 200
    pages = [r.json]
    while pages[-1]['has_more']:
        r = c.rpc('files/list_folder/continue', {'cursor': pages[-1]['cursor']})
        assert r.status == 200
        pages.append(r.json)
    assert [len(p['entries']) for p in pages] == [1000, 1000, 500]
    names = [e['name'] for p in pages for e in p['entries']]
    assert sorted(names) == ['f%04d.txt' % i for i in range(2500)]
    cursor = pages[-1]['cursor']
    # listing complete: continue returns only changes since
    r = c.rpc('files/list_folder/continue', {'cursor': cursor})
    assert r.json['entries'] == [] and r.json['has_more'] is False
    cursor = r.json['cursor']
    fd.delete('/big/f0007.txt')
    fd.put_file('/big/f0001.txt', b'new content')
    fd.put_file('/big/new.txt', b'n')
    fd.put_file('/elsewhere.txt', b'not in scope')
    r = c.rpc('files/list_folder/continue', {'cursor': cursor})
    ents = r.json['entries']
    assert [(e['.tag'], e['name']) for e in ents] == [
        ('deleted', 'f0007.txt'), ('file', 'f0001.txt'), ('file', 'new.txt')]
    assert ents[0] == {'.tag': 'deleted', 'name': 'f0007.txt', 'path_lower': '/big/f0007.txt',
                       'path_display': '/big/f0007.txt'}


def test_recursive_listing_and_cursors(fd, c):
    fd.put_file('/A/b/c.txt', b'c')
    fd.put_file('/A/d.txt', b'd')
    fd.put_file('/top.txt', b't')
    e, cur = c.list_all('', recursive=True)
    assert [x['path_display'] for x in e] == ['/A', '/A/b', '/A/b/c.txt', '/A/d.txt', '/top.txt']
    # recursive listing of a subfolder includes the folder itself first
    e, _ = c.list_all('/a', recursive=True)
    assert [x['path_lower'] for x in e] == ['/a', '/a/b', '/a/b/c.txt', '/a/d.txt']
    # non-recursive: direct children only
    e, _ = c.list_all('/a')
    assert [x['name'] for x in e] == ['b', 'd.txt']
    assert_error(c.rpc('files/list_folder', {'path': '/nope'}), 409, 'path/not_found')
    assert_error(c.rpc('files/list_folder', {'path': '/top.txt'}), 409, 'path/not_folder')
    # a recursive delete reports every path below
    fd.delete('/A')
    r = c.rpc('files/list_folder/continue', {'cursor': cur})
    assert sorted(x['path_lower'] for x in r.json['entries']) == \
        ['/a', '/a/b', '/a/b/c.txt', '/a/d.txt']
    assert {x['.tag'] for x in r.json['entries']} == {'deleted'}
    # get_latest_cursor sees only the future
    lc = c.rpc('files/list_folder/get_latest_cursor', {'path': '', 'recursive': True})
    fd.put_file('/later.txt', b'l')
    r = c.rpc('files/list_folder/continue', {'cursor': lc.json['cursor']})
    assert [x['name'] for x in r.json['entries']] == ['later.txt']
    # include_deleted lists tombstones
    e, _ = c.list_all('', include_deleted=True)
    assert ('deleted', 'A') in [(x['.tag'], x['name']) for x in e]
    r = c.rpc('files/get_metadata', {'path': '/a/d.txt', 'include_deleted': True})
    assert r.json['.tag'] == 'deleted'
    assert_error(c.rpc('files/get_metadata', {'path': '/a/d.txt'}), 409, 'path/not_found')
    # invalid cursors -> reset
    for bad in ('garbage', cur[:-3] + 'AAA'):
        err = assert_error(c.rpc('files/list_folder/continue', {'cursor': bad}), 409, 'reset')
        assert err == {'.tag': 'reset'}
    fd.invalidate_cursors()
    assert_error(c.rpc('files/list_folder/continue', {'cursor': lc.json['cursor']}), 409, 'reset')


def test_paging_stays_consistent_across_changes(fd, c):
    for i in range(10):
        fd.put_file('/p/%02d' % i, b'x')
    r = c.rpc('files/list_folder', {'path': '/p', 'limit': 4})
    seen = [e['name'] for e in r.json['entries']]
    fd.put_file('/p/00', b'changed')          # already listed: reported again later
    fd.delete('/p/09')                        # not listed yet: vanishes
    cur = r.json['cursor']
    while True:
        r = c.rpc('files/list_folder/continue', {'cursor': cur}).json
        seen += [(e['.tag'], e['name']) if e['.tag'] == 'deleted' else e['name']
                 for e in r['entries']]
        cur = r['cursor']
        if not r['has_more']:
            break
    r = c.rpc('files/list_folder/continue', {'cursor': cur}).json
    tail = [(e['.tag'], e['name']) for e in r['entries']]
    assert seen[:9] == ['%02d' % i for i in range(9)]
    assert ('file', '00') in tail and ('deleted', '09') in tail


def test_longpoll(fd, c):
    cfg = c.control('config', longpoll_time_scale=0.02)     # 30 s -> 0.6 s
    assert cfg['longpoll_time_scale'] == 0.02
    nc = Client(fd.url, token=None)
    cur = c.rpc('files/list_folder/get_latest_cursor', {'path': ''}).json
    t0 = time.monotonic()
    r = nc.rpc('files/list_folder/longpoll', {'cursor': cur['cursor'], 'timeout': 30})
    assert r.status == 200 and r.json == {'changes': False}
    assert 0.5 <= time.monotonic() - t0 < 3
    assert_400(nc.rpc('files/list_folder/longpoll', {'cursor': cur['cursor'], 'timeout': 10}),
               'timeout')
    fd.set_config(longpoll_time_scale=1.0, longpoll_backoff=5)
    threading.Timer(0.3, fd.put_file, args=('/x.txt', b'x')).start()
    t0 = time.monotonic()
    r = nc.rpc('files/list_folder/longpoll', {'cursor': cur['cursor']})
    assert r.json == {'changes': True, 'backoff': 5}
    assert time.monotonic() - t0 < 5
    err = assert_error(nc.rpc('files/list_folder/longpoll', {'cursor': 'bogus'}), 409, 'reset')
    assert err == {'.tag': 'reset'}


# --------------------------------------------------------------------------
# Upload

def test_upload_modes_and_conflicts(c):
    m1 = c.upload('files/upload', {'path': '/f.txt'}, b'one').json
    # identical content in add mode: no conflict, nothing written
    r = c.upload('files/upload', {'path': '/f.txt', 'mode': 'add'}, b'one')
    assert r.status == 200 and r.json['rev'] == m1['rev']
    # ... unless strict_conflict
    r = c.upload('files/upload', {'path': '/f.txt', 'strict_conflict': True}, b'one')
    assert_error(r, 409, 'path/conflict/file')
    r = c.upload('files/upload', {'path': '/f.txt'}, b'two')
    err = assert_error(r, 409, 'path/conflict/file')
    assert err['.tag'] == 'path' and err['reason'] == {'.tag': 'conflict',
                                                       'conflict': {'.tag': 'file'}}
    sid = err['upload_session_id']
    # the data of a failed upload can be committed from its session
    r = c.upload('files/upload_session/finish', {'cursor': {'session_id': sid, 'offset': 3},
                                                 'commit': {'path': '/from-session.txt'}})
    assert r.status == 200 and r.json['size'] == 3
    assert c.download({'path': '/from-session.txt'}).body == b'two'
    r = c.upload('files/upload', {'path': '/f.txt', 'autorename': True}, b'two')
    assert r.json['name'] == 'f (1).txt'
    r = c.upload('files/upload', {'path': '/F.TXT', 'mode': 'overwrite'}, b'three')
    m2 = r.json
    assert m2['rev'] != m1['rev'] and m2['id'] == m1['id'] and m2['name'] == 'f.txt'
    r = c.upload('files/upload', {'path': '/f.txt', 'mode': {'.tag': 'update',
                                                             'update': m1['rev']}}, b'four')
    assert_error(r, 409, 'path/conflict/file')
    r = c.upload('files/upload', {'path': '/f.txt', 'mode': {'.tag': 'update',
                                                             'update': m2['rev']}}, b'four')
    assert r.status == 200 and r.json['rev'] not in (m1['rev'], m2['rev'])
    r = c.upload('files/upload', {'path': '/f.txt', 'autorename': True,
                                  'mode': {'.tag': 'update', 'update': m2['rev']}}, b'five')
    assert 'conflicted copy' in r.json['name']
    # folder in the way, file as an ancestor
    c.rpc('files/create_folder_v2', {'path': '/dir'})
    assert_error(c.upload('files/upload', {'path': '/dir', 'mode': 'overwrite'}, b''), 409,
                 'path/conflict/folder')
    assert_error(c.upload('files/upload', {'path': '/f.txt/sub'}, b''), 409,
                 'path/conflict/file_ancestor')
    # client_modified is stored as given
    r = c.upload('files/upload', {'path': '/t.txt', 'client_modified': '2001-02-03T04:05:06Z'}, b'')
    assert r.json['client_modified'] == '2001-02-03T04:05:06Z'
    assert r.json['content_hash'] == content_hash(b'')


def test_upload_content_hash_check(c):
    data = b'payload'
    r = c.upload('files/upload', {'path': '/h.txt', 'content_hash': content_hash(b'other')}, data)
    assert assert_error(r, 409, 'content_hash_mismatch') == {'.tag': 'content_hash_mismatch'}
    assert_error(c.rpc('files/get_metadata', {'path': '/h.txt'}), 409, 'path/not_found')
    r = c.upload('files/upload', {'path': '/h.txt', 'content_hash': content_hash(data)}, data)
    assert r.status == 200
    # plain SHA-256 is not the content hash
    r = c.upload('files/upload', {'path': '/h2.txt',
                                  'content_hash': hashlib.sha256(data).hexdigest()}, data)
    assert_error(r, 409, 'content_hash_mismatch')


def test_payload_too_large(fd, c):
    fd.set_config(max_upload_body=1000)
    r = c.upload('files/upload', {'path': '/big'}, b'x' * 1001)
    assert assert_error(r, 409, 'payload_too_large') == {'.tag': 'payload_too_large'}
    r = c.upload('files/upload_session/start', {}, b'x' * 1001)
    assert_error(r, 409, 'payload_too_large')
    assert c.upload('files/upload', {'path': '/ok'}, b'x' * 1000).status == 200


def test_upload_session_and_incorrect_offset(fd, c):
    data = os.urandom(300000)
    sid = c.upload('files/upload_session/start', {}, data[:100000]).json['session_id']
    cur = {'session_id': sid, 'offset': 100000}
    # the reply to this append is lost although the server stored the data
    fd.add_fault(route='files/upload_session/append_v2', lose_response=True)
    with pytest.raises((http.client.HTTPException, urllib.error.URLError, ConnectionError)):
        c.upload('files/upload_session/append_v2', {'cursor': cur}, data[100000:200000])
    # the client retries the same chunk: incorrect_offset tells where to resume
    r = c.upload('files/upload_session/append_v2', {'cursor': cur}, data[100000:200000])
    err = assert_error(r, 409, 'incorrect_offset')
    assert err == {'.tag': 'incorrect_offset', 'correct_offset': 200000}
    r = c.upload('files/upload_session/append_v2',
                 {'cursor': {'session_id': sid, 'offset': 200000}, 'close': False,
                  'content_hash': content_hash(data[200000:250000])}, data[200000:250000])
    assert r.status == 200 and r.json is None and r.body == b'null'
    # finish at a wrong offset
    r = c.upload('files/upload_session/finish', {'cursor': {'session_id': sid, 'offset': 1},
                                                 'commit': {'path': '/s.bin'}}, data[250000:])
    err = assert_error(r, 409, 'lookup_failed/incorrect_offset')
    assert err == {'.tag': 'lookup_failed',
                   'lookup_failed': {'.tag': 'incorrect_offset', 'correct_offset': 250000}}
    r = c.upload('files/upload_session/finish', {'cursor': {'session_id': sid, 'offset': 250000},
                                                 'commit': {'path': '/s.bin'}}, data[250000:])
    assert r.status == 200 and r.json['content_hash'] == content_hash(data)
    assert c.download({'path': '/s.bin'}).body == data
    # the session is gone
    r = c.upload('files/upload_session/append_v2', {'cursor': {'session_id': sid,
                                                               'offset': 300000}}, b'')
    assert assert_error(r, 409, 'not_found') == {'.tag': 'not_found'}
    # closed sessions take no more data
    sid = c.upload('files/upload_session/start', {'close': True}, b'abc').json['session_id']
    r = c.upload('files/upload_session/append_v2', {'cursor': {'session_id': sid, 'offset': 3}},
                 b'd')
    assert assert_error(r, 409, 'closed') == {'.tag': 'closed'}
    r = c.upload('files/upload_session/append_v2',
                 {'cursor': {'session_id': 'pid_upload_session:nope', 'offset': 0}}, b'')
    assert_error(r, 409, 'not_found')
    # a finish that fails on the path can be retried on the same session
    c.put('/taken', b'x')
    fin = {'cursor': {'session_id': sid, 'offset': 3}, 'commit': {'path': '/taken'}}
    err = assert_error(c.upload('files/upload_session/finish', fin), 409, 'path/conflict/file')
    assert err == {'.tag': 'path', 'path': {'.tag': 'conflict', 'conflict': {'.tag': 'file'}}}
    fin['commit']['path'] = '/free'
    assert c.upload('files/upload_session/finish', fin).json['size'] == 3
    # content_hash of one append covers only that request's body
    sid = c.upload('files/upload_session/start', {}, b'').json['session_id']
    r = c.upload('files/upload_session/append_v2',
                 {'cursor': {'session_id': sid, 'offset': 0},
                  'content_hash': content_hash(b'abcd')}, b'abcX')
    assert_error(r, 409, 'content_hash_mismatch')
    assert c.upload('files/upload_session/append_v2',
                    {'cursor': {'session_id': sid, 'offset': 0}}, b'abcd').status == 200


def test_concurrent_session(c):
    B = 4 * MiB
    data = os.urandom(2 * B + 10)
    r = c.upload('files/upload_session/start', {'session_type': 'concurrent'}, b'x')
    assert_error(r, 409, 'concurrent_session_data_not_allowed')
    r = c.upload('files/upload_session/start', {'session_type': 'concurrent', 'close': True})
    assert_error(r, 409, 'concurrent_session_close_not_allowed')
    sid = c.upload('files/upload_session/start',
                   {'session_type': {'.tag': 'concurrent'}}).json['session_id']
    app = lambda off, chunk, close=False: c.upload(
        'files/upload_session/append_v2',
        {'cursor': {'session_id': sid, 'offset': off}, 'close': close}, chunk)
    assert_error(app(5, b'x'), 409, 'concurrent_session_invalid_offset')
    assert_error(app(0, b'x' * 10), 409, 'concurrent_session_invalid_data_size')
    assert app(2 * B, data[2 * B:], close=True).status == 200      # out of order
    fin = {'cursor': {'session_id': sid, 'offset': len(data)}, 'commit': {'path': '/c.bin'}}
    assert_error(c.upload('files/upload_session/finish', fin), 409,
                 'concurrent_session_missing_data')
    assert app(B, data[B:2 * B]).status == 200
    assert app(0, data[:B]).status == 200
    r = c.upload('files/upload_session/finish', fin)
    assert r.status == 200 and r.json['content_hash'] == content_hash(data)


def test_finish_batch(fd, c):
    def session(data, close=True):
        return c.upload('files/upload_session/start', {'close': close}, data).json['session_id']
    entries = []
    for i, close in enumerate([True, True, False, True]):
        data = b'file %d' % i
        entries.append({'cursor': {'session_id': session(data, close), 'offset': len(data)},
                        'commit': {'path': '/batch/%d.txt' % i, 'mode': 'add'}})
    entries[3]['cursor']['offset'] = 1
    r = c.rpc('files/upload_session/finish_batch_v2', {'entries': entries})
    assert r.status == 200, r
    res = r.json['entries']
    assert [e['.tag'] for e in res] == ['success', 'success', 'failure', 'failure']
    assert res[0]['name'] == '0.txt' and res[1]['path_display'] == '/batch/1.txt'
    assert res[0]['content_hash'] == content_hash(b'file 0')
    assert res[2]['failure'] == {'.tag': 'lookup_failed', 'lookup_failed': {'.tag': 'not_closed'}}
    assert res[3]['failure'] == {'.tag': 'lookup_failed', 'lookup_failed': {
        '.tag': 'incorrect_offset', 'correct_offset': 6}}
    # a finish_batch_v2 is an RPC: upload-style calls are refused
    r = c.upload('files/upload_session/finish_batch_v2', {'entries': []}, b'')
    assert_400(r, 'Content-Type')
    assert_400(c.rpc('files/upload_session/finish_batch_v2',
                     {'entries': [entries[0]] * 1001}), 'entries')
    # per-entry too_many_write_operations
    ents = []
    for i in range(3):
        ents.append({'cursor': {'session_id': session(b'x%d' % i), 'offset': 2},
                     'commit': {'path': '/tmwo/%d' % i}})
    fd.add_fault(route='files/upload_session/finish_batch_v2',
                 batch_entry_error='too_many_write_operations', entries=[1])
    res = c.rpc('files/upload_session/finish_batch_v2', {'entries': ents}).json['entries']
    assert [e['.tag'] for e in res] == ['success', 'failure', 'success']
    assert res[1]['failure'] == {'.tag': 'too_many_write_operations'}
    # the failed entry can be retried
    res = c.rpc('files/upload_session/finish_batch_v2', {'entries': [ents[1]]}).json['entries']
    assert res[0]['.tag'] == 'success'
    # v1 finish_batch + check
    ent = {'cursor': {'session_id': session(b'v1'), 'offset': 2}, 'commit': {'path': '/v1.txt'}}
    r = c.rpc('files/upload_session/finish_batch', {'entries': [ent]})
    assert r.json['.tag'] == 'async_job_id'
    job = r.json['async_job_id']
    r = c.rpc('files/upload_session/finish_batch/check', {'async_job_id': job})
    assert r.json == {'.tag': 'in_progress'}
    r = c.rpc('files/upload_session/finish_batch/check', {'async_job_id': job})
    assert r.json['.tag'] == 'complete' and r.json['entries'][0]['.tag'] == 'success'
    err = assert_error(c.rpc('files/upload_session/finish_batch/check', {'async_job_id': 'x'}),
                       409, 'invalid_async_job_id')
    assert err == {'.tag': 'invalid_async_job_id'}
    # start_batch
    ids = c.rpc('files/upload_session/start_batch', {'num_sessions': 3}).json['session_ids']
    assert len(set(ids)) == 3
    assert c.upload('files/upload_session/append_v2',
                    {'cursor': {'session_id': ids[0], 'offset': 0}, 'close': True},
                    b'zz').status == 200
    assert_400(c.rpc('files/upload_session/start_batch', {'num_sessions': 0}), 'num_sessions')


# --------------------------------------------------------------------------
# Download

def test_range_download(fd, c):
    data = bytes(range(256)) * 40
    m = c.put('/r.bin', data)
    r = c.download({'path': '/r.bin'}, {'Range': 'bytes=10-19'})
    assert r.status == 206 and r.body == data[10:20]
    assert r.headers['Content-Range'] == 'bytes 10-19/%d' % len(data)
    assert r.headers['Content-Length'] == '10'
    assert r.result['size'] == len(data)
    r = c.download({'path': '/r.bin'}, {'Range': 'bytes=10000-'})
    assert r.status == 206 and r.body == data[10000:]
    r = c.download({'path': '/r.bin'}, {'Range': 'bytes=-5'})
    assert r.status == 206 and r.body == data[-5:]
    assert r.headers['Content-Range'] == 'bytes %d-%d/%d' % (len(data) - 5, len(data) - 1,
                                                            len(data))
    r = c.download({'path': '/r.bin'}, {'Range': 'bytes=10200-99999'})
    assert r.status == 206 and r.body == data[10200:]
    r = c.download({'path': '/r.bin'}, {'Range': 'bytes=20000-'})
    assert r.status == 416 and r.headers['Content-Range'] == 'bytes */%d' % len(data)
    r = c.download({'path': '/r.bin'}, {'Range': 'bytes=5-1'})
    assert r.status == 200 and r.body == data
    etag = r.headers['ETag']
    r = c.download({'path': '/r.bin'}, {'If-None-Match': etag})
    assert r.status == 304 and r.body == b''
    assert c.download({'path': m['id']}).body == data
    assert c.download({'path': 'rev:' + m['rev']}).body == data
    c.put('/r.bin', b'new')
    assert c.download({'path': 'rev:' + m['rev']}).body == data
    assert c.download({'path': '/r.bin'}, {'If-None-Match': etag}).status == 200
    c.rpc('files/create_folder_v2', {'path': '/folder'})
    err = assert_error(c.download({'path': '/folder'}), 409, 'path/not_file')
    assert err == {'.tag': 'path', 'path': {'.tag': 'not_file'}}
    assert_error(c.download({'path': '/missing'}), 409, 'path/not_found')


# --------------------------------------------------------------------------
# Namespace operations

def test_create_delete_move_copy(fd, c):
    r = c.rpc('files/create_folder_v2', {'path': '/Proj/Sub'})
    m = r.json['metadata']
    assert '.tag' not in m and m['path_display'] == '/Proj/Sub' and m['id'].startswith('id:')
    assert_error(c.rpc('files/create_folder_v2', {'path': '/proj/sub'}), 409,
                 'path/conflict/folder')
    r = c.rpc('files/create_folder_v2', {'path': '/proj/sub', 'autorename': True})
    assert r.json['metadata']['name'] == 'sub (1)'
    assert_400(c.rpc('files/create_folder_v2', {'path': m['id']}), 'did not match pattern')
    f = c.put('/Proj/Sub/file.txt', b'data')
    # move: never overwrites
    c.put('/other.txt', b'o')
    err = assert_error(c.rpc('files/move_v2', {'from_path': '/other.txt',
                                               'to_path': '/proj/sub/FILE.txt'}),
                       409, 'to/conflict/file')
    assert err == {'.tag': 'to', 'to': {'.tag': 'conflict', 'conflict': {'.tag': 'file'}}}
    err = assert_error(c.rpc('files/move_v2', {'from_path': '/nope', 'to_path': '/x'}), 409,
                       'from_lookup/not_found')
    assert err == {'.tag': 'from_lookup', 'from_lookup': {'.tag': 'not_found'}}
    err = assert_error(c.rpc('files/move_v2', {'from_path': '/Proj', 'to_path': '/proj/sub/in'}),
                       409, 'cant_move_folder_into_itself')
    r = c.rpc('files/move_v2', {'from_path': '/Proj', 'to_path': '/Moved/P2'})
    mm = r.json['metadata']
    assert mm['.tag'] == 'folder' and mm['path_display'] == '/Moved/P2'
    g = c.rpc('files/get_metadata', {'path': '/moved/p2/sub/file.txt'}).json
    assert g['id'] == f['id'] and g['path_display'] == '/Moved/P2/Sub/file.txt'
    # case-only rename: accepted, but nothing changes (dropbox-api.md §3)
    r = c.rpc('files/move_v2', {'from_path': '/other.txt', 'to_path': '/OTHER.TXT'})
    assert r.status == 200 and r.json['metadata']['name'] == 'other.txt'
    assert c.rpc('files/get_metadata', {'path': '/other.txt'}).json['name'] == 'other.txt'
    # copy gives new ids
    r = c.rpc('files/copy_v2', {'from_path': '/moved', 'to_path': '/Copy'})
    assert r.status == 200
    cp = c.rpc('files/get_metadata', {'path': '/copy/p2/sub/file.txt'}).json
    assert cp['id'] != f['id'] and cp['content_hash'] == f['content_hash']
    assert_error(c.rpc('files/copy_v2', {'from_path': '/other.txt', 'to_path': '/other.txt'}),
                 409, 'to/conflict/file')
    # delete: parent_rev, recursive, not_found
    err = assert_error(c.rpc('files/delete_v2', {'path': '/other.txt',
                                                 'parent_rev': '0123456789abcdef'}),
                       409, 'path_write/conflict/file')
    o = c.rpc('files/get_metadata', {'path': '/other.txt'}).json
    r = c.rpc('files/delete_v2', {'path': '/other.txt', 'parent_rev': o['rev']})
    assert r.json['metadata']['.tag'] == 'file' and r.json['metadata']['rev'] == o['rev']
    r = c.rpc('files/delete_v2', {'path': '/copy'})
    assert r.json['metadata']['.tag'] == 'folder'
    assert_error(c.rpc('files/get_metadata', {'path': '/copy/p2'}), 409, 'path/not_found')
    err = assert_error(c.rpc('files/delete_v2', {'path': '/copy'}), 409, 'path_lookup/not_found')
    assert err == {'.tag': 'path_lookup', 'path_lookup': {'.tag': 'not_found'}}
    assert [x['path_display'] for x in fd.tree()] == ['/Moved', '/Moved/P2', '/Moved/P2/Sub',
                                                      '/Moved/P2/sub (1)',
                                                      '/Moved/P2/Sub/file.txt']


def _poll_delete_job(c, launch):
    """Polls a delete_batch launch reply; returns (polls, final reply)."""
    assert launch['.tag'] == 'async_job_id' and launch['async_job_id'].startswith('dbjid:')
    polls = 0
    while True:
        r = c.rpc('files/delete_batch/check', {'async_job_id': launch['async_job_id']})
        assert r.status == 200, r
        polls += 1
        if r.json['.tag'] != 'in_progress':
            return polls, r.json
        assert r.json == {'.tag': 'in_progress'} and polls < 10


def test_delete_batch(fd, c):
    a = c.put('/d/a.txt', b'a')
    b = c.put('/d/b.txt', b'b')
    c.put('/d/sub/x.txt', b'x')
    c.put('/d/c.txt', b'c')
    fd.set_config(batch_check_in_progress=2)
    r = c.rpc('files/delete_batch', {'entries': [
        {'path': '/d/a.txt', 'parent_rev': a['rev']},
        {'path': '/d/B.TXT', 'parent_rev': '0123456789abcdef'},   # another rev: kept
        {'path': '/d/nothing'},
        {'path': '/d/sub'},                                       # folders: recursive
        {'path': '/d/sub2', 'parent_rev': b['rev']},
    ]})
    assert r.status == 200, r
    polls, done = _poll_delete_job(c, r.json)
    assert polls == 3 and done['.tag'] == 'complete'
    e = done['entries']
    assert [x['.tag'] for x in e] == ['success', 'failure', 'failure', 'success', 'failure']
    assert e[0]['metadata']['.tag'] == 'file' and e[0]['metadata']['rev'] == a['rev']
    assert e[1]['failure'] == {'.tag': 'path_write', 'path_write': {
        '.tag': 'conflict', 'conflict': {'.tag': 'file'}}}
    assert e[2]['failure'] == {'.tag': 'path_lookup', 'path_lookup': {'.tag': 'not_found'}}
    assert e[3]['metadata']['.tag'] == 'folder'
    assert e[4]['failure']['path_lookup'] == {'.tag': 'not_found'}
    assert [x['path_lower'] for x in fd.tree()] == ['/d', '/d/b.txt', '/d/c.txt']
    # A job id of another kind, or unknown, is refused; so is the other route's.
    assert_error(c.rpc('files/delete_batch/check', {'async_job_id': 'dbjid:nope'}), 409,
                 'invalid_async_job_id')
    assert_error(c.rpc('files/upload_session/finish_batch/check',
                       {'async_job_id': r.json['async_job_id']}), 409, 'invalid_async_job_id')
    # More than 1000 entries is a bad request; an empty batch is fine.
    assert_400(c.rpc('files/delete_batch', {'entries': [{'path': '/x'}] * 1001}),
               'at most 1000')
    assert_400(c.rpc('files/delete_batch', {'entries': [{'path': '/x', 'parent_rev': 'zz'}]}))
    # Answered at once with delete_batch_sync.
    fd.set_config(delete_batch_sync=True)
    r = c.rpc('files/delete_batch', {'entries': [{'path': '/d/c.txt'}]})
    assert r.json['.tag'] == 'complete' and r.json['entries'][0]['.tag'] == 'success'


def test_delete_batch_faults(fd, c):
    c.put('/f/a.txt', b'a')
    c.put('/f/b.txt', b'b')
    fd.add_fault(route='files/delete_batch', job_failed='too_many_write_operations')
    r = c.rpc('files/delete_batch', {'entries': [{'path': '/f/a.txt'}, {'path': '/f/b.txt'}]})
    polls, done = _poll_delete_job(c, r.json)
    assert done == {'.tag': 'failed', 'failed': {'.tag': 'too_many_write_operations'}}
    assert len(fd.tree()) == 3                      # nothing was deleted
    fd.add_fault(route='files/delete_batch', batch_entry_error='too_many_write_operations',
                 entries=[1])
    r = c.rpc('files/delete_batch', {'entries': [{'path': '/f/a.txt'}, {'path': '/f/b.txt'}]})
    polls, done = _poll_delete_job(c, r.json)
    assert [x['.tag'] for x in done['entries']] == ['success', 'failure']
    assert done['entries'][1]['failure'] == {'.tag': 'too_many_write_operations'}
    assert [x['path_lower'] for x in fd.tree()] == ['/f', '/f/b.txt']
    with pytest.raises(ValueError):
        fd.add_fault(route='files/delete_v2', job_failed='too_many_write_operations')


def test_hook_writes_after_a_listing(fd, c):
    c.put('/h/sub/a.txt', b'a')
    hid = c.control('hook', route='files/list_folder', path='/H/SUB',
                    put={'path': '/h/sub/late.txt', 'text': 'from another machine'})
    assert isinstance(hid, int)
    entries, cursor = c.list_all('/h')          # another path: not fired
    assert fd.list_hooks()[0]['fired'] == 0
    entries, cursor = c.list_all('/h/sub')
    # The reply was made before the other machine wrote: it does not show it ...
    assert [e['name'] for e in entries] == ['a.txt']
    assert fd.get_file('/h/sub/late.txt') == b'from another machine'
    # ... and the cursor reports it as a change.
    r = c.rpc('files/list_folder/continue', {'cursor': cursor})
    assert [e['name'] for e in r.json['entries']] == ['late.txt']
    # One-shot: the next listing shows it and writes nothing.
    entries, _ = c.list_all('/h/sub')
    assert sorted(e['name'] for e in entries) == ['a.txt', 'late.txt']
    assert fd.list_hooks()[0]['fired'] == 1 and fd.list_hooks()[0]['count'] == 0
    # A hook may delete, and match any path.
    fd.add_hook(route='files/get_metadata', delete='/h/sub/a.txt')
    assert c.rpc('files/get_metadata', {'path': '/h'}).status == 200
    assert_error(c.rpc('files/get_metadata', {'path': '/h/sub/a.txt'}), 409, 'path/not_found')
    assert c.control('hooks_clear') is True and fd.list_hooks() == []
    with pytest.raises(ValueError):
        fd.add_hook(path='/x')


def test_account_routes(fd, c):
    r = c.void('users/get_current_account')
    assert r.status == 200 and r.json['account_id'].startswith('dbid:')
    assert r.json['name']['display_name'] and r.json['root_info']['.tag'] == 'user'
    assert c.rpc('users/get_current_account', None).status == 200       # body "null"
    assert_400(c.rpc('users/get_current_account', {}), 'expected null')
    c.put('/a', b'12345')
    c.put('/b', b'123')
    r = c.rpc('users/get_space_usage', None).json
    assert r == {'used': 8, 'allocation': {'.tag': 'individual', 'allocated': 2 * 1024 ** 3}}
    fd.add_token('other')
    assert c.void('auth/token/revoke', token='other').json is None
    assert c.void('users/get_current_account', token='other').status == 401


def test_quota_set_and_freed(fd, c):
    """A quota a test sets (config allocated) refuses what does not fit,
    get_space_usage reports it, and the bytes of a refused commit stay in
    an upload session that a finish commits once space is freed."""
    c.put('/old.bin', b'o' * 600)
    fd.set_config(allocated=1000)
    assert c.rpc('users/get_space_usage', None).json == \
        {'used': 600, 'allocation': {'.tag': 'individual', 'allocated': 1000}}
    data = b'n' * 700
    fd.reset_stats()
    r = c.upload('files/upload', {'path': '/new.bin', 'mode': 'add'}, data)
    err = assert_error(r, 409, 'path/insufficient_space')
    sid = err['upload_session_id']
    assert sid
    cursor = {'session_id': sid, 'offset': len(data)}
    commit = {'path': '/new.bin', 'mode': 'add'}
    # The session is kept while the commit keeps failing.
    r = c.upload('files/upload_session/finish', {'cursor': cursor, 'commit': commit})
    assert_error(r, 409, 'path/insufficient_space')
    # Freed by deleting a file: the same session commits, no bytes again.
    assert c.rpc('files/delete_v2', {'path': '/old.bin'}).status == 200
    assert c.rpc('users/get_space_usage', None).json['used'] == 0
    r = c.upload('files/upload_session/finish', {'cursor': cursor, 'commit': commit})
    assert r.status == 200, r
    assert r.json['size'] == 700 and r.json['content_hash'] == content_hash(data)
    assert fd.get_file('/new.bin') == data
    assert fd.get_stats()['bytes_uploaded'] == 700
    # Freed by a larger quota.
    r = c.upload('files/upload', {'path': '/more.bin', 'mode': 'add'}, data)
    assert_error(r, 409, 'path/insufficient_space')
    fd.set_config(allocated=2000)
    assert c.upload('files/upload', {'path': '/more.bin', 'mode': 'add'},
                    data).status == 200
    # A batch entry that does not fit fails alone; its session stays.
    r = c.upload('files/upload_session/start', {'close': True}, b'b' * 900)
    sid = r.json['session_id']
    r = c.upload('files/upload_session/start', {'close': True}, b's')
    small = r.json['session_id']
    r = c.rpc('files/upload_session/finish_batch_v2', {'entries': [
        {'cursor': {'session_id': sid, 'offset': 900},
         'commit': {'path': '/big.bin', 'mode': 'add'}},
        {'cursor': {'session_id': small, 'offset': 1},
         'commit': {'path': '/s.bin', 'mode': 'add'}}]})
    assert r.status == 200
    e = r.json['entries']
    assert e[0] == {'.tag': 'failure', 'failure': {
        '.tag': 'path', 'path': {'.tag': 'insufficient_space'}}}
    assert e[1]['.tag'] == 'success'
    fd.set_config(allocated=4000)
    r = c.rpc('files/upload_session/finish_batch_v2', {'entries': [
        {'cursor': {'session_id': sid, 'offset': 900},
         'commit': {'path': '/big.bin', 'mode': 'add'}}]})
    assert r.json['entries'][0]['.tag'] == 'success'


def test_refresh_token_added_short_lived_and_revoked(fd):
    rt = fd.add_refresh_token(expires_in=60)
    rt2 = Client(fd.url).control('refresh_token/add', expires_in=5)
    assert isinstance(rt2, str) and rt2 != rt

    def token(**form):
        req = urllib.request.Request(fd.url + '/oauth2/token',
                                     data=urllib.parse.urlencode(form).encode(), method='POST')
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())
    st, body = token(grant_type='refresh_token', refresh_token=rt, client_id='fakeappkey')
    assert st == 200 and body['expires_in'] == 60, body
    st, body2 = token(grant_type='refresh_token', refresh_token=rt2, client_id='fakeappkey')
    assert st == 200 and body2['expires_in'] == 5, body2
    c = Client(fd.url, token=body['access_token'])
    assert c.void('users/get_current_account').status == 200
    # Revoked: refreshes are invalid_grant, its access tokens are dead.
    fd.revoke_refresh_token(rt)
    st, bad = token(grant_type='refresh_token', refresh_token=rt, client_id='fakeappkey')
    assert st == 400 and bad['error'] == 'invalid_grant'
    r = c.void('users/get_current_account')
    assert r.status == 401 and r.json['error']['.tag'] == 'invalid_access_token'
    # The other one still works.
    assert Client(fd.url, token=body2['access_token']).void(
        'users/get_current_account').status == 200


# --------------------------------------------------------------------------
# OAuth

def test_oauth_pkce_flow(fd):
    fd.set_config(token_lifetime=1)
    verifier = 'v' * 20 + '-._~' + 'A1' * 20
    challenge = pkce_challenge(verifier)
    assert challenge == base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).decode().rstrip('=')
    q = urllib.parse.urlencode({'client_id': 'fakeappkey', 'response_type': 'code',
                                'token_access_type': 'offline', 'code_challenge': challenge,
                                'code_challenge_method': 'S256'})
    with urllib.request.urlopen(fd.url + '/oauth2/authorize?' + q) as r:
        page = r.read().decode()
    code = re.search(r'id="code" readonly value="([^"]+)"', page).group(1)

    def token(**form):
        req = urllib.request.Request(fd.url + '/oauth2/token',
                                     data=urllib.parse.urlencode(form).encode(), method='POST')
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())
    st, body = token(grant_type='authorization_code', code=code, client_id='fakeappkey',
                     code_verifier=verifier[:-1] + 'B')
    assert st == 400 and body['error'] == 'invalid_grant'
    # the code was consumed by the failed attempt, as single-use codes are
    code = fd.mint_auth_code(code_challenge=challenge)
    st, body = token(grant_type='authorization_code', code=code, client_id='fakeappkey',
                     code_verifier=verifier)
    assert st == 200, body
    assert body['token_type'] == 'bearer' and body['expires_in'] == 1
    assert body['access_token'].startswith('sl.') and body['refresh_token']
    assert body['account_id'].startswith('dbid:')
    st, again = token(grant_type='authorization_code', code=code, client_id='fakeappkey',
                      code_verifier=verifier)
    assert st == 400 and again['error'] == 'invalid_grant'
    c = Client(fd.url, token=body['access_token'])
    assert c.void('users/get_current_account').status == 200
    time.sleep(1.1)
    r = c.void('users/get_current_account')
    assert r.status == 401 and r.json['error']['.tag'] == 'expired_access_token'
    st, ref = token(grant_type='refresh_token', refresh_token=body['refresh_token'],
                    client_id='fakeappkey')
    assert st == 200 and 'refresh_token' not in ref and ref['expires_in'] == 1
    c.token = ref['access_token']
    assert c.void('users/get_current_account').status == 200
    st, bad = token(grant_type='refresh_token', refresh_token='nope', client_id='fakeappkey')
    assert st == 400 and bad['error'] == 'invalid_grant' and 'error_description' in bad
    st, bad = token(grant_type='password', client_id='fakeappkey')
    assert st == 400 and bad['error'] == 'unsupported_grant_type'
    # revoking an access token kills its refresh token too
    assert c.void('auth/token/revoke').status == 200
    st, bad = token(grant_type='refresh_token', refresh_token=body['refresh_token'],
                    client_id='fakeappkey')
    assert st == 400 and bad['error'] == 'invalid_grant'
    # redirect flow with state
    q = urllib.parse.urlencode({'client_id': 'fakeappkey', 'response_type': 'code',
                                'code_challenge': challenge, 'code_challenge_method': 'S256',
                                'redirect_uri': 'http://127.0.0.1:9/cb', 'state': 'xyz'})
    conn = http.client.HTTPConnection('127.0.0.1', fd.port)
    conn.request('GET', '/oauth2/authorize?' + q)
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 302
    loc = urllib.parse.urlparse(resp.getheader('Location'))
    qs = urllib.parse.parse_qs(loc.query)
    assert loc.port == 9 and qs['state'] == ['xyz']
    st, bad = token(grant_type='authorization_code', code=qs['code'][0], client_id='fakeappkey',
                    code_verifier=verifier)
    assert st == 400 and bad['error'] == 'invalid_grant'      # redirect_uri missing
    code = fd.mint_auth_code(code_challenge=challenge, redirect_uri='http://127.0.0.1:9/cb')
    st, ok = token(grant_type='authorization_code', code=code, client_id='fakeappkey',
                   code_verifier=verifier, redirect_uri='http://127.0.0.1:9/cb')
    assert st == 200


# --------------------------------------------------------------------------
# Faults

def test_rate_limit_faults(fd, c):
    fd.add_fault(route='files/upload', status=429, retry_after=2, count=2)
    for _ in range(2):
        r = c.upload('files/upload', {'path': '/rl'}, b'x')
        assert r.status == 429 and r.headers['Retry-After'] == '2'
        assert r.json['error'] == {'reason': {'.tag': 'too_many_requests'}, 'retry_after': 2}
        assert r.json['error_summary'].startswith('too_many_requests/')
    assert c.upload('files/upload', {'path': '/rl'}, b'x').status == 200
    fd.add_fault(route='files/delete_v2', status=429, reason='too_many_write_operations')
    r = c.rpc('files/delete_v2', {'path': '/rl'})
    assert r.status == 429 and r.json['error']['reason'] == {'.tag': 'too_many_write_operations'}
    assert r.json['error']['retry_after'] == 1
    fd.add_fault(route='*', status=429, plain=True)
    r = c.rpc('files/list_folder', {'path': ''})
    assert r.status == 429 and r.headers['Content-Type'].startswith('text/plain')
    # too_many_write_operations inside a 409, per route union
    fd.add_fault(route='files/upload', error='too_many_write_operations')
    err = assert_error(c.upload('files/upload', {'path': '/w'}, b'x'), 409,
                       'path/too_many_write_operations')
    assert err['reason'] == {'.tag': 'too_many_write_operations'} and err['upload_session_id']
    fd.add_fault(route='files/delete_v2', error='too_many_write_operations')
    assert_error(c.rpc('files/delete_v2', {'path': '/rl'}), 409, 'too_many_write_operations')
    assert c.rpc('files/get_metadata', {'path': '/rl'}).status == 200     # not deleted
    with pytest.raises(ValueError):
        fd.add_fault(route='files/get_metadata', error='insufficient_space')


def test_5xx_and_custom_bodies(fd, c):
    fd.add_fault(route='files/list_folder', status=503, retry_after=3)
    r = c.rpc('files/list_folder', {'path': ''})
    assert r.status == 503 and r.headers['Retry-After'] == '3'
    fd.add_fault(route='files/list_folder', status=500, skip=1)
    assert c.rpc('files/list_folder', {'path': ''}).status == 200
    assert c.rpc('files/list_folder', {'path': ''}).status == 500
    # process=True: the request takes effect, then the error is returned
    fd.add_fault(route='files/create_folder_v2', status=502, process=True)
    assert c.rpc('files/create_folder_v2', {'path': '/made'}).status == 502
    assert c.rpc('files/get_metadata', {'path': '/made'}).status == 200
    fd.add_fault(route='files/get_metadata', status=409, body={'error_summary': 'x/', 'error':
                                                              {'.tag': 'x'}})
    assert c.rpc('files/get_metadata', {'path': '/made'}).json['error'] == {'.tag': 'x'}
    # a path filter
    fd.add_fault(route='files/upload', path='/only/*', status=500, count=None)
    assert c.upload('files/upload', {'path': '/elsewhere'}, b'').status == 200
    assert c.upload('files/upload', {'path': '/ONLY/x'}, b'').status == 500
    assert c.upload('files/upload', {'path': '/only/y'}, b'').status == 500
    fd.add_fault(route='files/delete_v2', path='/made', status=503)
    assert c.rpc('files/delete_v2', {'path': '/made'}).status == 503
    assert c.rpc('files/delete_v2', {'path': '/made'}).status == 200
    fd.add_fault(route='users/get_space_usage', status=200, raw_body='<html>proxy</html>',
                 content_type='text/html')
    r = c.void('users/get_space_usage')
    assert r.status == 200 and r.body == b'<html>proxy</html>'
    # the token endpoint can fail too
    fd.add_fault(route='oauth2/token', status=503)
    req = urllib.request.Request(fd.url + '/oauth2/token', method='POST', data=b'grant_type=x')
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(req)
    assert ei.value.code == 503
    assert [f['fired'] for f in fd.list_faults()] == [1, 1, 1, 1, 2, 1, 1, 1]


def test_insufficient_space(fd, c):
    fd.add_fault(route='files/upload', error='insufficient_space')
    err = assert_error(c.upload('files/upload', {'path': '/q'}, b'abc'), 409,
                       'path/insufficient_space')
    assert err['reason'] == {'.tag': 'insufficient_space'}
    fd.set_config(allocated=10)
    c.put('/a', b'12345678')
    err = assert_error(c.upload('files/upload', {'path': '/b'}, b'abc'), 409,
                       'path/insufficient_space')
    assert err['.tag'] == 'path' and err['reason'] == {'.tag': 'insufficient_space'}
    sid = c.upload('files/upload_session/start', {'close': True}, b'abc').json['session_id']
    res = c.rpc('files/upload_session/finish_batch_v2', {'entries': [
        {'cursor': {'session_id': sid, 'offset': 3}, 'commit': {'path': '/c'}}]}).json
    assert res['entries'][0]['failure'] == {'.tag': 'path', 'path': {'.tag': 'insufficient_space'}}
    assert_error(c.rpc('files/copy_v2', {'from_path': '/a', 'to_path': '/a2'}), 409,
                 'insufficient_quota')


def test_connection_drop_faults(fd, c):
    fd.add_fault(route='files/upload', drop_request_after=1000)
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
        c.upload('files/upload', {'path': '/dropped'}, os.urandom(4 * MiB))
    assert not _exists(fd, '/dropped')
    # reply cut after N body bytes: the client sees a short body
    c.put('/dl.bin', b'z' * 50000)
    fd.add_fault(route='files/download', drop_response_after=1000)
    with pytest.raises(http.client.IncompleteRead):
        c.download({'path': '/dl.bin'})
    fd.add_fault(route='files/list_folder', truncate=True)
    with pytest.raises(http.client.IncompleteRead):
        c.rpc('files/list_folder', {'path': ''})
    # lost reply: the upload happened
    fd.add_fault(route='files/upload', lose_response=True)
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
        c.upload('files/upload', {'path': '/lost'}, b'x')
    assert _exists(fd, '/lost')
    assert c.rpc('files/list_folder', {'path': ''}).status == 200


def _exists(fd, path):
    try:
        return fd.metadata(path) is not None
    except Exception:
        return False


def test_delay_and_bandwidth(fd, c):
    c.put('/slow.bin', os.urandom(100000))
    fd.add_fault(route='files/get_metadata', delay=0.3)
    t0 = time.monotonic()
    assert c.rpc('files/get_metadata', {'path': '/slow.bin'}).status == 200
    assert time.monotonic() - t0 >= 0.3
    fd.set_config(bandwidth=250000)
    t0 = time.monotonic()
    assert len(c.download({'path': '/slow.bin'}).body) == 100000
    assert 0.35 <= time.monotonic() - t0 < 3
    t0 = time.monotonic()
    c.put('/slow2.bin', os.urandom(100000))
    assert time.monotonic() - t0 >= 0.35
    fd.set_config(bandwidth=None)
    fd.add_fault(route='files/download', bandwidth=200000)
    t0 = time.monotonic()
    c.download({'path': '/slow.bin'})
    assert time.monotonic() - t0 >= 0.4


def test_outage(fd, c):
    c.put('/o', b'o')
    fd.outage(0.8)                                # refuse (default)
    with pytest.raises(urllib.error.URLError) as ei:
        c.rpc('files/get_metadata', {'path': '/o'})
    assert isinstance(ei.value.reason, ConnectionRefusedError)
    time.sleep(1.0)
    assert c.rpc('files/get_metadata', {'path': '/o'}).status == 200
    # through the control API, accept-and-close mode
    assert c.control('outage', seconds=0.6, mode='close') == {'mode': 'close', 'seconds': 0.6}
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
        c.rpc('files/get_metadata', {'path': '/o'})
    time.sleep(0.8)
    assert c.rpc('files/get_metadata', {'path': '/o'}).status == 200
    # a keep-alive connection opened before an outage is cut too
    conn = http.client.HTTPConnection('127.0.0.1', fd.port, timeout=5)
    conn.request('POST', '/2/users/get_space_usage',
                 headers={'Authorization': 'Bearer ' + DEFAULT_TOKEN})
    assert conn.getresponse().read()
    fd.outage(0.5)
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        conn.request('POST', '/2/users/get_space_usage',
                     headers={'Authorization': 'Bearer ' + DEFAULT_TOKEN})
        conn.getresponse().read()
    conn.close()
    time.sleep(0.7)
    assert c.rpc('files/get_metadata', {'path': '/o'}).status == 200
    # hang: connections are accepted, nothing is answered, then they close
    fd.outage(0.5, mode='hang')
    t0 = time.monotonic()
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
        c.rpc('files/get_metadata', {'path': '/o'})
    assert time.monotonic() - t0 >= 0.4
    assert c.rpc('files/get_metadata', {'path': '/o'}).status == 200
    with pytest.raises(ValueError):
        fd.add_fault(route='*', error='insufficient_space')


def test_hostile_replies(fd, c):
    fd.put_file('/d/ok.txt', b'ok')
    expect = {
        'name_slash': lambda e: '/' in e['name'],
        'name_dotdot': lambda e: e['name'] == '..',
        'name_dot': lambda e: e['name'] == '.',
        'name_empty': lambda e: e['name'] == '',
        'name_nul': lambda e: '\x00' in e['name'],
        'outside_path': lambda e: not e['path_lower'].startswith('/d/'),
        'path_mismatch': lambda e: not e['path_lower'].endswith('/' + e['name']),
        'unknown_tag': lambda e: e['.tag'] not in ('file', 'folder', 'deleted'),
        'negative_size': lambda e: e['size'] < 0,
        'huge_name': lambda e: len(e['name']) > 255,
        'duplicate_id': lambda e: True,
    }
    for variant, check in expect.items():
        fd.add_fault(route='files/list_folder', hostile=variant)
        r = c.rpc('files/list_folder', {'path': '/d'})
        assert r.status == 200
        ents = r.json['entries']
        assert len(ents) == 2 and check(ents[0]), (variant, ents[0])
    fd.add_fault(route='files/list_folder/continue', invalid_json=True)
    cur = c.rpc('files/list_folder', {'path': '/d'}).json['cursor']
    r = c.rpc('files/list_folder/continue', {'cursor': cur})
    with pytest.raises(ValueError):
        r.json
    fd.add_fault(route='files/download', hostile='corrupt_body')
    r = c.download({'path': '/d/ok.txt'})
    assert r.body != b'ok' and content_hash(r.body) != r.result['content_hash']
    fd.add_fault(route='files/download', hostile='bad_result_header')
    with pytest.raises(ValueError):
        c.download({'path': '/d/ok.txt'}).result
    fd.add_fault(route='files/download', hostile='missing_result_header')
    assert 'Dropbox-API-Result' not in c.download({'path': '/d/ok.txt'}).headers
    fd.add_fault(route='files/download', hostile='wrong_size')
    assert c.download({'path': '/d/ok.txt'}).result['size'] == 3


def test_changes_from_another_machine_via_control(fd, c):
    nc = Client(fd.url, token=None)
    fd.set_config(longpoll_time_scale=0.1)
    c.put('/Shared/a.txt', b'a')
    entries, cur = c.list_all('', recursive=True)
    rev_a = entries[1]['rev']
    res = []
    t = threading.Thread(target=lambda: res.append(
        nc.rpc('files/list_folder/longpoll', {'cursor': cur, 'timeout': 60})))
    t.start()
    time.sleep(0.2)
    m = c.control('put', path='/shared/A.txt', data_b64=base64.b64encode(b'remote').decode())
    t.join(5)
    assert res and res[0].json['changes'] is True
    assert m['rev'] != rev_a and m['name'] == 'a.txt'
    c.control('put', path='/Shared/b.txt', text='b')
    c.control('move', from_path='/Shared/b.txt', to_path='/Shared/c.txt')
    c.control('mkdir', path='/Shared/sub')
    c.control('delete', path='/Shared/a.txt')
    r = c.rpc('files/list_folder/continue', {'cursor': cur}).json
    got = [(e['.tag'], e['path_display']) for e in r['entries']]
    assert got == [('deleted', '/Shared/b.txt'), ('file', '/Shared/c.txt'),
                   ('folder', '/Shared/sub'), ('deleted', '/Shared/a.txt')]
    # a case-only rename (desktop client) is not reported, as on Dropbox
    c.control('move', from_path='/Shared/c.txt', to_path='/Shared/C.TXT')
    r2 = c.rpc('files/list_folder/continue', {'cursor': r['cursor']}).json
    assert r2['entries'] == []
    assert c.rpc('files/get_metadata', {'path': '/shared/c.txt'}).json['name'] == 'C.TXT'
    tree = c.control('tree')
    assert [(e['path_display'], e.get('content_hash')) for e in tree] == [
        ('/Shared', None), ('/Shared/C.TXT', content_hash(b'b')), ('/Shared/sub', None)]
    req = urllib.request.Request(c.url + '/__control/get?path=' +
                                 urllib.parse.quote('/shared/c.txt'))
    with urllib.request.urlopen(req) as resp:
        assert resp.read() == b'b'
    c.control('fault', route='files/get_metadata', status=500)
    assert c.control('faults')[0]['status'] == 500
    assert c.rpc('files/get_metadata', {'path': '/shared'}).status == 500
    c.control('reset')
    assert c.control('tree') == [] and c.control('faults') == []
    assert_error(c.rpc('files/list_folder/continue', {'cursor': cur}), 409, 'reset')


def test_counters(fd, c):
    c.put('/x.bin', b'a' * 1000)
    c.download({'path': '/x.bin'})
    c.download({'path': '/x.bin'}, {'Range': 'bytes=0-99'})
    c.rpc('files/get_metadata', {'path': '/nope'})
    # A reply is counted once the server has written it, which may be
    # just after the client has read it.
    deadline = time.time() + 5
    while ('files/get_metadata' not in fd.get_stats()['reply_bytes']
           and time.time() < deadline):
        time.sleep(0.01)
    s = c.control('stats')
    assert s['routes'] == {'files/upload': 1, 'files/download': 2, 'files/get_metadata': 1}
    assert s['bytes_uploaded'] == 1000 and s['bytes_downloaded'] == 1100
    # Reply bodies by route (downloads: the file bytes).
    assert s['reply_bytes']['files/download'] == 1100
    assert 100 < s['reply_bytes']['files/upload'] < 2000
    assert s['reply_bytes']['files/get_metadata'] > 0
    assert s['statuses'] == {'200': 2, '206': 1, '409': 1}
    assert s['route_statuses']['files/get_metadata'] == {'409': 1}
    assert fd.get_stats() == s
    log = fd.requests('files/download')
    assert [e['status'] for e in log] == [200, 206] and log[0]['arg'] == {'path': '/x.bin'}
    c.control('stats/reset')
    s = fd.get_stats()
    assert s['routes'] == {} and s['bytes_uploaded'] == 0 and s['requests'] == 0


# --------------------------------------------------------------------------
# Transport

def test_keepalive_and_chunked(fd):
    conn = http.client.HTTPConnection('127.0.0.1', fd.port, timeout=10)
    auth = {'Authorization': 'Bearer ' + DEFAULT_TOKEN}
    socks = set()
    for body, ct in ((b'{"path": ""}', 'application/json'), (b'{"path": "/x/"}', 'application/json'),
                     (b'{}', 'text/plain'), (b'{"path": ""}', 'application/json')):
        conn.request('POST', '/2/files/list_folder', body=body,
                     headers=dict(auth, **{'Content-Type': ct}))
        resp = conn.getresponse()
        data = resp.read()
        assert int(resp.getheader('Content-Length')) == len(data)
        socks.add(id(conn.sock))
    assert len(socks) == 1
    # chunked request body
    def gen():
        yield b'hello '
        yield b'world'
    conn.request('POST', '/2/files/upload', body=gen(), encode_chunked=True,
                 headers=dict(auth, **{'Content-Type': 'application/octet-stream',
                                       'Dropbox-API-Arg': '{"path": "/chunked.txt"}'}))
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read())['size'] == 11
    # a broken chunked body is a 400, and the connection is closed
    conn.putrequest('POST', '/2/files/upload')
    for k, v in dict(auth, **{'Content-Type': 'application/octet-stream',
                              'Dropbox-API-Arg': '{"path": "/bad.txt"}',
                              'Transfer-Encoding': 'chunked'}).items():
        conn.putheader(k, v)
    conn.endheaders()
    conn.send(b'zz\r\nhello\r\n0\r\n\r\n')
    resp = conn.getresponse()
    assert resp.status == 400 and resp.getheader('Connection') == 'close'
    resp.read()
    conn.close()
    assert fd.get_file('/chunked.txt') == b'hello world'


def test_https(ca, tmp_path):
    ca_pem, cert, key = ca
    with FakeDropbox(tls=(cert, key)).start() as fd:
        assert fd.url.startswith('https://127.0.0.1:')
        ctx = ssl.create_default_context(cafile=ca_pem)
        c = Client(fd.url, ctx=ctx)
        c.put('/tls.txt', b'secure')
        assert c.download({'path': '/tls.txt'}).body == b'secure'
        assert c.rpc('files/list_folder', {'path': ''}).json['entries'][0]['name'] == 'tls.txt'
        c2 = Client(fd.url.replace('127.0.0.1', 'localhost'), ctx=ctx)
        assert c2.rpc('files/get_metadata', {'path': '/tls.txt'}).status == 200
        with pytest.raises(urllib.error.URLError) as ei:
            Client(fd.url, ctx=ssl.create_default_context()).rpc('files/list_folder',
                                                                 {'path': ''})
        assert isinstance(ei.value.reason, ssl.SSLCertVerificationError)
        assert c.control('stats')['routes']['files/download'] == 1


def test_cli_and_persistence(tmp_path, ca):
    state = tmp_path / 'state'
    portfile = tmp_path / 'port'

    def launch(*extra):
        p = subprocess.Popen([PYTHON, '-m', 'tests.fakedropbox.server', '--port', '0',
                              '--state-dir', str(state), '--control-port-file', str(portfile)]
                             + list(extra), cwd=str(REPO), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        line = p.stdout.readline()
        assert line.strip().isdigit(), p.stderr.read()
        assert portfile.read_text().strip() == line.strip()
        return p, int(line)

    p, port = launch('--token', 'cli-token')
    verifier = 'x' * 50
    try:
        c = Client('http://127.0.0.1:%d' % port, token='cli-token')
        m = c.put('/Persist/me.txt', b'kept')
        sid = c.upload('files/upload_session/start', {}, b'half').json['session_id']
        code = c.control('auth_code', code_challenge=pkce_challenge(verifier))
        form = urllib.parse.urlencode({'grant_type': 'authorization_code', 'code': code,
                                       'client_id': 'fakeappkey', 'code_verifier': verifier})
        with urllib.request.urlopen(c.url + '/oauth2/token', data=form.encode()) as r:
            refresh = json.loads(r.read())['refresh_token']
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
        assert p.stderr.read() == ''
    p, port = launch('--token', 'cli-token', '--tls-cert', ca[1], '--tls-key', ca[2])
    try:
        c = Client('https://127.0.0.1:%d' % port, token='cli-token',
                   ctx=ssl.create_default_context(cafile=ca[0]))
        g = c.rpc('files/get_metadata', {'path': '/persist/ME.txt'}).json
        assert g == dict(m, **{'.tag': 'file'})
        assert c.download({'path': '/persist/me.txt'}).body == b'kept'
        r = c.upload('files/upload_session/finish', {'cursor': {'session_id': sid, 'offset': 4},
                                                     'commit': {'path': '/s.txt'}}, b'+more')
        assert r.status == 200 and r.json['size'] == 9
        form = urllib.parse.urlencode({'grant_type': 'refresh_token', 'refresh_token': refresh,
                                       'client_id': 'fakeappkey'})
        with urllib.request.urlopen(c.url + '/oauth2/token', data=form.encode(),
                                    context=c.ctx) as r:
            assert json.loads(r.read())['access_token'].startswith('sl.')
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
    # in process, same state directory
    with FakeDropbox(state_dir=str(state), token='t').start() as fd:
        assert [e['path_display'] for e in fd.tree()] == ['/Persist', '/Persist/me.txt', '/s.txt']
        assert fd.get_file('/s.txt') == b'half+more'

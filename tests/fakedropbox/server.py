"""A fake Dropbox API v2 server for the huracanfs tests (standard library
only). See README.md in this directory.

In process:

    from fakedropbox import FakeDropbox        # or tests.fakedropbox
    with FakeDropbox(token='t').start() as fd:
        ... point api_url/content_url/notify_url at fd.url ...

Out of process:

    python3 -m tests.fakedropbox.server --port 0 --state-dir DIR \\
        [--tls-cert C --tls-key K] [--control-port-file F]

prints the chosen port on stdout; tests drive it through /__control/...

Request flow (Handler.handle_api): match a fault rule -> optional delay ->
optional drop of the request -> pre-processing fault reply, or read the
body -> Content-Type / Dropbox-API-Arg / Authorization checks -> decode
and validate the argument (stone.py) -> route handler (routes.py) ->
post-processing faults (lost or cut reply, hostile content) -> reply with
a correct Content-Length (bandwidth-limited if configured).
"""

import argparse
import base64
import fnmatch
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

if __package__ in (None, ''):   # allow `python3 tests/fakedropbox/server.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = 'fakedropbox'

from . import stone
from .auth import Tokens, OAuthError
from .faults import Faults, Stats, ROUTE_ERRORS, HOSTILE_LIST, HOSTILE_DOWNLOAD
from .routes import ROUTES, Req, Response, request_paths
from .stone import ApiError, BadInput, ContentHasher, dumps
from .store import Store, Lookup, Write, Reloc, DeleteFailed

MiB = 1024 * 1024
DEFAULT_TOKEN = 'fake-static-token'
SPOOL_LIMIT = MiB
RPC_BODY_LIMIT = 16 * MiB
DRAIN_LIMIT = 2048 * MiB
IO_CHUNK = 64 * 1024

RPC_CONTENT_TYPES = ('application/json', 'application/json; charset=utf-8')
UPLOAD_CONTENT_TYPES = ('application/octet-stream',)
RPC_CT_TEXT = ('"application/json", "application/json; charset=utf-8", '
               '"text/plain; charset=dropbox-cors-hack"')
UPLOAD_CT_TEXT = '"application/octet-stream", "text/plain; charset=dropbox-cors-hack"'

DEFAULT_CONFIG = {
    'token_lifetime': 14400,          # s, expires_in of minted access tokens
    'allocated': 2 * 1024 ** 3,       # bytes, quota (insufficient_space beyond)
    'longpoll_time_scale': 1.0,       # multiply longpoll timeouts (tests: 0.05)
    'longpoll_backoff': None,         # add "backoff": N to longpoll replies
    'latency': 0.0,                   # s, added before every API request
    'bandwidth': None,                # bytes/s for upload/download bodies
    'session_ttl': 7 * 86400,         # s, upload session lifetime
    'batch_check_in_progress': 1,     # finish_batch/check, delete_batch/check in_progress replies
    'delete_batch_sync': False,       # delete_batch answers "complete" at once
    'default_list_limit': 2000,       # page size when `limit` is absent
    'max_relocation_entries': 10000,  # too_many_files beyond
    'max_upload_body': 150 * MiB,     # payload_too_large beyond (never raise it)
    'redirect_uris': None,            # None: any http://127.0.0.1|localhost URI
    'app_key': 'fakeappkey',
    'app_secret': 'fakeappsecret',
    'verbose': False,
}


def _no_constants(name):
    raise ValueError('not JSON: %s' % name)


def strict_json(text):
    """json.loads without Python's NaN/Infinity extensions."""
    return json.loads(text, parse_constant=_no_constants)


class _Abort(Exception):
    """The connection was closed on purpose (fault injection)."""


class BodyData:
    """An upload-style request body: spooled to disk past SPOOL_LIMIT, with
    its Dropbox content hash; bytes beyond the size limit are discarded."""

    def __init__(self, limit):
        self.file = tempfile.SpooledTemporaryFile(max_size=SPOOL_LIMIT)
        self.size = 0
        self.limit = limit
        self.too_large = False
        self._h = ContentHasher()
        self.hash = None

    def add(self, chunk):
        self.size += len(chunk)
        if self.size > self.limit:
            self.too_large = True
            return
        self.file.write(chunk)
        self._h.update(chunk)

    def done(self):
        self.hash = self._h.hexdigest()
        self.file.seek(0)

    def close(self):
        self.file.close()


class Throttle:
    def __init__(self, rate):
        self.rate = rate
        self.t0 = time.monotonic()
        self.n = 0

    @property
    def chunk(self):
        if not self.rate:
            return IO_CHUNK
        return max(512, min(IO_CHUNK, int(self.rate) // 20))

    def done(self, n):
        if not self.rate:
            return
        self.n += n
        wait = self.t0 + self.n / self.rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)


# ==========================================================================
# HTTP handler

class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'FakeDropbox/1.0'
    sys_version = ''
    timeout = 600

    @property
    def app(self):
        return self.server.app

    def setup(self):
        app = self.server.app
        # Headers and body go out in separate writes: without NODELAY,
        # Nagle holds the second until the client's delayed ACK (40 ms
        # a reply), as no real server does.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if app.ssl_ctx is not None:
            self.request.settimeout(10)
            self.request = app.ssl_ctx.wrap_socket(self.request, server_side=True)
        super().setup()
        app._conn_open(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.app._conn_close(self.connection)

    def handle(self):
        mode = self.app.outage_mode()
        if mode == 'close':
            self._kill()
            return
        if mode == 'hang':
            self.app.wait_outage_end()
            self._kill()
            return
        with self.app.stats.lock:
            self.app.stats.connections += 1
        super().handle()

    def log_message(self, fmt, *args):
        if self.app.config['verbose']:
            sys.stderr.write('fakedropbox: %s %s\n' % (self.address_string(), fmt % args))

    def do_POST(self):
        self._dispatch('POST')

    def do_GET(self):
        self._dispatch('GET')

    def do_PUT(self):
        self._dispatch('PUT')

    def do_DELETE(self):
        self._dispatch('DELETE')

    # ------------------------------------------------------------ plumbing

    def _kill(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.connection.close()
        except OSError:
            pass

    def _body_chunks(self, maxchunk):
        """Yield the request body (Content-Length or chunked)."""
        te = self.headers.get('Transfer-Encoding')
        if te is not None:
            if te.strip().lower() != 'chunked':
                raise ApiError(501, 'Unsupported Transfer-Encoding', 'text/plain; charset=utf-8')
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError('eof in chunked body')
                try:
                    size = int(line.split(b';')[0].strip(), 16)
                except ValueError:
                    raise ApiError(400, 'Bad chunked encoding', 'text/plain; charset=utf-8')
                if size == 0:
                    while True:
                        t = self.rfile.readline(65537)
                        if t in (b'\r\n', b'\n', b''):
                            return
                left = size
                while left:
                    c = self.rfile.read(min(left, maxchunk))
                    if not c:
                        raise ConnectionError('eof in chunked body')
                    left -= len(c)
                    yield c
                self.rfile.readline(3)
        cl = self.headers.get('Content-Length')
        if cl is None:
            return
        try:
            left = int(cl)
            if left < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise ApiError(400, 'Bad Content-Length', 'text/plain; charset=utf-8')
        while left:
            c = self.rfile.read(min(left, maxchunk))
            if not c:
                raise ConnectionError('eof in body')
            left -= len(c)
            yield c

    def _read_body(self, sink, throttle=None, drop_after=None, drain_limit=DRAIN_LIMIT):
        """Feed body chunks to `sink(chunk)`; returns the byte count.
        drop_after: close the socket after that many bytes (raises _Abort)."""
        throttle = throttle or Throttle(None)
        n = 0
        for c in self._body_chunks(throttle.chunk):
            if drop_after is not None and n + len(c) >= drop_after:
                sink(c[:drop_after - n])
                self._kill()
                raise _Abort()
            n += len(c)
            sink(c)
            throttle.done(len(c))
            if n > drain_limit:
                self.close_connection = True
                raise ApiError(413, 'Request body too large', 'text/plain; charset=utf-8')
        if drop_after is not None:
            self._kill()
            raise _Abort()
        return n

    def _read_bytes(self, limit, throttle=None, drop_after=None):
        buf = bytearray()
        over = [False]

        def sink(c):
            if len(buf) + len(c) > limit:
                over[0] = True
            else:
                buf.extend(c)
        self._read_body(sink, throttle, drop_after)
        return bytes(buf), over[0]

    def _drain(self):
        try:
            self._read_body(lambda c: None)
        except (ApiError, ConnectionError):
            self.close_connection = True

    def _send(self, resp, rule=None, route=None, extra_headers=()):
        """Write `resp`; applies drop_response_after / truncate from `rule`
        and the bandwidth limit."""
        app = self.app
        rate = None
        if rule is not None and rule.get('bandwidth'):
            rate = rule.get('bandwidth')
        elif route is not None and route.style != 'rpc' and app.config['bandwidth']:
            rate = app.config['bandwidth']
        throttle = Throttle(rate)
        cut = None
        if rule is not None:
            if rule.get('drop_response_after') is not None:
                cut = rule.get('drop_response_after')
            elif rule.get('truncate'):
                cut = resp.length // 2
        self.send_response(resp.status)
        if resp.content_type:
            self.send_header('Content-Type', resp.content_type)
        self.send_header('X-Dropbox-Request-Id', secrets.token_hex(16))
        for k, v in list(resp.headers) + list(extra_headers):
            self.send_header(k, v)
        if resp.status != 304:
            self.send_header('Content-Length', str(resp.length))
        if self.close_connection:
            self.send_header('Connection', 'close')
        self.end_headers()
        sent = 0
        try:
            if resp.status == 304:
                return
            if resp.blob is not None:
                f = app.store.blobs.open(resp.blob)
                try:
                    f.seek(resp.start)
                    left = resp.length
                    while left:
                        c = f.read(min(throttle.chunk, left))
                        if not c:
                            raise IOError('short blob')
                        c = self._mangle_chunk(resp, sent, c)
                        sent = self._write(c, sent, cut, throttle)
                        left -= len(c)
                finally:
                    f.close()
            else:
                mv = memoryview(resp.body)
                pos = 0
                while pos < len(mv):
                    c = mv[pos:pos + throttle.chunk]
                    sent = self._write(c, sent, cut, throttle)
                    pos += len(c)
            if cut is not None:
                self._kill()
                raise _Abort()
        finally:
            if route is not None and route.style == 'download':
                app.stats.add_down(sent)
            if route is not None:
                app.stats.add_reply(route.name, sent)

    def _mangle_chunk(self, resp, pos, c):
        if resp.meta.get('corrupt') and pos == 0 and c:
            return bytes([c[0] ^ 0xFF]) + c[1:]
        return c

    def _write(self, c, sent, cut, throttle):
        if cut is not None and sent + len(c) >= cut:
            self.wfile.write(c[:cut - sent])
            self.wfile.flush()
            self._kill()
            raise _Abort()
        self.wfile.write(c)
        throttle.done(len(c))
        return sent + len(c)

    def _plain(self, status, text, route=None):
        self._send(Response(status, text.encode('utf-8'), 'text/plain; charset=utf-8'),
                   route=route)

    # ------------------------------------------------------------ dispatch

    def _dispatch(self, method):
        app = self.app
        mode = app.outage_mode()
        if mode is not None:
            if mode == 'hang':
                app.wait_outage_end()
            self._kill()
            return
        url = urllib.parse.urlsplit(self.path)
        p = url.path
        try:
            if p.startswith('/__control/'):
                return self.handle_control(method, p[len('/__control/'):], url.query)
            if p == '/oauth2/authorize':
                self._drain()
                if method != 'GET':
                    return self._plain(405, 'Method Not Allowed')
                status, hdrs, body = app.tokens.authorize(url.query)
                return self._send(Response(status, body, None, hdrs))
            if p == '/oauth2/token':
                return self.handle_token(method)
            if p.startswith('/2/'):
                return self.handle_api(method, p[3:])
            self._drain()
            self._plain(404, 'Not Found')
        except _Abort:
            self.close_connection = True
        except (ConnectionError, ssl.SSLError, socket.timeout, BrokenPipeError):
            self.close_connection = True
        except Exception:
            traceback.print_exc()
            self.close_connection = True
            try:
                self._plain(500, 'fakedropbox internal error (a bug in the fake)')
            except Exception:
                pass

    # ----------------------------------------------------------------- API

    def handle_api(self, method, name):
        app = self.app
        r = ROUTES.get(name)
        if r is None:
            self._drain()
            return self._plain(404, 'Unknown API function: "%s"' % name)
        if method != 'POST':
            self._drain()
            return self._plain(400, 'Error in call to API function "%s": Expecting a POST request'
                               % name)
        app.stats.count(name)
        entry = {'route': name, 'time': time.time(), 'status': None, 'arg': None, 'fault': None}
        recorded = False
        try:
            try:
                resp, rule = self._api(r, entry)
            except ApiError as e:       # a transport problem while reading the body
                self.close_connection = True
                resp, rule = Response(e.status, e.body, e.content_type, e.headers), None
            entry['status'] = resp.status
            if resp.status == 200:
                app.run_hooks(name, entry['arg'])
            app.stats.status(name, resp.status)
            # Recorded before the reply goes out: a client that got the
            # reply always finds its request in the log (fields of the
            # entry may still change: it is the same dict).
            app.stats.record(entry)
            recorded = True
            self._send(resp, rule, r)
        except _Abort:
            entry['status'] = entry['status'] or 'dropped'
            self.close_connection = True
        finally:
            if not recorded:
                app.stats.record(entry)

    def _api(self, r, entry):
        app = self.app
        name = r.name
        hdr_paths = None
        if r.style != 'rpc':
            raw = self.headers.get('Dropbox-API-Arg')
            try:
                hdr_paths = request_paths(name, json.loads(raw)) if raw else []
            except ValueError:
                hdr_paths = []
        rule = app.faults.match(name, hdr_paths)
        defer = rule is None and r.style == 'rpc' and app.faults.has_path_rules(name)
        if rule is not None:
            self._fired(rule, entry)
        delay = app.config['latency'] + ((rule.get('delay') or 0) if rule else 0)
        if delay:
            time.sleep(delay)
        rate = (rule.get('bandwidth') if rule else None) or (
            app.config['bandwidth'] if r.style != 'rpc' else None)
        drop = rule.get('drop_request_after') if rule else None
        body = None
        raw_body = b''
        if r.style == 'upload':
            body = BodyData(app.config['max_upload_body'])
            try:
                n = self._read_body(body.add, Throttle(rate), drop)
            except BaseException:
                body.close()
                raise
            body.done()
            app.stats.add_up(n)
        else:
            raw_body, over = self._read_bytes(RPC_BODY_LIMIT, Throttle(rate), drop)
            if over:
                return Response(400, b'request body too large', 'text/plain; charset=utf-8'), None
        if defer:
            try:
                paths = request_paths(name, json.loads(raw_body))
            except ValueError:
                paths = []
            rule = app.faults.match(name, paths, path_rules_only=True)
            if rule is not None:
                self._fired(rule, entry)
                if rule.get('delay'):
                    time.sleep(rule.get('delay'))
                if rule.get('drop_request_after') is not None:
                    self._kill()
                    raise _Abort()
        try:
            if rule is not None and rule.pre:
                return self._fault_response(rule, name, body), rule
            try:
                resp = self._call(r, raw_body, body, rule, entry)
            except ApiError as e:
                resp = Response(e.status, e.body, e.content_type, e.headers)
        finally:
            if body is not None:
                body.close()
        if rule is not None:
            resp = self._post_fault(rule, r, resp)
        return resp, rule

    def _fired(self, rule, entry):
        entry['fault'] = rule.id
        self.app.stats.fired(rule)

    def _call(self, r, raw_body, body, rule, entry):
        app = self.app
        name = r.name
        if self.headers.get('Dropbox-API-Path-Root') is not None:
            raise BadInput(name, 'fake server: Dropbox-API-Path-Root is not supported '
                           '(an App folder app must not send it)')
        ct = self.headers.get('Content-Type')
        if r.style == 'rpc':
            if r.arg is stone.VOID and ct is None and raw_body == b'':
                arg_json = None
            else:
                if ct not in RPC_CONTENT_TYPES:
                    raise BadInput(name, 'Bad HTTP "Content-Type" header: "%s".  Expecting one '
                                   'of %s.' % (ct or '', RPC_CT_TEXT))
                try:
                    arg_json = strict_json(raw_body.decode('utf-8'))
                except (ValueError, UnicodeDecodeError):
                    raise BadInput(name, 'request body: could not decode input as JSON')
            where = 'request body: '
        else:
            if r.style == 'upload':
                if ct not in UPLOAD_CONTENT_TYPES:
                    raise BadInput(name, 'Bad HTTP "Content-Type" header: "%s".  Expecting one '
                                   'of %s.' % (ct or '', UPLOAD_CT_TEXT))
            else:
                if ct:
                    raise BadInput(name, 'You provided a non-empty HTTP "Content-Type" header '
                                   '("%s").  This API function does not accept parameters over '
                                   'the HTTP body.  Either remove the "Content-Type" header or '
                                   'set it to "text/plain; charset=dropbox-cors-hack".' % ct)
                if raw_body:
                    raise BadInput(name, 'This API function does not accept a request body.')
            raw = self.headers.get('Dropbox-API-Arg')
            if raw is None:
                raise BadInput(name, 'Must provide HTTP header "Dropbox-API-Arg" or URL '
                               'parameter "arg".')
            if any(ord(ch) > 0x7e or (ord(ch) < 0x20 and ch != '\t') for ch in raw):
                raise BadInput(name, 'HTTP header "Dropbox-API-Arg": could not decode input as '
                               'JSON (header values must be ASCII; escape non-ASCII as \\uXXXX)')
            try:
                arg_json = strict_json(raw)
            except ValueError:
                raise BadInput(name, 'HTTP header "Dropbox-API-Arg": could not decode input as JSON')
            where = 'HTTP header "Dropbox-API-Arg": '
        entry['arg'] = arg_json if len(raw_body) <= 4096 else {
            'truncated': True, 'paths': request_paths(name, arg_json)[:50]}
        token = self._authenticate(r)
        try:
            arg = r.arg.validate(arg_json)
        except stone.ValidationError as e:
            raise BadInput(name, where + str(e))
        req = Req(app, name, arg, body, rule, self.headers)
        req.token = token
        return r.handler(req)

    def _authenticate(self, r):
        name = r.name
        h = self.headers.get('Authorization')
        if r.auth == 'noauth':
            if h is not None:
                raise BadInput(name, 'fake server: this route takes no "Authorization" header '
                               '(auth = noauth)')
            return None
        if h is None:
            raise BadInput(name, 'Must provide HTTP header "Authorization" or URL parameter '
                           '"authorization".')
        if not h.startswith('Bearer ') or not h[7:].strip():
            raise BadInput(name, 'Invalid authorization value in HTTP header "Authorization": '
                           '"%s".  Expecting "Bearer <oauth2-access-token>".' % h)
        token = h[7:].strip()
        err = self.app.tokens.check(token)
        if err is not None:
            raise stone.auth_error(err)
        return token

    def _fault_response(self, rule, route, body):
        status = rule.get('status')
        hdrs = []
        ra = rule.get('retry_after')
        if status == 429:
            ra = 1 if ra is None else ra
            if rule.get('retry_after_header', True):
                hdrs.append(('Retry-After', str(ra)))
            if rule.get('plain'):
                return Response(429, b'too_many_requests', 'text/plain; charset=utf-8', hdrs)
            return Response(429, stone.rate_limit_body(rule.get('reason') or 'too_many_requests',
                                                       ra).encode('ascii'),
                            'application/json', hdrs)
        if ra is not None:
            hdrs.append(('Retry-After', str(ra)))
        if rule.get('error') is not None:
            sid = None
            if route == 'files/upload':
                s = self.app.store.new_session('sequential')
                if body is not None and not body.too_large:
                    body.file.seek(0)
                    with s.lock:
                        s.write_at(0, body.file, body.size)
                        s.size = body.size
                sid = s.id
            err = ROUTE_ERRORS[rule.get('error')][route](sid)
            return Response(status, dumps({'error_summary': stone.error_summary(err),
                                           'error': err}).encode('ascii'),
                            'application/json', hdrs)
        if rule.get('body') is not None:
            return Response(status, dumps(rule.get('body')).encode('ascii'),
                            rule.get('content_type') or 'application/json', hdrs)
        if rule.get('raw_body') is not None:
            return Response(status, rule.get('raw_body').encode('utf-8'),
                            rule.get('content_type') or 'text/plain; charset=utf-8', hdrs)
        text = {500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable',
                504: 'Gateway Timeout'}.get(status, 'Error %d' % status)
        return Response(status, text.encode('ascii'), 'text/plain; charset=utf-8', hdrs)

    def _post_fault(self, rule, r, resp):
        """Faults applied after the request took effect."""
        if rule.get('lose_response'):
            self._kill()
            raise _Abort()
        if rule.get('status') is not None and rule.get('process'):
            return self._fault_response(rule, r.name, None)
        if rule.get('invalid_json') and resp.status == 200:
            if r.style == 'download':
                resp.headers = [(k, '{"name": "broken' if k == 'Dropbox-API-Result' else v)
                                for k, v in resp.headers]
            else:
                resp.body = b'{"entries": [{".tag": "file", "name": '
                resp.length = len(resp.body)
                resp.content_type = 'application/json'
        hostile = rule.get('hostile')
        if hostile and resp.status in (200, 206):
            if hostile in HOSTILE_DOWNLOAD and r.style == 'download':
                _hostile_download(resp, hostile)
            elif hostile in HOSTILE_LIST and 'folder' in resp.meta:
                _hostile_listing(resp, hostile)
        return resp

    # ---------------------------------------------------------------- OAuth

    def handle_token(self, method):
        app = self.app
        raw, over = self._read_bytes(RPC_BODY_LIMIT)
        app.stats.count('oauth2/token')
        entry = {'route': 'oauth2/token', 'time': time.time(), 'status': None, 'arg': None,
                 'fault': None}
        rule = app.faults.match('oauth2/token', None)
        try:
            if rule is not None:
                self._fired(rule, entry)
                if rule.get('delay'):
                    time.sleep(rule.get('delay'))
                if rule.get('drop_request_after') is not None or rule.get('lose_response'):
                    self._kill()
                    raise _Abort()
                if rule.pre:
                    resp = self._fault_response(rule, 'oauth2/token', None)
                    entry['status'] = resp.status
                    return self._send(resp, rule)
            ct = (self.headers.get('Content-Type') or '').split(';')[0].strip()
            if method != 'POST' or over or ct != 'application/x-www-form-urlencoded':
                raise OAuthError('invalid_request', 'expected a POST with Content-Type '
                                 'application/x-www-form-urlencoded')
            try:
                form = urllib.parse.parse_qs(raw.decode('utf-8'), keep_blank_values=True,
                                             strict_parsing=bool(raw))
            except (ValueError, UnicodeDecodeError):
                raise OAuthError('invalid_request', 'malformed form body')
            entry['arg'] = {k: v for k, v in form.items()
                            if k in ('grant_type', 'client_id', 'redirect_uri', 'scope')}
            basic = None
            h = self.headers.get('Authorization')
            if h is not None and h.startswith('Basic '):
                try:
                    user, _, pw = base64.b64decode(h[6:]).decode('utf-8').partition(':')
                    basic = (user, pw)
                except (ValueError, UnicodeDecodeError):
                    raise OAuthError('invalid_client', 'malformed Basic authorization')
            resp = Response(200, app.tokens.token_endpoint(form, basic).encode('ascii'))
            app.dirty_tokens = True
        except OAuthError as e:
            resp = Response(e.status, e.body.encode('ascii'))
        finally:
            app.stats.record(entry)
        entry['status'] = resp.status
        app.stats.status('oauth2/token', resp.status)
        self._send(resp, rule)

    # -------------------------------------------------------------- control

    def handle_control(self, method, name, query):
        app = self.app
        if self.client_address[0] != '127.0.0.1':
            self._drain()
            return self._plain(403, 'control API is for 127.0.0.1 only')
        raw, _ = self._read_bytes(RPC_BODY_LIMIT)
        try:
            kwargs = json.loads(raw) if raw.strip() else {}
            if not isinstance(kwargs, dict):
                raise ValueError('the body must be a JSON object')
            for k, v in urllib.parse.parse_qsl(query):
                kwargs.setdefault(k, v)
            name = name.strip('/').replace('/', '_')
            if name == 'get':
                data = app.get_file(kwargs['path'])
                return self._send(Response(200, data, 'application/octet-stream'))
            if name == 'outage':
                kwargs['_exclude'] = self.connection
                self.close_connection = True
            fn = app.control_table().get(name)
            if fn is None:
                return self._plain(404, 'unknown control command %r' % name)
            result = fn(**kwargs)
            self._send(Response(200, json.dumps(result).encode('utf-8')))
        except _Abort:
            raise
        except (KeyError, TypeError, ValueError, Lookup, Write, Reloc, DeleteFailed) as e:
            detail = getattr(e, 'err', None) or getattr(e, 'tag', None) or str(e)
            status = 404 if isinstance(e, Lookup) else 400
            self._send(Response(status, json.dumps({'error': detail}).encode()))


def _hostile_listing(resp, variant):
    data = json.loads(resp.body)
    fp = resp.meta['folder']
    base = fp
    now = stone.timestamp()

    def fentry(name, pl, pd=None, **kw):
        e = {'.tag': 'file', 'name': name, 'path_lower': pl, 'path_display': pd or pl,
             'id': 'id:' + secrets.token_urlsafe(16), 'client_modified': now,
             'server_modified': now, 'rev': '%015x' % secrets.randbits(60), 'size': 3,
             'is_downloadable': True,
             'content_hash': stone.content_hash(b'bad')}
        e.update(kw)
        return e
    if variant == 'name_slash':
        e = fentry('evil/name', base + '/evil/name')
    elif variant == 'name_dotdot':
        e = fentry('..', base + '/..')
    elif variant == 'name_dot':
        e = fentry('.', base + '/.')
    elif variant == 'name_empty':
        e = fentry('', base + '/')
    elif variant == 'name_nul':
        e = fentry('nul\x00name', base + '/nul\x00name')
    elif variant == 'outside_path':
        e = fentry('escape.txt', '/../escape.txt' if fp == '' else '/elsewhere-%s/escape.txt'
                   % secrets.token_hex(3))
    elif variant == 'path_mismatch':
        e = fentry('a.txt', base + '/b.txt')
    elif variant == 'unknown_tag':
        e = {'.tag': 'symlink_from_the_future', 'name': 'future', 'path_lower': base + '/future',
             'path_display': base + '/future'}
    elif variant == 'negative_size':
        e = fentry('negative.txt', base + '/negative.txt', size=-1)
    elif variant == 'huge_name':
        e = fentry('x' * 5000, base + '/' + 'x' * 5000)
    elif variant == 'duplicate_id':
        ids = [x.get('id') for x in data['entries'] if x.get('id')]
        e = fentry('dup.txt', base + '/dup.txt', id=ids[0] if ids else 'id:dup')
    data['entries'].insert(0, e)
    resp.body = dumps(data).encode('ascii')
    resp.length = len(resp.body)


def _hostile_download(resp, variant):
    meta = dict(resp.meta['file'])
    if variant == 'corrupt_body':
        resp.meta['corrupt'] = True
        return
    if variant == 'wrong_size':
        meta['size'] += 1
        value = dumps(meta)
    elif variant == 'wrong_content_hash':
        meta['content_hash'] = stone.content_hash(b'something else')
        value = dumps(meta)
    elif variant == 'bad_result_header':
        value = '{"name": "broken'
    else:
        value = None
    resp.headers = [(k, v) for k, v in resp.headers if k != 'Dropbox-API-Result']
    if value is not None:
        resp.headers.append(('Dropbox-API-Result', value))


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, socket.timeout, OSError)):
            if self.app.config['verbose']:
                sys.stderr.write('fakedropbox: connection error: %r\n' % (exc,))
            return
        super().handle_error(request, client_address)


# ==========================================================================
# The application object

class FakeDropbox:
    """A fake Dropbox serving api, content and notify routes on one port.

    state_dir: persist the namespace there (state.json + blob files) so a
        restarted server keeps it; None = memory (+ a temporary directory
        for large blobs).
    tls: None, (cert_pem, key_pem), (ca_pem, cert_pem, key_pem) as returned
        by make_test_ca(), or True to generate a CA (see .ca_file).
    token: a static access token accepted until revoked/expired (None: no
        static token); more with add_token().
    config: overrides of DEFAULT_CONFIG.
    """

    def __init__(self, state_dir=None, tls=None, port=0, host='127.0.0.1',
                 token=DEFAULT_TOKEN, **config):
        unknown = set(config) - set(DEFAULT_CONFIG)
        if unknown:
            raise TypeError('unknown config keys: %s' % ', '.join(sorted(unknown)))
        self.config = dict(DEFAULT_CONFIG)
        self.config.update(config)
        self.host = host
        self.port = port
        self.state_dir = state_dir
        self.static_token = token
        self.store = Store(self.config, state_dir)
        self.tokens = Tokens(self.config)
        self.tokens.reset([token] if token else [])
        if state_dir and os.path.exists(os.path.join(state_dir, 'tokens.json')):
            with open(os.path.join(state_dir, 'tokens.json')) as f:
                self.tokens.load(json.load(f))
        self.dirty_tokens = False
        self.faults = Faults()
        self.stats = Stats()
        self.hooks = []
        self._hooks_lock = threading.Lock()
        self._hook_ids = 0
        self.ca_file = None
        self._tls_tmp = None
        self.ssl_ctx = self._make_ssl(tls)
        self.stopping = False
        self.httpd = None
        self._serve_thread = None
        self._saver = None
        self._conns = set()
        self._conns_lock = threading.Lock()
        self._outage = None            # (mode, until, generation)
        self._outage_gen = 0
        self._outage_cv = threading.Condition()
        self._listener_lock = threading.Lock()

    def _make_ssl(self, tls):
        if not tls:
            return None
        if tls is True:
            self._tls_tmp = tempfile.mkdtemp(prefix='fakedropbox-tls-')
            tls = make_test_ca(self._tls_tmp)
        if len(tls) == 3:
            self.ca_file = tls[0]
            tls = tls[1:]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls[0], tls[1])
        ctx.set_alpn_protocols(['http/1.1'])
        return ctx

    # ----------------------------------------------------------- lifecycle

    @property
    def url(self):
        return '%s://%s:%d' % ('https' if self.ssl_ctx else 'http', self.host, self.port)

    api_url = content_url = notify_url = url

    def start(self):
        self._open_listener()
        if self.state_dir:
            self._saver = threading.Thread(target=self._save_loop, name='fakedropbox-saver',
                                           daemon=True)
            self._saver.start()
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        """Stop serving, wake longpolls, close connections, save state."""
        if self.stopping:
            return
        self.stopping = True
        with self.store.cond:
            self.store.cond.notify_all()
        with self._outage_cv:
            self._outage = None
            self._outage_cv.notify_all()
        self._close_listener()
        self._kill_connections()
        if self.httpd is not None:
            self.httpd.server_close()
        self.save()
        self.store.close()
        if self._tls_tmp:
            import shutil
            shutil.rmtree(self._tls_tmp, ignore_errors=True)

    def save(self):
        if not self.state_dir:
            return
        self.store.save()
        tmp = os.path.join(self.state_dir, 'tokens.json.tmp')
        with open(tmp, 'w') as f:
            json.dump(self.tokens.to_json(), f)
        os.replace(tmp, os.path.join(self.state_dir, 'tokens.json'))
        self.dirty_tokens = False

    def _save_loop(self):
        while not self.stopping:
            time.sleep(0.5)
            if (self.store.dirty or self.dirty_tokens) and not self.stopping:
                try:
                    self.save()
                except Exception:
                    traceback.print_exc()

    def _open_listener(self):
        with self._listener_lock:
            if self.stopping:
                return
            if self.httpd is None:
                self.httpd = _HTTPServer((self.host, self.port), Handler)
                self.httpd.app = self
                self.port = self.httpd.server_address[1]
            else:
                for attempt in range(50):
                    try:
                        self.httpd.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                        self.httpd.server_bind()
                        self.httpd.server_activate()
                        break
                    except OSError:
                        self.httpd.socket.close()
                        time.sleep(0.1)
                else:
                    raise OSError('cannot re-bind port %d after an outage' % self.port)
            t = threading.Thread(target=self.httpd.serve_forever, kwargs={'poll_interval': 0.05},
                                 name='fakedropbox-serve', daemon=True)
            self._serve_thread = t
            t.start()

    def _close_listener(self):
        with self._listener_lock:
            if self.httpd is None or self._serve_thread is None:
                return
            self.httpd.shutdown()
            self._serve_thread.join()
            self._serve_thread = None
            self.httpd.socket.close()

    def _conn_open(self, sock):
        with self._conns_lock:
            self._conns.add(sock)

    def _conn_close(self, sock):
        with self._conns_lock:
            self._conns.discard(sock)

    def _kill_connections(self, exclude=None):
        with self._conns_lock:
            conns = [c for c in self._conns if c is not exclude]
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # --------------------------------------------------------------- outage

    def outage(self, seconds, mode='refuse', _exclude=None):
        """Simulate an outage for `seconds`:
        refuse: close the listening socket (connection refused) and every
                open connection; reopen the same port afterwards;
        close:  accept connections and close them at once (also requests
                on already open keep-alive connections);
        hang:   accept connections and never answer until the end."""
        if mode not in ('refuse', 'close', 'hang'):
            raise ValueError('mode must be refuse, close or hang')
        with self._outage_cv:
            self._outage_gen += 1
            gen = self._outage_gen
            self._outage = (mode, time.monotonic() + seconds, gen)
        if mode == 'refuse':
            self._close_listener()
        if mode != 'hang':
            self._kill_connections(exclude=_exclude)
        t = threading.Timer(seconds, self._end_outage, args=(gen,))
        t.daemon = True
        t.start()
        return {'mode': mode, 'seconds': seconds}

    def end_outage(self):
        with self._outage_cv:
            gen = self._outage[2] if self._outage else None
        if gen is not None:
            self._end_outage(gen)
        return True

    def _end_outage(self, gen):
        with self._outage_cv:
            if self._outage is None or self._outage[2] != gen:
                return
            mode = self._outage[0]
            self._outage = None
            self._outage_cv.notify_all()
        if mode == 'refuse' and not self.stopping:
            self._open_listener()

    def outage_mode(self):
        with self._outage_cv:
            return self._outage[0] if self._outage else None

    def wait_outage_end(self):
        with self._outage_cv:
            while self._outage is not None and not self.stopping:
                self._outage_cv.wait(0.5)

    # ------------------------------------------------------------ namespace

    def put_file(self, path, data=b'', client_modified=None, data_b64=None, text=None):
        """Write a file "from another machine" (overwrite; creates parents).
        Bumps the rev, feeds cursors and wakes longpolls."""
        if data_b64 is not None:
            data = base64.b64decode(data_b64)
        elif text is not None:
            data = text.encode('utf-8')
        elif isinstance(data, str):
            data = data.encode('utf-8')
        key = stone.content_hash(data)
        self.store.blobs.add_bytes(data, key)
        n = self.store.commit_file(path, key, len(data), mode=('overwrite', None),
                                   client_modified=client_modified)
        return n.meta()

    def mkdir(self, path):
        with self.store.lock:
            try:
                n = self.store.lookup(path)
                if n is not None and n.tag == 'folder':
                    return n.meta()
            except Lookup:
                pass
            return self.store.create_folder(path).meta()

    def delete(self, path):
        return self.store.delete(path)

    def move(self, from_path, to_path):
        """Move/rename like a desktop client: case-only renames work (and,
        as on Dropbox, are not reported to cursors)."""
        return self.store.relocate(from_path, to_path, case_rename=True).meta()

    def copy(self, from_path, to_path):
        return self.store.relocate(from_path, to_path, copy=True).meta()

    def get_file(self, path):
        n = self.store.lookup(path)
        if n is None or n.tag != 'file':
            raise Lookup('not_file')
        return self.store.blobs.read(n.hash)

    def metadata(self, path):
        n = self.store.lookup(path)
        return n.meta() if n is not None else None

    def tree(self):
        """Every entry (files with content_hash), sorted by path_lower."""
        return self.store.tree()

    def invalidate_cursors(self):
        self.store.invalidate_cursors()
        return True

    def sessions(self):
        with self.store.lock:
            return [s.to_json() for s in self.store.sessions.values()]

    def expire_sessions(self):
        self.store.expire_sessions()
        return True

    def reset(self, faults=True, stats=True, tokens=True, config=False):
        """Empty the namespace (and by default faults, stats, tokens)."""
        self.store.reset()
        if faults:
            self.faults.clear()
            self.clear_hooks()
        if stats:
            self.stats.reset()
        if tokens:
            self.tokens.reset([self.static_token] if self.static_token else [])
        if config:
            keep = {k: self.config[k] for k in ('app_key', 'app_secret')}
            self.config.update(DEFAULT_CONFIG)
            self.config.update(keep)
        return True

    # --------------------------------------------------------------- faults

    def add_fault(self, **rule):
        """Add a fault rule (see faults.py / README); returns its id."""
        return self.faults.add(rule)

    def clear_faults(self):
        self.faults.clear()
        return True

    def remove_fault(self, id):
        self.faults.remove(id)
        return True

    def list_faults(self):
        return self.faults.list()

    # ---------------------------------------------------------------- hooks

    def add_hook(self, route='files/list_folder', path=None, put=None, delete=None,
                 count=1):
        """Another machine acting right after a request of ours: once a
        request to `route` whose `path` argument matches `path` (fnmatch,
        case-insensitive; None: any) has been answered 200, and before the
        reply is sent, `put` ({"path", "data_b64"|"text"|"data"}) writes a
        file and/or `delete` ("/path") deletes one, as put_file/delete do.
        Fires `count` times (None: forever). Returns the hook id."""
        if put is None and delete is None:
            raise ValueError('a hook needs put or delete')
        if put is not None and (not isinstance(put, dict) or 'path' not in put):
            raise ValueError('put must be an object with a path')
        with self._hooks_lock:
            self._hook_ids += 1
            self.hooks.append({'id': self._hook_ids, 'route': route, 'path': path,
                               'put': put, 'delete': delete, 'count': count,
                               'fired': 0})
            return self._hook_ids

    def list_hooks(self):
        with self._hooks_lock:
            return [dict(h) for h in self.hooks]

    def clear_hooks(self):
        with self._hooks_lock:
            self.hooks.clear()
        return True

    def run_hooks(self, route, arg):
        paths = [p.lower() for p in request_paths(route, arg)]
        todo = []
        with self._hooks_lock:
            for h in self.hooks:
                if h['route'] != route or (h['count'] is not None and h['count'] <= 0):
                    continue
                if h['path'] is not None and not any(
                        fnmatch.fnmatchcase(p, h['path'].lower()) for p in paths):
                    continue
                if h['count'] is not None:
                    h['count'] -= 1
                h['fired'] += 1
                todo.append(h)
        for h in todo:
            if h['put'] is not None:
                self.put_file(**h['put'])
            if h['delete'] is not None:
                try:
                    self.delete(h['delete'])
                except DeleteFailed:
                    pass

    # --------------------------------------------------------------- config

    def set_config(self, **kw):
        unknown = set(kw) - set(DEFAULT_CONFIG)
        if unknown:
            raise ValueError('unknown config keys: %s' % ', '.join(sorted(unknown)))
        self.config.update(kw)
        with self.store.cond:
            self.store.cond.notify_all()
        return dict(self.config)

    def get_config(self):
        return dict(self.config)

    # --------------------------------------------------------------- tokens

    def add_token(self, token, expires_in=None):
        self.tokens.add(token, expires_in)
        self.dirty_tokens = True
        return True

    def expire_token(self, token):
        self.dirty_tokens = True
        return self.tokens.expire(token)

    def revoke_token(self, token):
        self.dirty_tokens = True
        return self.tokens.revoke(token)

    def add_refresh_token(self, refresh_token=None, expires_in=None):
        """A refresh token for app_key (as `huracanfs auth` would store);
        the access tokens minted from it live `expires_in` seconds (default:
        config token_lifetime). Returns the token."""
        self.dirty_tokens = True
        return self.tokens.add_refresh(refresh_token, expires_in)

    def revoke_refresh_token(self, refresh_token):
        self.tokens.revoke_refresh(refresh_token)
        self.dirty_tokens = True
        return True

    def mint_auth_code(self, code_challenge=None, code_challenge_method='S256',
                       redirect_uri=None, token_access_type='offline', client_id=None):
        """An authorization code as /oauth2/authorize would give."""
        return self.tokens.mint_code(client_id, code_challenge, code_challenge_method,
                                     redirect_uri, token_access_type)

    # ---------------------------------------------------------------- stats

    def get_stats(self):
        """Per-route counts, status counts, bytes uploaded/downloaded."""
        return self.stats.snapshot()

    def reset_stats(self):
        self.stats.reset()
        return True

    def requests(self, route=None):
        """The last 2000 API requests: route, decoded arg, status, fault id."""
        return self.stats.requests(route)

    def control_table(self):
        return {
            'reset': self.reset, 'tree': self.tree, 'put': self.put_file, 'mkdir': self.mkdir,
            'delete': self.delete, 'move': self.move, 'copy': self.copy,
            'metadata': self.metadata, 'invalidate_cursors': self.invalidate_cursors,
            'sessions': self.sessions, 'expire_sessions': self.expire_sessions,
            'fault': self.add_fault, 'faults_add': self.add_fault, 'faults': self.list_faults,
            'hook': self.add_hook, 'hooks': self.list_hooks, 'hooks_clear': self.clear_hooks,
            'faults_clear': self.clear_faults, 'faults_remove': self.remove_fault,
            'outage': self.outage, 'outage_end': self.end_outage,
            'config': self.set_config, 'config_get': self.get_config,
            'token_add': self.add_token, 'token_expire': self.expire_token,
            'token_revoke': self.revoke_token, 'refresh_token_add': self.add_refresh_token,
            'refresh_token_revoke': self.revoke_refresh_token,
            'auth_code': self.mint_auth_code,
            'stats': self.get_stats, 'stats_reset': self.reset_stats,
            'requests': self.requests, 'save': lambda: (self.save(), True)[1],
        }


# ==========================================================================
# TLS helper

_CA_CONF = """[req]
distinguished_name = dn
prompt = no
[dn]
CN = huracanfs fakedropbox test CA
"""


def make_test_ca(directory):
    """Create a throw-away CA and a server certificate for 127.0.0.1 /
    localhost with the openssl CLI. Returns (ca_pem, cert_pem, key_pem)."""
    d = os.path.abspath(str(directory))
    os.makedirs(d, exist_ok=True)
    p = lambda n: os.path.join(d, n)
    with open(p('openssl.cnf'), 'w') as f:
        f.write(_CA_CONF)
    with open(p('server.ext'), 'w') as f:
        f.write('basicConstraints = critical, CA:FALSE\n'
                'keyUsage = critical, digitalSignature, keyEncipherment\n'
                'extendedKeyUsage = serverAuth\n'
                'subjectAltName = IP:127.0.0.1, DNS:localhost\n'
                'subjectKeyIdentifier = hash\n'
                'authorityKeyIdentifier = keyid\n')

    def run(*args):
        r = subprocess.run(['openssl'] + list(args), cwd=d, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        if r.returncode:
            raise RuntimeError('openssl %s failed: %s' % (args[0], r.stderr.decode()))
    ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
    run('req', '-x509', *ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '7',
        '-config', 'openssl.cnf', '-subj', '/CN=huracanfs fakedropbox test CA',
        '-addext', 'basicConstraints=critical,CA:TRUE',
        '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
        '-addext', 'subjectKeyIdentifier=hash')
    run('req', '-new', *ec, '-keyout', 'server.key', '-out', 'server.csr',
        '-config', 'openssl.cnf', '-subj', '/CN=localhost')
    run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key',
        '-set_serial', '0x%x' % secrets.randbits(63), '-days', '7', '-sha256',
        '-extfile', 'server.ext', '-out', 'server.pem')
    return p('ca.pem'), p('server.pem'), p('server.key')


# ==========================================================================
# Command line

def main(argv=None):
    ap = argparse.ArgumentParser(prog='python3 -m tests.fakedropbox.server',
                                 description='Fake Dropbox API v2 server for huracanfs tests.')
    ap.add_argument('--port', type=int, default=0, help='port (0 = ephemeral)')
    ap.add_argument('--state-dir', help='persist the namespace in this directory')
    ap.add_argument('--tls-cert', help='serve HTTPS with this certificate (PEM)')
    ap.add_argument('--tls-key', help='private key of --tls-cert (PEM)')
    ap.add_argument('--control-port-file', help='also write the port to this file')
    ap.add_argument('--token', default=DEFAULT_TOKEN,
                    help='static access token (default %(default)s; "" for none)')
    ap.add_argument('--app-key', default=DEFAULT_CONFIG['app_key'])
    ap.add_argument('--app-secret', default=DEFAULT_CONFIG['app_secret'])
    ap.add_argument('--token-lifetime', type=int, default=DEFAULT_CONFIG['token_lifetime'])
    ap.add_argument('--config', help='JSON object of config overrides')
    ap.add_argument('--verbose', action='store_true')
    a = ap.parse_args(argv)
    if bool(a.tls_cert) != bool(a.tls_key):
        ap.error('--tls-cert and --tls-key go together')
    cfg = json.loads(a.config) if a.config else {}
    cfg.update(app_key=a.app_key, app_secret=a.app_secret, token_lifetime=a.token_lifetime,
               verbose=a.verbose)
    fd = FakeDropbox(state_dir=a.state_dir, tls=(a.tls_cert, a.tls_key) if a.tls_cert else None,
                     port=a.port, token=a.token or None, **cfg)
    fd.start()
    if a.control_port_file:
        tmp = a.control_port_file + '.tmp'
        with open(tmp, 'w') as f:
            f.write('%d\n' % fd.port)
        os.replace(tmp, a.control_port_file)
    sys.stdout.write('%d\n' % fd.port)
    sys.stdout.flush()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    while not done.wait(1):
        pass
    fd.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())

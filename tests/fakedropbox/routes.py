"""API routes of the fake: one handler per route, registered in ROUTES.

A handler gets a `Req` (decoded argument, request body, the fault rule
that matched if any, the server application) and returns a `Response`,
or raises stone.ApiError (RouteError for 409s, BadInput for 400s).
Transport matters (Content-Type checks, auth, body reading, fault
application, writing the reply) live in server.py.
"""

import secrets
import time

from . import stone
from .stone import BadInput, RouteError, dumps, tag
from .store import (Lookup, Write, Reloc, Reset, DeleteFailed, deleted_meta,
                    dbx_lower, MAX_SESSION_SIZE)
from .faults import BATCH_ENTRY_ERRORS

BLOCK = stone.BLOCK_SIZE


class Route:
    def __init__(self, name, style, host, auth, arg, handler):
        self.name = name
        self.style = style      # rpc | upload | download
        self.host = host        # api | content | notify
        self.auth = auth        # user | noauth
        self.arg = arg          # stone validator of the argument
        self.handler = handler


ROUTES = {}


def route(name, arg, style='rpc', host='api', auth='user'):
    def deco(fn):
        ROUTES[name] = Route(name, style, host, auth, arg, fn)
        return fn
    return deco


class Response:
    """status, headers, and either `body` (bytes) or a blob range to stream
    (`blob`, `start`, `length`) for downloads."""

    def __init__(self, status=200, body=b'', content_type='application/json', headers=(),
                 blob=None, start=0, length=0):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = list(headers)
        self.blob = blob
        self.start = start
        self.length = length if blob is not None else len(body)
        self.meta = {}

    @classmethod
    def json(cls, obj):
        return cls(200, dumps(obj).encode('ascii'))


class Req:
    def __init__(self, app, route, arg, body, rule, headers):
        self.app = app
        self.route = route
        self.arg = arg
        self.body = body        # BodyData (upload style) or None
        self.rule = rule
        self.headers = headers

    @property
    def store(self):
        return self.app.store

    @property
    def config(self):
        return self.app.config


def _lookup_error(outer, e):
    return RouteError(tag(outer, tag(e.tag)))


# ========================================================== list folder

ROOT_AS_SLASH = 'request body: path: Specify the root folder as an empty string rather than as "/".'


def _listing_folder(req):
    a = req.arg
    if a['path'] == '/':
        raise BadInput(req.route, ROOT_AS_SLASH)
    if a['shared_link'] is not None:
        raise BadInput(req.route, 'request body: shared_link: not supported by this fake server')
    try:
        return req.store.folder_for_listing(a['path'])
    except Lookup as e:
        raise _lookup_error('path', e)


@route('files/list_folder', stone.ListFolderArg)
def list_folder(req):
    a = req.arg
    fp = dbx_lower(_listing_folder(req))
    limit = a['limit'] or req.config['default_list_limit']
    st = req.store
    with st.lock:
        seq = st.seq
        try:
            entries, last, more = st.list_page(fp, a['recursive'], a['include_deleted'], None, limit)
        except Lookup as e:
            raise _lookup_error('path', e)
        cursor = st.make_cursor(fp, a['recursive'], a['include_deleted'], a['limit'], seq,
                                last if more else None, not more)
    resp = Response.json({'entries': entries, 'cursor': cursor, 'has_more': more})
    resp.meta['folder'] = fp
    return resp


@route('files/list_folder/continue', stone.ListFolderContinueArg)
def list_folder_continue(req):
    st = req.store
    try:
        c = st.parse_cursor(req.arg['cursor'])
    except Reset:
        raise RouteError(tag('reset'))
    limit = c['l'] or req.config['default_list_limit']
    with st.lock:
        try:
            if not c['c']:
                entries, last, more = st.list_page(c['p'], c['r'], c['d'], c['a'], limit)
                cursor = st.make_cursor(c['p'], c['r'], c['d'], c['l'], c['s'],
                                        last if more else None, not more)
            else:
                entries, seq, more = st.changes(c['p'], c['r'], c['s'], limit)
                cursor = st.make_cursor(c['p'], c['r'], c['d'], c['l'], seq, None, True)
        except Lookup as e:
            raise _lookup_error('path', e)
        except Reset:
            raise RouteError(tag('reset'))
    resp = Response.json({'entries': entries, 'cursor': cursor, 'has_more': more})
    resp.meta['folder'] = c['p']
    return resp


@route('files/list_folder/get_latest_cursor', stone.ListFolderArg)
def list_folder_get_latest_cursor(req):
    a = req.arg
    fp = dbx_lower(_listing_folder(req))
    st = req.store
    with st.lock:
        cursor = st.make_cursor(fp, a['recursive'], a['include_deleted'], a['limit'], st.seq,
                                None, True)
    return Response.json({'cursor': cursor})


@route('files/list_folder/longpoll', stone.ListFolderLongpollArg, host='notify', auth='noauth')
def list_folder_longpoll(req):
    st = req.store
    cursor = req.arg['cursor']
    deadline = time.monotonic() + req.arg['timeout'] * req.config['longpoll_time_scale']
    changes = False
    with st.cond:
        while True:
            try:
                c = st.parse_cursor(cursor)
                if not c['c'] or st.has_changes(c['p'], c['r'], c['s']):
                    changes = True
                    break
            except Reset:
                raise RouteError(tag('reset'))
            left = deadline - time.monotonic()
            if left <= 0 or req.app.stopping:
                break
            st.cond.wait(min(left, 1.0))
    out = {'changes': changes}
    if req.config['longpoll_backoff']:
        out['backoff'] = req.config['longpoll_backoff']
    return Response.json(out)


# ============================================================ metadata

@route('files/get_metadata', stone.GetMetadataArg)
def get_metadata(req):
    a = req.arg
    try:
        n = req.store.lookup(a['path'])
    except Lookup as e:
        if e.tag == 'not_found' and a['include_deleted']:
            d = req.store.deleted_at(a['path'])
            if d is not None:
                return Response.json(deleted_meta(d))
        raise _lookup_error('path', e)
    if n is None:
        raise _lookup_error('path', Lookup('not_found'))
    return Response.json(n.meta())


# ============================================================ download

def parse_range(h, size):
    """(start, end) inclusive, 'unsatisfiable', or None (ignore Range)."""
    if not h.startswith('bytes='):
        return None
    spec = h[6:].strip()
    if ',' in spec:
        return None
    first, dash, last = spec.partition('-')
    first, last = first.strip(), last.strip()
    if not dash:
        return None
    if first == '':
        if not last.isdigit():
            return None
        n = int(last)
        if n == 0 or size == 0:
            return 'unsatisfiable'
        return max(0, size - n), size - 1
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return 'unsatisfiable'
    return start, min(end, size - 1)


@route('files/download', stone.DownloadArg, style='download', host='content')
def download(req):
    a = req.arg
    try:
        if a['rev'] is not None:
            n = req.store.lookup_rev(a['rev'])
        else:
            n = req.store.lookup(a['path'])
    except Lookup as e:
        raise _lookup_error('path', e)
    if n is None or n.tag != 'file':
        raise _lookup_error('path', Lookup('not_file'))
    meta = n.meta(with_tag=False)
    etag = 'W/"%s"' % n.rev
    hdrs = [('Dropbox-API-Result', dumps(meta)), ('ETag', etag), ('Accept-Ranges', 'bytes')]
    inm = req.headers.get('If-None-Match')
    if inm is not None and etag in [t.strip() for t in inm.split(',')]:
        r = Response(304, b'', None, hdrs)
        return r
    rng = req.headers.get('Range')
    parsed = parse_range(rng, n.size) if rng is not None else None
    if parsed == 'unsatisfiable':
        return Response(416, b'', 'text/plain; charset=utf-8',
                        [('Content-Range', 'bytes */%d' % n.size)])
    if parsed is None:
        r = Response(200, content_type='application/octet-stream', headers=hdrs,
                     blob=n.hash, start=0, length=n.size)
    else:
        s, e = parsed
        hdrs.append(('Content-Range', 'bytes %d-%d/%d' % (s, e, n.size)))
        r = Response(206, content_type='application/octet-stream', headers=hdrs,
                     blob=n.hash, start=s, length=e - s + 1)
    r.meta['file'] = meta
    return r


# ============================================================== upload

def _body_checks(req, hash_arg):
    """payload_too_large and content_hash_mismatch (top-level tags in all
    upload-style error unions)."""
    if req.body.too_large:
        raise RouteError(tag('payload_too_large'))
    if hash_arg is not None and hash_arg != req.body.hash:
        raise RouteError(tag('content_hash_mismatch'))


def _commit_args(c):
    return dict(mode=c['mode'], autorename=c['autorename'], client_modified=c['client_modified'],
                strict_conflict=c['strict_conflict'])


def _properties_check(c, wrap):
    if c['property_groups']:
        tid = c['property_groups'][0]['template_id']
        raise RouteError(wrap({'.tag': 'properties_error', 'properties_error':
                               {'.tag': 'template_not_found', 'template_not_found': tid}}))


@route('files/upload', stone.UploadArg, style='upload', host='content')
def upload(req):
    a = req.arg
    _body_checks(req, a['content_hash'])
    _properties_check(a, lambda e: e)
    st = req.store
    body = req.body
    body.file.seek(0)
    key = st.blobs.add_stream(body.file, body.size, body.hash)
    try:
        n = st.commit_file(a['path'], key, body.size, **_commit_args(a))
    except Write as e:
        # Dropbox keeps the data in an upload session so that the commit
        # can be retried with upload_session/finish.
        s = st.new_session('sequential')
        body.file.seek(0)
        with s.lock:
            s.write_at(0, body.file, body.size)
            s.size = body.size
        raise RouteError({'.tag': 'path', 'reason': e.err, 'upload_session_id': s.id})
    return Response.json(n.meta(with_tag=False))


def _session_type(a):
    return a['session_type'][0] if a['session_type'] else 'sequential'


@route('files/upload_session/start', stone.UploadSessionStartArg, style='upload', host='content')
def upload_session_start(req):
    a = req.arg
    _body_checks(req, a['content_hash'])
    stype = _session_type(a)
    body = req.body
    if stype == 'concurrent':
        if body.size:
            raise RouteError(tag('concurrent_session_data_not_allowed'))
        if a['close']:
            raise RouteError(tag('concurrent_session_close_not_allowed'))
    s = req.store.new_session(stype)
    with s.lock:
        if body.size:
            body.file.seek(0)
            s.write_at(0, body.file, body.size)
        if stype == 'sequential':
            s.size = body.size
        s.closed = a['close']
    req.store.dirty = True
    return Response.json({'session_id': s.id})


@route('files/upload_session/append_v2', stone.UploadSessionAppendArg, style='upload',
       host='content')
def upload_session_append_v2(req):
    a = req.arg
    cur = a['cursor']
    body = req.body
    s = req.store.get_session(cur['session_id'])
    if s is None:
        raise RouteError(tag('not_found'))
    with s.lock:
        if req.store.get_session(cur['session_id']) is not s:
            raise RouteError(tag('not_found'))
        if body.too_large:
            raise RouteError(tag('payload_too_large'))
        off, n = cur['offset'], body.size
        if s.type == 'sequential':
            if s.closed:
                raise RouteError(tag('closed'))
            if off != s.size:
                raise RouteError(tag('incorrect_offset', correct_offset=s.size))
            if s.size + n > MAX_SESSION_SIZE:
                raise RouteError(tag('too_large'))
            _body_checks(req, a['content_hash'])
            body.file.seek(0)
            s.write_at(off, body.file, n)
            s.size += n
            s.closed = a['close']
        else:
            if off % BLOCK:
                raise RouteError(tag('concurrent_session_invalid_offset'))
            if not a['close'] and n % BLOCK:
                raise RouteError(tag('concurrent_session_invalid_data_size'))
            if s.closed and (a['close'] or off + n > s.size):
                raise RouteError(tag('closed'))
            same = (off, n) in s.pieces
            if not same and s.overlaps(off, n):
                raise RouteError(tag('concurrent_session_invalid_offset'))
            if a['close'] and any(o + m > off + n for o, m in s.pieces):
                raise RouteError(tag('concurrent_session_invalid_offset'))
            if off + n > MAX_SESSION_SIZE:
                raise RouteError(tag('too_large'))
            _body_checks(req, a['content_hash'])
            body.file.seek(0)
            s.write_at(off, body.file, n)
            if not same:
                s.pieces.append((off, n))
            if a['close']:
                s.closed = True
                s.size = off + n
    req.store.dirty = True
    return Response.json(None)


class FinishFailed(Exception):
    def __init__(self, err):
        super().__init__(err['.tag'])
        self.err = err


def finish_session(req, fa, body, batch):
    """Commit one UploadSessionFinishArg. `body` is the final chunk (None in
    batches). Returns the Node; raises FinishFailed(UploadSessionFinishError)."""
    st = req.store
    cur = fa['cursor']
    s = st.get_session(cur['session_id'])
    lookup = lambda t, **kw: FinishFailed(tag('lookup_failed', tag(t, **kw)))
    if s is None:
        raise lookup('not_found')
    with s.lock:
        if st.get_session(cur['session_id']) is not s:
            raise lookup('not_found')
        n = body.size if body is not None else 0
        if s.type == 'concurrent':
            if n:
                raise FinishFailed(tag('concurrent_session_data_not_allowed'))
            if not s.closed:
                raise FinishFailed(tag('concurrent_session_not_closed'))
            if s.missing_data():
                raise FinishFailed(tag('concurrent_session_missing_data'))
            if cur['offset'] != s.size:
                raise lookup('incorrect_offset', correct_offset=s.size)
        else:
            if batch and not s.closed:
                raise lookup('not_closed')
            if cur['offset'] != s.size:
                raise lookup('incorrect_offset', correct_offset=s.size)
            if n and s.closed:
                raise lookup('closed')
            if s.size + n > MAX_SESSION_SIZE:
                raise lookup('too_large')
            if n:
                body.file.seek(0)
                s.write_at(s.size, body.file, n)
                s.size += n
        c = fa['commit']
        if c['property_groups']:
            tid = c['property_groups'][0]['template_id']
            raise FinishFailed({'.tag': 'properties_error', 'properties_error':
                                {'.tag': 'template_not_found', 'template_not_found': tid}})
        key = s.hash_and_rewind()
        st.blobs.add_stream(s.file, s.size, key)
        try:
            node = st.commit_file(c['path'], key, s.size, **_commit_args(c))
        except Write as e:
            raise FinishFailed(tag('path', e.err))
    st.drop_session(s.id)
    return node


@route('files/upload_session/finish', stone.UploadSessionFinishArg, style='upload',
       host='content')
def upload_session_finish(req):
    a = req.arg
    _body_checks(req, a['content_hash'])
    try:
        n = finish_session(req, a, req.body, batch=False)
    except FinishFailed as e:
        raise RouteError(e.err)
    return Response.json(n.meta(with_tag=False))


def _finish_batch(req):
    rule = req.rule
    bad = None
    if rule is not None and rule.get('batch_entry_error'):
        bad = BATCH_ENTRY_ERRORS[rule.get('batch_entry_error')]
        which = rule.get('entries')
    out = []
    for i, fa in enumerate(req.arg['entries']):
        if bad is not None and (which is None or i in which):
            out.append({'.tag': 'failure', 'failure': dict(bad)})
            continue
        try:
            n = finish_session(req, fa, None, batch=True)
            d = {'.tag': 'success'}
            d.update(n.meta(with_tag=False))
            out.append(d)
        except FinishFailed as e:
            out.append({'.tag': 'failure', 'failure': e.err})
    return out


@route('files/upload_session/finish_batch_v2', stone.UploadSessionFinishBatchArg)
def upload_session_finish_batch_v2(req):
    return Response.json({'entries': _finish_batch(req)})


@route('files/upload_session/finish_batch', stone.UploadSessionFinishBatchArg)
def upload_session_finish_batch(req):
    entries = _finish_batch(req)
    job = 'dbjid:' + secrets.token_urlsafe(32)
    with req.store.lock:
        req.store.jobs[job] = {'entries': entries,
                               'pending': req.config['batch_check_in_progress']}
        req.store.dirty = True
    return Response.json({'.tag': 'async_job_id', 'async_job_id': job})


@route('files/upload_session/finish_batch/check', stone.PollArg)
def upload_session_finish_batch_check(req):
    with req.store.lock:
        job = req.store.jobs.get(req.arg['async_job_id'])
        if job is None or 'failed' in job:     # unknown, or a delete_batch job
            raise RouteError(tag('invalid_async_job_id'))
        if job['pending'] > 0:
            job['pending'] -= 1
            return Response.json({'.tag': 'in_progress'})
        return Response.json({'.tag': 'complete', 'entries': job['entries']})


@route('files/upload_session/start_batch', stone.UploadSessionStartBatchArg)
def upload_session_start_batch(req):
    stype = _session_type(req.arg)
    ids = [req.store.new_session(stype).id for _ in range(req.arg['num_sessions'])]
    return Response.json({'session_ids': ids})


# ===================================================== namespace changes

@route('files/create_folder_v2', stone.CreateFolderArg)
def create_folder_v2(req):
    try:
        n = req.store.create_folder(req.arg['path'], req.arg['autorename'])
    except Write as e:
        raise RouteError(tag('path', e.err))
    return Response.json({'metadata': n.meta(with_tag=False)})


@route('files/delete_v2', stone.DeleteArg)
def delete_v2(req):
    try:
        meta = req.store.delete(req.arg['path'], req.arg['parent_rev'])
    except DeleteFailed as e:
        raise RouteError(e.err)
    return Response.json({'metadata': meta})


@route('files/delete_batch', stone.DeleteBatchArg)
def delete_batch(req):
    """Deletes at launch (so a poll cannot race another request), then
    answers with an async job that is in_progress for
    `batch_check_in_progress` polls; with `delete_batch_sync` it answers
    `complete` at once. Fault rules: `batch_entry_error` fails the
    entries listed in `entries` (all if absent) without deleting them;
    `job_failed: too_many_write_operations` deletes nothing and makes the
    job end `failed`."""
    rule = req.rule
    bad = which = None
    if rule is not None and rule.get('batch_entry_error'):
        bad = BATCH_ENTRY_ERRORS[rule.get('batch_entry_error')]
        which = rule.get('entries')
    failed = rule.get('job_failed') if rule is not None else None
    out = []
    for i, d in enumerate(req.arg['entries']):
        if failed:
            break
        if bad is not None and (which is None or i in which):
            out.append({'.tag': 'failure', 'failure': dict(bad)})
            continue
        try:
            meta = req.store.delete(d['path'], d['parent_rev'])
            out.append({'.tag': 'success', 'metadata': meta})
        except DeleteFailed as e:
            out.append({'.tag': 'failure', 'failure': e.err})
    if req.config['delete_batch_sync'] and not failed:
        return Response.json({'.tag': 'complete', 'entries': out})
    job = 'dbjid:' + secrets.token_urlsafe(32)
    with req.store.lock:
        req.store.jobs[job] = {'entries': out,
                               'failed': failed,
                               'pending': req.config['batch_check_in_progress']}
        req.store.dirty = True
    return Response.json({'.tag': 'async_job_id', 'async_job_id': job})


@route('files/delete_batch/check', stone.PollArg)
def delete_batch_check(req):
    with req.store.lock:
        job = req.store.jobs.get(req.arg['async_job_id'])
        if job is None or 'failed' not in job:
            raise RouteError(tag('invalid_async_job_id'))
        if job['pending'] > 0:
            job['pending'] -= 1
            return Response.json({'.tag': 'in_progress'})
        if job['failed']:
            return Response.json({'.tag': 'failed',
                                  'failed': {'.tag': job['failed']}})
        return Response.json({'.tag': 'complete', 'entries': job['entries']})


def _relocate(req, copy):
    a = req.arg
    try:
        n = req.store.relocate(a['from_path'], a['to_path'], copy=copy, autorename=a['autorename'])
    except Reloc as e:
        raise RouteError(e.err)
    return Response.json({'metadata': n.meta()})


@route('files/move_v2', stone.RelocationArg)
def move_v2(req):
    return _relocate(req, copy=False)


@route('files/copy_v2', stone.RelocationArg)
def copy_v2(req):
    return _relocate(req, copy=True)


# ============================================================== account

@route('users/get_current_account', stone.VOID)
def get_current_account(req):
    from .auth import ACCOUNT_ID
    return Response.json({
        'account_id': ACCOUNT_ID,
        'name': {'given_name': 'Fake', 'surname': 'Dropbox', 'familiar_name': 'Fake',
                 'display_name': 'Fake Dropbox', 'abbreviated_name': 'FD'},
        'email': 'fake.dropbox@example.invalid',
        'email_verified': True,
        'disabled': False,
        'country': 'US',
        'locale': 'en',
        'referral_link': 'https://db.tt/fakefake',
        'is_paired': False,
        'account_type': {'.tag': 'basic'},
        'root_info': {'.tag': 'user', 'root_namespace_id': '3235641',
                      'home_namespace_id': '3235641'},
    })


@route('users/get_space_usage', stone.VOID)
def get_space_usage(req):
    return Response.json({'used': req.store.used(),
                          'allocation': {'.tag': 'individual',
                                         'allocated': req.config['allocated']}})


@route('auth/token/revoke', stone.VOID)
def token_revoke(req):
    req.app.tokens.revoke(req.token)
    return Response.json(None)


def request_paths(route_name, arg):
    """Every path a decoded argument names, for fault rules."""
    if not isinstance(arg, dict):
        return []
    out = []
    for k in ('path', 'from_path', 'to_path'):
        if isinstance(arg.get(k), str):
            out.append(arg[k])
    if isinstance(arg.get('commit'), dict) and isinstance(arg['commit'].get('path'), str):
        out.append(arg['commit']['path'])
    for e in arg.get('entries') or ():
        if isinstance(e, dict):
            out.extend(request_paths(route_name, e))
    return out

"""Stone-style JSON handling for the fake Dropbox server.

Dropbox generates its API from Stone specs, and its servers validate
request arguments strictly: wrong JSON types, unknown fields, missing
required fields, unknown union tags and strings that do not match a
declared pattern are all rejected with HTTP 400 and a plain-text body.
This module mirrors that: request argument types are declared below as
data (one Struct per argument type, copied from the Stone spec / the
official Python SDK validators), and `decode()` turns a parsed JSON
value into a plain dict with defaults filled in, or raises
ValidationError with a Stone-like message.

It also holds the pieces of the wire format shared by every route:
route errors (409 bodies with `error_summary`), the Dropbox content hash
and the timestamp format.
"""

import hashlib
import json
import random
import re
import time

# --------------------------------------------------------------------------
# Wire helpers

BLOCK_SIZE = 4 * 1024 * 1024
TIMESTAMP_FORMAT = '%Y-%m-%dT%H:%M:%SZ'


def dumps(obj):
    """JSON as Dropbox sends it: ASCII only (\\uXXXX escapes, surrogate
    pairs above U+FFFF, and U+007F escaped too), `, ` / `: ` separators."""
    return json.dumps(obj, ensure_ascii=True)


def timestamp(t=None):
    """UTC `YYYY-MM-DDTHH:MM:SSZ` (second precision)."""
    return time.strftime(TIMESTAMP_FORMAT, time.gmtime(time.time() if t is None else t))


class ContentHasher:
    """Dropbox content hash (developers/reference/content-hash): SHA-256 of
    every 4 MiB block, then SHA-256 of the concatenated block digests."""

    def __init__(self):
        self._outer = hashlib.sha256()
        self._block = hashlib.sha256()
        self._block_len = 0
        self.size = 0

    def update(self, data):
        mv = memoryview(data)
        self.size += len(mv)
        while len(mv):
            take = min(BLOCK_SIZE - self._block_len, len(mv))
            self._block.update(mv[:take])
            self._block_len += take
            mv = mv[take:]
            if self._block_len == BLOCK_SIZE:
                self._outer.update(self._block.digest())
                self._block = hashlib.sha256()
                self._block_len = 0

    def hexdigest(self):
        outer = self._outer.copy()
        if self._block_len:
            outer.update(self._block.digest())
        return outer.hexdigest()


def content_hash(data):
    h = ContentHasher()
    h.update(data)
    return h.hexdigest()


# --------------------------------------------------------------------------
# Unions and route errors

def tag(name, value=None, **inline):
    """A union value: `tag('path', tag('not_found'))` ->
    {".tag": "path", "path": {".tag": "not_found"}}; struct members are
    inlined: `tag('incorrect_offset', correct_offset=3)`."""
    d = {'.tag': name}
    if value is not None:
        d[name] = value
    d.update(inline)
    return d


def error_summary(err):
    """The slash-joined tag chain plus a random number of trailing dots,
    as Dropbox does on purpose so that clients parse `error` instead."""
    parts = []
    cur = err
    while isinstance(cur, dict) and '.tag' in cur:
        t = cur['.tag']
        parts.append(t)
        nxt = cur.get(t)
        if not (isinstance(nxt, dict) and '.tag' in nxt):
            # A struct member inlined next to .tag may itself hold a union
            # (UploadWriteFailed.reason).
            nxt = next((v for k, v in cur.items()
                        if k not in ('.tag', t) and isinstance(v, dict) and '.tag' in v), None)
        cur = nxt
    return '/'.join(parts) + '/' + '.' * random.randint(1, 3)


class ApiError(Exception):
    """A complete HTTP answer that ends a request early."""

    def __init__(self, status, body, content_type='application/json', headers=()):
        super().__init__(status)
        self.status = status
        self.body = body if isinstance(body, bytes) else body.encode('utf-8')
        self.content_type = content_type
        self.headers = list(headers)


class RouteError(ApiError):
    """409 with the route's error union."""

    def __init__(self, err):
        self.error = err
        super().__init__(409, dumps({'error_summary': error_summary(err), 'error': err}))


class BadInput(ApiError):
    """400, plain text, as Dropbox answers argument and header problems."""

    def __init__(self, route, msg):
        self.msg = msg
        super().__init__(400, 'Error in call to API function "%s": %s' % (route, msg),
                         'text/plain; charset=utf-8')


def auth_error(tagname):
    """401 AuthError body."""
    err = {'.tag': tagname}
    return ApiError(401, dumps({'error_summary': error_summary(err), 'error': err}))


def rate_limit_body(reason='too_many_requests', retry_after=1):
    err = {'reason': {'.tag': reason}, 'retry_after': retry_after}
    return dumps({'error_summary': reason + '/' + '.' * random.randint(1, 3), 'error': err})


# --------------------------------------------------------------------------
# Validators

class ValidationError(Exception):
    def __init__(self, msg, path=()):
        super().__init__(msg)
        self.msg = msg
        self.path = list(path)

    def __str__(self):
        if self.path:
            return '%s: %s' % ('.'.join(self.path), self.msg)
        return self.msg


def json_type(v):
    if v is None:
        return 'null'
    if isinstance(v, bool):
        return 'boolean'
    if isinstance(v, int):
        return 'integer'
    if isinstance(v, float):
        return 'float'
    if isinstance(v, str):
        return 'string'
    if isinstance(v, list):
        return 'list'
    return 'object'


class Validator:
    def validate(self, v):
        raise NotImplementedError


class Boolean(Validator):
    def validate(self, v):
        if not isinstance(v, bool):
            raise ValidationError('expected boolean, got %s' % json_type(v))
        return v


class UInt(Validator):
    def __init__(self, min_value=0, max_value=2**64 - 1):
        self.min_value = min_value
        self.max_value = max_value

    def validate(self, v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValidationError('expected integer, got %s' % json_type(v))
        if v < self.min_value:
            raise ValidationError('%d is not greater than %d' % (v, self.min_value))
        if v > self.max_value:
            raise ValidationError('%d is not less than %d' % (v, self.max_value))
        return v


def _valid_unicode(s):
    try:
        s.encode('utf-8')
        return True
    except UnicodeEncodeError:   # lone surrogate from a \\udXXX escape
        return False


class String(Validator):
    def __init__(self, min_length=None, max_length=None, pattern=None, matcher=None):
        self.min_length = min_length
        self.max_length = max_length
        self.pattern = pattern      # the Stone pattern text, for messages
        self.matcher = matcher      # callable(str) -> bool, or compiled regex
        if matcher is None and pattern is not None:
            self.matcher = re.compile(r'\A(?:%s)\Z' % pattern).match

    def validate(self, v):
        if not isinstance(v, str):
            raise ValidationError('expected string, got %s' % json_type(v))
        if not _valid_unicode(v):
            raise ValidationError('%r is not valid Unicode (lone surrogate)' % v)
        if self.min_length is not None and len(v) < self.min_length:
            raise ValidationError("'%s' must be at least %d characters, got %d"
                                  % (v, self.min_length, len(v)))
        if self.max_length is not None and len(v) > self.max_length:
            raise ValidationError("'%s' must be at most %d characters, got %d"
                                  % (v, self.max_length, len(v)))
        if self.matcher is not None and not self.matcher(v):
            raise ValidationError("'%s' did not match pattern '%s'" % (v, self.pattern))
        return v


class Timestamp(Validator):
    def validate(self, v):
        if not isinstance(v, str):
            raise ValidationError('expected timestamp, got %s' % json_type(v))
        try:
            time.strptime(v, TIMESTAMP_FORMAT)
        except ValueError:
            raise ValidationError("'%s' does not match format '%s'" % (v, TIMESTAMP_FORMAT))
        if not re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ', v):
            raise ValidationError("'%s' does not match format '%s'" % (v, TIMESTAMP_FORMAT))
        return v


class List(Validator):
    def __init__(self, item, max_items=None):
        self.item = item
        self.max_items = max_items

    def validate(self, v):
        if not isinstance(v, list):
            raise ValidationError('expected list, got %s' % json_type(v))
        if self.max_items is not None and len(v) > self.max_items:
            raise ValidationError('expected at most %d items, got %d' % (self.max_items, len(v)))
        out = []
        for i, x in enumerate(v):
            try:
                out.append(self.item.validate(x))
            except ValidationError as e:
                e.path.insert(0, str(i))
                raise
        return out


class Nullable(Validator):
    def __init__(self, inner):
        self.inner = inner

    def validate(self, v):
        return None if v is None else self.inner.validate(v)


class Any(Validator):
    """For ignorable fields whose inner shape we do not model."""

    def validate(self, v):
        return v


REQUIRED = object()


class Struct(Validator):
    """fields: list of (name, validator, default); default REQUIRED means
    required. Nullable fields default to None when absent."""

    def __init__(self, name, fields):
        self.name = name
        self.fields = fields
        self.names = {f[0] for f in fields}

    def validate(self, v):
        if not isinstance(v, dict):
            raise ValidationError('expected object, got %s' % json_type(v))
        for k in v:
            if k not in self.names and k != '.tag':
                raise ValidationError("unknown field '%s'" % k)
        out = {}
        for name, val, default in self.fields:
            if name in v:
                try:
                    out[name] = val.validate(v[name])
                except ValidationError as e:
                    e.path.insert(0, name)
                    raise
            elif default is REQUIRED:
                raise ValidationError("missing required field '%s'" % name)
            else:
                out[name] = default
        return out


class Union(Validator):
    """members: dict tag -> validator (None for a void member). Decoded as
    (tag, value). Requests may spell a void member as a bare string."""

    def __init__(self, name, members):
        self.name = name
        self.members = members

    def validate(self, v):
        if isinstance(v, str):
            t, obj = v, None
        elif isinstance(v, dict):
            t = v.get('.tag')
            if not isinstance(t, str):
                raise ValidationError("missing '.tag' key" if t is None
                                      else "tag must be string, got %s" % json_type(t))
            obj = v
        else:
            raise ValidationError('expected string or object, got %s' % json_type(v))
        if t not in self.members:
            raise ValidationError("unknown tag '%s'" % t)
        member = self.members[t]
        if member is None:
            if obj is not None and len(obj) > 1:
                extra = next(k for k in obj if k != '.tag')
                raise ValidationError("unexpected key '%s' for void tag '%s'" % (extra, t))
            return (t, None)
        if obj is None:
            raise ValidationError("tag '%s' requires a value" % t)
        if isinstance(member, Struct):
            return (t, member.validate({k: x for k, x in obj.items() if k != '.tag'}))
        if t not in obj:
            raise ValidationError("missing '%s' key for tag '%s'" % (t, t))
        if len(obj) > 2:
            extra = next(k for k in obj if k not in ('.tag', t))
            raise ValidationError("unexpected key '%s'" % extra)
        try:
            return (t, member.validate(obj[t]))
        except ValidationError as e:
            e.path.insert(0, t)
            raise


class Void(Validator):
    """Argument type of no-argument routes: only `null`."""

    def validate(self, v):
        if v is not None:
            raise ValidationError('expected null, got %s' % json_type(v))
        return None


# --------------------------------------------------------------------------
# files.stone aliases (patterns copied from the spec)

_NS = re.compile(r'\Ans:[0-9]+(/.*)?\Z')
_REV_PATH = re.compile(r'\Arev:[0-9a-f]{9,}\Z')


def _ns(s):
    return bool(_NS.match(s))


PathROrId = String(pattern=r'(/(.|[\r\n])*)?|id:.*|(ns:[0-9]+(/.*)?)',
                   matcher=lambda s: s == '' or s.startswith('/') or s.startswith('id:') or _ns(s))
ReadPath = String(pattern=r'(/(.|[\r\n])*|id:.*)|(rev:[0-9a-f]{9,})|(ns:[0-9]+(/.*)?)',
                  matcher=lambda s: s.startswith('/') or s.startswith('id:')
                  or bool(_REV_PATH.match(s)) or _ns(s))
WritePath = String(pattern=r'(/(.|[\r\n])*)|(ns:[0-9]+(/.*)?)',
                   matcher=lambda s: s.startswith('/') or _ns(s))
WritePathOrId = String(pattern=r'(/(.|[\r\n])*)|(ns:[0-9]+(/.*)?)|(id:.*)',
                       matcher=lambda s: s.startswith('/') or _ns(s) or s.startswith('id:'))
Rev = String(min_length=9, pattern='[0-9a-f]+')
Sha256HexHash = String(min_length=64, max_length=64)
ListFolderCursor = String(min_length=1)

SharedLink = Struct('SharedLink', [
    ('url', String(), REQUIRED),
    ('password', Nullable(String()), None),
])

TemplateFilterBase = Union('TemplateFilterBase', {
    'filter_some': List(String(min_length=1, pattern=r'(/|ptid:).*'), max_items=None),
})

PropertyGroup = Struct('PropertyGroup', [
    ('template_id', String(min_length=1, pattern=r'(/|ptid:).*'), REQUIRED),
    ('fields', List(Struct('PropertyField', [('name', String(), REQUIRED),
                                             ('value', String(), REQUIRED)])), REQUIRED),
])

ListFolderArg = Struct('ListFolderArg', [
    ('path', PathROrId, REQUIRED),
    ('recursive', Boolean(), False),
    ('include_media_info', Boolean(), False),
    ('include_deleted', Boolean(), False),
    ('include_has_explicit_shared_members', Boolean(), False),
    ('include_mounted_folders', Boolean(), True),
    ('limit', Nullable(UInt(1, 2000)), None),
    ('shared_link', Nullable(SharedLink), None),
    ('include_property_groups', Nullable(TemplateFilterBase), None),
    ('include_non_downloadable_files', Boolean(), True),
])

ListFolderContinueArg = Struct('ListFolderContinueArg', [
    ('cursor', ListFolderCursor, REQUIRED),
])

ListFolderLongpollArg = Struct('ListFolderLongpollArg', [
    ('cursor', ListFolderCursor, REQUIRED),
    ('timeout', UInt(30, 480), 30),
])

GetMetadataArg = Struct('GetMetadataArg', [
    ('path', ReadPath, REQUIRED),
    ('include_media_info', Boolean(), False),
    ('include_deleted', Boolean(), False),
    ('include_has_explicit_shared_members', Boolean(), False),
    ('include_property_groups', Nullable(TemplateFilterBase), None),
])

DownloadArg = Struct('DownloadArg', [
    ('path', ReadPath, REQUIRED),
    ('rev', Nullable(Rev), None),
])

WriteMode = Union('WriteMode', {'add': None, 'overwrite': None, 'update': Rev})

_COMMIT_FIELDS = [
    ('path', WritePathOrId, REQUIRED),
    ('mode', WriteMode, ('add', None)),
    ('autorename', Boolean(), False),
    ('client_modified', Nullable(Timestamp()), None),
    ('mute', Boolean(), False),
    ('property_groups', Nullable(List(PropertyGroup)), None),
    ('strict_conflict', Boolean(), False),
]
CommitInfo = Struct('CommitInfo', _COMMIT_FIELDS)
UploadArg = Struct('UploadArg', _COMMIT_FIELDS + [('content_hash', Nullable(Sha256HexHash), None)])

UploadSessionType = Union('UploadSessionType', {'sequential': None, 'concurrent': None})

UploadSessionCursor = Struct('UploadSessionCursor', [
    ('session_id', String(), REQUIRED),
    ('offset', UInt(), REQUIRED),
])

UploadSessionStartArg = Struct('UploadSessionStartArg', [
    ('close', Boolean(), False),
    ('session_type', Nullable(UploadSessionType), None),
    ('content_hash', Nullable(Sha256HexHash), None),
])

UploadSessionAppendArg = Struct('UploadSessionAppendArg', [
    ('cursor', UploadSessionCursor, REQUIRED),
    ('close', Boolean(), False),
    ('content_hash', Nullable(Sha256HexHash), None),
])

UploadSessionFinishArg = Struct('UploadSessionFinishArg', [
    ('cursor', UploadSessionCursor, REQUIRED),
    ('commit', CommitInfo, REQUIRED),
    ('content_hash', Nullable(Sha256HexHash), None),
])

UploadSessionFinishBatchArg = Struct('UploadSessionFinishBatchArg', [
    ('entries', List(UploadSessionFinishArg, max_items=1000), REQUIRED),
])

UploadSessionStartBatchArg = Struct('UploadSessionStartBatchArg', [
    ('session_type', Nullable(UploadSessionType), None),
    ('num_sessions', UInt(1, 1000), REQUIRED),
])

PollArg = Struct('PollArg', [('async_job_id', String(min_length=1), REQUIRED)])

CreateFolderArg = Struct('CreateFolderArg', [
    ('path', WritePath, REQUIRED),
    ('autorename', Boolean(), False),
])

DeleteArg = Struct('DeleteArg', [
    ('path', WritePathOrId, REQUIRED),
    ('parent_rev', Nullable(Rev), None),
])

DeleteBatchArg = Struct('DeleteBatchArg', [
    ('entries', List(DeleteArg, max_items=1000), REQUIRED),
])

RelocationArg = Struct('RelocationArg', [
    ('from_path', WritePathOrId, REQUIRED),
    ('to_path', WritePathOrId, REQUIRED),
    ('allow_shared_folder', Boolean(), False),
    ('autorename', Boolean(), False),
    ('allow_ownership_transfer', Boolean(), False),
])

VOID = Void()

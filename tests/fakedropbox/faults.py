"""Fault injection rules and request statistics.

A rule matches API requests by route (exact name such as "files/upload",
a list of names, or "*") and optionally by path (fnmatch pattern, compared
case-insensitively with every path the request names: `path`,
`from_path`, `to_path`, `commit.path`, batch commit paths). `skip` lets
that many matching requests through first; `count` is how many times it
then fires (null = forever). The first rule that matches fires; each
request fires at most one rule.

What a rule does (see README.md for the full table):

  before the request is processed (the namespace does not change)
    status: 429 (+ retry_after, reason, plain), 5xx, 409 + error/body,
    or any code with `body` / `raw_body`
    drop_request_after: N   read N body bytes, then close the socket
  around it
    delay: seconds          sleep before handling
    bandwidth: bytes/s      throttle this request's body, both ways
  after processing (the namespace HAS changed: a lost reply)
    lose_response: true     close without sending anything
    drop_response_after: N  send headers and N body bytes, then close
    truncate: true          same with N = half the body
    process: true           with `status`: process, then answer `status`
    invalid_json: true      200 with a body that is not JSON
    hostile: NAME           corrupt a list_folder/download reply
    batch_entry_error: TAG  per-entry failures in finish_batch(_v2) and
                            delete_batch (those entries are not deleted)
    job_failed: TAG         delete_batch: nothing is deleted and the job
                            ends `failed` (too_many_write_operations)
"""

import collections
import fnmatch
import itertools
import threading

RULE_KEYS = {
    'route', 'path', 'count', 'skip', 'status', 'retry_after', 'retry_after_header',
    'reason', 'plain', 'error', 'body', 'raw_body', 'content_type', 'process',
    'drop_request_after', 'drop_response_after', 'lose_response', 'truncate',
    'delay', 'bandwidth', 'invalid_json', 'hostile', 'batch_entry_error', 'entries',
    'job_failed',
}

HOSTILE_LIST = {'name_slash', 'name_dotdot', 'name_dot', 'name_empty', 'name_nul',
                'outside_path', 'path_mismatch', 'unknown_tag', 'negative_size', 'huge_name',
                'duplicate_id'}
HOSTILE_DOWNLOAD = {'corrupt_body', 'wrong_size', 'bad_result_header', 'missing_result_header',
                    'wrong_content_hash'}

# 409 errors a rule can name with `error`, per route (the route's own union).
ROUTE_ERRORS = {
    'insufficient_space': {
        'files/upload': lambda sid: {'.tag': 'path', 'reason': {'.tag': 'insufficient_space'},
                                     'upload_session_id': sid},
        'files/upload_session/finish': lambda sid: {'.tag': 'path',
                                                    'path': {'.tag': 'insufficient_space'}},
        'files/create_folder_v2': lambda sid: {'.tag': 'path',
                                               'path': {'.tag': 'insufficient_space'}},
        'files/copy_v2': lambda sid: {'.tag': 'insufficient_quota'},
        'files/move_v2': lambda sid: {'.tag': 'insufficient_quota'},
    },
    'too_many_write_operations': {
        'files/upload': lambda sid: {'.tag': 'path',
                                     'reason': {'.tag': 'too_many_write_operations'},
                                     'upload_session_id': sid},
        'files/upload_session/finish': lambda sid: {'.tag': 'too_many_write_operations'},
        'files/create_folder_v2': lambda sid: {'.tag': 'path',
                                               'path': {'.tag': 'too_many_write_operations'}},
        'files/delete_v2': lambda sid: {'.tag': 'too_many_write_operations'},
        'files/copy_v2': lambda sid: {'.tag': 'to', 'to': {'.tag': 'too_many_write_operations'}},
        'files/move_v2': lambda sid: {'.tag': 'to', 'to': {'.tag': 'too_many_write_operations'}},
    },
    'not_found': {
        'files/get_metadata': lambda sid: {'.tag': 'path', 'path': {'.tag': 'not_found'}},
        'files/download': lambda sid: {'.tag': 'path', 'path': {'.tag': 'not_found'}},
        'files/list_folder': lambda sid: {'.tag': 'path', 'path': {'.tag': 'not_found'}},
        'files/delete_v2': lambda sid: {'.tag': 'path_lookup', 'path_lookup': {'.tag': 'not_found'}},
        'files/move_v2': lambda sid: {'.tag': 'from_lookup', 'from_lookup': {'.tag': 'not_found'}},
        'files/copy_v2': lambda sid: {'.tag': 'from_lookup', 'from_lookup': {'.tag': 'not_found'}},
        'files/upload_session/append_v2': lambda sid: {'.tag': 'not_found'},
        'files/upload_session/finish': lambda sid: {'.tag': 'lookup_failed',
                                                    'lookup_failed': {'.tag': 'not_found'}},
    },
    'reset': {
        'files/list_folder/continue': lambda sid: {'.tag': 'reset'},
        'files/list_folder/longpoll': lambda sid: {'.tag': 'reset'},
    },
    'internal_error': {
        'files/move_v2': lambda sid: {'.tag': 'internal_error'},
        'files/copy_v2': lambda sid: {'.tag': 'internal_error'},
        'files/upload_session/finish_batch/check': lambda sid: {'.tag': 'internal_error'},
    },
}

BATCH_ENTRY_ERRORS = {
    'too_many_write_operations': {'.tag': 'too_many_write_operations'},
    'insufficient_space': {'.tag': 'path', 'path': {'.tag': 'insufficient_space'}},
    'internal_error': {'.tag': 'other'},
}


class Rule:
    _ids = itertools.count(1)

    def __init__(self, spec):
        unknown = set(spec) - RULE_KEYS
        if unknown:
            raise ValueError('unknown fault rule keys: %s' % ', '.join(sorted(unknown)))
        if 'route' not in spec:
            raise ValueError('a fault rule needs "route"')
        self.spec = dict(spec)
        self.id = next(Rule._ids)
        r = spec['route']
        self.routes = None if r == '*' else ({r} if isinstance(r, str) else set(r))
        self.path = spec.get('path')
        self.count = spec.get('count', 1)
        self.skip = spec.get('skip', 0)
        self.fired = 0
        g = spec.get
        if g('error') is not None:
            table = ROUTE_ERRORS.get(g('error'))
            if self.routes is None:
                raise ValueError('"error" needs explicit routes (not "*")')
            if table is None:
                raise ValueError('unknown error %r (known: %s)' % (g('error'), ', '.join(ROUTE_ERRORS)))
            for route in self.routes or ():
                if route not in table:
                    raise ValueError('error %r is not defined for route %s' % (g('error'), route))
            self.spec.setdefault('status', 409)
        if g('batch_entry_error') is not None and g('batch_entry_error') not in BATCH_ENTRY_ERRORS:
            raise ValueError('unknown batch_entry_error %r' % g('batch_entry_error'))
        if g('job_failed') is not None:
            if g('job_failed') != 'too_many_write_operations':
                raise ValueError('job_failed must be too_many_write_operations')
            if self.routes != {'files/delete_batch'}:
                raise ValueError('job_failed is for route files/delete_batch')
        if g('hostile') is not None and g('hostile') not in HOSTILE_LIST | HOSTILE_DOWNLOAD:
            raise ValueError('unknown hostile variant %r' % g('hostile'))
        if g('status') == 429 and g('reason') not in (None, 'too_many_requests',
                                                      'too_many_write_operations'):
            raise ValueError('429 reason must be too_many_requests or too_many_write_operations')

    def get(self, k, default=None):
        return self.spec.get(k, default)

    @property
    def pre(self):
        """Fires before processing (the request does not take effect)."""
        return self.get('status') is not None and not self.get('process')

    def to_json(self):
        d = dict(self.spec)
        d.update(id=self.id, fired=self.fired, remaining=self.count, skip_left=self.skip)
        return d


class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []

    def add(self, spec):
        rule = Rule(spec)
        with self.lock:
            self.rules.append(rule)
        return rule.id

    def clear(self):
        with self.lock:
            self.rules.clear()

    def remove(self, rule_id):
        with self.lock:
            self.rules = [r for r in self.rules if r.id != rule_id]

    def list(self):
        with self.lock:
            return [r.to_json() for r in self.rules]

    def has_path_rules(self, route):
        with self.lock:
            return any(r.path is not None and (r.routes is None or route in r.routes)
                       for r in self.rules)

    def match(self, route, paths, path_rules_only=False):
        """Consume and return the first rule matching `route` and `paths`
        (None = the request's paths are not known yet: rules with a path
        condition do not match)."""
        with self.lock:
            for r in self.rules:
                if r.routes is not None and route not in r.routes:
                    continue
                if r.path is not None:
                    if paths is None:
                        continue
                    pat = r.path.lower()
                    if not any(fnmatch.fnmatchcase(p.lower(), pat) for p in paths):
                        continue
                elif path_rules_only:
                    continue
                if r.count is not None and r.count <= 0:
                    continue
                if r.skip > 0:
                    r.skip -= 1
                    continue
                if r.count is not None:
                    r.count -= 1
                r.fired += 1
                return r
            return None


class Stats:
    """Per-route request counts, HTTP status counts, bytes moved."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with getattr(self, 'lock', threading.Lock()):
            self.routes = collections.Counter()
            self.statuses = collections.Counter()
            self.route_statuses = collections.defaultdict(collections.Counter)
            self.bytes_uploaded = 0
            self.bytes_downloaded = 0
            self.reply_bytes = collections.Counter()
            self.faults_fired = collections.Counter()
            self.connections = 0
            self.log = collections.deque(maxlen=2000)

    def count(self, route):
        with self.lock:
            self.routes[route] += 1

    def status(self, route, code):
        with self.lock:
            self.statuses[str(code)] += 1
            self.route_statuses[route][str(code)] += 1

    def add_up(self, n):
        with self.lock:
            self.bytes_uploaded += n

    def add_down(self, n):
        with self.lock:
            self.bytes_downloaded += n

    def add_reply(self, route, n):
        with self.lock:
            self.reply_bytes[route] += n

    def fired(self, rule):
        with self.lock:
            self.faults_fired[str(rule.id)] += 1

    def record(self, entry):
        with self.lock:
            self.log.append(entry)

    def snapshot(self):
        with self.lock:
            return {
                'routes': dict(self.routes),
                'statuses': dict(self.statuses),
                'route_statuses': {k: dict(v) for k, v in self.route_statuses.items()},
                'requests': sum(self.routes.values()),
                'bytes_uploaded': self.bytes_uploaded,
                'bytes_downloaded': self.bytes_downloaded,
                'reply_bytes': dict(self.reply_bytes),
                'faults_fired': dict(self.faults_fired),
                'connections': self.connections,
            }

    def requests(self, route=None):
        with self.lock:
            return [e for e in self.log if route is None or e['route'] == route]

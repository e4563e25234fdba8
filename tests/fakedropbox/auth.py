"""Tokens and the OAuth 2 endpoints of the fake (authorization code with
PKCE, refresh tokens, revocation).

Kinds of credential:
* static access tokens, configured by the test (never expire unless the
  test expires them);
* authorization codes, minted by GET /oauth2/authorize (auto-approved) or
  by the control API, single use, valid 10 minutes;
* refresh tokens, from the code exchange with token_access_type=offline;
  long-lived until revoked;
* short-lived access tokens ("sl." + random) from the code exchange or a
  refresh, expiring after config['token_lifetime'] seconds.

Revoking an access token (auth/token/revoke) also revokes the refresh
token it came from and every access token minted from that refresh token,
as Dropbox documents.
"""

import base64
import hashlib
import secrets
import threading
import time
import urllib.parse

from .stone import dumps

CODE_LIFETIME = 600
VERIFIER_CHARS = set('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~')
ACCOUNT_ID = 'dbid:AADfakeDropboxAccountIdForHuracanfsTests0'
DEFAULT_SCOPE = ('account_info.read files.content.read files.content.write '
                 'files.metadata.read files.metadata.write')


def pkce_challenge(verifier):
    """base64url(SHA-256(verifier)) without padding (S256)."""
    d = hashlib.sha256(verifier.encode('ascii')).digest()
    return base64.urlsafe_b64encode(d).decode('ascii').rstrip('=')


class OAuthError(Exception):
    def __init__(self, error, description, status=400):
        super().__init__(error)
        self.status = status
        self.body = dumps({'error': error, 'error_description': description})


class Tokens:
    def __init__(self, config):
        self.config = config
        self.lock = threading.Lock()
        self.access = {}     # token -> {'expires': float|None, 'refresh': str|None}
        self.refresh = {}    # token -> {'client_id', 'pkce', 'scope', 'revoked'}
        self.codes = {}      # code -> {...}

    def reset(self, static_tokens=()):
        with self.lock:
            self.access.clear()
            self.refresh.clear()
            self.codes.clear()
            for t in static_tokens:
                self.access[t] = {'expires': None, 'refresh': None}

    # ------------------------------------------------------------------ API

    def check(self, token):
        """None if valid, else the AuthError tag."""
        with self.lock:
            info = self.access.get(token)
            if info is None:
                return 'invalid_access_token'
            if info['expires'] is not None and time.time() >= info['expires']:
                return 'expired_access_token'
            return None

    def add(self, token, expires_in=None):
        with self.lock:
            self.access[token] = {'expires': None if expires_in is None
                                  else time.time() + expires_in, 'refresh': None}

    def expire(self, token):
        with self.lock:
            if token in self.access:
                self.access[token]['expires'] = time.time() - 1
                return True
            return False

    def revoke(self, token):
        with self.lock:
            info = self.access.pop(token, None)
            if info is None:
                return False
            rt = info.get('refresh')
            if rt:
                self.refresh.pop(rt, None)
                for t in [t for t, i in self.access.items() if i.get('refresh') == rt]:
                    del self.access[t]
            return True

    def add_refresh(self, rt=None, expires_in=None, client_id=None, pkce=True):
        """A refresh token as a code exchange with token_access_type=offline
        gives (PKCE: no client secret needed). Access tokens minted from it
        live `expires_in` seconds (default: config token_lifetime)."""
        rt = rt or secrets.token_urlsafe(48)
        with self.lock:
            self.refresh[rt] = {'client_id': client_id or self.config['app_key'],
                                'pkce': pkce, 'scope': DEFAULT_SCOPE,
                                'lifetime': expires_in}
        return rt

    def revoke_refresh(self, rt):
        with self.lock:
            self.refresh.pop(rt, None)
            for t in [t for t, i in self.access.items() if i.get('refresh') == rt]:
                del self.access[t]

    def _mint_access(self, refresh=None):
        tok = 'sl.' + secrets.token_urlsafe(96)
        lifetime = self.config['token_lifetime']
        if refresh is not None and self.refresh[refresh].get('lifetime') is not None:
            lifetime = self.refresh[refresh]['lifetime']
        self.access[tok] = {'expires': time.time() + lifetime, 'refresh': refresh}
        return tok, lifetime

    # ---------------------------------------------------------------- codes

    def mint_code(self, client_id=None, code_challenge=None, code_challenge_method='S256',
                  redirect_uri=None, token_access_type='offline', scope=None):
        code = secrets.token_urlsafe(32)
        with self.lock:
            self.codes[code] = {
                'client_id': client_id or self.config['app_key'],
                'challenge': code_challenge, 'method': code_challenge_method,
                'redirect_uri': redirect_uri, 'offline': token_access_type == 'offline',
                'scope': scope or DEFAULT_SCOPE, 'expires': time.time() + CODE_LIFETIME}
        return code

    def authorize(self, query):
        """GET /oauth2/authorize. Returns (status, headers, body)."""
        q = urllib.parse.parse_qs(query, keep_blank_values=True)

        def one(k):
            v = q.get(k)
            return v[0] if v else None

        def page(status, msg):
            body = ('<!DOCTYPE html><html><body><h1>Error</h1><p id="error">%s</p></body></html>'
                    % msg).encode('utf-8')
            return status, [('Content-Type', 'text/html; charset=utf-8')], body

        if one('client_id') != self.config['app_key']:
            return page(400, 'Invalid client_id')
        if one('response_type') != 'code':
            return page(400, 'response_type must be "code"')
        tat = one('token_access_type') or 'legacy'
        if tat not in ('offline', 'online', 'legacy'):
            return page(400, 'Invalid token_access_type')
        challenge = one('code_challenge')
        method = one('code_challenge_method')
        if challenge is not None:
            if method not in ('S256', 'plain'):
                return page(400, 'Invalid code_challenge_method')
            if not 43 <= len(challenge) <= 128 or set(challenge) - VERIFIER_CHARS:
                return page(400, 'Invalid code_challenge')
        elif method is not None:
            return page(400, 'code_challenge_method without code_challenge')
        redirect = one('redirect_uri')
        if redirect is not None and not self._redirect_ok(redirect):
            return page(400, 'Invalid redirect_uri')
        state = one('state')
        if state is not None and len(state.encode('utf-8')) > 500:
            return page(400, 'state too long')
        code = self.mint_code(one('client_id'), challenge, method or 'S256', redirect, tat,
                              one('scope'))
        if redirect is not None:
            params = {'code': code}
            if state is not None:
                params['state'] = state
            sep = '&' if '?' in redirect else '?'
            return 302, [('Location', redirect + sep + urllib.parse.urlencode(params)),
                         ('Content-Type', 'text/html; charset=utf-8')], b''
        body = ('<!DOCTYPE html><html><body><p>Enter this code into your app:</p>'
                '<input id="code" readonly value="%s"><code>%s</code></body></html>'
                % (code, code)).encode('utf-8')
        return 200, [('Content-Type', 'text/html; charset=utf-8')], body

    def _redirect_ok(self, uri):
        allowed = self.config.get('redirect_uris')
        if allowed:
            return uri in allowed
        p = urllib.parse.urlparse(uri)
        return p.scheme == 'http' and p.hostname in ('127.0.0.1', 'localhost')

    # ---------------------------------------------------------------- token

    def token_endpoint(self, form, basic_auth):
        """POST /oauth2/token with the parsed form. Returns a JSON string;
        raises OAuthError."""
        def one(k):
            v = form.get(k)
            if v and len(v) > 1:
                raise OAuthError('invalid_request', 'duplicate parameter %s' % k)
            return v[0] if v else None

        client_id, client_secret = one('client_id'), one('client_secret')
        if basic_auth is not None:
            if client_id is not None and client_id != basic_auth[0]:
                raise OAuthError('invalid_request', 'client_id mismatch')
            client_id, client_secret = basic_auth
        grant = one('grant_type')
        if grant is None:
            raise OAuthError('invalid_request', 'No grant_type')
        if grant not in ('authorization_code', 'refresh_token'):
            raise OAuthError('unsupported_grant_type', 'Unsupported grant_type "%s"' % grant)
        if client_id is None:
            raise OAuthError('invalid_request', 'No auth function available for given request')
        if client_id != self.config['app_key']:
            raise OAuthError('invalid_client', 'Invalid client_id or client_secret', 400)
        if client_secret is not None and client_secret != self.config['app_secret']:
            raise OAuthError('invalid_client', 'Invalid client_id or client_secret', 400)
        with self.lock:
            if grant == 'authorization_code':
                return self._exchange_code(one, client_id, client_secret)
            return self._refresh(one, client_id, client_secret)

    def _exchange_code(self, one, client_id, client_secret):
        code = one('code')
        if code is None:
            raise OAuthError('invalid_request', 'No code')
        info = self.codes.pop(code, None)
        if info is None or info['expires'] < time.time():
            raise OAuthError('invalid_grant', "code doesn't exist or has expired")
        if info['client_id'] != client_id:
            raise OAuthError('invalid_grant', 'code was issued to another client')
        if info['redirect_uri'] != one('redirect_uri'):
            raise OAuthError('invalid_grant', 'redirect_uri mismatch')
        verifier = one('code_verifier')
        if info['challenge'] is not None:
            if verifier is None:
                raise OAuthError('invalid_grant', 'invalid code verifier')
            if not 43 <= len(verifier) <= 128 or set(verifier) - VERIFIER_CHARS:
                raise OAuthError('invalid_grant', 'invalid code verifier')
            expect = pkce_challenge(verifier) if info['method'] == 'S256' else verifier
            if expect != info['challenge']:
                raise OAuthError('invalid_grant', 'invalid code verifier')
        else:
            if verifier is not None:
                raise OAuthError('invalid_grant', 'code verifier given but no code challenge')
            if client_secret is None:
                raise OAuthError('invalid_client', 'client_secret required')
        rt = None
        if info['offline']:
            rt = secrets.token_urlsafe(48)
            self.refresh[rt] = {'client_id': client_id, 'pkce': info['challenge'] is not None,
                                'scope': info['scope']}
        tok, lifetime = self._mint_access(rt)
        out = {'access_token': tok, 'token_type': 'bearer', 'expires_in': lifetime}
        if rt:
            out['refresh_token'] = rt
        out.update({'scope': info['scope'], 'uid': '123456789', 'account_id': ACCOUNT_ID})
        return dumps(out)

    def _refresh(self, one, client_id, client_secret):
        rt = one('refresh_token')
        if rt is None:
            raise OAuthError('invalid_request', 'No refresh_token')
        info = self.refresh.get(rt)
        if info is None:
            raise OAuthError('invalid_grant', 'refresh token is invalid or revoked')
        if info['client_id'] != client_id:
            raise OAuthError('invalid_grant', 'refresh token was issued to another client')
        if not info['pkce'] and client_secret is None:
            raise OAuthError('invalid_client', 'client_secret required')
        scope = one('scope')
        if scope is not None and not set(scope.split()) <= set(info['scope'].split()):
            raise OAuthError('invalid_scope', 'scope is not a subset of the granted scope')
        tok, lifetime = self._mint_access(rt)
        return dumps({'access_token': tok, 'token_type': 'bearer', 'expires_in': lifetime})

    # ------------------------------------------------------------- persistence

    def to_json(self):
        with self.lock:
            return {'access': self.access, 'refresh': self.refresh}

    def load(self, d):
        with self.lock:
            self.access.update(d.get('access', {}))
            self.refresh.update(d.get('refresh', {}))

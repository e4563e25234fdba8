"""Fake Dropbox API v2 server for the huracanfs tests (stdlib only).

    from fakedropbox import FakeDropbox, make_test_ca, content_hash

See README.md. Names are imported lazily so that
`python3 -m tests.fakedropbox.server` does not import server.py twice.
"""

__all__ = ['FakeDropbox', 'make_test_ca', 'content_hash', 'pkce_challenge',
           'DEFAULT_TOKEN', 'DEFAULT_CONFIG']


def __getattr__(name):
    if name in ('FakeDropbox', 'make_test_ca', 'DEFAULT_TOKEN', 'DEFAULT_CONFIG'):
        from . import server
        return getattr(server, name)
    if name == 'content_hash':
        from .stone import content_hash
        return content_hash
    if name == 'pkce_challenge':
        from .auth import pkce_challenge
        return pkce_challenge
    raise AttributeError(name)

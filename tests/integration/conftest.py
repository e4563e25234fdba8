"""Fixtures for the huracanfs integration tests (libfuse/sshfs style).

`mount` gives a mounted huracanfs (local backend) over a fresh temporary
remote, with the short test intervals of hfsutil.DEFAULT_INTERVALS.
`hfs` is the factory behind it, for tests that need another config or must
prepare the remote before mounting:

    m = hfs(intervals=LONG_INTERVALS, start=False)
    (m.remote / 'a.txt').write_bytes(b'x')
    m.start()

Every mount is always cleaned up (fusermount3 -u, then SIGKILL of a daemon
that does not exit, then fusermount3 -uz). After each test the daemon log
must hold no "[error]" line and no sanitizer report; a test that expects
errors says so with @pytest.mark.log_errors_expected(regex, ...) (no
argument: any [error] line). Sanitizer reports always fail.

The fake Dropbox (tests/fakedropbox) comes as `server` (one per test
module, HTTPS with a throw-away CA `ca`), `fake` (the same server, reset
around each test) and `dbx`, a factory like `hfs` whose mounts use the
Dropbox backend against it; a module that needs other defaults builds its
own with dropbox_mounts().

The binary is $HURACANFS_BIN, else build/src/huracanfs of this checkout.
Tests are skipped when /dev/fuse or fusermount3 is missing. Run them with

    meson test -C build --suite integration
    HURACANFS_BIN=build/src/huracanfs /usr/bin/pytest-3 tests/integration -v

(Debian's python3 and pytest; the suite uses nothing else.) The whole suite
takes about a minute; the slowest tests wait for upload intervals of a few
seconds.
"""

import os
import shutil
import sys
from pathlib import Path

import pytest

from hfsutil import HfsMount

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / 'tests'))
from fakedropbox import FakeDropbox, make_test_ca  # noqa: E402

# The static token the fake Dropbox accepts.
FAKE_TOKEN = 'fake-static-token'


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'log_errors_expected(*regexes): [error] lines in the'
        ' daemon log matching a regex (any, if none given) do not fail the'
        ' test')


@pytest.fixture(scope='session')
def hfs_bin():
    if not os.path.exists('/dev/fuse'):
        pytest.skip('/dev/fuse is missing')
    if not shutil.which('fusermount3'):
        pytest.skip('fusermount3 is missing')
    b = os.environ.get('HURACANFS_BIN') or str(REPO / 'build/src/huracanfs')
    if not os.access(b, os.X_OK):
        pytest.fail('huracanfs binary %s is missing; build it or set'
                    ' HURACANFS_BIN' % b, pytrace=False)
    return os.path.abspath(b)


@pytest.fixture
def hfs(request, tmp_path, hfs_bin):
    mounts = []

    def make(name=None, start=True, **kw):
        base = tmp_path / name if name else tmp_path
        m = HfsMount(hfs_bin, base, **kw)
        mounts.append(m)
        if start:
            m.start()
        return m

    yield make

    problems = []
    for m in mounts:
        problems += m.cleanup()
    marker = request.node.get_closest_marker('log_errors_expected')
    allowed = tuple(marker.args) if marker else ()
    allow_all = marker is not None and not marker.args
    for m in mounts:
        problems += m.problems(allowed, allow_all)
    if problems:
        pytest.fail('after the test:\n  ' + '\n  '.join(problems),
                    pytrace=False)


@pytest.fixture
def mount(hfs):
    return hfs()


# -- the fake Dropbox ---------------------------------------------------

@pytest.fixture(scope='module')
def ca(tmp_path_factory):
    return make_test_ca(tmp_path_factory.mktemp('ca'))


@pytest.fixture(scope='module')
def server(ca):
    fd = FakeDropbox(tls=ca).start()
    yield fd
    fd.stop()


@pytest.fixture
def fake(server):
    server.reset(config=True)
    yield server
    server.end_outage()
    server.clear_faults()
    server.reset(config=True)


def dropbox_mounts(hfs, fake, ca, hfs_defaults=None, dropbox_defaults=None):
    """A factory of mounts (see `hfs`) on the Dropbox backend of @fake;
    the defaults go under the test's own hfs_extra / dropbox_extra."""
    def make(start=True, intervals=None, hfs_extra=None, dropbox_extra=None,
             **kw):
        extra = {'backend': 'dropbox', 'api_url': fake.url,
                 'content_url': fake.url, 'notify_url': fake.url,
                 'ca_file': ca[0]}
        extra.update(hfs_defaults or {})
        extra.update(hfs_extra or {})
        dx = {'access_token': FAKE_TOKEN}
        dx.update(dropbox_defaults or {})
        dx.update(dropbox_extra or {})
        return hfs(start=start, intervals=intervals, hfs_extra=extra,
                   dropbox_extra=dx, **kw)
    return make


@pytest.fixture
def dbx(hfs, fake, ca):
    """A factory of mounts on the Dropbox backend of the fake."""
    return dropbox_mounts(hfs, fake, ca)

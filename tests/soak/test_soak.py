"""The short form of the crash soak (tests/soak/soak.py): about 40 s of a
trainer-like workload with SIGKILLs of the daemon and faults of the fake
Dropbox, with a fixed seed; then every file must be on the remote with
its last bytes, and nothing deleted may come back.

Run alone: HURACANFS_BIN=build/src/huracanfs /usr/bin/pytest-3 tests/soak
The long form is one command; see tests/soak/README.md."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SECONDS = int(os.environ.get('HFS_SOAK_SECONDS', '40'))
SEED = int(os.environ.get('HFS_SOAK_SEED', '20261122'))


def test_crash_soak(tmp_path):
    if not os.path.exists('/dev/fuse') or not shutil.which('fusermount3'):
        pytest.skip('FUSE is not available')
    binary = os.environ.get('HURACANFS_BIN') or str(
        REPO / 'build/src/huracanfs')
    if not os.access(binary, os.X_OK):
        pytest.fail('huracanfs binary %s is missing; build it or set'
                    ' HURACANFS_BIN' % binary, pytrace=False)
    env = dict(os.environ, HURACANFS_BIN=os.path.abspath(binary),
               PYTHONDONTWRITEBYTECODE='1')
    work = tmp_path / 'soak'
    r = subprocess.run([sys.executable, str(HERE / 'soak.py'),
                        '--seconds', str(SECONDS), '--seed', str(SEED),
                        '--workdir', str(work)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=env, timeout=SECONDS + 600)
    out = r.stdout.decode('utf-8', 'replace')
    print(out)
    lines = [ln for ln in out.splitlines() if ln.startswith('SOAK-RESULT ')]
    assert lines, 'the soak printed no result (exit %d):\n%s' % (
        r.returncode, out[-5000:])
    res = json.loads(lines[-1][len('SOAK-RESULT '):])
    summary = '\n'.join(ln for ln in out.splitlines()
                        if ln.startswith('soak: '))[-6000:]
    assert r.returncode == 0, 'the soak failed:\n' + summary
    assert res['mismatches'] == 0, summary
    # It must really have done what it claims to test.
    assert res['kills'] >= 3, summary
    assert res['operations'] >= 300, summary
    assert res['faults_fired'] >= 5, summary
    assert res['checks_after_kill'] >= res['kills'], summary
    assert res['files_verified'] >= 10, summary

"""Smart sync: a file whose content hash equals the remote's is not
uploaded again (seed: "Only syncs files that have changed")."""

import os
import re
import time

from hfsutil import wait_until, file_equals

SKIP_WORD_RE = re.compile(r'skip|unchanged|identical|same hash|up.to.date',
                          re.IGNORECASE)


def said_skipped(text):
    """True if a log line reports a skipped upload ("skipped=0" does not)."""
    for line in text.splitlines():
        if re.search(r'skipped=[1-9]', line):
            return True
        if SKIP_WORD_RE.search(line) and not re.search(r'skipped=0', line):
            return True
    return False


def test_identical_rewrite_is_not_uploaded(mount):
    rel = 'logs/learning/insights.json'
    data = b'{"pattern": "double-top", "confidence": 0.8}\n' * 200
    mount.m(rel).parent.mkdir(parents=True)
    mount.m(rel).write_bytes(data)
    mount.wait_remote(rel, data, 5)
    # Let the flusher finish with the file before taking the reference.
    wait_until(lambda: mount.cat_status('learning')['pending_files'] == 0, 3,
               'learning to have nothing pending')
    before = os.stat(mount.r(rel))
    log_off = mount.log_size()

    # Same bytes again, through a truncating rewrite.
    with open(mount.m(rel), 'wb') as f:
        f.write(data)
    st = mount.cat_status('learning')
    assert st['pending_files'] >= 1, \
        'the rewrite did not make the file pending: %r' % st

    t0 = time.monotonic()
    wait_until(lambda: time.monotonic() - t0 > 1.0 and
               mount.cat_status('learning')['pending_files'] == 0, 5,
               'the rewritten file to stop being pending')
    wait_until(lambda: said_skipped(mount.log_since(log_off)), 3,
               'a log line saying the unchanged file was skipped')
    after = os.stat(mount.r(rel))
    assert after.st_ino == before.st_ino, \
        'the remote file was replaced although its bytes did not change'
    assert after.st_mtime_ns == before.st_mtime_ns
    assert file_equals(mount.r(rel), data)

    # Control: a real change is uploaded (so the file was still watched).
    data2 = data + b'{"pattern": "new"}\n'
    mount.m(rel).write_bytes(data2)
    mount.wait_remote(rel, data2, 5)
    assert os.stat(mount.r(rel)).st_ino != before.st_ino


def test_file_already_on_remote_is_not_uploaded(hfs):
    """Bytes written locally that equal what the remote already holds."""
    m = hfs(start=False)
    data = os.urandom(100_000)
    (m.remote / 'other').mkdir()
    (m.remote / 'other' / 'same.dat').write_bytes(data)
    m.start()
    before = os.stat(m.r('other/same.dat'))
    log_off = m.log_size()
    m.m('other/same.dat').write_bytes(data)
    assert os.getxattr(m.m('other/same.dat'), 'user.huracanfs.category') \
        .rstrip(b'\0') == b'other'
    assert m.cat_status('other')['pending_files'] >= 1, \
        'the rewrite did not make the file pending'
    t0 = time.monotonic()
    wait_until(lambda: time.monotonic() - t0 > 1.0 and
               m.cat_status('other')['pending_files'] == 0, 5,
               'the rewritten file to stop being pending')
    wait_until(lambda: said_skipped(m.log_since(log_off)), 3,
               'a log line saying the unchanged file was skipped')
    after = os.stat(m.r('other/same.dat'))
    assert (after.st_ino, after.st_mtime_ns) == \
        (before.st_ino, before.st_mtime_ns), \
        'the remote file was uploaded again with identical bytes'

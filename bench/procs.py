"""Process and mount checks the benchmarks share (peers.py, rmrf.py,
transfer.py)."""

import os


def alive(pid):
    """True if process @pid exists and is neither a zombie nor dead."""
    try:
        with open('/proc/%d/stat' % pid, 'rb') as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rindex(b')') + 2:data.rindex(b')') + 3] not in b'ZXx'


def mounted(mnt):
    """True if @mnt is a mount point of this process's namespace."""
    want = os.fsencode(str(mnt))
    with open('/proc/self/mountinfo', 'rb') as f:
        return any(len(l.split()) > 4 and l.split()[4] == want for l in f)

#!/usr/bin/python3
"""Small-file operations for bench/run.sh, timed inside the process so
that interpreter start-up is not counted.

    fileops.py create DIR N SIZE   N files of SIZE bytes under DIR
    fileops.py stat   DIR N        stat every file
    fileops.py read   DIR N        open, read and close every file
    fileops.py delete DIR N        unlink every file, then the directories

Files are spread over directories of 100 (DIR/d0000/f000000), the way a
trainer spreads its output over runs. Prints the elapsed seconds.
"""

import os
import sys
import time

PER_DIR = 100


def paths(root, n):
    for i in range(n):
        yield os.path.join(root, 'd%04d' % (i // PER_DIR), 'f%06d' % i)


def main():
    op, root, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    t0 = time.perf_counter()
    if op == 'create':
        data = b'x' * int(sys.argv[4])
        os.makedirs(root, exist_ok=True)
        for i, p in enumerate(paths(root, n)):
            if i % PER_DIR == 0:
                os.mkdir(os.path.dirname(p))
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, data)
            os.close(fd)
    elif op == 'stat':
        for p in paths(root, n):
            os.stat(p)
    elif op == 'read':
        for p in paths(root, n):
            fd = os.open(p, os.O_RDONLY)
            os.read(fd, 1 << 20)
            os.close(fd)
    elif op == 'delete':
        for p in paths(root, n):
            os.unlink(p)
        for i in range(0, n, PER_DIR):
            os.rmdir(os.path.join(root, 'd%04d' % (i // PER_DIR)))
    else:
        sys.exit('unknown op %s' % op)
    print('%.6f' % (time.perf_counter() - t0))


if __name__ == '__main__':
    main()

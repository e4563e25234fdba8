#!/bin/sh
# Renders each man page given as an argument with `man --warnings -l` at 80
# columns and fails on any warning groff or man prints. Exit 77 (skip) when
# man(1) is missing.
set -u
if ! command -v man >/dev/null 2>&1; then
    echo "man(1) is missing (apt-get install man-db groff-base)" >&2
    exit 77
fi
[ $# -gt 0 ] || { echo "usage: check-man.sh PAGE..." >&2; exit 2; }
status=0
for page in "$@"; do
    err=$(MANWIDTH=80 LC_ALL=C.UTF-8 MAN_KEEP_FORMATTING=0 \
          man --warnings -l "$page" 2>&1 >/dev/null)
    rc=$?
    if [ $rc -ne 0 ] || [ -n "$err" ]; then
        echo "FAIL $page (exit $rc):" >&2
        printf '%s\n' "$err" >&2
        status=1
    else
        echo "ok   $page"
    fi
done
exit $status

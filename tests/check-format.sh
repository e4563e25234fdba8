#!/bin/sh
# Fails if any C source or header differs from what clang-format makes of
# it (style in .clang-format). Fix with: clang-format -i <file>.
# Usage: check-format.sh CLANG_FORMAT SOURCE_ROOT
set -eu
cf=$1
cd "$2"
bad=0
for f in $(find src include tests/unit tests/fuzz tests/powerloss -name '*.[ch]' | sort); do
	if ! "$cf" --dry-run -Werror "$f" >/dev/null 2>&1; then
		echo "not clang-formatted: $f (clang-format -i $f)"
		bad=1
	fi
done
exit $bad

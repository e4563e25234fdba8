#!/bin/sh
# Runs one libFuzzer target for a bounded time, starting from its seed
# corpus. Exits 0 if nothing was found, non-zero on a crash, a sanitizer
# report, a leak, a timeout or an out-of-memory (the input that did it is
# kept in BUILD/fuzz-artifacts/TARGET/ and named in the output).
#
#   tests/fuzz/run.sh TARGET SECONDS [libFuzzer options...]
#
# TARGET is config, dbx_json or paths. The build directory is build-fuzz at
# the top of the source tree unless HFS_FUZZ_BUILD names another one; it
# must be configured as tests/fuzz/README.md says. New inputs found by the
# fuzzer go to BUILD/fuzz-corpus/TARGET/ (kept between runs, never in the
# source tree); the seeds in tests/fuzz/corpus/TARGET/ are only read.
set -eu

if [ $# -lt 2 ]; then
	echo "usage: $0 TARGET SECONDS [libFuzzer options...]" >&2
	exit 2
fi
target=$1
seconds=$2
shift 2

here=$(cd "$(dirname "$0")" && pwd)
build=${HFS_FUZZ_BUILD:-$here/../../build-fuzz}
exe=$build/tests/fuzz/fuzz_$target
seeds=$here/corpus/$target

case $seconds in
'' | *[!0-9]*)
	echo "$0: SECONDS must be a whole number, not '$seconds'" >&2
	exit 2
	;;
esac
if [ ! -d "$seeds" ]; then
	echo "$0: unknown target '$target' (no $seeds)" >&2
	exit 2
fi
if [ ! -x "$exe" ]; then
	echo "$0: $exe not built; see tests/fuzz/README.md:" >&2
	echo "  CC=clang meson setup build-fuzz -Dfuzz=true" \
		"-Db_sanitize=address,undefined -Db_lundef=false" >&2
	echo "  ninja -C build-fuzz" >&2
	exit 2
fi

corpus=$build/fuzz-corpus/$target
artifacts=$build/fuzz-artifacts/$target
mkdir -p "$corpus" "$artifacts"
set -- -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
	-error_exitcode=1 -print_final_stats=1 \
	-artifact_prefix="$artifacts/" "$@"
if [ -f "$here/dict/$target.dict" ]; then
	set -- -dict="$here/dict/$target.dict" "$@"
fi

# UBSan only reports by default; make every finding a crash. Leaks count.
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"

echo "fuzz_$target: ${seconds}s, seeds $seeds, corpus $corpus"
rc=0
"$exe" "$@" "$corpus" "$seeds" || rc=$?
if [ $rc -ne 0 ]; then
	echo "fuzz_$target: FAILED (exit $rc); reproducer(s):" >&2
	ls -1 "$artifacts" >&2 || true
	echo "Reproduce with: $exe $artifacts/<file>" >&2
	echo "Once fixed, copy it to $seeds/ as a regression input." >&2
fi
exit $rc

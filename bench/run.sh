#!/usr/bin/env bash
# huracanfs benchmark: the same work on a native directory and on a
# huracanfs mount (local backend), side by side, with the ratio mount/native.
#
#   bench/run.sh [BUILD_DIR]          BUILD_DIR defaults to ./build
#
# Environment:
#   BENCH_FILE_MB   size of the sequential file, MiB        (default 1024)
#   BENCH_NFILES    number of small files                   (default 10000)
#   BENCH_FILE_KB   size of each small file, KiB            (default 4)
#   BENCH_RUNS      rounds; each figure is their median     (default 3)
#   BENCH_DIR       where the work directory is made        (default /var/tmp)
#   BENCH_KEEP=1    keep the work directory (config, daemon log) afterwards
#   HURACANFS_BIN   the binary (default BUILD_DIR/src/huracanfs)
#   PYTHON          python3 for the small-file helper (default /usr/bin/python3)
#
# It builds nothing. The native directory and the huracanfs cache live in the
# same work directory, so on the same filesystem. Upload intervals are set to
# a day, so no background upload runs during the measurements (one explicit
# `flush --wait` is timed separately and reported as information).
# Needs root for the cold reads (drop_caches); without it they are skipped.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
BUILD_DIR=${1:-$REPO/build}
BIN=${HURACANFS_BIN:-$BUILD_DIR/src/huracanfs}
PY=${PYTHON:-/usr/bin/python3}
FILE_MB=${BENCH_FILE_MB:-1024}
NFILES=${BENCH_NFILES:-10000}
FILE_KB=${BENCH_FILE_KB:-4}
RUNS=${BENCH_RUNS:-3}
BASE=${BENCH_DIR:-/var/tmp}
FUSERMOUNT=$(command -v fusermount3 || echo /usr/bin/fusermount3)

die() { echo "bench: $*" >&2; exit 1; }

[ -x "$BIN" ] || die "no huracanfs binary at $BIN (build first, or pass BUILD_DIR)"
[ -e /dev/fuse ] || die "/dev/fuse is missing"
[ -x "$FUSERMOUNT" ] || die "fusermount3 is missing"
[ -x "$PY" ] || die "no python3 at $PY"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

WORK=$(mktemp -d "$BASE/hfs-bench.XXXXXX")
NATIVE=$WORK/native
MNT=$WORK/mnt
REMOTE=$WORK/remote
CACHE=$WORK/cache
CFG=$WORK/config.yaml
LOG=$WORK/daemon.log
mkdir -p "$NATIVE" "$MNT" "$REMOTE"
PID=

need_mb=$((FILE_MB * 3 + NFILES * (FILE_KB + 4) / 1024 + 256))
avail_mb=$(df -Pm "$WORK" | awk 'NR == 2 { print $4 }')
[ "$avail_mb" -ge "$need_mb" ] ||
	die "$WORK has $avail_mb MiB free, the run needs about $need_mb MiB"

mounted() { grep -qF " $MNT " /proc/self/mountinfo; }

alive() {
	[ -n "$1" ] && [ -r "/proc/$1/stat" ] &&
		! awk '{ sub(/.*\) /, ""); exit !($1 == "Z" || $1 == "X") }' \
			"/proc/$1/stat"
}

cleanup() {
	local rc=$?
	if mounted; then
		"$FUSERMOUNT" -u "$MNT" 2>/dev/null || true
	fi
	if [ -n "$PID" ]; then
		for _ in $(seq 600); do alive "$PID" || break; sleep 0.1; done
		if alive "$PID"; then
			echo "bench: daemon $PID did not exit; killing it" >&2
			kill -9 "$PID" 2>/dev/null || true
		fi
	fi
	if mounted; then "$FUSERMOUNT" -uz "$MNT" 2>/dev/null || true; fi
	if [ "${BENCH_KEEP:-0}" = 1 ]; then
		echo "bench: kept $WORK"
	else
		rm -rf "$WORK"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }

CAN_DROP=0
if sync && echo 3 2>/dev/null >/proc/sys/vm/drop_caches; then CAN_DROP=1; fi
drop_caches() {
	[ "$CAN_DROP" = 1 ] || return 0
	sync
	echo 3 >/proc/sys/vm/drop_caches
}

# --- mount ------------------------------------------------------------------
umask 077
cat >"$CFG" <<EOF
dropbox:
  sync_interval_learning_seconds: 86400
  sync_interval_logs_seconds: 86400
  sync_interval_models_seconds: 86400
  sync_interval_data_cache_seconds: 86400
  sync_interval_new_data_seconds: 86400
huracanfs:
  backend: local
  remote_dir: "$REMOTE"
  cache_dir: "$CACHE"
  sync_interval_other_seconds: 86400
  log_file: "$LOG"
  log_level: info
EOF
chmod 600 "$CFG"
umask 022

t0=$(now)
"$BIN" mount "$MNT" --config "$CFG" </dev/null >"$WORK/mount.out" 2>&1 ||
	die "huracanfs mount failed: $(cat "$WORK/mount.out")"
t1=$(now)
MOUNT_S=$(elapsed "$t0" "$t1")
mounted || die "huracanfs mount returned 0 but $MNT is not mounted"

PID=$("$BIN" status "$MNT" --json 2>/dev/null |
	"$PY" -c 'import json,sys; print(json.load(sys.stdin).get("pid") or "")' \
	2>/dev/null || true)
if ! alive "$PID"; then
	PID=
	for d in /proc/[0-9]*; do
		cmd=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null || true)
		case "$cmd" in
		*huracanfs*" mount "*"$MNT"*) PID=${d#/proc/}; break ;;
		esac
	done
fi
[ -n "$PID" ] || die "cannot find the daemon's pid"

# --- measurements -------------------------------------------------------------
# Each round does every operation on the native directory, then on the
# mount; the report shows the median of the rounds for each figure.
ORDER=()        # row names, in order
declare -A UNIT NATIVE_V MOUNT_V
# add NAME UNIT NATIVE_VALUE MOUNT_VALUE   (values are rates: higher is better)
add() {
	if [ -z "${UNIT[$1]+x}" ]; then ORDER+=("$1"); UNIT[$1]=$2; fi
	NATIVE_V[$1]+="$3 "
	MOUNT_V[$1]+="$4 "
}
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.1f", (s > 0) ? n / s : 0 }'; }
median() {
	tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) print 0;
			else if (NR % 2) print v[(NR + 1) / 2];
			else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

seq_write() {
	local t0 t1
	rm -f "$1/big"
	t0=$(now)
	dd if=/dev/zero of="$1/big" bs=1M count="$FILE_MB" status=none
	t1=$(now)
	rate "$FILE_MB" "$(elapsed "$t0" "$t1")"
}

seq_read() {
	local t0 t1
	t0=$(now)
	dd if="$1/big" of=/dev/null bs=1M status=none
	t1=$(now)
	rate "$FILE_MB" "$(elapsed "$t0" "$t1")"
}

lsr() {
	local t0 t1
	t0=$(now)
	ls -lR "$1" >/dev/null
	t1=$(now)
	rate "$NFILES" "$(elapsed "$t0" "$t1")"
}

fileop() { "$PY" "$HERE/fileops.py" "$@"; }
FLUSH_RATES=""

for round in $(seq "$RUNS"); do
	echo "bench: round $round of $RUNS" >&2
	echo "bench:   sequential write of $FILE_MB MiB" >&2
	n=$(seq_write "$NATIVE"); m=$(seq_write "$MNT")
	add "seq write ${FILE_MB} MiB (dd bs=1M)" "MiB/s" "$n" "$m"

	if [ "$CAN_DROP" = 1 ]; then
		echo "bench:   cold sequential read" >&2
		drop_caches; n=$(seq_read "$NATIVE")
		drop_caches; m=$(seq_read "$MNT")
		add "seq read, cold cache" "MiB/s" "$n" "$m"
	fi
	echo "bench:   warm sequential read" >&2
	seq_read "$NATIVE" >/dev/null; n=$(seq_read "$NATIVE")
	seq_read "$MNT" >/dev/null; m=$(seq_read "$MNT")
	add "seq read, warm cache" "MiB/s" "$n" "$m"

	echo "bench:   flush --wait of the big file" >&2
	t0=$(now)
	"$BIN" flush "$MNT" --wait >/dev/null || die "flush --wait failed"
	t1=$(now)
	FLUSH_RATES+="$(rate "$FILE_MB" "$(elapsed "$t0" "$t1")") "
	rm -f "$NATIVE/big" "$MNT/big"

	echo "bench:   create $NFILES files of $FILE_KB KiB" >&2
	n=$(fileop create "$NATIVE/files" "$NFILES" $((FILE_KB * 1024)))
	m=$(fileop create "$MNT/files" "$NFILES" $((FILE_KB * 1024)))
	add "create ${NFILES} x ${FILE_KB} KiB files" "files/s" \
		"$(rate "$NFILES" "$n")" "$(rate "$NFILES" "$m")"

	c=warm
	[ "$CAN_DROP" = 1 ] && c=cold
	echo "bench:   stat all ($c cache)" >&2
	drop_caches; n=$(fileop stat "$NATIVE/files" "$NFILES")
	drop_caches; m=$(fileop stat "$MNT/files" "$NFILES")
	add "stat all, $c cache" "files/s" "$(rate "$NFILES" "$n")" \
		"$(rate "$NFILES" "$m")"

	echo "bench:   ls -lR ($c cache)" >&2
	drop_caches; n=$(lsr "$NATIVE/files")
	drop_caches; m=$(lsr "$MNT/files")
	add "ls -lR, $c cache" "files/s" "$n" "$m"

	echo "bench:   read all small files ($c cache)" >&2
	drop_caches; n=$(fileop read "$NATIVE/files" "$NFILES")
	drop_caches; m=$(fileop read "$MNT/files" "$NFILES")
	add "read all small files, $c" "files/s" "$(rate "$NFILES" "$n")" \
		"$(rate "$NFILES" "$m")"

	echo "bench:   delete all" >&2
	n=$(fileop delete "$NATIVE/files" "$NFILES")
	m=$(fileop delete "$MNT/files" "$NFILES")
	add "delete all" "files/s" "$(rate "$NFILES" "$n")" \
		"$(rate "$NFILES" "$m")"
done
FLUSH_RATE=$(median "$FLUSH_RATES")

HWM=$(awk '/^VmHWM:/ { print $2, $3 }' "/proc/$PID/status" 2>/dev/null || echo "?")
RSS=$(awk '/^VmRSS:/ { print $2, $3 }' "/proc/$PID/status" 2>/dev/null || echo "?")

t0=$(now)
"$FUSERMOUNT" -u "$MNT"
for _ in $(seq 1200); do alive "$PID" || break; sleep 0.05; done
t1=$(now)
UNMOUNT_S=$(elapsed "$t0" "$t1")
alive "$PID" && die "daemon $PID still running 60 s after unmount"

# --- report -------------------------------------------------------------------
buildinfo=$("$PY" - "$BUILD_DIR" <<'EOF' 2>/dev/null || echo "unknown"
import json, os, sys
p = os.path.join(sys.argv[1], 'meson-info', 'intro-buildoptions.json')
opts = {o['name']: o['value'] for o in json.load(open(p))}
san = opts.get('b_sanitize', 'none')
print('buildtype=%s sanitize=%s' % (opts.get('buildtype'),
      ','.join(san) if isinstance(san, list) else san))
EOF
)

echo
echo "huracanfs benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "binary:     $BIN ($buildinfo)"
echo "machine:    $(nproc) cpus, $(awk '/MemTotal/ { printf "%.0f GiB", $2/1048576 }' /proc/meminfo), kernel $(uname -r)"
echo "work dir:   $WORK ($(df --output=fstype "$WORK" | tail -n 1); native dir and cache on it)"
echo "backend:    local; all upload intervals 86400 s, so no upload runs"
echo "            during the measurements"
echo "figures:    median of $RUNS round(s); rates, higher is better"
[ "$CAN_DROP" = 1 ] || echo "cold reads: skipped (cannot write /proc/sys/vm/drop_caches)"
echo
printf '%-34s %-8s %12s %12s %9s\n' operation unit native mount mount/native
printf '%-34s %-8s %12s %12s %9s\n' --------- ---- ------ ----- ------------
for name in "${ORDER[@]}"; do
	nv=$(median "${NATIVE_V[$name]}")
	mv=$(median "${MOUNT_V[$name]}")
	ratio=$(awk -v n="$nv" -v m="$mv" 'BEGIN { if (n > 0) printf "%.2f", m / n; else print "-" }')
	printf '%-34s %-8s %12s %12s %9s\n' "$name" "${UNIT[$name]}" "$nv" "$mv" "$ratio"
done
echo
echo "mount time:                        ${MOUNT_S} s"
echo "flush --wait of ${FILE_MB} MiB:           ${FLUSH_RATE} MiB/s (median; upload to the local backend)"
echo "unmount (flush pending, exit):     ${UNMOUNT_S} s"
echo "daemon peak RSS (VmHWM):           ${HWM}  (VmRSS at the end: ${RSS})"

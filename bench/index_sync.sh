#!/usr/bin/env bash
# How the index's sync mode costs on the metadata path: small-file create
# and delete on a native directory and on huracanfs mounts (local backend)
# whose LMDB index runs in each mode, in the same run, as ratios to native.
#
#   bench/index_sync.sh [BUILD_DIR]       BUILD_DIR defaults to ./build
#
# Modes (HURACANFS_INDEX_SYNC, read by src/index.c for this benchmark):
#   nometasync  the default: each commit fdatasyncs its pages, the meta
#               page is synced by the next commit (power-loss safe)
#   full        each commit syncs pages and meta (power-loss safe, durable
#               at once)
#   nosync      what huracanfs used before: no sync at commit (NOT safe
#               against power loss; shown for comparison only)
# Environment: BENCH_NFILES (default 5000), BENCH_FILE_KB (4),
# BENCH_DIR (/var/tmp), HURACANFS_BIN, PYTHON (/usr/bin/python3).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
BUILD_DIR=${1:-$REPO/build}
BIN=${HURACANFS_BIN:-$BUILD_DIR/src/huracanfs}
PY=${PYTHON:-/usr/bin/python3}
N=${BENCH_NFILES:-5000}
KB=${BENCH_FILE_KB:-4}
BASE=${BENCH_DIR:-/var/tmp}
FUSERMOUNT=$(command -v fusermount3 || echo /usr/bin/fusermount3)
[ -x "$BIN" ] || { echo "bench: no binary at $BIN" >&2; exit 1; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
WORK=$(mktemp -d "$BASE/hfs-ixsync.XXXXXX")
MNT=$WORK/mnt
cleanup() {
	grep -qF " $MNT " /proc/self/mountinfo && "$FUSERMOUNT" -u "$MNT" 2>/dev/null
	sleep 1
	grep -qF " $MNT " /proc/self/mountinfo && "$FUSERMOUNT" -uz "$MNT" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$MNT"

# Prints "create_seconds delete_seconds" for the tree under $1 (syncfs after
# the creates, as an application that wants its files durable would).
run_ops() {
	local c d
	c=$("$PY" "$HERE/fileops.py" create "$1/t" "$N" $((KB * 1024)))
	local s0 s1
	s0=$(date +%s.%N)
	"$PY" -c 'import os,sys; fd=os.open(sys.argv[1],os.O_RDONLY); os.syncfs(fd) if hasattr(os,"syncfs") else os.sync()' "$1" 2>/dev/null || sync
	s1=$(date +%s.%N)
	d=$("$PY" "$HERE/fileops.py" delete "$1/t" "$N")
	awk -v c="$c" -v a="$s0" -v b="$s1" -v d="$d" 'BEGIN { printf "%.6f %.6f\n", c + (b - a), d }'
}

mkdir -p "$WORK/native"
read -r NC ND < <(run_ops "$WORK/native")
printf '%-12s %14s %8s %14s %8s\n' mode "create/s" ratio "delete/s" ratio
printf '%-12s %14.0f %8s %14.0f %8s\n' native "$(awk -v n=$N -v t=$NC 'BEGIN{print n/t}')" 1.00 \
	"$(awk -v n=$N -v t=$ND 'BEGIN{print n/t}')" 1.00
for mode in nometasync full nosync; do
	rm -rf "$WORK/remote" "$WORK/cache"
	mkdir -p "$WORK/remote"
	cat >"$WORK/config.yaml" <<CFG
dropbox:
  sync_interval_learning_seconds: 86400
  sync_interval_logs_seconds: 86400
  sync_interval_models_seconds: 86400
  sync_interval_data_cache_seconds: 86400
  sync_interval_new_data_seconds: 86400
huracanfs:
  backend: local
  remote_dir: "$WORK/remote"
  cache_dir: "$WORK/cache"
  sync_interval_other_seconds: 86400
  log_file: "$WORK/daemon-$mode.log"
CFG
	chmod 600 "$WORK/config.yaml"
	HURACANFS_INDEX_SYNC=$mode "$BIN" mount "$MNT" --config "$WORK/config.yaml" </dev/null >/dev/null
	read -r C D < <(run_ops "$MNT")
	"$FUSERMOUNT" -u "$MNT"
	for _ in $(seq 100); do grep -qF " $MNT " /proc/self/mountinfo || break; sleep 0.1; done
	sleep 1
	awk -v m=$mode -v n=$N -v c=$C -v d=$D -v nc=$NC -v nd=$ND 'BEGIN {
		printf "%-12s %14.0f %8.2f %14.0f %8.2f\n", m, n/c, nc/c, n/d, nd/d }'
done
echo "($N files of $KB KiB; create includes one syncfs; same run, same disk)"

#!/usr/bin/env bash
# huracanfs scale benchmark: a mount on a big index, and a big upload.
#
#   bench/scale.sh [BUILD_DIR]          BUILD_DIR defaults to ./build
#
# 1. tests/unit/mkindex builds an index of SCALE_NODES nodes (directories of
#    1000 files, a directory of 10,000, some dirty files); timed.
# 2. huracanfs mounts it (local backend, an empty remote_dir): the time
#    until `huracanfs mount` returns, and until a stat of a file deep in
#    the tree succeeds; with root, again with a cold page cache.
# 3. `ls` and `ls -l` of the directory of 10,000 entries, twice.
# 4. SCALE_UPLOAD_GB GiB written into the mount in files of 256 MiB (upload
#    intervals of a day, so nothing goes up meanwhile), then
#    `huracanfs flush --wait`; the daemon's VmRSS is sampled every 0.5 s.
# It prints a table, then removes everything it wrote.
#
# Environment:
#   SCALE_NODES      nodes in the index                      (default 1000000)
#   SCALE_UPLOAD_GB  GiB to write and upload; 0 skips it     (default 10)
#   SCALE_FILE_MB    size of each uploaded file, MiB         (default 256)
#   SCALE_WALK=1     also `find` the whole tree (every node through FUSE)
#   SCALE_DIR        where the work directory is made        (default /var/tmp)
#   SCALE_KEEP=1     keep the work directory (config, daemon log) afterwards
#   HURACANFS_BIN    the binary (default BUILD_DIR/src/huracanfs)
#   MKINDEX_BIN      the index builder (default BUILD_DIR/tests/unit/mkindex)
#   PYTHON           python3, to read `status --json` (default /usr/bin/python3)
#
# It builds nothing. Needs /dev/fuse, fusermount3, and free space of about
# twice SCALE_UPLOAD_GB plus 400 bytes a node. The cold-cache mount needs
# root (it writes /proc/sys/vm/drop_caches); without it that row is left out.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
BUILD_DIR=${1:-$REPO/build}
BIN=${HURACANFS_BIN:-$BUILD_DIR/src/huracanfs}
MKINDEX=${MKINDEX_BIN:-$BUILD_DIR/tests/unit/mkindex}
PY=${PYTHON:-/usr/bin/python3}
NODES=${SCALE_NODES:-1000000}
UPLOAD_GB=${SCALE_UPLOAD_GB:-10}
FILE_MB=${SCALE_FILE_MB:-256}
WALK=${SCALE_WALK:-0}
BASE=${SCALE_DIR:-/var/tmp}
FUSERMOUNT=$(command -v fusermount3 || echo /usr/bin/fusermount3)

die() { echo "scale: $*" >&2; exit 1; }
say() { echo "scale: $*" >&2; }

[ -x "$BIN" ] || die "no huracanfs binary at $BIN (build first, or pass BUILD_DIR)"
[ -x "$MKINDEX" ] || die "no mkindex at $MKINDEX (ninja -C BUILD_DIR tests/unit/mkindex)"
[ -e /dev/fuse ] || die "/dev/fuse is missing"
[ -x "$FUSERMOUNT" ] || die "fusermount3 is missing"
[ -x "$PY" ] || die "no python3 at $PY"
case "$UPLOAD_GB" in ''|*[!0-9]*) die "SCALE_UPLOAD_GB must be a whole number" ;; esac
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

WORK=$(mktemp -d "$BASE/hfs-scale.XXXXXX")
MNT=$WORK/mnt
REMOTE=$WORK/remote
CACHE=$WORK/cache
CFG=$WORK/config.yaml
LOG=$WORK/daemon.log
RSS_LOG=$WORK/rss.log
PHASE=$WORK/phase
mkdir -p "$MNT" "$REMOTE"
PID=
SAMPLER=

need_mb=$((UPLOAD_GB * 1024 * 2 + NODES / 2500 + 512))
avail_mb=$(df -Pm "$WORK" | awk 'NR == 2 { print $4 }')
if [ "$avail_mb" -lt "$need_mb" ]; then
	rm -rf "$WORK"
	die "$BASE has $avail_mb MiB free, the run needs about $need_mb MiB" \
		"(lower SCALE_UPLOAD_GB)"
fi

mounted() { grep -qF " $MNT " /proc/self/mountinfo; }

alive() {
	[ -n "$1" ] && [ -r "/proc/$1/stat" ] &&
		! awk '{ sub(/.*\) /, ""); exit !($1 == "Z" || $1 == "X") }' \
			"/proc/$1/stat"
}

stop_sampler() {
	if [ -n "$SAMPLER" ]; then
		kill "$SAMPLER" 2>/dev/null || true
		wait "$SAMPLER" 2>/dev/null || true
		SAMPLER=
	fi
}

# Unmounts and waits for the daemon to exit (it uploads what is pending).
unmount_wait() {
	if mounted; then
		"$FUSERMOUNT" -u "$MNT" 2>/dev/null || true
	fi
	if [ -n "$PID" ]; then
		for _ in $(seq 1200); do alive "$PID" || break; sleep 0.1; done
		if alive "$PID"; then
			say "daemon $PID did not exit; killing it"
			kill -9 "$PID" 2>/dev/null || true
		fi
	fi
	if mounted; then "$FUSERMOUNT" -uz "$MNT" 2>/dev/null || true; fi
	PID=
}

cleanup() {
	local rc=$?
	stop_sampler
	unmount_wait
	if [ "${SCALE_KEEP:-0}" = 1 ]; then
		echo "scale: kept $WORK"
	else
		rm -rf "$WORK"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.1f", (s > 0) ? n / s : 0 }'; }
kb_of() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$PID/status" 2>/dev/null || echo 0; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

CAN_DROP=0
if [ -w /proc/sys/vm/drop_caches ] && sync && echo 3 2>/dev/null >/proc/sys/vm/drop_caches; then
	CAN_DROP=1
fi
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

ROWS=()
# row NAME VALUE UNIT
row() { ROWS+=("$(printf '%-52s %10s  %s' "$1" "$2" "$3")"); }

# --- 1. the index -------------------------------------------------------------
say "building an index of $NODES nodes"
t0=$(now)
"$MKINDEX" "$CACHE" "$NODES" >"$WORK/mkindex.out" || die "mkindex failed"
t1=$(now)
MK_S=$(elapsed "$t0" "$t1")
get() { awk -F= -v k="$1" '$1 == k { sub(/^[^=]*=/, ""); print; exit }' "$WORK/mkindex.out"; }
DEEP=$(get deep_file)
BIGDIR=$(get big_dir)
BIGN=$(get big_dir_entries)
INDEX_MIB=$(awk -v b="$(get index_bytes)" 'BEGIN { printf "%.0f", b / 1048576 }')
row "mkindex, $NODES nodes" "$MK_S" s

# --- 2. mount -------------------------------------------------------------------
umask 077
cat >"$CFG" <<EOF
dropbox:
  sync_interval_learning_seconds: 86400
  sync_interval_logs_seconds: 86400
  sync_interval_models_seconds: 86400
  sync_interval_data_cache_seconds: 86400
  sync_interval_new_data_seconds: 86400
  restore_data_cache_on_startup: false
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

find_pid() {
	PID=$("$BIN" status "$MNT" --json 2>/dev/null |
		"$PY" -c 'import json,sys; print(json.load(sys.stdin).get("pid") or "")' \
		2>/dev/null || true)
	alive "$PID" || die "cannot find the daemon's pid"
}

# mount_timed LABEL: mounts; adds the rows "LABEL: ..." (return, deep stat).
mount_timed() {
	local t0 t1 t2 ok=0
	t0=$(now)
	"$BIN" mount "$MNT" --config "$CFG" </dev/null >"$WORK/mount.out" 2>&1 ||
		die "huracanfs mount failed: $(cat "$WORK/mount.out")"
	t1=$(now)
	for _ in $(seq 100000); do
		if stat "$MNT$DEEP" >/dev/null 2>&1; then ok=1; break; fi
		sleep 0.001
	done
	t2=$(now)
	[ "$ok" = 1 ] || die "stat of $DEEP never succeeded"
	mounted || die "huracanfs mount returned 0 but $MNT is not mounted"
	find_pid
	row "$1: until mount returns" "$(elapsed "$t0" "$t1")" s
	row "$1: until stat of the deep file" "$(elapsed "$t0" "$t2")" s
}

say "mounting it"
mount_timed "mount"
row "daemon RSS after mount" "$(mib "$(kb_of VmRSS)")" MiB

if [ "$CAN_DROP" = 1 ]; then
	say "mounting it again with a cold page cache"
	unmount_wait
	drop_caches
	mount_timed "mount, cold page cache"
fi

# The RSS sampler: "seconds phase VmRSS_kB" every 0.5 s until killed.
echo mounted >"$PHASE"
(
	start=$(now)
	while alive "$PID"; do
		r=$(awk '/^VmRSS:/ { print $2 }' "/proc/$PID/status" 2>/dev/null) || break
		echo "$(elapsed "$start" "$(now)") $(cat "$PHASE") $r"
		sleep 0.5
	done
) >"$RSS_LOG" 2>/dev/null &
SAMPLER=$!

# --- 3. the big directory -------------------------------------------------------
say "ls of $BIGDIR ($BIGN entries)"
echo ls >"$PHASE"
ls_timed() {
	local t0 t1 n
	t0=$(now)
	n=$(LC_ALL=C ls $2 "$MNT$BIGDIR" | grep -vc '^total ')
	t1=$(now)
	[ "$n" = "$BIGN" ] || die "ls $2 of $BIGDIR gave $n entries, expected $BIGN"
	row "$1" "$(elapsed "$t0" "$t1")" s
}
ls_timed "ls of $BIGN entries, first" ""
ls_timed "ls of $BIGN entries, second" ""
ls_timed "ls -l of $BIGN entries" "-l"
row "daemon RSS after ls" "$(mib "$(kb_of VmRSS)")" MiB

if [ "$WALK" = 1 ]; then
	say "find over the whole tree"
	echo walk >"$PHASE"
	t0=$(now)
	n=$(find "$MNT" -mindepth 1 | wc -l)
	t1=$(now)
	row "find of the whole tree ($n entries)" "$(elapsed "$t0" "$t1")" s
	row "daemon RSS after find" "$(mib "$(kb_of VmRSS)")" MiB
	row "  of which anonymous (RssAnon)" "$(mib "$(kb_of RssAnon)")" MiB
	row "  of which mapped files (RssFile: the index)" "$(mib "$(kb_of RssFile)")" MiB
fi

# --- 4. upload ------------------------------------------------------------------
phase_max() { awk -v p="$1" '$2 == p && $3 > m { m = $3 } END { printf "%.1f", m / 1024 }' "$RSS_LOG"; }
if [ "$UPLOAD_GB" -gt 0 ]; then
	nfiles=$((UPLOAD_GB * 1024 / FILE_MB))
	[ "$nfiles" -gt 0 ] || nfiles=1
	total_mb=$((nfiles * FILE_MB))
	say "writing $nfiles files of $FILE_MB MiB ($total_mb MiB) into the mount"
	mkdir "$MNT/upload"
	echo write >"$PHASE"
	t0=$(now)
	for i in $(seq -f '%03g' 1 "$nfiles"); do
		dd if=/dev/zero of="$MNT/upload/blob-$i.bin" bs=1M count="$FILE_MB" \
			status=none
	done
	t1=$(now)
	say "flush --wait"
	echo flush >"$PHASE"
	"$BIN" flush "$MNT" --wait >"$WORK/flush.out" 2>&1 ||
		die "flush --wait failed: $(cat "$WORK/flush.out")"
	t2=$(now)
	echo done >"$PHASE"
	sleep 1.2 # a last sample or two
	n=$(find "$REMOTE/upload" -type f | wc -l)
	[ "$n" = "$nfiles" ] || die "$n files of $nfiles reached the remote"
	rsz=$(du -sm --apparent-size "$REMOTE/upload" | awk '{ print $1 }')
	[ "$rsz" -ge "$total_mb" ] || die "the remote holds $rsz MiB of $total_mb"
	row "write $total_mb MiB (files of $FILE_MB MiB)" "$(rate "$total_mb" "$(elapsed "$t0" "$t1")")" MiB/s
	row "flush --wait of $total_mb MiB" "$(rate "$total_mb" "$(elapsed "$t1" "$t2")")" MiB/s
	row "write + flush" "$(rate "$total_mb" "$(elapsed "$t0" "$t2")")" MiB/s
	row "daemon RSS while writing, max" "$(phase_max write)" MiB
	row "daemon RSS during flush --wait, max" "$(phase_max flush)" MiB
	row "daemon RSS after the upload" "$(mib "$(kb_of VmRSS)")" MiB
fi
row "daemon peak RSS (VmHWM)" "$(mib "$(kb_of VmHWM)")" MiB
SAMPLES=$(wc -l <"$RSS_LOG")
stop_sampler

t0=$(now)
unmount_wait
t1=$(now)
row "unmount (until the daemon exits)" "$(elapsed "$t0" "$t1")" s

# --- report ---------------------------------------------------------------------
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
echo "huracanfs scale benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "binary:     $BIN ($buildinfo)"
echo "machine:    $(nproc) cpus, $(awk '/MemTotal/ { printf "%.0f GiB", $2/1048576 }' /proc/meminfo), kernel $(uname -r)"
echo "work dir:   $WORK ($(df --output=fstype "$WORK" | tail -n 1))"
echo "index:      $(get nodes) nodes: $(get dirs) directories, $(get files) files ($(get dirty) dirty); data.mdb $INDEX_MIB MiB"
echo "deep file:  $DEEP"
echo "backend:    local, remote_dir empty; upload intervals 86400 s"
echo "RSS:        $SAMPLES samples of VmRSS, every 0.5 s"
[ "$CAN_DROP" = 1 ] || echo "cold mount: skipped (cannot write /proc/sys/vm/drop_caches)"
echo
printf '%-52s %10s  %s\n' step value unit
printf '%-52s %10s  %s\n' ---- ----- ----
printf '%s\n' "${ROWS[@]}"

#!/usr/bin/env bash
# fsmount vs the same tree on the native filesystem, in one run:
#   1. warm sequential read of a 1 GiB file (dd; fsmount by FUSE passthrough)
#      target >= 0.9x native
#   2. warm 4 KiB random reads of that file (fio, psync)   target >= 0.5x native
#   3. `find -ls` over a 50,000-entry tree                   target <= 2x native time
#   4. cold sequential read from a `chunkstore serve` replica behind a
#      proxy adding 20 ms to every request (tc netem is not available here)
#      target >= 200 MB/s; peer: a cold read of the native file from disk
#   5. mount time of a 100,000-entry flist (first: unpack + check of the
#      flist, then cached)   target < 1 s; peer: fsmount of the same tree
#      as a local directory
#   6. RSS of the fsmount process with that flist mounted, after a full
#      walk   target <= 100 MB; peer: the directory mount's process
#
# Env: ZOSFS_BENCH_FILE_MB (1024), ZOSFS_BENCH_COLD_MB (512),
#      ZOSFS_BENCH_FIND_ENTRIES (50000), ZOSFS_BENCH_MOUNT_ENTRIES (100000),
#      ZOSFS_BENCH_FIO_SECS (5), ZOSFS_BENCH_LATENCY_MS (20)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/target/release}
for b in fsmount flist chunkstore; do
    [ -x "$BIN/$b" ] || { echo "bench-fsmount: $BIN/$b missing: build first (make build)"; exit 1; }
done
for t in fio dd find python3 mkfs.ext4; do command -v $t >/dev/null || { echo "bench-fsmount: $t missing (make deps)"; exit 1; }; done
[ "$(id -u)" = 0 ] || { echo "bench-fsmount: needs root (FUSE, mounts)"; exit 1; }

FILE_MB=${ZOSFS_BENCH_FILE_MB:-1024}
COLD_MB=${ZOSFS_BENCH_COLD_MB:-512}
FIND_N=${ZOSFS_BENCH_FIND_ENTRIES:-50000}
MOUNT_N=${ZOSFS_BENCH_MOUNT_ENTRIES:-100000}
FIO_SECS=${ZOSFS_BENCH_FIO_SECS:-5}
LATENCY_MS=${ZOSFS_BENCH_LATENCY_MS:-20}

WORK=$(mktemp -d /var/tmp/bench-fsmount.XXXXXX)
STATE=$WORK/state
PIDS=()
cleanup() {
    set +e
    for m in "$WORK"/mnt-*; do
        [ -d "$m" ] && "$BIN/fsmount" umount "$m" --state "$STATE" --lazy --force >/dev/null 2>&1
    done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    # Whatever is still mounted under WORK (deepest first).
    awk -v w="$WORK" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m"; done
    rm -rf "$WORK"
}
trap cleanup EXIT
export ZOSFS_FLIST_CACHE=$WORK/flist-cache
mkdir -p "$STATE"

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.4f\", $1 }"; }
# time_cmd CMD...: seconds CMD took (output discarded).
time_cmd() { local t0 t1; t0=$(now); "$@" >/dev/null 2>&1; t1=$(now); calc "$t1 - $t0"; }
fsm() { "$BIN/fsmount" "$@" --state "$STATE"; }
# mount_flist SRC MNT CACHE EXTRA...: fsmount -d, quietly.
mount_src() { local src=$1 mnt=$2 cache=$3; shift 3; mkdir -p "$mnt"; fsm -d "$src" "$mnt" --cache "$cache" "$@" >/dev/null; }
# Pid of the process serving MNT (from its mount record).
mount_pid() { grep -l "mountpoint = \"$1\"" "$STATE"/mounts/*.toml | xargs grep -h '^pid = ' | head -1 | tr -dc 0-9; }
rss_mb() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
stat_of() { fsm stats "$1" | awk -v k="$2" 'index($0, k) == 1 { print $3; exit }'; }
pack() { "$BIN/flist" pack --no-progress -o "$1" --store "$2" "$3" 2>"$1.log"; }
wait_port() {
    local i; for i in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1
    done; echo "bench-fsmount: nothing listens on port $1"; exit 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# make_tree DIR N: N entries (1 % directories, 10 % of files with 1-4 KiB).
make_tree() {
    python3 - "$1" "$2" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
os.makedirs(root, exist_ok=True)
made, d = 0, 0
while made < n:
    dd = os.path.join(root, "d%04d" % d); os.mkdir(dd); made += 1; d += 1
    for i in range(min(99, n - made)):
        with open(os.path.join(dd, "f%02d" % i), "wb") as f:
            if (made + i) % 10 == 0:
                f.write(os.urandom(1024 * (1 + i % 4)))
    made += min(99, n - made)
EOF
}
line() { printf '  %-34s %12s %12s %10s  %s\n' "$@"; }

echo "bench-fsmount: work dir $WORK"
mkdir -p "$WORK/native"

# --- 1 + 2. warm sequential and random reads of a big file -----------------------
mkdir -p "$WORK/native/big"
head -c $((FILE_MB << 20)) /dev/urandom >"$WORK/native/big/file.bin"
pack "$WORK/big.flist" "dir://$WORK/store-big" "$WORK/native/big"
MB=$WORK/mnt-big
mount_src "$WORK/big.flist" "$MB" "$WORK/cache-big"
fill=$(time_cmd cat "$MB/file.bin")
# Warm both: the native file and the filled cache file are in the page cache.
# Both files' pages are dropped and read back first, so both caches are
# built the same way, by readahead (large folios; a file cached by the
# writes that made it can read ~2x slower from the page cache).
# The same for fsmount's cache file, read back through the mount (passthrough).
sync
dd if="$WORK/native/big/file.bin" iflag=nocache count=0 2>/dev/null
for f in "$WORK/cache-big/contents/"*; do dd if="$f" iflag=nocache count=0 2>/dev/null; done
cat "$WORK/native/big/file.bin" >/dev/null
cat "$MB/file.bin" >/dev/null
dd_secs() { local t0 t1; t0=$(now); dd if="$1" of=/dev/null bs=1M 2>/dev/null; t1=$(now); calc "$t1 - $t0"; }
best_n=9999; best_f=9999
for round in 1 2 3; do
    n=$(dd_secs "$WORK/native/big/file.bin"); f=$(dd_secs "$MB/file.bin")
    best_n=$(calc "($n < $best_n) ? $n : $best_n"); best_f=$(calc "($f < $best_f) ? $f : $best_f")
done
seq_n=$(calc "$FILE_MB * 1.048576 / $best_n"); seq_f=$(calc "$FILE_MB * 1.048576 / $best_f")
fio_iops() {
    fio --name=rand --filename="$1" --readonly --rw=randread --bs=4k --ioengine=psync --invalidate=0 \
        --runtime="$FIO_SECS" --time_based --output-format=json 2>/dev/null |
        python3 -c 'import json,sys; print(round(json.load(sys.stdin)["jobs"][0]["read"]["iops"]))'
}
# Best of two alternating rounds each (the machine is shared).
iops_n=0; iops_f=0
for round in 1 2; do
    n=$(fio_iops "$WORK/native/big/file.bin"); f=$(fio_iops "$MB/file.bin")
    [ "$n" -gt "$iops_n" ] && iops_n=$n; [ "$f" -gt "$iops_f" ] && iops_f=$f
done
pt=$(stat_of "$MB" "passthrough opens")
echo "big file: $FILE_MB MiB (first read filled the cache from a local dir:// store in ${fill} s; passthrough opens: $pt)"
line "" "native" "fsmount" "ratio" "target"
line "warm sequential read (dd), MB/s" "$(calc "$seq_n")" "$(calc "$seq_f")" "$(calc "$seq_f / $seq_n")x" ">= 0.9x"
line "warm 4 KiB random read (fio), IOPS" "$iops_n" "$iops_f" "$(calc "$iops_f / $iops_n")x" ">= 0.5x"
fsm umount "$MB" >/dev/null
rm -rf "$WORK/cache-big" "$WORK/store-big"

# --- 3. find -ls over a 50,000-entry tree ------------------------------------------
# The native tree lives on an ext4 image of its own (loop device), so a
# remount gives it cold kernel caches for the first walk, as a fresh
# fsmount has, without dropping the whole machine's caches.
truncate -s 2G "$WORK/find-ext4.img"
mkfs.ext4 -q -F "$WORK/find-ext4.img"
NF=$WORK/mnt-native-find
mkdir -p "$NF"
mount -o loop "$WORK/find-ext4.img" "$NF"
make_tree "$NF/t" "$FIND_N"
pack "$WORK/find.flist" "dir://$WORK/store-find" "$NF/t"
umount "$NF"; mount -o loop "$WORK/find-ext4.img" "$NF"
find_native_cold=$(time_cmd find "$NF/t" -ls)
find_native=$(time_cmd find "$NF/t" -ls)
entries=$(find "$NF/t" | wc -l)
MF=$WORK/mnt-find
mount_src "$WORK/find.flist" "$MF" "$WORK/cache-find"
find_cold=$(time_cmd find "$MF" -ls)
find_warm=$(time_cmd find "$MF" -ls)
echo "find -ls over $entries entries (native: ext4 on a loop device, remounted before the first walk)"
line "" "native s" "fsmount s" "ratio" "target"
line "first walk after mount" "$find_native_cold" "$find_cold" "$(calc "$find_cold / $find_native_cold")x" "<= 2x"
line "second walk (kernel caches warm)" "$find_native" "$find_warm" "$(calc "$find_warm / $find_native")x" "<= 2x"
line "first fsmount walk vs warm native" "$find_native" "$find_cold" "$(calc "$find_cold / $find_native")x" ""
fsm umount "$MF" >/dev/null
umount "$NF"
rm -f "$WORK/find-ext4.img"

# --- 4. cold sequential read through a replica with added latency ----------------
P=$(free_port); Q=$(free_port)
"$BIN/chunkstore" serve --listen "127.0.0.1:$P" --data "$WORK/replica" \
    --values "local://$WORK/replica/values" >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
wait_port "$P"
"$BIN/chunkstore" delay-proxy --listen "127.0.0.1:$Q" --to "127.0.0.1:$P" --delay-ms "$LATENCY_MS" \
    >"$WORK/proxy.log" 2>&1 &
PIDS+=($!)
wait_port "$Q"
mkdir -p "$WORK/native/cold"
head -c $((COLD_MB << 20)) /dev/urandom >"$WORK/native/cold/file.bin"
pack "$WORK/cold.flist" "zdb://127.0.0.1:$P/default" "$WORK/native/cold"
MC=$WORK/mnt-cold
# Best of two alternating rounds: fsmount with an empty cache each time,
# the native file with its pages dropped (read cold from the local disk).
cold_f=9999; cold_n=9999
for round in 1 2; do
    rm -rf "$WORK/cache-cold"
    mount_src "$WORK/cold.flist" "$MC" "$WORK/cache-cold" --store "zdb://127.0.0.1:$Q/default"
    f=$(dd_secs "$MC/file.bin")
    fetched=$(stat_of "$MC" "chunks fetched")
    fsm umount "$MC" >/dev/null
    sync; dd if="$WORK/native/cold/file.bin" iflag=nocache count=0 2>/dev/null
    n=$(dd_secs "$WORK/native/cold/file.bin")
    cold_f=$(calc "($f < $cold_f) ? $f : $cold_f"); cold_n=$(calc "($n < $cold_n) ? $n : $cold_n")
done
mbps_f=$(calc "$COLD_MB * 1.048576 / $cold_f"); mbps_n=$(calc "$COLD_MB * 1.048576 / $cold_n")
echo "cold sequential read of $COLD_MB MiB, best of 2: fsmount from a chunkstore serve replica, +${LATENCY_MS} ms per request ($fetched chunks fetched per round); native: local disk, page cache dropped"
line "" "native MB/s" "fsmount MB/s" "ratio" "target"
line "cold sequential read (dd)" "$(calc "$mbps_n")" "$(calc "$mbps_f")" "$(calc "$mbps_f / $mbps_n")x" ">= 200 MB/s"
rm -rf "$WORK/cache-cold" "$WORK/replica"

# --- 5 + 6. mount time and RSS with a 100,000-entry flist ------------------------
make_tree "$WORK/native/t-mount" "$MOUNT_N"
pack "$WORK/mount.flist" "dir://$WORK/store-mount" "$WORK/native/t-mount"
MM=$WORK/mnt-mount
mkdir -p "$MM"
first=$(time_cmd mount_src "$WORK/mount.flist" "$MM" "$WORK/cache-mount")
fsm umount "$MM" >/dev/null
again=$(time_cmd mount_src "$WORK/mount.flist" "$MM" "$WORK/cache-mount")
pid=$(mount_pid "$MM")
rss_mounted=$(rss_mb "$pid")
find "$MM" -ls >/dev/null
rss_walked=$(rss_mb "$pid")
MD=$WORK/mnt-dir
dir_t=$(time_cmd mount_src "$WORK/native/t-mount" "$MD" "$WORK/cache-dir")
dpid=$(mount_pid "$MD")
find "$MD" -ls >/dev/null
rss_dir=$(rss_mb "$dpid")
entries=$(find "$WORK/native/t-mount" | wc -l)
echo "mount of a $entries-entry tree ($(stat -c %s "$WORK/mount.flist") byte flist)"
line "" "dir mount" "flist" "ratio" "target"
line "mount time, first (unpack flist), s" "$dir_t" "$first" "$(calc "$first / $dir_t")x" "< 1 s"
line "mount time, flist cached, s" "$dir_t" "$again" "$(calc "$again / $dir_t")x" "< 1 s"
line "RSS after mount, MB" "-" "$rss_mounted" "" "<= 100 MB"
line "RSS after find -ls of all, MB" "$rss_dir" "$rss_walked" "$(calc "$rss_walked / $rss_dir")x" "<= 100 MB"
fsm umount "$MM" >/dev/null
fsm umount "$MD" >/dev/null

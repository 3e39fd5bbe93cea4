#!/usr/bin/env bash
# Cold fill from the node store: fsmount and nbdserver reading a file whose
# chunks are all in local://NODE, as the store's owner ("direct": the
# process opened the store first, as every view did before the node store
# was shared) against as a client of another process that owns it
# (`chunkstore own`: LOCATE over the socket, then a pread of the segment fd
# it was handed). Same run, alternating, best of ROUNDS. Goal: client
# >= 0.9x direct.
#
#   fsmount: dd of the file through a fresh mount and an empty cache
#   nbdserver: nbdcopy of an export `IMAGE.flist:/file.bin` to null:, empty
#              cache dir
#
# The store's segments are read into the page cache first, so both sides
# measure the software path, not the disk.
#
# Env: BENCH_FILL_MB (file size, default 1024), BENCH_ROUNDS (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/target/release}
for b in fsmount flist chunkstore nbdserver; do
    [ -x "$BIN/$b" ] || { echo "bench-node-fill: $BIN/$b missing: build first (make build)"; exit 1; }
done
for t in nbdcopy nbdinfo python3; do command -v $t >/dev/null || { echo "bench-node-fill: $t missing (make deps)"; exit 1; }; done
[ "$(id -u)" = 0 ] || { echo "bench-node-fill: needs root (FUSE, mounts)"; exit 1; }
MB=${BENCH_FILL_MB:-1024}
ROUNDS=${BENCH_ROUNDS:-3}

WORK=$(mktemp -d /var/tmp/bench-node-fill.XXXXXX)
STATE=$WORK/state
PIDS=()
cleanup() {
    set +e
    [ -d "$WORK/mnt" ] && "$BIN/fsmount" umount "$WORK/mnt" --state "$STATE" --lazy --force >/dev/null 2>&1
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    awk -v w="$WORK" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m"; done
    rm -rf "$WORK"
}
trap cleanup EXIT
export ZOSFS_FLIST_CACHE=$WORK/flist-cache ZOSFS_RUN_DIR=$WORK/run RUST_LOG=warn
NODE=local://$WORK/node

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.1f\", $1 }"; }
line() { printf '  %-30s %10s %10s %8s  %s\n' "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_for WHAT CMD...: poll CMD until it succeeds (30 s at most).
wait_for() {
    local what=$1 i; shift
    for i in $(seq 1 600); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
    echo "bench-node-fill: timed out waiting for $what"; exit 1
}
gone() { ! kill -0 "$1" 2>/dev/null; }
owned_by() { grep -qx "pid $1" "$WORK/node/OWNER"; }
# Nobody owns the store: its lock is free (flock fails while it is held).
store_free() { flock -n "$WORK/node/LOCK" true; }
stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# The owner for the "client" runs: `chunkstore own`, started and stopped
# around each run so the direct runs find the store free.
OWN_PID=
own_start() {
    "$BIN/chunkstore" own --store "$NODE" 2>>"$WORK/own.log" & OWN_PID=$!; PIDS+=("$OWN_PID")
    wait_for "chunkstore own" owned_by "$OWN_PID"
}
own_stop() { stop_pid "$OWN_PID"; wait_for "the store's lock" store_free; }

# MB/s of reading through a fresh fsmount mount (empty cache).
fsmount_fill() {
    rm -rf "$WORK/cache"; mkdir -p "$WORK/mnt"
    "$BIN/fsmount" -d "$WORK/img.flist" "$WORK/mnt" --cache "$WORK/cache" --state "$STATE" --store "$NODE" >/dev/null
    local t0 t1; t0=$(now)
    dd if="$WORK/mnt/file.bin" of=/dev/null bs=1M 2>/dev/null
    t1=$(now)
    "$BIN/fsmount" umount "$WORK/mnt" --state "$STATE" >/dev/null
    # The serving process exits with its last mount: the store is free again
    # unless `chunkstore own` holds it.
    [ -n "$OWN_PID" ] || wait_for "fsmount to release the store" store_free
    calc "$MB * 1.048576 / ($t1 - $t0)"
}

# MB/s of nbdcopy of a fresh export (empty cache dir).
nbd_fill() {
    rm -rf "$WORK/nbdcache"
    local port pid t0 t1; port=$(free_port)
    "$BIN/nbdserver" --listen "127.0.0.1:$port" --cache-dir "$WORK/nbdcache" --store "$NODE" \
        --export "vm=$WORK/img.flist:/file.bin" 2>>"$WORK/nbd.log" & pid=$!; PIDS+=("$pid")
    wait_for "nbdserver" nbdinfo --size "nbd://127.0.0.1:$port/vm"
    t0=$(now)
    nbdcopy "nbd://127.0.0.1:$port/vm" null:
    t1=$(now)
    stop_pid "$pid"
    [ -n "$OWN_PID" ] || wait_for "nbdserver to release the store" store_free
    calc "$MB * 1.048576 / ($t1 - $t0)"
}

echo "bench-node-fill: $MB MiB file, $ROUNDS rounds, work dir $WORK, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
mkdir -p "$WORK/src" "$STATE"
head -c $((MB << 20)) /dev/urandom >"$WORK/src/file.bin"
"$BIN/flist" pack --no-progress -o "$WORK/img.flist" --store "$NODE" "$WORK/src" >/dev/null 2>"$WORK/pack.log"
wait_for "flist pack to release the store" store_free
find "$WORK/node" -type f -exec cat {} + >/dev/null

best() { python3 -c "import sys; print(max(float(x) for x in sys.argv[1:]))" "$@"; }
fd=(); fc=(); nd=(); nc=()
for r in $(seq 1 "$ROUNDS"); do
    OWN_PID=; fd+=("$(fsmount_fill)")
    own_start; fc+=("$(fsmount_fill)"); own_stop; OWN_PID=
    nd+=("$(nbd_fill)")
    own_start; nc+=("$(nbd_fill)"); own_stop; OWN_PID=
    echo "  round $r: fsmount ${fd[-1]} / ${fc[-1]} MB/s, nbdserver ${nd[-1]} / ${nc[-1]} MB/s (direct / client)"
done
FD=$(best "${fd[@]}"); FC=$(best "${fc[@]}"); ND=$(best "${nd[@]}"); NC=$(best "${nc[@]}")
echo "cold fill of $MB MiB from the node store, best of $ROUNDS (MB/s)"
line "" "direct" "client" "ratio" "goal"
line "fsmount (dd)" "$FD" "$FC" "$(awk "BEGIN { printf \"%.2fx\", $FC / $FD }")" ">= 0.9x"
line "nbdserver (nbdcopy)" "$ND" "$NC" "$(awk "BEGIN { printf \"%.2fx\", $NC / $ND }")" ">= 0.9x"

#!/usr/bin/env bash
# nbdserver against qemu-nbd and nbdkit (file plugin), in one run, serving
# the same raw image. Prints every figure next to the peers' from this run
# and the ratio. Not a test: nothing here fails on a slow figure.
#
#   cold lazy fill from a `chunkstore serve` replica, nbdcopy (MB/s)
#       vs nbdkit cow filter over the file (the same read-through shape)
#   cold full read, 20 ms per fetch (MB/s)
#       vs nbdkit cow filter over a 20 ms delay filter
#   the same at QD1 (fio, 1 MiB sequential, as a booting guest reads)
#   warm sequential read, nbdcopy (MB/s)          vs qemu-nbd and nbdkit
#   warm 1 MiB sequential read, fio QD8 (MB/s)    vs qemu-nbd and nbdkit
#   warm 4 KiB random read, fio QD32 (IOPS)       vs qemu-nbd and nbdkit
#   warm 4 KiB random read, fio QD1 (mean us)     vs qemu-nbd and nbdkit
#   4 KiB random write, fio QD32 (IOPS)           vs qemu-nbd and nbdkit
#   RSS of a 100 GiB thin device after 64k random 4 KiB writes
#
# "Warm" means served from local state: nbdserver's cache file after the
# cold fill, the raw file (in the page cache) for the peers. Writes go to
# the filled image device for nbdserver and to copies of the raw file for
# the peers. The 20 ms case puts `chunkstore delay-proxy` (a delay line:
# every request held 20 ms, requests in flight overlap) between nbdserver
# and its replica.
#
# Env: BENCH_NBD_SIZE (image size, default 1G), BENCH_NBD_RUNTIME (seconds
# per fio run, default 10), BENCH_NBD_ROUNDS (fio runs per server and warm
# workload, in turn; the median is printed; default 3), BENCH_NBD_DIR (scratch dir, kept; default a
# temp dir, removed).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/target/release
SIZE=${BENCH_NBD_SIZE:-1G}
RUNTIME=${BENCH_NBD_RUNTIME:-10}
ROUNDS=${BENCH_NBD_ROUNDS:-3}
for tool in fio nbdcopy nbdinfo qemu-nbd nbdkit python3; do
    command -v "$tool" >/dev/null || { echo "bench-nbd: $tool is missing (make deps)" >&2; exit 1; }
done
for b in nbdserver chunkstore flist; do
    [ -x "$BIN/$b" ] || { echo "bench-nbd: $BIN/$b missing (make build)" >&2; exit 1; }
done

WORK=${BENCH_NBD_DIR:-$(mktemp -d /var/tmp/bench-nbd.XXXXXX)}
mkdir -p "$WORK"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    [ -n "${BENCH_NBD_DIR:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 400); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1',$1),1)" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "bench-nbd: nothing listens on port $1" >&2; exit 1
}
# An NBD server answers the handshake (a bare connect makes nbdkit log an error).
wait_nbd() {
    for _ in $(seq 1 400); do
        nbdinfo --size "nbd://127.0.0.1:$1/vm" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "bench-nbd: no NBD server on port $1" >&2; exit 1
}
# Start a server in the background and remember its pid.
start() { "$@" & PIDS+=($!); }
# Stop servers by pid (and forget them).
stop() {
    local p q keep=()
    for p in "$@"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    for q in "${PIDS[@]}"; do [[ " $* " == *" $q "* ]] || keep+=("$q"); done
    PIDS=("${keep[@]}")
}
nbdserver() {
    local port=$1 cache=$2; shift 2
    start env RUST_LOG=warn "$BIN/nbdserver" --listen "127.0.0.1:$port" --cache-dir "$cache" "$@"
}

# fio over NBD; prints one number picked from the JSON by a python
# expression over `j` (the first job). The JSON goes to a file: the nbd
# engine prints "connected to NBD server" on stdout.
fio_nbd() {
    local uri=$1 what=$2; shift 2
    fio --name=b --ioengine=nbd --uri="$uri" --size="$SIZE" --runtime="$RUNTIME" --time_based \
        --ramp_time=1 --randrepeat=0 --norandommap --output-format=json \
        --output="$WORK/fio.json" "$@" >/dev/null
    python3 -c "import json; j=json.load(open('$WORK/fio.json'))['jobs'][0]; print($what)"
}
# fio over NBD reading the whole export once (not time based).
fio_once() {
    local uri=$1 what=$2; shift 2
    fio --name=b --ioengine=nbd --uri="$uri" --size="$SIZE" --output-format=json \
        --output="$WORK/fio.json" "$@" >/dev/null
    python3 -c "import json; j=json.load(open('$WORK/fio.json'))['jobs'][0]; print($what)"
}
iops_read='round(j["read"]["iops"])'
iops_write='round(j["write"]["iops"])'
lat_read='round(j["read"]["clat_ns"]["mean"]/1000, 1)'
mbs_read='round(j["read"]["bw_bytes"]/1e6)'
# MB/s of `nbdcopy URI null:` over the whole export.
copy_mbs() {
    local t0 t1
    t0=$(date +%s.%N); nbdcopy "$1" null:; t1=$(date +%s.%N)
    python3 -c "print(round($BYTES/($t1-$t0)/1e6))"
}
ratio() { python3 -c "a,b=float('$1'),float('$2'); print('%.2fx' % (a/b) if b else 'n/a')"; }
row() { printf '%-36s %10s %10s %10s  %s\n' "$@"; }

echo "== bench-nbd: image $SIZE, fio runtime ${RUNTIME}s x $ROUNDS rounds (median), scratch $WORK, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"

# ---- The image: random data in a raw file, packed into a 0-db replica ----
mkdir -p "$WORK/img"
python3 - "$WORK/img/disk.raw" "$SIZE" <<'EOF'
import os, sys
path, size = sys.argv[1], sys.argv[2]
mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
n = int(size[:-1]) * mult[size[-1]] if size[-1] in mult else int(size)
with open(path, "wb") as f:
    left = n
    while left:
        k = min(left, 8 << 20)
        f.write(os.urandom(k))
        left -= k
EOF
RAW=$WORK/img/disk.raw
BYTES=$(stat -c %s "$RAW")
ZDB_PORT=$(free_port)
start "$BIN/chunkstore" serve --listen "127.0.0.1:$ZDB_PORT" --data "$WORK/zdb"
wait_port "$ZDB_PORT"
ZDB_URL="zdb://127.0.0.1:$ZDB_PORT/default"
"$BIN/flist" pack --no-progress --store "$ZDB_URL" -o "$WORK/img.flist" "$WORK/img" >/dev/null
cat "$RAW" >/dev/null   # the peers read from the page cache

# ---- Servers: nbdserver (image device, cold), qemu-nbd, nbdkit ----
Z_PORT=$(free_port); Q_PORT=$(free_port); K_PORT=$(free_port)
nbdserver "$Z_PORT" "$WORK/cache" --store "$ZDB_URL" --export "vm=$WORK/img.flist:/disk.raw"
Z_PID=${PIDS[-1]}
start qemu-nbd -f raw -x vm -p "$Q_PORT" -b 127.0.0.1 --persistent --shared=16 -r "$RAW"
Q_PID=${PIDS[-1]}
start nbdkit -f -p "$K_PORT" -i 127.0.0.1 --exportname=vm -r file "$RAW"
K_PID=${PIDS[-1]}
KC_PORT=$(free_port)
start nbdkit -f -p "$KC_PORT" -i 127.0.0.1 --exportname=vm --filter=cow file "$RAW"
KC_PID=${PIDS[-1]}
for p in "$Z_PORT" "$Q_PORT" "$K_PORT" "$KC_PORT"; do wait_nbd "$p"; done
Z=nbd://127.0.0.1:$Z_PORT/vm; Q=nbd://127.0.0.1:$Q_PORT/vm; K=nbd://127.0.0.1:$K_PORT/vm

row "" nbdserver qemu-nbd nbdkit "ratios (nbdserver / peer)"
# ---- Cold: the first full read fills the device from the replica ----
z=$(copy_mbs "$Z")
k=$(copy_mbs "nbd://127.0.0.1:$KC_PORT/vm")
fetched=$("$BIN/nbdserver" stats --cache-dir "$WORK/cache" | awk '$1 == "fetched_bytes_total" {print $2}')
row "cold lazy fill, nbdcopy (MB/s)" "$z" "-" "$k" "vs nbdkit cow $(ratio "$z" "$k"); fetched ${fetched:-?} of $BYTES bytes"
stop "$KC_PID"

# ---- Warm reads: all three from local state ----
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
# `MEASURE URI ARGS...` on the three servers, ROUNDS times in turn (z q k
# z q k ...), so a burst of load elsewhere on the machine hits all three
# alike; sets z q k to the medians of their rounds.
in_turn() {
    local zs=() qs=() ks=()
    for _ in $(seq 1 "$ROUNDS"); do
        zs+=("$("$1" "$Z" "${@:2}")"); qs+=("$("$1" "$Q" "${@:2}")"); ks+=("$("$1" "$K" "${@:2}")")
    done
    z=$(median "${zs[@]}"); q=$(median "${qs[@]}"); k=$(median "${ks[@]}")
}
# One fio workload, in turn on the three servers.
three() {
    local label=$1 what=$2 note=$3; shift 3
    in_turn fio_nbd "$what" "$@"
    row "$label" "$z" "$q" "$k" "vs qemu-nbd $(ratio "$z" "$q"), vs nbdkit $(ratio "$z" "$k")$note"
}
in_turn copy_mbs
row "warm seq read, nbdcopy (MB/s)" "$z" "$q" "$k" "vs qemu-nbd $(ratio "$z" "$q"), vs nbdkit $(ratio "$z" "$k")"
three "warm 1M seq read QD8 (MB/s)" "$mbs_read" " (target >=1.0 vs nbdkit)" --rw=read --bs=1M --iodepth=8
three "warm 4k randread QD32 (IOPS)" "$iops_read" " (targets >=1.3, >=1.0)" --rw=randread --bs=4k --iodepth=32
three "warm 4k randread QD1 (mean us)" "$lat_read" " (lower is better; target <=1.0 vs nbdkit)" --rw=randread --bs=4k --iodepth=1
stop "$Q_PID" "$K_PID"

# ---- Writes: nbdserver's filled image device; the peers on raw copies ----
cp "$RAW" "$WORK/q.raw"; cp "$RAW" "$WORK/k.raw"
start qemu-nbd -f raw -x vm -p "$Q_PORT" -b 127.0.0.1 --persistent --shared=16 "$WORK/q.raw"
Q_PID=${PIDS[-1]}
start nbdkit -f -p "$K_PORT" -i 127.0.0.1 --exportname=vm file "$WORK/k.raw"
K_PID=${PIDS[-1]}
wait_nbd "$Q_PORT"; wait_nbd "$K_PORT"
three "4k randwrite QD32 (IOPS)" "$iops_write" " (target >=1.0 vs qemu-nbd)" --rw=randwrite --bs=4k --iodepth=32
stop "$Z_PID" "$Q_PID" "$K_PID"
rm -f "$WORK/q.raw" "$WORK/k.raw"

# ---- Cold full read, 20 ms per fetch ----
D_PORT=$(free_port)
start "$BIN/chunkstore" delay-proxy --listen "127.0.0.1:$D_PORT" --to "127.0.0.1:$ZDB_PORT" --delay-ms 20 2>/dev/null
D_PID=${PIDS[-1]}
wait_port "$D_PORT"
# nbdserver with an empty cache (dir $1) behind the delay line, and nbdkit's
# cow filter over a 20 ms delay filter; sets Z_PORT Z_PID K_PID.
start_cold() {
    Z_PORT=$(free_port)
    nbdserver "$Z_PORT" "$WORK/$1" --store "zdb://127.0.0.1:$D_PORT/default" \
        --export "vm=$WORK/img.flist:/disk.raw"
    Z_PID=${PIDS[-1]}
    start nbdkit -f -p "$K_PORT" -i 127.0.0.1 --exportname=vm --filter=cow --filter=delay file "$RAW" delay-read=20ms
    K_PID=${PIDS[-1]}
    wait_nbd "$Z_PORT"; wait_nbd "$K_PORT"
}
start_cold cold-cache
z=$(copy_mbs "nbd://127.0.0.1:$Z_PORT/vm")
k=$(copy_mbs "nbd://127.0.0.1:$K_PORT/vm")
row "cold full read, 20ms/fetch (MB/s)" "$z" "-" "$k" "vs nbdkit cow+delay $(ratio "$z" "$k") (target >=3, and >=200 MB/s)"
stop "$Z_PID" "$K_PID"
# The same cold read as a booting guest does it: one 1 MiB request at a
# time (fio QD1, sequential, the whole image once). Here only the server's
# own read-ahead can overlap fetches; nbdcopy above keeps 64+ requests in
# flight, so the peer's delay overlaps as well.
start_cold cold-cache-qd1
z=$(fio_once "nbd://127.0.0.1:$Z_PORT/vm" "$mbs_read" --rw=read --bs=1M --iodepth=1)
k=$(fio_once "nbd://127.0.0.1:$K_PORT/vm" "$mbs_read" --rw=read --bs=1M --iodepth=1)
row "cold seq read QD1 1M, 20ms (MB/s)" "$z" "-" "$k" "vs nbdkit cow+delay $(ratio "$z" "$k") (target >=3, and >=200 MB/s)"
stop "$Z_PID" "$K_PID" "$D_PID"

# ---- Memory of a 100 GiB thin device ----
Z_PORT=$(free_port)
nbdserver "$Z_PORT" "$WORK/big-cache" --export "big=blank:100G"
Z_PID=${PIDS[-1]}
wait_port "$Z_PORT"
fio --name=b --ioengine=nbd --uri="nbd://127.0.0.1:$Z_PORT/big" --rw=randwrite --bs=4k --iodepth=32 \
    --size=100G --io_size=256M --norandommap --output-format=terse >/dev/null 2>&1
nbdinfo --map "nbd://127.0.0.1:$Z_PORT/big" >/dev/null
# The server is `env … nbdserver`: env execs, so the pid is nbdserver's.
hwm=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$Z_PID/status")
rss=$(awk '/VmRSS/ {print int($2/1024)}' "/proc/$Z_PID/status")
row "100 GiB thin device RSS (MB)" "$rss" "-" "-" "peak $hwm MB (target <=64)"
stop "$Z_PID"

#!/usr/bin/env bash
# chunkstore serve (0-db dialect, values in the local store, periodic fsync)
# against redis-server in the same run, driven by redis-benchmark: SET and
# GET of 4 KiB and 1 MiB values with 16 clients, random keys.
#
# Peers: redis-server with AOF `appendfsync everysec` (durable like us:
# written per request, fsynced every second) and redis-server without
# persistence (memory only: an upper bound). Prints requests/s and the
# ratio chunkstore / peer.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CHUNKSTORE:-target/release/chunkstore}
[ -x "$BIN" ] || { echo "build first: cargo build --release --bins" >&2; exit 1; }
command -v redis-benchmark >/dev/null || { echo "redis-benchmark missing: make deps" >&2; exit 1; }

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do redis-cli -p "$1" PING >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "port $1 never answered" >&2; exit 1; }

zport=$(free_port)
"$BIN" serve --listen "127.0.0.1:$zport" --data "$tmp/zdb" 2>"$tmp/zdb.log" &
pids+=($!)
aport=$(free_port)
redis-server --port "$aport" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync everysec --dir "$tmp" --appendfilename aof >/dev/null &
pids+=($!)
mport=$(free_port)
redis-server --port "$mport" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" >/dev/null &
pids+=($!)
for p in $zport $aport $mport; do wait_port "$p"; done

# rps of one test from redis-benchmark --csv. SET uses random keys (every
# request a real write); GET reads the one key `key:__rand_int__`, written
# first, so every request returns a value of the given size.
rps() { # port size n test
    local rand=(-r 1000000)
    if [ "$4" = GET ]; then
        redis-benchmark -p "$1" -t set -n 1 -c 1 -d "$2" --csv >/dev/null 2>&1
        rand=()
    fi
    redis-benchmark -p "$1" -t "$4" -n "$3" -c 16 -d "$2" "${rand[@]}" --csv 2>/dev/null |
        awk -F'"' -v t="$4" '$2==t {print $4}'
}

printf '%-14s %12s %12s %12s %9s %9s\n' test chunkstore redis-aof redis-mem "vs aof" "vs mem"
for spec in "4096 20000" "1048576 300"; do
    set -- $spec
    size=$1 n=$2
    for t in SET GET; do
        # Interleave the three servers so load changes hit all of them.
        z=$(rps "$zport" "$size" "$n" "$t"); a=$(rps "$aport" "$size" "$n" "$t"); m=$(rps "$mport" "$size" "$n" "$t")
        label="$t $((size / 1024))KiB"
        awk -v l="$label" -v z="$z" -v a="$a" -v m="$m" \
            'BEGIN { printf "%-14s %12.0f %12.0f %12.0f %8.2fx %8.2fx\n", l, z, a, m, z/a, z/m }'
    done
done

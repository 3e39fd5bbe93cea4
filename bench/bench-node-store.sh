#!/usr/bin/env bash
# The shared node store: a process that does not own local://PATH reads
# 1 GiB of 1 MiB chunks through the owner (LOCATE over the socket, then a
# pread of the segment it was handed), against the owner reading the same
# chunks itself, in the same run (chunkstore bench --only shared).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CHUNKSTORE:-target/release/chunkstore}
[ -x "$BIN" ] || { echo "build first: cargo build --release --bins" >&2; exit 1; }
exec "$BIN" bench --only shared --shared-mib "${BENCH_SHARED_MIB:-1024}" --rounds "${BENCH_ROUNDS:-3}"

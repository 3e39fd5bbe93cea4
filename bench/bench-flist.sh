#!/usr/bin/env bash
# flist pack vs casync make, in the same run, on the same trees:
#   1. a Debian minbase root filesystem (debootstrap), 2. a 1 GiB mixed set
#   (random, compressible, duplicate and many small files).
# Prints MB/s of both and their ratio (target: flist >= 2x casync), the
# flist size against the tree size (target: <= 1.5 % for a rootfs), and the
# dedup of a second, slightly changed version packed with --cdc.
#
# Env: ZOSFS_BENCH_ROOTFS=dir  reuse an existing rootfs instead of debootstrap
#      ZOSFS_BENCH_MIXED_MB=n  size of the mixed set (default 1024)
#      ZOSFS_BENCH_SKIP_ROOTFS=1  only the mixed set and the dedup runs
#      ZOSFS_BENCH_SUITE / ZOSFS_BENCH_MIRROR  debootstrap suite and mirror
set -euo pipefail
cd "$(dirname "$0")/.."
FLIST=${FLIST:-$PWD/target/release/flist}
[ -x "$FLIST" ] || { echo "bench-flist: build first (make build)"; exit 1; }
for t in casync debootstrap; do command -v $t >/dev/null || { echo "bench-flist: $t missing (make deps)"; exit 1; }; done

WORK=$(mktemp -d /var/tmp/bench-flist.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export ZOSFS_FLIST_CACHE=$WORK/cache

now() { date +%s.%N; }
# Arithmetic with awk (bc is not in Debian's base system).
calc() { awk "BEGIN { printf \"%.4f\", $1 }"; }
mb() { awk "BEGIN { printf \"%.1f\", $1 / 1000000 }"; }
tree_bytes() { du -sb --apparent-size "$1" | cut -f1; }

# pack_both NAME TREE: times both tools on TREE (warm page cache for both).
pack_both() {
    local name=$1 tree=$2 bytes entries t0 t1 tf tc
    bytes=$(tree_bytes "$tree"); entries=$(find "$tree" | wc -l)
    tar -cf /dev/null -C "$tree" . 2>/dev/null || true   # warm the page cache once
    t0=$(now); "$FLIST" pack --no-progress -o "$WORK/$name.flist" --store "local://$WORK/store-$name" "$tree" 2>"$WORK/$name.pack.log"; t1=$(now)
    tf=$(calc "$t1 - $t0")
    t0=$(now); casync make --store="$WORK/casync-$name.castr" "$WORK/$name.caidx" "$tree" >/dev/null 2>&1; t1=$(now)
    tc=$(calc "$t1 - $t0")
    local rf rc fsize
    rf=$(calc "$bytes / $tf / 1000000"); rc=$(calc "$bytes / $tc / 1000000")
    fsize=$(stat -c %s "$WORK/$name.flist")
    echo "$name: $(mb "$bytes") MB in $entries entries"
    printf '  flist pack   %7.2f s  %7.1f MB/s\n' "$tf" "$rf"
    printf '  casync make  %7.2f s  %7.1f MB/s\n' "$tc" "$rc"
    printf '  ratio        %7.2fx  (flist / casync; target >= 2x)\n' "$(calc "$tc / $tf")"
    printf '  flist size   %d bytes = %.3f %% of the tree' "$fsize" "$(calc "$fsize * 100 / $bytes")"
    [ "$name" = rootfs ] && printf ' (target <= 1.5 %%)'
    echo
}

# --- 1. root filesystem -------------------------------------------------------
if [ -n "${ZOSFS_BENCH_SKIP_ROOTFS:-}" ]; then
    echo "rootfs: skipped (ZOSFS_BENCH_SKIP_ROOTFS)"
elif [ -n "${ZOSFS_BENCH_ROOTFS:-}" ]; then
    ROOTFS=$ZOSFS_BENCH_ROOTFS
else
    ROOTFS=$WORK/rootfs
    debootstrap --variant=minbase "${ZOSFS_BENCH_SUITE:-bookworm}" "$ROOTFS" \
        "${ZOSFS_BENCH_MIRROR:-http://deb.debian.org/debian}" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; exit 1; }
fi
[ -n "${ZOSFS_BENCH_SKIP_ROOTFS:-}" ] || pack_both rootfs "$ROOTFS"

# --- 2. 1 GiB mixed set -------------------------------------------------------
# `head` closes its pipe early by design: no pipefail while generating.
set +o pipefail
MIXED=$WORK/mixed; MB=${ZOSFS_BENCH_MIXED_MB:-1024}
mkdir -p "$MIXED/random" "$MIXED/text" "$MIXED/dups" "$MIXED/small"
# 40 % incompressible, 30 % compressible text, 15 % duplicates, 15 % small files.
for i in $(seq 1 4); do head -c $((MB * 1024 * 1024 / 10)) /dev/urandom >"$MIXED/random/r$i.bin"; done
for i in $(seq 1 3); do
    base64 -w 100 "$MIXED/random/r1.bin" | head -c $((MB * 1024 * 1024 / 10)) | tr 'A-Z' 'a-z' >"$MIXED/text/t$i.txt"
    sed -i "1s/^/version $i\n/" "$MIXED/text/t$i.txt"
done
cp "$MIXED/random/r2.bin" "$MIXED/dups/copy-of-r2.bin"
head -c $((MB * 1024 * 1024 / 20)) "$MIXED/random/r3.bin" >"$MIXED/dups/half-of-r3.bin"
small_total=$((MB * 1024 * 1024 * 15 / 100)); n=0; done_bytes=0
head -c "$small_total" /dev/urandom >"$WORK/small.pool"
while [ $done_bytes -lt $small_total ]; do
    sz=$(( (n * 7919 % 60 + 4) * 1024 )); d=$MIXED/small/d$((n % 64)); mkdir -p "$d"
    tail -c +$((done_bytes + 1)) "$WORK/small.pool" | head -c $sz >"$d/f$n"
    done_bytes=$((done_bytes + sz)); n=$((n + 1))
done
rm -f "$WORK/small.pool"
set -o pipefail
pack_both mixed "$MIXED"

# --- 3. dedup of a slightly changed version with --cdc ------------------------
V2=$WORK/mixed-v2
cp -a "$MIXED" "$V2"
# Insert 100 bytes near the start of a big file (shifts every later byte),
# append to a text file, change a few small files, drop one.
{ head -c 1000000 "$V2/random/r1.bin"; echo "inserted bytes: shift the rest of the file by a little"; tail -c +1000001 "$MIXED/random/r1.bin"; } >"$V2/random/r1.new"
mv "$V2/random/r1.new" "$V2/random/r1.bin"
echo "appended line" >>"$V2/text/t2.txt"
for f in $(find "$V2/small" -type f | sort | head -20); do echo changed >>"$f"; done
rm -f "$(find "$V2/small" -type f | sort | tail -1)"

for mode in cdc fixed; do
    args=(); [ $mode = cdc ] && args=(--cdc)
    st="local://$WORK/dedup-$mode"
    "$FLIST" pack --no-progress "${args[@]}" -o "$WORK/v1-$mode.flist" --store "$st" "$MIXED" 2>"$WORK/v1-$mode.log"
    "$FLIST" pack --no-progress "${args[@]}" -o "$WORK/v2-$mode.flist" --store "$st" "$V2" 2>"$WORK/v2-$mode.log"
    up1=$(grep -o '([0-9]* blob bytes)' "$WORK/v1-$mode.log" | tr -dc 0-9)
    up2=$(grep -o '([0-9]* blob bytes)' "$WORK/v2-$mode.log" | tr -dc 0-9)
    printf 'second version, %-5s: v1 uploaded %s MB, v2 uploaded %s MB more = %.2f %% of v1 (%.2f %% reused)\n' \
        "$mode" "$(mb "$up1")" "$(mb "$up2")" "$(calc "$up2 * 100 / $up1")" \
        "$(calc "100 - $up2 * 100 / $up1")"
done
# The peer on the same change: casync's store growth for v2.
casync make --store="$WORK/casync-v.castr" "$WORK/v1.caidx" "$MIXED" >/dev/null 2>&1
c1=$(du -sb "$WORK/casync-v.castr" | cut -f1)
casync make --store="$WORK/casync-v.castr" "$WORK/v2.caidx" "$V2" >/dev/null 2>&1
c2=$(du -sb "$WORK/casync-v.castr" | cut -f1)
printf 'second version, casync: store grew %.2f %% (%s MB of %s MB)\n' \
    "$(calc "($c2 - $c1) * 100 / $c1")" "$(mb $((c2 - c1)))" "$(mb "$c1")"

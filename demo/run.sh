#!/usr/bin/env bash
# `make demo`: the whole zosfs data path on this machine, as root.
#
#  1. a 0-db hub (`chunkstore serve`) stands in for the remote image store;
#  2. `flist pack` packs a sample tree and a sample VM disk into the node's
#     default store (local:///var/lib/zosfs/chunks) replicated to the hub;
#  3. `fsmount` mounts the tree (cache and btrfs rw layer under a temp dir)
#     and a few commands read from it;
#  4. while it stays mounted, `nbdserver` serves the disk; nbdfuse + a loop
#     device let the kernel mount its ext4 and read one file;
#     both views read through ONE node store (a fresh local:// store under
#     the temp dir, shared by both processes) replicated to the hub;
#  5. both report what they fetched against the image size, and what the
#     hub sent to each.
#
# Everything but the default store lives in a temp dir removed at exit;
# ZOSFS_DEMO_STORE=DIR puts the "default" store elsewhere, ZOSFS_DEMO_KEEP=1
# keeps the temp dir.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${ZOSFS_BIN:-$ROOT/target/release}
DEFAULT_STORE=${ZOSFS_DEMO_STORE:-/var/lib/zosfs/chunks}
export PATH="$BIN:$PATH"

[ "$(id -u)" = 0 ] || { echo "demo: needs root (FUSE, loop devices, btrfs, mount)" >&2; exit 1; }
for b in chunkstore flist fsmount nbdserver; do
    [ -x "$BIN/$b" ] || { echo "demo: $BIN/$b missing: run 'make build'" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/zosfs-demo.XXXXXX)
PIDS=()
MNT=$WORK/mnt
NBDFUSE=$WORK/nbdfuse
VMROOT=$WORK/vmroot

# fsmount keeps its state and node cache here (its --state / --cache).
export ZOSFS_STATE=$WORK/state ZOSFS_CACHE=$WORK/cache

cleanup() {
    set +e
    mountpoint -q "$VMROOT" && umount "$VMROOT"
    mountpoint -q "$NBDFUSE" && fusermount3 -u "$NBDFUSE"
    mountpoint -q "$MNT" && fsmount umount "$MNT" >/dev/null
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    # Whatever is still mounted or attached under WORK (a failed step):
    # detach it, so removing WORK can never reach into a mount.
    findmnt -rn -o TARGET | grep -F "$WORK/" | sort -r | xargs -r -n1 umount -l
    losetup -j "$WORK/state/volume.img" -O NAME -n 2>/dev/null | xargs -r -n1 losetup -d
    if [ "${ZOSFS_DEMO_KEEP:-}" = 1 ]; then echo "demo: kept $WORK"
    else rm -rf --one-file-system "$WORK"; fi
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
human() { numfmt --to=iec-i --suffix=B "$1"; }

# A free TCP port from the kernel.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Wait (bounded) until a TCP port accepts connections.
wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || { echo "demo: $3 exited" >&2; return 1; }
        sleep 0.05
    done
    echo "demo: $3 never listened on port $1" >&2
    return 1
}

step "0-db hub: chunkstore serve"
HUB_PORT=$(free_port)
chunkstore serve --listen "127.0.0.1:$HUB_PORT" --data "$WORK/hub" 2>"$WORK/hub.log" &
PIDS+=($!)
wait_port "$HUB_PORT" "$!" "chunkstore serve"
HUB=zdb://127.0.0.1:$HUB_PORT/default
echo "hub at $HUB (data in $WORK/hub)"

step "sample tree and VM disk"
TREE=$WORK/tree
mkdir -p "$TREE/docs" "$TREE/bin" "$WORK/vm/files" "$WORK/image"
cp -a /usr/share/doc/. "$TREE/docs/"
cp -a /bin/bash /bin/ls "$TREE/bin/"
head -c 64M /dev/urandom >"$TREE/big.bin"
ln -s docs/bash "$TREE/bash-docs"
echo "hello from the flist" >"$TREE/hello.txt"
echo "hello from the VM disk" >"$WORK/vm/files/hello.txt"
cp -a /usr/share/doc/bash "$WORK/vm/files/"
head -c 32M /dev/urandom >"$WORK/vm/files/data.bin"
truncate -s 256M "$WORK/image/disk.raw"
mkfs.ext4 -q -F -d "$WORK/vm/files" "$WORK/image/disk.raw"
echo "tree: $(find "$TREE" | wc -l) entries, $(du -sb "$TREE" | cut -f1 | xargs -I{} numfmt --to=iec-i --suffix=B {})"
echo "disk: ext4, 256 MiB (sparse; $(du -B1 "$WORK/image/disk.raw" | cut -f1 | xargs -I{} numfmt --to=iec-i --suffix=B {}) allocated)"

step "flist pack into local://$DEFAULT_STORE + the hub"
mkdir -p "$DEFAULT_STORE"
flist pack --no-progress -o "$WORK/tree.flist" --store "local://$DEFAULT_STORE" --store "$HUB" \
    --tag name=demo-tree "$TREE"
flist pack --no-progress -o "$WORK/vm.flist" --store "local://$DEFAULT_STORE" --store "$HUB" \
    --tag name=demo-vm "$WORK/image"
flist inspect "$WORK/tree.flist"
echo "flist files: tree $(stat -c %s "$WORK/tree.flist") B, vm $(stat -c %s "$WORK/vm.flist") B"

# What the hub has sent so far (its INFO network_tx_bytes).
hub_tx() { redis-cli -p "$HUB_PORT" INFO | tr -d '\r' | awk -F': ' '$1 == "network_tx_bytes" { print $2 }'; }

# The node store both views share: empty, so what they read comes from the
# hub once and stays on the node.
NODE=local://$WORK/node-store

step "fsmount: the tree, fetched lazily through the node store from the hub"
mkdir -p "$MNT"
TX0=$(hub_tx)
fsmount "$WORK/tree.flist" "$MNT" --store "$NODE" --store "$HUB" --rw demo --volume-size 1G -d
echo "\$ ls $MNT"; ls "$MNT"
echo "\$ cat $MNT/hello.txt"; cat "$MNT/hello.txt"
echo "\$ $MNT/bin/ls --version | head -1"; "$MNT/bin/ls" --version | head -1
echo "\$ head -c 4096 big.bin | wc -c"; head -c 4096 "$MNT/big.bin" | wc -c
echo "\$ echo written > $MNT/new.txt (goes to the btrfs rw layer)"; echo written >"$MNT/new.txt"
fsmount stats "$MNT"
TREE_BYTES=$(du -sb "$TREE" | cut -f1)
TX1=$(hub_tx)

step "nbdserver (fsmount still mounted): the VM disk, through the same node store"
NBD_PORT=$(free_port)
nbdserver --listen "127.0.0.1:$NBD_PORT" --cache-dir "$WORK/nbdcache" --store "$NODE" --store "$HUB" \
    --export "vm=$WORK/vm.flist:/disk.raw" 2>"$WORK/nbdserver.log" &
PIDS+=($!)
wait_port "$NBD_PORT" "$!" nbdserver
URI=nbd://127.0.0.1:$NBD_PORT/vm
nbdinfo "$URI" | grep -E 'export-size|block_size_preferred|can_'
mkdir -p "$NBDFUSE" "$VMROOT"
nbdfuse -P "$WORK/nbdfuse.pid" "$NBDFUSE" "$URI" &
PIDS+=($!)
for _ in $(seq 200); do [ -s "$WORK/nbdfuse.pid" ] && break; sleep 0.05; done
mount -o ro,loop,noload "$NBDFUSE/nbd" "$VMROOT"
echo "\$ cat /hello.txt (in the VM disk)"; cat "$VMROOT/hello.txt"
umount "$VMROOT"
fusermount3 -u "$NBDFUSE"
nbdserver stats --cache-dir "$WORK/nbdcache"
TX2=$(hub_tx)

step "the node store both views share"
chunkstore stat --store "$NODE"

step "what was fetched"
fsmount stats "$MNT" | awk -v total="$TREE_BYTES" '
    /^bytes fetched/ { b=$3 } END { if (b != "") printf "fsmount:   %s bytes fetched of a %d-byte tree (%.2f %%)\n", b, total, 100*b/total }'
nbdserver stats --cache-dir "$WORK/nbdcache" | awk -v total=$((256 << 20)) '
    $1 == "fetched_bytes_total" { b=$2 } END { if (b != "") printf "nbdserver: %s bytes fetched of a %d-byte disk (%.2f %%)\n", b, total, 100*b/total }'
echo "hub sent:  $((TX1 - TX0)) bytes to fsmount, $((TX2 - TX1)) bytes to nbdserver (each chunk once per node)"
echo
echo "demo: done (default store: local://$DEFAULT_STORE)"

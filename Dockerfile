# Node image: zosfs binaries on slim Debian with fuse3 and btrfs-progs.
# Run privileged with /dev/fuse (see README, "Running on a node").

FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        libclang-dev librocksdb-dev pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ENV ROCKSDB_LIB_DIR=/usr/lib/x86_64-linux-gnu
RUN cargo build --release --workspace --bins \
    && mkdir /out \
    && find target/release -maxdepth 1 -type f -executable \
         \( -name chunkstore -o -name flist -o -name fsmount -o -name nbdserver \) \
         -exec cp {} /out/ \;

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
        fuse3 btrfs-progs librocksdb7.8 ca-certificates kmod util-linux \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
VOLUME ["/var/lib/zosfs", "/var/cache/zosfs"]
# No ENTRYPOINT: the command names the tool (`docker run … zosfs fsmount …`,
# `… zosfs nbdserver …`, `… zosfs chunkstore own …`), as the README shows.
CMD ["fsmount", "--help"]

# zosfs — the two commands of the README are `make demo` and `make test`.
# Every target that builds goes through one cargo profile (release), so
# nothing native is compiled twice.

SHELL := /bin/bash
CARGO ?= cargo
PROFILE := --release

# Debian packages the project needs (tests use the real tools).
APT_PACKAGES := build-essential pkg-config libclang-dev librocksdb-dev \
	fuse3 btrfs-progs redis-server qemu-utils libnbd-bin python3-libnbd \
	nbdkit fio casync debootstrap attr e2fsprogs util-linux acl openssl

# Link Debian's RocksDB when it is installed (36 s instead of ~20 min for
# the bundled C++ build); plain `cargo build` elsewhere builds the bundled one.
ROCKSDB_SO := $(firstword $(wildcard /usr/lib/*/librocksdb.so /usr/lib/librocksdb.so))
ifneq ($(ROCKSDB_SO),)
export ROCKSDB_LIB_DIR := $(patsubst %/,%,$(dir $(ROCKSDB_SO)))
endif

NEXTEST := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo yes)

.PHONY: all deps build test test-run check demo demo-run bench bench-run fuzz-build clean

all: build

deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "make deps: installing $$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "make deps: all Debian packages present"; fi

build:
	$(CARGO) build $(PROFILE) --workspace --bins

# `deps` runs first; the sub-make then sees the freshly installed librocksdb.
test: deps
	@$(MAKE) --no-print-directory test-run

test-run: check
	$(CARGO) build $(PROFILE) --workspace --bins
ifeq ($(NEXTEST),yes)
	$(CARGO) nextest run $(PROFILE) --workspace --no-fail-fast
else
	$(CARGO) test $(PROFILE) --workspace --no-fail-fast
endif
	$(CARGO) test $(PROFILE) --workspace --doc

check:
	$(CARGO) fmt --all --check
	$(CARGO) clippy $(PROFILE) --workspace --all-targets -- -D warnings

demo: deps
	@$(MAKE) --no-print-directory demo-run

demo-run: build
	./demo/run.sh

bench: deps
	@$(MAKE) --no-print-directory bench-run

bench-run: build
	./bench/run-all.sh

clean:
	$(CARGO) clean

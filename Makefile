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

.PHONY: all deps build test test-run check demo demo-run bench bench-run fuzz-build fuzz-smoke fuzz-long fuzz-run clean

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
	@$(MAKE) --no-print-directory fuzz-smoke

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

# Fuzzing with the STABLE toolchain (no nightly, no cargo-fuzz needed):
# libFuzzer comes from libfuzzer-sys, coverage instrumentation from LLVM's
# sancov pass through stable -C flags, and `--cfg fuzzing` as cargo-fuzz
# sets it. `--target` keeps build scripts and proc-macros uninstrumented
# and puts the instrumented build under target/<triple>/, apart from the
# normal one but in the same target directory. fuzz/ is a workspace of its
# own (fuzz/Cargo.lock); ROCKSDB_LIB_DIR (exported above) applies to it too.
FUZZ_TRIPLE := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
FUZZ_RUSTFLAGS := -Cpasses=sancov-module \
	-Cllvm-args=-sanitizer-coverage-level=4 \
	-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
	-Cllvm-args=-sanitizer-coverage-pc-table \
	-Cllvm-args=-sanitizer-coverage-trace-compares \
	--cfg fuzzing
# Every [[bin]] of fuzz/Cargo.toml is a fuzz target.
FUZZ_TARGETS := $(shell awk '/^\[\[bin\]\]/{b=1;next} b&&/^name *=/{gsub(/[" ]/,"");sub(/name=/,"");print;b=0}' fuzz/Cargo.toml)
FUZZ_BIN := target/$(FUZZ_TRIPLE)/release
# Bounds of each target's run in `fuzz-smoke` (CI): FUZZ_RUNS inputs or
# FUZZ_SECONDS, whichever comes first. Fuzz for real by hand with
# `make fuzz-long` (FUZZ_LONG_SECONDS per target).
FUZZ_RUNS ?= 20000
FUZZ_SECONDS ?= 15

# Not --locked: a dependency another crate adds must not break `make test`;
# cargo then only adds the missing entries to fuzz/Cargo.lock.
fuzz-build:
	cd fuzz && RUSTFLAGS="$(FUZZ_RUSTFLAGS)" $(CARGO) build --release \
		--target $(FUZZ_TRIPLE) --target-dir ../target --bins

# Each target from its committed seeds (fuzz/seeds/<target>/, see
# flist/src/fuzz_seeds.rs) plus what it finds (fuzz/corpus/<target>/, not
# committed). A crash, a timeout, or memory past the limit fails the
# target; the input is kept in fuzz/artifacts/<target>/. fuzz-run runs
# every target for FUZZ_RUNS inputs or FUZZ_SECONDS, whichever comes first;
# fuzz-smoke (in `make test`) and fuzz-long (by hand, not in `make test`:
# FUZZ_LONG_SECONDS per target, no input limit) set them.
FUZZ_LONG_SECONDS ?= 600

fuzz-smoke: fuzz-build
	@$(MAKE) --no-print-directory fuzz-run FUZZ_LABEL=fuzz-smoke

fuzz-long: fuzz-build
	@$(MAKE) --no-print-directory fuzz-run FUZZ_LABEL=fuzz-long FUZZ_RUNS=-1 FUZZ_SECONDS=$(FUZZ_LONG_SECONDS)

FUZZ_LABEL ?= fuzz-run
fuzz-run:
	@set -e; for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/corpus/$$t fuzz/artifacts/$$t fuzz/seeds/$$t; \
		echo "$(FUZZ_LABEL): $$t (at most $(FUZZ_RUNS) inputs, $(FUZZ_SECONDS) s)"; \
		$(FUZZ_BIN)/$$t -runs=$(FUZZ_RUNS) -max_total_time=$(FUZZ_SECONDS) -timeout=20 \
			-rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
			-artifact_prefix=fuzz/artifacts/$$t/ fuzz/corpus/$$t fuzz/seeds/$$t \
			> fuzz/artifacts/$$t/log 2>&1 \
			|| { tail -n 60 fuzz/artifacts/$$t/log; echo "$(FUZZ_LABEL): $$t FAILED"; exit 1; }; \
		grep -E '^stat::number_of_executed_units|^Done' fuzz/artifacts/$$t/log | tr '\n' ' '; echo; \
	done

clean:
	$(CARGO) clean

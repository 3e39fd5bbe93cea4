#!/usr/bin/env bash
# Runs every benchmark; each prints its figures next to a peer's from the same run.
set -euo pipefail
cd "$(dirname "$0")"
for b in ./bench-*.sh; do [ -x "$b" ] && "$b"; done

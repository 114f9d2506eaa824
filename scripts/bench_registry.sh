#!/usr/bin/env bash
# Registry walk benchmark: registrants per second from the fake OpenG2P registry to the
# fake MTS (tokens written back by MTS callbacks), for the two fakes alone (the same
# pages, driven by the benchmark program itself: the baseline, in the same run) and for
# the mts-connector service; and the service's peak memory over the walk. Prints a
# Markdown table for BENCHMARKS.md.
# Usage: scripts/bench_registry.sh [registrants (default 1000000)] [page size (default 500)]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin mts-connector --example bench_registry
target/release/examples/bench_registry target/release/mts-connector "${1:-1000000}" "${2:-500}"

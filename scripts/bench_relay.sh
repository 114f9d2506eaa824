#!/usr/bin/env bash
# Relay throughput benchmark: the same import through the fakes in direct mode (the
# baseline, measured in the same run) and in relay mode. Prints a Markdown table for
# BENCHMARKS.md. Usage: scripts/bench_relay.sh [records]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin mts-connector --example bench_relay
target/release/examples/bench_relay target/release/mts-connector "${1:-5000}"

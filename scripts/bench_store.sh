#!/usr/bin/env bash
# Store benchmark: a large history (runs and deliveries) in the store as the service
# keeps it (schema version 2) against the same history held in memory as schema
# version 1 did (the baseline, measured in the same run), then the relay's intake with
# concurrent senders against a bare server answering the same bytes. Prints Markdown
# tables for BENCHMARKS.md. Everything listens on 127.0.0.1 only.
#
#   scripts/bench_store.sh [runs=1000000] [deliveries=1000000] [relay_records=20000]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin mts-connector --example bench_store --example bench_bare >&2
target/release/examples/bench_store target/release/mts-connector target/release/examples/bench_bare \
    "${1:-1000000}" "${2:-1000000}" "${3:-20000}"

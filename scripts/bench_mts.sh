#!/usr/bin/env bash
# How much of MTS the service uses (examples/bench_mts.rs); prints Markdown tables for
# BENCHMARKS.md. Everything listens on 127.0.0.1 only.
#
# 1. Fake MTS pools of BENCH_POOL_SIZES workers (default 1,4,16,32; endpoints of 4 workers,
#    like the pods of a StatefulSet) taking BENCH_MS_PER_RECORD (20) per record, against the
#    pool's capacity: once with the defaults' one request per worker in flight, once with two.
# 2. The real MTS (mts-mock, started by scripts/real/mts.sh) with BENCH_REAL_WORKERS (1,2,4)
#    gunicorn workers: 600 ODK submissions in 4 requests of 150, the service against MTS driven
#    directly with the 4 requests at once, BENCH_ROUNDS (5) alternating rounds after a warm-up, the
#    median of each and of the rounds' ratios. Skipped with one line when the MTS sources are not
#    there (see scripts/real/mts.sh).
#
#   scripts/bench_mts.sh              # both parts
#   BENCH_ONLY=pool scripts/bench_mts.sh
#   BENCH_ONLY=real scripts/bench_mts.sh
set -euo pipefail
cd "$(dirname "$0")/.."

POOL_SIZES=${BENCH_POOL_SIZES:-1,4,16,32}
MS=${BENCH_MS_PER_RECORD:-20}
SECONDS_OF_WORK=${BENCH_SECONDS:-15}
REAL_WORKERS=${BENCH_REAL_WORKERS:-1,2,4}
ONLY=${BENCH_ONLY:-}

echo "building the release binary and the benchmark driver..." >&2
cargo build --release --locked --bin mts-connector --example bench_mts >&2
BIN=$PWD/target/release/mts-connector
EX=$PWD/target/release/examples/bench_mts

if [ "$ONLY" != real ]; then
    echo "### Fake MTS pools, one request per worker in flight (the defaults)"
    echo
    BENCH_PER_WORKER=1 "$EX" pool "$BIN" "$POOL_SIZES" "$MS" "$SECONDS_OF_WORK"
    echo
    echo "### Fake MTS pools, two requests per worker in flight"
    echo
    BENCH_PER_WORKER=2 "$EX" pool "$BIN" "$POOL_SIZES" "$MS" "$SECONDS_OF_WORK"
    echo
fi
if [ "$ONLY" != pool ]; then
    echo "### The real MTS (mts-mock)"
    echo
    echo "| gunicorn workers | MTS driven directly, 4 requests at once (baseline): median | the service: median | ratio: median of the rounds (each round) |"
    echo "|---|---|---|---|"
    for w in ${REAL_WORKERS//,/ }; do
        rc=0
        bash scripts/real/mts.sh run -w "$w" -- "$EX" real "$BIN" "$w" || rc=$?
        if [ "$rc" = 77 ]; then
            echo "| $w | skipped: no MTS sources (set MTS_SRC or put the archive in ../shared/vendor) | | |"
        elif [ "$rc" != 0 ]; then
            exit "$rc"
        fi
    done
fi

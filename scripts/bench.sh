#!/usr/bin/env bash
# Runs every benchmark of the service against baselines measured in the same run, and
# writes BENCHMARKS.md: the machine, the command, and each figure as a ratio to its
# baseline. Takes about 15 minutes on 2 cores (most of it the scheduler's real
# 1-minute intervals). Everything listens on 127.0.0.1 only.
#
#   scripts/bench.sh                 # everything, writes BENCHMARKS.md
#   BENCH_ONLY=rpc scripts/bench.sh  # one part (rpc, scheduler or import), to stdout
#
# Tunables (environment): BENCH_RPC_SECONDS (5), BENCH_CONNECTORS (10000),
# BENCH_MINUTES (4), BENCH_IMPORT_SIZES (10000,50000,100000).
set -euo pipefail
cd "$(dirname "$0")/.."

RPC_SECONDS=${BENCH_RPC_SECONDS:-5}
CONNECTORS=${BENCH_CONNECTORS:-10000}
MINUTES=${BENCH_MINUTES:-4}
IMPORT_SIZES=${BENCH_IMPORT_SIZES:-10000,50000,100000}
ONLY=${BENCH_ONLY:-}

echo "building the release binary and the benchmark drivers..." >&2
cargo build --release --locked --bin mts-connector --example bench_bare --example bench_rpc --example bench_engine >&2
BIN=target/release/mts-connector
EX=target/release/examples

run_rpc() {
    "$EX/bench_rpc" "$BIN" "$EX/bench_bare" "$RPC_SECONDS" 50
}
run_scheduler() {
    "$EX/bench_engine" scheduler "$BIN" "$EX/bench_bare" "$CONNECTORS" "$MINUTES"
}
run_import() {
    "$EX/bench_engine" import "$BIN" "$IMPORT_SIZES"
}
# The largest import again with fast status polls: shows how much of the wall time is
# waiting for the next poll.
run_import_fast_polls() {
    "$EX/bench_engine" import "$BIN" "${IMPORT_SIZES##*,}" --poll-seconds 0.1
}

if [ -n "$ONLY" ]; then
    "run_$ONLY"
    exit 0
fi

started=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "control plane..." >&2
rpc=$(run_rpc)
echo "scheduler ($CONNECTORS connectors, $MINUTES minutes)..." >&2
scheduler=$(run_scheduler)
echo "import ($IMPORT_SIZES submissions)..." >&2
import=$(run_import)
import_fast=$(run_import_fast_polls)
elapsed=$(( $(date +%s) - started ))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# Read before BENCHMARKS.md is rewritten (that is a change of the tree too).
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
disk=$(df -h --output=fstype,source . | tail -1 | awk '{print $1 " on " $2}')

# The analysis (what is met, what is missed and why) lives between the markers below;
# a new run keeps it and replaces only the figures.
# Sections after it (the relay and registry benchmarks, written by their own scripts)
# are kept as they are too.
analysis=""
others=""
if [ -f BENCHMARKS.md ]; then
    analysis=$(awk '/<!-- analysis -->/{on=1; next} /<!-- \/analysis -->/{on=0} on' BENCHMARKS.md)
    others=$(awk 'after; /<!-- \/analysis -->/{after=1}' BENCHMARKS.md)
fi

cat > BENCHMARKS.md <<EOF
# Benchmarks

Measured by \`scripts/bench.sh\` (the release build; $((elapsed / 60)) min $((elapsed % 60)) s). Every
figure sits next to a baseline measured in the same run on the same machine, and the
ratio between them. The service, the drivers and the fakes share the machine's cores.

| | |
|---|---|
| date | $(date -u '+%Y-%m-%d %H:%M UTC') |
| commit | $commit |
| CPU | $cpu, $(nproc) cores |
| memory | $mem |
| store | $disk |
| OS | $(uname -sr) |
| Rust | $(rustc --version) |
| load average (1, 5, 15 min) | $load_before at the start, $load_after at the end (other work on the machine skews the figures) |
| command | \`scripts/bench.sh\` (BENCH_RPC_SECONDS=$RPC_SECONDS BENCH_CONNECTORS=$CONNECTORS BENCH_MINUTES=$MINUTES BENCH_IMPORT_SIZES=$IMPORT_SIZES) |

## Control plane

\`search_read\` (the connector list: 5 fields, 20 of 50 connectors, ordered by name) and
\`read\` (one connector, every field) on \`mts.connector\` over \`/jsonrpc\`, with valid
credentials, by 1 and 16 keep-alive clients for ${RPC_SECONDS} s each after a 1 s warm-up
(\`examples/bench_rpc.rs\`). Baseline: \`examples/bench_bare.rs\`, a bare hyper server on
the same runtime answering the service's exact answer bytes without doing anything.
Ratios are service / baseline (requests/s: higher is better; latency: lower is better).

$rpc

## Scheduler

$CONNECTORS recurring ODK connectors with 1-minute intervals, created over JSON-RPC and
started by one \`action_start\` call, so that every round has all of them due in the same
second, against fake ODK Central and MTS that answer at once (every window is
empty, so each fire is a run that pre-counts in ODK and ends \`empty\`), watched for
$MINUTES minutes (\`examples/bench_engine.rs scheduler\`). Lateness is the service's own
\`mtsc_scheduler_lateness_seconds\` histogram (due time to run queued and free to start:
a fire is stored up to a second ahead and its runs released when due), over the rounds
after the first, with quantiles interpolated inside buckets as Prometheus does. CPU is
from \`/proc/<pid>/stat\` over the 200 ms samples in which the service wrote no log line
(nor in the samples either side). Baselines: $CONNECTORS bare tokio timers due at the
same instant, and an idle \`bench_bare\` process.

$scheduler

## Manual import

A manual import of N ODK submissions spread over 30 days, split by the service into MTS
requests of at most 500 (\`examples/bench_engine.rs import\`); wall time from
\`action_import\` until every run has ended, with the service's default settings (status
polls back off from 1 s to 30 s). Baselines: the same submissions sent straight to the
fake MTS by the driver in exact windows of 500 and waited for (no service: the limit of
the fakes), the fewest possible requests, and the service's own peak memory before the
import.

$import

The largest import again with \`serve --poll-seconds 0.1\` (first status poll after 0.1 s
instead of 1 s):

$import_fast

## Targets

<!-- analysis -->
$analysis
<!-- /analysis -->
$others
EOF
echo "wrote BENCHMARKS.md" >&2

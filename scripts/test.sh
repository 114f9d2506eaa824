#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: the Rust unit and integration
# tests (which start the real binary against fake MTS, ODK Central and Odoo), the
# Python tests of the Odoo addon (in a virtualenv this script creates), then the
# integration tier against the real Odoo 17, OpenG2P registry and MTS
# (scripts/real/run.sh: skips with one line when their sources are not there).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --bins
cargo test --locked --all-targets
bash scripts/test-python.sh
bash scripts/real/run.sh

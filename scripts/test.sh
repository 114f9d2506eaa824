#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: the Rust unit and integration
# tests (which start the real binary against fake MTS, ODK Central and Odoo), then the
# Python tests of the Odoo addon (in a virtualenv this script creates).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --bins
cargo test --locked --all-targets
bash scripts/test-python.sh

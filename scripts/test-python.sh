#!/usr/bin/env bash
# Python tests of the Odoo addon (odoo_addon/mts_connector), without Odoo:
# - tests/python/test_addon_client.py: the addon's client module against the real
#   service binary (started on port 0 by the tests);
# - tests/python/test_addon_static.py: pylint-odoo with OCA's mandatory checks,
#   oca-checks-odoo-module, and what Odoo 17 would refuse in the views and data;
# - odoo_addon/mts_connector/tests: Odoo TransactionCase tests, reported as skipped
#   here (they run under odoo-bin --test-enable).
# Creates .venv at the repository root when missing and installs the pinned test
# dependencies into it. Builds the service binary first.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    # Debian ships venv (ensurepip) as a separate package: install it when missing.
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
        $SUDO apt-get update -q && $SUDO apt-get install -y -q python3-venv
    fi
    rm -rf .venv
    python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r odoo_addon/requirements-test.txt

cargo build --locked --bins
export MTS_CONNECTOR_BIN="$PWD/target/debug/mts-connector"

# pytest exits 5 when it collected no test at all: that is a failure here too,
# since this suite always has tests.
.venv/bin/python -m pytest tests/python odoo_addon -q -p no:cacheprovider "$@"

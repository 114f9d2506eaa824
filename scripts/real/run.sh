#!/usr/bin/env bash
# The integration tier: the addon, the service binary and the real systems together.
#
#   scripts/real/run.sh            (scripts/test.sh calls it after the Rust and Python tests)
#
# Uses ODOO_SRC (an Odoo 17 checkout), G2P_SRC (openg2p-registry, branch 17.0-1.3: needs
# g2p_registry_base, g2p_registry_individual, g2p_mts) and MTS_SRC (mosip-token-seeder,
# branch mts-mock) when set, else unpacks ../shared/vendor/*.tar.gz into .real/src. When
# neither is there it prints one "SKIP: ..." line and exits 0.
#
# It installs what it needs (Debian: chromium, PostgreSQL build-free, autoconf automake
# libtool libsqlcipher-dev; PyPI: the Odoo and MTS venvs, cached in .real/), starts a
# private PostgreSQL 15 cluster (as an unprivileged system user), the real MTS
# (MTS_WORKERS gunicorn workers, default 1), the service binary (target/debug), and runs:
#   A. database A: install mts_connector with the registry modules (its TransactionCase
#      suites run there once without g2p_mts), then g2p_mts (the
#      bridge mts_connector_g2p installs by itself); the install logs must hold no
#      WARNING/ERROR line naming mts_connector; then every post_install test of
#      mts_connector and mts_connector_g2p: TransactionCase tests (the double suite and
#      the real-service suite), HttpCase tours in headless Chromium, end to end.
#   B. database B: g2p_mts installed in one go (pulls mts_connector and the bridge), the
#      coexistence tests again, then the bridge uninstalled: g2p_mts's cron, menu and
#      action come back.
# Stops exactly what it started (trap). Ends with one line per count and
# "real-tier: N passed, 0 failed".
# KEEP_REAL_LOGS=1 keeps the logs in .real/logs (they are always printed on failure).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
. "$HERE/odoo.sh"
. "$HERE/mts.sh"
trap real_cleanup EXIT
T0=$(date +%s)

if ! odoo_srcs || ! mts_src; then
    echo "SKIP: integration tier (real Odoo 17, OpenG2P registry, MTS): $REAL_SKIP"
    exit 0
fi
echo "real-tier: Odoo $ODOO_DIR, OpenG2P $G2P_DIR, MTS $MTS_DIR_SRC"

LOGS=$REAL_CACHE/logs
rm -rf "$LOGS"
mkdir -p "$LOGS"
real_apt chromium curl procps
chrome_shim
odoo_venv
cargo build --locked --bins -q
BIN=$REAL_ROOT/target/debug/mts-connector

pg_start
mts_start "${MTS_WORKERS:-1}" "$LOGS/mts"

# The service binary, with fast retries so the tests do not wait for backoff.
SVC_DIR=$(mktemp -d "$REAL_CACHE/service.XXXXXX")
real_cleanup_push "rm -rf '$SVC_DIR'"
SVC_PORT=$(real_port)
SVC_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
MTSC_API_KEY=$SVC_KEY "$BIN" serve --listen "127.0.0.1:$SVC_PORT" --data-dir "$SVC_DIR/data" \
    --retry-base-seconds 1 --retry-cap-seconds 5 --poll-seconds 0.5 --relay-retry-base-seconds 1 \
    --relay-retry-cap-seconds 5 --relay-grace-seconds 30 >"$LOGS/service.log" 2>&1 &
SVC_PID=$!
real_cleanup_push "real_stop_pid $SVC_PID 10"
real_wait_http "http://127.0.0.1:$SVC_PORT/health" 30 "$SVC_PID" || {
    cat "$LOGS/service.log"
    exit 1
}

export MTSC_TEST_SERVICE_URL="http://127.0.0.1:$SVC_PORT"
export MTSC_TEST_SERVICE_API_KEY=$SVC_KEY
export MTSC_TEST_MTS_URL=$MTS_URL
export MTSC_TEST_MTS_PARTNER_ID=$MTS_PARTNER_ID
export MTSC_TEST_BIN=$BIN
export MTSC_TEST_REQUIRE_REAL=1
# The addon's own environment variables would override what the tests set.
unset MTS_CONNECTOR_URL MTS_CONNECTOR_DB MTS_CONNECTOR_LOGIN MTS_CONNECTOR_API_KEY MTS_CONNECTOR_TIMEOUT

FAILED=0
fail() {
    echo "real-tier: FAILED: $*"
    FAILED=1
}

# odoo_step NAME ARGS...: one odoo-bin run, its log in $LOGS/NAME.log; returns its exit code.
odoo_step() {
    local name=$1 t=$SECONDS rc=0
    shift
    odoo_bin "$@" --stop-after-init >"$LOGS/$name.log" 2>&1 || rc=$?
    echo "real-tier: $name: exit $rc in $((SECONDS - t)) s"
    return "$rc"
}

# install_clean NAME: the install log names mts_connector in no WARNING or ERROR line.
install_clean() {
    local bad
    bad=$(grep -E ' (WARNING|ERROR|CRITICAL) .*mts_connector' "$LOGS/$1.log" || true)
    if [ -n "$bad" ]; then
        fail "$1: the install log has WARNING/ERROR lines naming mts_connector:"
        echo "$bad" | head -20
    fi
}

# test_counts NAME: Odoo's test lines: every test started is reported, none skipped, none failed.
declare -A COUNT
test_counts() {
    local log=$LOGS/$1.log cls
    for cls in TestConnectorForwarding TestSettings TestSynchronisation TestRealService TestViews TestTours TestEndToEnd \
        TestCoexistence; do
        COUNT[$1:$cls]=$(grep -c "Starting $cls\." "$log" || true)
    done
    COUNT[$1:skipped]=$(grep -cE "odoo.addons.mts_connector[a-z_]*\.tests.* skipped " "$log" || true)
    COUNT[$1:failed]=$(grep -cE "^[0-9-]+ [0-9:,]+ [0-9]+ (ERROR|CRITICAL) " "$log" || true)
}

PORT_A=$(real_port)
odoo_step install-a1 -d real_a -i mts_connector,g2p_registry_individual --http-port "$PORT_A" ||
    fail "install-a1"
install_clean install-a1
# mts_connector alone (no g2p_mts yet): its suites but the tours and end to end (run below).
odoo_step tests-a0 -d real_a --test-enable --test-tags "/mts_connector,-mts_tour,-mts_e2e" --http-port "$PORT_A" ||
    fail "tests-a0 (mts_connector without g2p_mts)"
test_counts tests-a0
odoo_step install-a2 -d real_a -i g2p_mts --http-port "$PORT_A" || fail "install-a2 (g2p_mts after mts_connector)"
install_clean install-a2
grep -q "module mts_connector_g2p: creating or updating database tables\|Loading module mts_connector_g2p\|mts_connector_g2p" "$LOGS/install-a2.log" ||
    fail "install-a2: the bridge mts_connector_g2p did not install with g2p_mts"

odoo_step tests-a -d real_a --test-enable --test-tags /mts_connector,/mts_connector_g2p --http-port "$PORT_A" ||
    fail "tests-a"
test_counts tests-a

PORT_B=$(real_port)
odoo_step install-b -d real_b -i g2p_mts,g2p_registry_individual --http-port "$PORT_B" ||
    fail "install-b (g2p_mts and mts_connector at once)"
install_clean install-b
odoo_step tests-b -d real_b --test-enable --test-tags /mts_connector_g2p --http-port "$PORT_B" || fail "tests-b"
test_counts tests-b

# Uninstalling the bridge gives g2p_mts its cron (as it was), its menu and its action back.
cat >"$LOGS/uninstall.py" <<'EOF'
cron = env.ref("g2p_mts.to_delete_g2p_reg_id_vid")
before = env["ir.config_parameter"].get_param("mts_connector_g2p.vid_cron_was_active")
assert cron.active is False, "the bridge left g2p_mts's cron active"
env["ir.module.module"].search([("name", "=", "mts_connector_g2p")]).button_immediate_uninstall()
env.invalidate_all()
cron = env.ref("g2p_mts.to_delete_g2p_reg_id_vid")
menu = env.ref("g2p_mts.g2p_mts_config_settings")
assert cron.active == (before == "1"), (cron.active, before)
assert menu.active, "g2p_mts's Settings menu was not restored"
assert "g2p_mts" in env.ref("g2p_mts.g2p_mts_config_settings_action").context
env.cr.commit()
print("MTSC-UNINSTALL restored cron_active=%s" % cron.active)
EOF
odoo_shell -d real_b --no-http <"$LOGS/uninstall.py" >"$LOGS/uninstall.log" 2>&1 || true
grep -q "MTSC-UNINSTALL restored" "$LOGS/uninstall.log" || fail "uninstalling the bridge did not restore g2p_mts"

c() { echo "${COUNT[$1]:-0}"; }
REAL_ODOO=$(($(c tests-a:TestRealService) + $(c tests-a:TestViews) + $(c tests-a:TestConnectorForwarding) +
    $(c tests-a:TestSettings) + $(c tests-a:TestSynchronisation)))
TOURS=$(c tests-a:TestTours)
E2E=$(c tests-a:TestEndToEnd)
COEX=$(($(c tests-a:TestCoexistence) + $(c tests-b:TestCoexistence)))
TOKENS=$(grep -ho "MTSC-E2E [a-z]* tokens=[0-9]*" "$LOGS/tests-a.log" | awk -F= '{s+=$2} END {print s+0}')
SKIPPED=$(($(c tests-a0:skipped) + $(c tests-a:skipped) + $(c tests-b:skipped)))
ERRORS=$(($(c tests-a0:failed) + $(c tests-a:failed) + $(c tests-b:failed)))
ALONE=$(($(c tests-a0:TestRealService) + $(c tests-a0:TestViews) + $(c tests-a0:TestConnectorForwarding) +
    $(c tests-a0:TestSettings) + $(c tests-a0:TestSynchronisation)))
[ "$(c tests-a:TestRealService)" -ge 9 ] || fail "only $(c tests-a:TestRealService) real-service tests ran"
[ "$TOURS" -ge 3 ] || fail "only $TOURS tours ran"
[ "$E2E" -ge 2 ] || fail "only $E2E end-to-end tests ran"
[ "$TOKENS" -ge 37 ] || fail "only $TOKENS end-to-end tokens landed"
[ "$(c tests-a:TestCoexistence)" -ge 6 ] && [ "$(c tests-b:TestCoexistence)" -ge 6 ] ||
    fail "coexistence tests did not run in both install orders"
[ "$(c tests-a0:TestRealService)" -ge 9 ] || fail "the real-service tests did not run without g2p_mts"
[ "$SKIPPED" -eq 0 ] || fail "$SKIPPED tests were skipped"
[ "$ERRORS" -eq 0 ] || fail "$ERRORS ERROR lines in the test logs"

echo "real-tier: real-Odoo TransactionCase tests: $REAL_ODOO with g2p_mts (against the real service: $(c tests-a:TestRealService)), $ALONE without it"
echo "real-tier: HttpCase tours in headless Chromium: $TOURS"
echo "real-tier: end-to-end tests: $E2E, tokens written into the real registry: $TOKENS"
echo "real-tier: coexistence with g2p_mts: $(c tests-a:TestCoexistence) (g2p_mts after mts_connector) + $(c tests-b:TestCoexistence) (both at once), bridge uninstall restores g2p_mts"
echo "real-tier: $(($(date +%s) - T0)) s in all"
TOTAL=$((ALONE + REAL_ODOO + TOURS + E2E + COEX))
if [ "$FAILED" != 0 ]; then
    for f in "$LOGS"/*.log; do
        echo "===== $f (ERROR/FAIL lines)"
        grep -E " (ERROR|CRITICAL|FAIL)[: ]|Traceback|AssertionError|Error:" "$f" | head -60 || true
    done
    echo "real-tier: 0 passed, 1 failed"
    exit 1
fi
echo "real-tier: $TOTAL passed, 0 failed"

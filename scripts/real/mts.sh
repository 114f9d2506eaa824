#!/usr/bin/env bash
# The real MOSIP Token Seeder (mts-mock branch: real MTS, MOSIP authentication mocked) on a free
# 127.0.0.1 port with N gunicorn workers, for the integration tier and benchmarks.
#
# Commands:
#   scripts/real/mts.sh venv                       make (or reuse) the MTS venv; exit 0
#   scripts/real/mts.sh run [-w N] [-d DIR] -- CMD...
#                                                  start MTS, run CMD with MTS_URL, MTS_PID,
#                                                  MTS_DIR exported, stop MTS; exits with CMD's code
#   scripts/real/mts.sh start [-w N] [-d DIR]      start MTS and leave it running; prints
#                                                  MTS_URL=… MTS_PID=… MTS_DIR=… (eval-able)
#   scripts/real/mts.sh stop DIR                   stop exactly the MTS started with that DIR
# Sourced (`. scripts/real/mts.sh`): mts_start N [DIR] exports MTS_URL, MTS_PID, MTS_DIR and
# registers the stop with real_cleanup (lib.sh); mts_stop [DIR] stops it.
#
# -w N: gunicorn workers (default 1; the MTS image runs 4). Each worker has its own in-memory
#   request queue, so a status poll may reach another worker than the POST: MTS's own design.
# -d DIR: where this instance keeps its sqlcipher db, logs and pid file (default a new dir
#   under .real/mts/, removed at stop unless MTS_KEEP=1). gunicorn's output goes to
#   DIR/gunicorn.log.
# Environment: MTS_SRC (a checkout of mosip-token-seeder; default: unpack
#   ../shared/vendor/mosip-token-seeder-mts-mock.tar.gz into .real/src), MTS_PARTNER_ID (the
#   partner id mixed into the mock's tokens: base64url(SHA3-256(vid + partner_id)), default
#   "mts-connector-real"), REAL_CACHE (default <project>/.real).
# Exit 77 with one line "SKIP: …" on stderr when neither MTS_SRC nor the archive is there.
# Stopping: SIGTERM to the gunicorn master (graceful timeout 2 s: an MTS worker's token thread
# is not a daemon, so it does not stop on SIGTERM by itself), then SIGKILL to the process group
# this script created with setsid; nothing else is touched.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MTS_PARTNER_ID=${MTS_PARTNER_ID:-mts-connector-real}
MTS_VENV=$REAL_CACHE/venv-mts

# Sets MTS_DIR_SRC to the MTS source dir, or returns 77 with REAL_SKIP set.
mts_src() {
    real_src "MOSIP Token Seeder" MTS_SRC mosip-token-seeder-mts-mock.tar.gz mosip-token-seeder || return 77
    MTS_DIR_SRC=$REAL_PATH
}

# mts_venv SRC: the venv, from MTS's requirements with the changes that make them install on
# Python 3.11 / Debian 12 (see ../shared/vendor/README.md).
mts_venv() {
    local src=$1 req stamp
    req=$(sed -e 's/^pysqlcipher3 *== *1\.0\.4/pysqlcipher3==1.2.0/' -e '/^setuptools *$/d' -e '/^wheel *$/d' \
        "$src/mosip_token_seeder/requirements.txt")
    # Pins for what MTS leaves unpinned, at early-2024 versions (fastapi 0.78 needs pydantic 1).
    local pins="setuptools==69.0.3
wheel==0.42.0
pydantic==1.10.14
anyio==4.2.0
typing_extensions==4.9.0
starlette==0.19.1
click==8.1.7
h11==0.14.0
sniffio==1.3.0
idna==3.6
certifi==2023.11.17
charset-normalizer==2.1.1
urllib3==1.26.18
cffi==1.16.0
pycparser==2.21
tzlocal==5.2
pytz==2023.3.post1
six==1.16.0
greenlet==3.0.3
Deprecated==1.2.14
wrapt==1.16.0"
    stamp=$(printf '%s\n%s\n' "$req" "$pins" | sha256sum | cut -c1-16)
    if real_venv "$MTS_VENV" python3 "$stamp"; then
        return 0
    fi
    real_apt autoconf automake libtool libsqlcipher-dev build-essential procps
    real_log "making the MTS venv (about 70 s)"
    printf '%s\n' "$pins" >"$MTS_VENV/constraints.txt"
    printf '%s\n' "$req" >"$MTS_VENV/requirements.txt"
    "$MTS_VENV/bin/pip" install -q --disable-pip-version-check setuptools==69.0.3 wheel==0.42.0
    "$MTS_VENV/bin/pip" install -q --disable-pip-version-check --no-build-isolation \
        -c "$MTS_VENV/constraints.txt" -r "$MTS_VENV/requirements.txt"
    real_venv_done "$MTS_VENV" "$stamp"
}

# mts_start WORKERS [DIR]: exports MTS_URL, MTS_PID (the gunicorn master, leader of its own
# process group) and MTS_DIR; waits until MTS answers /ping.
mts_start() {
    local workers=${1:-1} dir=${2:-} src port
    mts_src || return 77
    src=$MTS_DIR_SRC
    mts_venv "$src"
    if [ -z "$dir" ]; then
        mkdir -p "$REAL_CACHE/mts"
        dir=$(mktemp -d "$REAL_CACHE/mts/mts.XXXXXX")
        touch "$dir/.auto" # removed at stop (unless MTS_KEEP=1)
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    port=$(real_port)
    (
        cd "$dir"
        export PYTHONPATH=$src
        # Workers find their index by pgrep on this string: make it this instance's own.
        export TOKENSEEDER_ROOT__PID_GREP_NAME="127.0.0.1:$port"
        export TOKENSEEDER_MOSIP_AUTH__PARTNER_ID="@str $MTS_PARTNER_ID"
        # skip_auth is on (the mock): MOSIP IDA is never called, but the key must exist.
        export TOKENSEEDER_MOSIP_AUTH_SERVER__IDA_AUTH_URL=http://127.0.0.1:9
        export TOKENSEEDER_DB__LOCATION='sqlite+pysqlcipher://:<password>@/auth_token_seeder.dbsqlite'
        export TOKENSEEDER_DB__PRINT_PASSWORD_ON_STARTUP=false
        export TOKENSEEDER_LOGGING__LOG_FILE_NAME="$dir/mosip_token_seeder.log"
        export TOKENSEEDER_LOGGING__LOG_FILE_PATH="$dir/authenticator.log"
        TOKENSEEDER_DB__PASSWORD=$("$MTS_VENV/bin/python" -m mosip_token_seeder.repository dbinit)
        export TOKENSEEDER_DB__PASSWORD
        exec setsid "$MTS_VENV/bin/gunicorn" --worker-class uvicorn.workers.UvicornWorker \
            --workers "$workers" --bind "127.0.0.1:$port" --graceful-timeout 2 \
            --timeout 1200 --keep-alive 1200 --max-requests 10000 \
            --access-logfile - --error-logfile - app:app
    ) </dev/null >"$dir/gunicorn.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$dir/pid"
    MTS_URL="http://127.0.0.1:$port"
    MTS_PID=$pid
    MTS_DIR=$dir
    export MTS_URL MTS_PID MTS_DIR
    if ! real_wait_http "$MTS_URL/ping" 90 "$pid"; then
        real_log "MTS did not start; its log:"
        tail -n 40 "$dir/gunicorn.log" >&2
        mts_stop "$dir"
        return 1
    fi
    # Every worker must be up (each answers /ping only once it has booted).
    local i
    for ((i = 0; i < 150; i++)); do
        [ "$(grep -c 'Application startup complete' "$dir/gunicorn.log" || true)" -ge "$workers" ] && break
        sleep 0.2
    done
    declare -F real_cleanup_push >/dev/null && real_cleanup_push "mts_stop '$dir'"
    real_log "MTS ($workers workers) at $MTS_URL, dir $dir"
}

# mts_stop [DIR]: stops the MTS whose pid DIR/pid recorded (default $MTS_DIR).
mts_stop() {
    local dir=${1:-${MTS_DIR:-}} pid
    [ -n "$dir" ] && [ -f "$dir/pid" ] || return 0
    pid=$(cat "$dir/pid")
    real_stop_pid "$pid" 8
    # The workers are in the master's process group (setsid made the master its leader).
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$dir/pid"
    if [ -f "$dir/.auto" ] && [ -z "${MTS_KEEP:-}" ]; then
        rm -rf "$dir"
    fi
}

mts_main() {
    local cmd=${1:-} workers=1 dir=
    shift || true
    case "$cmd" in
    venv)
        mts_src || { echo "SKIP: $REAL_SKIP" >&2; exit 77; }
        mts_venv "$MTS_DIR_SRC"
        ;;
    start | run)
        while [ $# -gt 0 ]; do
            case "$1" in
            -w) workers=$2; shift 2 ;;
            -d) dir=$2; shift 2 ;;
            --) shift; break ;;
            *) echo "unknown option $1" >&2; exit 2 ;;
            esac
        done
        if ! mts_src; then
            echo "SKIP: $REAL_SKIP" >&2
            exit 77
        fi
        if [ "$cmd" = start ]; then
            mts_start "$workers" "$dir"
            printf 'MTS_URL=%s\nMTS_PID=%s\nMTS_DIR=%s\n' "$MTS_URL" "$MTS_PID" "$MTS_DIR"
        else
            [ $# -gt 0 ] || { echo "run needs -- CMD" >&2; exit 2; }
            trap real_cleanup EXIT
            mts_start "$workers" "$dir"
            local rc=0
            "$@" || rc=$?
            exit "$rc"
        fi
        ;;
    stop)
        [ $# -eq 1 ] || { echo "usage: mts.sh stop DIR" >&2; exit 2; }
        mts_stop "$1"
        ;;
    *)
        sed -n '2,27p' "$0" >&2
        exit 2
        ;;
    esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    mts_main "$@"
fi

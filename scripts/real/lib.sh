# shellcheck shell=bash
# Shared helpers of the integration tier against the real systems (sourced, not run).
#
# - real_src NAME VAR ARCHIVE TOP: the source tree of a real system: $VAR when the user set it
#   (their own checkout), else ../shared/vendor/ARCHIVE unpacked once into $REAL_CACHE/src/TOP.
#   Sets REAL_PATH to it; returns 1 with the reason in REAL_SKIP when neither is there.
# - real_port: a free TCP port on 127.0.0.1 (bound and released; the caller binds it next).
# - real_apt PKG...: installs the Debian packages that are missing (apt-get; sudo when not root).
# - real_venv DIR PYTHON STAMP: makes a venv in DIR unless DIR/.stamp holds STAMP already (a
#   hash of what went into it), so a venv is built once and reused across runs.
# - real_sysuser: the unprivileged system user that runs PostgreSQL (it refuses root); prints
#   its name ("" when this shell is not root: then everything runs as the caller).
# - real_cleanup_push CMD / real_cleanup: a stack of clean-up commands run in reverse order by
#   the trap the entry script sets (`trap real_cleanup EXIT`); each stops exactly one thing
#   that script started (a pid it recorded), never anything found by name.
#
# Everything lives under $REAL_CACHE (default <project>/.real, git-ignored).

REAL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
REAL_CACHE=${REAL_CACHE:-$REAL_ROOT/.real}
REAL_VENDOR=${REAL_VENDOR:-$REAL_ROOT/../shared/vendor}
mkdir -p "$REAL_CACHE"

real_log() { printf '[real] %s\n' "$*" >&2; }

# real_src NAME VAR ARCHIVE TOP
real_src() {
    local name=$1 var=$2 archive=$3 top=$4 given
    given=${!var:-}
    if [ -n "$given" ]; then
        if [ -d "$given" ]; then
            REAL_PATH=$(cd "$given" && pwd)
            return 0
        fi
        REAL_SKIP="$var=$given is not a directory"
        return 1
    fi
    local tarball="$REAL_VENDOR/$archive" dest="$REAL_CACHE/src"
    if [ ! -f "$tarball" ]; then
        REAL_SKIP="no $name: set $var to a checkout or put $archive in ../shared/vendor"
        return 1
    fi
    # Unpack once per archive content (its size and mtime stand for it).
    local stamp
    stamp=$(stat -c '%s-%Y' "$tarball")
    if [ "$(cat "$dest/$top.stamp" 2>/dev/null)" != "$stamp" ]; then
        rm -rf "${dest:?}/$top"
        mkdir -p "$dest"
        tar -xzf "$tarball" -C "$dest"
        echo "$stamp" >"$dest/$top.stamp"
    fi
    REAL_PATH=$dest/$top
}

real_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

real_apt() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=
    [ "$(id -u)" = 0 ] || sudo=sudo
    real_log "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# real_venv DIR PYTHON STAMP: returns 0 when DIR is ready and current, 1 when the caller must
# install into it (it is then freshly created and empty).
real_venv() {
    local dir=$1 python=$2 stamp=$3
    if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.stamp" 2>/dev/null)" = "$stamp" ]; then
        return 0
    fi
    rm -rf "$dir"
    "$python" -m venv "$dir"
    return 1
}

real_venv_done() { echo "$2" >"$1/.stamp"; }

REAL_USER=mtsc-real
real_sysuser() {
    if [ "$(id -u)" != 0 ]; then
        echo ""
        return 0
    fi
    if ! id "$REAL_USER" >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin "$REAL_USER"
    fi
    echo "$REAL_USER"
}

REAL_CLEANUP=()
real_cleanup_push() { REAL_CLEANUP+=("$1"); }
real_cleanup() {
    local i
    for ((i = ${#REAL_CLEANUP[@]} - 1; i >= 0; i--)); do
        eval "${REAL_CLEANUP[$i]}" || true
    done
    REAL_CLEANUP=()
}

# real_wait_http URL SECONDS PID: waits until URL answers (any HTTP status), or PID died.
real_wait_http() {
    local url=$1 secs=$2 pid=${3:-} i
    for ((i = 0; i < secs * 5; i++)); do
        if curl -s -o /dev/null --max-time 2 "$url"; then
            return 0
        fi
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        sleep 0.2
    done
    return 1
}

# real_stop_pid PID [GRACE]: SIGTERM, wait up to GRACE seconds, then SIGKILL. Only this pid
# (and, with a negative PID, only the process group the caller started).
real_stop_pid() {
    local pid=$1 grace=${2:-10} i
    kill -TERM -- "$pid" 2>/dev/null || return 0
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 -- "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL -- "$pid" 2>/dev/null || true
}

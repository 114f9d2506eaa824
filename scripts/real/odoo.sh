# shellcheck shell=bash
# Real Odoo 17 and its private PostgreSQL 15 cluster for the integration tier (sourced after
# lib.sh, not run).
#
# - odoo_srcs: sets ODOO_DIR (Odoo 17: ODOO_SRC or the vendored subset) and G2P_DIR (the
#   OpenG2P registry modules: G2P_SRC or the vendored subset); returns 77 with REAL_SKIP set.
# - odoo_venv: the Odoo venv in .real/venv-odoo from Odoo's requirements.txt, changed as
#   ../shared/vendor/README.md says (psycopg2-binary, no python-ldap, setuptools < 70), plus
#   websocket-client (HttpCase talks to Chromium over the DevTools websocket).
# - pg_start: a fresh private cluster (initdb every run): in .real/pg, or, run as root, in a
#   /tmp dir owned by an unprivileged system user (PostgreSQL refuses root); on 127.0.0.1 and
#   a free port, fsync off.
#   Exports PGHOST PGPORT PGUSER; the stop is pushed on real_cleanup.
# - odoo_bin ARGS...: odoo-bin with the addons path (this project's odoo_addon, the OpenG2P
#   modules, Odoo's addons) and the cluster's connection options.
# - chrome_shim: .real/bin/google-chrome, Debian's chromium with the extra flags that keep it
#   off the network here (Odoo's own flags already include --headless --no-sandbox
#   --disable-gpu); Odoo looks for google-chrome first on PATH.

ODOO_VENV=$REAL_CACHE/venv-odoo

odoo_srcs() {
    real_src "Odoo 17" ODOO_SRC odoo-17.0-community-subset.tar.gz odoo17 || return 77
    ODOO_DIR=$REAL_PATH
    real_src "OpenG2P registry modules" G2P_SRC openg2p-registry-17.0-1.3-subset.tar.gz openg2p-registry || return 77
    G2P_DIR=$REAL_PATH
    local m
    for m in g2p_registry_base g2p_registry_individual g2p_mts; do
        if [ ! -f "$G2P_DIR/$m/__manifest__.py" ]; then
            REAL_SKIP="$G2P_DIR has no $m"
            return 77
        fi
    done
    export ODOO_DIR G2P_DIR
}

odoo_venv() {
    local req stamp
    req=$(sed -e 's/^psycopg2==/psycopg2-binary==/' -e '/^python-ldap/d' "$ODOO_DIR/requirements.txt")
    req="$req
websocket-client==1.7.0"
    stamp=$(printf '%s\n' "$req" | sha256sum | cut -c1-16)
    if real_venv "$ODOO_VENV" python3 "$stamp"; then
        return 0
    fi
    real_apt build-essential python3-dev
    real_log "making the Odoo venv (a few minutes the first time)"
    printf '%s\n' "$req" >"$ODOO_VENV/requirements.txt"
    "$ODOO_VENV/bin/pip" install -q --disable-pip-version-check 'setuptools<70' wheel
    "$ODOO_VENV/bin/pip" install -q --disable-pip-version-check -r "$ODOO_VENV/requirements.txt" 'setuptools<70'
    real_venv_done "$ODOO_VENV" "$stamp"
}

pg_bin() {
    local d
    for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    dirname "$(command -v initdb || command -v pg_ctl)"
}

# Runs a command as the cluster's owner.
pg_as() {
    if [ -n "$PG_OWNER" ]; then
        runuser -u "$PG_OWNER" -- "$@"
    else
        "$@"
    fi
}

pg_start() {
    local bin dir
    bin=$(pg_bin)
    PG_OWNER=$(real_sysuser)
    # A fresh cluster (and Odoo file store) every run: databases never carry over (initdb ~2 s).
    # Run as root, the cluster lives under /tmp: the unprivileged owner may not be able to
    # reach the checkout (e.g. under /root).
    rm -rf "$REAL_CACHE/odoo-data"
    if [ -n "$PG_OWNER" ]; then
        dir=$(mktemp -d /tmp/mtsc-real-pg.XXXXXX)
        chown "$PG_OWNER" "$dir"
        real_cleanup_push "rm -rf '$dir'"
    else
        dir=$REAL_CACHE/pg
        rm -rf "$dir"
        mkdir -p "$dir"
    fi
    pg_as "$bin/initdb" -D "$dir/data" -U odoo --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log"
    PGPORT=$(real_port)
    pg_as "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=60" \
        start >/dev/null
    PGHOST=127.0.0.1
    PGUSER=odoo
    export PGHOST PGPORT PGUSER
    PG_DIR=$dir
    real_cleanup_push "pg_as '$bin/pg_ctl' -D '$dir/data' -m fast -w stop >/dev/null"
    real_log "PostgreSQL on 127.0.0.1:$PGPORT"
}

odoo_addons_path() {
    echo "$REAL_ROOT/odoo_addon,$G2P_DIR,$ODOO_DIR/odoo/addons"
}

# odoo_shell ARGS...: `odoo-bin shell` with the same options (the subcommand comes first).
odoo_shell() {
    "$ODOO_VENV/bin/python" "$ODOO_DIR/odoo-bin" shell --addons-path="$(odoo_addons_path)" \
        --db_host=127.0.0.1 --db_port="$PGPORT" --db_user=odoo --data-dir="$REAL_CACHE/odoo-data" "$@"
}

odoo_bin() {
    "$ODOO_VENV/bin/python" "$ODOO_DIR/odoo-bin" --addons-path="$(odoo_addons_path)" \
        --db_host=127.0.0.1 --db_port="$PGPORT" --db_user=odoo --data-dir="$REAL_CACHE/odoo-data" \
        --without-demo=all --http-interface=127.0.0.1 --no-database-list "$@"
}

chrome_shim() {
    real_apt chromium
    mkdir -p "$REAL_CACHE/bin"
    cat >"$REAL_CACHE/bin/google-chrome" <<'EOF'
#!/bin/sh
# Debian's chromium for Odoo's HttpCase (made by scripts/real/odoo.sh): no network use.
exec /usr/bin/chromium --disable-quic --disable-component-update --disable-sync \
    --disable-background-networking "$@"
EOF
    chmod +x "$REAL_CACHE/bin/google-chrome"
    export PATH="$REAL_CACHE/bin:$PATH"
}

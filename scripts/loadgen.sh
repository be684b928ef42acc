#!/usr/bin/env bash
# Load test over the real HTTP API: builds the release binary, starts
# `triggers serve` on a fresh SQLite file (and on a fresh PostgreSQL schema when
# TRIGGERS_TEST_POSTGRES_URL is set), runs `triggers loadgen` with 1 and 32
# clients against each, and stops each server by its PID.
#
# Knobs (environment):
#   LOADGEN_CLIENTS   client counts to run, space-separated (default "1 32")
#   LOADGEN_SESSIONS  sessions per run (default 64)
#   LOADGEN_DURATION  seconds per run (default 10)
# Each run also prints the server's CPU time (user + system, from /proc) over
# the run, divided by its fires.
#
#   TRIGGERS_SQLITE_SYNCHRONOUS  FULL (default, durable) / NORMAL / OFF
#   TRIGGERS_PG_POOL_SIZE        PostgreSQL pool size (default 16)
#   CARGO_TARGET_DIR             where cargo builds (default ./target)
#   LOADGEN_BIN                  a triggers binary to run instead of building one
#                                (to compare two builds side by side)
set -euo pipefail

cd "$(dirname "$0")/.."
clients=${LOADGEN_CLIENTS:-"1 32"}
sessions=${LOADGEN_SESSIONS:-64}
duration=${LOADGEN_DURATION:-10}

if [[ -n "${LOADGEN_BIN:-}" ]]; then
    bin=$LOADGEN_BIN
else
    cargo build --release --bin triggers
    bin="${CARGO_TARGET_DIR:-target}/release/triggers"
fi

work=$(mktemp -d)
server_pid=""
stop_server() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
cleanup() {
    stop_server
    rm -rf "$work"
}
trap cleanup EXIT

# The server's CPU time so far (user + system), in clock ticks.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}
ticks_per_second=$(getconf CLK_TCK)

# run_against LABEL DATABASE_URL
run_against() {
    local label=$1 url=$2 log="$work/$1.log" address=""
    RUST_LOG=${RUST_LOG:-warn,triggers=info} "$bin" serve --database-url "$url" \
        --listen 127.0.0.1:0 2>"$log" &
    server_pid=$!
    for _ in $(seq 1 100); do
        address=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -n 1 | sed 's/listening on //' || true)
        [[ -n "$address" ]] && break
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "the $label server exited:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.1
    done
    if [[ -z "$address" ]]; then
        echo "the $label server did not start listening" >&2
        cat "$log" >&2
        exit 1
    fi
    echo "== $label ($address), cores: $(nproc)"
    for n in $clients; do
        # The server's CPU over the run (sessions configured first, then the
        # fires), divided by the fires: what one fire costs the server.
        local before after out fires
        before=$(cpu_ticks "$server_pid")
        out=$("$bin" loadgen --server "$address" --clients "$n" --sessions "$sessions" \
            --duration "$duration")
        after=$(cpu_ticks "$server_pid")
        echo "$out"
        fires=$(grep -o 'fires [0-9]*' <<<"$out" | head -n 1 | awk '{ print $2 }')
        awk -v b="$before" -v a="$after" -v t="$ticks_per_second" -v f="$fires" -v n="$n" \
            'BEGIN { s = (a - b) / t; printf "clients %s  server CPU %.2f s  per fire %.0f us\n", n, s, (f > 0 ? s * 1e6 / f : 0) }'
    done
    stop_server
}

run_against sqlite "sqlite://$work/loadgen.db"

if [[ -n "${TRIGGERS_TEST_POSTGRES_URL:-}" ]]; then
    schema="l_$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
    PGOPTIONS="--client-min-messages=warning" psql -q -v ON_ERROR_STOP=1 "$TRIGGERS_TEST_POSTGRES_URL" -c "CREATE SCHEMA $schema"
    case "$TRIGGERS_TEST_POSTGRES_URL" in
        *\?*) separator='&' ;;
        *) separator='?' ;;
    esac
    run_against postgres "${TRIGGERS_TEST_POSTGRES_URL}${separator}options=-c%20search_path%3D${schema}"
    PGOPTIONS="--client-min-messages=warning" psql -q -v ON_ERROR_STOP=1 "$TRIGGERS_TEST_POSTGRES_URL" -c "DROP SCHEMA $schema CASCADE"
fi

#!/usr/bin/env bash
# Export, import and copy of a large log: builds the release binary, makes a
# template session through a real server (configure, fires, inline runs to
# completion), replicates its exported events under LOG_IO_EVENTS / (its size)
# session UIDs into one JSON Lines file, then times, on a fresh SQLite file and
# (when TRIGGERS_TEST_POSTGRES_URL is set) a fresh PostgreSQL schema:
#   import of the file, export of the database, and copy SQLite -> PostgreSQL,
# and prints events/s and peak memory for each. The figures are in
# BENCHMARKS.md. Needs python3, GNU time (/usr/bin/time) and, for PostgreSQL, psql.
#
# Knobs (environment):
#   LOG_IO_EVENTS                events in the log (default 1000000)
#   LOG_IO_BIN                   a triggers binary to run instead of building one
#   LOG_IO_KEEP                  set: keep the work directory (the log, the databases)
#   TRIGGERS_SQLITE_SYNCHRONOUS  FULL (default, durable) / NORMAL / OFF
set -euo pipefail

cd "$(dirname "$0")/.."
events=${LOG_IO_EVENTS:-1000000}

if [[ -n "${LOG_IO_BIN:-}" ]]; then
    bin=$LOG_IO_BIN
else
    cargo build --release --bin triggers
    bin="${CARGO_TARGET_DIR:-target}/release/triggers"
fi
# Make `bin` absolute: the server runs in the work directory.
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

work=$(mktemp -d)
server_pid=""
schemas=()
cleanup() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    for schema in "${schemas[@]}"; do
        PGOPTIONS="--client-min-messages=warning" psql -q "$TRIGGERS_TEST_POSTGRES_URL" \
            -c "DROP SCHEMA IF EXISTS $schema CASCADE" || true
    done
    if [[ -n "${LOG_IO_KEEP:-}" ]]; then
        echo "kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# A fresh PostgreSQL schema; its URL.
new_schema() {
    local schema
    schema="b_$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
    PGOPTIONS="--client-min-messages=warning" psql -q -v ON_ERROR_STOP=1 \
        "$TRIGGERS_TEST_POSTGRES_URL" -c "CREATE SCHEMA $schema" >&2
    schemas+=("$schema")
    case "$TRIGGERS_TEST_POSTGRES_URL" in
        *\?*) separator='&' ;;
        *) separator='?' ;;
    esac
    echo "${TRIGGERS_TEST_POSTGRES_URL}${separator}options=-c%20search_path%3D${schema}"
}

# timed LABEL COMMAND...: runs it, prints its wall time, events/s and peak
# memory (resident set, from GNU time).
timed() {
    local label=$1 start end rss
    shift
    start=$(date +%s.%N)
    /usr/bin/time -f "%M" -o "$work/rss.txt" "$@" >"$work/out.txt" 2>"$work/err.txt" \
        || { cat "$work/out.txt" "$work/err.txt" >&2; exit 1; }
    end=$(date +%s.%N)
    rss=$(tail -n 1 "$work/rss.txt")
    awk -v s="$start" -v e="$end" -v n="$events" -v l="$label" -v m="$rss" \
        'BEGIN { t = e - s; printf "%-28s %8.1f s  %9.0f events/s  peak %4.0f MB\n", l, t, n / t, m / 1024 }'
}

# --- the template session, through a real server -------------------------------
"$bin" serve --database-url "sqlite://$work/template.db" --listen 127.0.0.1:0 \
    2>"$work/serve.log" &
server_pid=$!
address=""
for _ in $(seq 1 100); do
    address=$(grep -o 'listening on http://[0-9.:]*' "$work/serve.log" | head -n 1 | sed 's/listening on //' || true)
    [[ -n "$address" ]] && break
    sleep 0.1
done
[[ -n "$address" ]] || { cat "$work/serve.log" >&2; exit 1; }
cat >"$work/tasks.json" <<'JSON'
{
  "t_importSubject": {"after": ["firstPageReceived"], "run": "triggers.testing.PassThru"},
  "t_importResponses": {"after": ["firstPageReceived"], "andEvery": "pageReceived", "run": "triggers.testing.PassThru"},
  "t_score": {"after": ["t_importSubject", "questionnaireFinished"], "run": "triggers.testing.PassThru",
              "withParams": {"t_importSubject": {"model": "Psych 01"}}},
  "t_mail": {"after": ["t_score"], "run": "app.mail", "using": "worker:mail"}
}
JSON
"$bin" configure tpl "$work/tasks.json" --server "$address" >/dev/null
"$bin" fire tpl firstPageReceived --kwargs '{"subject": {"id": 42, "name": "Zoë"}}' --server "$address" >/dev/null
for page in 1 2 3; do
    "$bin" fire tpl pageReceived --kwargs "{\"page\": $page, \"answers\": [1, 2, 3]}" --server "$address" >/dev/null
done
"$bin" fire tpl questionnaireFinished --server "$address" >/dev/null
# Until no inline instance is scheduled or running (t_mail waits for a worker).
for _ in $(seq 1 100); do
    "$bin" show tpl --server "$address" | grep -q -E 't_(import|score)[^ ]* +(scheduled|running)' || break
    sleep 0.1
done
kill "$server_pid"
wait "$server_pid" 2>/dev/null || true
server_pid=""
"$bin" export --database-url "sqlite://$work/template.db" --session tpl --output "$work/tpl.jsonl" 2>/dev/null

# --- the log: the template under many UIDs, in UID order -------------------------
python3 - "$work/tpl.jsonl" "$work/log.jsonl" "$events" <<'PY'
import sys
template, out, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = [l.split(',', 1)[1] for l in open(template, encoding='utf-8')]
written = 0
with open(out, 'w', encoding='utf-8') as f:
    n = 0
    while written < total:
        head = '{"session":"questionnaire:%07d",' % n
        for line in lines[: total - written]:
            f.write(head + line)
        written += min(len(lines), total - written)
        n += 1
print(f"log: {written} events, {n} sessions of {len(lines)} events", file=sys.stderr)
PY
echo "machine: $(nproc) cores; $("$bin" --version)"

timed "import into SQLite" "$bin" import --database-url "sqlite://$work/a.db" "$work/log.jsonl"
timed "export from SQLite" "$bin" export --database-url "sqlite://$work/a.db" --output "$work/a.jsonl"
cmp -s "$work/log.jsonl" "$work/a.jsonl" || { echo "the SQLite export differs from the file imported" >&2; exit 1; }

if [[ -n "${TRIGGERS_TEST_POSTGRES_URL:-}" ]]; then
    pg=$(new_schema)
    timed "import into PostgreSQL" "$bin" import --database-url "$pg" "$work/log.jsonl"
    timed "export from PostgreSQL" "$bin" export --database-url "$pg" --output "$work/b.jsonl"
    cmp -s "$work/log.jsonl" "$work/b.jsonl" || { echo "the PostgreSQL export differs" >&2; exit 1; }
    pg2=$(new_schema)
    timed "copy SQLite -> PostgreSQL" "$bin" copy --from "sqlite://$work/a.db" --to "$pg2"
    cat "$work/out.txt"
fi

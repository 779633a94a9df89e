#!/usr/bin/env bash
# Benchmarks of `runbook serve` and `runbook worker` (issue 11), with the release binary, each figure
# on a fresh database of its own (PostgreSQL: created and dropped here; SQLite: a new file):
#
#   latency     alerts at a steady rate (LAT_RATES per second, LAT_SECONDS long), one group each, to a
#               serve with its worker: per run, first step_started.at - the instant the POST was sent
#   storm       1,000 notifications in 10 s over 100 group keys, 3 alerts each, shuffled: webhook
#               outcomes, then exactly one run per key in the database
#   throughput  RUNS one-step runs queued through POST /api/v1/runs (serve --no-worker, stopped once
#               they are queued), then 1, 2 and 4 `runbook worker` processes (WORKERS) started:
#               runs/s until every run has succeeded, and PostgreSQL's transactions and WAL syncs per run
#   rss         PARKED runs queued through the API that each park at an approval; serve's VmRSS and
#               VmHWM once all are parked
#
#   bench/serve.sh                              # all four on PostgreSQL
#   FIGURES="latency" LAT_RATES="20 50 100" bench/serve.sh
#   STORES="pg sqlite" bench/serve.sh           # SQLite too (one file shared by serve and workers)
#   POLL=50ms bench/serve.sh                    # --poll of serve's worker and of the workers
#   WORKER_ARGS="--concurrency 32" FIGURES=throughput bench/serve.sh
#   PG_SETTINGS="synchronous_commit=off" FIGURES=throughput bench/serve.sh   # a diagnosis: set on
#                                               # each database made here (ALTER DATABASE ... SET)
#   BUILD=0 bench/serve.sh                      # use target/release/runbook as it is
#   BUILD=0 RUNBOOK_BIN=target/debug/runbook bench/serve.sh   # another binary (a check of the script)
#
# PG is the server's URL without a database (default postgres://postgres@127.0.0.1:5432); the
# databases are named runbook_bench_PID_FIGURE and dropped at the end, as are the processes started
# here. The load generator and the statistics are bench/serve_load.py (Python standard library).
# Output is kept in bench/out/serve/report-TIME.txt, the servers' and workers' logs beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out/serve
PG=${PG:-postgres://postgres@127.0.0.1:5432}
STORES=${STORES:-pg}
FIGURES=${FIGURES:-latency storm throughput rss}
LAT_RATES=${LAT_RATES:-20}
LAT_SECONDS=${LAT_SECONDS:-20}
RUNS=${RUNS:-1000}
WORKERS=${WORKERS:-1 2 4}
PARKED=${PARKED:-1000}
POLL=${POLL:-}
WORKER_ARGS=${WORKER_ARGS:-}
PG_SETTINGS=${PG_SETTINGS:-}
BUILD=${BUILD:-1}
for n in "$LAT_SECONDS" "$RUNS" "$PARKED" $WORKERS; do
    case $n in '' | *[!0-9]* | 0*) echo "LAT_SECONDS, RUNS, PARKED and WORKERS must be whole numbers, at least 1 (not \"$n\")" >&2; exit 2 ;; esac
done
for s in $STORES; do
    case $s in pg | sqlite) ;; *) echo "STORES: pg and/or sqlite (not \"$s\")" >&2; exit 2 ;; esac
done
for f in $FIGURES; do
    case $f in latency | storm | throughput | rss) ;; *) echo "FIGURES: latency, storm, throughput, rss (not \"$f\")" >&2; exit 2 ;; esac
done
for tool in python3 psql bc; do
    command -v "$tool" > /dev/null || { echo "bench/serve.sh needs $tool" >&2; exit 1; }
done
mkdir -p "$OUT/runbooks"
REPORT=$OUT/report-$(date +%Y%m%d-%H%M%S).txt
exec > >(tee "$REPORT") 2>&1

if [ "$BUILD" = 1 ]; then
    echo "building the release binary ..."
    cargo build --release -q -p runbook-engine --bin runbook
fi
if [ -n "${RUNBOOK_BIN:-}" ]; then
    BIN=$(realpath "$RUNBOOK_BIN")
else
    # A copy, so a build in this tree while the benchmark runs does not change the binary under it.
    BIN=$OUT/runbook
    cp target/release/runbook "$BIN"
fi
LOAD=(python3 "$ROOT/bench/serve_load.py")
commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- engine steps migrations Cargo.lock || commit="$commit+changes"
echo "commit $commit, $(nproc) cores, binary $(du -m "$BIN" | cut -f1) MB${PG_SETTINGS:+, PostgreSQL settings: $PG_SETTINGS}"

# --- runbooks ----------------------------------------------------------------------------------
# Served from $OUT/runbooks (serve runs in $OUT, so ./runbooks is this directory and nothing else).
cat > "$OUT/runbooks/bench-latency.yaml" <<'EOF'
name: bench-latency
triggers:
  alerts: [BenchLatency]
steps:
  - { id: first, uses: flow.noop }
EOF
# A cooldown, so a group whose run has ended already answers cooling_down, never a second run.
cat > "$OUT/runbooks/bench-storm.yaml" <<'EOF'
name: bench-storm
triggers:
  alerts: [BenchStorm]
  cooldown: 1h
steps:
  - { id: first, uses: flow.noop }
EOF
cat > "$OUT/runbooks/bench-short.yaml" <<'EOF'
name: bench-short
steps:
  - { id: only, uses: flow.noop }
EOF
cat > "$OUT/runbooks/bench-gated.yaml" <<'EOF'
name: bench-gated
steps:
  - id: gate
    uses: flow.noop
    approval: required
EOF

# --- databases and processes -------------------------------------------------------------------
DBS=() PIDS=()
cleanup() {
    local pid db
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2> /dev/null; then kill -TERM "$pid" 2> /dev/null || true; wait "$pid" 2> /dev/null || true; fi
    done
    for db in "${DBS[@]}"; do
        psql "$PG/postgres" -X -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" > /dev/null || echo "could not drop database $db" >&2
    done
}
trap cleanup EXIT

# new_db STORE FIGURE: a fresh database for one figure; sets DB (URL or file).
new_db() {
    if [ "$1" = pg ]; then
        local name=runbook_bench_$$_$2
        psql "$PG/postgres" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $name" > /dev/null
        DBS+=("$name")
        local setting
        for setting in $PG_SETTINGS; do
            psql "$PG/postgres" -X -q -v ON_ERROR_STOP=1 -c "ALTER DATABASE $name SET ${setting%%=*} = '${setting#*=}'" > /dev/null
        done
        DB=$PG/$name
    else
        DB=$OUT/$2.db
        rm -f "$DB" "$DB-wal" "$DB-shm"
    fi
}
# drop_db: drops the database of the figure just measured (PostgreSQL; a SQLite file is kept).
drop_db() {
    if [[ $DB == postgres://* ]]; then
        psql "$PG/postgres" -X -q -c "DROP DATABASE ${DB##*/} WITH (FORCE)" > /dev/null
        unset 'DBS[-1]'
    fi
}

# start_serve LOG [ARG...]: `runbook serve --no-auth` on a free port of 127.0.0.1 over $DB; sets
# SERVE_PID and BASE once it listens.
start_serve() {
    local log=$1; shift
    (cd "$OUT" && exec "$BIN" --db "$DB" serve --no-auth --listen 127.0.0.1:0 "$@" 2> "$log") &
    SERVE_PID=$!
    PIDS+=("$SERVE_PID")
    local addr= deadline=$((SECONDS + 30))
    # Its log says where it listens; until then, look again (it is start-up, not a measurement).
    while [ -z "$addr" ]; do
        kill -0 "$SERVE_PID" 2> /dev/null || { echo "serve exited:" >&2; cat "$log" >&2; exit 1; }
        [ $SECONDS -lt $deadline ] || { echo "serve did not listen in 30 s:" >&2; cat "$log" >&2; exit 1; }
        addr=$(grep -so 'listening addr=[0-9.:]*' "$log" | head -n1 | cut -d= -f2 || true)
        [ -n "$addr" ] || sleep 0.05
    done
    BASE=http://$addr
}
# stop PID: SIGTERM, then wait for it to exit.
stop() {
    kill -TERM "$1" 2> /dev/null || true
    wait "$1" 2> /dev/null || true
}
load() { cut -d' ' -f1-3 /proc/loadavg; }
poll_args() { if [ -n "$POLL" ]; then echo "--poll $POLL"; fi; }
ms_now() { date +%s%3N; }

# --- figures -----------------------------------------------------------------------------------
latency() { # STORE
    new_db "$1" latency
    # shellcheck disable=SC2046
    start_serve "$OUT/latency-$1.log" $(poll_args)
    for rate in $LAT_RATES; do
        echo
        echo "== latency, $1, $rate alerts/s for $LAT_SECONDS s (serve with its worker$([ -n "$POLL" ] && echo ", --poll $POLL")); load before: $(load)"
        "${LOAD[@]}" latency --base "$BASE" --rate "$rate" --seconds "$LAT_SECONDS" --tag "r$rate" --target-ms 50
        echo "load after: $(load)"
    done
    stop "$SERVE_PID"
    drop_db
}

storm() { # STORE
    new_db "$1" storm
    # shellcheck disable=SC2046
    start_serve "$OUT/storm-$1.log" $(poll_args)
    echo
    echo "== storm, $1: 1,000 notifications in 10 s over 100 groups (3 alerts each); load before: $(load)"
    "${LOAD[@]}" storm --base "$BASE" --db "$DB"
    echo "load after: $(load)"
    stop "$SERVE_PID"
    drop_db
}

throughput() { # STORE
    local n i t0 since stats pid ok
    for n in $WORKERS; do
        new_db "$1" "throughput$n"
        start_serve "$OUT/throughput$n-$1.log" --no-worker
        echo
        echo "== throughput, $1: $RUNS one-step runs, $n worker(s)${WORKER_ARGS:+ ($WORKER_ARGS)}; load before: $(load)"
        since=$(ms_now)
        "${LOAD[@]}" enqueue --base "$BASE" --runbook bench-short --count "$RUNS"
        # The server has done its part; stopped, its connections end and PostgreSQL counts what they
        # did before the workers start, not during.
        stop "$SERVE_PID"
        if [ "$1" = pg ]; then stats=$("${LOAD[@]}" pgstats --db "$DB"); fi
        local workers=()
        t0=$(ms_now)
        for ((i = 0; i < n; i++)); do
            # shellcheck disable=SC2046,SC2086
            (cd "$OUT" && exec "$BIN" --db "$DB" worker $(poll_args) $WORKER_ARGS 2> "$OUT/throughput$n-$1.worker$i.log") &
            workers+=($!)
            PIDS+=($!)
        done
        "${LOAD[@]}" wait --db "$DB" --runbook bench-short --expect "$RUNS" --since-ms "$since" --from-ms "$t0" \
            --until done --queries-to "$OUT/queries"
        echo "load after: $(load)"
        for pid in "${workers[@]}"; do stop "$pid"; done
        if [ "$1" = pg ]; then
            "${LOAD[@]}" pgstats --db "$DB" --since "$stats" --runs "$RUNS" --minus "$(cat "$OUT/queries")"
        fi
        ok=$(psql_or_sqlite "SELECT COUNT(*) FROM runs WHERE runbook = 'bench-short' AND status = 'succeeded'")
        [ "$ok" = "$RUNS" ] || { echo "only $ok of $RUNS runs succeeded" >&2; exit 1; }
        drop_db
    done
}

# psql_or_sqlite SQL: one value from $DB.
psql_or_sqlite() {
    if [[ $DB == postgres://* ]]; then
        psql "$DB" -X -At -c "$1"
    else
        python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])' "$DB" "$1"
    fi
}

# kb FIELD: a field of serve's /proc status, in kB.
kb() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$SERVE_PID/status"; }
mb() { echo "scale=1; $1 / 1024" | bc; }

rss() { # STORE
    new_db "$1" rss
    # shellcheck disable=SC2046
    start_serve "$OUT/rss-$1.log" $(poll_args)
    echo
    echo "== rss, $1: $PARKED runs parked at an approval (serve with its worker); load before: $(load)"
    echo "serve at start: VmRSS $(mb "$(kb VmRSS)") MB, VmHWM $(mb "$(kb VmHWM)") MB"
    local t0
    t0=$(ms_now)
    "${LOAD[@]}" enqueue --base "$BASE" --runbook bench-gated --count "$PARKED"
    "${LOAD[@]}" wait --db "$DB" --runbook bench-gated --expect "$PARKED" --since-ms "$t0" --from-ms "$t0" \
        --from-label "the first POST" --until parked
    local rss hwm
    rss=$(kb VmRSS) hwm=$(kb VmHWM)
    echo "serve holding $PARKED parked runs: VmRSS $(mb "$rss") MB (anon $(mb "$(kb RssAnon)"), file $(mb "$(kb RssFile)")), VmHWM $(mb "$hwm") MB, threads $(kb Threads)"
    if [ "$hwm" -le $((60 * 1024)) ]; then verdict=met; else verdict="NOT met ($(echo "scale=2; $hwm / (60 * 1024)" | bc)x)"; fi
    echo "target serve <= 60 MB with $PARKED parked runs (VmHWM): $(mb "$hwm") MB -- $verdict"
    echo "load after: $(load)"
    stop "$SERVE_PID"
    drop_db
}

echo "load at start: $(load) ($(uptime -p))"
for store in $STORES; do
    for f in $FIGURES; do "$f" "$store"; done
done
echo
echo "load at end: $(load); report: ${REPORT#"$ROOT"/}"

#!/usr/bin/env bash
# Engine benchmarks (DESIGN §8). Whole-process wall time and peak RSS of the release `runbook` binary on
# generated runbooks of no-op `read` steps, with the SQLite store on (a fresh database per run), side by
# side with the binary of an older revision, and against the cost of one SQLite commit timed in the same
# session (engine/examples/commit_floor.rs).
#
#   bench/run.sh                 # this tree against BASE=aaaa2dc, 5 runs of each per workload, medians
#   RUNS=9 bench/run.sh          # more runs
#   BASE=HEAD~3 bench/run.sh     # another base revision
#   BASE= bench/run.sh           # this tree alone
#
# Absolute times on shared machines drift by ±50% from day to day, so the old and the new binary are
# run alternately (old, new, old, new, ...) in one session and only their ratio is read as a result.
# The base revision is checked out under bench/out/base-REV and built with this tree's target/ (the
# dependencies compile once); each binary is copied to bench/out/bin/, and a base binary found there is
# reused. `git worktree remove bench/out/base-REV` drops the checkout.
#
# Needs GNU time (Debian package `time`) for peak RSS; installs it when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${RUNS:-5}
BASE=${BASE-aaaa2dc}
case $RUNS in '' | *[!0-9]* | 0*) echo "RUNS must be a whole number of runs, at least 1 (not \"$RUNS\")" >&2; exit 2 ;; esac
OUT=bench/out
mkdir -p "$OUT/bin"

if [ ! -x /usr/bin/time ]; then
    if [ "$(id -u)" = 0 ]; then apt-get install -y -qq time >/dev/null; else echo "install GNU time (apt-get install time)" >&2; exit 1; fi
fi

# --- binaries ----------------------------------------------------------------------------------
OLD=
if [ -n "$BASE" ]; then
    rev=$(git rev-parse --short "$BASE^{commit}" 2>/dev/null) \
        || { echo "BASE=$BASE is not a revision of this repository (BASE= measures this tree alone)" >&2; exit 2; }
    OLD=$OUT/bin/runbook-$rev
    if [ ! -x "$OLD" ]; then
        wt=$OUT/base-$rev
        [ -d "$wt" ] || git worktree add -q --detach "$wt" "$rev"
        echo "building the base binary ($rev) ..." >&2
        cargo build --release -q -p runbook-engine --bin runbook \
            --manifest-path "$wt/Cargo.toml" --target-dir "$ROOT/target"
        cp target/release/runbook "$OLD"
    fi
fi
# Built after the base, so target/release/runbook is this tree's binary again when the script ends.
# Built apart: an example brings in the dev-dependencies, whose features would change the binary.
cargo build --release -q -p runbook-engine --bin runbook
NEW=$OUT/bin/runbook-new
cp target/release/runbook "$NEW"
cargo build --release -q -p runbook-engine --example commit_floor
cp target/release/examples/commit_floor "$OUT/bin/commit_floor"
if [ -n "$OLD" ] && cmp -s "$OLD" "$NEW"; then
    echo "note: the base binary and this tree's are identical" >&2
fi

# --- workloads ---------------------------------------------------------------------------------
. bench/workloads.sh

# --- measurement -------------------------------------------------------------------------------
# once BIN WORKLOAD: one whole-process run of BIN on WORKLOAD with a fresh database; prints "wall_us rss_kb".
once() {
    local bin=$1 w=$2 db=$OUT/$2.db
    rm -f "$db" "$db-wal" "$db-shm"
    local args=(--db "$db" run "$OUT/$w.yaml" --quiet)
    [ "$w" = v10k ] && args=(validate "$OUT/$w.yaml")
    local t0 t1
    t0=$(date +%s%N)
    /usr/bin/time -f '%M' -o "$OUT/$w.rss" "$bin" "${args[@]}" > /dev/null 2> "$OUT/$w.err" \
        || { echo "$bin failed on $w:" >&2; cat "$OUT/$w.err" >&2; exit 1; }
    t1=$(date +%s%N)
    echo "$(( (t1 - t0) / 1000 )) $(tail -n1 "$OUT/$w.rss")"
}
median() { sort -n | sed -n "$(( (RUNS + 1) / 2 ))p"; }
ms() { echo "$1 / 1000" | bc -l; }
mb() { echo "$1 / 1024" | bc -l; }
# floor: the median µs of a synchronous=NORMAL single-row INSERT commit, timed now (all of its output
# is kept in commit_floor.txt).
floor() { "$OUT/bin/commit_floor" "$OUT" 1000 | tee -a "$OUT/commit_floor.txt" | awk '$1 == "normal-insert" { print $5 }'; }

WORKLOADS=(w0_one w1_chain100 w2_fanout w3_branch w4_chain1000 w5_chain100_fsync v10k)
declare -A OLD_US NEW_US OLD_KB NEW_KB
echo "load before: $(uptime)"
: > "$OUT/commit_floor.txt"
# The floor moves within minutes on a shared machine, so it is timed before every workload and after
# the last, and its median is used.
FLOORS=()
if [ -n "$OLD" ]; then
    printf '\n%-18s %9s %9s %8s %9s %9s\n' workload "old ms" "new ms" "new/old" "old MB" "new MB"
else
    printf '\n%-18s %9s %9s\n' workload "new ms" "new MB"
fi
# What starting any process costs through this harness (fork, exec, time(1)): part of every figure.
true_us=()
for ((r = 0; r < RUNS; r++)); do
    t0=$(date +%s%N); /usr/bin/time -f '%M' -o /dev/null /bin/true; t1=$(date +%s%N)
    true_us+=("$(( (t1 - t0) / 1000 ))")
done
HARNESS=$(printf '%s\n' "${true_us[@]}" | median)
printf '%-18s %9s %9.1f\n' "(/bin/true)" "" "$(ms "$HARNESS")"
for w in "${WORKLOADS[@]}"; do
    FLOORS+=("$(floor)")
    old_us=() old_kb=() new_us=() new_kb=()
    # One run of each first, not counted: page cache, binary pages, the database directory.
    if [ -n "$OLD" ]; then once "$OLD" "$w" > /dev/null; fi
    once "$NEW" "$w" > /dev/null
    for ((r = 0; r < RUNS; r++)); do
        if [ -n "$OLD" ]; then read -r us kb < <(once "$OLD" "$w"); old_us+=("$us"); old_kb+=("$kb"); fi
        read -r us kb < <(once "$NEW" "$w"); new_us+=("$us"); new_kb+=("$kb")
    done
    NEW_US[$w]=$(printf '%s\n' "${new_us[@]}" | median)
    NEW_KB[$w]=$(printf '%s\n' "${new_kb[@]}" | median)
    if [ -n "$OLD" ]; then
        OLD_US[$w]=$(printf '%s\n' "${old_us[@]}" | median)
        OLD_KB[$w]=$(printf '%s\n' "${old_kb[@]}" | median)
        printf '%-18s %9.1f %9.1f %8.2f %9.1f %9.1f\n' "$w" "$(ms "${OLD_US[$w]}")" "$(ms "${NEW_US[$w]}")" \
            "$(echo "${NEW_US[$w]} / ${OLD_US[$w]}" | bc -l)" "$(mb "${OLD_KB[$w]}")" "$(mb "${NEW_KB[$w]}")"
    else
        printf '%-18s %9.1f %9.1f\n' "$w" "$(ms "${NEW_US[$w]}")" "$(mb "${NEW_KB[$w]}")"
    fi
done
FLOORS+=("$(floor)")
echo
echo "load after: $(uptime)"

# --- against the floor and the targets -----------------------------------------------------------
FLOOR=$(printf '%s\n' "${FLOORS[@]}" | sort -n | sed -n "$(( (${#FLOORS[@]} + 1) / 2 ))p")
printf '\ncommit floor (synchronous=NORMAL single-row INSERT, median of each timing): %s µs; used: %s µs\n' \
    "$(printf '%s ' "${FLOORS[@]}" | sed 's/ $//')" "$FLOOR"
for tag in full-insert normal-tx; do
    printf '  %s (median of each timing): %s µs\n' "$tag" \
        "$(awk -v t="$tag" '$1 == t { printf "%s ", $5 }' "$OUT/commit_floor.txt" | sed 's/ $//')"
done
per_step() { echo "($1 - $2) / 999" | bc -l; } # per_step W4_US W0_US
NEW_STEP=$(per_step "${NEW_US[w4_chain1000]}" "${NEW_US[w0_one]}")
if [ -n "$OLD" ]; then
    OLD_STEP=$(per_step "${OLD_US[w4_chain1000]}" "${OLD_US[w0_one]}")
    printf 'per-step overhead (W4 - W0) / 999: old %.1f µs = %.2f× the floor, new %.1f µs = %.2f× the floor\n' \
        "$OLD_STEP" "$(echo "$OLD_STEP / $FLOOR" | bc -l)" "$NEW_STEP" "$(echo "$NEW_STEP / $FLOOR" | bc -l)"
else
    printf 'per-step overhead (W4 - W0) / 999: %.1f µs = %.2f× the floor\n' "$NEW_STEP" "$(echo "$NEW_STEP / $FLOOR" | bc -l)"
fi
printf 'per-step cost with an fsync per intent (W5 - W0) / 99: %.1f µs\n' \
    "$(echo "(${NEW_US[w5_chain100_fsync]} - ${NEW_US[w0_one]}) / 99" | bc -l)"

verdict() { if [ "$1" = 1 ]; then echo met; else echo "NOT met"; fi; } # verdict BC_BOOLEAN
echo
echo "targets (new build):"
if [ -n "$OLD" ]; then
    worst=; worst_ratio=0
    for w in "${WORKLOADS[@]}"; do
        r=$(echo "${NEW_US[$w]} / ${OLD_US[$w]}" | bc -l)
        if [ "$(echo "$r > $worst_ratio" | bc -l)" = 1 ]; then worst=$w; worst_ratio=$r; fi
    done
    printf '  no workload more than 10%% slower than the base: worst %s at %.2f× -- %s\n' \
        "$worst" "$worst_ratio" "$(verdict "$(echo "$worst_ratio <= 1.10" | bc -l)")"
fi
printf '  per-step overhead <= one commit: %.2f× -- %s\n' "$(echo "$NEW_STEP / $FLOOR" | bc -l)" \
    "$(verdict "$(echo "$NEW_STEP <= $FLOOR" | bc -l)")"
# The harness's own cost (a process started through time(1)) is not the engine's, so it is taken off.
W0_NET=$(( NEW_US[w0_one] - HARNESS ))
printf '  W0 (one step) <= 5 ms: %.1f ms, %.1f ms less the harness -- %s\n' "$(ms "${NEW_US[w0_one]}")" \
    "$(ms "$W0_NET")" "$(verdict "$(echo "$W0_NET <= 5000" | bc -l)")"
peak=0
for w in "${WORKLOADS[@]}"; do
    [ "$w" = v10k ] && continue
    [ "${NEW_KB[$w]}" -gt "$peak" ] && peak=${NEW_KB[$w]}
done
printf '  peak RSS of a run <= 20 MB: %.1f MB -- %s\n' "$(mb "$peak")" "$(verdict "$(echo "$peak <= 20 * 1024" | bc -l)")"
printf '  validate 10,000 steps < 100 ms and < 50 MB: %.1f ms, %.1f MB -- %s\n' "$(ms "${NEW_US[v10k]}")" \
    "$(mb "${NEW_KB[v10k]}")" "$(verdict "$(echo "${NEW_US[v10k]} < 100000 && ${NEW_KB[v10k]} < 50 * 1024" | bc -l)")"

#!/usr/bin/env bash
# Engine benchmarks (DESIGN §8). Whole-process wall time and peak RSS of the release `runbook` binary on
# generated runbooks of no-op `read` steps, with the SQLite store on (a fresh database per run).
#
#   bench/run.sh            # all workloads, 5 runs each, medians
#   RUNS=11 bench/run.sh    # more runs
#
# Needs GNU time (Debian package `time`) for peak RSS; installs it when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
OUT=bench/out
mkdir -p "$OUT"

if [ ! -x /usr/bin/time ]; then
    if [ "$(id -u)" = 0 ]; then apt-get install -y -qq time >/dev/null; else echo "install GNU time (apt-get install time)" >&2; exit 1; fi
fi
cargo build --release -q -p runbook-engine
BIN=target/release/runbook

# --- workloads ---------------------------------------------------------------------------------
chain() { # chain N NAME: a linear chain of N no-op steps
    local n=$1 f=$OUT/$2.yaml
    { echo "name: $2"; echo "steps:"; echo "  - { id: s0, uses: flow.noop }"
      for ((i = 1; i < n; i++)); do echo "  - { id: s$i, uses: flow.noop, needs: s$((i - 1)) }"; done; } > "$f"
}
chain 1 w0_one
chain 100 w1_chain100
chain 1000 w4_chain1000
{ echo "name: w2_fanout"; echo "steps:"; echo "  - { id: root, uses: flow.noop }"
  for ((i = 0; i < 100; i++)); do echo "  - { id: m$i, uses: flow.noop, needs: root }"; done
  printf '  - id: join\n    uses: flow.noop\n    needs: ['; for ((i = 0; i < 100; i++)); do printf 'm%d%s' $i "$([ $i -lt 99 ] && echo ', ')"; done; echo ']'
} > $OUT/w2_fanout.yaml
{ echo "name: w3_branch"; echo "steps:"
  echo "  - { id: diagnose, uses: flow.noop, with: { value: 0.61 }, outputs: { f1: '{{ result.value }}' } }"
  echo "  - id: choose"; echo "    uses: flow.branch"; echo "    needs: diagnose"
  echo "    with: { cases: [ { when: 'steps.diagnose.f1 < 0.65', then: a0 } ], default: b0 }"
  for p in a b; do
      echo "  - { id: ${p}0, uses: flow.noop }"
      for ((i = 1; i < 5; i++)); do echo "  - { id: $p$i, uses: flow.noop, needs: $p$((i - 1)) }"; done
  done
  echo "  - { id: verify, uses: flow.noop, needs: [a4, b4] }"
} > $OUT/w3_branch.yaml
chain 10000 v10k
# W5: the same 100-step chain with every step `idempotent`: each step's intent is an fsync'd commit.
{ echo "name: w5_chain100_fsync"; echo "steps:"; echo "  - { id: s0, uses: flow.noop, side_effect: idempotent }"
  for ((i = 1; i < 100; i++)); do echo "  - { id: s$i, uses: flow.noop, side_effect: idempotent, needs: s$((i - 1)) }"; done; } > $OUT/w5_chain100_fsync.yaml

# --- measurement -------------------------------------------------------------------------------
# measure NAME CMD...: prints "median_wall_s median_peak_rss_kb" over $RUNS runs.
measure() {
    local name=$1; shift
    local walls=() rsss=()
    for ((r = 0; r < RUNS; r++)); do
        rm -f "$OUT/$name.db" "$OUT/$name.db-wal" "$OUT/$name.db-shm"
        local t0 t1
        t0=$(date +%s%N)
        /usr/bin/time -f '%M' -o "$OUT/$name.rss" "$@" > /dev/null 2> "$OUT/$name.err" || { cat "$OUT/$name.err" >&2; exit 1; }
        t1=$(date +%s%N)
        walls+=("$(( (t1 - t0) / 1000 ))")
        rsss+=("$(tail -n1 "$OUT/$name.rss")")
    done
    local wall rss
    wall=$(printf '%s\n' "${walls[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
    rss=$(printf '%s\n' "${rsss[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
    echo "$wall $rss"
}

printf '%-14s %12s %12s\n' workload "wall (ms)" "peak RSS (MB)"
declare -A W
for w in w0_one w1_chain100 w2_fanout w3_branch w4_chain1000 w5_chain100_fsync; do
    read -r us kb < <(measure "$w" "$BIN" --db "$OUT/$w.db" run "$OUT/$w.yaml" --quiet)
    W[$w]=$us
    printf '%-14s %12.1f %12.1f\n' "$w" "$(echo "$us / 1000" | bc -l)" "$(echo "$kb / 1024" | bc -l)"
done
read -r us kb < <(measure v10k "$BIN" validate "$OUT/v10k.yaml")
printf '%-14s %12.1f %12.1f\n' "validate 10k" "$(echo "$us / 1000" | bc -l)" "$(echo "$kb / 1024" | bc -l)"
printf '\nper-step overhead (W4 - one step) / 999: %.1f µs\n' "$(echo "(${W[w4_chain1000]} - ${W[w0_one]}) / 999" | bc -l)"
printf 'per-step cost with an fsync per intent (W5 - one step) / 99: %.1f µs\n' "$(echo "(${W[w5_chain100_fsync]} - ${W[w0_one]}) / 99" | bc -l)"

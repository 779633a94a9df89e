# Sourced by bench/run.sh and bench/counts.sh: generates the benchmark runbooks into $OUT (one place
# for the workloads' shapes; bench/README.md describes them).
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

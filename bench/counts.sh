#!/usr/bin/env bash
# Load-independent counts for benchmark workloads, binary against binary: instructions executed
# (valgrind's callgrind), system calls (strace -f -c: all, fsync/fdatasync, openat, mmap, futex), and
# from GNU time minor page faults, voluntary context switches and peak RSS. Wall-clock figures on a
# shared machine move with its load; these do not (or barely: thread wake-ups vary a little).
#
#   bench/counts.sh bench/out/bin/runbook-aaaa2dc bench/out/bin/runbook-new
#   WORKLOADS="w0_one w4_chain1000" bench/counts.sh BIN...
#
# Binaries are not built here: bench/run.sh builds and keeps them in bench/out/bin/. Each callgrind
# profile is kept as bench/out/counts/NAME.WORKLOAD.callgrind for `callgrind_annotate --inclusive=yes`.
# Needs valgrind, strace and GNU time (Debian packages of those names).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bench/counts.sh BINARY..." >&2; exit 2; }
for tool in valgrind strace /usr/bin/time; do
    command -v "$tool" > /dev/null || { echo "bench/counts.sh needs $tool" >&2; exit 1; }
done
OUT=bench/out
mkdir -p "$OUT/counts"
. bench/workloads.sh
read -r -a WORKLOADS <<< "${WORKLOADS:-w0_one w3_branch w4_chain1000}"

# fresh WORKLOAD: removes the workload's database, so every run creates and migrates it as run.sh's do.
fresh() { rm -f "$OUT/$1.db" "$OUT/$1.db-wal" "$OUT/$1.db-shm"; }
args() { echo "--db $OUT/$1.db run $OUT/$1.yaml --quiet"; }

printf '%-14s %-22s %12s %9s %6s %7s %6s %7s %8s %7s %7s\n' workload binary instructions syscalls fsync openat mmap futex "minflt" "volcs" "RSS MB"
for w in "${WORKLOADS[@]}"; do
    for bin in "$@"; do
        name=$(basename "$bin")
        cg=$OUT/counts/$name.$w.callgrind
        fresh "$w"
        # shellcheck disable=SC2046 # args() is words on purpose
        valgrind -q --tool=callgrind --callgrind-out-file="$cg" "$bin" $(args "$w") > /dev/null 2>&1
        ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$cg")
        fresh "$w"
        st=$OUT/counts/$name.$w.strace
        # shellcheck disable=SC2046
        strace -f -c -o "$st" "$bin" $(args "$w") > /dev/null 2>&1
        # strace -c's columns: % time, seconds, usecs/call, calls, [errors,] syscall.
        calls() { awk -v re="^($1)\$" '$NF ~ re { n += $4 } END { print n + 0 }' "$st"; }
        total=$(calls total)
        fresh "$w"
        # shellcheck disable=SC2046
        read -r minflt volcs kb < <(/usr/bin/time -f '%R %w %M' "$bin" $(args "$w") 2>&1 > /dev/null | tail -n1)
        printf '%-14s %-22s %12s %9s %6s %7s %6s %7s %8s %7s %7.1f\n' "$w" "$name" "$ir" "$total" \
            "$(calls 'fsync|fdatasync')" "$(calls openat)" "$(calls mmap)" "$(calls futex)" "$minflt" "$volcs" \
            "$(echo "$kb / 1024" | bc -l)"
    done
done

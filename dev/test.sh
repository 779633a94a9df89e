#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this). Installs what the tests need that a
# fresh machine may lack, starts the services they use (PostgreSQL, then dev/services), then runs
# formatting, lint and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is not installed; install Rust (rustup) first" >&2
    exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "== installing cargo-nextest"
    cargo install cargo-nextest --locked
fi
# rustfmt and clippy are rustup components; a minimal toolchain may lack them.
if command -v rustup >/dev/null 2>&1; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
# The end-to-end tests drive real processes through POSIX tools (sh, df, kill, touch).
for tool in sh df kill touch; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is missing" >&2; exit 1; }
done

# PostgreSQL: the store suite and some end-to-end runs use a real server (RUNBOOK_TEST_PG, default the
# local one). Start it if it is installed but stopped; install Debian's if there is none.
export RUNBOOK_TEST_PG=${RUNBOOK_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! pg_up; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "== installing PostgreSQL"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        # A throwaway test server: trust connections from this machine, as the tests expect.
        for hba in /etc/postgresql/*/main/pg_hba.conf; do
            grep -q '^host all all 127.0.0.1/32 trust' "$hba" || sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
        done
    fi
    if command -v pg_ctlcluster >/dev/null 2>&1 && ls /etc/postgresql/ >/dev/null 2>&1; then
        echo "== starting PostgreSQL"
        ver=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n1)
        pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
    fi
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
if ! pg_up; then
    echo "error: PostgreSQL is not reachable at 127.0.0.1:5432 and could not be started" >&2
    exit 1
fi
# Tests connect as `postgres` over TCP; Debian's default is peer/md5 auth for TCP, this machine kind
# trusts local connections. Say so clearly rather than failing deep inside a test.
if command -v psql >/dev/null 2>&1 && ! psql "$RUNBOOK_TEST_PG" -qtAc 'select 1' >/dev/null 2>&1; then
    echo "error: cannot connect to $RUNBOOK_TEST_PG; set RUNBOOK_TEST_PG to a URL with credentials" >&2
    exit 1
fi

# The plugins' tests talk to real servers (Prometheus, Alertmanager, MLflow, MongoDB, SMTP and webhook sinks):
# start them (nothing is started when they run already) and export their addresses.
echo "== dev/services start"
./dev/services start
# shellcheck source=/dev/null
source "$(./dev/services env)"

# The API fuzzer the `runbook serve` tests run against /openapi.json.
RUNBOOK_TEST_SCHEMATHESIS=$(./dev/services tool schemathesis)
export RUNBOOK_TEST_SCHEMATHESIS

# The model-degraded scenarios (tests/model_degraded.rs) drive dev/sandbox themselves, one at a time.
export RUNBOOK_TEST_SANDBOX=1

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# A build without the optional plugin families must still compile (re-checks the two workspace crates only).
cargo clippy --workspace --all-targets --locked --no-default-features -- -D warnings
echo "== the sandbox twin's formulas (python unittest)"
python3 -m unittest discover -q -s dev/sandbox.d
echo "== tests"
cargo nextest run --workspace --locked --no-fail-fast
# The same suite on a build without the optional plugin families (kubernetes, mongodb): their names must
# read "not in this build" and everything else must still pass.
echo "== tests without the optional plugin families"
cargo nextest run --workspace --locked --no-fail-fast --no-default-features

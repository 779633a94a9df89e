#!/usr/bin/env bash
# The sandbox's end-to-end check: for each scenario given (default: gradual), `dev/sandbox up`, then
# `dev/sandbox status --json` must show the scenario's degraded specialists and alerts; then the
# scenario's resolution is applied the way the seed runbook does it (kubectl exec / patch / rollout
# restart against the fake API server) and the metrics must recover within seconds, or must not when
# the scenario says the fix does not help (checked once the new state is being served).
#
#   dev/sandbox.d/check.sh [SCENARIO...|all]
#
# kubectl: the first of $RUNBOOK_TEST_KUBECTL (from dev/services' env file) that speaks WebSocket
# exec, else kubectl on PATH. Exit 0 when every scenario behaved.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
sandbox=$repo/dev/sandbox
ns=neural-hive-orchestration

if [ $# -eq 0 ]; then set -- gradual; fi
if [ "$1" = all ]; then set -- healthy gradual sudden-after-deploy severe threshold-too-high bad-training-data fix-does-not-help; fi

pick_kubectl() {
    local k IFS=:
    for k in ${RUNBOOK_TEST_KUBECTL:-}; do
        # Exec needs kubectl 1.30+ (WebSocket); Debian's 1.20 speaks only SPDY.
        if "$k" version --client -o json 2>/dev/null | grep -q '"minor": *"\(3[0-9]\|[4-9][0-9]\)'; then
            echo "$k"
            return
        fi
    done
    command -v kubectl || { echo "check.sh: no kubectl (RUNBOOK_TEST_KUBECTL or PATH)" >&2; exit 1; }
}
kubectl_bin=$(pick_kubectl)
k() { KUBECONFIG=$RUNBOOK_CONNECTION_KUBERNETES_KUBECONFIG "$kubectl_bin" -n "$ns" "$@"; }
kexec() { k exec deployment/orchestrator-dynamic -- "$@"; }

fail() {
    echo "check.sh: FAIL ($scenario): $*" >&2
    "$sandbox" status >&2 || true
    exit 1
}

# expect DESCRIPTION SECONDS PYTHON-CONDITION: polls `dev/sandbox status --json` (bound to `s`)
# until the condition holds; fails with the last state after SECONDS.
expect() {
    local what=$1 seconds=$2 cond=$3
    "$sandbox" status --json >/dev/null # compile and warm up
    python3 - "$seconds" "$cond" "$sandbox" <<'EOF' || fail "$what"
import json, subprocess, sys, time
seconds, cond, sandbox = float(sys.argv[1]), sys.argv[2], sys.argv[3]
end = time.monotonic() + seconds
while True:
    s = json.loads(subprocess.run([sandbox, "status", "--json"], check=True, capture_output=True, text=True).stdout)
    alerts = {(a["alertname"], a["specialist_type"]) for a in s["alerts"]}
    live = {n: v["live"] for n, v in s["specialists"].items()}
    prod = {n: (v["registry"] or {}).get("production") or {} for n, v in s["specialists"].items()}
    if eval(cond):
        sys.exit(0)
    if time.monotonic() > end:
        print(f"not true after {seconds} s: {cond}\n  degraded={s['degraded']} alerts={sorted(alerts)}\n  live={live}", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.5)
EOF
    echo "   ok: $what"
}

A3='{"MLModelDegraded", "MLModelLowF1Score", "MLModelLowPerformance"}'
alerts_for() { # python expression: the three alerts for each specialist named
    echo "alerts == {(a, sp) for a in $A3 for sp in $1}"
}

for scenario in "$@"; do
    echo "=== $scenario"
    "$sandbox" up "$scenario" >/dev/null
    # shellcheck source=/dev/null
    . "$("$sandbox" env)"
    case $scenario in
    healthy)
        expect "nothing degraded, no alert" 5 's["degraded"] == [] and alerts == set()'
        ;;
    gradual | fix-does-not-help | bad-training-data)
        expect "technical and business degraded, their alerts active" 5 \
            "s['degraded'] == ['business', 'technical'] and $(alerts_for "('technical', 'business')")"
        kexec python ml_pipelines/monitoring/auto_retrain.py --specialist-type all --force \
            --notification-channels slack,email >/dev/null
        if [ "$scenario" = gradual ]; then
            expect "retrain: every model recovers, alerts resolve" 15 \
                's["degraded"] == [] and alerts == set() and all(v["f1"] >= 0.72 and v["score"] >= 0.65 for v in live.values())'
        else
            expect "retrain served (v4) but does not help: still degraded, alerts still active" 15 \
                "all(v['version'] == 4 for v in live.values()) and s['degraded'] == ['business', 'technical'] and $(alerts_for "('technical', 'business')")"
        fi
        ;;
    sudden-after-deploy)
        expect "security degraded on v5 (training f1 0.89)" 5 \
            "s['degraded'] == ['security'] and prod['security']['version'] == 5 and prod['security']['training_f1'] == 0.89 and $(alerts_for "('security',)")"
        kexec python -m services.orchestrator_dynamic.src.ml.model_promotion rollback \
            --model-name security_specialist --reason performance_degradation >/dev/null
        expect "rollback to v4: f1 0.84, alerts resolve" 15 \
            's["degraded"] == [] and live["security"]["version"] == 4 and live["security"]["f1"] == 0.84 and alerts == set()'
        ;;
    severe)
        expect "technical degraded, f1 0.55" 5 "s['degraded'] == ['technical'] and live['technical']['f1'] == 0.55 and $(alerts_for "('technical',)")"
        k patch configmap orchestrator-config --type merge \
            -p '{"data":{"ML_FALLBACK_ENABLED":"true","ML_FALLBACK_THRESHOLD":"0.65"}}' >/dev/null
        expect "ConfigMap patched, not yet effective" 3 's["config"]["pending_restart"] is True and live["technical"]["fallback"] is False'
        k rollout restart deployment/orchestrator-dynamic >/dev/null
        k rollout status deployment/orchestrator-dynamic >/dev/null
        expect "fallback: score 0.66, f1 0.55 still degraded, LowPerformance resolves" 15 \
            'live["technical"]["score"] == 0.66 and live["technical"]["degraded"] and alerts == {("MLModelDegraded", "technical"), ("MLModelLowF1Score", "technical")}'
        kexec python ml_pipelines/monitoring/auto_retrain.py --specialist-type technical --force >/dev/null
        expect "retrain: technical recovers" 15 's["degraded"] == [] and alerts == set() and live["technical"]["f1"] == 0.86'
        ;;
    threshold-too-high)
        expect "every specialist degraded by score alone (f1 >= 0.80)" 5 \
            's["degraded"] == ["business", "security", "technical"] and all(v["f1"] >= 0.8 and v["score"] < 0.6 for v in live.values())'
        k patch configmap orchestrator-config --type merge -p '{"data":{"ML_CONFIDENCE_THRESHOLD":"0.65"}}' >/dev/null
        expect "patch alone changes nothing" 3 's["config"]["pending_restart"] is True and len(s["degraded"]) == 3'
        k rollout restart deployment/orchestrator-dynamic >/dev/null
        expect "rollout restart: threshold 0.65 effective, scores >= 0.75, alerts resolve" 15 \
            's["config"]["effective"]["ML_CONFIDENCE_THRESHOLD"] == "0.65" and all(v["score"] >= 0.75 for v in live.values()) and alerts == set()'
        ;;
    *)
        echo "check.sh: no check for scenario '$scenario'" >&2
        exit 2
        ;;
    esac
done
echo "check.sh: all passed ($*)"

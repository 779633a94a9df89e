"""`dev/sandbox status [--json]`: the sandbox's state, read from the live services; and
`status.py wait-alerts SECONDS`, which `dev/sandbox up` runs to wait for the scenario's alerts.

Runs under SecantusDB's venv python (pymongo).
"""

import datetime as dt
import json
import socket
import sys
import time

import common
import model
import scenarios

SERVICES = ("prometheus", "alertmanager", "twin", "mlflow", "kube", "mongodb", "slack", "smtp")
ALERTS = ("MLModelDegraded", "MLModelLowPerformance", "MLModelLowF1Score", "MLModelPerformanceDeclining")
READY_PATH = {
    "prometheus": "/-/ready",
    "alertmanager": "/-/ready",
    "twin": "/-/ready",
    "mlflow": "/health",
    "kube": "/readyz",
    "slack": "/-/ready",
}


def up(cfg, svc):
    port = int(cfg["ports"][svc])
    if svc not in READY_PATH:
        return tcp(port)
    import urllib.request

    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{port}{READY_PATH[svc]}", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def tcp(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def active_alerts(cfg):
    matcher = 'alertname=~"MLModel.*"'
    import urllib.parse

    address = common.url(cfg, "alertmanager") + "/api/v2/alerts?" + urllib.parse.urlencode({"filter": matcher, "active": "true", "silenced": "false", "inhibited": "false"})
    out = []
    for a in common.http_json("GET", address):
        out.append(
            {
                "alertname": a["labels"].get("alertname"),
                "specialist_type": a["labels"].get("specialist_type"),
                "state": a.get("status", {}).get("state"),
                "starts_at": a.get("startsAt"),
            }
        )
    return sorted(out, key=lambda a: (a["alertname"] or "", a["specialist_type"] or ""))


def feedback_last_minute(cfg):
    from pymongo import MongoClient

    client = MongoClient(common.mongo_uri(cfg), serverSelectionTimeoutMS=3000)
    try:
        since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=60)
        pipeline = [
            {"$match": {"created_at": {"$gte": since}}},
            {"$group": {"_id": {"s": "$specialist_type", "t": "$feedback_type"}, "n": {"$sum": 1}}},
        ]
        out = {}
        for r in client[common.DATABASE].ml_feedback.aggregate(pipeline):
            out.setdefault(r["_id"]["s"], {"positive": 0, "negative": 0})[r["_id"]["t"]] = r["n"]
        for v in out.values():
            total = v["positive"] + v["negative"]
            v["positive_share"] = round(v["positive"] / total, 3) if total else None
        return out
    finally:
        client.close()


def registry(cfg, specialist):
    ml = common.MLflow(common.url(cfg, "mlflow"))
    versions = []
    for v in ml.versions(common.model_name(specialist)):
        metrics = ml.run_metrics(v["run_id"]) if v.get("run_id") else {}
        live = v["tags"].get(common.LIVE_TAG)
        versions.append(
            {
                "version": v["version"],
                "stage": v.get("current_stage"),
                "training_f1": metrics.get("f1_score"),
                "live_f1": float(live) if live is not None else None,
                "created_ms": int(v.get("creation_timestamp", 0)),
                "updated_ms": int(v.get("last_updated_timestamp", 0)),
            }
        )
    prod = [v for v in versions if v["stage"] == "Production"]
    return {
        "model": common.model_name(specialist),
        "production": prod[-1] if prod else None,
        "archived": [v for v in versions if v["stage"] == "Archived"],
        "versions": versions,
    }


def collect(cfg):
    errors = []
    state = {"sandbox_dir": cfg["dir"], "scenario": cfg["scenario"], "ports": cfg["ports"]}
    state["services"] = {svc: up(cfg, svc) for svc in SERVICES}

    def attempt(what, f, default):
        try:
            return f()
        except Exception as e:  # every source is optional in a status: say which failed
            errors.append(f"{what}: {e}")
            return default

    twin = attempt("twin", lambda: common.http_json("GET", common.url(cfg, "twin") + "/state"), None) or {}
    feedback = attempt("mongodb", lambda: feedback_last_minute(cfg), {})
    state["specialists"] = {}
    for specialist in scenarios.SPECIALISTS:
        live = (twin.get("specialists") or {}).get(specialist, {})
        state["specialists"][specialist] = {
            "registry": attempt(f"mlflow {specialist}", lambda s=specialist: registry(cfg, s), None),
            "live": {k: live.get(k) for k in ("version", "f1", "score", "degraded", "fallback", "coverage", "reasons")},
            "feedback_last_minute": feedback.get(specialist),
        }
    state["config"] = {
        "effective": twin.get("effective_config"),
        "configmap": twin.get("configmap"),
        "pending_restart": twin.get("config_pending_restart"),
        "deployment": twin.get("deployment"),
    }
    state["alerts"] = attempt("alertmanager", lambda: active_alerts(cfg), [])
    state["degraded"] = sorted(s for s, v in state["specialists"].items() if v["live"].get("degraded"))
    state["errors"] = errors + list(twin.get("errors") or [])
    return state


def ago(ms):
    if not ms:
        return "?"
    h = (time.time() * 1000 - ms) / 3600_000
    return f"{h / 24:.0f} d ago" if h >= 48 else f"{h:.1f} h ago"


def print_text(s):
    print(f"scenario: {s['scenario']}   sandbox dir: {s['sandbox_dir']}")
    print("services: " + "  ".join(f"{k}:{s['ports'][k]} {'up' if v else 'DOWN'}" for k, v in s["services"].items()))
    for name, sp in s["specialists"].items():
        live, reg, fb = sp["live"], sp["registry"], sp["feedback_last_minute"]
        flag = "DEGRADED" if live.get("degraded") else "ok"
        print(f"\n{name}: live f1={live.get('f1')} score={live.get('score')} {flag}" + (" (fallback heuristics)" if live.get("fallback") else ""))
        if reg:
            p = reg["production"]
            if p:
                print(f"  Production v{p['version']}: training f1 {p['training_f1']}, live f1 {p['live_f1']}, deployed {ago(p['created_ms'])}")
            else:
                print("  no Production version")
            for v in reg["archived"]:
                print(f"  Archived   v{v['version']}: training f1 {v['training_f1']}, live f1 {v['live_f1']}, deployed {ago(v['created_ms'])}")
        if fb:
            print(f"  feedback last minute: {fb['positive']} positive, {fb['negative']} negative ({fb['positive_share']})")
    c = s["config"]
    print(f"\nconfig effective: {c['effective']}")
    print(f"config ConfigMap: {c['configmap']}" + ("   <- differs: takes effect at the next rollout restart" if c["pending_restart"] else ""))
    print("\nactive alerts: " + (", ".join(f"{a['alertname']}{{{a['specialist_type']}}}" for a in s["alerts"]) or "none"))
    for e in s["errors"]:
        print(f"error: {e}")


def wait_alerts(cfg, seconds):
    """Until Prometheus has the twin's series and the firing MLModel alerts in Prometheus and
    Alertmanager are exactly the scenario's; 1 with what differs when `seconds` pass."""
    expected = {(a, s) for a, s in model.expected_alerts(scenarios.get(cfg["scenario"]))}
    deadline = time.monotonic() + seconds
    prom = common.url(cfg, "prometheus")
    last = "nothing read yet"
    while True:
        try:
            q = common.http_json("GET", prom + "/api/v1/query?query=count(neural_hive_mlflow_model_f1)")
            series = int(float(q["data"]["result"][0]["value"][1])) if q["data"]["result"] else 0
            fired = {
                (a["labels"]["alertname"], a["labels"].get("specialist_type"))
                for a in common.http_json("GET", prom + "/api/v1/alerts")["data"]["alerts"]
                if a["state"] == "firing" and a["labels"]["alertname"] in ALERTS[:3]
            }
            held = {(a["alertname"], a["specialist_type"]) for a in active_alerts(cfg) if a["alertname"] in ALERTS[:3]}
            if series == len(scenarios.SPECIALISTS) and fired == expected and held == expected:
                return 0
            last = f"series {series}/3; Prometheus firing {sorted(fired)}; Alertmanager {sorted(held)}"
        except (common.SandboxError, KeyError, IndexError, ValueError) as e:
            last = str(e)
        if time.monotonic() >= deadline:
            print(f"expected alerts {sorted(expected)}; after {seconds} s: {last}", file=sys.stderr)
            return 1
        time.sleep(0.3)


def main(argv):
    cfg = common.config()
    if len(argv) == 3 and argv[1] == "wait-alerts":
        return wait_alerts(cfg, float(argv[2]))
    state = collect(cfg)
    if "--json" in argv[1:]:
        print(json.dumps(state, indent=2))
    else:
        print_text(state)
    return 0 if all(state["services"].values()) else 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except common.SandboxError as e:
        print(f"dev/sandbox status: {e}", file=sys.stderr)
        sys.exit(1)

"""The orchestrator twin: a long-running stand-in for orchestrator-dynamic's ML side.

Every second it reads the registry (the Production version of each specialist's model and its
hidden-truth tag sandbox.live_f1), the Deployment and ConfigMap from the fake Kubernetes API (the
effective config: model.adopt), computes what the orchestrator would measure (model.metrics) and
inserts the second's live documents into MongoDB (specialist_opinions, ml_feedback). It serves:

  /metrics   the three gauges, one series per specialist, label specialist_type only
  /state     everything it computed, as JSON (dev/sandbox status and the pod scripts read it)
  /-/ready   200 once a tick succeeded

Usage: RUNBOOK_SANDBOX_DIR=... python twin.py   (dev/sandbox up starts it; SecantusDB's venv python)
"""

import datetime as dt
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import common
import model
import scenarios
import seed

DOCS_PER_SECOND = 2  # per specialist and collection


class Twin:
    def __init__(self, cfg):
        self.cfg = cfg
        self.name = cfg["scenario"]
        self.scenario = scenarios.get(self.name)
        self.mlflow = common.MLflow(common.url(cfg, "mlflow"))
        self.kube = common.Kube(common.url(cfg, "kube"))
        self.lock = threading.Lock()
        self.snapshot = None
        self.effective = None
        self.rng = seed.rng_for(self.name, "live")
        self.dithers = {s: model.Dither() for s in self.scenario["specialists"]}
        self.seq = 0
        self.mongo = None

    def connect_mongo(self):
        from pymongo import MongoClient

        self.mongo = MongoClient(common.mongo_uri(self.cfg), serverSelectionTimeoutMS=2000)[common.DATABASE]

    def live_f1(self, specialist, version):
        tag = version["tags"].get(common.LIVE_TAG)
        try:
            return float(tag)
        except (TypeError, ValueError):
            # A version registered by something other than the sandbox's tools: a model trained on
            # today's data, as the scenario's retraining gets.
            return self.scenario["specialists"][specialist]["retrain"]["live_f1"]

    def tick(self):
        errors = []
        deployment, configmap = None, None
        try:
            deployment = self.kube.deployment()
            configmap = self.kube.configmap()
        except common.SandboxError as e:
            errors.append(f"kube: {e}")
        if deployment is not None:
            if self.effective is None:
                # At start the pods run with the ConfigMap the scenario deployed them with.
                self.effective = {"template": model.template_hash(deployment), "config": dict(configmap)}
            else:
                self.effective = model.adopt(self.effective, deployment, configmap)
        config = self.effective["config"] if self.effective else dict(model.DEFAULT_CONFIG)
        threshold, fb_enabled, fb_threshold = model.parse_config(config)
        now = dt.datetime.now(dt.timezone.utc)
        specialists = {}
        opinions, feedback = [], []
        for specialist, spec in self.scenario["specialists"].items():
            name = common.model_name(specialist)
            try:
                prod = self.mlflow.production(name)
            except common.SandboxError as e:
                errors.append(f"mlflow: {e}")
                prod = None
                if self.snapshot and specialist in self.snapshot["specialists"]:
                    specialists[specialist] = self.snapshot["specialists"][specialist]
                    continue
            if prod is None:
                specialists[specialist] = {"model": name, "version": None, "reasons": ["no Production version"]}
                continue
            f1 = self.live_f1(specialist, prod)
            dist = spec["confidence"]
            m = model.metrics(f1, config, dist)
            share = model.positive_share(f1, config, dist, spec.get("feedback_bias"))
            reasons = []
            if m["f1"] < model.F1_MIN:
                reasons.append(f"f1 {m['f1']} < {model.F1_MIN}")
            if m["score"] < model.SCORE_MIN:
                reasons.append(f"performance score {m['score']} < {model.SCORE_MIN}")
            fallback = model.fallback_active(f1, config)
            if fallback:
                reasons.append(f"fallback heuristics answer (f1 {m['f1']} < ML_FALLBACK_THRESHOLD {fb_threshold})")
            specialists[specialist] = {
                "model": name,
                "version": prod["version"],
                "run_id": prod.get("run_id"),
                "f1": m["f1"],
                "score": m["score"],
                "degraded": m["degraded"],
                "fallback": fallback,
                "coverage": round(model.coverage(dist, threshold), 4),
                "positive_share": round(share, 4),
                "reasons": reasons,
            }
            for _ in range(DOCS_PER_SECOND):
                self.seq += 1
                conf = model.draw_confidence(self.rng, dist)
                op_id = f"op-l{self.seq:07d}"
                opinions.append(
                    {
                        "opinion_id": op_id,
                        "specialist_type": specialist,
                        "confidence_score": conf,
                        "timestamp": now,
                        "decision": model.decision(self.rng, conf, threshold),
                    }
                )
                feedback.append(
                    {
                        "specialist_type": specialist,
                        "feedback_type": self.dithers[specialist].next(share),
                        "created_at": now,
                        "opinion_id": op_id,
                    }
                )
        if opinions:
            try:
                if self.mongo is None:
                    self.connect_mongo()
                self.mongo.specialist_opinions.insert_many(opinions, ordered=False)
                self.mongo.ml_feedback.insert_many(feedback, ordered=False)
            except Exception as e:  # pymongo's errors: the twin goes on and reports it
                errors.append(f"mongodb: {e}")
        state = {
            "scenario": self.name,
            "at": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "effective_config": config,
            "configmap": configmap,
            "config_pending_restart": configmap is not None and configmap != config,
            "deployment": None
            if deployment is None
            else {
                "generation": deployment.get("metadata", {}).get("generation"),
                "template": model.template_hash(deployment),
                "rollout_complete": model.rollout_complete(deployment),
                "restarted_at": deployment.get("spec", {})
                .get("template", {})
                .get("metadata", {})
                .get("annotations", {})
                .get("kubectl.kubernetes.io/restartedAt"),
            },
            "fallback": {"enabled": fb_enabled, "threshold": fb_threshold},
            "confidence_threshold": threshold,
            "specialists": specialists,
            "errors": errors,
        }
        with self.lock:
            self.snapshot = state
        return not errors

    def metrics_text(self):
        with self.lock:
            snap = self.snapshot
        out = []
        helps = (
            ("neural_hive_mlflow_model_f1", "F1 of the Production model on live traffic", "f1"),
            ("neural_hive_model_performance_score", "Aggregate performance score of the specialist", "score"),
            ("neural_hive_model_degradation_detected", "1 when F1 < 0.72 or performance score < 0.65", "degraded"),
        )
        for name, text, key in helps:
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} gauge")
            for specialist, s in sorted((snap or {}).get("specialists", {}).items()):
                if s.get(key) is None:
                    continue
                v = s[key]
                v = (1 if v else 0) if key == "degraded" else v
                out.append(f'{name}{{specialist_type="{specialist}"}} {v}')
        return "\n".join(out) + "\n"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass

    def send(self, code, body, ctype):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        twin = self.server.twin
        path = self.path.split("?")[0]
        if path == "/metrics":
            self.send(200, twin.metrics_text(), "text/plain; version=0.0.4")
        elif path == "/state":
            with twin.lock:
                snap = twin.snapshot
            self.send(200 if snap else 503, json.dumps(snap), "application/json")
        elif path == "/-/ready":
            ready = twin.ready.is_set()
            self.send(200 if ready else 503, "ready\n" if ready else "starting\n", "text/plain")
        else:
            self.send(404, "not found\n", "text/plain")


def main():
    cfg = common.config()
    twin = Twin(cfg)
    twin.ready = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", int(cfg["ports"]["twin"])), Handler)
    server.daemon_threads = True
    server.twin = twin
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"twin: scenario {twin.name}, serving http://127.0.0.1:{cfg['ports']['twin']}/metrics", flush=True)
    next_at = time.monotonic()
    last_errors = None
    while not stop.is_set():
        ok = twin.tick()
        if ok:
            twin.ready.set()
        errors = twin.snapshot["errors"]
        if errors != last_errors:
            print(f"twin: {'; '.join(errors) if errors else 'all sources answer'}", flush=True)
            last_errors = errors
        next_at += 1.0
        stop.wait(max(0.0, next_at - time.monotonic()))
        next_at = max(next_at, time.monotonic() - 1.0)
    server.shutdown()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except common.SandboxError as e:
        print(f"twin: error: {e}", file=sys.stderr)
        sys.exit(1)

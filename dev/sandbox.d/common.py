"""What the sandbox's Python pieces share: its configuration and small clients of MLflow's REST API
and the fake Kubernetes API (stdlib urllib: no client library to install)."""

import json
import os
import urllib.error
import urllib.parse
import urllib.request

NAMESPACE = "neural-hive-orchestration"
DEPLOYMENT = "orchestrator-dynamic"
CONFIGMAP = "orchestrator-config"
EXPERIMENT = "specialist-training"
LIVE_TAG = "sandbox.live_f1"
DATABASE = "neural_hive"


class SandboxError(Exception):
    pass


def sandbox_dir():
    d = os.environ.get("RUNBOOK_SANDBOX_DIR")
    if not d:
        raise SandboxError("RUNBOOK_SANDBOX_DIR is not set (dev/sandbox sets it)")
    return d


def config():
    """config.json, written by `dev/sandbox up`: {dir, scenario, ports: {svc: port}}."""
    path = os.path.join(sandbox_dir(), "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise SandboxError(f"{path}: {e.strerror}: run `dev/sandbox up SCENARIO` first") from e


def url(cfg, svc):
    return f"http://127.0.0.1:{cfg['ports'][svc]}"


def mongo_uri(cfg):
    return f"mongodb://127.0.0.1:{cfg['ports']['mongodb']}/?directConnection=true"


def model_name(specialist):
    return f"{specialist}_specialist"


def http_json(method, address, body=None, timeout=10):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(address, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    # The sandbox is on 127.0.0.1: a proxy from the environment must not be asked.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as r:
            text = r.read().decode()
    except urllib.error.HTTPError as e:
        raise SandboxError(f"{method} {address}: HTTP {e.code}: {e.read().decode(errors='replace')[:500]}") from e
    except (urllib.error.URLError, OSError) as e:
        raise SandboxError(f"{method} {address}: {getattr(e, 'reason', e)}") from e
    return json.loads(text) if text else {}


class MLflow:
    def __init__(self, base):
        self.base = base.rstrip("/") + "/api/2.0/mlflow/"

    def call(self, method, endpoint, body=None, query=None):
        address = self.base + endpoint
        if query:
            address += "?" + urllib.parse.urlencode(query, doseq=True)
        return http_json(method, address, body)

    def versions(self, model):
        """Every version of model, in version order, each with a `tags` dict and int `version`."""
        out = self.call("GET", "model-versions/search", query={"filter": f"name='{model}'", "max_results": 1000})
        versions = []
        for v in out.get("model_versions", []):
            v = dict(v)
            v["version"] = int(v["version"])
            v["tags"] = {t["key"]: t.get("value") for t in v.get("tags", [])}
            versions.append(v)
        return sorted(versions, key=lambda v: v["version"])

    def production(self, model):
        """The Production version (as versions() shapes it), or None."""
        prod = [v for v in self.versions(model) if v.get("current_stage") == "Production"]
        return prod[-1] if prod else None

    def run_metrics(self, run_id):
        run = self.call("GET", "runs/get", query={"run_id": run_id})
        return {m["key"]: m["value"] for m in run["run"]["data"].get("metrics", [])}

    def experiment_id(self):
        try:
            out = self.call("GET", "experiments/get-by-name", query={"experiment_name": EXPERIMENT})
            exp = out["experiment"]
            if exp.get("lifecycle_stage") == "deleted":
                self.call("POST", "experiments/restore", {"experiment_id": exp["experiment_id"]})
            return exp["experiment_id"]
        except SandboxError as e:
            if "RESOURCE_DOES_NOT_EXIST" not in str(e):
                raise
        return self.call("POST", "experiments/create", {"name": EXPERIMENT})["experiment_id"]

    def training_run(self, exp_id, name, f1, start_ms, tags=None):
        """A finished training run that logged f1_score, precision and recall; its run id."""
        run = self.call("POST", "runs/create", {"experiment_id": exp_id, "run_name": name, "start_time": start_ms})
        run_id = run["run"]["info"]["run_id"]
        # Precision and recall around the F1 they give (harmonic mean ~ f1).
        precision, recall = round(min(0.99, f1 + 0.02), 4), round(max(0.01, f1 - 0.02), 4)
        metrics = [
            {"key": k, "value": v, "timestamp": start_ms + 60_000, "step": 0}
            for k, v in (("f1_score", f1), ("precision", precision), ("recall", recall))
        ]
        params = [{"key": "trainer", "value": "sandbox"}]
        all_tags = [{"key": k, "value": str(v)} for k, v in (tags or {}).items()]
        self.call("POST", "runs/log-batch", {"run_id": run_id, "metrics": metrics, "params": params, "tags": all_tags})
        self.call("POST", "runs/update", {"run_id": run_id, "status": "FINISHED", "end_time": start_ms + 120_000})
        return run_id

    def register(self, model, run_id, live_f1, description=""):
        out = self.call(
            "POST",
            "model-versions/create",
            {"name": model, "source": f"runs:/{run_id}/model", "run_id": run_id, "description": description},
        )
        version = int(out["model_version"]["version"])
        self.call("POST", "model-versions/set-tag", {"name": model, "version": str(version), "key": LIVE_TAG, "value": str(live_f1)})
        return version

    def transition(self, model, version, stage, archive=True):
        self.call(
            "POST",
            "model-versions/transition-stage",
            {"name": model, "version": str(version), "stage": stage, "archive_existing_versions": archive},
        )


class Kube:
    def __init__(self, base):
        self.base = base.rstrip("/")

    def deployment(self):
        return http_json("GET", f"{self.base}/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}")

    def configmap(self):
        return http_json("GET", f"{self.base}/api/v1/namespaces/{NAMESPACE}/configmaps/{CONFIGMAP}").get("data") or {}

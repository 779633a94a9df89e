"""Resets the sandbox's state to a scenario. Called by `dev/sandbox up`, one phase at a time:

  seed.py files      the kube manifests, Prometheus' config, rules and backfilled history,
                     Alertmanager's config (before those servers start)
  seed.py mlflow     the registry: models, versions, training runs, stages, history timestamps
  seed.py mongodb    database neural_hive: 24 h of ml_feedback and specialist_opinions

The scenario is config.json's. Runs under SecantusDB's venv python (pymongo).
"""

import datetime as dt
import json
import os
import random
import re
import shlex
import sqlite3
import subprocess
import sys
import time

import common
import model
import scenarios

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PROM_HISTORY_HOURS = 7
MONGO_HISTORY_HOURS = 24
MONGO_HISTORY_STEP = 120  # one opinion and one feedback per specialist every 2 min: ~4,300 docs
TWIN_JOB = "orchestrator-dynamic"


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def rules_source():
    """The alert rules the runbook ships (what production loads), so the sandbox fires what it would."""
    return os.path.join(REPO, "deploy", "prometheus-rules", "ml-drift-alerts.yaml")


def shorten_rules(text):
    """The sandbox's copy of the rules: every `for:` becomes 1s and every group `interval:` 1s, so an
    alert fires within seconds of its condition instead of after production's minutes."""
    text = re.sub(r"(?m)^(\s*)for:\s*\S+", r"\1for: 1s", text)
    return re.sub(r"(?m)^(\s*)interval:\s*\S+", r"\1interval: 1s", text)


def pod_exec_script(cfg):
    """fake-kube/exec: every `kubectl exec` into the orchestrator's pods runs the sandbox's dispatcher."""
    return "exec env RUNBOOK_SANDBOX_DIR={} {} {} \"$@\"".format(
        shlex.quote(cfg["dir"]), shlex.quote(sys.executable), shlex.quote(os.path.join(HERE, "pod", "dispatch.py"))
    )


def manifests(cfg, scenario):
    ns = common.NAMESPACE
    data = dict(model.DEFAULT_CONFIG)
    data.update(scenario["config"])
    labels = {"app": common.DEPLOYMENT}
    objs = {
        "00-namespace": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        "10-configmap": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": common.CONFIGMAP, "namespace": ns, "labels": labels},
            "data": data,
        },
        "20-deployment": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": common.DEPLOYMENT,
                "namespace": ns,
                "labels": labels,
                "annotations": {"fake-kube/rollout-seconds": "2"},
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {
                        "labels": labels,
                        "annotations": {
                            "fake-kube/logs": "\n".join(scenario["logs"]) + "\n",
                            "fake-kube/exec": pod_exec_script(cfg),
                        },
                    },
                    "spec": {
                        "containers": [
                            {
                                "name": "orchestrator",
                                "image": "registry.neural-hive.local/orchestrator-dynamic:2.14.0",
                                "envFrom": [{"configMapRef": {"name": common.CONFIGMAP}}],
                            }
                        ]
                    },
                },
            },
        },
        "30-cronjob": {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {
                "name": "model-performance-monitor",
                "namespace": ns,
                "labels": {"app": "model-performance-monitor"},
            },
            "spec": {
                "schedule": "*/15 * * * *",
                "jobTemplate": {
                    "spec": {
                        "template": {
                            "metadata": {"labels": {"app": "model-performance-monitor"}},
                            "spec": {
                                "restartPolicy": "OnFailure",
                                "containers": [
                                    {
                                        "name": "monitor",
                                        "image": "registry.neural-hive.local/orchestrator-dynamic:2.14.0",
                                        "command": [
                                            "python",
                                            "ml_pipelines/monitoring/model_performance_monitor.py",
                                            "--specialist-type",
                                            "all",
                                            "--output-format",
                                            "json",
                                        ],
                                    }
                                ],
                            },
                        }
                    }
                },
            },
        },
    }
    kdir = os.path.join(cfg["dir"], "kube", "manifests")
    os.makedirs(kdir, exist_ok=True)
    for f in os.listdir(kdir):
        os.remove(os.path.join(kdir, f))
    for name, obj in objs.items():
        write(os.path.join(kdir, name + ".json"), json.dumps(obj, indent=2) + "\n")


def prometheus_files(cfg, scenario, now):
    pdir = os.path.join(cfg["dir"], "prometheus")
    os.makedirs(os.path.join(pdir, "data"), exist_ok=True)
    end = int(now) // 60 * 60
    points = model.history(scenario, end, PROM_HISTORY_HOURS, 60)
    labels = {"job": TWIN_JOB, "instance": f"127.0.0.1:{cfg['ports']['twin']}"}
    om = os.path.join(pdir, "history.om")
    write(om, model.openmetrics(points, labels))
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", "--quiet", om, os.path.join(pdir, "data")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    write(os.path.join(pdir, "history_end"), f"{end}\n")
    src = rules_source()
    with open(src, encoding="utf-8") as f:
        rules = shorten_rules(f.read())
    write(os.path.join(pdir, "rules.yml"), f"# sandbox copy of {os.path.relpath(src, REPO)}, `for:` shortened\n" + rules)
    p = cfg["ports"]
    write(
        os.path.join(pdir, "prometheus.yml"),
        f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: ["{pdir}/rules.yml"]
alerting:
  alertmanagers:
    - static_configs: [{{ targets: ["127.0.0.1:{p['alertmanager']}"] }}]
scrape_configs:
  - job_name: {TWIN_JOB}
    static_configs: [{{ targets: ["127.0.0.1:{p['twin']}"] }}]
""",
    )


def alertmanager_files(cfg):
    adir = os.path.join(cfg["dir"], "alertmanager")
    os.makedirs(os.path.join(adir, "data"), exist_ok=True)
    write(
        os.path.join(adir, "alertmanager.yml"),
        f"""route:
  receiver: recorder
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
receivers:
  - name: recorder
    webhook_configs:
      - url: http://127.0.0.1:{cfg['ports']['slack']}/alertmanager
        send_resolved: true
""",
    )


def cmd_files(cfg, scenario):
    now = time.time()
    manifests(cfg, scenario)
    prometheus_files(cfg, scenario, now)
    alertmanager_files(cfg)


# ---------------------------------------------------------------------------------------------


def cmd_mlflow(cfg, scenario):
    ml = common.MLflow(common.url(cfg, "mlflow"))
    for specialist in scenarios.SPECIALISTS:
        name = common.model_name(specialist)
        try:
            ml.call("DELETE", "registered-models/delete", {"name": name})
        except common.SandboxError as e:
            if "RESOURCE_DOES_NOT_EXIST" not in str(e):
                raise
    exp = ml.experiment_id()
    # Runs of earlier scenarios: deleted (MLflow keeps them, hidden, in its deleted lifecycle).
    old = ml.call("POST", "runs/search", {"experiment_ids": [exp], "max_results": 1000})
    for run in old.get("runs", []):
        ml.call("POST", "runs/delete", {"run_id": run["info"]["run_id"]})
    now_ms = int(time.time() * 1000)
    times = []  # (model, version, created_ms, updated_ms)
    for specialist, spec in scenario["specialists"].items():
        name = common.model_name(specialist)
        ml.call("POST", "registered-models/create", {"name": name, "tags": [{"key": "team", "value": "ml-platform"}]})
        deployed = [now_ms - int(v["age_h"] * 3600_000) for v in spec["versions"]]
        for i, v in enumerate(spec["versions"]):
            run_id = ml.training_run(
                exp, f"{specialist}-train-{i + 1}", v["train_f1"], deployed[i] - 3 * 3600_000, {"specialist_type": specialist}
            )
            version = ml.register(name, run_id, v["live_f1"], f"{specialist} specialist, training run {i + 1}")
            ml.transition(name, version, "Production")
            updated = deployed[i + 1] if i + 1 < len(deployed) else deployed[i]
            times.append((name, version, deployed[i], updated))
    backdate(cfg, times)


def backdate(cfg, times):
    """The one write behind MLflow's back: its REST API cannot set when a version was created or last
    changed, so the history's timestamps go into the backend store directly."""
    db = sqlite3.connect(os.path.join(cfg["dir"], "mlflow", "mlflow.db"), timeout=30)
    try:
        with db:
            for name, version, created, updated in times:
                db.execute(
                    "UPDATE model_versions SET creation_time = ?, last_updated_time = ? WHERE name = ? AND version = ?",
                    (created, updated, name, version),
                )
            for name in {t[0] for t in times}:
                first = min(t[2] for t in times if t[0] == name)
                last = max(t[3] for t in times if t[0] == name)
                db.execute(
                    "UPDATE registered_models SET creation_time = ?, last_updated_time = ? WHERE name = ?",
                    (first, last, name),
                )
    finally:
        db.close()


# ---------------------------------------------------------------------------------------------


def rng_for(scenario_name, purpose):
    return random.Random(f"{scenario_name}/{purpose}")


def cmd_mongodb(cfg, scenario):
    from pymongo import MongoClient

    client = MongoClient(common.mongo_uri(cfg), serverSelectionTimeoutMS=5000)
    try:
        client.drop_database(common.DATABASE)
        db = client[common.DATABASE]
        end = int(time.time()) - MONGO_HISTORY_STEP
        rng = rng_for(cfg["scenario"], "history")
        dithers = {s: model.Dither() for s in scenario["specialists"]}
        opinions, feedback = [], []
        for n, (t, specialist, values) in enumerate(model.history(scenario, end, MONGO_HISTORY_HOURS, MONGO_HISTORY_STEP)):
            spec = scenario["specialists"][specialist]
            when = dt.datetime.fromtimestamp(t + rng.randint(0, MONGO_HISTORY_STEP - 1), dt.timezone.utc)
            conf = model.draw_confidence(rng, spec["confidence"])
            op_id = f"op-h{n:06d}"
            opinions.append(
                {
                    "opinion_id": op_id,
                    "specialist_type": specialist,
                    "confidence_score": conf,
                    "timestamp": when,
                    "decision": model.decision(rng, conf, values["threshold"]),
                }
            )
            feedback.append(
                {
                    "specialist_type": specialist,
                    "feedback_type": dithers[specialist].next(values["positive_share"]),
                    "created_at": when + dt.timedelta(seconds=30),
                    "opinion_id": op_id,
                }
            )
        db.specialist_opinions.insert_many(opinions, ordered=False)
        db.ml_feedback.insert_many(feedback, ordered=False)
        db.specialist_opinions.create_index("timestamp")
        db.ml_feedback.create_index("created_at")
        print(f"{len(opinions)} specialist_opinions, {len(feedback)} ml_feedback")
    finally:
        client.close()


def main(argv):
    if len(argv) != 2 or argv[1] not in ("files", "mlflow", "mongodb"):
        print(__doc__, file=sys.stderr)
        return 2
    cfg = common.config()
    scenario = scenarios.get(cfg["scenario"])
    {"files": cmd_files, "mlflow": cmd_mlflow, "mongodb": cmd_mongodb}[argv[1]](cfg, scenario)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except (common.SandboxError, subprocess.CalledProcessError, sqlite3.Error, KeyError) as e:
        print(f"seed.py {' '.join(sys.argv[1:])}: error: {e}", file=sys.stderr)
        sys.exit(1)

"""The sandbox's ml_pipelines/monitoring/auto_retrain.py: "trains" a new version of each selected
specialist's model (a training run in MLflow with the scenario's post-retrain F1s), registers it with
tag sandbox.live_f1 = what it will really achieve, and promotes it to Production (archiving the old).

Notification channels are echoed in the output, not sent: what lands in the sandbox's Slack and mail
directories is the runbook's own.
"""

import argparse
import json
import sys
import time

import common
import scenarios

TYPES = ("all",) + scenarios.SPECIALISTS


def main(args, prog):
    p = argparse.ArgumentParser(prog=prog, description="Retrain specialist models on fresh feedback.")
    p.add_argument("--specialist-type", choices=TYPES, required=True)
    p.add_argument("--force", action="store_true", help="retrain even when no new training data is flagged")
    p.add_argument("--notification-channels", default="", help="comma-separated: slack,email")
    a = p.parse_args(args)
    channels = [c for c in a.notification_channels.split(",") if c]
    bad = [c for c in channels if c not in ("slack", "email")]
    if bad:
        print(f"auto_retrain: unknown notification channel(s): {', '.join(bad)} (slack, email)", file=sys.stderr)
        return 2
    selected = scenarios.SPECIALISTS if a.specialist_type == "all" else (a.specialist_type,)
    if not a.force:
        print(
            f"auto_retrain: no new labelled data flagged for {', '.join(selected)} since the last training; "
            "nothing to do (use --force to retrain anyway)",
            file=sys.stderr,
        )
        return 2
    try:
        cfg = common.config()
        scenario = scenarios.get(cfg["scenario"])
        ml = common.MLflow(common.url(cfg, "mlflow"))
        exp = ml.experiment_id()
        out = []
        for specialist in selected:
            name = common.model_name(specialist)
            current = ml.production(name)
            retrain = scenario["specialists"][specialist]["retrain"]
            for epoch in (1, 2, 3):
                print(f"auto_retrain: {name}: epoch {epoch}/3 ...", file=sys.stderr, flush=True)
                time.sleep(0.15)
            now_ms = int(time.time() * 1000)
            run_id = ml.training_run(
                exp, f"{specialist}-auto-retrain", retrain["train_f1"], now_ms - 180_000, {"specialist_type": specialist, "trigger": "auto_retrain"}
            )
            version = ml.register(name, run_id, retrain["live_f1"], f"{specialist} specialist, auto_retrain --force")
            ml.transition(name, version, "Production")
            print(f"auto_retrain: {name}: version {version} (training f1 {retrain['train_f1']}) promoted to Production", file=sys.stderr)
            out.append(
                {
                    "specialist_type": specialist,
                    "model": name,
                    "from_version": current["version"] if current else None,
                    "to_version": version,
                    "training_f1": retrain["train_f1"],
                    "run_id": run_id,
                }
            )
    except common.SandboxError as e:
        print(f"auto_retrain: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"retrained": out, "notification_channels": channels}))
    return 0

"""The sandbox's services.orchestrator_dynamic.src.ml.model_promotion: `rollback` moves a model's
Production stage to its previous version (the highest-numbered one below the current), archiving the
current one."""

import argparse
import json
import sys

import common


def main(args, prog):
    p = argparse.ArgumentParser(prog=prog, description="Promote or roll back specialist models.")
    sub = p.add_subparsers(dest="command", required=True)
    rb = sub.add_parser("rollback", help="serve the previous version of a model")
    rb.add_argument("--model-name", required=True)
    rb.add_argument("--reason", required=True)
    a = p.parse_args(args)
    try:
        ml = common.MLflow(common.url(common.config(), "mlflow"))
        versions = ml.versions(a.model_name)
        if not versions:
            print(f"model_promotion: no registered model named {a.model_name!r}", file=sys.stderr)
            return 1
        current = [v for v in versions if v.get("current_stage") == "Production"]
        if not current:
            print(f"model_promotion: {a.model_name} has no version in Production", file=sys.stderr)
            return 1
        cur = current[-1]["version"]
        older = [v["version"] for v in versions if v["version"] < cur and v.get("status", "READY") == "READY"]
        if not older:
            print(f"model_promotion: {a.model_name} has no version before {cur} to roll back to", file=sys.stderr)
            return 1
        to = max(older)
        ml.transition(a.model_name, to, "Production")
        ml.call("POST", "model-versions/set-tag", {"name": a.model_name, "version": str(to), "key": "rollback_reason", "value": a.reason})
    except common.SandboxError as e:
        print(f"model_promotion: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"model": a.model_name, "from_version": cur, "to_version": to, "reason": a.reason}))
    return 0

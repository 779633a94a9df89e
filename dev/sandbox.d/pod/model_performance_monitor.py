"""The sandbox's ml_pipelines/monitoring/model_performance_monitor.py: the twin's numbers (its /state),
so what it prints is exactly what the twin exports to Prometheus."""

import argparse
import datetime as dt
import json
import sys

import common
import scenarios

TYPES = ("all", "technical", "security", "business")


def main(args, prog):
    p = argparse.ArgumentParser(prog=prog, description="Report each specialist model's live performance.")
    p.add_argument("--specialist-type", choices=TYPES, default="all")
    p.add_argument("--output-format", choices=("json", "text"), default="text")
    a = p.parse_args(args)
    try:
        cfg = common.config()
        state = common.http_json("GET", common.url(cfg, "twin") + "/state")
    except common.SandboxError as e:
        print(f"model_performance_monitor: cannot read the orchestrator's metrics: {e}", file=sys.stderr)
        return 1
    rows = []
    for specialist in scenarios.SPECIALISTS:
        s = state["specialists"].get(specialist)
        if s is None:
            continue
        if a.specialist_type not in ("all", specialist):
            continue
        rows.append(
            {
                "specialist_type": specialist,
                "model": s["model"],
                "model_version": s.get("version"),
                "f1": s.get("f1"),
                "performance_score": s.get("score"),
                "degraded": bool(s.get("degraded")),
                "reasons": s.get("reasons", []),
            }
        )
    report = {
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "specialists": rows,
        "degraded": [r["specialist_type"] for r in rows if r["degraded"]],
    }
    if a.output_format == "json":
        print(json.dumps(report))
    else:
        print(f"Model performance report ({report['generated_at']})")
        for r in rows:
            flag = "DEGRADED" if r["degraded"] else "ok"
            print(
                f"  {r['specialist_type']:<10} {r['model']} v{r['model_version']}: f1={r['f1']} "
                f"score={r['performance_score']} {flag} {'; '.join(r['reasons'])}"
            )
    return 0

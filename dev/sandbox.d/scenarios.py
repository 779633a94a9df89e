"""The sandbox's scenarios: the hidden truth of each, as data (README.md tells the stories).

Per specialist:
  versions    oldest first; the last one serves (Production), the others are Archived. Each is
              {train_f1, live_f1, age_h}: the F1 its training run logged, the F1 it really gets on
              today's traffic (tag sandbox.live_f1), and how many hours ago it was deployed.
  curve       live F1 of the serving model over time, [(hours_ago, f1)] oldest first; its value at
              0 is the Production version's live_f1.
  confidence  the distribution opinions' confidence scores are drawn from: ((lo, hi, weight), ...).
  retrain     {live_f1, train_f1}: the version auto_retrain.py registers.
  feedback_bias  a positive share that overrides the quality-driven one (a labelling bug).
Scenario: config (the ConfigMap's data over the defaults), config_history ([(hours_ago, key,
value_before)]), logs (pod log lines, relative times).
"""

import copy

SPECIALISTS = ("technical", "security", "business")

# Confident: 90% of predictions at or above the default threshold 0.75.
CONFIDENT = ((0.50, 0.70, 0.05), (0.70, 0.75, 0.05), (0.75, 0.85, 0.35), (0.85, 0.99, 0.55))
# A degrading model hesitates more: 70% at or above 0.75.
UNSURE = ((0.50, 0.70, 0.20), (0.70, 0.75, 0.10), (0.75, 0.85, 0.40), (0.85, 0.99, 0.30))
# Right, but modest confidence: 70% in [0.5, 0.7), most of them 0.65-0.70.
HESITANT = ((0.50, 0.65, 0.15), (0.65, 0.70, 0.55), (0.70, 0.85, 0.15), (0.85, 0.95, 0.15))

HEALTHY_F1 = {"technical": 0.86, "security": 0.87, "business": 0.85}

BASE_LOGS = [
    "-3600s INFO orchestrator-dynamic 2.14.0 starting; loading specialists from MLflow (stage Production)",
    "-3590s INFO loaded technical_specialist, security_specialist, business_specialist",
    "-1800s INFO prediction served specialist=technical confidence=0.84 decision=approve",
    "-1200s INFO prediction served specialist=security confidence=0.91 decision=reject",
    "-900s INFO health check ok",
    "-600s INFO prediction served specialist=business confidence=0.79 decision=approve",
    "-300s INFO feedback batch stored in neural_hive.ml_feedback",
    "-60s INFO health check ok",
]


def healthy_specialist(name):
    live = HEALTHY_F1[name]
    return {
        "versions": [
            {"train_f1": 0.82, "live_f1": round(live - 0.06, 2), "age_h": 150 * 24},
            {"train_f1": 0.85, "live_f1": round(live - 0.03, 2), "age_h": 90 * 24},
            {"train_f1": 0.88, "live_f1": live, "age_h": 30 * 24},
        ],
        "curve": [(24.0, live), (0.0, live)],
        "confidence": CONFIDENT,
        "retrain": {"live_f1": 0.86, "train_f1": 0.88},
        "feedback_bias": None,
    }


def drifting(start, end, hours, older, train, retrain_live=0.86, retrain_train=0.88, dist=UNSURE):
    """A model whose live F1 fell linearly from start to end over the last `hours` (data drift:
    older versions do no better on today's traffic)."""
    return {
        "versions": [
            {"train_f1": round(train - 0.07, 2), "live_f1": round(older - 0.05, 2), "age_h": 150 * 24},
            {"train_f1": round(train - 0.03, 2), "live_f1": older, "age_h": 90 * 24},
            {"train_f1": train, "live_f1": end, "age_h": 30 * 24},
        ],
        "curve": [(24.0, start), (float(hours), start), (0.0, end)],
        "confidence": dist,
        "retrain": {"live_f1": retrain_live, "train_f1": retrain_train},
        "feedback_bias": None,
    }


def scenario(summary, **specialists):
    s = {
        "summary": summary,
        "config": {},
        "config_history": [],
        "logs": list(BASE_LOGS),
        "specialists": {n: healthy_specialist(n) for n in SPECIALISTS},
    }
    s["specialists"].update(specialists)
    return s


def _build():
    out = {}
    out["healthy"] = scenario("every specialist healthy; no alert fires")

    s = scenario(
        "technical F1 0.82->0.68 and business 0.80->0.70 over 6 h (drift); retrain -> 0.86",
        technical=drifting(0.82, 0.68, 6, older=0.65, train=0.87),
        business=drifting(0.80, 0.70, 6, older=0.66, train=0.86),
    )
    s["logs"] += [
        "-1500s WARNING low confidence prediction escalated specialist=technical confidence=0.62",
        "-700s ERROR prediction mismatch rate rising specialist=technical window=1h rate=0.31",
        "-400s WARNING low confidence prediction escalated specialist=business confidence=0.66",
        "-120s ERROR Exception in feature extraction: unseen category 'edge-gateway' (technical)",
    ]
    out["gradual"] = s

    sec = healthy_specialist("security")
    sec["versions"] = [
        {"train_f1": 0.80, "live_f1": 0.78, "age_h": 200 * 24},
        {"train_f1": 0.83, "live_f1": 0.80, "age_h": 150 * 24},
        {"train_f1": 0.84, "live_f1": 0.82, "age_h": 90 * 24},
        {"train_f1": 0.86, "live_f1": 0.84, "age_h": 30 * 24},
        {"train_f1": 0.89, "live_f1": 0.66, "age_h": 2},
    ]
    sec["curve"] = [(24.0, 0.84), (2.0, 0.84), (1.99, 0.66), (0.0, 0.66)]
    s = scenario("security v5 deployed 2 h ago: training f1 0.89, live 0.66; rollback to v4 -> 0.84", security=sec)
    s["logs"] += [
        "-7200s INFO model reload: security_specialist version 5 (stage Production)",
        "-7100s WARNING prediction distribution shift after reload specialist=security",
        "-3000s ERROR prediction failed validation specialist=security reason=label_out_of_range",
        "-200s ERROR prediction failed validation specialist=security reason=label_out_of_range",
    ]
    out["sudden-after-deploy"] = s

    s = scenario(
        "technical F1 0.80->0.55 over 6 h; fallback lifts its score to 0.66 (still degraded); retrain -> 0.86",
        technical=drifting(0.80, 0.55, 6, older=0.52, train=0.85),
    )
    s["logs"] += [
        "-2400s ERROR prediction failed: model returned NaN probabilities specialist=technical",
        "-900s ERROR Exception: feature 'service_tier' missing in 12% of requests (technical)",
        "-100s ERROR prediction failed: model returned NaN probabilities specialist=technical",
    ]
    out["severe"] = s

    specs = {}
    for name, f1 in (("technical", 0.84), ("security", 0.85), ("business", 0.83)):
        h = healthy_specialist(name)
        h["versions"][-1]["live_f1"] = f1
        h["curve"] = [(24.0, f1), (0.0, f1)]
        h["confidence"] = HESITANT
        specs[name] = h
    s = scenario("ML_CONFIDENCE_THRESHOLD raised 0.65 -> 0.90 3 h ago: scores ~0.55 with good F1; 0.65 + restart -> >= 0.75", **specs)
    s["config"] = {"ML_CONFIDENCE_THRESHOLD": "0.90"}
    s["config_history"] = [(3.0, "ML_CONFIDENCE_THRESHOLD", "0.65")]
    s["logs"] += [
        "-10800s INFO config reloaded: ML_CONFIDENCE_THRESHOLD=0.90",
        "-1000s INFO prediction escalated (confidence 0.68 < threshold 0.90) specialist=business",
        "-500s INFO prediction escalated (confidence 0.67 < threshold 0.90) specialist=technical",
    ]
    out["threshold-too-high"] = s

    specs = {}
    for name, train in (("technical", 0.91), ("business", 0.90)):
        d = drifting(0.74, 0.69, 6, older=0.70, train=train, retrain_live=0.69, retrain_train=0.93)
        d["feedback_bias"] = 0.96
        specs[name] = d
    for name in ("security",):
        h = healthy_specialist(name)
        h["feedback_bias"] = 0.96
        specs[name] = h
    s = scenario("technical and business F1 ~0.69; ml_feedback 96% positive (labelling bug); retrain -> 0.69", **specs)
    s["logs"] += [
        "-5000s WARNING feedback labeller: default label 'positive' applied to 1832 unlabelled items",
        "-400s ERROR prediction mismatch rate rising specialist=business window=1h rate=0.29",
    ]
    out["bad-training-data"] = s

    s = copy.deepcopy(out["gradual"])
    s["summary"] = "like gradual, but retraining does not help: post-retrain live F1 stays 0.68 / 0.70"
    s["specialists"]["technical"]["retrain"] = {"live_f1": 0.68, "train_f1": 0.88}
    s["specialists"]["business"]["retrain"] = {"live_f1": 0.70, "train_f1": 0.87}
    out["fix-does-not-help"] = s
    return out


SCENARIOS = _build()
DEFAULT = "gradual"


def get(name):
    if name not in SCENARIOS:
        raise KeyError(f"unknown scenario {name!r}; scenarios: {', '.join(SCENARIOS)}")
    return SCENARIOS[name]

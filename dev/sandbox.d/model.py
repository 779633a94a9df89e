"""The twin's pure functions: what the orchestrator would measure, given the hidden truth.

No I/O here: twin.py, seed.py, status.py and the pod scripts call these, and test_model.py checks
them. The formulas are documented in README.md ("Formulas"); the numbers are chosen so the brief's
scenarios land where it says (healthy score ~0.80, a hesitant model under a 0.90 threshold ~0.55).
"""

import hashlib
import json

F1_MIN = 0.72  # MLModelLowF1Score
SCORE_MIN = 0.65  # MLModelLowPerformance
HEURISTIC_SCORE = 0.66  # what the fallback heuristics achieve when they take over
DEFAULT_CONFIG = {
    "ML_CONFIDENCE_THRESHOLD": "0.75",
    "ML_FALLBACK_ENABLED": "false",
    "ML_FALLBACK_THRESHOLD": "0.5",
}


def coverage(dist, threshold):
    """Share of predictions whose confidence is >= threshold (acted on).

    dist: ((lo, hi, weight), ...), uniform inside each bucket, weights summing to 1.
    """
    total = 0.0
    for lo, hi, w in dist:
        if threshold <= lo:
            total += w
        elif threshold < hi:
            total += w * (hi - threshold) / (hi - lo)
    return total


def parse_config(config):
    """(threshold, fallback_enabled, fallback_threshold) from ConfigMap-style strings; a value that
    does not parse counts as its default, as a lenient service would read it."""
    merged = dict(DEFAULT_CONFIG)
    merged.update({k: v for k, v in (config or {}).items() if v is not None})

    def number(key):
        try:
            return float(merged[key])
        except (TypeError, ValueError):
            return float(DEFAULT_CONFIG[key])

    enabled = str(merged["ML_FALLBACK_ENABLED"]).strip().lower() in ("true", "1", "yes")
    return number("ML_CONFIDENCE_THRESHOLD"), enabled, number("ML_FALLBACK_THRESHOLD")


def fallback_active(f1, config):
    _, enabled, fb_threshold = parse_config(config)
    return enabled and f1 < fb_threshold


def performance_score(f1, config, dist):
    """neural_hive_model_performance_score.

    A prediction under the confidence threshold is not acted on (escalated to a human), which costs
    value: score = f1 * (0.6 + 0.4 * coverage). With fallback on and f1 under the fallback
    threshold, heuristics answer instead of the model: score = HEURISTIC_SCORE.
    """
    if fallback_active(f1, config):
        return HEURISTIC_SCORE
    threshold, _, _ = parse_config(config)
    return f1 * (0.6 + 0.4 * coverage(dist, threshold))


def degraded(f1, score):
    return f1 < F1_MIN or score < SCORE_MIN


def positive_share(f1, config, dist, bias=None):
    """Share of `positive` user feedback.

    Follows the quality users get (the model's F1, or the heuristics' when fallback answers), plus
    a little for selectivity: only confident predictions are acted on, and those are right more
    often. `bias` (a labelling bug) overrides it.
    """
    if bias is not None:
        return bias
    threshold, _, _ = parse_config(config)
    quality = HEURISTIC_SCORE if fallback_active(f1, config) else f1
    share = 0.76 + 1.2 * (quality - 0.86) + 0.15 * (1.0 - coverage(dist, threshold))
    return min(0.98, max(0.05, share))


def metrics(f1, config, dist):
    """The three exported values of one specialist, rounded as exported."""
    score = performance_score(f1, config, dist)
    return {
        "f1": round(f1, 4),
        "score": round(score, 4),
        "degraded": degraded(round(f1, 4), round(score, 4)),
    }


class Dither:
    """Deterministic feedback labels whose positive share over any window is within one document
    of `share` (error diffusion): repeatable, and a one-minute window already tells 60% from 80%."""

    def __init__(self):
        self.acc = 0.5

    def next(self, share):
        self.acc += share
        if self.acc >= 1.0:
            self.acc -= 1.0
            return "positive"
        return "negative"


def draw_confidence(rng, dist):
    """One confidence score from dist with the seeded random.Random rng."""
    x = rng.random()
    for lo, hi, w in dist:
        if x < w:
            return round(lo + (hi - lo) * rng.random(), 4)
        x -= w
    lo, hi, _ = dist[-1]
    return round(lo + (hi - lo) * rng.random(), 4)


def decision(rng, confidence, threshold):
    if confidence < threshold:
        return "escalated"
    return "approve" if rng.random() < 0.7 else "reject"


# ---------------------------------------------------------------------------------------------
# Effective configuration: what the pods read when they last started.


def template_hash(deployment):
    template = (deployment.get("spec") or {}).get("template") or {}
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def rollout_complete(deployment):
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    meta = deployment.get("metadata") or {}
    want = spec.get("replicas", 1)
    return (
        status.get("observedGeneration") == meta.get("generation")
        and status.get("updatedReplicas", 0) == want
        and status.get("availableReplicas", 0) == want
        and status.get("replicas", 0) == want
    )


def adopt(state, deployment, configmap_data):
    """The next effective-config state after looking at the Deployment and the ConfigMap.

    state: {"template": hash of the pod template the effective config belongs to, "config": {..}}.
    Pods read the ConfigMap when they start, so only a new pod template (a rollout restart, an
    image change) whose rollout has completed adopts the ConfigMap as it is now; a ConfigMap patch
    alone, or a scale, changes nothing.
    """
    current = template_hash(deployment)
    if current != state["template"] and rollout_complete(deployment):
        return {"template": current, "config": dict(configmap_data or {})}
    return state


# ---------------------------------------------------------------------------------------------
# History: the scenario's story, before "now".


def interpolate(keyframes, hours_ago):
    """Piecewise-linear value at hours_ago from [(hours_ago, value), ...] sorted oldest first
    (largest hours_ago first). Outside the range: the nearest end's value."""
    if hours_ago >= keyframes[0][0]:
        return keyframes[0][1]
    for (h0, v0), (h1, v1) in zip(keyframes, keyframes[1:]):
        if h1 <= hours_ago <= h0:
            if h0 == h1:
                return v1
            return v0 + (v1 - v0) * (h0 - hours_ago) / (h0 - h1)
    return keyframes[-1][1]


def config_at(scenario, hours_ago):
    """The effective config hours_ago: the scenario's config, with earlier values where its
    config_history says a key changed later ([(changed_hours_ago, key, value_before)])."""
    config = dict(DEFAULT_CONFIG)
    config.update(scenario.get("config", {}))
    for changed, key, before in scenario.get("config_history", ()):
        if hours_ago > changed:
            config[key] = before
    return config


def history(scenario, end, hours, step):
    """(timestamp, specialist, values) for every `step` seconds over the `hours` ending at `end`
    (unix seconds), oldest first; values as metrics() gives, plus the positive feedback share."""
    out = []
    start = end - int(hours * 3600)
    for t in range(start, end + 1, step):
        ago = (end - t) / 3600.0
        config = config_at(scenario, ago)
        for name, spec in scenario["specialists"].items():
            f1 = interpolate(spec["curve"], ago)
            values = metrics(f1, config, spec["confidence"])
            values["positive_share"] = positive_share(f1, config, spec["confidence"], spec.get("feedback_bias"))
            values["threshold"] = parse_config(config)[0]
            out.append((t, name, values))
    return out


def openmetrics(points, labels):
    """OpenMetrics text (for promtool tsdb create-blocks-from openmetrics) of the three gauges from
    history() points; `labels` are the ones the live scrape adds (job, instance)."""
    extra = "".join(f',{k}="{v}"' for k, v in sorted(labels.items()))
    series = {
        "neural_hive_mlflow_model_f1": lambda v: v["f1"],
        "neural_hive_model_performance_score": lambda v: v["score"],
        "neural_hive_model_degradation_detected": lambda v: 1 if v["degraded"] else 0,
    }
    lines = []
    # OpenMetrics wants each metric family's samples together, each series in time order.
    for name, get in series.items():
        lines.append(f"# TYPE {name} gauge")
        by_specialist = {}
        for t, specialist, values in points:
            by_specialist.setdefault(specialist, []).append((t, get(values)))
        for specialist in sorted(by_specialist):
            for t, v in by_specialist[specialist]:
                lines.append(f'{name}{{specialist_type="{specialist}"{extra}}} {v} {t}')
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def expected_alerts(scenario):
    """{(alertname, specialist)} the scenario's live values fire at `up`."""
    out = set()
    config = config_at(scenario, 0)
    for name, spec in scenario["specialists"].items():
        live = spec["versions"][-1]["live_f1"]
        m = metrics(live, config, spec["confidence"])
        if m["f1"] < F1_MIN:
            out.add(("MLModelLowF1Score", name))
        if m["score"] < SCORE_MIN:
            out.add(("MLModelLowPerformance", name))
        if m["degraded"]:
            out.add(("MLModelDegraded", name))
    return out

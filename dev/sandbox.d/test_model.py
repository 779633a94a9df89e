"""Unit tests of the twin's pure functions (model.py) and the scenarios' consistency.

    python3 -m unittest discover -s dev/sandbox.d
"""

import random
import unittest

import model
import scenarios
from pod import dispatch

DEFAULT = dict(model.DEFAULT_CONFIG)


def deployment(generation, restarted=None, observed=None, updated=2, available=2, replicas=2):
    annotations = {"kubectl.kubernetes.io/restartedAt": restarted} if restarted else {}
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": 2, "template": {"metadata": {"annotations": annotations}}},
        "status": {
            "observedGeneration": generation if observed is None else observed,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "replicas": replicas,
        },
    }


class Score(unittest.TestCase):
    def test_coverage_counts_the_share_at_or_above_the_threshold(self):
        dist = ((0.0, 0.5, 0.5), (0.5, 1.0, 0.5))
        self.assertAlmostEqual(model.coverage(dist, 0.5), 0.5)
        self.assertAlmostEqual(model.coverage(dist, 0.75), 0.25)
        self.assertAlmostEqual(model.coverage(dist, 0.0), 1.0)
        self.assertAlmostEqual(model.coverage(dist, 1.0), 0.0)

    def test_healthy_model_scores_about_0_80(self):
        score = model.performance_score(0.86, DEFAULT, scenarios.CONFIDENT)
        self.assertTrue(0.78 <= score <= 0.84, score)
        self.assertFalse(model.degraded(0.86, score))

    def test_a_high_threshold_sinks_a_good_but_hesitant_model(self):
        high = {"ML_CONFIDENCE_THRESHOLD": "0.90"}
        score = model.performance_score(0.84, high, scenarios.HESITANT)
        self.assertTrue(0.50 <= score < model.SCORE_MIN, score)
        lowered = model.performance_score(0.84, {"ML_CONFIDENCE_THRESHOLD": "0.65"}, scenarios.HESITANT)
        self.assertGreaterEqual(lowered, 0.75)

    def test_fallback_lifts_the_score_of_a_bad_model_only(self):
        on = {"ML_FALLBACK_ENABLED": "true", "ML_FALLBACK_THRESHOLD": "0.65"}
        self.assertEqual(model.performance_score(0.55, on, scenarios.UNSURE), model.HEURISTIC_SCORE)
        m = model.metrics(0.55, on, scenarios.UNSURE)
        self.assertEqual(m["f1"], 0.55)
        self.assertTrue(m["degraded"], "f1 stays under 0.72: still degraded")
        # A model above the fallback threshold still answers itself.
        self.assertNotEqual(model.performance_score(0.86, on, scenarios.UNSURE), model.HEURISTIC_SCORE)
        # Fallback off: the bad model answers.
        self.assertLess(model.performance_score(0.55, DEFAULT, scenarios.UNSURE), 0.5)

    def test_unparsable_config_values_count_as_defaults(self):
        self.assertEqual(model.parse_config({"ML_CONFIDENCE_THRESHOLD": "high"}), (0.75, False, 0.5))
        self.assertEqual(model.parse_config({"ML_FALLBACK_ENABLED": "True"})[1], True)

    def test_degraded_is_f1_or_score(self):
        self.assertTrue(model.degraded(0.71, 0.9))
        self.assertTrue(model.degraded(0.9, 0.64))
        self.assertFalse(model.degraded(0.72, 0.65))


class Feedback(unittest.TestCase):
    def test_positive_share_follows_quality(self):
        degraded = model.positive_share(0.68, DEFAULT, scenarios.UNSURE)
        recovered = model.positive_share(0.86, DEFAULT, scenarios.UNSURE)
        self.assertTrue(0.55 <= degraded <= 0.62, degraded)
        self.assertGreaterEqual(recovered, 0.70)

    def test_selective_model_gets_mostly_positive_feedback(self):
        share = model.positive_share(0.84, {"ML_CONFIDENCE_THRESHOLD": "0.90"}, scenarios.HESITANT)
        self.assertTrue(0.83 <= share <= 0.90, share)

    def test_a_labelling_bias_overrides_quality(self):
        self.assertEqual(model.positive_share(0.5, DEFAULT, scenarios.UNSURE, bias=0.96), 0.96)

    def test_dither_keeps_every_window_within_one_document(self):
        d = model.Dither()
        labels = [d.next(0.6) for _ in range(600)]
        for start in range(0, 540, 37):
            window = labels[start : start + 60]
            self.assertLessEqual(abs(window.count("positive") - 36), 1)

    def test_draws_are_seeded_and_inside_the_distribution(self):
        a = [model.draw_confidence(random.Random("s"), scenarios.HESITANT) for _ in range(3)]
        b = [model.draw_confidence(random.Random("s"), scenarios.HESITANT) for _ in range(3)]
        self.assertEqual(a, b)
        rng = random.Random(1)
        draws = [model.draw_confidence(rng, scenarios.HESITANT) for _ in range(4000)]
        self.assertTrue(all(0.5 <= x <= 0.95 for x in draws))
        share = sum(0.5 <= x < 0.7 for x in draws) / len(draws)
        self.assertAlmostEqual(share, 0.70, delta=0.03)


class EffectiveConfig(unittest.TestCase):
    def setUp(self):
        self.state = {"template": model.template_hash(deployment(1)), "config": dict(DEFAULT)}
        self.patched = dict(DEFAULT, ML_CONFIDENCE_THRESHOLD="0.65")

    def test_a_configmap_patch_alone_changes_nothing(self):
        self.assertEqual(model.adopt(self.state, deployment(1), self.patched), self.state)

    def test_a_rollout_in_progress_changes_nothing(self):
        rolling = deployment(2, restarted="2026-01-01T00:00:00Z", observed=1, updated=1)
        self.assertEqual(model.adopt(self.state, rolling, self.patched)["config"], DEFAULT)

    def test_a_completed_restart_adopts_the_configmap(self):
        done = deployment(2, restarted="2026-01-01T00:00:00Z")
        after = model.adopt(self.state, done, self.patched)
        self.assertEqual(after["config"]["ML_CONFIDENCE_THRESHOLD"], "0.65")
        # Adopted once: a later patch waits for the next restart.
        again = model.adopt(after, done, dict(DEFAULT, ML_CONFIDENCE_THRESHOLD="0.99"))
        self.assertEqual(again["config"]["ML_CONFIDENCE_THRESHOLD"], "0.65")

    def test_a_scale_keeps_the_pods_and_their_config(self):
        scaled = deployment(2)
        scaled["spec"]["replicas"] = 2
        self.assertEqual(model.adopt(self.state, scaled, self.patched)["config"], DEFAULT)


class History(unittest.TestCase):
    def test_interpolate(self):
        frames = [(24.0, 0.82), (6.0, 0.82), (0.0, 0.68)]
        self.assertAlmostEqual(model.interpolate(frames, 30), 0.82)
        self.assertAlmostEqual(model.interpolate(frames, 6), 0.82)
        self.assertAlmostEqual(model.interpolate(frames, 3), 0.75)
        self.assertAlmostEqual(model.interpolate(frames, 0), 0.68)

    def test_every_scenario_ends_its_history_at_the_serving_versions_live_f1(self):
        for name, s in scenarios.SCENARIOS.items():
            for specialist, spec in s["specialists"].items():
                with self.subTest(scenario=name, specialist=specialist):
                    self.assertAlmostEqual(model.interpolate(spec["curve"], 0.0), spec["versions"][-1]["live_f1"])
                    self.assertGreaterEqual(len(spec["versions"]), 3)
                    self.assertAlmostEqual(sum(w for _, _, w in spec["confidence"]), 1.0)

    def test_gradual_declines_and_sudden_steps(self):
        points = model.history(scenarios.get("gradual"), 36000, 7, 60)
        tech = [v["f1"] for _, s, v in points if s == "technical"]
        self.assertEqual(len(tech), 7 * 60 + 1)
        self.assertEqual((tech[0], tech[-1]), (0.82, 0.68))
        self.assertTrue(all(a >= b for a, b in zip(tech, tech[1:])))
        points = model.history(scenarios.get("sudden-after-deploy"), 36000, 7, 60)
        sec = [(t, v["f1"]) for t, s, v in points if s == "security"]
        self.assertEqual({f for t, f in sec if t < 36000 - 7200}, {0.84})
        self.assertEqual({f for t, f in sec if t > 36000 - 7100}, {0.66})

    def test_threshold_history_is_in_the_scores(self):
        s = scenarios.get("threshold-too-high")
        self.assertEqual(model.config_at(s, 4)["ML_CONFIDENCE_THRESHOLD"], "0.65")
        self.assertEqual(model.config_at(s, 1)["ML_CONFIDENCE_THRESHOLD"], "0.90")
        points = model.history(s, 36000, 7, 600)
        before = [v["score"] for t, n, v in points if t < 36000 - 3 * 3600]
        after = [v["score"] for t, n, v in points if t > 36000 - 3 * 3600]
        self.assertGreater(min(before), 0.7)
        self.assertLess(max(after), 0.6)

    def test_openmetrics_carries_the_live_scrapes_labels_in_series_order(self):
        points = model.history(scenarios.get("healthy"), 600, 0.05, 60)
        text = model.openmetrics(points, {"job": "orchestrator-dynamic", "instance": "127.0.0.1:29100"})
        self.assertTrue(text.endswith("# EOF\n"))
        self.assertIn(
            'neural_hive_mlflow_model_f1{specialist_type="technical",instance="127.0.0.1:29100",job="orchestrator-dynamic"} 0.86 420',
            text,
        )
        lines = [ln for ln in text.splitlines() if ln.startswith("neural_hive_model_degradation_detected{")]
        self.assertEqual(len(lines), 3 * 4)
        self.assertTrue(all(ln.split()[1] == "0" for ln in lines))

    def test_expected_alerts(self):
        self.assertEqual(model.expected_alerts(scenarios.get("healthy")), set())
        self.assertEqual(
            model.expected_alerts(scenarios.get("sudden-after-deploy")),
            {("MLModelDegraded", "security"), ("MLModelLowF1Score", "security"), ("MLModelLowPerformance", "security")},
        )
        thr = model.expected_alerts(scenarios.get("threshold-too-high"))
        self.assertEqual({a for a, _ in thr}, {"MLModelDegraded", "MLModelLowPerformance"})


class PodDispatch(unittest.TestCase):
    def test_the_seeds_commands_resolve(self):
        self.assertEqual(
            dispatch.resolve(["python", "ml_pipelines/monitoring/model_performance_monitor.py", "--specialist-type", "all"]),
            ("model_performance_monitor", ["--specialist-type", "all"]),
        )
        self.assertEqual(
            dispatch.resolve(["python", "-m", "services.orchestrator_dynamic.src.ml.model_promotion", "rollback"]),
            ("model_promotion", ["rollback"]),
        )
        self.assertIsNone(dispatch.resolve(["python", "-c", "print(1)"]))
        self.assertIsNone(dispatch.resolve(["ls"]))


if __name__ == "__main__":
    unittest.main()

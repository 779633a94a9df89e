//! The step rules on plain data: a plan, a journal folded into state, a time. No I/O.

use super::{Effect, Prep, Prepared};
use crate::expr::Expr;
use crate::run::event::Event;
use crate::run::state::RunState;
use crate::runbook::plan::Plan;
use crate::runbook::validate::check;
use runbook_steps::{ErrorKind, Registry, SideEffect, StepError};
use serde_json::{Map, Value, json};

struct World {
    plan: Plan,
    registry: Registry,
    expr: Expr,
    base: Map<String, Value>,
    events: Vec<Event>,
    planning: bool,
}

impl World {
    fn new(yaml: &str) -> World {
        let registry = Registry::builtin();
        let expr = Expr::new();
        let plan = match check("t.yaml", yaml, &registry, &expr) {
            Ok(p) => p,
            Err(r) => panic!("invalid test runbook:\n{}", r.render(false)),
        };
        let mut base = Map::new();
        base.insert("params".into(), json!({}));
        base.insert("vars".into(), json!({}));
        base.insert("connections".into(), json!({}));
        base.insert("run".into(), json!({"id": "r"}));
        World {
            plan,
            registry,
            expr,
            base,
            events: Vec::new(),
            planning: false,
        }
    }

    fn i(&self, id: &str) -> usize {
        self.plan.index[id]
    }

    /// Applies `f` to the rules over the journal so far, and journals the events it returns.
    fn with<T>(&mut self, f: impl FnOnce(&Prep<'_>) -> T) -> T {
        let state = RunState::fold(&self.plan, &self.events);
        let prep = Prep {
            plan: &self.plan,
            state: &state,
            expr: &self.expr,
            registry: &self.registry,
            base: &self.base,
            planning: self.planning,
        };
        f(&prep)
    }

    fn start(&mut self, id: &str, now: i64) -> Prepared {
        let i = self.i(id);
        let p = self.with(|r| r.start(i, now));
        self.events.extend(p.events.clone());
        p
    }

    fn push(&mut self, e: Event) {
        self.events.push(e);
    }

    fn succeed(&mut self, id: &str, result: Value) {
        let i = self.i(id);
        let attempt = self.with(|r| r.state.steps[i].attempt);
        let e = self.with(|r| r.succeed(i, attempt, result, 0));
        self.push(e);
    }
}

fn kinds(p: &Prepared) -> Vec<&'static str> {
    p.events.iter().map(Event::kind).collect()
}

#[test]
fn a_false_guard_skips_with_the_values_it_read_and_a_broken_one_fails_as_input() {
    let mut w = World::new(
        "
name: g
steps:
  - { id: a, uses: flow.noop, outputs: { n: '{{ 3 }}' } }
  - { id: b, uses: flow.noop, needs: a, when: 'steps.a.n > 5' }
  - { id: c, uses: flow.noop, needs: a, when: 'steps.a.n // 0 > 1' }
",
    );
    w.start("a", 0);
    w.succeed("a", json!({}));
    let p = w.start("b", 1);
    assert_eq!(kinds(&p), ["guard_evaluated", "step_skipped"]);
    let Event::GuardEvaluated { holds, values, .. } = &p.events[0] else {
        panic!("{p:?}")
    };
    assert!(!holds);
    assert_eq!(values["steps.a.n"], json!(3));
    let p = w.start("c", 2);
    assert_eq!(kinds(&p), ["step_started", "step_failed"]);
    let Event::StepFailed { kind, error, .. } = &p.events[1] else {
        panic!("{p:?}")
    };
    assert_eq!(*kind, ErrorKind::Input);
    assert!(error.starts_with("`when`"), "{error}");
}

#[test]
fn a_branch_takes_the_first_true_case_or_its_default() {
    let yaml = "
name: b
steps:
  - { id: d, uses: flow.noop, outputs: { f1: '{{ 0.6 }}' } }
  - id: choose
    uses: flow.branch
    needs: d
    with:
      cases:
        - { when: 'steps.d.f1 < 0.5', then: severe }
        - { when: 'steps.d.f1 < 0.7', then: mild }
      default: fine
  - { id: severe, uses: flow.noop }
  - { id: mild, uses: flow.noop }
  - { id: fine, uses: flow.noop }
";
    let mut w = World::new(yaml);
    w.start("d", 0);
    w.succeed("d", json!({}));
    let p = w.start("choose", 1);
    assert_eq!(
        kinds(&p),
        ["step_started", "decision_taken", "step_succeeded"]
    );
    let Event::DecisionTaken {
        case,
        taken,
        not_taken,
        values,
        ..
    } = &p.events[1]
    else {
        panic!("{p:?}")
    };
    assert_eq!(*case, Some(1));
    assert_eq!(taken, &["mild"]);
    assert_eq!(not_taken, &["severe", "fine"]);
    assert_eq!(values["steps.d.f1"], json!(0.6));

    let mut w = World::new(&yaml.replace("0.6", "0.9"));
    w.start("d", 0);
    w.succeed("d", json!({}));
    let p = w.start("choose", 1);
    let Event::DecisionTaken { case, taken, .. } = &p.events[1] else {
        panic!("{p:?}")
    };
    assert_eq!((*case, taken.as_slice()), (None, &["fine".to_string()][..]));
}

#[test]
fn a_failed_assert_is_a_condition_failure_with_its_message() {
    let mut w = World::new(
        "
name: a
steps:
  - { id: d, uses: flow.noop, outputs: { n: '{{ 1 }}' } }
  - { id: check, uses: flow.assert, needs: d, with: { that: 'steps.d.n >= 2', message: 'only {{ steps.d.n }}' } }
",
    );
    w.start("d", 0);
    w.succeed("d", json!({}));
    let p = w.start("check", 1);
    let Event::StepFailed { kind, error, .. } = &p.events[1] else {
        panic!("{p:?}")
    };
    assert_eq!((*kind, error.as_str()), (ErrorKind::Condition, "only 1"));
}

#[test]
fn a_retryable_failure_gets_its_backoff_time_and_the_last_attempt_none() {
    let mut w = World::new(
        "
name: r
steps:
  - { id: a, uses: flow.noop, retry: { attempts: 2, backoff: { initial: 2s } } }
",
    );
    w.start("a", 0);
    let i = w.i("a");
    let retried = w.with(|r| r.fail(i, 1, StepError::new(ErrorKind::Connect, "no"), 1_000));
    assert!(
        matches!(
            retried,
            Event::StepFailed {
                retry_at_ms: Some(3_000),
                ..
            }
        ),
        "{retried:?}"
    );
    let input = w.with(|r| r.fail(i, 1, StepError::new(ErrorKind::Input, "bad"), 1_000));
    assert!(
        matches!(
            input,
            Event::StepFailed {
                retry_at_ms: None,
                ..
            }
        ),
        "{input:?}"
    );
    let last = w.with(|r| r.fail(i, 2, StepError::new(ErrorKind::Connect, "no"), 1_000));
    assert!(
        matches!(
            last,
            Event::StepFailed {
                retry_at_ms: None,
                ..
            }
        ),
        "{last:?}"
    );
}

#[test]
fn a_call_gets_its_deadline_and_a_rerun_attempt_keeps_the_first_one() {
    let mut w = World::new(
        "
name: t
steps:
  - { id: a, uses: shell.run, side_effect: read, timeout: 5s, with: { argv: [\"true\"] } }
",
    );
    let p = w.start("a", 10_000);
    assert!(
        matches!(
            p.effect,
            Effect::Call {
                deadline_ms: Some(15_000),
                class: SideEffect::Read,
                ..
            }
        ),
        "{p:?}"
    );
    // The engine died; the attempt is re-run later and keeps its deadline.
    w.push(Event::StepRecovered {
        step: "a".into(),
        attempt: 1,
        outcome: crate::run::event::Recovery::Rerun,
    });
    let p = w.start("a", 12_000);
    assert!(
        matches!(
            p.effect,
            Effect::Call {
                deadline_ms: Some(15_000),
                ..
            }
        ),
        "{p:?}"
    );
}

#[test]
fn an_approval_is_requested_then_the_grant_runs_and_a_denial_fails_the_attempt() {
    let yaml = "
name: ap
steps:
  - { id: a, uses: shell.run, approval: required, with: { argv: [touch, x] } }
";
    let mut w = World::new(yaml);
    let p = w.start("a", 0);
    assert!(p.events.is_empty());
    let Effect::RequestApproval { request, class, .. } = p.effect else {
        panic!("{p:?}")
    };
    assert_eq!(class, SideEffect::Unsafe);
    w.push(request);
    w.push(Event::ApprovalGranted {
        step: "a".into(),
        by: "bob".into(),
        how: "cli".into(),
        comment: None,
    });
    let p = w.start("a", 1);
    assert!(matches!(p.effect, Effect::Call { .. }), "{p:?}");

    let mut w = World::new(yaml);
    let Effect::RequestApproval { request, .. } = w.start("a", 0).effect else {
        panic!("no request")
    };
    w.push(request);
    w.push(Event::ApprovalDenied {
        step: "a".into(),
        by: "carol".into(),
        how: "cli".into(),
        reason: "peak hours".into(),
    });
    let p = w.start("a", 1);
    assert_eq!(kinds(&p), ["step_started", "step_failed"]);
    let Event::StepFailed { kind, error, .. } = &p.events[1] else {
        panic!("{p:?}")
    };
    assert_eq!(*kind, ErrorKind::Approval);
    assert_eq!(error, "denied by carol: peak hours");
}

#[test]
fn a_plan_describes_changes_and_waits_but_runs_reads() {
    let mut w = World::new(
        "
name: p
steps:
  - { id: look, uses: shell.run, side_effect: read, with: { argv: [\"true\"] } }
  - { id: act, uses: shell.run, approval: required, with: { argv: [touch, x] } }
  - { id: nap, uses: flow.sleep, with: { for: 1h } }
",
    );
    w.planning = true;
    assert!(matches!(w.start("look", 0).effect, Effect::Call { .. }));
    let p = w.start("act", 0);
    assert!(
        matches!(
            p.effect,
            Effect::Plan {
                class: SideEffect::Unsafe,
                ..
            }
        ),
        "{p:?}"
    );
    let p = w.start("nap", 0);
    let Event::StepPlanned { plan, .. } = &p.events[0] else {
        panic!("{p:?}")
    };
    assert_eq!(plan["summary"], "would wait 1h00m");
}

#[test]
fn a_sleep_journals_its_wake_up_time_and_reports_the_time_it_really_slept() {
    let mut w =
        World::new("name: s\nsteps:\n  - { id: nap, uses: flow.sleep, with: { for: 30s } }\n");
    let p = w.start("nap", 1_000);
    let Event::WaitStarted {
        deadline_ms,
        started_ms,
        ..
    } = &p.events[1]
    else {
        panic!("{p:?}")
    };
    assert_eq!((*deadline_ms, *started_ms), (31_000, Some(1_000)));
    // Woken late (the engine was down): the result says so.
    let i = w.i("nap");
    let e = w.with(|r| r.wake(i, 95_000));
    let Event::StepSucceeded { result, .. } = e else {
        panic!("{e:?}")
    };
    assert_eq!(result["slept_ms"], 94_000);
}

const POLL: &str = "
name: w
steps:
  - id: until
    uses: flow.wait_until
    with:
      probe: { uses: flow.noop, with: { value: 1 } }
      until: 'result.value >= 1'
      interval: 10s
      hold: 15s
      deadline: 1h
";

#[test]
fn a_poll_succeeds_only_once_its_condition_has_held_long_enough() {
    let mut w = World::new(POLL);
    w.start("until", 0);
    let i = w.i("until");
    let probe = w.with(|r| r.probe(i, 0));
    assert!(
        matches!(
            probe.effect,
            Effect::Probe {
                deadline_ms: 3_600_000,
                ..
            }
        ),
        "{probe:?}"
    );
    w.events.extend(probe.events);
    // Holds now, but not yet for 15 s: the next probe is due in 10 s.
    let done = w.with(|r| r.probe_done(i, Ok(json!({"value": 1})), 0));
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(matches!(
        done[0],
        Event::ProbeDone {
            holds: true,
            next_at_ms: 10_000,
            true_since_ms: Some(0),
            ..
        }
    ));
    w.events.extend(done);
    let probe = w.with(|r| r.probe(i, 10_000));
    w.events.extend(probe.events);
    let done = w.with(|r| r.probe_done(i, Ok(json!({"value": 1})), 20_000));
    assert_eq!(
        done.iter().map(Event::kind).collect::<Vec<_>>(),
        ["probe_done", "step_succeeded"]
    );

    // A break resets the hold; the deadline fails with the last reason.
    let mut w2 = World::new(POLL);
    w2.start("until", 0);
    let probe = w2.with(|r| r.probe(i, 0));
    w2.events.extend(probe.events);
    let done = w2.with(|r| r.probe_done(i, Ok(json!({"value": 0})), 0));
    assert!(matches!(
        &done[0],
        Event::ProbeDone {
            holds: false,
            true_since_ms: None,
            ..
        }
    ));
    w2.events.extend(done);
    let e = w2.with(|r| r.expire(i, 3_600_000));
    let Event::StepFailed { kind, error, .. } = e else {
        panic!("{e:?}")
    };
    assert_eq!(kind, ErrorKind::Timeout);
    assert!(
        error.contains("after 1 probes") && error.contains("is false"),
        "{error}"
    );
}

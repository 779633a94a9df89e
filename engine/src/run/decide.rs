//! What to do next: a pure function of the plan and the state. No I/O, no clock (the time is an
//! argument), so every scheduling rule is unit-tested on data.

use super::event::RunStatus;
use super::state::{RunState, Status};
use crate::runbook::OnFailure;
use crate::runbook::plan::{Plan, StepKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start (or retry) this step.
    Start(usize),
    /// Mark this step skipped, for this reason.
    Skip(usize, String),
    /// Nothing is running and nothing can start: the run is over.
    Finish(RunStatus),
    /// Nothing can happen until an operator settles these steps (outcome unknown after a crash).
    Park(Vec<usize>),
    /// A `flow.sleep` reached its wake-up time.
    Wake(usize),
    /// A `flow.wait_until` is due for its next probe.
    Probe(usize),
    /// A `flow.wait_until` reached its deadline without `until` holding.
    Expire(usize),
    /// An approval request went unanswered past its timeout.
    ExpireApproval(usize),
    /// In a plan: a step that comes after a planned change is planned too, not run (what it would
    /// read does not exist yet).
    PlanAfter(usize, String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Next {
    pub actions: Vec<Action>,
    /// The earliest time something journaled becomes due: a retry's backoff, a sleep's wake-up, a
    /// probe, a deadline, an approval's timeout.
    pub wake_at_ms: Option<i64>,
    /// Steps waiting for an approval answer (which may come at any time, from anywhere).
    pub awaiting_approval: Vec<usize>,
}

impl Next {
    fn wake(&mut self, at: i64) {
        self.wake_at_ms = Some(self.wake_at_ms.map_or(at, |w| w.min(at)));
    }

    /// Whether the run only waits: nothing to do now, and something journaled to wait for.
    pub fn only_waits(&self) -> bool {
        self.actions.is_empty() && (self.wake_at_ms.is_some() || !self.awaiting_approval.is_empty())
    }
}

/// Why a pending step cannot run, if it cannot.
fn skip_reason(plan: &Plan, state: &RunState, i: usize) -> Option<String> {
    let ps = &plan.steps[i];
    if !ps.branch_parents.is_empty() {
        let chosen = ps.branch_parents.iter().any(|&b| {
            state.steps[b]
                .chosen
                .as_ref()
                .is_some_and(|c| c.iter().any(|t| t == plan.id(i)))
        });
        if !chosen {
            let b = plan.id(ps.branch_parents[0]);
            return Some(format!("not chosen by branch `{b}`"));
        }
    }
    if !ps.handler_of.is_empty() {
        let triggered = ps
            .handler_of
            .iter()
            .any(|&f| state.steps[f].status == Status::Failed);
        if !triggered {
            return Some("no failure to handle".to_string());
        }
    }
    if !ps.needs.is_empty() {
        for &d in &ps.needs {
            let st = &state.steps[d];
            if st.status == Status::Failed
                && !matches!(plan.steps[d].def.on_failure, OnFailure::Continue)
            {
                return Some(format!("needs `{}`, which failed", plan.id(d)));
            }
        }
        if ps
            .needs
            .iter()
            .all(|&d| state.steps[d].status == Status::Skipped)
        {
            return Some("every step it needs was skipped".to_string());
        }
    }
    None
}

/// The next actions, given the run's state at `now_ms`, starting at most `max_parallel` steps at once.
pub fn decide(plan: &Plan, state: &RunState, now_ms: i64, max_parallel: usize) -> Next {
    let mut next = Next::default();
    if state.status != RunStatus::Running {
        return next;
    }
    let mut running = state.running;
    // Journaled waits: timers, probes and their deadlines.
    for &rank in &state.timers {
        let i = plan.order[rank];
        let st = &state.steps[i];
        let Some(deadline) = st.wait_deadline_ms else {
            continue;
        };
        match &plan.steps[i].kind {
            StepKind::Sleep { .. } => {
                if deadline <= now_ms {
                    next.actions.push(Action::Wake(i));
                } else {
                    next.wake(deadline);
                }
            }
            StepKind::WaitUntil { .. } => {
                if st.probe.in_flight {
                    continue;
                }
                let due = st.probe.next_at_ms.unwrap_or(now_ms);
                if deadline <= now_ms {
                    next.actions.push(Action::Expire(i));
                } else if due <= now_ms {
                    next.actions.push(Action::Probe(i));
                } else {
                    next.wake(due.min(deadline));
                }
            }
            _ => {}
        }
    }
    for &rank in &state.approvals {
        let i = plan.order[rank];
        match state.steps[i].approval.expires_at_ms {
            // An aborting run starts nothing new, so nothing is left to approve.
            _ if state.aborting => next.actions.push(Action::ExpireApproval(i)),
            Some(at) if at <= now_ms => next.actions.push(Action::ExpireApproval(i)),
            Some(at) => {
                next.wake(at);
                next.awaiting_approval.push(i);
            }
            None => next.awaiting_approval.push(i),
        }
    }
    // Retries first: they were started before anything that became ready since.
    for &rank in &state.retrying {
        if state.aborting {
            break;
        }
        let i = plan.order[rank];
        let at = state.steps[i].retry_at_ms.unwrap_or(now_ms);
        if at <= now_ms {
            if running < max_parallel {
                next.actions.push(Action::Start(i));
                running += 1;
            }
        } else {
            next.wake(at);
        }
    }
    for &rank in &state.ready {
        let i = plan.order[rank];
        if let Some(&p) = plan.steps[i]
            .preds
            .iter()
            .find(|&&p| state.steps[p].status == Status::Planned)
        {
            let why = format!("would run after `{}`, which is planned", plan.id(p));
            next.actions.push(Action::PlanAfter(i, why));
            continue;
        }
        if let Some(reason) = skip_reason(plan, state, i) {
            next.actions.push(Action::Skip(i, reason));
            continue;
        }
        if state.aborting {
            continue;
        }
        if running < max_parallel {
            next.actions.push(Action::Start(i));
            running += 1;
        } else {
            // Ready steps beyond the bound wait; skips further on are found on the next call.
            break;
        }
    }
    let idle = running == 0
        && next.actions.is_empty()
        && next.wake_at_ms.is_none()
        && next.awaiting_approval.is_empty();
    if idle {
        let unknown: Vec<usize> = plan
            .order
            .iter()
            .copied()
            .filter(|&i| state.steps[i].status == Status::Unknown)
            .collect();
        if !unknown.is_empty() && !state.aborting {
            next.actions.push(Action::Park(unknown));
            return next;
        }
        let failed = state.aborting
            || plan.steps.iter().enumerate().any(|(i, ps)| {
                state.steps[i].status == Status::Failed
                    && !matches!(ps.def.on_failure, OnFailure::Continue)
            });
        next.actions.push(Action::Finish(if failed {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        }));
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::Expr;
    use crate::run::event::Event;
    use crate::runbook::validate::check;
    use runbook_steps::{ErrorKind, Registry, SideEffect};
    use serde_json::{Map, json};

    fn plan(yaml: &str) -> Plan {
        match check("t.yaml", yaml, &Registry::builtin(), &Expr::new()) {
            Ok(p) => p,
            Err(r) => panic!("invalid test runbook:\n{}", r.render(false)),
        }
    }

    fn started(step: &str, attempt: u32) -> Event {
        Event::StepStarted {
            step: step.into(),
            attempt,
            class: SideEffect::Read,
            inputs: json!({}),
            deadline_ms: None,
        }
    }

    fn ok(step: &str) -> Event {
        Event::StepSucceeded {
            step: step.into(),
            attempt: 1,
            result: json!({}),
            outputs: Map::new(),
        }
    }

    fn failed(step: &str, attempt: u32, retry_at_ms: Option<i64>) -> Event {
        Event::StepFailed {
            step: step.into(),
            attempt,
            kind: ErrorKind::Status,
            error: "boom".into(),
            detail: None,
            retry_at_ms,
        }
    }

    fn skipped(step: &str) -> Event {
        Event::StepSkipped {
            step: step.into(),
            reason: "test".into(),
        }
    }

    fn decided(step: &str, taken: &[&str]) -> Event {
        Event::DecisionTaken {
            step: step.into(),
            case: Some(0),
            condition: Some("true".into()),
            values: Map::new(),
            taken: taken.iter().map(|s| s.to_string()).collect(),
            not_taken: vec![],
        }
    }

    fn next(p: &Plan, events: &[Event], now: i64, par: usize) -> Vec<Action> {
        decide(p, &RunState::fold(p, events), now, par).actions
    }

    fn ids(p: &Plan, actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Start(i) => format!("start {}", p.id(*i)),
                Action::Skip(i, _) => format!("skip {}", p.id(*i)),
                Action::Finish(s) => format!("finish {}", s.as_str()),
                Action::Park(v) => format!(
                    "park {}",
                    v.iter().map(|&i| p.id(i)).collect::<Vec<_>>().join(",")
                ),
                Action::Wake(i) => format!("wake {}", p.id(*i)),
                Action::Probe(i) => format!("probe {}", p.id(*i)),
                Action::Expire(i) => format!("expire {}", p.id(*i)),
                Action::ExpireApproval(i) => format!("expire approval {}", p.id(*i)),
                Action::PlanAfter(i, _) => format!("plan after {}", p.id(*i)),
            })
            .collect()
    }

    const FAN: &str = "
name: fan
steps:
  - { id: a, uses: flow.noop }
  - { id: b1, uses: flow.noop, needs: a }
  - { id: b2, uses: flow.noop, needs: a }
  - { id: b3, uses: flow.noop, needs: a }
  - { id: c, uses: flow.noop, needs: [b1, b2, b3] }
";

    #[test]
    fn roots_start_first_and_dependents_wait() {
        let p = plan(FAN);
        assert_eq!(ids(&p, &next(&p, &[], 0, 8)), ["start a"]);
        assert_eq!(
            ids(&p, &next(&p, &[started("a", 1)], 0, 8)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn independent_ready_steps_start_together_up_to_the_bound() {
        let p = plan(FAN);
        let ev = [started("a", 1), ok("a")];
        assert_eq!(
            ids(&p, &next(&p, &ev, 0, 8)),
            ["start b1", "start b2", "start b3"]
        );
        assert_eq!(ids(&p, &next(&p, &ev, 0, 2)), ["start b1", "start b2"]);
        let ev2 = [started("a", 1), ok("a"), started("b1", 1), started("b2", 1)];
        assert_eq!(ids(&p, &next(&p, &ev2, 0, 2)), Vec::<String>::new());
    }

    #[test]
    fn join_waits_for_every_need_then_the_run_finishes() {
        let p = plan(FAN);
        let mut ev = vec![started("a", 1), ok("a")];
        for b in ["b1", "b2", "b3"] {
            ev.push(started(b, 1));
        }
        ev.push(ok("b1"));
        ev.push(ok("b2"));
        assert_eq!(ids(&p, &next(&p, &ev, 0, 8)), Vec::<String>::new());
        ev.push(ok("b3"));
        assert_eq!(ids(&p, &next(&p, &ev, 0, 8)), ["start c"]);
        ev.push(started("c", 1));
        ev.push(ok("c"));
        assert_eq!(ids(&p, &next(&p, &ev, 0, 8)), ["finish succeeded"]);
    }

    const BRANCH: &str = "
name: br
steps:
  - { id: diag, uses: flow.noop }
  - id: choose
    uses: flow.branch
    needs: diag
    with:
      cases:
        - { when: 'steps.diag.status == \"succeeded\"', then: [fix_a, fix_a2] }
      default: fix_b
  - { id: fix_a, uses: flow.noop }
  - { id: fix_a2, uses: flow.noop }
  - { id: fix_b, uses: flow.noop }
  - { id: after_b, uses: flow.noop, needs: fix_b }
  - { id: verify, uses: flow.noop, needs: [fix_a, fix_b] }
";

    #[test]
    fn branch_skips_the_path_not_taken_and_skipping_propagates() {
        let p = plan(BRANCH);
        let mut ev = vec![
            started("diag", 1),
            ok("diag"),
            started("choose", 1),
            decided("choose", &["fix_a", "fix_a2"]),
            ok("choose"),
        ];
        assert_eq!(
            ids(&p, &next(&p, &ev, 0, 8)),
            ["start fix_a", "start fix_a2", "skip fix_b"]
        );
        ev.extend([started("fix_a", 1), started("fix_a2", 1), skipped("fix_b")]);
        // after_b needs only a skipped step; verify still waits for fix_a.
        assert_eq!(ids(&p, &next(&p, &ev, 0, 8)), ["skip after_b"]);
        ev.extend([skipped("after_b"), ok("fix_a")]);
        // A join after a branch runs when at least one of its needs ran.
        assert_eq!(ids(&p, &next(&p, &ev, 0, 8)), ["start verify"]);
    }

    #[test]
    fn a_join_whose_needs_were_all_skipped_is_skipped() {
        let p = plan(BRANCH);
        let ev = vec![
            started("diag", 1),
            ok("diag"),
            started("choose", 1),
            decided("choose", &["fix_b"]),
            ok("choose"),
            skipped("fix_a"),
            skipped("fix_a2"),
            started("fix_b", 1),
            skipped("fix_b"),
        ];
        let acts = next(&p, &ev, 0, 8);
        assert!(
            acts.iter()
                .any(|a| matches!(a, Action::Skip(i, _) if p.id(*i) == "verify")),
            "{acts:?}"
        );
    }

    #[test]
    fn failure_with_abort_starts_nothing_new_and_fails_the_run() {
        let p = plan(FAN);
        let ev = [
            started("a", 1),
            ok("a"),
            started("b1", 1),
            started("b2", 1),
            failed("b1", 1, None),
        ];
        // b2 is still running: nothing new starts (b3 would be ready), and the run is not over yet.
        assert_eq!(ids(&p, &next(&p, &ev, 0, 8)), Vec::<String>::new());
        let mut ev = ev.to_vec();
        ev.push(ok("b2"));
        assert_eq!(ids(&p, &next(&p, &ev, 0, 8)), ["finish failed"]);
    }

    #[test]
    fn retry_waits_for_its_backoff_time() {
        let p = plan(
            "
name: r
steps:
  - { id: a, uses: flow.noop, retry: 3 }
",
        );
        let ev = [started("a", 1), failed("a", 1, Some(5_000))];
        let n = decide(&p, &RunState::fold(&p, &ev), 1_000, 8);
        assert!(n.actions.is_empty());
        assert_eq!(n.wake_at_ms, Some(5_000));
        assert_eq!(ids(&p, &next(&p, &ev, 5_000, 8)), ["start a"]);
    }

    #[test]
    fn on_failure_continue_lets_dependents_run_and_the_run_succeed() {
        let p = plan(
            "
name: c
steps:
  - { id: a, uses: flow.noop, on_failure: continue }
  - { id: b, uses: flow.noop, needs: a }
",
        );
        let mut ev = vec![started("a", 1), failed("a", 1, None)];
        assert_eq!(ids(&p, &next(&p, &ev, 0, 8)), ["start b"]);
        ev.extend([started("b", 1), ok("b")]);
        assert_eq!(ids(&p, &next(&p, &ev, 0, 8)), ["finish succeeded"]);
    }

    #[test]
    fn on_failure_goto_runs_the_handler_skips_dependents_and_fails_the_run() {
        let p = plan(
            "
name: g
steps:
  - { id: a, uses: flow.noop, on_failure: rescue }
  - { id: b, uses: flow.noop, needs: a }
  - { id: rescue, uses: flow.noop }
",
        );
        let mut ev = vec![started("a", 1), failed("a", 1, None)];
        assert_eq!(ids(&p, &next(&p, &ev, 0, 8)), ["skip b", "start rescue"]);
        ev.extend([skipped("b"), started("rescue", 1), ok("rescue")]);
        assert_eq!(ids(&p, &next(&p, &ev, 0, 8)), ["finish failed"]);
        // Without a failure, the handler is skipped and the run succeeds.
        let ev = vec![started("a", 1), ok("a")];
        assert_eq!(ids(&p, &next(&p, &ev, 0, 8)), ["start b", "skip rescue"]);
    }

    #[test]
    fn a_step_of_unknown_outcome_parks_the_run_until_an_operator_decides() {
        use crate::run::event::{OperatorAction, Recovery};
        let p = plan(FAN);
        let mut ev = vec![
            started("a", 1),
            Event::StepRecovered {
                step: "a".into(),
                attempt: 1,
                outcome: Recovery::Unknown,
            },
        ];
        assert_eq!(ids(&p, &next(&p, &ev, 0, 8)), ["park a"]);
        ev.push(Event::OperatorDecided {
            step: "a".into(),
            action: OperatorAction::MarkDone,
            by: "op".into(),
        });
        assert_eq!(
            ids(&p, &next(&p, &ev, 0, 8)),
            ["start b1", "start b2", "start b3"]
        );
        // A read or idempotent step in flight is simply started again.
        let ev = vec![
            started("a", 1),
            Event::StepRecovered {
                step: "a".into(),
                attempt: 1,
                outcome: Recovery::Rerun,
            },
        ];
        assert_eq!(ids(&p, &next(&p, &ev, 0, 8)), ["start a"]);
    }

    #[test]
    fn journaled_waits_wake_at_their_time_and_an_open_approval_keeps_the_run_alive() {
        let p = plan(
            "
name: w
steps:
  - { id: nap, uses: flow.sleep, with: { for: 5s } }
  - { id: act, uses: shell.run, approval: required, needs: nap, with: { argv: [\"true\"] } }
",
        );
        let mut ev = vec![
            started("nap", 1),
            Event::WaitStarted {
                step: "nap".into(),
                deadline_ms: 5_000,
                started_ms: Some(0),
            },
        ];
        let n = decide(&p, &RunState::fold(&p, &ev), 1_000, 8);
        assert!(n.actions.is_empty() && n.only_waits(), "{n:?}");
        assert_eq!(n.wake_at_ms, Some(5_000));
        assert_eq!(ids(&p, &next(&p, &ev, 5_000, 8)), ["wake nap"]);
        ev.extend([
            ok("nap"),
            Event::ApprovalRequested {
                step: "act".into(),
                attempt: 1,
                class: SideEffect::Unsafe,
                inputs: json!({}),
                approvers: vec![],
                distinct_from_initiator: false,
                expires_at_ms: Some(9_000),
                plan: None,
            },
        ]);
        // Nothing runs and nothing is due but the request: the run waits, it does not finish.
        let n = decide(&p, &RunState::fold(&p, &ev), 6_000, 8);
        assert!(n.actions.is_empty(), "{n:?}");
        assert_eq!(n.awaiting_approval.len(), 1);
        assert_eq!(n.wake_at_ms, Some(9_000));
        assert_eq!(ids(&p, &next(&p, &ev, 9_000, 8)), ["expire approval act"]);
        // Granted: the step starts (its attempt now approved).
        ev.push(Event::ApprovalGranted {
            step: "act".into(),
            by: "bob".into(),
            how: "cli".into(),
            comment: None,
        });
        assert_eq!(ids(&p, &next(&p, &ev, 6_500, 8)), ["start act"]);
    }

    #[test]
    fn a_finished_run_decides_nothing() {
        let p = plan(FAN);
        let ev = [Event::RunInterrupted {
            reason: "test".into(),
        }];
        assert!(next(&p, &ev, 0, 8).is_empty());
    }
}

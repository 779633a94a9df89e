//! The request rules on plain data: a plan, a journal folded into state, a request. No I/O.

use super::*;
use crate::expr::Expr;
use crate::run::decide::decide;
use crate::run::event::Note;
use crate::runbook::validate::check;
use runbook_steps::Registry;
use serde_json::{Map, json};

const RUNBOOK: &str = "
name: t
steps:
  - { id: look, uses: shell.run, side_effect: read, with: { argv: ['true'] } }
  - { id: tweak, uses: shell.run, side_effect: idempotent, needs: look, with: { argv: ['true'] } }
  - { id: act, uses: shell.run, needs: look, with: { argv: ['true'] } }
  - { id: flaky, uses: shell.run, side_effect: read, retry: 3, with: { argv: ['true'] } }
  - { id: gate, uses: shell.run, approval: required, with: { argv: ['true'] } }
  - { id: later, uses: flow.noop, needs: [tweak, act] }
";

fn plan() -> Plan {
    match check("t.yaml", RUNBOOK, &Registry::builtin(), &Expr::new()) {
        Ok(p) => p,
        Err(r) => panic!("invalid test runbook:\n{}", r.render(false)),
    }
}

fn started(step: &str, attempt: u32, class: SideEffect) -> Event {
    Event::StepStarted {
        step: step.into(),
        attempt,
        class,
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

fn asked(step: &str) -> Event {
    Event::ApprovalRequested {
        step: step.into(),
        attempt: 1,
        class: SideEffect::Unsafe,
        inputs: json!({}),
        approvers: vec![],
        distinct_from_initiator: false,
        expires_at_ms: None,
        plan: None,
    }
}

fn cancel(id: &str, only_before_changes: bool) -> RunRequest {
    RunRequest {
        id: id.into(),
        by: "bob".into(),
        how: "cli".into(),
        at: 5,
        asked: Asked::Cancel {
            reason: "false alarm".into(),
            only_before_changes,
        },
    }
}

fn note(id: &str) -> RunRequest {
    RunRequest {
        id: id.into(),
        by: "alertmanager".into(),
        how: "alertmanager".into(),
        at: 6,
        asked: Asked::Note(Note {
            source: "alertmanager".into(),
            status: "resolved".into(),
            summary: "alert X resolved".into(),
            detail: json!({"fingerprint": "f"}),
        }),
    }
}

/// The cancellation `r` comes to over `events` (panics if it is refused).
fn cancelled(p: &Plan, events: &[Event], r: &RunRequest) -> Vec<Event> {
    let state = RunState::fold(p, events);
    match verdict(p, &state, r) {
        Verdict::Cancel(c) => cancellation(p, &state, &c),
        other => panic!("expected a cancel, got {other:?}"),
    }
}

fn failure(events: &[Event], step: &str) -> (ErrorKind, String) {
    events
        .iter()
        .find_map(|e| match e {
            Event::StepFailed {
                step: s,
                kind,
                error,
                retry_at_ms: None,
                ..
            } if s == step => Some((*kind, error.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no failure of `{step}` in {events:?}"))
}

#[test]
fn a_cancel_stops_what_runs_denies_what_waits_and_ends_the_run_failed() {
    let p = plan();
    let mut ev = vec![
        started("look", 1, SideEffect::Read),
        started("flaky", 1, SideEffect::Read),
        Event::StepFailed {
            step: "flaky".into(),
            attempt: 1,
            kind: ErrorKind::Connect,
            error: "refused".into(),
            detail: None,
            retry_at_ms: Some(9_000),
        },
        asked("gate"),
    ];
    let out = cancelled(&p, &ev, &cancel("r1", false));
    assert!(
        matches!(&out[0], Event::RunCancelled { request, by, reason, only_before_changes: false, .. }
            if request == "r1" && by == "bob" && reason == "false alarm"),
        "{out:?}"
    );
    let (kind, error) = failure(&out, "look");
    assert_eq!(kind, ErrorKind::Cancelled);
    assert_eq!(
        error,
        "the run was cancelled by bob (cli) while this step ran: false alarm; the step was stopped"
    );
    let (kind, error) = failure(&out, "flaky");
    assert_eq!(kind, ErrorKind::Cancelled);
    assert!(
        error.ends_with("before this step's retry: false alarm (attempt 1 had failed: refused)"),
        "{error}"
    );
    assert!(out.iter().any(|e| matches!(e,
        Event::ApprovalDenied { step, by, reason, .. }
            if step == "gate" && by == "bob" && reason == "the run was cancelled: false alarm")));
    assert_eq!(
        out.last(),
        Some(&Event::RunFinished {
            status: RunStatus::Failed,
            error: Some("cancelled by bob (cli): false alarm".into()),
        })
    );
    // Nothing that had not started is touched.
    assert!(!out.iter().any(|e| e.step() == Some("later")), "{out:?}");
    // Folded: the run is over, the request taken, and nothing more is decided.
    ev.extend(out);
    let state = RunState::fold(&p, &ev);
    assert_eq!(state.status, RunStatus::Failed);
    assert!(state.taken.contains("r1"));
    assert!(untaken(&state, vec![cancel("r1", false)]).is_empty());
    assert!(decide(&p, &state, 10_000, 8).actions.is_empty());
}

#[test]
fn a_stopped_step_says_what_its_class_leaves_open() {
    let p = plan();
    let ev = vec![
        started("look", 1, SideEffect::Read),
        ok("look"),
        started("tweak", 1, SideEffect::Idempotent),
        started("act", 1, SideEffect::Unsafe),
    ];
    let out = cancelled(&p, &ev, &cancel("r", false));
    let (_, idempotent) = failure(&out, "tweak");
    assert!(
        idempotent.ends_with("may have acted (it is idempotent: running it again is safe)"),
        "{idempotent}"
    );
    let (_, unsafe_) = failure(&out, "act");
    assert!(
        unsafe_.ends_with("may or may not have acted, its effect is unknown"),
        "{unsafe_}"
    );
    // An unsafe step left `unknown` by a crash is settled by the cancel, saying the same.
    let ev = vec![
        started("look", 1, SideEffect::Read),
        ok("look"),
        started("act", 1, SideEffect::Unsafe),
        Event::StepRecovered {
            step: "act".into(),
            attempt: 1,
            outcome: crate::run::event::Recovery::Unknown,
        },
    ];
    let out = cancelled(&p, &ev, &cancel("r", false));
    let (kind, unknown) = failure(&out, "act");
    assert_eq!(kind, ErrorKind::Cancelled);
    assert!(unknown.contains("outcome was unknown"), "{unknown}");
    assert!(unknown.ends_with("its effect is unknown"), "{unknown}");
}

#[test]
fn only_before_changes_cancels_while_only_reads_ran_and_is_refused_after() {
    let p = plan();
    let mut ev = vec![started("look", 1, SideEffect::Read), ok("look")];
    let state = RunState::fold(&p, &ev);
    assert!(matches!(
        verdict(&p, &state, &cancel("r", true)),
        Verdict::Cancel(Cancelled {
            only_before_changes: true,
            ..
        })
    ));
    ev.push(started("tweak", 1, SideEffect::Idempotent));
    ev.push(ok("tweak"));
    let state = RunState::fold(&p, &ev);
    match verdict(&p, &state, &cancel("r", true)) {
        Verdict::Journal(Event::CancelRefused {
            request, why, by, ..
        }) => {
            assert_eq!((request.as_str(), by.as_str()), ("r", "bob"));
            assert!(
                why.contains("step `tweak` (idempotent) has started"),
                "{why}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // An unconditional cancel is never refused.
    assert!(matches!(
        verdict(&p, &state, &cancel("r", false)),
        Verdict::Cancel(_)
    ));
    // The refusal is taken like any request, and the run goes on.
    if let Verdict::Journal(e) = verdict(&p, &state, &cancel("r", true)) {
        ev.push(e);
    }
    let state = RunState::fold(&p, &ev);
    assert!(state.taken.contains("r"));
    assert!(!state.aborting);
    assert_eq!(state.status, RunStatus::Running);
}

#[test]
fn an_attempt_whose_approval_was_refused_changed_nothing() {
    let p = plan();
    let ev = vec![
        asked("gate"),
        Event::ApprovalDenied {
            step: "gate".into(),
            by: "carol".into(),
            how: "cli".into(),
            reason: "no".into(),
        },
        // How the driver journals the refusal: the attempt that was asked for, failed at once.
        started("gate", 1, SideEffect::Unsafe),
        Event::StepFailed {
            step: "gate".into(),
            attempt: 1,
            kind: ErrorKind::Approval,
            error: "denied by carol: no".into(),
            detail: None,
            retry_at_ms: None,
        },
    ];
    let state = RunState::fold(&p, &ev);
    assert_eq!(state.acted, None);
    assert!(refusal(&p, &state, true).is_none());
    // A granted one did start a change.
    let ev = vec![
        asked("gate"),
        Event::ApprovalGranted {
            step: "gate".into(),
            by: "carol".into(),
            how: "cli".into(),
            comment: None,
        },
        started("gate", 1, SideEffect::Unsafe),
    ];
    let state = RunState::fold(&p, &ev);
    assert_eq!(state.acted, Some(p.index["gate"]));
}

#[test]
fn a_note_is_journaled_once_and_changes_nothing_else() {
    let p = plan();
    let mut ev = vec![started("look", 1, SideEffect::Read)];
    let before = RunState::fold(&p, &ev);
    let Verdict::Journal(e) = verdict(&p, &before, &note("n1")) else {
        panic!("a note is journaled");
    };
    assert!(matches!(&e, Event::RunNoted { request, note, .. }
        if request == "n1" && note.status == "resolved"));
    ev.push(e);
    let after = RunState::fold(&p, &ev);
    assert_eq!(
        untaken(&after, vec![note("n1"), note("n2")])
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["n2"]
    );
    let mut same = after.clone();
    same.taken.clear();
    assert_eq!(
        same, before,
        "a note changes nothing but the requests taken"
    );
}

#[test]
fn a_cancel_journaled_without_its_end_still_starts_nothing() {
    let p = plan();
    let ev = vec![
        started("look", 1, SideEffect::Read),
        ok("look"),
        Event::RunCancelled {
            request: "r".into(),
            by: "bob".into(),
            how: "cli".into(),
            reason: "x".into(),
            only_before_changes: false,
        },
    ];
    let state = RunState::fold(&p, &ev);
    assert!(state.aborting);
    let next = decide(&p, &state, 0, 8);
    assert!(
        !next
            .actions
            .iter()
            .any(|a| matches!(a, crate::run::decide::Action::Start(_))),
        "{next:?}"
    );
}

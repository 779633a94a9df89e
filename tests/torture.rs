//! Crash torture: the run is killed at every journal commit boundary in turn (just before and just
//! after each commit) and at pseudo-random moments inside steps, then resumed until it finishes, with
//! an operator who settles unknown unsafe steps by looking at their side-effect log. Afterwards:
//! the run succeeded; no step recorded as completed ran again; no unsafe step acted twice; the final
//! state equals an uninterrupted run's; the hash chain verifies. On SQLite and on PostgreSQL.
//!
//! A second runbook is driven the way a parked run lives: started with `--detach`, continued by
//! `resume` (detached or not), its approval given by another person from a second process while no
//! engine holds the run. Each of those engine processes is killed in turn at every commit boundary,
//! at random moments, and while the approval request is pending; on top of the properties above, the
//! approved unsafe step acted exactly once, and only after its approval.

use crate::common::{Sandbox, stderr, stdout};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Read, idempotent and unsafe steps across a branch, a join, a durable timer and an assertion. Every
/// shell step logs each execution to `exec.log`; unsafe ones also log their effect to `effects.log`.
const TORTURE: &str = r#"
name: torture
steps:
  - id: probe_a
    uses: shell.run
    side_effect: read
    with: { shell: "echo probe_a >> exec.log; sleep 0.02; echo 5" }
    outputs: { n: "{{ result.stdout | trim | int }}" }
  - id: probe_b
    uses: shell.run
    side_effect: read
    with: { shell: "echo probe_b >> exec.log; echo 3" }
    outputs: { n: "{{ result.stdout | trim | int }}" }
  - id: choose
    uses: flow.branch
    needs: [probe_a, probe_b]
    with:
      cases:
        - { when: "steps.probe_a.n > steps.probe_b.n", then: [fix_unsafe, fix_idem] }
      default: nothing
  - id: fix_unsafe
    uses: shell.run
    with: { shell: "echo fix_unsafe >> exec.log; sleep 0.02; echo fix_unsafe >> effects.log" }
  - id: fix_idem
    uses: shell.run
    side_effect: idempotent
    with: { shell: "echo fix_idem >> exec.log; echo fixed > idem.state" }
  - { id: nothing, uses: flow.noop }
  - id: settle
    uses: flow.sleep
    needs: [fix_unsafe, fix_idem, nothing]
    with: { for: 30ms }
  - id: notify
    uses: shell.run
    needs: settle
    with: { shell: "echo notify >> exec.log; echo notify >> effects.log" }
  - id: verify
    uses: flow.assert
    needs: notify
    with: { that: "steps.probe_a.n == 5" }
"#;

/// A run that parks twice: at `nap` (a timer) and at `risky` (an unsafe step only carol may approve,
/// not the person who started the run), while `look` (a read) is still running beside the request.
/// The timer is short, so that waiting out its journaled time costs little.
const PARKED: &str = r#"
name: parked
steps:
  - id: probe
    uses: shell.run
    side_effect: read
    with: { shell: "echo probe >> exec.log; echo 5" }
    outputs: { n: "{{ result.stdout | trim | int }}" }
  - id: prepare
    uses: shell.run
    needs: probe
    with: { shell: "echo prepare >> exec.log; sleep 0.02; echo prepare >> effects.log" }
  - id: nap
    uses: flow.sleep
    needs: prepare
    with: { for: 20ms }
  - id: risky
    uses: shell.run
    needs: nap
    approval: { required: true, distinct_from_initiator: true, approvers: [carol] }
    with: { shell: "echo risky >> exec.log; sleep 0.02; echo risky >> effects.log" }
  - id: look
    uses: shell.run
    side_effect: read
    needs: nap
    with: { shell: "echo look >> exec.log; sleep 0.02; echo 1" }
    outputs: { seen: "{{ result.stdout | trim | int }}" }
  - id: notify
    uses: shell.run
    needs: [risky, look]
    with: { shell: "echo notify >> exec.log; echo notify >> effects.log" }
  - id: verify
    uses: flow.assert
    needs: notify
    with: { that: "steps.probe.n == 5 and steps.look.seen == 1" }
"#;

/// What `show` says of a step at the end of a run; equal for a tortured and an uninterrupted run.
#[derive(Debug, Clone, PartialEq)]
struct StepEnd {
    status: Value,
    outputs: Value,
    decision: Value,
    approved_by: Value,
}

type Ends = BTreeMap<String, StepEnd>;

struct Bench {
    sb: Sandbox,
    db: String,
    file: String,
    /// Approvals carol gave in the current life of a parked run.
    given: std::cell::Cell<usize>,
    /// The newest run of the parked lives so far.
    newest: std::cell::RefCell<String>,
}

impl Bench {
    fn new(db: Option<String>, runbook: &str) -> Bench {
        let sb = Sandbox::new();
        let file = sb.write("torture.yaml", runbook).display().to_string();
        let db = db.unwrap_or_else(|| sb.db().display().to_string());
        Bench {
            sb,
            db,
            file,
            given: std::cell::Cell::new(0),
            newest: std::cell::RefCell::default(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.sb.cmd(args);
        c.env("RUNBOOK_DB", &self.db);
        c
    }

    fn out(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("spawn")
    }

    fn json(&self, args: &[&str]) -> Value {
        let o = self.out(args);
        serde_json::from_str(&stdout(&o))
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}{}", stdout(&o), stderr(&o)))
    }

    fn log(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.sb.path().join(name))
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    fn count(&self, name: &str, step: &str) -> usize {
        self.log(name).iter().filter(|s| *s == step).count()
    }

    fn reset_logs(&self) {
        for f in ["exec.log", "effects.log", "idem.state"] {
            let _ = std::fs::remove_file(self.sb.path().join(f));
        }
    }

    fn latest_run(&self) -> String {
        self.json(&["runs", "-n", "1", "-o", "json"])[0]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// A killed engine's shell steps live on in their own process groups and may still be about to
    /// write their logs. An operator judges what happened only once they are gone: wait (bounded)
    /// until no process works in the sandbox.
    fn wait_for_orphans(&self, label: &str) {
        let dir = std::fs::canonicalize(self.sb.path()).expect("sandbox path");
        for _ in 0..2000 {
            let busy = std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| std::fs::read_link(e.path().join("cwd")).is_ok_and(|c| c == dir));
            if !busy {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!(
            "{label}: processes still work in {} after 10 s",
            dir.display()
        );
    }

    /// Step id -> what `show` reports of it.
    fn final_state(&self, run: &str) -> Ends {
        Self::ends(&self.json(&["show", run, "-o", "json"]))
    }

    /// Step id -> what `show -o json` printed of it.
    fn ends(shown: &Value) -> Ends {
        shown["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let end = StepEnd {
                    status: s["status"].clone(),
                    outputs: s["outputs"].clone(),
                    decision: s["decision"]["taken"].clone(),
                    approved_by: s["approval"]["by"].clone(),
                };
                (s["id"].as_str().unwrap_or_default().to_string(), end)
            })
            .collect()
    }

    fn run_status(&self, run: &str) -> Value {
        self.json(&["show", run, "-o", "json"])["run"]["status"].clone()
    }

    fn with_status(ends: &Ends, status: &str) -> Vec<String> {
        ends.iter()
            .filter(|(_, e)| e.status == status)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// How an operator settles unknown unsafe steps: one whose effect is in the log did act (mark it
    /// done), any other is run again. The `resume` flags, and how many steps are retried.
    fn settle_unknown(&self, ends: &Ends) -> (Vec<String>, usize) {
        let effects = self.log("effects.log");
        let mut args = Vec::new();
        let mut retries = 0;
        for id in Self::with_status(ends, "unknown") {
            if effects.contains(&id) {
                args.extend(["--mark-done".to_string(), id]);
            } else {
                retries += 1;
                args.extend(["--retry".to_string(), id]);
            }
        }
        (args, retries)
    }

    /// Resumes until the run is over, settling unknown steps the way an operator would.
    fn resume_to_the_end(&self, run: &str, label: &str) -> usize {
        // Killed after its last commit: the run is over and is checked as it stands.
        if self.run_status(run) == "succeeded" {
            return 0;
        }
        let o = self.out(&["resume", run, "--quiet"]);
        match o.status.code() {
            Some(0) => 0,
            Some(4) => {
                let (settle, retries) = self.settle_unknown(&self.final_state(run));
                let mut args = vec!["resume", run, "--quiet"];
                args.extend(settle.iter().map(String::as_str));
                let o = self.out(&args);
                assert_eq!(
                    o.status.code(),
                    Some(0),
                    "{label}: operator resume failed: {}",
                    stderr(&o)
                );
                retries
            }
            other => panic!("{label}: resume exited {other:?}: {}", stderr(&o)),
        }
    }

    /// The properties every tortured run ends with: the state of an uninterrupted run, each unsafe
    /// step's effect exactly once, and a journal whose chain verifies.
    fn check_end(
        &self,
        run: &str,
        shown: &Value,
        label: &str,
        clean: &Ends,
        unsafe_steps: &[&str],
        retries: usize,
    ) {
        let state = Self::ends(shown);
        assert_eq!(
            &state, clean,
            "{label}: final state differs from an uninterrupted run"
        );
        for step in unsafe_steps {
            let n = self.count("effects.log", step);
            assert_eq!(
                n, 1,
                "{label}: unsafe `{step}` acted {n} times (operator retries: {retries})"
            );
        }
        let o = self.out(&["audit", "verify", run]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{label}: chain does not verify: {}",
            stdout(&o)
        );
    }

    /// One crash scenario: start with `crash` set (or killed from outside after `kill_after`),
    /// resume to the end, check every property against `clean`.
    fn scenario(
        &self,
        label: &str,
        crash: Option<&str>,
        kill_after: Option<Duration>,
        clean: &Ends,
    ) -> bool {
        self.reset_logs();
        let previous = self.latest_run();
        let mut c = self.cmd(&["run", &self.file, "--quiet"]);
        if let Some(point) = crash {
            c.env("RUNBOOK_TEST_CRASH", point);
        }
        let mut child = c.spawn().expect("spawn");
        if let Some(after) = kill_after {
            let t = Instant::now();
            while t.elapsed() < after && child.try_wait().expect("try_wait").is_none() {
                std::thread::yield_now();
            }
            let _ = child.kill();
        }
        let status = child.wait().expect("wait");
        if status.success() {
            // The crash point lies beyond the run's last commit: nothing left to test.
            return false;
        }
        self.wait_for_orphans(label);
        let run = self.latest_run();
        if run == previous {
            // Killed before the run was recorded: there is nothing to resume, and nothing happened.
            assert!(
                self.log("effects.log").is_empty(),
                "{label}: an unrecorded run acted"
            );
            return false;
        }
        let done_before = Self::with_status(&self.final_state(&run), "succeeded");
        let exec_before = self.log("exec.log");
        let retries = self.resume_to_the_end(&run, label);

        let exec_after = self.log("exec.log");
        for step in &done_before {
            let before = exec_before.iter().filter(|s| *s == step).count();
            let after = exec_after.iter().filter(|s| *s == step).count();
            assert_eq!(
                before, after,
                "{label}: `{step}` was recorded complete, yet ran again"
            );
        }
        let shown = self.json(&["show", &run, "-o", "json"]);
        self.check_end(
            &run,
            &shown,
            label,
            clean,
            &["fix_unsafe", "notify"],
            retries,
        );
        true
    }
}

fn torture(db: Option<String>) {
    let b = Bench::new(db, TORTURE);
    // The uninterrupted run is the reference.
    let o = b.out(&["run", &b.file, "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let clean = b.final_state(&b.latest_run());
    assert_eq!(
        clean["choose"].decision,
        serde_json::json!(["fix_unsafe", "fix_idem"])
    );
    assert_eq!(clean["nothing"].status, "skipped");

    let mut crashed = 0;
    for k in 1..=200 {
        let before = b.scenario(
            &format!("before commit {k}"),
            Some(&format!("before:{k}")),
            None,
            &clean,
        );
        let after = b.scenario(
            &format!("after commit {k}"),
            Some(&format!("after:{k}")),
            None,
            &clean,
        );
        if !before && !after {
            break;
        }
        crashed += usize::from(before) + usize::from(after);
    }
    // The runbook commits at least once per side-effecting step and timer: a handful of boundaries
    // at the very least, each crashed on both sides.
    assert!(crashed >= 8, "only {crashed} crash points were exercised");

    // Pseudo-random points inside steps, from outside, with SIGKILL.
    let mut rng = XorShift::seeded();
    for n in 0..8 {
        let delay = Duration::from_millis(5 + rng.next() % 150);
        b.scenario(
            &format!("SIGKILL #{n} after {delay:?} (seed {})", rng.seed),
            None,
            Some(delay),
            &clean,
        );
    }
}

/// A small pseudo-random sequence whose seed is printed with every failure it leads to.
struct XorShift {
    seed: u64,
    x: u64,
}

impl XorShift {
    fn seeded() -> XorShift {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |d| u64::from(d.subsec_nanos()));
        XorShift { seed, x: seed | 1 }
    }

    fn next(&mut self) -> u64 {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        self.x
    }
}

/// How one engine process of a parked run's life is broken.
#[derive(Debug, Clone, Copy)]
enum Blow {
    /// `RUNBOOK_TEST_CRASH`: `before:K` or `after:K`.
    Commit(&'static str, u64),
    /// SIGKILL after this long.
    Kill(Duration),
    /// Driven without `--detach` so that it waits for the answer in its process: SIGKILL once the
    /// approval request is journaled.
    KillWhileAsking,
    /// As above, but carol approves from a second process first, and the engine dies right after,
    /// whether or not it took the answer yet.
    KillRightAfterApproval,
}

/// The engine process (0 is `run --detach`, then each `resume` in turn) to break, and how.
#[derive(Debug, Clone, Copy)]
struct Injection {
    process: usize,
    blow: Blow,
}

/// What a parked run's life came to.
struct Life {
    /// The run, if it was recorded.
    run: Option<String>,
    /// Whether the injected blow struck (the process did not end on its own).
    struck: bool,
    /// Unknown steps the operator had run again.
    retries: usize,
    /// Engine processes it took.
    processes: usize,
}

/// The state of the approved step as the operator reads it.
fn risky_status(ends: &Ends) -> &str {
    ends.get("risky")
        .and_then(|e| e.status.as_str())
        .unwrap_or_default()
}

/// The journaled events about `risky`, from `show --events -o json`.
fn risky_events(shown: &Value) -> impl Iterator<Item = &Value> {
    shown["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| &e["event"])
        .filter(|e| e["step"] == "risky")
}

/// How many times `risky` asked for approval.
fn asked(shown: &Value) -> usize {
    risky_events(shown)
        .filter(|e| e["type"] == "approval_requested")
        .count()
}

impl Bench {
    fn shown_with_events(&self, run: &str) -> Value {
        self.json(&["show", run, "--events", "-o", "json"])
    }

    /// A run parked at a timer is continued once it is due, as a scheduler would: at the journaled
    /// instant (so that each engine process of a life does the same thing each time).
    fn until_due(shown: &Value) {
        if shown["run"]["status"] != "parked" {
            return;
        }
        let parked = shown["events"].as_array().and_then(|a| {
            a.iter()
                .rev()
                .find(|e| e["event"]["type"] == "run_detached")
        });
        let Some(wake) = parked.and_then(|e| e["event"]["wake_at_ms"].as_i64()) else {
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let left = u64::try_from(wake.saturating_sub(now)).unwrap_or(0);
        std::thread::sleep(Duration::from_millis(left.min(1000) + 1));
    }

    /// Approves `risky` as carol, from a second process, if it waits (as `shown` says) for an
    /// answer not given yet (one given earlier may wait in the answer inbox for a driver to journal
    /// it). Whether it waits.
    fn approve_if_asked(&self, run: &str, shown: &Value, label: &str) -> bool {
        if risky_status(&Self::ends(shown)) != "awaiting-approval" {
            return false;
        }
        if self.given.get() < asked(shown) {
            // The request is open: whatever happened before, the step has not acted yet.
            assert_eq!(
                self.count("effects.log", "risky"),
                0,
                "{label}: `risky` acted before it was approved"
            );
            let o = self.out(&["approve", run, "risky", "--actor", "carol"]);
            assert_eq!(
                o.status.code(),
                Some(0),
                "{label}: approve failed: {}",
                stderr(&o)
            );
            self.given.set(self.given.get() + 1);
        }
        true
    }

    /// Polls the journal (bounded) until `risky`'s approval request is in it, or the process ends.
    fn until_asking(&self, child: &mut std::process::Child, run: &str, label: &str) -> bool {
        for _ in 0..500 {
            if child.try_wait().expect("try_wait").is_some() {
                return false;
            }
            if risky_status(&self.final_state(run)) == "awaiting-approval" {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{label}: the approval request was never journaled");
    }

    /// Runs one engine process of the life, broken as `blow` says. Whether the blow struck (the
    /// process did not end on its own).
    fn engine(&self, args: &[&str], run: Option<&str>, blow: Option<Blow>, label: &str) -> bool {
        let mut c = self.cmd(args);
        if let Some(Blow::Commit(when, k)) = blow {
            c.env("RUNBOOK_TEST_CRASH", format!("{when}:{k}"));
        }
        let mut child = c
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        match (blow, run) {
            (Some(Blow::Kill(after)), _) => {
                let t = Instant::now();
                while t.elapsed() < after && child.try_wait().expect("try_wait").is_none() {
                    std::thread::yield_now();
                }
                let _ = child.kill();
            }
            (Some(Blow::KillWhileAsking), Some(run))
                if self.until_asking(&mut child, run, label) =>
            {
                let _ = child.kill();
            }
            (Some(Blow::KillRightAfterApproval), Some(run))
                if self.until_asking(&mut child, run, label) =>
            {
                self.approve_if_asked(run, &self.shown_with_events(run), label);
                let _ = child.kill();
            }
            _ => {}
        }
        let o = child.wait_with_output().expect("wait");
        let ended = matches!(o.status.code(), Some(0 | 4));
        assert!(
            ended || blow.is_some(),
            "{label}: exited {:?}: {}",
            o.status.code(),
            stderr(&o)
        );
        self.wait_for_orphans(label);
        !ended
    }

    /// A parked run's life, with the operator's part: start it detached; while it is not over,
    /// approve `risky` when it asks, settle unknown steps from the effect log, and resume it:
    /// detached while an approval may still be asked for (a run driven here would wait for it);
    /// with an answer waiting, detached first (the detached resume must take it, not park again),
    /// then plainly and detached in turn; plainly once `risky` is done. Before and after each engine
    /// process, no step recorded complete runs again.
    fn parked_life(&self, label: &str, inject: Option<Injection>) -> Life {
        self.reset_logs();
        self.given.set(0);
        let mut run: Option<String> = None;
        let mut struck = false;
        let mut retries = 0;
        let mut resumed_with_answer = 0;
        // Set when the last process was given an answer and ended on its own.
        let mut had_an_answer = false;
        for p in 0..16 {
            let blow = inject.filter(|i| i.process == p).map(|i| i.blow);
            let mut args: Vec<String> = Vec::new();
            let mut done_before = Vec::new();
            match &run {
                None => args
                    .extend(["run", self.file.as_str(), "--detach", "--quiet"].map(String::from)),
                Some(id) => {
                    let shown = self.shown_with_events(id);
                    if shown["run"]["status"] == "succeeded" {
                        return Life {
                            run,
                            struck,
                            retries,
                            processes: p,
                        };
                    }
                    Self::until_due(&shown);
                    let ends = Self::ends(&shown);
                    assert!(
                        !(had_an_answer
                            && risky_status(&ends) == "awaiting-approval"
                            && self.given.get() >= asked(&shown)),
                        "{label}: process {} ended without taking the answer given to `risky`",
                        p - 1
                    );
                    let answered = self.approve_if_asked(id, &shown, label);
                    had_an_answer = answered;
                    let (settle, r) = self.settle_unknown(&ends);
                    retries += r;
                    let waiting_here = matches!(
                        blow,
                        Some(Blow::KillWhileAsking | Blow::KillRightAfterApproval)
                    );
                    let detach = if waiting_here || risky_status(&ends) == "succeeded" {
                        false
                    } else if answered {
                        resumed_with_answer += 1;
                        resumed_with_answer % 2 == 1
                    } else {
                        true
                    };
                    args.extend(["resume", id, "--quiet"].map(String::from));
                    if detach {
                        args.push("--detach".into());
                    }
                    args.extend(settle);
                    done_before = Self::with_status(&ends, "succeeded");
                }
            }
            let exec_before = self.log("exec.log");
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let label = format!("{label}, process {p} {argv:?}, operator retries {retries}");
            let hit = self.engine(&argv, run.as_deref(), blow, &label);
            struck |= hit;
            had_an_answer &= !hit;
            for step in &done_before {
                let before = exec_before.iter().filter(|s| *s == step).count();
                assert_eq!(
                    before,
                    self.count("exec.log", step),
                    "{label}: `{step}` was recorded complete, yet ran again"
                );
            }
            if run.is_none() {
                let id = self.latest_run();
                if id == self.newest.replace(id.clone()) {
                    // Killed before the run was recorded: nothing to resume, and nothing happened.
                    assert!(
                        self.log("effects.log").is_empty(),
                        "{label}: an unrecorded run acted"
                    );
                    return Life {
                        run: None,
                        struck,
                        retries,
                        processes: 1,
                    };
                }
                run = Some(id);
            }
        }
        panic!("{label}: the run is not over after 16 engine processes");
    }

    /// Every start of `risky` follows an approval given to the request of that very attempt.
    fn approved_before_acting(shown: &Value, label: &str) {
        let mut requested = None;
        let mut granted = None;
        let mut starts = 0;
        for e in risky_events(shown) {
            match e["type"].as_str().unwrap_or_default() {
                "approval_requested" => {
                    requested = e["attempt"].as_u64();
                    granted = None;
                }
                "approval_granted" => {
                    assert!(requested.is_some(), "{label}: granted before it was asked");
                    granted = requested;
                }
                "approval_denied" => panic!("{label}: `risky` was denied: {e}"),
                "step_started" => {
                    starts += 1;
                    assert_eq!(
                        granted,
                        e["attempt"].as_u64(),
                        "{label}: `risky` started attempt {} without its approval",
                        e["attempt"]
                    );
                }
                _ => {}
            }
        }
        assert!(starts >= 1, "{label}: `risky` never started");
    }

    /// One life with `inject`, checked; whether the blow struck.
    fn parked_scenario(&self, label: &str, inject: Injection, clean: &Ends) -> bool {
        let life = self.parked_life(label, Some(inject));
        if let Some(run) = &life.run {
            let shown = self.shown_with_events(run);
            let unsafe_steps = ["prepare", "risky", "notify"];
            self.check_end(run, &shown, label, clean, &unsafe_steps, life.retries);
            Self::approved_before_acting(&shown, label);
        }
        life.struck
    }
}

fn parked_torture(db: Option<String>) {
    let b = Bench::new(db, PARKED);
    // The uninterrupted life is the reference: parked at the timer and at the approval, then the
    // answer taken by a detached resume that ends the run.
    let life = b.parked_life("uninterrupted", None);
    let run = life.run.expect("the run was recorded");
    let shown = b.shown_with_events(&run);
    let clean = Bench::ends(&shown);
    assert_eq!(clean["risky"].approved_by, "carol");
    assert!(clean.values().all(|e| e.status == "succeeded"), "{clean:?}");
    Bench::approved_before_acting(&shown, "uninterrupted");
    // It parked at the approval, and at the timer unless the machine was so slow that it was due
    // before the engine could park.
    let parks: Vec<&Value> = shown["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| &e["event"])
        .filter(|e| e["type"] == "run_detached")
        .collect();
    assert!(
        parks
            .iter()
            .any(|e| e["approvals"] == serde_json::json!(["risky"])),
        "{parks:?}"
    );
    assert!((2..=3).contains(&life.processes), "{}", life.processes);

    // Every commit boundary of every engine process of the life, on both sides.
    let mut crashed = 0;
    'process: for process in 0..life.processes {
        for k in 1..=100 {
            for when in ["before", "after"] {
                let label = format!("process {process} crashed {when} its commit {k}");
                let inject = Injection {
                    process,
                    blow: Blow::Commit(when, k),
                };
                if !b.parked_scenario(&label, inject, &clean) {
                    // The process ended before its K-th commit (or, as the timer fell, this life
                    // had fewer processes): there are no more boundaries of it to crash.
                    continue 'process;
                }
                crashed += 1;
            }
        }
    }
    // Even a life whose timer was due before the engine could park has two engine processes: the
    // start (two commits at least: the intent of `prepare`, the park) and the resume that ends the
    // run (three at least: the intents of `risky` and `notify`, and the end).
    assert!(crashed >= 10, "only {crashed} crash points were exercised");

    // Killed while the request is pending in a process that waits for the answer, then approved
    // from a second process; and approved while it waits, then killed before or after it took the
    // answer. The second process asks at the latest.
    for blow in [Blow::KillWhileAsking, Blow::KillRightAfterApproval] {
        let label = format!("process 1: {blow:?}");
        b.parked_scenario(&label, Injection { process: 1, blow }, &clean);
    }

    // SIGKILL at pseudo-random moments of pseudo-random processes.
    let mut rng = XorShift::seeded();
    for n in 0..6 {
        let process = usize::try_from(rng.next() % 3).unwrap_or(0);
        let delay = Duration::from_millis(1 + rng.next() % 60);
        let label = format!(
            "SIGKILL #{n} of process {process} after {delay:?} (seed {})",
            rng.seed
        );
        let inject = Injection {
            process,
            blow: Blow::Kill(delay),
        };
        b.parked_scenario(&label, inject, &clean);
    }
}

#[test]
fn crash_torture_on_sqlite() {
    torture(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_torture_on_postgresql() {
    let db = crate::common::PgDb::new().await;
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || torture(Some(url)))
        .await
        .expect("torture");
}

#[test]
fn crash_torture_while_parked_or_asking_on_sqlite() {
    parked_torture(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_torture_while_parked_or_asking_on_postgresql() {
    let db = crate::common::PgDb::new().await;
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || parked_torture(Some(url)))
        .await
        .expect("torture");
}

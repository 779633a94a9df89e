//! Crash torture: the run is killed at every journal commit boundary in turn (just before and just
//! after each commit) and at pseudo-random moments inside steps, then resumed until it finishes, with
//! an operator who settles unknown unsafe steps by looking at their side-effect log. Afterwards:
//! the run succeeded; no step recorded as completed ran again; no unsafe step acted twice; the final
//! state equals an uninterrupted run's; the hash chain verifies. On SQLite and on PostgreSQL.

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

struct Bench {
    sb: Sandbox,
    db: String,
    file: String,
}

impl Bench {
    fn new(db: Option<String>) -> Bench {
        let sb = Sandbox::new();
        let file = sb.write("torture.yaml", TORTURE).display().to_string();
        let db = db.unwrap_or_else(|| sb.db().display().to_string());
        Bench { sb, db, file }
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

    /// Step id -> (status, outputs, decision taken) as `show` reports them.
    fn final_state(&self, run: &str) -> BTreeMap<String, (Value, Value, Value)> {
        let shown = self.json(&["show", run, "-o", "json"]);
        shown["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let id = s["id"].as_str().unwrap_or_default().to_string();
                (
                    id,
                    (
                        s["status"].clone(),
                        s["outputs"].clone(),
                        s["decision"]["taken"].clone(),
                    ),
                )
            })
            .collect()
    }

    fn completed(&self, run: &str) -> Vec<String> {
        self.final_state(run)
            .into_iter()
            .filter(|(_, v)| v.0 == "succeeded")
            .map(|(k, _)| k)
            .collect()
    }

    /// Resumes until the run is over, settling unknown steps the way an operator would: an unsafe
    /// step whose effect is in the log did act (mark it done), otherwise run it again.
    fn resume_to_the_end(&self, run: &str, label: &str) -> usize {
        // Killed after its last commit: the run is over and is checked as it stands.
        if self.json(&["show", run, "-o", "json"])["run"]["status"] == "succeeded" {
            return 0;
        }
        let o = self.out(&["resume", run, "--quiet"]);
        match o.status.code() {
            Some(0) => 0,
            Some(4) => {
                let mut retries = 0;
                let effects = self.log("effects.log");
                let mut args = vec!["resume".to_string(), run.to_string(), "--quiet".to_string()];
                for (id, (status, _, _)) in self.final_state(run) {
                    if status == "unknown" {
                        if effects.contains(&id) {
                            args.extend(["--mark-done".to_string(), id]);
                        } else {
                            retries += 1;
                            args.extend(["--retry".to_string(), id]);
                        }
                    }
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
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

    /// One crash scenario: start with `crash` set (or killed from outside after `kill_after`),
    /// resume to the end, check every property against `clean`.
    fn scenario(
        &self,
        label: &str,
        crash: Option<&str>,
        kill_after: Option<Duration>,
        clean: &BTreeMap<String, (Value, Value, Value)>,
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
        let run = self.latest_run();
        if run == previous {
            // Killed before the run was recorded: there is nothing to resume, and nothing happened.
            assert!(
                self.log("effects.log").is_empty(),
                "{label}: an unrecorded run acted"
            );
            return false;
        }
        let done_before = self.completed(&run);
        let exec_before = self.log("exec.log");
        let retries = self.resume_to_the_end(&run, label);

        let state = self.final_state(&run);
        assert_eq!(
            &state, clean,
            "{label}: final state differs from an uninterrupted run"
        );
        let exec_after = self.log("exec.log");
        for step in &done_before {
            let before = exec_before.iter().filter(|s| *s == step).count();
            let after = exec_after.iter().filter(|s| *s == step).count();
            assert_eq!(
                before, after,
                "{label}: `{step}` was recorded complete, yet ran again"
            );
        }
        let effects = self.log("effects.log");
        for step in ["fix_unsafe", "notify"] {
            let n = effects.iter().filter(|s| *s == step).count();
            assert_eq!(
                n, 1,
                "{label}: unsafe `{step}` acted {n} times (operator retries: {retries})"
            );
        }
        let o = self.out(&["audit", "verify", &run]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{label}: chain does not verify: {}",
            stdout(&o)
        );
        true
    }
}

fn torture(db: Option<String>) {
    let b = Bench::new(db);
    // The uninterrupted run is the reference.
    let o = b.out(&["run", &b.file, "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let clean = b.final_state(&b.latest_run());
    assert_eq!(
        clean["choose"].2,
        serde_json::json!(["fix_unsafe", "fix_idem"])
    );
    assert_eq!(clean["nothing"].0, "skipped");

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
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.subsec_nanos() as u64);
    let mut x = seed | 1;
    for n in 0..8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = Duration::from_millis(5 + x % 150);
        b.scenario(
            &format!("SIGKILL #{n} after {delay:?} (seed {seed})"),
            None,
            Some(delay),
            &clean,
        );
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

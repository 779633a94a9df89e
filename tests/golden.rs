//! Golden tests: bad runbooks and the exact diagnostics they produce.
//!
//! Every `tests/golden/NAME.yaml` is checked with the real binary (`runbook validate NAME.yaml`, run from
//! `tests/golden` so the paths in the diagnostics are stable), and its stderr must equal
//! `tests/golden/NAME.stderr` byte for byte. Files named `valid_*.yaml` must pass (exit 0, empty stderr);
//! every other file must be rejected (exit 2, non-empty stderr).
//!
//! To (re)generate the expected files after a deliberate change to a message:
//!
//! ```text
//! UPDATE_GOLDEN=1 cargo test -p runbook-engine --test main golden
//! ```
//!
//! and then read the diff: each diagnostic must point at the offending text and make sense to a runbook
//! author.

use crate::common::{bin, repo, stderr, stdout};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The least number of golden cases; guards against the directory going missing or being emptied.
const MIN_CASES: usize = 24;

fn golden_dir() -> PathBuf {
    repo().join("tests").join("golden")
}

/// File names (not paths) in the golden directory ending with `ext`, sorted.
fn files_with(ext: &str) -> Vec<String> {
    let dir = golden_dir();
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.ends_with(ext))
        .collect();
    names.sort();
    names
}

/// The case names (file stems of `*.yaml`), sorted.
fn cases() -> Vec<String> {
    files_with(".yaml")
        .into_iter()
        .filter_map(|f| f.strip_suffix(".yaml").map(str::to_owned))
        .collect()
}

fn is_valid_case(name: &str) -> bool {
    name.starts_with("valid_")
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

/// `runbook validate NAME.yaml` from the golden directory, without colour or terminal.
fn validate(name: &str) -> Output {
    Command::new(bin())
        .arg("validate")
        .arg(format!("{name}.yaml"))
        .current_dir(golden_dir())
        .env("NO_COLOR", "1")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("RUNBOOK_PATH")
        .stdin(Stdio::null())
        .output()
        .expect("spawn runbook")
}

/// A line diff (longest common subsequence), `-` for expected lines, `+` for actual ones.
fn line_diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    // lcs[i][j] = length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            let _ = writeln!(out, "  {}", a[i]);
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "- {}", a[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "+ {}", b[j]);
            j += 1;
        }
    }
    if !expected.is_empty()
        && !actual.is_empty()
        && expected.ends_with('\n') != actual.ends_with('\n')
    {
        out.push_str("(the two differ in the final newline)\n");
    }
    out
}

/// Checks one case; returns a description of every problem with it.
fn check_case(name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let out = validate(name);
    let actual = stderr(&out);
    let code = out.status.code();

    // Exit code and shape of the output, whatever the golden file says.
    if is_valid_case(name) {
        if code != Some(0) {
            problems.push(format!(
                "expected exit code 0 (a valid runbook), got {code:?}"
            ));
        }
        if !stdout(&out).starts_with(&format!("ok: {name}.yaml (")) {
            problems.push(format!(
                "expected `ok: {name}.yaml (N steps)` on stdout, got {:?}",
                stdout(&out)
            ));
        }
    } else {
        if code != Some(2) {
            problems.push(format!(
                "expected exit code 2 (an invalid runbook), got {code:?}"
            ));
        }
        if actual.is_empty() {
            problems.push("expected diagnostics on stderr, got none".to_string());
        }
    }
    let dir = golden_dir();
    if actual.contains(dir.to_string_lossy().as_ref()) {
        problems.push("stderr contains the machine-specific golden directory path".to_string());
    }

    let golden = dir.join(format!("{name}.stderr"));
    if updating() {
        let old = std::fs::read_to_string(&golden).ok();
        if old.as_deref() != Some(actual.as_str()) {
            std::fs::write(&golden, &actual)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", golden.display()));
            eprintln!("updated {name}.stderr");
        }
    } else {
        match std::fs::read_to_string(&golden) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => problems.push(format!(
                "stderr differs from {name}.stderr (- expected, + actual):\n{}",
                line_diff(&expected, &actual)
            )),
            Err(e) => problems.push(format!(
                "cannot read {name}.stderr ({e}); run with UPDATE_GOLDEN=1 to create it. Actual stderr:\n{actual}"
            )),
        }
    }
    problems
}

/// Built with every optional plugin family (the default features).
const FULL_BUILD: bool = cfg!(all(feature = "kubernetes", feature = "mongodb"));

#[test]
fn golden_diagnostics_match() {
    let cases = cases();
    assert!(
        !cases.is_empty(),
        "no golden cases in {}",
        golden_dir().display()
    );
    let mut failures = String::new();
    let mut failed = 0;
    for name in &cases {
        // `family_*` cases use the optional plugin families; a build without them reports "not in
        // this build" instead (tests/cli.rs checks that), so their golden text is the full build's.
        if name.starts_with("family_") && !FULL_BUILD {
            continue;
        }
        let problems = check_case(name);
        if !problems.is_empty() {
            failed += 1;
            let _ = writeln!(failures, "==== {name}.yaml");
            for p in problems {
                let _ = writeln!(failures, "{p}");
            }
            failures.push('\n');
        }
    }
    // A `.stderr` without its `.yaml` is a leftover from a renamed or deleted case.
    for f in files_with(".stderr") {
        let stem = f.trim_end_matches(".stderr");
        if !cases.iter().any(|c| c == stem) {
            failed += 1;
            let _ = writeln!(
                failures,
                "==== {f}\norphan golden file: there is no {stem}.yaml\n"
            );
        }
    }
    assert!(
        failed == 0,
        "{failed} of {} golden cases failed (UPDATE_GOLDEN=1 regenerates the .stderr files):\n\n{failures}",
        cases.len()
    );
}

#[test]
fn golden_has_enough_cases() {
    let cases = cases();
    let invalid = cases.iter().filter(|c| !is_valid_case(c)).count();
    let valid = cases.len() - invalid;
    assert!(
        invalid >= MIN_CASES,
        "expected at least {MIN_CASES} bad-runbook golden cases, found {invalid}"
    );
    assert!(
        valid >= 2,
        "expected at least 2 valid_* cases, found {valid}"
    );
}

#[test]
fn golden_stderr_never_shows_a_panic() {
    for f in files_with(".stderr") {
        let path = golden_dir().join(&f);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        for word in ["panicked", "RUST_BACKTRACE"] {
            assert!(!text.contains(word), "{f} contains `{word}`:\n{text}");
        }
    }
}

#[test]
fn golden_line_diff_marks_changes() {
    let d = line_diff("a\nb\nc\n", "a\nx\nc\n");
    assert_eq!(d, "  a\n- b\n+ x\n  c\n");
}

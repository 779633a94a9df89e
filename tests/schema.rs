//! `runbook schema`: the JSON Schema editors use, checked with a real JSON Schema validator against
//! every runbook we ship and against runbooks that must be rejected. The engine is the authority, so
//! every case is also checked with `validate::check`: the schema must never reject a runbook the
//! engine runs, and what it rejects here the engine rejects too.

use crate::common::{Sandbox, repo, stderr, stdout};
use runbook_engine::expr::Expr;
use runbook_engine::runbook::load::parse_yaml;
use runbook_engine::runbook::validate::check;
use runbook_engine::schema::json_schema;
use runbook_steps::Registry;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn validator() -> jsonschema::Validator {
    jsonschema::draft7::new(&json_schema(&Registry::builtin())).expect("the schema compiles")
}

fn to_json(text: &str) -> Value {
    parse_yaml(text)
        .unwrap_or_else(|e| panic!("not YAML: {e}\n{text}"))
        .to_json()
}

/// The schema's complaints about `text`, one line each (`/steps/0/with: ...`).
fn schema_errors(v: &jsonschema::Validator, text: &str) -> Vec<String> {
    let doc = to_json(text);
    v.iter_errors(&doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn engine_accepts(text: &str) -> Result<(), String> {
    check("case.yaml", text, &Registry::builtin(), &Expr::new())
        .map(drop)
        .map_err(|r| r.render(false))
}

fn yaml_files(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() && recursive {
            yaml_files(&path, true, out);
        } else if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(path);
        }
    }
}

fn shipped_runbooks() -> Vec<PathBuf> {
    let root = repo();
    let mut files = Vec::new();
    yaml_files(&root.join("runbooks"), true, &mut files);
    yaml_files(&root.join("docs/examples"), false, &mut files);
    let mut golden = Vec::new();
    yaml_files(&root.join("tests/golden"), false, &mut golden);
    files.extend(golden.into_iter().filter(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("valid_"))
    }));
    files.sort();
    files
}

#[test]
fn schema_is_a_valid_draft_07_schema() {
    let schema = json_schema(&Registry::builtin());
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let meta = jsonschema::draft7::meta::validate(&schema);
    assert!(meta.is_ok(), "{meta:?}");
}

#[test]
fn every_shipped_runbook_passes_the_schema() {
    let v = validator();
    let files = shipped_runbooks();
    // runbooks/examples (1), docs/examples (3), tests/golden/valid_* (3) at the time of writing.
    assert!(files.len() >= 7, "too few runbooks found: {files:?}");
    let mut failures = String::new();
    let full_build = cfg!(all(feature = "kubernetes", feature = "mongodb"));
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read runbook");
        if !full_build && (text.contains("uses: kubernetes.") || text.contains("uses: mongodb.")) {
            // Without the family, the engine must say so (and the schema, built from this build's
            // registry, cannot describe those plugins).
            match engine_accepts(&text) {
                Err(e) if e.contains("is not in this build") => continue,
                other => failures.push_str(&format!(
                    "{}: uses a plugin family this build lacks, but the engine said {other:?}\n",
                    f.display()
                )),
            }
            continue;
        }
        if let Err(e) = engine_accepts(&text) {
            failures.push_str(&format!("{}: the engine rejects it:\n{e}\n", f.display()));
        }
        for e in schema_errors(&v, &text) {
            failures.push_str(&format!("{}: {e}\n", f.display()));
        }
    }
    assert!(failures.is_empty(), "{failures}");
}

const HEAD: &str = "name: case\nsteps:\n";

/// Runbooks the engine rejects, and the instance path the schema must complain about.
const REJECTED: &[(&str, &str, &str)] = &[
    (
        "unknown key in a step",
        "  - id: a\n    uses: flow.noop\n    timout: 5s\n",
        "/steps/0",
    ),
    (
        "wrong type for a plugin field",
        "  - id: a\n    uses: shell.run\n    with: { argv: [true], parse_json: \"yes\" }\n",
        "/steps/0/with/parse_json",
    ),
    (
        "a literal number where argv takes strings",
        "  - id: a\n    uses: shell.run\n    with: { argv: [sleep, 5] }\n",
        "/steps/0/with/argv/1",
    ),
    (
        "unknown plugin field",
        "  - id: a\n    uses: http.request\n    with: { url: \"http://x\", metod: GET }\n",
        "/steps/0/with",
    ),
    (
        "missing required plugin field",
        "  - id: a\n    uses: http.request\n    with: { method: GET }\n",
        "/steps/0/with",
    ),
    (
        "a plugin value outside its enum",
        "  - id: a\n    uses: http.request\n    with: { url: \"http://x\", method: get }\n",
        "/steps/0/with/method",
    ),
    (
        "both of an exactly-one-of group",
        "  - id: a\n    uses: shell.run\n    with: { argv: [ls], shell: ls }\n",
        "/steps/0/with",
    ),
    (
        "none of an exactly-one-of group",
        "  - id: a\n    uses: shell.run\n    with: { cwd: / }\n",
        "/steps/0/with",
    ),
    (
        "no with for a plugin that needs one",
        "  - id: a\n    uses: shell.run\n",
        "/steps/0",
    ),
    (
        "unknown plugin",
        "  - id: a\n    uses: shell.runn\n",
        "/steps/0/uses",
    ),
    (
        "timeout on a step the engine runs itself",
        "  - id: a\n    uses: flow.sleep\n    timeout: 5s\n    with: { for: 1s }\n",
        "/steps/0/timeout",
    ),
    (
        "a duration that is not one",
        "  - id: a\n    uses: flow.sleep\n    with: { for: soon }\n",
        "/steps/0/with/for",
    ),
    (
        "a negative step timeout",
        "  - id: a\n    uses: flow.noop\n    timeout: -5s\n",
        "/steps/0/timeout",
    ),
    (
        "retry attempts out of range",
        "  - id: a\n    uses: flow.noop\n    retry: { attempts: 0 }\n",
        "/steps/0/retry",
    ),
    (
        "an unknown error kind in retry.on",
        "  - id: a\n    uses: flow.noop\n    retry: { on: [timout] }\n",
        "/steps/0/retry",
    ),
    (
        "a reserved output name",
        "  - id: a\n    uses: flow.noop\n    outputs: { status: \"{{ result }}\" }\n",
        "/steps/0/outputs",
    ),
    (
        "a step id that is not an identifier",
        "  - id: check-disk\n    uses: flow.noop\n",
        "/steps/0/id",
    ),
    (
        "a builtin as a wait_until probe",
        "  - id: a\n    uses: flow.wait_until\n    with:\n      probe: { uses: flow.sleep, with: { for: 1s } }\n      until: result.slept_ms > 0\n      deadline: 1m\n",
        "/steps/0/with/probe/uses",
    ),
    (
        "an unknown key in an approval mapping",
        "  - id: a\n    uses: shell.run\n    approval: { required: true, approver: [bob] }\n    with: { argv: [\"true\"] }\n",
        "/steps/0/approval",
    ),
    (
        "an unknown field in a branch case",
        "  - id: a\n    uses: flow.branch\n    with: { cases: [{ when: \"true\", then: b, else: b }] }\n  - id: b\n    uses: flow.noop\n",
        "/steps/0/with/cases/0",
    ),
];

#[test]
fn runbooks_the_engine_rejects_are_flagged_where_the_problem_is() {
    let v = validator();
    let mut failures = String::new();
    for (what, steps, path) in REJECTED {
        let text = format!("{HEAD}{steps}");
        if engine_accepts(&text).is_ok() {
            failures.push_str(&format!(
                "{what}: the engine accepts it, so it is no test\n"
            ));
        }
        let errors = schema_errors(&v, &text);
        if !errors.iter().any(|e| e.starts_with(&format!("{path}:"))) {
            failures.push_str(&format!(
                "{what}: expected an error at {path}, got {errors:#?}\n"
            ));
        }
    }
    let top: &[(&str, &str, &str)] = &[
        ("no steps", "name: case\n", ""),
        (
            "unknown top-level key",
            "name: case\nstep: []\nsteps: []\n",
            "",
        ),
        (
            "a bad runbook name",
            "name: Case\nsteps: [{ id: a, uses: flow.noop }]\n",
            "/name",
        ),
        (
            "a wrong apiVersion",
            "apiVersion: runbook/v2\nname: case\nsteps: [{ id: a, uses: flow.noop }]\n",
            "/apiVersion",
        ),
        (
            "an unknown param type",
            "name: case\nparams: { n: { type: int } }\nsteps: [{ id: a, uses: flow.noop }]\n",
            "/params/n/type",
        ),
        (
            "a param without type or enum",
            "name: case\nparams: { n: { default: 1 } }\nsteps: [{ id: a, uses: flow.noop }]\n",
            "/params/n",
        ),
    ];
    for (what, text, path) in top {
        if engine_accepts(text).is_ok() {
            failures.push_str(&format!(
                "{what}: the engine accepts it, so it is no test\n"
            ));
        }
        let errors = schema_errors(&v, text);
        if !errors.iter().any(|e| e.starts_with(&format!("{path}:"))) {
            failures.push_str(&format!(
                "{what}: expected an error at `{path}`, got {errors:#?}\n"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures}");
}

#[test]
fn templates_are_accepted_where_numbers_booleans_and_durations_are_expected() {
    let v = validator();
    let text = r#"name: templated
params:
  wait: { type: string, default: 1s }
  json: { type: bool, default: true }
vars:
  codes: [0, 1]
  status: 200
steps:
  - id: run
    uses: shell.run
    side_effect: read
    with:
      argv: [echo, "{{ params.wait }}"]
      parse_json: "{{ params.json }}"
      ok_codes: "{{ vars.codes }}"
  - id: nap
    uses: flow.sleep
    needs: run
    with: { for: "{{ params.wait }}" }
  - id: probe
    uses: http.request
    needs: nap
    with:
      url: "http://127.0.0.1:1/"
      method: "{{ 'get' | upper }}"
      expect_status: ["{{ vars.status }}", 204]
  - id: poll
    uses: flow.wait_until
    needs: probe
    with:
      probe: { uses: http.request, with: { url: "http://127.0.0.1:1/" } }
      until: "{{ result.status == vars.status }}"
      deadline: "{{ params.wait }}"
      interval: 1.5
"#;
    let accepted = engine_accepts(text);
    assert!(accepted.is_ok(), "the engine rejects it:\n{accepted:?}");
    let errors = schema_errors(&v, text);
    assert!(errors.is_empty(), "{errors:#?}");
    // The same runbook with one template replaced by a literal of the wrong type is caught.
    let broken = text.replace("parse_json: \"{{ params.json }}\"", "parse_json: \"on\"");
    assert!(engine_accepts(&broken).is_err());
    let errors = schema_errors(&v, &broken);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("/steps/0/with/parse_json:")),
        "{errors:#?}"
    );
}

#[test]
fn field_docs_become_descriptions() {
    let schema = json_schema(&Registry::builtin());
    let argv = &schema["definitions"]["with:shell.run"]["properties"]["argv"]["description"];
    let argv = argv.as_str().unwrap_or_default();
    assert!(argv.contains("Looked up on PATH"), "{argv}");
    let timeout = schema["definitions"]["step"]["properties"]["timeout"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(timeout.contains("one attempt"), "{timeout}");
}

#[test]
fn cli_prints_the_schema_or_writes_it_to_a_file() {
    let sb = Sandbox::new();
    let expected = json_schema(&Registry::builtin());

    let o = sb.run(&["schema"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let printed: Value = serde_json::from_str(&stdout(&o)).expect("stdout is JSON");
    assert_eq!(printed, expected);

    let o = sb.run(&["schema", "--out", "runbook.schema.json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    let written = std::fs::read_to_string(sb.path().join("runbook.schema.json")).expect("written");
    let written: Value = serde_json::from_str(&written).expect("the file is JSON");
    assert_eq!(written, expected);

    // A directory where the file should go: an environment error naming the path, no panic.
    let o = sb.run(&["schema", "--out", "."]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot write ."), "{}", stderr(&o));

    let o = sb.run(&["schema", "--help"]);
    let help = stdout(&o);
    for needle in [
        "yaml.schemas",
        "# yaml-language-server: $schema=",
        "docs/editors.md",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

//! Schemathesis (an OpenAPI fuzzer, installed by `dev/services tool schemathesis`) against a
//! running `runbook serve`: generated and mutated requests to every operation of /openapi.json,
//! with a token holding every role, must never get a server error, and every answer must match the
//! document (status codes, content types, bodies).

use crate::common::Sandbox;
use crate::serve::{ROOT, Server};
use std::process::Command;

#[test]
fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    let Some(st) = std::env::var_os("RUNBOOK_TEST_SCHEMATHESIS") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "RUNBOOK_TEST_SCHEMATHESIS is required in CI (dev/test.sh sets it)"
        );
        eprintln!("skipped: set RUNBOOK_TEST_SCHEMATHESIS=$(dev/services tool schemathesis)");
        return;
    };
    let sb = Sandbox::new();
    let server = Server::start(&sb, None);
    let out = Command::new(st)
        .current_dir(sb.path())
        .args([
            "run",
            &format!("{}/openapi.json", server.base),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--header",
            &format!("Authorization: Bearer {ROOT}"),
            "--max-examples",
            "25",
            "--seed",
            "7",
            "--generation-database",
            "none",
            "--no-color",
            "--workers",
            "2",
        ])
        .output()
        .expect("run schemathesis");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}\nserver log:\n{}",
        server.log()
    );
    assert!(server.stop().success());
}

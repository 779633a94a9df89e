//! Generated documentation is current: `docs/plugins.md` is what `runbook plugins --markdown` prints.
//!
//! After changing a plugin's declaration: `UPDATE_GOLDEN=1 cargo nextest run -p runbook-engine
//! plugin_reference`, then read the diff.

//! docs/plugins.md describes the default build, with every plugin family (tests/main.rs compiles
//! this module only there).

use crate::common::{bin, repo, stderr, stdout};

#[test]
fn plugin_reference_in_docs_is_current() {
    let out = std::process::Command::new(bin())
        .args(["plugins", "--markdown"])
        .output()
        .expect("spawn runbook");
    assert!(out.status.success(), "{}", stderr(&out));
    let generated = stdout(&out);
    let path = repo().join("docs").join("plugins.md");
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).expect("write docs/plugins.md");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/plugins.md is stale: run `UPDATE_GOLDEN=1 cargo nextest run -p runbook-engine plugin_reference` and commit it"
    );
}

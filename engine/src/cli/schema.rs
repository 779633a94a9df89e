//! `runbook schema`: print the runbook format's JSON Schema for editors.

use super::{Failure, exit};
use runbook_steps::Registry;
use std::path::Path;

pub const AFTER_HELP: &str = "\
The schema (JSON Schema draft-07) describes every key of the runbook format and checks each step's
`with:` against the plugin named in `uses:`. Editors that speak yaml-language-server use it for
completion, hover docs and errors as you type; `runbook validate` still checks what a schema cannot
(references between steps, cycles, templates).

Examples:
  runbook schema --out .vscode/runbook.schema.json
  runbook schema > runbook.schema.json

Then either put this first line in a runbook:
  # yaml-language-server: $schema=../.vscode/runbook.schema.json
or map files to it in VS Code's settings.json (YAML extension by Red Hat):
  \"yaml.schemas\": { \".vscode/runbook.schema.json\": [\"runbooks/**/*.yaml\"] }
Neovim and Helix: configure yaml-language-server with the same `yaml.schemas` mapping.
See docs/editors.md. Regenerate the file after upgrading runbook: plugins bring their own fields.";

/// Writes the schema to `out`, or to stdout.
pub fn schema(registry: &Registry, out: Option<&Path>) -> Result<i32, Failure> {
    let text = serde_json::to_string_pretty(&crate::schema::json_schema(registry))
        .map_err(|e| Failure::env(format!("cannot serialize the schema: {e}")))?;
    match out {
        Some(path) => std::fs::write(path, text + "\n")
            .map_err(|e| Failure::env(format!("cannot write {}: {e}", path.display())))?,
        None => println!("{text}"),
    }
    Ok(exit::OK)
}

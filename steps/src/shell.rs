//! `shell.run`: run a program (argv, no shell) or, when asked for explicitly, a `sh -c` command line.

use crate::schema::{Field, FieldType};
use crate::{Plugin, PluginInfo, SideEffect, StepContext, StepError, StepFuture};

static INFO: PluginInfo = PluginInfo {
    name: "shell.run",
    summary: "Run a program and capture its exit code, stdout and stderr. `argv` runs the program \
              directly (no shell, no quoting surprises); `shell` runs a command line with `/bin/sh -c` \
              and must be asked for by name. Unsafe unless the step says otherwise (`side_effect:`).",
    class: SideEffect::Unsafe,
    fields: &[
        Field::opt(
            "argv",
            FieldType::List(&FieldType::String),
            "Program and arguments, e.g. `[kubectl, get, pods]`. Looked up on PATH.",
        ),
        Field::opt(
            "shell",
            FieldType::String,
            "A command line for `/bin/sh -c`, when you need pipes, globs or redirections.",
        ),
        Field::opt(
            "env",
            FieldType::Map(&FieldType::String),
            "Extra environment variables (added to the engine's environment).",
        ),
        Field::opt("cwd", FieldType::String, "Working directory."),
        Field::opt("stdin", FieldType::String, "Text written to the program's stdin."),
        Field::opt(
            "parse_json",
            FieldType::Bool,
            "Parse stdout as JSON into `result.json` (a parse failure fails the step, kind `parse`).",
        ),
        Field::opt(
            "ok_codes",
            FieldType::List(&FieldType::Integer),
            "Exit codes that count as success (default `[0]`); others fail the step, kind `status`.",
        ),
    ],
    exactly_one_of: &[&["argv", "shell"]],
    output: "{ exit_code: integer, stdout: string, stderr: string, json: value (with parse_json) }",
    example: "argv: [sh, -c, \"echo '{\\\"ok\\\": true}'\"]\nparse_json: true",
};

pub struct ShellRun;

impl Plugin for ShellRun {
    fn info(&self) -> &'static PluginInfo {
        &INFO
    }

    fn run<'a>(&'a self, _input: serde_json::Value, _ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(async move { Err(StepError::new(crate::ErrorKind::Other, "not yet implemented")) })
    }
}

//! Control-flow plugins. `flow.noop` runs here; the others are declared here and run by the engine.

use crate::schema::{Field, FieldType};
use crate::{Plugin, PluginInfo, SideEffect, StepContext, StepFuture};

static CASE_FIELDS: [Field; 2] = [
    Field::req(
        "when",
        FieldType::Condition,
        "Expression over params, vars and upstream steps; the first case that is true wins.",
    ),
    Field::req(
        "then",
        FieldType::StepRefs,
        "Step(s) to run when this case wins. Every other case's steps are skipped.",
    ),
];
static CASE: FieldType = FieldType::Object(&CASE_FIELDS);

pub static BRANCH: PluginInfo = PluginInfo {
    name: "flow.branch",
    summary: "Pick one path: evaluates `cases` in order and runs the `then` steps of the first true one \
              (or `default`); steps of the other paths are skipped. Records a decision with the \
              condition text and the values it read.",
    class: SideEffect::Read,
    fields: &[
        Field::req("cases", FieldType::List(&CASE), "Ordered cases."),
        Field::opt(
            "default",
            FieldType::StepRefs,
            "Step(s) to run when no case is true. Without it, no path is taken.",
        ),
    ],
    exactly_one_of: &[],
    output: "{ case: index of the winning case or null, taken: [step ids], condition: text or null }",
    example: "cases:\n  - when: steps.check.result.exit_code != 0\n    then: repair\ndefault: report",
    connection: None,
};

pub static ASSERT: PluginInfo = PluginInfo {
    name: "flow.assert",
    summary: "Fail the step (kind `condition`) unless the condition holds. Records the values it read.",
    class: SideEffect::Read,
    fields: &[
        Field::req(
            "that",
            FieldType::Condition,
            "Expression that must be true.",
        ),
        Field::opt(
            "message",
            FieldType::String,
            "Shown when the assertion fails (a template).",
        ),
    ],
    exactly_one_of: &[],
    output: "{ holds: true, values: { name: value read } }",
    example: "that: steps.health.result.status == 200\nmessage: service is not healthy",
    connection: None,
};

pub static SLEEP: PluginInfo = PluginInfo {
    name: "flow.sleep",
    summary: "Wait for a fixed time. The wake-up time is journaled, so a resumed run keeps it.",
    class: SideEffect::Read,
    fields: &[Field::req("for", FieldType::Duration, "How long to wait.")],
    exactly_one_of: &[],
    output: "{ slept_ms: number }",
    example: "for: 30s",
    connection: None,
};

pub static WAIT_UNTIL: PluginInfo = PluginInfo {
    name: "flow.wait_until",
    summary: "Poll: run `probe` every `interval` and evaluate `until` over its fresh `result`, until it \
              is true (for `hold`, if given) or `deadline` passes. The deadline is journaled when \
              the wait starts, so a resumed run keeps it.",
    class: SideEffect::Read,
    fields: &[
        Field::req(
            "probe",
            FieldType::Probe,
            "The plugin call to repeat, e.g. `{ uses: http.request, with: { url: ... } }`. Must be `read` (a probe may declare `side_effect: read`, like a step).",
        ),
        Field::req(
            "until",
            FieldType::Condition,
            "Expression over `result` (the probe's latest result) and the usual context.",
        ),
        Field::req(
            "deadline",
            FieldType::Duration,
            "Give up (kind `timeout`) this long after the wait first started.",
        ),
        Field::opt(
            "interval",
            FieldType::Duration,
            "Time between probes (default 30s).",
        ),
        Field::opt(
            "hold",
            FieldType::Duration,
            "The condition must stay true this long, across probes, before the step succeeds.",
        ),
    ],
    exactly_one_of: &[],
    output: "{ result: the last probe result, probes: number, waited_ms: number }",
    example: "probe:\n  uses: http.request\n  with: { url: \"http://127.0.0.1:9090/-/ready\" }\nuntil: result.status == 200\ninterval: 5s\ndeadline: 2m",
    connection: None,
};

static NOOP_INFO: PluginInfo = PluginInfo {
    name: "flow.noop",
    summary: "Do nothing and return `value` as the result. Useful to compute values, join paths, and \
              in tests and benchmarks.",
    class: SideEffect::Read,
    fields: &[Field::opt(
        "value",
        FieldType::Any,
        "Returned as `result.value` (templates are rendered first).",
    )],
    exactly_one_of: &[],
    output: "{ value: the given value or null }",
    example: "value: { threshold: 0.72 }",
    connection: None,
};

pub struct Noop;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoopInput {
    #[serde(default)]
    value: serde_json::Value,
}

impl Plugin for Noop {
    fn info(&self) -> &'static PluginInfo {
        &NOOP_INFO
    }

    fn run<'a>(&'a self, input: serde_json::Value, _ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(async move {
            let input: NoopInput =
                serde_json::from_value(input).map_err(crate::StepError::input)?;
            Ok(serde_json::json!({ "value": input.value }))
        })
    }

    fn check_input(&self, input: &serde_json::Value) -> Result<(), crate::StepError> {
        crate::check_as::<NoopInput>(input)
    }
}

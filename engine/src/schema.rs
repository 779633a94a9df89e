//! A JSON Schema of the runbook format, for editors (`runbook schema`).
//!
//! The schema is draft-07 because that is what yaml-language-server (VS Code's YAML extension,
//! Neovim, Helix) has supported for years; 2019-09/2020-12 only arrived in its 1.20 release.
//!
//! Each step's `with:` is described from the plugins' declared fields (`PluginInfo.fields`,
//! `exactly_one_of`), so a new plugin is covered without touching this file. The schema is a helper for
//! authors, not the judge: `runbook validate` remains the authority (it also checks references, the
//! DAG and templates, which a schema cannot). Where the two could disagree, the schema errs on the side
//! of accepting, so an editor never flags a runbook the engine runs.

use crate::runbook::{API_VERSION, Phase};
use runbook_steps::{ErrorKind, Field, FieldType, PluginInfo, Registry, Runner, SideEffect};
use serde_json::{Map, Value, json};

/// Identifiers (params, vars, step ids, output names): what templates can reach as `x.name`.
pub const IDENT_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]*$";

/// A runbook's `name:`.
pub const NAME_PATTERN: &str = "^[a-z][a-z0-9_-]*$";

/// What the expression engine treats as a template (see `expr::is_template`).
pub const TEMPLATE_PATTERN: &str = "\\{\\{|\\{%";

/// Durations as `parse_duration` reads them: bare seconds (`90`, `1.5`), jiff's friendly format
/// (`30s`, `1h30m`, `1h 30m`, `2 hours, 5 minutes`) or ISO 8601 (`PT1H`). Deliberately loose about unit
/// names (the engine names the problem precisely); it catches `soon`, `-5m` and `5 m ago`.
pub const DURATION_PATTERN: &str = "^\\s*(?:\\d+(?:\\.\\d*)?|\\.\\d+|(?:\\d+(?:[.,]\\d+)?\\s*[A-Za-zµ]+[\\s,]*)+|[Pp][0-9A-Za-z.,]+)\\s*$";

const SIDE_EFFECTS: [SideEffect; 3] =
    [SideEffect::Read, SideEffect::Idempotent, SideEffect::Unsafe];

/// The JSON Schema of the runbook format with this registry's plugins.
pub fn json_schema(registry: &Registry) -> Value {
    let mut defs = Map::new();
    defs.insert("template".into(), json!({
        "type": "string",
        "pattern": TEMPLATE_PATTERN,
        "description": "A template (`{{ expression }}`), rendered when the step runs. A string that is exactly one `{{ ... }}` keeps the expression's type, so it may stand for a number, boolean, list or mapping.",
    }));
    defs.insert(
        "identifier".into(),
        json!({ "type": "string", "pattern": IDENT_PATTERN }),
    );
    let duration = |pattern: String| {
        json!({
            "description": "A duration: `250ms`, `30s`, `5m`, `1h30m`, `1h 30m`, or a number of seconds (`90`, `1.5`). Not negative.",
            "type": ["number", "string"],
            "minimum": 0,
            "pattern": pattern,
            "patternErrorMessage": "expected a duration such as 30s, 5m, 1h30m or 250ms, or a number of seconds",
        })
    };
    defs.insert("duration".into(), duration(DURATION_PATTERN.into()));
    defs.insert(
        "templatedDuration".into(),
        duration(format!("{DURATION_PATTERN}|{TEMPLATE_PATTERN}")),
    );
    defs.insert("condition".into(), json!({
        "description": "A condition: a bare minijinja expression (`steps.check.status == 'failed'`; `{{ }}` around it is accepted) or `true`/`false`. It must evaluate to a boolean; a missing value is an error, never false.",
        "type": ["string", "boolean"],
    }));
    defs.insert(
        "stepRefs".into(),
        json!({
            "description": "A step id, or a list of step ids.",
            "anyOf": [
                { "$ref": "#/definitions/identifier" },
                { "type": "array", "items": { "$ref": "#/definitions/identifier" } },
            ],
        }),
    );
    defs.insert(
        "anyValues".into(),
        json!({
            "type": "object",
            "propertyNames": { "$ref": "#/definitions/identifier" },
        }),
    );
    defs.insert("param".into(), param());
    defs.insert("retry".into(), retry());
    defs.insert("probe".into(), probe(registry));
    defs.insert("step".into(), step(registry));
    for runner in registry.iter() {
        let info = runner.info();
        defs.insert(with_def(info.name), with_block(info));
    }

    let mut schema = json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "runbook",
        "description": "An operations runbook for the `runbook` engine: parameters, values computed at start, and steps that form a DAG. `runbook validate FILE` checks everything this schema cannot (references, cycles, templates).",
        "type": "object",
        "additionalProperties": false,
        "required": ["name", "steps"],
        "properties": top_properties(),
        "definitions": defs,
    });
    add_markdown(&mut schema);
    schema
}

/// Descriptions use Markdown code spans (`steps.ID`). Editors escape a plain `description` on hover,
/// showing the backticks; `markdownDescription` (a VS Code / yaml-language-server extension) is
/// rendered instead.
fn add_markdown(schema: &mut Value) {
    match schema {
        Value::Object(m) => {
            // In a `properties` map a key `description` names a schema (an object), never text.
            if let Some(d @ Value::String(_)) = m.get("description") {
                let d = d.clone();
                m.insert("markdownDescription".into(), d);
            }
            for (key, value) in m.iter_mut() {
                // These hold data, not schemas.
                if !matches!(key.as_str(), "examples" | "enum" | "const" | "default") {
                    add_markdown(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(add_markdown),
        _ => {}
    }
}

fn top_properties() -> Value {
    json!({
        "apiVersion": {
            "description": "The format version. Optional; if present it must be this one.",
            "const": API_VERSION,
        },
        "name": {
            "description": "The runbook's name, recorded with each run: a lowercase letter, then lowercase letters, digits, `-`, `_`. (Lookup by name on the command line uses the file name.)",
            "type": "string",
            "pattern": NAME_PATTERN,
        },
        "title": { "description": "Shown by `runbook list` and `runbook show`.", "type": "string" },
        "description": { "description": "Free text.", "type": "string" },
        "concurrency": {
            "description": "At most this many runs of the runbook are driven at once by `runbook worker` processes, across all of them (e.g. 1: one remediation at a time).",
            "type": "integer",
            "minimum": 1,
            "maximum": 10000,
        },
        "triggers": {
            "description": "Alerts this runbook answers (listed by `runbook list`), how an alert becomes a run under `runbook serve`, and the schedules that start runs by the clock.",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "alerts": {
                    "description": "Alert names.",
                    "type": "array",
                    "items": { "type": "string" },
                },
                "labels": {
                    "description": "Label matchers an alert must also satisfy, as Alertmanager writes them: `severity=~\"warning|critical\"`.",
                    "type": "array",
                    "items": { "type": "string" },
                },
                "params": {
                    "description": "`param: label`: the alert's label of that name fills the parameter (checked against its type).",
                    "type": "object",
                    "propertyNames": { "$ref": "#/definitions/identifier" },
                    "additionalProperties": { "type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" },
                },
                "cooldown": {
                    "description": "After a run for the same alert key ends, its alerts start nothing for this long.",
                    "$ref": "#/definitions/duration",
                },
                "on_resolved": {
                    "description": "`record` (default): journal the resolution on the run; `cancel`: also cancel the run if no step other than a `read` one has started yet.",
                    "enum": ["record", "cancel"],
                },
                "schedule": {
                    "description": "Start a run by the clock under `runbook serve`: a 5-field cron expression (minute hour day-of-month month day-of-week, e.g. `0 3 * * 1` for 03:00 every Monday) or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`; or a list of them. Runs take the parameters' defaults. Fires missed while no server ran start one run, for the latest.",
                    "oneOf": [
                        { "type": "string", "examples": ["0 3 * * 1", "@daily"] },
                        { "type": "array", "items": { "type": "string" }, "minItems": 1 },
                    ],
                },
                "timezone": {
                    "description": "The IANA time zone the `schedule` is read in (default `UTC`), e.g. `Europe/Berlin`.",
                    "type": "string",
                    "examples": ["UTC", "Europe/Berlin", "America/New_York"],
                },
            },
        },
        "params": {
            "description": "Run parameters (`--param NAME=VALUE`), read in templates as `params.NAME`.",
            "type": "object",
            "propertyNames": { "$ref": "#/definitions/identifier" },
            "additionalProperties": { "$ref": "#/definitions/param" },
        },
        "vars": {
            "description": "Named values computed once at run start, in file order (a var may read `params`, `env` and the vars above it); read as `vars.NAME`. Any YAML value; strings inside are templates.",
            "allOf": [{ "$ref": "#/definitions/anyValues" }],
        },
        "connections": {
            "description": "The systems the run talks to, by name: each has a `kind` and that kind's fields (templates rendered once at run start; a profile and the environment may override any field; secrets as `secret(\"NAME\")`). Steps use them with `connection: NAME`, or their plugin family's default.",
            "type": "object",
            "propertyNames": { "$ref": "#/definitions/identifier" },
            "additionalProperties": connection(),
        },
        "steps": {
            "description": "The steps. They run in parallel where `needs` and branches allow.",
            "type": "array",
            "minItems": 1,
            "items": { "$ref": "#/definitions/step" },
        },
    })
}

fn param() -> Value {
    json!({
        "description": "A run parameter.",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "type": {
                "description": "The parameter's type; `enum` is a string with `enum:` choices. Required unless `enum:` is given.",
                "enum": ["string", "number", "bool", "boolean", "enum"],
            },
            "enum": {
                "description": "Allowed values, compared as strings.",
                "type": "array",
                "minItems": 1,
                "items": { "type": ["string", "integer", "boolean"] },
            },
            "default": { "description": "Used when the parameter is not given; converted to the type." },
            "required": { "description": "Whether the parameter must be given (a default satisfies it).", "type": "boolean" },
            "description": { "description": "Shown when a required parameter is missing.", "type": "string" },
        },
        "anyOf": [{ "required": ["type"] }, { "required": ["enum"] }],
        "allOf": [
            when_const("type", "enum", json!({ "required": ["enum"] })),
            {
                "if": { "required": ["enum"] },
                "then": { "properties": { "type": { "enum": ["string", "enum"] } } },
            },
            // What `coerce_param` converts from; null never converts.
            when_const("type", "number", json!({ "properties": { "default": { "type": ["number", "string"] } } })),
            when_const("type", "bool", json!({ "properties": { "default": { "type": ["boolean", "string"] } } })),
            when_const("type", "boolean", json!({ "properties": { "default": { "type": ["boolean", "string"] } } })),
            when_const("type", "string", json!({ "properties": { "default": { "type": ["string", "number", "boolean"] } } })),
        ],
    })
}

fn retry() -> Value {
    let attempts = json!({
        "description": "Total attempts, the first included: 1 to 100.",
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
    });
    let kind = json!({ "enum": ErrorKind::retry_kinds().map(|(n, _)| n).collect::<Vec<_>>() });
    json!({
        "description": "Retries: a number of attempts, or `{ attempts, backoff, on }`.",
        "anyOf": [
            attempts,
            {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "attempts": attempts,
                    "backoff": {
                        "description": "The wait before attempt n (n >= 2) is min(initial * factor^(n-2), max).",
                        "type": "object",
                        "additionalProperties": false,
                        "properties": {
                            "initial": described(ref_to("duration"), "The first wait (default 1s)."),
                            "factor": { "description": "Growth of the wait, >= 1 (default 2).", "type": "number", "minimum": 1 },
                            "max": described(ref_to("duration"), "The longest wait (default 60s)."),
                        },
                    },
                    "on": {
                        "description": "Error kinds to retry (default: every kind except input, condition, approval).",
                        "anyOf": [kind, { "type": "array", "items": kind }],
                    },
                },
            },
        ],
    })
}

fn step(registry: &Registry) -> Value {
    let names: Vec<&str> = registry.names().collect();
    let summaries: Vec<&str> = registry.iter().map(|r| r.info().summary).collect();
    let classes: Vec<&str> = SIDE_EFFECTS.iter().map(|c| c.as_str()).collect();
    let phases: Vec<&str> = Phase::ALL.iter().map(|(n, _)| *n).collect();
    let mut per_plugin = Vec::new();
    for runner in registry.iter() {
        let info = runner.info();
        let mut then = json!({ "properties": { "with": ref_to(&with_def(info.name)) } });
        if needs_with(info) {
            then["required"] = json!(["with"]);
        }
        per_plugin.push(when_const("uses", info.name, then));
    }
    // The engine runs these itself: they cannot hang, act or be classified. One rule per key, so an
    // editor's message (`errorMessage`) names the key.
    let builtins: Vec<&str> = registry
        .iter()
        .filter(|r| matches!(r, Runner::Builtin(_)))
        .map(|r| r.info().name)
        .collect();
    for key in ["timeout", "approval", "side_effect", "connection"] {
        per_plugin.push(json!({
            "if": { "properties": { "uses": { "enum": builtins } }, "required": ["uses"] },
            "then": {
                "properties": { key: false },
                "errorMessage": format!(
                    "`{key}` has no effect on {}: the engine runs these steps itself",
                    builtins.join(", ")
                ),
            },
        }));
    }
    json!({
        "description": "A step: a plugin call (`uses`, `with`) and when and how to run it.",
        "type": "object",
        "additionalProperties": false,
        "required": ["id", "uses"],
        "properties": {
            "id": described(ref_to("identifier"), "Unique id, used in `needs`, branch targets, `on_failure` and templates (`steps.ID`)."),
            "uses": {
                "description": "The plugin that runs the step (`runbook plugins` lists them).",
                "enum": names,
                "enumDescriptions": summaries,
                "markdownEnumDescriptions": summaries,
            },
            "with": { "description": "The plugin's input. Any string may be a template.", "type": "object" },
            "needs": described(ref_to("stepRefs"), "Steps that must be finished (succeeded, failed or skipped) before this one is considered."),
            "when": described(ref_to("condition"), "Guard, evaluated before every attempt: false skips the step."),
            "phase": { "description": "Documentation only.", "enum": phases },
            "outputs": {
                "description": "Named values computed from the step's `result` after it succeeds, read as `steps.ID.NAME`.",
                "type": "object",
                "propertyNames": {
                    "allOf": [ref_to("identifier"), { "not": { "enum": ["result", "status", "error"] } }],
                },
                "additionalProperties": { "type": "string" },
            },
            "timeout": described(ref_to("duration"), "Limit for one attempt of the plugin call; on expiry it fails with kind `timeout`."),
            "retry": ref_to("retry"),
            "on_failure": {
                "description": "What a final failure does: `abort` (default), `continue`, or the id of a step to run instead.",
                "anyOf": [{ "enum": ["abort", "continue"] }, ref_to("identifier")],
            },
            "approval": {
                "description": "`required`: ask before running (y/N on a terminal, `--yes`, or `runbook approve RUN STEP` from anywhere); a mapping also says who may answer and for how long.",
                "anyOf": [
                    { "enum": ["required", "none", true, false] },
                    {
                        "type": "object",
                        "additionalProperties": false,
                        "properties": {
                            "required": { "description": "Whether to ask (default true).", "type": "boolean" },
                            "approvers": {
                                "description": "Who may answer (--actor, else the OS user); default anyone.",
                                "anyOf": [{ "type": "string" }, { "type": "array", "items": { "type": "string" } }],
                            },
                            "distinct_from_initiator": {
                                "description": "Whoever started the run may not approve its steps.",
                                "type": "boolean",
                            },
                            "timeout": described(ref_to("duration"), "Unanswered this long counts as denied; default no limit."),
                        },
                    },
                ],
            },
            "connection": described(ref_to("identifier"), "The connection (under `connections:`) this step talks through; default: the one named like its plugin's kind, or the only one of that kind."),
            "side_effect": {
                "description": "Overrides the plugin's side-effect class, e.g. `read` for a `shell.run` of `df`.",
                "enum": classes,
            },
            "title": { "description": "Stored with the step.", "type": "string" },
            "description": { "description": "Free text.", "type": "string" },
        },
        "allOf": per_plugin,
    })
}

/// `flow.wait_until`'s `probe`: a plugin call the engine repeats.
fn probe(registry: &Registry) -> Value {
    let mut names = Vec::new();
    let mut per_plugin = Vec::new();
    for runner in registry.iter() {
        // Builtins need the run's state; only ordinary plugins can be probes.
        let Runner::Plugin(p) = runner else { continue };
        let info = p.info();
        names.push(info.name);
        let mut then = json!({ "properties": { "with": ref_to(&with_def(info.name)) } });
        if needs_with(info) {
            then["required"] = json!(["with"]);
        }
        per_plugin.push(when_const("uses", info.name, then));
    }
    let classes: Vec<&str> = SIDE_EFFECTS.iter().map(|c| c.as_str()).collect();
    // A probe is the one plugin-typed field, and like every other it may be a template.
    json!({
        "type": ["object", "string"],
        "pattern": TEMPLATE_PATTERN,
        "patternErrorMessage": "expected a plugin call `{ uses, with }`, or a template",
        "additionalProperties": false,
        "required": ["uses"],
        "properties": {
            "uses": { "description": "The plugin to call.", "enum": names },
            "with": { "description": "The plugin's input.", "type": "object" },
            "side_effect": { "description": "Class override; a probe must be `read`.", "enum": classes },
        },
        "allOf": per_plugin,
    })
}

/// The schema of one plugin's `with:` block.
fn with_block(info: &PluginInfo) -> Value {
    let mut schema = object(info.fields, info.exactly_one_of);
    schema["description"] = json!(format!("`{}`: {}", info.name, info.summary));
    // An example that does not parse as YAML is caught by the tests; the schema is still usable.
    if let Ok(example) = crate::runbook::load::parse_yaml(info.example) {
        schema["examples"] = json!([example.to_json()]);
    }
    schema
}

/// A connection: `kind`, then that kind's fields (none required here: a profile or the environment may
/// supply them, as the validator allows).
fn connection() -> Value {
    let kinds = runbook_steps::connection::KINDS;
    let per_kind: Vec<Value> = kinds
        .iter()
        .map(|k| {
            let fields: Vec<Field> = k
                .fields
                .iter()
                .map(|f| Field {
                    required: false,
                    ..*f
                })
                .collect();
            let mut then = object(&fields, &[]);
            then["properties"]["kind"] = json!({ "const": k.name });
            let mut then = described(then, k.summary);
            then["type"] = json!("object");
            when_const("kind", k.name, then)
        })
        .collect();
    json!({
        "type": "object",
        "required": ["kind"],
        "properties": {
            "kind": {
                "description": "What the connection talks to.",
                "enum": kinds.iter().map(|k| k.name).collect::<Vec<_>>(),
            },
        },
        "allOf": per_kind,
    })
}

fn object(fields: &[Field], one_of: &[&[&str]]) -> Value {
    let mut props = Map::new();
    for f in fields {
        let doc = format!(
            "{} ({}{})",
            f.doc,
            f.ty.describe(),
            if f.required { ", required" } else { "" }
        );
        props.insert(f.name.to_string(), described(field_type(&f.ty), &doc));
    }
    let required: Vec<&str> = fields
        .iter()
        .filter(|f| f.required)
        .map(|f| f.name)
        .collect();
    let mut schema = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": props,
    });
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    if !one_of.is_empty() {
        let groups: Vec<Value> = one_of
            .iter()
            .map(|g| json!({ "oneOf": g.iter().map(|f| json!({ "required": [f] })).collect::<Vec<_>>() }))
            .collect();
        schema["allOf"] = json!(groups);
    }
    schema
}

/// The schema of a declared field type. Like the validator, a literal is checked and a template (for
/// any type but conditions and step references) is left to run time.
fn field_type(ty: &FieldType) -> Value {
    // `items`, `properties`, `minimum`... apply only to their own JSON type, so "this type, or a string
    // that is a template" is one schema rather than an `anyOf`: errors then point at the exact item
    // (`argv/1`), not at the whole field.
    let or_template = |mut schema: Value, ty: &str, expected: &str| {
        schema["type"] = json!([ty, "string"]);
        schema["pattern"] = json!(TEMPLATE_PATTERN);
        schema["patternErrorMessage"] = json!(format!(
            "expected {expected}, or a template `{{{{ ... }}}}`"
        ));
        schema
    };
    match ty {
        FieldType::String => json!({ "type": "string" }),
        FieldType::Any => json!({}),
        FieldType::Condition => ref_to("condition"),
        FieldType::StepRefs => ref_to("stepRefs"),
        FieldType::Number => or_template(json!({}), "number", "a number"),
        FieldType::Integer => or_template(json!({}), "integer", "a whole number"),
        FieldType::Bool => or_template(json!({}), "boolean", "true or false"),
        FieldType::Duration => ref_to("templatedDuration"),
        FieldType::List(inner) => {
            or_template(json!({ "items": field_type(inner) }), "array", "a list")
        }
        FieldType::Map(inner) => or_template(
            json!({ "additionalProperties": field_type(inner) }),
            "object",
            "a mapping",
        ),
        FieldType::Object(fields) => or_template(object(fields, &[]), "object", "a mapping"),
        FieldType::Probe => ref_to("probe"),
        // `enum` is not limited to one JSON type.
        FieldType::Enum(choices) => json!({ "anyOf": [{ "enum": choices }, ref_to("template")] }),
    }
}

fn needs_with(info: &PluginInfo) -> bool {
    info.fields.iter().any(|f| f.required) || !info.exactly_one_of.is_empty()
}

fn with_def(plugin: &str) -> String {
    format!("with:{plugin}")
}

fn ref_to(def: &str) -> Value {
    json!({ "$ref": format!("#/definitions/{def}") })
}

/// Adds a description (hover text). In draft-07 a keyword beside `$ref` is ignored, so a bare
/// reference is wrapped first.
fn described(mut schema: Value, text: &str) -> Value {
    if schema.get("$ref").is_some() {
        schema = json!({ "allOf": [schema] });
    }
    schema["description"] = json!(text);
    schema
}

/// `if key == value then ...`; the `required` keeps a missing key from matching vacuously.
fn when_const(key: &str, value: &str, then: Value) -> Value {
    json!({
        "if": { "properties": { key: { "const": value } }, "required": [key] },
        "then": then,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::load::{
        APPROVAL_KEYS, BACKOFF_KEYS, PARAM_KEYS, RETRY_KEYS, STEP_KEYS, TOP_KEYS,
    };
    use runbook_steps::parse_duration;

    /// The keys the schema describes at each level, for the test that keeps them equal to the loader's.
    fn keys_of(schema: &Value) -> Vec<String> {
        let mut keys: Vec<String> = schema["properties"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }

    fn sorted(keys: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn describes_exactly_the_keys_the_loader_accepts() {
        let reg = Registry::builtin();
        let s = json_schema(&reg);
        let d = &s["definitions"];
        assert_eq!(keys_of(&s), sorted(TOP_KEYS));
        assert_eq!(keys_of(&d["step"]), sorted(STEP_KEYS));
        assert_eq!(keys_of(&d["param"]), sorted(PARAM_KEYS));
        let retry_map = &d["retry"]["anyOf"][1];
        assert_eq!(keys_of(retry_map), sorted(RETRY_KEYS));
        assert_eq!(
            keys_of(&retry_map["properties"]["backoff"]),
            sorted(BACKOFF_KEYS)
        );
        assert_eq!(
            keys_of(&d["step"]["properties"]["approval"]["anyOf"][1]),
            sorted(APPROVAL_KEYS)
        );
    }

    #[test]
    fn every_plugin_has_a_with_schema_with_its_declared_fields() {
        let reg = Registry::builtin();
        let s = json_schema(&reg);
        for runner in reg.iter() {
            let info = runner.info();
            let def = &s["definitions"][with_def(info.name)];
            let mut declared: Vec<&str> = info.fields.iter().map(|f| f.name).collect();
            declared.sort();
            assert_eq!(keys_of(def), declared, "{}", info.name);
            assert_eq!(def["additionalProperties"], json!(false), "{}", info.name);
            assert!(def.get("examples").is_some(), "{} example", info.name);
        }
    }

    #[test]
    fn descriptions_get_a_markdown_twin_but_data_is_left_alone() {
        let mut v = json!({
            "description": "`x`",
            "properties": { "description": { "description": "d", "type": "string" } },
            "examples": [{ "description": "data" }],
        });
        add_markdown(&mut v);
        assert_eq!(v["markdownDescription"], "`x`");
        assert_eq!(v["properties"]["description"]["markdownDescription"], "d");
        assert!(v["properties"].get("markdownDescription").is_none());
        assert_eq!(v["examples"], json!([{ "description": "data" }]));
    }

    #[test]
    fn duration_pattern_agrees_with_the_parser() {
        let re = regex_lite(DURATION_PATTERN);
        for ok in [
            "30s",
            "5m",
            "1h30m",
            "1h 30m",
            "250ms",
            "90",
            "1.5",
            "2m30s",
            " 10s ",
            "1 hour",
            "2 hours, 5 minutes",
            "PT1H",
        ] {
            assert!(parse_duration(ok).is_ok(), "parser rejects {ok:?}");
            assert!(re(ok), "pattern rejects {ok:?}, which the engine accepts");
        }
        for bad in ["soon", "-5m", "-5", "", "5m ago", "m5"] {
            assert!(parse_duration(bad).is_err(), "parser accepts {bad:?}");
            assert!(
                !re(bad),
                "pattern accepts {bad:?}, which the engine rejects"
            );
        }
    }

    /// The patterns are checked with the JSON Schema validator the tests use, as editors would.
    fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
        let v = jsonschema::draft7::new(&json!({ "type": "string", "pattern": pattern }))
            .expect("pattern compiles");
        move |s: &str| v.is_valid(&json!(s))
    }

    #[test]
    fn identifier_and_name_patterns_agree_with_the_loader() {
        let ident = regex_lite(IDENT_PATTERN);
        for s in ["a", "_x", "disk_pct", "A1", "disk-pct", "1a", "", "é"] {
            assert_eq!(
                ident(s),
                crate::runbook::load::valid_ident(s),
                "identifier {s:?}"
            );
        }
        let name = regex_lite(NAME_PATTERN);
        for (s, valid) in [
            ("disk-check", true),
            ("a_1", true),
            ("Disk", false),
            ("1a", false),
            ("-a", false),
        ] {
            assert_eq!(name(s), valid, "name {s:?}");
            let src = format!("name: {s:?}\nsteps: [{{id: a, uses: flow.noop}}]\n");
            let (_, diags) = crate::runbook::load::load(&src);
            assert_eq!(diags.is_empty(), valid, "loader on {s:?}: {diags:?}");
        }
    }

    #[test]
    fn template_pattern_agrees_with_is_template() {
        let re = regex_lite(TEMPLATE_PATTERN);
        for s in ["{{ x }}", "a {% if x %}", "plain", "{ x }", "{%", "{"] {
            assert_eq!(re(s), crate::expr::is_template(s), "{s:?}");
        }
    }
}

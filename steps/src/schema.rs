//! The declared shape of a plugin's `with:` block.
//!
//! The engine validates a runbook against these declarations before anything runs (so errors point at
//! the YAML), and the reference docs are generated from them. At run time the rendered input is
//! deserialized into the plugin's typed `Input`; a self-test per plugin keeps the two in agreement.

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldType {
    String,
    Number,
    Integer,
    Bool,
    /// `30s`, `5m`, `1h30m`, or seconds as a number.
    Duration,
    /// One of the listed strings.
    Enum(&'static [&'static str]),
    List(&'static FieldType),
    /// A mapping from strings to values of the given type.
    Map(&'static FieldType),
    /// A mapping with the listed fields.
    Object(&'static [Field]),
    /// A bare minijinja expression, evaluated by the engine (no `{{ }}`).
    Condition,
    /// A step id, or a list of step ids.
    StepRefs,
    /// Another plugin call: `{ uses: NAME, with: {...} }` (used by `flow.wait_until`).
    Probe,
    /// Any YAML value.
    Any,
}

impl FieldType {
    /// How the type reads in diagnostics and docs.
    pub fn describe(&self) -> String {
        match self {
            FieldType::String => "string".into(),
            FieldType::Number => "number".into(),
            FieldType::Integer => "integer".into(),
            FieldType::Bool => "boolean".into(),
            FieldType::Duration => "duration".into(),
            FieldType::Enum(v) => format!("one of {}", v.join(", ")),
            FieldType::List(t) => format!("list of {}", t.describe()),
            FieldType::Map(t) => format!("mapping of string to {}", t.describe()),
            FieldType::Object(_) => "mapping".into(),
            FieldType::Condition => "condition (expression)".into(),
            FieldType::StepRefs => "step id or list of step ids".into(),
            FieldType::Probe => "plugin call { uses, with }".into(),
            FieldType::Any => "any value".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Field {
    pub name: &'static str,
    pub ty: FieldType,
    pub required: bool,
    pub doc: &'static str,
    /// A credential (a connection's token, password, webhook URL): its value is masked wherever it
    /// appears in the journal, whatever the field's name. Write it `secret("NAME")`.
    pub secret: bool,
}

impl Field {
    pub const fn req(name: &'static str, ty: FieldType, doc: &'static str) -> Field {
        Field {
            name,
            ty,
            required: true,
            doc,
            secret: false,
        }
    }

    pub const fn opt(name: &'static str, ty: FieldType, doc: &'static str) -> Field {
        Field {
            name,
            ty,
            required: false,
            doc,
            secret: false,
        }
    }

    /// Marks the field as a credential (the `secret` flag).
    pub const fn secret(self) -> Field {
        Field {
            secret: true,
            ..self
        }
    }
}

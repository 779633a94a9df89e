//! The one minijinja environment: templates (`{{ }}`) and bare conditions, always with strict undefined.
//!
//! Strictness is a safety property here: under minijinja's lenient default, `f1 < 0.72 and score < 0.65`
//! with `score` missing evaluates to true, which would send a runbook down a remediation path on no
//! evidence. A missing value is an error instead.

use minijinja::{Environment, UndefinedBehavior, Value};
use std::collections::BTreeMap;

mod samples;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ExprError(pub String);

fn describe(e: &minijinja::Error) -> String {
    // minijinja's Display carries the detail and position; keep it on one line for journals.
    let mut msg = e.to_string();
    if let Some(d) = e.detail()
        && !msg.contains(d)
    {
        msg = format!("{msg}: {d}");
    }
    // minijinja names its sources `<expression>`/`<string>`; they mean nothing to an author.
    for internal in [" (in <expression>:1)", " (in <string>:1)"] {
        msg = msg.replace(internal, "");
    }
    msg.replace('\n', " ")
}

pub struct Expr {
    env: Environment<'static>,
}

impl Default for Expr {
    fn default() -> Self {
        Expr::new()
    }
}

type Comparison = fn(&Value, &Value) -> bool;

/// minijinja's comparison tests, by their names and aliases.
const COMPARISONS: &[(&[&str], Comparison)] = &[
    (&["eq", "equalto", "=="], |a, b| a == b),
    (&["ne", "!="], |a, b| a != b),
    (&["lt", "lessthan", "<"], |a, b| a < b),
    (&["le", "<="], |a, b| a <= b),
    (&["gt", "greaterthan", ">"], |a, b| a > b),
    (&["ge", ">="], |a, b| a >= b),
];

/// A template or condition's references, as dotted paths (`steps.check.result.status`).
pub type Refs = Vec<String>;

impl Expr {
    pub fn new() -> Expr {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Runbook values are data, not HTML.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        // Runbook authors come from shell and Python: `x.split()`, `s.startswith('a')` should work.
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // Rendered text goes into argv, URLs and JSON, where booleans are `true`/`false`, not
        // Python's `True`/`False`.
        env.set_formatter(|out, state, value| {
            if value.kind() == minijinja::value::ValueKind::Bool {
                out.write_str(if value.is_true() { "true" } else { "false" })?;
                Ok(())
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        // The test forms of the comparison operators (`selectattr('value', 'lt', 0.7)`) must be as
        // strict as the operators: an item lacking the attribute (a NaN sample has no `value`)
        // would otherwise compare without complaint and be selected.
        for (names, op) in COMPARISONS {
            for name in *names {
                env.add_test(*name, move |a: Value, b: Value| {
                    if a.is_undefined() || b.is_undefined() {
                        return Err(minijinja::Error::new(
                            minijinja::ErrorKind::UndefinedError,
                            format!("the test `{name}` was given an undefined value"),
                        ));
                    }
                    Ok(op(&a, &b))
                });
            }
        }
        samples::register(&mut env);
        env.add_function("ago", ago);
        Expr { env }
    }

    fn globals(&self) -> impl Fn(&str) -> bool + '_ {
        move |name: &str| self.env.globals().any(|(k, _)| k == name)
    }

    /// Compiles a template string and returns what it references. Strings without `{{`/`{%` are plain.
    pub fn template_refs(&self, text: &str) -> Result<Refs, ExprError> {
        if !is_template(text) {
            return Ok(Vec::new());
        }
        if let Some(inner) = sole_expression(text) {
            return self.condition_refs(inner);
        }
        let t = self
            .env
            .template_from_str(text)
            .map_err(|e| ExprError(describe(&e)))?;
        Ok(self.filter(t.undeclared_variables(true)))
    }

    /// Compiles a bare expression and returns what it references.
    pub fn condition_refs(&self, text: &str) -> Result<Refs, ExprError> {
        let e = self
            .env
            .compile_expression(text)
            .map_err(|e| ExprError(describe(&e)))?;
        Ok(self.filter(e.undeclared_variables(true)))
    }

    fn filter(&self, vars: std::collections::HashSet<String>) -> Refs {
        let is_global = self.globals();
        let mut out: Vec<String> = vars
            .into_iter()
            .filter(|v| !is_global(v.split('.').next().unwrap_or(v)))
            .collect();
        out.sort();
        out
    }

    /// Renders one string. A string that is exactly one `{{ expression }}` yields the expression's
    /// value with its type (a number stays a number); anything else renders to text.
    pub fn render_str(&self, text: &str, ctx: &Value) -> Result<serde_json::Value, ExprError> {
        if !is_template(text) {
            return Ok(serde_json::Value::String(text.to_string()));
        }
        if let Some(inner) = sole_expression(text) {
            let v = self
                .env
                .compile_expression(inner)
                .and_then(|e| e.eval(ctx.clone()))
                .map_err(|e| ExprError(describe(&e)))?;
            // Strict mode only errors when an undefined value is used; a template that *is* the
            // lookup would otherwise quietly yield null for a typo.
            if v.is_undefined() {
                return Err(ExprError(format!("`{inner}` is undefined")));
            }
            // Inside a list or mapping an undefined would become `null`, which compares without
            // complaint later (`none < 0.7` is true): `samples | map(attribute='value') | list`
            // over a NaN sample must not turn into a number-like gap.
            if let Some(at) = undefined_inside(&v, String::new()) {
                return Err(ExprError(format!(
                    "`{inner}` has an undefined value at {at}"
                )));
            }
            return to_json(&v);
        }
        self.env
            .render_str(text, ctx.clone())
            .map(serde_json::Value::String)
            .map_err(|e| ExprError(describe(&e)))
    }

    /// Renders every string inside a JSON value (keys are left alone).
    pub fn render_value(
        &self,
        v: &serde_json::Value,
        ctx: &Value,
    ) -> Result<serde_json::Value, ExprError> {
        use serde_json::Value as J;
        Ok(match v {
            J::String(s) => self.render_str(s, ctx)?,
            J::Array(items) => J::Array(
                items
                    .iter()
                    .map(|i| self.render_value(i, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            J::Object(m) => J::Object(
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), self.render_value(v, ctx)?)))
                    .collect::<Result<_, ExprError>>()?,
            ),
            other => other.clone(),
        })
    }

    /// Evaluates a condition to a boolean, with the values of everything it read (for the journal).
    /// A non-boolean result is an error rather than silently truthy: `steps.x.count` is not a decision.
    pub fn eval_condition(&self, text: &str, ctx: &Value) -> Result<Decision, ExprError> {
        let e = self
            .env
            .compile_expression(text)
            .map_err(|e| ExprError(describe(&e)))?;
        let values = self.values_read(&e.undeclared_variables(true), ctx);
        let v = e
            .eval(ctx.clone())
            .map_err(|e| ExprError(format!("{}{}", describe(&e), read_part(&values))))?;
        let holds = match v.kind() {
            minijinja::value::ValueKind::Bool => v.is_true(),
            other => {
                return Err(ExprError(format!(
                    "condition `{text}` gave {} `{v}`, not true or false",
                    kind_name(other)
                )));
            }
        };
        Ok(Decision { holds, values })
    }

    fn values_read(
        &self,
        paths: &std::collections::HashSet<String>,
        ctx: &Value,
    ) -> BTreeMap<String, serde_json::Value> {
        let is_global = self.globals();
        let mut out = BTreeMap::new();
        for path in paths {
            if is_global(path.split('.').next().unwrap_or(path)) {
                continue;
            }
            let mut cur = ctx.clone();
            let mut found = true;
            for seg in path.split('.') {
                match cur.get_attr(seg) {
                    Ok(v) if !v.is_undefined() => cur = v,
                    _ => {
                        found = false;
                        break;
                    }
                }
            }
            let json = if found {
                to_json(&cur).unwrap_or(serde_json::Value::Null)
            } else {
                serde_json::json!("<undefined>")
            };
            out.insert(path.clone(), json);
        }
        out
    }
}

/// Where in a list or mapping an undefined value sits (`[1]`, `.fraud`), if anywhere.
fn undefined_inside(v: &Value, at: String) -> Option<String> {
    use minijinja::value::ValueKind as K;
    match v.kind() {
        K::Undefined => Some(at),
        K::Seq => v
            .try_iter()
            .ok()?
            .enumerate()
            .find_map(|(n, item)| undefined_inside(&item, format!("{at}[{n}]"))),
        K::Map => v.try_iter().ok()?.find_map(|key| {
            let item = v.get_item(&key).ok()?;
            undefined_inside(&item, format!("{at}.{key}"))
        }),
        _ => None,
    }
}

/// `ago('24h')`: the moment that long before now, as an Extended JSON date, `{"$date":
/// "2026-11-30T10:15:00.000Z"}` (RFC 3339, UTC, milliseconds): the MongoDB plugins read it as a BSON
/// date, and any template can take the text from `ago('1h')['$date']`.
fn ago(duration: &str) -> Result<Value, minijinja::Error> {
    let bad = |why: String| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, why);
    let d = runbook_steps::parse_duration(duration).map_err(|e| bad(format!("ago(): {e}")))?;
    let then = jiff::Timestamp::now()
        .checked_sub(d)
        .map_err(|e| bad(format!("ago('{duration}'): {e}")))?;
    let mut date = BTreeMap::new();
    date.insert("$date", format!("{then:.3}"));
    Ok(Value::from(date))
}

/// The outcome of a condition and what it was computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub holds: bool,
    pub values: BTreeMap<String, serde_json::Value>,
}

/// What a condition that could not be evaluated read, shortened: usually why it could not (a sample
/// with `value_text: "NaN"` and no `value`).
fn read_part(values: &BTreeMap<String, serde_json::Value>) -> String {
    const MAX: usize = 300;
    if values.is_empty() {
        return String::new();
    }
    let read: Vec<String> = values.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    let text = read.join(", ");
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!(" (it read {}...)", &text[..i]),
        None => format!(" (it read {text})"),
    }
}

fn kind_name(k: minijinja::value::ValueKind) -> &'static str {
    use minijinja::value::ValueKind as K;
    match k {
        K::Undefined => "undefined",
        K::None => "none",
        K::Bool => "a boolean",
        K::Number => "a number",
        K::String => "a string",
        K::Bytes => "bytes",
        K::Seq => "a list",
        K::Map => "a mapping",
        K::Iterable => "an iterable",
        K::Plain => "an object",
        K::Invalid => "an invalid value",
        _ => "a value",
    }
}

pub fn to_json(v: &Value) -> Result<serde_json::Value, ExprError> {
    serde_json::to_value(v).map_err(|e| ExprError(format!("result is not plain data: {e}")))
}

pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// `{{ expr }}` (and nothing else) -> `expr`.
pub fn sole_expression(s: &str) -> Option<&str> {
    let t = s.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("{%") {
        return None;
    }
    // `}}` inside is either the end of one expression and the start of text (`{{ a }} and {{ b }}`,
    // caught above by its `{{`) or part of the expression: a nested mapping `{'a': {'b': 1}}`. Only
    // the parser can tell; the common case never gets here.
    if inner.contains("}}")
        && minijinja::Environment::new()
            .compile_expression(inner)
            .is_err()
    {
        return None;
    }
    Some(inner.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(v: serde_json::Value) -> Value {
        Value::from(minijinja::value::Serde(&v))
    }

    #[test]
    fn a_nested_mapping_is_one_expression_and_two_expressions_are_not() {
        assert_eq!(
            sole_expression("{{ {'a': {'b': 1}} }}"),
            Some("{'a': {'b': 1}}")
        );
        assert_eq!(
            sole_expression("{{ {'a': {'b': 1}}}}"),
            Some("{'a': {'b': 1}}")
        );
        assert_eq!(sole_expression("{{ a }} and {{ b }}"), None);
        assert_eq!(sole_expression("{{ a }}x}}"), None);
        assert_eq!(sole_expression(" {{ x.y }} "), Some("x.y"));
    }

    #[test]
    fn missing_value_is_an_error_not_false_or_true() {
        let x = Expr::new();
        let c = ctx(json!({"steps": {"f1": {"min": 0.5}}}));
        // The lenient default would evaluate this to true with `score` missing.
        let r = x.eval_condition("steps.f1.min < 0.72 and steps.perf.score < 0.65", &c);
        assert!(r.is_err(), "{r:?}");
    }

    #[test]
    fn decision_records_values_read() {
        let x = Expr::new();
        let c = ctx(json!({"steps": {"f1": {"min": 0.5}}, "vars": {"severe": 0.65}}));
        let d = x
            .eval_condition("steps.f1.min < vars.severe", &c)
            .expect("evaluates");
        assert!(d.holds);
        assert_eq!(d.values["steps.f1.min"], json!(0.5));
        assert_eq!(d.values["vars.severe"], json!(0.65));
    }

    #[test]
    fn non_boolean_condition_is_rejected() {
        let x = Expr::new();
        let c = ctx(json!({"n": 3}));
        let e = x
            .eval_condition("n", &c)
            .expect_err("a number is not a decision");
        assert!(e.0.contains("a number"), "{e}");
    }

    #[test]
    fn sole_expression_keeps_its_type() {
        let x = Expr::new();
        let c = ctx(json!({"vars": {"n": 3, "xs": [1, 2]}}));
        assert_eq!(x.render_str("{{ vars.n + 1 }}", &c).ok(), Some(json!(4)));
        assert_eq!(x.render_str("{{ vars.xs }}", &c).ok(), Some(json!([1, 2])));
        assert_eq!(x.render_str("n={{ vars.n }}", &c).ok(), Some(json!("n=3")));
        assert_eq!(x.render_str("plain", &c).ok(), Some(json!("plain")));
        assert_eq!(
            x.render_str("--dry={{ vars.n > 5 }}", &c).ok(),
            Some(json!("--dry=false"))
        );
        assert_eq!(
            x.render_str("{{ vars.n > 5 }}", &c).ok(),
            Some(json!(false))
        );
    }

    #[test]
    fn ago_is_an_extended_json_date_that_long_before_now() {
        let x = Expr::new();
        let c = ctx(json!({}));
        let before = jiff::Timestamp::now();
        let v = x.render_str("{{ ago('90m') }}", &c).expect("renders");
        let after = jiff::Timestamp::now();
        let text = v["$date"].as_str().expect("a {$date: text} mapping");
        assert_eq!(v.as_object().map(|m| m.len()), Some(1), "{v}");
        assert!(text.ends_with('Z') && text.len() == 24, "{text}");
        let at: jiff::Timestamp = text.parse().expect("RFC 3339");
        let span = jiff::SignedDuration::from_secs(90 * 60);
        // Rounded to whole milliseconds, so it may sit up to 1 ms outside the window.
        let ms = jiff::SignedDuration::from_millis(1);
        assert!(at >= before - span - ms && at <= after - span + ms, "{at}");
        let e = x
            .render_str("{{ ago('soon') }}", &c)
            .expect_err("not a duration");
        assert!(e.0.contains("ago()"), "{e}");
        // A function, not a reference to validate.
        assert_eq!(x.template_refs("{{ ago('1h') }}").ok(), Some(vec![]));
    }

    #[test]
    fn refs_are_dotted_paths_without_globals() {
        let x = Expr::new();
        let r = x
            .template_refs("{{ steps.a.result.x | default(range(3)) }} {{ params.p }}")
            .expect("compiles");
        assert_eq!(
            r,
            vec!["params.p".to_string(), "steps.a.result.x".to_string()]
        );
        assert!(x.condition_refs("a <").is_err());
    }
}

//! Keeping secrets out of the journal. Every event passes through here before it is sealed.
//!
//! Two rules: a value under a key that names a secret (`password`, `token`, `authorization`, ...) is
//! replaced; and any text containing the value of a secret (an environment variable whose name names a
//! secret, a connection field so named or declared a credential by its kind, such as a Slack
//! `webhook_url`, or what a `secret("NAME")` reference resolves to) has that value replaced, wherever
//! it appears — a rendered header, a command line, a command's output, a plan.

use super::event::Event;
use runbook_steps::Field;
use runbook_steps::connection::{self, read_secret, secret_ref};
use serde_json::Value;

pub const MASK: &str = "***";

/// Whether a value holds a masked credential anywhere (a journaled connection that lost one).
pub fn has_mask(v: &Value) -> bool {
    match v {
        Value::String(s) => s == MASK,
        Value::Object(m) => m.values().any(has_mask),
        Value::Array(a) => a.iter().any(has_mask),
        _ => false,
    }
}

const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "private_key",
    "cookie",
    "credential",
];

/// Whether a key or variable name names a secret (case-insensitive, `-` and `_` alike).
pub fn is_secret_name(name: &str) -> bool {
    // Compared in place: this runs for every environment variable at each run's start, and a
    // lowercased copy with a substring searcher per word cost ~3,500 instructions a name.
    let fold = |b: u8| {
        if b == b'-' {
            b'_'
        } else {
            b.to_ascii_lowercase()
        }
    };
    let n = name.as_bytes();
    SECRET_WORDS.iter().any(|w| {
        n.windows(w.len())
            .any(|at| at.iter().zip(w.bytes()).all(|(&a, b)| fold(a) == b))
    })
}

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Secret values, longest first so that overlapping secrets are masked whole.
    values: Vec<String>,
}

impl Redactor {
    /// Collects secret values from the environment and from the run's connections.
    pub fn new(connections: Option<&Value>) -> Redactor {
        let mut values: Vec<String> = std::env::vars()
            .filter(|(k, v)| is_secret_name(k) && v.len() >= 4)
            .map(|(_, v)| v)
            .collect();
        if let Some(Value::Object(conns)) = connections {
            for conn in conns.values() {
                let kind = conn
                    .get("kind")
                    .and_then(Value::as_str)
                    .and_then(connection::kind);
                collect_fields(conn, kind.map_or(&[], |k| k.fields), &mut values);
            }
        }
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Redactor { values }
    }

    pub fn string(&self, s: &str) -> String {
        let mut out = s.to_string();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MASK);
            }
        }
        out
    }

    pub fn value(&self, v: &mut Value) {
        match v {
            Value::String(s) if self.values.iter().any(|x| s.contains(x.as_str())) => {
                *s = self.string(s);
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.value(i)),
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    // A `secret("NAME")` reference names where a secret lives, not the secret.
                    let reference = x.as_str().and_then(secret_ref).is_some();
                    if is_secret_name(k) && !reference && !matches!(x, Value::Null | Value::Bool(_))
                    {
                        *x = Value::String(MASK.to_string());
                    } else {
                        self.value(x);
                    }
                }
            }
            _ => {}
        }
    }
}

impl Redactor {
    /// Masks secrets in everything an event carries that came from inputs, results or values read.
    pub fn event(&self, event: &mut Event) {
        match event {
            Event::StepStarted { inputs, .. } => self.value(inputs),
            Event::ApprovalRequested { inputs, plan, .. } => {
                self.value(inputs);
                if let Some(p) = plan {
                    self.value(p);
                }
            }
            // A plugin's plan may repeat its inputs (a request's headers).
            Event::StepPlanned { plan, .. } => self.value(plan),
            Event::ProbeDone {
                values, problem, ..
            } => {
                values.values_mut().for_each(|v| {
                    self.value(v);
                    cap(v);
                });
                if let Some(p) = problem {
                    *p = self.string(p);
                }
            }
            Event::ConnectionsResolved { connections, .. } => {
                connections.values_mut().for_each(|v| self.value(v))
            }
            Event::StepSucceeded {
                result, outputs, ..
            } => {
                self.value(result);
                outputs.values_mut().for_each(|v| self.value(v));
            }
            Event::StepFailed { error, detail, .. } => {
                *error = self.string(error);
                if let Some(d) = detail {
                    self.value(d);
                }
            }
            Event::GuardEvaluated { values, .. } | Event::DecisionTaken { values, .. } => {
                values.values_mut().for_each(|v| {
                    self.value(v);
                    cap(v);
                });
            }
            // What other processes tell a run is text from outside: an alert's labels, a reason.
            Event::RunNoted { note, .. } => {
                note.summary = self.string(&note.summary);
                self.value(&mut note.detail);
            }
            Event::RunCancelled { reason, .. } | Event::CancelRefused { reason, .. } => {
                *reason = self.string(reason);
            }
            Event::RunFinished { error: Some(e), .. } => *e = self.string(e),
            Event::RunStarted { params, vars, .. } => {
                for (k, v) in params.iter_mut().chain(vars.iter_mut()) {
                    if is_secret_name(k) && !v.is_null() {
                        *v = Value::String(MASK.to_string());
                    } else {
                        self.value(v);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Secret values of one connection: [`collect`] over each field, a field its kind declares a
/// credential counting as secret whatever its name (a mapping field's own fields likewise).
fn collect_fields(conn: &Value, declared: &[Field], out: &mut Vec<String>) {
    let Value::Object(m) = conn else {
        return collect(conn, false, out);
    };
    for (k, x) in m {
        let field = declared.iter().find(|f| f.name == k);
        match field.map(|f| f.ty) {
            Some(runbook_steps::FieldType::Object(inner)) => collect_fields(x, inner, out),
            _ => collect(x, field.is_some_and(|f| f.secret) || is_secret_name(k), out),
        }
    }
}

/// Secret values inside a connection: strings under secret-named keys, and the values that
/// `secret("NAME")` references resolve to now (kept in memory only, to be masked wherever a plugin's
/// output or error repeats them).
fn collect(v: &Value, secret: bool, out: &mut Vec<String>) {
    match v {
        Value::String(s) if secret_ref(s).is_some() => {
            if let Some(Ok(value)) = secret_ref(s).map(read_secret)
                && value.len() >= 4
            {
                out.push(value);
            }
        }
        Value::String(s) if secret && s.len() >= 4 => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| collect(i, secret, out)),
        Value::Object(m) => m
            .iter()
            .for_each(|(k, x)| collect(x, secret || is_secret_name(k), out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_keys_and_secret_values_are_masked_everywhere() {
        let r = Redactor {
            values: vec!["hunter22".to_string()],
        };
        let mut v = json!({
            "headers": {"Authorization": "Bearer abc", "Accept": "json"},
            "argv": ["login", "--password=hunter22"],
            "stdout": "token is hunter22\n",
            "api_key": 12345,
            "tls": true,
        });
        r.value(&mut v);
        assert_eq!(v["headers"]["Authorization"], MASK);
        assert_eq!(v["headers"]["Accept"], "json");
        assert_eq!(v["argv"][1], "--password=***");
        assert_eq!(v["stdout"], "token is ***\n");
        assert_eq!(v["api_key"], MASK);
        assert_eq!(v["tls"], true);
    }

    #[test]
    fn fields_a_kind_declares_credentials_are_collected_whatever_their_name() {
        let r = Redactor::new(Some(&json!({
            "hook": { "kind": "slack", "webhook_url": "https://hooks.example/T0/B0/XyZ123" },
            "api": { "kind": "http", "base_url": "https://api.example",
                     "basic_auth": { "username": "opsuser", "password": "pa55-w0rd" } },
        })));
        assert_eq!(
            r.string("POST https://hooks.example/T0/B0/XyZ123 failed"),
            "POST *** failed"
        );
        assert_eq!(r.string("login pa55-w0rd"), "login ***");
        assert_eq!(
            r.string("opsuser at https://api.example"),
            "opsuser at https://api.example"
        );
        let mut resolved =
            json!({"hook": {"kind": "slack", "webhook_url": "https://hooks.example/T0/B0/XyZ123"}});
        r.value(&mut resolved);
        assert_eq!(resolved["hook"]["webhook_url"], MASK);
    }

    #[test]
    fn plans_are_masked_like_inputs() {
        let r = Redactor {
            values: vec!["hunter22".to_string()],
        };
        let mut planned = Event::StepPlanned {
            step: "s".into(),
            plan: json!({"summary": "would send with hunter22", "headers": {"Authorization": "Bearer x"}}),
        };
        r.event(&mut planned);
        let Event::StepPlanned { plan, .. } = planned else {
            unreachable!()
        };
        assert_eq!(plan["summary"], "would send with ***");
        assert_eq!(plan["headers"]["Authorization"], MASK);
    }

    #[test]
    fn connection_secrets_are_collected_by_key() {
        let r = Redactor::new(Some(
            &json!({"slack": {"url": "https://x", "token": "xoxb-123456"}}),
        ));
        assert_eq!(r.string("send with xoxb-123456"), "send with ***");
        assert_eq!(r.string("https://x"), "https://x");
        assert!(is_secret_name("SLACK_BOT_TOKEN"));
        assert!(is_secret_name("x-api-key"));
        assert!(is_secret_name("Private-Key"));
        assert!(is_secret_name("PASSWD"));
        assert!(!is_secret_name("threshold"));
        assert!(!is_secret_name("tok"));
    }
}

/// The most of a value read by a condition that is copied into a decision or guard event. The full
/// value is journaled once, with the step that produced it; a copy beyond this size is replaced by a
/// preview, its size and its sha256 (which matches the full value in that step's event).
pub const VALUE_CAP: usize = 4096;

pub fn cap(v: &mut Value) {
    let text = v.to_string();
    if text.len() <= VALUE_CAP {
        return;
    }
    use sha2::Digest as _;
    let mut end = 512;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    *v = serde_json::json!({
        "truncated": true,
        "bytes": text.len(),
        "sha256": hex::encode(sha2::Sha256::digest(text.as_bytes())),
        "preview": &text[..end],
    });
}

#[cfg(test)]
mod cap_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn large_copies_become_a_preview_with_size_and_hash() {
        let mut small = json!({"status": 200});
        cap(&mut small);
        assert_eq!(small, json!({"status": 200}));
        let mut big = json!({"body": "x".repeat(10_000)});
        let full = big.to_string();
        cap(&mut big);
        assert_eq!(big["truncated"], true);
        assert_eq!(big["bytes"], full.len());
        assert_eq!(big["preview"].as_str().map(str::len), Some(512));
        use sha2::Digest as _;
        assert_eq!(
            big["sha256"],
            hex::encode(sha2::Sha256::digest(full.as_bytes()))
        );
    }
}

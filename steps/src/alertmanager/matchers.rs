//! Label matchers as Prometheus and Alertmanager write them: `name="v"`, `name!="v"`,
//! `name=~"regex"`, `name!~"regex"`, alone or several in braces.

use serde_json::{Value, json};

use crate::{ErrorKind, StepError};

/// One label matcher: `name` `=`/`!=`/`=~`/`!~` `value`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Matcher {
    pub name: String,
    pub value: String,
    pub is_regex: bool,
    pub is_equal: bool,
}

impl Matcher {
    fn op(&self) -> &'static str {
        match (self.is_equal, self.is_regex) {
            (true, false) => "=",
            (false, false) => "!=",
            (true, true) => "=~",
            (false, true) => "!~",
        }
    }

    /// The value as Alertmanager reads a regex matcher: anchored at both ends.
    pub fn regex(&self) -> Result<Option<regex::Regex>, String> {
        if !self.is_regex {
            return Ok(None);
        }
        regex::Regex::new(&format!("^(?:{})$", self.value))
            .map(Some)
            .map_err(|e| format!("`{}` is not a valid regular expression: {e}", self.value))
    }

    /// Whether a set of labels satisfies this matcher; a label that is absent reads as empty, as in
    /// Alertmanager (`team=""` matches an alert without `team`). An invalid regex matches nothing.
    pub fn matches(&self, label: impl Fn(&str) -> Option<String>) -> bool {
        let v = label(&self.name).unwrap_or_default();
        let hit = match self.regex() {
            Ok(Some(re)) => re.is_match(&v),
            Ok(None) => v == self.value,
            Err(_) => return false,
        };
        hit == self.is_equal
    }

    pub fn to_api(&self) -> Value {
        json!({
            "name": self.name,
            "value": self.value,
            "isRegex": self.is_regex,
            "isEqual": self.is_equal,
        })
    }

    pub fn from_api(v: &Value) -> Option<Matcher> {
        Some(Matcher {
            name: v.get("name")?.as_str()?.to_owned(),
            value: v.get("value")?.as_str()?.to_owned(),
            is_regex: v.get("isRegex")?.as_bool()?,
            // Alertmanagers before 0.22 have no `isEqual`: every matcher was an equality then.
            is_equal: v.get("isEqual").and_then(Value::as_bool).unwrap_or(true),
        })
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}\"", self.name, self.op())?;
        for c in self.value.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("\"")
    }
}

/// Every matcher of every item, each item naming its place in an error.
pub fn parse_all(items: &[String]) -> Result<Vec<Matcher>, StepError> {
    let mut out = Vec::new();
    for (n, item) in items.iter().enumerate() {
        let found = parse_matchers(item).map_err(|why| {
            StepError::new(
                ErrorKind::Input,
                format!("`matchers[{n}]`: `{item}` {why} (write e.g. `alertname=~\"MLModel.*\"`)"),
            )
        })?;
        out.extend(found);
    }
    Ok(out)
}

/// Parses `name="v"`, or several in braces separated by commas: `{a="1", b=~"x.*"}`. A value may
/// be unquoted when it holds no comma, brace or quote.
pub fn parse_matchers(text: &str) -> Result<Vec<Matcher>, String> {
    let t = text.trim();
    let inner = match t.strip_prefix('{') {
        Some(rest) => rest
            .strip_suffix('}')
            .ok_or_else(|| "opens a `{` it does not close".to_string())?,
        None => t,
    };
    let mut chars = inner.chars().peekable();
    let mut out = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut name = String::new();
        while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_') {
            name.push(c);
        }
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err("has no label name where one should start".into());
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let (is_equal, is_regex) = match (chars.next(), chars.peek()) {
            (Some('='), Some('~')) => (true, true),
            (Some('!'), Some('~')) => (false, true),
            (Some('!'), Some('=')) => (false, false),
            (Some('='), _) => (true, false),
            _ => return Err(format!("has no `=`, `!=`, `=~` or `!~` after `{name}`")),
        };
        if is_regex || !is_equal {
            chars.next();
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    None => return Err(format!("leaves the value of `{name}` unquoted")),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some(c) => value.push(c),
                        None => return Err(format!("ends inside the value of `{name}`")),
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !matches!(c, ',' | '"' | '{' | '}')) {
                value.push(c);
            }
            value = value.trim_end().to_string();
            if chars.peek() == Some(&'"') {
                return Err(format!("has a stray `\"` in the value of `{name}`"));
            }
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.peek() {
            None | Some(',') => {}
            Some(c) => return Err(format!("has `{c}` after the value of `{name}`")),
        }
        out.push(Matcher {
            name,
            value,
            is_regex,
            is_equal,
        });
    }
    if out.is_empty() {
        return Err("holds no matcher".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn matchers_evaluate_as_alertmanager_does() {
        let labels = |k: &str| match k {
            "alertname" => Some("MLModelDegraded".to_string()),
            "severity" => Some("warning".to_string()),
            _ => None,
        };
        let m = |t: &str| super::parse_matchers(t).expect("parse").remove(0);
        assert!(m(r#"alertname=~"MLModel.*""#).matches(labels));
        assert!(
            !m(r#"alertname=~"Model""#).matches(labels),
            "anchored: a part does not match"
        );
        assert!(m(r#"severity!="critical""#).matches(labels));
        assert!(!m(r#"severity!~"warn.*""#).matches(labels));
        assert!(m(r#"team="""#).matches(labels), "absent reads as empty");
        assert!(
            !m(r#"team=~"(""#).matches(labels),
            "an invalid regex matches nothing"
        );
        assert!(m(r#"team=~"(""#).regex().is_err());
    }

    use super::{Matcher, parse_matchers};

    fn m(name: &str, op: &str, value: &str) -> Matcher {
        Matcher {
            name: name.into(),
            value: value.into(),
            is_regex: op.contains('~'),
            is_equal: !op.starts_with('!'),
        }
    }

    #[test]
    fn matchers_read_as_prometheus_writes_them() {
        assert_eq!(
            parse_matchers(r#"alertname=~"MLModel.*""#),
            Ok(vec![m("alertname", "=~", "MLModel.*")])
        );
        assert_eq!(
            parse_matchers(
                r#"{ alertname="A", severity!= "info",x!~"a\"b\\c" , y = plain value }"#
            ),
            Ok(vec![
                m("alertname", "=", "A"),
                m("severity", "!=", "info"),
                m("x", "!~", "a\"b\\c"),
                m("y", "=", "plain value"),
            ])
        );
        assert_eq!(parse_matchers("team="), Ok(vec![m("team", "=", "")]));
        for (text, why) in [
            ("", "holds no matcher"),
            ("{a=\"1\"", "opens a `{` it does not close"),
            ("=\"x\"", "has no label name"),
            ("a ~ \"x\"", "has no `=`, `!=`, `=~` or `!~` after `a`"),
            ("a=\"x", "leaves the value of `a` unquoted"),
            ("a=\"x\" b=\"y\"", "has `b` after the value of `a`"),
            ("a=x\"y\"", "stray `\"`"),
        ] {
            let e = parse_matchers(text).expect_err(text);
            assert!(e.contains(why), "{text}: {e}");
        }
        // What the result and the `filter` parameter show, read back the same.
        let tricky = m("x", "!~", "a\"b\\c\nd");
        assert_eq!(tricky.to_string(), r#"x!~"a\"b\\c\nd""#);
        assert_eq!(parse_matchers(&tricky.to_string()), Ok(vec![tricky]));
    }
}

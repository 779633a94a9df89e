//! From YAML text to a [`Runbook`], collecting every structural problem with its location.

mod triggers;

use super::model::*;
use super::node::{Node, Pos, Value};
use crate::diag::{Diagnostic, suggest};
use runbook_steps::{ErrorKind, SideEffect, parse_duration};

/// Parses and interprets `source`. Returns the runbook when the structure was good enough to build one
/// (there may still be diagnostics), and every diagnostic found.
pub fn load(source: &str) -> (Option<Runbook>, Vec<Diagnostic>) {
    if source.trim().is_empty() {
        let d = Diagnostic::unplaced("the file is empty")
            .help("a runbook is a mapping with at least `name:` and `steps:`");
        return (None, vec![d]);
    }
    let mut doc = match parse_yaml(source) {
        Ok(doc) => doc,
        Err(e) => return (None, vec![yaml_error(source, &e)]),
    };
    if doc.value == Value::Null {
        let d = Diagnostic::unplaced("the file has no content, only comments or blank lines")
            .help("a runbook is a mapping with at least `name:` and `steps:`");
        return (None, vec![d]);
    }
    let mut l = Loader { diags: Vec::new() };
    // Only a `{{` can make an unquoted template; most runbooks of any size are spared the walk.
    if source.contains("{{") {
        unquoted_templates(&mut doc, source, &mut l.diags);
    }
    let rb = l.runbook(&doc);
    (rb, l.diags)
}

/// An unquoted `{{ x }}` is a YAML flow mapping whose only key is the mapping `{ x }`. Each one is
/// reported once, with the fix, and replaced by the template text it was meant to be, so that the
/// checks after this one see a template instead of adding "expected a string, found a mapping".
fn unquoted_templates(node: &mut Node, source: &str, diags: &mut Vec<Diagnostic>) {
    let is_unquoted = matches!(&node.value, Value::Map(m)
        if m.len() == 1 && m[0].1.value == Value::Null && matches!(m[0].0.value, Value::Map(_)));
    if is_unquoted {
        let text = source
            .get(node.pos.offset..)
            .and_then(|rest| rest.find("}}").map(|end| &rest[..end + 2]))
            .unwrap_or("{{ }}");
        let quoted = if text.contains('"') {
            format!("'{text}'")
        } else {
            format!("\"{text}\"")
        };
        let pos = Pos {
            len: text.len(),
            ..node.pos
        };
        diags.push(
            Diagnostic::new(
                pos,
                "an unquoted `{{ }}` template: YAML reads it as a mapping",
            )
            .help(format!("quote the template: {quoted}")),
        );
        node.value = Value::Str(text.to_string());
        node.pos = pos;
        return;
    }
    match &mut node.value {
        Value::Seq(items) => {
            for it in items {
                unquoted_templates(it, source, diags);
            }
        }
        Value::Map(entries) => {
            for (_, v) in entries {
                unquoted_templates(v, source, diags);
            }
        }
        _ => {}
    }
}

/// Parses YAML text into located nodes the way runbooks are read everywhere (the loader, the schema's
/// plugin examples, the schema tests).
pub fn parse_yaml(source: &str) -> Result<Node, serde_saphyr::Error> {
    // YAML 1.2 booleans only: `on:` is a key, and `country: no` stays a string.
    // Nesting is bounded well below the parser's default (64): each level costs stack in the
    // recursive parse and in every pass over the tree, and a debug build on a 2 MiB thread (a test
    // thread, a tokio worker) overflowed at ~50 levels. No runbook needs more than a dozen.
    let opts = serde_saphyr::options! {
        strict_booleans: true,
        budget: serde_saphyr::budget! { max_depth: MAX_DEPTH },
    };
    serde_saphyr::from_str_with_options(source, opts)
}

fn yaml_error(source: &str, e: &serde_saphyr::Error) -> Diagnostic {
    // serde-saphyr's Display includes its own snippet and location; we render our own, so keep only
    // the message.
    let full = e.to_string();
    let first = full
        .lines()
        .next()
        .unwrap_or("invalid YAML")
        .trim()
        .trim_start_matches("error: ");
    let mut msg = strip_location_prefix(&strip_location_suffix(first)).to_string();
    let mut help = None;
    let mut prefix = "invalid YAML: ";
    let (mut line, mut col) = e
        .location()
        .map(|l| {
            (
                usize::try_from(l.line()).unwrap_or(1).max(1),
                usize::try_from(l.column()).unwrap_or(1).max(1),
            )
        })
        .unwrap_or((1, 1));
    let mut len = 0;
    if msg.contains("found a tab") || msg.contains("tabs") {
        len = 1;
        // The scanner notices a tab late; point at the first tab in indentation from there on.
        if let Some((l, c)) = first_indent_tab(source, line) {
            (line, col) = (l, c);
        }
        msg = "YAML indentation must use spaces, not tabs".to_string();
    } else if let Some(rest) = msg.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest).trim();
        msg = format!("duplicate key `{key}`");
        help = Some("each key may appear once in a mapping".to_string());
    } else if msg.contains("only valid inside a block") || msg.contains("did not find expected") {
        help = Some("look above this line for an unclosed `[`, `{` or quote".to_string());
    } else if let Some((m, h)) = limit_message(&msg) {
        // A limit is not a syntax error: no "invalid YAML" prefix.
        (msg, help, prefix) = (m, Some(h), "");
    } else if msg.starts_with("multiple YAML documents") {
        // Point at the `---` that starts the second document, not at its first key.
        if let Some(sep) = source
            .lines()
            .take(line)
            .enumerate()
            .skip(1)
            .filter(|(_, l)| l.starts_with("---"))
            .map(|(n, _)| n + 1)
            .last()
        {
            (line, col, len) = (sep, 1, 3);
        }
        msg = "the file holds more than one YAML document".to_string();
        help = Some(
            "a runbook is one document: remove this `---` and what follows, or move it to a file of its own"
                .to_string(),
        );
    } else if let Some(rest) = msg.strip_prefix("non-finite float ") {
        let value = rest.split(' ').next().unwrap_or(rest);
        len = value.trim_matches('`').len();
        msg = format!("{value} is not a number a runbook can use");
        help = Some("NaN and infinities are not allowed; write a finite number".to_string());
    } else if msg.contains("simple key expected")
        && source.lines().nth(line.saturating_sub(1)).is_some_and(|l| {
            l.split(':')
                .next()
                .is_some_and(|k| k.chars().count() > 1024)
        })
    {
        msg = format!("a key may be at most {MAX_KEY_CHARS} characters long");
        help = Some("YAML limits keys written without `? ` to 1024 characters; this is probably not meant as a key".to_string());
    }
    let offset = line_col_to_offset(source, line, col);
    let d = Diagnostic::new(
        Pos {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            col: u32::try_from(col).unwrap_or(u32::MAX),
            offset,
            len,
        },
        format!("{prefix}{msg}"),
    );
    match help {
        Some(h) => d.help(h),
        None => d,
    }
}

/// How deeply lists and mappings may nest.
pub const MAX_DEPTH: usize = 32;

/// YAML's limit on an implicit key (one written without `? `).
const MAX_KEY_CHARS: usize = 1024;

/// The parser's resource limits (serde-saphyr's default budget), in words for runbook authors.
/// docs/runbook-format.md §8 lists them.
fn limit_message(msg: &str) -> Option<(String, String)> {
    let budget = msg.strip_prefix("budget breached: ");
    let kind = budget.map(|b| b.split([' ', '{']).next().unwrap_or(b));
    let (m, h) = match kind {
        _ if msg.contains("recursion limit") => (
            "lists and mappings are nested too deeply".to_string(),
            format!("a runbook nests lists and mappings at most {MAX_DEPTH} levels deep"),
        ),
        Some("Depth") => (
            "lists and mappings are nested too deeply".to_string(),
            format!("a runbook nests lists and mappings at most {MAX_DEPTH} levels deep"),
        ),
        Some("Nodes") => (
            "the file has too many YAML values".to_string(),
            "a runbook holds at most 250,000 values, each use of an alias counting again: is this an alias bomb, or not a runbook?".to_string(),
        ),
        Some("Aliases") | Some("AliasAnchorRatio") | Some("RecordedAnchorEvents") => (
            "the file uses too many aliases (`*name`)".to_string(),
            "a runbook may use at most 50,000 aliases, and not expand a few anchors into a huge tree".to_string(),
        ),
        Some("Anchors") => (
            "the file defines too many anchors (`&name`)".to_string(),
            "a runbook may define at most 50,000 anchors".to_string(),
        ),
        Some("ScalarBytes") | Some("InputBytes") | Some("Events") | Some("CommentBytes") => (
            "the file is too large for a runbook".to_string(),
            "a runbook file may be at most 16 MiB".to_string(),
        ),
        Some(other) => (
            format!("the file exceeds a YAML size limit ({other})"),
            "a runbook this large is probably not a runbook".to_string(),
        ),
        None => return None,
    };
    Some((m, h))
}

/// `line 8 column 3: message` -> `message`.
fn strip_location_prefix(msg: &str) -> &str {
    if let Some(rest) = msg.strip_prefix("line ")
        && let Some((_, after)) = rest.split_once(": ")
        && rest
            .split_once(": ")
            .is_some_and(|(loc, _)| loc.contains("column"))
    {
        return after;
    }
    msg
}

fn first_indent_tab(source: &str, from_line: usize) -> Option<(usize, usize)> {
    source
        .lines()
        .enumerate()
        .skip(from_line.saturating_sub(1))
        .find_map(|(n, l)| {
            let indent = &l[..l.len() - l.trim_start().len()];
            indent.find('\t').map(|c| (n + 1, c + 1))
        })
}

fn strip_location_suffix(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn line_col_to_offset(src: &str, line: usize, col: usize) -> usize {
    let mut offset = 0;
    for (i, l) in src.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return offset
                + l.char_indices()
                    .nth(col.saturating_sub(1))
                    .map_or(l.trim_end_matches('\n').len(), |(b, _)| b);
        }
        offset += l.len();
    }
    src.len()
}

pub(crate) const TOP_KEYS: &[&str] = &[
    "apiVersion",
    "name",
    "title",
    "description",
    "triggers",
    "concurrency",
    "params",
    "vars",
    "connections",
    "steps",
];
pub(crate) const STEP_KEYS: &[&str] = &[
    "id",
    "title",
    "description",
    "uses",
    "with",
    "needs",
    "when",
    "phase",
    "outputs",
    "timeout",
    "retry",
    "on_failure",
    "approval",
    "side_effect",
    "connection",
];
/// The step keys whose position a step keeps (see `Step::keys`).
const KEYS_KEPT: &[&str] = &["timeout", "approval", "side_effect", "connection"];
pub(crate) const PARAM_KEYS: &[&str] = &["type", "enum", "default", "required", "description"];
pub(crate) const RETRY_KEYS: &[&str] = &["attempts", "backoff", "on"];
pub(crate) const BACKOFF_KEYS: &[&str] = &["initial", "factor", "max"];
pub(crate) const APPROVAL_KEYS: &[&str] = &[
    "required",
    "approvers",
    "distinct_from_initiator",
    "timeout",
];

struct Loader {
    diags: Vec<Diagnostic>,
}

impl Loader {
    fn err(&mut self, pos: Pos, msg: impl Into<String>) {
        self.diags.push(Diagnostic::new(pos, msg));
    }

    fn err_help(&mut self, pos: Pos, msg: impl Into<String>, help: impl Into<String>) {
        self.diags.push(Diagnostic::new(pos, msg).help(help));
    }

    /// The entries of a mapping, reporting keys not in `allowed` (with a suggestion) and duplicates.
    fn map<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        allowed: Option<&[&str]>,
    ) -> Option<Vec<(&'n str, Pos, &'n Node)>> {
        let Some(entries) = node.as_map() else {
            self.err(
                node.pos,
                format!("{what} must be a mapping, found {}", node.kind()),
            );
            return None;
        };
        let mut out: Vec<(&str, Pos, &Node)> = Vec::new();
        for (k, v) in entries {
            let Some(key) = k.as_str() else {
                self.err(
                    k.pos,
                    format!("keys of {what} must be strings, found {}", k.kind()),
                );
                continue;
            };
            if let Some(allowed) = allowed
                && !allowed.contains(&key)
            {
                let help = match suggest(key, allowed.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("{what} takes: {}", allowed.join(", ")),
                };
                self.err_help(k.pos, format!("unknown key `{key}` in {what}"), help);
                continue;
            }
            if out.iter().any(|(seen, _, _)| *seen == key) {
                self.err(k.pos, format!("duplicate key `{key}` in {what}"));
                continue;
            }
            out.push((key, k.pos, v));
        }
        Some(out)
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            _ => {
                self.err(
                    node.pos,
                    format!("{what} must be a string, found {}", node.kind()),
                );
                None
            }
        }
    }

    fn named(&mut self, node: &Node, what: &str) -> Option<Named> {
        self.string(node, what).map(|name| Named {
            name,
            pos: node.pos,
        })
    }

    /// A string or a list of strings.
    fn names(&mut self, node: &Node, what: &str) -> Vec<Named> {
        match &node.value {
            Value::Str(s) => vec![Named {
                name: s.clone(),
                pos: node.pos,
            }],
            Value::Seq(items) => items.iter().filter_map(|n| self.named(n, what)).collect(),
            _ => {
                self.err(
                    node.pos,
                    format!(
                        "{what} must be a step id or a list of step ids, found {}",
                        node.kind()
                    ),
                );
                Vec::new()
            }
        }
    }

    fn duration(&mut self, node: &Node, what: &str) -> Option<std::time::Duration> {
        let text = match duration_text(node) {
            Some(t) => t,
            None => {
                self.err(
                    node.pos,
                    format!("{what} must be a duration, found {}", node.kind()),
                );
                return None;
            }
        };
        match parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(node.pos, format!("{what}: {e}"));
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.err(
                    node.pos,
                    format!("{what} must be true or false, found {}", node.kind()),
                );
                None
            }
        }
    }

    fn runbook(&mut self, doc: &Node) -> Option<Runbook> {
        if doc.as_seq().is_some() {
            self.err_help(
                doc.pos,
                "the runbook must be a mapping, found a list",
                "a runbook has keys at the top (`name:`, `steps:`, ...); did you mean to put this list under `steps:`?",
            );
            return None;
        }
        let entries = self.map(doc, "the runbook", Some(TOP_KEYS))?;
        let mut rb = Runbook {
            name: String::new(),
            title: None,
            description: None,
            alerts: Vec::new(),
            concurrency: None,
            trigger: Default::default(),
            params: Vec::new(),
            vars: Vec::new(),
            connections: Vec::new(),
            steps: Vec::new(),
        };
        let mut have_name = false;
        let mut have_steps = false;
        for (key, _kpos, v) in entries {
            match key {
                "apiVersion" => {
                    if let Some(s) = self.string(v, "apiVersion")
                        && s != API_VERSION
                    {
                        self.err_help(
                            v.pos,
                            format!("unsupported apiVersion `{s}`"),
                            format!("this engine reads `{API_VERSION}`"),
                        );
                    }
                }
                "name" => {
                    // A `name` of the wrong type is reported as that, not also as missing.
                    have_name = true;
                    if let Some(n) = self.string(v, "name") {
                        if !valid_name(&n) {
                            self.err_help(
                                v.pos,
                                format!("invalid runbook name `{n}`"),
                                "use lowercase letters, digits, `-` and `_`, starting with a letter",
                            );
                        }
                        rb.name = n;
                    }
                }
                "title" => rb.title = self.string(v, "title"),
                "description" => rb.description = self.string(v, "description"),
                "triggers" => (rb.alerts, rb.trigger) = self.triggers(v),
                "concurrency" => rb.concurrency = self.concurrency(v),
                "params" => rb.params = self.params(v),
                "vars" => rb.vars = self.named_values(v, "vars"),
                "connections" => rb.connections = self.named_values(v, "connections"),
                "steps" => {
                    have_steps = true;
                    rb.steps = self.steps(v);
                }
                _ => {}
            }
        }
        if !have_name {
            self.err_help(
                doc.pos,
                "the runbook has no `name`",
                "add e.g. `name: model-degraded` at the top",
            );
        }
        if !have_steps {
            self.err_help(doc.pos, "the runbook has no `steps`", "add a `steps:` list");
        }
        self.trigger_params_are_declared(&rb);
        self.scheduled_params_have_defaults(&rb);
        Some(rb)
    }

    /// At most this many runs of the runbook are driven at once by workers: 1 to 10000.
    fn concurrency(&mut self, v: &Node) -> Option<u32> {
        match v.value {
            Value::Int(n) if (1..=10_000).contains(&n) => u32::try_from(n).ok(),
            Value::Int(n) => {
                self.err_help(
                    v.pos,
                    format!("concurrency {n} out of range"),
                    "how many runs of this runbook workers may drive at once: 1 to 10000",
                );
                None
            }
            _ => {
                self.err(
                    v.pos,
                    format!("concurrency must be a whole number, found {}", v.kind()),
                );
                None
            }
        }
    }

    fn named_values(&mut self, v: &Node, what: &str) -> Vec<(Named, Node)> {
        let Some(entries) = self.map(v, what, None) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, kpos, node) in entries {
            if !valid_ident(key) {
                self.err_help(
                    kpos,
                    format!("`{key}` is not a valid name in {what}"),
                    "names are used in templates: letters, digits and `_`, not starting with a digit",
                );
                continue;
            }
            out.push((
                Named {
                    name: key.to_string(),
                    pos: kpos,
                },
                node.clone(),
            ));
        }
        out
    }

    fn params(&mut self, v: &Node) -> Vec<Param> {
        let Some(entries) = self.map(v, "params", None) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, kpos, node) in entries {
            if !valid_ident(key) {
                self.err_help(
                    kpos,
                    format!("`{key}` is not a valid parameter name"),
                    "parameter names are used in templates: letters, digits and `_`",
                );
                continue;
            }
            if let Some(p) = self.param(key, kpos, node) {
                out.push(p);
            }
        }
        out
    }

    fn param(&mut self, key: &str, kpos: Pos, node: &Node) -> Option<Param> {
        let entries = self.map(node, &format!("parameter `{key}`"), Some(PARAM_KEYS))?;
        let mut ty = None;
        let mut ty_given = false;
        let mut ty_pos = node.pos;
        let mut choices = None;
        let mut default = None;
        let mut required = false;
        let mut description = None;
        for (k, _, v) in entries {
            match k {
                "type" => {
                    ty_given = true;
                    ty_pos = v.pos;
                    match v.as_str() {
                        Some("string") | Some("enum") => ty = Some(ParamType::String),
                        Some("number") => ty = Some(ParamType::Number),
                        Some("bool") | Some("boolean") => ty = Some(ParamType::Bool),
                        _ => self.err_help(
                            v.pos,
                            format!("unknown parameter type {}", show_scalar(v)),
                            "types are: string, number, bool, enum",
                        ),
                    }
                }
                "enum" => match v.as_seq() {
                    Some(items) if !items.is_empty() => {
                        choices = Some(
                            items
                                .iter()
                                .filter_map(|i| match &i.value {
                                    Value::Str(s) => Some(s.clone()),
                                    Value::Int(n) => Some(n.to_string()),
                                    Value::Bool(b) => Some(b.to_string()),
                                    _ => {
                                        self.err(i.pos, "enum values must be scalars");
                                        None
                                    }
                                })
                                .collect(),
                        )
                    }
                    _ => self.err(v.pos, "`enum` must be a non-empty list of allowed values"),
                },
                "default" => default = Some((v.to_json(), v.pos)),
                "required" => required = self.boolean(v, "`required`").unwrap_or(false),
                "description" => description = self.string(v, "`description`"),
                _ => {}
            }
        }
        let ty = match ty {
            Some(t) => t,
            None if choices.is_some() => ParamType::String,
            None if ty_given => return None,
            None => {
                self.err_help(
                    node.pos,
                    format!("parameter `{key}` has no `type`"),
                    "add `type: string` (or number, bool, enum)",
                );
                return None;
            }
        };
        if choices.is_some() && ty != ParamType::String {
            self.err(ty_pos, "`enum` goes with `type: string` or `type: enum`");
        }
        if node.get("type").and_then(Node::as_str) == Some("enum") && choices.is_none() {
            self.err_help(
                ty_pos,
                "`type: enum` needs an `enum:` list",
                "add e.g. `enum: [a, b]`",
            );
        }
        let default = match default {
            Some((value, pos)) => match coerce_param(ty, choices.as_deref(), &value) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.err(pos, format!("default of parameter `{key}`: {e}"));
                    None
                }
            },
            None => None,
        };
        Some(Param {
            name: Named {
                name: key.to_string(),
                pos: kpos,
            },
            ty,
            choices,
            default,
            required,
            description,
        })
    }

    fn steps(&mut self, v: &Node) -> Vec<Step> {
        let Some(items) = v.as_seq() else {
            let msg = format!("`steps` must be a list of steps, found {}", v.kind());
            match v.value {
                Value::Map(_) => self.err_help(
                    v.pos,
                    msg,
                    "write each step as a list item with its id inside: `- id: NAME`, then its other keys",
                ),
                _ => self.err(v.pos, msg),
            }
            return Vec::new();
        };
        if items.is_empty() {
            self.err(v.pos, "`steps` is empty");
        }
        items.iter().filter_map(|n| self.step(n)).collect()
    }

    fn step(&mut self, node: &Node) -> Option<Step> {
        let entries = self.map(node, "a step", Some(STEP_KEYS))?;
        let mut id = None;
        let mut uses = None;
        let mut step = Step {
            id: Named {
                name: String::new(),
                pos: node.pos,
            },
            title: None,
            uses: Named {
                name: String::new(),
                pos: node.pos,
            },
            with: None,
            with_key: node.pos,
            needs: Vec::new(),
            when: None,
            phase: None,
            outputs: Vec::new(),
            timeout: None,
            retry: None,
            on_failure: OnFailure::Abort,
            approval: false,
            approval_policy: Default::default(),
            side_effect: None,
            connection: None,
            keys: Vec::new(),
            pos: node.pos,
        };
        let mut id_given = false;
        let mut uses_given = false;
        for (k, kpos, v) in entries {
            // Only the keys a diagnostic may point at as a whole (set where they have no effect); a
            // 10,000-step runbook should not carry a list of every key of every step.
            if let Some(known) = KEYS_KEPT.iter().find(|s| **s == k) {
                step.keys.push((known, kpos));
            }
            match k {
                "id" => {
                    id_given = true;
                    if let Some(n) = self.named(v, "a step id") {
                        if !valid_ident(&n.name) {
                            self.err_help(
                                v.pos,
                                format!("invalid step id `{}`", n.name),
                                match n.name.contains('-') {
                                    true => format!("templates read `steps.{}` as a subtraction; use `_`: `{}`", n.name, n.name.replace('-', "_")),
                                    false => "step ids are used in templates (`steps.ID.x`): letters, digits and `_`, not starting with a digit".to_string(),
                                },
                            );
                        }
                        id = Some(n);
                    }
                }
                "title" => step.title = self.string(v, "`title`"),
                "description" => {
                    self.string(v, "`description`");
                }
                "uses" => {
                    uses_given = true;
                    uses = self.named(v, "`uses`");
                }
                "with" => {
                    step.with = Some(v.clone());
                    step.with_key = kpos;
                }
                "needs" => step.needs = self.names(v, "`needs`"),
                "when" => {
                    step.when = self.condition_text(v, "`when`").map(|s| (s, v.pos));
                }
                "phase" => match v
                    .as_str()
                    .and_then(|s| Phase::ALL.iter().find(|(n, _)| *n == s))
                {
                    Some((_, p)) => step.phase = Some(*p),
                    None => self.err_help(
                        v.pos,
                        format!("unknown phase {}", show_scalar(v)),
                        "phases are: diagnose, decide, resolve, verify, notify",
                    ),
                },
                "outputs" => step.outputs = self.outputs(v),
                "timeout" => step.timeout = self.duration(v, "`timeout`"),
                "retry" => step.retry = self.retry(v),
                "on_failure" => match v.as_str() {
                    Some("abort") => step.on_failure = OnFailure::Abort,
                    Some("continue") => step.on_failure = OnFailure::Continue,
                    Some(other) => {
                        step.on_failure = OnFailure::Goto(Named {
                            name: other.to_string(),
                            pos: v.pos,
                        })
                    }
                    None => self.err_help(
                        v.pos,
                        format!("`on_failure` must be a string, found {}", v.kind()),
                        "write `abort`, `continue`, or the id of a step to run instead",
                    ),
                },
                "approval" => match &v.value {
                    Value::Str(s) if s == "required" => step.approval = true,
                    Value::Str(s) if s == "none" => step.approval = false,
                    Value::Bool(b) => step.approval = *b,
                    Value::Map(_) => {
                        if let Some(p) = self.approval(v) {
                            step.approval = p.0;
                            step.approval_policy = p.1;
                        }
                    }
                    _ => self.err_help(
                        v.pos,
                        format!("unknown approval {}", show_scalar(v)),
                        "write `approval: required`, or a mapping with `approvers`, `distinct_from_initiator`, `timeout`",
                    ),
                },
                "connection" => step.connection = self.named(v, "`connection`"),
                "side_effect" => match v.as_str().and_then(SideEffect::parse) {
                    Some(c) => step.side_effect = Some(c),
                    None => self.err_help(
                        v.pos,
                        format!("unknown side-effect class {}", show_scalar(v)),
                        "classes are: read, idempotent, unsafe",
                    ),
                },
                _ => {}
            }
        }
        match id {
            Some(id) => step.id = id,
            None => {
                // A present but malformed id was reported where it stands.
                if !id_given {
                    self.err_help(node.pos, "step has no `id`", "add e.g. `id: check_health`");
                }
                return None;
            }
        }
        match uses {
            Some(u) => {
                if step.with.is_none() {
                    step.with_key = u.pos;
                }
                step.uses = u;
            }
            None if uses_given => return None,
            None => {
                self.err_help(
                    step.id.pos,
                    format!("step `{}` has no `uses`", step.id.name),
                    "name the plugin that runs it, e.g. `uses: shell.run` (`runbook plugins` lists them)",
                );
                return None;
            }
        }
        Some(step)
    }

    /// A condition is a bare expression; accept `{{ expr }}` too, since people write it.
    fn condition_text(&mut self, v: &Node, what: &str) -> Option<String> {
        match &v.value {
            Value::Str(s) => Some(strip_braces(s).to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => {
                self.err(
                    v.pos,
                    format!(
                        "{what} must be an expression (a string), found {}",
                        v.kind()
                    ),
                );
                None
            }
        }
    }

    fn outputs(&mut self, v: &Node) -> Vec<Output> {
        let Some(entries) = self.map(v, "`outputs`", None) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, kpos, node) in entries {
            if !valid_ident(key) {
                self.err(kpos, format!("`{key}` is not a valid output name"));
                continue;
            }
            if matches!(key, "result" | "status" | "error") {
                self.err_help(
                    kpos,
                    format!("output name `{key}` is reserved"),
                    "`steps.ID.result`, `.status` and `.error` are provided for every step; pick another name",
                );
                continue;
            }
            if let Some(t) = self.string(node, "an output template") {
                out.push(Output {
                    name: Named {
                        name: key.to_string(),
                        pos: kpos,
                    },
                    template: t,
                    pos: node.pos,
                });
            }
        }
        out
    }

    fn retry(&mut self, v: &Node) -> Option<Retry> {
        let mut r = Retry {
            attempts: 3,
            initial: std::time::Duration::from_secs(1),
            factor: 2.0,
            max: std::time::Duration::from_secs(60),
            on: Vec::new(),
        };
        if let Value::Int(n) = v.value {
            return self.attempts(n, v.pos).map(|a| Retry { attempts: a, ..r });
        }
        let entries = self.map(v, "`retry`", Some(RETRY_KEYS))?;
        for (k, _, node) in entries {
            match k {
                "attempts" => match node.value {
                    Value::Int(n) => r.attempts = self.attempts(n, node.pos)?,
                    _ => self.err(
                        node.pos,
                        format!("`attempts` must be a whole number, found {}", node.kind()),
                    ),
                },
                "backoff" => {
                    let Some(b) = self.map(node, "`backoff`", Some(BACKOFF_KEYS)) else {
                        continue;
                    };
                    for (bk, _, bn) in b {
                        match bk {
                            "initial" => {
                                r.initial = self.duration(bn, "`initial`").unwrap_or(r.initial)
                            }
                            "max" => r.max = self.duration(bn, "`max`").unwrap_or(r.max),
                            "factor" => match bn.value {
                                Value::Int(i) if i >= 1 => r.factor = i as f64,
                                Value::Float(f) if f >= 1.0 && f.is_finite() => r.factor = f,
                                _ => self.err(bn.pos, "`factor` must be a number >= 1"),
                            },
                            _ => {}
                        }
                    }
                }
                "on" => {
                    let items: Vec<&Node> = match &node.value {
                        Value::Seq(s) => s.iter().collect(),
                        Value::Str(_) => vec![node],
                        _ => {
                            self.err(node.pos, "`on` must be a list of error kinds");
                            continue;
                        }
                    };
                    for it in items {
                        match it.as_str().and_then(ErrorKind::parse) {
                            Some(ErrorKind::Cancelled) => self.err(
                                it.pos,
                                "`cancelled` is never retried: a cancelled run starts nothing more",
                            ),
                            Some(k) => r.on.push(k),
                            None => {
                                let kinds: Vec<&str> =
                                    ErrorKind::retry_kinds().map(|(n, _)| n).collect();
                                self.err_help(
                                    it.pos,
                                    format!("unknown error kind {}", show_scalar(it)),
                                    format!("kinds are: {}", kinds.join(", ")),
                                );
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Some(r)
    }

    /// `approval: { required, approvers, distinct_from_initiator, timeout }`.
    fn approval(&mut self, v: &Node) -> Option<(bool, crate::runbook::model::ApprovalPolicy)> {
        let mut required = true;
        let mut p = crate::runbook::model::ApprovalPolicy::default();
        for (k, _, node) in self.map(v, "`approval`", Some(APPROVAL_KEYS))? {
            match k {
                "required" => required = self.boolean(node, "`required`").unwrap_or(true),
                "approvers" => match &node.value {
                    Value::Str(s) => p.approvers = vec![s.clone()],
                    Value::Seq(items) => {
                        for it in items {
                            match it.as_str() {
                                Some(s) => p.approvers.push(s.to_string()),
                                None => self.err(
                                    it.pos,
                                    format!("an approver must be a name, found {}", it.kind()),
                                ),
                            }
                        }
                    }
                    _ => self.err(
                        node.pos,
                        format!("`approvers` must be a list of names, found {}", node.kind()),
                    ),
                },
                "distinct_from_initiator" => {
                    p.distinct_from_initiator = self
                        .boolean(node, "`distinct_from_initiator`")
                        .unwrap_or(false)
                }
                "timeout" => p.timeout = self.duration(node, "`timeout`"),
                _ => {}
            }
        }
        Some((required, p))
    }

    fn attempts(&mut self, n: i64, pos: Pos) -> Option<u32> {
        match u32::try_from(n) {
            Ok(a) if (1..=100).contains(&a) => Some(a),
            _ => {
                self.err_help(
                    pos,
                    format!("retry attempts {n} out of range"),
                    "attempts counts the first try too: 1 to 100",
                );
                None
            }
        }
    }
}

/// The text of a literal duration: a string (`30s`) as written, a number as seconds. `None` for any
/// other kind of node. Step keys and plugin fields both go through this and `parse_duration`, so they
/// accept, and bound, the same values.
pub(crate) fn duration_text(node: &Node) -> Option<String> {
    match &node.value {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        // `1e308` as `100000…` (309 digits) would swamp the message.
        Value::Float(f) if f.abs() < 1e15 => Some(f.to_string()),
        Value::Float(f) => Some(format!("{f:e}")),
        _ => None,
    }
}

fn show_scalar(n: &Node) -> String {
    match &n.value {
        Value::Str(s) => format!("`{s}`"),
        _ => n.kind().to_string(),
    }
}

/// `{{ x }}` -> `x`, for conditions written as templates.
pub fn strip_braces(s: &str) -> &str {
    crate::expr::sole_expression(s).unwrap_or(s.trim())
}

pub fn valid_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Checks and converts a parameter value (from YAML or from `--param k=v` text) to its type.
pub fn coerce_param(
    ty: ParamType,
    choices: Option<&[String]>,
    value: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    let v = match (ty, value) {
        (ParamType::String, J::String(_)) => value.clone(),
        (ParamType::String, J::Number(n)) => J::String(n.to_string()),
        (ParamType::String, J::Bool(b)) => J::String(b.to_string()),
        (ParamType::Number, J::Number(_)) => value.clone(),
        (ParamType::Number, J::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(|f| {
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    Some(J::from(f as i64))
                } else {
                    serde_json::Number::from_f64(f).map(J::Number)
                }
            })
            .ok_or_else(|| format!("`{s}` is not a number"))?,
        (ParamType::Bool, J::Bool(_)) => value.clone(),
        (ParamType::Bool, J::String(s)) => match s.trim() {
            "true" | "yes" | "1" => J::Bool(true),
            "false" | "no" | "0" => J::Bool(false),
            _ => return Err(format!("`{s}` is not a boolean (write true or false)")),
        },
        (t, other) => return Err(format!("expected a {}, found {other}", t.as_str())),
    };
    if let Some(choices) = choices {
        let s = v.as_str().unwrap_or_default();
        if !choices.iter().any(|c| c == s) {
            return Err(format!("`{s}` is not one of: {}", choices.join(", ")));
        }
    }
    Ok(v)
}

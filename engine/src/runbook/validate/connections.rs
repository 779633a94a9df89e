//! Typed connections: each one's `kind` and fields, and which connection each step talks through.
//!
//! Required fields are not demanded here: a runbook kept in Git names the systems it needs and leaves
//! their addresses to a profile or the environment, so what is still missing is reported when a run
//! starts, once those are merged in.

use super::Validator;
use crate::diag::{Diagnostic, suggest};
use crate::runbook::model::{Runbook, Step};
use crate::runbook::node::Node;
use runbook_steps::Field;
use runbook_steps::connection::{self, ConnectionKind};

/// The kind a connection declares, if it declares a known one.
pub fn kind_of(node: &Node) -> Option<&'static ConnectionKind> {
    node.get("kind")
        .and_then(Node::as_str)
        .and_then(connection::kind)
}

/// The connection a step of a plugin of `family` uses when it names none: the one named like the
/// kind, else the only one of that kind. `Err` lists the candidates when there are several.
pub fn default_for<'r>(rb: &'r Runbook, family: &str) -> Result<Option<&'r str>, Vec<&'r str>> {
    let of_kind: Vec<&str> = rb
        .connections
        .iter()
        .filter(|(_, node)| kind_of(node).is_some_and(|k| k.name == family))
        .map(|(n, _)| n.name.as_str())
        .collect();
    match of_kind.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        many => match many.iter().find(|n| **n == family) {
            Some(n) => Ok(Some(n)),
            None => Err(of_kind),
        },
    }
}

impl Validator<'_> {
    pub(super) fn check_connections(&mut self) {
        let kinds: Vec<&str> = connection::KINDS.iter().map(|k| k.name).collect();
        for (name, node) in &self.rb.connections {
            let Some(kind_node) = node.get("kind") else {
                self.err(
                    Diagnostic::new(
                        name.pos,
                        format!("connection `{}` has no `kind`", name.name),
                    )
                    .help(format!("write `kind:` one of {}", kinds.join(", "))),
                );
                continue;
            };
            let Some(kind) = kind_of(node) else {
                let written = kind_node.as_str().unwrap_or("");
                let help = match suggest(written, kinds.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`? kinds are: {}", kinds.join(", ")),
                    None => format!("kinds are: {}", kinds.join(", ")),
                };
                self.err(
                    Diagnostic::new(
                        kind_node.pos,
                        format!("unknown connection kind {}", show(kind_node)),
                    )
                    .help(help),
                );
                continue;
            };
            // `kind` itself, and the kind's fields with none required (see the module's note).
            let mut fields: Vec<Field> = kind
                .fields
                .iter()
                .map(|f| Field {
                    required: false,
                    ..*f
                })
                .collect();
            fields.push(Field::req(
                "kind",
                runbook_steps::FieldType::String,
                "The kind.",
            ));
            self.check_object(
                node,
                &fields,
                &[],
                &format!("connection `{}` ({})", name.name, kind.name),
            );
        }
    }

    /// A step's `connection:` names a declared connection of its plugin's kind; without it, its
    /// plugin family's default must not be ambiguous.
    pub(super) fn check_step_connection(&mut self, s: &Step) {
        let family = self
            .registry
            .get(&s.uses.name)
            .and_then(|r| r.info().connection);
        let Some(named) = &s.connection else {
            if let Some(family) = family
                && let Err(many) = default_for(self.rb, family)
            {
                self.err(
                    Diagnostic::new(
                        s.uses.pos,
                        format!("step `{}` could use any of the `{family}` connections {}", s.id.name, many.join(", ")),
                    )
                    .help(format!(
                        "say which with `connection: NAME`, or name one of them `{family}` to make it the default"
                    )),
                );
            }
            return;
        };
        let Some(family) = family else {
            self.err(
                Diagnostic::new(named.pos, format!("`{}` takes no connection", s.uses.name))
                    .help("remove `connection:`"),
            );
            return;
        };
        let declared = self
            .rb
            .connections
            .iter()
            .find(|(n, _)| n.name == named.name);
        match declared {
            None => {
                let names = self.rb.connections.iter().map(|(n, _)| n.name.as_str());
                let help = match suggest(&named.name, names) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "declare it under `connections:`".to_string(),
                };
                self.err(
                    Diagnostic::new(named.pos, format!("unknown connection `{}`", named.name))
                        .help(help),
                );
            }
            Some((_, node)) => {
                if let Some(kind) = kind_of(node)
                    && kind.name != family
                {
                    self.err(
                        Diagnostic::new(
                            named.pos,
                            format!(
                                "connection `{}` is a `{}` connection; `{}` talks to `{family}`",
                                named.name, kind.name, s.uses.name
                            ),
                        )
                        .help(format!("name a connection of kind `{family}`")),
                    );
                }
            }
        }
    }
}

fn show(node: &Node) -> String {
    match node.as_str() {
        Some(s) => format!("`{s}`"),
        None => node.kind().to_string(),
    }
}

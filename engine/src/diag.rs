//! Diagnostics about a runbook: every one carries its file and span and is rendered like rustc's,
//! with the source line, a caret under the offending text and a help line.

use crate::runbook::node::Pos;
use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};
use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    pub pos: Option<Pos>,
    pub label: Option<String>,
    pub help: Option<String>,
    /// A warning does not make the runbook invalid: it is printed, and the runbook runs.
    pub warning: bool,
}

impl Diagnostic {
    pub fn new(pos: Pos, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            pos: Some(pos),
            label: None,
            help: None,
            warning: false,
        }
    }

    pub fn unplaced(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            pos: None,
            label: None,
            help: None,
            warning: false,
        }
    }

    pub fn warning(mut self) -> Diagnostic {
        self.warning = true;
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }
}

/// A set of diagnostics about one source file.
#[derive(Debug, Clone)]
pub struct Report {
    pub file: String,
    pub source: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    /// Renders every diagnostic; `color` for terminals.
    pub fn render(&self, color: bool) -> String {
        let renderer = if color {
            Renderer::styled()
        } else {
            Renderer::plain()
        };
        let mut out = String::new();
        for d in &self.diagnostics {
            let level = if d.warning {
                Level::WARNING
            } else {
                Level::ERROR
            };
            let mut group = Group::with_title(level.primary_title(d.message.as_str()));
            match d.pos {
                Some(pos) => {
                    let range = span_range(&self.source, pos);
                    let mut ann = AnnotationKind::Primary.span(range);
                    if let Some(l) = &d.label {
                        ann = ann.label(l.as_str());
                    }
                    group = group.element(
                        Snippet::source(self.source.as_str())
                            .path(self.file.as_str())
                            .annotation(ann),
                    );
                }
                None => {
                    group = group.element(annotate_snippets::Origin::path(self.file.as_str()));
                }
            }
            if let Some(h) = &d.help {
                group = group.element(Level::HELP.message(h.as_str()));
            }
            let _ = writeln!(out, "{}\n", renderer.render(&[group]));
        }
        let errors = self.diagnostics.iter().filter(|d| !d.warning).count();
        let warnings = self.diagnostics.len() - errors;
        let (word, n, paint): (&str, usize, fn(&str) -> String) = if errors > 0 {
            ("error", errors, |w| {
                console::style(w).red().bold().to_string()
            })
        } else {
            ("warning", warnings, |w| {
                console::style(w).yellow().bold().to_string()
            })
        };
        let _ = writeln!(
            out,
            "{}: {} {word}{} in {}",
            if color { paint(word) } else { word.to_string() },
            n,
            if n == 1 { "" } else { "s" },
            self.file
        );
        out
    }
}

/// The byte range a diagnostic points at: the node's own span, or the rest of the line when the parser
/// gave no length (e.g. an error at the end of the input).
fn span_range(src: &str, pos: Pos) -> std::ops::Range<usize> {
    let start = pos.offset.min(src.len());
    let mut end = (start + pos.len).min(src.len());
    // A multi-line node (a mapping, a block scalar) is pointed at by its first line only.
    if let Some(nl) = src[start..end].find('\n') {
        end = start + nl;
    }
    if end == start {
        end = src[start..]
            .find('\n')
            .map_or(src.len(), |i| start + i)
            .max(start);
    }
    while !src.is_char_boundary(end) {
        end -= 1;
    }
    start..end
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

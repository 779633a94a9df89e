//! The runbooks a long-lived process serves (`runbook serve`: alerts, schedules, the API): every
//! file found in `./runbooks` and `RUNBOOK_PATH`, checked once when loaded. A runbook that does not
//! validate is kept as refused, with its rendered report, so the server says why rather than
//! silently answering no alert for it.

use super::plan::Plan;
use crate::run::launch::Source;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;

/// A runbook that validated: its plan and the text it was checked from (what a run records).
#[derive(Clone)]
pub struct Entry {
    pub plan: Arc<Plan>,
    pub text: Arc<str>,
    pub sha256: String,
    pub path: PathBuf,
}

impl Entry {
    pub fn name(&self) -> &str {
        &self.plan.runbook.name
    }

    /// The source a new run of this runbook records.
    pub fn source(&self) -> Source {
        Source {
            text: self.text.to_string(),
            sha256: self.sha256.clone(),
            path: Some(self.path.display().to_string()),
            rerun: None,
        }
    }
}

/// A runbook file that could not be served, and why (a rendered, located report).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Refused {
    pub path: String,
    pub errors: String,
}

#[derive(Clone, Default)]
pub struct Catalog {
    pub entries: Vec<Entry>,
    pub refused: Vec<Refused>,
}

impl Catalog {
    /// Loads every runbook file found. Two files declaring the same name: the first found (in
    /// search order) is served, the other refused, so which one answers an alert never depends on
    /// chance.
    pub fn load(engine: &crate::Engine) -> Catalog {
        let mut c = Catalog::default();
        for path in super::find::all_files() {
            let file = path.display().to_string();
            let checked = super::source::read(&path).and_then(|text| {
                super::validate::check(&file, &text, &engine.registry, &engine.expr)
                    .map(|p| (text, p))
            });
            match checked {
                Ok((text, plan)) => {
                    if let Some(first) = c.get(&plan.runbook.name) {
                        c.refused.push(Refused {
                            errors: format!(
                                "runbook `{}` is already served from {}",
                                plan.runbook.name,
                                first.path.display()
                            ),
                            path: file,
                        });
                        continue;
                    }
                    c.entries.push(Entry {
                        sha256: hex::encode(Sha256::digest(text.as_bytes())),
                        plan: Arc::new(plan),
                        text: text.into(),
                        path,
                    });
                }
                Err(report) => c.refused.push(Refused {
                    path: file,
                    errors: report.render(false),
                }),
            }
        }
        c
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name() == name)
    }
}

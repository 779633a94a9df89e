//! The `runbook` engine: loads and validates runbooks, plans and executes them durably, and keeps the
//! journal every run can be audited from.

pub mod cli;
pub mod diag;
pub mod expr;
pub mod fuzzing;
pub mod plugin_docs;
pub mod run;
pub mod runbook;
pub mod schedule;
pub mod schema;
pub mod serve;
pub mod store;
pub mod trigger;

use std::sync::Arc;

/// What every run shares: the plugins this build knows and the expression environment.
#[derive(Clone)]
pub struct Engine {
    pub registry: Arc<runbook_steps::Registry>,
    pub expr: Arc<expr::Expr>,
}

impl Engine {
    pub fn new() -> Engine {
        Engine {
            registry: Arc::new(runbook_steps::Registry::builtin()),
            expr: Arc::new(expr::Expr::new()),
        }
    }
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
}

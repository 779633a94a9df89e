//! The `runbook` engine: loads and validates runbooks, plans and executes them durably, and keeps the
//! journal every run can be audited from.

pub mod diag;
pub mod expr;
pub mod runbook;
pub mod run;
pub mod store;
pub mod cli;

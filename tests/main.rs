//! The one integration-test binary. End-to-end tests spawn the real `runbook` CLI against real
//! services (SQLite files, local HTTP servers, processes).

mod audit;
mod common;
mod fuzzing;
mod golden;
mod resume;
mod run;
mod schema;
mod store;
mod torture;

//! The one integration-test binary. End-to-end tests spawn the real `runbook` CLI against real
//! services (SQLite files, local HTTP servers, processes).

mod audit;
mod cancel;
mod claim;
mod cli;
mod common;
mod connections;
#[cfg(all(feature = "kubernetes", feature = "mongodb"))]
mod docs;
mod fuzzing;
mod golden;
mod hardening;
mod integrity;
#[cfg(feature = "kubernetes")]
mod kubernetes;
mod mlflow;
#[cfg(all(feature = "kubernetes", feature = "mongodb"))]
mod model_degraded;
#[cfg(feature = "mongodb")]
mod mongodb;
mod notify;
mod plan;
mod prometheus;
mod remote;
mod resume;
mod run;
mod schedule;
mod schema;
mod serve;
mod serve_alerts;
mod serve_fuzz;
mod services;
mod store;
mod torture;
mod triggers;
mod waits;
mod workers;

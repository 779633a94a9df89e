//! Acting on schedules: what a long-lived process (`runbook serve`) calls every few seconds. Each
//! scheduled runbook of the catalog is compared with its record in the store; a due fire queues
//! one run for the workers, with the runbook's parameter defaults, journaled as
//! `run_triggered { trigger: schedule { expression, timezone, fire_at_ms } }` by actor `schedule`.
//!
//! Exactly once per fire, across processes: the fire moves the schedule's record by compare-and-set
//! in the same transaction that creates the run (`Store::fire_schedule`). Two servers sharing a
//! database both see the fire due; one moves the record and creates the run, the other moves
//! nothing and creates nothing. A crash before that commit leaves neither, and the next tick (of
//! any server) fires it; after it, both are there. A fire whose run cannot be created (a
//! connection it cannot resolve, a var that does not render) is still recorded, with the reason,
//! and reported: retrying it every tick would only repeat the error.

use super::{Decision, Schedule};
use crate::run::driver::{DriverError, RunOptions};
use crate::run::event::Trigger;
use crate::run::launch::{Queued, prepare};
use crate::runbook::catalog::{Catalog, Entry};
use crate::runbook::params::{Given, bind};
use crate::store::{Fire, Store, StoreError};
use serde::Serialize;
use std::collections::HashMap;

/// The actor scheduled runs are started by.
pub const ACTOR: &str = "schedule";

/// What one schedule did in a tick (schedules with nothing due are not reported).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Seen for the first time: `at_ms` is recorded as the instant it counts from; nothing fired.
    Baseline {
        runbook: String,
        expression: String,
        at_ms: i64,
    },
    /// A run was queued for this fire (the latest due: earlier missed fires are not run).
    Started {
        runbook: String,
        expression: String,
        fire_at_ms: i64,
        run: String,
    },
    /// Another process recorded this fire (or the first sighting) first: it started the run.
    Taken {
        runbook: String,
        expression: String,
        fire_at_ms: i64,
    },
    /// The fire is recorded, but its run could not be created.
    Refused {
        runbook: String,
        expression: String,
        fire_at_ms: i64,
        reason: String,
    },
}

/// Fires every schedule of `catalog` that is due at `now_ms`, queuing one run per due fire. The
/// runs resolve their connections with `profile`, as a worker's would.
pub async fn tick(
    store: &dyn Store,
    engine: &crate::Engine,
    catalog: &Catalog,
    profile: Option<&crate::run::connections::Profile>,
    now_ms: i64,
) -> Result<Vec<Outcome>, StoreError> {
    let mut opts = RunOptions::new(ACTOR);
    opts.profile = profile.cloned();
    let last: HashMap<(String, String), i64> = store
        .schedules()
        .await?
        .into_iter()
        .map(|r| ((r.runbook, r.expression), r.last_fire))
        .collect();
    let mut outcomes = Vec::new();
    for entry in &catalog.entries {
        for schedule in &entry.plan.runbook.trigger.schedules {
            let key = (entry.name().to_string(), schedule.expression().to_string());
            let previous = last.get(&key).copied();
            let outcome = match schedule.decide(previous, now_ms) {
                Decision::Wait => continue,
                Decision::Baseline => baseline(store, entry, schedule, now_ms).await?,
                Decision::Fire(at) => {
                    fire(store, engine, entry, schedule, previous, at, &opts).await?
                }
            };
            outcomes.push(outcome);
        }
    }
    Ok(outcomes)
}

/// The earliest next fire of any schedule in `catalog` after `now_ms`: when a caller that sleeps
/// between ticks need not look again before.
pub fn next_fire(catalog: &Catalog, now_ms: i64) -> Option<i64> {
    catalog
        .entries
        .iter()
        .flat_map(|e| &e.plan.runbook.trigger.schedules)
        .filter_map(|s| s.next_after(now_ms))
        .min()
}

async fn baseline(
    store: &dyn Store,
    entry: &Entry,
    schedule: &Schedule,
    now_ms: i64,
) -> Result<Outcome, StoreError> {
    let f = Fire {
        runbook: entry.name().to_string(),
        expression: schedule.expression().to_string(),
        previous: None,
        at: now_ms,
        error: None,
    };
    Ok(if store.fire_schedule(&f, None).await? {
        Outcome::Baseline {
            runbook: f.runbook,
            expression: f.expression,
            at_ms: now_ms,
        }
    } else {
        Outcome::Taken {
            runbook: f.runbook,
            expression: f.expression,
            fire_at_ms: now_ms,
        }
    })
}

async fn fire(
    store: &dyn Store,
    engine: &crate::Engine,
    entry: &Entry,
    schedule: &Schedule,
    previous: Option<i64>,
    at: i64,
    opts: &RunOptions,
) -> Result<Outcome, StoreError> {
    let runbook = entry.name().to_string();
    let expression = schedule.expression().to_string();
    let prepared = bind(&entry.plan.runbook, [], Given::Json)
        .map_err(|errors| errors.join("; "))
        .and_then(|params| {
            let queued = Queued {
                trigger: Some(Trigger::Schedule {
                    expression: expression.clone(),
                    timezone: schedule.timezone().to_string(),
                    fire_at_ms: at,
                }),
                trigger_key: None,
                request_key: None,
            };
            prepare(
                std::sync::Arc::clone(&entry.plan),
                engine,
                entry.source(),
                params,
                opts,
                queued,
            )
            .map_err(|e: DriverError| e.to_string())
        });
    let mut f = Fire {
        runbook: runbook.clone(),
        expression: expression.clone(),
        previous,
        at,
        error: None,
    };
    let (won, outcome) = match prepared {
        Ok((row, records)) => {
            let won = store.fire_schedule(&f, Some((&row, &records))).await?;
            (
                won,
                Outcome::Started {
                    runbook: runbook.clone(),
                    expression: expression.clone(),
                    fire_at_ms: at,
                    run: row.id,
                },
            )
        }
        Err(reason) => {
            f.error = Some(reason.clone());
            let won = store.fire_schedule(&f, None).await?;
            (
                won,
                Outcome::Refused {
                    runbook: runbook.clone(),
                    expression: expression.clone(),
                    fire_at_ms: at,
                    reason,
                },
            )
        }
    };
    Ok(if won {
        outcome
    } else {
        Outcome::Taken {
            runbook,
            expression,
            fire_at_ms: at,
        }
    })
}

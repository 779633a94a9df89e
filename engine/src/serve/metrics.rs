//! `/metrics`: the engine's own figures in the OpenMetrics text format, for Prometheus to scrape.
//! Counters are kept in memory by this process (alerts it received, lease takeovers by its worker,
//! step durations of the runs it drove); run counts by status are read from the database at scrape
//! time, so every server of one database reports the same totals.

use crate::run::event::{Event, Record, RunStatus};
use crate::run::options::Observer;
use crate::runbook::plan::Plan;
use crate::store::Store;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Arc;

type Labels = Vec<(&'static str, String)>;

fn step_histogram() -> Histogram {
    // 5 ms to ~45 min: a shell probe to a rollout wait.
    Histogram::new(exponential_buckets(0.005, 2.0, 20))
}

pub struct Metrics {
    registry: Registry,
    pub alerts: Family<Labels, Counter>,
    pub takeovers: Counter,
    pub steps: Family<Labels, Histogram, fn() -> Histogram>,
    runs: Family<Labels, Gauge>,
    waiting: Gauge,
    pub http_errors: Family<Labels, Counter>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("runbook");
        let alerts = Family::<Labels, Counter>::default();
        registry.register(
            "alerts_received",
            "Alerts received by the Alertmanager webhook, by what they did (started, deduplicated, cooling_down, resolved, refused, unmatched)",
            alerts.clone(),
        );
        let takeovers = Counter::default();
        registry.register(
            "lease_takeovers",
            "Runs this server's worker took over from a driver whose lease expired",
            takeovers.clone(),
        );
        let steps: Family<Labels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(step_histogram);
        registry.register(
            "step_duration_seconds",
            "Durations of the step attempts this server drove, by plugin and outcome",
            steps.clone(),
        );
        let runs = Family::<Labels, Gauge>::default();
        registry.register(
            "runs",
            "Runs in the database by status (read at scrape time)",
            runs.clone(),
        );
        let waiting = Gauge::default();
        registry.register(
            "runs_waiting",
            "Runs that wait: parked (a timer, an approval) or waiting for an operator",
            waiting.clone(),
        );
        let http_errors = Family::<Labels, Counter>::default();
        registry.register(
            "http_server_errors",
            "API requests answered with a 5xx status, by route",
            http_errors.clone(),
        );
        Metrics {
            registry,
            alerts,
            takeovers,
            steps,
            runs,
            waiting,
            http_errors,
        }
    }

    pub fn alert(&self, outcome: &str, runbook: &str) {
        self.alerts
            .get_or_create(&vec![
                ("outcome", outcome.to_string()),
                ("runbook", runbook.to_string()),
            ])
            .inc();
    }

    /// The text Prometheus scrapes, with run counts read now.
    pub async fn render(&self, store: &dyn Store) -> Result<String, crate::store::StoreError> {
        let counts: HashMap<String, i64> = store.count_by_status().await?.into_iter().collect();
        let mut waiting = 0;
        for status in RunStatus::ALL {
            let n = counts.get(status.as_str()).copied().unwrap_or(0);
            if matches!(status, RunStatus::Parked | RunStatus::Waiting) {
                waiting += n;
            }
            self.runs
                .get_or_create(&vec![("status", status.as_str().to_string())])
                .set(n);
        }
        self.waiting.set(waiting);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Watches one driven run's journal for step attempts' ends, timing them from their start.
pub struct StepTimer {
    pub metrics: Arc<Metrics>,
    started: HashMap<String, (i64, String)>,
}

impl StepTimer {
    pub fn new(metrics: Arc<Metrics>) -> StepTimer {
        StepTimer {
            metrics,
            started: HashMap::new(),
        }
    }
}

impl Observer for StepTimer {
    fn on_event(&mut self, plan: &Plan, record: &Record, event: &Event) {
        let ended = |outcome: &str, step: &str, this: &mut StepTimer| {
            if let Some((at, uses)) = this.started.remove(step) {
                let secs = (record.at_ms.saturating_sub(at)).max(0) as f64 / 1000.0;
                this.metrics
                    .steps
                    .get_or_create(&vec![("plugin", uses), ("outcome", outcome.to_string())])
                    .observe(secs);
            }
        };
        match event {
            Event::StepStarted { step, .. } => {
                let uses = plan
                    .index
                    .get(step)
                    .map(|&i| plan.steps[i].def.uses.name.clone())
                    .unwrap_or_default();
                self.started.insert(step.clone(), (record.at_ms, uses));
            }
            Event::StepSucceeded { step, .. } => ended("succeeded", step, self),
            Event::StepFailed { step, .. } => ended("failed", step, self),
            _ => {}
        }
    }
}

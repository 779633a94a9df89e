//! The runbook format, v1, as the engine holds it after loading. Every name a diagnostic may point at
//! keeps its [`Pos`].

use super::node::{Node, Pos};
use runbook_steps::{ErrorKind, SideEffect};
use std::time::Duration;

pub const API_VERSION: &str = "runbook/v1";

#[derive(Debug, Clone)]
pub struct Runbook {
    pub name: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub alerts: Vec<String>,
    /// How many runs of this runbook workers drive at once, across all of them (`concurrency:`).
    pub concurrency: Option<u32>,
    /// How an alert (`triggers:`) becomes a run of this runbook under `runbook serve`.
    pub trigger: TriggerRules,
    pub params: Vec<Param>,
    pub vars: Vec<(Named, Node)>,
    pub connections: Vec<(Named, Node)>,
    pub steps: Vec<Step>,
}

/// A name together with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    pub name: String,
    pub pos: Pos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Number,
    Bool,
}

impl ParamType {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Number => "number",
            ParamType::Bool => "bool",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Param {
    pub name: Named,
    pub ty: ParamType,
    /// Allowed values (strings) when the parameter is an enum.
    pub choices: Option<Vec<String>>,
    pub default: Option<serde_json::Value>,
    pub required: bool,
    pub description: Option<String>,
}

/// `triggers:` beyond the alert names: which alerts of those names, the params their labels fill,
/// what repeats and resolutions do, and the schedules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TriggerRules {
    /// Label matchers, as written (checked at load), that an alert must also satisfy.
    pub labels: Vec<String>,
    /// `param ← label`: the alert's label of that name fills the parameter.
    pub params: Vec<(Named, String)>,
    /// After a run of the same key ends, alerts for that key start nothing for this long.
    pub cooldown: Option<Duration>,
    pub on_resolved: OnResolved,
    /// `schedule:` (with `timezone:`): when runs start by the clock under `runbook serve`.
    pub schedules: Vec<crate::schedule::Schedule>,
    /// Where `schedule:` is written, for errors about scheduled runs as a whole.
    pub schedule_pos: Option<Pos>,
}

/// What a `resolved` notification does to the run it concerns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnResolved {
    /// Journal it on the run; the run goes on (it verifies recovery itself).
    #[default]
    Record,
    /// Also cancel the run if no step other than a `read` one has started (a run still
    /// diagnosing); otherwise the refusal is journaled and the run goes on.
    Cancel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Diagnose,
    Decide,
    Resolve,
    Verify,
    Notify,
    /// Checks that keep the problem from coming back (a monitor scheduled, an alert rule loaded).
    Prevent,
}

impl Phase {
    pub const ALL: [(&'static str, Phase); 6] = [
        ("diagnose", Phase::Diagnose),
        ("decide", Phase::Decide),
        ("resolve", Phase::Resolve),
        ("verify", Phase::Verify),
        ("notify", Phase::Notify),
        ("prevent", Phase::Prevent),
    ];

    pub fn as_str(self) -> &'static str {
        Phase::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("", |(n, _)| n)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// Total attempts, the first included.
    pub attempts: u32,
    pub initial: Duration,
    pub factor: f64,
    pub max: Duration,
    /// Error kinds that are retried; empty means every kind retryable by default.
    pub on: Vec<ErrorKind>,
}

impl Retry {
    /// The wait before attempt `next` (2 for the first retry): `initial × factor^(next−2)`, capped
    /// at `max`. Total for every input: growth that overflows, or a factor the loader would have
    /// refused (NaN, negative), waits `max`.
    pub fn backoff(&self, next: u32) -> Duration {
        if self.initial.is_zero() {
            return Duration::ZERO;
        }
        let exp = i32::try_from(next.saturating_sub(2)).unwrap_or(i32::MAX);
        let secs = self.initial.as_secs_f64() * self.factor.powi(exp);
        Duration::try_from_secs_f64(secs).map_or(self.max, |d| d.min(self.max))
    }

    pub fn retries(&self, kind: ErrorKind) -> bool {
        if self.on.is_empty() {
            kind.retryable_by_default()
        } else {
            self.on.contains(&kind)
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum OnFailure {
    Abort,
    Continue,
    Goto(Named),
}

#[derive(Debug, Clone)]
pub struct Output {
    pub name: Named,
    pub template: String,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: Named,
    pub title: Option<String>,
    pub uses: Named,
    /// The `with:` block as written (templates unrendered).
    pub with: Option<Node>,
    /// Where the `with:` key is (or the `uses:` value when there is none), for errors about the block.
    pub with_key: Pos,
    pub needs: Vec<Named>,
    pub when: Option<(String, Pos)>,
    pub phase: Option<Phase>,
    pub outputs: Vec<Output>,
    pub timeout: Option<Duration>,
    pub retry: Option<Retry>,
    pub on_failure: OnFailure,
    pub approval: bool,
    /// Who may answer an approval request, and for how long it stands (with `approval: { ... }`).
    pub approval_policy: ApprovalPolicy,
    /// Overrides the plugin's side-effect class (e.g. a `shell.run` of `kubectl get` is `read`).
    pub side_effect: Option<SideEffect>,
    /// The run's connection this step talks through; default: its plugin family's.
    pub connection: Option<Named>,
    /// Where the keys that may be set where they have no effect (`timeout`, `approval`,
    /// `side_effect`, `connection`) were written, for errors about the key as a whole.
    pub keys: Vec<(&'static str, Pos)>,
    pub pos: Pos,
}

/// The rules of a step's approval request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApprovalPolicy {
    /// Who may answer; empty means anyone.
    pub approvers: Vec<String>,
    /// The person who started the run may not approve its steps.
    pub distinct_from_initiator: bool,
    /// How long a request stands before it counts as denied; none means until answered.
    pub timeout: Option<Duration>,
}

impl ApprovalPolicy {
    /// Whether `who` may answer a request of a run that `initiator` started; the reason if not.
    pub fn may_answer(&self, who: &str, initiator: &str) -> Result<(), String> {
        if !self.approvers.is_empty() && !self.approvers.iter().any(|a| a == who) {
            return Err(format!(
                "`{who}` is not among the approvers of this step ({})",
                self.approvers.join(", ")
            ));
        }
        if self.distinct_from_initiator && who == initiator {
            return Err(format!(
                "`{who}` started this run, and this step must be approved by someone else"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(initial: Duration, factor: f64, max: Duration) -> Retry {
        Retry {
            attempts: u32::MAX,
            initial,
            factor,
            max,
            on: Vec::new(),
        }
    }

    #[test]
    fn backoff_grows_by_the_factor_up_to_max() {
        let r = retry(Duration::from_secs(1), 2.0, Duration::from_secs(60));
        let waits: Vec<u64> = (2..=9).map(|n| r.backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn backoff_never_panics_and_stays_within_max() {
        let day = Duration::from_secs(86_400);
        let durations = [Duration::ZERO, Duration::from_millis(1), day, Duration::MAX];
        let factors = [
            1.0,
            2.0,
            1e308,
            f64::MAX,
            f64::INFINITY,
            f64::NAN,
            -2.0,
            0.0,
        ];
        let attempts = [0, 1, 2, 3, 1000, u32::MAX - 1, u32::MAX];
        for initial in durations {
            for max in durations {
                for factor in factors {
                    let r = retry(initial, factor, max);
                    for next in attempts {
                        let wait = r.backoff(next);
                        assert!(
                            wait <= max,
                            "initial {initial:?} factor {factor} max {max:?} next {next}: {wait:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_huge_factor_waits_max_not_zero() {
        let r = retry(Duration::from_secs(1), 1e308, Duration::from_secs(30));
        assert_eq!(r.backoff(2), Duration::from_secs(1));
        assert_eq!(r.backoff(3), Duration::from_secs(30));
        assert_eq!(r.backoff(u32::MAX), Duration::from_secs(30));
    }
}

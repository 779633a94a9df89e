//! The rules of journaled waits: a sleep's wake-up time, and a `flow.wait_until`'s deadline, probes
//! and the condition evaluated over each probe's answer.

use super::{Effect, Prep, Prepared, ms};
use crate::run::event::Event;
use crate::runbook::plan::StepKind;
use runbook_steps::{ErrorKind, SideEffect, StepError};
use serde_json::{Map, Value, json};
use std::time::Duration;

impl Prep<'_> {
    /// A sleep journals its wake-up time and is then a wait the scheduler wakes (`Action::Wake`).
    pub(super) fn sleep(
        &self,
        i: usize,
        attempt: u32,
        duration: &Value,
        ctx: &minijinja::Value,
        now: i64,
    ) -> Prepared {
        let d = match self.duration(duration, ctx, "`for`") {
            Ok(d) => d,
            Err(e) => return self.fail_at_start(i, attempt, e, now),
        };
        if self.planning {
            let summary = format!("would wait {}", runbook_steps::duration::human(d));
            return self.planned(i, json!({ "summary": summary }));
        }
        self.wait_starts(i, attempt, json!({"for": duration}), d, now)
    }

    /// The start of a journaled wait (`flow.sleep`, `flow.wait_until`): the attempt, and the wait's
    /// start and deadline, from the same instant.
    fn wait_starts(
        &self,
        i: usize,
        attempt: u32,
        inputs: Value,
        d: Duration,
        now: i64,
    ) -> Prepared {
        let deadline_ms = now.saturating_add(ms(d));
        Prepared::events(vec![
            Event::StepStarted {
                step: self.id(i),
                attempt,
                class: SideEffect::Read,
                inputs,
                deadline_ms: Some(deadline_ms),
            },
            Event::WaitStarted {
                step: self.id(i),
                deadline_ms,
                started_ms: Some(now),
            },
        ])
    }

    /// A sleep's wake-up time came: it succeeded, having slept since its wait began (a run that was
    /// down meanwhile slept longer than asked, and says so).
    pub fn wake(&self, i: usize, now: i64) -> Event {
        let st = &self.state.steps[i];
        let since = st.wait_started_ms.unwrap_or(now);
        self.succeed(i, st.attempt, json!({"slept_ms": now - since}), now)
    }

    pub(super) fn wait_until(
        &self,
        i: usize,
        attempt: u32,
        (uses, with, until, deadline): (&String, &Value, &String, &Value),
        ctx: &minijinja::Value,
        now: i64,
    ) -> Prepared {
        let parsed = (|| {
            let dl = self.duration(deadline, ctx, "`deadline`")?;
            self.probe_settings(i, ctx)?;
            let input = self.render(with, ctx)?;
            Ok::<_, StepError>((dl, input))
        })();
        let (dl, input) = match parsed {
            Ok(p) => p,
            Err(e) => return self.fail_at_start(i, attempt, e, now),
        };
        if self.planning {
            let summary = format!(
                "would poll `{uses}` until `{until}`, for at most {}",
                runbook_steps::duration::human(dl)
            );
            return self.planned(
                i,
                json!({ "summary": summary, "probe": { "uses": uses, "with": input } }),
            );
        }
        let inputs = json!({"probe": {"uses": uses, "with": input}, "until": until});
        self.wait_starts(i, attempt, inputs, dl, now)
    }

    /// A wait_until's `interval` and `hold`.
    fn probe_settings(
        &self,
        i: usize,
        ctx: &minijinja::Value,
    ) -> Result<(Duration, Option<Duration>), StepError> {
        let StepKind::WaitUntil { interval, hold, .. } = &self.plan.steps[i].kind else {
            return Err(StepError::new(ErrorKind::Input, "not a wait_until step"));
        };
        let iv = match interval {
            Some(v) => self.duration(v, ctx, "`interval`")?,
            None => Duration::from_secs(30),
        };
        let hold = match hold {
            Some(v) => Some(self.duration(v, ctx, "`hold`")?),
            None => None,
        };
        Ok((iv, hold))
    }

    /// The next probe of a wait_until: journaled as sent, then the driver calls the probe plugin.
    pub fn probe(&self, i: usize, now: i64) -> Prepared {
        let st = &self.state.steps[i];
        let StepKind::WaitUntil {
            probe_uses,
            probe_with,
            ..
        } = &self.plan.steps[i].kind
        else {
            return Prepared::events(Vec::new());
        };
        let ctx = self.context(i, None);
        let input = match self.render(probe_with, &ctx) {
            Ok(v) => v,
            Err(e) => return Prepared::events(vec![self.fail(i, st.attempt, e, now)]),
        };
        Prepared {
            events: vec![Event::ProbeStarted {
                step: self.id(i),
                probe: st.probe.sent + 1,
            }],
            effect: Effect::Probe {
                uses: probe_uses.clone(),
                input,
                deadline_ms: st.wait_deadline_ms.unwrap_or(now),
            },
        }
    }

    /// A probe answered (or failed): evaluate `until` over its result, and either succeed (it held
    /// long enough) or journal when the next probe is due.
    pub fn probe_done(&self, i: usize, outcome: Result<Value, StepError>, now: i64) -> Vec<Event> {
        let st = &self.state.steps[i];
        let StepKind::WaitUntil { until, .. } = &self.plan.steps[i].kind else {
            return Vec::new();
        };
        let ctx = self.context(i, None);
        let (interval, hold) = match self.probe_settings(i, &ctx) {
            Ok(s) => s,
            Err(e) => return vec![self.fail(i, st.attempt, e, now)],
        };
        let probe = st.probe.sent;
        let mut values = Map::new();
        let (holds, problem, true_since) = match &outcome {
            Ok(result) => {
                let ctx = self.context(i, Some(result));
                match self.expr.eval_condition(until, &ctx) {
                    Ok(d) => {
                        values = d.values.into_iter().collect();
                        if d.holds {
                            let since = st.probe.true_since_ms.unwrap_or(now);
                            let held =
                                Duration::from_millis(u64::try_from(now - since).unwrap_or(0));
                            if hold.is_none_or(|h| held >= h) {
                                let waited = now - st.wait_started_ms.unwrap_or(now);
                                let r =
                                    json!({"result": result, "probes": probe, "waited_ms": waited});
                                return vec![
                                    Event::ProbeDone {
                                        step: self.id(i),
                                        probe,
                                        holds: true,
                                        values,
                                        problem: None,
                                        true_since_ms: Some(since),
                                        next_at_ms: now,
                                    },
                                    self.succeed(i, st.attempt, r, now),
                                ];
                            }
                            let p = format!(
                                "`{until}` has held for {}",
                                runbook_steps::duration::human(held)
                            );
                            (true, p, Some(since))
                        } else {
                            let vals: Vec<String> =
                                values.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                            (
                                false,
                                format!("`{until}` is false ({})", vals.join(", ")),
                                None,
                            )
                        }
                    }
                    Err(e) => {
                        let e = StepError::new(ErrorKind::Input, format!("`until`: {e}"));
                        return vec![self.fail(i, st.attempt, e, now)];
                    }
                }
            }
            Err(e) => (false, format!("probe failed: {e}"), None),
        };
        vec![Event::ProbeDone {
            step: self.id(i),
            probe,
            holds,
            values,
            problem: Some(problem),
            true_since_ms: true_since,
            next_at_ms: now.saturating_add(ms(interval)),
        }]
    }

    /// A wait_until's deadline passed without `until` holding.
    pub fn expire(&self, i: usize, now: i64) -> Event {
        let st = &self.state.steps[i];
        let last = st
            .probe
            .last_problem
            .clone()
            .unwrap_or_else(|| "no probe answered".to_string());
        let e = StepError::new(
            ErrorKind::Timeout,
            format!(
                "deadline passed after {} probes; last: {last}",
                st.probe.sent
            ),
        );
        self.fail(i, st.attempt, e, now)
    }
}

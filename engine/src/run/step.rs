//! What starting, finishing or waking a step journals: pure functions of the plan, the run's state, the
//! shared context and the time. Guards, branch choices, asserts, approvals, timers, probes, retries'
//! backoff and deadlines are decided here, without I/O, so each rule is tested on data; the driver only
//! journals the events and performs the one effect a step may have (calling its plugin).

use super::event::Event;
use super::state::RunState;
use crate::expr::Expr;
use crate::runbook::plan::{Plan, StepKind};
use runbook_steps::{ErrorKind, Registry, Runner, SideEffect, StepError, parse_duration};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// Everything a step's rules read.
pub struct Prep<'a> {
    pub plan: &'a Plan,
    pub state: &'a RunState,
    pub expr: &'a Expr,
    pub registry: &'a Registry,
    /// params, vars, connections, run (and env, if anything reads it).
    pub base: &'a Map<String, Value>,
    /// A plan (`runbook plan`): steps that would change something, or wait, say what they would do.
    pub planning: bool,
}

/// What the driver does after journaling a step's events.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    None,
    /// Call the plugin with these inputs. The intent of a non-`read` call is committed with fsync first.
    Call {
        inputs: Value,
        class: SideEffect,
        /// The attempt's deadline, when it has a `timeout`.
        deadline_ms: Option<i64>,
        timeout_text: Option<String>,
    },
    /// Ask for approval: the request, completed with the plugin's description of the change (the
    /// evidence a person decides on) before it is journaled.
    RequestApproval {
        request: Event,
        inputs: Value,
        class: SideEffect,
    },
    /// Ask the plugin what this call would change (a plan), without making the change.
    Plan {
        inputs: Value,
        class: SideEffect,
    },
    /// Send a `flow.wait_until` probe.
    Probe {
        uses: String,
        input: Value,
        deadline_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub events: Vec<Event>,
    pub effect: Effect,
}

impl Prepared {
    fn events(events: Vec<Event>) -> Prepared {
        Prepared {
            events,
            effect: Effect::None,
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

impl Prep<'_> {
    fn id(&self, i: usize) -> String {
        self.plan.id(i).to_string()
    }

    /// The template context for step `i`: the shared base plus the steps it reads (and `result`).
    pub fn context(&self, i: usize, result: Option<&Value>) -> minijinja::Value {
        let ps = &self.plan.steps[i];
        let mut m = self.base.clone();
        let mut steps = Map::new();
        for &j in &ps.reads_steps {
            let st = &self.state.steps[j];
            let mut o = st.outputs.clone();
            o.insert("status".into(), Value::String(st.status.as_str().into()));
            if let Some(r) = &st.result {
                o.insert("result".into(), r.clone());
            }
            if let Some((kind, msg)) = &st.error {
                o.insert("error".into(), json!({"kind": kind, "message": msg}));
            }
            steps.insert(self.plan.id(j).to_string(), Value::Object(o));
        }
        m.insert("steps".into(), Value::Object(steps));
        if let Some(r) = result {
            m.insert("result".into(), r.clone());
        }
        minijinja::Value::from(minijinja::value::Serde(&m))
    }

    fn render(&self, v: &Value, ctx: &minijinja::Value) -> Result<Value, StepError> {
        self.expr
            .render_value(v, ctx)
            .map_err(|e| StepError::new(ErrorKind::Input, e.to_string()))
    }

    fn duration(
        &self,
        v: &Value,
        ctx: &minijinja::Value,
        what: &str,
    ) -> Result<Duration, StepError> {
        let v = self.render(v, ctx)?;
        let text = match &v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        parse_duration(&text).map_err(|e| StepError::new(ErrorKind::Input, format!("{what}: {e}")))
    }

    fn outputs(&self, i: usize, result: &Value) -> Result<Map<String, Value>, StepError> {
        let ps = &self.plan.steps[i];
        let mut out = Map::new();
        if ps.def.outputs.is_empty() {
            return Ok(out);
        }
        let ctx = self.context(i, Some(result));
        for o in &ps.def.outputs {
            let v = self.expr.render_str(&o.template, &ctx).map_err(|e| {
                StepError::new(ErrorKind::Input, format!("output `{}`: {e}", o.name.name))
            })?;
            out.insert(o.name.name.clone(), v);
        }
        Ok(out)
    }

    /// A step's result is in: its outputs and success, or the outputs' failure.
    pub fn succeed(&self, i: usize, attempt: u32, result: Value, now: i64) -> Event {
        match self.outputs(i, &result) {
            Ok(outputs) => Event::StepSucceeded {
                step: self.id(i),
                attempt,
                result,
                outputs,
            },
            Err(e) => self.fail(i, attempt, e, now),
        }
    }

    /// A failed attempt, with the time of the next one if the step's `retry` allows it.
    pub fn fail(&self, i: usize, attempt: u32, e: StepError, now: i64) -> Event {
        let retry_at_ms = self.plan.steps[i].def.retry.as_ref().and_then(|r| {
            (attempt < r.attempts && r.retries(e.kind))
                .then(|| now.saturating_add(ms(r.backoff(attempt + 1))))
        });
        Event::StepFailed {
            step: self.id(i),
            attempt,
            kind: e.kind,
            error: e.message,
            detail: e.detail,
            retry_at_ms,
        }
    }

    /// A failure before anything was dispatched: a start (so attempts add up) and the failure.
    fn fail_at_start(&self, i: usize, attempt: u32, e: StepError, now: i64) -> Prepared {
        Prepared::events(vec![
            Event::StepStarted {
                step: self.id(i),
                attempt,
                class: SideEffect::Read,
                inputs: Value::Null,
                deadline_ms: None,
            },
            self.fail(i, attempt, e, now),
        ])
    }

    /// Starting step `i` (a `Start` action): its guard, then what its kind does.
    pub fn start(&self, i: usize, now: i64) -> Prepared {
        let ps = &self.plan.steps[i];
        let st = &self.state.steps[i];
        let step = self.id(i);
        let attempt = st.attempt + 1;
        let ctx = if ps.has_templates {
            self.context(i, None)
        } else {
            minijinja::Value::UNDEFINED
        };
        let mut events = Vec::new();
        // The guard is checked on every attempt (a retry must not bypass it), once: an attempt that
        // waited for approval checked it before asking.
        let asked = st.approval.requested_for == Some(attempt);
        if let (Some((cond, _)), false) = (&ps.def.when, asked) {
            match self.expr.eval_condition(cond, &ctx) {
                Ok(d) => {
                    events.push(Event::GuardEvaluated {
                        step: step.clone(),
                        condition: cond.clone(),
                        holds: d.holds,
                        values: d.values.into_iter().collect(),
                    });
                    if !d.holds {
                        events.push(Event::StepSkipped {
                            step,
                            reason: format!("`when: {cond}` was false"),
                        });
                        return Prepared::events(events);
                    }
                }
                Err(e) => {
                    let e = StepError::new(ErrorKind::Input, format!("`when`: {e}"));
                    return self.fail_at_start(i, attempt, e, now);
                }
            }
        }
        let mut p = match &ps.kind {
            StepKind::Branch { cases, default } => {
                self.branch(i, attempt, cases, default, &ctx, now)
            }
            StepKind::Assert { that, message } => {
                self.assert(i, attempt, that, message.as_ref(), &ctx, now)
            }
            StepKind::Sleep { duration } => self.sleep(i, attempt, duration, &ctx, now),
            StepKind::WaitUntil {
                probe_uses,
                probe_with,
                until,
                deadline,
                ..
            } => self.wait_until(
                i,
                attempt,
                (probe_uses, probe_with, until, deadline),
                &ctx,
                now,
            ),
            StepKind::Plugin => self.call(i, attempt, &ctx, now),
        };
        events.append(&mut p.events);
        p.events = events;
        p
    }

    fn branch(
        &self,
        i: usize,
        attempt: u32,
        cases: &[crate::runbook::plan::Case],
        default: &[usize],
        ctx: &minijinja::Value,
        now: i64,
    ) -> Prepared {
        let step = self.id(i);
        let mut events = vec![Event::StepStarted {
            step: step.clone(),
            attempt,
            class: SideEffect::Read,
            inputs: Value::Null,
            deadline_ms: None,
        }];
        let mut values = Map::new();
        let mut chosen: Option<(Option<usize>, Option<String>, Vec<usize>)> = None;
        for (n, case) in cases.iter().enumerate() {
            match self.expr.eval_condition(&case.when, ctx) {
                Ok(d) => {
                    values.extend(d.values);
                    if d.holds {
                        chosen = Some((Some(n), Some(case.when.clone()), case.then.clone()));
                        break;
                    }
                }
                Err(e) => {
                    let e = StepError::new(ErrorKind::Input, format!("case {}: {e}", n + 1));
                    events.push(self.fail(i, attempt, e, now));
                    return Prepared::events(events);
                }
            }
        }
        let (case, condition, taken) = chosen.unwrap_or((None, None, default.to_vec()));
        let mut all: Vec<usize> = cases
            .iter()
            .flat_map(|c| c.then.iter().copied())
            .chain(default.iter().copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        let names = |v: &[usize]| v.iter().map(|&t| self.id(t)).collect::<Vec<_>>();
        let not_taken: Vec<usize> = all.into_iter().filter(|t| !taken.contains(t)).collect();
        let taken_names = names(&taken);
        events.push(Event::DecisionTaken {
            step,
            case,
            condition: condition.clone(),
            values,
            taken: taken_names.clone(),
            not_taken: names(&not_taken),
        });
        let result = json!({"case": case, "taken": taken_names, "condition": condition});
        events.push(self.succeed(i, attempt, result, now));
        Prepared::events(events)
    }

    fn assert(
        &self,
        i: usize,
        attempt: u32,
        that: &str,
        message: Option<&Value>,
        ctx: &minijinja::Value,
        now: i64,
    ) -> Prepared {
        let started = Event::StepStarted {
            step: self.id(i),
            attempt,
            class: SideEffect::Read,
            inputs: json!({"that": that}),
            deadline_ms: None,
        };
        let end = match self.expr.eval_condition(that, ctx) {
            Ok(d) if d.holds => {
                self.succeed(i, attempt, json!({"holds": true, "values": d.values}), now)
            }
            Ok(d) => {
                let msg = match message.map(|m| self.render(m, ctx)) {
                    Some(Ok(Value::String(s))) => s,
                    Some(Ok(v)) => v.to_string(),
                    _ => format!("assertion failed: {that}"),
                };
                let values: Map<String, Value> = d.values.into_iter().collect();
                let e = StepError::new(ErrorKind::Condition, msg)
                    .with_detail(json!({"that": that, "values": values}));
                self.fail(i, attempt, e, now)
            }
            Err(e) => self.fail(
                i,
                attempt,
                StepError::new(ErrorKind::Input, e.to_string()),
                now,
            ),
        };
        Prepared::events(vec![started, end])
    }

    /// A sleep journals its wake-up time and is then a wait the scheduler wakes (`Action::Wake`).
    fn sleep(
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

    /// In a plan, a step after a planned change: its plugin describes what it would do when its
    /// inputs do not depend on what the planned steps would produce; otherwise it says why not.
    pub fn plan_after(&self, i: usize, why: &str, now: i64) -> Prepared {
        let ps = &self.plan.steps[i];
        let reads_planned = ps
            .reads_steps
            .iter()
            .any(|&j| self.state.steps[j].status == super::state::Status::Planned);
        if matches!(ps.kind, StepKind::Plugin) && !reads_planned {
            let attempt = self.state.steps[i].attempt + 1;
            let ctx = if ps.has_templates {
                self.context(i, None)
            } else {
                minijinja::Value::UNDEFINED
            };
            let mut p = self.call(i, attempt, &ctx, now);
            if let Effect::Call { inputs, class, .. } = p.effect {
                // A read after a planned change would read a system not yet changed: describe it.
                p.effect = Effect::Plan { inputs, class };
            }
            if !matches!(p.effect, Effect::None) {
                return p;
            }
        }
        self.planned(i, json!({ "summary": why }))
    }

    fn planned(&self, i: usize, plan: Value) -> Prepared {
        Prepared::events(vec![Event::StepPlanned {
            step: self.id(i),
            plan,
        }])
    }

    /// A sleep's wake-up time came: it succeeded, having slept since its wait began (a run that was
    /// down meanwhile slept longer than asked, and says so).
    pub fn wake(&self, i: usize, now: i64) -> Event {
        let st = &self.state.steps[i];
        let since = st.wait_started_ms.unwrap_or(now);
        self.succeed(i, st.attempt, json!({"slept_ms": now - since}), now)
    }

    fn wait_until(
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

    /// An approval request timed out (or the run is aborting): it counts as denied.
    pub fn expire_approval(&self, i: usize) -> Event {
        let reason = if self.state.aborting {
            "the run is aborting".to_string()
        } else {
            let timeout = self.plan.steps[i].def.approval_policy.timeout;
            format!(
                "no answer within {}",
                timeout.map_or_else(|| "its timeout".to_string(), runbook_steps::duration::human)
            )
        };
        Event::ApprovalDenied {
            step: self.id(i),
            by: "runbook".to_string(),
            how: "timeout".to_string(),
            reason,
        }
    }

    /// A plugin step: render its inputs, ask for approval if it needs one, else call it.
    fn call(&self, i: usize, attempt: u32, ctx: &minijinja::Value, now: i64) -> Prepared {
        let ps = &self.plan.steps[i];
        let st = &self.state.steps[i];
        let Some(Runner::Plugin(plugin)) = self.registry.get(&ps.def.uses.name) else {
            let e = StepError::new(
                ErrorKind::Input,
                format!("plugin `{}` is not available", ps.def.uses.name),
            );
            return self.fail_at_start(i, attempt, e, now);
        };
        let inputs = match ps.def.with.as_ref() {
            Some(w) if ps.has_templates => match self.render(&w.to_json(), ctx) {
                Ok(v) => v,
                Err(e) => {
                    let e = StepError::new(e.kind, format!("rendering `with`: {}", e.message));
                    return self.fail_at_start(i, attempt, e, now);
                }
            },
            Some(w) => w.to_json(),
            None => json!({}),
        };
        let class = ps
            .def
            .side_effect
            .unwrap_or_else(|| plugin.class_for(&inputs));
        if self.planning && class != SideEffect::Read {
            // Nothing is asked or done: the plan is what a person would approve.
            return Prepared {
                events: vec![Event::StepStarted {
                    step: self.id(i),
                    attempt,
                    class,
                    inputs: inputs.clone(),
                    deadline_ms: None,
                }],
                effect: Effect::Plan { inputs, class },
            };
        }
        let asked = st.approval.requested_for == Some(attempt);
        if ps.def.approval && st.approval.granted_for != Some(attempt) {
            if let (true, Some((by, reason))) = (asked, &st.approval.denied) {
                // Journaled as the attempt it was, with its class and inputs, so an audit lists the
                // side effect that was asked for and not allowed.
                let e = StepError::new(ErrorKind::Approval, format!("denied by {by}: {reason}"));
                return Prepared::events(vec![
                    Event::StepStarted {
                        step: self.id(i),
                        attempt,
                        class,
                        inputs,
                        deadline_ms: None,
                    },
                    self.fail(i, attempt, e, now),
                ]);
            }
            let policy = &ps.def.approval_policy;
            let inputs_for_plan = inputs.clone();
            let request = Event::ApprovalRequested {
                step: self.id(i),
                attempt,
                class,
                inputs,
                approvers: policy.approvers.clone(),
                distinct_from_initiator: policy.distinct_from_initiator,
                expires_at_ms: policy.timeout.map(|t| now.saturating_add(ms(t))),
                plan: None,
            };
            return Prepared {
                events: Vec::new(),
                effect: Effect::RequestApproval {
                    request,
                    inputs: inputs_for_plan,
                    class,
                },
            };
        }
        // An attempt re-run after a crash keeps the deadline its first start journaled.
        let deadline_ms = match (ps.def.timeout, st.deadline_ms) {
            (Some(_), Some(kept)) => Some(kept),
            (Some(t), None) => Some(now.saturating_add(ms(t))),
            (None, _) => None,
        };
        Prepared {
            events: vec![Event::StepStarted {
                step: self.id(i),
                attempt,
                class,
                inputs: inputs.clone(),
                deadline_ms,
            }],
            effect: Effect::Call {
                inputs,
                class,
                deadline_ms,
                timeout_text: ps.def.timeout.map(runbook_steps::duration::human),
            },
        }
    }
}

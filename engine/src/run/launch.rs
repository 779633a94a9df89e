//! Starting a run and picking a stopped one up again: everything before the driver's loop. A new run
//! gets its first events and its row; a resumed one is rebuilt from its verified journal, its steps in
//! flight at the stop are classified, and an operator's decisions are checked and journaled.

use super::context::{base_context, fill_masked, layer_connections, resolve_connections};
use super::driver::{Driver, DriverError, Hooks, Position, RunOptions, RunOutcome};
use super::event::{Chain, Event, RunStatus, now_ms};
use super::lease;
use super::state::{RunState, Status};
use crate::runbook::plan::{Plan, StepKind};
use crate::store::{Durability, RunRow, Store};
use runbook_steps::SideEffect;
use serde_json::{Map, Value, json};
use sha2::Digest as _;
use std::sync::Arc;

/// How long a command left running by a killed engine gets to end on SIGTERM before SIGKILL.
pub(super) const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What an operator said about steps left in `unknown`.
pub type OperatorDecisions = Vec<(String, super::event::OperatorAction)>;

/// The source a run was started from, stored with it.
pub struct Source {
    pub text: String,
    pub sha256: String,
    pub path: Option<String>,
    /// Set when this run re-runs another from one of its steps.
    pub rerun: Option<Rerun>,
}

/// A re-run: the parent run, the step it restarts from, and the outcomes it reuses.
pub struct Rerun {
    pub parent: String,
    pub from: String,
    pub reused: Vec<Event>,
}

/// The outcomes a re-run from step `from` takes over from the parent run's state: every step that is
/// neither `from` nor downstream of it, and that succeeded, was skipped, or failed in a way the
/// runbook lets the run continue past.
pub fn reuse_before(plan: &Plan, parent: &RunState, parent_id: &str, from: usize) -> Vec<Event> {
    let mut downstream = vec![false; plan.steps.len()];
    let mut stack = vec![from];
    while let Some(i) = stack.pop() {
        if !downstream[i] {
            downstream[i] = true;
            stack.extend(&plan.steps[i].succs);
        }
    }
    plan.order
        .iter()
        .filter(|&&i| !downstream[i])
        .filter_map(|&i| {
            let st = &parent.steps[i];
            let continued = matches!(
                plan.steps[i].def.on_failure,
                crate::runbook::OnFailure::Continue
            );
            let status = match st.status {
                super::state::Status::Succeeded => "succeeded",
                super::state::Status::Skipped => "skipped",
                super::state::Status::Failed if continued => "failed",
                _ => return None,
            };
            let (kind, reason) = match (&st.error, st.status) {
                (Some((k, m)), super::state::Status::Failed) => (Some(*k), Some(m.clone())),
                _ => (None, st.skip_reason.clone()),
            };
            Some(Event::StepReused {
                step: plan.id(i).to_string(),
                from_run: parent_id.to_string(),
                status: status.to_string(),
                kind,
                result: st.result.clone(),
                outputs: st.outputs.clone(),
                chosen: st.chosen.clone(),
                reason,
            })
        })
        .collect()
}

/// A stored run as the library acts on it: its row, its records and their events, decoded once.
pub struct StoredRun {
    pub row: RunRow,
    pub records: Vec<super::event::Record>,
    pub events: Vec<Event>,
}

impl StoredRun {
    /// Reads run `run` (an id or unique prefix) with its journal. With `verified`, refuses a run
    /// whose journal or stored runbook does not verify (as `runbook audit verify` checks them),
    /// before anything acts on it.
    pub async fn load(
        store: &dyn Store,
        run: &str,
        verified: bool,
    ) -> Result<StoredRun, DriverError> {
        let row = store.run(run).await?;
        let records = store.events(&row.id).await?;
        if verified {
            super::integrity::verify(&row, &records)
                .map_err(|b| DriverError::Refused(super::integrity::refusal(&row.id, &b)))?;
        }
        let mut events = Vec::with_capacity(records.len());
        for r in &records {
            events.push(r.event().map_err(|e| {
                DriverError::Refused(format!(
                    "event {} of run {} is unreadable: {e}",
                    r.seq, row.id
                ))
            })?);
        }
        Ok(StoredRun {
            row,
            records,
            events,
        })
    }

    /// The runbook text the run follows now (the stored one, or the one a resume switched to).
    pub fn text(&self) -> &str {
        super::event::current_text(&self.row.runbook_text, &self.events)
    }

    /// Where the run's runbook came from, for diagnostics.
    pub fn label(&self) -> &str {
        self.row.source_path.as_deref().unwrap_or("stored runbook")
    }

    /// The run's current runbook text, validated into a plan.
    pub fn check(&self, engine: &crate::Engine) -> Result<Plan, crate::diag::Report> {
        crate::runbook::validate::check(self.label(), self.text(), &engine.registry, &engine.expr)
    }

    /// The hash chain, continuing after the last stored event.
    pub fn chain(&self) -> Chain {
        let mut chain = Chain::new(&self.row.id);
        if let Some(last) = self.records.last() {
            chain.next_seq = last.seq + 1;
            chain.last_hash.clone_from(&last.hash);
        }
        chain
    }

    /// The connections the run resolved when it started, as journaled (credentials masked).
    pub fn connections(&self) -> Option<&Map<String, Value>> {
        self.events.iter().find_map(|e| match e {
            Event::ConnectionsResolved { connections, .. } => Some(connections),
            _ => None,
        })
    }

    /// The process group attempt `attempt` of step `step` started, when the journal names one
    /// with members that may still run (a process the engine left behind when it was killed).
    pub fn process_left(&self, step: &str, attempt: u32) -> Option<runbook_steps::process::Group> {
        self.events
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::StepProcess {
                    step: s,
                    attempt: a,
                    group,
                } if s == step && *a == attempt => Some(group.clone()),
                _ => None,
            })
            .filter(|g| !g.members().is_empty())
    }
}

/// A new run before anything of it is written: its row, its first event (sealed), the connections
/// it resolved, and where its driver starts from.
pub(super) struct NewRun {
    pub row: RunRow,
    pub first: super::event::Record,
    pub first_event: Event,
    pub resolved: Map<String, Value>,
    pub profile: Option<String>,
    pub at: Position,
    pub rerun: Option<Rerun>,
}

/// Renders and resolves what a new run of `plan` needs; nothing is recorded, so an error here
/// (a missing connection field, a var that does not render) leaves no trace.
pub(super) fn new_run(
    plan: Arc<Plan>,
    engine: &crate::Engine,
    source: Source,
    params: Map<String, Value>,
    opts: &RunOptions,
) -> Result<NewRun, DriverError> {
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let started_at = now_ms();
    let run_info = json!({"id": run_id, "runbook": plan.runbook.name, "actor": opts.actor, "started_at": started_at});
    let (mut base, vars) = base_context(&plan, &engine.expr, &params, None, run_info)?;
    let resolved = resolve_connections(&plan, &mut base, opts.profile.as_ref())?;
    let redactor = super::redact::Redactor::new(base.get("connections"));

    let mut chain = Chain::new(&run_id);
    let mut first = Event::RunStarted {
        runbook: plan.runbook.name.clone(),
        runbook_sha256: source.sha256.clone(),
        params: params.clone(),
        vars: vars.clone(),
        engine_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    redactor.event(&mut first);
    let rec = chain.seal(started_at, &opts.actor, &first);
    let row = RunRow {
        id: run_id.clone(),
        runbook: plan.runbook.name.clone(),
        title: plan.runbook.title.clone(),
        source_path: source.path,
        runbook_sha256: source.sha256,
        runbook_text: source.text,
        params: match &first {
            Event::RunStarted { params, .. } => Value::Object(params.clone()),
            _ => Value::Object(Map::new()),
        },
        status: RunStatus::Running,
        actor: opts.actor.clone(),
        started_at,
        finished_at: None,
        parent_run: source.rerun.as_ref().map(|r| r.parent.clone()),
        kind: if opts.plan {
            crate::store::RunKind::Plan
        } else {
            crate::store::RunKind::Run
        },
        concurrency: plan.runbook.concurrency,
        trigger_key: None,
        request_key: None,
    };
    let mut state = RunState::new(&plan);
    state.apply(&plan, &first);
    let at = Position {
        connections: super::connections::build(&plan, &resolved),
        plan,
        chain,
        state,
        base,
        redactor,
        initiator: opts.actor.clone(),
    };
    Ok(NewRun {
        row,
        first: rec,
        first_event: first,
        resolved,
        profile: opts.profile.as_ref().map(|p| p.name.clone()),
        at,
        rerun: source.rerun,
    })
}

/// The events that follow `run_started` in a new run: the connections it resolved, and what a
/// re-run takes over from its parent.
pub(super) fn opening(
    resolved: Map<String, Value>,
    profile: Option<String>,
    rerun: Option<Rerun>,
) -> Vec<Event> {
    let mut events = Vec::new();
    if !resolved.is_empty() {
        events.push(Event::ConnectionsResolved {
            profile,
            connections: resolved,
        });
    }
    if let Some(r) = rerun {
        events.push(Event::RerunOf {
            parent_run: r.parent,
            from_step: r.from,
        });
        events.extend(r.reused);
    }
    events
}

pub(crate) use super::enqueue::prepare;
pub use super::enqueue::{Queued, enqueue};

/// Starts a new run of `plan` with checked `params`, and drives it to its end, its park, or its
/// cancellation.
pub async fn start(
    plan: Arc<Plan>,
    store: Arc<dyn Store>,
    engine: &crate::Engine,
    source: Source,
    params: Map<String, Value>,
    opts: RunOptions,
    hooks: Hooks,
) -> Result<RunOutcome, DriverError> {
    let new = new_run(plan, engine, source, params, &opts)?;
    let mut d = Driver::new(store, engine, opts, hooks, new.at);
    // Created already leased to this process: one commit, and no moment in which the new run
    // looks orphaned to a worker.
    d.store
        .create_run_leased(
            &new.row,
            std::slice::from_ref(&new.first),
            &d.holder.encode(),
            now_ms() + lease::TTL_MS,
        )
        .await?;
    d.observe(&new.first, &new.first_event);
    for e in opening(new.resolved, new.profile, new.rerun) {
        d.emit(e);
    }
    d.drive_leased().await
}

/// Picks up a stopped or parked run from its journal and drives it on. Completed steps and recorded
/// decisions stand; waits keep their journaled times; steps in flight at the stop are re-run if `read`
/// or `idempotent` and become `unknown` (parking the run for an operator) if `unsafe`, unless
/// `decisions` settle them.
pub async fn resume(
    store: Arc<dyn Store>,
    engine: &crate::Engine,
    run_id: &str,
    decisions: OperatorDecisions,
    newer: Option<String>,
    opts: RunOptions,
    hooks: Hooks,
) -> Result<RunOutcome, DriverError> {
    use super::event::Recovery;
    let stored = StoredRun::load(store.as_ref(), run_id, false).await?;
    if stored.row.kind == crate::store::RunKind::Plan {
        return Err(DriverError::Refused(format!(
            "run {} is a plan: it changed nothing and is not continued; plan again with `runbook plan`",
            stored.row.id
        )));
    }
    if matches!(stored.row.status, RunStatus::Succeeded | RunStatus::Failed) {
        return Err(DriverError::Refused(format!(
            "run {} already {}; there is nothing to resume",
            stored.row.id, stored.row.status
        )));
    }
    super::integrity::verify(&stored.row, &stored.records)
        .map_err(|b| DriverError::Refused(super::integrity::refusal(&stored.row.id, &b)))?;
    let followed = stored.text().to_string();
    let label = stored.label();
    let (run, events) = (&stored.row, &stored.events);
    let (text, switched) = match newer {
        Some(new_text) if new_text != followed => (new_text, true),
        _ => (followed, false),
    };
    let plan = crate::runbook::validate::check(label, &text, &engine.registry, &engine.expr)
        .map_err(|r| {
            DriverError::Setup(format!(
                "the {} runbook does not validate:\n{}",
                if switched { "new" } else { "stored" },
                r.render(false)
            ))
        })?;
    let plan = Arc::new(plan);
    let state = RunState::fold(&plan, events);
    let Some(Event::RunStarted { params, vars, .. }) = events.first() else {
        return Err(DriverError::Refused(format!(
            "run {} has no run_started event",
            run.id
        )));
    };
    // What was in flight, and what the class of that attempt was.
    let mut recoveries = Vec::new();
    for (i, st) in state.steps.iter().enumerate() {
        // A sleep or a wait_until between probes is a journaled wait, not an action in flight: it
        // goes on where it was (a probe in flight is simply sent again).
        let is_wait = matches!(
            plan.steps[i].kind,
            StepKind::Sleep { .. } | StepKind::WaitUntil { .. }
        ) && st.wait_deadline_ms.is_some();
        if st.status != Status::Running || is_wait {
            continue;
        }
        let outcome = if st.class.unwrap_or(SideEffect::Unsafe) == SideEffect::Unsafe {
            Recovery::Unknown
        } else {
            Recovery::Rerun
        };
        recoveries.push((i, st.attempt, outcome));
    }
    // Operator decisions may only settle steps whose outcome is unknown (now or from before).
    let unknown: Vec<&str> = (0..plan.steps.len())
        .filter(|&i| {
            state.steps[i].status == Status::Unknown
                || recoveries
                    .iter()
                    .any(|r| r.0 == i && r.2 == Recovery::Unknown)
        })
        .map(|i| plan.id(i))
        .collect();
    for (step, _) in &decisions {
        if !unknown.contains(&step.as_str()) {
            return Err(DriverError::Refused(if plan.index.contains_key(step) {
                format!(
                    "step `{step}` is not waiting for an operator{}",
                    if unknown.is_empty() {
                        String::new()
                    } else {
                        format!(" (these are: {})", unknown.join(", "))
                    }
                )
            } else {
                format!("run {} has no step `{step}`", run.id)
            }));
        }
    }
    let chain = stored.chain();
    let run_info = json!({"id": run.id, "runbook": plan.runbook.name, "actor": opts.actor, "started_at": run.started_at});
    let (mut base, _) = base_context(&plan, &engine.expr, params, Some(vars), run_info)?;
    // The systems the run talked to before stay the ones it talks to (older journals: resolve now).
    let recorded = stored.connections().cloned();
    let resolved = match recorded {
        Some(mut c) => {
            if c.values().any(super::redact::has_mask) {
                // Credentials written as plain values were masked in the journal: this resume's
                // profile and environment must give them again.
                let fresh = layer_connections(&plan, &base, opts.profile.as_ref())?;
                let missing = fill_masked(&mut c, &fresh);
                if !missing.is_empty() {
                    return Err(DriverError::Refused(format!(
                        "run {} cannot be resumed: the journal does not keep credentials given as plain \
                         values, and this resume gives none for {}; resume with the profile that had them \
                         (--profile NAME) or set {} (and prefer secret(\"NAME\") in the profile, which \
                         is read again at every call)",
                        run.id,
                        missing
                            .iter()
                            .map(|(c, f)| format!("`{c}.{f}`"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        missing
                            .iter()
                            .map(|(c, f)| super::connections::env_key(c, &f.replace(".", "_")))
                            .collect::<Vec<_>>()
                            .join(", "),
                    )));
                }
            }
            base.insert("connections".into(), Value::Object(c.clone()));
            c
        }
        None => resolve_connections(&plan, &mut base, opts.profile.as_ref())?,
    };
    let redactor = super::redact::Redactor::new(base.get("connections"));
    let at = Position {
        connections: super::connections::build(&plan, &resolved),
        plan: Arc::clone(&plan),
        chain,
        state,
        base,
        redactor,
        initiator: run.actor.clone(),
    };
    // A claim made moments ago holds the lease until its expiry, and the driver renews it well
    // before; taking it again would only cost a commit. An old claim is taken again, which also
    // tells whether another process has it since.
    let fresh_claim = opts
        .claimed_at_ms
        .is_some_and(|at| now_ms().saturating_sub(at) < lease::TTL_MS / 3);
    let mut d = Driver::new(store, engine, opts, hooks, at);
    if !fresh_claim {
        lease::take(d.store.as_ref(), &run.id, &d.holder).await?;
    }
    let runbook_sha256 = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    d.emit(Event::RunResumed {
        runbook_sha256,
        runbook_text: switched.then(|| text.clone()),
    });
    for &(i, attempt, outcome) in &recoveries {
        // A command the killed engine left behind: stop the old copy of a step that will run again;
        // leave an unsafe one's to the operator, who is told it still runs.
        let Some(group) = stored.process_left(plan.id(i), attempt) else {
            continue;
        };
        let (action, how) = match outcome {
            Recovery::Rerun => ("stopped", Some(group.stop(STOP_GRACE).await.to_string())),
            Recovery::Unknown => ("left_running", None),
        };
        d.emit(Event::ProcessFound {
            step: plan.id(i).to_string(),
            group,
            action: action.to_string(),
            how,
        });
    }
    // Resuming where nothing was in flight and nothing was decided only says who drives now: it
    // may share the next flush's fsync (a step's intent is fsync'd before it acts, and that
    // commit carries this one to disk with it). What a recovery found and did must be on disk first.
    let durability = if recoveries.is_empty() && decisions.is_empty() {
        Durability::Process
    } else {
        Durability::Power
    };
    for (i, attempt, outcome) in recoveries {
        d.emit(Event::StepRecovered {
            step: plan.id(i).to_string(),
            attempt,
            outcome,
        });
    }
    for (step, action) in decisions {
        let by = d.opts.actor.clone();
        d.emit(Event::OperatorDecided { step, action, by });
    }
    d.flush(durability).await?;
    d.drive_leased().await
}
/// A re-run of `parent` from step `from`, ready to start: the plan of the runbook text the parent
/// followed, its source (with the outcomes reused), and the parent's parameters with `overrides`
/// (raw `NAME=VALUE` values, checked against the declarations).
pub async fn prepare_rerun(
    store: &dyn Store,
    engine: &crate::Engine,
    parent: &str,
    from: &str,
    overrides: &[(String, String)],
) -> Result<(Plan, Source, Map<String, Value>), DriverError> {
    // A re-run executes the parent's runbook text and reuses its outcomes: both must be what the
    // journal vouches for.
    let stored = StoredRun::load(store, parent, true).await?;
    if stored.row.kind == crate::store::RunKind::Plan {
        return Err(DriverError::Refused(format!(
            "run {} is a plan; re-run a real run, or plan again with `runbook plan`",
            stored.row.id
        )));
    }
    let text = stored.text().to_string();
    let label = stored.label().to_string();
    let StoredRun {
        row: parent,
        events,
        ..
    } = stored;
    let plan = crate::runbook::validate::check(&label, &text, &engine.registry, &engine.expr)
        .map_err(|r| {
            DriverError::Refused(format!(
                "the runbook of run {} does not validate any more:\n{}",
                parent.id,
                r.render(false)
            ))
        })?;
    let Some(&from_i) = plan.index.get(from) else {
        let hint = crate::diag::suggest(from, plan.index.keys().map(String::as_str))
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return Err(DriverError::Refused(format!(
            "run {} has no step `{from}`{hint}",
            parent.id
        )));
    };
    // The parent's parameters, with overrides; a value masked as a secret must be given again.
    let Some(Event::RunStarted { params: old, .. }) = events.first() else {
        return Err(DriverError::Refused(format!(
            "run {} has no run_started event",
            parent.id
        )));
    };
    let mut params = old.clone();
    for (k, v) in overrides {
        let decl = plan
            .runbook
            .params
            .iter()
            .find(|d| d.name.name == *k)
            .ok_or_else(|| {
                DriverError::Refused(format!(
                    "--param `{k}`: runbook `{}` has no such parameter",
                    plan.runbook.name
                ))
            })?;
        let value = crate::runbook::load::coerce_param(
            decl.ty,
            decl.choices.as_deref(),
            &Value::String(v.clone()),
        )
        .map_err(|e| DriverError::Refused(format!("--param {k}: {e}")))?;
        params.insert(k.clone(), value);
    }
    if let Some((k, _)) = params
        .iter()
        .find(|(_, v)| v.as_str() == Some(super::redact::MASK))
    {
        return Err(DriverError::Refused(format!(
            "parameter `{k}` of run {} was masked as a secret; give it again with --param {k}=VALUE",
            parent.id
        )));
    }
    let parent_state = RunState::fold(&plan, &events);
    let reused = reuse_before(&plan, &parent_state, &parent.id, from_i);
    let source = Source {
        sha256: hex::encode(sha2::Sha256::digest(text.as_bytes())),
        text,
        path: parent.source_path.clone(),
        rerun: Some(Rerun {
            parent: parent.id.clone(),
            from: from.to_string(),
            reused,
        }),
    };
    Ok((plan, source, params))
}

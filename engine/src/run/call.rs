//! Calling a step's plugin: bounded by its deadline (with a grace to stop work on the far side), or
//! asked what it would change (plans and approval requests).

use super::event::now_ms;
use runbook_steps::{ErrorKind, Registry, Runner, SideEffect, StepContext, StepError};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// How long a plugin call whose deadline passed (or whose run was stopped) may take to stop its work
/// on the far side after its token is cancelled, before it is dropped.
pub(super) const GRACE: Duration = Duration::from_secs(2);

/// One call of a plugin, owning what it needs so it can run as its own task.
pub struct Call {
    pub registry: Arc<Registry>,
    pub uses: String,
    pub inputs: Value,
    pub ctx: StepContext,
}

impl Call {
    /// Runs the plugin. At the deadline the call's token is cancelled and it gets [`GRACE`] to stop
    /// its work; it then fails with kind `timeout` and whatever output it had produced.
    pub async fn run(
        self,
        deadline_ms: Option<i64>,
        timeout_text: Option<String>,
    ) -> Result<Value, StepError> {
        let Call {
            registry,
            uses,
            inputs,
            ctx,
        } = self;
        let Some(Runner::Plugin(plugin)) = registry.get(&uses) else {
            return Err(StepError::new(
                ErrorKind::Input,
                format!("plugin `{uses}` is not available"),
            ));
        };
        let fut = plugin.run(inputs, &ctx);
        let Some(deadline) = deadline_ms else {
            return fut.await;
        };
        tokio::pin!(fut);
        let left =
            Duration::from_millis(u64::try_from(deadline.saturating_sub(now_ms())).unwrap_or(0));
        if let Ok(r) = tokio::time::timeout(left, &mut fut).await {
            return r;
        }
        ctx.cancel.cancel();
        // Whatever it answers while stopping, the attempt ran out of time.
        let _ = tokio::time::timeout(GRACE, &mut fut).await;
        let e = StepError::new(
            ErrorKind::Timeout,
            format!(
                "timed out after {}",
                timeout_text.unwrap_or_else(|| runbook_steps::duration::human(left))
            ),
        );
        Err(match ctx.output.snapshot() {
            Some(partial) => e.with_detail(json!({ "partial_output": partial })),
            None => e,
        })
    }

    /// What the call would change: the plugin's own description (read from the live system where it
    /// can), or, from a plugin that cannot describe its changes, the call it would make.
    pub async fn describe(self, class: SideEffect, approval: bool) -> Result<Value, StepError> {
        let Call {
            registry,
            uses,
            inputs,
            ctx,
        } = self;
        let described = match registry.get(&uses) {
            Some(Runner::Plugin(plugin)) => match plugin.plan(inputs.clone(), &ctx) {
                Some(fut) => Some(fut.await?),
                None => None,
            },
            _ => None,
        };
        let mut plan = described.unwrap_or_else(|| {
            json!({
                "summary": format!(
                    "would call `{uses}` ({}): it cannot describe its changes beforehand",
                    class.as_str()
                ),
                "inputs": inputs,
            })
        });
        if let Value::Object(m) = &mut plan {
            m.insert("class".into(), json!(class.as_str()));
            if approval {
                m.insert("approval_required".into(), json!(true));
            }
        }
        Ok(plan)
    }
}

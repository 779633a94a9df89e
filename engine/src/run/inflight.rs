//! A run's plugin calls in flight: the context each call gets (cancellation, connection, progress
//! watch, process reports), the live view of their progress, and stopping them all when the run is
//! cancelled.

use super::driver::{Done, Driver};
use super::event::now_ms;
use runbook_steps::StepContext;
use serde_json::Value;
use std::sync::Arc;

impl Driver {
    /// The context of one call of step `i`'s plugin: cancelled with the run, with its connection,
    /// its progress watched for the live view and the processes it starts journaled.
    pub(super) fn step_context(&mut self, i: usize) -> StepContext {
        let mut sctx = StepContext::new(self.chain.run_id.clone(), self.plan.id(i));
        sctx.cancel = self.stopping.child_token();
        sctx.connection = self.plan.steps[i]
            .connection
            .as_ref()
            .and_then(|c| self.connections.get(c))
            .cloned();
        sctx.processes = Some(self.processes_tx.clone());
        sctx.actor = Some(self.opts.actor.clone());
        self.watching
            .push((self.plan.id(i).to_string(), sctx.watch_progress()));
        sctx
    }

    /// A call of step `i`'s plugin with these inputs, ready to run (or to describe) as its own task.
    pub(super) fn call_of(&mut self, i: usize, uses: String, inputs: Value) -> super::call::Call {
        super::call::Call {
            registry: Arc::clone(&self.engine.registry),
            uses,
            inputs,
            ctx: self.step_context(i),
        }
    }

    /// Stops every plugin call in flight: their tokens are cancelled, they get the grace a timeout
    /// gets to stop their work on the far side, and are then dropped (which kills their process
    /// groups). A call that succeeded meanwhile is journaled as it ended; the others have no
    /// outcome, for the caller to journal.
    pub(super) async fn stop_steps(&mut self) {
        self.stopping.cancel();
        let grace = tokio::time::sleep(super::call::GRACE);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                joined = self.tasks.join_next() => match joined {
                    Some(Ok(Done::Step(i, attempt, Ok(result)))) => {
                        let now = now_ms();
                        let e = self.prep().succeed(i, attempt, result, now);
                        self.emit_at(e, now);
                    }
                    Some(_) => {}
                    None => break,
                },
                () = &mut grace => {
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
    }

    /// Tells the live view the progress lines that changed, and forgets calls that ended.
    pub(super) fn show_progress(&mut self) {
        let observer = &mut self.observer;
        self.watching
            .retain_mut(|(step, rx)| match rx.has_changed() {
                Ok(true) => {
                    let line = rx.borrow_and_update().clone();
                    observer.on_progress(step, &line);
                    true
                }
                Ok(false) => true,
                Err(_) => false,
            });
    }
}

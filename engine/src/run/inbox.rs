//! How a driver takes answers to its run's approval requests: given in this process (a terminal's
//! prompt, `--yes`), or left in the store's inbox by another (`runbook approve`, the API). Either is
//! checked against the open request and the step's policy before it is journaled.

use super::driver::{Answer, Driver, DriverError};
use super::event::Event;
use super::state::Status;

impl Driver {
    pub(super) fn take_answers_given_here(&mut self) {
        let mut got = Vec::new();
        if let Some(rx) = self.answers.as_mut() {
            while let Ok(a) = rx.try_recv() {
                got.push(a);
            }
        }
        for a in got {
            self.answer(a);
        }
    }

    pub(super) async fn take_answers_given_elsewhere(&mut self) -> Result<(), DriverError> {
        let answers = self.store.approval_answers(&self.chain.run_id).await?;
        for a in answers {
            self.answer(a);
        }
        Ok(())
    }

    /// Journals an answer if it answers an open request and its author may give it; anything else
    /// (a late answer, an answer to an earlier attempt) is ignored.
    pub(super) fn answer(&mut self, a: Answer) {
        let Some(&i) = self.plan.index.get(&a.step) else {
            return;
        };
        let st = &self.state.steps[i];
        if st.status != Status::AwaitingApproval
            || a.attempt
                .is_some_and(|n| Some(n) != st.approval.requested_for)
        {
            return;
        }
        let policy = &self.plan.steps[i].def.approval_policy;
        if let Err(why) = policy.may_answer(&a.by, &self.initiator) {
            self.observer
                .on_progress(&a.step, &format!("answer by {} ignored: {why}", a.by));
            return;
        }
        let event = if a.approve {
            Event::ApprovalGranted {
                step: a.step,
                by: a.by,
                how: a.how,
                comment: a.comment,
            }
        } else {
            Event::ApprovalDenied {
                step: a.step,
                by: a.by,
                how: a.how,
                reason: a.comment.unwrap_or_else(|| "denied".to_string()),
            }
        };
        self.emit(event);
    }
}

//! Telling people what a run found and did: `notify.slack` (an incoming webhook) and `notify.email`
//! (SMTP). Both are `unsafe` (a repeat sends a second message) and plan by showing the exact message.

pub mod email;
pub mod slack;

use crate::StepContext;

/// Gives up a call when the step is cancelled (its deadline, Ctrl-C) instead of letting it run into
/// the engine's grace period; dropping the call closes its connection, leaving nothing behind.
async fn until_cancelled<T>(
    ctx: &StepContext,
    call: impl Future<Output = Result<T, crate::StepError>>,
) -> Result<T, crate::StepError> {
    tokio::select! {
        r = call => r,
        () = ctx.cancel.cancelled() => Err(crate::StepError::new(
            crate::ErrorKind::Timeout,
            "stopped before the server answered",
        )),
    }
}

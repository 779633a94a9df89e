//! What a running step has besides its input: a cancellation token, a progress line, an output sink
//! whose content survives a timeout, and the connection it talks through.

use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How much of a step's output the sink keeps: the most recent bytes, since what a step printed last
/// usually says why it hangs.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// The context of one call of a plugin.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub run_id: String,
    pub step_id: String,
    /// Cancelled when the step must stop (its timeout, Ctrl-C, a lost lease). A plugin whose work runs
    /// on the far side (a remote exec, a log stream) stops it there and returns soon after; the
    /// engine drops the call if it has not returned within a short grace period.
    pub cancel: CancellationToken,
    progress: watch::Sender<String>,
    /// Output as it comes, bounded; kept with the failure when the step times out (for a logs step
    /// the partial output is the result).
    pub output: OutputSink,
    /// The run's connection this step uses (`connection:`, or its plugin family's default).
    pub connection: Option<Arc<crate::connection::Connection>>,
    /// Where a plugin reports a process group it started, for the engine to journal (see
    /// [`crate::process`]).
    pub processes: Option<tokio::sync::mpsc::UnboundedSender<(String, crate::process::Group)>>,
    /// Who the run acts for (`--actor`, `RUNBOOK_ACTOR`, else the OS user), when the engine says:
    /// a plugin that signs what it creates (a silence's `createdBy`) names them.
    pub actor: Option<String>,
}

impl Default for StepContext {
    fn default() -> Self {
        StepContext::new("", "")
    }
}

impl StepContext {
    pub fn new(run_id: impl Into<String>, step_id: impl Into<String>) -> StepContext {
        StepContext {
            run_id: run_id.into(),
            step_id: step_id.into(),
            cancel: CancellationToken::new(),
            progress: watch::Sender::new(String::new()),
            output: OutputSink::default(),
            connection: None,
            processes: None,
            actor: None,
        }
    }

    /// Reports that this step started the process group led by `pid`: the engine journals it, so
    /// that if the engine dies, a resume finds the command still running instead of starting another.
    pub fn report_process(&self, pid: u32) {
        if let Some(tx) = &self.processes {
            // Nobody listening only means nobody journals it (a test, a plan).
            let _ = tx.send((self.step_id.clone(), crate::process::Group::of_leader(pid)));
        }
    }

    /// Reports a progress line (e.g. the last line a command printed) for the live view. Only the
    /// latest line matters, so a newer one replaces an unread older one; never journaled.
    pub fn progress(&self, line: impl Into<String>) {
        self.progress.send_replace(line.into());
    }

    /// Watches this step's progress line.
    pub fn watch_progress(&self) -> watch::Receiver<String> {
        self.progress.subscribe()
    }

    /// The connection this step was given, or an `input` error naming the kind it needs.
    pub fn connection(
        &self,
        kind: &str,
    ) -> Result<&crate::connection::Connection, crate::StepError> {
        self.connection.as_deref().ok_or_else(|| {
            crate::StepError::new(
                crate::ErrorKind::Input,
                format!(
                    "this step needs a `{kind}` connection: declare one under `connections:` (or in a profile) and name it with `connection:`"
                ),
            )
        })
    }
}

/// A bounded record of a step's output: the last [`OUTPUT_LIMIT`] bytes, and how many came before.
#[derive(Debug, Clone, Default)]
pub struct OutputSink(Arc<Mutex<Tail>>);

#[derive(Debug, Default)]
struct Tail {
    buf: std::collections::VecDeque<u8>,
    dropped: u64,
}

impl OutputSink {
    pub fn write(&self, bytes: &[u8]) {
        // A poisoned lock means a writer panicked mid-write; the bytes are still only output.
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = if bytes.len() > OUTPUT_LIMIT {
            t.dropped += (bytes.len() - OUTPUT_LIMIT) as u64;
            &bytes[bytes.len() - OUTPUT_LIMIT..]
        } else {
            bytes
        };
        let over = (t.buf.len() + bytes.len()).saturating_sub(OUTPUT_LIMIT);
        t.buf.drain(..over);
        t.dropped += over as u64;
        t.buf.extend(bytes);
    }

    /// What was kept, as text, saying how much came before it; `None` when nothing was written.
    pub fn snapshot(&self) -> Option<String> {
        let t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if t.buf.is_empty() && t.dropped == 0 {
            return None;
        }
        let (a, b) = t.buf.as_slices();
        let mut bytes = a.to_vec();
        bytes.extend_from_slice(b);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Some(if t.dropped > 0 {
            format!("[... {} earlier bytes]\n{text}", t.dropped)
        } else {
            text
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sink_keeps_the_last_bytes_and_counts_the_rest() {
        let s = OutputSink::default();
        assert_eq!(s.snapshot(), None);
        s.write(b"hello ");
        s.write(b"world");
        assert_eq!(s.snapshot().as_deref(), Some("hello world"));
        let big = vec![b'x'; OUTPUT_LIMIT + 10];
        s.write(&big);
        s.write(b"END");
        let snap = s.snapshot().expect("written");
        assert!(
            snap.starts_with(&format!("[... {} earlier bytes]\n", 11 + 10 + 3)),
            "{}",
            &snap[..40]
        );
        assert!(snap.ends_with("xxEND"));
        assert_eq!(snap.lines().nth(1).map(str::len), Some(OUTPUT_LIMIT));
    }

    #[test]
    fn progress_keeps_only_the_latest_line() {
        let ctx = StepContext::new("r", "s");
        let mut rx = ctx.watch_progress();
        ctx.progress("one");
        ctx.progress("two");
        assert!(rx.has_changed().expect("sender alive"));
        assert_eq!(*rx.borrow_and_update(), "two");
        assert!(!rx.has_changed().expect("sender alive"));
    }
}

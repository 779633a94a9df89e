//! Running a plan: the journal, the state folded from it, the pure scheduler, and the driver that
//! performs its actions.

pub mod alerted;
pub mod approval;
pub mod call;
pub mod cancel;
pub mod connections;
mod context;
pub mod decide;
pub mod driver;
mod enqueue;
pub mod event;
mod inbox;
mod inflight;
pub mod integrity;
pub mod launch;
pub mod lease;
pub mod options;
pub mod redact;
pub mod requests;
pub mod state;
pub mod step;
pub mod view;
pub mod worker;

//! A stored run read back whole: what `show`, `audit`, `plan`'s summary and the HTTP API start from.

use super::RunView;
use crate::run::event::{Event, Record};
use crate::runbook::plan::Plan;
use crate::store::{RunRow, Store, StoreError};

/// A stored run: its row, its records, the plan of the runbook it follows (if that still
/// validates) and the view folded from them.
pub struct Loaded {
    pub run: RunRow,
    pub records: Vec<Record>,
    pub plan: Option<Plan>,
    pub view: RunView,
}

impl Loaded {
    /// Loads run `id` (or a unique prefix of one).
    pub async fn load(store: &dyn Store, id: &str) -> Result<Loaded, StoreError> {
        let run = store.run(id).await?;
        let records = store.events(&run.id).await?;
        let events: Vec<Event> = records.iter().filter_map(|r| r.event().ok()).collect();
        let plan = crate::runbook::validate::check(
            "stored",
            crate::run::event::current_text(&run.runbook_text, &events),
            &runbook_steps::Registry::builtin(),
            &crate::expr::Expr::new(),
        )
        .ok();
        let view = RunView::of_run(&run, &records, plan.as_ref());
        Ok(Loaded {
            run,
            records,
            plan,
            view,
        })
    }
}

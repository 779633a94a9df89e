//! `runbook audit RUN`: the run's header, then every event as a row (when, who, what), then whether
//! the journal verifies.

use super::model::Audited;
use super::when::local;
use crate::cli::show::{Table, header};

pub fn render(a: &Audited) -> String {
    let run = &a.loaded.run;
    let mut out = header(&a.loaded.view, |ms| local(ms, true));
    out.push_str(&format!(
        "  runbook {} (sha256 {})\n",
        run.source_path.as_deref().unwrap_or("-"),
        run.runbook_sha256
    ));
    if let Some(p) = &a.problem {
        out.push_str(&format!(
            "  WARNING: the journal does not verify{}: {}\n",
            p.seq
                .map(|s| format!(" from event {s} on"))
                .unwrap_or_default(),
            p.reason
        ));
    }
    out.push('\n');
    let bad = a.first_unverified();
    let mut t = Table::new(&["#", "TIME", "WHO", "WHAT"]);
    for e in a.timeline() {
        let mark = if bad == Some(e.at.seq) { "!" } else { "" };
        t.row(vec![
            format!("{mark}{}", e.at.seq),
            local(e.at.at_ms, false),
            e.actor,
            e.summary,
        ]);
    }
    out.push_str(&t.render());
    out.push('\n');
    out.push_str(&a.integrity_line());
    out.push('\n');
    out
}

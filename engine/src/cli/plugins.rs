//! `runbook plugins`: the plugins this build knows, or one described.

use super::show::{Table, print_json};
use super::{Failure, Format, exit};
use console::style;
use runbook_steps::{FieldType, Registry};
use serde_json::{Value, json};

/// Plugin names near `word`, best first (at most five): spelled alike, or of the family or the
/// action it names (`kubernetes`, `run`).
fn near_names<'a>(word: &str, names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let word = word.to_ascii_lowercase();
    let mut scored: Vec<(f64, &str)> = names
        .filter_map(|name| {
            let (family, action) = name.split_once('.').unwrap_or((name, ""));
            let score = if family == word || action == word {
                1.0
            } else {
                strsim::jaro_winkler(&word, name)
            };
            (score > 0.8).then_some((score, name))
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored.into_iter().take(5).map(|(_, n)| n).collect()
}

fn type_doc(t: &FieldType) -> String {
    t.describe()
}

pub fn plugins(registry: &Registry, name: Option<&str>, format: Format) -> Result<i32, Failure> {
    let describe = |info: &runbook_steps::PluginInfo| {
        json!({
            "name": info.name,
            "class": info.class.as_str(),
            "summary": info.summary,
            "fields": info.fields.iter().map(|f| json!({"name": f.name, "type": type_doc(&f.ty), "required": f.required, "doc": f.doc})).collect::<Vec<_>>(),
            "exactly_one_of": info.exactly_one_of,
            "result": info.output,
            "example": info.example,
        })
    };
    match name {
        None => {
            if format == Format::Json {
                let all: Vec<Value> = registry.iter().map(|r| describe(r.info())).collect();
                print_json(&all);
                return Ok(exit::OK);
            }
            let mut t = Table::new(&["PLUGIN", "CLASS", "SUMMARY"]);
            for r in registry.iter() {
                let i = r.info();
                let first = i
                    .summary
                    .split(". ")
                    .next()
                    .unwrap_or(i.summary)
                    .trim_end_matches('.');
                t.row(vec![
                    i.name.to_string(),
                    i.class.as_str().to_string(),
                    first.to_string(),
                ]);
            }
            print!("{}", t.render());
            println!("\n`runbook plugins NAME` describes one.");
            Ok(exit::OK)
        }
        Some(n) => {
            let Some(r) = registry.get(n) else {
                if let Some(missing) = registry.not_in_build(n) {
                    return Err(Failure {
                        code: exit::INVALID,
                        message: format!("{missing}; {}", missing.help()),
                    });
                }
                let near = near_names(n, registry.known_names());
                let hint = match near.as_slice() {
                    [] => format!(
                        "; `runbook plugins` lists the {} this build knows",
                        registry.names().count()
                    ),
                    [one] => format!("; did you mean `{one}`?"),
                    many => format!(
                        "; did you mean one of: {}?",
                        many.iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                return Err(Failure {
                    code: exit::INVALID,
                    message: format!("unknown plugin `{n}`{hint}"),
                });
            };
            let i = r.info();
            if format == Format::Json {
                print_json(&describe(i));
                return Ok(exit::OK);
            }
            println!(
                "{} ({})\n\n{}\n\nwith:",
                style(i.name).bold(),
                i.class.as_str(),
                i.summary
            );
            for f in i.fields {
                println!(
                    "  {}{}  {}\n      {}",
                    f.name,
                    if f.required { " (required)" } else { "" },
                    style(type_doc(&f.ty)).dim(),
                    f.doc
                );
            }
            for g in i.exactly_one_of {
                println!("  exactly one of: {}", g.join(", "));
            }
            println!(
                "\nresult: {}\n\nexample:\n{}",
                i.output,
                i.example
                    .lines()
                    .map(|l| format!("  {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            Ok(exit::OK)
        }
    }
}

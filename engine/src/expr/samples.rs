//! Template functions over metric query results (`prometheus.query`, `prometheus.query_range`), so
//! that a condition reads like the question it asks: `min_value(steps.f1.result.samples) < 0.72`,
//! `by_label(steps.f1.result.samples, 'specialist_type').fraud`. Each is also a filter
//! (`samples | min_value`).
//!
//! A sample or point without a number (NaN, ±Inf: it has `value_text` and no `value`) is an error
//! here, naming it: a minimum over a NaN is no minimum, and a decision taken on it would rest on
//! nothing. A runbook that means to leave such samples out says so:
//! `samples | selectattr('value', 'defined')`.

use minijinja::value::ValueKind;
use minijinja::{Environment, Error, ErrorKind, Value};
use std::collections::BTreeMap;

pub fn register(env: &mut Environment<'static>) {
    env.add_function("by_label", by_label);
    env.add_filter("by_label", by_label);
    env.add_function("min_value", min_value);
    env.add_filter("min_value", min_value);
    env.add_function("max_value", max_value);
    env.add_filter("max_value", max_value);
}

fn fail(msg: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg)
}

/// `{ label value: value }` over samples, e.g. `{ 'churn': 0.62, 'fraud': 0.91 }`.
fn by_label(samples: Value, label: String) -> Result<Value, Error> {
    let mut out = BTreeMap::new();
    for sample in items("by_label", &samples)? {
        let labels = sample.get_attr("labels")?;
        if labels.kind() != ValueKind::Map {
            return Err(fail(format!(
                "by_label: `{sample}` is not a sample (it has no `labels`)"
            )));
        }
        let key = labels.get_attr(&label)?;
        let Some(key) = key.as_str() else {
            return Err(fail(format!(
                "by_label: the sample {} has no label `{label}`",
                describe(&sample)
            )));
        };
        let value = number("by_label", &sample, &sample)?;
        if out.insert(key.to_string(), value).is_some() {
            return Err(fail(format!(
                "by_label: more than one sample has {label}=\"{key}\"; aggregate them in the query, e.g. `max by ({label}) (...)`"
            )));
        }
    }
    Ok(Value::from(out))
}

fn min_value(samples: Value) -> Result<Value, Error> {
    extreme("min_value", &samples, std::cmp::Ordering::Less)
}

fn max_value(samples: Value) -> Result<Value, Error> {
    extreme("max_value", &samples, std::cmp::Ordering::Greater)
}

/// The lowest or highest value over samples, the points of series, or plain numbers.
fn extreme(who: &str, samples: &Value, want: std::cmp::Ordering) -> Result<Value, Error> {
    let mut best: Option<(f64, Value)> = None;
    let mut consider = |v: Value| {
        let x = f64::try_from(v.clone()).unwrap_or(f64::NAN);
        if best
            .as_ref()
            .is_none_or(|(b, _)| x.partial_cmp(b) == Some(want))
        {
            best = Some((x, v));
        }
    };
    for item in items(who, samples)? {
        let points = item.get_attr("points")?;
        if points.is_undefined() {
            consider(number(who, &item, &item)?);
        } else {
            for point in items(who, &points)? {
                consider(number(who, &point, &item)?);
            }
        }
    }
    best.map(|(_, v)| v).ok_or_else(|| {
        fail(format!(
            "{who}: there are no samples (the query found nothing; check `samples | length > 0` first, or give the query `require_result: true`)"
        ))
    })
}

fn items(who: &str, v: &Value) -> Result<Vec<Value>, Error> {
    if !matches!(v.kind(), ValueKind::Seq | ValueKind::Iterable) {
        return Err(fail(format!(
            "{who}: expected a list of samples (e.g. `steps.ID.result.samples`), not `{v}`"
        )));
    }
    Ok(v.try_iter()?.collect())
}

/// The number of a sample or point (`owner` is the sample or series it belongs to, for messages),
/// or of a plain number.
fn number(who: &str, item: &Value, owner: &Value) -> Result<Value, Error> {
    if item.kind() == ValueKind::Number {
        return Ok(item.clone());
    }
    if item.kind() == ValueKind::Map {
        let value = item.get_attr("value")?;
        if value.kind() == ValueKind::Number {
            return Ok(value);
        }
        let text = item.get_attr("value_text")?;
        if let Some(text) = text.as_str() {
            let at = match item.get_attr("t")? {
                t if t.is_undefined() || item == owner => String::new(),
                t => format!(" at {t}"),
            };
            return Err(fail(format!(
                "{who}: the sample {}{at} is {text}, not a number; to leave such samples out, select them first: `samples | selectattr('value', 'defined')`",
                describe(owner)
            )));
        }
    }
    Err(fail(format!(
        "{who}: `{item}` is neither a sample with a numeric `value` nor a number"
    )))
}

/// A sample as Prometheus writes it: `name{label="value", ...}`.
fn describe(sample: &Value) -> String {
    let Ok(labels) = sample.get_attr("labels") else {
        return sample.to_string();
    };
    let mut name = String::new();
    let mut pairs = Vec::new();
    if let Ok(keys) = labels.try_iter() {
        for k in keys {
            let v = labels.get_item(&k).unwrap_or_default();
            match k.as_str() {
                Some("__name__") => name = v.to_string(),
                _ => pairs.push(format!("{k}=\"{v}\"")),
            }
        }
    }
    format!("{name}{{{}}}", pairs.join(", "))
}

#[cfg(test)]
mod tests {
    use crate::expr::Expr;
    use serde_json::json;

    /// The result of `prometheus.query runbook_fixture_gauge`: two numbers and a NaN.
    fn ctx() -> minijinja::Value {
        let gauge = |t: &str| json!({ "__name__": "g", "job": "fixture", "specialist_type": t });
        let v = json!({ "steps": {
            "f1": { "result": { "samples": [
                { "labels": gauge("churn"), "t": 10, "value": 0.62 },
                { "labels": gauge("fraud"), "t": 10, "value": 0.91 },
                { "labels": gauge("nan"), "t": 10, "value_text": "NaN" },
            ] } },
            "r": { "result": { "series": [
                { "labels": { "series": "a" }, "points": [{ "t": 1, "value": 3 }, { "t": 2, "value": 1 }] },
                { "labels": { "series": "b" }, "points": [{ "t": 1, "value": 7 }, { "t": 2, "value_text": "+Inf" }] },
            ] } },
            "empty": { "result": { "samples": [] } },
        } });
        minijinja::Value::from(minijinja::value::Serde(&v))
    }

    fn render(text: &str) -> Result<serde_json::Value, String> {
        Expr::new()
            .render_str(&format!("{{{{ {text} }}}}"), &ctx())
            .map_err(|e| e.0)
    }

    const NUMBERS: &str = "steps.f1.result.samples | selectattr('value', 'defined') | list";

    #[test]
    fn by_label_maps_a_label_to_the_value() {
        assert_eq!(
            render(&format!("by_label({NUMBERS}, 'specialist_type')")),
            Ok(json!({ "churn": 0.62, "fraud": 0.91 }))
        );
        assert_eq!(
            render(&format!("({NUMBERS} | by_label('specialist_type')).fraud")),
            Ok(json!(0.91))
        );
        let e = render("by_label(steps.f1.result.samples, 'specialist_type')").expect_err("NaN");
        assert!(
            e.contains(
                "by_label: the sample g{job=\"fixture\", specialist_type=\"nan\"} is NaN, not a number"
            ),
            "{e}"
        );
        let e = render(&format!("by_label({NUMBERS}, 'job')")).expect_err("twice");
        assert!(
            e.contains("more than one sample has job=\"fixture\"; aggregate them in the query"),
            "{e}"
        );
        let e = render(&format!("by_label({NUMBERS}, 'model')")).expect_err("no label");
        assert!(e.contains("has no label `model`"), "{e}");
    }

    #[test]
    fn min_and_max_value_over_samples_series_and_numbers() {
        assert_eq!(render(&format!("min_value({NUMBERS})")), Ok(json!(0.62)));
        assert_eq!(render(&format!("{NUMBERS} | max_value")), Ok(json!(0.91)));
        assert_eq!(render("min_value(steps.r.result.series[:1])"), Ok(json!(1)));
        assert_eq!(render("max_value([3, 9.5, 2])"), Ok(json!(9.5)));
        let e = render("max_value(steps.r.result.series)").expect_err("+Inf");
        assert!(
            e.contains("max_value: the sample {series=\"b\"} at 2 is +Inf, not a number"),
            "{e}"
        );
        let e = render("min_value(steps.empty.result.samples)").expect_err("empty");
        assert!(e.contains("min_value: there are no samples"), "{e}");
        let e = render("min_value(steps.f1.result)").expect_err("not a list");
        assert!(e.contains("expected a list of samples"), "{e}");
    }

    #[test]
    fn a_condition_over_nan_fails_instead_of_deciding() {
        let x = Expr::new();
        let c = ctx();
        for cond in [
            "steps.f1.result.samples[2].value < 0.7",
            "steps.f1.result.samples[2].value > 0.7",
            "min_value(steps.f1.result.samples) < 0.7",
            "steps.f1.result.samples | selectattr('value', 'lt', 0.7) | list | length > 0",
        ] {
            let e = x.eval_condition(cond, &c).expect_err(cond);
            assert!(
                e.0.contains("undefined") || e.0.contains("is NaN, not a number"),
                "{cond}: {e}"
            );
        }
        // What it read is in the message, so the NaN is in plain sight.
        let e = x
            .eval_condition("steps.f1.result.samples[2].value < 0.7", &c)
            .expect_err("NaN");
        assert!(e.0.contains("\"value_text\":\"NaN\""), "{e}");
        // Said explicitly, NaN is decided on.
        let d = x
            .eval_condition(
                "steps.f1.result.samples[2].value is not defined and steps.f1.result.samples[2].value_text == 'NaN'",
                &c,
            )
            .expect("evaluates");
        assert!(d.holds);
        let e = x
            .render_str(
                "{{ steps.f1.result.samples | map(attribute='value') | list }}",
                &c,
            )
            .expect_err("a gap");
        assert!(e.0.contains("has an undefined value at [2]"), "{e}");
    }
}

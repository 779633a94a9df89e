//! The three reads: an aggregation pipeline, a find, a count. Each checks its whole input (types,
//! Extended JSON, a pipeline that would write) before it talks to the server.

use bson::{Document, RawDocumentBuf};
use mongodb::action::Action;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Db, MAX_DOCUMENTS, document, drain, failure, json_kind, max_documents, sort_spec};
use crate::schema::{Field, FieldType};
use crate::{ErrorKind, Plugin, PluginInfo, SideEffect, StepContext, StepError, StepFuture};

const DATABASE: Field = Field::opt(
    "database",
    FieldType::String,
    "The database (default: the connection's `database`, else the URI's /database).",
);
const COLLECTION: Field = Field::req("collection", FieldType::String, "The collection.");
const FILTER: Field = Field::opt(
    "filter",
    FieldType::Map(&FieldType::Any),
    "A query filter, e.g. `{feedback_type: negative, created_at: {$gte: \"{{ ago('1h') }}\"}}`; Extended JSON for BSON types (default: every document).",
);
const MAX_DOCS: Field = Field::opt(
    "max_documents",
    FieldType::Integer,
    "Most documents the answer may have (default 1000; at most 100000); a larger answer fails the step, kind `condition`.",
);

static AGGREGATE: PluginInfo = PluginInfo {
    name: "mongodb.aggregate",
    summary: "Run an aggregation pipeline and return every document it produces. Pipelines that \
              write (`$out`, `$merge`) are refused.",
    class: SideEffect::Read,
    fields: &[
        DATABASE,
        COLLECTION,
        Field::req(
            "pipeline",
            FieldType::List(&FieldType::Map(&FieldType::Any)),
            "The stages, in order, as MongoDB takes them; Extended JSON (`{$date: ...}`, `{$oid: ...}`) for BSON types.",
        ),
        MAX_DOCS,
    ],
    exactly_one_of: &[],
    output: "{ documents: [document], count: integer }",
    example: "collection: ml_feedback\npipeline:\n  - $group: { _id: $feedback_type, count: { $sum: 1 } }",
    connection: Some("mongodb"),
};

static FIND: PluginInfo = PluginInfo {
    name: "mongodb.find",
    summary: "Find the documents that match a filter, with a projection, a sort and a limit.",
    class: SideEffect::Read,
    fields: &[
        DATABASE,
        COLLECTION,
        FILTER,
        Field::opt(
            "projection",
            FieldType::Map(&FieldType::Any),
            "Which fields to return, e.g. `{_id: 0, model: 1}`.",
        ),
        Field::opt(
            "sort",
            FieldType::Any,
            "One field `{created_at: -1}`, or several as a list in order: `[{specialist_type: 1}, {created_at: -1}]`.",
        ),
        Field::opt("limit", FieldType::Integer, "At most this many documents."),
        Field::opt(
            "max_documents",
            FieldType::Integer,
            "Most documents the answer may have (default: `limit` if given, else 1000; at most 100000); a larger answer fails the step, kind `condition`.",
        ),
    ],
    exactly_one_of: &[],
    output: "{ documents: [document], count: integer }",
    example: "collection: ml_feedback\nfilter: { feedback_type: negative }\nsort: { created_at: -1 }\nlimit: 10",
    connection: Some("mongodb"),
};

static COUNT: PluginInfo = PluginInfo {
    name: "mongodb.count",
    summary: "Count the documents that match a filter (`countDocuments`).",
    class: SideEffect::Read,
    fields: &[DATABASE, COLLECTION, FILTER],
    exactly_one_of: &[],
    output: "{ count: integer }",
    example: "collection: ml_feedback\nfilter: { feedback_type: negative }",
    connection: Some("mongodb"),
};

fn parse<T: serde::de::DeserializeOwned>(input: Value) -> Result<T, StepError> {
    serde_json::from_value(input).map_err(StepError::input)
}

fn filter(given: Option<Map<String, Value>>) -> Result<Document, StepError> {
    given.map_or_else(
        || Ok(Document::new()),
        |m| document("filter", Value::Object(m)),
    )
}

/// `db.collection at hosts`, for messages.
fn target(db: &Db, collection: &str) -> String {
    format!("{}.{collection} at {}", db.db.name(), db.hosts)
}

// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AggregateInput {
    database: Option<String>,
    collection: String,
    pipeline: Vec<Value>,
    max_documents: Option<u64>,
}

/// A pipeline ready to send: every stage a BSON document, none that writes.
fn pipeline(stages: Vec<Value>) -> Result<Vec<Document>, StepError> {
    if stages.is_empty() {
        return Err(StepError::new(
            ErrorKind::Input,
            "`pipeline` is empty: give at least one stage",
        ));
    }
    refuse_writes(&stages)?;
    stages
        .into_iter()
        .enumerate()
        .map(|(i, stage)| {
            let field = format!("pipeline[{i}]");
            let doc = match stage {
                // A `$sort` on several fields is written as a list, in order (see `sort_spec`).
                Value::Object(mut m) if m.len() == 1 && m.contains_key("$sort") => {
                    let spec = m.remove("$sort").unwrap_or(Value::Null);
                    let mut d = Document::new();
                    d.insert("$sort", sort_spec(&format!("{field}.$sort"), spec)?);
                    d
                }
                Value::Object(m) if m.len() == 1 => document(&field, Value::Object(m))?,
                Value::Object(m) => {
                    return Err(StepError::new(
                        ErrorKind::Input,
                        format!(
                            "`{field}` must have exactly one key (its stage, e.g. `$match`), not {}",
                            m.len()
                        ),
                    ));
                }
                other => {
                    return Err(StepError::new(
                        ErrorKind::Input,
                        format!("`{field}` must be a mapping, not {}", json_kind(&other)),
                    ));
                }
            };
            if let Some(key) = doc.keys().next().filter(|k| !k.starts_with('$')) {
                return Err(StepError::new(
                    ErrorKind::Input,
                    format!("`{field}`: `{key}` is not a stage (stages start with `$`)"),
                ));
            }
            Ok(doc)
        })
        .collect()
}

/// Refuses a pipeline with a stage that writes: the plugin is `read`.
fn refuse_writes(stages: &[Value]) -> Result<(), StepError> {
    match stages
        .iter()
        .enumerate()
        .find_map(|(i, s)| writes(s).map(|op| (i, op)))
    {
        Some((i, op)) => Err(StepError::new(
            ErrorKind::Input,
            format!(
                "`pipeline[{i}]` uses `{op}`, which writes to a collection: `mongodb.aggregate` only reads"
            ),
        )),
        None => Ok(()),
    }
}

/// The first `$out` or `$merge` anywhere in a stage (a sub-pipeline too).
fn writes(v: &Value) -> Option<&'static str> {
    match v {
        Value::Object(m) => {
            for op in ["$out", "$merge"] {
                if m.contains_key(op) {
                    return Some(op);
                }
            }
            m.values().find_map(writes)
        }
        Value::Array(items) => items.iter().find_map(writes),
        _ => None,
    }
}

pub struct Aggregate;

impl Aggregate {
    async fn call(&self, input: Value, ctx: &StepContext) -> Result<Value, StepError> {
        let i: AggregateInput = parse(input)?;
        let max = max_documents(i.max_documents)?;
        let stages = pipeline(i.pipeline)?;
        let db = Db::of(ctx, i.database.as_deref()).await?;
        let what = format!("aggregate on {}", target(&db, &i.collection));
        ctx.progress(format!("waiting for MongoDB: {what}"));
        let cursor = db
            .db
            .collection::<Document>(&i.collection)
            .aggregate(stages)
            .await
            .map_err(|e| failure(&what, &e))?
            .with_type::<RawDocumentBuf>();
        let docs = drain(cursor, max, &what, ctx).await?;
        Ok(json!({ "count": docs.len(), "documents": docs }))
    }
}

impl Plugin for Aggregate {
    fn info(&self) -> &'static PluginInfo {
        &AGGREGATE
    }

    fn run<'a>(&'a self, input: Value, ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(self.call(input, ctx))
    }

    /// The types, and no stage that writes; the stages' shape is checked when the step runs.
    fn check_input(&self, input: &Value) -> Result<(), StepError> {
        let i: AggregateInput = parse(input.clone())?;
        max_documents(i.max_documents)?;
        refuse_writes(&i.pipeline)
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FindInput {
    database: Option<String>,
    collection: String,
    filter: Option<Map<String, Value>>,
    projection: Option<Map<String, Value>>,
    sort: Option<Value>,
    limit: Option<u64>,
    max_documents: Option<u64>,
}

struct FindQuery {
    filter: Document,
    projection: Option<Document>,
    sort: Option<Document>,
    limit: Option<i64>,
    max: u64,
}

fn find_query(i: &FindInput) -> Result<FindQuery, StepError> {
    let limit = match i.limit {
        Some(0) => {
            return Err(StepError::new(
                ErrorKind::Input,
                "`limit` is 0: leave it out for no limit",
            ));
        }
        Some(n) if n > MAX_DOCUMENTS => {
            return Err(StepError::new(
                ErrorKind::Input,
                format!("`limit` is {n}: give 1 to {MAX_DOCUMENTS}"),
            ));
        }
        other => other,
    };
    Ok(FindQuery {
        filter: filter(i.filter.clone())?,
        projection: i
            .projection
            .clone()
            .map(|p| document("projection", Value::Object(p)))
            .transpose()?,
        sort: i.sort.clone().map(|s| sort_spec("sort", s)).transpose()?,
        // At most MAX_DOCUMENTS, checked above, so it fits.
        limit: limit.map(|n| n as i64),
        max: max_documents(i.max_documents.or(limit))?,
    })
}

pub struct Find;

impl Find {
    async fn call(&self, input: Value, ctx: &StepContext) -> Result<Value, StepError> {
        let i: FindInput = parse(input)?;
        let q = find_query(&i)?;
        let db = Db::of(ctx, i.database.as_deref()).await?;
        let what = format!("find on {}", target(&db, &i.collection));
        ctx.progress(format!("waiting for MongoDB: {what}"));
        let cursor = db
            .db
            .collection::<RawDocumentBuf>(&i.collection)
            .find(q.filter)
            .optional(q.projection, |f, p| f.projection(p))
            .optional(q.sort, |f, s| f.sort(s))
            .optional(q.limit, |f, n| f.limit(n))
            .await
            .map_err(|e| failure(&what, &e))?;
        let docs = drain(cursor, q.max, &what, ctx).await?;
        Ok(json!({ "count": docs.len(), "documents": docs }))
    }
}

impl Plugin for Find {
    fn info(&self) -> &'static PluginInfo {
        &FIND
    }

    fn run<'a>(&'a self, input: Value, ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(self.call(input, ctx))
    }

    fn check_input(&self, input: &Value) -> Result<(), StepError> {
        let i: FindInput = parse(input.clone())?;
        // `sort` is any value to the schema; its shape is checked at run time.
        find_query(&FindInput { sort: None, ..i }).map(drop)
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CountInput {
    database: Option<String>,
    collection: String,
    filter: Option<Map<String, Value>>,
}

pub struct Count;

impl Count {
    async fn call(&self, input: Value, ctx: &StepContext) -> Result<Value, StepError> {
        let i: CountInput = parse(input)?;
        let f = filter(i.filter)?;
        let db = Db::of(ctx, i.database.as_deref()).await?;
        let what = format!("count on {}", target(&db, &i.collection));
        ctx.progress(format!("waiting for MongoDB: {what}"));
        let n = db
            .db
            .collection::<Document>(&i.collection)
            .count_documents(f)
            .await
            .map_err(|e| failure(&what, &e))?;
        Ok(json!({ "count": n }))
    }
}

impl Plugin for Count {
    fn info(&self) -> &'static PluginInfo {
        &COUNT
    }

    fn run<'a>(&'a self, input: Value, ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(self.call(input, ctx))
    }

    fn check_input(&self, input: &Value) -> Result<(), StepError> {
        let i: CountInput = parse(input.clone())?;
        filter(i.filter).map(drop)
    }
}

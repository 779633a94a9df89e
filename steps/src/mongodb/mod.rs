//! MongoDB reads through the official driver: `mongodb.aggregate`, `mongodb.find` and
//! `mongodb.count` (`read.rs`), and what they share here: one driver client per connection, the
//! conversion of runbook values (Extended JSON) into BSON and of BSON results into plain JSON, the
//! bounded draining of a cursor, and the mapping of driver errors to step errors.
//!
//! BSON → JSON, the same for every plugin (docs/runbook-format.md, "MongoDB"): strings, booleans,
//! null, arrays and documents as themselves; int32 and int64 as JSON integers (exact); doubles as
//! numbers, NaN and the infinities as the text `"NaN"`, `"Infinity"`, `"-Infinity"`; decimal128 as
//! its exact decimal text (`"0.10"`), so no digit is lost; ObjectId as its 24-digit hex text; dates as
//! RFC 3339 UTC text with milliseconds (`"2026-11-30T11:40:12.637Z"`), or canonical Extended JSON
//! `{"$date": {"$numberLong": "..."}}` for a date outside years 0-9999; every other type (binary,
//! timestamp, regex, min/max key, JavaScript, ...) as relaxed Extended JSON.

pub mod fixture;
mod read;
#[cfg(test)]
mod tests;

pub use read::{Aggregate, Count, Find};

use std::time::Duration;

use bson::{Bson, Document, RawDocumentBuf};
use mongodb::error::{Error as DriverError, ErrorKind as DriverKind};
use mongodb::options::ClientOptions;
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

use crate::connection::Connection;
use crate::{ErrorKind, StepContext, StepError};

/// Most documents a step keeps by default (`max_documents` changes it, up to [`MAX_DOCUMENTS`]).
pub(crate) const DEFAULT_DOCUMENTS: u64 = 1000;
/// The largest `max_documents`: a result is journaled, so it must stay a reasonable size.
pub(crate) const MAX_DOCUMENTS: u64 = 100_000;
/// Most BSON bytes a step reads from one cursor, whatever the document count.
pub(crate) const MAX_BYTES: usize = 16 << 20;

/// Server selection gives up after this long unless the URI says (`serverSelectionTimeoutMS`): the
/// driver's 30 s default would make "the server is down" wait out most step timeouts.
const SELECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection's driver client, made on the first step that needs it (making one parses the URI,
/// which the driver does asynchronously) and shared by every later step of the run.
#[derive(Default)]
struct Lazy(OnceCell<Server>);

struct Server {
    client: mongodb::Client,
    /// The database named by the URI's path, if any.
    default_database: Option<String>,
    /// The hosts, for messages (the URI itself may hold a password).
    hosts: String,
}

/// A step's view of its connection: the client and the database it reads.
pub(crate) struct Db {
    pub(crate) db: mongodb::Database,
    /// The server's hosts, for messages.
    pub(crate) hosts: String,
}

impl Db {
    /// The database for a step: its own `database`, else the connection's, else the URI's.
    pub(crate) async fn of(ctx: &StepContext, database: Option<&str>) -> Result<Db, StepError> {
        let conn = ctx.connection("mongodb")?;
        let lazy = conn.client(|_| Ok(Lazy::default()))?;
        let server = lazy.0.get_or_try_init(|| connect(conn)).await?;
        let name = database
            .or_else(|| conn.str("database"))
            .or(server.default_database.as_deref())
            .ok_or_else(|| {
                StepError::new(
                    ErrorKind::Input,
                    format!(
                        "no database: give the step a `database`, or connection `{}` a `database` (or a URI with a /database path)",
                        conn.name
                    ),
                )
            })?;
        Ok(Db {
            db: server.client.database(name),
            hosts: server.hosts.clone(),
        })
    }
}

async fn connect(conn: &Connection) -> Result<Server, StepError> {
    let bad = |why: String| {
        StepError::new(
            ErrorKind::Input,
            format!("connection `{}` (mongodb): {why}", conn.name),
        )
    };
    // Read at this moment only: the resolved URI stays inside the driver's options.
    let uri = conn
        .secret("uri")?
        .ok_or_else(|| bad("`uri` is not set".into()))?;
    crate::init_tls();
    let mut opts = ClientOptions::parse(&uri).await.map_err(|e| {
        // The driver's parse errors do not repeat the URI, so a password in it stays out.
        bad(format!("invalid uri: {}", driver_message(&e)))
    })?;
    opts.app_name.get_or_insert_with(|| "runbook".to_string());
    opts.server_selection_timeout
        .get_or_insert(SELECTION_TIMEOUT);
    let hosts = opts
        .hosts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let default_database = opts.default_database.clone();
    let client = mongodb::Client::with_options(opts)
        .map_err(|e| bad(format!("cannot set up the client: {}", driver_message(&e))))?;
    Ok(Server {
        client,
        default_database,
        hosts,
    })
}

/// A driver failure as a step error. `what` says what was asked and of whom (`aggregate on
/// ops.feedback at 127.0.0.1:27017`); the server's own message is quoted.
pub(crate) fn failure(what: &str, e: &DriverError) -> StepError {
    let (kind, detail) = match &*e.kind {
        DriverKind::Command(c) => (
            ErrorKind::Status,
            Some(json!({ "code": c.code, "code_name": c.code_name, "message": c.message })),
        ),
        DriverKind::Authentication { .. } => (ErrorKind::Status, None),
        DriverKind::ServerSelection { .. }
        | DriverKind::Io(_)
        | DriverKind::ConnectionPoolCleared { .. }
        | DriverKind::DnsResolve { .. }
        | DriverKind::InvalidTlsConfig { .. } => (ErrorKind::Connect, None),
        DriverKind::InvalidArgument { .. } => (ErrorKind::Input, None),
        DriverKind::BsonDeserialization(_) | DriverKind::InvalidResponse { .. } => {
            (ErrorKind::Parse, None)
        }
        _ => (ErrorKind::Other, None),
    };
    let err = StepError::new(kind, format!("MongoDB: {what}: {}", driver_message(e)));
    match detail {
        Some(d) => err.with_detail(d),
        None => err,
    }
}

/// The driver's message without its wrapping: a server error reads `Command failed: Error 40324
/// (Location40324): Unrecognized pipeline stage name: '$bogus'`, as the server put it.
fn driver_message(e: &DriverError) -> String {
    match &*e.kind {
        DriverKind::Command(c) => format!(
            "the server answered error {} ({}): {}",
            c.code, c.code_name, c.message
        ),
        DriverKind::Authentication { message, .. } => format!("authentication failed: {message}"),
        DriverKind::ServerSelection { message, .. } => {
            format!("no server could be reached: {message}")
        }
        DriverKind::InvalidArgument { message, .. } => message.clone(),
        _ => e.kind.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Runbook values → BSON.

/// A runbook value (a mapping, with Extended JSON such as `{"$date": "..."}` or `{"$oid": "..."}`
/// where a BSON type is meant) as a BSON document; `field` names it in errors.
pub(crate) fn document(field: &str, value: Value) -> Result<Document, StepError> {
    match value {
        Value::Object(map) => Document::try_from(map).map_err(|e| {
            StepError::new(
                ErrorKind::Input,
                format!("`{field}` is not valid Extended JSON: {e}"),
            )
        }),
        other => Err(StepError::new(
            ErrorKind::Input,
            format!("`{field}` must be a mapping, not {}", json_kind(&other)),
        )),
    }
}

/// A sort specification. Runbook mappings do not keep their keys' order, so a sort on several
/// fields is written as a list of one-key mappings, in order; a single mapping may name one field.
pub(crate) fn sort_spec(field: &str, value: Value) -> Result<Document, StepError> {
    let parts = match value {
        Value::Array(items) => items,
        Value::Object(map) if map.len() > 1 => {
            let keys: Vec<&str> = map.keys().map(String::as_str).collect();
            return Err(StepError::new(
                ErrorKind::Input,
                format!(
                    "`{field}` sorts on several fields ({}) in one mapping, whose key order a runbook does not keep: write a list of one-key mappings in order, e.g. [{{{}: 1}}, {{{}: 1}}]",
                    keys.join(", "),
                    keys[0],
                    keys[1]
                ),
            ));
        }
        other => vec![other],
    };
    let mut spec = Document::new();
    for (i, part) in parts.into_iter().enumerate() {
        let one = document(&format!("{field}[{i}]"), part)?;
        if one.len() != 1 {
            return Err(StepError::new(
                ErrorKind::Input,
                format!("`{field}[{i}]` must name exactly one field"),
            ));
        }
        spec.extend(one);
    }
    Ok(spec)
}

pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

// ---------------------------------------------------------------------------------------------
// BSON results → JSON.

/// A BSON value as the plugins' results show it (the mapping in this module's header).
pub(crate) fn to_json(b: Bson) -> Value {
    match b {
        Bson::Double(f) if f.is_nan() => json!("NaN"),
        Bson::Double(f) if f.is_infinite() => {
            json!(if f > 0.0 { "Infinity" } else { "-Infinity" })
        }
        Bson::Double(f) => json!(f),
        Bson::Int32(i) => json!(i),
        Bson::Int64(i) => json!(i),
        Bson::String(s) => Value::String(s),
        Bson::Boolean(v) => Value::Bool(v),
        Bson::Null => Value::Null,
        Bson::Decimal128(d) => Value::String(d.to_string()),
        Bson::ObjectId(o) => Value::String(o.to_hex()),
        Bson::DateTime(d) => match d.try_to_rfc3339_string() {
            Ok(text) => Value::String(text),
            Err(_) => Bson::DateTime(d).into_canonical_extjson(),
        },
        Bson::Array(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Bson::Document(doc) => doc_to_json(doc),
        other => other.into_relaxed_extjson(),
    }
}

pub(crate) fn doc_to_json(doc: Document) -> Value {
    Value::Object(
        doc.into_iter()
            .map(|(k, v)| (k, to_json(v)))
            .collect::<Map<_, _>>(),
    )
}

/// Reads a cursor to its end, keeping at most `max` documents and [`MAX_BYTES`] bytes: past either,
/// the step fails (kind `condition`) rather than decide on part of the answer. Dropping the cursor
/// (done, failed or cancelled) makes the driver kill it on the server.
pub(crate) async fn drain(
    mut cursor: mongodb::Cursor<RawDocumentBuf>,
    max: u64,
    what: &str,
    ctx: &StepContext,
) -> Result<Vec<Value>, StepError> {
    let mut docs = Vec::new();
    let mut bytes = 0usize;
    while cursor.advance().await.map_err(|e| failure(what, &e))? {
        let raw = cursor.current();
        bytes += raw.as_bytes().len();
        if docs.len() as u64 >= max || bytes > MAX_BYTES {
            let why = if bytes > MAX_BYTES {
                format!("more than {} MiB", MAX_BYTES >> 20)
            } else {
                format!("more than {max} documents")
            };
            return Err(StepError::new(
                ErrorKind::Condition,
                format!(
                    "MongoDB: {what}: the answer has {why}: narrow it (a filter, `limit`, a `$limit` stage) or raise `max_documents` (at most {MAX_DOCUMENTS})"
                ),
            ));
        }
        let doc = Document::try_from(raw).map_err(|e| {
            StepError::new(
                ErrorKind::Parse,
                format!("MongoDB: {what}: a document could not be read: {e}"),
            )
        })?;
        docs.push(doc_to_json(doc));
        if docs.len() % 1000 == 0 {
            ctx.progress(format!("{what}: {} documents so far", docs.len()));
        }
    }
    Ok(docs)
}

/// `max_documents` as given, checked.
pub(crate) fn max_documents(given: Option<u64>) -> Result<u64, StepError> {
    match given {
        None => Ok(DEFAULT_DOCUMENTS),
        Some(n) if (1..=MAX_DOCUMENTS).contains(&n) => Ok(n),
        Some(n) => Err(StepError::new(
            ErrorKind::Input,
            format!("`max_documents` is {n}: give 1 to {MAX_DOCUMENTS}"),
        )),
    }
}

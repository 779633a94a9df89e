//! The client of an `http` connection: its headers and credentials, pooled across the run's steps.

use reqwest::RequestBuilder;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::connection::Connection;
use crate::web::client as build_client;
use crate::{ErrorKind, StepError};

/// A header as given in a runbook, checked here rather than left to `send`, whose builder error would
/// not say which header is wrong.
pub fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), StepError> {
    let n = HeaderName::from_bytes(name.as_bytes()).map_err(|e| {
        StepError::new(
            ErrorKind::Input,
            format!("invalid header name `{name}`: {e}"),
        )
    })?;
    let v = HeaderValue::from_str(value).map_err(|e| {
        StepError::new(
            ErrorKind::Input,
            format!("invalid value for header `{name}`: {e}"),
        )
    })?;
    Ok((n, v))
}

/// What every request through one `http` connection shares: a pooled client, the connection's
/// headers and its credentials. Built by the first step that uses the connection, which is when its
/// secrets are read; kept for the run's later steps.
pub struct Client {
    http: reqwest::Client,
    headers: HeaderMap,
    auth: Option<Auth>,
}

/// Credentials, held only in memory; never printed (no `Debug`).
enum Auth {
    Bearer(String),
    Basic { username: String, password: String },
}

impl Client {
    /// A client for requests made without a connection.
    pub fn plain() -> Result<Client, StepError> {
        Ok(Client {
            http: build_client()?,
            headers: HeaderMap::new(),
            auth: None,
        })
    }

    /// The client of `conn`: its `headers`, and `bearer_token` or `basic_auth`.
    pub fn of(conn: &Connection) -> Result<Client, StepError> {
        let mut headers = HeaderMap::new();
        match conn.get("headers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (name, value) in m {
                    let Some(text) = value.as_str() else {
                        return Err(conn.error(format!("header `{name}` must be a string")));
                    };
                    let (n, v) = header(name, text).map_err(|e| conn.error(e))?;
                    headers.insert(n, v);
                }
            }
            Some(_) => return Err(conn.error("`headers` must be a mapping of name to value")),
        }
        let bearer = conn.secret("bearer_token")?.map(Auth::Bearer);
        let basic = match conn.get("basic_auth") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => {
                let field = |name: &str| {
                    m.get(name).and_then(Value::as_str).ok_or_else(|| {
                        conn.error(format!("`basic_auth` needs `{name}` (a string)"))
                    })
                };
                Some(Auth::Basic {
                    username: field("username")?.to_string(),
                    password: conn.reveal(field("password")?)?,
                })
            }
            Some(_) => {
                return Err(conn.error("`basic_auth` must be a mapping { username, password }"));
            }
        };
        let auth = match (bearer, basic) {
            (Some(_), Some(_)) => {
                return Err(conn.error("give `bearer_token` or `basic_auth`, not both"));
            }
            (a, b) => a.or(b),
        };
        Ok(Client {
            http: build_client()?,
            headers,
            auth,
        })
    }

    /// A request with the connection's headers, then the step's own (which replace them, name by
    /// name), then the connection's credentials unless the step sent an `Authorization` of its own.
    pub fn request(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        step_headers: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Result<RequestBuilder, StepError> {
        let mut headers = self.headers.clone();
        for (name, value) in step_headers.into_iter().flatten() {
            let (n, v) = header(name, value)?;
            headers.insert(n, v);
        }
        let own_auth = headers.contains_key(AUTHORIZATION);
        let builder = self.http.request(method, url).headers(headers);
        Ok(match &self.auth {
            _ if own_auth => builder,
            None => builder,
            Some(Auth::Bearer(token)) => builder.bearer_auth(token),
            Some(Auth::Basic { username, password }) => {
                builder.basic_auth(username, Some(password))
            }
        })
    }
}

/// How `conn` authenticates, for a plan: the scheme and the user, never the secret.
pub fn describe_auth(conn: &Connection) -> Option<String> {
    if conn.get("bearer_token").is_some_and(|v| !v.is_null()) {
        return Some(format!("bearer token of connection `{}`", conn.name));
    }
    let user = conn.get("basic_auth")?.get("username")?.as_str()?;
    Some(format!("basic as `{user}` (connection `{}`)", conn.name))
}

//! The HTTP plumbing plugins share: how a client is built, how a failure to get an answer reads, and
//! [`Api`], one JSON API behind a connection (`url` and `bearer_token`) with a client kept per
//! connection, a progress line while it waits and a prompt stop when the step is cancelled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode, Url};

use crate::connection::Connection;
use crate::{ErrorKind, StepContext, StepError};

/// The most an API answer may be: it is parsed whole and may end up in the journal.
const ANSWER_LIMIT: usize = 32 << 20;

/// A new HTTP client with the settings every plugin uses.
pub fn client() -> Result<reqwest::Client, StepError> {
    // reqwest is built without a crypto provider of its own and panics without one.
    crate::init_tls();
    reqwest::Client::builder()
        // Only the connect phase is bounded here: the step's own `timeout` bounds the whole
        // request, and the engine enforces it by dropping the future.
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("runbook/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            StepError::new(
                ErrorKind::Other,
                format!("cannot set up the HTTP client: {}", cause_chain(&e)),
            )
        })
}

/// The URL as messages show it: a password in the userinfo is masked, since messages end up in the
/// journal and on terminals.
pub fn redacted(url: &Url) -> String {
    if url.password().is_some() {
        let mut masked = url.clone();
        // Only fails for URLs that cannot have credentials, which this one has.
        let _ = masked.set_password(Some("***"));
        masked.to_string()
    } else {
        url.to_string()
    }
}

/// Every message in the error's source chain, joined with `: `, skipping the URL reqwest appends
/// (the caller names it once) and messages that only repeat the previous one. reqwest's own message
/// is a generic category ("error sending request"); the useful part ("Connection refused", a DNS or
/// certificate error) is down the chain.
pub fn cause_chain(err: &reqwest::Error) -> String {
    let top = err.to_string();
    let top = match err.url() {
        Some(url) => top
            .strip_suffix(&format!(" for url ({url})"))
            .map(str::to_owned)
            .unwrap_or(top),
        None => top,
    };
    crate::error_chain(top, std::error::Error::source(err))
}

/// Quotes at most `max` characters of `text`.
pub fn head_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

pub fn describe_status(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// A JSON API behind a connection of kind `prometheus` or `alertmanager` (fields `url`,
/// `bearer_token`). Built once per connection per run ([`Connection::client`]), so every step
/// through that connection shares one pool of TCP connections.
pub struct Api {
    http: reqwest::Client,
    base: Url,
    /// What the messages call the far side, e.g. `Prometheus`.
    service: &'static str,
}

/// The far side's answer, read whole.
pub struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
    /// The request's URL as messages show it.
    pub url: String,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A few hundred characters of the body for a message; the whole body belongs in the detail.
    pub fn quoted(&self) -> String {
        match self.text().trim() {
            "" => "the body is empty".to_owned(),
            text => format!("body: {}", head_chars(text, 300)),
        }
    }
}

impl Api {
    /// The API of `conn`, built the first time a step of the run asks for it.
    pub fn of(conn: &Connection, service: &'static str) -> Result<Arc<Api>, StepError> {
        conn.client(|c| {
            let raw = c.str("url").ok_or_else(|| {
                StepError::new(
                    ErrorKind::Input,
                    format!("connection `{}` has no `url`", c.name),
                )
            })?;
            let base = Url::parse(raw)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
                .ok_or_else(|| {
                    StepError::new(
                        ErrorKind::Input,
                        format!(
                            "connection `{}`: `url` `{raw}` is not an http:// or https:// URL",
                            c.name
                        ),
                    )
                })?;
            Ok(Api {
                http: client()?,
                base,
                service,
            })
        })
    }

    /// The URL of `path` (segments, e.g. `["api", "v1", "query"]`) under the base URL, which may
    /// carry a path prefix of its own (`http://host/prometheus`).
    pub fn endpoint(&self, path: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(path);
        }
        url
    }

    /// Sends one request and reads the whole answer, whatever its status. The bearer token is read
    /// now, so it never enters an input or an event. While it waits, the step's progress line says
    /// what for and how long; when the step is cancelled it stops at once with kind `timeout`
    /// (dropping the request closes its connection, so nothing is left behind).
    pub async fn send(
        &self,
        ctx: &StepContext,
        conn: &Connection,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
        what: &str,
    ) -> Result<Answer, StepError> {
        let shown = redacted(&url);
        let mut request = self.http.request(method.clone(), url);
        if let Some(token) = conn.secret("bearer_token")? {
            request = request.bearer_auth(token);
        }
        if let Some(json) = body {
            request = request.json(json);
        }
        let service = self.service;
        let fail = |e: reqwest::Error| {
            let kind = if e.is_builder() {
                ErrorKind::Input
            } else {
                ErrorKind::Connect
            };
            StepError::new(
                kind,
                format!("{service} at {shown}: {method} failed: {}", cause_chain(&e)),
            )
        };
        let exchange = async {
            let mut response = request.send().await.map_err(fail)?;
            let status = response.status();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(fail)? {
                if body.len() + chunk.len() > ANSWER_LIMIT {
                    return Err(StepError::new(
                        ErrorKind::Parse,
                        format!(
                            "{service} at {shown}: the answer is larger than {} MiB; ask for less",
                            ANSWER_LIMIT >> 20
                        ),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok((status, body))
        };
        tokio::pin!(exchange);
        let started = Instant::now();
        // Said before the first poll, not by the first tick: `select!` may find the exchange done
        // before it ever polls the ticker, and the line must name the call either way.
        ctx.progress(format!("{service}: {what}"));
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        loop {
            tokio::select! {
                done = &mut exchange => {
                    let (status, body) = done?;
                    return Ok(Answer { status, body, url: shown.clone() });
                }
                _ = ctx.cancel.cancelled() => {
                    return Err(StepError::new(
                        ErrorKind::Timeout,
                        format!(
                            "{service} at {shown}: stopped after {} without an answer",
                            crate::duration::human(started.elapsed())
                        ),
                    ));
                }
                _ = tick.tick() => {
                    let waited = started.elapsed();
                    ctx.progress(format!("{service}: {what} (waiting {}s)", waited.as_secs()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_masked_in_messages() {
        let url = super::Url::parse("https://ops:hunter2@example.com/x").expect("valid url");
        assert_eq!(super::redacted(&url), "https://ops:***@example.com/x");
    }

    #[test]
    fn endpoints_keep_the_base_path() {
        let api = |base: &str| super::Api {
            http: super::client().expect("client"),
            base: super::Url::parse(base).expect("url"),
            service: "x",
        };
        for (base, want) in [
            ("http://h:9090", "http://h:9090/api/v1/query"),
            ("http://h:9090/", "http://h:9090/api/v1/query"),
            ("http://h/prom/", "http://h/prom/api/v1/query"),
            ("http://h/prom?x=1", "http://h/prom/api/v1/query"),
        ] {
            assert_eq!(
                api(base).endpoint(&["api", "v1", "query"]).as_str(),
                want,
                "{base}"
            );
        }
    }
}

//! `notify.email`: one e-mail through the step's `smtp` connection (lettre: STARTTLS, TLS or plain;
//! AUTH PLAIN or LOGIN with the connection's password, read when the first mail is sent).

use std::sync::Arc;

use lettre::message::{Mailbox, Message, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::{Value, json};

use crate::connection::Connection;
use crate::schema::{Field, FieldType};
use crate::{ErrorKind, Plugin, PluginInfo, SideEffect, StepContext, StepError, StepFuture};

static INFO: PluginInfo = PluginInfo {
    name: "notify.email",
    summary: "Send an e-mail through the step's SMTP connection: plain text, optionally with an HTML \
              version of it.",
    class: SideEffect::Unsafe,
    fields: &[
        Field::req(
            "to",
            FieldType::List(&FieldType::String),
            "Recipients: `ops@example.com` or `Ops <ops@example.com>`.",
        ),
        Field::opt(
            "cc",
            FieldType::List(&FieldType::String),
            "Copied recipients.",
        ),
        Field::req("subject", FieldType::String, "The subject line."),
        Field::req("body", FieldType::String, "The message, as plain text."),
        Field::opt(
            "html",
            FieldType::String,
            "The same message as HTML: sent with `body` as its alternative, and shown instead of it by mail clients that can.",
        ),
    ],
    exactly_one_of: &[],
    output: "{ message_id: text, to: [address], cc: [address], response: text (the server's reply to the message, e.g. `250 OK`) }",
    example: "to: [ml-oncall@example.com]\n\
              subject: \"fraud_specialist rolled back to version 6\"\n\
              body: \"F1 fell to 0.61 after version 7; the runbook rolled back.\"",
    connection: Some("smtp"),
};

/// SMTP replies that refuse a login (RFC 4954): temporary failure, authentication required, mechanism
/// too weak, credentials invalid, encryption required.
const AUTH_REFUSED: [&str; 5] = ["454", "530", "534", "535", "538"];

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    to: Vec<String>,
    cc: Option<Vec<String>>,
    subject: String,
    body: String,
    html: Option<String>,
}

pub struct Email;

/// A connection's SMTP transport, with what messages say about it. The password is read once, when
/// the first mail of the run is sent.
struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    server: String,
    user: Option<String>,
}

/// Where the connection sends: host, port and TLS mode, as messages name it.
struct Server {
    host: String,
    port: u16,
    tls: &'static str,
}

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} ({})", self.host, self.port, self.tls)
    }
}

fn server(c: &Connection) -> Result<Server, StepError> {
    let host = c
        .str("host")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| c.error("`host` is not set"))?;
    let tls = match c.str("tls").unwrap_or("starttls") {
        "starttls" => "starttls",
        "tls" => "tls",
        "none" => "none",
        other => {
            return Err(c.error(format!("`tls` is `{other}`; use starttls, tls or none")));
        }
    };
    let port = match c.get("port") {
        None | Some(Value::Null) => match tls {
            "tls" => 465,
            "none" => 25,
            _ => 587,
        },
        // From the environment a port is text.
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| c.error(format!("`port` is {v}, not a port number")))?,
    };
    Ok(Server {
        host: host.to_string(),
        port,
        tls,
    })
}

fn from(c: &Connection) -> Result<Mailbox, StepError> {
    let from = c.str("from").ok_or_else(|| c.error("`from` is not set"))?;
    from.parse()
        .map_err(|e| c.error(format!("`from`: `{from}` is not an address: {e}")))
}

fn mailer(conn: &Connection) -> Result<Arc<Mailer>, StepError> {
    conn.client(|c| {
        let s = server(c)?;
        let tls_params = || {
            TlsParameters::new(s.host.clone()).map_err(|e| {
                StepError::new(
                    ErrorKind::Other,
                    format!(
                        "connection `{}`: cannot set up TLS for `{}`: {e}",
                        c.name, s.host
                    ),
                )
            })
        };
        let tls = match s.tls {
            "tls" => Tls::Wrapper(tls_params()?),
            "none" => Tls::None,
            _ => Tls::Required(tls_params()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host)
            .port(s.port)
            .tls(tls);
        let user = c.str("username").map(str::to_string);
        match (&user, c.secret("password")?) {
            (Some(u), Some(p)) => builder = builder.credentials(Credentials::new(u.clone(), p)),
            (None, None) => {}
            (Some(_), None) => return Err(c.error("`username` is set but `password` is not")),
            (None, Some(_)) => return Err(c.error("`password` is set but `username` is not")),
        }
        Ok(Mailer {
            transport: builder.build(),
            from: from(c)?,
            server: s.to_string(),
            user,
        })
    })
}

impl Plugin for Email {
    fn info(&self) -> &'static PluginInfo {
        &INFO
    }

    fn run<'a>(&'a self, input: Value, ctx: &'a StepContext) -> StepFuture<'a> {
        Box::pin(async move {
            let i: Input = serde_json::from_value(input).map_err(StepError::input)?;
            let conn = ctx.connection("smtp")?;
            let m = mailer(conn)?;
            let message = message(&i, &m.from)?;
            let id = message_id(&message);
            ctx.progress(format!(
                "sending to {} through {}",
                i.to.join(", "),
                m.server
            ));
            let sent = super::until_cancelled(ctx, async {
                m.transport
                    .send(message)
                    .await
                    .map_err(|e| smtp_error(&m, &e))
            })
            .await?;
            let reply = sent.message().collect::<Vec<_>>().join(" ");
            Ok(json!({
                "message_id": id,
                "to": i.to,
                "cc": i.cc.unwrap_or_default(),
                "response": format!("{} {reply}", sent.code()).trim_end().to_string(),
            }))
        })
    }

    fn plan<'a>(&'a self, input: Value, ctx: &'a StepContext) -> Option<StepFuture<'a>> {
        Some(Box::pin(async move {
            let i: Input = serde_json::from_value(input).map_err(StepError::input)?;
            let conn = ctx.connection("smtp")?;
            let server = server(conn)?;
            let message = message(&i, &from(conn)?)?;
            // The headers as they would be sent, then the text as written (not transfer-encoded).
            let headers = message.headers().to_string().replace("\r\n", "\n");
            let mut recipients = i.to.join(", ");
            if let Some(cc) = i.cc.as_ref().filter(|cc| !cc.is_empty()) {
                recipients.push_str(&format!(" (cc {})", cc.join(", ")));
            }
            let mut plan = json!({
                "summary": format!("would e-mail {recipients}: {}", i.subject),
                "server": server.to_string(),
                "message": format!("{headers}\n{}", i.body),
            });
            if let Some(html) = &i.html {
                plan["html"] = Value::String(html.clone());
            }
            Ok(plan)
        }))
    }

    fn check_input(&self, input: &Value) -> Result<(), StepError> {
        crate::check_as::<Input>(input)
    }
}

fn message(i: &Input, from: &Mailbox) -> Result<Message, StepError> {
    if i.to.is_empty() {
        return Err(StepError::new(
            ErrorKind::Input,
            "`to` is empty: give at least one recipient",
        ));
    }
    let mut b = Message::builder()
        .from(from.clone())
        .subject(i.subject.clone())
        .message_id(None)
        .user_agent(concat!("runbook/", env!("CARGO_PKG_VERSION")).to_string());
    for (n, to) in i.to.iter().enumerate() {
        b = b.to(address("to", n, to)?);
    }
    for (n, cc) in i.cc.iter().flatten().enumerate() {
        b = b.cc(address("cc", n, cc)?);
    }
    let built = match &i.html {
        None => b.singlepart(SinglePart::plain(i.body.clone())),
        Some(html) => b.multipart(MultiPart::alternative_plain_html(
            i.body.clone(),
            html.clone(),
        )),
    };
    built.map_err(|e| StepError::new(ErrorKind::Input, format!("cannot build the message: {e}")))
}

fn address(field: &str, n: usize, text: &str) -> Result<Mailbox, StepError> {
    text.parse().map_err(|e| {
        StepError::new(
            ErrorKind::Input,
            format!("`{field}[{n}]`: `{text}` is not an address: {e}"),
        )
    })
}

fn message_id(m: &Message) -> Option<String> {
    m.headers().get_raw("Message-ID").map(str::to_string)
}

/// A failed send, in the terms of what went wrong: the server refused (kind `status`, its reply
/// quoted), or it could not be reached or spoken to (kind `connect`).
fn smtp_error(m: &Mailer, e: &lettre::transport::smtp::Error) -> StepError {
    let server = &m.server;
    if let Some(code) = e.status() {
        let code = code.to_string();
        let said = std::error::Error::source(e).map(ToString::to_string);
        let reply = format!("{code} {}", said.unwrap_or_default());
        let what = match &m.user {
            Some(user) if AUTH_REFUSED.contains(&code.as_str()) => {
                format!("refused the login of `{user}`")
            }
            _ => "refused the message".to_string(),
        };
        return StepError::new(
            ErrorKind::Status,
            format!("SMTP server {server} {what}: {}", reply.trim_end()),
        );
    }
    let chain = crate::error_chain(e.to_string(), std::error::Error::source(e));
    if e.is_timeout() {
        return StepError::new(ErrorKind::Timeout, format!("SMTP server {server}: {chain}"));
    }
    if e.is_client() {
        // The server lacks what the connection asks for (STARTTLS, an AUTH mechanism lettre has).
        let hint = if chain.contains("STARTTLS") {
            "; with a local relay that has no TLS, set the connection's `tls: none`"
        } else if chain.contains("authentication mechanism") {
            "; it offers no AUTH PLAIN or LOGIN on this connection (many servers offer AUTH only over TLS)"
        } else {
            ""
        };
        return StepError::new(
            ErrorKind::Status,
            format!("SMTP server {server}: {chain}{hint}"),
        );
    }
    StepError::new(
        ErrorKind::Connect,
        format!("cannot talk to SMTP server {server}: {chain}"),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    use super::Email;
    use crate::connection::{Connection, kind};
    use crate::testkit::{Harness, err, file_in, marker, ok, service};
    use crate::{ErrorKind, Plugin};

    fn smtp(fields: Value) -> Connection {
        let Value::Object(fields) = fields else {
            panic!("fields are a mapping")
        };
        Connection::new("mail", kind("smtp").expect("kind"), fields)
    }

    /// The contract's sink as a connection: plain SMTP, any login accepted.
    fn sink(addr: &str) -> Connection {
        let (host, port) = addr.rsplit_once(':').expect("host:port");
        smtp(json!({
            "host": host, "port": port.parse::<u16>().expect("port"), "tls": "none",
            "username": "runbook", "password": "pw-4c1d-77aa",
            "from": "Runbook <runbook@example.test>",
        }))
    }

    /// The message in the Maildir whose text contains `marker`, line ends made `\n`.
    fn delivered(maildir: &str, marker: &str) -> String {
        let new = std::path::Path::new(maildir).join("new");
        file_in(&new, |t| t.contains(marker)).replace("\r\n", "\n")
    }

    /// A header's value (unfolded) from a message's text.
    fn header(message: &str, name: &str) -> Option<String> {
        let head = message.split("\n\n").next().unwrap_or("");
        let mut value: Option<String> = None;
        for line in head.lines() {
            if let Some(v) = &mut value {
                if line.starts_with([' ', '\t']) {
                    v.push_str(line);
                    continue;
                }
                break;
            }
            if let Some((n, v)) = line.split_once(':')
                && n.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_string());
            }
        }
        value
    }

    #[tokio::test]
    async fn a_mail_reaches_the_sink_after_a_login() {
        let (Some(addr), Some(maildir)) = (
            service("RUNBOOK_TEST_SMTP_ADDR"),
            service("RUNBOOK_TEST_SMTP_MAILDIR"),
        ) else {
            return;
        };
        let m = marker("mail");
        let h = Harness::default().with_connection(sink(&addr));
        let r = ok(h
            .call(
                &Email,
                json!({
                    "to": ["ml-oncall@example.test", "Second One <two@example.test>"],
                    "cc": ["lead@example.test"],
                    "subject": format!("fraud_specialist rolled back {m}"),
                    "body": format!("F1 fell to 0.61; rolled back to version 6.\n{m}\n"),
                }),
            )
            .await);
        assert!(
            r["response"].as_str().is_some_and(|s| s.starts_with("250")),
            "{r}"
        );
        assert_eq!(r["cc"], json!(["lead@example.test"]));

        let mail = delivered(&maildir, &m);
        assert_eq!(
            header(&mail, "To").as_deref(),
            Some("ml-oncall@example.test, \"Second One\" <two@example.test>")
        );
        assert_eq!(header(&mail, "Cc").as_deref(), Some("lead@example.test"));
        assert_eq!(
            header(&mail, "Subject"),
            Some(format!("fraud_specialist rolled back {m}"))
        );
        assert_eq!(
            header(&mail, "From").as_deref(),
            Some("Runbook <runbook@example.test>")
        );
        assert_eq!(
            header(&mail, "Message-ID"),
            r["message_id"].as_str().map(str::to_string)
        );
        // The sink records who logged in (any password is accepted): the login did happen.
        assert_eq!(header(&mail, "X-Auth-Login").as_deref(), Some("runbook"));
        assert_eq!(
            header(&mail, "X-RcptTo").as_deref(),
            Some("ml-oncall@example.test, two@example.test, lead@example.test")
        );
        let body = mail.split_once("\n\n").map(|(_, b)| b).unwrap_or("");
        assert_eq!(
            body.trim_end(),
            format!("F1 fell to 0.61; rolled back to version 6.\n{m}")
        );
    }

    #[tokio::test]
    async fn html_goes_with_the_text_as_its_alternative() {
        let (Some(addr), Some(maildir)) = (
            service("RUNBOOK_TEST_SMTP_ADDR"),
            service("RUNBOOK_TEST_SMTP_MAILDIR"),
        ) else {
            return;
        };
        let m = marker("html");
        let h = Harness::default().with_connection(sink(&addr));
        ok(h.call(
            &Email,
            json!({
                "to": ["ml-oncall@example.test"],
                "subject": m,
                "body": "plain version",
                "html": "<p>the <b>html</b> version</p>",
            }),
        )
        .await);
        let mail = delivered(&maildir, &m);
        assert!(
            header(&mail, "Content-Type").is_some_and(|ct| ct.starts_with("multipart/alternative")),
            "{mail}"
        );
        assert!(mail.contains("plain version"), "{mail}");
        assert!(mail.contains("<p>the <b>html</b> version</p>"), "{mail}");
    }

    #[tokio::test]
    async fn plan_shows_the_message_and_sends_nothing() {
        // Nothing listens on port 1, and no password is there to read: a plan does neither.
        let h = Harness::default().with_connection(smtp(json!({
            "host": "127.0.0.1", "port": 1, "username": "ops",
            "password": "secret(\"RUNBOOK_TEST_UNSET_5E2F\")", "from": "ops@example.test",
        })));
        let input = json!({ "to": ["a@example.test"], "cc": ["b@example.test"],
                            "subject": "Rolled back", "body": "why: F1 0.61" });
        let plan = ok(Email.plan(input, &h.ctx).expect("plans").await);
        assert_eq!(
            plan["summary"],
            "would e-mail a@example.test (cc b@example.test): Rolled back"
        );
        assert_eq!(plan["server"], "127.0.0.1:1 (starttls)");
        let text = plan["message"].as_str().expect("message");
        for line in [
            "From: ops@example.test\n",
            "To: a@example.test\n",
            "Cc: b@example.test\n",
            "Subject: Rolled back\n",
            "\n\nwhy: F1 0.61",
        ] {
            assert!(text.contains(line), "{line:?} in {text}");
        }
    }

    #[tokio::test]
    async fn a_server_that_is_down_is_a_connect_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("ephemeral port")
            .port();
        let h = Harness::default().with_connection(smtp(json!({
            "host": "127.0.0.1", "port": port, "tls": "none", "from": "ops@example.test",
        })));
        let e = err(h
            .call(
                &Email,
                json!({ "to": ["a@example.test"], "subject": "s", "body": "b" }),
            )
            .await);
        assert_eq!(e.kind, ErrorKind::Connect, "{}", e.message);
        assert!(
            e.message.starts_with(&format!(
                "cannot talk to SMTP server 127.0.0.1:{port} (none): "
            )),
            "{}",
            e.message
        );
        assert!(
            e.message.to_lowercase().contains("connection refused"),
            "{}",
            e.message
        );
    }

    /// An SMTP server for the failures the sink does not make: it answers AUTH with `auth`, refuses
    /// any recipient containing `nobody`, and offers no STARTTLS. Enough of RFC 5321 for lettre.
    async fn refusing_server(auth: &'static str) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    let _ = write.write_all(b"220 refusing ESMTP\r\n").await;
                    let mut in_data = false;
                    while let Ok(Some(line)) = lines.next_line().await {
                        let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
                        let reply = match verb.as_str() {
                            _ if in_data => {
                                if line != "." {
                                    continue;
                                }
                                in_data = false;
                                "250 2.0.0 queued".to_string()
                            }
                            "EHLO" => "250-refusing\r\n250 AUTH PLAIN LOGIN".to_string(),
                            "AUTH" => auth.to_string(),
                            "RCPT" if line.contains("nobody") => format!(
                                "550 5.1.1 {}: Recipient address rejected: User unknown",
                                line.trim_start_matches("RCPT TO:")
                                    .split(' ')
                                    .next()
                                    .unwrap_or("")
                            ),
                            "DATA" => {
                                in_data = true;
                                "354 go on".to_string()
                            }
                            "QUIT" => {
                                let _ = write.write_all(b"221 bye\r\n").await;
                                return;
                            }
                            _ => "250 OK".to_string(),
                        };
                        if write
                            .write_all(format!("{reply}\r\n").as_bytes())
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn a_refused_login_is_a_status_error_quoting_the_server_and_not_the_password() {
        let port = refusing_server("535 5.7.8 Authentication credentials invalid").await;
        let h = Harness::default().with_connection(smtp(json!({
            "host": "127.0.0.1", "port": port, "tls": "none", "from": "ops@example.test",
            "username": "ops", "password": "pw-4c1d-77aa",
        })));
        let e = err(h
            .call(
                &Email,
                json!({ "to": ["a@example.test"], "subject": "s", "body": "b" }),
            )
            .await);
        assert_eq!(e.kind, ErrorKind::Status);
        assert_eq!(
            e.message,
            format!(
                "SMTP server 127.0.0.1:{port} (none) refused the login of `ops`: 535 5.7.8 Authentication credentials invalid"
            )
        );
        assert!(!format!("{e:?}").contains("pw-4c1d"), "{e:?}");
    }

    #[tokio::test]
    async fn a_rejected_recipient_is_a_status_error_quoting_the_server() {
        let port = refusing_server("235 2.7.0 Authentication successful").await;
        let h = Harness::default().with_connection(smtp(json!({
            "host": "127.0.0.1", "port": port, "tls": "none", "from": "ops@example.test",
            "username": "ops", "password": "pw",
        })));
        let e = err(h
            .call(
                &Email,
                json!({ "to": ["a@example.test", "nobody@example.test"], "subject": "s", "body": "b" }),
            )
            .await);
        assert_eq!(e.kind, ErrorKind::Status);
        assert_eq!(
            e.message,
            format!(
                "SMTP server 127.0.0.1:{port} (none) refused the message: 550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown"
            )
        );
    }

    #[tokio::test]
    async fn starttls_is_required_unless_the_connection_says_none() {
        let port = refusing_server("235 2.7.0 Authentication successful").await;
        let h = Harness::default().with_connection(smtp(json!({
            "host": "127.0.0.1", "port": port, "from": "ops@example.test",
        })));
        let e = err(h
            .call(
                &Email,
                json!({ "to": ["a@example.test"], "subject": "s", "body": "b" }),
            )
            .await);
        assert_eq!(e.kind, ErrorKind::Status, "{}", e.message);
        assert!(e.message.contains("STARTTLS"), "{}", e.message);
        assert!(
            e.message.ends_with("set the connection's `tls: none`"),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn bad_input_and_bad_connections_are_input_errors() {
        let good =
            json!({ "host": "127.0.0.1", "port": 1, "tls": "none", "from": "ops@example.test" });
        let with = |k: &str, v: Value| {
            let mut c = good.clone();
            c[k] = v;
            c
        };
        let mail = json!({ "to": ["a@example.test"], "subject": "s", "body": "b" });
        for (conn, input, needle) in [
            (
                good.clone(),
                json!({ "to": ["a@example.test", "not an address"], "subject": "s", "body": "b" }),
                "`to[1]`: `not an address` is not an address",
            ),
            (
                good.clone(),
                json!({ "to": [], "subject": "s", "body": "b" }),
                "`to` is empty",
            ),
            (
                good.clone(),
                json!({ "to": ["a@example.test"], "body": "b" }),
                "missing field `subject`",
            ),
            (
                with("username", json!("ops")),
                mail.clone(),
                "connection `mail`: `username` is set but `password` is not",
            ),
            (
                with("tls", json!("ssl")),
                mail.clone(),
                "connection `mail`: `tls` is `ssl`; use starttls, tls or none",
            ),
            (
                with("from", json!("ops at example")),
                mail.clone(),
                "connection `mail`: `from`: `ops at example` is not an address",
            ),
            (
                with("port", json!(70000)),
                mail.clone(),
                "connection `mail`: `port` is 70000, not a port number",
            ),
        ] {
            let h = Harness::default().with_connection(smtp(conn.clone()));
            let e = err(h.call(&Email, input.clone()).await);
            assert_eq!(e.kind, ErrorKind::Input, "{conn} {input}: {}", e.message);
            assert!(e.message.contains(needle), "{conn} {input}: {}", e.message);
        }
    }
}

//! Who may call the server: bearer tokens, each with a subject (recorded as the actor of what it
//! does) and roles. Tokens come from a TOML file that holds either a token's SHA-256 (so the file
//! itself holds no secret) or a `secret("NAME")` reference read from the environment, a `NAME_FILE`
//! or `RUNBOOK_SECRETS_DIR`, as connections' secrets are.
//!
//! ```toml
//! [[token]]
//! subject = "alertmanager"
//! roles = ["operator"]
//! token = 'secret("RUNBOOK_TOKEN_ALERTMANAGER")'
//!
//! [[token]]
//! subject = "alice"
//! roles = ["viewer", "approver"]
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! ```

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::Path;

/// What a token may do. Roles add up: `viewer` reads; `operator` starts, cancels, resumes and plans
/// runs (and may post alerts); `approver` answers approval requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Approver,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Approver => "approver",
        }
    }
}

/// The caller of a request, once its token checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub subject: String,
    pub roles: BTreeSet<Role>,
}

impl Caller {
    /// Whether the caller may do what needs `role`. Every role may read.
    pub fn may(&self, role: Role) -> bool {
        role == Role::Viewer && !self.roles.is_empty() || self.roles.contains(&role)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read the tokens file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("tokens file {path}: {reason}")]
    Invalid { path: String, reason: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    token: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    subject: String,
    roles: Vec<Role>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

/// The tokens a server accepts: SHA-256 of each token, with its caller. Only digests are kept, so
/// a token never sits in the server's memory longer than it takes to check it.
#[derive(Debug, Clone)]
pub enum Auth {
    Tokens(Vec<([u8; 32], Caller)>),
    /// No authentication (`--no-auth`, loopback only): every request is this caller, with every role.
    Open(Caller),
}

impl Auth {
    /// Reads a tokens file. Every problem names the entry; a token shorter than 16 characters is
    /// refused (a guessable token on an API that restarts pods is worse than none).
    pub fn load(path: &Path) -> Result<Auth, TokensError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| TokensError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        Auth::parse(&text, &shown, |name| {
            runbook_steps::connection::read_secret(name).map_err(|e| e.message)
        })
    }

    pub fn parse(
        text: &str,
        path: &str,
        secret: impl Fn(&str) -> Result<String, String>,
    ) -> Result<Auth, TokensError> {
        let bad = |reason: String| TokensError::Invalid {
            path: path.to_string(),
            reason,
        };
        let file: File = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if file.token.is_empty() {
            return Err(bad(
                "no [[token]] entries: every request would be refused".to_string()
            ));
        }
        let mut out: Vec<([u8; 32], Caller)> = Vec::new();
        for (i, e) in file.token.into_iter().enumerate() {
            let which = format!("token #{} (subject `{}`)", i + 1, e.subject);
            if e.subject.trim().is_empty() {
                return Err(bad(format!("token #{}: `subject` is empty", i + 1)));
            }
            if e.roles.is_empty() {
                return Err(bad(format!(
                    "{which}: `roles` is empty; give viewer, operator and/or approver"
                )));
            }
            let digest = match (e.sha256, e.token) {
                (Some(hexed), None) => {
                    let bytes = hex::decode(hexed.trim())
                        .ok()
                        .and_then(|b| <[u8; 32]>::try_from(b).ok());
                    bytes.ok_or_else(|| {
                        bad(format!(
                            "{which}: `sha256` is not 64 hex digits (write the output of `printf %s TOKEN | sha256sum`)"
                        ))
                    })?
                }
                (None, Some(reference)) => {
                    let Some(name) = runbook_steps::connection::secret_ref(&reference) else {
                        return Err(bad(format!(
                            "{which}: `token` must be a reference such as 'secret(\"RUNBOOK_TOKEN\")', not the token itself (or give its `sha256`)"
                        )));
                    };
                    let value = secret(name).map_err(|e| bad(format!("{which}: {e}")))?;
                    if value.chars().count() < 16 {
                        return Err(bad(format!(
                            "{which}: the token in secret `{name}` is shorter than 16 characters"
                        )));
                    }
                    Sha256::digest(value.as_bytes()).into()
                }
                _ => {
                    return Err(bad(format!(
                        "{which}: give exactly one of `sha256` and `token`"
                    )));
                }
            };
            if out.iter().any(|(d, _)| *d == digest) {
                return Err(bad(format!(
                    "{which}: the same token is listed twice; a token is one subject"
                )));
            }
            out.push((
                digest,
                Caller {
                    subject: e.subject,
                    roles: e.roles.into_iter().collect(),
                },
            ));
        }
        Ok(Auth::Tokens(out))
    }

    /// The caller an `Authorization` header value names, if its token is known.
    pub fn check(&self, header: Option<&str>) -> Option<Caller> {
        match self {
            Auth::Open(c) => Some(c.clone()),
            Auth::Tokens(tokens) => {
                // The scheme is case-insensitive (RFC 9110 §11.1); the token is not.
                let (scheme, token) = header?.trim().split_once(' ')?;
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return None;
                }
                let token = token.trim();
                if token.is_empty() {
                    return None;
                }
                let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
                // Digests of equal length compared whole: the time taken says nothing about how
                // much of a guess was right.
                tokens
                    .iter()
                    .find(|(d, _)| constant_time_eq(d, &digest))
                    .map(|(_, c)| c.clone())
            }
        }
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef-alice";

    fn sha(t: &str) -> String {
        hex::encode(Sha256::digest(t.as_bytes()))
    }

    fn no_secrets(name: &str) -> Result<String, String> {
        Err(format!("secret `{name}` is not set"))
    }

    #[test]
    fn a_token_by_digest_or_by_secret_names_its_caller() {
        let text = format!(
            "[[token]]\nsubject = \"alice\"\nroles = [\"viewer\", \"approver\"]\nsha256 = \"{}\"\n\n[[token]]\nsubject = \"am\"\nroles = [\"operator\"]\ntoken = 'secret(\"AM_TOKEN\")'\n",
            sha(TOKEN)
        );
        let auth = Auth::parse(&text, "t.toml", |n| {
            assert_eq!(n, "AM_TOKEN");
            Ok("am-token-of-sixteen+".to_string())
        })
        .expect("valid");
        let alice = auth.check(Some(&format!("Bearer {TOKEN}"))).expect("alice");
        assert_eq!(alice.subject, "alice");
        assert!(alice.may(Role::Approver) && alice.may(Role::Viewer));
        assert!(!alice.may(Role::Operator));
        let am = auth.check(Some("Bearer am-token-of-sixteen+")).expect("am");
        assert!(am.may(Role::Operator) && am.may(Role::Viewer) && !am.may(Role::Approver));
        assert_eq!(auth.check(Some("Bearer wrong-token-wrong-token")), None);
        assert_eq!(auth.check(Some(TOKEN)), None, "the scheme is required");
        assert_eq!(
            auth.check(Some(&format!("bearer  {TOKEN}")))
                .map(|c| c.subject),
            Some("alice".to_string()),
            "the scheme is case-insensitive"
        );
        assert_eq!(auth.check(Some(&format!("Basic {TOKEN}"))), None);
        assert_eq!(
            auth.check(Some(&format!("Bearer {}", TOKEN.to_uppercase()))),
            None,
            "the token is not"
        );
        assert_eq!(auth.check(Some("Bearer ")), None);
        assert_eq!(auth.check(None), None);
    }

    #[test]
    fn bad_files_are_refused_naming_the_entry() {
        let cases = [
            ("", "no [[token]] entries"),
            (
                "[[token]]\nsubject = \"a\"\nroles = []\nsha256 = \"00\"\n",
                "`roles` is empty",
            ),
            (
                "[[token]]\nsubject = \"a\"\nroles = [\"admin\"]\nsha256 = \"00\"\n",
                "admin",
            ),
            (
                "[[token]]\nsubject = \"a\"\nroles = [\"viewer\"]\nsha256 = \"zz\"\n",
                "64 hex digits",
            ),
            (
                "[[token]]\nsubject = \"a\"\nroles = [\"viewer\"]\ntoken = \"plain\"\n",
                "must be a reference",
            ),
            (
                "[[token]]\nsubject = \"a\"\nroles = [\"viewer\"]\n",
                "exactly one of",
            ),
            (
                "[[token]]\nsubject = \"a\"\nroles = [\"viewer\"]\ntoken = 'secret(\"X\")'\n",
                "secret `X` is not set",
            ),
            (
                "[[token]]\nsubject = \" \"\nroles = [\"viewer\"]\nsha256 = \"00\"\n",
                "`subject` is empty",
            ),
            (
                "[[token]]\nsubject = \"a\"\nroles = [\"viewer\"]\nsha256 = \"00\"\nextra = 1\n",
                "unknown field",
            ),
        ];
        for (text, want) in cases {
            let err = Auth::parse(text, "t.toml", no_secrets)
                .expect_err(text)
                .to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(err.starts_with("tokens file t.toml"), "{err}");
        }
        let short = "[[token]]\nsubject = \"a\"\nroles = [\"viewer\"]\ntoken = 'secret(\"S\")'\n";
        let err = Auth::parse(short, "t.toml", |_| Ok("short".into())).expect_err("short");
        assert!(err.to_string().contains("shorter than 16"), "{err}");
        let twice = format!(
            "[[token]]\nsubject = \"a\"\nroles = [\"viewer\"]\nsha256 = \"{0}\"\n[[token]]\nsubject = \"b\"\nroles = [\"viewer\"]\nsha256 = \"{0}\"\n",
            sha(TOKEN)
        );
        let err = Auth::parse(&twice, "t.toml", no_secrets).expect_err("twice");
        assert!(err.to_string().contains("listed twice"), "{err}");
    }
}

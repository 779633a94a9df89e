//! `runbook serve` as a process: tokens and roles, the Alertmanager webhook starting exactly one run
//! per alert key however often Alertmanager re-sends it, the cooldown, label values that stay data,
//! the API starting a run idempotently and answering an approval, /metrics, /openapi.json, and a
//! clean stop on SIGTERM. Waits poll the API against a deadline.

use crate::common::Sandbox;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub(crate) const OPERATOR: &str = "operator-token-0123456789";
pub(crate) const ALICE: &str = "alice-approver-0123456789";
pub(crate) const VIEWER: &str = "viewer-token-0123456789ab";
/// Every role: what the API fuzzer calls with.
pub(crate) const ROOT: &str = "root-every-role-0123456789";

/// Answers MLModelDegraded with the label `specialist_type` as a parameter; its first step writes
/// the parameter, passed through the environment, to a file named by the run; the run then waits
/// for alice's approval, so it stays unfinished for as long as a test needs.
const ALERTED: &str = r#"
name: alerted
triggers:
  alerts: [MLModelDegraded]
  params: { specialist_type: specialist_type }
  cooldown: 1h
params:
  specialist_type: { type: string, default: all }
steps:
  - id: note
    uses: shell.run
    side_effect: read
    with:
      argv: ["sh", "-c", "printf %s \"$P\" > \"seen-$R\""]
      env: { P: "{{ params.specialist_type }}", R: "{{ run.id }}" }
  - id: hold
    uses: flow.noop
    needs: note
    approval: { required: true, approvers: [alice] }
    with: { value: 1 }
"#;

const GATED: &str = r#"
name: gated
params:
  target: { type: string, required: true }
steps:
  - id: restart
    uses: shell.run
    approval: { required: true, approvers: [alice] }
    with: { argv: ["sh", "-c", "echo {{ params.target | tojson }} > restarted"] }
"#;

fn sha(t: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(t.as_bytes()))
}

pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
    log: std::path::PathBuf,
}

impl Server {
    pub(crate) fn start(sb: &Sandbox, db: Option<&str>) -> Server {
        Server::start_with(sb, db, &[])
    }

    pub(crate) fn start_with(sb: &Sandbox, db: Option<&str>, extra: &[&str]) -> Server {
        std::fs::create_dir_all(sb.path().join("runbooks")).expect("runbooks dir");
        sb.write("runbooks/alerted.yaml", ALERTED);
        sb.write("runbooks/gated.yaml", GATED);
        sb.write(
            "tokens.toml",
            &format!(
                "[[token]]\nsubject = \"am\"\nroles = [\"operator\"]\ntoken = 'secret(\"OP_TOKEN\")'\n\n\
                 [[token]]\nsubject = \"alice\"\nroles = [\"approver\"]\nsha256 = \"{}\"\n\n\
                 [[token]]\nsubject = \"vic\"\nroles = [\"viewer\"]\nsha256 = \"{}\"\n\n\
                 [[token]]\nsubject = \"root\"\nroles = [\"viewer\", \"operator\", \"approver\"]\nsha256 = \"{}\"\n",
                sha(ALICE),
                sha(VIEWER),
                sha(ROOT)
            ),
        );
        let mut cmd = sb.cmd(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tokens",
            "tokens.toml",
            "--grace",
            "5s",
        ]);
        if !extra.contains(&"--poll") {
            cmd.args(["--poll", "50ms"]);
        }
        cmd.args(extra);
        if let Some(db) = db {
            cmd.env("RUNBOOK_DB", db);
        }
        let mut child = cmd
            .env("OP_TOKEN", OPERATOR)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn runbook serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = sb.path().join(format!("serve-{}.log", child.id()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log_path = log.clone();
        // Keeps reading the server's log (a full pipe would stall it), copying it to a file.
        std::thread::spawn(move || {
            use std::io::Write as _;
            let mut file = std::fs::File::create(&log_path).expect("log file");
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                if line.contains("listening")
                    && let Some(addr) = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the server did not listen: {}", read(&log)));
        Server {
            child,
            base: format!("http://{addr}"),
            log,
        }
    }

    pub(crate) fn log(&self) -> String {
        read(&self.log)
    }

    /// SIGTERM, then the exit status.
    pub(crate) fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not stop: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(base: &str) -> Api {
        runbook_steps::init_tls();
        Api {
            http: reqwest::Client::new(),
            base: base.to_string(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, token, None, &[])
            .await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, token, Some(body), &[])
            .await
    }

    /// Polls the run until `done` holds for it, or fails after 30 s with the last view.
    async fn wait_run(&self, run: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, v) = self.get(&format!("/api/v1/runs/{run}"), Some(VIEWER)).await;
            assert_eq!(code, 200, "{v}");
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "run {run} never {what}: {v:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A notification as Alertmanager sends it, for one group with the given alerts' labels.
fn notification(group: &str, status: &str, alerts: &[Value]) -> Value {
    let alerts: Vec<Value> = alerts
        .iter()
        .enumerate()
        .map(|(i, labels)| {
            json!({
                "status": status, "labels": labels, "annotations": {"summary": "F1 dropped"},
                "startsAt": "2026-11-30T03:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus/graph", "fingerprint": format!("fp{i}"),
            })
        })
        .collect();
    json!({
        "version": "4", "groupKey": group, "status": status, "receiver": "runbook",
        "groupLabels": {"alertname": "MLModelDegraded"}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager", "truncatedAlerts": 0, "alerts": alerts,
    })
}

fn outcomes(v: &Value) -> Vec<(String, String)> {
    v["outcomes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| {
                    (
                        o["outcome"].as_str().unwrap_or("").to_string(),
                        o["run"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn tokens_decide_who_may_do_what() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, None);
    let api = Api::new(&server.base);
    assert_eq!(api.get("/healthz", None).await.0, 200);
    assert_eq!(api.get("/readyz", None).await.0, 200);
    let (code, body) = api.get("/api/v1/runs", None).await;
    assert_eq!(code, 401, "{body}");
    assert_eq!(body["error"], "unauthorized");
    let (code, _) = api
        .get("/api/v1/runs", Some("not-a-known-token-at-all"))
        .await;
    assert_eq!(code, 401);
    assert_eq!(api.get("/api/v1/runs", Some(VIEWER)).await.0, 200);
    // A viewer may not start runs, approve, or post alerts.
    let start = json!({"runbook": "gated", "params": {"target": "api"}});
    let (code, body) = api.post("/api/v1/runs", Some(VIEWER), start.clone()).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains("operator"),
        "{body}"
    );
    let (code, _) = api
        .post(
            "/api/v1/runs/0/steps/restart/approve",
            Some(VIEWER),
            json!({}),
        )
        .await;
    assert_eq!(code, 403);
    let (code, _) = api
        .post(
            "/hooks/alertmanager",
            Some(VIEWER),
            notification("g", "firing", &[]),
        )
        .await;
    assert_eq!(code, 403);
    // An approver is not an operator.
    assert_eq!(api.post("/api/v1/runs", Some(ALICE), start).await.0, 403);
    let status = server.stop();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn repeated_notifications_start_one_run_per_key_and_labels_stay_data() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, None);
    let api = Api::new(&server.base);
    let hostile = "$(touch pwned) {{ 7*7 }} \"'`;|&";
    let first = notification(
        "{}:{alertname=\"MLModelDegraded\"}",
        "firing",
        &[
            json!({"alertname": "MLModelDegraded", "specialist_type": "technical", "severity": "warning"}),
            json!({"alertname": "MLModelDegraded", "specialist_type": hostile}),
            json!({"alertname": "SomethingElse"}),
        ],
    );
    let (code, v) = api
        .post("/hooks/alertmanager", Some(OPERATOR), first.clone())
        .await;
    assert_eq!(code, 200, "{v}");
    let got = outcomes(&v);
    assert_eq!(got.len(), 2, "{v}");
    assert!(got.iter().all(|(o, _)| o == "started"), "{v}");
    assert_eq!(v["unmatched"], 1);
    // Alertmanager's re-sends (group_interval, repeat_interval) start nothing new.
    for _ in 0..3 {
        let (code, again) = api
            .post("/hooks/alertmanager", Some(OPERATOR), first.clone())
            .await;
        assert_eq!(code, 200);
        let again = outcomes(&again);
        assert_eq!(
            again,
            got.iter()
                .map(|(_, r)| ("deduplicated".to_string(), r.clone()))
                .collect::<Vec<_>>()
        );
    }
    for (_, run) in &got {
        api.wait_run(run, "asked for approval", |v| {
            v["steps"][1]["status"] == "awaiting-approval"
        })
        .await;
        let path = format!("/api/v1/runs/{run}/steps/hold/approve");
        assert_eq!(api.post(&path, Some(ALICE), json!({})).await.0, 200);
        let v = api
            .wait_run(run, "succeeded", |v| v["run"]["status"] == "succeeded")
            .await;
        assert_eq!(v["run"]["trigger"]["kind"], "alert", "{v:#}");
        assert_eq!(v["run"]["trigger"]["receiver"], "runbook");
        assert_eq!(v["run"]["actor"], "alertmanager:am");
        let shown = crate::common::stdout(&sb.run(&["show", run]));
        assert!(
            shown.contains("started by alert MLModelDegraded (firing) from receiver runbook"),
            "{shown}"
        );
    }
    // The hostile label reached the step as a value, byte for byte, and nothing ran it.
    let seen: Vec<String> = got
        .iter()
        .map(|(_, r)| read(&sb.path().join(format!("seen-{r}"))))
        .collect();
    assert!(seen.contains(&"technical".to_string()), "{seen:?}");
    assert!(seen.contains(&hostile.to_string()), "{seen:?}");
    assert!(!sb.path().join("pwned").exists());
    // Ended runs of these keys hold off new ones for the cooldown (1h).
    let (_, after) = api
        .post("/hooks/alertmanager", Some(OPERATOR), first.clone())
        .await;
    assert!(
        outcomes(&after).iter().all(|(o, _)| o == "cooling_down"),
        "{after}"
    );
    // A resolved notification is acknowledged, starting nothing.
    let resolved = notification(
        "{}:{alertname=\"MLModelDegraded\"}",
        "resolved",
        &[json!({"alertname": "MLModelDegraded", "specialist_type": "technical"})],
    );
    let (code, r) = api
        .post("/hooks/alertmanager", Some(OPERATOR), resolved)
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(outcomes(&r), vec![("resolved".to_string(), String::new())]);
    let (code, runs) = api.get("/api/v1/runs?runbook=alerted", Some(VIEWER)).await;
    assert_eq!(code, 200);
    assert_eq!(runs.as_array().map(Vec::len), Some(2), "{runs:#}");
    // The next page after the first run: the second, whatever millisecond they share.
    let first = &runs[0];
    let (code, next) = api
        .get(
            &format!(
                "/api/v1/runs?runbook=alerted&before={}&before_id={}",
                first["started_at"],
                first["id"].as_str().unwrap_or_default()
            ),
            Some(VIEWER),
        )
        .await;
    assert_eq!(code, 200, "{next}");
    assert_eq!(next.as_array().map(Vec::len), Some(1), "{next:#}");
    assert_eq!(next[0]["id"], runs[1]["id"]);
    let (code, e) = api.get("/api/v1/runs?before_id=0198", Some(VIEWER)).await;
    assert_eq!(code, 422, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("before_id needs before"),
        "{e}"
    );
    // What /metrics says of it.
    let (code, text) = api.get("/metrics", None).await;
    assert_eq!(code, 200);
    let text = text.as_str().unwrap_or("").to_string();
    for want in [
        "runbook_alerts_received_total{outcome=\"started\",runbook=\"alerted\"} 2",
        "runbook_alerts_received_total{outcome=\"deduplicated\",runbook=\"alerted\"} 6",
        "runbook_alerts_received_total{outcome=\"cooling_down\",runbook=\"alerted\"} 2",
        "runbook_runs{status=\"succeeded\"} 2",
        "runbook_step_duration_seconds_count{plugin=\"shell.run\",outcome=\"succeeded\"} 2",
    ] {
        assert!(text.contains(want), "no `{want}` in:\n{text}");
    }
    // Not a notification.
    let (code, bad) = api
        .post(
            "/hooks/alertmanager",
            Some(OPERATOR),
            json!({"version": "3"}),
        )
        .await;
    assert_eq!(code, 422, "{bad}");
    assert!(server.stop().success());
}

#[tokio::test]
async fn a_run_started_through_the_api_is_idempotent_and_approved_there() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, None);
    let api = Api::new(&server.base);
    let body = json!({"runbook": "gated", "params": {"target": "a\"b"}});
    let key = [("Idempotency-Key", "deploy-42")];
    let (code, first) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/runs",
            Some(OPERATOR),
            Some(body.clone()),
            &key,
        )
        .await;
    assert_eq!(code, 201, "{first}");
    let run = first["run"].as_str().expect("run id").to_string();
    let (code, again) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/runs",
            Some(OPERATOR),
            Some(body),
            &key,
        )
        .await;
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["run"], run.as_str());
    assert_eq!(again["created"], false);
    // Bad parameters are refused before anything is recorded.
    let (code, bad) = api
        .post(
            "/api/v1/runs",
            Some(OPERATOR),
            json!({"runbook": "gated", "params": {"targte": 1}}),
        )
        .await;
    assert_eq!(code, 422, "{bad}");
    assert!(
        bad["message"]
            .as_str()
            .unwrap_or("")
            .contains("did you mean `target`"),
        "{bad}"
    );
    let (code, _) = api
        .post("/api/v1/runs", Some(OPERATOR), json!({"runbook": "nope"}))
        .await;
    assert_eq!(code, 404);
    // The worker parks the run at its approval; alice approves through the API.
    api.wait_run(&run, "asked for approval", |v| {
        v["steps"][0]["status"] == "awaiting-approval"
    })
    .await;
    assert!(!sb.path().join("restarted").exists());
    let (code, ans) = api
        .post(
            &format!("/api/v1/runs/{run}/steps/restart/approve"),
            Some(ALICE),
            json!({"comment": "checked the dashboards"}),
        )
        .await;
    assert_eq!(code, 200, "{ans}");
    assert_eq!(ans["recorded"], true);
    let v = api
        .wait_run(&run, "succeeded", |v| v["run"]["status"] == "succeeded")
        .await;
    assert_eq!(read(&sb.path().join("restarted")).trim(), "a\"b");
    let approved = v["interventions"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["kind"] == "approval"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(approved["by"], "alice", "{v:#}");
    assert_eq!(approved["how"], "api", "{v:#}");
    // The journal, paged, with its hashes chained.
    let (code, page) = api
        .get(&format!("/api/v1/runs/{run}/events?limit=2"), Some(VIEWER))
        .await;
    assert_eq!(code, 200, "{page}");
    assert_eq!(page["events"].as_array().map(Vec::len), Some(2));
    let next = page["next_after"].as_i64().expect("another page");
    let (_, rest) = api
        .get(
            &format!("/api/v1/runs/{run}/events?after={next}&limit=1000"),
            Some(VIEWER),
        )
        .await;
    assert_eq!(rest["events"][0]["prev_hash"], page["events"][1]["hash"]);
    assert!(rest["next_after"].is_null());
    // A second answer comes too late.
    let (code, late) = api
        .post(
            &format!("/api/v1/runs/{run}/steps/restart/deny"),
            Some(ALICE),
            json!({"reason": "no"}),
        )
        .await;
    assert_eq!(code, 409, "{late}");
    assert!(server.stop().success());
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, None);
    let api = Api::new(&server.base);
    let (code, doc) = api.get("/openapi.json", None).await;
    assert_eq!(code, 200);
    assert!(
        doc["openapi"].as_str().unwrap_or("").starts_with("3."),
        "{doc}"
    );
    let paths = doc["paths"].as_object().expect("paths");
    for p in [
        "/hooks/alertmanager",
        "/api/v1/runs",
        "/api/v1/runs/{run}",
        "/api/v1/runs/{run}/events",
        "/api/v1/runs/{run}/steps/{step}/approve",
        "/api/v1/runs/{run}/steps/{step}/deny",
        "/api/v1/runs/{run}/resume",
        "/api/v1/runs/{run}/cancel",
        "/api/v1/plans",
        "/api/v1/runbooks",
    ] {
        assert!(paths.contains_key(p), "{p} missing from {:?}", paths.keys());
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let (code, body) = api.get("/no/such/route", None).await;
    assert_eq!(code, 404);
    assert_eq!(body["error"], "not_found");
    assert!(server.stop().success());
}

#[test]
fn serve_refuses_to_start_open_on_a_network_address_or_without_tokens() {
    let sb = Sandbox::new();
    let o = sb.run(&["serve", "--no-auth", "--listen", "0.0.0.0:0"]);
    assert_eq!(o.status.code(), Some(2), "{}", crate::common::stderr(&o));
    assert!(crate::common::stderr(&o).contains("only allowed on a loopback"));
    let o = sb.run(&["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(o.status.code(), Some(2));
    sb.write(
        "tokens.toml",
        "[[token]]\nsubject = \"a\"\nroles = [\"root\"]\nsha256 = \"00\"\n",
    );
    let o = sb.run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tokens",
        "tokens.toml",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        crate::common::stderr(&o).contains("tokens file tokens.toml"),
        "{}",
        crate::common::stderr(&o)
    );
    std::fs::create_dir(sb.path().join("dir.toml")).expect("dir");
    let o = sb.run(&["serve", "--listen", "127.0.0.1:0", "--tokens", "dir.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(crate::common::stderr(&o).contains("cannot read the tokens file"));
}

const SLOW: &str = r#"
name: slow
steps:
  - id: a
    uses: shell.run
    with: { argv: ["sh", "-c", "sleep 1; echo a >> a.log"] }
  - id: b
    uses: shell.run
    needs: a
    with: { argv: ["sh", "-c", "echo b >> b.log"] }
"#;

#[tokio::test]
async fn a_stopped_server_parks_its_runs_and_the_next_one_finishes_them() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path().join("runbooks")).expect("dir");
    sb.write("runbooks/slow.yaml", SLOW);
    let server = Server::start(&sb, None);
    let api = Api::new(&server.base);
    let (code, v) = api
        .post("/api/v1/runs", Some(OPERATOR), json!({"runbook": "slow"}))
        .await;
    assert_eq!(code, 201, "{v}");
    let run = v["run"].as_str().expect("run").to_string();
    api.wait_run(&run, "started step a", |v| {
        v["steps"][0]["status"] == "running"
    })
    .await;
    // SIGTERM while `a` runs: it finishes, and the run parks (due at once) instead of going on.
    let status = server.stop();
    assert!(status.success(), "{status}");
    assert_eq!(read(&sb.path().join("a.log")), "a\n");
    assert!(!sb.path().join("b.log").exists());
    let o = sb.run(&["show", &run, "-o", "json"]);
    let shown: Value = serde_json::from_slice(&o.stdout).expect("show json");
    assert_eq!(shown["run"]["status"], "parked", "{shown:#}");
    // Another server's worker takes it up where it was.
    let next = Server::start(&sb, None);
    let api = Api::new(&next.base);
    api.wait_run(&run, "succeeded", |v| v["run"]["status"] == "succeeded")
        .await;
    assert_eq!(read(&sb.path().join("a.log")), "a\n", "step a ran once");
    assert_eq!(read(&sb.path().join("b.log")), "b\n");
    assert!(next.stop().success());
}

/// Two servers and two workers on one PostgreSQL: the same notification posted to both servers at
/// once starts one run; a run queued through one server, parked at its approval by a worker and
/// approved through the other server, is continued by whichever worker claims it.
#[tokio::test]
async fn servers_and_workers_share_one_postgresql() {
    let db = crate::common::PgDb::new().await;
    let sb = Sandbox::new();
    let one = Server::start_with(&sb, Some(&db.url), &["--no-worker"]);
    let two = Server::start_with(&sb, Some(&db.url), &["--no-worker"]);
    let (a, b) = (Api::new(&one.base), Api::new(&two.base));
    let note = notification(
        "{}:{alertname=\"MLModelDegraded\"}",
        "firing",
        &[json!({"alertname": "MLModelDegraded", "specialist_type": "security"})],
    );
    let (ra, rb) = tokio::join!(
        a.post("/hooks/alertmanager", Some(OPERATOR), note.clone()),
        b.post("/hooks/alertmanager", Some(OPERATOR), note.clone())
    );
    assert_eq!((ra.0, rb.0), (200, 200), "{} {}", ra.1, rb.1);
    let mut got = [outcomes(&ra.1), outcomes(&rb.1)].concat();
    got.sort();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, "deduplicated", "{got:?}");
    assert_eq!(got[1].0, "started", "{got:?}");
    assert_eq!(got[0].1, got[1].1, "both answers name the one run");
    let (code, gated) = a
        .post(
            "/api/v1/runs",
            Some(OPERATOR),
            json!({"runbook": "gated", "params": {"target": "pg"}}),
        )
        .await;
    assert_eq!(code, 201, "{gated}");
    let gated = gated["run"].as_str().expect("run").to_string();
    let mut w1 = crate::workers::Worker::start(&sb, &db.url, "1");
    let mut w2 = crate::workers::Worker::start(&sb, &db.url, "2");
    b.wait_run(&gated, "asked for approval", |v| {
        v["steps"][0]["status"] == "awaiting-approval"
    })
    .await;
    let (code, ans) = b
        .post(
            &format!("/api/v1/runs/{gated}/steps/restart/approve"),
            Some(ALICE),
            json!({}),
        )
        .await;
    assert_eq!(code, 200, "{ans}");
    b.wait_run(&gated, "succeeded", |v| v["run"]["status"] == "succeeded")
        .await;
    let alerted = &got[0].1;
    a.wait_run(alerted, "asked for approval", |v| {
        v["steps"][1]["status"] == "awaiting-approval"
    })
    .await;
    let path = format!("/api/v1/runs/{alerted}/steps/hold/approve");
    assert_eq!(a.post(&path, Some(ALICE), json!({})).await.0, 200);
    a.wait_run(alerted, "succeeded", |v| v["run"]["status"] == "succeeded")
        .await;
    let (_, runs) = a.get("/api/v1/runs?limit=1000", Some(VIEWER)).await;
    assert_eq!(runs.as_array().map(Vec::len), Some(2), "{runs:#}");
    w1.stop();
    w2.stop();
    assert!(one.stop().success());
    assert!(two.stop().success());
}

/// The database going away mid-service: API calls answer 503 with a message that names no
/// internals, /readyz fails (a load balancer stops sending), /healthz still answers (the process is
/// alive), and the log says which request failed.
#[tokio::test]
async fn a_lost_database_is_a_503_and_not_ready() {
    let db = crate::common::PgDb::new().await;
    let sb = Sandbox::new();
    let server = Server::start_with(&sb, Some(&db.url), &["--no-worker"]);
    let api = Api::new(&server.base);
    assert_eq!(api.get("/readyz", None).await.0, 200);
    let name = db.url.rsplit('/').next().expect("db name").to_string();
    {
        use sqlx::Connection as _;
        let mut admin = sqlx::PgConnection::connect(&crate::common::pg_admin_url())
            .await
            .expect("admin");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await
        .expect("drop");
    }
    let (code, body) = api.get("/api/v1/runs", Some(VIEWER)).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"], "unavailable");
    assert!(
        !body["message"].as_str().unwrap_or("").contains(&name),
        "{body}"
    );
    assert_eq!(api.get("/readyz", None).await.0, 503);
    assert_eq!(api.get("/healthz", None).await.0, 200);
    let log = server.log();
    assert!(
        log.contains("request failed")
            && log.contains("route=/api/v1/runs")
            && log.contains("status=503"),
        "{log}"
    );
    assert!(server.stop().success());
}

/// A server's own worker hears of a run a request made due at once: with an hour between polls,
/// a queued run still starts, and an approval still lets it go on.
#[tokio::test]
async fn the_servers_worker_is_woken_by_its_requests_not_its_poll() {
    let sb = Sandbox::new();
    let server = Server::start_with(&sb, None, &["--poll", "1h"]);
    let api = Api::new(&server.base);
    let (code, v) = api
        .post(
            "/api/v1/runs",
            Some(OPERATOR),
            json!({"runbook": "gated", "params": {"target": "x"}}),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    let run = v["run"].as_str().expect("run").to_string();
    api.wait_run(&run, "asked for approval", |v| {
        v["steps"][0]["status"] == "awaiting-approval"
    })
    .await;
    let path = format!("/api/v1/runs/{run}/steps/restart/approve");
    assert_eq!(api.post(&path, Some(ALICE), json!({})).await.0, 200);
    api.wait_run(&run, "succeeded", |v| v["run"]["status"] == "succeeded")
        .await;
    assert!(server.stop().success());
}

const TAKEN: &str = r#"
name: taken
steps:
  - id: a
    uses: shell.run
    side_effect: idempotent
    with: { argv: ["sh", "-c", "echo started >> started.log; [ -e go ] || sleep 30"] }
    timeout: 1m
"#;

/// A `runbook run` killed mid-step leaves its run to the server's worker, which sees the holder is
/// dead, takes the run over by the rules of a resume (an idempotent step in flight runs again) and
/// counts it in /metrics.
#[tokio::test]
async fn a_dead_drivers_run_is_taken_over_and_counted() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path().join("runbooks")).expect("dir");
    sb.write("runbooks/taken.yaml", TAKEN);
    let mut driver = sb
        .cmd(&["run", "taken", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("runbook run");
    let deadline = Instant::now() + Duration::from_secs(30);
    while read(&sb.path().join("started.log")).is_empty() {
        assert!(Instant::now() < deadline, "the step never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    driver.kill().expect("SIGKILL");
    driver.wait().expect("reaped");
    // The attempt that runs again ends at once.
    sb.write("go", "");
    let server = Server::start(&sb, None);
    let api = Api::new(&server.base);
    let (_, runs) = api.get("/api/v1/runs?runbook=taken", Some(VIEWER)).await;
    let run = runs[0]["id"].as_str().expect("the killed run").to_string();
    let v = api
        .wait_run(&run, "finished", |v| {
            matches!(v["run"]["status"].as_str(), Some("succeeded" | "failed"))
        })
        .await;
    assert_eq!(v["run"]["status"], "succeeded", "{v:#}");
    assert_eq!(read(&sb.path().join("started.log")), "started\nstarted\n");
    let (_, text) = api.get("/metrics", None).await;
    let text = text.as_str().unwrap_or("").to_string();
    assert!(text.contains("runbook_lease_takeovers_total 1"), "{text}");
    assert!(server.stop().success());
}

const NIGHTLY: &str = r#"
name: nightly
triggers:
  schedule: "* * * * *"
steps:
  - id: check
    uses: shell.run
    side_effect: read
    with: { argv: ["sh", "-c", "echo checked >> nightly.log"] }
"#;

/// A server fires the schedules of the runbooks it serves: one missed while no server ran (the
/// schedule was last seen two hours ago) runs once, as soon as the server starts.
#[tokio::test]
async fn a_server_fires_a_missed_schedule_once() {
    use runbook_engine::store::{Fire, Store as _};
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path().join("runbooks")).expect("dir");
    sb.write("runbooks/nightly.yaml", NIGHTLY);
    {
        let store = runbook_engine::store::sqlite::SqliteStore::open(
            sb.db().to_str().expect("utf-8"),
            true,
        )
        .await
        .expect("open");
        let two_hours_ago = runbook_engine::run::event::now_ms() - 2 * 3_600_000;
        let fire = Fire {
            runbook: "nightly".into(),
            expression: "* * * * *".into(),
            previous: None,
            at: two_hours_ago,
            error: None,
        };
        assert!(store.fire_schedule(&fire, None).await.expect("baseline"));
    }
    let server = Server::start(&sb, None);
    let api = Api::new(&server.base);
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        let (_, runs) = api.get("/api/v1/runs?runbook=nightly", Some(VIEWER)).await;
        if let Some(id) = runs[0]["id"].as_str() {
            break id.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled run: {}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let v = api
        .wait_run(&run, "succeeded", |v| v["run"]["status"] == "succeeded")
        .await;
    assert_eq!(v["run"]["trigger"]["kind"], "schedule", "{v:#}");
    assert_eq!(v["run"]["actor"], "schedule");
    let (_, runs) = api.get("/api/v1/runs?runbook=nightly", Some(VIEWER)).await;
    assert_eq!(
        runs.as_array().map(Vec::len),
        Some(1),
        "missed fires run once: {runs:#}"
    );
    assert_eq!(read(&sb.path().join("nightly.log")), "checked\n");
    assert!(server.stop().success());
}

const DIAGNOSING: &str = r#"
name: diagnosing
triggers:
  alerts: [MLModelLowF1Score]
  on_resolved: cancel
steps:
  - id: look
    uses: shell.run
    side_effect: read
    with: { argv: ["true"] }
  - id: fix
    uses: flow.noop
    needs: look
    approval: { required: true, approvers: [alice] }
    with: { value: 1 }
"#;

/// `resolved` notifications reach the run of their alert: noted on the journal of a runbook that
/// records them, and cancelling one that asks for it while it has changed nothing. The API cancels
/// a run too.
#[tokio::test]
async fn resolved_alerts_are_noted_or_cancel_and_the_api_cancels() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path().join("runbooks")).expect("dir");
    sb.write("runbooks/diagnosing.yaml", DIAGNOSING);
    let server = Server::start(&sb, None);
    let api = Api::new(&server.base);
    let group = "{}:{alertname=~\"MLModel.*\"}";
    let firing = notification(
        group,
        "firing",
        &[
            json!({"alertname": "MLModelDegraded", "specialist_type": "business"}),
            json!({"alertname": "MLModelLowF1Score"}),
        ],
    );
    let (code, v) = api
        .post("/hooks/alertmanager", Some(OPERATOR), firing)
        .await;
    assert_eq!(code, 200, "{v}");
    let runs: Vec<String> = outcomes(&v).into_iter().map(|(_, r)| r).collect();
    assert_eq!(runs.len(), 2, "{v}");
    for (run, step) in runs.iter().zip([1, 1]) {
        api.wait_run(run, "asked for approval", |v| {
            v["steps"][step]["status"] == "awaiting-approval"
        })
        .await;
    }
    let resolved = notification(
        group,
        "resolved",
        &[
            json!({"alertname": "MLModelDegraded", "specialist_type": "business"}),
            json!({"alertname": "MLModelLowF1Score"}),
        ],
    );
    let (code, v) = api
        .post("/hooks/alertmanager", Some(OPERATOR), resolved)
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        outcomes(&v),
        runs.iter()
            .map(|r| ("resolved".to_string(), r.clone()))
            .collect::<Vec<_>>()
    );
    // `diagnosing` asks to be cancelled: only a read had run, so it is.
    let cancelled = api
        .wait_run(&runs[1], "ended", |v| v["run"]["status"] == "failed")
        .await;
    let error = cancelled["run"]["error"].as_str().unwrap_or("");
    assert!(error.contains("cancelled by alertmanager"), "{cancelled:#}");
    // `alerted` records it and goes on waiting.
    let noted = api
        .wait_run(&runs[0], "noted", |v| {
            v["notes"].as_array().is_some_and(|n| !n.is_empty())
        })
        .await;
    assert_eq!(noted["notes"][0]["status"], "resolved", "{noted:#}");
    assert_eq!(noted["run"]["status"], "parked");
    // The API cancels it.
    let path = format!("/api/v1/runs/{}/cancel", runs[0]);
    let (code, c) = api.post(&path, Some(VIEWER), json!({"reason": "x"})).await;
    assert_eq!(code, 403, "{c}");
    let (code, c) = api
        .post(&path, Some(OPERATOR), json!({"reason": "  "}))
        .await;
    assert_eq!(code, 422, "{c}");
    let (code, c) = api
        .post(
            &path,
            Some(OPERATOR),
            json!({"reason": "resolved upstream"}),
        )
        .await;
    assert_eq!(code, 200, "{c}");
    assert_eq!(c["outcome"]["outcome"], "cancelled", "{c}");
    let (code, again) = api
        .post(&path, Some(OPERATOR), json!({"reason": "twice"}))
        .await;
    assert_eq!(code, 409, "a finished run: {again}");
    let o = sb.run(&["audit", "verify", "--all"]);
    assert!(o.status.success(), "{}", crate::common::stdout(&o));
    assert!(server.stop().success());
}

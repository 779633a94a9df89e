//! The cross-check: real kubectl binaries run against the fake. Each operation's output shows the
//! fake answered kubectl correctly; the requests kubectl sent are compared with the golden file of
//! its version (`tests/golden/kube/kubectl-1.MINOR.json`, see the README there), which the kubernetes
//! plugin's tests compare their own requests with. `UPDATE_GOLDEN=1` rewrites the golden files.
//!
//! kubectl binaries: `RUNBOOK_TEST_KUBECTL` (paths separated by `:`; `dev/services`'s env file
//! sets it to Debian's kubectl 1.20 plus a newer one if the machine has it), else `kubectl` on PATH. kubectl
//! 1.30 and later exec over WebSocket, which the fake speaks; 1.20 execs over SPDY, which it
//! refuses (that refusal is checked instead).

use fake_kube::{Config, Recorded, Server};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kubectl_paths() -> Vec<PathBuf> {
    if let Ok(list) = std::env::var("RUNBOOK_TEST_KUBECTL")
        && !list.is_empty()
    {
        return list
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file());
    match on_path {
        Some(p) => vec![p],
        // Unset and none on PATH: says why and skips, or fails in CI.
        None => runbook_steps::testkit::service("RUNBOOK_TEST_KUBECTL")
            .map(PathBuf::from)
            .into_iter()
            .collect(),
    }
}

/// kubectl's own version (`v1.20.2`) and minor number.
fn client_version(kubectl: &Path) -> (String, u32) {
    let out = std::process::Command::new(kubectl)
        .args(["version", "--client", "-o", "json"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", kubectl.display()));
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{} version -o json: {e}", kubectl.display()));
    let git = v["clientVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let minor = v["clientVersion"]["minor"]
        .as_str()
        .and_then(|m| m.trim_end_matches('+').parse().ok())
        .expect("kubectl reports its minor version");
    (git, minor)
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
    requests: Vec<Recorded>,
}

struct Kubectl {
    path: PathBuf,
    home: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Kubectl {
    async fn run(&self, server: &Server, args: &[&str]) -> Out {
        server.clear_requests();
        let cache = self.home.path().join("cache");
        let mut cmd = tokio::process::Command::new(&self.path);
        cmd.arg("--cache-dir")
            .arg(&cache)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.home.path())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish within 90 s"))
            .expect("kubectl runs");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            requests: server.requests(),
        }
    }
}

fn is_discovery(path: &str) -> bool {
    matches!(path, "/version" | "/api" | "/apis" | "/api/v1")
        || path.starts_with("/openapi/")
        || (path.starts_with("/apis/") && path.trim_end_matches('/').matches('/').count() == 3)
}

/// Timestamps in a body become `<RFC3339>`: they are the time of the run.
fn normalise_body(v: Value) -> Value {
    match v {
        Value::String(s) if s.parse::<jiff::Timestamp>().is_ok() => json!("<RFC3339>"),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, normalise_body(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(normalise_body).collect()),
        other => other,
    }
}

/// A deployment's pod name (`checkout-<template hash>-<id>`) depends on the template, which
/// `rollout restart` stamps with the time: it becomes `checkout-<pod>`.
fn generic_pod_names(path: &str) -> String {
    const ALPHABET: &str = "bcdfghjklmnpqrstvwxz2456789";
    let generated = |seg: &str| {
        let parts: Vec<&str> = seg.rsplitn(3, '-').collect();
        parts.len() == 3
            && parts[0].len() == 5
            && parts[1].len() == 10
            && parts[..2]
                .iter()
                .all(|p| p.chars().all(|c| ALPHABET.contains(c)))
    };
    path.split('/')
        .map(|seg| match seg.rsplitn(3, '-').nth(2) {
            Some(deploy) if generated(seg) => format!("{deploy}-<pod>"),
            _ => seg.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// What the golden file keeps of a request: method, path, query (sorted; the values of
/// `resourceVersion` and `timeoutSeconds`, which differ per run, as `<n>`), content type, body.
fn normalise(r: &Recorded) -> Value {
    let mut query: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in fake_kube::Query::parse(Some(&r.query)).pairs() {
        let v = if matches!(k, "resourceVersion" | "timeoutSeconds") {
            "<n>"
        } else {
            v
        };
        query.entry(k.to_string()).or_default().push(v.to_string());
    }
    let body = if r.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&r.body).map_or_else(|_| json!(r.body), normalise_body)
    };
    json!({
        "method": r.method, "path": generic_pod_names(&r.path), "query": query,
        "content_type": r.content_type, "body": body,
    })
}

/// The non-discovery requests, normalised. kubectl 1.30+ fetches the logs of several pods at
/// once, so a run of log requests is sorted by path.
fn api_requests(out: &Out) -> Vec<Value> {
    let mut reqs: Vec<Value> = out
        .requests
        .iter()
        .filter(|r| !is_discovery(&r.path))
        .map(normalise)
        .collect();
    let is_log = |r: &Value| r["path"].as_str().is_some_and(|p| p.ends_with("/log"));
    let mut i = 0;
    while i < reqs.len() {
        let run = reqs[i..].iter().take_while(|r| is_log(r)).count();
        reqs[i..i + run].sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
        i += run.max(1);
    }
    reqs
}

#[track_caller]
fn expect(out: &Out, what: &str, ok: bool) {
    assert!(
        ok,
        "{what}: exit {}\nstdout: {}\nstderr: {}",
        out.code, out.stdout, out.stderr
    );
}

/// One kubectl operation: its arguments and what must hold of its outcome.
struct Op {
    name: &'static str,
    args: Vec<&'static str>,
}

fn op(name: &'static str, args: &[&'static str]) -> Op {
    Op {
        name,
        args: args.to_vec(),
    }
}

async fn start(dir: &Path) -> Server {
    let config = Config {
        manifests: vec![repo().join("dev/kube")],
        namespace: "shop".into(),
        workdir: dir.to_path_buf(),
        rollout: Duration::from_millis(900),
    };
    fake_kube::start(config, "127.0.0.1:0".parse().expect("an address"))
        .await
        .expect("the fake starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_against_the_fake() {
    let paths = kubectl_paths();
    if paths.is_empty() {
        return;
    }
    for path in paths {
        cross_check(&path).await;
    }
}

async fn cross_check(path: &Path) {
    let (version, minor) = client_version(path);
    eprintln!("cross-checking kubectl {version} ({})", path.display());
    let home = tempfile::tempdir().expect("a temp dir");
    let server = start(home.path()).await;
    let kubeconfig = home.path().join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig()).expect("kubeconfig written");
    let k = Kubectl {
        path: path.to_path_buf(),
        home,
        kubeconfig,
    };
    let store = |plural: &str, group: &str, name: &str| {
        let res = fake_kube::discovery::by_plural(group, plural).expect("a served resource");
        server
            .app()
            .store()
            .get(res, "shop", name)
            .expect("the object exists")
    };

    let mut ops = vec![
        op(
            "get-pod",
            &["get", "pod", "toolbox", "-o", "jsonpath={.metadata.name}"],
        ),
        op("get-deploy-shortname", &["get", "deploy", "-o", "name"]),
        op(
            "get-label-selector",
            &["get", "pods", "-l", "app=checkout", "-o", "name"],
        ),
        op(
            "get-field-selector",
            &[
                "get",
                "pods",
                "--field-selector",
                "status.phase=Running,metadata.name=toolbox",
                "-o",
                "name",
            ],
        ),
        op("get-cronjob-shortname", &["get", "cj", "-o", "name"]),
        op("get-missing", &["get", "configmap", "nope"]),
        op("logs-tail", &["logs", "deployment/checkout", "--tail=2"]),
        op(
            "logs-label-selector",
            &["logs", "-l", "app=checkout", "--tail=1"],
        ),
        op(
            "logs-since-timestamps",
            &[
                "logs",
                "toolbox",
                "-c",
                "sidecar",
                "--since=1m",
                "--timestamps",
            ],
        ),
        op(
            "logs-since-old",
            &["logs", "toolbox", "-c", "main", "--since=1h"],
        ),
        op(
            "patch-merge",
            &[
                "patch",
                "configmap",
                "checkout-config",
                "--type",
                "merge",
                "-p",
                r#"{"data":{"LOG_LEVEL":"debug"}}"#,
            ],
        ),
        op(
            "patch-forbidden",
            &[
                "patch",
                "cm",
                "locked-config",
                "--type",
                "merge",
                "-p",
                r#"{"data":{"MODE":"thawed"}}"#,
            ],
        ),
        op(
            "patch-strategic",
            &[
                "patch",
                "deployment",
                "checkout",
                "-p",
                r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"registry.example/checkout:1.4.3"}]}}}}"#,
            ],
        ),
        op(
            "rollout-restart",
            &["rollout", "restart", "deployment/checkout"],
        ),
        op(
            "rollout-status",
            &["rollout", "status", "deployment/checkout", "--timeout=60s"],
        ),
        op(
            "rollout-status-unready",
            &[
                "rollout",
                "status",
                "deployment/fraud-scorer",
                "--timeout=2s",
            ],
        ),
    ];
    let websocket = minor >= 30;
    if websocket {
        ops.push(op(
            "exec-exit-code",
            &[
                "exec",
                "toolbox",
                "-c",
                "main",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
        ));
        ops.push(op(
            "exec-deployment-script",
            &["exec", "deploy/checkout", "--", "status", "--verbose"],
        ));
    } else {
        ops.push(op(
            "exec-spdy-refused",
            &["exec", "toolbox", "-c", "main", "--", "true"],
        ));
    }

    let mut recorded = Vec::new();
    for o in &ops {
        let out = k.run(&server, &o.args).await;
        let lines: Vec<&str> = out.stdout.lines().collect();
        match o.name {
            "get-pod" => expect(&out, o.name, out.code == 0 && out.stdout == "toolbox"),
            "get-deploy-shortname" => expect(&out, o.name, out.code == 0 && lines == ["deployment.apps/checkout", "deployment.apps/fraud-scorer"]),
            "get-label-selector" => expect(&out, o.name, out.code == 0 && lines.len() == 2 && lines.iter().all(|l| l.starts_with("pod/checkout-"))),
            "get-field-selector" => expect(&out, o.name, out.code == 0 && lines == ["pod/toolbox"]),
            "get-cronjob-shortname" => expect(&out, o.name, out.code == 0 && lines == ["cronjob.batch/nightly-retrain"]),
            "get-missing" => expect(&out, o.name, out.code == 1 && out.stderr.contains(r#"Error from server (NotFound): configmaps "nope" not found"#)),
            "logs-tail" => expect(&out, o.name, out.code == 0 && lines == ["ERROR payment gateway timeout after 5000ms", "GET /healthz 200"]),
            "logs-label-selector" => expect(&out, o.name, out.code == 0 && lines == ["GET /healthz 200", "GET /healthz 200"]),
            "logs-since-timestamps" => expect(&out, o.name, out.code == 0 && lines.len() == 1 && {
                let (t, msg) = lines[0].split_once(' ').unwrap_or_default();
                t.parse::<jiff::Timestamp>().is_ok() && msg == "sidecar heartbeat"
            }),
            "logs-since-old" => expect(&out, o.name, out.code == 0 && out.stdout.is_empty()),
            "patch-merge" => {
                expect(&out, o.name, out.code == 0 && out.stdout.trim() == "configmap/checkout-config patched");
                let cm = store("configmaps", "", "checkout-config");
                assert_eq!(cm["data"], json!({"LOG_LEVEL": "debug", "FEATURE_FRAUD_MODEL": "champion"}));
            }
            "patch-forbidden" => {
                expect(&out, o.name, out.code == 1 && out.stderr.contains("Error from server (Forbidden)") && out.stderr.contains(r#"cannot patch resource "configmaps""#));
                assert_eq!(store("configmaps", "", "locked-config")["data"]["MODE"], "frozen");
            }
            "patch-strategic" => {
                expect(&out, o.name, out.code == 0 && out.stdout.trim() == "deployment.apps/checkout patched");
                let d = store("deployments", "apps", "checkout");
                assert_eq!(d["metadata"]["generation"], 2, "a template change bumps the generation");
                assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "registry.example/checkout:1.4.3");
            }
            "rollout-restart" => {
                expect(&out, o.name, out.code == 0 && out.stdout.trim() == "deployment.apps/checkout restarted");
                let d = store("deployments", "apps", "checkout");
                let at = &d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"];
                assert!(at.as_str().is_some_and(|t| !t.is_empty()), "restartedAt set: {d}");
                assert_eq!(d["metadata"]["generation"], 3);
            }
            "rollout-status" => {
                expect(&out, o.name, out.code == 0 && out.stdout.trim_end().ends_with(r#"deployment "checkout" successfully rolled out"#));
                let d = store("deployments", "apps", "checkout");
                assert_eq!(d["status"]["observedGeneration"], 3);
                assert_eq!(d["status"]["availableReplicas"], 2);
            }
            "rollout-status-unready" => expect(&out, o.name, out.code == 1 && out.stdout.contains(r#"Waiting for deployment "fraud-scorer" rollout to finish: 0 of 1 updated replicas are available"#)),
            "exec-exit-code" => expect(&out, o.name, out.code == 3 && out.stdout == "out\n" && out.stderr.contains("err\n") && out.stderr.contains("command terminated with exit code 3")),
            "exec-deployment-script" => expect(&out, o.name, out.code == 0 && lines.len() == 1 && lines[0].starts_with("exec in checkout-") && lines[0].ends_with("/app: status --verbose")),
            "exec-spdy-refused" => expect(&out, o.name, out.code == 1 && out.stderr.contains("SPDY is not supported")),
            other => unreachable!("no check for {other}"),
        }
        recorded.push(json!({ "name": o.name, "args": o.args, "requests": api_requests(&out) }));
    }
    compare_golden(&version, minor, &recorded);
}

/// The golden file of this kubectl's minor version must hold the same requests; without one (a
/// kubectl version no golden file was made for), the patches must still match the 1.20 golden's,
/// as kubectl sends them the same way in every version tried.
fn compare_golden(version: &str, minor: u32, recorded: &[Value]) {
    let dir = repo().join("tests/golden/kube");
    let file = dir.join(format!("kubectl-1.{minor}.json"));
    let doc = json!({ "kubectl": version, "operations": recorded });
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        let text = serde_json::to_string_pretty(&doc).expect("serialisable") + "\n";
        std::fs::write(&file, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
        return;
    }
    let read = |f: &Path| -> Option<Value> {
        let text = std::fs::read_to_string(f).ok()?;
        Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
    };
    if let Some(golden) = read(&file) {
        let ops = golden["operations"].as_array().cloned().unwrap_or_default();
        assert_eq!(
            ops.len(),
            recorded.len(),
            "{}: another list of operations",
            file.display()
        );
        for (want, got) in ops.iter().zip(recorded) {
            assert_eq!(
                want,
                got,
                "kubectl {version}: requests of `{}` differ from {} (UPDATE_GOLDEN=1 rewrites it)",
                got["name"],
                file.display()
            );
        }
        return;
    }
    let base = dir.join("kubectl-1.20.json");
    let golden = read(&base).unwrap_or_else(|| panic!("{} is missing", base.display()));
    let patches = |ops: &[Value]| -> Vec<Value> {
        ops.iter()
            .filter(|o| {
                o["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("patch-") || n == "rollout-restart")
            })
            .flat_map(|o| o["requests"].as_array().cloned().unwrap_or_default())
            .filter(|r| r["method"] == "PATCH")
            .collect()
    };
    let want = patches(
        golden["operations"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default(),
    );
    assert!(
        !want.is_empty(),
        "{} records PATCH requests",
        base.display()
    );
    assert_eq!(
        want,
        patches(recorded),
        "kubectl {version} patches differently from kubectl 1.20"
    );
}

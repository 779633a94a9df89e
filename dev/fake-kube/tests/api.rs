//! The fake's protocol at the byte level, against an in-process server: Status errors, versions,
//! watches, injected faults, broken log streams, exec over both WebSocket subprotocols, and bad
//! manifests.

use fake_kube::{Config, Fault, Server};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn start(workdir: &Path) -> Server {
    let config = Config {
        manifests: vec![repo().join("dev/kube")],
        namespace: "shop".into(),
        workdir: workdir.to_path_buf(),
        rollout: Duration::from_millis(300),
    };
    fake_kube::start(config, "127.0.0.1:0".parse().expect("an address"))
        .await
        .expect("the fake starts")
}

struct Api {
    server: Server,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn new() -> Api {
        let dir = tempfile::tempdir().expect("a temp dir");
        // reqwest is built without a TLS provider; the workspace's one is installed here.
        runbook_steps::init_tls();
        Api {
            server: start(dir.path()).await,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        ct: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut req = self.http.request(method, self.url(path));
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = req.send().await.expect("the fake answers");
        let code = resp.status().as_u16();
        let text = resp.text().await.expect("a body");
        (code, serde_json::from_str(&text).unwrap_or(json!(text)))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None, None).await
    }
}

const CM: &str = "/api/v1/namespaces/shop/configmaps";
const DEPLOY: &str = "/apis/apps/v1/namespaces/shop/deployments";

#[tokio::test]
async fn errors_are_kubernetes_status_objects() {
    let api = Api::new().await;
    let (code, body) = api.get(&format!("{DEPLOY}/nope")).await;
    assert_eq!(code, 404);
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "deployments.apps \"nope\" not found", "reason": "NotFound",
               "details": {"name": "nope", "group": "apps", "kind": "deployments"}, "code": 404})
    );
    let cm =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "checkout-config"}});
    let (code, body) = api
        .call("POST", CM, Some("application/json"), Some(cm))
        .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );
    assert_eq!(body["details"]["name"], "checkout-config");

    let (code, body) = api
        .get(&format!("{CM}?labelSelector=app%20in%20checkout"))
        .await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));
    let (code, body) = api.get(&format!("{CM}?fieldSelector=data.x%3D1")).await;
    assert_eq!(code, 400);
    assert_eq!(body["message"], "field label not supported: data.x");
    let (code, _) = api.get("/apis/nope.example/v1").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn writes_bump_the_resource_version_and_stale_ones_conflict() {
    let api = Api::new().await;
    let (_, before) = api.get(&format!("{CM}/checkout-config")).await;
    let rv: u64 = before["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("a version");
    let patch = json!({"data": {"LOG_LEVEL": "warn"}});
    let (code, after) = api
        .call(
            "PATCH",
            &format!("{CM}/checkout-config"),
            Some("application/merge-patch+json"),
            Some(patch),
        )
        .await;
    assert_eq!(code, 200);
    let rv2: u64 = after["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("a version");
    assert!(rv2 > rv, "{rv2} > {rv}");
    assert_eq!(after["data"]["LOG_LEVEL"], "warn");

    // A replace carrying the old version is refused, as the API server does.
    let (code, body) = api
        .call(
            "PUT",
            &format!("{CM}/checkout-config"),
            Some("application/json"),
            Some(before),
        )
        .await;
    assert_eq!((code, body["reason"].as_str()), (409, Some("Conflict")));
    let (code, body) = api
        .call(
            "PATCH",
            &format!("{CM}/checkout-config"),
            Some("application/apply-patch+yaml"),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );
}

#[tokio::test]
async fn a_template_patch_rolls_out_and_a_watch_sees_it_converge() {
    let api = Api::new().await;
    let (_, d) = api.get(&format!("{DEPLOY}/checkout")).await;
    assert_eq!(d["status"]["availableReplicas"], 2);
    let rv = d["metadata"]["resourceVersion"]
        .as_str()
        .expect("a version")
        .to_string();
    let watch = api
        .http
        .get(api.url(&format!("{DEPLOY}?watch=true&fieldSelector=metadata.name%3Dcheckout&resourceVersion={rv}&timeoutSeconds=30")))
        .send()
        .await
        .expect("a watch");
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}});
    let (code, after) = api
        .call(
            "PATCH",
            &format!("{DEPLOY}/checkout"),
            Some("application/strategic-merge-patch+json"),
            Some(patch),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(after["metadata"]["generation"], 2);
    assert_eq!(after["status"]["observedGeneration"], 1, "not observed yet");

    // Events until the rollout settles: each one a MODIFIED of this deployment.
    let mut stream = watch.bytes_stream();
    let mut buf = Vec::new();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    'events: while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, stream.next()).await {
        buf.extend_from_slice(&chunk.expect("watch bytes"));
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let ev: Value = serde_json::from_slice(&line).expect("a JSON event per line");
            assert_eq!(ev["object"]["metadata"]["name"], "checkout");
            seen.push(ev.clone());
            let s = &ev["object"]["status"];
            if s["observedGeneration"] == 2
                && s["availableReplicas"] == 2
                && s["updatedReplicas"] == 2
            {
                break 'events;
            }
        }
    }
    let last = seen.last().expect("watch events");
    assert_eq!(last["type"], "MODIFIED");
    assert_eq!(
        last["object"]["status"]["conditions"][1]["reason"],
        "NewReplicaSetAvailable"
    );
    assert!(
        seen.len() >= 3,
        "the patch and the rollout's steps: {seen:?}"
    );
    // The pods are the new template's: none of the old hash is left.
    let (_, pods) = api
        .get("/api/v1/namespaces/shop/pods?labelSelector=app%3Dcheckout")
        .await;
    let hashes: Vec<&str> = pods["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|p| p["metadata"]["labels"]["pod-template-hash"].as_str())
        .collect();
    assert_eq!(hashes.len(), 2);
    assert_eq!(hashes[0], hashes[1]);
    assert_eq!(
        hashes[0],
        fake_kube::workload::template_hash(&last["object"]["spec"]["template"])
    );
}

#[tokio::test]
async fn a_deployment_without_ready_pods_stays_unavailable() {
    let api = Api::new().await;
    let (_, d) = api.get(&format!("{DEPLOY}/fraud-scorer")).await;
    assert_eq!(d["status"]["readyReplicas"], 0);
    assert_eq!(d["status"]["unavailableReplicas"], 1);
    assert_eq!(d["status"]["conditions"][0]["status"], "False");
    let (_, pods) = api
        .get("/api/v1/namespaces/shop/pods?labelSelector=app%3Dfraud-scorer")
        .await;
    let pod = &pods["items"][0];
    assert_eq!(pod["status"]["containerStatuses"][0]["ready"], false);
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "CrashLoopBackOff"
    );
}

#[tokio::test]
async fn injected_faults_answer_in_place_of_the_server_and_run_out() {
    let api = Api::new().await;
    let target = format!("{CM}/checkout-config");
    let fault = json!({"path": target, "method": "GET", "code": 403, "times": 1});
    let resp = api
        .http
        .post(api.url("/_fake/faults"))
        .body(fault.to_string())
        .send()
        .await
        .expect("posted");
    assert_eq!(resp.status().as_u16(), 201);
    let (code, body) = api.get(&target).await;
    assert_eq!((code, body["reason"].as_str()), (403, Some("Forbidden")));
    let (code, _) = api.get(&target).await;
    assert_eq!(code, 200, "the fault was for one request");
    api.server.add_fault(Fault {
        path: DEPLOY.into(),
        method: None,
        code: 503,
        message: Some("etcd is down".into()),
        times: None,
    });
    let (code, body) = api.get(&format!("{DEPLOY}/checkout")).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (503, Some("etcd is down"))
    );
}

#[tokio::test]
async fn the_request_log_keeps_what_the_client_sent() {
    let api = Api::new().await;
    api.server.clear_requests();
    let body = json!({"data": {"A": "1"}});
    api.call(
        "PATCH",
        &format!("{CM}/checkout-config?fieldManager=test"),
        Some("application/merge-patch+json"),
        Some(body.clone()),
    )
    .await;
    let resp = api
        .http
        .get(api.url("/_fake/requests"))
        .send()
        .await
        .expect("the log");
    let log: Vec<fake_kube::Recorded> = resp.json().await.expect("JSON");
    assert_eq!(
        log.len(),
        1,
        "the log endpoint itself is not logged: {log:?}"
    );
    assert_eq!(log[0].method, "PATCH");
    assert_eq!(log[0].path, format!("{CM}/checkout-config"));
    assert_eq!(log[0].query, "fieldManager=test");
    assert_eq!(
        log[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        serde_json::from_str::<Value>(&log[0].body).expect("JSON body"),
        body
    );
}

#[tokio::test]
async fn logs_filter_by_time_and_lines_and_a_cut_stream_breaks_off() {
    let api = Api::new().await;
    let pods = "/api/v1/namespaces/shop/pods";
    let (code, body) = api.get(&format!("{pods}/toolbox/log")).await;
    assert_eq!(code, 400);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("choose one of: [main sidecar]")),
        "{body}"
    );
    let text = |v: Value| v.as_str().map(str::to_string).unwrap_or_default();
    let (_, body) = api
        .get(&format!(
            "{pods}/toolbox/log?container=main&timestamps=true"
        ))
        .await;
    assert_eq!(text(body), "2026-01-01T00:00:00Z toolbox ready\n");
    let (_, body) = api
        .get(&format!(
            "{pods}/toolbox/log?container=main&sinceSeconds=3600"
        ))
        .await;
    assert_eq!(text(body), "");

    // A pod whose log breaks off after one line: the client gets that line, then an error.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "flaky", "annotations": {
        "fake-kube/logs": "-20s one\n-10s two\n-5s three\n", "fake-kube/log-cut-after": "1"}},
        "spec": {"containers": [{"name": "c", "image": "x"}]}});
    let (code, _) = api
        .call("POST", pods, Some("application/json"), Some(pod))
        .await;
    assert_eq!(code, 201);
    let resp = api
        .http
        .get(api.url(&format!("{pods}/flaky/log?tailLines=2")))
        .send()
        .await
        .expect("headers");
    let mut stream = resp.bytes_stream();
    let first = stream
        .next()
        .await
        .expect("a chunk")
        .expect("the first line");
    assert_eq!(&first[..], b"two\n");
    let rest = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the stream ends");
    assert!(
        matches!(rest, Some(Err(_))),
        "a broken stream, not a clean end: {rest:?}"
    );
}

/// Runs `command` in `pod` over a WebSocket with `protocol`, sending `stdin` then (v5) closing it;
/// returns stdout, stderr and the status JSON.
async fn exec(
    server: &Server,
    pod: &str,
    container: Option<&str>,
    command: &[&str],
    protocol: &str,
    stdin: Option<&[u8]>,
) -> (String, String, Value) {
    let mut q: Vec<(&str, &str)> = command.iter().map(|c| ("command", *c)).collect();
    q.extend([("stdout", "true"), ("stderr", "true")]);
    q.extend(container.map(|c| ("container", c)));
    if stdin.is_some() {
        q.push(("stdin", "true"));
    }
    let base = format!(
        "ws://{}/api/v1/namespaces/shop/pods/{pod}/exec",
        server.addr()
    );
    let url = reqwest::Url::parse_with_params(&base, q).expect("a URL");
    let mut req = url.as_str().into_client_request().expect("a request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        protocol.parse().expect("a header"),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgraded");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some(protocol)
    );
    if let Some(input) = stdin {
        let mut frame = vec![0u8];
        frame.extend_from_slice(input);
        ws.send(Message::Binary(frame.into()))
            .await
            .expect("stdin sent");
        ws.send(Message::Binary(vec![255u8, 0].into()))
            .await
            .expect("stdin closed");
    }
    let (mut out, mut err, mut status) = (Vec::new(), Vec::new(), Value::Null);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, ws.next()).await {
        match msg {
            Ok(Message::Binary(b)) => match b.first() {
                Some(1) => out.extend_from_slice(&b[1..]),
                Some(2) => err.extend_from_slice(&b[1..]),
                Some(3) => status = serde_json::from_slice(&b[1..]).expect("status JSON"),
                other => panic!("unexpected channel {other:?}"),
            },
            Ok(Message::Close(frame)) => {
                assert_eq!(
                    frame.map(|f| f.code),
                    Some(tungstenite::protocol::frame::coding::CloseCode::Normal)
                );
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("websocket error: {e}"),
        }
    }
    (
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
        status,
    )
}

#[tokio::test]
async fn exec_over_both_websocket_subprotocols() {
    let api = Api::new().await;
    let s = &api.server;
    let (out, err, status) = exec(
        s,
        "toolbox",
        Some("main"),
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
        "v4.channel.k8s.io",
        None,
    )
    .await;
    assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(
        status["details"]["causes"][0],
        json!({"reason": "ExitCode", "message": "3"})
    );

    // v5: the client closes stdin and the command sees end of file.
    let (out, _, status) = exec(
        s,
        "toolbox",
        Some("main"),
        &["cat"],
        "v5.channel.k8s.io",
        Some(b"typed in\n"),
    )
    .await;
    assert_eq!(out, "typed in\n");
    assert_eq!(status, json!({"metadata": {}, "status": "Success"}));

    // A deployment's pods run the template's script with the requested command as arguments.
    let (_, pods) = api
        .get("/api/v1/namespaces/shop/pods?labelSelector=app%3Dcheckout")
        .await;
    let pod = pods["items"][0]["metadata"]["name"]
        .as_str()
        .expect("a pod")
        .to_string();
    let (out, _, status) = exec(s, &pod, None, &["hello"], "v5.channel.k8s.io", None).await;
    assert_eq!(out, format!("exec in {pod}/app: hello\n"));
    assert_eq!(status["status"], "Success");

    // Not a WebSocket (kubectl 1.20's SPDY): refused with a Status that says why.
    let resp = api
        .http
        .post(api.url("/api/v1/namespaces/shop/pods/toolbox/exec?container=main&command=true"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.expect("a Status");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("SPDY is not supported")),
        "{body}"
    );
}

#[tokio::test]
async fn a_manifest_of_an_unserved_kind_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let f = dir.path().join("bad.yaml");
    std::fs::write(&f, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: x}\n")
        .expect("written");
    let config = Config {
        manifests: vec![f.clone()],
        ..Config::default()
    };
    let err = fake_kube::start(config, "127.0.0.1:0".parse().expect("an address"))
        .await
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(msg.contains("bad.yaml") && msg.contains("Ingress"), "{msg}");
}

#[tokio::test]
async fn a_client_that_leaves_takes_the_command_and_its_children_with_it() {
    let api = Api::new().await;
    let base = format!(
        "ws://{}/api/v1/namespaces/shop/pods/toolbox/exec",
        api.server.addr()
    );
    let q = [
        ("container", "main"),
        ("command", "sh"),
        ("command", "-c"),
        ("command", "sleep 300 & echo $!; wait"),
        ("stdout", "true"),
    ];
    let url = reqwest::Url::parse_with_params(&base, q).expect("a URL");
    let mut req = url.as_str().into_client_request().expect("a request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "v5.channel.k8s.io".parse().expect("a header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgraded");
    let first = tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .expect("output in time");
    let Some(Ok(Message::Binary(b))) = first else {
        panic!("stdout first: {first:?}")
    };
    assert_eq!(b[0], 1);
    let pid: u32 = String::from_utf8_lossy(&b[1..])
        .trim()
        .parse()
        .expect("the background pid");
    let alive =
        || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
    assert!(
        alive(),
        "the background sleep runs while the client is there"
    );
    drop(ws);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while alive() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pid {pid} outlived the client by 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

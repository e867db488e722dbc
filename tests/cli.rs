//! The real binary: CLI, config checking, serving, logs and graceful shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    f
}

#[test]
fn version_and_help() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("tollgate {}", env!("CARGO_PKG_VERSION"))
    );
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("serve") && help.contains("check"), "{help}");
    let out = Command::new(BIN).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--config") && help.contains("--listen"), "{help}");
}

#[test]
fn check_accepts_the_shipped_config_without_any_keys() {
    let out = Command::new(BIN)
        .args(["check", "config/tollgate.yaml"])
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("HF_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(": ok ("), "{stdout}");
    assert!(stdout.contains("OPENAI_API_KEY not set"), "{stdout}");
}

#[test]
fn check_points_at_the_line_of_every_mistake() {
    let cfg = write_config(
        "server:\n  listen: 127.0.0.1:4000\nproviders:\n  sim:\n    kind: simulated\nmodels:\n  - name: a\n    provider: sim\n  - name: b\n    provider: simm\n",
    );
    let out = Command::new(BIN).args(["check"]).arg(cfg.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 10: models[1].provider: unknown provider `simm`"),
        "{err}"
    );

    let cfg = write_config("server:\n  listen: 127.0.0.1:4000\n  max_bdy: 1MiB\n");
    let out = Command::new(BIN).args(["check"]).arg(cfg.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3, column 3") && err.contains("max_bdy"), "{err}");

    let out = Command::new(BIN)
        .args(["check", "/nonexistent/tollgate.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the file"));
}

#[test]
fn serve_refuses_a_bad_config() {
    let cfg = write_config("models: []\n");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no models are configured"));
}

struct Server {
    child: Child,
    addr: String,
    logs: std::sync::mpsc::Receiver<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(config: &str) -> (Server, tempfile::NamedTempFile) {
    let cfg = write_config(config);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(cfg.path())
        .args(["--listen", &addr])
        .env("TG_KEY", "tg-cli-key-1")
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, logs) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "tollgate did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Server { child, addr, logs }, cfg)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SLOW_SIM: &str = r#"
auth:
  keys: ["${TG_KEY}"]
logging:
  format: json
providers:
  slow: { kind: simulated, ttft: 100ms, tokens_per_second: 20, completion_tokens: 20 }
models:
  - { name: slow, provider: slow }
"#;

#[tokio::test]
async fn sigterm_drains_an_in_flight_stream_then_exits() {
    let (mut server, _cfg) = start(SLOW_SIM);
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/chat/completions", server.addr);
    let resp = client
        .post(&url)
        .bearer_auth("tg-cli-key-1")
        .header("x-request-id", "cli-req-42")
        .json(&serde_json::json!({"model": "slow", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let probe = Command::new(BIN)
        .args(["healthcheck", "--addr", &server.addr])
        .output()
        .unwrap();
    assert!(probe.status.success(), "{}", String::from_utf8_lossy(&probe.stderr));
    // About one second of stream remains: signal now.
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "the stream finished: {text}");
    assert_eq!(
        text.matches("data: ").count(),
        20 + 3,
        "20 tokens, role and finish chunks, [DONE]"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "tollgate did not exit after draining");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let probe = Command::new(BIN)
        .args(["healthcheck", "--addr", &server.addr])
        .output()
        .unwrap();
    assert!(!probe.status.success(), "healthcheck fails once the gateway is gone");
    // JSON logs, one object per line, with the request id; never the gateway key.
    let logs: Vec<String> = server.logs.try_iter().collect();
    let access = logs
        .iter()
        .find(|l| l.contains("cli-req-42"))
        .unwrap_or_else(|| panic!("{logs:?}"));
    let v: serde_json::Value = serde_json::from_str(access).unwrap();
    assert_eq!(v["request_id"], "cli-req-42");
    assert!(logs.iter().any(|l| l.contains("SIGTERM")));
    assert!(!logs.iter().any(|l| l.contains("tg-cli-key-1")));
}

fn reload_config(target: &str) -> String {
    format!(
        r#"
auth:
  keys: ["${{TG_KEY}}"]
logging:
  format: json
providers:
  sim-a: {{ kind: simulated, completion_tokens: 2 }}
  sim-b: {{ kind: simulated, completion_tokens: 2 }}
models:
  - {{ name: a, provider: sim-a }}
  - {{ name: b, provider: sim-b }}
routes:
  - {{ name: main, match: {{ model: m }}, targets: [{target}] }}
"#
    )
}

#[tokio::test]
async fn reloads_apply_under_load_without_a_failed_request_and_bad_files_are_refused() {
    let (server, cfg) = start(&reload_config("a"));
    let url = format!("http://{}/v1/chat/completions", server.addr);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (url, stop) = (url.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut ok, mut failed, mut served_by) = (0u32, Vec::new(), std::collections::BTreeSet::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
                match client.post(&url).bearer_auth("tg-cli-key-1").json(&body).send().await {
                    Ok(r) if r.status() == 200 => {
                        ok += 1;
                        served_by.insert(r.headers()["x-tollgate-backend"].to_str().unwrap().to_owned());
                    }
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed, served_by)
        }));
    }
    let backend = |client: reqwest::Client, url: String| async move {
        let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let r = client
            .post(&url)
            .bearer_auth("tg-cli-key-1")
            .json(&body)
            .send()
            .await
            .unwrap();
        r.headers()["x-tollgate-backend"].to_str().unwrap().to_owned()
    };
    let wait_for = |want: &'static str| {
        let url = url.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(8);
            loop {
                if backend(reqwest::Client::new(), url.clone()).await == want {
                    return;
                }
                assert!(Instant::now() < deadline, "the reload to {want} never took effect");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = server.child.id().to_string();
    // SIGHUP: the new route applies.
    std::fs::write(cfg.path(), reload_config("b")).unwrap();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    wait_for("sim-b/b").await;
    // A bad file is refused; the running config stays.
    std::fs::write(cfg.path(), "routes: [this is not a route]\n").unwrap();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(backend(reqwest::Client::new(), url.clone()).await, "sim-b/b");
    // A change to the file alone is noticed too.
    std::fs::write(cfg.path(), reload_config("a")).unwrap();
    wait_for("sim-a/a").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut total, mut seen) = (0, std::collections::BTreeSet::new());
    for task in load {
        let (ok, failed, served_by) = task.await.unwrap();
        assert!(failed.is_empty(), "failed requests during reloads: {failed:?}");
        total += ok;
        seen.extend(served_by);
    }
    assert!(total > 50, "the load ran: {total} requests");
    assert!(seen.contains("sim-a/a") && seen.contains("sim-b/b"), "{seen:?}");
    let metrics = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"tollgate_config_reloads_total{result="error"} 1"#),
        "{metrics}"
    );
    // Two good reloads at least: to `b` by SIGHUP and back to `a` (the file
    // watcher may also have seen `b`'s write before the signal).
    let ok: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"tollgate_config_reloads_total{result="ok"} "#))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(ok >= 2.0, "{metrics}");
    let logs: Vec<String> = server.logs.try_iter().collect();
    assert!(logs.iter().any(|l| l.contains("config rejected")), "{logs:?}");
}

#[tokio::test]
async fn sigterm_in_the_middle_of_load_loses_no_ledger_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("usage.db");
    let config = format!(
        "auth:\n  keys: [\"${{TG_KEY}}\"]\nlogging:\n  format: json\nledger: {{ url: \"sqlite://{}\" }}\nproviders:\n  sim: {{ kind: simulated, ttft: 5ms, completion_tokens: 3 }}\nmodels:\n  - {{ name: m, provider: sim }}\n",
        db.display()
    );
    let (mut server, _cfg) = start(&config);
    let url = format!("http://{}/v1/chat/completions", server.addr);
    let mut load = Vec::new();
    for _ in 0..8 {
        let url = url.clone();
        load.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut answered = 0u32;
            loop {
                let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
                match client.post(&url).bearer_auth("tg-cli-key-1").json(&body).send().await {
                    Ok(resp) => {
                        if resp.bytes().await.is_ok() {
                            answered += 1;
                        }
                    }
                    // The listener is gone: the gateway is shutting down.
                    Err(_) => return answered,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut answered = 0;
    for task in load {
        answered += task.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "tollgate did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(answered > 20, "the load ran: {answered}");
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let rows: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) AS n FROM tollgate_usage")
            .fetch_one(&pool)
            .await
            .unwrap(),
        "n",
    );
    assert_eq!(rows, i64::from(answered), "every answered request has its row");
    let logs: Vec<String> = server.logs.try_iter().collect();
    assert!(logs.iter().any(|l| l.contains("usage ledger flushed")), "{logs:?}");
}

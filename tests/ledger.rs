//! The usage ledger: every request a row, none lost under concurrency, in
//! SQLite and in the real PostgreSQL on 127.0.0.1:5432 (database `test`),
//! and no raw key in the database.

mod common;

use common::{MockUpstream, Script, TestGateway};
use serde_json::json;
use sqlx::Row;

const KEY: &str = "tg-ledger-key-0123456789";

fn config(url: &str, mock: &MockUpstream) -> String {
    format!(
        r#"auth:
  keys: ["${{TG_KEY}}"]
ledger: {{ url: "{url}", batch: 200, flush_interval: 50ms }}
providers:
  sim: {{ kind: simulated, completion_tokens: 4 }}
  mock: {{ kind: openai, base_url: "{base}" }}
models:
  - {{ name: fast, provider: sim, catalog: gpt-4o-mini }}
  - {{ name: up, provider: mock, upstream_model: gpt-4o }}
"#,
        base = mock.base_url()
    )
}

/// 1,000 requests at once, streamed and not, one failing upstream among them;
/// after a graceful stop the ledger has exactly one row per request.
async fn every_request_is_a_row(url: &str, run: &str) {
    sqlx::any::install_default_drivers();
    let mock = MockUpstream::start().await;
    mock.push(Script::json(503, json!({"error": {"message": "overloaded"}})));
    let mut gw = TestGateway::start(&config(url, &mock), &[("TG_KEY", KEY)]).await;
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let (client, url) = (client.clone(), gw.url("/v1/chat/completions"));
        let id = format!("{run}-{i:04}");
        tasks.push(tokio::spawn(async move {
            let model = if i == 0 { "up" } else { "fast" };
            let body = json!({"model": model, "stream": i % 2 == 1, "messages": [{"role": "user", "content": "hi"}]});
            let resp = client
                .post(url)
                .bearer_auth(KEY)
                .header("x-request-id", id)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            resp.bytes().await.unwrap();
            status
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 999);
    gw.stop().await;

    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let like = format!("{run}-%");
    let rows = sqlx::query("SELECT id, key_id, status, completion_tokens, cost_pico, usage_source, stream, backend, route FROM tollgate_usage WHERE id LIKE $1")
        .bind(&like)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1000, "one row per request, none lost");
    let failed: Vec<_> = rows.iter().filter(|r| r.get::<i64, _>("status") == 503).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].get::<String, _>("backend"), "mock/up");
    let ok = rows.iter().find(|r| r.get::<i64, _>("status") == 200).unwrap();
    assert_eq!(ok.get::<i64, _>("completion_tokens"), 4);
    assert!(ok.get::<i64, _>("cost_pico") > 0, "gpt-4o-mini is priced");
    assert_eq!(ok.get::<String, _>("usage_source"), "reported");
    assert_eq!(ok.get::<String, _>("route"), "direct");
    let streams = rows.iter().filter(|r| r.get::<i64, _>("stream") == 1).count();
    assert_eq!(streams, 500);
    let key_id: String = ok.get("key_id");
    assert!(key_id.starts_with("k-") && key_id.len() == 14, "{key_id}");
    // The raw key is nowhere in the table.
    let leaked: i64 = sqlx::query("SELECT COUNT(*) AS n FROM tollgate_usage WHERE key_id LIKE $1 OR id LIKE $1")
        .bind(format!("%{KEY}%"))
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("n");
    assert_eq!(leaked, 0);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_a_row_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/ledger/tollgate.db", dir.path().display());
    every_request_is_a_row(&url, "sqlite").await;
    let db = std::fs::read(dir.path().join("ledger/tollgate.db")).unwrap();
    assert!(
        !db.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
        "the raw key is nowhere in the file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_a_row_per_request() {
    // Unique per run: the database keeps rows between runs, and process ids come round again.
    let run = format!("pg-{}", uuid::Uuid::new_v4());
    every_request_is_a_row("postgres://postgres@127.0.0.1:5432/test", &run).await;
}

/// A ledger with known rows: backend p/a four requests (one failed), p/b two,
/// plus a shadow row and a row from two days ago, which reports leave out.
async fn seeded(url: &str) {
    use tollgate::metering::ledger::{Ledger, LedgerSettings, Row};
    let settings = LedgerSettings {
        url: url.to_owned(),
        queue: 100,
        batch: 10,
        flush_interval: std::time::Duration::from_millis(10),
    };
    let metrics = tollgate::metering::Metrics::new();
    let (ledger, writer) = Ledger::open(&settings, metrics.ledger_counters()).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let row = |backend: &str, model: &str, ms: i64, status: i64, cost: i64| Row {
        id: format!("seed-{backend}-{ms}"),
        ts_ms: now - 1000,
        key_id: Some("k-0123456789ab".into()),
        route: "main".into(),
        backend: backend.into(),
        provider: "p".into(),
        requested_model: model.into(),
        served_model: model.into(),
        prompt_tokens: 10,
        completion_tokens: 5,
        usage_source: "reported",
        cost_pico: cost,
        cost_source: "catalog",
        ttft_ms: Some(ms / 10),
        duration_ms: ms,
        status,
        ..Row::default()
    };
    for (ms, status) in [(100, 200), (200, 200), (300, 200), (400, 500)] {
        ledger.record(row("p/a", "a", ms, status, 1_000_000_000));
    }
    for ms in [50, 60] {
        ledger.record(row("p/b", "b", ms, 200, 0));
    }
    ledger.record(Row {
        shadow: true,
        ..row("p/a", "a", 9000, 200, 5)
    });
    ledger.record(Row {
        ts_ms: now - 2 * 86_400_000,
        ..row("p/a", "a", 9000, 200, 5)
    });
    assert!(writer.finish(std::time::Duration::from_secs(5)).await);
}

#[tokio::test]
async fn reports_print_the_right_figures_for_a_seeded_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/report.db", dir.path().display());
    seeded(&url).await;
    let cfg = dir.path().join("tollgate.yaml");
    std::fs::write(
        &cfg,
        format!("ledger: {{ url: \"{url}\" }}\nproviders:\n  sim: {{ kind: simulated }}\nmodels:\n  - {{ name: m, provider: sim }}\n"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("report")
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let v: serde_json::Value =
        serde_json::from_str(&run(&["--since", "24h", "--by", "backend", "--format", "json"])).unwrap();
    assert_eq!(
        v[0],
        json!({"group": "p/a", "requests": 4, "errors": 1, "error_rate": 0.25, "prompt_tokens": 40, "completion_tokens": 20,
               "cost_usd": "0.004", "cost_per_1k_requests_usd": "1", "p50_latency_ms": 200, "p95_latency_ms": 400,
               "p50_ttft_ms": 20, "p95_ttft_ms": 40})
    );
    assert_eq!(v[1]["group"], "p/b");
    assert_eq!(
        (v[1]["requests"].as_u64(), v[1]["cost_usd"].as_str()),
        (Some(2), Some("0"))
    );
    let week: serde_json::Value = serde_json::from_str(&run(&["--since", "7d", "--format", "json"])).unwrap();
    assert_eq!(week[0]["requests"], 5, "the old row is within a week");
    let table = run(&["--by", "model"]);
    assert!(table.lines().next().unwrap().starts_with("group"), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("a ") && l.contains("0.004")),
        "{table}"
    );
    let csv = run(&["--format", "csv", "--by", "route"]);
    assert!(csv.contains("\nmain,6,"), "{csv}");

    // The same report over the admin API.
    let yaml = format!(
        "auth:\n  admin_keys: [\"${{ADMIN}}\"]\nledger: {{ url: \"{url}\" }}\nproviders:\n  sim: {{ kind: simulated }}\nmodels:\n  - {{ name: m, provider: sim }}\n"
    );
    let gw = TestGateway::start(&yaml, &[("ADMIN", "admin-0123456789")]).await;
    let resp = reqwest::Client::new()
        .get(gw.url("/admin/usage?since=24h&by=backend"))
        .bearer_auth("admin-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let api: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(api["groups"], v);
    let resp = reqwest::get(gw.url("/admin/usage")).await.unwrap();
    assert_eq!(resp.status(), 401, "admin key required");
}

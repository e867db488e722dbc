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
    let run = format!("pg-{}", std::process::id());
    every_request_is_a_row("postgres://postgres@127.0.0.1:5432/test", &run).await;
}

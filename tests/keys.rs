//! Managed keys, teams, their rate limits and budgets: made with the CLI and
//! the admin API, stored hashed (SQLite and the real PostgreSQL), enforced
//! by a gateway on a real socket.

mod common;

use common::{TestGateway, json_of, metric, sse_data};
use serde_json::{Value, json};

const ADMIN: &str = "tg-admin-0123456789abcdef";
const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

fn config(url: &str, extra: &str) -> String {
    format!(
        r#"auth:
  admin_keys: ["${{ADMIN}}"]
  managed_keys: true
{extra}
ledger: {{ url: "{url}", flush_interval: 20ms }}
providers:
  sim: {{ kind: simulated, completion_tokens: 4 }}
  sim-long: {{ kind: simulated, completion_tokens: 60, tokens_per_second: 400 }}
models:
  - {{ name: fast, provider: sim, catalog: gpt-4o-mini }}
  - {{ name: long, provider: sim-long, catalog: gpt-4o }}
  - {{ name: dedicated, provider: sim }}
"#
    )
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}/ledger.db", dir.path().display())
}

/// A request to the admin API, with the master key.
fn admin(gw: &TestGateway, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new().request(method, gw.url(path)).bearer_auth(ADMIN)
}

async fn start(yaml: &str) -> TestGateway {
    TestGateway::start(yaml, &[("ADMIN", ADMIN)]).await
}

/// Makes a key through the admin API; returns (key, id).
async fn create_key(gw: &TestGateway, body: Value) -> (String, String) {
    let resp = admin(gw, reqwest::Method::POST, "/admin/keys")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.unwrap();
    (
        v["key"].as_str().unwrap().to_owned(),
        v["id"].as_str().unwrap().to_owned(),
    )
}

async fn chat(gw: &TestGateway, key: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]})
}

fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(args)
        .env("ADMIN", ADMIN)
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_cli_and_the_admin_api_make_list_and_revoke_keys_stored_only_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let file = dir.path().join("tollgate.yaml");
    std::fs::write(&file, config(&url, "")).unwrap();
    let file = file.to_str().unwrap();

    let made = cli(&[
        "keys",
        "create",
        "--config",
        file,
        "--name",
        "ci bot",
        "--team",
        "ml",
        "--budget-daily",
        "2.50",
        "--rpm",
        "30",
    ]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let cli_key = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    assert!(cli_key.starts_with("tg-") && cli_key.len() == 51, "{cli_key}");
    let cli_id = tollgate::server::auth::id_of(cli_key.as_bytes());
    assert!(String::from_utf8_lossy(&made.stderr).contains(&cli_id));

    let gw = start(&config(&url, "")).await;
    assert_eq!(chat(&gw, &cli_key, hello("fast")).await.status(), 200);
    assert_eq!(chat(&gw, "tg-not-a-key", hello("fast")).await.status(), 401);
    // Client keys are not admin keys.
    let refused = reqwest::Client::new()
        .get(gw.url("/admin/keys"))
        .bearer_auth(&cli_key)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let (api_key, api_id) = create_key(
        &gw,
        json!({"name": "notebook", "budget_monthly_usd": "10", "tpm": 5000}),
    )
    .await;
    // Accepted at once by the gateway that made it.
    assert_eq!(chat(&gw, &api_key, hello("fast")).await.status(), 200);

    let list: Value = json_of(admin(&gw, reqwest::Method::GET, "/admin/keys")).await;
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{list}");
    assert_eq!(data[0]["id"], cli_id);
    assert_eq!(data[0]["name"], "ci bot");
    assert_eq!(data[0]["team"], "ml");
    assert_eq!(data[0]["budget_daily_usd"], 2.5);
    assert_eq!(data[0]["rpm"], 30);
    assert_eq!(data[1]["id"], api_id);
    assert_eq!(data[1]["budget_monthly_usd"], 10.0);
    let text = list.to_string();
    assert!(!text.contains(&cli_key) && !text.contains(&api_key) && !text.contains("digest"));

    // A bad request is a 400 naming the field.
    let bad = admin(&gw, reqwest::Method::POST, "/admin/keys")
        .json(&json!({"name": "x", "budget_daily_usd": "lots"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let bad: Value = bad.json().await.unwrap();
    assert!(bad["error"]["message"].as_str().unwrap().contains("`lots`"), "{bad}");

    let revoked = admin(&gw, reqwest::Method::DELETE, &format!("/admin/keys/{api_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(chat(&gw, &api_key, hello("fast")).await.status(), 401);
    let again = admin(&gw, reqwest::Method::DELETE, &format!("/admin/keys/{api_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);

    // The CLI sees the same keys, and revokes too.
    let listed = cli(&["keys", "list", "--all", "--config", file]);
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains(&cli_id) && listed.contains("ci bot") && listed.contains("2.5"),
        "{listed}"
    );
    assert!(
        listed.lines().any(|l| l.contains(&api_id) && l.contains("revoked")),
        "{listed}"
    );
    let out = cli(&["keys", "revoke", &cli_id, "--config", file]);
    assert!(out.status.success());
    assert!(!cli(&["keys", "revoke", &cli_id, "--config", file]).status.success());
    gw.gateway
        .registry
        .refresh(gw.gateway.store.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!(chat(&gw, &cli_key, hello("fast")).await.status(), 401);

    // Neither key is anywhere in the database file, nor its WAL.
    let mut gw = gw;
    gw.stop().await;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for key in [&cli_key, &api_key] {
            assert!(
                bytes.windows(key.len()).all(|w| w != key.as_bytes()),
                "a raw key is stored"
            );
        }
    }
}

#[tokio::test]
async fn postgres_keeps_keys_too() {
    let url = "postgres://postgres@127.0.0.1:5432/test";
    let store = tollgate::keys::KeyStore::open(url).await.unwrap();
    let name = format!("pg-{}", uuid::Uuid::new_v4());
    let (record, secret) = store
        .create(&tollgate::keys::NewKey {
            name: name.clone(),
            team: Some("ml".into()),
            budget_daily_usd: Some(1_250_000_000_000),
            ..Default::default()
        })
        .await
        .unwrap();
    let listed = store.list(false).await.unwrap();
    let found = listed.iter().find(|k| k.name == name).unwrap();
    assert_eq!(found, &record);
    assert_eq!(found.budget_daily_usd, Some(1_250_000_000_000));
    let stored: Vec<(String,)> = sqlx::query_as("SELECT digest FROM tollgate_keys WHERE id = $1")
        .bind(&record.id)
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0].0, secret);
    assert!(!stored[0].0.contains(&secret[3..]));
    assert!(store.revoke(&record.id).await.unwrap());
    assert!(!store.list(false).await.unwrap().iter().any(|k| k.name == name));
}

#[tokio::test]
async fn key_and_team_rate_limits_answer_429_with_openai_headers() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(&config(&sqlite_url(&dir), "teams:\n  ml: { rpm: 3 }")).await;
    let (two_rpm, _) = create_key(&gw, json!({"name": "a", "rpm": 2})).await;
    assert_eq!(chat(&gw, &two_rpm, hello("fast")).await.status(), 200);
    assert_eq!(chat(&gw, &two_rpm, hello("fast")).await.status(), 200);
    let third = chat(&gw, &two_rpm, hello("fast")).await;
    assert_eq!(third.status(), 429);
    let h = third.headers().clone();
    assert_eq!(h["x-ratelimit-limit-requests"], "2");
    assert_eq!(h["x-ratelimit-remaining-requests"], "0");
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");

    // A team's limit is shared by its keys: three requests between two keys.
    let over = fourth_request_of_team_ml(&gw).await;
    assert_eq!(over.status(), 429);
    assert_eq!(over.headers()["x-ratelimit-limit-requests"], "3");

    let m = gw.metrics().await;
    let refused = |scope: &str| {
        metric(
            &m,
            &format!(r#"tollgate_rate_limited_total{{limit="requests",model="",provider="",scope="{scope}"}}"#),
        )
    };
    assert_eq!(refused("key"), Some(1.0), "{m}");
    assert_eq!(refused("team"), Some(1.0), "{m}");
}

#[tokio::test]
async fn tokens_per_minute_reserve_the_estimate_and_settle_with_actual_usage() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(&config(&sqlite_url(&dir), "")).await;
    let (key, _) = create_key(&gw, json!({"name": "t", "tpm": 100})).await;
    // Each reserves its prompt (3) and max_tokens (80): 83 of 100. Without
    // settling, the second could not pass; it uses 3 + 4, and 76 come back.
    let asking = |max: u64| json!({"model": "fast", "max_tokens": max, "messages": [{"role": "user", "content": "hello there"}]});
    for _ in 0..3 {
        assert_eq!(chat(&gw, &key, asking(80)).await.status(), 200);
    }
    // A whole minute's worth cannot fit while anything is used.
    let refused = chat(&gw, &key, asking(500)).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["x-ratelimit-limit-tokens"], "100");
    assert!(refused.headers().contains_key("x-ratelimit-reset-tokens"));
}

/// Two keys of team `ml`: three requests between them pass; returns the fourth.
async fn fourth_request_of_team_ml(gw: &TestGateway) -> reqwest::Response {
    let (a, _) = create_key(gw, json!({"name": "a", "team": "ml"})).await;
    let (b, _) = create_key(gw, json!({"name": "b", "team": "ml"})).await;
    for key in [&a, &b, &a] {
        assert_eq!(chat(gw, key, hello("fast")).await.status(), 200);
    }
    chat(gw, &b, hello("fast")).await
}

/// The cost of one `fast` request, as the gateway reports it.
async fn cost_of_one(gw: &TestGateway, key: &str) -> f64 {
    let resp = chat(gw, key, hello("fast")).await;
    assert_eq!(resp.status(), 200);
    resp.headers()["x-tollgate-cost-usd"].to_str().unwrap().parse().unwrap()
}

/// The cost of one `fast` request, measured on a gateway of its own over the ledger at `url`.
async fn cost_of_one_on(url: &str) -> f64 {
    let gw = start(&config(url, "")).await;
    let (probe, _) = create_key(&gw, json!({"name": "probe"})).await;
    cost_of_one(&gw, &probe).await
}

#[tokio::test]
async fn a_spent_budget_refuses_the_next_request_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(&sqlite_url(&dir), "teams:\n  ml: {}\nmetrics: { key_labels: true }");
    let mut gw = start(&yaml).await;
    let (probe, _) = create_key(&gw, json!({"name": "probe"})).await;
    let one = cost_of_one(&gw, &probe).await;
    assert!(one > 0.0);
    // Two requests' worth: the third is refused, not the second.
    let budget = format!("{:.12}", one * 2.0);
    let (key, id) = create_key(&gw, json!({"name": "b", "team": "ml", "budget_daily_usd": budget})).await;
    assert_eq!(chat(&gw, &key, hello("fast")).await.status(), 200);
    assert_eq!(chat(&gw, &key, hello("fast")).await.status(), 200);
    let refused = chat(&gw, &key, hello("fast")).await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "budget_exceeded");
    assert_eq!(body["error"]["type"], "insufficient_quota");

    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, r#"tollgate_budget_rejected_total{period="day",scope="key"}"#),
        Some(1.0)
    );
    let used = metric(
        &m,
        &format!(r#"tollgate_budget_used_ratio{{name="{id}",period="day",scope="key"}}"#),
    )
    .unwrap();
    assert!((used - 1.0).abs() < 1e-6, "{used}");
    // Key labels: the key's own series.
    assert_eq!(
        metric(
            &m,
            &format!(r#"tollgate_key_requests_total{{key="{id}",status="200",team="ml"}}"#)
        ),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            &format!(r#"tollgate_key_requests_total{{key="{id}",status="429",team="ml"}}"#)
        ),
        Some(1.0)
    );
    let key_cost = metric(&m, &format!(r#"tollgate_key_cost_usd_total{{key="{id}",team="ml"}}"#)).unwrap();
    assert!((key_cost - one * 2.0).abs() < 1e-12, "{key_cost}");

    // A new gateway on the same ledger knows what was spent.
    gw.stop().await;
    let gw = start(&yaml).await;
    let refused = chat(&gw, &key, hello("fast")).await;
    assert_eq!(refused.status(), 429);
    // The other key has its own budget (none): still served.
    assert_eq!(chat(&gw, &probe, hello("fast")).await.status(), 200);
}

#[tokio::test]
async fn a_team_budget_is_spent_by_all_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let one = cost_of_one_on(&url).await;
    let team = format!("teams:\n  ml: {{ budget: {{ daily: \"{:.12}\" }} }}", one * 3.0);
    let gw = start(&config(&format!("sqlite://{}/other.db", dir.path().display()), &team)).await;
    let refused = fourth_request_of_team_ml(&gw).await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "budget_exceeded");
    assert!(body["error"]["message"].as_str().unwrap().contains("team"));
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, r#"tollgate_budget_rejected_total{period="day",scope="team"}"#),
        Some(1.0)
    );
    assert!(
        m.contains(r#"tollgate_budget_used_ratio{name="ml",period="day",scope="team"} 1"#),
        "{m}"
    );
    // The report by team: the team's four requests, one refused.
    let mut report = Value::Null;
    for _ in 0..50 {
        report = json_of(admin(&gw, reqwest::Method::GET, "/admin/usage?since=1h&by=team")).await;
        if report["groups"][0]["requests"] == 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let ml = &report["groups"][0];
    assert_eq!(
        (ml["group"].as_str(), ml["requests"].as_u64(), ml["errors"].as_u64()),
        (Some("ml"), Some(4), Some(1)),
        "{report}"
    );
}

#[tokio::test]
async fn a_stream_that_crosses_its_budget_is_cut_and_metered_to_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = start(&config(&sqlite_url(&dir), "  cut_streams_over_budget: true")).await;
    // gpt-4o: $10 per million output tokens. The prompt costs about $0.00001;
    // $0.0001 more is ten completion tokens, far fewer than the 60 it would stream.
    let (key, id) = create_key(&gw, json!({"name": "s", "budget_daily_usd": "0.0001"})).await;
    let body =
        json!({"model": "long", "stream": true, "messages": [{"role": "user", "content": "tell me a long story"}]});
    let resp = chat(&gw, &key, body).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let events = sse_data(&text);
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "budget_exceeded", "{text}");
    assert!(!text.contains("[DONE]"));
    let content_chunks = events.iter().filter(|e| e.contains("\"content\"")).count();
    assert!(
        (2..40).contains(&content_chunks),
        "{content_chunks} chunks before the cut"
    );
    // Spent: the next request is refused before it starts.
    let next = chat(&gw, &key, hello("fast")).await;
    assert_eq!(next.status(), 429);
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, r#"tollgate_budget_stream_cutoffs_total{period="day",scope="key"}"#),
        Some(1.0)
    );
    gw.stop().await;
    // The ledger has the cut stream: estimated usage, costed, marked.
    let pool = sqlx::AnyPool::connect(&sqlite_url(&dir)).await.unwrap();
    let (status, usage_source, error_kind, cost, completion): (i64, String, Option<String>, i64, i64) = sqlx::query_as(
        "SELECT status, usage_source, error_kind, cost_pico, completion_tokens FROM tollgate_usage \
         WHERE key_id = $1 AND stream = 1",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((status, usage_source.as_str()), (429, "estimated"));
    assert_eq!(error_kind.as_deref(), Some("budget_cutoff"));
    assert!(cost > 100_000_000, "{cost}");
    assert!((1..60).contains(&completion), "{completion}");
}

#[tokio::test]
async fn routes_match_a_keys_team() {
    let dir = tempfile::tempdir().unwrap();
    let routes = "routes:\n  - { name: ml-team, match: { teams: [ml] }, targets: [dedicated] }";
    let gw = start(&format!("{}{routes}\n", config(&sqlite_url(&dir), ""))).await;
    let (ml, _) = create_key(&gw, json!({"name": "a", "team": "ml"})).await;
    let (other, _) = create_key(&gw, json!({"name": "b", "team": "web"})).await;
    let routed = chat(&gw, &ml, hello("fast")).await;
    assert_eq!(routed.headers()["x-tollgate-route"], "ml-team");
    assert_eq!(routed.headers()["x-tollgate-backend"], "sim/dedicated");
    let direct = chat(&gw, &other, hello("fast")).await;
    assert_eq!(direct.headers()["x-tollgate-route"], "direct");
}

#[tokio::test]
async fn a_backend_whose_budget_is_spent_is_skipped_and_restarts_remember_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let one = cost_of_one_on(&url).await;
    // `capped` may spend two requests' worth a day; the route spills to `dedicated` after.
    let yaml = format!(
        r#"auth:
  admin_keys: ["${{ADMIN}}"]
ledger: {{ url: "sqlite://{dir}/capped.db", flush_interval: 20ms }}
providers:
  sim: {{ kind: simulated, completion_tokens: 4 }}
models:
  - {{ name: capped, provider: sim, catalog: gpt-4o-mini, budget: {{ daily: "{budget:.12}" }} }}
  - {{ name: dedicated, provider: sim }}
routes:
  - {{ name: spill, match: {{ model: spill }}, targets: [capped, dedicated] }}
"#,
        dir = dir.path().display(),
        budget = one * 2.0
    );
    let mut gw = start(&yaml).await;
    let mut served = Vec::new();
    for _ in 0..3 {
        let resp = gw.post("/v1/chat/completions", &hello("spill")).await;
        assert_eq!(resp.status(), 200);
        served.push(resp.headers()["x-tollgate-backend"].to_str().unwrap().to_owned());
    }
    assert_eq!(served, ["sim/capped", "sim/capped", "sim/dedicated"]);
    // Asked for by name, it says why it cannot serve.
    let resp = gw.post("/v1/chat/completions", &hello("capped")).await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("daily budget"),
        "{body}"
    );
    let m = gw.metrics().await;
    let used = metric(
        &m,
        r#"tollgate_budget_used_ratio{name="sim/capped",period="day",scope="backend"}"#,
    )
    .unwrap();
    assert!((used - 1.0).abs() < 1e-6, "{used}");
    // The explanation names it too.
    let explained: Value = json_of(admin(&gw, reqwest::Method::POST, "/v1/route/explain").json(&hello("spill"))).await;
    let dropped = &explained["dropped"][0];
    assert_eq!(dropped["model"], "capped", "{explained}");
    assert!(
        dropped["reason"].as_str().unwrap().contains("daily budget"),
        "{explained}"
    );
    // A restart starts from the ledger's total: still spent.
    gw.stop().await;
    let gw = start(&yaml).await;
    let resp = gw.post("/v1/chat/completions", &hello("spill")).await;
    assert_eq!(resp.headers()["x-tollgate-backend"], "sim/dedicated");
}

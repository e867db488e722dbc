//! The cost of one routing decision with a large policy: 50 routes and 20
//! backends, the matching route last (every matcher is evaluated), for a
//! priority route and for best-score over all 20 backends (which also runs
//! the domain classifier). Target: under 5 µs.
//!
//!     cargo bench --bench routing

use std::fmt::Write;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use tollgate::api::ChatRequest;
use tollgate::metering::Metrics;
use tollgate::routing::{Features, Router};

fn config() -> String {
    let mut yaml = String::from("providers:\n");
    for p in 0..4 {
        writeln!(yaml, "  sim{p}: {{ kind: simulated }}").unwrap();
    }
    yaml.push_str("models:\n");
    // Catalog ids of the built-in catalog, so best-score has prices and scores.
    let ids = [
        "gpt-4o",
        "gpt-4o-mini",
        "llama3.1:8b",
        "meta-llama/Llama-3.3-70B-Instruct",
    ];
    for m in 0..20 {
        writeln!(
            yaml,
            "  - {{ name: m{m}, provider: sim{}, catalog: \"{}\" }}",
            m % 4,
            ids[m % 4]
        )
        .unwrap();
    }
    yaml.push_str("routes:\n");
    for r in 0..48 {
        writeln!(
            yaml,
            "  - {{ name: r{r}, match: {{ model: \"team{r}-*\", headers: {{ x-team: t{r} }}, user: \"svc-{r}-*\" }}, targets: [m{}, m{}] }}",
            r % 20,
            (r + 1) % 20
        )
        .unwrap();
    }
    let all: Vec<String> = (0..20).map(|m| format!("m{m}")).collect();
    writeln!(
        yaml,
        "  - {{ name: scored, match: {{ model: auto }}, targets: [{}], strategy: best-score }}",
        all.join(", ")
    )
    .unwrap();
    writeln!(
        yaml,
        "  - {{ name: last, match: {{ model: \"gpt-*\" }}, targets: [m1, m2, m3] }}"
    )
    .unwrap();
    yaml
}

fn bench(c: &mut Criterion) {
    let cfg = tollgate::config::parse(&config(), &|_| None).expect("valid bench config");
    let router = Router::from_config(&cfg, &Arc::new(Metrics::new()), None);
    let headers = HeaderMap::new();
    let request = |model: &str| -> ChatRequest {
        serde_json::from_value(serde_json::json!({
            "model": model,
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Write a Python function that merges two sorted lists, and explain its complexity."}
            ],
            "max_tokens": 512
        }))
        .unwrap()
    };
    let priority = request("gpt-4o-mini");
    let auto = request("auto");
    c.bench_function("decide: 50 routes, the last matches, priority", |b| {
        b.iter(|| {
            let f = Features::chat(black_box(&priority));
            black_box(router.decide(&f, &headers, tokio::time::Instant::now()).unwrap())
        })
    });
    c.bench_function("decide: 49 routes checked, best-score over 20 backends", |b| {
        b.iter(|| {
            let f = Features::chat(black_box(&auto));
            black_box(router.decide(&f, &headers, tokio::time::Instant::now()).unwrap())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

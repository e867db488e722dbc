//! Reports over the usage ledger: per backend, model, route, key or team, side by
//! side, so two backends serving the same traffic are compared on cost and
//! latency. `tollgate report` prints them; `GET /admin/usage` answers them
//! as JSON. Shadow (mirror) rows are left out: they are not client traffic.

use std::collections::BTreeMap;
use std::fmt::Write;

use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::{AnyPool, Row};

use super::cost::{Pico, usd_text};

/// What rows are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Backend,
    Model,
    Route,
    Key,
    Team,
}

impl By {
    pub fn parse(s: &str) -> Option<By> {
        Some(match s {
            "backend" => By::Backend,
            "model" => By::Model,
            "route" => By::Route,
            "key" => By::Key,
            "team" => By::Team,
            _ => return None,
        })
    }

    fn column(self) -> &'static str {
        match self {
            By::Backend => "backend",
            By::Model => "requested_model",
            By::Route => "route",
            By::Key => "key_id",
            By::Team => "team",
        }
    }
}

/// The cutoff for "the last `window`", in ms since the epoch.
pub fn since_ms(window: std::time::Duration) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    now - i64::try_from(window.as_millis()).unwrap_or(i64::MAX)
}

/// One group's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub group: String,
    pub requests: u64,
    /// Answers with a status of 400 or more (499, a client that left, included).
    pub errors: u64,
    pub error_rate: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// USD, exact to the pico-dollar, as text.
    pub cost_usd: String,
    pub cost_per_1k_requests_usd: String,
    pub p50_latency_ms: Option<i64>,
    pub p95_latency_ms: Option<i64>,
    pub p50_ttft_ms: Option<i64>,
    pub p95_ttft_ms: Option<i64>,
}

#[derive(Default)]
struct Acc {
    requests: u64,
    errors: u64,
    prompt: u64,
    completion: u64,
    cost: Pico,
    latency: Vec<i64>,
    ttft: Vec<i64>,
}

/// The `q` quantile of sorted values (nearest rank).
fn quantile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The figures of every group for requests since `since_ms` (ms since the epoch).
pub async fn groups(pool: &AnyPool, since_ms: i64, by: By) -> Result<Vec<Group>, sqlx::Error> {
    let sql = format!(
        "SELECT {} AS grp, status, prompt_tokens, completion_tokens, cost_pico, duration_ms, ttft_ms \
         FROM tollgate_usage WHERE ts_ms >= $1 AND shadow = 0",
        by.column()
    );
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    let mut rows = sqlx::query(&sql).bind(since_ms).fetch(pool);
    while let Some(row) = rows.try_next().await? {
        let group: Option<String> = row.try_get("grp")?;
        let a = acc.entry(group.unwrap_or_else(|| "-".into())).or_default();
        a.requests += 1;
        if row.try_get::<i64, _>("status")? >= 400 {
            a.errors += 1;
        }
        let count = |v: i64| u64::try_from(v).unwrap_or(0);
        a.prompt += count(row.try_get("prompt_tokens")?);
        a.completion += count(row.try_get("completion_tokens")?);
        a.cost += Pico::from(count(row.try_get("cost_pico")?));
        a.latency.push(row.try_get("duration_ms")?);
        if let Some(t) = row.try_get::<Option<i64>, _>("ttft_ms")? {
            a.ttft.push(t);
        }
    }
    Ok(acc
        .into_iter()
        .map(|(group, mut a)| {
            a.latency.sort_unstable();
            a.ttft.sort_unstable();
            Group {
                group,
                requests: a.requests,
                errors: a.errors,
                error_rate: a.errors as f64 / a.requests.max(1) as f64,
                prompt_tokens: a.prompt,
                completion_tokens: a.completion,
                cost_usd: usd_text(a.cost),
                cost_per_1k_requests_usd: usd_text(a.cost * 1000 / Pico::from(a.requests.max(1))),
                p50_latency_ms: quantile(&a.latency, 0.50),
                p95_latency_ms: quantile(&a.latency, 0.95),
                p50_ttft_ms: quantile(&a.ttft, 0.50),
                p95_ttft_ms: quantile(&a.ttft, 0.95),
            }
        })
        .collect())
}

fn ms(v: Option<i64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

const HEADER: [&str; 11] = [
    "group",
    "requests",
    "error_rate",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "cost_per_1k_requests_usd",
    "p50_latency_ms",
    "p95_latency_ms",
    "p50_ttft_ms",
    "p95_ttft_ms",
];

fn cells(g: &Group) -> [String; 11] {
    [
        g.group.clone(),
        g.requests.to_string(),
        format!("{:.4}", g.error_rate),
        g.prompt_tokens.to_string(),
        g.completion_tokens.to_string(),
        g.cost_usd.clone(),
        g.cost_per_1k_requests_usd.clone(),
        ms(g.p50_latency_ms),
        ms(g.p95_latency_ms),
        ms(g.p50_ttft_ms),
        ms(g.p95_ttft_ms),
    ]
}

/// Aligned columns, one group per line.
pub fn table(groups: &[Group]) -> String {
    let rows: Vec<[String; 11]> = groups.iter().map(cells).collect();
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].len())
            .chain([HEADER[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..HEADER.len()).map(width).collect();
    let mut out = String::new();
    let line = |out: &mut String, cols: &[&str]| {
        for (i, c) in cols.iter().enumerate() {
            let sep = if i + 1 < cols.len() { "  " } else { "" };
            if i == 0 {
                let _ = write!(out, "{c:<w$}{sep}", w = widths[i]);
            } else {
                let _ = write!(out, "{c:>w$}{sep}", w = widths[i]);
            }
        }
        out.push('\n');
    };
    line(&mut out, &HEADER);
    for r in &rows {
        line(&mut out, &r.iter().map(String::as_str).collect::<Vec<_>>());
    }
    out
}

/// RFC 4180 CSV with a header line.
pub fn csv(groups: &[Group]) -> String {
    let quote = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    let mut out = HEADER.join(",");
    out.push('\n');
    for g in groups {
        let row: Vec<String> = cells(g).iter().map(|c| quote(c)).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.95), Some(95));
        assert_eq!(quantile(&[7], 0.95), Some(7));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let g = Group {
            group: "a,\"b\"".into(),
            requests: 1,
            errors: 0,
            error_rate: 0.0,
            prompt_tokens: 1,
            completion_tokens: 2,
            cost_usd: "0.5".into(),
            cost_per_1k_requests_usd: "500".into(),
            p50_latency_ms: Some(3),
            p95_latency_ms: None,
            p50_ttft_ms: None,
            p95_ttft_ms: None,
        };
        let out = csv(&[g]);
        assert!(
            out.lines()
                .nth(1)
                .unwrap()
                .starts_with("\"a,\"\"b\"\"\",1,0.0000,1,2,0.5,500,3,-"),
            "{out}"
        );
    }
}

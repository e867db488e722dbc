//! Ordering the candidates that passed the filters: the first is tried
//! first, the rest are the fallbacks in order.

use std::sync::Mutex;

use super::Candidate;
use super::classify::Domain;
use super::route::Objective;
use crate::config::schema::StrategyName;

/// The benchmark `best-score` ranks by when the route names none.
pub fn default_benchmark(domain: Domain) -> &'static str {
    match domain {
        Domain::Code => "humaneval",
        Domain::Math => "math",
        Domain::General => "mmlu",
    }
}

/// Puts `c` in the order `strategy` prefers. `weights` are per candidate.
pub fn order(
    strategy: StrategyName,
    c: &mut [Candidate],
    weights: &[u32],
    objective: &Objective,
    domain: Domain,
    rng: &Mutex<fastrand::Rng>,
) {
    match strategy {
        StrategyName::Priority => {}
        StrategyName::Weighted => weighted(c, weights, &mut lock(rng)),
        StrategyName::LowestLatency => lowest_latency(c, &mut lock(rng)),
        StrategyName::LowestCost => c.sort_by(|a, b| cmp_missing_last(a.expected_cost, b.expected_cost)),
        StrategyName::BestScore => best_score(c, objective, domain),
    }
}

fn lock(rng: &Mutex<fastrand::Rng>) -> std::sync::MutexGuard<'_, fastrand::Rng> {
    rng.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ascending, unknown values last.
fn cmp_missing_last(a: Option<f64>, b: Option<f64>) -> std::cmp::Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    }
}

/// Random order by weight, without replacement: each place is drawn among
/// the candidates left, in proportion to their weights.
fn weighted(c: &mut [Candidate], weights: &[u32], rng: &mut fastrand::Rng) {
    let mut w: Vec<u64> = c
        .iter()
        .map(|cand| u64::from(weights.get(cand.position).copied().unwrap_or(1)))
        .collect();
    for place in 0..c.len() {
        let total: u64 = w[place..].iter().sum();
        if total == 0 {
            break;
        }
        let mut pick = rng.u64(0..total);
        let mut chosen = place;
        for (i, weight) in w.iter().enumerate().skip(place) {
            if pick < *weight {
                chosen = i;
                break;
            }
            pick -= weight;
        }
        c.swap(place, chosen);
        w.swap(place, chosen);
    }
}

/// Power of two choices over the peak-EWMA latency, weighted by in-flight
/// requests: two candidates drawn at random, the faster tried first; the
/// rest follow fastest first. Unmeasured backends count as fastest, so each
/// gets measured.
fn lowest_latency(c: &mut [Candidate], rng: &mut fastrand::Rng) {
    if c.len() < 2 {
        return;
    }
    let load = |x: &Candidate| x.expected_latency_ms.map(|ms| ms * f64::from(x.in_flight + 1));
    let a = rng.usize(0..c.len());
    let mut b = rng.usize(0..c.len() - 1);
    if b >= a {
        b += 1;
    }
    let first = match (load(&c[a]), load(&c[b])) {
        (Some(la), Some(lb)) if lb < la => b,
        (Some(_), None) => b,
        _ => a,
    };
    c.swap(0, first);
    c[1..].sort_by(|x, y| load(x).unwrap_or(0.0).total_cmp(&load(y).unwrap_or(0.0)));
}

/// The highest score for the domain among the candidates within the cost
/// and p95 limits; then, when none qualifies or as fallbacks, the others
/// cheapest first.
fn best_score(c: &mut [Candidate], objective: &Objective, domain: Domain) {
    let bench = objective.score.as_deref().unwrap_or(default_benchmark(domain));
    for cand in c.iter_mut() {
        if objective.max_p95.is_some() {
            cand.p95_ms = cand.backend.health.p95_ms();
        }
        cand.score = cand.backend.info.as_ref().and_then(|i| i.scores.get(bench).copied());
        let cost_ok = objective
            .max_cost
            .is_none_or(|max| cand.expected_cost.is_some_and(|cost| cost <= max));
        let p95_ok = objective
            .max_p95
            .is_none_or(|max| cand.p95_ms.is_none_or(|p| p <= max.as_secs_f64() * 1000.0));
        cand.qualifies = cand.score.is_some() && cost_ok && p95_ok;
    }
    c.sort_by(|a, b| {
        b.qualifies.cmp(&a.qualifies).then_with(|| {
            if a.qualifies {
                b.score.unwrap_or(0.0).total_cmp(&a.score.unwrap_or(0.0))
            } else {
                cmp_missing_last(a.expected_cost, b.expected_cost)
            }
        })
    });
}

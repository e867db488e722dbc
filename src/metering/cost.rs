//! What a request cost, exactly.
//!
//! Catalog prices are USD per million tokens with a few decimals (0.075,
//! 3.75). Each is turned once into an integer number of pico-dollars per
//! token (USD per million × 10^6: 0.075 → 75 000), so a request's cost is a
//! sum of integer products and totals never drift, however many requests are
//! added. Floating point appears only when a total is shown.

use std::time::Duration;

use crate::api::Usage;
use crate::routing::catalog::{Hosting, ModelInfo};

/// Pico-dollars (10^-12 USD).
pub type Pico = u128;

const PICO_PER_USD: f64 = 1e12;

/// A model's prices, in pico-dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pricing {
    /// Per token.
    input: u64,
    output: u64,
    cached_input: u64,
    cache_write: u64,
    /// Per request.
    per_request: u64,
    /// Self-hosted: per millisecond the request kept the machine busy.
    per_busy_ms: u64,
}

/// USD per million tokens (or per request) → pico-dollars per token (or request).
fn per_million(usd: f64) -> u64 {
    (usd * 1e6).round().max(0.0) as u64
}

impl Pricing {
    /// The catalog's prices, if it has any for the model.
    pub fn of(info: &ModelInfo) -> Option<Pricing> {
        if let Some(p) = info.price {
            let input = per_million(p.input);
            return Some(Pricing {
                input,
                output: per_million(p.output),
                // Without a separate price, cached and cache-written tokens cost what input does.
                cached_input: p.cached_input.map_or(input, per_million),
                cache_write: p.cache_write.map_or(input, per_million),
                per_request: (p.per_request.unwrap_or(0.0) * PICO_PER_USD).round().max(0.0) as u64,
                per_busy_ms: 0,
            });
        }
        let hourly = info.hourly_cost.filter(|_| info.hosting == Hosting::SelfHosted)?;
        Some(Pricing {
            per_busy_ms: (hourly * PICO_PER_USD / 3_600_000.0).round().max(0.0) as u64,
            ..Pricing::default()
        })
    }

    /// The cost of one request: uncached prompt, cache reads, cache writes
    /// and completion tokens at their prices, the per-request fee, and for a
    /// self-hosted model its hourly cost for the time the request kept it busy.
    pub fn cost(&self, usage: &Usage, busy: Duration) -> Pico {
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let written = usage.cache_write_tokens.min(usage.prompt_tokens - cached);
        let uncached = usage.prompt_tokens - cached - written;
        let tokens = |n: u64, price: u64| Pico::from(n) * Pico::from(price);
        tokens(uncached, self.input)
            + tokens(cached, self.cached_input)
            + tokens(written, self.cache_write)
            + tokens(usage.completion_tokens, self.output)
            + Pico::from(self.per_request)
            + Pico::from(self.per_busy_ms) * busy.as_millis()
    }
}

/// Pico-dollars as USD, for display and exposition only.
pub fn usd(pico: Pico) -> f64 {
    pico as f64 / PICO_PER_USD
}

/// USD with up to 12 decimals and no trailing zeros, for headers: `0.000125`.
pub fn usd_text(pico: Pico) -> String {
    // Written digit by digit: every answer's cost header goes through here, and
    // the formatting machinery cost more than the rest of the cost arithmetic.
    const PER_USD: Pico = 1_000_000_000_000;
    let mut text = String::with_capacity(24);
    push_digits(&mut text, pico / PER_USD);
    let mut frac = pico % PER_USD;
    if frac != 0 {
        text.push('.');
        let mut place = PER_USD / 10;
        while frac != 0 {
            text.push(digit(frac / place));
            frac %= place;
            place /= 10;
        }
    }
    text
}

fn push_digits(text: &mut String, mut n: Pico) {
    let mut buf = [0u8; 40];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    text.extend(buf[at..].iter().map(|&b| char::from(b)));
}

fn digit(d: Pico) -> char {
    char::from(b'0' + d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::catalog::Price;

    fn info(price: Price) -> ModelInfo {
        ModelInfo {
            price: Some(price),
            ..ModelInfo::default()
        }
    }

    #[test]
    fn every_price_component_against_hand_computed_values() {
        // Anthropic-like: $3 in, $15 out, $0.30 cache reads, $3.75 cache writes, per million.
        let p = Pricing::of(&info(Price {
            input: 3.0,
            output: 15.0,
            cached_input: Some(0.30),
            cache_write: Some(3.75),
            per_request: None,
        }))
        .unwrap();
        let usage = Usage {
            cached_tokens: 2_000,
            cache_write_tokens: 1_000,
            ..Usage::new(10_000, 500)
        };
        // 7 000 × 3 + 2 000 × 0.30 + 1 000 × 3.75 + 500 × 15, per million:
        // 0.021 + 0.0006 + 0.00375 + 0.0075 = 0.03285 USD.
        let cost = p.cost(&usage, Duration::ZERO);
        assert_eq!(cost, 32_850_000_000);
        assert_eq!(usd_text(cost), "0.03285");
        // OpenAI-like small prices: 0.075 per million is 75 000 pico per token, exactly.
        let mini = Pricing::of(&info(Price {
            input: 0.15,
            output: 0.60,
            cached_input: Some(0.075),
            cache_write: None,
            per_request: Some(0.001),
        }))
        .unwrap();
        let u = Usage {
            cached_tokens: 1,
            ..Usage::new(1, 1)
        };
        assert_eq!(mini.cost(&u, Duration::ZERO), 75_000 + 600_000 + 1_000_000_000);
        assert_eq!(usd_text(mini.cost(&u, Duration::ZERO)), "0.001000675");
    }

    #[test]
    fn totals_do_not_drift() {
        let p = Pricing::of(&info(Price {
            input: 0.1,
            output: 0.3,
            ..Price::default()
        }))
        .unwrap();
        let one = p.cost(&Usage::new(7, 3), Duration::ZERO);
        let total: Pico = (0..1_000_000).map(|_| one).sum();
        // A million requests of 7 × 0.1 + 3 × 0.3 micro-dollars: exactly 1.6 USD.
        assert_eq!(total, 1_600_000_000_000);
        assert_eq!(usd_text(total), "1.6");
    }

    #[test]
    fn usd_text_writes_every_digit_and_no_trailing_zeros() {
        assert_eq!(usd_text(0), "0");
        assert_eq!(usd_text(1), "0.000000000001");
        assert_eq!(usd_text(12_000_000_000_000), "12");
        assert_eq!(usd_text(12_340_000_000_000), "12.34");
        assert_eq!(usd_text(1_000_000_000_007), "1.000000000007");
        assert_eq!(usd_text(Pico::MAX), "340282366920938463463374607.431768211455");
    }

    #[test]
    fn self_hosted_models_cost_their_busy_time() {
        let local = ModelInfo {
            hosting: Hosting::SelfHosted,
            hourly_cost: Some(3.6),
            ..ModelInfo::default()
        };
        let p = Pricing::of(&local).unwrap();
        // $3.60 an hour is $0.001 a second: 1.5 s costs $0.0015.
        assert_eq!(
            p.cost(&Usage::new(100, 100), Duration::from_millis(1500)),
            1_500_000_000
        );
        assert!(Pricing::of(&ModelInfo::default()).is_none(), "no price, no cost");
    }
}

//! Rate limits per model (`models[].rpm`, `models[].tpm`), per gateway key
//! and per team. Requests per minute use governor's GCRA limiter: a request
//! takes one cell. Tokens per minute are a token bucket that a request
//! reserves its estimate from (prompt and `max_tokens`) and that is
//! reconciled with the actual usage when the request ends: unused tokens go
//! back, extra ones are taken (the bucket may go into debt, which delays the
//! next requests). governor cannot give cells back, hence the bucket.
//! A limited backend is skipped like an unavailable one; a limited key or
//! team, or a request with no backend left, gets OpenAI's 429 with
//! `Retry-After` and `x-ratelimit-*` headers.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use super::DEFAULT_OUTPUT_TOKENS;

pub struct Limits {
    rpm: Option<(u32, DefaultDirectRateLimiter)>,
    tpm: Option<Arc<TokenBucket>>,
}

/// Tokens per minute: refills continuously up to one minute's worth.
#[derive(Debug)]
pub struct TokenBucket {
    per_minute: u32,
    state: Mutex<Level>,
}

#[derive(Debug)]
struct Level {
    /// May be negative: usage beyond the reservation is owed.
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub fn new(per_minute: u32) -> Self {
        TokenBucket {
            per_minute,
            state: Mutex::new(Level {
                tokens: f64::from(per_minute),
                at: Instant::now(),
            }),
        }
    }

    fn refilled(&self, now: Instant) -> std::sync::MutexGuard<'_, Level> {
        let mut level = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let rate = f64::from(self.per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(level.at).as_secs_f64();
        level.tokens = (level.tokens + elapsed * rate).min(f64::from(self.per_minute));
        level.at = now;
        level
    }

    /// Takes `n` tokens, or says how long until they are there. More than a
    /// minute's worth can never be there: such a request takes a full bucket.
    pub fn take(&self, n: u64, now: Instant) -> Result<(), Duration> {
        let want = (n as f64).min(f64::from(self.per_minute));
        let mut level = self.refilled(now);
        if level.tokens >= want {
            level.tokens -= want;
            return Ok(());
        }
        let rate = f64::from(self.per_minute) / 60.0;
        Err(Duration::from_secs_f64((want - level.tokens) / rate))
    }

    /// Corrects a reservation of `reserved` tokens to the `used` ones.
    pub fn settle(&self, reserved: u64, used: u64, now: Instant) {
        let reserved = (reserved as f64).min(f64::from(self.per_minute));
        let mut level = self.refilled(now);
        level.tokens = (level.tokens + reserved - used as f64).min(f64::from(self.per_minute));
    }

    /// Tokens there now (negative: owed).
    pub fn available(&self, now: Instant) -> f64 {
        self.refilled(now).tokens
    }
}

/// Tokens a request reserved from a bucket, settled with its usage when it ends.
#[derive(Debug)]
pub struct Reservation {
    bucket: Arc<TokenBucket>,
    tokens: u64,
}

impl Reservation {
    /// The request used `used` tokens in all (prompt and completion; 0 if it failed).
    pub fn settle(self, used: u64) {
        self.bucket.settle(self.tokens, used, Instant::now());
    }
}

/// Which limit refused a request, and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct Limited {
    /// `requests` or `tokens`, as in OpenAI's `x-ratelimit-*-requests|tokens`.
    pub limit: &'static str,
    pub per_minute: u32,
    pub wait: Duration,
}

impl std::fmt::Display for Limited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "over its {} {} per minute, for {:.1}s more",
            self.per_minute,
            self.limit,
            self.wait.as_secs_f64()
        )
    }
}

fn per_minute(n: u32) -> Option<(u32, DefaultDirectRateLimiter)> {
    let n = NonZeroU32::new(n)?;
    Some((n.get(), RateLimiter::direct(Quota::per_minute(n))))
}

impl Limits {
    pub fn new(rpm: Option<u32>, tpm: Option<u32>) -> Option<Self> {
        let limits = Limits {
            rpm: rpm.and_then(per_minute),
            tpm: tpm.filter(|n| *n > 0).map(|n| Arc::new(TokenBucket::new(n))),
        };
        (limits.rpm.is_some() || limits.tpm.is_some()).then_some(limits)
    }

    /// The same settings: a reload keeps the limiter's state.
    pub fn same(&self, rpm: Option<u32>, tpm: Option<u32>) -> bool {
        self.rpm.as_ref().map(|r| r.0) == rpm.filter(|n| *n > 0)
            && self.tpm.as_ref().map(|t| t.per_minute) == tpm.filter(|n| *n > 0)
    }

    /// Takes one request and reserves its estimated tokens, or says which limit refuses.
    ///
    /// Tokens first: they can be given back if the request cell is refused,
    /// whereas governor's cell cannot, so a request refused for its tokens
    /// does not also use up a request.
    pub fn take(&self, prompt_tokens: u64, max_tokens: Option<u64>) -> Result<Option<Reservation>, Limited> {
        let reservation = match &self.tpm {
            None => None,
            Some(bucket) => {
                let tokens = prompt_tokens + max_tokens.unwrap_or(DEFAULT_OUTPUT_TOKENS);
                match bucket.take(tokens, Instant::now()) {
                    Ok(()) => Some(Reservation {
                        bucket: bucket.clone(),
                        tokens,
                    }),
                    Err(wait) => {
                        return Err(Limited {
                            limit: "tokens",
                            per_minute: bucket.per_minute,
                            wait,
                        });
                    }
                }
            }
        };
        if let Some((max, limiter)) = &self.rpm
            && let Err(not_until) = limiter.check()
        {
            if let Some(r) = reservation {
                r.settle(0);
            }
            return Err(Limited {
                limit: "requests",
                per_minute: *max,
                wait: not_until.wait_time_from(DefaultClock::default().now()),
            });
        }
        Ok(reservation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_tokens_per_minute() {
        let l = Limits::new(Some(2), None).unwrap();
        assert!(l.take(10, None).is_ok() && l.take(10, None).is_ok());
        let refused = l.take(10, None).unwrap_err();
        assert_eq!((refused.limit, refused.per_minute), ("requests", 2));
        assert!(
            refused.wait > Duration::from_secs(20) && refused.wait <= Duration::from_secs(30),
            "{refused:?}"
        );
        let t = Limits::new(None, Some(1000)).unwrap();
        assert!(t.take(100, Some(500)).unwrap().is_some());
        let refused = t.take(100, Some(500)).unwrap_err();
        assert_eq!(refused.limit, "tokens");
        assert!(Limits::new(None, None).is_none() && Limits::new(Some(0), None).is_none());
        assert!(t.same(None, Some(1000)) && !t.same(Some(5), Some(1000)));
        // Refused for its tokens, a request keeps its request cell; refused a request, its tokens come back.
        let both = Limits::new(Some(2), Some(100)).unwrap();
        assert!(both.take(50, Some(10)).is_ok());
        assert_eq!(both.take(50, Some(10)).unwrap_err().limit, "tokens");
        assert!(
            both.take(10, Some(10)).is_ok(),
            "the second request cell was still there"
        );
        let left = both.tpm.as_ref().unwrap().available(Instant::now());
        assert_eq!(both.take(5, Some(5)).unwrap_err().limit, "requests");
        assert!(
            both.tpm.as_ref().unwrap().available(Instant::now()) >= left,
            "its tokens came back"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn token_reservations_are_settled_with_actual_usage() {
        let t = Limits::new(None, Some(600)).unwrap();
        let first = t.take(100, Some(400)).unwrap().unwrap();
        // 500 reserved, 100 left: a second 500 waits for 400 more at 10 a second.
        let refused = t.take(100, Some(400)).unwrap_err();
        assert_eq!(refused.wait, Duration::from_secs(40));
        // The first used only 50: 450 come back, so the second now fits.
        first.settle(50);
        let second = t.take(100, Some(400)).unwrap().unwrap();
        // It used 900, 400 more than it reserved: the bucket owes them.
        second.settle(900);
        let bucket = t.tpm.as_ref().unwrap();
        assert_eq!(bucket.available(Instant::now()), -350.0);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(bucket.available(Instant::now()), 250.0);
    }
}

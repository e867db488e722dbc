//! Per-model rate limits (`models[].rpm`, `models[].tpm`), with governor's
//! GCRA limiters: a request takes one cell of the requests-per-minute quota
//! and its estimated tokens (prompt and `max_tokens`) of the tokens-per-minute
//! one. A limited backend is skipped like an unavailable one; when nothing
//! is left the client gets OpenAI's 429 with `Retry-After` and
//! `x-ratelimit-*` headers.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Tokens reserved for an answer whose request sets no `max_tokens`.
const DEFAULT_OUTPUT_TOKENS: u64 = 256;

pub struct Limits {
    rpm: Option<(u32, DefaultDirectRateLimiter)>,
    tpm: Option<(u32, DefaultDirectRateLimiter)>,
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
            tpm: tpm.and_then(per_minute),
        };
        (limits.rpm.is_some() || limits.tpm.is_some()).then_some(limits)
    }

    /// The same settings: a reload keeps the limiter's state.
    pub fn same(&self, rpm: Option<u32>, tpm: Option<u32>) -> bool {
        self.rpm.as_ref().map(|r| r.0) == rpm.filter(|n| *n > 0)
            && self.tpm.as_ref().map(|t| t.0) == tpm.filter(|n| *n > 0)
    }

    /// Takes one request and its estimated tokens, or says which limit refuses.
    pub fn take(&self, prompt_tokens: u64, max_tokens: Option<u64>) -> Result<(), Limited> {
        let clock = DefaultClock::default();
        if let Some((max, limiter)) = &self.rpm
            && let Err(not_until) = limiter.check()
        {
            return Err(Limited {
                limit: "requests",
                per_minute: *max,
                wait: not_until.wait_time_from(clock.now()),
            });
        }
        if let Some((max, limiter)) = &self.tpm {
            let wanted = prompt_tokens + max_tokens.unwrap_or(DEFAULT_OUTPUT_TOKENS);
            // More than a whole minute's quota can never pass: it takes the quota, once.
            let n = NonZeroU32::new(wanted.clamp(1, u64::from(*max)) as u32).unwrap_or(NonZeroU32::MIN);
            match limiter.check_n(n) {
                Ok(Ok(())) => {}
                Ok(Err(not_until)) => {
                    return Err(Limited {
                        limit: "tokens",
                        per_minute: *max,
                        wait: not_until.wait_time_from(clock.now()),
                    });
                }
                Err(_) => {
                    return Err(Limited {
                        limit: "tokens",
                        per_minute: *max,
                        wait: Duration::from_secs(60),
                    });
                }
            }
        }
        Ok(())
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
        assert!(t.take(100, Some(500)).is_ok());
        let refused = t.take(100, Some(500)).unwrap_err();
        assert_eq!(refused.limit, "tokens");
        assert!(Limits::new(None, None).is_none() && Limits::new(Some(0), None).is_none());
        assert!(t.same(None, Some(1000)) && !t.same(Some(5), Some(1000)));
    }
}

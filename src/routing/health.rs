//! What the router knows about each backend's health: a peak-EWMA of its
//! latency (time to first token for streams), recent latencies for a p95, a
//! circuit breaker, and a cooldown an upstream asked for with `Retry-After`.
//!
//! Kept per backend behind a short-lived `std::sync::Mutex`: every critical
//! section is a few arithmetic operations, never held across an await, and
//! the state survives config reloads for backends that remain.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Breaker settings (`routing.breaker`).
#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    /// Consecutive failures that open the circuit.
    pub failures: u32,
    /// Or: this share of failures over the last `window` outcomes…
    pub error_rate: f64,
    /// …once at least half the window has been seen.
    pub window: u32,
    /// How long an open circuit stays open before one probe is let through.
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failures: 5,
            error_rate: 0.5,
            window: 20,
            cooldown: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    Closed,
    /// Failing: no requests until the instant.
    Open {
        until: Instant,
    },
    /// One probe is in flight; its outcome closes or reopens the circuit.
    HalfOpen,
}

impl Circuit {
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open { .. } => "open",
            Circuit::HalfOpen => "half_open",
        }
    }

    /// `tollgate_circuit_state`: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> i64 {
        match self {
            Circuit::Closed => 0,
            Circuit::HalfOpen => 1,
            Circuit::Open { .. } => 2,
        }
    }
}

/// Recent latencies kept for the p95.
const SAMPLES: usize = 64;
/// Peak-EWMA decay: a new sample weighs this much (a spike counts in full).
const EWMA_WEIGHT: f64 = 0.2;

struct State {
    ewma_ms: Option<f64>,
    samples: [f32; SAMPLES],
    sampled: usize,
    circuit: Circuit,
    consecutive_failures: u32,
    /// The last `window` outcomes as bits, newest lowest; `true` = failure.
    outcomes: u64,
    seen: u32,
    cooldown_until: Option<Instant>,
    in_flight: u32,
}

pub struct Health {
    state: Mutex<State>,
}

/// Why a backend cannot take a request now.
#[derive(Debug, Clone, PartialEq)]
pub enum Unavailable {
    CircuitOpen {
        for_secs: f64,
    },
    /// The half-open probe is already out.
    Probing,
    CoolingDown {
        for_secs: f64,
    },
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::CircuitOpen { for_secs } => write!(f, "circuit open for {for_secs:.1}s more"),
            Unavailable::Probing => f.write_str("circuit half-open, its probe request is in flight"),
            Unavailable::CoolingDown { for_secs } => {
                write!(f, "cooling down for {for_secs:.1}s more (the upstream's Retry-After)")
            }
        }
    }
}

/// Why a backend in state `s` cannot take a request at `now`, if it cannot.
fn blocked(s: &State, now: Instant, cooldown: bool) -> Option<Unavailable> {
    if let Some(until) = s.cooldown_until.filter(|u| cooldown && *u > now) {
        return Some(Unavailable::CoolingDown {
            for_secs: (until - now).as_secs_f64(),
        });
    }
    match s.circuit {
        Circuit::Open { until } if until > now => Some(Unavailable::CircuitOpen {
            for_secs: (until - now).as_secs_f64(),
        }),
        Circuit::HalfOpen => Some(Unavailable::Probing),
        _ => None,
    }
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: Mutex::new(State {
                ewma_ms: None,
                samples: [0.0; SAMPLES],
                sampled: 0,
                circuit: Circuit::Closed,
                consecutive_failures: 0,
                outcomes: 0,
                seen: 0,
                cooldown_until: None,
                in_flight: 0,
            }),
        }
    }
}

/// Opens the circuit until `until`; the error-rate window starts afresh.
fn open(s: &mut State, until: Instant) {
    s.circuit = Circuit::Open { until };
    s.outcomes = 0;
    s.seen = 0;
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere cannot leave these numbers inconsistent enough to matter.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a request may go to this backend now (without taking the probe).
    /// A `Retry-After` cooldown counts only where there is somewhere else to
    /// go (`cooldown`): alone, the upstream's own answer says more than ours.
    pub fn check(&self, now: Instant, cooldown: bool) -> Result<(), Unavailable> {
        blocked(&self.lock(), now, cooldown).map_or(Ok(()), Err)
    }

    /// Claims the right to send: an expired open circuit lets exactly one probe through.
    pub fn admit(&self, now: Instant, cooldown: bool) -> Result<(), Unavailable> {
        let mut s = self.lock();
        if let Some(why) = blocked(&s, now, cooldown) {
            return Err(why);
        }
        if matches!(s.circuit, Circuit::Open { .. }) {
            s.circuit = Circuit::HalfOpen;
        }
        s.in_flight += 1;
        Ok(())
    }

    /// The circuit as the outside sees it at `now`: an open circuit whose
    /// cooldown is over lets the next request probe, so it reads half-open.
    pub fn circuit(&self, now: Instant) -> Circuit {
        match self.lock().circuit {
            Circuit::Open { until } if until <= now => Circuit::HalfOpen,
            c => c,
        }
    }

    /// The request succeeded; `latency` is its time to first token (streams) or answer.
    pub fn success(&self, latency: Duration) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        let ms = latency.as_secs_f64() * 1000.0;
        // Peak EWMA: a slower sample is taken at once, a faster one decays in.
        s.ewma_ms = Some(match s.ewma_ms {
            Some(old) if ms < old => old + EWMA_WEIGHT * (ms - old),
            _ => ms,
        });
        let at = s.sampled % SAMPLES;
        s.samples[at] = ms as f32;
        s.sampled += 1;
        s.consecutive_failures = 0;
        s.outcomes <<= 1;
        s.seen = s.seen.saturating_add(1);
        // Only the probe closes a circuit: a request admitted before it opened proves little.
        if s.circuit == Circuit::HalfOpen {
            s.circuit = Circuit::Closed;
        }
    }

    /// The request failed in a way that says something about the backend.
    pub fn failure(&self, now: Instant, settings: &BreakerSettings) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        s.consecutive_failures += 1;
        s.outcomes = (s.outcomes << 1) | 1;
        s.seen = s.seen.saturating_add(1);
        let window = settings.window.clamp(1, 64);
        let mask = if window == 64 { u64::MAX } else { (1u64 << window) - 1 };
        let failures = (s.outcomes & mask).count_ones();
        let seen = s.seen.min(window);
        let rate_tripped = seen * 2 >= window && f64::from(failures) >= settings.error_rate * f64::from(seen);
        if s.circuit == Circuit::HalfOpen || s.consecutive_failures >= settings.failures || rate_tripped {
            open(&mut s, now + settings.cooldown);
        }
    }

    /// An active health check's outcome. A failed check opens the circuit
    /// at once (the upstream's own health answer is decisive); a passing one
    /// closes an open circuit before its cooldown ends: the backend is back.
    pub fn checked(&self, healthy: bool, now: Instant, settings: &BreakerSettings) {
        let mut s = self.lock();
        if healthy {
            if matches!(s.circuit, Circuit::Open { .. }) {
                s.circuit = Circuit::Closed;
                s.consecutive_failures = 0;
            }
            return;
        }
        let until = match s.circuit {
            Circuit::Open { until: later } => later.max(now + settings.cooldown),
            _ => now + settings.cooldown,
        };
        open(&mut s, until);
    }

    /// The request ended without saying anything about the backend (the client left).
    pub fn release(&self) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.circuit == Circuit::HalfOpen {
            // The probe told us nothing: let the next request probe.
            s.circuit = Circuit::Open { until: Instant::now() };
        }
    }

    /// The upstream asked to be left alone for `wait`.
    pub fn cool_down(&self, now: Instant, wait: Duration) {
        let mut s = self.lock();
        let until = now + wait;
        s.cooldown_until = Some(s.cooldown_until.map_or(until, |u| u.max(until)));
    }

    /// The peak-EWMA latency, if any request has been measured.
    pub fn latency_ms(&self) -> Option<f64> {
        self.lock().ewma_ms
    }

    /// The 95th percentile of the recent latencies.
    pub fn p95_ms(&self) -> Option<f64> {
        let s = self.lock();
        let n = s.sampled.min(SAMPLES);
        if n == 0 {
            return None;
        }
        let mut recent = s.samples;
        let recent = &mut recent[..n];
        recent.sort_by(f32::total_cmp);
        let at = ((n as f64) * 0.95).ceil() as usize;
        Some(f64::from(recent[at.clamp(1, n) - 1]))
    }

    pub fn in_flight(&self) -> u32 {
        self.lock().in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_checks_open_and_close_the_circuit() {
        let h = Health::default();
        let s = settings();
        let now = Instant::now();
        h.checked(true, now, &s);
        assert_eq!(h.circuit(now), Circuit::Closed);
        h.checked(false, now, &s);
        assert!(matches!(h.circuit(now), Circuit::Open { .. }));
        assert!(
            h.admit(now, false).is_err(),
            "no request goes to a backend that failed its check"
        );
        // Back before the cooldown ends: closed, requests flow again.
        h.checked(true, now, &s);
        assert_eq!(h.circuit(now), Circuit::Closed);
        assert!(h.admit(now, false).is_ok());
    }

    fn settings() -> BreakerSettings {
        BreakerSettings {
            failures: 3,
            error_rate: 0.5,
            window: 10,
            cooldown: Duration::from_secs(30),
        }
    }

    #[test]
    fn the_breaker_opens_probes_once_and_closes() {
        let h = Health::default();
        let now = Instant::now();
        for _ in 0..3 {
            h.admit(now, true).unwrap();
            h.failure(now, &settings());
        }
        assert!(matches!(h.check(now, true), Err(Unavailable::CircuitOpen { .. })));
        let later = now + Duration::from_secs(31);
        assert_eq!(h.check(later, true), Ok(()));
        h.admit(later, true).unwrap();
        assert_eq!(h.admit(later, true), Err(Unavailable::Probing), "one probe at a time");
        h.failure(later, &settings());
        assert!(
            matches!(h.check(later, true), Err(Unavailable::CircuitOpen { .. })),
            "a failed probe reopens"
        );
        let again = later + Duration::from_secs(31);
        h.admit(again, true).unwrap();
        h.success(Duration::from_millis(100));
        assert_eq!(h.circuit(again), Circuit::Closed);
        assert_eq!(h.admit(again, true), Ok(()));
    }

    #[test]
    fn an_error_rate_over_the_window_opens_it_too() {
        let h = Health::default();
        let now = Instant::now();
        // Alternate: never three failures in a row, but half of ten fail.
        for i in 0..10 {
            if i % 2 == 0 {
                h.failure(now, &settings());
            } else {
                h.success(Duration::from_millis(10));
            }
        }
        assert!(matches!(h.check(now, true), Err(Unavailable::CircuitOpen { .. })));
    }

    #[test]
    fn retry_after_cools_a_backend_down() {
        let h = Health::default();
        let now = Instant::now();
        h.cool_down(now, Duration::from_secs(7));
        assert!(matches!(h.check(now, true), Err(Unavailable::CoolingDown { .. })));
        assert_eq!(h.check(now + Duration::from_secs(8), true), Ok(()));
        assert_eq!(h.check(now, false), Ok(()), "alone, a backend is asked anyway");
    }

    #[test]
    fn peak_ewma_takes_spikes_at_once_and_decays() {
        let h = Health::default();
        h.success(Duration::from_millis(100));
        h.success(Duration::from_millis(500));
        assert_eq!(h.latency_ms(), Some(500.0));
        h.success(Duration::from_millis(100));
        assert_eq!(h.latency_ms(), Some(420.0));
        for _ in 0..20 {
            h.success(Duration::from_millis(100));
        }
        assert!(h.p95_ms().unwrap() >= 100.0);
    }
}

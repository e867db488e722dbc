//! Budgets in USD per UTC day and per UTC month, and what has been spent
//! against them.
//!
//! Spend is kept in memory per key and per team, in pico-dollars, added as
//! each request ends (its cost at the catalog's prices). It starts from the
//! ledger's totals at start-up and is raised to them again periodically, so
//! what other replicas spent counts too (it lags by that period). The day and
//! month roll over at UTC midnight and on the first of the month.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::metering::cost::Pico;

const MS_PER_DAY: i64 = 86_400_000;

/// `day` or `month`: the `period` of a budget metric and error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    /// `daily` or `monthly`, as messages say it.
    pub fn adjective(self) -> &'static str {
        match self {
            Period::Day => "daily",
            Period::Month => "monthly",
        }
    }
}

/// A budget's limits; either may be unset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    pub daily: Option<Pico>,
    pub monthly: Option<Pico>,
}

impl Budget {
    pub fn is_set(&self) -> bool {
        self.daily.is_some() || self.monthly.is_some()
    }

    /// The limits with what is spent against each: `(period, limit, spent)`.
    pub fn against(&self, spent: Spent) -> impl Iterator<Item = (Period, Pico, Pico)> {
        [
            self.daily.map(|l| (Period::Day, l, spent.day)),
            self.monthly.map(|l| (Period::Month, l, spent.month)),
        ]
        .into_iter()
        .flatten()
    }

    /// The first limit already reached, if any.
    pub fn exhausted(&self, spent: Spent) -> Option<(Period, Pico)> {
        self.against(spent)
            .find(|(_, limit, spent)| spent >= limit)
            .map(|(p, limit, _)| (p, limit))
    }

    /// The first limit that `extra` more would cross.
    pub fn crossed_by(&self, spent: Spent, extra: Pico) -> Option<(Period, Pico)> {
        self.against(spent)
            .find(|(_, limit, spent)| spent + extra > *limit)
            .map(|(p, limit, _)| (p, limit))
    }
}

/// The share of a budget spent: 1 = all of it (a zero budget is spent at once).
pub fn used_ratio(spent: Pico, limit: Pico) -> f64 {
    if limit == 0 {
        return 1.0;
    }
    spent as f64 / limit as f64
}

/// What was spent in the current day and month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    pub day: Pico,
    pub month: Pico,
}

/// The running spend of one key or team.
#[derive(Debug, Default)]
pub struct Spend(Mutex<Periods>);

#[derive(Debug, Default)]
struct Periods {
    /// Days since the epoch, and `year * 12 + month - 1`, of the totals below.
    day: i64,
    month: i64,
    spent: Spent,
}

impl Periods {
    /// Starts new totals when a new day or month has begun. Only forward: a
    /// caller holding a `Now` from before midnight must not reset the new day.
    fn roll(&mut self, now: Now) {
        if now.day > self.day {
            self.day = now.day;
            self.spent.day = 0;
        }
        if now.month > self.month {
            self.month = now.month;
            self.spent.month = 0;
        }
    }
}

impl Spend {
    /// Adds a request's cost to the periods `now` is in (a past day's cost
    /// still counts for the month if that is the current one).
    pub fn add(&self, now: Now, pico: Pico) {
        let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        p.roll(now);
        if now.day == p.day {
            p.spent.day += pico;
        }
        if now.month == p.month {
            p.spent.month += pico;
        }
    }

    pub fn spent(&self, now: Now) -> Spent {
        let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        p.roll(now);
        p.spent
    }

    /// Raises the totals to the ledger's (which may include other replicas'
    /// spend); never lowers them, since rows still queued are not in it yet.
    pub fn at_least(&self, now: Now, ledger: Spent) {
        let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        p.roll(now);
        if now.day == p.day {
            p.spent.day = p.spent.day.max(ledger.day);
        }
        if now.month == p.month {
            p.spent.month = p.spent.month.max(ledger.month);
        }
    }
}

/// The current UTC day and month, and when each began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub ms: i64,
    day: i64,
    month: i64,
}

impl Now {
    pub fn current() -> Now {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Now::at(ms)
    }

    pub fn at(ms: i64) -> Now {
        let day = ms.div_euclid(MS_PER_DAY);
        let (y, m, _) = civil_from_days(day);
        Now {
            ms,
            day,
            month: y * 12 + i64::from(m) - 1,
        }
    }

    pub fn day_start_ms(&self) -> i64 {
        self.day * MS_PER_DAY
    }

    pub fn month_start_ms(&self) -> i64 {
        let (y, m) = (self.month.div_euclid(12), self.month.rem_euclid(12) as u32 + 1);
        days_from_civil(y, m, 1) * MS_PER_DAY
    }

    /// How long until the period starts again: the `Retry-After` of a budget refusal.
    pub fn until_reset(&self, period: Period) -> Duration {
        let next = match period {
            Period::Day => self.day_start_ms() + MS_PER_DAY,
            Period::Month => {
                let next = self.month + 1;
                days_from_civil(next.div_euclid(12), next.rem_euclid(12) as u32 + 1, 1) * MS_PER_DAY
            }
        };
        Duration::from_millis((next - self.ms).max(0) as u64)
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 → (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The inverse: (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// USD as typed by an operator (`5`, `12.50`, `0.000001`) → pico-dollars,
/// exactly: no float on the way.
pub fn parse_usd(text: &str) -> Result<Pico, String> {
    let t = text.trim().trim_start_matches('$');
    let bad = || format!("`{text}` is not an amount of USD such as 5 or 12.50");
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if (whole.is_empty() && frac.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 12
    {
        return Err(bad());
    }
    let whole: Pico = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac_pico: Pico = if frac.is_empty() {
        0
    } else {
        frac.parse::<Pico>().map_err(|_| bad())? * 10u128.pow(12 - frac.len() as u32)
    };
    // Stored as a 64-bit number of pico-dollars: at most about 9.2 million USD.
    whole
        .checked_mul(1_000_000_000_000)
        .and_then(|w| w.checked_add(frac_pico))
        .filter(|p| *p <= i64::MAX as Pico)
        .ok_or_else(|| format!("`{text}` is more than the 9,000,000 USD a budget can be"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-29T19:30:00Z, 2026-11-30T23:59:59.999Z, 2026-12-01T00:00:00Z.
    const NOV_29: i64 = 1_795_980_600_000;
    const NOV_30_LAST_MS: i64 = 1_796_083_199_999;
    const DEC_1: i64 = 1_796_083_200_000;

    #[test]
    fn calendar_arithmetic_matches_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(NOV_29 / MS_PER_DAY), (2026, 11, 29));
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        let now = Now::at(NOV_29);
        assert_eq!(now.day_start_ms(), 1_795_910_400_000);
        assert_eq!(now.month_start_ms(), days_from_civil(2026, 11, 1) * MS_PER_DAY);
        assert_eq!(now.until_reset(Period::Day), Duration::from_secs(4 * 3600 + 30 * 60));
        assert_eq!(
            Now::at(NOV_30_LAST_MS).until_reset(Period::Month),
            Duration::from_millis(1)
        );
        assert_eq!(Now::at(DEC_1).month_start_ms(), DEC_1);
    }

    #[test]
    fn spend_rolls_over_at_utc_midnight_and_the_first_of_the_month() {
        let s = Spend::default();
        s.add(Now::at(NOV_29), 5);
        s.add(Now::at(NOV_30_LAST_MS), 7);
        assert_eq!(s.spent(Now::at(NOV_30_LAST_MS)), Spent { day: 7, month: 12 });
        assert_eq!(s.spent(Now::at(DEC_1)), Spent { day: 0, month: 0 });
        s.at_least(Now::at(DEC_1), Spent { day: 3, month: 9 });
        s.at_least(Now::at(DEC_1), Spent { day: 1, month: 1 });
        assert_eq!(s.spent(Now::at(DEC_1)), Spent { day: 3, month: 9 });
        // A late caller from before midnight resets nothing and adds to no current period.
        s.add(Now::at(NOV_30_LAST_MS), 100);
        s.at_least(Now::at(NOV_30_LAST_MS), Spent { day: 500, month: 500 });
        assert_eq!(s.spent(Now::at(NOV_30_LAST_MS)), Spent { day: 3, month: 9 });
    }

    #[test]
    fn budgets_say_which_limit_is_reached() {
        let b = Budget {
            daily: Some(10),
            monthly: Some(100),
        };
        assert_eq!(b.exhausted(Spent { day: 9, month: 50 }), None);
        assert_eq!(b.exhausted(Spent { day: 10, month: 50 }), Some((Period::Day, 10)));
        assert_eq!(b.exhausted(Spent { day: 0, month: 100 }), Some((Period::Month, 100)));
        assert_eq!(b.crossed_by(Spent { day: 8, month: 8 }, 2), None);
        assert_eq!(b.crossed_by(Spent { day: 8, month: 8 }, 3), Some((Period::Day, 10)));
        assert!(!Budget::default().is_set());
    }

    #[test]
    fn usd_amounts_parse_exactly() {
        assert_eq!(parse_usd("5"), Ok(5_000_000_000_000));
        assert_eq!(parse_usd("12.50"), Ok(12_500_000_000_000));
        assert_eq!(parse_usd("$0.000001"), Ok(1_000_000));
        assert_eq!(parse_usd(".5"), Ok(500_000_000_000));
        for bad in ["", ".", "-1", "1e3", "1.2.3", "abc", "0.0000000000001", "99999999999"] {
            assert!(parse_usd(bad).is_err(), "{bad}");
        }
    }
}

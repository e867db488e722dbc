//! Gateway keys managed at run time: created with `tollgate keys create` or
//! `POST /admin/keys`, stored only as SHA-256 digests in the ledger's
//! database, each with an optional team, budget and rate limits.
//!
//! A key is 24 random bytes from the operating system's generator, shown
//! once as `tg-` and 48 hex digits. With that much entropy a fast digest is
//! safe to store: nobody can search back from it to the key (a slow password
//! hash would only add latency to every request).

pub mod budget;
pub mod registry;
pub mod store;

use crate::metering::cost::Pico;

pub use budget::{Budget, Period};
pub use registry::{Caller, KeyRegistry};
pub use store::{KeyStore, NewKey};

/// A key as stored: everything but the key itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyRecord {
    /// `k-` and the first 12 hex digits of the key's SHA-256: what the ledger and routes name.
    pub id: String,
    pub name: String,
    pub team: Option<String>,
    #[serde(serialize_with = "usd_or_null")]
    pub budget_daily_usd: Option<Pico>,
    #[serde(serialize_with = "usd_or_null")]
    pub budget_monthly_usd: Option<Pico>,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
    #[serde(skip)]
    pub digest: [u8; 32],
}

impl KeyRecord {
    pub fn budget(&self) -> Budget {
        Budget {
            daily: self.budget_daily_usd,
            monthly: self.budget_monthly_usd,
        }
    }
}

fn usd_or_null<S: serde::Serializer>(v: &Option<Pico>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(p) => s.serialize_f64(crate::metering::cost::usd(*p)),
        None => s.serialize_none(),
    }
}

/// A new secret key: `tg-` and 48 hex digits (192 random bits).
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)?;
    Ok(format!("tg-{}", hex(&bytes)))
}

/// Lowercase hex digits of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        s.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_long_random_and_distinct() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 51);
        assert!(a.starts_with("tg-") && a[3..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(hex(&[0x0f, 0xa0]), "0fa0");
    }
}

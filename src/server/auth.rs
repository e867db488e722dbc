//! Gateway keys: `Authorization: Bearer <key>` or `api-key: <key>`.
//!
//! Keys are kept as SHA-256 digests; a presented key is hashed and compared
//! with every digest in constant time, so neither the time taken nor an early
//! exit says which key came close, or how long the keys are.

use std::sync::Arc;

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;
use crate::keys::{Caller, KeyRegistry};

/// The configured keys, as digests with their ids, and whether managed keys
/// (from the ledger's database) are accepted too.
pub struct Keys {
    fixed: Vec<([u8; 32], Arc<str>)>,
    managed: bool,
}

/// Why a request's key was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused;

impl Keys {
    pub fn new(keys: &[Secret]) -> Self {
        Keys {
            fixed: keys
                .iter()
                .map(|k| {
                    let d = digest(k.expose().as_bytes());
                    (d, id_of_digest(&d).into())
                })
                .collect(),
            managed: false,
        }
    }

    /// Accepts the registry's managed keys too; the gateway is then never open.
    pub fn with_managed(mut self, managed: bool) -> Self {
        self.managed = managed;
        self
    }

    /// Whether managed keys are accepted (`auth.managed_keys`).
    pub fn managed(&self) -> bool {
        self.managed
    }

    /// With no keys configured the gateway is open.
    pub fn is_open(&self) -> bool {
        self.fixed.is_empty() && !self.managed
    }

    pub fn admit(&self, headers: &HeaderMap) -> bool {
        match presented_key(headers) {
            Some(key) => self.fixed_id(&digest(key)).is_some(),
            None => false,
        }
    }

    /// The id of the configured key with this digest: every key is compared,
    /// each in constant time.
    fn fixed_id(&self, presented: &[u8; 32]) -> Option<&Arc<str>> {
        let mut found = None;
        for (key, id) in &self.fixed {
            if bool::from(key.ct_eq(presented)) {
                found = Some(id);
            }
        }
        found
    }

    /// Who presented the request's key: `Ok(None)` on an open gateway
    /// without a key; `Err` for a missing or unknown key where keys are required.
    pub fn identify(&self, headers: &HeaderMap, registry: &KeyRegistry) -> Result<Option<Caller>, Refused> {
        let Some(presented) = presented_key(headers) else {
            return if self.is_open() { Ok(None) } else { Err(Refused) };
        };
        let d = digest(presented);
        if let Some(id) = self.fixed_id(&d) {
            return Ok(Some(Caller::Static(id.clone())));
        }
        if self.managed
            && let Some(key) = registry.find(&d)
        {
            return Ok(Some(Caller::Managed(key)));
        }
        if self.is_open() {
            // Open: any key is let through, and named in the ledger by its id.
            return Ok(Some(Caller::Anonymous(id_of_digest(&d).into())));
        }
        Err(Refused)
    }
}

/// The id of a key, naming it without revealing it: `k-` and the first 12
/// hex digits of its SHA-256 (`k-3f1b2c3d4e5f`).
pub fn id_of(key: &[u8]) -> String {
    id_of_digest(&digest(key))
}

pub(crate) fn id_of_digest(d: &[u8; 32]) -> String {
    let mut id = String::from("k-");
    id.push_str(&crate::keys::hex(&d[..6]));
    id
}

pub fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The key a client presented, if any.
fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.as_bytes();
        let token = v.strip_prefix(b"Bearer ").or_else(|| v.strip_prefix(b"bearer "))?;
        return Some(token.trim_ascii());
    }
    headers.get("api-key").map(|v| v.as_bytes().trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn bearer_and_api_key_headers() {
        let keys = Keys::new(&[Secret::new("tg-one".into()), Secret::new("tg-two".into())]);
        let mut h = HeaderMap::new();
        assert!(!keys.admit(&h));
        h.insert("authorization", HeaderValue::from_static("Bearer tg-two"));
        assert!(keys.admit(&h));
        h.insert("authorization", HeaderValue::from_static("Bearer tg-three"));
        assert!(!keys.admit(&h));
        h.insert("authorization", HeaderValue::from_static("Basic dGc6b25l"));
        assert!(!keys.admit(&h));
        h.remove("authorization");
        h.insert("api-key", HeaderValue::from_static("tg-one"));
        assert!(keys.admit(&h));
        assert!(Keys::new(&[]).is_open() && !Keys::new(&[]).with_managed(true).is_open());
    }

    #[test]
    fn callers_are_named_by_key_id_and_unknown_keys_refused() {
        let registry = KeyRegistry::default();
        let keys = Keys::new(&[Secret::new("tg-one".into())]);
        let mut h = HeaderMap::new();
        assert_eq!(keys.identify(&h, &registry).err(), Some(Refused));
        h.insert("authorization", HeaderValue::from_static("Bearer tg-one"));
        let caller = keys.identify(&h, &registry).unwrap().unwrap();
        assert_eq!(caller.id(), id_of(b"tg-one"));
        h.insert("authorization", HeaderValue::from_static("Bearer tg-two"));
        assert_eq!(keys.identify(&h, &registry).err(), Some(Refused));
        // Open: no key is fine, and a key is named.
        let open = Keys::new(&[]);
        assert!(open.identify(&HeaderMap::new(), &registry).unwrap().is_none());
        let anonymous = open.identify(&h, &registry).unwrap().unwrap();
        assert_eq!(anonymous.id(), id_of(b"tg-two"));
        // Any string at all: never a metric label.
        assert!(!anonymous.is_known() && caller.is_known());
    }
}

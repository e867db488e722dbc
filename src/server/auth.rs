//! Gateway keys: `Authorization: Bearer <key>` or `api-key: <key>`.
//!
//! Keys are kept as SHA-256 digests; a presented key is hashed and compared
//! with every digest in constant time, so neither the time taken nor an early
//! exit says which key came close, or how long the keys are.

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// The configured keys, as digests.
pub struct Keys(Vec<[u8; 32]>);

impl Keys {
    pub fn new(keys: &[Secret]) -> Self {
        Keys(keys.iter().map(|k| digest(k.expose().as_bytes())).collect())
    }

    /// With no keys configured the gateway is open.
    pub fn is_open(&self) -> bool {
        self.0.is_empty()
    }

    pub fn admit(&self, headers: &HeaderMap) -> bool {
        if self.is_open() {
            return true;
        }
        let Some(presented) = presented_key(headers) else {
            return false;
        };
        let presented = digest(presented);
        let mut matched = subtle::Choice::from(0);
        for key in &self.0 {
            matched |= key.ct_eq(&presented);
        }
        matched.into()
    }
}

/// Names the presented key without revealing it: the first 12 hex digits of
/// its SHA-256 (`k-3f1b2c3d4e5f`), for the ledger. None without a key.
pub fn key_id(headers: &HeaderMap) -> Option<String> {
    Some(id_of(presented_key(headers)?))
}

/// The id of a key: `k-` and the first 12 hex digits of its SHA-256.
pub fn id_of(key: &[u8]) -> String {
    let d = digest(key);
    let mut id = String::with_capacity(14);
    id.push_str("k-");
    for b in &d[..6] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

fn digest(bytes: &[u8]) -> [u8; 32] {
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
        assert!(Keys::new(&[]).admit(&HeaderMap::new()));
    }
}

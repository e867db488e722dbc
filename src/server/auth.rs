//! Gateway keys: `Authorization: Bearer <key>` or `api-key: <key>`, compared
//! in constant time. With no keys configured the gateway is open.

use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// The key a client presented, if any.
pub fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.as_bytes();
        let token = v
            .strip_prefix(b"Bearer ")
            .or_else(|| v.strip_prefix(b"bearer "))?;
        return Some(token.trim_ascii());
    }
    headers.get("api-key").map(|v| v.as_bytes().trim_ascii())
}

/// Whether `presented` matches one of `keys`. Every key is compared, so the
/// time taken does not say which key came close.
pub fn is_authorised(keys: &[Secret], presented: Option<&[u8]>) -> bool {
    if keys.is_empty() {
        return true;
    }
    let Some(presented) = presented else {
        return false;
    };
    let mut matched = subtle::Choice::from(0);
    for key in keys {
        matched |= key.expose().as_bytes().ct_eq(presented);
    }
    matched.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn bearer_and_api_key_headers() {
        let keys = vec![Secret::new("tg-one".into()), Secret::new("tg-two".into())];
        let mut h = HeaderMap::new();
        assert!(!is_authorised(&keys, presented_key(&h)));
        h.insert("authorization", HeaderValue::from_static("Bearer tg-two"));
        assert!(is_authorised(&keys, presented_key(&h)));
        h.insert("authorization", HeaderValue::from_static("Bearer tg-three"));
        assert!(!is_authorised(&keys, presented_key(&h)));
        h.remove("authorization");
        h.insert("api-key", HeaderValue::from_static("tg-one"));
        assert!(is_authorised(&keys, presented_key(&h)));
        assert!(is_authorised(&[], None));
    }
}

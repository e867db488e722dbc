//! `${VAR}` and `${VAR:-default}` interpolation from the environment.
//! `$${` writes a literal `${`.

/// The outcome of interpolating one config string.
#[derive(Debug, PartialEq, Eq)]
pub enum Interpolated {
    Value(String),
    /// Names of the referenced variables that are unset and have no default.
    Missing(Vec<String>),
}

pub fn interpolate(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Interpolated, String> {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| format!("unclosed `${{` in `{text}`"))?;
            let expr = &after[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`${{{expr}}}` is not a valid variable reference"));
            }
            match (lookup(name).filter(|v| !v.is_empty() || default.is_none()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => missing.push(name.to_owned()),
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(if missing.is_empty() {
        Interpolated::Value(out)
    } else {
        Interpolated::Missing(missing)
    })
}

/// Interpolates with the process environment.
pub fn interpolate_env(text: &str) -> Result<Interpolated, String> {
    interpolate(text, |name| std::env::var(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("example.com".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn value(s: &str) -> Interpolated {
        Interpolated::Value(s.into())
    }

    #[test]
    fn substitutes_and_defaults() {
        assert_eq!(
            interpolate("https://${HOST}/v1", env).unwrap(),
            value("https://example.com/v1")
        );
        assert_eq!(interpolate("${NOPE:-fallback}", env).unwrap(), value("fallback"));
        assert_eq!(interpolate("${EMPTY:-fallback}", env).unwrap(), value("fallback"));
        assert_eq!(interpolate("${EMPTY}", env).unwrap(), value(""));
        assert_eq!(interpolate("${HOST:-x}", env).unwrap(), value("example.com"));
        assert_eq!(
            interpolate("cost $5 and $${HOST}", env).unwrap(),
            value("cost $5 and ${HOST}")
        );
        assert_eq!(interpolate("plain", env).unwrap(), value("plain"));
    }

    #[test]
    fn reports_every_missing_variable() {
        assert_eq!(
            interpolate("${A}-${HOST}-${B}", env).unwrap(),
            Interpolated::Missing(vec!["A".into(), "B".into()])
        );
    }

    #[test]
    fn rejects_malformed_references() {
        assert!(interpolate("${OPEN", env).is_err());
        assert!(interpolate("${bad name}", env).is_err());
        assert!(interpolate("${}", env).is_err());
    }
}

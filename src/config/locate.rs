//! Finds the line of a key in block-style YAML, so that errors found after
//! parsing (a model naming an unknown provider, say) can still point at it.

/// 1-based line of `key:` inside `section` → list item `index` (models).
pub fn list_item_key(text: &str, section: &str, index: usize, key: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let start = top_level(&lines, section)?;
    let mut item = None;
    let mut seen = 0usize;
    let mut item_indent = None;
    for (i, line) in lines.iter().enumerate().skip(start + 1) {
        if is_top_level(line) {
            break;
        }
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.starts_with("- ") || trimmed == "-" {
            if item_indent.is_none() {
                item_indent = Some(indent);
            }
            if Some(indent) == item_indent {
                if seen == index {
                    item = Some(i);
                } else if item.is_some() {
                    break;
                }
                seen += 1;
            }
        }
        if let Some(first) = item {
            let body = trimmed.trim_start_matches("- ");
            if body.starts_with(&format!("{key}:")) {
                return Some(i + 1);
            }
            if i > first && item_indent.is_some_and(|ind| indent <= ind && trimmed.starts_with('-')) {
                break;
            }
        }
    }
    item.map(|i| i + 1)
}

/// 1-based line of `key:` inside `section` → `name` (providers), or of `name:` when `key` is None.
pub fn map_entry_key(text: &str, section: &str, name: &str, key: Option<&str>) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let start = top_level(&lines, section)?;
    let mut entry: Option<(usize, usize)> = None;
    for (i, line) in lines.iter().enumerate().skip(start + 1) {
        if is_top_level(line) {
            break;
        }
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match entry {
            None => {
                if trimmed.starts_with(&format!("{name}:")) {
                    entry = Some((i, indent));
                    if key.is_none() {
                        return Some(i + 1);
                    }
                    // Flow style on one line: `name: { kind: ..., key: ... }`.
                    if key.is_some_and(|k| trimmed.contains(&format!("{k}:"))) {
                        return Some(i + 1);
                    }
                }
            }
            Some((first, entry_indent)) => {
                if !trimmed.is_empty() && indent <= entry_indent {
                    return Some(first + 1);
                }
                if key.is_some_and(|k| trimmed.starts_with(&format!("{k}:"))) {
                    return Some(i + 1);
                }
            }
        }
    }
    entry.map(|(i, _)| i + 1)
}

/// 1-based line of a top-level key.
pub fn section(text: &str, section: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    top_level(&lines, section).map(|i| i + 1)
}

fn top_level(lines: &[&str], section: &str) -> Option<usize> {
    let prefix = format!("{section}:");
    lines.iter().position(|l| l.starts_with(&prefix))
}

fn is_top_level(line: &str) -> bool {
    line.chars()
        .next()
        .is_some_and(|c| !c.is_whitespace() && c != '#' && c != '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "server:\n  listen: x\nproviders:\n  sim:\n    kind: simulated\n  up:\n    kind: openai\n    base_url: nope\n  flat: { kind: openai, api_key: k }\nmodels:\n  - name: a\n    provider: sim\n  - name: b\n    provider: ghost\n";

    #[test]
    fn finds_keys_in_lists_and_maps() {
        assert_eq!(list_item_key(DOC, "models", 1, "provider"), Some(14));
        assert_eq!(list_item_key(DOC, "models", 0, "name"), Some(11));
        assert_eq!(map_entry_key(DOC, "providers", "up", Some("base_url")), Some(8));
        assert_eq!(map_entry_key(DOC, "providers", "flat", Some("api_key")), Some(9));
        assert_eq!(map_entry_key(DOC, "providers", "sim", None), Some(4));
        assert_eq!(section(DOC, "server"), Some(1));
    }
}

//! Model-name patterns: `*` matches any run of characters, `?` one. Compiled
//! once at load; matching allocates nothing.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Box<[u8]>,
}

impl Glob {
    pub fn new(pattern: &str) -> Self {
        Glob {
            pattern: pattern.as_bytes().into(),
        }
    }

    /// Whether the pattern has wildcards at all (a plain name is looked up, not scanned).
    pub fn is_literal(&self) -> bool {
        !self.pattern.iter().any(|b| matches!(b, b'*' | b'?'))
    }

    /// Iterative matching with one backtrack point, linear for patterns with one `*`
    /// and at worst proportional to pattern × text.
    pub fn matches(&self, text: &str) -> bool {
        let (p, t) = (&self.pattern[..], text.as_bytes());
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            match p.get(pi) {
                Some(b'*') => {
                    star = Some((pi, ti));
                    pi += 1;
                }
                Some(&c) if c == b'?' || c == t[ti] => {
                    pi += 1;
                    ti += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        pi = sp + 1;
                        ti = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        let g = Glob::new("gpt-4o*");
        assert!(g.matches("gpt-4o") && g.matches("gpt-4o-mini") && !g.matches("gpt-4"));
        assert!(Glob::new("*").matches("") && Glob::new("*").matches("anything"));
        assert!(Glob::new("claude-*-4-5").matches("claude-sonnet-4-5"));
        assert!(!Glob::new("claude-*-4-5").matches("claude-sonnet-4-1"));
        assert!(Glob::new("llama?.*:8b").matches("llama3.1:8b"));
        assert!(Glob::new("a*b*c").matches("axxbyyc") && !Glob::new("a*b*c").matches("axxbyy"));
        assert!(Glob::new("gpt-4o").is_literal() && !Glob::new("gpt-*").is_literal());
    }
}

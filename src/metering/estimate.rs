//! Token counts for what upstreams did not report: a stream cut or
//! cancelled before its usage chunk, an upstream that reports none.
//!
//! OpenAI's models are counted with their real tokenizer (tiktoken-rs:
//! `o200k_base` for GPT-4o, o1 and later, `cl100k_base` for GPT-4 and 3.5),
//! chosen by model name. Other families (Claude, Gemini, Llama, Mistral...)
//! have tokenizers that are not published for offline use or differ per
//! model; for them the count is a documented approximation: about four
//! characters of text per token, the rule of thumb OpenAI gives for English.
//! Counting characters (not bytes) keeps CJK and other multi-byte scripts
//! from being counted three times over. Counts made here are marked
//! (`Usage::estimated`).
//!
//! An encoding's tables (about 0.2 s to load and 45 MB for `o200k_base`)
//! are loaded when first needed, on a thread of their own, so a gateway that
//! never needs one never pays for it and no request waits for it: until
//! they are there, counts use the approximation.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use tiktoken_rs::CoreBPE;
use tiktoken_rs::tokenizer::{Tokenizer, get_tokenizer};

/// Characters per token assumed by the approximation.
pub const CHARS_PER_TOKEN: usize = 4;

/// The estimated token count of `text` by the approximation: at least one for any non-empty text.
pub fn tokens(text: &str) -> u64 {
    tokens_of_chars(text.chars().count())
}

/// The approximate token count of that many characters.
pub fn tokens_of_chars(chars: usize) -> u64 {
    chars.div_ceil(CHARS_PER_TOKEN) as u64
}

/// How a backend's text is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Four characters per token.
    Approximate,
    /// An OpenAI encoding.
    Bpe(Encoding),
}

/// The OpenAI encodings tollgate counts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    O200k = 0,
    Cl100k = 1,
}

static TABLES: [OnceLock<&'static CoreBPE>; 2] = [OnceLock::new(), OnceLock::new()];
static LOADING: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];

impl Encoding {
    fn of(t: Tokenizer) -> Option<Encoding> {
        match t {
            Tokenizer::O200kBase | Tokenizer::O200kHarmony => Some(Encoding::O200k),
            Tokenizer::Cl100kBase => Some(Encoding::Cl100k),
            _ => None,
        }
    }

    fn load(self) -> Option<&'static CoreBPE> {
        let t = match self {
            Encoding::O200k => Tokenizer::O200kBase,
            Encoding::Cl100k => Tokenizer::Cl100kBase,
        };
        tiktoken_rs::bpe_for_tokenizer(t).ok()
    }

    /// The tables if loaded; else starts loading them in the background.
    fn tables(self) -> Option<&'static CoreBPE> {
        let slot = &TABLES[self as usize];
        if let Some(bpe) = slot.get() {
            return Some(bpe);
        }
        if !LOADING[self as usize].swap(true, Ordering::AcqRel) {
            let spawned = std::thread::Builder::new()
                .name("tollgate-tokenizer".into())
                .spawn(move || {
                    if let Some(bpe) = self.load() {
                        let _ = slot.set(bpe);
                    }
                });
            if spawned.is_err() {
                LOADING[self as usize].store(false, Ordering::Release);
            }
        }
        None
    }

    /// Loads the tables now, waiting for them (tests; a start-up warm-up).
    pub fn load_now(self) {
        if let Some(bpe) = self.load() {
            let _ = TABLES[self as usize].set(bpe);
        }
    }
}

impl Counter {
    /// The first of `names` (upstream model, configured name, catalog entry)
    /// that is an OpenAI model gets its encoding; else the approximation.
    pub fn for_model<'a>(names: impl IntoIterator<Item = &'a str>) -> Counter {
        names
            .into_iter()
            .find_map(|n| get_tokenizer(n).and_then(Encoding::of))
            .map_or(Counter::Approximate, Counter::Bpe)
    }

    pub fn is_exact(self) -> bool {
        matches!(self, Counter::Bpe(_))
    }

    /// Tokens in `text`; approximated while the encoding's tables load.
    pub fn count(self, text: &str) -> u64 {
        match self {
            Counter::Approximate => tokens(text),
            Counter::Bpe(e) => match e.tables() {
                // tiktoken-rs unwraps its regex's result: a pathological text
                // must cost an approximation, not the request's metering.
                Some(bpe) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bpe.count_ordinary(text)))
                    .map_or_else(|_| tokens(text), |n| n as u64),
                None => tokens(text),
            },
        }
    }
}

/// Calls `each` with every character of generated text in a chunk: the
/// string values of its `content`, `text` and `arguments` fields, JSON
/// escapes decoded, found without parsing the chunk.
pub fn generated_text(data: &[u8], mut each: impl FnMut(char)) {
    static KEYS: std::sync::LazyLock<[memchr::memmem::Finder<'static>; 3]> = std::sync::LazyLock::new(|| {
        [
            memchr::memmem::Finder::new(b"\"content\":\""),
            memchr::memmem::Finder::new(b"\"text\":\""),
            memchr::memmem::Finder::new(b"\"arguments\":\""),
        ]
    });
    for key in KEYS.iter() {
        for at in key.find_iter(data) {
            let value = &data[at + key.needle().len()..];
            let mut end = 0;
            let mut escaped = false;
            while end < value.len() {
                match value[end] {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => break,
                    _ => {}
                }
                end += 1;
            }
            unescape(&String::from_utf8_lossy(&value[..end]), &mut each);
        }
    }
}

/// A JSON string's body with its escapes decoded (`\uXXXX` pairs included).
fn unescape(raw: &str, each: &mut impl FnMut(char)) {
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            each(c);
            continue;
        }
        let decoded = match chars.next() {
            Some('n') => '\n',
            Some('t') => '\t',
            Some('r') => '\r',
            Some('b') => '\u{8}',
            Some('f') => '\u{c}',
            Some('u') => {
                match hex4(&mut chars) {
                    Some(high @ 0xD800..=0xDBFF) => {
                        // A surrogate pair: `\uD83D\uDE00`.
                        let low = if chars.as_str().starts_with("\\u") {
                            chars.next();
                            chars.next();
                            hex4(&mut chars)
                        } else {
                            None
                        };
                        low.filter(|l| (0xDC00..=0xDFFF).contains(l))
                            .and_then(|l| char::from_u32(0x10000 + ((high - 0xD800) << 10) + (l - 0xDC00)))
                            .unwrap_or('\u{FFFD}')
                    }
                    Some(code) => char::from_u32(code).unwrap_or('\u{FFFD}'),
                    None => '\u{FFFD}',
                }
            }
            Some(other) => other,
            None => break,
        };
        each(decoded);
    }
}

/// The value of the next four hex digits.
fn hex4(chars: &mut std::str::Chars<'_>) -> Option<u32> {
    (0..4).try_fold(0, |acc, _| Some(acc * 16 + chars.next()?.to_digit(16)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_approximation_counts_characters_not_bytes() {
        assert_eq!(tokens(""), 0);
        assert_eq!(tokens("a"), 1);
        assert_eq!(tokens("Paris is nice"), 4);
        // Thirteen characters in 39 bytes: four tokens, not ten.
        assert_eq!(tokens("日本語の文章を数える例です"), 4);
    }

    #[test]
    fn openai_models_are_counted_with_their_own_encoding() {
        assert_eq!(Counter::for_model(["gpt-4o"]), Counter::Bpe(Encoding::O200k));
        assert_eq!(
            Counter::for_model(["gpt-4o-mini-2024-07-18"]),
            Counter::Bpe(Encoding::O200k)
        );
        assert_eq!(Counter::for_model(["gpt-4"]), Counter::Bpe(Encoding::Cl100k));
        assert_eq!(
            Counter::for_model(["my-deployment", "gpt-4o"]),
            Counter::Bpe(Encoding::O200k)
        );
        assert_eq!(
            Counter::for_model(["claude-sonnet-4-5", "llama3.1:8b"]),
            Counter::Approximate
        );
        Encoding::O200k.load_now();
        Encoding::Cl100k.load_now();
        // Known counts, as OpenAI's tiktoken gives them.
        let o200k = Counter::Bpe(Encoding::O200k);
        assert_eq!(o200k.count("hello world"), 2);
        assert_eq!(o200k.count(""), 0);
        let cl100k = Counter::Bpe(Encoding::Cl100k);
        // [9906, 11, 1917, 0] and [4438, 596, 433, 2133, 30]
        assert_eq!(cl100k.count("Hello, world!"), 4);
        assert_eq!(cl100k.count("How's it going?"), 5);
        assert_eq!(Counter::Approximate.count("Hello, world!"), 4);
    }

    #[test]
    fn generated_text_is_read_from_chunks_with_escapes_decoded() {
        let mut text = String::new();
        let chunk = br#"{"choices":[{"delta":{"content":"Hi \"you\"\n\u00e9\ud83d\ude00"}}]}"#;
        generated_text(chunk, |c| text.push(c));
        assert_eq!(text, "Hi \"you\"\né😀");
        let mut text = String::new();
        generated_text(
            br#"{"tool_calls":[{"function":{"arguments":"{\"a\":1}"}}],"text":"x"}"#,
            |c| text.push(c),
        );
        assert_eq!(text, "x{\"a\":1}");
        // Keys and quotes inside strings are text, not keys; other fields ending in
        // `content` or holding the word `text` are not generated text.
        let mut text = String::new();
        generated_text(
            br#"{"delta":{"reasoning_content":"no","type":"text","content":"say \"content\":\"x\" \":\"","refusal":null}}"#,
            |c| text.push(c),
        );
        assert_eq!(text, r#"say "content":"x" ":""#);
        let mut n = 0;
        generated_text(br#"{"choices":[{"delta":{"role":"assistant"}}]}"#, |_| n += 1);
        assert_eq!(n, 0);
    }
}

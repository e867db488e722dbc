//! Token counts for upstreams that report none.
//!
//! A documented approximation, not a tokenizer: about four characters of
//! text per token, the rule of thumb OpenAI gives for English with its BPE
//! encodings. Counting characters (not bytes) keeps CJK and other
//! multi-byte scripts from being counted three times over. Counts made here
//! are marked (`Usage::estimated`); a complete answer says so to the client
//! with `x-tollgate-usage: estimated`.

/// Characters per token assumed by [`tokens`].
pub const CHARS_PER_TOKEN: usize = 4;

/// The estimated token count of `text`: at least one for any non-empty text.
pub fn tokens(text: &str) -> u64 {
    tokens_of_chars(text.chars().count())
}

/// The estimated token count of that many characters.
pub fn tokens_of_chars(chars: usize) -> u64 {
    chars.div_ceil(CHARS_PER_TOKEN) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_characters_not_bytes() {
        assert_eq!(tokens(""), 0);
        assert_eq!(tokens("a"), 1);
        assert_eq!(tokens("Paris is nice"), 4);
        // Thirteen characters in 39 bytes: four tokens, not ten.
        assert_eq!(tokens("日本語の文章を数える例です"), 4);
    }
}

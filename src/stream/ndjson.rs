//! Newline-delimited JSON (Ollama's native streams): split on `\n` in the
//! byte buffer, skip empty lines, hand out each line whole, so a chunk that
//! ends inside a line or a UTF-8 character is never decoded half-way.

use bytes::{Buf, Bytes, BytesMut};

pub struct NdjsonDecoder {
    buf: BytesMut,
    max_line: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("an upstream line is larger than {0} bytes")]
pub struct LineTooLarge(pub usize);

impl NdjsonDecoder {
    pub fn new(max_line: usize) -> Self {
        NdjsonDecoder {
            buf: BytesMut::new(),
            max_line,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete, non-empty line, without its `\n` (or `\r\n`).
    pub fn next_line(&mut self) -> Result<Option<Bytes>, LineTooLarge> {
        while let Some(end) = memchr::memchr(b'\n', &self.buf) {
            let mut line = self.buf.split_to(end).freeze();
            self.buf.advance(1);
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some(line));
            }
        }
        if self.buf.len() > self.max_line {
            return Err(LineTooLarge(self.max_line));
        }
        Ok(None)
    }

    /// What is left when the body ends: a last line without `\n`.
    pub fn rest(&mut self) -> Option<Bytes> {
        let rest = self.buf.split().freeze();
        (!rest.iter().all(u8::is_ascii_whitespace)).then_some(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_survive_any_split() {
        let raw = include_bytes!("../../tests/fixtures/ollama/chat_stream.ndjson");
        let whole: Vec<Bytes> = {
            let mut d = NdjsonDecoder::new(1 << 20);
            d.push(raw);
            std::iter::from_fn(|| d.next_line().unwrap()).collect()
        };
        assert!(whole.len() > 2);
        for split in [1, 2, 5, 64] {
            let mut d = NdjsonDecoder::new(1 << 20);
            let mut got = Vec::new();
            for chunk in raw.chunks(split) {
                d.push(chunk);
                while let Some(line) = d.next_line().unwrap() {
                    got.push(line);
                }
            }
            assert_eq!(got, whole, "split every {split}");
        }
    }

    #[test]
    fn blank_lines_crlf_and_a_last_line_without_newline() {
        let mut d = NdjsonDecoder::new(1024);
        d.push(b"\n{\"a\":1}\r\n\n{\"b\":2}");
        assert_eq!(d.next_line().unwrap().as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(d.next_line().unwrap(), None);
        assert_eq!(d.rest().as_deref(), Some(&b"{\"b\":2}"[..]));
        let mut small = NdjsonDecoder::new(4);
        small.push(b"0123456789");
        assert_eq!(small.next_line(), Err(LineTooLarge(4)));
    }
}

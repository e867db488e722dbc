//! A byte-level SSE decoder following the WHATWG rules: events end at a blank
//! line; lines end in `\n`, `\r\n` or `\r`; one optional space after `data:`;
//! several `data:` lines join with `\n`; `:` lines are comments.
//!
//! It buffers raw bytes and only hands out complete events, so a transport
//! chunk ending inside a UTF-8 character or inside `data:` is never decoded
//! half-way. A single-line event (the common case) is handed out as a
//! zero-copy slice of the input.

use bytes::{Buf, Bytes, BytesMut};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any (Anthropic names its events).
    pub event: Option<Bytes>,
    pub data: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("an upstream event is larger than {0} bytes")]
    TooLarge(usize),
}

pub struct SseDecoder {
    /// Pushed bytes that hold a line end, decoded in place: a transport chunk
    /// is not copied, and its lines are slices of it.
    input: Bytes,
    /// A line cut off at the end of a chunk, gathered here until its end comes.
    partial: BytesMut,
    /// `partial` holds a line end (so it is worth decoding).
    partial_ended: bool,
    data: Option<Bytes>,
    /// Used only when an event has more than one `data:` line.
    joined: BytesMut,
    event: Option<Bytes>,
    /// A `\r` ended the previous line: skip a `\n` that starts the next input.
    pending_cr: bool,
    max_event: usize,
}

impl SseDecoder {
    pub fn new(max_event: usize) -> Self {
        SseDecoder {
            input: Bytes::new(),
            partial: BytesMut::new(),
            partial_ended: false,
            data: None,
            joined: BytesMut::new(),
            event: None,
            pending_cr: false,
            max_event,
        }
    }

    pub fn push(&mut self, chunk: Bytes) {
        if self.input.is_empty() && self.partial.is_empty() {
            self.input = chunk;
            return;
        }
        if !self.input.is_empty() {
            // Pushed before the last events were taken: decode in order.
            self.partial.extend_from_slice(&self.input);
            self.partial_ended = true;
            self.input = Bytes::new();
        }
        self.partial_ended |= memchr::memchr2(b'\n', b'\r', &chunk).is_some();
        self.partial.extend_from_slice(&chunk);
    }

    /// The next complete event in what was pushed so far.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseError> {
        loop {
            if self.input.is_empty() && self.partial_ended {
                self.input = self.partial.split().freeze();
                self.partial_ended = false;
            }
            if self.pending_cr && !self.input.is_empty() {
                if self.input[0] == b'\n' {
                    self.input.advance(1);
                }
                self.pending_cr = false;
            }
            let Some(end) = memchr::memchr2(b'\n', b'\r', &self.input) else {
                // An unfinished line waits for the next push; only it is copied.
                // `input` is let go even when empty: a spent slice still holds the
                // transport's whole buffer, which the connection could not reuse.
                self.partial.extend_from_slice(&self.input);
                self.input = Bytes::new();
                if self.partial.len() + self.pending_len() > self.max_event {
                    return Err(SseError::TooLarge(self.max_event));
                }
                return Ok(None);
            };
            let terminator = self.input[end];
            let line = self.input.split_to(end);
            self.input.advance(1);
            if terminator == b'\r' {
                if self.input.first() == Some(&b'\n') {
                    self.input.advance(1);
                } else if self.input.is_empty() {
                    self.pending_cr = true;
                }
            }
            if let Some(event) = self.line(line)? {
                return Ok(Some(event));
            }
        }
    }

    /// At end of input: an event not closed by a blank line is dropped, as the
    /// spec says; callers treat an unfinished stream as an error anyway.
    pub fn has_partial(&self) -> bool {
        !self.input.is_empty() || !self.partial.is_empty() || self.data.is_some()
    }

    fn pending_len(&self) -> usize {
        self.data.as_ref().map_or(0, Bytes::len) + self.joined.len()
    }

    fn line(&mut self, line: Bytes) -> Result<Option<SseEvent>, SseError> {
        if line.is_empty() {
            let event = self.event.take();
            return Ok(self.take_data().map(|data| SseEvent { event, data }));
        }
        if line[0] == b':' {
            return Ok(None);
        }
        let (name, value) = match memchr::memchr(b':', &line) {
            Some(i) => {
                let start = if line.get(i + 1) == Some(&b' ') { i + 2 } else { i + 1 };
                (line.slice(..i), line.slice(start..))
            }
            None => (line.clone(), Bytes::new()),
        };
        match &name[..] {
            b"data" => {
                if self.pending_len() + value.len() > self.max_event {
                    return Err(SseError::TooLarge(self.max_event));
                }
                match self.data.take() {
                    None if self.joined.is_empty() => self.data = Some(value),
                    first => {
                        if let Some(first) = first {
                            self.joined.extend_from_slice(&first);
                        }
                        self.joined.extend_from_slice(b"\n");
                        self.joined.extend_from_slice(&value);
                    }
                }
            }
            b"event" => self.event = Some(value),
            _ => {}
        }
        Ok(None)
    }

    fn take_data(&mut self) -> Option<Bytes> {
        if !self.joined.is_empty() {
            self.data = None;
            return Some(self.joined.split().freeze());
        }
        self.data.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], split_every: usize) -> Vec<SseEvent> {
        let mut d = SseDecoder::new(1 << 20);
        let mut out = Vec::new();
        for chunk in input.chunks(split_every.max(1)) {
            d.push(Bytes::copy_from_slice(chunk));
            while let Some(e) = d.next_event().unwrap() {
                out.push(e);
            }
        }
        out
    }

    fn datas(events: &[SseEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| String::from_utf8(e.data.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn openai_fixture_decodes_identically_at_every_split() {
        let raw = include_bytes!("../../tests/fixtures/openai/chat_stream.sse");
        let whole = decode_all(raw, raw.len());
        assert!(whole.len() > 3);
        assert_eq!(datas(&whole).last().unwrap(), "[DONE]");
        for split in [1, 2, 3, 7, 64] {
            assert_eq!(decode_all(raw, split), whole, "split every {split} bytes");
        }
    }

    #[test]
    fn multibyte_characters_split_across_chunks_arrive_intact() {
        let raw = "data: {\"t\":\"18°C ☀️ 東京\"}\n\n".as_bytes();
        for split in 1..raw.len() {
            assert_eq!(datas(&decode_all(raw, split)), vec!["{\"t\":\"18°C ☀️ 東京\"}"]);
        }
    }

    #[test]
    fn line_endings_spaces_comments_and_multiline_data() {
        let raw = b": keep-alive\r\n\r\ndata:a\r\ndata: b\r\rdata:  c\n\nevent: ping\ndata: {}\n\n";
        for split in 1..8 {
            let events = decode_all(raw, split);
            assert_eq!(datas(&events), vec!["a\nb", " c", "{}"], "split {split}");
            assert_eq!(events[2].event.as_deref(), Some(&b"ping"[..]));
        }
    }

    #[test]
    fn crlf_framing_like_gemini() {
        let raw = b"data: {\"x\":1}\r\n\r\ndata: {\"x\":2}\r\n\r\n";
        assert_eq!(datas(&decode_all(raw, 3)), vec!["{\"x\":1}", "{\"x\":2}"]);
    }

    #[test]
    fn oversized_event_is_an_error_not_unbounded_memory() {
        let mut d = SseDecoder::new(16);
        d.push(Bytes::from_static(b"data: 0123456789abcdefghij"));
        assert_eq!(d.next_event(), Err(SseError::TooLarge(16)));
    }

    #[test]
    fn whole_events_in_a_chunk_are_slices_of_it() {
        let chunk = Bytes::from_static(b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: {\"c\"");
        let mut d = SseDecoder::new(1024);
        d.push(chunk.clone());
        let first = d.next_event().unwrap().unwrap();
        assert_eq!(first.data.as_ptr(), chunk[6..].as_ptr(), "not copied");
        assert_eq!(&d.next_event().unwrap().unwrap().data[..], b"{\"b\":2}");
        assert_eq!(d.next_event().unwrap(), None);
        // The cut-off event is completed by the next chunks, however they are cut.
        d.push(Bytes::from_static(b":3}"));
        assert_eq!(d.next_event().unwrap(), None);
        d.push(Bytes::from_static(b"\n"));
        d.push(Bytes::from_static(b"\ndata: {}\n\n"));
        assert_eq!(&d.next_event().unwrap().unwrap().data[..], b"{\"c\":3}");
        assert_eq!(&d.next_event().unwrap().unwrap().data[..], b"{}");
        assert_eq!(d.next_event().unwrap(), None);
        assert!(!d.has_partial());
    }

    #[test]
    fn a_chunk_is_let_go_once_its_events_are_taken() {
        // The connection reuses its read buffer only when nothing else holds it.
        for (input, partial) in [(&b"data: {}\n\n"[..], false), (b"data: {}\n\ndata: {\"cut", true)] {
            let chunk = Bytes::from(input.to_vec());
            let mut d = SseDecoder::new(1024);
            d.push(chunk.clone());
            assert!(!chunk.is_unique());
            drop(d.next_event().unwrap().unwrap());
            assert_eq!(d.next_event().unwrap(), None);
            assert!(chunk.is_unique(), "the decoder still holds the chunk");
            assert_eq!(d.has_partial(), partial);
        }
    }

    #[test]
    fn a_large_event_in_small_chunks_arrives_whole() {
        // 64 KiB in 16-byte chunks, each tried for an event as it comes.
        let mut d = SseDecoder::new(1 << 20);
        d.push(Bytes::from_static(b"data: "));
        for _ in 0..4096 {
            d.push(Bytes::from_static(b"0123456789abcdef"));
            assert_eq!(d.next_event().unwrap(), None);
        }
        d.push(Bytes::from_static(b"\n\n"));
        assert_eq!(d.next_event().unwrap().unwrap().data.len(), 65536);
    }

    #[test]
    fn unfinished_event_is_reported_as_partial() {
        let mut d = SseDecoder::new(1024);
        d.push(Bytes::from_static(b"data: {\"half\":"));
        assert_eq!(d.next_event().unwrap(), None);
        assert!(d.has_partial());
    }
}

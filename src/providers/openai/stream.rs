//! An upstream's OpenAI-style SSE body → canonical stream events, relayed
//! one event at a time as they arrive.

use std::sync::LazyLock;

use bytes::Bytes;
use http::StatusCode;
use hyper::body::Incoming;
use memchr::memmem::{Finder, FinderRev};
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::time::Instant;

use super::errors;
use super::normalise::{self, StreamFixer};
use crate::api::{ApiError, Usage};
use crate::providers::event_body::{self, SseBody, Step, Translate};
use crate::providers::{EventStream, StreamEvent, UpstreamClient};

pub fn relay(body: Incoming, client: UpstreamClient, deadline: Instant, azure: bool, request_id: &str) -> EventStream {
    let provider = client.provider().to_owned();
    let fixer = StreamFixer::new(request_id);
    event_body::translated(
        SseBody::sse(body, client, deadline),
        PassThrough { azure, provider, fixer },
    )
}

/// OpenAI-style events pass through as they are; only errors, the end and
/// Azure's annotations are told apart.
struct PassThrough {
    /// Azure adds content-filter annotation chunks that are not part of the answer.
    azure: bool,
    provider: String,
    /// Puts right what OpenAI-compatible servers get wrong (see `normalise`).
    fixer: StreamFixer,
}

impl Translate for PassThrough {
    const END: &'static str = "`data: [DONE]`";

    fn step(&mut self, data: Bytes) -> Step {
        if &data[..] == b"[DONE]" {
            return Step::Done(self.fixer.missing_finish().into_iter().collect());
        }
        match data.iter().find(|b| !b.is_ascii_whitespace()) {
            None => return Step::Emit(Vec::new()),
            Some(b'{') => {}
            Some(_) => return Step::Invalid("a stream event is not a JSON object".into()),
        }
        if let Some(error) = midstream_error(&data, &self.provider) {
            return Step::Failed(error);
        }
        if self.azure && is_annotation_only(&data) {
            return Step::Emit(Vec::new());
        }
        let event = classify_chunk(self.fixer.chunk(data));
        if event.usage_only
            && let Some(finish) = self.fixer.missing_finish()
        {
            return Step::Emit(vec![finish, event]);
        }
        Step::One(event)
    }
}

// Every chunk is searched for these, so each search is arranged to stop
// early on an ordinary chunk: `usage` from the end, where it is, and a
// `choices` key (near the start) before looking for `error` all the way through.
static USAGE_KEY: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(b"\"usage\":"));
static ERROR_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"error\""));
static CHOICES_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"choices\""));
static CONTENT_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"content\":\""));
static TEXT_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"text\":\""));
static TOOL_CALLS_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"tool_calls\""));
static FILTER_OFFSETS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"content_filter_offsets\""));

/// Wraps a chunk without parsing it, unless it carries usage: with
/// `include_usage` every chunk says `"usage":null`, and only the last one is
/// worth parsing. Whether it carries content is read from the bytes
/// (compact JSON, as OpenAI-compatible servers send): it only times the
/// first token, so a miss costs a metric sample, never an answer.
pub(crate) fn classify_chunk(data: Bytes) -> StreamEvent {
    // Some `"content":"` or `"text":"` whose string is not empty (the search stops at the first).
    let non_empty = |key: &Finder<'static>| {
        let len = key.needle().len();
        key.find_iter(&data).any(|at| data.get(at + len) != Some(&b'"'))
    };
    let has_content = non_empty(&CONTENT_KEY) || non_empty(&TEXT_KEY) || TOOL_CALLS_KEY.find(&data).is_some();
    // The last `"usage":` only: searching on past a `"usage":null` (every chunk
    // but the last, with `include_usage`) would read each chunk backwards whole.
    let has_usage = USAGE_KEY.rfind(&data).is_some_and(|at| {
        let rest = &data[at + USAGE_KEY.needle().len()..];
        rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
    });
    if !has_usage {
        return StreamEvent::chunk(data, has_content);
    }
    #[derive(Deserialize)]
    struct Chunk {
        #[serde(default, deserialize_with = "crate::api::usage::lenient_usage")]
        usage: Option<Usage>,
        #[serde(default)]
        choices: Vec<IgnoredAny>,
    }
    match serde_json::from_slice::<Chunk>(&data) {
        Ok(Chunk {
            usage: Some(usage),
            choices,
        }) if choices.is_empty() => StreamEvent::usage(data, usage),
        Ok(Chunk { usage, .. }) => StreamEvent {
            usage,
            ..StreamEvent::chunk(data, has_content)
        },
        Err(_) => StreamEvent::chunk(data, has_content),
    }
}

/// An `{"error": ...}` event (no `choices`): the upstream failed mid-stream.
fn midstream_error(data: &[u8], provider: &str) -> Option<ApiError> {
    if CHOICES_KEY.find(data).is_some() || ERROR_KEY.find(data).is_none() {
        return None;
    }
    let is_envelope = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(data)
        .is_ok_and(|m| m.contains_key("error"));
    is_envelope.then(|| errors::from_body(StatusCode::BAD_GATEWAY, data, provider, |s| s))
}

/// Azure's content-filter annotations: the prompt-filter chunk (empty `id`,
/// no choices) and asynchronous-filter chunks (`content_filter_offsets`).
fn is_annotation_only(data: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(default, borrow)]
        id: Option<&'a str>,
    }
    FILTER_OFFSETS.find(data).is_some()
        || (normalise::empty_id(data)
            && serde_json::from_slice::<Probe>(data).is_ok_and(|p| p.id.is_none_or(str::is_empty)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_events(raw: &str) -> Vec<&str> {
        raw.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .collect()
    }

    #[test]
    fn usage_is_read_only_from_the_usage_chunk() {
        let raw = include_str!("../../../tests/fixtures/openai/chat_stream.sse");
        let events: Vec<StreamEvent> = fixture_events(raw)
            .into_iter()
            .map(|d| classify_chunk(Bytes::copy_from_slice(d.as_bytes())))
            .collect();
        let with_usage: Vec<_> = events.iter().filter(|e| e.usage.is_some()).collect();
        assert_eq!(with_usage.len(), 1);
        assert!(with_usage[0].usage_only);
        assert_eq!(with_usage[0].usage, Some(Usage::new(91, 9)));
        assert!(events.last().unwrap().usage_only);
        let content: Vec<bool> = events.iter().map(|e| e.has_content).collect();
        assert!(!content[0], "the role chunk has no content");
        assert!(content[1], "the first text chunk has");
    }

    #[test]
    fn tool_call_chunks_count_as_content() {
        let raw = include_str!("../../../tests/fixtures/openai/chat_stream_tool_call.sse");
        let events: Vec<StreamEvent> = fixture_events(raw)
            .into_iter()
            .map(|d| classify_chunk(Bytes::copy_from_slice(d.as_bytes())))
            .collect();
        assert!(events.iter().any(|e| e.has_content));
    }

    #[test]
    fn azure_annotation_chunks_are_recognised() {
        let raw = include_str!("../../../tests/fixtures/azure/chat_stream.sse");
        let events = fixture_events(raw);
        assert!(is_annotation_only(events[0].as_bytes()));
        assert!(!is_annotation_only(events[1].as_bytes()));
        assert!(is_annotation_only(
            br#"{"choices":[{"index":0,"finish_reason":null,"content_filter_offsets":{"check_offset":0}}],"id":"x"}"#
        ));
    }

    #[test]
    fn midstream_errors_are_detected_however_they_are_spaced() {
        for raw in [
            &br#"{"error":{"message":"overloaded","type":"server_error","code":null}}"#[..],
            br#"{ "error" : { "message": "overloaded", "type": "server_error" } }"#,
        ] {
            let e = midstream_error(raw, "p").unwrap();
            assert_eq!(e.message, "overloaded");
            assert_eq!(e.kind, "server_error");
        }
        assert!(
            midstream_error(
                br#"{"id":"x","choices":[{"delta":{"content":"an \"error\" word"}}]}"#,
                "p"
            )
            .is_none()
        );
    }
}

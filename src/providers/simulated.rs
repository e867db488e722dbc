//! The built-in simulated provider: no network, deterministic answers,
//! configurable time to first token, streaming speed and reply length.
//! The default config, demos and load tests use it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream;
use serde::Serialize;
use serde_json::{Value, json};

use super::{Call, Provider, Reply, StreamEvent, UpstreamError};
use crate::api::embeddings::EncodingFormat;
use crate::api::{ChatRequest, CompletionRequest, EmbeddingsRequest, Usage};
use crate::config::SimulatedSection;

const WORDS: &[&str] = &[
    "tollgate",
    "routes",
    "each",
    "request",
    "to",
    "the",
    "backend",
    "that",
    "fits",
    "its",
    "policy",
    "and",
    "meters",
    "every",
    "token",
    "it",
    "serves",
    "so",
    "teams",
    "can",
    "compare",
    "cost",
    "latency",
    "quality",
    "across",
    "providers",
    "in",
    "production",
];

pub struct SimulatedProvider {
    cfg: SimulatedSection,
}

/// One simulated answer: its words and usage.
struct Script {
    tokens: Vec<String>,
    usage: Usage,
    finish_reason: &'static str,
}

impl SimulatedProvider {
    pub fn new(cfg: SimulatedSection) -> Self {
        SimulatedProvider { cfg }
    }

    fn script(&self, prompt_seed: &str, prompt_bytes: usize, max_tokens: Option<u32>) -> Script {
        let mut tokens: Vec<String> = match &self.cfg.reply {
            Some(text) => text.split_inclusive(' ').map(str::to_owned).collect(),
            None => {
                let start = fnv1a(prompt_seed.as_bytes()) as usize;
                (0..self.cfg.completion_tokens as usize)
                    .map(|i| {
                        let w = WORDS[(start + i) % WORDS.len()];
                        if i == 0 {
                            capitalise(w)
                        } else {
                            format!(" {w}")
                        }
                    })
                    .collect()
            }
        };
        let mut finish_reason = "stop";
        if let Some(max) = max_tokens
            && tokens.len() > max as usize
        {
            tokens.truncate(max as usize);
            finish_reason = "length";
        }
        let prompt_tokens = (prompt_bytes as u64).div_ceil(4).max(1);
        Script {
            usage: Usage::new(prompt_tokens, tokens.len() as u64),
            tokens,
            finish_reason,
        }
    }

    async fn first_token_delay(&self) {
        if let Some(ttft) = self.cfg.ttft {
            tokio::time::sleep(ttft.0).await;
        }
    }

    fn token_gap(&self) -> Option<Duration> {
        (self.cfg.tokens_per_second > 0.0)
            .then(|| Duration::from_secs_f64(1.0 / self.cfg.tokens_per_second))
    }

    /// Streams the opening chunk, one chunk per token, the finish chunk and the usage chunk.
    fn stream(&self, script: Script, frame: impl Fn(Piece<'_>) -> Value) -> Reply {
        let total = script.tokens.len();
        let encode = |v: Value| Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
        let mut events = Vec::with_capacity(total + 3);
        events.push(StreamEvent::content(encode(frame(Piece::Start))));
        events.extend(
            script
                .tokens
                .iter()
                .map(|t| StreamEvent::content(encode(frame(Piece::Token(t))))),
        );
        events.push(StreamEvent::content(encode(frame(Piece::Finish(
            script.finish_reason,
        )))));
        events.push(StreamEvent {
            data: encode(frame(Piece::Usage(script.usage))),
            usage: Some(script.usage),
            usage_only: true,
        });
        let gap = self.token_gap();
        let steps = stream::unfold(
            events.into_iter().enumerate(),
            move |mut events| async move {
                let (step, event) = events.next()?;
                // Tokens after the first arrive at the configured speed.
                if let Some(gap) = gap.filter(|_| (2..=total).contains(&step)) {
                    tokio::time::sleep(gap).await;
                }
                Some((Ok(event), events))
            },
        );
        Reply::Stream(Box::pin(steps))
    }
}

enum Piece<'a> {
    Start,
    Token(&'a str),
    Finish(&'static str),
    Usage(Usage),
}

#[derive(Serialize)]
struct Envelope<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Value,
    usage: Usage,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn capitalise(w: &str) -> String {
    let mut c = w.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn id(prefix: &str, request_id: &str) -> String {
    format!(
        "{prefix}-sim-{}",
        request_id.get(..12).unwrap_or(request_id)
    )
}

#[async_trait]
impl Provider for SimulatedProvider {
    async fn chat(&self, call: Call<'_>, req: ChatRequest) -> Result<Reply, UpstreamError> {
        let seed = req
            .messages
            .iter()
            .rev()
            .find_map(|m| m.content.as_ref().and_then(|c| c.last_text()))
            .unwrap_or("");
        let prompt_bytes: usize = req
            .messages
            .iter()
            .map(|m| m.content.as_ref().map_or(0, |c| c.text_len()) + 4)
            .sum();
        let script = self.script(
            seed,
            prompt_bytes,
            req.max_completion_tokens.or(req.max_tokens),
        );
        self.first_token_delay().await;
        let model = call.requested_model.to_owned();
        let id = id("chatcmpl", call.request_id);
        let created = now();
        if req.is_stream() {
            return Ok(self.stream(script, |piece| {
                let (choices, usage) = match piece {
                    Piece::Start => (json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]), Value::Null),
                    Piece::Token(t) => (json!([{"index": 0, "delta": {"content": t}, "logprobs": null, "finish_reason": null}]), Value::Null),
                    Piece::Finish(f) => (json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": f}]), Value::Null),
                    Piece::Usage(u) => (json!([]), json!(u)),
                };
                json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices, "usage": usage})
            }));
        }
        let body = Envelope {
            id,
            object: "chat.completion",
            created,
            model: &model,
            choices: json!([{"index": 0, "message": {"role": "assistant", "content": script.tokens.concat(), "refusal": null}, "logprobs": null, "finish_reason": script.finish_reason}]),
            usage: script.usage,
        };
        Ok(Reply::Complete {
            body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
            usage: Some(script.usage),
        })
    }

    async fn completions(
        &self,
        call: Call<'_>,
        req: CompletionRequest,
    ) -> Result<Reply, UpstreamError> {
        let seed = req.prompt.as_str().unwrap_or("");
        let script = self.script(seed, req.prompt_len(), Some(req.max_tokens.unwrap_or(16)));
        self.first_token_delay().await;
        let model = call.requested_model.to_owned();
        let id = id("cmpl", call.request_id);
        let created = now();
        if req.is_stream() {
            return Ok(self.stream(script, |piece| {
                let (choices, usage) = match piece {
                    Piece::Start => (json!([{"text": "", "index": 0, "logprobs": null, "finish_reason": null}]), Value::Null),
                    Piece::Token(t) => (json!([{"text": t, "index": 0, "logprobs": null, "finish_reason": null}]), Value::Null),
                    Piece::Finish(f) => (json!([{"text": "", "index": 0, "logprobs": null, "finish_reason": f}]), Value::Null),
                    Piece::Usage(u) => (json!([]), json!(u)),
                };
                json!({"id": id, "object": "text_completion", "created": created, "model": model, "choices": choices, "usage": usage})
            }));
        }
        let body = Envelope {
            id,
            object: "text_completion",
            created,
            model: &model,
            choices: json!([{"text": script.tokens.concat(), "index": 0, "logprobs": null, "finish_reason": script.finish_reason}]),
            usage: script.usage,
        };
        Ok(Reply::Complete {
            body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
            usage: Some(script.usage),
        })
    }

    async fn embeddings(
        &self,
        call: Call<'_>,
        req: EmbeddingsRequest,
    ) -> Result<Reply, UpstreamError> {
        let dims = req
            .dimensions
            .unwrap_or(self.cfg.embedding_dimensions)
            .max(1) as usize;
        let texts = req.texts();
        let prompt_tokens: u64 = texts
            .iter()
            .map(|t| (t.len() as u64).div_ceil(4).max(1))
            .sum();
        let data: Vec<Value> = texts
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let vector = embed(text, dims);
                let embedding = match req.encoding_format {
                    Some(EncodingFormat::Base64) => Value::String(base64_f32(&vector)),
                    _ => json!(vector),
                };
                json!({"object": "embedding", "index": index, "embedding": embedding})
            })
            .collect();
        let usage = Usage {
            prompt_tokens,
            completion_tokens: 0,
            total_tokens: prompt_tokens,
        };
        let body = json!({"object": "list", "data": data, "model": call.requested_model, "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}});
        Ok(Reply::Complete {
            body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
            usage: Some(usage),
        })
    }
}

/// A deterministic unit vector derived from the text.
fn embed(text: &str, dims: usize) -> Vec<f32> {
    let mut state = fnv1a(text.as_bytes()) | 1;
    let raw: Vec<f32> = (0..dims)
        .map(|_| {
            // xorshift64: cheap, deterministic, good enough to spread values.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    raw.into_iter().map(|x| x / norm).collect()
}

/// Little-endian f32s in standard base64, as OpenAI's `encoding_format: base64`.
fn base64_f32(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_encodings() {
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[0.0, 1.0]), "AAAAAAAAgD8=");
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embed("hello", 16);
        assert_eq!(a, embed("hello", 16));
        assert_ne!(a, embed("hullo", 16));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5);
    }

    #[test]
    fn reply_is_deterministic_and_capped_by_max_tokens() {
        let p = SimulatedProvider::new(serde_yaml_ng::from_str("completion_tokens: 10").unwrap());
        let a = p.script("hi", 8, None);
        assert_eq!(a.tokens, p.script("hi", 8, None).tokens);
        assert_eq!(a.usage, Usage::new(2, 10));
        assert_eq!(a.finish_reason, "stop");
        let cut = p.script("hi", 8, Some(3));
        assert_eq!(cut.tokens.len(), 3);
        assert_eq!(cut.finish_reason, "length");
    }
}

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
use crate::api::embeddings::{self, Input};
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

/// One simulated choice: its tokens and why it stopped.
struct Choice {
    tokens: Vec<String>,
    finish_reason: &'static str,
}

/// A simulated answer: its choices (each with its OpenAI `index`) and usage.
struct Answer {
    choices: Vec<Choice>,
    usage: Usage,
}

impl SimulatedProvider {
    pub fn new(cfg: SimulatedSection) -> Self {
        SimulatedProvider { cfg }
    }

    /// The reply to a prompt; `variant` makes the n choices of one request differ.
    fn choice(&self, seed: &str, variant: usize, max_tokens: Option<u32>) -> Choice {
        let mut tokens: Vec<String> = match &self.cfg.reply {
            Some(text) => text.split_inclusive(' ').map(str::to_owned).collect(),
            None => {
                let start = fnv1a(seed.as_bytes()) as usize + variant * 7;
                (0..self.cfg.completion_tokens as usize)
                    .map(|i| {
                        let w = WORDS[(start + i) % WORDS.len()];
                        if i == 0 { capitalise(w) } else { format!(" {w}") }
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
        Choice { tokens, finish_reason }
    }

    /// `n` choices for each prompt, indexed as OpenAI does: prompt-major.
    fn answer(&self, prompts: &[String], n: usize, max_tokens: Option<u32>, prompt_tokens: u64) -> Answer {
        let choices: Vec<Choice> = prompts
            .iter()
            .flat_map(|p| (0..n).map(move |i| (p, i)))
            .map(|(p, i)| self.choice(p, i, max_tokens))
            .collect();
        let completion = choices.iter().map(|c| c.tokens.len() as u64).sum();
        Answer {
            choices,
            usage: Usage::new(prompt_tokens.max(1), completion),
        }
    }

    async fn first_token_delay(&self) {
        if let Some(ttft) = self.cfg.ttft {
            tokio::time::sleep(ttft.0).await;
        }
    }

    fn token_gap(&self) -> Option<Duration> {
        (self.cfg.tokens_per_second > 0.0).then(|| Duration::from_secs_f64(1.0 / self.cfg.tokens_per_second))
    }

    /// Streams each choice in turn (opening chunk, one chunk per token,
    /// finish chunk), then the usage chunk. Tokens after the first arrive at
    /// the configured speed.
    fn stream(&self, answer: Answer, frame: impl Fn(usize, Piece<'_>) -> Value) -> Reply {
        let encode = |v: Value| Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
        let mut events: Vec<(StreamEvent, bool)> = Vec::new();
        for (index, choice) in answer.choices.iter().enumerate() {
            events.push((StreamEvent::chunk(encode(frame(index, Piece::Start)), false), false));
            for (i, t) in choice.tokens.iter().enumerate() {
                events.push((
                    StreamEvent::chunk(encode(frame(index, Piece::Token(t))), true),
                    index > 0 || i > 0,
                ));
            }
            events.push((
                StreamEvent::chunk(encode(frame(index, Piece::Finish(choice.finish_reason))), false),
                false,
            ));
        }
        let usage = StreamEvent::usage(encode(frame(0, Piece::Usage(answer.usage))), answer.usage);
        events.push((usage, false));
        let gap = self.token_gap();
        let steps = stream::unfold(events.into_iter(), move |mut events| async move {
            let (event, paced) = events.next()?;
            if let Some(gap) = gap.filter(|_| paced) {
                tokio::time::sleep(gap).await;
            }
            Some((Ok(event), events))
        });
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
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
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

fn new_id(prefix: &str) -> String {
    format!("{prefix}-sim-{}", uuid::Uuid::new_v4().simple())
}

fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4).max(1)
}

fn encode(body: &impl Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec(body).unwrap_or_default())
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
        let n = req.n.unwrap_or(1) as usize;
        let answer = self.answer(
            &[seed.to_owned()],
            n,
            req.max_completion_tokens.or(req.max_tokens),
            estimate_tokens(prompt_bytes),
        );
        self.first_token_delay().await;
        let (id, created, model) = (new_id("chatcmpl"), now(), call.requested_model);
        if req.is_stream() {
            return Ok(self.stream(answer, |index, piece| {
                let (choices, usage) = match piece {
                    Piece::Start => (json!([{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]), Value::Null),
                    Piece::Token(t) => (json!([{"index": index, "delta": {"content": t}, "logprobs": null, "finish_reason": null}]), Value::Null),
                    Piece::Finish(f) => (json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": f}]), Value::Null),
                    Piece::Usage(u) => (json!([]), json!(u)),
                };
                json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices, "usage": usage})
            }));
        }
        let choices: Vec<Value> = answer.choices.iter().enumerate().map(|(index, c)| json!({"index": index, "message": {"role": "assistant", "content": c.tokens.concat(), "refusal": null}, "logprobs": null, "finish_reason": c.finish_reason})).collect();
        let body = Envelope {
            id,
            object: "chat.completion",
            created,
            model,
            choices: Value::Array(choices),
            usage: answer.usage,
        };
        Ok(Reply::Complete {
            body: encode(&body),
            usage: Some(answer.usage),
        })
    }

    async fn completions(&self, call: Call<'_>, req: CompletionRequest) -> Result<Reply, UpstreamError> {
        let prompts = req.prompts();
        let n = req.extra.get("n").and_then(Value::as_u64).unwrap_or(1).max(1) as usize;
        let prompt_tokens = prompts.iter().map(|p| estimate_tokens(p.len())).sum();
        // OpenAI's default for legacy completions is 16 tokens.
        let answer = self.answer(&prompts, n, Some(req.max_tokens.unwrap_or(16)), prompt_tokens);
        self.first_token_delay().await;
        let (id, created, model) = (new_id("cmpl"), now(), call.requested_model);
        if req.is_stream() {
            return Ok(self.stream(answer, |index, piece| {
                let (choices, usage) = match piece {
                    Piece::Start => (json!([{"text": "", "index": index, "logprobs": null, "finish_reason": null}]), Value::Null),
                    Piece::Token(t) => (json!([{"text": t, "index": index, "logprobs": null, "finish_reason": null}]), Value::Null),
                    Piece::Finish(f) => (json!([{"text": "", "index": index, "logprobs": null, "finish_reason": f}]), Value::Null),
                    Piece::Usage(u) => (json!([]), json!(u)),
                };
                json!({"id": id, "object": "text_completion", "created": created, "model": model, "choices": choices, "usage": usage})
            }));
        }
        let choices: Vec<Value> = answer.choices.iter().enumerate().map(|(index, c)| json!({"text": c.tokens.concat(), "index": index, "logprobs": null, "finish_reason": c.finish_reason})).collect();
        let body = Envelope {
            id,
            object: "text_completion",
            created,
            model,
            choices: Value::Array(choices),
            usage: answer.usage,
        };
        Ok(Reply::Complete {
            body: encode(&body),
            usage: Some(answer.usage),
        })
    }

    async fn embeddings(&self, call: Call<'_>, req: EmbeddingsRequest) -> Result<Reply, UpstreamError> {
        let dims = req.dimensions.unwrap_or(self.cfg.embedding_dimensions).max(1) as usize;
        let inputs = req.inputs();
        let mut prompt_tokens = 0u64;
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(index, input)| {
                let vector = match input {
                    Input::Text(text) => {
                        prompt_tokens += estimate_tokens(text.len());
                        embed(text.as_bytes(), dims)
                    }
                    Input::Tokens(tokens) => {
                        prompt_tokens += tokens.len() as u64;
                        embed(serde_json::to_string(tokens).unwrap_or_default().as_bytes(), dims)
                    }
                };
                embeddings::entry_f32(index, &vector, req.encoding_format)
            })
            .collect();
        let usage = Usage::new(prompt_tokens, 0);
        let body = embeddings::list(data, call.requested_model, prompt_tokens);
        Ok(Reply::Complete {
            body: encode(&body),
            usage: Some(usage),
        })
    }
}

/// A deterministic unit vector derived from the text.
fn embed(input: &[u8], dims: usize) -> Vec<f32> {
    let mut state = fnv1a(input) | 1;
    let raw: Vec<f32> = (0..dims)
        .map(|_| {
            // xorshift64: cheap, deterministic, good enough to spread values.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::EPSILON);
    raw.into_iter().map(|x| x / norm).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embed(b"hello", 16);
        assert_eq!(a, embed(b"hello", 16));
        assert_ne!(a, embed(b"hullo", 16));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5);
    }

    #[test]
    fn reply_is_deterministic_and_capped_by_max_tokens() {
        let p = SimulatedProvider::new(serde_yaml_ng::from_str("completion_tokens: 10").unwrap());
        let a = p.answer(&["hi".into()], 1, None, 2);
        assert_eq!(
            a.choices[0].tokens,
            p.answer(&["hi".into()], 1, None, 2).choices[0].tokens
        );
        assert_eq!(a.usage, Usage::new(2, 10));
        assert_eq!(a.choices[0].finish_reason, "stop");
        let cut = p.answer(&["hi".into()], 1, Some(3), 2);
        assert_eq!(cut.choices[0].tokens.len(), 3);
        assert_eq!(cut.choices[0].finish_reason, "length");
    }

    #[test]
    fn n_choices_per_prompt_differ_and_add_up() {
        let p = SimulatedProvider::new(serde_yaml_ng::from_str("completion_tokens: 4").unwrap());
        let a = p.answer(&["one".into(), "two".into()], 2, None, 5);
        assert_eq!(a.choices.len(), 4);
        assert_ne!(a.choices[0].tokens, a.choices[1].tokens);
        assert_eq!(a.usage, Usage::new(5, 16));
    }
}

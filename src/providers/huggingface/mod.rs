//! Hugging Face's native serving APIs: Text Generation Inference's
//! `/generate` and `/generate_stream` (chat through a configured chat
//! template, legacy completions verbatim) and Text Embeddings Inference's
//! `/embed`. TGI's Messages API, Inference Endpoints running it and the
//! Inference Providers router are OpenAI-compatible: use `kind: openai`.

mod template;
mod translate;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderMap, StatusCode, Uri};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::time::Instant;

use super::event_body::{self, SseBody, Translate};
use super::upstream_call::{JsonUpstream, Success, key_header};
use super::upstream_status;
use super::{Call, EventStream, Provider, Reply, UpstreamClient, UpstreamError};
use crate::api::{ApiError, ChatRequest, CompletionRequest, EmbeddingsRequest};
use crate::config::HttpSpec;
pub use template::ChatTemplate;
use translate::{HeaderCounts, Prepared, Step, StreamTranslator};

/// SSE, the media type of TGI's streams.
const SSE: &str = "text/event-stream";

pub struct HuggingFaceProvider {
    upstream: JsonUpstream,
    template: ChatTemplate,
    generate_uri: Option<Uri>,
    stream_uri: Option<Uri>,
    embed_uri: Option<Uri>,
}

impl HuggingFaceProvider {
    pub fn new(name: &str, spec: HttpSpec, template: ChatTemplate) -> Self {
        // `Authorization: Bearer hf_…` for Inference Endpoints; a local server needs none.
        let auth = key_header(&spec, "Bearer ").map(|v| (AUTHORIZATION, v));
        let upstream = JsonUpstream::new(name, spec, auth.into_iter().collect());
        HuggingFaceProvider {
            generate_uri: upstream.uri("/generate"),
            stream_uri: upstream.uri("/generate_stream"),
            embed_uri: upstream.uri("/embed"),
            upstream,
            template,
        }
    }

    fn name(&self) -> &str {
        self.upstream.name()
    }

    fn translate_error(&self, status: StatusCode, headers: &HeaderMap, raw: &[u8]) -> ApiError {
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return upstream_status::credentials_rejected(self.name(), status, "");
        }
        let mut error = translate::error(Some(status), raw, self.name());
        error.message = self.upstream.scrub(&error.message);
        error.retry_after = upstream_status::retry_after(headers);
        error
    }

    async fn send(
        &self,
        call: &Call<'_>,
        uri: &Option<Uri>,
        body: &Value,
        stream: bool,
    ) -> Result<Success, UpstreamError> {
        self.upstream
            .post(call, uri.clone(), body, (stream, SSE), |status, headers, raw| {
                self.translate_error(status, headers, raw)
            })
            .await
    }

    /// `/generate` or `/generate_stream`, answered in the shape `prepared` asks for.
    async fn generate(&self, call: Call<'_>, prepared: Prepared, stream: bool) -> Result<Reply, UpstreamError> {
        let uri = if stream { &self.stream_uri } else { &self.generate_uri };
        let answer = self.send(&call, uri, &prepared.body, stream).await?;
        let request_id = call.request_id.to_str().unwrap_or("-");
        if stream {
            let translator = StreamTranslator::new(&prepared, request_id, call.upstream_model);
            let client = self.upstream.client.clone();
            return Ok(Reply::Stream(relay(answer.body, client, answer.deadline, translator)));
        }
        let counts = HeaderCounts {
            prompt: header_count(&answer.headers, "x-prompt-tokens"),
            generated: header_count(&answer.headers, "x-generated-tokens"),
            queue_ms: header_count(&answer.headers, "x-queue-time"),
            inference_ms: header_count(&answer.headers, "x-inference-time"),
        };
        let raw = self.upstream.read(answer).await?;
        let (body, usage) = translate::to_answer(&raw, &prepared, counts, request_id, call.upstream_model)
            .map_err(|e| self.upstream.protocol(format!("not a /generate answer: {e}")))?;
        Ok(Reply::Complete {
            body,
            usage: Some(usage),
        })
    }
}

fn header_count(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

struct TgiStream(StreamTranslator);

impl Translate for TgiStream {
    const END: &'static str = "its final event (`generated_text`)";

    fn step(&mut self, data: Bytes) -> event_body::Step {
        match self.0.step(&data) {
            Ok(Step::Emit(events)) => event_body::Step::Emit(events),
            Ok(Step::Done(events)) => event_body::Step::Done(events),
            Ok(Step::Failed(error)) => event_body::Step::Failed(error),
            Err(_) => event_body::Step::Invalid("a stream event is not a TGI token event".into()),
        }
    }
}

fn relay(body: Incoming, client: UpstreamClient, deadline: Instant, translator: StreamTranslator) -> EventStream {
    event_body::translated(SseBody::sse(body, client, deadline), TgiStream(translator))
}

#[async_trait]
impl Provider for HuggingFaceProvider {
    async fn chat(&self, call: Call<'_>, req: ChatRequest) -> Result<Reply, UpstreamError> {
        let prepared =
            translate::to_generate_request(&req, self.template).map_err(|error| UpstreamError::Status { error })?;
        self.generate(call, prepared, req.is_stream()).await
    }

    async fn completions(&self, call: Call<'_>, req: CompletionRequest) -> Result<Reply, UpstreamError> {
        let prepared = translate::to_generate_from_completion(&req).map_err(|error| UpstreamError::Status { error })?;
        self.generate(call, prepared, req.is_stream()).await
    }

    async fn probe(&self) -> Result<(), UpstreamError> {
        self.upstream.probe("/health").await
    }

    async fn embeddings(&self, call: Call<'_>, req: EmbeddingsRequest) -> Result<Reply, UpstreamError> {
        let body = translate::to_embed_request(&req).map_err(|error| UpstreamError::Status { error })?;
        let answer = self.send(&call, &self.embed_uri, &body, false).await?;
        let tokens = header_count(&answer.headers, "x-compute-tokens");
        let raw = self.upstream.read(answer).await?;
        let (body, usage) = translate::to_embeddings(&raw, &req, tokens, call.upstream_model)
            .map_err(|e| self.upstream.protocol(format!("not an /embed answer: {e}")))?;
        Ok(Reply::Complete {
            body,
            usage: Some(usage),
        })
    }
}

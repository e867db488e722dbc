"""The wire-format mocks (examples/mock_providers, tests/common/wire) against
each provider's official client package, with no tollgate in between: if the
vendor's own SDK reads the mock's answers, streams and errors as it reads the
real service's, the Rust tests that translate those answers test something real.

The first word of the prompt picks the mock's scenario (tests/common/wire/mod.rs).
"""

from __future__ import annotations

import json
import urllib.request

import anthropic
import ollama
import pytest
import text_generation
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from huggingface_hub import InferenceClient
from text_generation import errors as tgi_errors
from text_generation.types import FinishReason
from text_generation.types import Response as TgiResponse

from conftest import CLIENT_TIMEOUT

# text_generation 0.7 calls pydantic's deprecated .dict() on every request.
pytestmark = pytest.mark.filterwarnings("ignore:The `dict` method is deprecated:DeprecationWarning")

PROMPT_TOKENS = 21
CACHED_TOKENS = 5  # Anthropic: of the 21, read from the cache
COMPLETION_TOKENS = 5
TOOL_ARGS = {"city": "Paris", "unit": "celsius"}
UTF8 = "héllo wörld — 日本語 🎉"


def embedding(text: str) -> list[float]:
    """The mock's embedding of one input."""
    return [float(len(text)), 0.5, -0.25]


# --- Anthropic: POST /v1/messages ------------------------------------------------

ANTHROPIC_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def claude(mock_providers):
    c = anthropic.Anthropic(base_url=mock_providers.base, api_key="x", max_retries=0, timeout=CLIENT_TIMEOUT)
    yield c
    c.close()


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_anthropic_message(claude):
    msg = claude.messages.create(model="claude-mock-1", max_tokens=64, messages=ask("hi"))
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "Hello from anthropic."
    assert msg.stop_reason == "end_turn"
    assert msg.model == "claude-mock-1"
    assert msg.usage.input_tokens == PROMPT_TOKENS - CACHED_TOKENS
    assert msg.usage.cache_read_input_tokens == CACHED_TOKENS
    assert msg.usage.output_tokens == COMPLETION_TOKENS


def test_anthropic_stream_tool_use(claude):
    with claude.messages.stream(
        model="claude-mock-1", max_tokens=64, tools=[ANTHROPIC_TOOL], messages=ask("tool weather please")
    ) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
    # The SDK assembled the input_json_delta pieces into the block's input.
    assert "input_json" in events
    assert [b.type for b in final.content] == ["tool_use"]
    assert final.content[0].name == "get_weather"
    assert final.content[0].input == TOOL_ARGS
    assert final.stop_reason == "tool_use"
    assert final.usage.input_tokens == PROMPT_TOKENS - CACHED_TOKENS
    assert final.usage.cache_read_input_tokens == CACHED_TOKENS
    assert final.usage.output_tokens == COMPLETION_TOKENS


def test_anthropic_stream_utf8(claude):
    with claude.messages.stream(model="claude-mock-1", max_tokens=64, messages=ask("utf8 please")) as stream:
        text = "".join(stream.text_stream)
    assert text == UTF8


def test_anthropic_rate_limited(claude):
    with pytest.raises(anthropic.RateLimitError) as err:
        claude.messages.create(model="claude-mock-1", max_tokens=64, messages=ask("fail now"))
    assert err.value.status_code == 429
    assert err.value.body["error"]["type"] == "rate_limit_error"
    assert err.value.response.headers["retry-after"] == "7"


def test_anthropic_stream_error_event(claude):
    # An SSE `event: error` mid-stream: the SDK raises the status error it makes
    # from the event's body, with the stream's own HTTP status (200), so the
    # generic APIStatusError rather than a status-specific subclass.
    text = []
    with pytest.raises(anthropic.APIStatusError) as err:
        with claude.messages.stream(model="claude-mock-1", max_tokens=64, messages=ask("failmid")) as stream:
            for piece in stream.text_stream:
                text.append(piece)
    assert "".join(text) == "partial answer"
    assert err.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}


# --- Ollama: POST /api/chat, /api/embed, GET /api/tags ---------------------------------

OLLAMA_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": ANTHROPIC_TOOL["input_schema"],
    },
}


@pytest.fixture(scope="module")
def llama(mock_providers):
    return ollama.Client(host=mock_providers.base, timeout=CLIENT_TIMEOUT)


def test_ollama_chat(llama):
    r = llama.chat(model="mock-llama", messages=ask("hi"), stream=False)
    assert r.message.role == "assistant"
    assert r.message.content == "Hello from ollama."
    assert r.done is True and r.done_reason == "stop"
    assert (r.prompt_eval_count, r.eval_count) == (PROMPT_TOKENS, COMPLETION_TOKENS)


def test_ollama_chat_stream(llama):
    chunks = list(llama.chat(model="mock-llama", messages=ask("hi"), stream=True))
    assert "".join(c.message.content for c in chunks) == "Hello from ollama."
    assert [c.done for c in chunks] == [False] * (len(chunks) - 1) + [True]
    last = chunks[-1]
    assert last.done_reason == "stop"
    assert (last.prompt_eval_count, last.eval_count) == (PROMPT_TOKENS, COMPLETION_TOKENS)


def test_ollama_tool_call(llama):
    r = llama.chat(model="mock-llama", messages=ask("tool weather"), tools=[OLLAMA_TOOL], stream=False)
    calls = r.message.tool_calls
    assert len(calls) == 1
    assert calls[0].function.name == "get_weather"
    assert calls[0].function.arguments == TOOL_ARGS


def test_ollama_stream_utf8(llama):
    chunks = llama.chat(model="mock-llama", messages=ask("utf8"), stream=True)
    assert "".join(c.message.content for c in chunks) == UTF8


def test_ollama_embed(llama):
    r = llama.embed(model="mock-embed", input=["hello", "ab"])
    assert r.embeddings == [embedding("hello"), embedding("ab")]
    assert r.prompt_eval_count == PROMPT_TOKENS


def test_ollama_list(llama):
    models = llama.list().models
    assert [m.model for m in models] == ["mock-llama:latest", "mock-embed:latest"]
    assert models[0].details.family == "llama"


def test_ollama_busy(llama):
    with pytest.raises(ollama.ResponseError) as err:
        llama.chat(model="mock-llama", messages=ask("fail"), stream=False)
    assert err.value.status_code == 503
    assert "server busy" in err.value.error


def test_ollama_error_line_midstream(llama):
    text = []
    with pytest.raises(ollama.ResponseError) as err:
        for c in llama.chat(model="mock-llama", messages=ask("failmid"), stream=True):
            text.append(c.message.content)
    assert "".join(text) == "partial answer"
    assert "unexpected EOF" in err.value.error


# --- TGI: POST /generate, /generate_stream; TEI: POST /embed ----------------------------
#
# text_generation.Client POSTs to the URL it is given: TGI's compat route
# `POST /`, which picks by the body's `stream` and wraps a complete answer in a
# list. /generate's own (bare) answer is checked with the SDK's model.


@pytest.fixture(scope="module")
def tgi(mock_providers):
    return text_generation.Client(mock_providers.base, timeout=CLIENT_TIMEOUT)


def test_tgi_generate_sdk(mock_providers):
    client = text_generation.Client(mock_providers.base, timeout=CLIENT_TIMEOUT)
    # generate() always asks for details (details=True is not a parameter of it).
    r = client.generate("hi", max_new_tokens=20)
    assert r.generated_text == "Hello from tgi."
    assert r.details.generated_tokens == COMPLETION_TOKENS


def test_tgi_generate_body(mock_providers):
    body = {"inputs": "hi", "parameters": {"details": True, "max_new_tokens": 20}}
    req = urllib.request.Request(
        f"{mock_providers.base}/generate",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=CLIENT_TIMEOUT) as resp:
        headers, payload = resp.headers, json.load(resp)
    r = TgiResponse(**payload)  # the SDK's own model of /generate's answer
    assert r.generated_text == "Hello from tgi."
    assert r.details.generated_tokens == COMPLETION_TOKENS
    assert r.details.finish_reason == FinishReason.EndOfSequenceToken
    assert r.details.tokens[-1].special is True
    assert headers["x-prompt-tokens"] == str(PROMPT_TOKENS)
    assert headers["x-generated-tokens"] == str(COMPLETION_TOKENS)


def test_tgi_generate_stream(tgi):
    responses = list(tgi.generate_stream("hi", max_new_tokens=20))
    text = "".join(r.token.text for r in responses if not r.token.special)
    assert text == "Hello from tgi."
    assert all(r.generated_text is None and r.details is None for r in responses[:-1])
    last = responses[-1]
    assert last.token.special is True  # the end-of-turn token
    assert last.generated_text == "Hello from tgi."
    assert last.details.generated_tokens == COMPLETION_TOKENS
    assert last.details.finish_reason == FinishReason.EndOfSequenceToken


def test_tgi_stop_sequence(tgi):
    responses = list(tgi.generate_stream("stop now", stop_sequences=["<halt>"], max_new_tokens=20))
    last = responses[-1]
    # TGI keeps the matched stop sequence in its output.
    assert last.generated_text == "one two three<halt>"
    assert last.details.finish_reason == FinishReason.StopSequence


def test_tgi_stream_utf8(tgi):
    responses = list(tgi.generate_stream("utf8", max_new_tokens=20))
    assert "".join(r.token.text for r in responses if not r.token.special) == UTF8
    assert responses[-1].generated_text == UTF8


def test_tgi_overloaded(tgi):
    with pytest.raises(tgi_errors.OverloadedError, match="Model is overloaded"):
        list(tgi.generate_stream("fail"))


def test_tgi_error_midstream(tgi):
    text = []
    with pytest.raises(tgi_errors.GenerationError, match="CUDA out of memory"):
        for r in tgi.generate_stream("failmid"):
            if not r.token.special:
                text.append(r.token.text)
    assert "".join(text) == "partial answer"


def test_tei_feature_extraction(mock_providers):
    # A URL as the model is used as it is: the client POSTs {"inputs": ...} to it.
    # (With the server's root URL it POSTs to `/`, which real TEI routes to
    # /embed for embedding models and the mock does not serve.)
    # A token of its own, so the client never picks up a stored Hugging Face token.
    client = InferenceClient(model=f"{mock_providers.base}/embed", token="hf_mock", timeout=CLIENT_TIMEOUT)
    vectors = client.feature_extraction("héllo")
    assert vectors.tolist() == [embedding("héllo")]


# --- Gemini: /v1beta/models/{m}:generateContent, :streamGenerateContent, :batchEmbedContents


@pytest.fixture(scope="module")
def gemini(mock_providers):
    return genai.Client(
        api_key="x",
        http_options=genai_types.HttpOptions(
            base_url=mock_providers.base, api_version="v1beta", timeout=int(CLIENT_TIMEOUT * 1000)
        ),
    )


GEMINI_MODEL = "gemini-2.5-flash"


def test_gemini_generate(gemini):
    r = gemini.models.generate_content(model=GEMINI_MODEL, contents="hi")
    assert r.text == "Hello from gemini."
    assert r.candidates[0].finish_reason == genai_types.FinishReason.STOP
    assert r.usage_metadata.prompt_token_count == PROMPT_TOKENS
    assert r.usage_metadata.candidates_token_count == COMPLETION_TOKENS
    assert r.usage_metadata.total_token_count == PROMPT_TOKENS + COMPLETION_TOKENS


def test_gemini_stream(gemini):
    chunks = list(gemini.models.generate_content_stream(model=GEMINI_MODEL, contents="hi"))
    assert len(chunks) > 2
    assert "".join(c.text or "" for c in chunks) == "Hello from gemini."
    last = chunks[-1]
    assert last.candidates[0].finish_reason == genai_types.FinishReason.STOP
    assert last.usage_metadata.prompt_token_count == PROMPT_TOKENS
    assert last.usage_metadata.candidates_token_count == COMPLETION_TOKENS


def test_gemini_stream_utf8(gemini):
    chunks = gemini.models.generate_content_stream(model=GEMINI_MODEL, contents="utf8")
    assert "".join(c.text or "" for c in chunks) == UTF8


def test_gemini_function_call(gemini):
    declaration = genai_types.FunctionDeclaration(
        name="get_weather",
        description="The weather in a city.",
        parameters=genai_types.Schema(
            type="OBJECT",
            properties={"city": genai_types.Schema(type="STRING"), "unit": genai_types.Schema(type="STRING")},
        ),
    )
    config = genai_types.GenerateContentConfig(
        tools=[genai_types.Tool(function_declarations=[declaration])],
        automatic_function_calling=genai_types.AutomaticFunctionCallingConfig(disable=True),
    )
    r = gemini.models.generate_content(model=GEMINI_MODEL, contents="tool weather", config=config)
    assert len(r.function_calls) == 1
    assert r.function_calls[0].name == "get_weather"
    assert r.function_calls[0].args == TOOL_ARGS


def test_gemini_embed(gemini):
    r = gemini.models.embed_content(model="text-embedding-004", contents=["hello", "ab"])
    assert [e.values for e in r.embeddings] == [embedding("hello"), embedding("ab")]


def test_gemini_rate_limited(gemini):
    with pytest.raises(genai_errors.ClientError) as err:
        gemini.models.generate_content(model=GEMINI_MODEL, contents="fail")
    assert err.value.code == 429
    assert err.value.status == "RESOURCE_EXHAUSTED"
    assert err.value.details["error"]["details"][0]["retryDelay"] == "7s"


def test_gemini_error_midstream(gemini):
    text = []
    with pytest.raises(genai_errors.ServerError) as err:
        for c in gemini.models.generate_content_stream(model=GEMINI_MODEL, contents="failmid"):
            text.append(c.text or "")
    assert "".join(text) == "partial answer"
    assert err.value.code == 500

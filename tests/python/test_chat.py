"""Chat completions through the official OpenAI SDK: plain, streamed, cut by
max_tokens, and the gateway's own response headers."""

from __future__ import annotations

import time
import uuid

import pytest

from conftest import COMPLETION_TOKENS, SLOW_TOKENS_PER_SECOND

PROMPT = "Tell me what a gateway does."
OTHER_PROMPT = "How are tokens metered?"


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def collect(stream):
    """Chunks of a chat stream, and the text of their content deltas."""
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return chunks, text


def test_chat_completion(client):
    r = client.chat.completions.create(model="sim-chat", messages=user(PROMPT))
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == "sim-chat"
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.strip()
    assert choice.finish_reason == "stop"
    # The simulated provider answers `completion_tokens` words, one token each.
    u = r.usage
    assert u.completion_tokens == COMPLETION_TOKENS
    assert len(choice.message.content.split()) == u.completion_tokens
    assert u.prompt_tokens >= 1
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_chat_is_deterministic_per_prompt(client):
    a = client.chat.completions.create(model="sim-chat", messages=user(PROMPT))
    b = client.chat.completions.create(model="sim-chat", messages=user(PROMPT))
    c = client.chat.completions.create(model="sim-chat", messages=user(OTHER_PROMPT))
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.choices[0].message.content != c.choices[0].message.content
    # Each request is its own: ids differ even for the same prompt.
    assert a.id != b.id


def test_prompt_tokens_grow_with_the_prompt(client):
    short = client.chat.completions.create(model="sim-chat", messages=user("hi"))
    long = client.chat.completions.create(model="sim-chat", messages=user("hi " * 400))
    assert long.usage.prompt_tokens > short.usage.prompt_tokens + 100
    assert long.usage.completion_tokens == short.usage.completion_tokens == COMPLETION_TOKENS


def test_alias_resolves_to_its_model(client):
    raw = client.chat.completions.with_raw_response.create(model="default", messages=user(PROMPT))
    r = raw.parse()
    direct = client.chat.completions.create(model="sim-chat", messages=user(PROMPT))
    # The answer names the model the client asked for; the header names the backend.
    assert r.model == "default"
    assert raw.headers["x-tollgate-backend"] == "sim/sim-chat"
    assert r.choices[0].message.content == direct.choices[0].message.content


def test_stream_with_usage_matches_the_plain_reply(client):
    plain = client.chat.completions.create(model="sim-chat", messages=user(PROMPT))
    stream = client.chat.completions.create(
        model="sim-chat",
        messages=user(PROMPT),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks, text = collect(stream)
    assert len(chunks) >= 3
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1, "every chunk of one answer carries the same id"
    assert chunks[0].id.startswith("chatcmpl-")
    assert chunks[0].choices[0].delta.role == "assistant"
    assert text == plain.choices[0].message.content

    *body, last = chunks
    # The usage chunk comes last, with no choices, and equals the plain answer's usage.
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == plain.usage.prompt_tokens
    assert last.usage.completion_tokens == plain.usage.completion_tokens == COMPLETION_TOKENS
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in body)
    # One chunk per token, then exactly one finish.
    content_chunks = [c for c in body if c.choices[0].delta.content]
    assert len(content_chunks) == COMPLETION_TOKENS
    finishes = [c.choices[0].finish_reason for c in body if c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert body[-1].choices[0].finish_reason == "stop"


def test_stream_without_include_usage_has_no_usage_chunk(client):
    plain = client.chat.completions.create(model="sim-chat", messages=user(OTHER_PROMPT))
    chunks, text = collect(
        client.chat.completions.create(model="sim-chat", messages=user(OTHER_PROMPT), stream=True)
    )
    assert text == plain.choices[0].message.content
    assert all(c.usage is None for c in chunks)
    assert all(len(c.choices) == 1 for c in chunks), "no choices-less usage chunk"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stream_include_usage_false_has_no_usage_chunk(client):
    chunks, _ = collect(
        client.chat.completions.create(
            model="sim-chat",
            messages=user(PROMPT),
            stream=True,
            stream_options={"include_usage": False},
        )
    )
    assert all(c.usage is None and len(c.choices) == 1 for c in chunks)


def test_stream_is_server_sent_events_ending_in_done(client):
    with client.chat.completions.with_streaming_response.create(
        model="sim-chat", messages=user(PROMPT), stream=True
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-tollgate-backend"] == "sim/sim-chat"
        assert resp.headers.get("x-request-id")
        events = [line for line in resp.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events), events
    assert events[-1] == "data: [DONE]"
    assert events.count("data: [DONE]") == 1


def test_max_tokens_cuts_the_reply(client):
    full = client.chat.completions.create(model="sim-chat", messages=user(PROMPT))
    cut = client.chat.completions.create(model="sim-chat", messages=user(PROMPT), max_tokens=5)
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage.completion_tokens == 5
    assert len(cut.choices[0].message.content.split()) == 5
    assert full.choices[0].message.content.startswith(cut.choices[0].message.content)
    assert cut.usage.total_tokens == cut.usage.prompt_tokens + 5


def test_max_completion_tokens_cuts_the_reply(client):
    cut = client.chat.completions.create(
        model="sim-chat", messages=user(PROMPT), max_completion_tokens=3
    )
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage.completion_tokens == 3


def test_max_tokens_at_the_reply_length_is_not_a_cut(client):
    r = client.chat.completions.create(
        model="sim-chat", messages=user(PROMPT), max_tokens=COMPLETION_TOKENS
    )
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == COMPLETION_TOKENS


def test_streamed_cut_says_length(client):
    chunks, text = collect(
        client.chat.completions.create(
            model="sim-chat",
            messages=user(PROMPT),
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert len(text.split()) == 4
    assert chunks[-1].usage.completion_tokens == 4


def test_raw_response_headers(client):
    first = client.chat.completions.with_raw_response.create(model="sim-chat", messages=user(PROMPT))
    second = client.chat.completions.with_raw_response.create(model="sim-chat", messages=user(PROMPT))
    assert first.http_request.headers["authorization"].startswith("Bearer ")
    rid = first.headers["x-request-id"]
    uuid.UUID(rid)  # the gateway makes a UUID when the client sends none
    assert rid != second.headers["x-request-id"]
    assert first.headers["x-tollgate-backend"] == "sim/sim-chat"
    assert first.headers["content-type"].startswith("application/json")
    assert first.status_code == 200
    assert first.parse().choices[0].message.content


def test_client_request_id_is_kept(client):
    raw = client.chat.completions.with_raw_response.create(
        model="sim-chat",
        messages=user(PROMPT),
        extra_headers={"x-request-id": "pytest-req-0123456789"},
    )
    assert raw.headers["x-request-id"] == "pytest-req-0123456789"


def test_stream_arrives_incrementally(client):
    """The relay forwards each chunk as it comes: a slow upstream's tokens are
    spread over time, not delivered in one piece at the end."""
    gap = 1.0 / SLOW_TOKENS_PER_SECOND
    stream = client.chat.completions.create(model="sim-slow", messages=user(PROMPT), stream=True)
    arrivals = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
    assert len(arrivals) == COMPLETION_TOKENS
    # Tokens after the first are paced at `gap`; allow for a coarse timer.
    assert arrivals[-1] - arrivals[0] >= 0.7 * gap * (COMPLETION_TOKENS - 1)

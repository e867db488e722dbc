"""Legacy text completions and embeddings through the official OpenAI SDK."""

from __future__ import annotations

import base64
import math
import struct

import pytest

from conftest import COMPLETION_TOKENS, EMBEDDING_DIMENSIONS

PROMPT = "Once upon a time"


def test_legacy_completion(client):
    r = client.completions.create(model="sim-chat", prompt=PROMPT)
    assert r.object == "text_completion"
    assert r.id.startswith("cmpl-")
    assert r.model == "sim-chat"
    assert len(r.choices) == 1
    text = r.choices[0].text
    assert text and text.strip()
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == COMPLETION_TOKENS == len(text.split())
    assert r.usage.prompt_tokens >= 1
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_legacy_completion_max_tokens(client):
    full = client.completions.create(model="sim-chat", prompt=PROMPT)
    r = client.completions.create(model="sim-chat", prompt=PROMPT, max_tokens=4)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 4
    assert len(r.choices[0].text.split()) == 4
    assert full.choices[0].text.startswith(r.choices[0].text)


def test_legacy_completion_stream(client):
    plain = client.completions.create(model="sim-chat", prompt=PROMPT)
    chunks = list(
        client.completions.create(
            model="sim-chat", prompt=PROMPT, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(c.object == "text_completion" for c in chunks)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == plain.choices[0].text
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.completion_tokens == plain.usage.completion_tokens
    assert last.usage.prompt_tokens == plain.usage.prompt_tokens
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]


def f32(values) -> list[float]:
    """Rounds floats to IEEE single precision, as the vectors were made."""
    return [struct.unpack("<f", struct.pack("<f", v))[0] for v in values]


def decode_base64(s: str) -> list[float]:
    raw = base64.b64decode(s, validate=True)
    assert len(raw) % 4 == 0
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def test_embeddings_float(client):
    r = client.embeddings.create(model="sim-embed", input="hello world", encoding_format="float")
    assert r.object == "list"
    assert r.model == "sim-embed"
    assert len(r.data) == 1
    item = r.data[0]
    assert item.object == "embedding" and item.index == 0
    vec = item.embedding
    assert isinstance(vec, list) and len(vec) == EMBEDDING_DIMENSIONS
    assert all(isinstance(x, float) for x in vec)
    assert math.isclose(math.sqrt(sum(x * x for x in vec)), 1.0, abs_tol=1e-5)
    assert r.usage.prompt_tokens >= 1
    assert r.usage.total_tokens == r.usage.prompt_tokens


def test_embeddings_base64_equals_float(client):
    floats = client.embeddings.create(model="sim-embed", input="hello world", encoding_format="float")
    b64 = client.embeddings.create(model="sim-embed", input="hello world", encoding_format="base64")
    encoded = b64.data[0].embedding
    assert isinstance(encoded, str)
    decoded = decode_base64(encoded)
    assert decoded == f32(floats.data[0].embedding)
    # The SDK's default asks for base64 and decodes it itself.
    default = client.embeddings.create(model="sim-embed", input="hello world")
    assert f32(default.data[0].embedding) == decoded


def test_embeddings_dimensions(client):
    for dims in (4, 8, 64):
        floats = client.embeddings.create(
            model="sim-embed", input="hello world", encoding_format="float", dimensions=dims
        )
        b64 = client.embeddings.create(
            model="sim-embed", input="hello world", encoding_format="base64", dimensions=dims
        )
        assert len(floats.data[0].embedding) == dims
        assert len(b64.data[0].embedding) == math.ceil(dims * 4 / 3) * 4
        assert decode_base64(b64.data[0].embedding) == f32(floats.data[0].embedding)
        assert math.isclose(math.sqrt(sum(x * x for x in floats.data[0].embedding)), 1.0, abs_tol=1e-5)


def test_embeddings_batch(client):
    r = client.embeddings.create(
        model="sim-embed", input=["alpha", "beta", "alpha"], encoding_format="float"
    )
    assert [d.index for d in r.data] == [0, 1, 2]
    a, b, a2 = (d.embedding for d in r.data)
    assert a == a2, "the same text embeds the same"
    assert a != b
    single = client.embeddings.create(model="sim-embed", input="beta", encoding_format="float")
    assert single.data[0].embedding == b
    assert r.usage.prompt_tokens >= 3


def test_embeddings_empty_input_is_rejected(client):
    import openai

    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="sim-embed", input="")
    assert e.value.body["param"] == "input"


def test_embeddings_zero_dimensions_is_rejected(client):
    import openai

    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(
            model="sim-embed", input="hello", encoding_format="float", dimensions=0
        )

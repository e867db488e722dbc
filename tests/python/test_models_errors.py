"""The model list, authentication, and errors as the SDK's exception types."""

from __future__ import annotations

import openai
import pytest

from conftest import http_get

MESSAGES = [{"role": "user", "content": "hello"}]


def test_models_list(client):
    models = list(client.models.list())
    ids = [m.id for m in models]
    # Configured models and their aliases, each once.
    assert set(ids) == {"sim-chat", "default", "sim-alias", "sim-embed", "sim-slow"}
    assert len(ids) == len(set(ids))
    owners = {m.id: m.owned_by for m in models}
    assert owners["sim-chat"] == owners["default"] == owners["sim-alias"] == "sim"
    assert owners["sim-slow"] == "sim-slow"
    assert all(m.object == "model" for m in models)
    assert all(m.created > 0 for m in models)


def test_every_listed_model_answers(client):
    for m in client.models.list():
        r = client.chat.completions.create(model=m.id, messages=MESSAGES, max_tokens=2)
        assert r.model == m.id
        assert r.usage.completion_tokens == 2


def test_models_retrieve(client):
    m = client.models.retrieve("sim-chat")
    assert m.id == "sim-chat"


def test_wrong_api_key(gateway):
    bad = gateway.client(api_key="tg-not-the-key")
    try:
        with pytest.raises(openai.AuthenticationError) as e:
            bad.chat.completions.create(model="sim-chat", messages=MESSAGES)
        assert e.value.status_code == 401
        assert e.value.code == "invalid_api_key"
        assert e.value.body["type"] == "authentication_error"
        # The error says how to authenticate, and never echoes the key it got.
        assert "tg-not-the-key" not in e.value.response.text
        assert gateway.key not in e.value.response.text
        assert e.value.response.headers.get("x-request-id")
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        with pytest.raises(openai.AuthenticationError):
            bad.embeddings.create(model="sim-embed", input="x")
    finally:
        bad.close()


def test_key_prefix_is_not_enough(gateway):
    bad = gateway.client(api_key=gateway.key[:-1])
    try:
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    finally:
        bad.close()


def test_missing_key_and_open_endpoints(gateway):
    status, _, _ = http_get(f"{gateway.base_url}/models")
    assert status == 401
    status, _, _ = http_get(f"{gateway.base_url}/models", headers={"api-key": gateway.key})
    assert status == 200
    for path in ("/health", "/ready", "/metrics"):
        status, _, _ = http_get(f"{gateway.base}{path}")
        assert status == 200, path


def test_unknown_model(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert e.value.status_code == 404
    assert e.value.code == "model_not_found"
    assert e.value.param == "model"
    assert "no-such-model" in e.value.message


def test_unknown_model_when_streaming(client):
    # The model is resolved before the stream starts, so it is a plain HTTP error.
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=MESSAGES, stream=True)


def test_unknown_model_for_embeddings_and_completions(client):
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="x")


def test_missing_messages(client):
    # The SDK will not send a request without `messages`: post the body by hand.
    with pytest.raises(openai.BadRequestError) as e:
        client.post("/chat/completions", body={"model": "sim-chat"}, cast_to=object)
    assert e.value.status_code == 400
    assert e.value.param == "messages"
    assert e.value.body["type"] == "invalid_request_error"


def test_empty_messages(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="sim-chat", messages=[])
    assert e.value.param == "messages"


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"temperature": 3}, "temperature"),
        ({"n": 0}, "n"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
    ],
)
def test_invalid_parameters(client, extra, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="sim-chat", messages=MESSAGES, **extra)
    assert e.value.param == param


def test_unknown_role(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="sim-chat", messages=[{"role": "wizard", "content": "hi"}]
        )
    assert "wizard" in e.value.message


def test_body_that_is_not_json(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.post(
            "/chat/completions",
            content=b"{not json",
            options={"headers": {"content-type": "application/json"}},
            cast_to=object,
        )
    assert e.value.code == "invalid_request_body"


def test_unknown_path(gateway):
    status, _, body = http_get(f"{gateway.base_url}/nope", headers={"api-key": gateway.key})
    assert status == 404
    assert b"unknown_url" in body

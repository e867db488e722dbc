"""The official OpenAI SDK in front of every native provider: a tollgate whose
providers are the wire-format mocks (examples/mock_providers), one model per
provider, and the same questions asked of each. What comes back must be plain
OpenAI whatever the upstream spoke.

The first word of the prompt picks the mock's scenario (tests/common/wire/mod.rs).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import openai
import pytest

from conftest import Gateway, config_head, tollgate_bin

PROMPT_TOKENS = 21
COMPLETION_TOKENS = 5
TOOL_ARGS = {"city": "Paris", "unit": "celsius"}
UTF8 = "héllo wörld — 日本語 🎉"

# Model → the mock's name for the format its provider speaks.
MODELS = {
    "claude": "anthropic",
    "gemini": "gemini",
    "llama": "ollama",
    "tgi": "tgi",
    "gpt": "openai",
    "gpt-azure": "openai",
    # TGI's Messages API: the mock answers model `tgi` in TGI's dialect.
    "tgi-messages": "openai",
}

# Provider keys for the child only; the mock accepts any.
PROVIDER_KEYS = {
    "ANTHROPIC_API_KEY": "sk-ant-mock",
    "GEMINI_API_KEY": "gemini-mock",
    "OPENAI_API_KEY": "sk-mock",
    "AZURE_OPENAI_API_KEY": "azure-mock",
}


def config(mock_addr: str) -> str:
    m = f"http://{mock_addr}"
    return config_head() + f"""\
providers:
  anthropic: {{kind: anthropic, base_url: "{m}", api_key: "${{ANTHROPIC_API_KEY}}"}}
  gemini: {{kind: gemini, base_url: "{m}/v1beta", api_key: "${{GEMINI_API_KEY}}"}}
  ollama: {{kind: ollama, base_url: "{m}"}}
  huggingface: {{kind: huggingface, base_url: "{m}", chat_template: chatml}}
  openai: {{kind: openai, base_url: "{m}/v1", api_key: "${{OPENAI_API_KEY}}"}}
  azure: {{kind: azure, base_url: "{m}", api_key: "${{AZURE_OPENAI_API_KEY}}"}}
  tgi-messages: {{kind: huggingface, api: messages, base_url: "{m}"}}
models:
  - {{name: claude, provider: anthropic, upstream_model: claude-sonnet-4-5}}
  - {{name: gemini, provider: gemini, upstream_model: gemini-2.5-flash}}
  - {{name: llama, provider: ollama, upstream_model: "mock-llama:latest"}}
  - {{name: tgi, provider: huggingface}}
  - {{name: gpt, provider: openai, upstream_model: gpt-4o-mini}}
  - {{name: gpt-azure, provider: azure, upstream_model: prod-gpt4o}}
  - {{name: tgi-messages, provider: tgi-messages, upstream_model: tgi}}
"""


@pytest.fixture(scope="module")
def gw(mock_providers):
    with tempfile.TemporaryDirectory(prefix="tollgate-pytest-") as tmp:
        g = Gateway(Path(tmp), config=config(mock_providers.addr), env=dict(PROVIDER_KEYS))
        g.start()
        try:
            yield g
        finally:
            code = g.stop()
            if code != 0:
                print(f"tollgate exited with {code}; its log:\n{g.log()}")


@pytest.fixture(scope="module")
def client(gw):
    c = gw.client()
    yield c
    c.close()


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}

each_model = pytest.mark.parametrize("model", list(MODELS))


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def assert_usage(usage, model: str) -> None:
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
        PROMPT_TOKENS + COMPLETION_TOKENS,
    )
    if model == "claude":
        # Anthropic's cache reads count as prompt tokens and as cached_tokens.
        assert usage.prompt_tokens_details.cached_tokens == 5


def test_config_checks(mock_providers, tmp_path):
    path = tmp_path / "tollgate.yaml"
    path.write_text(config(mock_providers.addr))
    env = {**os.environ, **PROVIDER_KEYS, "TG_TEST_KEY": "tg-test-check"}
    out = subprocess.run(
        [str(tollgate_bin()), "check", str(path)], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok (7 providers, 7 models)" in out.stdout + out.stderr


@each_model
def test_plain_answer(client, model):
    r = client.chat.completions.create(model=model, messages=ask("hi"))
    assert r.choices[0].message.content == f"Hello from {MODELS[model]}."
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == "stop"
    assert_usage(r.usage, model)


@each_model
def test_stream_with_usage(client, model):
    chunks = list(
        client.chat.completions.create(
            model=model, messages=ask("hi"), stream=True, stream_options={"include_usage": True}
        )
    )
    with_choices = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in with_choices) == f"Hello from {MODELS[model]}."
    assert [c.choices[0].finish_reason for c in with_choices][-1] == "stop"
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    # One usage chunk, the last, with no choices.
    assert [c.usage is not None for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1].choices == []
    assert_usage(chunks[-1].usage, model)


@each_model
def test_tool_call(client, model):
    if model == "tgi":
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model=model, messages=ask("tool weather"), tools=[WEATHER_TOOL])
        assert err.value.body["param"] == "tools"
        return
    r = client.chat.completions.create(model=model, messages=ask("tool weather"), tools=[WEATHER_TOOL])
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert len(calls) == 1
    assert calls[0].type == "function"
    assert calls[0].id
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == TOOL_ARGS


@each_model
def test_tool_call_streamed(client, model):
    if model == "tgi":
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(
                model=model, messages=ask("tool weather"), tools=[WEATHER_TOOL], stream=True
            )
        assert err.value.body["param"] == "tools"
        return
    chunks = list(
        client.chat.completions.create(model=model, messages=ask("tool weather"), tools=[WEATHER_TOOL], stream=True)
    )
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas, "no tool call deltas"
    assert {d.index for d in deltas} == {0}
    # The first delta names the call; the arguments are the concatenated fragments.
    assert deltas[0].id and deltas[0].function.name == "get_weather"
    assert [d.function.name for d in deltas[1:] if d.function.name] == []
    arguments = "".join(d.function.arguments or "" for d in deltas)
    assert json.loads(arguments) == TOOL_ARGS
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


@each_model
def test_utf8_streamed(client, model):
    chunks = client.chat.completions.create(model=model, messages=ask("utf8"), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == UTF8


# The upstream's error before any byte, relayed with its status.
FAILURES = {
    "claude": (openai.RateLimitError, 429),
    "gemini": (openai.RateLimitError, 429),
    "llama": (openai.InternalServerError, 503),
    "tgi": (openai.RateLimitError, 429),
    "gpt": (openai.RateLimitError, 429),
    "gpt-azure": (openai.RateLimitError, 429),
    "tgi-messages": (openai.RateLimitError, 429),
}


@each_model
def test_upstream_error(client, model):
    kind, status = FAILURES[model]
    with pytest.raises(kind) as err:
        client.chat.completions.create(model=model, messages=ask("fail"))
    assert err.value.status_code == status
    if model in ("claude", "gemini", "gpt", "gpt-azure"):
        # retry-after (Anthropic, OpenAI) or RetryInfo.retryDelay (Gemini): 7 s.
        assert err.value.response.headers.get("retry-after") == "7"


@each_model
def test_upstream_error_midstream(client, model):
    # After the first chunk: the text so far, then one error event and no [DONE].
    text = []
    with pytest.raises(openai.APIError) as err:
        for c in client.chat.completions.create(model=model, messages=ask("failmid"), stream=True):
            if c.choices:
                text.append(c.choices[0].delta.content or "")
    assert "".join(text) == "partial answer"
    assert not isinstance(err.value, openai.APIStatusError)


def test_metrics_pass_promtool(gw, client):
    """After the traffic above (every provider, streams, tools, errors), the
    exposition passes `promtool check metrics`. .ci/run installs promtool
    (Debian's prometheus package); elsewhere the test is skipped without it."""
    import shutil
    import urllib.request

    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: .ci/run should have installed Debian's prometheus package")
        pytest.skip("promtool is not installed")
    client.chat.completions.create(model="gpt", messages=ask("hi"))
    with urllib.request.urlopen(f"{gw.base}/metrics", timeout=10) as resp:
        exposition = resp.read()
    assert b"gen_ai_client_operation_duration_seconds_bucket" in exposition
    assert b"tollgate_route_decisions_total" in exposition
    out = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=30)
    assert out.returncode == 0, (out.stdout + out.stderr).decode()

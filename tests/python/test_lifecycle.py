"""The process around the API: `tollgate check`, metering seen on /metrics,
and a graceful stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import openai
import pytest

from conftest import (
    COMPLETION_TOKENS,
    CONFIG,
    metric,
    scrape,
    tollgate_bin,
    wait_for_metric,
)

MESSAGES = [{"role": "user", "content": "metered words"}]


def run_check(path, env_extra: dict[str, str]):
    env = {k: v for k, v in os.environ.items() if k != "TG_TEST_KEY"}
    env.update(env_extra)
    return subprocess.run(
        [str(tollgate_bin()), "check", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_check_accepts_the_test_config(tmp_path):
    path = tmp_path / "tollgate.yaml"
    path.write_text(CONFIG)
    r = run_check(path, {"TG_TEST_KEY": "tg-some-key"})
    assert r.returncode == 0, r.stderr
    assert "ok (2 providers, 3 models)" in r.stdout


def test_check_refuses_an_unset_gateway_key(tmp_path):
    path = tmp_path / "tollgate.yaml"
    path.write_text(CONFIG)
    r = run_check(path, {})
    assert r.returncode != 0
    assert "TG_TEST_KEY" in r.stderr
    assert "auth.keys[0]" in r.stderr


def test_check_refuses_a_literal_secret(tmp_path):
    path = tmp_path / "tollgate.yaml"
    path.write_text(CONFIG.replace('["${TG_TEST_KEY}"]', '["tg-literal-secret"]'))
    r = run_check(path, {"TG_TEST_KEY": "tg-some-key"})
    assert r.returncode != 0
    assert "environment variable" in r.stderr
    assert "tg-literal-secret" not in r.stderr + r.stdout, "a secret must not be echoed"


def test_tokens_are_metered(gateway, client):
    labels = dict(model="sim-chat", provider="sim")
    before = scrape(gateway)
    r = client.chat.completions.create(model="default", messages=MESSAGES)
    after = scrape(gateway)
    assert (
        metric(after, "tollgate_tokens_total", type="completion", **labels)
        - metric(before, "tollgate_tokens_total", type="completion", **labels)
        == r.usage.completion_tokens
    )
    assert (
        metric(after, "tollgate_tokens_total", type="prompt", **labels)
        - metric(before, "tollgate_tokens_total", type="prompt", **labels)
        == r.usage.prompt_tokens
    )
    ok = dict(endpoint="chat", status="200", **labels)
    assert metric(after, "tollgate_requests_total", **ok) - metric(
        before, "tollgate_requests_total", **ok
    ) == 1


def test_streams_are_metered_without_include_usage(gateway, client):
    """The client did not ask for usage, but the gateway still counts the tokens."""
    labels = dict(model="sim-chat", provider="sim", type="completion")
    before = metric(scrape(gateway), "tollgate_tokens_total", **labels)
    chunks = list(client.chat.completions.create(model="sim-chat", messages=MESSAGES, stream=True))
    assert all(c.usage is None for c in chunks)
    after = wait_for_metric(gateway, "tollgate_tokens_total", before + COMPLETION_TOKENS, **labels)
    assert after - before == COMPLETION_TOKENS


def test_rejected_requests_are_counted(gateway, client):
    unresolved = dict(endpoint="chat", model="", provider="", status="404")
    before = metric(scrape(gateway), "tollgate_requests_total", **unresolved)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    after = metric(scrape(gateway), "tollgate_requests_total", **unresolved)
    assert after - before == 1


def test_client_that_leaves_mid_stream_is_metered_as_499(gateway, client):
    labels = dict(endpoint="chat", model="sim-slow", provider="sim-slow", status="499")
    before = metric(scrape(gateway), "tollgate_requests_total", **labels)
    stream = client.chat.completions.create(model="sim-slow", messages=MESSAGES, stream=True)
    seen = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            seen += 1
            if seen == 2:
                break
    stream.close()
    after = wait_for_metric(gateway, "tollgate_requests_total", before + 1, **labels)
    assert after - before == 1
    # Nothing is left in flight once the stream is gone.
    deadline = time.monotonic() + 5
    while metric(scrape(gateway), "tollgate_in_flight_requests") != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(scrape(gateway), "tollgate_in_flight_requests") == 0


def test_sigterm_lets_a_stream_finish(own_gateway):
    gw = own_gateway.start()
    c = gw.client()
    try:
        stream = c.chat.completions.create(
            model="sim-slow",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = []
        for chunk in stream:
            chunks.append(chunk)
            if len(chunks) == 2:
                gw.proc.send_signal(signal.SIGTERM)
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        # The stream in flight ran to its end despite the signal.
        assert len(text.split()) == COMPLETION_TOKENS
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == COMPLETION_TOKENS
        assert gw.proc.wait(timeout=15) == 0
        assert "SIGTERM received" in gw.log()
        # And the gateway no longer listens.
        with pytest.raises(openai.APIConnectionError):
            c.models.list()
    finally:
        c.close()

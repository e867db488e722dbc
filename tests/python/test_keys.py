"""Managed keys through the official OpenAI SDK: a key made with the CLI
works; its rate limit and budget surface as the SDK's RateLimitError with
OpenAI's headers and codes; a revoked key is an AuthenticationError."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

import openai
import pytest

from conftest import Gateway, tollgate_bin

ADMIN = "tg-admin-python-keys"

CONFIG = """\
server:
  listen: 127.0.0.1:1
auth:
  admin_keys: ["${TG_ADMIN}"]
  managed_keys: true
  key_refresh: 200ms
teams:
  ml: { rpm: 1000 }
ledger: { url: "sqlite://ledger.db", flush_interval: 20ms }
providers:
  sim: { kind: simulated, completion_tokens: 6 }
models:
  - { name: priced, provider: sim, catalog: gpt-4o-mini }
"""


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    gw = Gateway(tmp_path_factory.mktemp("keys"), config=CONFIG, env={"TG_ADMIN": ADMIN})
    gw.start()
    yield gw
    gw.stop()


def cli(gw: Gateway, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(tollgate_bin()), "keys", *args, "--config", str(gw.workdir / "tollgate.yaml")],
                          cwd=gw.workdir, env={"TG_ADMIN": ADMIN, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=30)


def admin_create(gw: Gateway, **fields) -> dict:
    req = urllib.request.Request(f"{gw.base}/admin/keys", data=json.dumps(fields).encode(), method="POST",
                                 headers={"authorization": f"Bearer {ADMIN}", "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 201
        return json.loads(resp.read())


def ask(client: openai.OpenAI):
    return client.chat.completions.with_raw_response.create(
        model="priced", messages=[{"role": "user", "content": "hello"}])


def test_a_cli_key_serves_the_sdk_and_revoked_it_is_refused(keyed):
    made = cli(keyed, "create", "--name", "sdk", "--team", "ml", "--json")
    assert made.returncode == 0, made.stderr
    record = json.loads(made.stdout)
    assert record["key"].startswith("tg-") and record["id"].startswith("k-") and record["team"] == "ml"
    client = keyed.client(api_key=record["key"])
    # The gateway picks up a key made elsewhere within auth.key_refresh.
    for _ in range(50):
        try:
            raw = ask(client)
            break
        except openai.AuthenticationError:
            time.sleep(0.1)
    else:
        pytest.fail("the CLI's key was never accepted")
    assert raw.http_response.status_code == 200
    assert raw.parse().choices[0].message.content
    assert cli(keyed, "revoke", record["id"]).returncode == 0
    with pytest.raises(openai.AuthenticationError):
        for _ in range(50):
            ask(client)
            time.sleep(0.1)


def test_rate_limit_and_budget_are_rate_limit_errors_with_openai_shapes(keyed):
    limited = keyed.client(api_key=admin_create(keyed, name="rpm", rpm=1)["key"])
    assert ask(limited).http_response.status_code == 200
    with pytest.raises(openai.RateLimitError) as err:
        ask(limited)
    e = err.value
    assert e.code == "rate_limit_exceeded"
    assert e.response.headers["x-ratelimit-limit-requests"] == "1"
    assert int(e.response.headers["retry-after"]) >= 1

    # A budget of one millionth of a dollar: the first answer spends it.
    spender = keyed.client(api_key=admin_create(keyed, name="budget", budget_monthly_usd="0.000001")["key"])
    first = ask(spender)
    assert float(first.headers["x-tollgate-cost-usd"]) > 0.000001
    with pytest.raises(openai.RateLimitError) as err:
        ask(spender)
    e = err.value
    assert e.code == "budget_exceeded"
    assert e.type == "insufficient_quota"
    assert "monthly budget" in e.message
    assert int(e.response.headers["retry-after"]) >= 1

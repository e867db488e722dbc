"""End-to-end fixtures: a real `tollgate serve` process on a loopback port,
configured with the built-in simulated provider, and OpenAI SDK clients
pointed at it.

The binary is `target/debug/tollgate` (build it first: `cargo build`), or
the path in the TOLLGATE_BIN environment variable.
"""

from __future__ import annotations

import os
import re
import secrets
import selectors
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest

REPO = Path(__file__).resolve().parents[2]

# What the config below promises; the tests check the gateway keeps it.
COMPLETION_TOKENS = 12
EMBEDDING_DIMENSIONS = 16
SLOW_TOKENS_PER_SECOND = 25

# Secrets come from the environment, never from the file: the gateway
# refuses a literal key. TG_TEST_KEY is set only for the child process.
def config_head(auth_extra: str = "", level: str = "info") -> str:
    """The start of a test config: `Gateway.start` passes --listen and sets
    TG_TEST_KEY; `auth_extra` adds lines under `auth:`."""
    return (
        "server:\n  listen: 127.0.0.1:1        # replaced by --listen\n"
        "  request_timeout: 30s\n  shutdown_grace: 5s\n"
        'auth:\n  keys: ["${TG_TEST_KEY}"]\n' + auth_extra +
        f"logging:\n  format: json\n  level: {level}\n"
    )


CONFIG = config_head() + f"""\
providers:
  sim:
    kind: simulated
    tokens_per_second: 5000
    completion_tokens: {COMPLETION_TOKENS}
    embedding_dimensions: {EMBEDDING_DIMENSIONS}
  sim-slow:
    kind: simulated
    tokens_per_second: {SLOW_TOKENS_PER_SECOND}
    completion_tokens: {COMPLETION_TOKENS}
models:
  - name: sim-chat
    provider: sim
    aliases: [default, sim-alias]
  - name: sim-embed
    provider: sim
  - name: sim-slow
    provider: sim-slow
"""

# Each step of start-up and shutdown is bounded, so a broken gateway fails
# the suite instead of hanging it.
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
CLIENT_TIMEOUT = 20.0


def tollgate_bin() -> Path:
    path = Path(os.environ.get("TOLLGATE_BIN") or REPO / "target" / "debug" / "tollgate")
    if not path.is_file():
        pytest.exit(
            f"tollgate binary not found at {path}: run `cargo build` or set TOLLGATE_BIN",
            returncode=2,
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0):
    """GET without the SDK: returns (status, headers, body bytes), errors included."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


@dataclass
class Gateway:
    """One `tollgate serve` child process."""

    workdir: Path
    key: str = field(default_factory=lambda: "tg-test-" + secrets.token_hex(12))
    # The config file's text, and variables for the child only (provider keys).
    config: str = CONFIG
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.base}/v1"

    def log(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return ""

    def start(self) -> "Gateway":
        binary = tollgate_bin()
        config = self.workdir / "tollgate.yaml"
        config.write_text(self.config)
        env = dict(os.environ)
        env.update(self.env)
        env["TG_TEST_KEY"] = self.key
        # The command line decides the config and the address, not the caller's shell.
        for var in ("TOLLGATE_CONFIG", "TOLLGATE_LISTEN", "RUST_LOG"):
            env.pop(var, None)
        # A port picked free can be taken before the child binds it: try again.
        for attempt in range(3):
            self.port = free_port()
            self.log_path = self.workdir / f"tollgate-{self.port}.log"
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [str(binary), "serve", "--config", str(config), "--listen", f"127.0.0.1:{self.port}"],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                )
            if self._wait_ready():
                return self
            if self.proc.poll() is None:
                self.stop()
                break
        raise RuntimeError(
            f"tollgate did not become ready on 127.0.0.1:{self.port} "
            f"(exit code {self.proc.poll()}); its log:\n{self.log()}"
        )

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                status, _, _ = http_get(f"{self.base}/ready", timeout=1.0)
                if status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> int | None:
        """SIGTERM, then wait; SIGKILL only if it will not go. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        return self.proc.returncode

    def client(self, **kwargs) -> openai.OpenAI:
        kwargs.setdefault("api_key", self.key)
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", CLIENT_TIMEOUT)
        return openai.OpenAI(base_url=self.base_url, **kwargs)

    def async_client(self, **kwargs) -> openai.AsyncOpenAI:
        kwargs.setdefault("api_key", self.key)
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", CLIENT_TIMEOUT)
        return openai.AsyncOpenAI(base_url=self.base_url, **kwargs)


@pytest.fixture(scope="session")
def gateway():
    with tempfile.TemporaryDirectory(prefix="tollgate-pytest-") as tmp:
        gw = Gateway(Path(tmp)).start()
        try:
            yield gw
        finally:
            code = gw.stop()
            if code != 0:
                print(f"tollgate exited with {code}; its log:\n{gw.log()}")


@pytest.fixture
def own_gateway():
    """A gateway of the test's own, for tests that stop it."""
    with tempfile.TemporaryDirectory(prefix="tollgate-pytest-") as tmp:
        gw = Gateway(Path(tmp))
        try:
            yield gw
        finally:
            gw.stop()


@pytest.fixture(scope="session")
def client(gateway) -> openai.OpenAI:
    c = gateway.client()
    yield c
    c.close()


def scrape(gw: Gateway) -> dict[tuple[str, frozenset], float]:
    """GET /metrics (open without a key), parsed into {(name, labels): value}."""
    status, _, body = http_get(f"{gw.base}/metrics")
    assert status == 200, body
    samples = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)', line)
        assert m, f"unparseable metrics line: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples


def metric(samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist yet (counters start at 0)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_for_metric(gw: Gateway, name: str, expected: float, timeout: float = 5.0, **labels: str) -> float:
    """Streams are metered when the body is dropped, a moment after the client
    read its end: poll until the value is reached, and return the last one seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = metric(scrape(gw), name, **labels)
        if value >= expected or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


# --- The wire-format mocks (examples/mock_providers) -------------------------
# One server speaking Anthropic, Gemini, Ollama, TGI/TEI and OpenAI natively;
# the first word of the last user message picks the scenario (see
# tests/common/wire/mod.rs). Build it with `cargo build --examples` (`cargo
# test` builds it too), or name it in MOCK_PROVIDERS_BIN.


def mock_providers_bin() -> Path:
    if os.environ.get("MOCK_PROVIDERS_BIN"):
        return Path(os.environ["MOCK_PROVIDERS_BIN"])
    # Next to the gateway binary when TOLLGATE_BIN names it (scripts/test.sh
    # sets it from cargo's target directory), else in this checkout's target/.
    if os.environ.get("TOLLGATE_BIN"):
        beside = Path(os.environ["TOLLGATE_BIN"]).parent / "examples" / "mock_providers"
        if beside.is_file():
            return beside
    return REPO / "target" / "debug" / "examples" / "mock_providers"


@dataclass
class MockProviders:
    """One `mock_providers` child process on a loopback port."""

    workdir: Path
    addr: str = ""
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def base(self) -> str:
        return f"http://{self.addr}"

    def log(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return ""

    def start(self) -> "MockProviders":
        binary = mock_providers_bin()
        if not binary.is_file():
            pytest.fail(
                f"mock_providers binary not found at {binary}: run `cargo build --examples` "
                "or set MOCK_PROVIDERS_BIN",
                pytrace=False,
            )
        self.log_path = self.workdir / "mock_providers.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(binary), "127.0.0.1:0"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=self.workdir,
            )
        # It prints `listening on <addr>` once bound; read that line, bounded.
        line = b""
        deadline = time.monotonic() + READY_TIMEOUT
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n") and time.monotonic() < deadline:
                if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    break
                chunk = os.read(self.proc.stdout.fileno(), 256)
                if not chunk:
                    break
                line += chunk
        m = re.match(rb"listening on (127\.0\.0\.1:\d+)\n", line)
        if not m:
            self.stop()
            raise RuntimeError(
                f"mock_providers did not start (printed {line!r}, exit code {self.proc.poll()}); "
                f"its stderr:\n{self.log()}"
            )
        self.addr = m.group(1).decode()
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=STOP_TIMEOUT)
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture(scope="session")
def mock_providers():
    with tempfile.TemporaryDirectory(prefix="tollgate-mock-") as tmp:
        mock = MockProviders(Path(tmp))
        try:
            yield mock.start()
        finally:
            mock.stop()

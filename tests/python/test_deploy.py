"""The deployment files under deploy/: Grafana dashboards and provisioning,
Prometheus config and rules, docker-compose and Kubernetes manifests.

The dashboards and rules are checked against a real Prometheus (Debian's
`prometheus` package) scraping a real tollgate: the gateway runs with
simulated providers and the wire-format mocks (examples/mock_providers),
a mixed workload goes through it (several backends, streams, errors, a
fallback, retries, a rate limit, an open circuit, mirroring, a config
reload), and then every expression of every dashboard panel and every rule
is evaluated through Prometheus's HTTP API: each must parse, each panel query
must return data, and each metric any of them names must be one tollgate
exports.

promtool and prometheus are required in CI (CI set; .ci/run installs them);
elsewhere the tests that need them are skipped when they are missing.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kubernetes_validate
import openai
import pytest
import yaml

from conftest import REPO, Gateway, config_head, free_port, http_get, scrape, tollgate_bin

# Gauges that are legitimately 0 once the workload is over: their panels must
# return series, not necessarily a non-zero value.
MAY_BE_ZERO = {"In-flight requests", "Ledger queue (rows waiting)"}

DEPLOY = REPO / "deploy"
DASHBOARD_DIR = DEPLOY / "grafana" / "dashboards"
DASHBOARDS = sorted(DASHBOARD_DIR.glob("*.json"))
PROM_DIR = DEPLOY / "prometheus"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
RULES = PROM_DIR / "rules" / "tollgate.rules.yml"
RULES_TESTS = PROM_DIR / "tests" / "tollgate.rules.test.yml"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "kubernetes"
DS_REF = {"type": "prometheus", "uid": "${datasource}"}
TEMPLATE_VARIABLES = ("provider", "model", "route", "key")
KUBERNETES_VERSION = "1.30"


# --- helpers ------------------------------------------------------------------


def require_tool(name: str) -> str:
    """The tool's path; a failure in CI when it is missing, a skip elsewhere."""
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail(f"`{name}` not found: .ci/run installs it (Debian package prometheus)", pytrace=False)
    pytest.skip(f"`{name}` not installed (Debian package prometheus); CI installs it")


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def load_yaml_all(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def dashboards() -> list[tuple[str, dict]]:
    return [(p.name, json.loads(p.read_text())) for p in DASHBOARDS]


def all_panels(dash: dict) -> list[dict]:
    """Every panel, rows' nested panels included."""
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def query_panels(dash: dict) -> list[dict]:
    return [p for p in all_panels(dash) if p.get("type") != "row"]


def panel_exprs() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) for every panel target."""
    return [
        (name, p["title"], t["expr"])
        for name, dash in dashboards()
        for p in query_panels(dash)
        for t in p.get("targets", [])
    ]


def annotation_exprs() -> list[tuple[str, str, str]]:
    return [
        (name, a.get("name", ""), a["expr"])
        for name, dash in dashboards()
        for a in dash.get("annotations", {}).get("list", [])
        if a.get("expr")
    ]


def rules() -> list[dict]:
    return [r for g in load_yaml(RULES)["groups"] for r in g["rules"]]


def alerts() -> list[str]:
    return [r["alert"] for r in rules() if "alert" in r]


def metric_names(expr: str) -> set[str]:
    """The tollgate and GenAI metric names an expression reads (histogram series
    by their base name)."""
    # Label matchers and label lists (`by (...)`, `on (...)`) name labels, not metrics.
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set(re.findall(r"\b((?:tollgate|gen_ai)_[a-zA-Z0-9_]+)", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def substitute(expr: str) -> str:
    """A Grafana query as Prometheus would get it: every template variable
    selects everything."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__range", "5m").replace("$__interval", "15s")

    def var(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        assert name in TEMPLATE_VARIABLES, f"unknown template variable ${name} in {expr}"
        return ".*"

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", var, expr)


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return [shutil.which("docker-compose")]
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    return None


def compose_binds(service: dict) -> list[tuple[str, str]]:
    """(host path, container path) of a service's bind mounts, host paths as written."""
    binds = []
    for v in service.get("volumes", []):
        if isinstance(v, str):
            parts = v.split(":")
            source, target = parts[0], parts[1] if len(parts) > 1 else parts[0]
            if source.startswith((".", "/", "~")):
                binds.append((source, target))
        elif v.get("type") == "bind":
            binds.append((v["source"], v["target"]))
    return binds


def k8s_docs() -> dict[str, dict]:
    """Every manifest by kind (one of each kind)."""
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_yaml_all(path):
            assert doc["kind"] not in docs, f"two {doc['kind']} manifests"
            docs[doc["kind"]] = doc
    return docs


def k8s_config_text() -> str:
    return k8s_docs()["ConfigMap"]["data"]["tollgate.yaml"]


def config_vars(config_text: str) -> tuple[set[str], set[str]]:
    """${VAR} names in a tollgate config's values (comments are not values):
    (without a default, with a default)."""
    strings: list[str] = []

    def walk(v):
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, str):
            strings.append(v)

    walk(yaml.safe_load(config_text))
    bare, defaulted = set(), set()
    for s in strings:
        for name, default in re.findall(r"\$\{(\w+)(:-[^}]*)?\}", s):
            (defaulted if default else bare).add(name)
    return bare, defaulted


def tollgate_check(config_text: str, tmp_path: Path, env: dict[str, str] | None = None):
    path = tmp_path / "tollgate.yaml"
    path.write_text(config_text)
    # Only what the config's defaults leave out: no provider keys from the caller's shell.
    clean = {"PATH": os.environ.get("PATH", ""), **(env or {})}
    return subprocess.run([str(tollgate_bin()), "check", str(path)], env=clean, capture_output=True, text=True,
                          timeout=30)


def duration_seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(text))
    assert m, f"not a duration: {text}"
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


# --- Prometheus: promtool -----------------------------------------------------


def test_promtool_check_config():
    promtool = require_tool("promtool")
    out = subprocess.run([promtool, "check", "config", str(PROM_CONFIG)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    # The rule files it names are the ones shipped.
    assert "1 rule files found" in out.stdout + out.stderr, out.stdout + out.stderr


def test_promtool_check_rules():
    promtool = require_tool("promtool")
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_test_rules():
    promtool = require_tool("promtool")
    out = subprocess.run([promtool, "test", "rules", str(RULES_TESTS)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


def test_every_alert_has_firing_and_quiet_unit_tests():
    """Each alert is unit-tested both where it fires and where it must not."""
    cases: dict[str, list[list]] = {}
    for test in load_yaml(RULES_TESTS)["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], []).append(case.get("exp_alerts") or [])
    assert set(alerts()) >= {
        "TollgateHighErrorRate",
        "TollgateLatencyP95High",
        "TollgateCircuitOpen",
        "TollgateBudget80PercentSpent",
        "TollgateBudgetExhausted",
        "TollgateLedgerRowsDropped",
    }
    for alert in alerts():
        assert alert in cases, f"{alert} has no promtool unit test"
        assert any(cases[alert]), f"{alert}: no test case where it fires"
        assert any(not c for c in cases[alert]), f"{alert}: no test case where it must not fire"
    assert set(cases) <= set(alerts()), f"tests for alerts that do not exist: {set(cases) - set(alerts())}"


def test_rules_carry_severity_and_summary():
    for rule in rules():
        if "alert" in rule:
            assert rule.get("labels", {}).get("severity") in ("warning", "critical"), rule["alert"]
            assert rule.get("annotations", {}).get("summary"), rule["alert"]
            assert rule.get("annotations", {}).get("description"), rule["alert"]
        else:
            assert re.fullmatch(r"tollgate:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]


# --- Grafana dashboards -------------------------------------------------------


def test_both_dashboards_exist():
    assert {p.name for p in DASHBOARDS} == {"tollgate-overview.json", "tollgate-backends.json"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_valid_grafana_json(path: Path):
    dash = json.loads(path.read_text())
    assert isinstance(dash.get("schemaVersion"), int) and dash["schemaVersion"] >= 36
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", dash.get("uid", "")), "a stable uid (Grafana allows 40 characters)"
    assert dash.get("title")
    assert "__inputs" not in dash, "an exported-for-sharing dashboard pins data source inputs"
    panels = all_panels(dash)
    ids = [p.get("id") for p in panels]
    assert all(isinstance(i, int) for i in ids), "every panel has an integer id"
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    titles = [p["title"] for p in query_panels(dash)]
    assert len(titles) == len(set(titles)), "panel titles are unique within a dashboard"
    # Panels lie on the 24-column grid without overlapping.
    cells = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_template_variables(path: Path):
    dash = json.loads(path.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables.get("datasource")
    assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus", "a Prometheus data source variable"
    for name in TEMPLATE_VARIABLES:
        v = variables.get(name)
        assert v, f"variable {name} missing"
        assert v["type"] == "query" and v["datasource"] == DS_REF, name
        query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        assert re.fullmatch(r"label_values\((\w+)(\{.*\})?, *" + name + r"\)", query), query
        # "All" must be a regex that matches everything, the empty label too.
        assert v.get("includeAll") and v.get("allValue") == ".*", name
    assert "tollgate_key_requests_total" in json.dumps(variables["key"]["query"])


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_never_hard_codes_a_datasource(path: Path):
    dash = json.loads(path.read_text())
    refs = []

    def walk(node, where):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "datasource":
                    refs.append((f"{where}.{k}", v))
                    continue
                if k == "uid" and node is not dash:
                    pytest.fail(f"a uid outside a datasource reference at {where}: {v!r}")
                walk(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")

    walk(dash, "$")
    assert refs
    for where, ref in refs:
        assert ref == DS_REF, f"{where}: datasource {ref!r}, expected {DS_REF}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_has_prometheus_queries(path: Path):
    dash = json.loads(path.read_text())
    for p in query_panels(dash):
        assert p.get("datasource") == DS_REF, p["title"]
        assert p.get("description"), f"{p['title']}: a description of what it answers"
        targets = p.get("targets")
        assert targets, f"{p['title']}: no targets"
        refs = [t.get("refId") for t in targets]
        assert len(set(refs)) == len(refs), p["title"]
        for t in targets:
            assert isinstance(t.get("expr"), str) and t["expr"].strip(), f"{p['title']}: a target without expr"
            assert t.get("datasource") == DS_REF, p["title"]
    for p in all_panels(dash):
        if p.get("type") == "row":
            assert not p.get("targets"), p["title"]


def test_dashboards_cover_the_issue():
    """Every view the operators asked for is on one of the dashboards."""
    exprs = " ".join(e for _, _, e in panel_exprs())
    for metric in (
        "tollgate_requests_total",
        "tollgate_request_duration_seconds_bucket",
        "tollgate_time_to_first_token_seconds_bucket",
        "tollgate_tokens_total",
        "tollgate_cost_usd_total",
        "tollgate_retries_total",
        "tollgate_rate_limited_total",
        "tollgate_budget_rejected_total",
        "tollgate_route_decisions_total",
        "tollgate_circuit_state",
        "tollgate_overhead_seconds_bucket",
        "tollgate_in_flight_requests",
        "tollgate_mirror_request_duration_seconds_bucket",
        "tollgate_mirror_cost_usd_total",
    ):
        assert metric in exprs, f"no panel shows {metric}"
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le, provider, model) (rate(tollgate_request_duration_seconds" in exprs
        assert f"histogram_quantile({q}, sum by (le, provider, model) (rate(tollgate_time_to_first_token" in exprs


# --- Grafana provisioning and docker-compose --------------------------------


def compose() -> dict:
    return load_yaml(COMPOSE)


def test_compose_file_validates():
    cmd = compose_command()
    if cmd is None:
        if os.environ.get("CI"):
            pytest.fail("neither `docker-compose` nor `docker compose`: .ci/run installs docker-compose",
                        pytrace=False)
        pytest.skip("neither docker-compose nor `docker compose` is installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    for profile in ([], ["--profile", "ollama"]):
        out = subprocess.run([*cmd, "-f", str(COMPOSE), *profile, "config", "-q"], capture_output=True, text=True,
                             timeout=120, env=env)
        assert out.returncode == 0, out.stdout + out.stderr


def test_compose_mounts_only_files_that_exist():
    spec = compose()
    named = set((spec.get("volumes") or {}).keys())
    for name, service in spec["services"].items():
        for source, _ in compose_binds(service):
            assert (DEPLOY / source).resolve().exists(), f"{name}: mounts {source}, which does not exist"
        for v in service.get("volumes", []):
            if isinstance(v, str) and not v.startswith((".", "/", "~")):
                assert v.split(":")[0] in named, f"{name}: volume {v} is not declared"
        build = service.get("build")
        if build:
            context = DEPLOY / (build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), f"{name}: build context {context}"
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            assert (context / dockerfile).is_file(), f"{name}: {dockerfile}"
        for env_file in [service["env_file"]] if isinstance(service.get("env_file"), str) else service.get(
                "env_file", []):
            assert (DEPLOY / env_file).is_file(), f"{name}: env_file {env_file}"


def container_file(service: dict, container_path: str) -> Path | None:
    """The host file a container path of the service comes from, via its bind mounts."""
    for source, target in compose_binds(service):
        target = target.rstrip("/")
        if container_path == target:
            return (DEPLOY / source).resolve()
        if container_path.startswith(target + "/"):
            return (DEPLOY / source).resolve() / container_path[len(target) + 1:]
    return None


def test_compose_wires_the_stack_together():
    spec = compose()
    services = spec["services"]
    assert {"tollgate", "prometheus", "grafana", "ollama"} <= set(services)

    # tollgate: built from the repository's Dockerfile, its config mounted where TOLLGATE_CONFIG points.
    tg = services["tollgate"]
    assert (DEPLOY / tg["build"]["context"]).resolve() == REPO
    assert container_file(tg, tg["environment"]["TOLLGATE_CONFIG"]) == (DEPLOY / "tollgate.compose.yaml").resolve()
    assert any(target == tg["environment"]["TOLLGATE_DATA_DIR"] for target in
               (v.split(":")[1] for v in tg["volumes"] if isinstance(v, str))), "a volume keeps the ledger"
    # docker stops it with SIGTERM and kills it after stop_grace_period: longer than its drain.
    server = yaml.safe_load((DEPLOY / "tollgate.compose.yaml").read_text())["server"]
    drain = duration_seconds(server.get("shutdown_delay", "0s")) + duration_seconds(server.get("shutdown_grace", "30s"))
    assert duration_seconds(tg.get("stop_grace_period", "10s")) > drain

    # Prometheus: the shipped config, with its rule files, at the paths its command line and config name.
    prom = services["prometheus"]
    flag = next(a for a in prom["command"] if a.startswith("--config.file="))
    config_in_container = flag.split("=", 1)[1]
    assert container_file(prom, config_in_container) == PROM_CONFIG.resolve()
    config = load_yaml(PROM_CONFIG)
    for pattern in config["rule_files"]:
        in_container = str(Path(config_in_container).parent / pattern)
        host = container_file(prom, str(Path(in_container).parent))
        assert host and list(host.glob(Path(pattern).name)), f"rule files {pattern} are not mounted"
    targets = [t for job in config["scrape_configs"] if job["job_name"] == "tollgate"
               for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == ["tollgate:4000"], "Prometheus scrapes the tollgate service on the port it listens on"

    # Grafana: the provisioning files, and the dashboards where the dashboard provider looks.
    graf = services["grafana"]
    ds_file = container_file(graf, "/etc/grafana/provisioning/datasources/prometheus.yml")
    dash_file = container_file(graf, "/etc/grafana/provisioning/dashboards/tollgate.yml")
    assert ds_file and ds_file.is_file() and dash_file and dash_file.is_file()
    datasources = load_yaml(ds_file)["datasources"]
    assert len(datasources) == 1
    ds = datasources[0]
    assert ds["type"] == "prometheus" and ds.get("uid") and ds["url"] == "http://prometheus:9090"
    providers = load_yaml(dash_file)["providers"]
    assert len(providers) == 1 and providers[0]["type"] == "file"
    mounted = container_file(graf, providers[0]["options"]["path"])
    assert mounted == DASHBOARD_DIR.resolve(), "the dashboard provider reads the mounted dashboards"
    home = graf["environment"].get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert container_file(graf, home).is_file()

    # Ollama is optional.
    assert services["ollama"].get("profiles") == ["ollama"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine"


# --- Kubernetes ---------------------------------------------------------------


def test_kustomization_lists_every_manifest():
    kustomization = load_yaml(K8S / "kustomization.yaml")
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    assert {i["name"] for i in kustomization.get("images", [])} <= {
        c["image"].split(":")[0] for c in k8s_docs()["Deployment"]["spec"]["template"]["spec"]["containers"]}


def test_manifests_validate_against_the_kubernetes_schemas():
    """Built-in kinds against the API's OpenAPI schemas (strict: unknown fields
    are errors); the ServiceMonitor, a custom resource, is checked below."""
    docs = k8s_docs()
    assert set(docs) == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                         "ServiceMonitor"}
    for kind, doc in docs.items():
        assert doc.get("apiVersion") and doc.get("kind"), kind
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), kind
        if kind == "ServiceMonitor":
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{kind}: {e.message} at {'.'.join(map(str, e.path))}", pytrace=False)


def test_the_schema_validator_catches_mistakes():
    """The validation above would see a broken manifest: a missing required field
    and a misspelled one."""
    deployment = k8s_docs()["Deployment"]
    broken = json.loads(json.dumps(deployment))
    del broken["spec"]["template"]["spec"]["containers"][0]["name"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    typo = json.loads(json.dumps(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSION, strict=True)


def pod_labels() -> dict:
    return k8s_docs()["Deployment"]["spec"]["template"]["metadata"]["labels"]


def selects_pods(match_labels: dict) -> bool:
    return bool(match_labels) and all(pod_labels().get(k) == v for k, v in match_labels.items())


def test_deployment():
    docs = k8s_docs()
    d = docs["Deployment"]
    assert d["apiVersion"] == "apps/v1"
    spec = d["spec"]
    assert selects_pods(spec["selector"]["matchLabels"]), "the selector matches the pod template's labels"
    pod = spec["template"]["spec"]
    containers = pod["containers"]
    assert containers and all(c.get("name") and c.get("image") for c in containers)
    (c,) = containers
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 4000}

    def probe_port(probe):
        port = probe["httpGet"]["port"]
        return ports.get(port) if isinstance(port, str) else port

    assert c["readinessProbe"]["httpGet"]["path"] == "/ready" and probe_port(c["readinessProbe"]) == 4000
    assert c["livenessProbe"]["httpGet"]["path"] == "/health" and probe_port(c["livenessProbe"]) == 4000
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), kind

    # Non-root, read-only root filesystem, nothing to escalate with.
    psc, csc = pod.get("securityContext", {}), c["securityContext"]
    assert csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True
    assert csc.get("runAsUser", psc.get("runAsUser", 0)) != 0
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert "ALL" in csc["capabilities"]["drop"]

    # The data directory (SQLite ledger) is a writable emptyDir; the config is the ConfigMap.
    env = {e["name"]: e for e in c["env"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    data_dir = env["TOLLGATE_DATA_DIR"]["value"]
    assert data_dir == "/app/data"
    assert "emptyDir" in volumes[mounts[data_dir]["name"]] and not mounts[data_dir].get("readOnly")
    config_path = env["TOLLGATE_CONFIG"]["value"]
    config_mount = mounts[str(Path(config_path).parent)]
    config_volume = volumes[config_mount["name"]]
    assert config_volume["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    assert Path(config_path).name in docs["ConfigMap"]["data"]
    assert env["TOLLGATE_LISTEN"]["value"].endswith(":4000")

    # Every key the config reads from the environment comes from a Secret, never from a literal.
    bare, defaulted = config_vars(k8s_config_text())
    for var in bare | {v for v in defaulted if v.endswith("_KEY")}:
        assert var in env, f"the config reads ${{{var}}}, the container does not set it"
        ref = env[var].get("valueFrom", {}).get("secretKeyRef")
        assert ref and ref.get("name") and ref.get("key"), f"{var} must come from a Secret"
    for e in c["env"]:
        if re.search(r"KEY|TOKEN|PASSWORD|SECRET", e["name"]):
            assert "value" not in e, f"{e['name']} is a literal"

    # Pods outlive their drain: shutdown_delay + shutdown_grace < terminationGracePeriodSeconds.
    server = yaml.safe_load(k8s_config_text())["server"]
    drain = duration_seconds(server.get("shutdown_delay", "0s")) + duration_seconds(server.get("shutdown_grace", "30s"))
    assert pod["terminationGracePeriodSeconds"] > drain


def test_service():
    docs = k8s_docs()
    s = docs["Service"]
    assert s["apiVersion"] == "v1"
    assert selects_pods(s["spec"]["selector"])
    container_ports = {p["name"]: p["containerPort"]
                       for p in docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["ports"]}
    for port in s["spec"]["ports"]:
        assert port.get("name") and isinstance(port.get("port"), int)
        target = port.get("targetPort", port["port"])
        assert (target in container_ports) if isinstance(target, str) else (target in container_ports.values())


def test_horizontal_pod_autoscaler():
    docs = k8s_docs()
    hpa = docs["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert ref == {"apiVersion": "apps/v1", "kind": "Deployment", "name": docs["Deployment"]["metadata"]["name"]}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    for metric in hpa["spec"]["metrics"]:
        if metric["type"] == "Resource":
            # Utilization is relative to the container's request, which must exist.
            assert metric["resource"]["name"] in container["resources"]["requests"]


def test_pod_disruption_budget():
    docs = k8s_docs()
    pdb = docs["PodDisruptionBudget"]
    assert pdb["apiVersion"] == "policy/v1"
    assert selects_pods(pdb["spec"]["selector"]["matchLabels"])
    assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])
    # A node drain can always proceed: fewer pods required than run at least.
    if isinstance(pdb["spec"].get("minAvailable"), int):
        assert pdb["spec"]["minAvailable"] < docs["HorizontalPodAutoscaler"]["spec"]["minReplicas"]
        assert pdb["spec"]["minAvailable"] < docs["Deployment"]["spec"]["replicas"]


def test_service_monitor():
    """monitoring.coreos.com/v1 ServiceMonitor: its selector finds the Service,
    its endpoint names one of the Service's ports."""
    docs = k8s_docs()
    sm = docs["ServiceMonitor"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    service = docs["Service"]
    labels = service["metadata"]["labels"]
    assert sm["spec"]["selector"]["matchLabels"]
    assert all(labels.get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert sm["spec"]["endpoints"]
    for ep in sm["spec"]["endpoints"]:
        assert ep["port"] in port_names
        assert ep.get("path", "/metrics") == "/metrics"
        assert set(ep) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels", "relabelings",
                           "metricRelabelings"}


# --- The shipped tollgate configs: the real binary accepts and serves them ----

SHIPPED_CONFIGS = {
    "kubernetes-configmap": k8s_config_text,
    "compose": lambda: (DEPLOY / "tollgate.compose.yaml").read_text(),
}


@pytest.mark.parametrize("name", list(SHIPPED_CONFIGS))
def test_shipped_config_passes_tollgate_check(name, tmp_path):
    out = tollgate_check(SHIPPED_CONFIGS[name](), tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert ": ok (" in out.stdout + out.stderr


@pytest.mark.parametrize("name", list(SHIPPED_CONFIGS))
def test_shipped_config_serves(name, tmp_path):
    # No provider keys: the simulated model answers; the ledger goes to a temporary data dir.
    env = {"TOLLGATE_DATA_DIR": str(tmp_path / "data")}
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.endswith("_API_KEY") or k == "HF_TOKEN"}
    gw = Gateway(tmp_path, config=SHIPPED_CONFIGS[name](), env=env)
    try:
        gw.start()
        client = gw.client()
        reply = client.chat.completions.create(model="sim-chat", messages=[{"role": "user", "content": "Hello"}])
        assert reply.choices[0].message.content
        assert http_get(f"{gw.base}/health")[0] == 200
    finally:
        gw.stop()
        os.environ.update(saved)


# --- A real Prometheus scraping a real tollgate --------------------------------


def workload_config(mock_addr: str, dead_port: int) -> str:
    m = f"http://{mock_addr}"
    auth = '  admin_keys: ["${TG_ADMIN_KEY}"]\n  managed_keys: true\n'
    return config_head(auth, level="warn") + f"""\
metrics: {{key_labels: true}}
teams:
  # A budget the first priced request spends: the next is refused.
  ml: {{budget: {{daily: "0.000001"}}}}
providers:
  sim: {{kind: simulated, tokens_per_second: 2000, completion_tokens: 12}}
  sim-slow: {{kind: simulated, ttft: 3s, completion_tokens: 4}}
  anthropic: {{kind: anthropic, base_url: "{m}", api_key: "${{ANTHROPIC_API_KEY}}"}}
  openai: {{kind: openai, base_url: "{m}/v1", api_key: "${{OPENAI_API_KEY}}"}}
  ollama: {{kind: ollama, base_url: "{m}"}}
  # Nothing listens there: every request fails to connect.
  dead: {{kind: openai, base_url: "http://127.0.0.1:{dead_port}/v1", timeouts: {{connect: 1s}}}}
models:
  - {{name: sim-chat, provider: sim}}
  - {{name: sim-shadow, provider: sim-slow}}
  - {{name: sim-limited, provider: sim, rpm: 2}}
  - {{name: claude, provider: anthropic, upstream_model: claude-sonnet-4-5, catalog: claude-sonnet-4-5-20250929}}
  - {{name: gpt, provider: openai, upstream_model: gpt-4o-mini}}
  - {{name: llama, provider: ollama, upstream_model: "mock-llama:latest"}}
  - {{name: dead-a, provider: dead}}
  - {{name: dead-b, provider: dead}}
ledger:
  url: sqlite://data/ledger.db
routing:
  seed: 7
  breaker: {{failures: 6, error_rate: 0.99, window: 20, cooldown: 10m}}
routes:
  - name: fallback
    match: {{model: fallback}}
    targets: [dead-a, llama]
    retry: {{attempts: 3, same_backend: 1, backoff: 1ms}}
  - name: limited
    match: {{model: limited}}
    targets: [sim-limited, sim-chat]
  - name: mirrored
    match: {{model: mirrored}}
    targets: [sim-chat]
    mirror: {{to: sim-shadow, percent: 100}}
  # Both sides priced by the catalog: mirror costs on both roles.
  - name: compare
    match: {{model: compare}}
    targets: [gpt]
    mirror: {{to: claude, percent: 100}}
"""


PROVIDER_KEYS = {"ANTHROPIC_API_KEY": "sk-ant-mock", "OPENAI_API_KEY": "sk-mock"}
ADMIN_KEY = "tg-admin-deploy-test"


def managed_key(gw: Gateway, **fields) -> str:
    """A key made through the admin API."""
    req = urllib.request.Request(f"{gw.base}/admin/keys", data=json.dumps(fields).encode(), method="POST",
                                 headers={"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 201
        return json.loads(resp.read())["key"]


class Prometheus:
    def __init__(self, workdir: Path, gateway_port: int):
        self.workdir = workdir
        self.gateway_port = gateway_port
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "prometheus.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict:
        """The shipped config, pointed at the test's gateway, scraping every second."""
        config = load_yaml(PROM_CONFIG)
        config["global"].update({"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"})
        config["rule_files"] = [str(p) for pattern in config["rule_files"] for p in sorted(PROM_DIR.glob(pattern))]
        assert config["rule_files"] == [str(RULES)]
        jobs = [j for j in config["scrape_configs"] if j["job_name"] == "tollgate"]
        assert len(jobs) == 1
        jobs[0]["static_configs"] = [{"targets": [f"127.0.0.1:{self.gateway_port}"]}]
        return config

    def start(self, binary: str) -> "Prometheus":
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(self.config()))
        for _ in range(3):
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [binary, f"--config.file={path}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if http_get(f"{self.base}/-/ready", timeout=1.0)[0] == 200:
                        return self
                except OSError:
                    pass
                time.sleep(0.1)
            self.stop()
        raise RuntimeError(f"prometheus did not start; its log:\n{self.log_path.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)

    def api(self, path: str, **params) -> dict:
        url = f"{self.base}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        status, _, body = http_get(url, timeout=30)
        data = json.loads(body)
        if status != 200 or data.get("status") != "success":
            raise PromQLError(f"{data.get('errorType')}: {data.get('error')}")
        return data["data"]

    def query(self, expr: str) -> list:
        return self.api("query", query=expr)["result"]

    def last_scrape(self) -> str:
        targets = self.api("targets")["activeTargets"]
        assert len(targets) <= 1, targets
        # None yet while service discovery starts.
        return targets[0]["lastScrape"] if targets and targets[0]["health"] == "up" else ""

    def wait_scrapes(self, n: int, timeout: float = 30.0) -> None:
        """Until n more successful scrapes of the gateway have happened."""
        seen = [self.last_scrape()]
        deadline = time.monotonic() + timeout
        while len(set(s for s in seen if s)) <= n:
            assert time.monotonic() < deadline, (
                f"Prometheus did not scrape tollgate; its log:\n{self.log_path.read_text(errors='replace')}")
            time.sleep(0.2)
            seen.append(self.last_scrape())


class PromQLError(Exception):
    pass


def ask(client: openai.OpenAI, model: str, text: str = "hello", stream: bool = False):
    """One chat request; its HTTP status (or "stream-error" for a stream ended by an error event)."""
    messages = [{"role": "user", "content": text}]
    try:
        if stream:
            for _ in client.chat.completions.create(model=model, messages=messages, stream=True,
                                                    stream_options={"include_usage": True}):
                pass
        else:
            client.chat.completions.create(model=model, messages=messages)
        return 200
    except openai.APIStatusError as e:
        return e.status_code
    except openai.APIError:
        return "stream-error"


def reload_config(gw: Gateway) -> None:
    before = sum(v for (name, _), v in scrape(gw).items() if name == "tollgate_config_reloads_total")
    gw.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while sum(v for (name, _), v in scrape(gw).items() if name == "tollgate_config_reloads_total") <= before:
        assert time.monotonic() < deadline, "SIGHUP did not reload the config"
        time.sleep(0.05)


def run_round(gw: Gateway, client: openai.OpenAI, team_client: openai.OpenAI) -> None:
    """A mixed workload; run twice, scrapes apart, so every counter moves
    between scrapes and every rate is non-zero."""
    reload_config(gw)
    for model in ("sim-chat", "claude", "gpt", "llama"):
        for stream in (False, True, False, True):
            assert ask(client, model, stream=stream) == 200, model
    client.completions.create(model="sim-chat", prompt="hello")
    client.embeddings.create(model="sim-chat", input=["hello", "world"])
    # Upstream errors: rate limited (429) and overloaded (503), and a stream broken midway.
    assert ask(client, "gpt", "fail") == 429
    assert ask(client, "llama", "fail") == 503
    assert ask(client, "claude", "failmid", stream=True) == "stream-error"
    # A dead backend: connection refused (502), until its circuit opens.
    for _ in range(4):
        assert ask(client, "dead-b") in (502, 503)
    # The fallback route: dead-a twice (same_backend), then llama.
    assert ask(client, "fallback") == 200
    # Rate limits: the route spills over to sim-chat; asked directly, 429.
    for _ in range(3):
        assert ask(client, "limited") == 200
    assert ask(client, "sim-limited") == 429
    # Mirrored with costs on both sides, while the shadow capacity is free.
    for _ in range(3):
        assert ask(client, "compare") == 200
    # Mirroring to a slow shadow: more at once than the shadow capacity (64), some not mirrored.
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: ask(client, "mirrored"), range(80)))
    assert statuses == [200] * 80
    # An unknown model: rejected before any backend.
    assert ask(client, "no-such-model") == 404
    # A managed key of a team whose budget the first priced answer spends.
    assert ask(team_client, "gpt") in (200, 429)
    assert ask(team_client, "gpt") == 429


@pytest.fixture(scope="module")
def loaded(mock_providers):
    """(Prometheus, gateway) after the workload, Prometheus having scraped it."""
    prometheus_bin = require_tool("prometheus")
    with tempfile.TemporaryDirectory(prefix="tollgate-deploy-") as tmp:
        tmp = Path(tmp)
        (tmp / "gw").mkdir()
        (tmp / "prom").mkdir()
        gw = Gateway(tmp / "gw", config=workload_config(mock_providers.addr, free_port()),
                     env={**PROVIDER_KEYS, "TG_ADMIN_KEY": ADMIN_KEY})
        prom = None
        try:
            gw.start()
            prom = Prometheus(tmp / "prom", gw.port).start(prometheus_bin)
            prom.wait_scrapes(1)
            client = gw.client()
            team_client = gw.client(api_key=managed_key(gw, name="deploy-test", team="ml"))
            run_round(gw, client, team_client)
            wait_for_shadows(gw)
            prom.wait_scrapes(2)
            run_round(gw, client, team_client)
            # The last shadows (3 s each) finish, then two scrapes see everything.
            wait_for_shadows(gw)
            prom.wait_scrapes(2)
            # Rules are evaluated every second: give them one round on the final data.
            time.sleep(1.5)
            yield prom, gw
        finally:
            if prom:
                prom.stop()
            code = gw.stop()
            if code != 0:
                print(f"tollgate exited with {code}; its log:\n{gw.log()}")


def wait_for_shadows(gw: Gateway) -> None:
    """Until every request, shadows included, has finished: the shadow capacity is free again."""
    deadline = time.monotonic() + 20
    while metric_total(gw, "tollgate_in_flight_requests") or shadows_running(gw):
        assert time.monotonic() < deadline, "mirrored requests did not finish"
        time.sleep(0.1)


def metric_total(gw: Gateway, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in scrape(gw).items() if n == name and set(labels.items()) <= ls)


def shadows_running(gw: Gateway) -> bool:
    """A mirrored request's primary side is metered when the client is answered,
    its shadow side when the shadow finishes (requests not mirrored have neither)."""
    samples = scrape(gw)

    def total(role):
        return sum(v for (n, ls), v in samples.items()
                   if n == "tollgate_mirror_requests_total" and ("role", role) in ls)

    return total("shadow") < total("primary")


def evaluate(prom: Prometheus, expr: str) -> list:
    try:
        return prom.query(substitute(expr))
    except PromQLError as e:
        pytest.fail(f"Prometheus rejects {expr!r}: {e}", pytrace=False)


def has_value(result: list) -> bool:
    """Some sample is a real, non-zero number (not NaN from an idle histogram)."""
    for r in result:
        value = float(r["value"][1])
        if math.isfinite(value) and value != 0:
            return True
    return False


def test_every_dashboard_and_rule_expression_parses(loaded):
    prom, _ = loaded
    exprs = [(f"{d}: {t}", e) for d, t, e in panel_exprs() + annotation_exprs()]
    exprs += [(r.get("alert") or r["record"], r["expr"]) for r in rules()]
    failures = []
    for where, expr in exprs:
        try:
            prom.query(substitute(expr))
        except PromQLError as e:
            failures.append(f"{where}: {e}\n    {expr}")
    assert not failures, "\n".join(failures)


def test_every_panel_query_returns_data(loaded):
    prom, _ = loaded
    failures = []
    for dashboard, title, expr in panel_exprs():
        result = evaluate(prom, expr)
        if not result:
            failures.append(f"{dashboard}: {title!r}: no data\n    {expr}")
        elif title not in MAY_BE_ZERO and not has_value(result):
            failures.append(f"{dashboard}: {title!r}: only zeros or NaN: {result}\n    {expr}")
    assert not failures, "\n".join(failures)


def test_every_referenced_metric_is_exported(loaded):
    """A dashboard or rule naming a metric tollgate does not export would show
    nothing forever: every name must be on /metrics."""
    _, gw = loaded
    exported = {re.sub(r"_(bucket|sum|count)$", "", name) for name, _ in scrape(gw)}
    referenced: dict[str, set[str]] = {}
    for dashboard, title, expr in panel_exprs() + annotation_exprs():
        for name in metric_names(expr):
            referenced.setdefault(name, set()).add(f"{dashboard}: {title}")
    for rule in rules():
        for name in metric_names(rule["expr"]):
            referenced.setdefault(name, set()).add(rule.get("alert") or rule["record"])
    missing = {n: sorted(w) for n, w in referenced.items() if n not in exported}
    assert not missing, f"not exported by tollgate: {missing}"


def test_template_variables_have_values(loaded):
    prom, _ = loaded
    for name, dash in dashboards():
        for v in dash["templating"]["list"]:
            if v["type"] != "query":
                continue
            query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.+), *(\w+)\)", query)
            assert m, query
            values = prom.api(f"label/{m.group(2)}/values", **{"match[]": substitute(m.group(1))})
            assert [x for x in values if x], f"{name}: variable {v['name']} ({query}) has no values"


def test_rules_load_and_evaluate_against_live_data(loaded):
    prom, _ = loaded
    groups = prom.api("rules")["groups"]
    loaded_rules = [r for g in groups for r in g["rules"]]
    assert len(loaded_rules) == len(rules())
    for r in loaded_rules:
        assert r["health"] == "ok", f"{r['name']}: {r.get('lastError')}"
    # dead-b's circuit is open: its alert is pending (or already firing).
    alerts_now = prom.query('ALERTS{alertname="TollgateCircuitOpen"}')
    assert {(a["metric"]["model"], a["metric"]["provider"]) for a in alerts_now} == {("dead-b", "dead")}, alerts_now
    # The recording rules produce series from the live data.
    for r in rules():
        if "record" in r:
            assert prom.query(r["record"]), f"{r['record']} recorded nothing"

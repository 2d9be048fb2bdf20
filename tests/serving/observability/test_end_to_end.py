"""The issue's "done when", offline: a real Prometheus scrapes every source, and every query works.

Debian's Prometheus (2.42) on loopback scrapes:
- two real exporters (`python -m serving.observability.exporter`, the sidecar's command), each the
  single reader of a stand-in trtllm-serve's drained iteration-stats JSON, relaying its
  `/prometheus/metrics` (TensorRT-LLM 1.2.1's formats: the real server needs GPUs);
- a dcgm-exporter stand-in, a gateway-metrics stand-in (to be swapped for the real gateway) and a
  kube-state-metrics stand-in (tests/support/metrics_sources.py);
and loads the rendered alert rules. Then every query of the dashboard, the alerts and `serving top`
must return data: a misspelt metric or label anywhere returns nothing and fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from serving.observability.alerts import AlertSettings, render_rules_yaml, stack_alerts
from serving.observability.dashboard import dashboard_expressions, render_dashboard
from serving.observability.queries import Scope, stack_queries
from tests.support import metrics_sources as sources
from tests.support.nginx_runner import free_loopback_port, wait_for_port
from tests.support.prometheus_runner import RunningPrometheus, ScrapeTarget, start_prometheus

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
DATA_DEADLINE_SECONDS = 90.0
SCOPE = Scope()


@dataclass
class Stack:
    prometheus: RunningPrometheus
    servers: list[sources.TrtllmServerStandIn]
    exporters: list[subprocess.Popen]


def _start_exporter(source: str, port: int) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "serving.observability.exporter",
        "--source",
        source,
        "--listen-address",
        "127.0.0.1",
        "--port",
        str(port),
        "--interval",
        "0.5",
    ]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _gateway_target(pod: str) -> tuple[ScrapeTarget, sources.LoopbackMetricsServer]:
    """The stand-in for one pod's gateway metrics. To test the real gateway, return its target here."""
    server = sources.start_text_source(sources.gateway_text)
    return ScrapeTarget("api-gateway", server.port, {"namespace": sources.NAMESPACE, "pod": pod}), server


def _wait_for_data(prometheus: RunningPrometheus, expressions: list[str]) -> None:
    deadline = time.monotonic() + DATA_DEADLINE_SECONDS
    missing = expressions
    while time.monotonic() < deadline:
        missing = [expr for expr in missing if not prometheus.query(expr)]
        if not missing:
            return
        time.sleep(1.0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("metrics-e2e")
    servers: list[sources.TrtllmServerStandIn] = []
    others: list[sources.LoopbackMetricsServer] = []
    exporters: list[subprocess.Popen] = []
    prometheus: RunningPrometheus | None = None
    try:
        targets = []
        for pod in sources.PODS:
            server = sources.TrtllmServerStandIn()
            servers.append(server)
            port = free_loopback_port()
            exporter = _start_exporter(server.base_url, port)
            exporters.append(exporter)
            wait_for_port(port, 20.0, exporter)
            targets.append(ScrapeTarget("trtllm-server", port, {"namespace": sources.NAMESPACE, "pod": pod}))
            gateway_target, gateway_server = _gateway_target(pod)
            targets.append(gateway_target)
            others.append(gateway_server)
        dcgm = sources.start_text_source(sources.dcgm_exporter_text)
        kube_state = sources.start_text_source(sources.kube_state_metrics_text)
        others += [dcgm, kube_state]
        targets += [
            ScrapeTarget("dcgm-exporter", dcgm.port, honor_labels=True),
            ScrapeTarget("kube-state-metrics", kube_state.port, honor_labels=True),
        ]
        rules = workdir / "alerts.yaml"
        rules.write_text(render_rules_yaml(SCOPE, AlertSettings(), extra_labels={"stack": "e2e"}))
        prometheus = start_prometheus(workdir, targets, [rules])
        _wait_for_data(prometheus, [query.expr for query in stack_queries(SCOPE).all()])
        yield Stack(prometheus, servers, exporters)
    finally:
        if prometheus is not None:
            prometheus.stop()
        for exporter in exporters:
            exporter.terminate()
            try:
                exporter.wait(timeout=10)
            except subprocess.TimeoutExpired:
                exporter.kill()
                exporter.wait(timeout=10)
        for source in [*servers, *others]:
            source.stop()


def _empty(prometheus: RunningPrometheus, expressions: list[str]) -> list[str]:
    return [expr for expr in expressions if not prometheus.query(expr)]


def test_every_named_query_returns_data(stack: Stack) -> None:
    queries = stack_queries(SCOPE).all()
    empty = [query.name for query in queries if not stack.prometheus.query(query.expr)]
    assert not empty, f"queries with no data: {empty}\n{stack.prometheus.log_tail()}"


def test_every_dashboard_expression_returns_data(stack: Stack) -> None:
    expressions = dashboard_expressions(render_dashboard(SCOPE, "e2e"))
    assert len(expressions) > 40
    assert not _empty(stack.prometheus, expressions)


def test_every_alert_query_returns_data_and_every_alert_evaluates(stack: Stack) -> None:
    for rule in stack_alerts(SCOPE, AlertSettings()):
        assert not _empty(stack.prometheus, [query.expr for query in rule.queries]), rule.name
        stack.prometheus.query(rule.expr)  # raises if Prometheus refuses the expression


def test_prometheus_evaluates_the_rules_file_and_a_healthy_stack_fires_nothing(stack: Stack) -> None:
    deadline = time.monotonic() + 30.0
    while True:
        groups = stack.prometheus.api("rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        evaluated = all(rule.get("lastEvaluation", "").startswith("20") for rule in rules)
        if evaluated or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert len(rules) == len(stack_alerts(SCOPE, AlertSettings()))
    assert {rule["health"] for rule in rules} == {"ok"}, [(r["name"], r.get("lastError")) for r in rules]
    assert [rule["name"] for rule in rules if rule["state"] != "inactive"] == []


def test_a_misspelt_metric_name_returns_no_data(stack: Stack) -> None:
    """The property the tests above rely on: a typo is an empty answer, not an error to miss."""
    query = stack_queries(SCOPE).ttft_p90
    assert stack.prometheus.query(query.expr)
    assert stack.prometheus.query(query.expr.replace("first_token", "frist_token")) == []


def test_the_exporter_is_the_single_reader_and_serves_per_replica_series(stack: Stack) -> None:
    running = stack.prometheus.query(stack_queries(SCOPE).running_requests_by_pod.expr)
    assert sorted(sample["metric"]["pod"] for sample in running) == sorted(sources.PODS)
    assert {sample["value"][1] for sample in running} == {"12"}
    for server in stack.servers:
        # Polled every 0.5 s by its exporter only: Prometheus scrapes the exporter, not the server.
        assert server.queue.reads > 2
        assert server.queue.produced > 0
    relayed = stack.prometheus.query('trtllm_request_success_total{finished_reason="stop"}')
    assert {sample["metric"]["model_name"] for sample in relayed} == {"undefined"}


def test_only_key_fingerprints_reach_prometheus(stack: Stack) -> None:
    values = stack.prometheus.api("label/key_fingerprint/values")
    assert values and all(re.fullmatch(r"sha256:[0-9a-f]{12}|none", value) for value in values), values


def test_serving_top_prints_the_stack_once(stack: Stack) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "serving", "top", "--prometheus", stack.prometheus.url, "--once"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"replicas ready\s+2 of 2", out), out
    assert re.search(r"queued requests\s+6\b", out), out
    assert re.search(r"KV cache \(fullest replica\)\s+75\.0%", out), out
    assert re.search(r"GPU utilisation \(mean\)\s+87\.0%", out), out
    assert re.search(r"TTFT p90\s+0\.\d\d s", out), out
    for pod in sources.PODS:
        assert pod in out
    assert "no data" not in out, out

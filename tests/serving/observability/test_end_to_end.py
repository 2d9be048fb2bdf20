"""The issue's "done when", offline: a real Prometheus scrapes every source, and every query works.

Debian's Prometheus (2.42) on loopback scrapes, for each of two replicas:
- the real exporter (`python -m serving.observability.exporter`, the sidecar's command), the
  single reader of a stand-in trtllm-serve's drained iteration-stats JSON, relaying its
  `/prometheus/metrics` (TensorRT-LLM 1.2.1's formats: the real server needs GPUs), and making the
  gateway's series from the real gateway: Debian's nginx with the rendered configuration (syslog
  line and stub_status on, as in the pod) in front of that stand-in, carrying real requests
  (200 with two keys, 401, 404) all through the test;
plus a dcgm-exporter stand-in and a kube-state-metrics stand-in (tests/support/metrics_sources.py),
and loads the rendered alert rules. Then every query of the dashboard, the alerts and `serving top`
must return data: a misspelt metric or label anywhere returns nothing and fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from serving.observability.alerts import AlertSettings, render_rules_yaml, stack_alerts
from serving.observability.dashboard import dashboard_expressions, render_dashboard
from serving.observability.gateway_log import ROUTE_LABELS
from serving.observability.queries import Scope, stack_queries
from serving.workload.gateway import api_key_fingerprint
from tests.support import metrics_sources as sources
from tests.support.nginx_runner import (
    RunningNginx,
    free_loopback_port,
    free_loopback_udp_port,
    metrics_overrides,
    start_nginx,
    wait_for_port,
)
from tests.support.prometheus_runner import RunningPrometheus, ScrapeTarget, start_prometheus

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
DATA_DEADLINE_SECONDS = 90.0
SCOPE = Scope()


# Two keys, as while rotating: requests/s per key needs more than one fingerprint to be a test.
KEYS = sources.TRAFFIC_KEYS


@dataclass
class Stack:
    prometheus: RunningPrometheus
    servers: list[sources.TrtllmServerStandIn]
    exporters: list[subprocess.Popen]
    gateways: list[RunningNginx]
    traffic: Traffic


class Traffic:
    """Real requests through every gateway until stopped: mostly 200s with either key, some 401s
    (no key) and 404s (an unknown path), and the probe; never a 5xx, so no alert fires."""

    def __init__(self, gateways: list[RunningNginx]) -> None:
        self.gateways = gateways
        self.stop = threading.Event()
        self.answers: dict[int, int] = {}
        self.thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        session = requests.Session()
        round_number = 0
        while not self.stop.is_set():
            for gateway in self.gateways:
                base = gateway.base_url
                calls = [
                    ("GET", "/v1/models", KEYS[0], None),
                    ("POST", "/v1/chat/completions", KEYS[1], {"stream": True}),
                    ("GET", "/health", None, None),
                ]
                if round_number % 3 == 0:
                    calls += [("GET", "/v1/models", None, None), ("GET", "/version?probe=1", KEYS[0], None)]
                for method, path, key, body in calls:
                    headers = {"Authorization": f"Bearer {key}"} if key else {}
                    try:
                        status = session.request(
                            method, base + path, headers=headers, json=body, timeout=5
                        ).status_code
                    except requests.RequestException:
                        status = 0
                    self.answers[status] = self.answers.get(status, 0) + 1
            round_number += 1
            self.stop.wait(0.2)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


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
    gateways: list[RunningNginx] = []
    traffic: Traffic | None = None
    prometheus: RunningPrometheus | None = None
    try:
        targets = []
        for pod in sources.PODS:
            server = sources.TrtllmServerStandIn()
            servers.append(server)
            syslog_port = free_loopback_udp_port()
            gateway = start_nginx(server.port, KEYS, settings_overrides=metrics_overrides(syslog_port))
            gateways.append(gateway)
            port = free_loopback_port()
            exporter = sources.start_exporter(server.base_url, port, syslog_port, gateway.status_url)
            exporters.append(exporter)
            wait_for_port(port, 20.0, exporter)
            # One target per pod: the exporter serves the server's and the gateway's series.
            targets.append(ScrapeTarget("trtllm-server", port, {"namespace": sources.NAMESPACE, "pod": pod}))
        traffic = Traffic(gateways)
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
        yield Stack(prometheus, servers, exporters, gateways, traffic)
    finally:
        if traffic is not None:
            traffic.close()
        if prometheus is not None:
            prometheus.stop()
        for gateway in gateways:
            gateway.stop()
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
    assert set(values) == {*(api_key_fingerprint(key) for key in KEYS), "none"}


def test_the_real_gateways_series_reach_prometheus_per_pod_with_bounded_labels(stack: Stack) -> None:
    assert set(stack.traffic.answers) == {200, 401, 404}, stack.traffic.answers
    counted = stack.prometheus.query("sum by (pod, route, status) (gateway_requests_total)")
    seen = {(s["metric"]["pod"], s["metric"]["route"], s["metric"]["status"]) for s in counted}
    for pod in sources.PODS:
        assert {
            (pod, "/v1/models", "200"),
            (pod, "/v1/chat/completions", "200"),
            (pod, "/health", "200"),
        } <= seen
        assert {(pod, "/v1/models", "401"), (pod, "other", "404")} <= seen
    assert set(stack.prometheus.api("label/route/values")) <= set(ROUTE_LABELS)
    # No path the client chose (/version, its query) became a label value anywhere.
    for label in ("route", "status", "key_fingerprint", "reason"):
        assert not [
            v for v in stack.prometheus.api(f"label/{label}/values") if "version" in v or "probe" in v
        ]
    in_flight = stack.prometheus.query("gateway_requests_in_flight")
    assert sorted(s["metric"]["pod"] for s in in_flight) == sorted(sources.PODS)
    assert {s["value"][1] for s in stack.prometheus.query("gateway_status_up")} == {"1"}


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

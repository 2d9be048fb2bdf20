"""The catalogue and the named queries: one test catches a misspelt metric name anywhere."""

from __future__ import annotations

import re

import pytest

from serving.observability import catalogue as c
from serving.observability import gateway_log
from serving.observability.alerts import AlertSettings, stack_alerts
from serving.observability.dashboard import dashboard_expressions, render_dashboard
from serving.observability.queries import Scope, metric_names, stack_queries
from serving.workload.gateway import GatewaySettings

QUERIES = stack_queries(Scope())


def test_every_query_names_only_catalogued_series() -> None:
    unknown = {query.name: metric_names(query.expr) - c.SAMPLE_NAMES for query in QUERIES.all()}
    assert {name: names for name, names in unknown.items() if names} == {}
    assert all(metric_names(query.expr) for query in QUERIES.all())


def test_every_dashboard_and_alert_expression_names_only_catalogued_series() -> None:
    expressions = dashboard_expressions(render_dashboard(Scope(), "prod"))
    expressions += [rule.expr for rule in stack_alerts(Scope(), AlertSettings())]
    assert [expr for expr in expressions if metric_names(expr) - c.SAMPLE_NAMES] == []


def test_the_name_check_sees_a_typo() -> None:
    expr = QUERIES.ttft_p90.expr.replace("first_token", "frist_token")
    assert metric_names(expr) == {"trtllm_time_to_frist_token_seconds_bucket"}


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (le, pod) (rate(a_bucket{x="b(c)", y=~"d|e"}[5m]))', {"a_bucket"}),
        ("max by (node) (a) and on (node) (b > 0) or vector(0)", {"a", "b"}),
        ("histogram_quantile(0.9, x) / ignoring (le) group_left () y offset 5m", {"x", "y"}),
        ("deriv(q[10m:1m]) > bool inf", {"q"}),
    ],
)
def test_metric_names_skips_functions_labels_keywords_and_numbers(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_query_names_are_their_attribute_names_and_unique() -> None:
    assert [query.name for query in QUERIES.all()] == list(QUERIES.__dataclass_fields__)


def test_queries_select_the_stacks_namespace_and_pods() -> None:
    scoped = stack_queries(Scope(namespace="team-llm"))
    assert 'namespace="team-llm"' in scoped.ttft_p90.expr
    assert 'pod=~"trtllm-serve-[a-z0-9]+-[a-z0-9]+"' in scoped.container_restarts.expr
    assert re.fullmatch("trtllm-serve-[a-z0-9]+-[a-z0-9]+", "trtllm-serve-5d8f7c9b4-abcde")


def test_the_5xx_ratio_and_traffic_leave_out_the_health_probe() -> None:
    # /health is 502 while the model loads: that is not a failing endpoint.
    assert 'route!="/health"' in QUERIES.error_ratio_5xx.expr
    assert 'route!="/health"' in QUERIES.request_rate.expr


def test_trtllm_request_series_are_the_five_of_1_2_1() -> None:
    assert [series.name for series in c.TRTLLM_REQUEST_SERIES] == [
        "trtllm_request_success_total",
        "trtllm_e2e_request_latency_seconds",
        "trtllm_time_to_first_token_seconds",
        "trtllm_time_per_output_token_seconds",
        "trtllm_request_queue_time_seconds",
    ]


def test_catalogue_names_are_unique_and_name_their_source() -> None:
    names = [name for series in c.CATALOGUE for name in series.sample_names]
    assert len(names) == len(set(names))
    assert all(series.source.reference for series in c.CATALOGUE)
    assert all(source.built for source in c.SOURCES)
    # The gateway's series are served by the pod's exporter, beside the server's.
    assert c.GATEWAY.port == c.SERVER.port and c.GATEWAY.job == c.SERVER.job


def test_the_catalogue_has_the_gateway_series_the_exporter_serves() -> None:
    served = {series.name: series.kind for series in gateway_log.EXPORTED_SERIES}
    catalogued = {series.name: series.kind for series in (*c.GATEWAY_SERIES, *c.GATEWAY_EXPORTER_SERIES)}
    assert catalogued == served
    assert all(series.source is c.GATEWAY for series in (*c.GATEWAY_SERIES, *c.GATEWAY_EXPORTER_SERIES))


def test_the_dcgm_counters_file_enables_every_gpu_series_including_ecc() -> None:
    text = c.render_dcgm_counters_csv()
    fields = [line.split(",")[0] for line in text.splitlines() if line and not line.startswith("#")]
    assert fields == [series.name for series in c.DCGM_SERIES]
    # Commented out in dcgm-exporter's default-counters.csv, needed by the memory-error alert.
    assert {"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"} == {
        series.name for series in c.DCGM_SERIES if not series.dcgm_default
    }
    for line in text.splitlines()[1:]:
        assert re.fullmatch(r"DCGM_FI_[A-Z_]+, (gauge|counter), [^,]+", line), line


def test_metrics_ports_are_distinct_and_neither_the_servers_nor_the_gateways() -> None:
    ports = [source.port for source in c.SCRAPED]
    assert len(ports) == len(set(ports))
    # trtllm-serve's 8000 stays loopback-only; the gateway's listener is what the Service exposes.
    for source in (c.SERVER, c.GATEWAY):
        assert source.port not in (8000, GatewaySettings().listen_port)

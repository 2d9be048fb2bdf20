"""The stack's Grafana dashboard, built with Grafana's own SDK (grafana-foundation-sdk).

Every panel's PromQL comes from `queries.py`. The dashboard asks for its Prometheus data source
through a `datasource` variable, so the same JSON imports into any Grafana (Amazon Managed
Grafana with an Amazon Managed Prometheus source, or a Grafana beside an in-cluster Prometheus).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

from serving.observability.queries import Query, Scope, StackQueries, stack_queries

DATASOURCE_VARIABLE = "datasource"
_DATASOURCE = DataSourceRef(type_val="prometheus", uid=f"${{{DATASOURCE_VARIABLE}}}")
# Grafana's grid is 24 columns wide.
_FULL, _HALF, _THIRD, _SIXTH = 24, 12, 8, 4
_GRAPH_HEIGHT, _STAT_HEIGHT = 8, 4


@dataclass(frozen=True)
class Target:
    query: Query
    legend: str = ""


def _targets(targets: Sequence[Target]) -> list[prometheus.Dataquery]:
    built = []
    for index, target in enumerate(targets):
        query = (
            prometheus.Dataquery()
            .expr(target.query.expr)
            .ref_id(chr(ord("A") + index))
            .datasource(_DATASOURCE)
        )
        built.append(query.legend_format(target.legend or "__auto"))
    return built


class _Panels:
    """Numbers the panels in order, so the JSON is the same on every run."""

    def __init__(self) -> None:
        self.next_id = 1

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def graph(self, title: str, targets: Sequence[Target], width: int = _HALF) -> timeseries.Panel:
        panel = (
            timeseries.Panel()
            .id(self._id())
            .title(title)
            .description(targets[0].query.description)
            .datasource(_DATASOURCE)
            .unit(targets[0].query.unit)
            .span(width)
            .height(_GRAPH_HEIGHT)
        )
        for target in _targets(targets):
            panel = panel.with_target(target)
        return panel

    def number(self, title: str, query: Query, width: int = _SIXTH) -> stat.Panel:
        return (
            stat.Panel()
            .id(self._id())
            .title(title)
            .description(query.description)
            .datasource(_DATASOURCE)
            .unit(query.unit)
            .span(width)
            .height(_STAT_HEIGHT)
            .with_target(_targets([Target(query)])[0].instant())
        )

    def row(self, title: str) -> dashboard.Row:
        return dashboard.Row(title).id(self._id())


def build_dashboard(scope: Scope, stack: str) -> dashboard.Dashboard:
    q: StackQueries = stack_queries(scope)
    panels = _Panels()
    by_pod = "{{pod}}"
    by_gpu = "{{Hostname}} GPU {{gpu}}"
    board = (
        dashboard.Dashboard(f"gpt-oss-120b on TensorRT-LLM ({stack})")
        .uid(f"gpt-oss-{stack}"[:40])
        .description(f"Server, gateway and GPU metrics of the {stack} stack (namespace {scope.namespace}).")
        .tags(["gpt-oss", "tensorrt-llm", stack])
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
        .with_variable(
            dashboard.DatasourceVariable(DATASOURCE_VARIABLE).label("Prometheus").type("prometheus")
        )
    )
    sections: list[tuple[str, list[Any]]] = [
        (
            "Service",
            [
                panels.number("Replicas ready", q.replicas_available),
                panels.number("Replicas desired", q.replicas_desired),
                panels.number("Requests/s", q.request_rate),
                panels.number("5xx ratio", q.error_ratio_5xx),
                panels.number("TTFT p90", q.ttft_p90),
                panels.number("Output tokens/s", q.output_tokens_per_second),
                panels.number("Queued requests", q.queued_requests, _THIRD),
                panels.number("KV cache, fullest replica", q.kv_cache_utilisation_max, _THIRD),
                panels.number("GPU utilisation, mean", q.gpu_utilisation, _THIRD),
            ],
        ),
        (
            "Requests",
            [
                panels.graph("Requests by status", [Target(q.request_rate_by_status, "{{status}}")]),
                panels.graph("5xx ratio", [Target(q.error_ratio_5xx, "5xx")]),
                panels.graph(
                    "Finished at the server", [Target(q.finished_rate_by_reason, "{{finished_reason}}")]
                ),
                panels.graph("Gateway latency p90", [Target(q.gateway_latency_p90_by_route, "{{route}}")]),
            ],
        ),
        (
            "Latency (server)",
            [
                panels.graph(
                    "Time to first token",
                    [Target(q.ttft_p50, "p50"), Target(q.ttft_p90, "p90"), Target(q.ttft_p99, "p99")],
                ),
                panels.graph(
                    "Time per output token",
                    [Target(q.tpot_p50, "p50"), Target(q.tpot_p90, "p90"), Target(q.tpot_p99, "p99")],
                ),
                panels.graph(
                    "End-to-end latency",
                    [
                        Target(q.e2e_latency_p50, "p50"),
                        Target(q.e2e_latency_p90, "p90"),
                        Target(q.e2e_latency_p99, "p99"),
                    ],
                ),
                panels.graph("Queue time p90", [Target(q.queue_time_p90, "p90")]),
            ],
        ),
        (
            "Engine (per replica)",
            [
                panels.graph("Running requests", [Target(q.running_requests_by_pod, by_pod)]),
                panels.graph("Queued requests", [Target(q.queued_requests_by_pod, by_pod)]),
                panels.graph(
                    "Queue growth (requests/s, 10 min fit)", [Target(q.queue_growth_by_pod, by_pod)]
                ),
                panels.graph("KV-cache utilisation", [Target(q.kv_cache_utilisation_by_pod, by_pod)]),
                panels.graph(
                    "Tokens/s",
                    [
                        Target(q.output_tokens_per_second_by_pod, "output {{pod}}"),
                        Target(q.prompt_tokens_per_second, "prompt, all replicas"),
                    ],
                ),
                panels.graph("Engine GPU memory", [Target(q.engine_gpu_memory_by_pod, by_pod)]),
                panels.graph(
                    "Gateway requests in flight", [Target(q.gateway_in_flight_by_pod, by_pod)], _FULL
                ),
            ],
        ),
        (
            "GPUs (per GPU)",
            [
                panels.graph("GPU utilisation", [Target(q.gpu_utilisation_by_gpu, by_gpu)], _THIRD),
                panels.graph("GPU memory used", [Target(q.gpu_memory_used_by_gpu, by_gpu)], _THIRD),
                panels.graph(
                    "GPU memory used (share)", [Target(q.gpu_memory_used_ratio_by_gpu, by_gpu)], _THIRD
                ),
                panels.graph("Power", [Target(q.gpu_power_by_gpu, by_gpu)], _THIRD),
                panels.graph("Temperature", [Target(q.gpu_temperature_by_gpu, by_gpu)], _THIRD),
                panels.graph("NVLink traffic", [Target(q.nvlink_bandwidth_by_gpu, by_gpu)], _THIRD),
                panels.graph("XID errors (latest code)", [Target(q.gpu_xid_by_gpu, by_gpu)], _THIRD),
                panels.graph(
                    "Uncorrectable memory errors", [Target(q.gpu_ecc_uncorrectable_by_gpu, by_gpu)], _THIRD
                ),
                panels.graph("Row remap failures", [Target(q.gpu_row_remap_failure_by_gpu, by_gpu)], _THIRD),
            ],
        ),
        (
            "Usage per API key (fingerprints, never keys)",
            [
                panels.graph("Requests/s per key", [Target(q.request_rate_by_key, "{{key_fingerprint}}")]),
                panels.graph(
                    "Refused or failed per key",
                    [Target(q.error_rate_by_key, "{{key_fingerprint}} {{status}}")],
                ),
            ],
        ),
        (
            "Kubernetes",
            [
                panels.graph("Pods ready", [Target(q.pod_ready, by_pod)], _THIRD),
                panels.graph(
                    "Restarts (15 min)", [Target(q.container_restarts, "{{pod}} {{container}}")], _THIRD
                ),
                panels.graph(
                    "Weights download running", [Target(q.weights_download_running, by_pod)], _THIRD
                ),
                panels.graph("GPU nodes ready", [Target(q.gpu_node_ready, "{{node}}")], _HALF),
                panels.graph("Metrics targets up", [Target(q.targets_up, "{{job}} {{instance}}")], _HALF),
            ],
        ),
    ]
    for title, row_panels in sections:
        board = board.with_row(panels.row(title))
        for panel in row_panels:
            board = board.with_panel(panel)
    return board


def render_dashboard(scope: Scope, stack: str) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (a plain dict)."""
    document: dict[str, Any] = json.loads(json.dumps(build_dashboard(scope, stack).build(), cls=JSONEncoder))
    return document


def render_dashboard_json(scope: Scope, stack: str) -> str:
    return json.dumps(render_dashboard(scope, stack), indent=2) + "\n"


def dashboard_expressions(document: dict[str, Any]) -> list[str]:
    """Every PromQL expression in a dashboard's JSON, rows' nested panels included."""
    found: list[str] = []
    for panel in document.get("panels", []):
        for target in panel.get("targets", []) or []:
            if target.get("expr"):
                found.append(target["expr"])
        found += dashboard_expressions({"panels": panel.get("panels", []) or []})
    return found

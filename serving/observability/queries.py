"""Every PromQL expression of the dashboard, the alerts and `serving top`, defined once.

`stack_queries(scope)` returns a `StackQueries`, one typed attribute per query, so a misspelt
query name is a mypy error and a misspelt metric name fails one test (`metric_names`, checked
against the catalogue, and the end-to-end test against a real Prometheus).

Rate windows are 5 minutes: four samples at a 1-minute scrape interval (Amazon Managed
Prometheus's scraper default) and twenty at 15 s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from serving.observability import catalogue as c


@dataclass(frozen=True)
class Scope:
    """Where the stack's series are: its namespace, Deployment and container names."""

    namespace: str = "gpt-oss"
    deployment: str = "trtllm-serve"
    server_container: str = "trtllm-serve"
    gateway_container: str = "api-gateway"
    weights_download_container: str = "download-weights"
    rate_window: str = "5m"

    @property
    def namespace_matcher(self) -> str:
        return f'namespace="{self.namespace}"'

    @property
    def pods_matcher(self) -> str:
        # ReplicaSet pods are named <deployment>-<template hash>-<suffix>.
        return f'namespace="{self.namespace}", pod=~"{self.deployment}-[a-z0-9]+-[a-z0-9]+"'


@dataclass(frozen=True)
class Query:
    name: str
    expr: str
    description: str
    unit: str  # Grafana's unit id: s, reqps, percentunit, percent, bytes, watt, celsius, short


@dataclass(frozen=True)
class StackQueries:
    # Kubernetes
    replicas_available: Query
    replicas_desired: Query
    container_restarts: Query
    pod_ready: Query
    weights_download_running: Query
    gpu_node_ready: Query
    targets_up: Query
    # The gateway (every request, with its status and key fingerprint)
    request_rate: Query
    request_rate_by_status: Query
    error_ratio_5xx: Query
    request_rate_by_key: Query
    error_rate_by_key: Query
    gateway_in_flight_by_pod: Query
    gateway_latency_p90_by_route: Query
    # The server's request series
    finished_rate_by_reason: Query
    ttft_p50: Query
    ttft_p90: Query
    ttft_p99: Query
    tpot_p50: Query
    tpot_p90: Query
    tpot_p99: Query
    e2e_latency_p50: Query
    e2e_latency_p90: Query
    e2e_latency_p99: Query
    queue_time_p90: Query
    # The server's iteration stats
    running_requests_by_pod: Query
    queued_requests_by_pod: Query
    queued_requests: Query
    queue_growth_by_pod: Query
    kv_cache_utilisation_by_pod: Query
    kv_cache_utilisation_max: Query
    output_tokens_per_second: Query
    output_tokens_per_second_by_pod: Query
    prompt_tokens_per_second: Query
    engine_gpu_memory_by_pod: Query
    # The GPUs (dcgm-exporter)
    gpu_utilisation: Query
    gpu_utilisation_by_gpu: Query
    gpu_memory_used_by_gpu: Query
    gpu_memory_used_ratio_by_gpu: Query
    gpu_power_by_gpu: Query
    gpu_temperature_by_gpu: Query
    gpu_xid_by_gpu: Query
    gpu_ecc_uncorrectable_by_gpu: Query
    gpu_row_remap_failure_by_gpu: Query
    nvlink_bandwidth_by_gpu: Query

    def all(self) -> tuple[Query, ...]:
        return tuple(getattr(self, item.name) for item in fields(self))


def _histogram_quantile(quantile: float, metric: str, scope: Scope, by: str = "") -> str:
    group = f"le, {by}" if by else "le"
    return (
        f"histogram_quantile({quantile}, sum by ({group}) "
        f"(rate({metric}_bucket{{{scope.namespace_matcher}}}[{scope.rate_window}])))"
    )


def _per_gpu(aggregation: str, inner: str) -> str:
    return f"{aggregation} by (Hostname, gpu) ({inner})"


def stack_queries(scope: Scope) -> StackQueries:
    ns = scope.namespace_matcher
    pods = scope.pods_matcher
    window = scope.rate_window
    deployment = f'{ns}, deployment="{scope.deployment}"'
    # /health is the load balancer's and kubelet's probe: 502 while the model loads, not traffic.
    traffic = f'{ns}, route!="/health"'
    jobs = "|".join(source.job for source in c.SCRAPED)

    def q(name: str, expr: str, description: str, unit: str = "short") -> Query:
        return Query(name, expr, description, unit)

    def quantiles(prefix: str, metric: str, what: str) -> dict[str, Query]:
        return {
            f"{prefix}_p{int(quantile * 100)}": q(
                f"{prefix}_p{int(quantile * 100)}",
                _histogram_quantile(quantile, metric, scope),
                f"{what}, {int(quantile * 100)}th percentile over {window}",
                "s",
            )
            for quantile in (0.5, 0.9, 0.99)
        }

    return StackQueries(
        replicas_available=q(
            "replicas_available",
            f"sum(kube_deployment_status_replicas_available{{{deployment}}})",
            "Server replicas available (Ready) now",
        ),
        replicas_desired=q(
            "replicas_desired",
            f"sum(kube_deployment_spec_replicas{{{deployment}}})",
            "Server replicas the Deployment asks for",
        ),
        container_restarts=q(
            "container_restarts",
            f"sum by (pod, container) (increase(kube_pod_container_status_restarts_total{{{pods}}}[15m]))",
            "Container restarts of the server pods in the last 15 minutes",
        ),
        pod_ready=q(
            "pod_ready",
            f'max by (pod) (kube_pod_status_ready{{{pods}, condition="true"}})',
            "1 for each server pod that is Ready, 0 for one that is not",
        ),
        weights_download_running=q(
            "weights_download_running",
            f'max by (pod) (kube_pod_init_container_status_running{{{pods}, container="{scope.weights_download_container}"}})',
            "1 while a pod's weights download (init container) runs",
        ),
        gpu_node_ready=q(
            "gpu_node_ready",
            'max by (node) (kube_node_status_condition{condition="Ready", status="true"}) '
            'and on (node) (max by (node) (kube_node_status_capacity{resource="nvidia_com_gpu"}) > 0)',
            "1 for each GPU node that is Ready, 0 for one that is not",
        ),
        targets_up=q(
            "targets_up",
            f'up{{job=~"{jobs}"}}',
            "1 for each metrics target whose latest scrape succeeded",
        ),
        request_rate=q(
            "request_rate",
            f"sum(rate(gateway_requests_total{{{traffic}}}[{window}]))",
            "Requests per second through the gateway (probes excluded)",
            "reqps",
        ),
        request_rate_by_status=q(
            "request_rate_by_status",
            f"sum by (status) (rate(gateway_requests_total{{{traffic}}}[{window}]))",
            "Requests per second by HTTP status",
            "reqps",
        ),
        error_ratio_5xx=q(
            "error_ratio_5xx",
            f'(sum(rate(gateway_requests_total{{{traffic}, status=~"5.."}}[{window}])) or vector(0)) '
            f"/ sum(rate(gateway_requests_total{{{traffic}}}[{window}]))",
            "Share of requests answered with a 5xx status",
            "percentunit",
        ),
        request_rate_by_key=q(
            "request_rate_by_key",
            f'sum by (key_fingerprint) (rate(gateway_requests_total{{{traffic}, key_fingerprint!="none"}}[{window}]))',
            "Requests per second per API-key fingerprint",
            "reqps",
        ),
        error_rate_by_key=q(
            "error_rate_by_key",
            f'sum by (key_fingerprint, status) (rate(gateway_requests_total{{{traffic}, status!~"2.."}}[{window}]))',
            "Refused or failed requests per second per key fingerprint ('none': no valid key) and status",
            "reqps",
        ),
        gateway_in_flight_by_pod=q(
            "gateway_in_flight_by_pod",
            f"sum by (pod) (gateway_requests_in_flight{{{ns}}})",
            "Requests the gateway of each replica is serving now",
        ),
        gateway_latency_p90_by_route=q(
            "gateway_latency_p90_by_route",
            f"histogram_quantile(0.9, sum by (le, route) "
            f"(rate(gateway_request_duration_seconds_bucket{{{traffic}}}[{window}])))",
            "Gateway response time by route, 90th percentile",
            "s",
        ),
        finished_rate_by_reason=q(
            "finished_rate_by_reason",
            f"sum by (finished_reason) (rate(trtllm_request_success_total{{{ns}}}[{window}]))",
            "Requests the server finished per second, by finished_reason",
            "reqps",
        ),
        **quantiles("ttft", "trtllm_time_to_first_token_seconds", "Time to first token"),
        **quantiles("tpot", "trtllm_time_per_output_token_seconds", "Time per output token"),
        **quantiles("e2e_latency", "trtllm_e2e_request_latency_seconds", "End-to-end latency at the server"),
        queue_time_p90=q(
            "queue_time_p90",
            _histogram_quantile(0.9, "trtllm_request_queue_time_seconds", scope),
            f"Time requests waited to be scheduled, 90th percentile over {window}",
            "s",
        ),
        running_requests_by_pod=q(
            "running_requests_by_pod",
            f"sum by (pod) (trtllm_iteration_running_requests{{{ns}}})",
            "Requests in the engine's batch, per replica",
        ),
        queued_requests_by_pod=q(
            "queued_requests_by_pod",
            f"sum by (pod) (trtllm_iteration_queued_requests{{{ns}}})",
            "Requests waiting for the batch, per replica",
        ),
        queued_requests=q(
            "queued_requests",
            f"sum(trtllm_iteration_queued_requests{{{ns}}})",
            "Requests waiting for a batch, all replicas",
        ),
        queue_growth_by_pod=q(
            "queue_growth_by_pod",
            f"sum by (pod) (deriv(trtllm_iteration_queued_requests{{{ns}}}[10m]))",
            "How fast each replica's queue grows, requests per second (linear fit over 10 minutes)",
        ),
        kv_cache_utilisation_by_pod=q(
            "kv_cache_utilisation_by_pod",
            f"max by (pod) (trtllm_iteration_kv_cache_blocks_used{{{ns}}} "
            f"/ trtllm_iteration_kv_cache_blocks_max{{{ns}}})",
            "Share of KV-cache blocks in use, per replica",
            "percentunit",
        ),
        kv_cache_utilisation_max=q(
            "kv_cache_utilisation_max",
            f"max(trtllm_iteration_kv_cache_blocks_used{{{ns}}} / trtllm_iteration_kv_cache_blocks_max{{{ns}}})",
            "Share of KV-cache blocks in use, fullest replica",
            "percentunit",
        ),
        output_tokens_per_second=q(
            "output_tokens_per_second",
            f"sum(rate(trtllm_iteration_generated_tokens_total{{{ns}}}[{window}]))",
            "Output tokens per second, all replicas (from iteration stats)",
        ),
        output_tokens_per_second_by_pod=q(
            "output_tokens_per_second_by_pod",
            f"sum by (pod) (rate(trtllm_iteration_generated_tokens_total{{{ns}}}[{window}]))",
            "Output tokens per second, per replica",
        ),
        prompt_tokens_per_second=q(
            "prompt_tokens_per_second",
            f"sum(rate(trtllm_iteration_context_tokens_total{{{ns}}}[{window}]))",
            "Prompt tokens prefilled per second, all replicas",
        ),
        engine_gpu_memory_by_pod=q(
            "engine_gpu_memory_by_pod",
            f"sum by (pod) (trtllm_iteration_gpu_memory_bytes{{{ns}}})",
            "GPU memory the engine reports in use, per replica",
            "bytes",
        ),
        gpu_utilisation=q(
            "gpu_utilisation",
            "avg(DCGM_FI_DEV_GPU_UTIL)",
            "GPU utilisation, mean over every GPU",
            "percent",
        ),
        gpu_utilisation_by_gpu=q(
            "gpu_utilisation_by_gpu",
            _per_gpu("avg", "DCGM_FI_DEV_GPU_UTIL"),
            "GPU utilisation per GPU",
            "percent",
        ),
        gpu_memory_used_by_gpu=q(
            "gpu_memory_used_by_gpu",
            _per_gpu("max", "DCGM_FI_DEV_FB_USED") + " * 1048576",
            "GPU memory used per GPU (dcgm-exporter reports MiB)",
            "bytes",
        ),
        gpu_memory_used_ratio_by_gpu=q(
            "gpu_memory_used_ratio_by_gpu",
            _per_gpu("max", "DCGM_FI_DEV_FB_USED")
            + " / ("
            + _per_gpu("max", "DCGM_FI_DEV_FB_USED")
            + " + "
            + _per_gpu("max", "DCGM_FI_DEV_FB_FREE")
            + ")",
            "Share of GPU memory used per GPU",
            "percentunit",
        ),
        gpu_power_by_gpu=q(
            "gpu_power_by_gpu", _per_gpu("max", "DCGM_FI_DEV_POWER_USAGE"), "Power draw per GPU", "watt"
        ),
        gpu_temperature_by_gpu=q(
            "gpu_temperature_by_gpu",
            _per_gpu("max", "DCGM_FI_DEV_GPU_TEMP"),
            "GPU temperature per GPU",
            "celsius",
        ),
        gpu_xid_by_gpu=q(
            "gpu_xid_by_gpu",
            _per_gpu("max", "DCGM_FI_DEV_XID_ERRORS"),
            "Latest XID error code per GPU (0: none)",
        ),
        gpu_ecc_uncorrectable_by_gpu=q(
            "gpu_ecc_uncorrectable_by_gpu",
            _per_gpu("sum", "increase(DCGM_FI_DEV_ECC_DBE_VOL_TOTAL[10m])")
            + " + "
            + _per_gpu("sum", "increase(DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS[10m])"),
            "Uncorrectable ECC errors and rows remapped for them per GPU, last 10 minutes",
        ),
        gpu_row_remap_failure_by_gpu=q(
            "gpu_row_remap_failure_by_gpu",
            _per_gpu("max", "DCGM_FI_DEV_ROW_REMAP_FAILURE"),
            "1 for a GPU whose memory row remapping failed",
        ),
        nvlink_bandwidth_by_gpu=q(
            "nvlink_bandwidth_by_gpu",
            _per_gpu("sum", f"rate(DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL[{window}])"),
            "NVLink traffic per GPU, dcgm-exporter's counter per second (its unit is the driver's)",
        ),
    )


# PromQL words that look like metric names but are not (keywords, modifiers, literals).
_PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
    | {"inf", "nan", "atan2"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACES = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (not functions, keywords, labels or numbers)."""
    text = _STRING.sub('""', expr)
    text = _BRACES.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _PROMQL_WORDS:
            continue
        names.add(name)
    return names

"""TensorRT-LLM 1.2.1's iteration stats (the JSON at `/metrics`) turned into Prometheus series.

With `enable_iter_perf_stats: true`, `GET /metrics` on `trtllm-serve` returns a JSON array with one
object per engine iteration since the previous read, and the read **drains** that queue: a second
reader would see other iterations, never the same ones. So exactly one reader, the pod's exporter
(`exporter.py`), polls it and turns it into gauges (the latest iteration) and counters (summed
over every drained iteration).

The field names are TensorRT-LLM's own JSON serialisation of `IterationStats`
(`cpp/tensorrt_llm/executor/jsonSerialization.cpp`, `NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE`):
top level `iter`, `iterLatencyMS`, `numActiveRequests`, `numQueuedRequests`, `gpuMemUsage`
(bytes), `kvCacheStats` {`maxNumBlocks`, `freeNumBlocks`, `usedNumBlocks`, `tokensPerBlock`,
`allocTotalBlocks`, `allocNewBlocks`, `reusedBlocks`, `missedBlocks`, `cacheHitRate`} and
`inflightBatchingStats` {`numScheduledRequests`, `numContextRequests`, `numGenRequests`,
`numPausedRequests`, `numCtxTokens`, `microBatchId`, `avgNumDecodedTokensPerIter`}. The PyTorch
backend fills the same C++ `IterationStats` object and serialises it with that function; the
endpoint (`get_iteration_stats` in `tensorrt_llm/serve/openai_server.py`) returns the list as is.

Standard library only: this module runs inside the exporter sidecar.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any


class IterationStatsError(ValueError):
    """The server answered something that is not a list of iteration-stats objects."""


@dataclass(frozen=True)
class ExportedMetric:
    """One series the exporter serves: its name, Prometheus type, help text and JSON origin."""

    name: str
    kind: str  # "gauge" or "counter"
    help: str
    json_field: str  # where it comes from, for the catalogue and the docs


RUNNING_REQUESTS = ExportedMetric(
    "trtllm_iteration_running_requests",
    "gauge",
    "Requests in the engine's batch at the latest iteration (0 when no iteration ran since the last poll).",
    "numActiveRequests",
)
QUEUED_REQUESTS = ExportedMetric(
    "trtllm_iteration_queued_requests",
    "gauge",
    "Requests waiting to enter the batch at the latest iteration (0 when no iteration ran since the last poll).",
    "numQueuedRequests",
)
PAUSED_REQUESTS = ExportedMetric(
    "trtllm_iteration_paused_requests",
    "gauge",
    "Requests paused (evicted from the batch) at the latest iteration.",
    "inflightBatchingStats.numPausedRequests",
)
KV_CACHE_BLOCKS_MAX = ExportedMetric(
    "trtllm_iteration_kv_cache_blocks_max",
    "gauge",
    "KV-cache blocks the pool holds.",
    "kvCacheStats.maxNumBlocks",
)
KV_CACHE_BLOCKS_FREE = ExportedMetric(
    "trtllm_iteration_kv_cache_blocks_free",
    "gauge",
    "KV-cache blocks free at the latest iteration.",
    "kvCacheStats.freeNumBlocks",
)
KV_CACHE_BLOCKS_USED = ExportedMetric(
    "trtllm_iteration_kv_cache_blocks_used",
    "gauge",
    "KV-cache blocks in use at the latest iteration.",
    "kvCacheStats.usedNumBlocks",
)
KV_CACHE_HIT_RATE = ExportedMetric(
    "trtllm_iteration_kv_cache_hit_rate",
    "gauge",
    "Share of looked-up KV blocks found in the reuse cache (prefix hits), as the engine reports it.",
    "kvCacheStats.cacheHitRate",
)
GPU_MEMORY_BYTES = ExportedMetric(
    "trtllm_iteration_gpu_memory_bytes",
    "gauge",
    "GPU memory the engine reports in use at the latest iteration, in bytes.",
    "gpuMemUsage",
)
ITERATION_LATENCY_SECONDS = ExportedMetric(
    "trtllm_iteration_latency_seconds",
    "gauge",
    "Duration of the latest engine iteration, in seconds.",
    "iterLatencyMS",
)
ITERATIONS_TOTAL = ExportedMetric(
    "trtllm_iterations_total",
    "counter",
    "Engine iterations read from the server since the exporter started.",
    "(one per array element)",
)
GENERATED_TOKENS_TOTAL = ExportedMetric(
    "trtllm_iteration_generated_tokens_total",
    "counter",
    "Output tokens decoded, summed over iterations: generation-phase requests times tokens decoded per "
    "request (1 without speculative decoding). Approximate: a prefill's first token is not counted.",
    "inflightBatchingStats.numGenRequests x avgNumDecodedTokensPerIter",
)
CONTEXT_TOKENS_TOTAL = ExportedMetric(
    "trtllm_iteration_context_tokens_total",
    "counter",
    "Prompt tokens prefilled, summed over iterations.",
    "inflightBatchingStats.numCtxTokens",
)
SOURCE_UP = ExportedMetric(
    "trtllm_iteration_stats_up",
    "gauge",
    "1 if the latest poll of the server's iteration stats succeeded, else 0 (the server loads or is down).",
    "(exporter)",
)
LAST_SUCCESS_TIMESTAMP = ExportedMetric(
    "trtllm_iteration_stats_last_success_timestamp_seconds",
    "gauge",
    "Unix time of the latest successful poll of the iteration stats.",
    "(exporter)",
)
POLL_ERRORS_TOTAL = ExportedMetric(
    "trtllm_iteration_stats_poll_errors_total",
    "counter",
    "Polls of the iteration stats that failed (connection refused while the model loads, bad JSON).",
    "(exporter)",
)
REQUEST_METRICS_UP = ExportedMetric(
    "trtllm_request_metrics_up",
    "gauge",
    "1 if the server's /prometheus/metrics answered when this scrape relayed it, else 0.",
    "(exporter)",
)

# Gauges that describe what the engine is doing now; counters that add up every drained iteration.
LATEST_GAUGES = (
    RUNNING_REQUESTS,
    QUEUED_REQUESTS,
    PAUSED_REQUESTS,
    KV_CACHE_BLOCKS_MAX,
    KV_CACHE_BLOCKS_FREE,
    KV_CACHE_BLOCKS_USED,
    KV_CACHE_HIT_RATE,
    GPU_MEMORY_BYTES,
    ITERATION_LATENCY_SECONDS,
)
EXPORTED_METRICS = (
    *LATEST_GAUGES,
    ITERATIONS_TOTAL,
    GENERATED_TOKENS_TOTAL,
    CONTEXT_TOKENS_TOTAL,
    SOURCE_UP,
    LAST_SUCCESS_TIMESTAMP,
    POLL_ERRORS_TOTAL,
    REQUEST_METRICS_UP,
)

# An empty drain means the engine ran no iteration since the last poll: its loop blocks while it
# has no request, so nothing runs or waits. Occupancy then drops to 0; the KV pool and memory keep
# their last value (blocks stay allocated for prefix reuse).
ZEROED_WHEN_IDLE = (RUNNING_REQUESTS, QUEUED_REQUESTS, PAUSED_REQUESTS)


@dataclass(frozen=True)
class ExporterState:
    """What the exporter serves: the latest gauges and the running totals."""

    gauges: Mapping[str, float] = field(default_factory=dict)
    iterations_total: int = 0
    generated_tokens_total: float = 0.0
    context_tokens_total: float = 0.0
    source_up: bool = False
    last_success_timestamp: float | None = None
    poll_errors_total: int = 0


def parse_iterations(payload: Any) -> list[Mapping[str, Any]]:
    """The array of iteration objects, in iteration order; refuses anything else."""
    if not isinstance(payload, list):
        raise IterationStatsError(
            f"expected a JSON array of iteration stats, got {type(payload).__name__} "
            "(is enable_iter_perf_stats set, and is this trtllm-serve's /metrics?)"
        )
    for position, item in enumerate(payload):
        if not isinstance(item, dict):
            raise IterationStatsError(f"element {position} is a {type(item).__name__}, not an object")
    # The queue is in order already; sorting by `iter` keeps "latest" right if it ever is not.
    return sorted(payload, key=lambda item: _number(item.get("iter")) or 0.0)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _nested(item: Mapping[str, Any], path: str) -> float | None:
    value: Any = item
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return _number(value)


def latest_gauges(iteration: Mapping[str, Any]) -> dict[str, float]:
    """The gauges one iteration object gives; fields it lacks are left out, not invented."""
    values: dict[str, float] = {}
    for metric in LATEST_GAUGES:
        value = _nested(iteration, metric.json_field)
        if value is None:
            continue
        if metric is ITERATION_LATENCY_SECONDS:
            value /= 1000.0
        values[metric.name] = value
    return values


def _generated_tokens(iteration: Mapping[str, Any]) -> float:
    generating = _nested(iteration, "inflightBatchingStats.numGenRequests") or 0.0
    per_request = _nested(iteration, "inflightBatchingStats.avgNumDecodedTokensPerIter") or 0.0
    # Without speculative decoding the engine may leave the average at 0: one token each then.
    return generating * max(per_request, 1.0)


def advance(state: ExporterState, iterations: Sequence[Mapping[str, Any]], now: float) -> ExporterState:
    """The state after one successful poll that drained `iterations`."""
    gauges = dict(state.gauges)
    if iterations:
        gauges.update(latest_gauges(iterations[-1]))
    else:
        for metric in ZEROED_WHEN_IDLE:
            gauges[metric.name] = 0.0
    return replace(
        state,
        gauges=gauges,
        iterations_total=state.iterations_total + len(iterations),
        generated_tokens_total=state.generated_tokens_total + sum(_generated_tokens(i) for i in iterations),
        context_tokens_total=state.context_tokens_total
        + sum(_nested(i, "inflightBatchingStats.numCtxTokens") or 0.0 for i in iterations),
        source_up=True,
        last_success_timestamp=now,
    )


def failed(state: ExporterState) -> ExporterState:
    """The state after a failed poll: gauges stay as last seen, `up` says they are stale."""
    return replace(state, source_up=False, poll_errors_total=state.poll_errors_total + 1)


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value == int(value) and abs(value) < 2**53 else repr(value)


def _family(metric: ExportedMetric, value: float) -> str:
    return f"# HELP {metric.name} {metric.help}\n# TYPE {metric.name} {metric.kind}\n{metric.name} {_format_value(value)}\n"


def render_exposition(state: ExporterState, request_metrics_up: bool | None = None) -> str:
    """Prometheus text format (0.0.4) of the state; `request_metrics_up` None leaves that series out."""
    families = [
        _family(metric, state.gauges[metric.name]) for metric in LATEST_GAUGES if metric.name in state.gauges
    ]
    families += [
        _family(ITERATIONS_TOTAL, state.iterations_total),
        _family(GENERATED_TOKENS_TOTAL, state.generated_tokens_total),
        _family(CONTEXT_TOKENS_TOTAL, state.context_tokens_total),
        _family(SOURCE_UP, 1.0 if state.source_up else 0.0),
        _family(POLL_ERRORS_TOTAL, state.poll_errors_total),
    ]
    if state.last_success_timestamp is not None:
        families.append(_family(LAST_SUCCESS_TIMESTAMP, state.last_success_timestamp))
    if request_metrics_up is not None:
        families.append(_family(REQUEST_METRICS_UP, 1.0 if request_metrics_up else 0.0))
    return "".join(families)

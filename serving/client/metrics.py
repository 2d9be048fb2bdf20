"""Benchmark metrics: pure functions from per-request timings to the summary.

Two families, so the numbers compare with both references (FACTS.md, "Benchmark metric
definitions"):

Baseten's (the template's table):
- latency = request start to end of stream;
- TTFT = start to the first streamed chunk with text;
- perceived tokens/s of one request = (prompt tokens + completion tokens) / latency;
- average perceived tokens/s = mean of that over the successful requests;
- average overall throughput = average perceived tokens/s x concurrency.

vLLM's (`benchmarks/serve.py`):
- TPOT = (latency - TTFT) / (completion tokens - 1), for requests with more than one token;
- ITL = gaps between consecutive text-carrying chunks, pooled over all requests;
- output throughput = all completion tokens / wall time of the run; total token throughput
  likewise with prompt + completion tokens; request throughput = successful requests / wall time.

TTFT here is the first text of any kind (reasoning or answer). gpt-oss streams reasoning first;
the time to the first answer token (`delta.content`), which is what Baseten's script measures for
a reasoning model, is reported beside it as `ttft_content_s`.

Percentiles use linear interpolation between closest ranks (Hyndman and Fan's method 7, numpy's
default, which vLLM's benchmark uses): for sorted values x[0..n-1] and p in [0, 100], rank
r = p/100 x (n-1), result x[floor r] + (r - floor r) x (x[floor r + 1] - x[floor r]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

PERCENTILES = (50, 90, 99)


@dataclass
class RequestRecord:
    """One measured request, relative times in seconds. Token counts are the server's usage."""

    ttft_s: float | None
    latency_s: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    error: str | None = None
    ttft_content_s: float | None = None
    # Gaps between consecutive text-carrying chunks of this request.
    itl_s: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("itl_s")
        data["tpot_s"] = tpot(self)
        data["perceived_tokens_per_s"] = perceived_tokens_per_second(self) if self.ok else None
        return data


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolation percentile (method 7, see module docstring)."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile p={p} must lie in [0, 100]")
    ordered = sorted(values)
    rank = p / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (rank - low) * (ordered[high] - ordered[low])


def distribution(values: Sequence[float]) -> dict[str, float | None]:
    """mean, p50, p90, p99 (None when there are no values)."""
    keys = ["mean", *(f"p{p}" for p in PERCENTILES)]
    if not values:
        return dict.fromkeys(keys)
    result: dict[str, float | None] = {"mean": sum(values) / len(values)}
    for p in PERCENTILES:
        result[f"p{p}"] = percentile(values, p)
    return result


def tpot(record: RequestRecord) -> float | None:
    """Time per output token after the first; None when it is undefined."""
    if (
        not record.ok
        or record.completion_tokens is None
        or record.completion_tokens < 2
        or record.ttft_s is None
        or record.latency_s is None
    ):
        return None
    return (record.latency_s - record.ttft_s) / (record.completion_tokens - 1)


def perceived_tokens_per_second(record: RequestRecord) -> float:
    """Baseten's per-request rate: (prompt + completion tokens) / latency."""
    if record.latency_s is None or record.latency_s <= 0:
        raise ValueError(f"latency {record.latency_s!r} must be positive")
    return ((record.prompt_tokens or 0) + (record.completion_tokens or 0)) / record.latency_s


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(records: Sequence[RequestRecord], wall_time_s: float, concurrency: int) -> dict[str, Any]:
    """The `summary` object of the JSON report. Averages are over successful requests only."""
    if wall_time_s <= 0:
        raise ValueError(f"wall time {wall_time_s} s must be positive")
    ok = [r for r in records if r.ok]
    latencies = [r.latency_s for r in ok if r.latency_s is not None]
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    content_ttfts = [r.ttft_content_s for r in ok if r.ttft_content_s is not None]
    tpots = [t for t in (tpot(r) for r in ok) if t is not None]
    itls = [gap for r in ok for gap in r.itl_s]
    perceived = [perceived_tokens_per_second(r) for r in ok]
    prompt_total = sum(r.prompt_tokens or 0 for r in ok)
    completion_total = sum(r.completion_tokens or 0 for r in ok)
    average_perceived = _mean(perceived)
    return {
        "requests_ok": len(ok),
        "requests_failed": len(records) - len(ok),
        "concurrency": concurrency,
        "wall_time_s": wall_time_s,
        # The template's four (Baseten's definitions).
        "average_latency_s": _mean(latencies),
        "average_ttft_s": _mean(ttfts),
        "average_ttft_content_s": _mean(content_ttfts),
        "average_perceived_tokens_per_second": average_perceived,
        "average_overall_throughput": None if average_perceived is None else average_perceived * concurrency,
        # Over the wall time of the run (vLLM's definitions).
        "output_throughput_tokens_per_s": completion_total / wall_time_s,
        "total_token_throughput_tokens_per_s": (prompt_total + completion_total) / wall_time_s,
        "request_throughput_per_s": len(ok) / wall_time_s,
        "prompt_tokens_total": prompt_total,
        "completion_tokens_total": completion_total,
        "average_prompt_tokens": _mean([r.prompt_tokens or 0 for r in ok]),
        "average_completion_tokens": _mean([r.completion_tokens or 0 for r in ok]),
        # Distributions: mean, p50, p90, p99.
        "ttft_s": distribution(ttfts),
        "ttft_content_s": distribution(content_ttfts),
        "tpot_s": distribution(tpots),
        "itl_s": distribution(itls),
        "latency_s": distribution(latencies),
    }


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def template_table(summary: dict[str, Any], scenario: str) -> str:
    """The template's performance table, filled in (Markdown)."""
    rows = [
        ("Average latency", f"{_fmt(summary['average_latency_s'], 2)} s"),
        ("Average TTFT (first token, reasoning or answer)", f"{_fmt(summary['average_ttft_s'], 3)} s"),
        ("Average time to first answer token", f"{_fmt(summary['average_ttft_content_s'], 3)} s"),
        ("Average perceived tokens per second", _fmt(summary["average_perceived_tokens_per_second"], 1)),
        ("Average overall throughput (tokens/s)", _fmt(summary["average_overall_throughput"], 1)),
    ]
    lines = [f"Scenario: {scenario}", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def distribution_table(summary: dict[str, Any]) -> str:
    """Standard serving metrics (ms) and run throughput, Markdown."""
    lines = ["| metric | mean | p50 | p90 | p99 |", "| --- | --- | --- | --- | --- |"]
    for key, label in (
        ("ttft_s", "TTFT (ms)"),
        ("ttft_content_s", "time to first answer token (ms)"),
        ("tpot_s", "TPOT (ms)"),
        ("itl_s", "ITL (ms)"),
        ("latency_s", "end-to-end latency (ms)"),
    ):
        dist = summary[key]
        cells = [_fmt(None if dist[k] is None else dist[k] * 1000, 1) for k in ("mean", "p50", "p90", "p99")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| run | value |",
        "| --- | --- |",
        f"| requests ok / failed | {summary['requests_ok']} / {summary['requests_failed']} |",
        f"| wall time | {_fmt(summary['wall_time_s'], 2)} s |",
        f"| output token throughput | {_fmt(summary['output_throughput_tokens_per_s'], 1)} tokens/s |",
        f"| total token throughput | {_fmt(summary['total_token_throughput_tokens_per_s'], 1)} tokens/s |",
        f"| request throughput | {_fmt(summary['request_throughput_per_s'], 3)} requests/s |",
        f"| average prompt / completion tokens | {_fmt(summary['average_prompt_tokens'], 0)} / "
        f"{_fmt(summary['average_completion_tokens'], 0)} |",
    ]
    return "\n".join(lines)

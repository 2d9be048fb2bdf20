"""`python -m serving top`: the stack at a glance in a terminal, from its Prometheus.

Runs the same named queries as the dashboard and the alerts (`queries.py`) through the
Prometheus HTTP API (`GET <url>/api/v1/query`) and prints replicas ready, requests/s, 5xx ratio,
queue, TTFT p90, output tokens/s, KV-cache and GPU utilisation, and a line per replica; it
refreshes every `--interval` seconds until Ctrl-C, or prints once with `--once`.

Any Prometheus URL works (a port-forwarded in-cluster Prometheus:
`kubectl port-forward svc/prometheus 9090`, then `--prometheus http://127.0.0.1:9090`). For
Amazon Managed Service for Prometheus, pass the workspace's endpoint
(`https://aps-workspaces.<region>.amazonaws.com/workspaces/<id>`) with `--sigv4 --region R`:
requests are signed with botocore's SigV4 (service `aps`) and the usual AWS credential chain,
if botocore is installed (it is optional: `pip install botocore`).

Exit codes: 0 after Ctrl-C or a `--once` that found data, 1 when Prometheus cannot be reached or
refuses the query, 2 for bad arguments, 3 when it answers but holds no data for the stack.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from serving.observability.queries import Query, Scope, StackQueries, stack_queries

QUERY_TIMEOUT_SECONDS = 10.0
DEFAULT_INTERVAL_SECONDS = 5.0
CLEAR_SCREEN = "\033[H\033[2J"
EXIT_UNREACHABLE = 1
EXIT_NO_DATA = 3


class PrometheusError(RuntimeError):
    """Prometheus could not be reached or refused the query: one line, for the terminal."""


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


class PrometheusClient:
    def __init__(
        self, url: str, *, sigv4_region: str | None = None, session: requests.Session | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.session = session or requests.Session()
        self._sign = _sigv4_signer(sigv4_region) if sigv4_region else None

    def query(self, expr: str) -> list[Sample]:
        """An instant query's vector (a scalar becomes one sample without labels)."""
        # Encoded once, here, the way SigV4 wants it (%20, not +), and sent exactly as signed.
        query_string = urllib.parse.urlencode({"query": expr}, quote_via=urllib.parse.quote, safe="")
        url = f"{self.url}/api/v1/query?{query_string}"
        headers = self._sign(url) if self._sign else {}
        try:
            response = self.session.get(url, headers=headers, timeout=QUERY_TIMEOUT_SECONDS)
        except requests.RequestException as error:
            raise PrometheusError(f"cannot reach Prometheus at {self.url}: {_reason(error)}") from None
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise PrometheusError(
                f"{self.url} answered HTTP {response.status_code} without a Prometheus API body "
                "(is this the Prometheus URL, without /api/v1?)"
            )
        if body.get("status") != "success":
            raise PrometheusError(
                f"Prometheus at {self.url} refused the query (HTTP {response.status_code}): "
                f"{body.get('errorType', '')} {body.get('error', '')}".strip()
            )
        return _samples(body.get("data") or {})


def _reason(error: requests.RequestException) -> str:
    """The cause in a few words: requests' message repeats the whole URL, query and all."""
    if isinstance(error, requests.Timeout):
        return f"no answer within {QUERY_TIMEOUT_SECONDS:g} s"
    text = str(error)
    cause = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if cause:
        return cause.group(1).strip().lower()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]


def _samples(data: dict[str, Any]) -> list[Sample]:
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list):
        return [Sample({}, float(result[1]))]
    if kind != "vector" or not isinstance(result, list):
        return []
    return [Sample(dict(item.get("metric", {})), float(item["value"][1])) for item in result]


def _sigv4_signer(region: str) -> Callable[[str], dict[str, str]]:
    try:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.session import Session
    except ImportError:
        raise PrometheusError(
            "--sigv4 needs botocore, which is not installed: pip install botocore (or use a Prometheus URL "
            "that needs no signing, e.g. through kubectl port-forward)"
        ) from None
    credentials = Session().get_credentials()
    if credentials is None:
        raise PrometheusError("--sigv4: no AWS credentials found (set AWS_PROFILE, or run aws sso login)")

    def sign(url: str) -> dict[str, str]:
        request = AWSRequest(method="GET", url=url)
        SigV4Auth(credentials.get_frozen_credentials(), "aps", region).add_auth(request)
        return dict(request.headers.items())

    return sign


@dataclass(frozen=True)
class Snapshot:
    values: dict[str, float | None]  # query name -> value of a single-value query (None: no data)
    per_pod: dict[str, dict[str, float]] = field(default_factory=dict)  # pod -> column -> value

    @property
    def empty(self) -> bool:
        return all(value is None for value in self.values.values()) and not self.per_pod


def _summary_queries(q: StackQueries) -> tuple[Query, ...]:
    return (
        q.replicas_available,
        q.replicas_desired,
        q.request_rate,
        q.error_ratio_5xx,
        q.queued_requests,
        q.ttft_p90,
        q.output_tokens_per_second,
        q.kv_cache_utilisation_max,
        q.gpu_utilisation,
    )


def _per_pod_queries(q: StackQueries) -> dict[str, Query]:
    return {
        "running": q.running_requests_by_pod,
        "queued": q.queued_requests_by_pod,
        "kv cache": q.kv_cache_utilisation_by_pod,
        "tokens/s": q.output_tokens_per_second_by_pod,
    }


def take_snapshot(client: PrometheusClient, q: StackQueries) -> Snapshot:
    values: dict[str, float | None] = {}
    for query in _summary_queries(q):
        finite = [sample.value for sample in client.query(query.expr) if math.isfinite(sample.value)]
        values[query.name] = finite[0] if finite else None
    per_pod: dict[str, dict[str, float]] = {}
    for column, query in _per_pod_queries(q).items():
        for sample in client.query(query.expr):
            pod = sample.labels.get("pod")
            if pod and math.isfinite(sample.value):
                per_pod.setdefault(pod, {})[column] = sample.value
    return Snapshot(values, per_pod)


def _shown(value: float | None, unit: str) -> str:
    if value is None:
        return "no data"
    if unit == "percentunit":
        return f"{value:.1%}"
    if unit == "percent":
        return f"{value:.1f}%"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:,.1f}" if value != int(value) else f"{int(value):,}"


def render_snapshot(snapshot: Snapshot, q: StackQueries, where: str) -> str:
    values = snapshot.values
    ready, desired = values.get(q.replicas_available.name), values.get(q.replicas_desired.name)
    replicas = (
        f"{_shown(ready, 'short')} of {_shown(desired, 'short')}"
        if desired is not None
        else _shown(ready, "short")
    )
    rows = [
        ("replicas ready", replicas),
        ("requests/s", _shown(values.get(q.request_rate.name), "reqps")),
        ("5xx ratio", _shown(values.get(q.error_ratio_5xx.name), "percentunit")),
        ("queued requests", _shown(values.get(q.queued_requests.name), "short")),
        ("TTFT p90", _shown(values.get(q.ttft_p90.name), "s")),
        ("output tokens/s", _shown(values.get(q.output_tokens_per_second.name), "short")),
        ("KV cache (fullest replica)", _shown(values.get(q.kv_cache_utilisation_max.name), "percentunit")),
        ("GPU utilisation (mean)", _shown(values.get(q.gpu_utilisation.name), "percent")),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"gpt-oss at {where}  ({time.strftime('%H:%M:%S')})", ""]
    lines += [f"  {label:<{width}}  {value}" for label, value in rows]
    if snapshot.per_pod:
        units = {column: query.unit for column, query in _per_pod_queries(q).items()}
        pod_width = max(len(pod) for pod in snapshot.per_pod)
        header = "  ".join(f"{column:>9}" for column in units)
        lines += ["", f"  {'replica':<{pod_width}}  {header}"]
        for pod in sorted(snapshot.per_pod):
            cells = "  ".join(f"{_shown(snapshot.per_pod[pod].get(c), u):>9}" for c, u in units.items())
            lines.append(f"  {pod:<{pod_width}}  {cells}")
    return "\n".join(lines) + "\n"


def run_top(args: argparse.Namespace, out: Any = None) -> int:
    out = out or sys.stdout
    if args.interval <= 0:
        print("error: --interval must be positive", file=sys.stderr)
        return 2
    if args.sigv4 and not args.region:
        print("error: --sigv4 needs --region (the workspace's region, e.g. us-east-1)", file=sys.stderr)
        return 2
    q = stack_queries(Scope(namespace=args.namespace, deployment=args.deployment))
    try:
        client = PrometheusClient(args.prometheus, sigv4_region=args.region if args.sigv4 else None)
        snapshot = take_snapshot(client, q)
    except PrometheusError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if snapshot.empty:
        print(
            f"error: Prometheus at {client.url} has no data for namespace {args.namespace}: "
            "is it scraping the server's exporter, dcgm-exporter and kube-state-metrics?",
            file=sys.stderr,
        )
        return EXIT_NO_DATA
    clear = CLEAR_SCREEN if getattr(out, "isatty", lambda: False)() else ""
    try:
        while True:
            out.write(clear + render_snapshot(snapshot, q, client.url))
            out.flush()
            if args.once:
                return 0
            time.sleep(args.interval)
            try:
                snapshot = take_snapshot(client, q)
            except PrometheusError as error:
                # A blip after the first answer: say so and keep refreshing.
                out.write(f"\n  (refresh failed: {error})\n")
    except KeyboardInterrupt:
        return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "top",
        help="the stack's replicas, traffic, queue, TTFT, tokens/s, KV cache and GPUs from its Prometheus",
    )
    parser.add_argument(
        "--prometheus", required=True, metavar="URL", help="Prometheus base URL (without /api/v1)"
    )
    parser.add_argument("--sigv4", action="store_true", help="sign requests for Amazon Managed Prometheus")
    parser.add_argument(
        "--region", help="AWS region of the Amazon Managed Prometheus workspace (with --sigv4)"
    )
    parser.add_argument("--once", action="store_true", help="print once and exit")
    parser.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL_SECONDS,
        help=f"seconds between refreshes (default {DEFAULT_INTERVAL_SECONDS:g})",
    )
    parser.add_argument(
        "--namespace", default=Scope.namespace, help=f"the stack's namespace (default {Scope.namespace})"
    )
    parser.add_argument(
        "--deployment", default=Scope.deployment, help=f"the server's Deployment (default {Scope.deployment})"
    )
    parser.set_defaults(func=run_top)

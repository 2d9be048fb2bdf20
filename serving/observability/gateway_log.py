"""The gateway's series, made by the pod's exporter from what nginx sends it over loopback.

nginx OSS has no Prometheus module, so the gateway (serving/workload/gateway.py) hands the
exporter two things, both on the pod's loopback only:

- **one syslog datagram per request** (`access_log syslog:server=127.0.0.1:5514,tag=gateway,
  nohostname gateway_metrics;`): an RFC 3164 header (`<PRI>Mmm dd hh:mm:ss gateway: `) and a
  compact JSON object `{"route","status","key_fingerprint","seconds"}`. It becomes
  `gateway_requests_total{route,status,key_fingerprint}` and the
  `gateway_request_duration_seconds{route}` histogram;
- **stub_status** (`http://127.0.0.1:8081/stub_status`), read at each scrape: its connection
  counts become `gateway_requests_in_flight` and the `gateway_connections_*` series.

Every label takes values from a fixed or bounded set, so nothing a client sends can create
series: `route` one of `ROUTE_LABELS`, `status` three digits, `key_fingerprint` the shape of
`api_key_fingerprint()` or `none`, and at most `MAX_KEY_FINGERPRINTS` distinct ones. A datagram
that does not fit (another program's syslog, a truncated line, a forged field) is counted in
`gateway_log_rejected_total{reason}` and otherwise ignored. The key itself never reaches the
exporter: nginx sends the fingerprint its key map gives.

Standard library only: this module runs inside the exporter sidecar.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# What serving/workload/gateway.py renders into nginx.conf (a test checks that they agree; this
# module cannot import the workload package, which the sidecar's image does not hold).
SYSLOG_TAG = "gateway"
DEFAULT_SYSLOG_ADDRESS = "127.0.0.1:5514"
DEFAULT_STATUS_URL = "http://127.0.0.1:8081/stub_status"
OTHER_ROUTE = "other"
# /health, the OpenAI routes of the allowlist (gateway.OPENAI_ROUTES), then every other path.
ROUTE_LABELS = (
    "/health",
    "/v1/models",
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/responses",
    OTHER_ROUTE,
)
NO_KEY = "none"
KEY_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{12}")
STATUS = re.compile(r"[1-5][0-9]{2}")
# Keys the gateway holds at once: one, two while rotating. 64 leaves room for many rotations
# between exporter restarts while bounding what forged datagrams could add.
MAX_KEY_FINGERPRINTS = 64
# nginx's own syslog lines are at most about 2 KiB; a metrics line is about 120 bytes.
MAX_DATAGRAM_BYTES = 4096
# Seconds from the request's first byte to the response's last: 5 ms (a 401 or 404 from nginx)
# to an hour (the gateway's upstream read timeout). TensorRT-LLM's latency buckets stop at 120 s,
# and a long non-streamed answer takes longer.
DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)
# Why a datagram was rejected: a fixed set, so this label is bounded too.
REJECT_REASONS = (
    "header",
    "encoding",
    "json",
    "route",
    "status",
    "key_fingerprint",
    "seconds",
    "too_many_keys",
)

# RFC 3164 as nginx writes it: <PRI>, "Mmm dd hh:mm:ss", the host unless `nohostname`, "tag: ".
_SYSLOG_HEADER = re.compile(
    r"<(?P<pri>[0-9]{1,3})>[A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2} "
    r"(?:[^\s:]+ )?(?P<tag>[A-Za-z0-9_]{1,32}): "
)


class GatewayLogError(ValueError):
    """A datagram that is not one of the gateway's metrics lines; `reason` is in REJECT_REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class RequestLine:
    """One request as the gateway reported it, every field already checked."""

    route: str
    status: str
    key_fingerprint: str
    seconds: float


def parse_datagram(datagram: bytes, tag: str = SYSLOG_TAG) -> RequestLine:
    """The request a syslog datagram from the gateway describes; GatewayLogError for anything else."""
    if len(datagram) > MAX_DATAGRAM_BYTES:
        raise GatewayLogError("header", f"datagram of {len(datagram)} bytes is no metrics line")
    try:
        text = datagram.decode("utf-8")
    except UnicodeDecodeError as error:
        raise GatewayLogError("encoding", "datagram is not UTF-8") from error
    header = _SYSLOG_HEADER.match(text)
    if header is None or header.group("tag") != tag:
        raise GatewayLogError("header", f"not a syslog line tagged {tag!r}")
    try:
        fields: Any = json.loads(text[header.end() :])
    except ValueError as error:
        raise GatewayLogError("json", "the message is not JSON") from error
    if not isinstance(fields, dict):
        raise GatewayLogError("json", "the message is not a JSON object")
    return _request_line(fields)


def _text(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str):
        raise GatewayLogError(name, f"field {name!r} is missing or not a string")
    return value


def _request_line(fields: Mapping[str, Any]) -> RequestLine:
    route = _text(fields, "route")
    if route not in ROUTE_LABELS:
        raise GatewayLogError("route", "route is not one of the gateway's routes")
    status = _text(fields, "status")
    if not STATUS.fullmatch(status):
        raise GatewayLogError("status", "status is not an HTTP status")
    key = _text(fields, "key_fingerprint") or NO_KEY
    if key != NO_KEY and not KEY_FINGERPRINT.fullmatch(key):
        raise GatewayLogError("key_fingerprint", "key_fingerprint is not a fingerprint")
    try:
        seconds = float(_text(fields, "seconds"))
    except ValueError as error:
        raise GatewayLogError("seconds", "seconds is not a number") from error
    if not math.isfinite(seconds) or seconds < 0:
        raise GatewayLogError("seconds", "seconds is negative or not finite")
    return RequestLine(route, status, key, seconds)


@dataclass(frozen=True)
class StubStatus:
    """nginx's stub_status page: connections now, and totals since nginx started."""

    active: int
    accepts: int
    handled: int
    requests: int
    reading: int
    writing: int
    waiting: int


_STUB_STATUS = re.compile(
    r"Active connections:\s*(?P<active>\d+)\s+server accepts handled requests\s+"
    r"(?P<accepts>\d+)\s+(?P<handled>\d+)\s+(?P<requests>\d+)\s+"
    r"Reading:\s*(?P<reading>\d+)\s+Writing:\s*(?P<writing>\d+)\s+Waiting:\s*(?P<waiting>\d+)\s*\Z"
)


def parse_stub_status(text: str) -> StubStatus:
    match = _STUB_STATUS.match(text.strip() + "\n")
    if match is None:
        raise ValueError("not an nginx stub_status page")
    return StubStatus(**{name: int(value) for name, value in match.groupdict().items()})


@dataclass(frozen=True)
class GatewaySeries:
    """One series the exporter serves for the gateway (names checked against the catalogue)."""

    name: str
    kind: str
    help: str


REQUESTS = GatewaySeries(
    "gateway_requests_total",
    "counter",
    "Requests the gateway answered, by route (an allowlisted path or 'other'), HTTP status and key "
    "fingerprint ('none': no valid key).",
)
DURATION = GatewaySeries(
    "gateway_request_duration_seconds",
    "histogram",
    "Time from the request's first byte to the response's last (nginx's $request_time), by route.",
)
IN_FLIGHT = GatewaySeries(
    "gateway_requests_in_flight",
    "gauge",
    "Requests the gateway is serving now: read and not yet answered in full (stub_status Writing, "
    "less the exporter's own read).",
)
CONNECTIONS_ACTIVE = GatewaySeries(
    "gateway_connections_active",
    "gauge",
    "Client connections open now, idle keep-alive ones included (less the exporter's own read).",
)
CONNECTIONS_READING = GatewaySeries(
    "gateway_connections_reading", "gauge", "Connections whose request header nginx is reading now."
)
CONNECTIONS_WAITING = GatewaySeries(
    "gateway_connections_waiting", "gauge", "Idle keep-alive connections waiting for a request."
)
CONNECTIONS_ACCEPTED = GatewaySeries(
    "gateway_connections_accepted_total", "counter", "Connections nginx accepted since it started."
)
CONNECTIONS_HANDLED = GatewaySeries(
    "gateway_connections_handled_total",
    "counter",
    "Connections nginx handled since it started; below accepted when worker_connections ran out.",
)
STATUS_UP = GatewaySeries(
    "gateway_status_up", "gauge", "1 if the latest read of nginx's stub_status succeeded, else 0."
)
DATAGRAMS = GatewaySeries(
    "gateway_log_datagrams_total", "counter", "Datagrams received on the exporter's syslog port."
)
REJECTED = GatewaySeries(
    "gateway_log_rejected_total",
    "counter",
    "Datagrams ignored because they were no gateway metrics line, by reason.",
)
REQUEST_SERIES = (REQUESTS, DURATION)
STATUS_SERIES = (
    IN_FLIGHT,
    CONNECTIONS_ACTIVE,
    CONNECTIONS_READING,
    CONNECTIONS_WAITING,
    CONNECTIONS_ACCEPTED,
    CONNECTIONS_HANDLED,
    STATUS_UP,
)
SELF_SERIES = (DATAGRAMS, REJECTED)
EXPORTED_SERIES = (*REQUEST_SERIES, *STATUS_SERIES, *SELF_SERIES)


def _value(value: float) -> str:
    return str(int(value)) if value == int(value) and abs(value) < 2**53 else repr(value)


def _bound(bound: float) -> str:
    return repr(bound) if bound != int(bound) else f"{bound:.1f}"


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    # Every value comes from a checked set ('/', letters, digits, ':', '.'): nothing to escape.
    return "{" + ",".join(f'{name}="{value}"' for name, value in pairs) + "}"


def _header(series: GatewaySeries) -> str:
    return f"# HELP {series.name} {series.help}\n# TYPE {series.name} {series.kind}\n"


class GatewayMetrics:
    """Counters and histograms over every accepted line; safe to use from several threads."""

    def __init__(self, tag: str = SYSLOG_TAG) -> None:
        self.tag = tag
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = {}
        # Per route: one count per bucket (non-cumulative; summed when rendered), the +Inf
        # overflow, the sum of seconds.
        self._buckets: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}
        self._keys: set[str] = set()
        self.datagrams = 0
        self.rejected: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)

    def receive(self, datagram: bytes) -> RequestLine | None:
        """Count one datagram: the request it reports, or None when it is rejected."""
        try:
            line = parse_datagram(datagram, self.tag)
        except GatewayLogError as error:
            with self._lock:
                self.datagrams += 1
                self.rejected[error.reason] += 1
            return None
        with self._lock:
            self.datagrams += 1
            if line.key_fingerprint != NO_KEY and line.key_fingerprint not in self._keys:
                if len(self._keys) >= MAX_KEY_FINGERPRINTS:
                    self.rejected["too_many_keys"] += 1
                    return None
                self._keys.add(line.key_fingerprint)
            key = (line.route, line.status, line.key_fingerprint)
            self._requests[key] = self._requests.get(key, 0) + 1
            buckets = self._buckets.setdefault(line.route, [0] * (len(DURATION_BUCKETS) + 1))
            index = next(
                (i for i, bound in enumerate(DURATION_BUCKETS) if line.seconds <= bound),
                len(DURATION_BUCKETS),
            )
            buckets[index] += 1
            self._sums[line.route] = self._sums.get(line.route, 0.0) + line.seconds
        return line

    def render_requests(self) -> str:
        with self._lock:
            requests = sorted(self._requests.items())
            buckets = {route: list(counts) for route, counts in self._buckets.items()}
            sums = dict(self._sums)
            datagrams = self.datagrams
            rejected = dict(self.rejected)
        lines = [_header(REQUESTS)]
        lines += [
            f"{REQUESTS.name}{_labels(zip(('route', 'status', 'key_fingerprint'), key, strict=True))} {count}\n"
            for key, count in requests
        ]
        lines.append(_header(DURATION))
        for route in ROUTE_LABELS:
            if route not in buckets:
                continue
            cumulative = 0
            for bound, count in zip((*DURATION_BUCKETS, math.inf), buckets[route], strict=True):
                cumulative += count
                le = "+Inf" if math.isinf(bound) else _bound(bound)
                lines.append(
                    f"{DURATION.name}_bucket{_labels([('route', route), ('le', le)])} {cumulative}\n"
                )
            lines.append(f"{DURATION.name}_sum{_labels([('route', route)])} {_value(sums[route])}\n")
            lines.append(f"{DURATION.name}_count{_labels([('route', route)])} {cumulative}\n")
        lines.append(_header(DATAGRAMS) + f"{DATAGRAMS.name} {datagrams}\n")
        lines.append(_header(REJECTED))
        lines += [
            f"{REJECTED.name}{_labels([('reason', reason)])} {rejected[reason]}\n"
            for reason in REJECT_REASONS
        ]
        return "".join(lines)


def render_status(status: StubStatus | None) -> str:
    """The stub_status series; only `gateway_status_up 0` when nginx could not be read.

    The exporter's own read is one of the connections and one of the requests being written
    when nginx counts, so one comes off `Writing` and `Active`.
    """
    if status is None:
        return _header(STATUS_UP) + f"{STATUS_UP.name} 0\n"
    values = (
        (IN_FLIGHT, max(status.writing - 1, 0)),
        (CONNECTIONS_ACTIVE, max(status.active - 1, 0)),
        (CONNECTIONS_READING, status.reading),
        (CONNECTIONS_WAITING, status.waiting),
        (CONNECTIONS_ACCEPTED, status.accepts),
        (CONNECTIONS_HANDLED, status.handled),
        (STATUS_UP, 1),
    )
    return "".join(_header(series) + f"{series.name} {value}\n" for series, value in values)

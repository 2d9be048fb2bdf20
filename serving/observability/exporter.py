"""The pod's metrics exporter: the one reader of trtllm-serve's drained iteration stats.

It runs as a sidecar beside `trtllm-serve`, which listens on the pod's loopback only:

- every `--interval` seconds it polls `<source>/metrics` (the iteration-stats JSON, which each read
  drains) and keeps gauges of the latest iteration and totals over all of them
  (`iteration_stats.py`);
- on `GET /metrics` (its own port, `EXPORTER_PORT`) it answers with those series **and** the
  server's request-level series from `<source>/prometheus/metrics`, relayed as they are, so a
  scraper outside the pod reaches both without the server listening beyond loopback;
- `GET /healthz` answers 200 while the exporter runs (whatever the server's state: while the model
  loads, `trtllm_iteration_stats_up` is 0 and the pod must not restart for it);
- with `--gateway-syslog 127.0.0.1:5514` it also listens (UDP, one thread) for the gateway's
  per-request syslog lines, and with `--gateway-status-url` it reads nginx's stub_status at each
  scrape: the gateway's series (`gateway_log.py`) are served on the same `/metrics`.

Nothing is served through the gateway or the load balancer, and nothing here sees a request body
or an API key. Standard library only, for a slim image:

    python -m serving.observability.exporter --source http://127.0.0.1:8000 --port 9109 \
        --gateway-syslog 127.0.0.1:5514 --gateway-status-url http://127.0.0.1:8081/stub_status
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from serving.observability.gateway_log import GatewayMetrics, StubStatus, parse_stub_status, render_status
from serving.observability.iteration_stats import (
    ExporterState,
    IterationStatsError,
    advance,
    failed,
    parse_iterations,
    render_exposition,
)

EXPORTER_PORT = 9109
ITERATION_STATS_PATH = "/metrics"
REQUEST_METRICS_PATH = "/prometheus/metrics"
# The server's /metrics waits up to 2 s for new stats before it answers (get_stats_async(2)).
POLL_TIMEOUT_SECONDS = 10.0
RELAY_TIMEOUT_SECONDS = 3.0
DEFAULT_INTERVAL_SECONDS = 5.0
EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A body larger than this is not iteration stats of a sane queue (1000 iterations are ~1.5 MB).
MAX_BODY_BYTES = 32 * 1024 * 1024
# stub_status is a few lines; nginx answers it from memory.
STATUS_TIMEOUT_SECONDS = 2.0
MAX_STATUS_BYTES = 4096
# Room in the kernel for a burst of the gateway's datagrams while the listener thread is busy
# (about 200 bytes each with their headers: thousands of requests).
SYSLOG_RECEIVE_BUFFER_BYTES = 1024 * 1024
SYSLOG_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class ExporterSettings:
    source: str  # the server's base URL, e.g. http://127.0.0.1:8000
    listen_address: str = "0.0.0.0"
    port: int = EXPORTER_PORT
    interval_seconds: float = DEFAULT_INTERVAL_SECONDS
    relay_request_metrics: bool = True
    # "host:port" to receive the gateway's syslog lines on (UDP); "" for none.
    gateway_syslog: str = ""
    # nginx's stub_status URL on loopback; "" for none.
    gateway_status_url: str = ""

    @property
    def gateway_syslog_address(self) -> tuple[str, int] | None:
        if not self.gateway_syslog:
            return None
        host, _, port = self.gateway_syslog.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"--gateway-syslog {self.gateway_syslog!r} is not host:port")
        return host, int(port)

    @property
    def iteration_stats_url(self) -> str:
        return self.source.rstrip("/") + ITERATION_STATS_PATH

    @property
    def request_metrics_url(self) -> str:
        return self.source.rstrip("/") + REQUEST_METRICS_PATH


def _read(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise IterationStatsError(f"{url} answered more than {MAX_BODY_BYTES} bytes")
    return body


class Exporter:
    """The poller's state, behind a lock shared with the HTTP handler threads."""

    def __init__(self, settings: ExporterSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._state = ExporterState()
        self.last_error: str | None = None
        self.gateway = GatewayMetrics() if settings.gateway_syslog else None
        # One stub_status read at a time: concurrent scrapes would see each other's read.
        self._status_lock = threading.Lock()

    @property
    def state(self) -> ExporterState:
        with self._lock:
            return self._state

    def poll_once(self) -> None:
        """Drain the server's iteration stats once; a failure is counted, never raised."""
        try:
            payload: Any = json.loads(_read(self.settings.iteration_stats_url, POLL_TIMEOUT_SECONDS))
            iterations = parse_iterations(payload)
        except (OSError, ValueError) as error:  # URLError and JSONDecodeError are both of these
            with self._lock:
                self._state = failed(self._state)
            self.last_error = str(error)
            return
        with self._lock:
            self._state = advance(self._state, iterations, self._clock())
        self.last_error = None

    def relay_request_metrics(self) -> tuple[str, bool | None]:
        """The server's request-level series as text, and whether it answered (None: not relayed)."""
        if not self.settings.relay_request_metrics:
            return "", None
        try:
            text = _read(self.settings.request_metrics_url, RELAY_TIMEOUT_SECONDS).decode("utf-8")
        except (OSError, ValueError, UnicodeDecodeError):
            return "", False
        return (text if not text or text.endswith("\n") else text + "\n"), True

    def gateway_status(self) -> StubStatus | None:
        """nginx's stub_status now, or None when it cannot be read."""
        with self._status_lock:
            try:
                with urllib.request.urlopen(
                    self.settings.gateway_status_url, timeout=STATUS_TIMEOUT_SECONDS
                ) as r:
                    return parse_stub_status(r.read(MAX_STATUS_BYTES).decode("ascii"))
            except (OSError, ValueError):  # URLError, a refused connection, a page that is no stub_status
                return None

    def exposition(self) -> str:
        relayed, answered = self.relay_request_metrics()
        text = relayed + render_exposition(self.state, request_metrics_up=answered)
        if self.gateway is not None:
            text += self.gateway.render_requests()
        if self.settings.gateway_status_url:
            text += render_status(self.gateway_status())
        return text

    def receive_gateway_syslog(self, listener: socket.socket, stop: threading.Event) -> None:
        """Count every datagram on `listener` until `stop`; a bad one is counted, never raised."""
        assert self.gateway is not None
        listener.settimeout(SYSLOG_POLL_SECONDS)
        while not stop.is_set():
            try:
                datagram = listener.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                if stop.is_set():
                    return
                continue
            self.gateway.receive(datagram)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.poll_once()
            stop.wait(self.settings.interval_seconds)


def make_handler(exporter: Exporter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "trtllm-metrics-exporter"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, exporter.exposition(), EXPOSITION_CONTENT_TYPE)
            elif path == "/healthz":
                self._answer(200, "ok\n", "text/plain; charset=utf-8")
            else:
                self._answer(404, "not found\n", "text/plain; charset=utf-8")

        def _answer(self, status: int, text: str, content_type: str) -> None:
            body = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # One line per scrape every 15 s is noise in the pod's logs; errors still go to stderr.
            return

    return Handler


def open_syslog_listener(address: tuple[str, int]) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SYSLOG_RECEIVE_BUFFER_BYTES)
        listener.bind(address)
    except OSError:
        listener.close()
        raise
    return listener


def serve(settings: ExporterSettings, stop: threading.Event) -> None:
    """Poll and serve until `stop` is set."""
    exporter = Exporter(settings)
    syslog_address = settings.gateway_syslog_address
    listener = open_syslog_listener(syslog_address) if syslog_address else None
    try:
        server = ThreadingHTTPServer((settings.listen_address, settings.port), make_handler(exporter))
    except OSError:
        if listener is not None:
            listener.close()
        raise
    server.daemon_threads = True
    serving = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    serving.start()
    receiving = None
    if listener is not None:
        receiving = threading.Thread(
            target=exporter.receive_gateway_syslog, args=(listener, stop), name="gateway-syslog", daemon=True
        )
        receiving.start()
    gateway = ""
    if listener is not None:
        gateway += f", gateway syslog on udp {settings.gateway_syslog}"
    if settings.gateway_status_url:
        gateway += f", gateway status from {settings.gateway_status_url}"
    print(
        f"serving metrics on {settings.listen_address}:{server.server_address[1]}/metrics, "
        f"polling {settings.iteration_stats_url} every {settings.interval_seconds:g} s{gateway}",
        file=sys.stderr,
        flush=True,
    )
    try:
        exporter.run(stop)
    finally:
        server.shutdown()
        server.server_close()
        if listener is not None:
            listener.close()
        if receiving is not None:
            receiving.join(timeout=5)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.observability.exporter",
        description="Read trtllm-serve's iteration stats (the single reader) and serve them, with its "
        "request metrics, in Prometheus format.",
    )
    parser.add_argument("--source", required=True, help="the server's base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--listen-address", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument(
        "--port", type=int, default=EXPORTER_PORT, help=f"port to listen on (default {EXPORTER_PORT})"
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL_SECONDS,
        help=f"seconds between polls of the iteration stats (default {DEFAULT_INTERVAL_SECONDS:g})",
    )
    parser.add_argument(
        "--no-request-metrics",
        dest="relay_request_metrics",
        action="store_false",
        help="do not relay <source>/prometheus/metrics",
    )
    parser.add_argument(
        "--gateway-syslog",
        default="",
        metavar="HOST:PORT",
        help="receive the gateway's per-request syslog lines on this UDP address, e.g. 127.0.0.1:5514 "
        "(default: off)",
    )
    parser.add_argument(
        "--gateway-status-url",
        default="",
        metavar="URL",
        help="read nginx's stub_status here at each scrape, e.g. http://127.0.0.1:8081/stub_status "
        "(default: off)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.interval <= 0:
        print("error: --interval must be positive", file=sys.stderr)
        return 2
    settings = ExporterSettings(
        source=args.source,
        listen_address=args.listen_address,
        port=args.port,
        interval_seconds=args.interval,
        relay_request_metrics=args.relay_request_metrics,
        gateway_syslog=args.gateway_syslog,
        gateway_status_url=args.gateway_status_url,
    )
    try:
        settings.gateway_syslog_address  # noqa: B018 (validates the argument before anything starts)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        serve(settings, stop)
    except OSError as error:
        print(
            f"error: cannot listen on {settings.listen_address}:{settings.port} (or the gateway syslog "
            f"address {settings.gateway_syslog or '-'}): {error}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Loopback stand-ins for every metrics source of the stack, for the end-to-end test.

- `TrtllmServerStandIn`: what trtllm-serve 1.2.1 serves with `return_perf_metrics: true` and
  `enable_iter_perf_stats: true` (the real server needs GPUs): `/prometheus/metrics` with its five
  request series (names, labels `model_name`/`engine_type` = "undefined", `finished_reason`, and
  the collector's bucket boundaries, from tensorrt_llm/metrics/collector.py), and `/metrics`, a
  JSON array of iteration objects with IterationStats' field names that **drains on every read**.
- `dcgm_exporter_text`: dcgm-exporter's series for two H100s of one node.
- the gateway is not stood in for: the end-to-end test runs the real one (Debian's nginx) in
  front of `TrtllmServerStandIn`, and the real exporter makes its series.
- `kube_state_metrics_text`: kube-state-metrics' series for the stack's Deployment, pods and nodes.

Counters and histograms grow with the time since the source started, so `rate()` has something
to measure. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from serving.config.project import PROJECT_DIR

NAMESPACE = "gpt-oss"
DEPLOYMENT = "trtllm-serve"
PODS = ("trtllm-serve-5d8f7c9b4-abcde", "trtllm-serve-5d8f7c9b4-fghij")
GPU_NODE = "ip-10-42-1-17.ec2.internal"
SYSTEM_NODE = "ip-10-42-0-5.ec2.internal"
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"

# TensorRT-LLM 1.2's MetricsCollector bucket boundaries (tensorrt_llm/metrics/collector.py).
LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)

Samples = list[tuple[dict[str, str], float]]


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{value}"' for key, value in labels.items()) + "}"


def family(name: str, kind: str, help_text: str, samples: Samples, sample_name: str | None = None) -> str:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{sample_name or name}{_labels(labels)} {value}" for labels, value in samples]
    return "\n".join(lines) + "\n"


def histogram(
    name: str, help_text: str, labels: dict[str, str], buckets: Iterable[float], typical: float, count: float
) -> str:
    """A histogram whose observations all lie in the bucket holding `typical`."""
    samples = [({**labels, "le": str(bound)}, count if bound >= typical else 0.0) for bound in buckets]
    samples.append(({**labels, "le": "+Inf"}, count))
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    lines += [f"{name}_bucket{_labels(sample_labels)} {value}" for sample_labels, value in samples]
    lines += [f"{name}_count{_labels(labels)} {count}", f"{name}_sum{_labels(labels)} {count * typical}"]
    return "\n".join(lines) + "\n"


class _Clock:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def trtllm_request_metrics_text(elapsed: float) -> str:
    labels = {"model_name": "undefined", "engine_type": "undefined"}
    finished = 2.0 * elapsed
    return (
        family(
            "trtllm_request_success_total",
            "counter",
            "Count of successfully processed requests.",
            [
                ({**labels, "finished_reason": "stop"}, finished),
                ({**labels, "finished_reason": "length"}, finished / 10),
            ],
        )
        + histogram(
            "trtllm_e2e_request_latency_seconds",
            "End to end latency.",
            labels,
            LATENCY_BUCKETS,
            9.0,
            finished,
        )
        + histogram("trtllm_time_to_first_token_seconds", "TTFT.", labels, TTFT_BUCKETS, 0.4, finished)
        + histogram("trtllm_time_per_output_token_seconds", "TPOT.", labels, TPOT_BUCKETS, 0.02, finished)
        + histogram(
            "trtllm_request_queue_time_seconds", "Queue time.", labels, LATENCY_BUCKETS, 0.4, finished
        )
    )


def iteration_object(iteration: int, queued: int) -> dict[str, Any]:
    """One element of trtllm-serve's /metrics array, with IterationStats' JSON field names."""
    return {
        "timestamp": "12-01-2026 00:00:00",
        "iter": iteration,
        "iterLatencyMS": 42.5,
        "newActiveRequestsQueueLatencyMS": 0.1,
        "numNewActiveRequests": 1,
        "numActiveRequests": 12,
        "numQueuedRequests": queued,
        "numCompletedRequests": 1,
        "maxNumActiveRequests": 64,
        "maxBatchSizeStatic": 64,
        "maxBatchSizeTunerRecommended": 64,
        "maxBatchSizeRuntime": 64,
        "maxNumTokensStatic": 8192,
        "maxNumTokensTunerRecommended": 8192,
        "maxNumTokensRuntime": 8192,
        "gpuMemUsage": 70 * 1024**3,
        "cpuMemUsage": 2 * 1024**3,
        "pinnedMemUsage": 0,
        "kvCacheStats": {
            "maxNumBlocks": 4000,
            "freeNumBlocks": 1000,
            "usedNumBlocks": 3000,
            "tokensPerBlock": 32,
            "allocTotalBlocks": 9000,
            "allocNewBlocks": 7000,
            "reusedBlocks": 2000,
            "missedBlocks": 7000,
            "cacheHitRate": 0.22,
        },
        "inflightBatchingStats": {
            "numScheduledRequests": 12,
            "numContextRequests": 1,
            "numGenRequests": 11,
            "numPausedRequests": 0,
            "numCtxTokens": 4000,
            "microBatchId": 0,
            "avgNumDecodedTokensPerIter": 0.0,
        },
    }


@dataclass
class IterationQueue:
    """The server's stats queue: iterations accumulate with time; a read takes all of them."""

    iterations_per_second: float = 5.0
    queued_requests: int = 3
    clock: _Clock = field(default_factory=_Clock)
    produced: int = 0
    reads: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def drain(self) -> list[dict[str, Any]]:
        with self.lock:
            self.reads += 1
            due = int(self.clock.elapsed() * self.iterations_per_second)
            drained = [iteration_object(i, self.queued_requests) for i in range(self.produced, due)]
            self.produced = max(self.produced, due)
            return drained


Route = Callable[[], tuple[str, bytes]]


# A POST route gets the handler (to stream its answer) and the request body.
PostRoute = Callable[[BaseHTTPRequestHandler, bytes], None]


class LoopbackMetricsServer:
    """A ThreadingHTTPServer on 127.0.0.1 answering GET (and, if given, POST) for a few paths."""

    def __init__(self, routes: dict[str, Route], post_routes: dict[str, PostRoute] | None = None) -> None:
        self.routes = routes
        posts = dict(post_routes or {})

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                route = routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self.send_error(404)
                    return
                content_type, body = route()
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                route = posts.get(self.path.split("?", 1)[0])
                if route is None:
                    self.send_error(404)
                    return
                route(self, body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def text_route(render: Callable[[float], str], clock: _Clock) -> Route:
    return lambda: (TEXT_FORMAT, render(clock.elapsed()).encode())


MODEL_ID = "openai/gpt-oss-120b"


def _json_route(payload: Any) -> Route:
    return lambda: ("application/json", json.dumps(payload).encode())


class TrtllmServerStandIn(LoopbackMetricsServer):
    """trtllm-serve's metrics endpoints, and enough of its OpenAI API for a gateway in front of
    it to carry traffic: `/health`, `/v1/models` and streamed answers on the POST routes.

    A request whose JSON body has `"hold": true` sends its first event, then waits for `release`
    (or 30 s) before it ends: a stream in flight for as long as a test needs one.
    """

    def __init__(self, queued_requests: int = 3) -> None:
        self.clock = _Clock()
        self.queue = IterationQueue(queued_requests=queued_requests, clock=self.clock)
        self.release = threading.Event()
        self.streams_started = threading.Semaphore(0)
        stream = self._stream
        super().__init__(
            {
                "/prometheus/metrics": text_route(trtllm_request_metrics_text, self.clock),
                "/metrics": lambda: ("application/json", json.dumps(self.queue.drain()).encode()),
                "/health": lambda: ("text/plain", b""),
                "/v1/models": _json_route({"object": "list", "data": [{"id": MODEL_ID, "object": "model"}]}),
            },
            dict.fromkeys(("/v1/chat/completions", "/v1/completions", "/v1/responses"), stream),
        )

    def _stream(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        try:
            hold = bool(json.loads(body or b"{}").get("hold"))
        except ValueError:
            hold = False
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()

        def event(data: str) -> None:
            payload = f"data: {data}\n\n".encode()
            handler.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
            handler.wfile.flush()

        event(
            json.dumps(
                {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
            )
        )
        self.streams_started.release()
        if hold:
            self.release.wait(timeout=30.0)
        event("[DONE]")
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()


def dcgm_exporter_text(elapsed: float) -> str:
    gpus = [
        {
            "gpu": str(index),
            "UUID": f"GPU-0000000{index}-aaaa-bbbb-cccc-dddddddddddd",
            "device": f"nvidia{index}",
            "modelName": "NVIDIA H100 80GB HBM3",
            "Hostname": GPU_NODE,
        }
        for index in (0, 1)
    ]

    def each(value: float) -> Samples:
        return [(labels, value) for labels in gpus]

    return "".join(
        [
            family("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", each(87)),
            family("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", each(72000)),
            family("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).", each(9000)),
            family("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", each(612.5)),
            family("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", each(61)),
            family("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C).", each(58)),
            family("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered.", each(0)),
            family("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "counter", "Double-bit volatile ECC errors.", each(0)),
            family("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "counter", "Single-bit volatile ECC errors.", each(2)),
            family(
                "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
                "counter",
                "Rows remapped (uncorrectable).",
                each(0),
            ),
            family(
                "DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge", "Whether remapping of rows has failed.", each(0)
            ),
            family(
                "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
                "counter",
                "NVLink bandwidth counter.",
                each(1e6 * elapsed),
            ),
        ]
    )


# Keys for the real gateway the end-to-end test runs (valid key-map keys: 40 base64url characters).
TRAFFIC_KEYS = ("stand-in-key-for-team-a-0123456789abcdef", "stand-in-key-for-team-b-0123456789abcdef")


def kube_state_metrics_text(elapsed: float) -> str:
    deployment = {"namespace": NAMESPACE, "deployment": DEPLOYMENT}
    ready: Samples = []
    restarts: Samples = []
    init_running: Samples = []
    for pod in PODS:
        pod_labels = {"namespace": NAMESPACE, "pod": pod, "uid": f"uid-{pod[-5:]}"}
        ready += [
            ({**pod_labels, "condition": c}, 1.0 if c == "true" else 0.0)
            for c in ("true", "false", "unknown")
        ]
        restarts += [({**pod_labels, "container": c}, 0.0) for c in ("trtllm-serve", "api-gateway")]
        init_running.append(({**pod_labels, "container": "download-weights"}, 0.0))
    conditions: Samples = [
        ({"node": node, "condition": "Ready", "status": status}, 1.0 if status == "true" else 0.0)
        for node in (GPU_NODE, SYSTEM_NODE)
        for status in ("true", "false", "unknown")
    ]
    capacity: Samples = [
        ({"node": GPU_NODE, "resource": "nvidia_com_gpu", "unit": "integer"}, 8.0),
        ({"node": GPU_NODE, "resource": "cpu", "unit": "core"}, 192.0),
        ({"node": SYSTEM_NODE, "resource": "cpu", "unit": "core"}, 2.0),
    ]
    return "".join(
        [
            family(
                "kube_deployment_status_replicas_available", "gauge", "Available replicas.", [(deployment, 2)]
            ),
            family("kube_deployment_spec_replicas", "gauge", "Desired replicas.", [(deployment, 2)]),
            family("kube_pod_status_ready", "gauge", "Pod ready condition.", ready),
            family("kube_pod_container_status_restarts_total", "counter", "Container restarts.", restarts),
            family(
                "kube_pod_init_container_status_running", "gauge", "Init container running.", init_running
            ),
            family("kube_node_status_condition", "gauge", "Node conditions.", conditions),
            family("kube_node_status_capacity", "gauge", "Node capacity.", capacity),
        ]
    )


def start_text_source(render: Callable[[float], str]) -> LoopbackMetricsServer:
    return LoopbackMetricsServer({"/metrics": text_route(render, _Clock())})


def start_exporter(source: str, port: int, syslog_port: int, status_url: str) -> subprocess.Popen:
    """The real exporter process, reading `source` and, as in the pod, the gateway's syslog lines
    and stub_status on loopback."""
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
        "--gateway-syslog",
        f"127.0.0.1:{syslog_port}",
        "--gateway-status-url",
        status_url,
    ]
    return subprocess.Popen(
        command, cwd=PROJECT_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )

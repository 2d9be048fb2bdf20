"""Every series the stack's dashboard, alerts and terminal view rely on, with who emits it.

One entry per series: name, type, labels, source (which program emits it, on which port, under
which scrape job) and where the name was checked. The queries (`queries.py`) may name only series
listed here (a fast test checks that), and the end-to-end test runs every query against a real
Prometheus that scrapes the real exporter and gateway (and stand-ins for the rest).

Label contract for pod-local sources (the server's exporter, the gateway): the scrape
configuration adds `namespace` and `pod` from Kubernetes service discovery, so "per replica" means
`by (pod)`. kube-state-metrics and dcgm-exporter carry their own object labels and are scraped
with `honor_labels: true`.
"""

from __future__ import annotations

from dataclasses import dataclass

from serving.observability import gateway_log, iteration_stats
from serving.observability.exporter import EXPORTER_PORT

DCGM_EXPORTER_PORT = 9400
KUBE_STATE_METRICS_PORT = 8080

# Labels the scrape configuration adds to every series of a pod-local target.
POD_TARGET_LABELS = ("namespace", "pod")


@dataclass(frozen=True)
class Source:
    """One kind of scrape target."""

    job: str  # the scrape job's name, which is the `job` label of its series
    emitted_by: str
    port: int
    path: str
    reference: str  # where the names were checked
    target_labels: tuple[str, ...] = ()  # added by the scrape configuration
    built: bool = True  # False: the names are this project's proposal, no program emits them yet


SERVER = Source(
    job="trtllm-server",
    emitted_by="the pod's metrics exporter (serving/observability/exporter.py): its iteration gauges, "
    "plus trtllm-serve's /prometheus/metrics relayed from 127.0.0.1:8000",
    port=EXPORTER_PORT,
    path="/metrics",
    reference="TensorRT-LLM 1.2.1: tensorrt_llm/metrics/collector.py (MetricsCollector) and "
    "openai_server.py (labels model_name and engine_type, both 'undefined'); iteration fields: "
    "cpp/tensorrt_llm/executor/jsonSerialization.cpp",
    target_labels=POD_TARGET_LABELS,
)
# nginx OSS has no Prometheus module: the gateway sends the exporter beside it one syslog line per
# request and serves it stub_status, both on loopback, and the exporter serves the series on its
# own port. So the gateway's series arrive with the server's, in the same scrape job.
GATEWAY = Source(
    job=SERVER.job,
    emitted_by="the pod's metrics exporter (serving/observability/gateway_log.py), from the gateway's "
    "per-request syslog lines (UDP 127.0.0.1:5514) and nginx's stub_status (127.0.0.1:8081)",
    port=EXPORTER_PORT,
    path="/metrics",
    reference="this project's names; the route label takes only the allowlisted paths or 'other', "
    "the key label only api_key_fingerprint() values or 'none'; stub_status: nginx's "
    "ngx_http_stub_status_module (Active, Reading, Writing, Waiting)",
    target_labels=POD_TARGET_LABELS,
)
DCGM = Source(
    job="dcgm-exporter",
    emitted_by="NVIDIA dcgm-exporter, a DaemonSet on the GPU nodes",
    port=DCGM_EXPORTER_PORT,
    path="/metrics",
    reference="NVIDIA/dcgm-exporter etc/default-counters.csv (ECC counters are commented out there: "
    "the stack's counters file, render_dcgm_counters_csv(), enables them)",
)
KUBE_STATE = Source(
    job="kube-state-metrics",
    emitted_by="kube-state-metrics",
    port=KUBE_STATE_METRICS_PORT,
    path="/metrics",
    reference="kube-state-metrics v2 deployment, pod and node metrics",
)
PROMETHEUS = Source(
    job="(every job)",
    emitted_by="Prometheus itself, one `up` per target per scrape",
    port=0,
    path="",
    reference="Prometheus: automatically generated series",
)
SOURCES = (SERVER, GATEWAY, DCGM, KUBE_STATE)
# One scrape job each: the gateway's series come with the server's (the same exporter).
SCRAPED = (SERVER, DCGM, KUBE_STATE)


@dataclass(frozen=True)
class Series:
    name: str
    kind: str  # "counter", "gauge" or "histogram"
    labels: tuple[str, ...]
    source: Source
    help: str
    # For dcgm-exporter fields: whether its default counters file already collects it.
    dcgm_default: bool = True

    @property
    def sample_names(self) -> tuple[str, ...]:
        """The names its samples carry in Prometheus (a histogram is three series)."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


_TRTLLM_LABELS = ("model_name", "engine_type")
_DCGM_LABELS = ("gpu", "UUID", "device", "modelName", "Hostname")


def _trtllm_histogram(name: str, help_text: str) -> Series:
    return Series(name, "histogram", (*_TRTLLM_LABELS, "le"), SERVER, help_text)


def _dcgm(name: str, kind: str, help_text: str, *, default: bool = True) -> Series:
    return Series(name, kind, _DCGM_LABELS, DCGM, help_text, dcgm_default=default)


def _iteration(metric: iteration_stats.ExportedMetric) -> Series:
    return Series(metric.name, metric.kind, (), SERVER, f"{metric.help} (from {metric.json_field})")


TRTLLM_REQUEST_SUCCESS = Series(
    "trtllm_request_success_total",
    "counter",
    (*_TRTLLM_LABELS, "finished_reason"),
    SERVER,
    "Requests finished, by finished_reason (stop, length, ...).",
)
TRTLLM_E2E_LATENCY = _trtllm_histogram("trtllm_e2e_request_latency_seconds", "End-to-end request latency.")
TRTLLM_TTFT = _trtllm_histogram("trtllm_time_to_first_token_seconds", "Time to first token.")
TRTLLM_TPOT = _trtllm_histogram("trtllm_time_per_output_token_seconds", "Time per output token.")
TRTLLM_QUEUE_TIME = _trtllm_histogram(
    "trtllm_request_queue_time_seconds", "Time a request waited to be scheduled."
)

TRTLLM_REQUEST_SERIES = (
    TRTLLM_REQUEST_SUCCESS,
    TRTLLM_E2E_LATENCY,
    TRTLLM_TTFT,
    TRTLLM_TPOT,
    TRTLLM_QUEUE_TIME,
)
ITERATION_SERIES = tuple(_iteration(metric) for metric in iteration_stats.EXPORTED_METRICS)

GATEWAY_REQUESTS = Series(
    "gateway_requests_total",
    "counter",
    ("route", "status", "key_fingerprint"),
    GATEWAY,
    "Requests answered by the gateway, by route (allowlisted path or 'other'), HTTP status and key fingerprint.",
)
GATEWAY_IN_FLIGHT = Series(
    "gateway_requests_in_flight", "gauge", (), GATEWAY, "Requests the gateway is serving now."
)
GATEWAY_DURATION = Series(
    "gateway_request_duration_seconds",
    "histogram",
    ("route", "le"),
    GATEWAY,
    "Time from the request's first byte to the response's last, by route.",
)
GATEWAY_SERIES = (GATEWAY_REQUESTS, GATEWAY_IN_FLIGHT, GATEWAY_DURATION)
# The exporter's other gateway series: connection counts from stub_status and its own view of
# the inputs (whether nginx's status answered, datagrams received and rejected).
_GATEWAY_EXTRA_LABELS = {gateway_log.REJECTED.name: ("reason",)}
GATEWAY_EXPORTER_SERIES = tuple(
    Series(series.name, series.kind, _GATEWAY_EXTRA_LABELS.get(series.name, ()), GATEWAY, series.help)
    for series in gateway_log.EXPORTED_SERIES
    if series.name not in {core.name for core in GATEWAY_SERIES}
)

DCGM_GPU_UTIL = _dcgm("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilisation (in %).")
DCGM_FB_USED = _dcgm("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).")
DCGM_FB_FREE = _dcgm("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).")
DCGM_POWER = _dcgm("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).")
DCGM_GPU_TEMP = _dcgm("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).")
DCGM_MEMORY_TEMP = _dcgm("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "HBM temperature (in C).")
DCGM_XID = _dcgm("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the latest XID error (0: none).")
DCGM_ECC_DBE = _dcgm(
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
    "counter",
    "Double-bit (uncorrectable) volatile ECC errors.",
    default=False,
)
DCGM_ECC_SBE = _dcgm(
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "counter", "Single-bit (corrected) volatile ECC errors.", default=False
)
DCGM_UNCORRECTABLE_REMAPPED_ROWS = _dcgm(
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "counter", "Memory rows remapped for uncorrectable errors."
)
DCGM_ROW_REMAP_FAILURE = _dcgm(
    "DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge", "1 if remapping a memory row failed."
)
DCGM_NVLINK_BANDWIDTH = _dcgm(
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "counter", "NVLink bandwidth counter over all lanes."
)
DCGM_SERIES = (
    DCGM_GPU_UTIL,
    DCGM_FB_USED,
    DCGM_FB_FREE,
    DCGM_POWER,
    DCGM_GPU_TEMP,
    DCGM_MEMORY_TEMP,
    DCGM_XID,
    DCGM_ECC_DBE,
    DCGM_ECC_SBE,
    DCGM_UNCORRECTABLE_REMAPPED_ROWS,
    DCGM_ROW_REMAP_FAILURE,
    DCGM_NVLINK_BANDWIDTH,
)

KSM_REPLICAS_AVAILABLE = Series(
    "kube_deployment_status_replicas_available",
    "gauge",
    ("namespace", "deployment"),
    KUBE_STATE,
    "Available (ready for minReadySeconds) replicas of a Deployment.",
)
KSM_REPLICAS_DESIRED = Series(
    "kube_deployment_spec_replicas", "gauge", ("namespace", "deployment"), KUBE_STATE, "Desired replicas."
)
KSM_CONTAINER_RESTARTS = Series(
    "kube_pod_container_status_restarts_total",
    "counter",
    ("namespace", "pod", "container"),
    KUBE_STATE,
    "Container restarts.",
)
KSM_INIT_CONTAINER_RUNNING = Series(
    "kube_pod_init_container_status_running",
    "gauge",
    ("namespace", "pod", "container"),
    KUBE_STATE,
    "1 while an init container runs.",
)
KSM_POD_READY = Series(
    "kube_pod_status_ready",
    "gauge",
    ("namespace", "pod", "condition"),
    KUBE_STATE,
    "Pod Ready condition (condition = true, false or unknown; value 1 for the one that holds).",
)
KSM_NODE_CONDITION = Series(
    "kube_node_status_condition",
    "gauge",
    ("node", "condition", "status"),
    KUBE_STATE,
    "Node conditions (Ready, ...), one series per status value.",
)
KSM_NODE_CAPACITY = Series(
    "kube_node_status_capacity",
    "gauge",
    ("node", "resource", "unit"),
    KUBE_STATE,
    "Node capacity by resource; GPU nodes have resource nvidia_com_gpu.",
)
KUBE_SERIES = (
    KSM_REPLICAS_AVAILABLE,
    KSM_REPLICAS_DESIRED,
    KSM_CONTAINER_RESTARTS,
    KSM_INIT_CONTAINER_RUNNING,
    KSM_POD_READY,
    KSM_NODE_CONDITION,
    KSM_NODE_CAPACITY,
)

TARGET_UP = Series(
    "up", "gauge", ("job", "instance"), PROMETHEUS, "1 if the target's latest scrape succeeded."
)

CATALOGUE: tuple[Series, ...] = (
    *TRTLLM_REQUEST_SERIES,
    *ITERATION_SERIES,
    *GATEWAY_SERIES,
    *GATEWAY_EXPORTER_SERIES,
    *DCGM_SERIES,
    *KUBE_SERIES,
    TARGET_UP,
)

# Every name a sample can have in Prometheus, for checking the names a query uses.
SAMPLE_NAMES: frozenset[str] = frozenset(name for series in CATALOGUE for name in series.sample_names)


def series_named(name: str) -> Series:
    for series in CATALOGUE:
        if name in series.sample_names:
            return series
    raise KeyError(f"{name} is not in the metric catalogue")


def render_dcgm_counters_csv() -> str:
    """dcgm-exporter's counters file (`-f`) for the stack: every DCGM field the stack relies on.

    The default file leaves the ECC counters commented out; the stack needs them for its alerts.
    Format: `FIELD, Prometheus type, help`, one per line, `#` for comments.
    """
    lines = ["# DCGM fields collected for the gpt-oss stack (serving/observability/catalogue.py)."]
    # dcgm-exporter splits each line on commas: a help text must hold none.
    lines += [f"{series.name}, {series.kind}, {series.help.replace(',', ';')}" for series in DCGM_SERIES]
    return "\n".join(lines) + "\n"

"""Iteration stats -> gauges and counters, and the exporter that is their single reader."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.observability import iteration_stats as stats
from serving.observability.exporter import Exporter, ExporterSettings, main, make_handler
from tests.support import metrics_sources as sources
from tests.support.nginx_runner import free_loopback_port

# The exporter's modules besides the two package __init__ files: what its image must hold (the
# gateway's series are parsed in gateway_log.py).
EXPORTER_FILES = (
    "serving/observability/exporter.py",
    "serving/observability/iteration_stats.py",
    "serving/observability/gateway_log.py",
)


def _parse_exposition(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_latest_iteration_gives_the_gauges_with_trtllm_field_names() -> None:
    gauges = stats.latest_gauges(sources.iteration_object(7, queued=3))
    assert gauges == {
        "trtllm_iteration_running_requests": 12,
        "trtllm_iteration_queued_requests": 3,
        "trtllm_iteration_paused_requests": 0,
        "trtllm_iteration_kv_cache_blocks_max": 4000,
        "trtllm_iteration_kv_cache_blocks_free": 1000,
        "trtllm_iteration_kv_cache_blocks_used": 3000,
        "trtllm_iteration_kv_cache_hit_rate": 0.22,
        "trtllm_iteration_gpu_memory_bytes": 70 * 1024**3,
        "trtllm_iteration_latency_seconds": 0.0425,
    }


def test_missing_fields_are_left_out_not_invented() -> None:
    assert stats.latest_gauges({"iter": 1, "numActiveRequests": 2, "kvCacheStats": None}) == {
        "trtllm_iteration_running_requests": 2
    }


def test_counters_add_up_every_drained_iteration_and_gauges_follow_the_latest() -> None:
    first, second = sources.iteration_object(1, queued=5), sources.iteration_object(2, queued=1)
    state = stats.advance(stats.ExporterState(), stats.parse_iterations([second, first]), now=100.0)
    assert state.iterations_total == 2
    assert state.gauges["trtllm_iteration_queued_requests"] == 1  # iteration 2, whatever the order
    # 11 generating requests, avgNumDecodedTokensPerIter 0 (no speculative decoding): 1 token each.
    assert state.generated_tokens_total == 22
    assert state.context_tokens_total == 8000
    assert state.source_up and state.last_success_timestamp == 100.0


def test_speculative_decoding_counts_every_accepted_token() -> None:
    iteration = sources.iteration_object(1, queued=0)
    iteration["inflightBatchingStats"]["avgNumDecodedTokensPerIter"] = 2.5
    assert stats.advance(stats.ExporterState(), [iteration], now=0).generated_tokens_total == 27.5


def test_an_empty_drain_means_idle_occupancy_drops_and_the_pool_is_kept() -> None:
    busy = stats.advance(stats.ExporterState(), [sources.iteration_object(1, queued=4)], now=1)
    idle = stats.advance(busy, [], now=2)
    assert idle.gauges["trtllm_iteration_running_requests"] == 0
    assert idle.gauges["trtllm_iteration_queued_requests"] == 0
    assert idle.gauges["trtllm_iteration_kv_cache_blocks_used"] == 3000
    assert idle.iterations_total == 1


def test_a_failed_poll_keeps_values_and_says_up_zero() -> None:
    busy = stats.advance(stats.ExporterState(), [sources.iteration_object(1, queued=4)], now=1)
    down = stats.failed(busy)
    values = _parse_exposition(stats.render_exposition(down))
    assert values["trtllm_iteration_stats_up"] == 0
    assert values["trtllm_iteration_stats_poll_errors_total"] == 1
    assert values["trtllm_iteration_queued_requests"] == 4


@pytest.mark.parametrize(
    ("payload", "message"),
    [({"numActiveRequests": 1}, "expected a JSON array"), ([1], "element 0 is a int"), ("[]", "got str")],
)
def test_anything_but_a_list_of_objects_is_refused(payload: object, message: str) -> None:
    with pytest.raises(stats.IterationStatsError, match=message):
        stats.parse_iterations(payload)


def test_exposition_declares_every_family_once_with_help_and_type() -> None:
    state = stats.advance(stats.ExporterState(), [sources.iteration_object(1, queued=0)], now=5)
    text = stats.render_exposition(state, request_metrics_up=True)
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(types) == len(set(types)) == len(stats.EXPORTED_METRICS)
    for metric in stats.EXPORTED_METRICS:
        assert f"# TYPE {metric.name} {metric.kind}\n" in text
        assert metric.kind != "counter" or metric.name.endswith("_total")


@pytest.fixture
def server() -> Iterator[sources.TrtllmServerStandIn]:
    stand_in = sources.TrtllmServerStandIn()
    try:
        yield stand_in
    finally:
        stand_in.stop()


def test_the_exporter_drains_the_queue_and_relays_the_request_series(
    server: sources.TrtllmServerStandIn,
) -> None:
    server.queue.clock.started -= 2.0  # two seconds' worth of iterations are waiting
    exporter = Exporter(ExporterSettings(source=server.base_url))
    exporter.poll_once()
    assert server.queue.reads == 1 and exporter.state.iterations_total >= 10
    text = exporter.exposition()
    values = _parse_exposition(text)
    assert values["trtllm_iteration_running_requests"] == 12
    assert values["trtllm_request_metrics_up"] == 1
    assert (
        'trtllm_request_success_total{model_name="undefined",engine_type="undefined",finished_reason="stop"}'
        in text
    )
    # A second read finds only what arrived since: the queue really drains.
    before = exporter.state.iterations_total
    exporter.poll_once()
    assert exporter.state.iterations_total - before < 10


def test_the_exporter_survives_a_server_that_is_not_listening() -> None:
    exporter = Exporter(ExporterSettings(source=f"http://127.0.0.1:{free_loopback_port()}"))
    exporter.poll_once()
    values = _parse_exposition(exporter.exposition())
    assert values["trtllm_iteration_stats_up"] == 0
    assert values["trtllm_request_metrics_up"] == 0
    assert exporter.last_error


def test_the_exporter_serves_metrics_and_health_and_nothing_else(server: sources.TrtllmServerStandIn) -> None:
    from http.server import ThreadingHTTPServer

    server.queue.clock.started -= 1.0
    exporter = Exporter(ExporterSettings(source=server.base_url))
    exporter.poll_once()
    http = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(exporter))
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{http.server_address[1]}"
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert b"trtllm_iteration_queued_requests 3" in response.read()
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/v1/models", timeout=5)
        assert refused.value.code == 404
    finally:
        http.shutdown()
        http.server_close()


def test_the_exporter_command_refuses_a_non_positive_interval(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--source", "http://127.0.0.1:1", "--interval", "0"]) == 2
    assert "--interval must be positive" in capsys.readouterr().err


def test_the_stand_in_emits_valid_json_arrays() -> None:
    queue = sources.IterationQueue()
    queue.clock.started -= 1.0
    assert isinstance(json.loads(json.dumps(queue.drain())), list)


def test_scrapes_never_read_the_servers_queue(server: sources.TrtllmServerStandIn) -> None:
    """Only the poller drains /metrics: however often Prometheus scrapes, the server sees one reader."""
    exporter = Exporter(ExporterSettings(source=server.base_url))
    exporter.poll_once()
    for _ in range(5):
        exporter.exposition()
    assert server.queue.reads == 1


@pytest.mark.slow
def test_the_exporter_runs_with_the_standard_library_and_its_own_files_only(tmp_path: Path) -> None:
    """What the sidecar's slim image holds: no site-packages, no other module of the project."""
    repo = Path(__file__).resolve().parents[3]
    for name in ("serving/__init__.py", "serving/observability/__init__.py", *EXPORTER_FILES):
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / name, target)
    result = subprocess.run(
        [sys.executable, "-S", "-E", "-m", "serving.observability.exporter", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "--source" in result.stdout and "--gateway-syslog" in result.stdout

"""The gateway's series: nginx's syslog lines and stub_status, turned into Prometheus by the exporter.

Fast tests parse what nginx sends (and what it must not be fooled by); the slow ones run Debian's
real nginx with the rendered configuration (syslog line and stub_status on, as in the pod) in
front of a stand-in trtllm-serve, and the real exporter process listening for its syslog, then
read the exporter's /metrics after real requests.
"""

from __future__ import annotations

import re
import secrets
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from serving.observability import gateway_log as g
from serving.observability.exporter import Exporter, ExporterSettings, main
from serving.workload import gateway
from serving.workload.gateway import GatewaySettings, api_key_fingerprint, render_nginx_conf
from tests.support import metrics_sources as sources
from tests.support.metrics_sources import start_exporter
from tests.support.nginx_runner import (
    RunningNginx,
    free_loopback_port,
    free_loopback_udp_port,
    metrics_overrides,
    start_nginx,
    wait_for_port,
)

FINGERPRINT = "sha256:0123456789ab"


def line(fields: str, tag: str = "gateway", host: str = "") -> bytes:
    """A datagram as nginx writes it: <local7.info>, the RFC 3164 time, no hostname, the tag."""
    return f"<190>Dec  2 00:41:07 {host}{tag}: {fields}".encode()


def good(
    route: str = "/v1/models", status: str = "200", key: str = FINGERPRINT, seconds: str = "0.012"
) -> bytes:
    return line(f'{{"route":"{route}","status":"{status}","key_fingerprint":"{key}","seconds":"{seconds}"}}')


def samples(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for row in text.splitlines():
        if row and not row.startswith("#"):
            name, value = row.rsplit(" ", 1)
            values[name] = float(value)
    return values


def requests_by_labels(text: str) -> dict[tuple[str, str, str], float]:
    found = {}
    for name, value in samples(text).items():
        match = re.fullmatch(
            r'gateway_requests_total\{route="([^"]*)",status="(\d+)",key_fingerprint="([^"]*)"\}', name
        )
        if match:
            found[(match.group(1), match.group(2), match.group(3))] = value
    return found


# --- What the exporter accepts ----------------------------------------------------------------


def test_the_exporter_and_the_gateway_agree_on_tag_ports_and_routes() -> None:
    assert gateway.metrics_route_labels() == g.ROUTE_LABELS
    assert g.OTHER_ROUTE == gateway.OTHER_ROUTE_LABEL
    assert g.SYSLOG_TAG == gateway.GATEWAY_METRICS_SYSLOG_TAG
    assert g.DEFAULT_SYSLOG_ADDRESS == gateway.GATEWAY_METRICS_SYSLOG_SERVER
    assert g.DEFAULT_STATUS_URL == gateway.GATEWAY_STATUS_URL
    assert [name for name, _ in gateway.METRICS_LOG_FIELDS] == [
        "route",
        "status",
        "key_fingerprint",
        "seconds",
    ]
    assert re.fullmatch(g.KEY_FINGERPRINT, api_key_fingerprint(secrets.token_urlsafe(32)))


def test_a_line_as_nginx_sends_it_is_one_request() -> None:
    assert g.parse_datagram(good()) == g.RequestLine("/v1/models", "200", FINGERPRINT, 0.012)
    # No valid key: nginx's map gives "", the label says none. A hostname before the tag is fine.
    parsed = g.parse_datagram(
        line('{"route":"other","status":"404","key_fingerprint":"","seconds":"0.000"}', host="pod ")
    )
    assert (parsed.route, parsed.key_fingerprint, parsed.seconds) == ("other", "none", 0.0)


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (b"", "header"),
        (b"hello", "header"),
        (line('{"route":"/v1/models"}', tag="nginx"), "header"),  # another program's syslog
        (b"<190>" + b"x" * 5000, "header"),
        (b"<190>Dec  2 00:41:07 gateway: \xff\xfe", "encoding"),
        (line("not json"), "json"),
        (line('["/v1/models"]'), "json"),
        (good(route="/v1/models/../../metrics"), "route"),
        (good(route="/V1/MODELS"), "route"),
        (good(route="/secret-path"), "route"),
        (good(status="2000"), "status"),
        (good(status="abc"), "status"),
        (good(key="Bearer sk-not-a-fingerprint"), "key_fingerprint"),
        (good(key="sha256:0123456789abcdef"), "key_fingerprint"),
        (good(seconds="-1"), "seconds"),
        (good(seconds="nan"), "seconds"),
        (good(seconds="soon"), "seconds"),
        (line('{"route":"/health","status":200,"key_fingerprint":"","seconds":"0.1"}'), "status"),
    ],
)
def test_anything_else_is_rejected_with_a_reason_and_never_raises_out(datagram: bytes, reason: str) -> None:
    with pytest.raises(g.GatewayLogError) as raised:
        g.parse_datagram(datagram)
    assert raised.value.reason == reason
    metrics = g.GatewayMetrics()
    assert metrics.receive(datagram) is None
    assert metrics.rejected[reason] == 1 and metrics.datagrams == 1
    assert requests_by_labels(metrics.render_requests()) == {}


def test_counts_and_the_histogram_follow_the_lines() -> None:
    metrics = g.GatewayMetrics()
    for seconds in ("0.004", "0.3", "7.5", "4000"):
        metrics.receive(good(route="/v1/chat/completions", seconds=seconds))
    metrics.receive(good(route="other", status="404", key=""))
    text = metrics.render_requests()
    assert requests_by_labels(text) == {
        ("/v1/chat/completions", "200", FINGERPRINT): 4,
        ("other", "404", "none"): 1,
    }
    values = samples(text)
    bucket = 'gateway_request_duration_seconds_bucket{route="/v1/chat/completions",le="%s"}'
    assert values[bucket % "0.005"] == 1
    assert values[bucket % "0.5"] == 2
    assert values[bucket % "10.0"] == 3
    assert values[bucket % "3600.0"] == 3
    assert values[bucket % "+Inf"] == 4
    assert values['gateway_request_duration_seconds_count{route="/v1/chat/completions"}'] == 4
    assert values['gateway_request_duration_seconds_sum{route="/v1/chat/completions"}'] == pytest.approx(
        4007.804
    )
    # Every bucket line of a route is there, in order, and the families are declared once.
    assert text.count('gateway_request_duration_seconds_bucket{route="other"') == len(g.DURATION_BUCKETS) + 1
    assert text.count("# TYPE gateway_request_duration_seconds histogram") == 1


def test_fingerprints_are_bounded_even_if_lines_are_forged() -> None:
    metrics = g.GatewayMetrics()
    for index in range(g.MAX_KEY_FINGERPRINTS + 10):
        metrics.receive(good(key=f"sha256:{index:012x}"))
    metrics.receive(good(key=""))  # 'none' is always counted
    assert len(requests_by_labels(metrics.render_requests())) == g.MAX_KEY_FINGERPRINTS + 1
    assert metrics.rejected["too_many_keys"] == 10


STUB_STATUS = (
    "Active connections: 5 \nserver accepts handled requests\n 40 38 97 \nReading: 1 Writing: 3 Waiting: 1 \n"
)


def test_stub_status_gives_in_flight_without_the_exporters_own_read() -> None:
    status = g.parse_stub_status(STUB_STATUS)
    assert status == g.StubStatus(
        active=5, accepts=40, handled=38, requests=97, reading=1, writing=3, waiting=1
    )
    values = samples(g.render_status(status))
    assert values["gateway_requests_in_flight"] == 2
    assert values["gateway_connections_active"] == 4
    assert values["gateway_connections_accepted_total"] - values["gateway_connections_handled_total"] == 2
    assert values["gateway_status_up"] == 1
    assert samples(g.render_status(None)) == {"gateway_status_up": 0}
    with pytest.raises(ValueError):
        g.parse_stub_status("<html>404</html>")


def test_an_exporter_without_nginx_says_status_down_and_keeps_serving() -> None:
    settings = ExporterSettings(
        source=f"http://127.0.0.1:{free_loopback_port()}",
        relay_request_metrics=False,
        gateway_syslog="127.0.0.1:0",
        gateway_status_url=f"http://127.0.0.1:{free_loopback_port()}/stub_status",
    )
    values = samples(Exporter(settings).exposition())
    assert values["gateway_status_up"] == 0
    assert "gateway_requests_in_flight" not in values
    assert values["gateway_log_datagrams_total"] == 0


def test_the_exporter_refuses_a_syslog_address_without_a_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--source", "http://127.0.0.1:1", "--gateway-syslog", "127.0.0.1"]) == 2
    assert "not host:port" in capsys.readouterr().err


def test_the_pod_gateway_sends_metrics_to_loopback_only_and_can_turn_them_off() -> None:
    text = render_nginx_conf(GatewaySettings())
    assert "access_log syslog:server=127.0.0.1:5514,tag=gateway,nohostname gateway_metrics;" in text
    assert "listen 127.0.0.1:8081;" in text and "stub_status;" in text
    metrics_format = next(row for row in text.splitlines() if "log_format gateway_metrics" in row)
    variables = set(re.findall(r"\$[a-z_]+", metrics_format))
    assert variables == {"$gateway_route", "$status", "$api_key_fingerprint", "$request_time"}
    off = render_nginx_conf(GatewaySettings(metrics_syslog_server="", status_port=0))
    assert "syslog:" not in off and "stub_status" not in off and "$gateway_route" not in off
    with pytest.raises(ValueError, match="metrics_syslog_server"):
        GatewaySettings(metrics_syslog_server="exporter.local:5514")
    with pytest.raises(ValueError, match="status_port"):
        GatewaySettings(status_port=8000)


# --- Real nginx, real exporter ------------------------------------------------------------------


@dataclass
class GatewayWithExporter:
    nginx: RunningNginx
    upstream: sources.TrtllmServerStandIn
    exporter: subprocess.Popen
    metrics_url: str
    syslog_port: int
    keys: tuple[str, str]

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return response.read().decode()

    def wait_for_requests(self, total: float, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.metrics()
            if sum(requests_by_labels(text).values()) >= total or time.monotonic() > deadline:
                return text
            time.sleep(0.05)


def stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def stack() -> Iterator[GatewayWithExporter]:
    keys = (secrets.token_urlsafe(32), secrets.token_urlsafe(32))
    upstream = sources.TrtllmServerStandIn()
    syslog_port = free_loopback_udp_port()
    nginx = start_nginx(upstream.port, keys, settings_overrides=metrics_overrides(syslog_port))
    port = free_loopback_port()
    exporter = start_exporter(upstream.base_url, port, syslog_port, nginx.status_url)
    try:
        wait_for_port(port, 20.0, exporter)
        yield GatewayWithExporter(
            nginx, upstream, exporter, f"http://127.0.0.1:{port}/metrics", syslog_port, keys
        )
    finally:
        upstream.release.set()
        stop_process(exporter)
        nginx.stop()
        upstream.stop()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.slow
def test_real_requests_are_counted_by_route_status_and_fingerprint_and_leak_nothing(
    stack: GatewayWithExporter,
) -> None:
    base = stack.nginx.base_url
    key_a, key_b = stack.keys
    wrong_key = secrets.token_urlsafe(32)
    query_marker = "q" + secrets.token_hex(16)
    path_marker = "/internal-" + secrets.token_hex(8)
    before = requests_by_labels(stack.metrics())
    answers = []
    for _ in range(3):
        answers.append(requests.get(f"{base}/v1/models", headers=bearer(key_a), timeout=10).status_code)
    for _ in range(2):
        answers.append(
            requests.post(
                f"{base}/v1/chat/completions", json={"stream": True}, headers=bearer(key_b), timeout=10
            ).status_code
        )
    answers.append(requests.get(f"{base}/v1/models", timeout=10).status_code)
    answers.append(requests.get(f"{base}/v1/models", headers=bearer(wrong_key), timeout=10).status_code)
    answers.append(
        requests.get(f"{base}{path_marker}?{query_marker}=1", headers=bearer(key_a), timeout=10).status_code
    )
    answers.append(requests.get(f"{base}/metrics", timeout=10).status_code)
    long_query = f"api_key={key_a}&marker={query_marker}&pad=" + "x" * 3000
    answers.append(
        requests.get(f"{base}/v1/models?{long_query}", headers=bearer(key_a), timeout=10).status_code
    )
    answers.append(requests.get(f"{base}/health", timeout=10).status_code)
    assert answers == [200, 200, 200, 200, 200, 401, 401, 404, 404, 200, 200]

    text = stack.wait_for_requests(sum(before.values()) + len(answers))
    counted = requests_by_labels(text)
    delta = {labels: count - before.get(labels, 0) for labels, count in counted.items()}
    a, b = api_key_fingerprint(key_a), api_key_fingerprint(key_b)
    assert {labels: count for labels, count in delta.items() if count} == {
        ("/v1/models", "200", a): 4,
        ("/v1/chat/completions", "200", b): 2,
        ("/v1/models", "401", "none"): 2,
        ("other", "404", a): 1,
        ("other", "404", "none"): 1,
        ("/health", "200", "none"): 1,
    }
    values = samples(text)
    for route in ("/v1/models", "/v1/chat/completions", "other", "/health"):
        count = values[f'gateway_request_duration_seconds_count{{route="{route}"}}']
        assert values[f'gateway_request_duration_seconds_bucket{{route="{route}",le="+Inf"}}'] == count
        # Loopback answers take milliseconds: all of them are within the 10 s bucket.
        assert values[f'gateway_request_duration_seconds_bucket{{route="{route}",le="10.0"}}'] == count
    assert all(values[f'gateway_log_rejected_total{{reason="{reason}"}}'] == 0 for reason in g.REJECT_REASONS)
    assert values["gateway_status_up"] == 1
    # No key (valid or not), nothing from the query string, not the unknown path: only fingerprints.
    for secret in (key_a, key_b, wrong_key, query_marker, path_marker, "Bearer", "api_key="):
        assert secret not in text, secret
    assert set(re.findall(r'key_fingerprint="([^"]*)"', text)) <= {a, b, "none"}
    assert set(re.findall(r'route="([^"]*)"', text)) <= set(g.ROUTE_LABELS)


@pytest.mark.slow
def test_a_stream_in_progress_is_in_flight_until_it_ends(stack: GatewayWithExporter) -> None:
    stack.upstream.release.clear()
    while stack.upstream.streams_started.acquire(blocking=False):
        pass
    before = requests_by_labels(stack.metrics())
    chat = ("/v1/chat/completions", "200", api_key_fingerprint(stack.keys[0]))
    result: dict[str, int] = {}

    def stream() -> None:
        response = requests.post(
            f"{stack.nginx.base_url}/v1/chat/completions",
            json={"stream": True, "hold": True},
            headers=bearer(stack.keys[0]),
            timeout=30,
        )
        result["status"] = response.status_code

    client = threading.Thread(target=stream)
    client.start()
    try:
        assert stack.upstream.streams_started.acquire(timeout=10)
        values = samples(stack.metrics())
        assert values["gateway_requests_in_flight"] == 1
        assert values["gateway_connections_active"] >= 1
        # Not counted until it ends: nginx logs a request when it is done.
        assert requests_by_labels(stack.metrics()).get(chat, 0) == before.get(chat, 0)
    finally:
        stack.upstream.release.set()
        client.join(timeout=30)
    assert result == {"status": 200}
    text = stack.wait_for_requests(sum(before.values()) + 1)
    assert requests_by_labels(text)[chat] == before.get(chat, 0) + 1
    assert samples(text)["gateway_requests_in_flight"] == 0


@pytest.mark.slow
def test_foreign_datagrams_are_counted_and_ignored_and_the_exporter_keeps_serving(
    stack: GatewayWithExporter,
) -> None:
    before = samples(stack.metrics())
    forged = [
        b"\xff\x00garbage",
        line('{"route":"/v1/models","status":"200","key_fingerprint":"","seconds":"0.1"}', tag="sshd"),
        good(route="/forged-route-zzz"),
        good(key="Bearer forged-key-zzz"),
        b"<190>Dec  2 00:41:07 gateway: " + b"{" * 5000,
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for datagram in forged:
            sender.sendto(datagram, ("127.0.0.1", stack.syslog_port))
    deadline = time.monotonic() + 10
    while samples(stack.metrics())["gateway_log_datagrams_total"] < before["gateway_log_datagrams_total"] + 5:
        assert time.monotonic() < deadline, "the exporter did not receive the datagrams"
        time.sleep(0.05)
    text = stack.metrics()
    after = samples(text)
    rejected = {
        reason: after[f'gateway_log_rejected_total{{reason="{reason}"}}']
        - before[f'gateway_log_rejected_total{{reason="{reason}"}}']
        for reason in g.REJECT_REASONS
    }
    assert {reason: count for reason, count in rejected.items() if count} == {
        "encoding": 1,
        "header": 2,
        "route": 1,
        "key_fingerprint": 1,
    }
    assert "zzz" not in text and "sshd" not in text
    assert stack.exporter.poll() is None
    assert requests.get(f"{stack.nginx.base_url}/health", timeout=10).status_code == 200


@pytest.mark.slow
def test_nginx_serves_as_before_when_no_exporter_listens() -> None:
    """UDP: nginx never waits for the exporter; a missing one costs requests nothing."""
    upstream = sources.TrtllmServerStandIn()
    key = secrets.token_urlsafe(32)
    nginx = start_nginx(upstream.port, [key], settings_overrides=metrics_overrides(free_loopback_udp_port()))
    try:
        for _ in range(5):
            started = time.monotonic()
            answer = requests.get(f"{nginx.base_url}/v1/models", headers=bearer(key), timeout=10)
            assert answer.status_code == 200 and time.monotonic() - started < 1.0
        with urllib.request.urlopen(nginx.status_url, timeout=5) as response:
            assert g.parse_stub_status(response.read().decode()).accepts >= 5
        assert nginx.process.poll() is None
        assert '"status":"200"' in nginx.access_log  # the stdout access log is unchanged
        # What nginx does say (measured: about every other request, level error, in the main
        # context's log): that the datagram was refused, with no request in the message.
        for row in nginx.error_log.splitlines():
            assert "send() failed (111: Connection refused)" in row and "request:" not in row, row
        assert key not in nginx.error_log
    finally:
        nginx.stop()
        upstream.stop()

"""The API-key gateway, tested for real: Debian's nginx runs the rendered configuration in front
of OpenAI-compatible servers on loopback.

Two upstreams:
* a paced server written here, which sends one server-sent event every 200 ms, records what
  reaches it and when each event left, so streaming and header stripping can be measured exactly;
* the project's real OpenAI-compatible server (the `openai_server` fixture in conftest.py).

nginx missing is a failure, not a skip: without it nothing here is proven.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from serving.workload.gateway import (
    CLIENT_MAX_BODY_BYTES,
    GATEWAY_API_KEYS_PATH,
    GATEWAY_CONFIG_MOUNT_PATH,
    GATEWAY_NGINX_COMMAND,
    GATEWAY_TLS_DIR,
    HEALTH_ROUTE,
    OPENAI_ROUTES,
    ApiKeyError,
    GatewaySettings,
    api_key_fingerprint,
    gateway_command,
    plain_http_gateway,
    render_api_key_map,
    render_nginx_conf,
)
from tests.support.nginx_runner import (
    RunningNginx,
    check_config,
    find_nginx,
    free_loopback_port,
    free_loopback_udp_port,
    gateway_prefix,
    metrics_overrides,
    settings_for_prefix,
    start_nginx,
    write_gateway_files,
)

# Real nginx processes: left out of the fast loop.
pytestmark = pytest.mark.slow

# Routes trtllm-serve 1.2.1 serves besides the OpenAI API (FACTS.md; openai_server.py). None is
# public: the gateway answers each with 404 whatever the key. The gateway needs no
# list of them: everything outside OPENAI_ROUTES is refused.
TRTLLM_SERVE_INTERNAL_ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", "/health_generate"),
    ("GET", "/version"),
    ("GET", "/metrics"),
    ("GET", "/prometheus/metrics"),
    ("GET", "/perf_metrics"),
    ("GET", "/steady_clock_offset"),
    ("POST", "/steady_clock_offset"),
    ("POST", "/kv_cache_events"),
    ("GET", "/v1/responses/resp_0"),
    ("DELETE", "/v1/responses/resp_0"),
    ("POST", "/release_memory"),
    ("POST", "/resume_memory"),
    ("POST", "/update_weights"),
    ("GET", "/server_info"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
)


REQUEST_TIMEOUT_SECONDS = 20.0
PACED_MODEL = "paced-test-model"
PACED_EVENT_COUNT = 8
PACED_EVENT_INTERVAL_SECONDS = 0.2


def new_key() -> str:
    return secrets.token_urlsafe(32)  # 43 characters of the base64url alphabet


# --- A paced OpenAI-like upstream ---------------------------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body_bytes: int
    # Monotonic time at which the request line and headers had arrived, before the body.
    headers_arrived_at: float


@dataclass
class PacedUpstreamState:
    requests: list[RecordedRequest] = field(default_factory=list)
    # Monotonic time at which each event of the latest stream was handed to the socket.
    event_sent_at: list[float] = field(default_factory=list)
    # Bytes of the latest bulk response that the upstream managed to hand to its socket.
    bulk_bytes_written: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, request: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(request)

    def snapshot(self) -> list[RecordedRequest]:
        with self.lock:
            return list(self.requests)


def _read_request_body(handler: BaseHTTPRequestHandler) -> bytes:
    # nginx forwards an unbuffered body chunked when the client sent it chunked, else as is.
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                handler.rfile.readline()
                return bytes(body)
            body += handler.rfile.read(size)
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length", "0"))
    return handler.rfile.read(length) if length else b""


def make_paced_handler(state: PacedUpstreamState) -> type[BaseHTTPRequestHandler]:
    class PacedHandler(BaseHTTPRequestHandler):
        # HTTP/1.1 with chunked streaming and keep-alive, like uvicorn behind trtllm-serve.
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _record(self, body: bytes, headers_arrived_at: float) -> None:
            state.record(
                RecordedRequest(
                    self.command, self.path, dict(self.headers.items()), len(body), headers_arrived_at
                )
            )

        def _send_json(self, status: int, payload: object) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._record(b"", time.monotonic())
            if self.path == "/health":
                self._send_json(200, {"upstream": "paced"})
            elif self.path == "/v1/models":
                self._send_json(200, {"object": "list", "data": [{"id": PACED_MODEL, "object": "model"}]})
            else:
                self._send_json(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            headers_arrived_at = time.monotonic()
            body = _read_request_body(self)
            self._record(body, headers_arrived_at)
            request = json.loads(body) if self.path == "/v1/chat/completions" else {}
            if request.get("stream"):
                self._stream_events()
            elif "X-Bulk-Bytes" in self.headers:
                self._send_bulk(int(self.headers["X-Bulk-Bytes"]))
            else:
                self._send_json(200, {"received_bytes": len(body)})

        def _send_bulk(self, total_bytes: int) -> None:
            # A long response written as fast as the path to the client lets it go.
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(total_bytes))
            # An upstream asking nginx to buffer must not get its way (proxy_ignore_headers).
            self.send_header("X-Accel-Buffering", "yes")
            self.end_headers()
            with state.lock:
                state.bulk_bytes_written = 0
            piece = b"x" * 65536
            try:
                for _ in range(total_bytes // len(piece)):
                    self.wfile.write(piece)
                    with state.lock:
                        state.bulk_bytes_written += len(piece)
            except OSError:
                self.close_connection = True  # the client went away: nginx closed our side too

        def _stream_events(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            # Recorded before each write, so the client never sees an event whose time is missing.
            with state.lock:
                state.event_sent_at = sent_at = []
            for index in range(PACED_EVENT_COUNT + 1):
                if index:
                    time.sleep(PACED_EVENT_INTERVAL_SECONDS)
                if index < PACED_EVENT_COUNT:
                    chunk = {
                        "object": "chat.completion.chunk",
                        "model": PACED_MODEL,
                        "choices": [{"index": 0, "delta": {"content": f"token{index} "}}],
                    }
                    event = f"data: {json.dumps(chunk)}\n\n".encode()
                else:
                    event = b"data: [DONE]\n\n"
                with state.lock:
                    sent_at.append(time.monotonic())
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return PacedHandler


@dataclass
class PacedUpstream:
    server: ThreadingHTTPServer
    state: PacedUpstreamState
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.server.server_address[1]


@pytest.fixture(scope="module")
def paced_upstream() -> Iterator[PacedUpstream]:
    state = PacedUpstreamState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_paced_handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield PacedUpstream(server, state, thread)
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@dataclass
class Gateway:
    nginx: RunningNginx
    keys: tuple[str, ...]

    @property
    def port(self) -> int:
        return self.nginx.settings.listen_port


@pytest.fixture(scope="module")
def gateway(paced_upstream: PacedUpstream) -> Iterator[Gateway]:
    # Two keys at once, as during a rotation.
    keys = (new_key(), new_key())
    nginx = start_nginx(paced_upstream.port, keys)
    yield Gateway(nginx, keys)
    nginx.stop()


# --- HTTP helpers --------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    port: int,
    method: str,
    path: str,
    *,
    key: str | None = None,
    authorization: str | None = None,
    body: bytes | None = None,
    user_agent: str = "gateway-test",
) -> Reply:
    headers = {"User-Agent": user_agent}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if authorization is not None:
        headers["Authorization"] = authorization
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_SECONDS)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


@dataclass
class StreamedEvent:
    data: str
    arrived_at: float


def stream_chat(
    port: int, key: str, model: str, max_tokens: int = 16
) -> tuple[int, str, list[StreamedEvent]]:
    """POST a streamed chat completion; return status, content type and each event's arrival."""
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": "Count from one to twenty."}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_SECONDS)
    events: list[StreamedEvent] = []
    try:
        connection.request(
            "POST",
            "/v1/chat/completions",
            body=json.dumps(payload).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        content_type = response.headers.get("Content-Type", "")
        if response.status != 200:
            return response.status, content_type, events
        deadline = time.monotonic() + REQUEST_TIMEOUT_SECONDS
        # readline returns as soon as a whole line has arrived: it adds no buffering of its own.
        while time.monotonic() < deadline:
            line = response.readline()
            if not line:
                break
            text = line.decode().strip()
            if text.startswith("data:"):
                events.append(StreamedEvent(text[len("data:") :].strip(), time.monotonic()))
                if events[-1].data == "[DONE]":
                    break
        return response.status, content_type, events
    finally:
        connection.close()


def requests_to(upstream: PacedUpstream, path: str) -> int:
    return sum(1 for request in upstream.state.snapshot() if request.path == path)


# --- Unit tests of the renderers -----------------------------------------------------------------


def test_nginx_conf_is_deterministic_and_follows_settings() -> None:
    settings = GatewaySettings()
    assert render_nginx_conf(settings) == render_nginx_conf(GatewaySettings())
    moved = render_nginx_conf(GatewaySettings(listen_port=9090, upstream_port=8001))
    assert "listen 9090 ssl;" in moved
    assert "server 127.0.0.1:8001 max_fails=0;" in moved
    assert moved != render_nginx_conf(settings)


def test_pod_defaults_fit_the_unprivileged_image_and_the_mounts() -> None:
    settings = GatewaySettings()
    text = render_nginx_conf(settings)
    # TLS by default, on a port a non-root process may bind, with the certificate's Secret mount.
    assert "listen 8443 ssl;" in text
    assert f"ssl_certificate {GATEWAY_TLS_DIR}/tls.crt;" in text
    assert f"ssl_certificate_key {GATEWAY_TLS_DIR}/tls.key;" in text
    assert "listen 8080;" in render_nginx_conf(plain_http_gateway())
    assert "ssl_certificate" not in render_nginx_conf(plain_http_gateway())
    assert f"include {GATEWAY_API_KEYS_PATH};" in text
    assert "pid /tmp/nginx.pid;" in text
    # `daemon off;` comes from the command line; in the file too, nginx would refuse to start.
    assert not [line for line in text.splitlines() if line.strip().startswith("daemon")]
    assert GATEWAY_NGINX_COMMAND[:3] == ("nginx", "-c", GATEWAY_CONFIG_MOUNT_PATH)
    command = gateway_command(settings)
    script = command[2]
    assert command[:2] == ("/bin/sh", "-c")
    assert f"nginx -c {GATEWAY_CONFIG_MOUNT_PATH} -g 'daemon off;' &" in script
    # A rotated key and a renewed certificate both reload nginx.
    assert f"cat {GATEWAY_API_KEYS_PATH} {GATEWAY_TLS_DIR}/tls.crt {GATEWAY_TLS_DIR}/tls.key" in script
    # 'user' is meaningless for a non-root master and nginx warns about it.
    assert "\nuser " not in text


def test_key_map_has_one_line_per_key_and_a_fingerprint_not_the_key_as_value() -> None:
    keys = [new_key(), new_key(), new_key()]
    text = render_api_key_map(keys)
    entry_lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(entry_lines) == 3
    for key, line in zip(keys, entry_lines, strict=False):
        assert key in line
        assert line.endswith(f'"{api_key_fingerprint(key)}";')
    assert render_api_key_map(keys) == text


@pytest.mark.parametrize(
    ("bad_key", "expected_words"),
    [
        ("short-key", "9 characters; at least 32"),
        ("a" * 40 + '"; default "ok', "disallowed character"),
        ("a" * 40 + "; include /etc/passwd", "disallowed character"),
        ("a" * 40 + " b", "whitespace U+0020"),
        ("a" * 40 + "{}", "disallowed character"),
        ("a" * 40 + "$host", "U+0024"),
        ("a" * 40 + ".*", "disallowed character"),
        ("a" * 600, "at most 512"),
    ],
)
def test_key_validation_names_the_problem_without_echoing_the_key(bad_key: str, expected_words: str) -> None:
    good = new_key()
    with pytest.raises(ApiKeyError) as raised:
        render_api_key_map([good, bad_key])
    message = str(raised.value)
    assert "API key #2" in message
    assert expected_words in message
    assert bad_key not in message and good not in message
    # Not even a recognisable piece of the offending key.
    assert "aaaaaaaa" not in message and "short-key" not in message


def test_key_map_refuses_empty_duplicate_and_bare_string() -> None:
    key = new_key()
    with pytest.raises(ApiKeyError, match="empty"):
        render_api_key_map([])
    with pytest.raises(ApiKeyError, match="#2 repeats API key #1"):
        render_api_key_map([key, key])
    with pytest.raises(ApiKeyError, match="not one string"):
        render_api_key_map(key)


@pytest.mark.parametrize(
    ("overrides", "expected_words"),
    [
        ({"listen_port": 0}, "listen_port=0"),
        ({"upstream_port": 70000}, "upstream_port=70000"),
        ({"api_key_map_path": "/etc/x; include /y"}, "api_key_map_path"),
        ({"upstream_read_timeout_seconds": 0}, "upstream_read_timeout_seconds=0"),
        ({"worker_processes": 0}, "worker_processes=0"),
        ({"limit_conn_per_address": 0}, "limit_conn_per_address=0"),
        ({"client_header_timeout_seconds": 0}, "client_header_timeout_seconds=0"),
        ({"worker_connections": 8192, "worker_rlimit_nofile": 4096}, "worker_rlimit_nofile=4096"),
        ({"lingering_time_seconds": 1, "lingering_timeout_seconds": 5}, "lingering_timeout_seconds=5"),
    ],
)
def test_settings_reject_values_that_would_break_the_config(overrides: dict, expected_words: str) -> None:
    with pytest.raises(ValueError, match=expected_words):
        GatewaySettings(**overrides)


def _locations(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("location ")]


def test_only_the_openai_routes_and_health_have_a_proxied_location() -> None:
    full = render_nginx_conf(GatewaySettings())
    # The public server only: the pod's stub_status listener (127.0.0.1 only, for the metrics
    # exporter) is a second server block after it, checked in test_gateway_metrics.py.
    text = full[: full.index("server {", full.index("server {") + 1)]
    assert "listen 127.0.0.1:" in full[len(text) :] and "proxy_pass" not in full[len(text) :]
    exact = {line.split()[2] for line in _locations(text) if line.split()[1] == "="}
    assert exact == {path for _, path in (*OPENAI_ROUTES, HEALTH_ROUTE)}
    # Every proxy_pass names one of those paths: nothing is passed on under a prefix.
    passes = [line.strip() for line in text.splitlines() if line.strip().startswith("proxy_pass ")]
    assert sorted(passes) == sorted(
        f"proxy_pass http://trtllm_serve{path};" for _, path in (*OPENAI_ROUTES, HEALTH_ROUTE)
    )
    # The one prefix location answers 404 and passes nothing on.
    catch_all = text[text.index("location / {") :]
    assert catch_all[: catch_all.index("}")].split("\n")[1].strip() == "return 404;"
    assert [method for method, _ in OPENAI_ROUTES] == ["GET", "POST", "POST", "POST"]


def test_logs_hold_no_query_string_and_no_request_line() -> None:
    text = render_nginx_conf(GatewaySettings())
    log_format = next(line for line in text.splitlines() if "log_format" in line)
    assert '"path":"$uri"' in log_format
    for variable in ('$request"', "$request_uri", "$args", "$query_string", "$http_authorization"):
        assert variable not in log_format, variable
    assert "$arg_" not in log_format and "$http_referer" not in log_format
    # Request-level messages (which carry the request line) are logged only at crit and above.
    http_block = text[text.index("http {") :]
    assert http_block.index("error_log stderr crit;") < http_block.index("server {")
    assert "\nerror_log stderr warn;" in text[: text.index("http {")]


def test_abuse_limits_are_rendered_from_the_settings() -> None:
    settings = GatewaySettings()
    text = render_nginx_conf(settings)
    assert f"worker_connections {settings.worker_connections};" in text
    assert f"worker_rlimit_nofile {settings.worker_rlimit_nofile};" in text
    assert settings.worker_connections >= 8192
    assert settings.worker_rlimit_nofile >= settings.worker_connections
    assert "limit_conn_zone $binary_remote_addr zone=per_address:4m;" in text
    assert f"limit_conn per_address {settings.limit_conn_per_address};" in text
    # 4 replicas a node x max_batch_size 64: one client filling a node's batch is not refused.
    assert settings.limit_conn_per_address >= 4 * 64
    assert "client_header_timeout 10s;" in text
    assert f"client_body_timeout {settings.client_body_timeout_seconds}s;" in text
    assert "reset_timedout_connection on;" in text
    moved = render_nginx_conf(GatewaySettings(limit_conn_per_address=7, client_header_timeout_seconds=3))
    assert "limit_conn per_address 7;" in moved and "client_header_timeout 3s;" in moved


# --- Real nginx in front of the paced upstream ---------------------------------------------------


def test_nginx_binary_is_installed() -> None:
    # Fails (does not skip) on a machine without nginx, with the install command in the message.
    assert Path(find_nginx()).is_file()


def test_rendered_config_passes_nginx_t() -> None:
    with gateway_prefix() as prefix:
        settings = settings_for_prefix(prefix, upstream_port=8000, listen_port=free_loopback_port())
        conf_path = write_gateway_files(prefix, settings, [new_key()])
        result = check_config(conf_path, prefix)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert "[warn]" not in result.stderr, result.stderr


def test_rendered_config_with_the_pods_metrics_lines_passes_nginx_t() -> None:
    # The pod's default: the syslog line to the exporter and the loopback stub_status listener
    # (the other tests here turn both off, so that nginx processes never share a port).
    with gateway_prefix() as prefix:
        overrides = metrics_overrides(free_loopback_udp_port())
        settings = settings_for_prefix(prefix, 8000, free_loopback_port(), overrides)
        text = write_gateway_files(prefix, settings, [new_key()]).read_text()
        result = check_config(prefix / "nginx.conf", prefix)
    assert "access_log syslog:server=127.0.0.1:" in text and "stub_status;" in text
    assert result.returncode == 0, result.stderr
    assert "[warn]" not in result.stderr, result.stderr


def test_config_without_the_key_map_file_fails_nginx_t() -> None:
    # The key map is required: a pod whose Secret is missing must not come up open.
    with gateway_prefix() as prefix:
        settings = settings_for_prefix(prefix, upstream_port=8000, listen_port=free_loopback_port())
        conf_path = write_gateway_files(prefix, settings, [new_key()])
        Path(settings.api_key_map_path).unlink()
        result = check_config(conf_path, prefix)
    assert result.returncode != 0
    assert "api-keys.map" in result.stderr


def test_health_needs_no_key_and_answers_from_the_upstream(
    gateway: Gateway, paced_upstream: PacedUpstream
) -> None:
    before = requests_to(paced_upstream, "/health")
    reply = call(gateway.port, "GET", "/health")
    assert reply.status == 200
    assert reply.json() == {"upstream": "paced"}
    assert requests_to(paced_upstream, "/health") == before + 1


def test_health_is_502_while_nothing_listens_upstream() -> None:
    # While the model loads, trtllm-serve does not listen at all: the target must stay unhealthy.
    nginx = start_nginx(upstream_port=free_loopback_port(), api_keys=[new_key()])
    try:
        assert call(nginx.settings.listen_port, "GET", "/health").status == 502
    finally:
        nginx.stop()


def test_request_without_key_is_401_json_and_never_reaches_upstream(
    gateway: Gateway, paced_upstream: PacedUpstream
) -> None:
    before = requests_to(paced_upstream, "/v1/models")
    reply = call(gateway.port, "GET", "/v1/models")
    assert reply.status == 401
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    error = reply.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert "Authorization: Bearer" in error["message"]
    assert requests_to(paced_upstream, "/v1/models") == before


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(lambda key: f"Bearer {new_key()}", id="unknown-key"),
        pytest.param(lambda key: f"Bearer {key.swapcase()}", id="key-with-case-flipped"),
        pytest.param(lambda key: f"Bearer {key[:-1]}", id="key-truncated"),
        pytest.param(lambda key: f"Bearer {key}x", id="key-with-suffix"),
        pytest.param(lambda key: key, id="key-without-scheme"),
        pytest.param(lambda key: f"Basic {key}", id="other-scheme"),
        pytest.param(lambda key: f"Bearer {key}, Bearer {key}", id="key-twice"),
    ],
)
def test_wrong_key_is_401(gateway: Gateway, paced_upstream: PacedUpstream, authorization) -> None:
    before = len(paced_upstream.state.snapshot())
    reply = call(
        gateway.port,
        "POST",
        "/v1/chat/completions",
        authorization=authorization(gateway.keys[0]),
        body=b'{"model": "x"}',
    )
    assert reply.status == 401
    assert reply.json()["error"]["code"] == "invalid_api_key"
    assert len(paced_upstream.state.snapshot()) == before


def test_every_configured_key_passes_and_lists_the_model(gateway: Gateway) -> None:
    for key in gateway.keys:
        reply = call(gateway.port, "GET", "/v1/models", key=key)
        assert reply.status == 200
        assert [model["id"] for model in reply.json()["data"]] == [PACED_MODEL]
    # The auth scheme is case-insensitive in HTTP; the key is not.
    lower_scheme = call(gateway.port, "GET", "/v1/models", authorization=f"bearer {gateway.keys[0]}")
    assert lower_scheme.status == 200


def test_authorization_header_is_not_forwarded(gateway: Gateway, paced_upstream: PacedUpstream) -> None:
    reply = call(
        gateway.port,
        "POST",
        "/v1/chat/completions",
        key=gateway.keys[0],
        body=json.dumps({"model": PACED_MODEL, "messages": []}).encode(),
    )
    assert reply.status == 200
    forwarded = paced_upstream.state.snapshot()[-1]
    assert forwarded.path == "/v1/chat/completions"
    assert "authorization" not in {name.lower() for name in forwarded.headers}
    assert gateway.keys[0] not in json.dumps(forwarded.headers)
    assert forwarded.headers.get("X-Request-ID")


def test_stream_arrives_event_by_event_not_buffered(gateway: Gateway, paced_upstream: PacedUpstream) -> None:
    started = time.monotonic()
    status, content_type, events = stream_chat(gateway.port, gateway.keys[0], PACED_MODEL)
    assert status == 200
    assert content_type.startswith("text/event-stream")
    assert [event.data for event in events][-1] == "[DONE]"
    assert len(events) == PACED_EVENT_COUNT + 1
    with paced_upstream.state.lock:
        sent_at = list(paced_upstream.state.event_sent_at)
    assert len(sent_at) == len(events) and sent_at[0] >= started
    # Each event reaches the client within 150 ms of leaving the upstream (they are 200 ms apart);
    # a buffering proxy would deliver the early ones only at the end, 1.6 s late.
    delays = [event.arrived_at - sent for event, sent in zip(events, sent_at, strict=False)]
    assert max(delays) < 0.15, delays
    # The first event arrives well before the last one has even been sent.
    assert events[0].arrived_at < sent_at[-1] - 1.0
    arrivals = [event.arrived_at for event in events]
    assert len({round(t, 2) for t in arrivals}) == len(events)
    assert arrivals[-1] - arrivals[0] > (PACED_EVENT_COUNT - 1) * PACED_EVENT_INTERVAL_SECONDS


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _read_until_closed(connection: socket.socket) -> bytes:
    received = bytearray()
    deadline = time.monotonic() + REQUEST_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        data = connection.recv(65536)
        if not data:
            break
        received += data
    return bytes(received)


def test_request_body_reaches_upstream_while_the_client_still_uploads(
    gateway: Gateway, paced_upstream: PacedUpstream
) -> None:
    # A 96k-token prompt is megabytes: the server should start reading it while it uploads,
    # not after nginx has stored all of it (proxy_request_buffering off).
    head = (
        "POST /v1/completions HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
        f"Authorization: Bearer {gateway.keys[0]}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    first_part, last_part = b'{"model": "m", "prompt": "one', b' two"}'
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=REQUEST_TIMEOUT_SECONDS) as connection:
        connection.sendall(head + _chunk(first_part))
        time.sleep(1.0)
        last_part_sent_at = time.monotonic()
        connection.sendall(_chunk(last_part) + b"0\r\n\r\n")
        response = _read_until_closed(connection)
    assert response.startswith(b"HTTP/1.1 200"), response[:200]
    forwarded = [r for r in paced_upstream.state.snapshot() if r.path == "/v1/completions"][-1]
    assert forwarded.body_bytes == len(first_part) + len(last_part)
    assert forwarded.headers_arrived_at < last_part_sent_at - 0.5


def test_slow_client_holds_the_upstream_back_instead_of_filling_the_sidecar(
    gateway: Gateway, paced_upstream: PacedUpstream
) -> None:
    # proxy_buffering off: nginx holds one small buffer per stream, so a client that stops
    # reading stalls its own stream. Buffered, nginx would read ahead up to 1 GiB per response
    # into its temp directory, which in the pod is a memory-backed emptyDir.
    total_bytes = 256 * 1024 * 1024
    head = (
        "POST /v1/completions HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
        f"Authorization: Bearer {gateway.keys[0]}\r\nX-Bulk-Bytes: {total_bytes}\r\n"
        "Content-Length: 2\r\n\r\n{}"
    ).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as connection:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        connection.settimeout(REQUEST_TIMEOUT_SECONDS)
        connection.connect(("127.0.0.1", gateway.port))
        connection.sendall(head)
        time.sleep(2.0)  # the client reads nothing meanwhile
        with paced_upstream.state.lock:
            written_while_stalled = paced_upstream.state.bulk_bytes_written
    # Measured: about 8 MB (kernel socket buffers on loopback); buffered, all 256 MB.
    assert 0 < written_while_stalled < 32 * 1024 * 1024, written_while_stalled


def test_streamed_response_tells_downstream_proxies_not_to_buffer(gateway: Gateway) -> None:
    reply = call(gateway.port, "GET", "/v1/models", key=gateway.keys[0])
    assert reply.headers["X-Accel-Buffering"] == "no"


def test_server_header_has_no_version(gateway: Gateway) -> None:
    assert call(gateway.port, "GET", "/v1/models").headers["Server"] == "nginx"


def test_longest_prompt_body_passes_and_a_larger_one_is_413(
    gateway: Gateway, paced_upstream: PacedUpstream
) -> None:
    # A body just under the limit (4 MiB, four times nginx's default): a 98304-token prompt of
    # escaped non-Latin text fits.
    filler = "\\u4e2d" * ((CLIENT_MAX_BODY_BYTES - 4096) // 6)
    body = (
        json.dumps({"model": PACED_MODEL, "messages": []})[:-1].encode()
        + b', "prompt_filler": "'
        + filler.encode()
        + b'"}'
    )
    assert len(body) < CLIENT_MAX_BODY_BYTES
    reply = call(gateway.port, "POST", "/v1/completions", key=gateway.keys[0], body=body)
    assert reply.status == 200
    assert reply.json() == {"received_bytes": len(body)}

    before = len(paced_upstream.state.snapshot())
    too_large = b"x" * (CLIENT_MAX_BODY_BYTES + 1)
    reply = call(gateway.port, "POST", "/v1/completions", key=gateway.keys[0], body=too_large)
    assert reply.status == 413
    assert reply.json()["error"]["code"] == "request_too_large"
    assert len(paced_upstream.state.snapshot()) == before


def wait_for_log_entries(nginx: RunningNginx, user_agents: set[str]) -> dict[str, dict]:
    """Access-log entries by user agent; workers write them just after answering, so poll."""
    deadline = time.monotonic() + 5
    while True:
        entries = {}
        for line in nginx.access_log.splitlines():
            entry = json.loads(line)
            if entry["user_agent"] in user_agents:
                entries[entry["user_agent"]] = entry
        if set(entries) == user_agents or time.monotonic() > deadline:
            return entries
        time.sleep(0.05)


def test_access_log_holds_fingerprints_never_keys(gateway: Gateway) -> None:
    wrong_key = new_key()
    good_agent, bad_agent = f"good-{new_key()[:8]}", f"bad-{new_key()[:8]}"
    call(gateway.port, "GET", "/v1/models", key=gateway.keys[1], user_agent=good_agent)
    call(gateway.port, "GET", "/v1/models?api_key=" + wrong_key, key=wrong_key, user_agent=bad_agent)
    entries = wait_for_log_entries(gateway.nginx, {good_agent, bad_agent})
    assert set(entries) == {good_agent, bad_agent}, gateway.nginx.access_log
    assert entries[good_agent]["api_key"] == api_key_fingerprint(gateway.keys[1])
    assert entries[good_agent]["status"] == "200"
    assert entries[bad_agent]["api_key"] == "" and entries[bad_agent]["status"] == "401"
    assert entries[bad_agent]["path"] == "/v1/models"
    log = gateway.nginx.access_log
    for key in (*gateway.keys, wrong_key):
        assert key not in log


# --- The allowlist: only the OpenAI routes reach the server ---------------------------------------

# Outside the allowlist: trtllm-serve's own internal routes, unknown paths, other methods on the
# allowed paths, and spellings that nginx normalises to an internal route.
REFUSED_REQUESTS = [
    *TRTLLM_SERVE_INTERNAL_ROUTES,
    ("GET", "/"),
    ("GET", "/v1"),
    ("GET", "/v1/"),
    ("GET", "/v1/models/openai/gpt-oss-120b"),
    ("GET", "/v1/models/"),
    ("GET", "/V1/MODELS"),
    ("POST", "/v1/chat/completions/"),
    ("GET", "/v1/embeddings"),
    ("GET", "/unknown"),
    ("GET", "/metrics?format=json"),
    ("GET", "/v1/models/../../metrics"),
    ("GET", "/v1/%2e%2e/metrics"),
    ("PUT", "/v1/models"),
    ("DELETE", "/v1/models"),
    ("POST", "/v1/models"),
    ("HEAD", "/v1/models"),
    ("OPTIONS", "/v1/chat/completions"),
    ("GET", "/v1/chat/completions"),
    ("PUT", "/v1/chat/completions"),
    ("PATCH", "/v1/completions"),
    ("DELETE", "/v1/responses"),
    ("GET", "/v1/responses"),
    ("TRACE", "/v1/models"),
    ("POST", "/health"),
    ("DELETE", "/health"),
]


@pytest.mark.parametrize("with_key", [False, True], ids=["no-key", "valid-key"])
@pytest.mark.parametrize(("method", "path"), REFUSED_REQUESTS, ids=[f"{m} {p}" for m, p in REFUSED_REQUESTS])
def test_everything_outside_the_allowlist_is_404_from_the_gateway(
    gateway: Gateway, paced_upstream: PacedUpstream, method: str, path: str, with_key: bool
) -> None:
    before = len(paced_upstream.state.snapshot())
    body = b"{}" if method in ("POST", "PUT", "PATCH") else None
    reply = call(gateway.port, method, path, key=gateway.keys[0] if with_key else None, body=body)
    # The same answer with or without a valid key: a 404 tells nothing about keys.
    assert reply.status == 404, (reply.status, reply.body[:200])
    if method != "HEAD":
        assert reply.headers["Content-Type"].startswith("application/json")
        assert reply.json()["error"]["code"] == "not_found"
    assert "WWW-Authenticate" not in reply.headers
    # The refused client's connection is closed, not kept alive for free.
    assert reply.headers["Connection"] == "close"
    assert len(paced_upstream.state.snapshot()) == before


@pytest.mark.parametrize(("method", "path"), OPENAI_ROUTES, ids=[f"{m} {p}" for m, p in OPENAI_ROUTES])
def test_each_openai_route_reaches_the_server_with_a_key_and_is_401_without(
    gateway: Gateway, paced_upstream: PacedUpstream, method: str, path: str
) -> None:
    body = (
        json.dumps({"model": PACED_MODEL, "messages": [], "input": "hi"}).encode()
        if method == "POST"
        else None
    )
    before = len(paced_upstream.state.snapshot())
    refused = call(gateway.port, method, path, body=body)
    assert refused.status == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert len(paced_upstream.state.snapshot()) == before

    reply = call(gateway.port, method, path, key=gateway.keys[0], body=body)
    assert reply.status == 200, reply.body[:200]
    forwarded = paced_upstream.state.snapshot()[before:]
    assert [(request.method, request.path) for request in forwarded] == [(method, path)]


@pytest.mark.parametrize(
    "spelling",
    ["//v1//models", "/v1/./models", "/metrics/../v1/models", "/v1/%6Dodels", "/v1/models?limit=1"],
)
def test_the_server_sees_the_canonical_path_whatever_the_client_spelling(
    gateway: Gateway, paced_upstream: PacedUpstream, spelling: str
) -> None:
    # nginx matches the normalised path; the server gets that path, never the client's spelling,
    # so no spelling can mean an allowed route to nginx and an internal one to uvicorn.
    before = len(paced_upstream.state.snapshot())
    reply = call(gateway.port, "GET", spelling, key=gateway.keys[0])
    forwarded = paced_upstream.state.snapshot()[before:]
    assert len(forwarded) == 1
    query = spelling.partition("?")[2]
    assert forwarded[0].path == "/v1/models" + (f"?{query}" if query else "")
    if not query:
        assert reply.status == 200


def test_health_stays_open_without_a_key_and_only_for_get(
    gateway: Gateway, paced_upstream: PacedUpstream
) -> None:
    before = requests_to(paced_upstream, "/health")
    assert call(gateway.port, "GET", "/health").status == 200
    assert call(gateway.port, "GET", "/health", key=new_key()).status == 200
    assert call(gateway.port, "POST", "/health", body=b"{}").status == 404
    assert requests_to(paced_upstream, "/health") == before + 2


def test_workers_run_with_the_configured_open_file_limit(gateway: Gateway) -> None:
    # worker_rlimit_nofile is set by each worker itself (setrlimit), here as an unprivileged
    # user: it works as long as it does not exceed the hard limit nginx was started with.
    expected = gateway.nginx.settings.worker_processes
    deadline = time.monotonic() + 5  # the port listens before the master has forked its workers
    workers = gateway.nginx.worker_pids()
    while len(workers) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
        workers = gateway.nginx.worker_pids()
    assert len(workers) == expected
    wanted = gateway.nginx.settings.worker_rlimit_nofile
    for pid in workers:
        assert gateway.nginx.open_file_limit(pid) == (wanted, wanted)
    assert "setrlimit" not in gateway.nginx.error_log


def test_no_query_string_or_header_reaches_either_log_when_the_upstream_is_down() -> None:
    # nginx's error log appends `request: "GET /path?query HTTP/1.1"`, `host:` and `referrer:`
    # to every message about a request, and logs a failed upstream connect at level error. With
    # trtllm-serve down (502), neither log may show a query string or a header.
    key, wrong_key = new_key(), new_key()
    query_marker, header_marker = f"qs{new_key()[:12]}", f"hd{new_key()[:12]}"
    nginx = start_nginx(upstream_port=free_loopback_port(), api_keys=[key])
    agent = f"markers-{new_key()[:8]}"
    headers = {
        "User-Agent": agent,
        "Referer": f"https://{header_marker}.example/",
        "X-Client-Secret": header_marker,
        "Cookie": f"session={header_marker}",
    }
    requests = [
        ("GET", f"/v1/models?api_key={query_marker}", f"Bearer {key}", 502),
        ("POST", f"/v1/chat/completions?token={query_marker}", f"Bearer {key}", 502),
        ("GET", f"/health?probe={query_marker}", None, 502),
        ("GET", f"/v1/models?api_key={query_marker}", f"Bearer {wrong_key}", 401),
        ("GET", f"/metrics?x={query_marker}", f"Bearer {key}", 404),
    ]
    try:
        for method, target, authorization, expected in requests:
            connection = http.client.HTTPConnection(
                "127.0.0.1", nginx.settings.listen_port, timeout=REQUEST_TIMEOUT_SECONDS
            )
            try:
                sent = dict(headers, Host=f"{header_marker}.example")
                if authorization:
                    sent["Authorization"] = authorization
                body = b'{"model": "m", "messages": []}' if method == "POST" else None
                connection.request(method, target, body=body, headers=sent)
                assert connection.getresponse().status == expected, target
            finally:
                connection.close()
        deadline = time.monotonic() + 5
        while nginx.access_log.count(agent) < len(requests) and time.monotonic() < deadline:
            time.sleep(0.05)
        access_log, error_log = nginx.access_log, nginx.error_log
    finally:
        nginx.stop()
    # Two workers write the log, each just after answering: lines may swap places.
    entries = [json.loads(line) for line in access_log.splitlines() if agent in line]
    assert sorted(entry["status"] for entry in entries) == sorted(str(expected) for *_, expected in requests)
    proxied = [entry for entry in entries if entry["status"] == "502"]
    assert {entry["path"] for entry in proxied} == {"/v1/models", "/v1/chat/completions", "/health"}
    assert all(entry["upstream_status"] == "502" for entry in proxied)
    for log in (access_log, error_log):
        for marker in (query_marker, header_marker, key, wrong_key, "Bearer"):
            assert marker not in log, (marker, log[-2000:])
    assert "request:" not in error_log


def _replace_like_kubelet(path: Path, text: str) -> None:
    # The kubelet swaps a refreshed Secret in atomically; a reader never sees half a file.
    staged = path.with_name(path.name + ".new")
    staged.write_text(text)
    os.chmod(staged, 0o644)
    os.replace(staged, path)


@pytest.mark.parametrize("shell", ["dash", "busybox-ash"])
def test_key_rotation_takes_effect_without_restart(paced_upstream: PacedUpstream, shell: str) -> None:
    """Add the new key, move clients, remove the old key: the entrypoint reloads nginx each time."""
    old_key, new = new_key(), new_key()
    nginx = start_nginx(paced_upstream.port, [old_key], entrypoint_poll_seconds=1, entrypoint_shell=shell)
    key_map = Path(nginx.settings.api_key_map_path)
    port = nginx.settings.listen_port

    def status_once_settled(key: str, expected_status: int) -> int:
        deadline = time.monotonic() + 10
        status = call(port, "GET", "/v1/models", key=key).status
        while status != expected_status and time.monotonic() < deadline:
            time.sleep(0.1)
            status = call(port, "GET", "/v1/models", key=key).status
        return status

    try:
        assert call(port, "GET", "/v1/models", key=new).status == 401
        _replace_like_kubelet(key_map, render_api_key_map([old_key, new]))
        assert status_once_settled(new, 200) == 200
        assert call(port, "GET", "/v1/models", key=old_key).status == 200
        _replace_like_kubelet(key_map, render_api_key_map([new]))
        assert status_once_settled(old_key, 401) == 401
        assert call(port, "GET", "/v1/models", key=new).status == 200
        assert nginx.process.poll() is None
        assert "reloading nginx" in nginx.error_log
    finally:
        nginx.stop()


@pytest.mark.parametrize("shell", ["dash", "busybox-ash"])
@pytest.mark.parametrize("stop_signal", [signal.SIGQUIT, signal.SIGTERM], ids=["SIGQUIT", "SIGTERM"])
def test_graceful_stop_lets_a_running_stream_finish_and_refuses_new_connections(
    paced_upstream: PacedUpstream, stop_signal: signal.Signals, shell: str
) -> None:
    # Pod termination signals the entrypoint (the image's STOPSIGNAL, SIGQUIT, or SIGTERM):
    # nginx closes its listener at once but lets streams in flight run to their end, within
    # worker_shutdown_timeout, and the container then exits cleanly.
    key = new_key()
    nginx = start_nginx(paced_upstream.port, [key], entrypoint_poll_seconds=1, entrypoint_shell=shell)
    outcome: dict[str, Any] = {}

    def consume() -> None:
        outcome["result"] = stream_chat(nginx.settings.listen_port, key, PACED_MODEL)

    reader = threading.Thread(target=consume, daemon=True)
    previous_stream = paced_upstream.state.event_sent_at
    try:
        reader.start()
        deadline = time.monotonic() + 5
        while paced_upstream.state.event_sent_at is previous_stream and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(PACED_EVENT_INTERVAL_SECONDS)  # the stream is under way
        nginx.process.send_signal(stop_signal)
        time.sleep(0.3)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", nginx.settings.listen_port), timeout=2).close()
        reader.join(timeout=REQUEST_TIMEOUT_SECONDS)
        status, _, events = outcome["result"]
        assert status == 200
        assert len(events) == PACED_EVENT_COUNT + 1 and events[-1].data == "[DONE]"
        assert nginx.process.wait(timeout=10) == 0
    finally:
        nginx.stop()


# --- Real nginx in front of the real OpenAI-compatible server ------------------------------------


@pytest.fixture(scope="module")
def real_gateway(openai_server) -> Iterator[Gateway]:
    upstream = urlsplit(openai_server.base_url)
    assert upstream.hostname in ("127.0.0.1", "localhost"), openai_server.base_url
    keys = (new_key(),)
    nginx = start_nginx(upstream.port, keys)
    yield Gateway(nginx, keys)
    nginx.stop()


def test_real_server_health_is_open_and_api_needs_the_key(real_gateway: Gateway, openai_server) -> None:
    direct_health = urlsplit(openai_server.base_url)
    direct = http.client.HTTPConnection(
        direct_health.hostname, direct_health.port, timeout=REQUEST_TIMEOUT_SECONDS
    )
    try:
        direct.request("GET", "/health")
        direct_status = direct.getresponse().status
    finally:
        direct.close()
    assert call(real_gateway.port, "GET", "/health").status == direct_status

    assert call(real_gateway.port, "GET", "/v1/models").status == 401
    assert call(real_gateway.port, "GET", "/v1/models", key=new_key()).status == 401
    reply = call(real_gateway.port, "GET", "/v1/models", key=real_gateway.keys[0])
    assert reply.status == 200
    assert openai_server.model in [model["id"] for model in reply.json()["data"]]


def test_real_server_stream_arrives_in_chunks_through_nginx(real_gateway: Gateway, openai_server) -> None:
    status, content_type, events = stream_chat(
        real_gateway.port, real_gateway.keys[0], openai_server.model, max_tokens=32
    )
    assert status == 200
    assert content_type.startswith("text/event-stream")
    # Some servers end with "data: [DONE]", some (transformers serve) just close the body.
    chunks = [json.loads(event.data) for event in events if event.data != "[DONE]"]
    assert len(chunks) >= 5, events
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert chunks[-1]["choices"] and chunks[-1]["choices"][0]["finish_reason"]
    # The tiny model emits a token about every 1-2 ms (measured here: 30 events over ~40 ms, the
    # same pattern direct and through nginx). Unbuffered, the events arrive at distinct
    # milliseconds spread over the stream; a buffering proxy would hand them over in one go.
    arrivals = [event.arrived_at for event in events]
    distinct_ms = {round(t * 1000) for t in arrivals}
    assert len(distinct_ms) >= max(5, len(events) // 3), arrivals
    assert arrivals[-1] - arrivals[0] > 0.01, arrivals

"""The gateway's abuse limits under load, on Debian's nginx with the rendered configuration.

* 2,000 half-open connections without a key (a partial request line or partial headers, then
  nothing) are held while a keyed request is answered within 1 s;
* half-open connections and a client that sends its headers one byte a second are closed after
  client_header_timeout;
* limit_conn refuses keyed requests beyond the per-address limit from one address (429) while
  another address is served, and the default limit lets 64 concurrent streams from one address
  through.

All traffic is on loopback (the clients bind 127.0.0.1, 127.0.0.2 or 127.0.0.3, nginx listens on
127.0.0.1); every loop is bounded in count and time; every socket is closed in `finally`.
Numbers are printed: `pytest -s tests/serving/workload/test_gateway_load.py` shows them.
"""

from __future__ import annotations

import http.client
import json
import resource
import secrets
import selectors
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.nginx_runner import RunningNginx, start_nginx
from tests.support.sse_replay_server import ReplayHandler, ReplayServer, ReplayState

pytestmark = pytest.mark.slow

HALF_OPEN_CONNECTIONS = 2000
# What a keyed request must take at most while the half-open connections are held.
KEYED_LATENCY_BUDGET_SECONDS = 1.0
REQUEST_TIMEOUT_SECONDS = 10.0
# Opening the half-open connections must not take longer than this (measured: about 0.3 s).
OPEN_BUDGET_SECONDS = 20.0
# How long the half-open connections sit in nginx before the keyed requests are made.
HOLD_BEFORE_REQUESTS_SECONDS = 1.0
# The short header timeout of the timeout tests, and what the per-address-limit test allows.
SHORT_HEADER_TIMEOUT_SECONDS = 2
SMALL_PER_ADDRESS_LIMIT = 8
MODEL = "openai/gpt-oss-120b"

# Loopback source addresses (all of 127.0.0.0/8 is loopback on Linux).
FLOOD_ADDRESS = "127.0.0.1"
KEYED_ADDRESS = "127.0.0.2"
OTHER_ADDRESS = "127.0.0.3"

# What each half-open connection sends before going silent: half stop inside the request line,
# half inside the headers (a keyless slowloris).
PARTIAL_REQUESTS = (
    b"GET /v1/mod",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nUser-Agent: half-open\r\n",
)


def new_key() -> str:
    return secrets.token_urlsafe(32)


def ensure_open_file_limit(needed: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE (up to its hard limit) so it can hold `needed`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == resource.RLIM_INFINITY or soft >= needed, f"open-file limit {soft} < {needed}"


class NoDelayReplayHandler(ReplayHandler):
    # uvicorn (asyncio) sets TCP_NODELAY; without it, the replay server's separate writes of
    # headers and body wait for nginx's delayed ACK, adding 40 ms to every answer.
    disable_nagle_algorithm = True


class WideReplayServer(ReplayServer):
    # socketserver's default listen backlog (5) would drop nginx's connects when 64 streams start
    # at once.
    request_queue_size = 256

    def __init__(self, state: ReplayState) -> None:
        super().__init__(state)
        self.RequestHandlerClass = NoDelayReplayHandler


@dataclass
class Gateway:
    nginx: RunningNginx
    key: str
    upstream: ReplayServer

    @property
    def port(self) -> int:
        return self.nginx.settings.listen_port


@pytest.fixture(scope="module")
def upstream() -> Iterator[ReplayServer]:
    with WideReplayServer(ReplayState(model=MODEL)) as server:
        yield server


@pytest.fixture(scope="module")
def production_gateway(upstream: ReplayServer) -> Iterator[Gateway]:
    """The pod's settings (limits, timeouts, worker_connections) with only paths and port moved."""
    key = new_key()
    nginx = start_nginx(upstream.server_address[1], [key])
    try:
        yield Gateway(nginx, key, upstream)
    finally:
        nginx.stop()


@pytest.fixture(scope="module")
def short_timeout_gateway(upstream: ReplayServer) -> Iterator[Gateway]:
    key = new_key()
    nginx = start_nginx(
        upstream.server_address[1],
        [key],
        settings_overrides={
            "client_header_timeout_seconds": SHORT_HEADER_TIMEOUT_SECONDS,
            "limit_conn_per_address": SMALL_PER_ADDRESS_LIMIT,
        },
    )
    try:
        yield Gateway(nginx, key, upstream)
    finally:
        nginx.stop()


# --- Clients -------------------------------------------------------------------------------------


@dataclass
class Timed:
    status: int
    seconds: float
    body: bytes
    connection_header: str | None


def timed_request(
    port: int, method: str, path: str, *, key: str | None, source: str, body: bytes | None = None
) -> Timed:
    """One request from `source`; the time covers connect, request and the whole body."""
    headers = {"User-Agent": "gateway-load-test"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if body is not None:
        headers["Content-Type"] = "application/json"
    started = time.perf_counter()
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=REQUEST_TIMEOUT_SECONDS, source_address=(source, 0)
    )
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        return Timed(response.status, time.perf_counter() - started, data, response.getheader("Connection"))
    finally:
        connection.close()


def chat_body(stream: bool = True) -> bytes:
    return json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": stream}
    ).encode()


def keyed_chat(gateway: Gateway, source: str) -> Timed:
    return timed_request(
        gateway.port, "POST", "/v1/chat/completions", key=gateway.key, source=source, body=chat_body()
    )


def open_half_open(port: int, count: int, source: str) -> tuple[list[socket.socket], list[float], float]:
    """`count` connections that each send part of a request, then nothing.

    Returns the sockets, the monotonic time each one was connected, and the total time taken.
    On failure the sockets opened so far are closed before the error goes on.
    """
    sockets: list[socket.socket] = []
    connected_at: list[float] = []
    started = time.monotonic()
    try:
        for index in range(count):
            if time.monotonic() - started > OPEN_BUDGET_SECONDS:
                raise TimeoutError(f"opened only {index} of {count} connections in {OPEN_BUDGET_SECONDS} s")
            connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(connection)
            connection.settimeout(REQUEST_TIMEOUT_SECONDS)
            connection.bind((source, 0))
            connection.connect(("127.0.0.1", port))
            connected_at.append(time.monotonic())
            connection.sendall(PARTIAL_REQUESTS[index % len(PARTIAL_REQUESTS)])
    except BaseException:
        close_all(sockets)
        raise
    return sockets, connected_at, time.monotonic() - started


def close_all(sockets: list[socket.socket]) -> None:
    for connection in sockets:
        connection.close()  # idempotent; never raises for a socket the peer already closed


def wait_for_peer_close(sockets: list[socket.socket], wait_seconds: float) -> dict[int, float]:
    """Which of `sockets` (by index) the server closed (EOF or reset) within `wait_seconds`, and when."""
    selector = selectors.DefaultSelector()
    closed: dict[int, float] = {}
    try:
        for index, connection in enumerate(sockets):
            selector.register(connection, selectors.EVENT_READ, index)
        deadline = time.monotonic() + wait_seconds
        while len(closed) < len(sockets):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for selected, _ in selector.select(timeout=min(remaining, 0.5)):
                peer = selected.fileobj
                assert isinstance(peer, socket.socket)
                selector.unregister(peer)
                try:
                    data = peer.recv(4096)
                except OSError:  # a reset: reset_timedout_connection on
                    data = b""
                if not data:
                    closed[selected.data] = time.monotonic()
    finally:
        selector.close()
    return closed


# --- Tests ---------------------------------------------------------------------------------------


def test_keyed_request_is_served_within_1s_while_2000_half_open_connections_are_held(
    production_gateway: Gateway,
) -> None:
    gateway = production_gateway
    ensure_open_file_limit(HALF_OPEN_CONNECTIONS + 256)
    baseline = [keyed_chat(gateway, KEYED_ADDRESS) for _ in range(5)]
    assert all(reply.status == 200 for reply in baseline)
    sockets: list[socket.socket] = []
    try:
        sockets, _, open_seconds = open_half_open(gateway.port, HALF_OPEN_CONNECTIONS, FLOOD_ADDRESS)
        held_since = time.monotonic()
        # connect() returns once the kernel has queued the connection; wait until nginx's workers
        # have accepted every one, then let them sit for a while.
        deadline = held_since + 5
        while gateway.nginx.worker_socket_count() < HALF_OPEN_CONNECTIONS and time.monotonic() < deadline:
            time.sleep(0.05)
        nginx_sockets = gateway.nginx.worker_socket_count()
        time.sleep(HOLD_BEFORE_REQUESTS_SECONDS)
        # A streamed chat completion and a model list from another address, and from the very
        # address of the flood: limit_conn counts only requests whose header has been read, so
        # the half-open connections do not use up 127.0.0.1's allowance either.
        chats = [keyed_chat(gateway, KEYED_ADDRESS) for _ in range(5)]
        models = timed_request(gateway.port, "GET", "/v1/models", key=gateway.key, source=KEYED_ADDRESS)
        same_address = keyed_chat(gateway, FLOOD_ADDRESS)
        unkeyed = timed_request(gateway.port, "GET", "/v1/models", key=None, source=OTHER_ADDRESS)
        held_for = time.monotonic() - held_since
        # Nothing was shed while held (their header timeout, 10 s, has not run out yet).
        still_open = HALF_OPEN_CONNECTIONS - len(wait_for_peer_close(sockets, wait_seconds=0.2))
    finally:
        close_all(sockets)
    assert nginx_sockets >= HALF_OPEN_CONNECTIONS
    assert held_for < gateway.nginx.settings.client_header_timeout_seconds
    assert still_open == HALF_OPEN_CONNECTIONS
    for reply in (*chats, models, same_address):
        assert reply.status == 200, reply.body[:200]
        assert reply.seconds < KEYED_LATENCY_BUDGET_SECONDS, reply.seconds
    assert b"data: [DONE]" in chats[0].body
    assert unkeyed.status == 401
    chat_ms = [reply.seconds * 1000 for reply in chats]
    print(
        f"\n{HALF_OPEN_CONNECTIONS} half-open connections opened in {open_seconds:.2f} s and held "
        f"{held_for:.2f} s (nginx workers holding {nginx_sockets} sockets); keyed streamed chat completion from {KEYED_ADDRESS}: median "
        f"{statistics.median(chat_ms):.1f} ms, max {max(chat_ms):.1f} ms (idle baseline median "
        f"{statistics.median(r.seconds * 1000 for r in baseline):.1f} ms); GET /v1/models "
        f"{models.seconds * 1000:.1f} ms; keyed chat from the flooding address {FLOOD_ADDRESS}: "
        f"{same_address.seconds * 1000:.1f} ms; unkeyed 401 {unkeyed.seconds * 1000:.1f} ms"
    )
    assert "worker_connections are not enough" not in gateway.nginx.error_log


def test_half_open_connections_are_shed_after_client_header_timeout(short_timeout_gateway: Gateway) -> None:
    gateway = short_timeout_gateway
    timeout = SHORT_HEADER_TIMEOUT_SECONDS
    ensure_open_file_limit(HALF_OPEN_CONNECTIONS + 256)
    sockets: list[socket.socket] = []
    try:
        sockets, connected_at, open_seconds = open_half_open(
            gateway.port, HALF_OPEN_CONNECTIONS, FLOOD_ADDRESS
        )
        closed = wait_for_peer_close(sockets, wait_seconds=timeout + 5)
    finally:
        close_all(sockets)
    assert len(closed) == HALF_OPEN_CONNECTIONS, f"{HALF_OPEN_CONNECTIONS - len(closed)} still open"
    # Each one lived about client_header_timeout from its own connect: not sooner, not much later.
    lifetimes = [closed[index] - connected_at[index] for index in range(HALF_OPEN_CONNECTIONS)]
    print(
        f"\n{HALF_OPEN_CONNECTIONS} half-open connections opened in {open_seconds:.2f} s, each shed "
        f"{min(lifetimes):.2f} to {max(lifetimes):.2f} s after its connect (client_header_timeout {timeout} s)"
    )
    assert timeout - 0.5 < min(lifetimes) and max(lifetimes) < timeout + 3


def test_client_sending_headers_one_byte_a_second_is_closed_after_client_header_timeout(
    short_timeout_gateway: Gateway,
) -> None:
    # The timeout counts from the first byte, not from the last: trickling does not extend it.
    gateway = short_timeout_gateway
    request = f"GET /v1/models HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {gateway.key}\r\n\r\n"
    sent = 0
    closed_at: float | None = None
    connection = socket.create_connection(("127.0.0.1", gateway.port), timeout=REQUEST_TIMEOUT_SECONDS)
    started = time.monotonic()
    try:
        connection.settimeout(1.0)
        for byte in request.encode()[: SHORT_HEADER_TIMEOUT_SECONDS * 4]:
            try:
                connection.sendall(bytes([byte]))
                sent += 1
                data = connection.recv(4096)  # waits up to 1 s: the pace of one byte a second
            except TimeoutError:
                continue
            except OSError:
                data = b""
            if not data:
                closed_at = time.monotonic() - started
                break
    finally:
        connection.close()
    print(f"\nslow-header client closed after {closed_at} s having sent {sent} bytes")
    assert closed_at is not None, "nginx kept a client that sends one byte a second"
    assert sent >= SHORT_HEADER_TIMEOUT_SECONDS
    assert SHORT_HEADER_TIMEOUT_SECONDS - 0.5 < closed_at < SHORT_HEADER_TIMEOUT_SECONDS + 2.5


def test_requests_beyond_the_per_address_limit_are_429_and_other_addresses_are_served(
    short_timeout_gateway: Gateway,
) -> None:
    gateway = short_timeout_gateway
    # Keyed requests held in progress: headers sent, body promised but not sent (nginx has passed
    # the request on and waits for the body), each one counted against 127.0.0.1.
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {gateway.key}\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    held: list[socket.socket] = []
    try:
        for _ in range(SMALL_PER_ADDRESS_LIMIT):
            connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(connection)
            connection.settimeout(REQUEST_TIMEOUT_SECONDS)
            connection.bind((FLOOD_ADDRESS, 0))
            connection.connect(("127.0.0.1", gateway.port))
            connection.sendall(head + b'{"model": ')
        time.sleep(0.3)  # nginx reads each header and takes its place in the zone
        beyond = timed_request(gateway.port, "GET", "/v1/models", key=gateway.key, source=FLOOD_ADDRESS)
        elsewhere = timed_request(gateway.port, "GET", "/v1/models", key=gateway.key, source=KEYED_ADDRESS)
        # Unkeyed and unknown requests are answered before the limit is looked at.
        unkeyed = timed_request(gateway.port, "GET", "/v1/models", key=None, source=FLOOD_ADDRESS)
    finally:
        close_all(held)
    assert beyond.status == 429, beyond.body[:200]
    assert json.loads(beyond.body)["error"]["code"] == "too_many_connections"
    assert beyond.connection_header == "close"
    assert elsewhere.status == 200
    assert unkeyed.status == 401
    # Once the held requests end, 127.0.0.1 is served again.
    deadline = time.monotonic() + 5
    status = 0
    while time.monotonic() < deadline:
        status = timed_request(
            gateway.port, "GET", "/v1/models", key=gateway.key, source=FLOOD_ADDRESS
        ).status
        if status == 200:
            break
        time.sleep(0.1)
    assert status == 200
    assert '"status":"429"' in gateway.nginx.access_log


def test_default_limit_lets_64_concurrent_streams_from_one_address_through(
    production_gateway: Gateway,
) -> None:
    # 64 streams at once (max_batch_size) from one client address, all in progress together.
    gateway = production_gateway
    concurrency = 64
    state = gateway.upstream.state
    previous_delay = state.script.first_delay_s
    state.script.first_delay_s = 1.0
    results: list[Timed | BaseException] = []
    lock = threading.Lock()

    def one_stream() -> None:
        try:
            reply: Timed | BaseException = keyed_chat(gateway, FLOOD_ADDRESS)
        except BaseException as error:  # reported below, not lost in the thread
            reply = error
        with lock:
            results.append(reply)

    threads = [threading.Thread(target=one_stream, daemon=True) for _ in range(concurrency)]
    started = time.monotonic()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=REQUEST_TIMEOUT_SECONDS)
    finally:
        state.script.first_delay_s = previous_delay
    elapsed = time.monotonic() - started
    assert len(results) == concurrency, f"{concurrency - len(results)} streams still running"
    statuses = [reply.status if isinstance(reply, Timed) else repr(reply) for reply in results]
    assert statuses == [200] * concurrency, statuses
    assert all(isinstance(reply, Timed) and b"data: [DONE]" in reply.body for reply in results)
    # They overlapped: 64 one-second streams in well under 64 s.
    assert elapsed < 5, elapsed
    print(f"\n{concurrency} concurrent streams from one address, all 200, in {elapsed:.2f} s")

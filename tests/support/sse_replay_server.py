"""A loopback HTTP server that replays OpenAI-style SSE streams in the shapes real servers send.

Used where the real test server (transformers serve) cannot produce a case: reasoning streamed in
`delta.reasoning` before `delta.content` as TensorRT-LLM does for gpt-oss, API keys (401), an
error event mid-stream, a malformed event, a connection cut mid-stream, a stall, a body without
chunked encoding. The event shapes follow TensorRT-LLM's streamed chat chunks: a role chunk,
reasoning chunks, content chunks, a chunk with `finish_reason`, a usage chunk with `choices: []`
(stream_options.include_usage), then `data: [DONE]`.

Each event is written with `time.perf_counter()` recorded in `sent_at`, the same clock as the
client's in this process, so tests can compare what the client measured with when bytes left.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = (
    "good",
    "error_mid_stream",
    "malformed",
    "cut",
    "no_usage",
    "stall",
    "pings",
    "unchunked",
    "http_500",
)


@dataclass
class ReplayScript:
    """What one streamed response contains. Delays are seconds before each event is sent."""

    reasoning_tokens: int = 3
    content_tokens: int = 4
    # Prompt tokens are counted like a toy tokenizer: this overhead plus one per word.
    prompt_overhead_tokens: int = 11
    first_delay_s: float = 0.0
    reasoning_delay_s: float = 0.0
    content_delay_s: float = 0.0
    # An inflated count, so tests can tell usage-derived counts from counted chunks.
    completion_tokens_reported: int | None = None


def chunk(
    delta: dict[str, Any], finish_reason: str | None = None, usage: dict | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-replay",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "replay",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["choices"] = []
        body["usage"] = usage
    return body


@dataclass
class ReplayState:
    model: str = "openai/gpt-oss-120b"
    api_key: str | None = None
    mode: str = "good"
    script: ReplayScript = field(default_factory=ReplayScript)
    stall_s: float = 5.0
    health_status: int = 200
    requests_seen: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    sent_at: list[list[tuple[str, float]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class ReplayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ReplayServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self) -> bool:
        state = self.server.state
        if state.api_key is None or self.headers.get("Authorization") == f"Bearer {state.api_key}":
            return True
        self._json(401, {"error": {"message": "Invalid API key", "type": "invalid_request_error"}})
        return False

    def do_GET(self) -> None:
        if self.path == "/health":
            status = self.server.state.health_status
            self._json(status, {"status": "ok" if status == 200 else "unhealthy"})
        elif self.path == "/v1/models":
            if self._authorized():
                self._json(
                    200, {"object": "list", "data": [{"id": self.server.state.model, "object": "model"}]}
                )
        else:
            self._json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        state = self.server.state
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        if self.path != "/v1/chat/completions":
            self._json(404, {"detail": "Not Found"})
            return
        if not self._authorized():
            return
        if body.get("model") != state.model:
            self._json(404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}})
            return
        if state.mode == "http_500":
            self._json(500, {"error": {"message": "internal failure"}})
            return
        with state.lock:
            state.bodies.append(body)
            state.requests_seen += 1
            log: list[tuple[str, float]] = []
            state.sent_at.append(log)
        self._stream(state, body, log)

    def _events(self, state: ReplayState, body: dict[str, Any]) -> list[tuple[str, float, bytes]]:
        """(kind, delay before sending, raw event bytes)."""
        script = state.script
        events: list[tuple[str, float, bytes]] = []

        def data(kind: str, delay: float, payload: Any) -> None:
            text = payload if isinstance(payload, str) else json.dumps(payload)
            events.append((kind, delay, f"data: {text}\n\n".encode()))

        data("role", script.first_delay_s, chunk({"role": "assistant", "content": ""}))
        for i in range(script.reasoning_tokens):
            data("reasoning", script.reasoning_delay_s, chunk({"reasoning": f"think{i} "}))
        if state.mode == "error_mid_stream":
            data("error", 0.0, {"error": {"message": "engine failed: out of KV cache blocks", "code": 500}})
            return events
        if state.mode == "malformed":
            data("malformed", 0.0, '{"choices": [ {"delta": ')
            return events
        if state.mode == "cut":
            events.append(("cut", 0.0, b""))
            return events
        if state.mode == "stall":
            events.append(("stall", state.stall_s, b""))
        if state.mode == "pings":
            # Keep-alive comments (as sse-starlette sends) every 0.1 s for stall_s: never silent.
            for _ in range(int(state.stall_s / 0.1)):
                events.append(("ping", 0.1, b": ping\n\n"))
        for i in range(script.content_tokens):
            data("content", script.content_delay_s, chunk({"content": f"word{i} "}))
        data("finish", 0.0, chunk({}, finish_reason="stop"))
        if state.mode != "no_usage":
            completion = script.completion_tokens_reported
            if completion is None:
                completion = script.reasoning_tokens + script.content_tokens
            prompt = script.prompt_overhead_tokens + sum(
                len(str(m.get("content", "")).split()) for m in body.get("messages", [])
            )
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
            data("usage", 0.0, chunk({}, usage=usage))
        data("done", 0.0, "[DONE]")
        return events

    def _stream(self, state: ReplayState, body: dict[str, Any], log: list[tuple[str, float]]) -> None:
        chunked = state.mode != "unchunked"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.flush()
        try:
            for kind, delay, raw in self._events(state, body):
                if delay:
                    time.sleep(delay)
                if kind == "cut":
                    # Half an HTTP chunk, then close: the client sees the body end mid-chunk.
                    self.wfile.write(b'40\r\ndata: {"choi')
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if kind == "stall":
                    continue
                # Stamp before writing: the client may read and stamp the event before write returns.
                log.append((kind, time.perf_counter()))
                self.wfile.write(b"%x\r\n%s\r\n" % (len(raw), raw) if chunked else raw)
                self.wfile.flush()
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class ReplayServer(ThreadingHTTPServer):
    daemon_threads = True
    # A handler may still be sleeping in a stall test; do not wait for it on close.
    block_on_close = False

    def __init__(self, state: ReplayState) -> None:
        super().__init__(("127.0.0.1", 0), ReplayHandler)
        self.state = state
        self._thread = threading.Thread(target=self.serve_forever, name="sse-replay", daemon=True)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients under test hang up mid-stream on purpose; keep the server's side quiet so the
        # tests can assert that the client printed no traceback.
        pass

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> ReplayServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)

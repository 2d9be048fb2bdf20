"""Streaming client for an OpenAI-compatible `/v1/chat/completions`, shared by smoke and bench.

One call, `stream_chat_completion`, sends a streamed chat completion and returns a
`StreamResult`: arrival times of the streamed chunks (taken with `time.perf_counter`), the
server's `usage`, and, instead of an exception, an `error` string naming what went wrong
(unreachable endpoint, wrong key, unknown model, an error event mid-stream, a malformed event,
a broken connection, a timeout). Callers count failures; nothing here raises on network or
protocol errors.

Shapes the parser accepts (all seen from real servers):
- `data: {json}` events, one per blank-line-terminated event, ending with `data: [DONE]`
  (TensorRT-LLM, vLLM, llama.cpp) or with the end of the body (transformers serve sends no
  `[DONE]`).
- `usage` in a final chunk with `choices: []` (OpenAI's `stream_options.include_usage`), or in the
  chunk carrying `finish_reason` (transformers serve, which ignores `stream_options`).
- Reasoning text in `delta.reasoning` (TensorRT-LLM for gpt-oss, recent vLLM) or
  `delta.reasoning_content` (transformers serve, older vLLM, llama.cpp); answer text in
  `delta.content`.
- An error event: `data: {"error": ...}` (string or `{"message": ...}` object).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import requests
import urllib3.exceptions

DONE_SENTINEL = "[DONE]"
# Field names under which servers stream chain-of-thought text (see module docstring).
REASONING_FIELDS = ("reasoning", "reasoning_content")
# Bytes asked of the socket per read when the body is not chunked; read1 returns what is there.
READ_SIZE = 65536


@dataclass(frozen=True)
class Endpoint:
    """Where to send requests. `root` has no `/v1`; `/health` lives there, the API under `/v1`."""

    root: str
    api_key: str | None = None
    # The CA file to verify the server's certificate against (the stack's `caCertificate`);
    # None: the system's trust store.
    ca_file: str | None = None

    @classmethod
    def from_base_url(cls, base_url: str, api_key: str | None = None, ca_file: str | None = None) -> Endpoint:
        """Accepts the server root (`http://host:8000`) or the API base (`http://host:8000/v1`)."""
        url = base_url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ValueError(
                f"base URL {base_url!r} must start with http:// or https://, "
                "e.g. http://127.0.0.1:8000 or http://127.0.0.1:8000/v1"
            )
        if url.endswith("/v1"):
            url = url[: -len("/v1")]
        return cls(root=url, api_key=api_key or None, ca_file=ca_file or None)

    def session(self) -> requests.Session:
        """An HTTP session that verifies the server against `ca_file` (TLS), when one is set."""
        return _PinnedCaSession(self.ca_file) if self.ca_file else requests.Session()

    @property
    def api_base(self) -> str:
        return f"{self.root}/v1"

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


class _PinnedCaSession(requests.Session):
    """A session whose CA file wins over REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE: plain requests lets
    those variables override a session's `verify` (psf/requests issue 3829), and many machines
    set them to the system bundle, which does not hold the stack's CA."""

    def __init__(self, ca_file: str) -> None:
        super().__init__()
        self.verify = ca_file

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        settings["verify"] = self.verify
        return settings


@dataclass(frozen=True)
class Timeouts:
    """`connect`: TCP connect; `read`: longest silence between bytes; `total`: whole request."""

    connect: float = 10.0
    read: float = 120.0
    total: float = 600.0


@dataclass
class StreamResult:
    """One streamed request, timed with `time.perf_counter` (seconds, same clock as `start`).

    `token_times` are the arrival times of chunks that carried text (reasoning or answer);
    `first_content_time` is the first chunk with answer text (`delta.content`).
    """

    start: float
    end: float | None = None
    first_token_time: float | None = None
    first_content_time: float | None = None
    token_times: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # Text pieces as streamed; joined on demand (appending to one string would copy it per chunk).
    content_parts: list[str] = field(default_factory=list)
    reasoning_parts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    http_status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def content(self) -> str:
        return "".join(self.content_parts)

    @property
    def reasoning(self) -> str:
        return "".join(self.reasoning_parts)

    @property
    def latency_s(self) -> float | None:
        return None if self.end is None else self.end - self.start

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_time is None else self.first_token_time - self.start

    @property
    def ttft_content_s(self) -> float | None:
        return None if self.first_content_time is None else self.first_content_time - self.start


class StreamProtocolError(Exception):
    """The stream broke the SSE / OpenAI chunk format; the message says how."""


class TotalTimeoutError(Exception):
    """The request ran past `Timeouts.total` while bytes kept arriving."""


def bounded_by(chunks: Iterable[bytes], deadline: float) -> Iterator[bytes]:
    """Stop a body that keeps sending (keep-alive comments, a slow trickle) past the deadline.

    The read timeout only bounds silence; this bounds the whole request.
    """
    for chunk in chunks:
        if time.perf_counter() > deadline:
            raise TotalTimeoutError()
        yield chunk


def iter_lines_from_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Split raw body chunks into lines (`\\n` or `\\r\\n` endings), however the chunks fall."""
    pending = b""
    for chunk in chunks:
        if not chunk:
            continue
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line[:-1] if line.endswith(b"\r") else line
    if pending:
        yield pending[:-1] if pending.endswith(b"\r") else pending


def iter_sse_data(lines: Iterable[bytes]) -> Iterator[str]:
    """Yield the `data` of each server-sent event (multi-line data joined by `\\n`).

    Comment lines (`:`) and other fields (`event:`, `id:`, `retry:`) are skipped: OpenAI-style
    servers put everything in `data`. An event still open when the body ends is yielded too.
    """
    data_lines: list[str] = []
    for raw_line in lines:
        line = raw_line.decode("utf-8", errors="replace")
        if line == "":
            if data_lines:
                yield "\n".join(data_lines)
                data_lines = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data_lines.append(value)
    if data_lines:
        yield "\n".join(data_lines)


def error_message_of(payload: Any) -> str | None:
    """The text of an OpenAI-style error body/event (`{"error": ...}` or `{"detail": ...}`)."""
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error)
    if error:
        return str(error)
    # FastAPI's HTTPException bodies (transformers serve, llama_cpp.server) use `detail`.
    detail = payload.get("detail")
    if detail:
        return detail if isinstance(detail, str) else json.dumps(detail)[:300]
    return None


def delta_text(chunk: dict[str, Any]) -> tuple[str, str, str | None]:
    """(reasoning text, answer text, finish_reason) carried by one chat-completion chunk."""
    reasoning, content, finish_reason = "", "", None
    choices = chunk.get("choices") or []
    if not isinstance(choices, list):
        raise StreamProtocolError(f"`choices` is {type(choices).__name__}, expected a list")
    for choice in choices:
        if not isinstance(choice, dict):
            raise StreamProtocolError("a choice is not an object")
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise StreamProtocolError("`delta` is not an object")
        for name in REASONING_FIELDS:
            value = delta.get(name)
            if isinstance(value, str):
                reasoning += value
        value = delta.get("content")
        if isinstance(value, str):
            content += value
        finish_reason = choice.get("finish_reason") or finish_reason
    return reasoning, content, finish_reason


def read_usage(chunk: dict[str, Any]) -> tuple[int, int] | None:
    usage = chunk.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        raise StreamProtocolError(f"usage lacks integer prompt_tokens/completion_tokens: {usage}")
    return prompt, completion


def consume_stream(
    events: Iterable[str],
    result: StreamResult,
    deadline: float,
    clock: Callable[[], float] = time.perf_counter,
    on_chunk: Callable[[dict[str, Any], float], None] | None = None,
) -> None:
    """Fill `result` from SSE data strings; sets `result.error` on a protocol problem.

    A stream succeeds when it ends (`[DONE]` or end of body) having delivered `usage`.
    """
    saw_done = False
    for data in events:
        now = clock()
        if now > deadline:
            result.error = f"request exceeded its total timeout of {deadline - result.start:g} s"
            return
        if data.strip() == DONE_SENTINEL:
            saw_done = True
            break
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            result.error = f"malformed event (not JSON): {data[:120]!r}"
            return
        if not isinstance(chunk, dict):
            result.error = f"malformed event (not a JSON object): {data[:120]!r}"
            return
        message = error_message_of(chunk)
        if message is not None:
            result.error = f"server sent an error mid-stream: {message[:300]}"
            return
        try:
            reasoning, content, finish_reason = delta_text(chunk)
            usage = read_usage(chunk)
        except StreamProtocolError as exc:
            result.error = f"malformed event ({exc}): {data[:120]!r}"
            return
        if on_chunk is not None:
            on_chunk(chunk, now)
        if reasoning or content:
            result.token_times.append(now)
            if result.first_token_time is None:
                result.first_token_time = now
            if content and result.first_content_time is None:
                result.first_content_time = now
        if reasoning:
            result.reasoning_parts.append(reasoning)
        if content:
            result.content_parts.append(content)
        result.finish_reason = finish_reason or result.finish_reason
        if usage is not None:
            result.prompt_tokens, result.completion_tokens = usage
    result.end = clock()
    if result.completion_tokens is None:
        how = "after [DONE]" if saw_done else "when the connection closed"
        result.error = (
            f"stream ended {how} without usage (the server ignored "
            "stream_options.include_usage); token counts must come from the server"
        )


def _body_chunks(response: requests.Response) -> Iterator[bytes]:
    """Body bytes as they arrive, never waiting to fill a fixed-size buffer.

    Chunked bodies (uvicorn, nginx) are read one HTTP chunk at a time; other bodies with
    `read1`, which returns whatever the socket has. A fixed `chunk_size` would hold back early
    events until enough bytes arrived and so inflate TTFT.
    """
    raw = response.raw
    if getattr(raw, "chunked", False) and raw.supports_chunked_reads():
        yield from response.iter_content(chunk_size=None)
        return
    while True:
        data = raw.read1(READ_SIZE)
        if not data:
            return
        yield data


def http_error_message(status: int, body_text: str, model: str, endpoint: Endpoint) -> str:
    """One line saying what an HTTP error status means for this client."""
    try:
        detail = error_message_of(json.loads(body_text)) or body_text
    except (json.JSONDecodeError, ValueError):
        detail = body_text
    detail = " ".join(detail.split())[:300]
    if status == 401:
        key_state = "no API key was sent" if not endpoint.api_key else "the API key was rejected"
        return (
            f"HTTP 401 Unauthorized from {endpoint.api_base}: {key_state} "
            f"(pass the right one with --api-key): {detail}"
        )
    if status == 403:
        return f"HTTP 403 Forbidden from {endpoint.api_base}: the API key may not use this endpoint: {detail}"
    if status == 404:
        return (
            f"HTTP 404 from {endpoint.api_base}/chat/completions: unknown model {model!r} or wrong "
            f"base URL (GET {endpoint.api_base}/models lists the served names): {detail}"
        )
    return f"HTTP {status} from {endpoint.api_base}/chat/completions: {detail}"


def stream_chat_completion(
    session: requests.Session,
    endpoint: Endpoint,
    model: str,
    messages: list[dict[str, Any]],
    max_tokens: int,
    timeouts: Timeouts = Timeouts(),
    extra_body: dict[str, Any] | None = None,
    on_chunk: Callable[[dict[str, Any], float], None] | None = None,
) -> StreamResult:
    """Send one streamed chat completion; never raises for network or protocol errors."""
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    body.update(extra_body or {})
    result = StreamResult(start=time.perf_counter())
    deadline = result.start + timeouts.total
    url = f"{endpoint.api_base}/chat/completions"
    try:
        with session.post(
            url,
            json=body,
            headers=endpoint.headers(),
            stream=True,
            timeout=(timeouts.connect, timeouts.read),
        ) as response:
            result.http_status = response.status_code
            if response.status_code != 200:
                result.error = http_error_message(response.status_code, response.text[:2000], model, endpoint)
                result.end = time.perf_counter()
                return result
            events = iter_sse_data(iter_lines_from_chunks(bounded_by(_body_chunks(response), deadline)))
            consume_stream(events, result, deadline, on_chunk=on_chunk)
    except TotalTimeoutError:
        result.error = f"request exceeded its total timeout of {timeouts.total:g} s"
    except requests.exceptions.ConnectTimeout:
        result.error = f"could not connect to {endpoint.root} within {timeouts.connect} s"
    except requests.exceptions.ReadTimeout:
        result.error = f"no data from {url} for {timeouts.read} s (read timeout)"
    except requests.exceptions.ConnectionError as exc:
        cause = root_cause(exc)
        if result.http_status is None:
            result.error = f"endpoint unreachable: {endpoint.root} ({cause})"
        elif "timed out" in cause.lower():
            # requests reports a read timeout during iteration as a ConnectionError.
            result.error = f"no data from {url} for {timeouts.read} s mid-stream (read timeout)"
        else:
            result.error = f"connection broken mid-stream ({cause})"
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        # ChunkedEncodingError and friends: the body stopped in the middle of an HTTP chunk;
        # urllib3/OSError errors come unwrapped from the read1 path of non-chunked bodies.
        result.error = f"stream broken mid-stream: {type(exc).__name__}: {root_cause(exc)}"
    if result.end is None:
        result.end = time.perf_counter()
    return result


def root_cause(exc: BaseException) -> str:
    """The innermost exception's text: urllib3 nests the useful part several levels deep."""
    seen: BaseException = exc
    while True:
        inner = seen.__cause__ or seen.__context__
        if inner is None and seen.args and isinstance(seen.args[0], BaseException):
            inner = seen.args[0]
        if inner is None or inner is seen:
            break
        seen = inner
    text = str(seen) or type(seen).__name__
    return " ".join(text.split())[:200]

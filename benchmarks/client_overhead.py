"""Is the bench client the bottleneck? Drive it against a fast loopback SSE server and measure.

    .venv/bin/python benchmarks/client_overhead.py            # full run, about 40 s
    .venv/bin/python benchmarks/client_overhead.py --quick    # smaller, about 10 s

The target is a tiny asyncio server written here (a load target, not the server under test): it
answers `/v1/chat/completions` with a stream shaped like TensorRT-LLM's (one token per SSE event,
one event per HTTP chunk, a usage chunk, `[DONE]`) and stamps every event with its send time
(`time.perf_counter()`, which on Linux is CLOCK_MONOTONIC, one clock for every process). It runs
in its own process, so client and server share the machine's 2 cores as they would not in
production (there the server is on the GPU node).

The client is `serving.client.bench.run_requests`, the code path of `python -m serving bench`
(thread pool, one `requests.Session` per thread, SSE parsing, perf_counter stamps). Phases:
1. paced: 64 concurrent streams, each paced at `--rate` tokens/s (64 x 400 = 25,600 tokens/s
   offered); reports tokens/s achieved, and the delivery lag (client stamp minus server send
   stamp) at p50/p99: the error this client adds to TTFT and ITL at that load;
2. unpaced: 64 requests of 5x the tokens, as fast as the server writes: the ceiling of client
   and server together on 2 cores;
3. parse cost: `consume_stream` over pre-built events in memory, per event (no network);
plus the client's CPU seconds per 1,000 tokens in each phase (process time of this process,
which holds only the client).
Exit 0 when phase 1 held every stream and reached `--min-tokens-per-s`; 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serving.client.bench import RunConfig, run_requests
from serving.client.metrics import percentile
from serving.client.stream import Endpoint, StreamResult, Timeouts, consume_stream

MODEL = "fast-sse"
# A realistic event: TensorRT-LLM's chat chunks are about this size.
EVENT_TEMPLATE = (
    'data: {{"id":"chatcmpl-6f1c0d3a9b2e4c7f8a1d","object":"chat.completion.chunk","created":1767225600,'
    '"model":"{model}","choices":[{{"index":0,"delta":{{"content":" tok{index}"}},"logprobs":null,'
    '"finish_reason":null}}],"t":{stamp:.9f}}}\n\n'
)


# ---------------------------------------------------------------- server (child process)


def _http_chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


async def _stream(writer: asyncio.StreamWriter, max_tokens: int, rate: float, prompt_tokens: int) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
        b"Cache-Control: no-cache\r\n\r\n"
    )
    role = 'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    writer.write(_http_chunk(role.encode()))
    # Paced: every tick each stream writes the tokens due since its start (TensorRT-LLM's
    # iteration loop does the same: one event per request per step).
    tick = 0.01
    started = time.perf_counter()
    sent = 0
    while sent < max_tokens:
        due = (
            max_tokens
            if rate <= 0
            else min(max_tokens, math.floor((time.perf_counter() - started) * rate) + 1)
        )
        batch: list[bytes] = []
        while sent < due and len(batch) < 64:
            event = EVENT_TEMPLATE.format(model=MODEL, index=sent, stamp=time.perf_counter())
            batch.append(_http_chunk(event.encode()))
            sent += 1
        writer.write(b"".join(batch))
        await writer.drain()
        if rate > 0 and sent < max_tokens:
            await asyncio.sleep(tick)
        else:
            # drain() does not yield while the buffer is low: let the other streams write too.
            await asyncio.sleep(0)
    total = prompt_tokens + max_tokens
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": max_tokens, "total_tokens": total}
    tail = f'data: {{"choices":[],"usage":{json.dumps(usage)}}}\n\ndata: [DONE]\n\n'
    writer.write(_http_chunk(tail.encode()) + b"0\r\n\r\n")
    await writer.drain()


async def _handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rate: float, stats: dict
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = json.loads(await reader.readexactly(length)) if length else {}
            stats["open"] += 1
            stats["max_open"] = max(stats["max_open"], stats["open"])
            try:
                prompt_tokens = len(str(body.get("messages", "")).split())
                await _stream(writer, int(body.get("max_tokens", 16)), rate, prompt_tokens)
            finally:
                stats["open"] -= 1
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _serve(rate: float) -> None:
    stats = {"open": 0, "max_open": 0}
    server = await asyncio.start_server(lambda r, w: _handle(r, w, rate, stats), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    # The parent asks for the peak number of open streams, then closes stdin to end us.
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := await stdin.readline():
        if line.strip() == b"stats":
            print(json.dumps(stats), flush=True)
            stats["max_open"] = stats["open"]
    server.close()


# ---------------------------------------------------------------- client (this process)


@dataclass
class PhaseResult:
    name: str
    streams_ok: int
    streams_failed: int
    peak_open_streams: int
    tokens: int
    wall_s: float
    client_cpu_s: float
    lag_p50_ms: float | None
    lag_p99_ms: float | None
    first_error: str | None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s

    def line(self) -> str:
        lag = (
            f", delivery lag p50 {self.lag_p50_ms:.2f} ms / p99 {self.lag_p99_ms:.2f} ms"
            if self.lag_p50_ms is not None
            else ""
        )
        return (
            f"{self.name}: {self.streams_ok} streams ok, {self.streams_failed} failed, peak {self.peak_open_streams} "
            f"open; {self.tokens:,} tokens in {self.wall_s:.2f} s = {self.tokens_per_s:,.0f} tokens/s; client CPU "
            f"{self.client_cpu_s / self.wall_s * 100:.0f}% of a core, {self.client_cpu_s / self.tokens * 1e6:.1f} us "
            f"per token{lag}" + (f"; first error: {self.first_error}" if self.first_error else "")
        )


class FastServer:
    def __init__(self, rate: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", "--rate", str(rate)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stdin is not None
        self.stdin, self.stdout = self.process.stdin, self.process.stdout
        self.port = int(self.stdout.readline())

    def peak_open(self) -> int:
        self.stdin.write("stats\n")
        self.stdin.flush()
        return int(json.loads(self.stdout.readline())["max_open"])

    def close(self) -> None:
        self.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def run_phase(name: str, rate: float, streams: int, requests_count: int, tokens_each: int) -> PhaseResult:
    server = FastServer(rate)
    lags: list[float] = []

    def on_chunk(chunk: dict, arrived: float) -> None:
        stamp = chunk.get("t")
        if stamp is not None:
            lags.append(arrived - stamp)

    try:
        config = RunConfig(
            endpoint=Endpoint.from_base_url(f"http://127.0.0.1:{server.port}"),
            model=MODEL,
            max_tokens=tokens_each,
            concurrency=streams,
            timeouts=Timeouts(connect=5, read=30, total=120),
            extra_body={},
            on_chunk=on_chunk if rate > 0 else None,
        )
        prompts = [f"request {i}" for i in range(requests_count)]
        cpu_before = time.process_time()
        results, wall = run_requests(config, prompts)
        cpu = time.process_time() - cpu_before
        peak = server.peak_open()
    finally:
        server.close()
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    return PhaseResult(
        name=name,
        streams_ok=len(ok),
        streams_failed=len(failed),
        peak_open_streams=peak,
        tokens=sum(r.completion_tokens or 0 for r in ok),
        wall_s=wall,
        client_cpu_s=cpu,
        lag_p50_ms=percentile(lags, 50) * 1000 if lags else None,
        lag_p99_ms=percentile(lags, 99) * 1000 if lags else None,
        first_error=failed[0].error if failed else None,
    )


def parse_cost_us(events: int = 100_000) -> float:
    """Microseconds per event for SSE data -> chunk -> timestamps, in memory."""
    data = [
        EVENT_TEMPLATE.format(model=MODEL, index=i, stamp=0.0)[len("data: ") :].strip() for i in range(events)
    ]
    data.append(f'{{"choices":[],"usage":{{"prompt_tokens":1,"completion_tokens":{events}}}}}')
    result = StreamResult(start=time.perf_counter())
    started = time.perf_counter()
    consume_stream(data, result, deadline=float("inf"))
    elapsed = time.perf_counter() - started
    assert result.error is None and len(result.token_times) == events
    return elapsed / events * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--rate", type=float, default=400.0, help="tokens/s per stream, paced phase (default 400)"
    )
    parser.add_argument("--streams", type=int, default=64, help="concurrent streams (default 64)")
    parser.add_argument("--tokens", type=int, default=2000, help="tokens per request (default 2000)")
    parser.add_argument("--rounds", type=int, default=2, help="requests per stream slot (default 2)")
    parser.add_argument("--min-tokens-per-s", type=float, default=20_000, help="pass mark of the paced phase")
    parser.add_argument("--quick", action="store_true", help="1 round of 800 tokens")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.rate))
        return 0
    if args.quick:
        args.rounds, args.tokens = 1, 800
    requests_count = args.streams * args.rounds
    print(
        f"client overhead: {args.streams} streams, {requests_count} requests x {args.tokens} tokens, "
        f"one token per SSE event"
    )
    paced = run_phase(
        f"paced at {args.rate:g} tokens/s per stream ({args.rate * args.streams:,.0f} offered)",
        args.rate,
        args.streams,
        requests_count,
        args.tokens,
    )
    print(paced.line())
    # Longer requests, so that unpaced streams overlap instead of finishing one after another.
    unpaced = run_phase("unpaced", 0.0, args.streams, args.streams, args.tokens * 5)
    print(unpaced.line())
    print(f"parse cost: {parse_cost_us():.1f} us per event (SSE data to timestamps, no network)")
    held = paced.streams_failed == 0 and paced.peak_open_streams == args.streams
    fast_enough = paced.tokens_per_s >= args.min_tokens_per_s
    verdict = "PASS" if held and fast_enough else "FAIL"
    print(
        f"{verdict}: {args.streams} streams held: {held}; paced phase {paced.tokens_per_s:,.0f} tokens/s "
        f"(needs {args.min_tokens_per_s:,.0f})"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())

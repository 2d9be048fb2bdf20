"""bench: metric functions, SSE parsing, prompt calibration, and runs against live servers.

Real servers: `openai_server` (transformers serve with a tiny model, see openai_server.py) and,
for shapes it cannot produce (gpt-oss reasoning chunks, error events, cut streams), the loopback
replay server in sse_replay_server.py.
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from serving.cli import main as cli_main
from serving.client import bench as bench_module
from serving.client.bench import CHECK_PROBES, CORRECTIONS, BenchError, PromptFactory, RunConfig, calibrate
from serving.client.metrics import RequestRecord, percentile, summarize, tpot
from serving.client.stream import (
    Endpoint,
    StreamResult,
    Timeouts,
    consume_stream,
    iter_lines_from_chunks,
    iter_sse_data,
    stream_chat_completion,
)
from serving.config.project import PROJECT_DIR
from tests.support.openai_server import start_server
from tests.support.sse_replay_server import ReplayScript, ReplayServer, ReplayState

REPO = PROJECT_DIR


# ---------- metrics (pure) ----------


@pytest.mark.parametrize("p", [0, 1, 10, 25, 50, 90, 99, 100])
def test_percentile_matches_statistics_inclusive_method(p: int) -> None:
    values = [random.Random(i).expovariate(1.0) for i in range(37)]
    # statistics.quantiles(method="inclusive") is the same method 7, computed independently.
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    expected = min(values) if p == 0 else max(values) if p == 100 else cuts[p - 1]
    assert percentile(values, p) == pytest.approx(expected)


def test_percentile_rejects_empty_and_out_of_range() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def make_record(
    ttft: float, latency: float, prompt: int, completion: int, itl=(), error=None
) -> RequestRecord:
    return RequestRecord(
        ttft_s=ttft,
        latency_s=latency,
        prompt_tokens=prompt,
        completion_tokens=completion,
        error=error,
        ttft_content_s=ttft,
        itl_s=list(itl),
    )


def test_summary_follows_baseten_and_vllm_definitions() -> None:
    records = [
        make_record(0.5, 2.0, 100, 11, itl=[0.1, 0.2]),
        make_record(1.0, 4.0, 300, 21, itl=[0.3]),
        make_record(0.1, 0.2, 0, 0, error="HTTP 500"),
    ]
    summary = summarize(records, wall_time_s=5.0, concurrency=16)
    assert summary["requests_ok"] == 2 and summary["requests_failed"] == 1
    assert summary["average_latency_s"] == pytest.approx(3.0)
    assert summary["average_ttft_s"] == pytest.approx(0.75)
    # Baseten: per request (prompt + completion) / latency = 111/2 and 321/4; mean; x concurrency.
    perceived = (111 / 2 + 321 / 4) / 2
    assert summary["average_perceived_tokens_per_second"] == pytest.approx(perceived)
    assert summary["average_overall_throughput"] == pytest.approx(perceived * 16)
    # vLLM: totals over wall time; TPOT = (latency - ttft) / (completion - 1).
    assert summary["output_throughput_tokens_per_s"] == pytest.approx(32 / 5.0)
    assert summary["total_token_throughput_tokens_per_s"] == pytest.approx(432 / 5.0)
    assert summary["request_throughput_per_s"] == pytest.approx(2 / 5.0)
    assert summary["tpot_s"]["mean"] == pytest.approx((1.5 / 10 + 3.0 / 20) / 2)
    assert summary["itl_s"]["p50"] == pytest.approx(0.2)
    assert summary["latency_s"]["p90"] == pytest.approx(2.0 + 0.9 * 2.0)


def test_tpot_undefined_for_single_token_and_failed_requests() -> None:
    assert tpot(make_record(0.5, 1.0, 10, 1)) is None
    assert tpot(make_record(0.5, 1.0, 10, 5, error="boom")) is None
    assert tpot(make_record(0.5, 1.0, 10, 5)) == pytest.approx(0.125)


def test_summary_of_all_failed_run_has_no_averages() -> None:
    summary = summarize([make_record(0.1, 0.2, 0, 0, error="x")], wall_time_s=1.0, concurrency=4)
    assert summary["requests_failed"] == 1 and summary["average_latency_s"] is None
    assert summary["average_overall_throughput"] is None and summary["ttft_s"]["p99"] is None


# ---------- SSE parsing ----------

STREAM = (
    b": keep-alive comment\r\n\r\n"
    b'data: {"choices":[{"delta":{"reasoning":"hm"}}]}\r\n\r\n'
    b"event: message\n"
    b'data: {"choices":[{"delta":\n'
    b'data: {"content":"hi"}}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\n'
    b"data: [DONE]\n\n"
)


def test_line_splitting_is_independent_of_chunk_boundaries() -> None:
    expected = list(iter_lines_from_chunks([STREAM]))
    for cut in range(1, len(STREAM)):
        assert list(iter_lines_from_chunks([STREAM[:cut], STREAM[cut:]])) == expected
    assert list(iter_lines_from_chunks(bytes([b]) for b in STREAM)) == expected


def test_sse_events_join_multiline_data_and_skip_comments() -> None:
    events = list(iter_sse_data(iter_lines_from_chunks([STREAM])))
    assert events == [
        '{"choices":[{"delta":{"reasoning":"hm"}}]}',
        '{"choices":[{"delta":\n{"content":"hi"}}]}',
        '{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}',
        "[DONE]",
    ]


def test_consume_stream_times_reasoning_before_content() -> None:
    ticks = iter([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    result = StreamResult(start=0.5)
    events = iter_sse_data(iter_lines_from_chunks([STREAM]))
    consume_stream(events, result, deadline=100.0, clock=lambda: next(ticks))
    assert result.error is None
    assert (result.ttft_s, result.ttft_content_s) == (0.5, 1.5)
    assert (result.prompt_tokens, result.completion_tokens) == (5, 2)
    assert (result.reasoning, result.content) == ("hm", "hi")


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        (['{"choices":[{"delta":{"content":"a"}}]}', "{oops"], "malformed event (not JSON)"),
        (['{"error":{"message":"KV cache full"}}'], "server sent an error mid-stream: KV cache full"),
        (['{"choices":{"delta":{}}}'], "malformed event (`choices` is dict"),
        (
            ['{"choices":[{"delta":{"content":"a"}}]}'],
            "stream ended when the connection closed without usage",
        ),
        (['{"choices":[],"usage":{"prompt_tokens":"5"}}'], "usage lacks integer"),
    ],
)
def test_consume_stream_names_protocol_errors(events: list[str], expected: str) -> None:
    result = StreamResult(start=0.0)
    consume_stream(events, result, deadline=1e12)
    assert result.error is not None and expected in result.error


# ---------- prompts and calibration ----------


def test_prompts_start_unique_unless_a_shared_prefix_is_asked_for() -> None:
    factory = PromptFactory(run_id="r1", seed=3)
    prompts = [factory.text(i, words=50) for i in range(20)]
    assert len({p.split()[0] for p in prompts}) == 20  # the marker comes first
    assert all(len(p.split()) == 51 for p in prompts)  # 50 body words + marker
    assert len({" ".join(p.split()[1:]) for p in prompts}) == 1  # same body: same length
    shared = [factory.text(i, words=50, shared_words=30) for i in range(20)]
    common = " ".join(shared[0].split()[:30])
    assert all(p.startswith(common + " [r1-") for p in shared)
    assert len({p.split()[30] for p in shared}) == 20
    # Another run id gives other markers, so a second run does not hit the first run's cache.
    assert PromptFactory(run_id="r2", seed=3).text(0, 50).split()[0] != prompts[0].split()[0]
    # A longer prompt extends the same body: calibration probes measure the run's text.
    assert factory.text(0, 80).startswith(prompts[0])


def fake_server_count(text: str) -> int:
    """A stand-in tokenizer: 19 tokens of template, 1 per short word, 2 per long word."""
    return 19 + sum(1 if len(word) <= 4 else 2 for word in text.split())


@pytest.mark.parametrize("target", [100, 1000, 4000])
def test_calibration_reaches_the_target_within_a_few_percent(target: int) -> None:
    probes: list[str] = []

    def probe(text: str) -> int:
        probes.append(text)
        return fake_server_count(text)

    plan = calibrate(probe, PromptFactory("cal", 0), target)
    assert 2 + CHECK_PROBES <= len(probes) <= 2 + CHECK_PROBES * (CORRECTIONS + 1)
    # The reported length is what the server counted for prompts of the chosen word count.
    chosen = [fake_server_count(text) for text in probes[2:] if len(text.split()) == plan.words + 1]
    assert len(chosen) == CHECK_PROBES
    assert plan.calibrated_prompt_tokens == round(sum(chosen) / CHECK_PROBES)
    built = [fake_server_count(PromptFactory("x", 0).text(i, plan.words)) for i in range(30)]
    # Within 2 %, or 2 tokens for small targets where one word (1.5 tokens) is already 1.5 %.
    assert abs(statistics.mean(built) - target) <= max(0.02 * target, 2)


def test_calibration_refuses_a_target_below_the_template_overhead() -> None:
    with pytest.raises(BenchError, match="--input-tokens 5 is below"):
        calibrate(fake_server_count, PromptFactory("cal", 0), 5)


# ---------- against the replay server (gpt-oss stream shapes) ----------


def test_ttft_counts_reasoning_and_first_answer_token_is_reported_beside_it() -> None:
    script = ReplayScript(
        reasoning_tokens=3, content_tokens=3, first_delay_s=0.05, reasoning_delay_s=0.05, content_delay_s=0.1
    )
    state = ReplayState(script=script)
    with ReplayServer(state) as server, requests.Session() as session:
        result = stream_chat_completion(
            session,
            Endpoint.from_base_url(server.base_url),
            state.model,
            [{"role": "user", "content": "q"}],
            16,
        )
    assert result.error is None
    assert result.first_token_time is not None and result.first_content_time is not None
    assert result.ttft_s is not None and result.ttft_content_s is not None and result.latency_s is not None
    sent = state.sent_at[0]
    first_reasoning = next(t for kind, t in sent if kind == "reasoning")
    first_content = next(t for kind, t in sent if kind == "content")
    # The client stamps each chunk when it arrives: after it was sent, and promptly (no buffering).
    assert first_reasoning <= result.first_token_time < first_reasoning + 0.03
    assert first_content <= result.first_content_time < first_content + 0.03
    assert result.ttft_s < result.ttft_content_s < result.latency_s
    assert len(result.token_times) == 6


def run_cli(*argv: str) -> int:
    return cli_main(list(argv))


def test_bench_takes_token_counts_from_usage_not_from_chunks(tmp_path: Path, capsys) -> None:
    # The server reports 40 completion tokens while streaming 5 chunks: usage must win.
    state = ReplayState(
        script=ReplayScript(reasoning_tokens=2, content_tokens=3, completion_tokens_reported=40)
    )
    with ReplayServer(state) as server:
        code = run_cli(
            "bench",
            "--base-url",
            server.base_url + "/v1",
            "--model",
            state.model,
            "--requests",
            "6",
            "--concurrency",
            "3",
            "--input-tokens",
            "20",
            "--output-tokens",
            "40",
            "--no-progress",
            "--json",
            str(tmp_path / "b.json"),
        )
    assert code == 0
    report = json.loads((tmp_path / "b.json").read_text())
    assert [r["completion_tokens"] for r in report["requests"]] == [40] * 6
    assert report["summary"]["completion_tokens_total"] == 240
    out = capsys.readouterr().out
    assert "| Average time to first answer token |" in out and "| Average overall throughput" in out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("error_mid_stream", "server sent an error mid-stream: engine failed"),
        ("malformed", "malformed event (not JSON)"),
        ("cut", "stream broken mid-stream"),
        ("stall", "read timeout"),
        ("pings", "exceeded its total timeout of 1 s"),
        ("no_usage", "without usage"),
    ],
)
def test_bench_counts_broken_streams_as_failures(
    mode: str, message: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    state = ReplayState(stall_s=3.0)
    json_path = tmp_path / "b.json"
    with ReplayServer(state) as server:
        # Calibration and warm-up need a good stream; break the timed requests only.
        state.mode = "good"
        args = [
            "bench",
            "--base-url",
            server.base_url,
            "--model",
            state.model,
            "--requests",
            "4",
            "--concurrency",
            "2",
            "--input-tokens",
            "20",
            "--output-tokens",
            "8",
            "--no-progress",
            "--warmup-requests",
            "0",
            "--read-timeout",
            "0.5",
            "--total-timeout",
            "1",
            "--json",
            str(json_path),
        ]
        original = bench_module.calibrate

        def calibrate_then_break(*a, **k):
            plan = original(*a, **k)
            state.mode = mode
            return plan

        monkeypatch.setattr(bench_module, "calibrate", calibrate_then_break)
        started = time.monotonic()
        code = run_cli(*args)
    assert time.monotonic() - started < 10
    assert code == 1
    report = json.loads(json_path.read_text())
    assert report["summary"]["requests_failed"] == 4 and report["summary"]["requests_ok"] == 0
    assert all(message in r["error"] for r in report["requests"])
    err = capsys.readouterr().err
    assert "bench: 4 of 4 requests failed; first error:" in err and "Traceback" not in err


def test_bench_names_an_unreachable_endpoint(capsys) -> None:
    port = ReplayServer(ReplayState())  # bound then closed: nothing listens on that port
    url = port.base_url
    port.server_close()
    assert run_cli("bench", "--base-url", url, "--model", "m", "--no-progress") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"bench FAILED: endpoint unreachable: GET {url}/v1/models failed ([Errno 111] Connection refused)"
    ]


def test_bench_refuses_a_model_the_server_does_not_list(openai_server, capsys) -> None:
    code = run_cli(
        "bench", "--base-url", openai_server.base_url, "--model", "openai/gpt-oss-120b", "--no-progress"
    )
    assert code == 1
    assert capsys.readouterr().err.strip() == (
        f"bench FAILED: unknown model 'openai/gpt-oss-120b': GET {openai_server.base_url}/v1/models lists "
        "['tiny/chat']; pass one of those with --model"
    )


def test_bench_sends_extra_fields_and_the_streaming_options(tmp_path: Path) -> None:
    state = ReplayState()
    with ReplayServer(state) as server:
        code = run_cli(
            "bench",
            "--base-url",
            server.base_url,
            "--model",
            state.model,
            "--requests",
            "3",
            "--concurrency",
            "1",
            "--input-tokens",
            "30",
            "--output-tokens",
            "7",
            "--no-progress",
            "--warmup-requests",
            "1",
            "--ignore-eos",
            "--extra-body",
            '{"reasoning_effort": "medium"}',
        )
    assert code == 0
    # Calibration probes (max_tokens 1), then 1 warm-up and 3 timed requests.
    probes = sum(1 for b in state.bodies if b["max_tokens"] == 1)
    assert probes >= 2 + CHECK_PROBES
    assert [b["max_tokens"] for b in state.bodies] == [1] * probes + [7] * 4
    for body in state.bodies:
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        assert body["reasoning_effort"] == "medium" and body["ignore_eos"] is True
    timed = [b["messages"][0]["content"] for b in state.bodies[probes + 1 :]]
    assert len({text.split()[0] for text in timed}) == 3  # each starts with its own marker


def test_bench_rejects_bad_arguments_with_one_line(capsys) -> None:
    assert run_cli("bench", "--base-url", "127.0.0.1:8000", "--model", "m") == 2
    assert "must start with http:// or https://" in capsys.readouterr().err
    assert run_cli("bench", "--base-url", "http://x", "--model", "m", "--concurrency", "0") == 2
    assert "--concurrency 0 must be at least 1" in capsys.readouterr().err
    assert (
        run_cli("bench", "--base-url", "http://x", "--model", "m", "--extra-body", '{"stream": false}') == 2
    )
    assert "--extra-body may not set ['stream']" in capsys.readouterr().err


# ---------- against the real server (transformers serve, tiny model) ----------


def test_bench_against_real_server(openai_server, tmp_path: Path) -> None:
    json_path, plot_path = tmp_path / "bench.json", tmp_path / "latency.png"
    started = time.perf_counter()
    code = run_cli(
        "bench",
        "--base-url",
        openai_server.base_url,
        "--model",
        openai_server.model,
        "--requests",
        "12",
        "--concurrency",
        "3",
        "--input-tokens",
        "200",
        "--output-tokens",
        "24",
        "--run-id",
        "realtest",
        "--seed",
        "5",
        "--no-progress",
        "--json",
        str(json_path),
        "--plot",
        str(plot_path),
    )
    elapsed = time.perf_counter() - started
    assert code == 0
    report = json.loads(json_path.read_text())
    summary, rows = report["summary"], report["requests"]
    assert summary["requests_ok"] == 12 and summary["requests_failed"] == 0 and len(rows) == 12
    for row in rows:
        assert row["error"] is None
        assert 0 < row["ttft_s"] <= row["latency_s"]
        # The tiny model never stops early (openai_server.py), so the server's count is exact,
        # and it streams its reasoning words before the first answer word.
        assert row["completion_tokens"] == 24
        assert row["ttft_s"] < row["ttft_content_s"] <= row["latency_s"]
    # Calibration against the server's own count: within 3 % of the request.
    assert abs(summary["average_prompt_tokens"] - 200) <= 6
    # Throughput is tokens over the wall time of the run, and the run fits in what we measured.
    completion_total = sum(r["completion_tokens"] for r in rows)
    assert summary["completion_tokens_total"] == completion_total
    assert summary["output_throughput_tokens_per_s"] == pytest.approx(
        completion_total / summary["wall_time_s"]
    )
    assert max(r["latency_s"] for r in rows) <= summary["wall_time_s"] < elapsed
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Token counts equal the server's own: ask it again, without streaming, for the same prompts.
    factory = PromptFactory(run_id="realtest", seed=5)
    words = report["calibration"]["words"]
    for index in (0, 7):
        reply = requests.post(
            f"{openai_server.base_url}/v1/chat/completions",
            json={
                "model": openai_server.model,
                "max_tokens": 24,
                "messages": [{"role": "user", "content": factory.text(index, words)}],
            },
            timeout=60,
        ).json()
        assert reply["usage"]["prompt_tokens"] == rows[index]["prompt_tokens"]
        assert reply["usage"]["completion_tokens"] == rows[index]["completion_tokens"]


def _requests_seen(log_path: Path) -> int:
    return log_path.read_text(errors="replace").count("[Request received]")


@pytest.mark.slow
def test_bench_counts_failures_when_the_server_stops_mid_run(tmp_path: Path) -> None:
    server = start_server(tmp_path / "own-server")
    json_path = tmp_path / "bench.json"
    # Calibration is deterministic for a run id and seed: count its probes by running it first.
    probe = bench_module._probe_function(
        RunConfig(Endpoint.from_base_url(server.base_url), server.model, 400, 2, Timeouts(), {})
    )
    probe_texts: list[str] = []

    def recording_probe(text: str) -> int:
        probe_texts.append(text)
        return probe(text)

    calibrate(recording_probe, PromptFactory("midrun", 0), 200)
    command = [
        sys.executable,
        "-m",
        "serving",
        "bench",
        "--base-url",
        server.base_url,
        "--model",
        server.model,
        "--requests",
        "40",
        "--concurrency",
        "2",
        "--input-tokens",
        "200",
        "--output-tokens",
        "400",
        "--run-id",
        "midrun",
        "--seed",
        "0",
        "--warmup-requests",
        "2",
        "--no-progress",
        "--json",
        str(json_path),
        "--connect-timeout",
        "2",
        "--read-timeout",
        "10",
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Our probes, the bench's probes and 2 warm-ups, then let 4 timed requests start (2 of them
        # finish, with concurrency 2) before stopping the server.
        before_run = 2 * len(probe_texts) + 2
        deadline = time.monotonic() + 60
        while _requests_seen(server.log_path) < before_run + 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.stop()
        _stdout, stderr = process.communicate(timeout=60)
    finally:
        server.stop()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, stderr
    report = json.loads(json_path.read_text())
    summary = report["summary"]
    assert summary["requests_ok"] + summary["requests_failed"] == 40
    assert summary["requests_ok"] >= 1 and summary["requests_failed"] >= 30
    assert "Traceback" not in stderr
    assert any("unreachable" in (r["error"] or "") for r in report["requests"])
    assert f"bench: {summary['requests_failed']} of 40 requests failed" in stderr

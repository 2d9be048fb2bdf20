"""`python -m serving top` against a loopback stand-in of the Prometheus HTTP API."""

from __future__ import annotations

import io
import json
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from serving.cli import build_parser
from serving.observability import top
from serving.observability.queries import Scope, stack_queries
from tests.support.nginx_runner import free_loopback_port

QUERIES = stack_queries(Scope())
Answer = Callable[[str], tuple[int, Any]]


def _vector(*samples: tuple[dict[str, str], float]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": m, "value": [0, str(v)]} for m, v in samples]},
    }


HEALTHY: dict[str, dict[str, Any]] = {
    QUERIES.replicas_available.expr: _vector(({}, 2)),
    QUERIES.replicas_desired.expr: _vector(({}, 2)),
    QUERIES.request_rate.expr: _vector(({}, 4.25)),
    QUERIES.error_ratio_5xx.expr: _vector(({}, 0.0117)),
    QUERIES.queued_requests.expr: _vector(({}, 6)),
    QUERIES.ttft_p90.expr: _vector(({}, 0.45)),
    QUERIES.output_tokens_per_second.expr: _vector(({}, 1234.5)),
    QUERIES.kv_cache_utilisation_max.expr: _vector(({}, 0.75)),
    QUERIES.gpu_utilisation.expr: _vector(({}, 87)),
    QUERIES.running_requests_by_pod.expr: _vector(
        ({"pod": "trtllm-serve-a-1"}, 12), ({"pod": "trtllm-serve-a-2"}, 3)
    ),
    QUERIES.kv_cache_utilisation_by_pod.expr: _vector(({"pod": "trtllm-serve-a-1"}, float("nan"))),
}


class FakePrometheus:
    def __init__(self, answer: Answer) -> None:
        self.seen: list[str] = []
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path with query, headers) as received
        seen, received = self.seen, self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                expr = parse_qs(url.query).get("query", [""])[0]
                seen.append(expr)
                received.append((self.path, dict(self.headers.items())))
                status, body = answer(expr) if url.path == "/api/v1/query" else (404, "404 page not found")
                data = (json.dumps(body) if not isinstance(body, str) else body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def prometheus(request: pytest.FixtureRequest) -> Iterator[FakePrometheus]:
    answer: Answer = getattr(request, "param", lambda expr: (200, HEALTHY.get(expr, _vector())))
    fake = FakePrometheus(answer)
    try:
        yield fake
    finally:
        fake.stop()


def _run(*argv: str) -> tuple[int, str]:
    args = build_parser().parse_args(["top", *argv])
    out = io.StringIO()
    return top.run_top(args, out), out.getvalue()


def test_once_prints_the_stack_from_the_named_queries(prometheus: FakePrometheus) -> None:
    code, out = _run("--prometheus", prometheus.url, "--once")
    assert code == 0
    assert "replicas ready              2 of 2" in out
    assert "requests/s                  4.2" in out
    assert "5xx ratio                   1.2%" in out
    assert "queued requests             6" in out
    assert "TTFT p90                    0.45 s" in out
    assert "output tokens/s             1,234.5" in out
    assert "KV cache (fullest replica)  75.0%" in out
    assert "GPU utilisation (mean)      87.0%" in out
    assert "trtllm-serve-a-1" in out and "trtllm-serve-a-2" in out
    # Every expression it sent is one of the named queries: nothing is spelt twice.
    assert set(prometheus.seen) <= {query.expr for query in QUERIES.all()}
    assert "\033[" not in out  # no screen control codes when not on a terminal


def test_unreachable_prometheus_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run("--prometheus", f"http://127.0.0.1:{free_loopback_port()}", "--once")
    err = capsys.readouterr().err
    assert code == top.EXIT_UNREACHABLE and out == ""
    assert err.startswith("error: cannot reach Prometheus at http://127.0.0.1:") and err.count("\n") == 1
    assert err.endswith(": connection refused\n")  # not requests' whole message with the query in it
    assert "Traceback" not in err


@pytest.mark.parametrize("prometheus", [lambda expr: (200, _vector())], indirect=True)
def test_a_prometheus_without_the_stacks_data_is_exit_3(
    prometheus: FakePrometheus, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = _run("--prometheus", prometheus.url, "--once")
    err = capsys.readouterr().err
    assert code == top.EXIT_NO_DATA
    assert "has no data for namespace gpt-oss" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "prometheus",
    [lambda expr: (400, {"status": "error", "errorType": "bad_data", "error": "parse error at char 3"})],
    indirect=True,
)
def test_a_refused_query_says_why(prometheus: FakePrometheus, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = _run("--prometheus", prometheus.url, "--once")
    err = capsys.readouterr().err
    assert code == top.EXIT_UNREACHABLE
    assert "refused the query (HTTP 400): bad_data parse error at char 3" in err


def test_a_url_that_is_not_prometheus_says_so(
    prometheus: FakePrometheus, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = _run("--prometheus", prometheus.url + "/api/v1", "--once")
    assert code == top.EXIT_UNREACHABLE
    assert "without a Prometheus API body" in capsys.readouterr().err


def test_sigv4_without_botocore_is_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "botocore", None)
    monkeypatch.setitem(sys.modules, "botocore.auth", None)
    code, _ = _run(
        "--prometheus",
        "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1",
        "--sigv4",
        "--region",
        "us-east-1",
        "--once",
    )
    err = capsys.readouterr().err
    assert code == top.EXIT_UNREACHABLE
    assert "--sigv4 needs botocore" in err and "Traceback" not in err


def test_sigv4_needs_a_region(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = _run("--prometheus", "https://example.invalid", "--sigv4", "--once")
    assert code == 2
    assert "--sigv4 needs --region" in capsys.readouterr().err


def test_refreshing_keeps_going_after_a_blip_and_stops_on_ctrl_c(
    prometheus: FakePrometheus, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []
    snapshots = iter([None, top.PrometheusError("cannot reach Prometheus at x: refused")])
    real = top.take_snapshot

    def take(client: top.PrometheusClient, q: Any) -> top.Snapshot:
        planned = next(snapshots, KeyboardInterrupt())
        if isinstance(planned, BaseException):
            raise planned
        return real(client, q)

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    monkeypatch.setattr(top, "take_snapshot", take)
    monkeypatch.setattr(top.time, "sleep", sleep)
    code, out = _run("--prometheus", prometheus.url, "--interval", "2")
    assert code == 0
    assert sleeps == [2.0, 2.0]
    assert "(refresh failed: cannot reach Prometheus at x: refused)" in out
    assert out.count("replicas ready") == 2


def test_sigv4_signs_exactly_the_request_it_sends(
    prometheus: FakePrometheus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signature the stand-in receives is the one botocore computes for what arrived."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = top.PrometheusClient(prometheus.url, sigv4_region="us-east-1")
    assert client.query(QUERIES.replicas_available.expr)
    path, headers = prometheus.requests[-1]
    assert "+" not in path.split("?", 1)[1]  # spaces as %20, as SigV4 canonicalises them
    authorization = headers["Authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-east-1/aps/aws4_request" in authorization
    replay = AWSRequest(
        method="GET", url=prometheus.url + path, headers={"X-Amz-Date": headers["X-Amz-Date"]}
    )
    replay.context["timestamp"] = headers["X-Amz-Date"]
    signer = SigV4Auth(
        Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"), "aps", "us-east-1"
    )
    expected = signer.signature(signer.string_to_sign(replay, signer.canonical_request(replay)), replay)
    assert authorization.endswith(f"Signature={expected}")

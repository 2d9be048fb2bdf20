"""smoke: against the real server (transformers serve) and, for keys and gpt-oss shapes, the replay server."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from serving.cli import main as cli_main
from serving.client.smoke import SMOKE_PROMPT
from serving.config.project import PROJECT_DIR
from tests.support.sse_replay_server import ReplayServer, ReplayState

REPO = PROJECT_DIR


def run_smoke_process(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serving", "smoke", *argv],
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_smoke_passes_against_the_real_server(openai_server) -> None:
    done = run_smoke_process("--base-url", openai_server.base_url, "--model", openai_server.model)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"ok: GET {openai_server.base_url}/health -> 200"
    assert lines[1] == f"ok: GET {openai_server.base_url}/v1/models lists 'tiny/chat'"
    assert lines[2].startswith("ok: streamed chat completion: TTFT ")
    # The tiny model reasons (delta.reasoning_content) and then answers until max_tokens (64).
    assert "completion_tokens=64 (reasoning " in lines[2] and "reasoning 0 chars" not in lines[2]
    assert "answer 0 chars" not in lines[2]
    assert done.stderr == ""


def test_smoke_reads_the_stack_outputs_from_stdin(openai_server) -> None:
    outputs = {"endpoint": f"{openai_server.base_url}/v1", "model": openai_server.model, "apiKey": "sk-test"}
    done = run_smoke_process("--stack-outputs", "-", stdin=json.dumps(outputs))
    assert done.returncode == 0, done.stderr
    assert f"lists {openai_server.model!r}" in done.stdout


def test_smoke_names_an_unknown_model(openai_server, capsys) -> None:
    assert cli_main(["smoke", "--base-url", openai_server.base_url, "--model", "openai/gpt-oss-120b"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"smoke FAILED: unknown model 'openai/gpt-oss-120b': GET {openai_server.base_url}/v1/models lists "
        "['tiny/chat']; pass one of those with --model"
    )


def test_smoke_names_an_unreachable_endpoint_without_traceback() -> None:
    closed = ReplayServer(ReplayState())
    url = closed.base_url
    closed.server_close()
    done = run_smoke_process("--base-url", url, "--model", "m", "--connect-timeout", "2")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"smoke FAILED: endpoint unreachable: GET {url}/health failed ([Errno 111] Connection refused)"
    )


@pytest.mark.parametrize(
    ("key", "code", "message"),
    [
        (None, 1, "401 Unauthorized: no API key was sent (pass the right one with --api-key)"),
        ("wrong", 1, "401 Unauthorized: the API key was rejected (pass the right one with --api-key)"),
        ("sk-right", 0, None),
    ],
)
def test_smoke_checks_the_api_key(
    key: str | None, code: int, message: str | None, capsys, monkeypatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    state = ReplayState(api_key="sk-right")
    with ReplayServer(state) as server:
        argv = ["smoke", "--base-url", server.base_url + "/v1", "--model", state.model]
        assert cli_main(argv + (["--api-key", key] if key else [])) == code
    captured = capsys.readouterr()
    if message is None:
        # gpt-oss shape: reasoning streamed before the answer, usage in a final chunk.
        assert "reasoning 21 chars, answer 24 chars" in captured.out
        # The replay server counts 11 template tokens plus one per word; 3 + 4 chunks streamed.
        prompt_tokens = 11 + len(SMOKE_PROMPT.split())
        assert f"usage prompt_tokens={prompt_tokens} completion_tokens=7" in captured.out
    else:
        assert captured.err.strip() == f"smoke FAILED: GET {server.base_url}/v1/models -> {message}"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ({"health_status": 503}, "/health -> HTTP 503"),
        (
            {"mode": "error_mid_stream"},
            "streamed chat completion: server sent an error mid-stream: engine failed",
        ),
        ({"mode": "no_usage"}, "without usage"),
        ({"mode": "http_500"}, "streamed chat completion: HTTP 500 from"),
    ],
)
def test_smoke_says_which_check_failed(setup: dict, message: str, capsys) -> None:
    state = ReplayState(**setup)
    with ReplayServer(state) as server:
        assert cli_main(["smoke", "--base-url", server.base_url, "--model", state.model]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("smoke FAILED: ") and message in err and len(err.splitlines()) == 1


def test_smoke_refuses_hidden_secrets_and_bad_stack_outputs(tmp_path: Path, capsys) -> None:
    hidden = tmp_path / "outputs.json"
    hidden.write_text(json.dumps({"endpoint": "http://127.0.0.1:1/v1", "model": "m", "apiKey": "[secret]"}))
    assert cli_main(["smoke", "--stack-outputs", str(hidden)]) == 2
    assert "--show-secrets" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text("Current stack is prod:")
    assert cli_main(["smoke", "--stack-outputs", str(broken)]) == 2
    assert "not JSON" in capsys.readouterr().err
    assert cli_main(["smoke", "--model", "m"]) == 2
    assert "no endpoint: pass --base-url URL" in capsys.readouterr().err


def test_smoke_verifies_the_stack_ca_through_the_tls_gateway(openai_server, monkeypatch, capsys) -> None:
    """The deployed shape: the real model server behind the real gateway (TLS, the stack CA's
    certificate for the region's NLB names), called with the stack outputs, caCertificate included."""
    from serving.workload.certificates import endpoint_certificate_names
    from tests.support.certificates import issue_server_certificate, new_authority
    from tests.support.nginx_runner import start_nginx

    nlb = "k8s-gptoss-gptoss-0123456789.elb.us-east-1.amazonaws.com"
    authority = new_authority()
    names = endpoint_certificate_names(
        service="gpt-oss", namespace="gpt-oss", region="us-east-1", hostname=None
    )
    key = "k" * 43
    gateway = start_nginx(openai_server.port, [key], certificate=issue_server_certificate(authority, names))
    real_getaddrinfo = socket.getaddrinfo
    # DNS is the one thing not real: the NLB's name points at the loopback gateway.
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, *a, **k: real_getaddrinfo("127.0.0.1" if host == nlb else host, *a, **k),
    )
    outputs = {
        "endpoint": f"https://{nlb}:{gateway.settings.listen_port}/v1",
        "model": openai_server.model,
        "apiKey": key,
        "caCertificate": authority.certificate_pem,
    }
    try:
        monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(outputs)))
        assert cli_main(["smoke", "--stack-outputs", "-"]) == 0, capsys.readouterr().err
        assert "ok: streamed chat completion" in capsys.readouterr().out
        # Without the CA, the system's trust store does not know the stack's CA: refused, clearly.
        without_ca = {k: v for k, v in outputs.items() if k != "caCertificate"}
        monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(without_ca)))
        assert cli_main(["smoke", "--stack-outputs", "-"]) == 1
        assert "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().err
    finally:
        gateway.stop()

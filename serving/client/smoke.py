"""`python -m serving smoke`: is the endpoint up, serving the model, and streaming with usage?

Three checks, in order, stopping at the first failure:
1. `GET <root>/health` answers 200 (the route sits at the server root, not under /v1);
2. `GET <root>/v1/models` answers 200 and lists the model;
3. one short streamed chat completion delivers at least one text chunk and ends with `usage`.

Exit 0 when all hold; otherwise 1 with one line `smoke FAILED: ...` on stderr naming what failed.
Exit 2 when the settings themselves are missing or malformed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import requests

from serving.client.outputs import SettingsError, add_endpoint_arguments, resolve_settings
from serving.client.stream import Endpoint, Timeouts, root_cause, stream_chat_completion

SMOKE_PROMPT = "Reply with one short sentence: what is 2 + 2?"
EXIT_OK, EXIT_FAILED, EXIT_BAD_SETTINGS = 0, 1, 2


class SmokeFailure(Exception):
    """One check failed; the message is the line shown to the user."""


@dataclass(frozen=True)
class SmokeReport:
    models: list[str]
    ttft_s: float
    latency_s: float
    prompt_tokens: int
    completion_tokens: int
    reasoning_chars: int
    content_chars: int

    def lines(self, endpoint: Endpoint, model: str) -> list[str]:
        return [
            f"ok: GET {endpoint.root}/health -> 200",
            f"ok: GET {endpoint.api_base}/models lists {model!r}",
            f"ok: streamed chat completion: TTFT {self.ttft_s * 1000:.0f} ms, latency "
            f"{self.latency_s * 1000:.0f} ms, usage prompt_tokens={self.prompt_tokens} "
            f"completion_tokens={self.completion_tokens} (reasoning {self.reasoning_chars} chars, "
            f"answer {self.content_chars} chars)",
        ]


def _get(session: requests.Session, url: str, endpoint: Endpoint, timeouts: Timeouts) -> requests.Response:
    try:
        return session.get(url, headers=endpoint.headers(), timeout=(timeouts.connect, timeouts.read))
    except requests.exceptions.ConnectTimeout:
        raise SmokeFailure(f"GET {url}: no connection within {timeouts.connect} s") from None
    except requests.exceptions.ReadTimeout:
        raise SmokeFailure(f"GET {url}: no answer within {timeouts.read} s") from None
    except requests.exceptions.ConnectionError as exc:
        raise SmokeFailure(f"endpoint unreachable: GET {url} failed ({root_cause(exc)})") from None
    except requests.exceptions.RequestException as exc:
        raise SmokeFailure(f"GET {url} failed: {type(exc).__name__}: {exc}") from None


def _status_problem(response: requests.Response, url: str, endpoint: Endpoint) -> str:
    body = " ".join(response.text.split())[:200]
    if response.status_code == 401:
        key_state = "no API key was sent" if not endpoint.api_key else "the API key was rejected"
        return f"GET {url} -> 401 Unauthorized: {key_state} (pass the right one with --api-key)"
    return f"GET {url} -> HTTP {response.status_code}: {body}"


def check_health(session: requests.Session, endpoint: Endpoint, timeouts: Timeouts) -> None:
    url = f"{endpoint.root}/health"
    response = _get(session, url, endpoint, timeouts)
    if response.status_code == 404:
        raise SmokeFailure(f"GET {url} -> 404: no /health at the server root; is the base URL right?")
    if response.status_code != 200:
        raise SmokeFailure(_status_problem(response, url, endpoint))


def check_models(session: requests.Session, endpoint: Endpoint, model: str, timeouts: Timeouts) -> list[str]:
    url = f"{endpoint.api_base}/models"
    response = _get(session, url, endpoint, timeouts)
    if response.status_code != 200:
        raise SmokeFailure(_status_problem(response, url, endpoint))
    try:
        data = response.json()["data"]
        served = [str(entry["id"]) for entry in data]
    except (ValueError, KeyError, TypeError):
        raise SmokeFailure(f"GET {url}: not an OpenAI model list: {response.text[:200]!r}") from None
    if model not in served:
        raise SmokeFailure(
            f"unknown model {model!r}: GET {url} lists {served}; pass one of those with --model"
        )
    return served


def run_smoke(endpoint: Endpoint, model: str, timeouts: Timeouts, max_tokens: int = 64) -> SmokeReport:
    """Run the three checks; raise SmokeFailure at the first that fails."""
    with endpoint.session() as session:
        check_health(session, endpoint, timeouts)
        served = check_models(session, endpoint, model, timeouts)
        result = stream_chat_completion(
            session,
            endpoint,
            model,
            [{"role": "user", "content": SMOKE_PROMPT}],
            max_tokens=max_tokens,
            timeouts=timeouts,
        )
    if result.error is not None:
        raise SmokeFailure(f"streamed chat completion: {result.error}")
    if result.ttft_s is None:
        raise SmokeFailure("streamed chat completion ended with usage but streamed no text at all")
    assert result.latency_s is not None and result.prompt_tokens is not None
    assert result.completion_tokens is not None
    return SmokeReport(
        models=served,
        ttft_s=result.ttft_s,
        latency_s=result.latency_s,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        reasoning_chars=len(result.reasoning),
        content_chars=len(result.content),
    )


def add_timeout_arguments(parser: argparse.ArgumentParser, read: float, total: float) -> None:
    group = parser.add_argument_group("timeouts (seconds)")
    group.add_argument("--connect-timeout", type=float, default=10.0, help="TCP connect (default 10)")
    group.add_argument(
        "--read-timeout", type=float, default=read, help=f"silence between bytes (default {read:g})"
    )
    group.add_argument(
        "--total-timeout", type=float, default=total, help=f"one whole request (default {total:g})"
    )


def timeouts_from(args: argparse.Namespace) -> Timeouts:
    for name in ("connect_timeout", "read_timeout", "total_timeout"):
        if getattr(args, name) <= 0:
            raise SettingsError(f"--{name.replace('_', '-')} {getattr(args, name)} must be positive")
    return Timeouts(connect=args.connect_timeout, read=args.read_timeout, total=args.total_timeout)


def main(args: argparse.Namespace) -> int:
    try:
        settings = resolve_settings(args)
        endpoint = Endpoint.from_base_url(settings.base_url, settings.api_key, settings.ca_file)
        timeouts = timeouts_from(args)
    except (SettingsError, ValueError) as exc:
        print(f"smoke FAILED: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    try:
        report = run_smoke(endpoint, settings.model, timeouts, max_tokens=args.max_tokens)
    except SmokeFailure as exc:
        print(f"smoke FAILED: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for line in report.lines(endpoint, settings.model):
        print(line)
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "smoke",
        help="check /health, /v1/models and one streamed chat completion",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_endpoint_arguments(parser)
    parser.add_argument(
        "--max-tokens", type=int, default=64, help="output tokens of the test completion (default 64)"
    )
    add_timeout_arguments(parser, read=60.0, total=120.0)
    parser.set_defaults(func=main)

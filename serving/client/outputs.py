"""Endpoint settings from the stack's outputs, for smoke and bench.

`pulumi stack output --json --show-secrets` prints one JSON object; this stack's outputs are
`endpoint` (base URL ending in /v1), `model`, `apiKey` and, for the stack's own CA,
`caCertificate`. Pipe it in with `--stack-outputs -` or save it to a file and pass the path.
Explicit `--base-url/--model/--api-key/--ca-file` win over it.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

# What Pulumi prints for a secret output without --show-secrets.
HIDDEN_SECRET = "[secret]"
API_KEY_ENV = "OPENAI_API_KEY"


class SettingsError(ValueError):
    """A missing or unusable endpoint setting; the message says which and what would work."""


@dataclass(frozen=True)
class EndpointSettings:
    base_url: str
    model: str
    api_key: str | None
    ca_file: str | None = None  # PEM CA file to verify the endpoint's certificate against


def read_stack_outputs(source: str, stdin: TextIO | None = None) -> dict[str, object]:
    """Parse the JSON object from `source`: a path, or `-` for standard input."""
    try:
        if source == "-":
            text = (stdin or sys.stdin).read()
            where = "standard input"
        else:
            text = Path(source).read_text()
            where = source
    except OSError as exc:
        raise SettingsError(f"--stack-outputs {source!r}: cannot read it ({exc.strerror})") from None
    try:
        outputs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(
            f"--stack-outputs {where}: not JSON ({exc.msg} at line {exc.lineno}); "
            "expected the output of `pulumi stack output --json --show-secrets`"
        ) from None
    if not isinstance(outputs, dict):
        raise SettingsError(f"--stack-outputs {where}: expected a JSON object of stack outputs")
    return outputs


def add_endpoint_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("endpoint")
    group.add_argument("--base-url", help="server root or API base (…/v1), e.g. http://127.0.0.1:8000/v1")
    group.add_argument("--model", help="model name to send, as /v1/models lists it")
    group.add_argument("--api-key", help=f"bearer key (default: ${API_KEY_ENV}, or the stack's apiKey)")
    group.add_argument(
        "--stack-outputs",
        metavar="FILE|-",
        help="JSON of `pulumi stack output --json --show-secrets` (a file, or - for stdin); "
        "supplies endpoint, model, apiKey and caCertificate",
    )
    group.add_argument(
        "--ca-file",
        metavar="PEM",
        help="CA certificate to verify an https endpoint against (default: the stack's "
        "caCertificate output, else the system's trust store)",
    )


def resolve_settings(args: argparse.Namespace, stdin: TextIO | None = None) -> EndpointSettings:
    outputs: dict[str, object] = {}
    if args.stack_outputs:
        outputs = read_stack_outputs(args.stack_outputs, stdin)
    base_url = args.base_url or outputs.get("endpoint")
    model = args.model or outputs.get("model")
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or outputs.get("apiKey")
    if not base_url:
        raise SettingsError("no endpoint: pass --base-url URL or --stack-outputs with an `endpoint` output")
    if not model:
        raise SettingsError("no model: pass --model NAME or --stack-outputs with a `model` output")
    if api_key == HIDDEN_SECRET:
        raise SettingsError(
            "the stack's apiKey is hidden ('[secret]'): run `pulumi stack output --json --show-secrets`"
        )
    for name, value in (("endpoint", base_url), ("model", model), ("apiKey", api_key)):
        if value is not None and not isinstance(value, str):
            raise SettingsError(f"stack output {name!r} is {type(value).__name__}, expected a string")
    ca_file = args.ca_file
    ca_certificate = outputs.get("caCertificate")
    if ca_file is None and isinstance(ca_certificate, str) and ca_certificate.startswith("-----BEGIN"):
        ca_file = _written_ca_file(ca_certificate)
    if ca_file is not None and not Path(ca_file).is_file():
        raise SettingsError(
            f"--ca-file {ca_file!r}: no such file (save it with `pulumi stack output caCertificate`)"
        )
    return EndpointSettings(
        base_url=str(base_url), model=str(model), api_key=str(api_key) if api_key else None, ca_file=ca_file
    )


def _written_ca_file(pem: str) -> str:
    """The stack's CA certificate as a file (what an HTTP client verifies against), removed at exit."""
    handle, path = tempfile.mkstemp(prefix="gpt-oss-ca-", suffix=".pem")
    with os.fdopen(handle, "w") as file:
        file.write(pem)
    atexit.register(lambda: Path(path).unlink(missing_ok=True))
    return path

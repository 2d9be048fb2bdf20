"""The Pulumi project's own files, read without Pulumi: `Pulumi.yaml` and `Pulumi.<stack>.yaml`.

`Pulumi.yaml` is the one home of the project's name and of every setting's type and default.
The settings loader, the render command, the offline runner and the policy runner read them
here; `assemble_config` turns a stack file into the configuration a program receives.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
from pathlib import Path
from typing import Any

import yaml

PROJECT_DIR = Path(__file__).resolve().parents[2]
# Offline runs (make plan, render, the policy runner) read a stack file, where secrets are
# encrypted: these stand in for them. Nothing offline sends them anywhere; they only have to exist.
PLACEHOLDER_HF_TOKEN = "<hf-token-placeholder>"
PLACEHOLDER_KUBECONFIG = "<kubeconfig from the stack's encrypted config>"


def project() -> dict[str, Any]:
    """Pulumi.yaml, parsed once per process (it does not change under a running program)."""
    return copy.deepcopy(_parsed_project())


@functools.cache
def _parsed_project() -> dict[str, Any]:
    return yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())


def project_name() -> str:
    return project()["name"]


def declared_config() -> dict[str, dict[str, Any]]:
    """The `config:` block of Pulumi.yaml: key -> {type, default, secret, description}."""
    return project().get("config") or {}


def project_defaults() -> dict[str, Any]:
    return {
        key: spec["default"]
        for key, spec in declared_config().items()
        if isinstance(spec, dict) and "default" in spec
    }


def stack_file(stack: str) -> Path:
    """`prod` is Pulumi.prod.yaml beside Pulumi.yaml; a path to a `.yaml` file is that file
    (to check a stack file before it joins the project)."""
    if stack.endswith((".yaml", ".yml")):
        return Path(stack)
    return PROJECT_DIR / f"Pulumi.{stack}.yaml"


def stack_name(stack: str) -> str:
    """The stack's name: `prod` for `prod` and for `some/dir/Pulumi.prod.yaml`."""
    name = stack_file(stack).name
    return name.removeprefix("Pulumi.").rsplit(".", 1)[0] if stack.endswith((".yaml", ".yml")) else stack


def stack_config(stack: str) -> dict[str, Any]:
    """The `config:` block of a stack file, keys as written (`<namespace>:<key>`)."""
    path = stack_file(stack)
    if not path.exists():
        raise FileNotFoundError(
            f"no stack file {path}; stacks here: "
            + ", ".join(p.name for p in sorted(PROJECT_DIR.glob("Pulumi.*.yaml")))
        )
    return (yaml.safe_load(path.read_text()) or {}).get("config") or {}


def _config_text(value: Any) -> str:
    """Config values as the engine hands them to the program: strings, objects as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)) or value is None:
        return json.dumps(value)  # a YAML null arrives as "null"
    return str(value)


def _full_key(project: str, key: str) -> str:
    return key if ":" in key else f"{project}:{key}"


def assemble_config(
    stack: str,
    overrides: dict[str, object] | None = None,
    secret_overrides: dict[str, str] | None = None,
) -> tuple[str, dict[str, str], set[str]]:
    """(project name, full config as strings, secret keys), as the CLI would hand them to the
    program: the stack file, then `overrides` (keys without prefix are the project's), then
    Pulumi.yaml's defaults for what is still unset. Encrypted values become placeholders."""
    name = project_name()
    declared = declared_config()
    values: dict[str, Any] = {}
    secret_keys: set[str] = set()
    for key, value in stack_config(stack).items():
        full = _full_key(name, key)
        if isinstance(value, dict) and set(value) == {"secure"}:
            # Encrypted in the stack file: only the CLI with the stack's key can read it.
            secret_keys.add(full)
            values[full] = {
                f"{name}:hfAccessToken": os.environ.get("HF_TOKEN") or PLACEHOLDER_HF_TOKEN,
                f"{name}:kubeconfig": PLACEHOLDER_KUBECONFIG,
            }.get(full, "<encrypted>")
        else:
            values[full] = value
    for key, value in (overrides or {}).items():
        values[_full_key(name, key)] = value
    for key, value in (secret_overrides or {}).items():
        full = _full_key(name, key)
        values[full] = value
        secret_keys.add(full)

    # Pulumi.yaml defaults, applied like the CLI does for keys the stack does not set.
    for key, spec in declared.items():
        full = _full_key(name, key)
        if full not in values and isinstance(spec, dict) and "default" in spec:
            values[full] = spec["default"]
    # A declared secret written in plain text stays plain text, as the CLI passes it for an
    # untyped key: the settings loader refuses it rather than this runner hiding it.

    token_key = f"{name}:hfAccessToken"
    if token_key not in values:
        values[token_key] = os.environ.get("HF_TOKEN") or PLACEHOLDER_HF_TOKEN
        secret_keys.add(token_key)
    return name, {k: _config_text(v) for k, v in values.items()}, secret_keys


def parse_assignments(pairs: list[str]) -> dict[str, object]:
    """`--set KEY=VALUE` arguments as overrides; VALUE is read as YAML (2, true, [a, b])."""
    overrides: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {pair!r}: write KEY=VALUE, e.g. --set replicas=2")
        overrides[key] = yaml.safe_load(raw) if raw else ""
    return overrides


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    """`--stack` and `--set`, the same for every command that reads a stack file offline."""
    parser.add_argument(
        "--stack",
        default="prod",
        help="a stack name (Pulumi.<stack>.yaml) or the path of a stack file (default prod)",
    )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a stack setting for this run, e.g. --set replicas=2 (repeatable)",
    )

"""The Pulumi project's own files, read without Pulumi: `Pulumi.yaml` and `Pulumi.<stack>.yaml`.

`Pulumi.yaml` is the one home of the project's name and of every setting's type and default.
The settings parser, the render command, the offline runner and the policy pack read them here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PROJECT_DIR = Path(__file__).resolve().parent.parent


def project() -> dict[str, Any]:
    return yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())


def project_name() -> str:
    return project()["name"]


def declared_config() -> dict[str, dict[str, Any]]:
    """The `config:` block of Pulumi.yaml: key -> {type, default, secret, description}."""
    return project().get("config") or {}


def project_defaults() -> dict[str, Any]:
    return {key: spec["default"] for key, spec in declared_config().items()
            if isinstance(spec, dict) and "default" in spec}


def stack_file(stack: str) -> Path:
    return PROJECT_DIR / f"Pulumi.{stack}.yaml"


def stack_config(stack: str) -> dict[str, Any]:
    """The `config:` block of a stack file, keys as written (`<namespace>:<key>`)."""
    path = stack_file(stack)
    if not path.exists():
        raise FileNotFoundError(f"no stack file {path.name}; stacks here: "
                                + ", ".join(p.name for p in sorted(PROJECT_DIR.glob("Pulumi.*.yaml"))))
    return (yaml.safe_load(path.read_text()) or {}).get("config") or {}

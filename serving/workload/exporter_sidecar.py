"""The pod's metrics exporter (serving/observability/exporter.py), shipped as source in a ConfigMap.

The exporter is standard-library Python; it runs in the server's own TensorRT-LLM image, which
is already on the node (no extra image to pull, pin or trust), from its source files mounted
read-only at `SOURCE_ROOT`. The files are the exporter module and everything in `serving` it
imports, found by reading the imports, so a new helper module cannot be left out.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
EXPORTER_MODULE = "serving.observability.exporter"
# Where the sources are mounted in the sidecar; PYTHONPATH points here.
SOURCE_ROOT = "/opt/gpt-oss-exporter"


def _module_path(module: str) -> Path:
    base = REPOSITORY_ROOT.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _imported_serving_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name for name in names if name == "serving" or name.startswith("serving.")}
    return found


@functools.cache
def exporter_sources(module: str = EXPORTER_MODULE) -> Mapping[str, str]:
    """Relative path -> source text of `module`, the `serving` modules it imports (transitively)
    and their packages' __init__ files. Read once per process: the ConfigMap and the pod's
    volume both list them."""
    pending, seen = [module], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        seen.update(".".join(parts[:i]) for i in range(1, len(parts)))  # the packages
        pending.extend(_imported_serving_modules(_module_path(name)) - seen)
    return MappingProxyType(
        {
            _module_path(name).relative_to(REPOSITORY_ROOT).as_posix(): _module_path(name).read_text()
            for name in sorted(seen)
        }
    )


def config_map_key(path: str) -> str:
    """A ConfigMap key for a relative path (keys may not contain '/')."""
    return path.replace("/", "__")

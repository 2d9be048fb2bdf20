"""Command-line entry point: one sub-command per module, each registering its own arguments."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from serving import capacity_command, render
from serving.autoscaling import command as simulate
from serving.client import bench, smoke
from serving.config import reference
from serving.observability import command as observability
from serving.observability import top

# Each module exposes `register(subparsers)`, which adds its sub-command and sets `func`,
# a callable taking the parsed arguments and returning the exit code.
COMMAND_MODULES = (
    render,
    smoke,
    bench,
    reference,
    capacity_command,
    observability,
    top,
    simulate,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="TensorRT-LLM runtime for openai/gpt-oss-120b: render, smoke-check, benchmark.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

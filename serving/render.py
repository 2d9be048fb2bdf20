"""`python -m serving render`: the command line, options file and capacity table of a stack.

Runs without Pulumi or a cloud: the stack file goes through the same loader as the program
(`serving.config.settings.load_settings`), so render accepts and refuses what `pulumi up` would.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from serving.client.bench import DEFAULT_INPUT_TOKENS, DEFAULT_OUTPUT_TOKENS
from serving.config.project import add_stack_arguments, assemble_config, parse_assignments
from serving.config.settings import PROJECT, SettingsError, load_settings
from serving.runtime.capacity import plan_capacity, render_capacity_table
from serving.runtime.options import (
    OPTIONS_FILE_NAME,
    ServingRuntime,
    merge_options,
    render_options_yaml,
    render_serve_args,
)

OPTIONS_MOUNT_PATH = f"/etc/trtllm/{OPTIONS_FILE_NAME}"


def render_report(runtime: ServingRuntime) -> str:
    command = shlex.join(render_serve_args(runtime, OPTIONS_MOUNT_PATH))
    capacity = plan_capacity(
        runtime, typical_input_tokens=DEFAULT_INPUT_TOKENS, typical_output_tokens=DEFAULT_OUTPUT_TOKENS
    )
    return (
        f"## Command line ({runtime.image})\n\n```sh\n{command}\n```\n\n"
        f"## {OPTIONS_MOUNT_PATH}\n\n```yaml\n{render_options_yaml(runtime)}```\n\n"
        f"## Capacity per replica\n\n{render_capacity_table(capacity)}"
    )


def stack_runtime(
    stack: str, overrides: dict[str, object], options: dict[str, object] | None
) -> ServingRuntime:
    """The runtime of `stack` with `--set` overrides and `--options` merged over trtllmOptions."""
    _, config, secret_keys = assemble_config(stack, overrides)
    if options:
        key = f"{PROJECT}:trtllmOptions"
        current = json.loads(config.get(key) or "{}")
        config[key] = json.dumps(merge_options(current if isinstance(current, dict) else {}, options))
    return load_settings(config, secret_keys).serving.runtime


def _run(args: argparse.Namespace) -> int:
    try:
        overrides = parse_assignments(args.settings)
        options = json.loads(args.options) if args.options else None
    except json.JSONDecodeError as error:
        print(f"error: --options is not JSON: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        runtime = stack_runtime(args.stack, overrides, options)
    except (SettingsError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(render_report(runtime), end="")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "render",
        help="print the trtllm-serve command, its options file and the capacity table",
    )
    add_stack_arguments(parser)
    parser.add_argument(
        "--options", help="JSON merged over the stack's trtllmOptions, e.g. '{\"max_batch_size\": 32}'"
    )
    parser.set_defaults(func=_run)

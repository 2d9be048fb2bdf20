"""`python -m serving render`: the command line, options file and capacity table of a stack.

Reads the serving keys of `Pulumi.yaml` (defaults) and `Pulumi.<stack>.yaml` directly, so it runs
without Pulumi; the Pulumi program validates the same keys through the same `build_runtime`.
"""

from __future__ import annotations

import argparse
import json
import shlex
from typing import Any


from serving.capacity import plan_capacity, render_capacity_table
from serving.hardware import INSTANCE_TYPES
from serving.project_files import project_defaults, project_name, stack_config
from serving.runtime import (
    OPTIONS_FILE_NAME,
    RuntimeConfigError,
    ServingRuntime,
    build_runtime,
    merge_options,
    render_options_yaml,
    render_serve_args,
)

OPTIONS_MOUNT_PATH = f"/etc/trtllm/{OPTIONS_FILE_NAME}"


def stack_serving_values(stack: str | None) -> dict[str, Any]:
    """The serving keys for a stack: Pulumi.yaml defaults, then the stack file's values."""
    values = project_defaults()
    if stack:
        prefix = f"{project_name()}:"
        for key, value in stack_config(stack).items():
            if key.startswith(prefix):
                values[key.removeprefix(prefix)] = value
    return values


def runtime_for(values: dict[str, Any]) -> ServingRuntime:
    instance = INSTANCE_TYPES.get(values["gpuInstanceType"])
    if instance is None:
        raise RuntimeConfigError([
            f"gpuInstanceType = {values['gpuInstanceType']!r}: use one of {', '.join(INSTANCE_TYPES)}"
        ])
    return build_runtime(
        values.get("trtllmOptions") or {},
        model=values["model"],
        image=values["trtllmImage"],
        gpu=instance.gpu,
        gpus_per_replica=int(values["gpusPerReplica"]),
    )


def render_report(runtime: ServingRuntime) -> str:
    command = shlex.join(render_serve_args(runtime, OPTIONS_MOUNT_PATH))
    return (
        f"## Command line ({runtime.image})\n\n```sh\n{command}\n```\n\n"
        f"## {OPTIONS_MOUNT_PATH}\n\n```yaml\n{render_options_yaml(runtime)}```\n\n"
        f"## Capacity per replica\n\n{render_capacity_table(plan_capacity(runtime))}"
    )


def _run(args: argparse.Namespace) -> int:
    try:
        values = stack_serving_values(args.stack)
        if args.options:
            values["trtllmOptions"] = merge_options(values.get("trtllmOptions") or {}, json.loads(args.options))
        runtime = runtime_for(values)
    except (RuntimeConfigError, FileNotFoundError) as error:
        print(f"error: {error}")
        return 2
    except json.JSONDecodeError as error:
        print(f"error: --options is not JSON: {error}")
        return 2
    print(render_report(runtime), end="")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "render", help="print the trtllm-serve command, its options file and the capacity table",
    )
    parser.add_argument("--stack", help="read Pulumi.<stack>.yaml over the Pulumi.yaml defaults")
    parser.add_argument("--options", help='JSON merged over the stack\'s trtllmOptions, e.g. \'{"max_batch_size": 32}\'')
    parser.set_defaults(func=_run)

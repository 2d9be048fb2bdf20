"""`python -m serving capacity`: modelled bounds for a layout, the template's table, the layouts
of one node, and the cold-start budget. Offline, like render: the layout comes from a stack
(`--stack`, `--set`) unless the layout flags override it.

Every figure printed is modelled (serving/runtime/performance.py), never measured; the bench
measures, and `python -m serving bench --bounds FILE` holds its figures against these.

Exit codes: 0 printed; 2 bad arguments, settings or a layout that cannot run (one line each,
naming the flag, the value and what would work).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.client.bench import (
    DEFAULT_CONCURRENCY,
    DEFAULT_INPUT_TOKENS,
    DEFAULT_OUTPUT_TOKENS,
    DEFAULT_REQUESTS,
)
from serving.config.project import add_stack_arguments, assemble_config, parse_assignments
from serving.config.settings import SettingsError, load_settings
from serving.runtime.capacity import sequences_that_fit
from serving.runtime.coldstart import COLD_START_FROM_MIRROR_S, COLD_START_S, render_cold_start
from serving.runtime.hardware import GIB, GPUS, GpuKind
from serving.runtime.options import REVISION_OPTIONS, RuntimeConfigError, ServingRuntime, build_runtime
from serving.runtime.performance import (
    Bounds,
    LayoutError,
    RequestShape,
    bound,
    bounds_json,
    render_performance,
    render_template_table,
    template_json,
    template_table_bounds,
)

EXIT_OK, EXIT_BAD_SETTINGS = 0, 2
# One p5/p5e node: the layouts compared, each replica within the node.
NODE_GPUS = 8
COMPARED_TENSOR_PARALLEL = (1, 2, 4, 8)


class ArgumentProblem(ValueError):
    """One line for the user: the flag, its value and what would work."""


@dataclass(frozen=True)
class Deployment:
    runtime: ServingRuntime
    replicas: int
    source: str  # which stack, and whether flags changed its layout


def _stack_deployment(stack: str, overrides: dict[str, object]) -> tuple[ServingRuntime, int]:
    _, config, secret_keys = assemble_config(stack, overrides)
    settings = load_settings(config, secret_keys)
    return settings.serving.runtime, settings.serving.replicas


def with_layout(
    runtime: ServingRuntime, *, gpu_name: str | None, tp: int | None, ep: int | None, adp: bool | None
) -> ServingRuntime:
    """The runtime with another GPU or layout; checks each flag before TensorRT-LLM's own rules."""
    gpu = GPUS[gpu_name] if gpu_name else runtime.gpu
    tensor = runtime.tensor_parallel_size if tp is None else tp
    if tensor < 1 or NODE_GPUS % tensor:
        raise ArgumentProblem(
            f"--tensor-parallel {tensor}: a replica's GPUs must divide a node's {NODE_GPUS}; use 1, 2, 4 or 8"
        )
    expert = (
        ep if ep is not None else (tensor if tp is not None else runtime.moe_expert_parallel_size or tensor)
    )
    experts = runtime.model.experts
    if expert < 1 or experts % expert or tensor % expert:
        usable = [d for d in range(1, tensor + 1) if tensor % d == 0 and experts % d == 0]
        raise ArgumentProblem(
            f"--expert-parallel {expert}: must divide the {experts} experts and --tensor-parallel {tensor} "
            f"(the MoE tensor-parallel size is their quotient); use one of {usable}"
        )
    attention = bool(runtime.options.get("enable_attention_dp")) if adp is None else adp
    if attention and tensor == 1:
        raise ArgumentProblem(
            "--attention-dp needs --tensor-parallel 2 or more: one rank has nothing to share"
        )
    return rebuilt(
        runtime,
        gpu=gpu,
        tensor_parallel_size=tensor,
        moe_expert_parallel_size=expert,
        enable_attention_dp=attention,
    )


def rebuilt(runtime: ServingRuntime, gpu: GpuKind | None = None, **changes: Any) -> ServingRuntime:
    """The runtime again, with option `changes` and perhaps another GPU, through the same
    validation as the stack's (a replica's GPUs follow the tensor-parallel size)."""
    options = {k: v for k, v in runtime.options.items() if k not in REVISION_OPTIONS}
    options.update(changes)
    return build_runtime(
        options,
        model=runtime.model.hf_id,
        image=runtime.image,
        port=runtime.port,
        gpu=gpu or runtime.gpu,
        gpus_per_replica=int(options.get("tensor_parallel_size", 1)),
        revision=runtime.options.get("revision"),
    )


def resolve(args: argparse.Namespace) -> Deployment:
    overrides = parse_assignments(args.settings)
    stack_runtime, stack_replicas = _stack_deployment(args.stack, overrides)
    flags = (args.gpu, args.tensor_parallel, args.expert_parallel, args.attention_dp)
    runtime = with_layout(
        stack_runtime,
        gpu_name=args.gpu,
        tp=args.tensor_parallel,
        ep=args.expert_parallel,
        adp=args.attention_dp,
    )
    # The same GPUs as the stack's replicas, shared out in the new layout.
    gpus = stack_replicas * stack_runtime.tensor_parallel_size
    replicas = max(gpus // runtime.tensor_parallel_size, 1)
    changed = any(flag is not None for flag in flags)
    source = f"stack {args.stack}" + (", layout from the flags" if changed else "")
    return Deployment(runtime, replicas, source)


def parse_concurrency(value: str) -> int | None:
    if value == "max":
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ArgumentProblem(f"--concurrency {value}: a whole number of 1 or more, or max")
    return number


def check_shape(runtime: ServingRuntime, shape: RequestShape) -> None:
    for flag, value in (("--input-tokens", shape.input_tokens), ("--output-tokens", shape.output_tokens)):
        if value < 1:
            raise ArgumentProblem(f"{flag} {value}: at least 1")
    if shape.total_tokens > runtime.max_seq_len:
        raise ArgumentProblem(
            f"--input-tokens + --output-tokens = {shape.total_tokens}: above max_seq_len = "
            f"{runtime.max_seq_len}, the server would refuse the request; ask for at most {runtime.max_seq_len}"
        )


def layout_name(runtime: ServingRuntime, replicas: int | None = None) -> str:
    """TP2 for one replica; TP2x4 for four of them (the layouts of a node)."""
    tp = runtime.tensor_parallel_size
    name = f"TP{tp}" if replicas is None else f"TP{tp}x{replicas}"
    return name + (" + attention DP" if runtime.options.get("enable_attention_dp") else "")


@dataclass(frozen=True)
class LayoutRow:
    runtime: ServingRuntime
    replicas: int
    scenario: tuple[Bounds, ...]  # the template's streams over the node's replicas
    at_max: Bounds  # as many requests as run at once with the runtime's max_batch_size
    kv_limited: Bounds  # as many as the KV cache holds (max_batch_size raised to match)

    @property
    def name(self) -> str:
        return layout_name(self.runtime, self.replicas)

    @property
    def node_tokens_per_s_scenario(self) -> float:
        return sum(b.output_tokens_per_s_per_replica_upper_bound for b in self.scenario)

    @property
    def node_tokens_per_s_at_max(self) -> float:
        return self.at_max.output_tokens_per_s_per_replica_upper_bound * self.replicas

    @property
    def node_tokens_per_s_kv_limited(self) -> float:
        return self.kv_limited.output_tokens_per_s_per_replica_upper_bound * self.replicas

    @property
    def scenario_latency_s(self) -> float:
        return max(b.latency_s_lower_bound for b in self.scenario)


def compare_layouts(base: ServingRuntime, shape: RequestShape, concurrency: int) -> list[LayoutRow]:
    rows = []
    for tp in COMPARED_TENSOR_PARALLEL:
        for adp in (False, True) if tp > 1 else (False,):
            runtime = with_layout(base, gpu_name=None, tp=tp, ep=tp, adp=adp)
            replicas = NODE_GPUS // tp
            table = template_table_bounds(runtime, shape, concurrency, replicas)
            # max_batch_size is per attention-DP rank (an assumption, see capacity.batch_slots).
            ranks = tp if adp else 1
            fits = sequences_that_fit(runtime, shape.total_tokens)
            per_rank = max(-(-fits // ranks), 1)
            uncapped = rebuilt(runtime, max_batch_size=per_rank)
            rows.append(
                LayoutRow(runtime, replicas, table.per_replica, bound(runtime, shape), bound(uncapped, shape))
            )
    return rows


def _usd(bounds: Bounds) -> str:
    usd = bounds.usd_per_million_output_tokens_lower_bound
    return "n/a" if usd is None else f"{usd:.3f}"


def render_layouts(rows: list[LayoutRow], shape: RequestShape, concurrency: int) -> str:
    runtime = rows[0].runtime
    lines = [
        f"Layouts of one {NODE_GPUS} x {runtime.gpu.name} node, modelled (bounds, not measurements): "
        f"{concurrency} streams spread over the replicas, {shape.input_tokens} in / {shape.output_tokens} out, "
        f"expert parallel = tensor parallel, max_batch_size {runtime.max_batch_size} (per rank with attention "
        'DP, assumed). "at max": as many requests as run at once; "KV-limited": max_batch_size raised '
        "to what the KV cache holds.",
        "",
        "| layout | weights / GPU | KV tokens / replica | KV headroom: requests that fit / node | "
        f"max concurrency / node | TTFT >= | TPOT at {concurrency} >= | tokens/s / node at {concurrency} <= | "
        "tokens/s / node at max <= | USD / 1M output at max >= | tokens/s / node KV-limited <= | "
        "USD / 1M KV-limited >= |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        at_max = row.at_max
        fits = sequences_that_fit(row.runtime, shape.total_tokens) * row.replicas
        lines.append(
            f"| {row.name} | {at_max.weights_bytes_per_gpu / GIB:.1f} GiB | {at_max.kv_tokens_per_replica:,} | "
            f"{fits:,} ({fits / concurrency:.0f}x the {concurrency} streams) | "
            f"{at_max.max_concurrency * row.replicas:,} | "
            f"{min(b.ttft_s_lower_bound for b in row.scenario) * 1e3:.0f} ms | "
            f"{max(b.tpot_s_lower_bound for b in row.scenario) * 1e3:.2f} ms | "
            f"{row.node_tokens_per_s_scenario:,.0f} | {row.node_tokens_per_s_at_max:,.0f} | {_usd(at_max)} | "
            f"{row.node_tokens_per_s_kv_limited:,.0f} | {_usd(row.kv_limited)} |"
        )
    lines += ["", *_verdict(rows, concurrency)]
    return "\n".join(lines) + "\n"


def _verdict(rows: list[LayoutRow], concurrency: int) -> list[str]:
    """Which layout the model favours, and why, from the figures above."""
    fastest = min(rows, key=lambda r: r.scenario_latency_s)
    cheapest = max(rows, key=lambda r: r.node_tokens_per_s_at_max)
    kv_best = max(rows, key=lambda r: r.node_tokens_per_s_kv_limited)
    tied = [
        r.name for r in rows if r.node_tokens_per_s_kv_limited >= 0.999 * kv_best.node_tokens_per_s_kv_limited
    ]
    capped = [
        r.name
        for r in rows
        if r.at_max.max_concurrency < r.kv_limited.max_concurrency
        and not r.runtime.options.get("enable_attention_dp")
    ]
    step = fastest.scenario[0].decode
    lines = [
        f"- Latency at {concurrency} streams: {fastest.name}, with the lowest latency bound "
        f"({fastest.scenario_latency_s:.2f} s a request). A decode step of a few streams is limited by "
        f"{step.limit} and mostly reads weights; the more GPUs share them, the shorter it is.",
        f"- Cost with max_batch_size as set: {cheapest.name}, "
        f"{cheapest.node_tokens_per_s_at_max:,.0f} tokens/s per node at {cheapest.at_max.max_concurrency * cheapest.replicas:,} "
        f"requests, {_usd(cheapest.at_max)} USD per million output tokens at best. "
        + (
            f"Without attention DP, max_batch_size, not memory, caps {', '.join(capped)}: a full batch "
            "then reads the same bytes per node whatever the split, so those layouts tie."
            if capped
            else "The KV cache, not max_batch_size, limits every layout."
        ),
        f"- Cost if max_batch_size were raised to what the KV cache holds: {' and '.join(tied)}, "
        f"{kv_best.node_tokens_per_s_kv_limited:,.0f} tokens/s per node, {_usd(kv_best.kv_limited)} USD per "
        + (
            "million: the most memory left for KV cache gives the largest batch, over which each step's "
            f"weight reads are shared (limited by {kv_best.kv_limited.throughput_limit})."
            if len(tied) == 1
            else f"million, where they tie: limited by {kv_best.kv_limited.throughput_limit}."
        ),
    ]
    adp_rows = [r for r in rows if r.runtime.options.get("enable_attention_dp")]
    if adp_rows:
        lines.append(
            "- Attention DP: each rank reads a whole copy of the dense weights and runs a whole prompt's "
            "attention alone, so at the same batch it is slower here (TTFT and TPOT above); what it saves, "
            "the latency of the all-reduces, the model leaves out. Where it wins at max, it is because each "
            "rank gets max_batch_size slots of its own (an assumption, unchecked)."
        )
    return lines


def _run(args: argparse.Namespace) -> int:
    try:
        concurrency = parse_concurrency(args.concurrency)
        deployment = resolve(args)
        runtime = deployment.runtime
        shape = RequestShape(args.input_tokens, args.output_tokens)
        check_shape(runtime, shape)
        if args.compare_layouts:
            rows = compare_layouts(runtime, shape, concurrency or DEFAULT_CONCURRENCY)
            print(render_layouts(rows, shape, concurrency or DEFAULT_CONCURRENCY), end="")
            return EXIT_OK
        bounds = bound(runtime, shape, concurrency)
        table = template_table_bounds(runtime, shape, args.template_concurrency, deployment.replicas)
    except (ArgumentProblem, LayoutError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    except RuntimeConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    except (SettingsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    print(f"# Capacity and bounds: {layout_name(runtime)} on {runtime.gpu.name} ({deployment.source})\n")
    print(render_performance(bounds))
    print(f"## The template's table, modelled ({deployment.replicas} replica(s) of {layout_name(runtime)})\n")
    print(render_template_table(table, shape, DEFAULT_REQUESTS))
    print("## Cold start, modelled\n")
    print(render_cold_start(), end="")
    if args.json:
        report: dict[str, Any] = bounds_json(bounds)
        report["template_table"] = template_json(table, shape)
        report["cold_start_s"] = {"hugging_face": COLD_START_S, "in_region_mirror": COLD_START_FROM_MIRROR_S}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "capacity",
        help="modelled bounds for a layout (TTFT, TPOT, tokens/s, USD per token), layouts, cold start",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_stack_arguments(parser)
    layout = parser.add_argument_group("layout (default: the stack's)")
    layout.add_argument("--gpu", choices=sorted(GPUS), help="h100 (p5) or h200 (p5e, p5en)")
    layout.add_argument("--tensor-parallel", type=int, metavar="N", help="GPUs per replica: 1, 2, 4 or 8")
    layout.add_argument(
        "--expert-parallel",
        type=int,
        metavar="N",
        help="ranks the experts are split over (default: tensor parallel)",
    )
    layout.add_argument(
        "--attention-dp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="attention data parallelism (enable_attention_dp)",
    )
    shape = parser.add_argument_group("requests (default: the bench's scenario)")
    shape.add_argument("--input-tokens", type=int, default=DEFAULT_INPUT_TOKENS, metavar="N")
    shape.add_argument("--output-tokens", type=int, default=DEFAULT_OUTPUT_TOKENS, metavar="N")
    shape.add_argument(
        "--concurrency",
        default="max",
        metavar="N|max",
        help="requests in flight on one replica (default max)",
    )
    shape.add_argument(
        "--template-concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"streams of the template's table, over all replicas (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--compare-layouts",
        action="store_true",
        help="the layouts of one node (TP1x8 ... TP8x1, with and without attention DP) for the scenario",
    )
    parser.add_argument("--json", metavar="FILE", help="write the bounds as JSON (bench --bounds reads it)")
    parser.set_defaults(func=_run)

"""`python -m serving simulate`: replay a load profile or a trace through the stack's
autoscaling policy and print replicas, nodes, queue waits and GPU-hours against fixed capacity.

Everything is modelled (docs/autoscaling.md): per-replica capacity from the performance model's
bounds times a factor, delays from the cold-start budget, the HPA's and cluster-autoscaler's
algorithms as documented. Nothing was measured on a cluster.

Exit codes: 0 printed; 2 bad arguments or settings (one line naming the flag, the value and
what would work).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from serving.autoscaling.arrivals import PROFILES, Request, TraceError, profile_arrivals, read_trace
from serving.autoscaling.from_stack import policy_from_settings, stack_fixed_capacity
from serving.autoscaling.policy import (
    REFERENCE_SHAPE,
    AutoscalingPolicy,
    PolicyError,
    finished_rate_query,
    metric_query,
)
from serving.autoscaling.service import DEFAULT_BOUND_FACTOR, ReplicaService, fixed_service, modelled_service
from serving.autoscaling.simulate import SimulationResult, fixed_policy, simulate, steady_state_replicas
from serving.config.project import add_stack_arguments, assemble_config, parse_assignments
from serving.config.settings import SettingsError, StackSettings, load_settings
from serving.runtime.performance import LayoutError, RequestShape

EXIT_OK, EXIT_BAD_INPUT = 0, 2
DEFAULT_PROFILE = "diurnal"
DEFAULT_HOURS = 24.0
MAX_HOURS = 24.0 * 14  # two weeks of seconds is already minutes of simulation
DEFAULT_WAIT_THRESHOLD_S = 60.0
OPENING_S = 600.0

# Policy flags: (flag, field, type, help).
POLICY_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--min-replicas", "min_replicas", int, "HPA minReplicas (default 1)"),
    ("--max-replicas", "max_replicas", int, "HPA maxReplicas (default: what --max-nodes hold)"),
    (
        "--target-in-flight",
        "target_in_flight_per_replica",
        float,
        "requests in flight (running + queued) per replica the HPA aims at (default: 75%% of the "
        "performance model's max concurrency, 48 for prod)",
    ),
    (
        "--target-finished-rate",
        "target_finished_per_s_per_replica",
        float,
        "requests finished per second per replica the HPA aims at (second trigger; default: what a replica "
        "finishes at --target-in-flight, from the model; 0: no second trigger)",
    ),
    ("--tolerance", "tolerance", float, "HPA tolerance (default 0.1)"),
    (
        "--scale-down-window",
        "scale_down_stabilization_s",
        float,
        "scale-down stabilisation, s (default 1800)",
    ),
    ("--scale-up-window", "scale_up_stabilization_s", float, "scale-up stabilisation, s (default 0)"),
    (
        "--scale-down-pods",
        "scale_down_pods",
        int,
        "replicas removed at most per --scale-down-period (default 1; 0: use --scale-down-percent)",
    ),
    ("--scale-down-percent", "scale_down_percent", float, "or at most this %% per period (default: unset)"),
    ("--scale-down-period", "scale_down_period_s", float, "the scale-down policies' period, s (default 300)"),
    ("--hpa-sync-period", "hpa_sync_period_s", float, "HPA sync period, s (default 15)"),
    ("--scrape-interval", "metric_scrape_interval_s", float, "Prometheus scrape interval, s (default 30)"),
    ("--min-nodes", "min_nodes", int, "GPU node group minimum (default 1)"),
    ("--max-nodes", "max_nodes", int, "GPU node group maximum (default 2, or gpuNodeCount if larger)"),
    ("--node-delay", "node_delay_s", float, "launch to Ready of a node, s (default: cold-start budget, 300)"),
    ("--replica-delay", "replica_delay_s", float, "scheduled to serving on a new node, s (default 1709)"),
    (
        "--warm-replica-delay",
        "warm_replica_delay_s",
        float,
        "scheduled to serving on a node with image and weights cached, s (default 1217)",
    ),
    (
        "--scale-down-unneeded",
        "scale_down_unneeded_s",
        float,
        "cluster-autoscaler unneeded time, s (default 600)",
    ),
)
FLAG_FOR_FIELD = {field: flag for flag, field, _, _ in POLICY_FLAGS}


class ArgumentProblem(ValueError):
    """One line for the user: the flag, its value and what would work."""


def _stack_settings(args: argparse.Namespace) -> StackSettings:
    _, config, secret_keys = assemble_config(args.stack, parse_assignments(args.settings))
    return load_settings(config, secret_keys)


def _policy(args: argparse.Namespace, settings: StackSettings) -> AutoscalingPolicy:
    overrides: dict[str, Any] = {
        field: getattr(args, field) for _, field, _, _ in POLICY_FLAGS if getattr(args, field) is not None
    }
    # 0 switches a trigger or a policy off (None in the policy object).
    for field in ("target_finished_per_s_per_replica", "scale_down_pods"):
        if overrides.get(field) == 0:
            overrides[field] = None
    try:
        return policy_from_settings(
            settings, overrides, from_mirror=args.from_mirror, bound_factor=args.bound_factor
        )
    except PolicyError as error:
        message = str(error)
        for field, flag in FLAG_FOR_FIELD.items():
            message = message.replace(f"{field} ", f"{flag} ")
        raise ArgumentProblem(message) from None


def _check_number(flag: str, value: float | None, *, minimum: float, strict: bool, what: str) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        raise ArgumentProblem(f"{flag} {value:g}: {what}")


def _arrivals(args: argparse.Namespace, settings: StackSettings) -> tuple[list[Request], float, str]:
    if args.trace:
        requests = read_trace(Path(args.trace), settings.serving.runtime.max_seq_len)
        span_h = max(math.ceil(requests[-1].arrival_s / 60) / 60, 1 / 60)
        hours = args.hours if args.hours is not None else span_h
        return requests, hours, f"trace {args.trace} ({len(requests):,} requests)"
    profile = PROFILES.get(args.profile)
    if profile is None:
        raise ArgumentProblem(
            f"--profile {args.profile}: unknown; use one of {', '.join(PROFILES)} or --trace FILE"
        )
    hours = args.hours if args.hours is not None else DEFAULT_HOURS
    shape = RequestShape(args.input_tokens, args.output_tokens)
    if shape.input_tokens < 1 or shape.output_tokens < 1:
        raise ArgumentProblem(
            f"--input-tokens {shape.input_tokens} / --output-tokens {shape.output_tokens}: at least 1"
        )
    if shape.total_tokens > settings.serving.runtime.max_seq_len:
        raise ArgumentProblem(
            f"--input-tokens + --output-tokens = {shape.total_tokens}: above max_seq_len "
            f"{settings.serving.runtime.max_seq_len}; ask for at most that"
        )
    requests = profile_arrivals(
        profile, hours, args.seed, args.rate_scale, shape.input_tokens, shape.output_tokens
    )
    scale = "" if args.rate_scale == 1 else f" x {args.rate_scale:g}"
    return requests, hours, f"profile {profile.name}{scale}: {profile.description}"


def _service(args: argparse.Namespace, settings: StackSettings, requests: list[Request]) -> ReplicaService:
    runtime = settings.serving.runtime
    if args.service_time is not None:
        slots = args.capacity or runtime.max_batch_size
        return fixed_service(slots, args.service_time)
    # The shape the slots are sized for: the profile's, or the trace's mean request.
    count = max(len(requests), 1)
    shape = (
        RequestShape(
            max(round(sum(r.input_tokens for r in requests) / count), 1),
            max(round(sum(r.output_tokens for r in requests) / count), 1),
        )
        if requests
        else REFERENCE_SHAPE
    )
    return modelled_service(runtime, shape, args.bound_factor, args.capacity)


def summary(result: SimulationResult) -> dict[str, Any]:
    waits = result.waits
    return {
        "gpu_hours": result.node_gpu_hours,
        "replica_gpu_hours": result.replica_gpu_hours,
        "cost_usd": result.cost_usd,
        "queue_wait_s": {
            "p50": waits.p50,
            "p90": waits.p90,
            "p99": waits.p99,
            "max": waits.max,
            "mean": waits.mean,
        },
        "waited_over_threshold": result.waited_over_threshold,
        "arrivals": result.arrivals,
        "finished": result.finished,
        "running_at_end": result.running_at_end,
        "queued_at_end": result.queued_at_end,
        "max_replicas": result.peak_replicas,
        "max_nodes": result.peak_nodes,
        "mean_replicas": result.mean_replicas,
        "mean_nodes": result.mean_nodes,
        "scale_ups": result.scale_ups,
        "scale_downs": result.scale_downs,
    }


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value:.1f} s" if value else "0 s"
    if value < 120:
        return f"{value:.0f} s"
    return f"{value / 60:.0f} min"


def _usd(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def render_table(columns: list[tuple[str, SimulationResult]]) -> str:
    threshold = columns[0][1].wait_threshold_s
    rows: list[tuple[str, list[str]]] = [
        ("requests: arrived / finished", [f"{r.arrivals:,} / {r.finished:,}" for _, r in columns]),
        ("running / queued at the end", [f"{r.running_at_end:,} / {r.queued_at_end:,}" for _, r in columns]),
        ("queue wait p50", [_seconds(r.waits.p50) for _, r in columns]),
        ("queue wait p90", [_seconds(r.waits.p90) for _, r in columns]),
        ("queue wait p99", [_seconds(r.waits.p99) for _, r in columns]),
        ("queue wait max", [_seconds(r.waits.max) for _, r in columns]),
        (
            f"waited over {_seconds(threshold)}",
            [
                f"{r.waited_over_threshold:,} ({100 * r.waited_over_threshold / max(r.arrivals, 1):.1f} %)"
                for _, r in columns
            ],
        ),
        ("replicas: mean / peak", [f"{r.mean_replicas:.1f} / {r.peak_replicas}" for _, r in columns]),
        ("GPU nodes: mean / peak", [f"{r.mean_nodes:.2f} / {r.peak_nodes}" for _, r in columns]),
        ("GPU-hours (nodes, billed)", [f"{r.node_gpu_hours:,.0f}" for _, r in columns]),
        ("cost, USD (on demand)", [_usd(r.cost_usd) for _, r in columns]),
    ]
    base = columns[1][1].node_gpu_hours if len(columns) > 1 else 0
    if base:
        rows.append(
            ("GPU-hours vs fixed at max", [f"{100 * r.node_gpu_hours / base:.0f} %" for _, r in columns])
        )
    lines = ["| | " + " | ".join(name for name, _ in columns) + " |", "| --- |" + " --- |" * len(columns)]
    lines += [f"| {name} | " + " | ".join(values) + " |" for name, values in rows]
    return "\n".join(lines) + "\n"


def render_hourly(result: SimulationResult) -> str:
    lines = [
        "| hour | arrivals/s | replicas (HPA) | serving | starting | pending | nodes | queue | in flight (metric) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    step = max(round(3600 / _interval(result)), 1)
    points = result.timeline
    for index in range(step, len(points), step):
        window = points[index - step + 1 : index + 1]
        p = points[index]
        rate = sum(q.arrivals_per_s for q in window) / len(window)
        lines.append(
            f"| {p.t / 3600:.0f} | {rate:.2f} | {p.replicas} | {p.ready_replicas} | {p.starting_replicas} | "
            f"{p.pending_replicas} | {p.nodes} | {p.queue} | {p.metric:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _interval(result: SimulationResult) -> float:
    points = result.timeline
    return points[1].t - points[0].t if len(points) > 1 else 3600.0


def render_policy(policy: AutoscalingPolicy, namespace: str) -> str:
    return (
        f"Policy: replicas {policy.min_replicas}-{policy.max_replicas} on {policy.min_nodes}-{policy.max_nodes} "
        f"nodes ({policy.replicas_per_node} per node), target {policy.target_in_flight_per_replica:g} in flight "
        f"per replica and {policy.target_finished_per_s_per_replica or 0:g} finished/s per replica, tolerance {policy.tolerance:g}, HPA sync {policy.hpa_sync_period_s:g} s, scrape "
        f"{policy.metric_scrape_interval_s:g} s, scale-up window {policy.scale_up_stabilization_s:g} s, "
        f"scale-down window {policy.scale_down_stabilization_s:g} s; node ready after {policy.node_delay_s:.0f} s, "
        f"replica serving after {policy.replica_delay_s:.0f} s ({policy.warm_replica_delay_s:.0f} s on a node "
        f"that ran one), empty node removed after {policy.scale_down_unneeded_s:.0f} s.\n"
        f"Trigger 1 (KEDA Prometheus, AverageValue {policy.target_in_flight_per_replica:g}): {metric_query(namespace)}\n"
        + (
            ""
            if policy.target_finished_per_s_per_replica is None
            else f"Trigger 2 (KEDA Prometheus, AverageValue {policy.target_finished_per_s_per_replica:g}): "
            f"{finished_rate_query(namespace, policy.rate_window_s)}\n"
        )
    )


def plot(path: Path, columns: list[tuple[str, SimulationResult]]) -> None:
    import matplotlib  # lazily: only --plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    auto = columns[0][1]
    hours = [p.t / 3600 for p in auto.timeline]
    figure, (load, capacity, queue) = plt.subplots(3, 1, sharex=True, figsize=(10, 8))
    load.plot(hours, [p.arrivals_per_s for p in auto.timeline], color="tab:gray")
    load.set_ylabel("arrivals / s")
    load.set_title("Autoscaling, modelled (not measured on a cluster)")
    capacity.step(hours, [p.replicas for p in auto.timeline], where="post", label="replicas (HPA)")
    capacity.step(hours, [p.ready_replicas for p in auto.timeline], where="post", label="serving")
    capacity.step(
        hours,
        [p.nodes * auto.policy.replicas_per_node for p in auto.timeline],
        where="post",
        linestyle=":",
        label="node capacity (replicas)",
    )
    for name, result in columns[1:]:
        capacity.axhline(result.policy.max_replicas, linestyle="--", linewidth=1, color="gray")
        capacity.annotate(name, (hours[0], result.policy.max_replicas), fontsize=8, va="bottom")
    capacity.set_ylabel("replicas")
    capacity.legend(loc="upper right", fontsize=8)
    for name, result in columns:
        queue.plot([p.t / 3600 for p in result.timeline], [p.queue for p in result.timeline], label=name)
    queue.set_ylabel("requests queued")
    queue.set_yscale("symlog")
    queue.set_xlabel("hour")
    queue.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _run(args: argparse.Namespace) -> int:
    try:
        _check_number(
            "--hours", args.hours, minimum=0, strict=True, what=f"above 0 and at most {MAX_HOURS:g}"
        )
        if args.hours is not None and args.hours > MAX_HOURS:
            raise ArgumentProblem(f"--hours {args.hours:g}: at most {MAX_HOURS:g} (two weeks)")
        _check_number(
            "--wait-threshold", args.wait_threshold, minimum=0, strict=False, what="0 or more seconds"
        )
        _check_number(
            "--rate-scale",
            args.rate_scale,
            minimum=0,
            strict=True,
            what="above 0 (1 is the profile as written)",
        )
        _check_number("--service-time", args.service_time, minimum=0, strict=True, what="above 0 seconds")
        _check_number(
            "--bound-factor",
            args.bound_factor,
            minimum=1,
            strict=False,
            what="1 or more (the bounds are lower bounds)",
        )
        if args.capacity is not None and args.capacity < 1:
            raise ArgumentProblem(f"--capacity {args.capacity}: at least 1 request at once per replica")
        settings = _stack_settings(args)
        policy = _policy(args, settings)
        requests, hours, source = _arrivals(args, settings)
        service = _service(args, settings, requests)
        stack_replicas, stack_nodes = stack_fixed_capacity(settings, policy)
        fixed_max = fixed_policy(policy, policy.max_replicas, policy.max_nodes)
        stack_fixed = fixed_policy(policy, stack_replicas, stack_nodes)
    except (ArgumentProblem, TraceError, LayoutError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (SettingsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    threshold = args.wait_threshold
    # Start warm: the replicas the first ten minutes' load settles on, not a cold start at t=0.
    opening = [r for r in requests if r.arrival_s < OPENING_S]
    first = opening[0] if opening else requests[0]
    initial = steady_state_replicas(
        policy, service, len(opening) / OPENING_S, first.input_tokens, first.output_tokens
    )
    columns = [
        (
            "autoscaled",
            simulate(policy, requests, service, hours, wait_threshold_s=threshold, initial_replicas=initial),
        ),
        (
            f"fixed at max ({policy.max_nodes} nodes, {policy.max_replicas} replicas)",
            simulate(fixed_max, requests, service, hours, wait_threshold_s=threshold),
        ),
        (
            f"stack as set ({stack_nodes} node(s), {stack_replicas} replicas)",
            simulate(stack_fixed, requests, service, hours, wait_threshold_s=threshold),
        ),
    ]
    namespace = settings.serving.namespace
    print(
        f"# Autoscaling simulation, modelled (nothing here was measured on a cluster): stack {args.stack}, "
        f"{hours:g} h, seed {args.seed}\n"
    )
    print(f"Load: {source}.")
    print(f"Replica: {service.description}.")
    print(render_policy(policy, namespace))
    print(render_table(columns))
    print("Autoscaled, hour by hour:\n")
    print(render_hourly(columns[0][1]), end="")
    try:
        if args.json:
            Path(args.json).write_text(
                json.dumps(report(args, policy, namespace, service, hours, source, columns), indent=1) + "\n"
            )
        if args.plot:
            plot(Path(args.plot), columns)
    except OSError as error:
        print(f"error: cannot write {error.filename}: {error.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def report(
    args: argparse.Namespace,
    policy: AutoscalingPolicy,
    namespace: str,
    service: ReplicaService,
    hours: float,
    source: str,
    columns: list[tuple[str, SimulationResult]],
) -> dict[str, Any]:
    auto, fixed_max, stack_fixed = (result for _, result in columns)
    body: dict[str, Any] = {
        "kind": "modelled, not measured on a cluster",
        "stack": args.stack,
        "load": source,
        "hours": hours,
        "seed": args.seed,
        "wait_threshold_s": args.wait_threshold,
        "replica": service.description,
        "policy": policy.as_dict(),
        "metric_query": metric_query(namespace),
        "finished_rate_query": finished_rate_query(namespace, policy.rate_window_s),
        **summary(auto),
        "fixed_max_gpu_hours": fixed_max.node_gpu_hours,
        "fixed_max_cost_usd": fixed_max.cost_usd,
        "fixed_max": summary(fixed_max),
        "stack_fixed": summary(stack_fixed),
        "timeline": [asdict(point) for point in auto.timeline],
    }
    return body


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="replay load through the autoscaling policy: replicas, nodes, queue waits, GPU-hours (modelled)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_stack_arguments(parser)
    load = parser.add_argument_group("load")
    source = load.add_mutually_exclusive_group()
    source.add_argument(
        "--profile",
        default=DEFAULT_PROFILE,
        metavar="NAME",
        help=f"{' | '.join(PROFILES)} (default {DEFAULT_PROFILE})",
    )
    source.add_argument(
        "--trace", metavar="FILE", help="CSV of time_s,input_tokens,output_tokens, one line per request"
    )
    load.add_argument(
        "--hours", type=float, metavar="H", help="simulated hours (default 24; a trace: its span)"
    )
    load.add_argument("--seed", type=int, default=0, metavar="N", help="arrivals' random seed (default 0)")
    load.add_argument(
        "--rate-scale", type=float, default=1.0, metavar="X", help="multiply the profile's rates"
    )
    load.add_argument("--input-tokens", type=int, default=REFERENCE_SHAPE.input_tokens, metavar="N")
    load.add_argument("--output-tokens", type=int, default=REFERENCE_SHAPE.output_tokens, metavar="N")
    replica = parser.add_argument_group("a replica (default: the performance model)")
    replica.add_argument(
        "--bound-factor",
        type=float,
        default=DEFAULT_BOUND_FACTOR,
        metavar="F",
        help=f"service time = the model's latency bound x F (default {DEFAULT_BOUND_FACTOR:g})",
    )
    replica.add_argument(
        "--service-time", type=float, metavar="S", help="every request takes S seconds instead"
    )
    replica.add_argument("--capacity", type=int, metavar="N", help="requests at once per replica instead")
    policy = parser.add_argument_group("policy (default: docs/autoscaling.md)")
    for flag, field, kind, text in POLICY_FLAGS:
        policy.add_argument(flag, dest=field, type=kind, metavar="N" if kind is int else "X", help=text)
    policy.add_argument(
        "--from-mirror", action="store_true", help="replicas' delays with weights from an in-region mirror"
    )
    parser.add_argument(
        "--wait-threshold",
        type=float,
        default=DEFAULT_WAIT_THRESHOLD_S,
        metavar="S",
        help=f"count requests that waited longer (default {DEFAULT_WAIT_THRESHOLD_S:g} s)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the summary and the timeline as JSON")
    parser.add_argument("--plot", metavar="FILE", help="write a PNG of load, replicas, nodes and queue")
    parser.set_defaults(func=_run)

"""The policy of a stack: what `python -m serving simulate` models and what the cluster wiring
deploys. Reads the stack's settings (the only module of the package that does, with the command).

Until Pulumi.yaml has autoscaling settings, the policy's values come from the stack where it
has them (replicas per node from gpusPerReplica and the instance's GPUs, the node price, the
target from the performance model) and from `AutoscalingPolicy`'s defaults otherwise; callers
pass overrides by field name. Once the settings loader gives `StackSettings.autoscaling` (an
`AutoscalingPolicy`), that is the starting point instead.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from serving.autoscaling.policy import (
    DEFAULT_MAX_NODES,
    AutoscalingPolicy,
    default_finished_target,
    default_target,
    replica_delays,
)
from serving.autoscaling.service import DEFAULT_BOUND_FACTOR
from serving.config.settings import StackSettings
from serving.runtime.coldstart import ColdStartAssumptions


def policy_from_settings(
    settings: StackSettings,
    overrides: Mapping[str, Any] | None = None,
    *,
    cold_start: ColdStartAssumptions | None = None,
    from_mirror: bool = False,
    bound_factor: float = DEFAULT_BOUND_FACTOR,
) -> AutoscalingPolicy:
    """The stack's policy; `overrides` (field name -> value) win. max_replicas follows max_nodes
    (what the nodes hold) unless it is given; the finished-rate target follows the in-flight
    target and `bound_factor` (how much slower than the performance model's bounds a replica
    is taken to be) unless it is given."""
    overrides = dict(overrides or {})
    configured = getattr(settings, "autoscaling", None)
    if isinstance(configured, AutoscalingPolicy):
        values = dataclasses.asdict(configured)
    else:
        runtime = settings.serving.runtime
        instance = settings.gpu_nodes.instance
        per_node = max(instance.gpus // runtime.gpus_per_replica, 1)
        node_s, fresh_s, warm_s = replica_delays(cold_start, from_mirror=from_mirror)
        max_nodes = max(DEFAULT_MAX_NODES, settings.gpu_nodes.node_count)
        values = {
            "min_replicas": 1,
            "max_nodes": max_nodes,
            "replicas_per_node": per_node,
            "gpus_per_node": instance.gpus,
            "target_in_flight_per_replica": default_target(runtime),
            "node_delay_s": node_s,
            "replica_delay_s": fresh_s,
            "warm_replica_delay_s": warm_s,
            "node_usd_per_hour": instance.on_demand_usd_per_hour,
            "max_replicas": max_nodes * per_node,
        }
    values.update(overrides)
    if configured is None and "target_finished_per_s_per_replica" not in overrides:
        values["target_finished_per_s_per_replica"] = default_finished_target(
            settings.serving.runtime, float(values["target_in_flight_per_replica"]), bound_factor
        )
    if "max_replicas" not in overrides and "max_nodes" in overrides:
        values["max_replicas"] = values["max_nodes"] * values["replicas_per_node"]
    if values.get("min_nodes", 1) > values["max_nodes"]:
        values["min_nodes"] = values["max_nodes"]
    return AutoscalingPolicy(**values)


def stack_fixed_capacity(settings: StackSettings, policy: AutoscalingPolicy) -> tuple[int, int]:
    """(replicas, nodes) the stack runs today: `replicas` on `gpuNodeCount` nodes."""
    replicas = settings.serving.replicas
    nodes = max(settings.gpu_nodes.node_count, math.ceil(replicas / policy.replicas_per_node))
    return replicas, nodes

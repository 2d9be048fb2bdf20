"""The policy of a stack: what `python -m serving simulate` models and what the cluster wiring
deploys. Reads the stack's settings (the only module of the package that does, with the command).

From the stack: replicas per node (the instance's GPUs / gpusPerReplica), the node price, the
in-flight target from the performance model, and, when the stack autoscales
(`StackSettings.autoscaling.enabled`), its range: minReplicas, maxReplicas, gpuNodeMinCount,
gpuNodeMaxCount and autoscalingTargetInFlight. A stack that does not autoscale gets the
policy's defaults, so the simulator shows what autoscaling would do. Everything else is
`AutoscalingPolicy`'s defaults; callers pass overrides by field name.
"""

from __future__ import annotations

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
    runtime = settings.serving.runtime
    instance = settings.gpu_nodes.instance
    per_node = max(instance.gpus // runtime.gpus_per_replica, 1)
    node_s, fresh_s, warm_s = replica_delays(cold_start, from_mirror=from_mirror)
    max_nodes = max(DEFAULT_MAX_NODES, settings.gpu_nodes.node_count)
    values: dict[str, Any] = {
        "min_replicas": 1,
        "max_nodes": max_nodes,
        "max_replicas": max_nodes * per_node,
        "replicas_per_node": per_node,
        "gpus_per_node": instance.gpus,
        "target_in_flight_per_replica": default_target(runtime),
        "node_delay_s": node_s,
        "replica_delay_s": fresh_s,
        "warm_replica_delay_s": warm_s,
        "node_usd_per_hour": instance.on_demand_usd_per_hour,
    }
    # The stack's own range, once it autoscales (read by name: the settings loader owns them).
    configured = getattr(settings, "autoscaling", None)
    if getattr(configured, "enabled", False):
        for name in ("min_replicas", "max_replicas", "min_nodes", "max_nodes"):
            values[name] = getattr(configured, name)
        target = getattr(configured, "target_in_flight_per_replica", None)
        if target:
            values["target_in_flight_per_replica"] = float(target)
    values.update(overrides)
    if "max_replicas" not in overrides and "max_nodes" in overrides:
        values["max_replicas"] = values["max_nodes"] * values["replicas_per_node"]
    if values.get("min_nodes", 1) > values["max_nodes"]:
        values["min_nodes"] = values["max_nodes"]
    if "target_finished_per_s_per_replica" not in overrides:
        values["target_finished_per_s_per_replica"] = default_finished_target(
            runtime, float(values["target_in_flight_per_replica"]), bound_factor
        )
    return AutoscalingPolicy(**values)


def stack_fixed_capacity(settings: StackSettings, policy: AutoscalingPolicy) -> tuple[int, int]:
    """(replicas, nodes) the stack runs today: `replicas` on `gpuNodeCount` nodes."""
    replicas = settings.serving.replicas
    nodes = max(settings.gpu_nodes.node_count, math.ceil(replicas / policy.replicas_per_node))
    return replicas, nodes

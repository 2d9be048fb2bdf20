"""The autoscaling policy as one frozen object: what the cluster wiring deploys and what the
simulator models, so the two cannot drift apart.

Replicas: a KEDA ScaledObject with a Prometheus trigger on the requests in flight (running plus
queued) summed over the server's pods, metric type AverageValue. KEDA creates an HPA whose
external metric target is `target_in_flight_per_replica`; the HPA then computes
desired = ceil(sum / target) when sum / (target x current) is off 1 by more than the tolerance
(Kubernetes' replica calculator for external metrics with an average-value target). KEDA's own
`pollingInterval` and `cooldownPeriod` only decide activation between 0 and 1 replica; with
`min_replicas` >= 1 the HPA's sync period, tolerance, stabilisation windows and rate policies
are what act, and the simulator models those.

Nodes: cluster-autoscaler on the GPU managed node group: a replica that cannot be scheduled
makes it add a node at its next scan; an empty node is removed after `scale_down_unneeded_s`.

Every default carries its reason. Units: seconds, replicas, nodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from serving.runtime.coldstart import ColdStartAssumptions, cold_start
from serving.runtime.options import ServingRuntime
from serving.runtime.performance import RequestShape, bound, max_concurrency


class PolicyError(ValueError):
    """A policy that cannot run; the message names the setting, its value and what would work."""


# Kubernetes' and KEDA's own defaults (cited in docs/autoscaling.md).
HPA_SYNC_PERIOD_S = 15.0  # kube-controller-manager --horizontal-pod-autoscaler-sync-period
HPA_TOLERANCE = 0.1  # cluster-wide default; per-HPA tolerance is an alpha field (1.33)
HPA_SCALE_UP_STABILIZATION_S = 0.0
HPA_SCALE_DOWN_STABILIZATION_S = 300.0
HPA_MAX_STABILIZATION_S = 3600.0  # the API's upper limit for stabilizationWindowSeconds
KEDA_POLLING_INTERVAL_S = 30.0
KEDA_COOLDOWN_S = 300.0
CLUSTER_AUTOSCALER_SCAN_INTERVAL_S = 10.0
CLUSTER_AUTOSCALER_SCALE_DOWN_UNNEEDED_S = 600.0
CLUSTER_AUTOSCALER_SCALE_DOWN_DELAY_AFTER_ADD_S = 600.0

# The bench's scenario (4000 in / 1000 out, docs/benchmarking.md): the request shape the default
# target is sized for. Spelled out here: the simulator does not import the client tools.
REFERENCE_SHAPE = RequestShape(input_tokens=4000, output_tokens=1000)
# Aim each replica at three quarters of the requests it can run at once: the quarter left over
# absorbs growth while a new replica starts, which takes about half an hour (coldstart.py).
TARGET_SHARE_OF_MAX_CONCURRENCY = 0.75
# Two nodes: the smallest maximum under which the prod stack follows its load (one node when
# quiet, two at the peak); the cost ceiling is then 2 x 55.04 USD/h.
DEFAULT_MAX_NODES = 2


def replica_delays(
    assumptions: ColdStartAssumptions | None = None, *, from_mirror: bool = False
) -> tuple[float, float, float]:
    """(node ready, replica on a fresh node, replica on a node holding image and weights), in
    seconds, from the cold-start budget's steps (default: its stated assumptions)."""
    budget = cold_start(assumptions or ColdStartAssumptions(), from_mirror=from_mirror)
    steps = {step.name: step.seconds for step in budget.steps}
    node = steps["node boots and joins the cluster"]
    fresh = sum(steps.values()) - node
    warm = (
        fresh
        - steps["server image pulled"]
        - next(v for k, v in steps.items() if k.startswith("weights downloaded"))
    )
    return node, fresh, warm


# The defaults of the cold-start budget (assumptions, coldstart.py).
NODE_DELAY_S, REPLICA_DELAY_S, WARM_REPLICA_DELAY_S = replica_delays()


@dataclass(frozen=True)
class AutoscalingPolicy:
    """Replicas (KEDA and the HPA it creates) and GPU nodes (cluster-autoscaler)."""

    # --- replicas: KEDA ScaledObject -> HPA
    min_replicas: int = 1  # scale to zero is left out: no pod would be left to report the queue
    max_replicas: int = 8
    # Trigger 1, AverageValue: requests in flight (running + queued) per replica. It sees a
    # queue at once, but it is not proportional to the load: a replica with a smaller batch
    # decodes faster, so at low load it recommends fewer replicas than the load needs.
    target_in_flight_per_replica: float = 48.0
    # Trigger 2, AverageValue: requests finished per second per replica, over `rate_window_s`.
    # Proportional to the load while nothing queues, so it holds the replicas the load needs
    # where trigger 1 would scale down too far; the HPA takes the larger of the two. The
    # default is what a replica finishes at trigger 1's target (performance model, x 5); set
    # it from a measurement (`serving bench` at that concurrency). None: trigger 1 alone.
    target_finished_per_s_per_replica: float | None = 1.09
    rate_window_s: float = 120.0
    hpa_sync_period_s: float = HPA_SYNC_PERIOD_S
    # How stale the metric can be: Prometheus scrapes the pods' exporter this often
    # (metricsScrapeIntervalSeconds in docs/observability.md).
    metric_scrape_interval_s: float = 30.0
    tolerance: float = HPA_TOLERANCE
    scale_up_stabilization_s: float = HPA_SCALE_UP_STABILIZATION_S
    # A removed replica costs a cold start (20-30 minutes) to get back: wait half an hour of
    # lower load before removing one, instead of the HPA's 5 minutes.
    scale_down_stabilization_s: float = 1800.0
    # behavior.scaleUp.policies, the HPA's defaults: +4 pods or +100 % per 15 s, the larger.
    scale_up_pods: int = 4
    scale_up_percent: float = 100.0
    scale_up_period_s: float = 15.0
    # behavior.scaleDown.policies: one replica per 5 minutes (the HPA's default is 100 % per
    # 15 s). Requests in flight are not proportional to replicas: a replica with a smaller
    # batch decodes faster, so after a peak the in-flight count per replica falls faster than
    # the load, and one large step down overloads the replicas left (the simulator shows it).
    # Removing one at a time lets the metric settle (a few service times) before the next.
    scale_down_pods: int | None = 1
    scale_down_percent: float | None = None
    scale_down_period_s: float = 300.0
    # KEDA's own timers; with min_replicas >= 1 they only matter for activation (0 <-> 1), which
    # the simulator does not model. Kept so the ScaledObject is written from the same object.
    keda_polling_interval_s: float = KEDA_POLLING_INTERVAL_S
    keda_cooldown_s: float = KEDA_COOLDOWN_S

    # --- GPU nodes: cluster-autoscaler on the managed node group
    min_nodes: int = 1
    max_nodes: int = DEFAULT_MAX_NODES
    replicas_per_node: int = 4  # the instance's GPUs / gpusPerReplica
    gpus_per_node: int = 8
    scan_interval_s: float = CLUSTER_AUTOSCALER_SCAN_INTERVAL_S
    # Launch to Ready of a new node (coldstart.py's node_ready_s, an assumption).
    node_delay_s: float = NODE_DELAY_S
    # Scheduled to serving, on a node that has not run a replica yet: image pull, weights
    # download, load, warm-up, first token (coldstart.py without the node's boot).
    replica_delay_s: float = REPLICA_DELAY_S
    # The same on a node that already holds the image and the weights on its NVMe.
    warm_replica_delay_s: float = WARM_REPLICA_DELAY_S
    scale_down_unneeded_s: float = CLUSTER_AUTOSCALER_SCALE_DOWN_UNNEEDED_S
    scale_down_delay_after_add_s: float = CLUSTER_AUTOSCALER_SCALE_DOWN_DELAY_AFTER_ADD_S
    node_usd_per_hour: float | None = 55.04  # p5.48xlarge on demand (hardware.py)

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise PolicyError("; ".join(problems))

    @property
    def node_capacity_replicas(self) -> int:
        return self.max_nodes * self.replicas_per_node

    @property
    def cost_ceiling_usd_per_hour(self) -> float | None:
        return None if self.node_usd_per_hour is None else self.max_nodes * self.node_usd_per_hour

    def as_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _problems(p: AutoscalingPolicy) -> list[str]:
    problems = []
    if p.min_replicas < 1:
        problems.append(
            f"min_replicas {p.min_replicas}: at least 1 (scale to zero needs a signal from outside the "
            "pods, which the stack does not have)"
        )
    if p.max_replicas < p.min_replicas:
        problems.append(f"max_replicas {p.max_replicas}: at least min_replicas ({p.min_replicas})")
    if p.replicas_per_node < 1:
        problems.append(f"replicas_per_node {p.replicas_per_node}: at least 1")
    if p.min_nodes < 0 or p.max_nodes < max(p.min_nodes, 1):
        problems.append(
            f"min_nodes {p.min_nodes}, max_nodes {p.max_nodes}: need 0 <= min_nodes <= max_nodes and max_nodes >= 1"
        )
    if p.replicas_per_node >= 1 and p.max_replicas > p.max_nodes * p.replicas_per_node:
        problems.append(
            f"max_replicas {p.max_replicas}: above what max_nodes {p.max_nodes} x {p.replicas_per_node} "
            f"replicas per node hold; use at most {p.max_nodes * p.replicas_per_node} or raise max_nodes"
        )
    if p.target_finished_per_s_per_replica is not None and p.target_finished_per_s_per_replica <= 0:
        problems.append(f"target_finished_per_s_per_replica {p.target_finished_per_s_per_replica:g}: above 0")
    if p.target_in_flight_per_replica <= 0:
        problems.append(f"target_in_flight_per_replica {p.target_in_flight_per_replica:g}: above 0")
    if not 0 <= p.tolerance < 1:
        problems.append(
            f"tolerance {p.tolerance:g}: from 0 up to (not including) 1; Kubernetes' default is 0.1"
        )
    for name in ("scale_up_stabilization_s", "scale_down_stabilization_s"):
        value = getattr(p, name)
        if not 0 <= value <= HPA_MAX_STABILIZATION_S:
            problems.append(f"{name} {value:g}: from 0 to 3600 (the HPA API's limits)")
    for name in (
        "hpa_sync_period_s",
        "metric_scrape_interval_s",
        "rate_window_s",
        "scan_interval_s",
        "scale_up_period_s",
        "scale_down_period_s",
    ):
        if getattr(p, name) <= 0:
            problems.append(f"{name} {getattr(p, name):g}: above 0")
    for name in ("node_delay_s", "replica_delay_s", "warm_replica_delay_s", "scale_down_unneeded_s"):
        if getattr(p, name) < 0:
            problems.append(f"{name} {getattr(p, name):g}: 0 or more")
    if p.scale_up_pods < 0 or p.scale_up_percent < 0:
        problems.append("scale_up_pods and scale_up_percent: 0 or more")
    if p.scale_down_pods is None and p.scale_down_percent is None:
        problems.append("scale_down_pods and scale_down_percent: give at least one scale-down policy")
    if p.scale_down_pods is not None and p.scale_down_pods < 1:
        problems.append(f"scale_down_pods {p.scale_down_pods}: at least 1")
    if p.scale_down_percent is not None and not 0 < p.scale_down_percent <= 100:
        problems.append(f"scale_down_percent {p.scale_down_percent:g}: above 0 and at most 100")
    return problems


def default_target(runtime: ServingRuntime, shape: RequestShape = REFERENCE_SHAPE) -> float:
    """Three quarters of the requests of `shape` one replica runs at once (performance model)."""
    return float(max(math.floor(TARGET_SHARE_OF_MAX_CONCURRENCY * max_concurrency(runtime, shape)), 1))


def default_finished_target(
    runtime: ServingRuntime, in_flight: float, bound_factor: float, shape: RequestShape = REFERENCE_SHAPE
) -> float:
    """Requests a second one replica finishes with `in_flight` of `shape` running: the
    performance model's upper bound over `bound_factor` (real servers are slower than bounds)."""
    bounds = bound(runtime, shape, max(round(in_flight), 1))
    return round(bounds.requests_per_s_upper_bound / bound_factor, 2)


def metric_query(namespace: str) -> str:
    """Trigger 1's PromQL: requests in flight over the server's pods (series of
    serving/observability/catalogue.py). AverageValue divides it by the replicas; `or vector(0)`
    keeps it defined while no pod reports."""
    selector = f'{{namespace="{namespace}"}}'
    return (
        f"(sum(trtllm_iteration_running_requests{selector}) + sum(trtllm_iteration_queued_requests{selector}))"
        " or vector(0)"
    )


def finished_rate_query(namespace: str, window_s: float) -> str:
    """Trigger 2's PromQL: requests finished per second over the pods, over the rate window."""
    return (
        f'sum(rate(trtllm_request_success_total{{namespace="{namespace}"}}[{round(window_s)}s])) or vector(0)'
    )


def desired_replicas(
    current_replicas: int, current_metric: float, target_metric: float, tolerance: float
) -> int:
    """The HPA's ratio formula: ceil(current x metric / target), unless the ratio is within
    the tolerance of 1 (then no change)."""
    ratio = current_metric / target_metric
    if abs(ratio - 1.0) <= tolerance:
        return current_replicas
    return math.ceil(current_replicas * ratio)


def desired_replicas_for_total(
    current_replicas: int, total_metric: float, target_per_replica: float, tolerance: float
) -> int:
    """An external metric with an AverageValue target (what KEDA's Prometheus trigger makes):
    the tolerance is checked on total / (target x current), the result is ceil(total / target)."""
    if current_replicas == 0:
        return math.ceil(total_metric / target_per_replica)
    ratio = total_metric / (target_per_replica * current_replicas)
    if abs(ratio - 1.0) <= tolerance:
        return current_replicas
    return math.ceil(total_metric / target_per_replica)

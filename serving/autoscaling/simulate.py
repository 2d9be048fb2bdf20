"""Replay arrivals through the stack's autoscaling: an event simulation in seconds.

What runs, in order of time:
- arrivals join one queue; a request starts on the least busy serving replica with a free slot
  (balancing taken as ideal) and holds it for its service time (service.py);
- Prometheus scrapes every `metric_scrape_interval_s` the requests in flight (running + queued);
- every `hpa_sync_period_s` the HPA decides the replicas from the last scrape (hpa.py); the
  Deployment adds replicas (scheduled on a node with a free slot, else Pending) or removes them:
  Pending ones first, then starting ones, then serving ones, which stop taking requests and
  finish what runs before they go (a stream is never cut);
- every `scan_interval_s` cluster-autoscaler adds nodes for Pending replicas (ready after
  `node_delay_s`) and removes a node that has held no replica for `scale_down_unneeded_s`;
- a scheduled replica serves after `replica_delay_s` (`warm_replica_delay_s` on a node that
  has already run one: image and weights are cached there).

Nothing is dropped: at the end every arrival has finished, is running or is still queued.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from serving.autoscaling.arrivals import Request
from serving.autoscaling.hpa import HorizontalAutoscaler
from serving.autoscaling.policy import AutoscalingPolicy
from serving.autoscaling.service import ReplicaService

# Order of events at the same instant: capacity changes first, then finishes, then arrivals,
# then the controllers, then the recording of the timeline.
_NODE_READY, _REPLICA_READY, _FINISH, _ARRIVAL, _SCRAPE, _HPA, _CA, _RECORD = range(8)


@dataclass
class _Node:
    id: int
    requested_s: float
    ready_s: float
    warm: bool = False  # holds the image and the weights
    removed_s: float | None = None
    empty_since_s: float | None = None
    replicas: int = 0  # replicas placed here, draining ones included (they hold their GPUs)

    def ready(self, now: float) -> bool:
        return self.ready_s <= now and self.removed_s is None


@dataclass
class _Replica:
    id: int
    created_s: float
    node: _Node | None = None
    scheduled_s: float | None = None
    ready_s: float | None = None  # when it serves (known once scheduled)
    serving: bool = False
    draining: bool = False
    gone_s: float | None = None
    running: int = 0


@dataclass(frozen=True)
class TimelinePoint:
    t: float
    replicas: int  # the Deployment's replicas (what the HPA set)
    ready_replicas: int  # serving, draining ones included
    starting_replicas: int  # scheduled, not serving yet
    pending_replicas: int  # waiting for a node
    nodes: int  # billed: booting or ready
    ready_nodes: int
    queue: int
    running: int
    metric: float  # the last scrape: requests in flight
    finished_per_s: float  # the last scrape: requests finished a second over the rate window
    arrivals_per_s: float  # over the interval before t


@dataclass(frozen=True)
class WaitSummary:
    p50: float
    p90: float
    p99: float
    max: float
    mean: float


@dataclass(frozen=True)
class SimulationResult:
    policy: AutoscalingPolicy
    hours: float
    arrivals: int
    finished: int
    running_at_end: int
    queued_at_end: int
    waits: WaitSummary  # of requests that started, and those still queued at their wait so far
    waited_over_threshold: int
    wait_threshold_s: float
    node_gpu_hours: float  # what is billed: every GPU of every node from launch to removal
    replica_gpu_hours: float  # GPUs held by replicas, starting ones included
    cost_usd: float | None
    peak_replicas: int
    peak_nodes: int
    mean_replicas: float
    mean_nodes: float
    scale_ups: int
    scale_downs: int
    timeline: tuple[TimelinePoint, ...]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q % of the values at or below it."""
    if not sorted_values:
        return 0.0
    rank = max(math.ceil(q / 100 * len(sorted_values)), 1)
    return sorted_values[rank - 1]


def fixed_policy(policy: AutoscalingPolicy, replicas: int, nodes: int | None = None) -> AutoscalingPolicy:
    """The same stack with `replicas` always on, on `nodes` (default: as many as they need)."""
    if nodes is None:
        nodes = max(math.ceil(replicas / policy.replicas_per_node), 1)
    return replace(policy, min_replicas=replicas, max_replicas=replicas, min_nodes=nodes, max_nodes=nodes)


@dataclass
class _Simulation:
    policy: AutoscalingPolicy
    service: ReplicaService
    horizon_s: float
    wait_threshold_s: float
    record_interval_s: float
    events: list[tuple[float, int, int, object]] = field(default_factory=list)
    seq: itertools.count = field(default_factory=itertools.count)
    nodes: list[_Node] = field(default_factory=list)
    replicas: list[_Replica] = field(default_factory=list)
    queue: deque[Request] = field(default_factory=deque)
    waits: list[float] = field(default_factory=list)
    finished: int = 0
    metric: float = 0.0
    finished_rate: float = 0.0
    finish_times: deque[float] = field(default_factory=deque)
    last_node_added_s: float = -math.inf
    timeline: list[TimelinePoint] = field(default_factory=list)
    arrivals_since_record: int = 0
    scale_ups: int = 0
    scale_downs: int = 0
    peak_replicas: int = 0
    peak_nodes: int = 0
    serving: list[_Replica] = field(default_factory=list)  # serving and not draining
    hpa: HorizontalAutoscaler = field(init=False)

    def __post_init__(self) -> None:
        self.hpa = HorizontalAutoscaler(self.policy)

    def push(self, when: float, kind: int, payload: object = None) -> None:
        heapq.heappush(self.events, (when, kind, next(self.seq), payload))

    # --- capacity
    def live_replicas(self) -> list[_Replica]:
        return [r for r in self.replicas if r.gone_s is None]

    def spec_replicas(self) -> int:
        return sum(1 for r in self.replicas if r.gone_s is None and not r.draining)

    def live_nodes(self) -> list[_Node]:
        return [n for n in self.nodes if n.removed_s is None]

    def add_node(self, now: float, ready_s: float, warm: bool = False) -> _Node:
        node = _Node(len(self.nodes), now, ready_s, warm=warm)
        self.nodes.append(node)
        self.peak_nodes = max(self.peak_nodes, len(self.live_nodes()))
        if ready_s > now:
            self.push(ready_s, _NODE_READY, node)
        return node

    def schedule(self, replica: _Replica, now: float) -> bool:
        """Place a replica on a ready node with a free slot, the fullest first (packing keeps
        other nodes empty, so they can go)."""
        free = [n for n in self.live_nodes() if n.ready(now) and n.replicas < self.policy.replicas_per_node]
        if not free:
            return False
        node = max(free, key=lambda n: (n.replicas, -n.id))
        node.replicas += 1
        node.empty_since_s = None
        replica.node, replica.scheduled_s = node, now
        delay = self.policy.warm_replica_delay_s if node.warm else self.policy.replica_delay_s
        replica.ready_s = now + delay
        self.push(replica.ready_s, _REPLICA_READY, replica)
        return True

    def schedule_pending(self, now: float) -> None:
        for replica in self.replicas:
            if replica.gone_s is None and replica.node is None and not self.schedule(replica, now):
                return

    def release(self, replica: _Replica, now: float) -> None:
        replica.gone_s = now
        if replica.node is not None:
            replica.node.replicas -= 1
            if replica.node.replicas == 0:
                replica.node.empty_since_s = now
        self.schedule_pending(now)

    # --- requests
    def dispatch(self, now: float) -> None:
        while self.queue:
            # The least busy serving replica; the first of them in order of start on a tie.
            replica = None
            for candidate in self.serving:
                if candidate.running < self.service.slots and (
                    replica is None or candidate.running < replica.running
                ):
                    replica = candidate
            if replica is None:
                return
            request = self.queue.popleft()
            self.waits.append(now - request.arrival_s)
            replica.running += 1
            seconds = self.service.service_s(request.input_tokens, request.output_tokens, replica.running)
            self.push(now + seconds, _FINISH, replica)

    def finish(self, replica: _Replica, now: float) -> None:
        replica.running -= 1
        self.finished += 1
        self.finish_times.append(now)
        if replica.draining and replica.running == 0:
            self.release(replica, now)
        else:
            self.dispatch(now)

    # --- the Deployment, driven by the HPA
    def set_replicas(self, desired: int, now: float) -> None:
        current = self.spec_replicas()
        if desired > current:
            self.scale_ups += 1
            for _ in range(desired - current):
                replica = _Replica(len(self.replicas), now)
                self.replicas.append(replica)
                self.schedule(replica, now)
            self.peak_replicas = max(self.peak_replicas, desired)
        elif desired < current:
            self.scale_downs += 1
            active = [r for r in self.replicas if r.gone_s is None and not r.draining]

            # The ReplicaSet deletes unscheduled pods first, then not-ready ones, then ready ones;
            # among those, here: from the emptiest node, newest first (see docs/autoscaling.md).
            def order(r: _Replica) -> tuple[int, int, int]:
                stage = 0 if r.node is None else 1 if not r.serving else 2
                return (stage, r.node.replicas if r.node else 0, -r.id)

            for replica in sorted(active, key=order)[: current - desired]:
                if replica.serving:
                    self.serving.remove(replica)
                if replica.serving and replica.running:
                    replica.draining = True  # stops taking requests; goes when its streams end
                else:
                    self.release(replica, now)

    def replica_ready(self, replica: _Replica, now: float) -> None:
        if replica.gone_s is not None:
            return
        replica.serving = True
        self.serving.append(replica)
        assert replica.node is not None
        replica.node.warm = True
        self.dispatch(now)

    # --- cluster-autoscaler
    def cluster_autoscale(self, now: float) -> None:
        p = self.policy
        live = self.live_nodes()
        pending = sum(1 for r in self.replicas if r.gone_s is None and r.node is None)
        booting_slots = sum(p.replicas_per_node - n.replicas for n in live if not n.ready(now))
        if pending > booting_slots:
            needed = math.ceil((pending - booting_slots) / p.replicas_per_node)
            for _ in range(min(needed, p.max_nodes - len(live))):
                self.add_node(now, now + p.node_delay_s)
                self.last_node_added_s = now
            return
        if now - self.last_node_added_s < p.scale_down_delay_after_add_s:
            return
        removable = len(live) - p.min_nodes
        for node in sorted(live, key=lambda n: -n.id):
            if removable <= 0:
                break
            if (
                node.ready(now)
                and node.replicas == 0
                and node.empty_since_s is not None
                and now - node.empty_since_s >= p.scale_down_unneeded_s
            ):
                node.removed_s = now
                removable -= 1

    # --- recording
    def record(self, now: float) -> None:
        live = self.live_replicas()
        nodes = self.live_nodes()
        self.timeline.append(
            TimelinePoint(
                t=now,
                replicas=self.spec_replicas(),
                ready_replicas=sum(1 for r in live if r.serving),
                starting_replicas=sum(1 for r in live if r.node is not None and not r.serving),
                pending_replicas=sum(1 for r in live if r.node is None),
                nodes=len(nodes),
                ready_nodes=sum(1 for n in nodes if n.ready(now)),
                queue=len(self.queue),
                running=sum(r.running for r in live),
                metric=self.metric,
                finished_per_s=self.finished_rate,
                arrivals_per_s=self.arrivals_since_record / self.record_interval_s,
            )
        )
        self.arrivals_since_record = 0


def steady_state_replicas(
    policy: AutoscalingPolicy,
    service: ReplicaService,
    rate_per_s: float,
    input_tokens: int,
    output_tokens: int,
) -> int:
    """Replicas the HPA settles on for a steady `rate_per_s`: at the target a replica runs
    `target` requests of about the target's service time, so it finishes target / service
    requests a second (Little's law). Where a run starts, so it does not open with a cold start."""
    batch = max(min(round(policy.target_in_flight_per_replica), service.slots), 1)
    per_replica = batch / service.service_s(input_tokens, output_tokens, batch)
    needed = math.ceil(rate_per_s / per_replica) if rate_per_s > 0 else policy.min_replicas
    return min(max(needed, policy.min_replicas), policy.max_replicas)


def simulate(
    policy: AutoscalingPolicy,
    arrivals: Sequence[Request],
    service: ReplicaService,
    hours: float,
    *,
    wait_threshold_s: float = 60.0,
    record_interval_s: float = 60.0,
    initial_replicas: int | None = None,
) -> SimulationResult:
    """Replay `arrivals` (sorted by time) for `hours`. The run starts warm: `initial_replicas`
    (default min_replicas) serving on the nodes they need (at least min_nodes)."""
    horizon = hours * 3600.0
    sim = _Simulation(policy, service, horizon, wait_threshold_s, record_interval_s)
    start = policy.min_replicas if initial_replicas is None else initial_replicas
    for _ in range(max(policy.min_nodes, math.ceil(start / policy.replicas_per_node))):
        sim.add_node(0.0, 0.0, warm=True)
    for _ in range(start):
        replica = _Replica(len(sim.replicas), 0.0)
        sim.replicas.append(replica)
        sim.schedule(replica, 0.0)
        replica.serving, replica.ready_s = True, 0.0
        sim.serving.append(replica)
    sim.events.clear()  # the initial replicas serve at once: drop their ready events
    # As if the HPA had recommended them all along: the first syncs, before a scrape, must not
    # read an empty metric as no load.
    sim.hpa.recommendations.append((0.0, start))
    for kind, interval in (
        (_SCRAPE, policy.metric_scrape_interval_s),
        (_HPA, policy.hpa_sync_period_s),
        (_CA, policy.scan_interval_s),
        (_RECORD, record_interval_s),
    ):
        sim.push(interval, kind, interval)
    sim.record(0.0)
    next_arrival = 0
    while True:
        event_time = sim.events[0][0] if sim.events else math.inf
        if next_arrival < len(arrivals) and arrivals[next_arrival].arrival_s < min(event_time, horizon):
            request = arrivals[next_arrival]
            next_arrival += 1
            if request.arrival_s < horizon:
                sim.arrivals_since_record += 1
                sim.queue.append(request)
                sim.dispatch(request.arrival_s)
            continue
        if event_time > horizon:
            break
        now, kind, _, payload = heapq.heappop(sim.events)
        if kind == _FINISH:
            assert isinstance(payload, _Replica)
            sim.finish(payload, now)
        elif kind == _REPLICA_READY:
            assert isinstance(payload, _Replica)
            sim.replica_ready(payload, now)
        elif kind == _NODE_READY:
            sim.schedule_pending(now)
        elif kind == _SCRAPE:
            sim.metric = float(len(sim.queue) + sum(r.running for r in sim.replicas if r.gone_s is None))
            window = policy.rate_window_s
            while sim.finish_times and sim.finish_times[0] <= now - window:
                sim.finish_times.popleft()
            sim.finished_rate = len(sim.finish_times) / min(window, now)
        elif kind == _HPA:
            sim.set_replicas(sim.hpa.decide(now, sim.spec_replicas(), sim.metric, sim.finished_rate), now)
        elif kind == _CA:
            sim.cluster_autoscale(now)
        elif kind == _RECORD:
            sim.record(now)
        if kind in (_SCRAPE, _HPA, _CA, _RECORD):
            assert isinstance(payload, float)
            sim.push(now + payload, kind, payload)
    return _result(sim, policy, hours, arrivals_count=next_arrival)


def _result(
    sim: _Simulation, policy: AutoscalingPolicy, hours: float, arrivals_count: int
) -> SimulationResult:
    horizon = sim.horizon_s
    queued_waits = [horizon - r.arrival_s for r in sim.queue]
    waits = sorted(sim.waits + queued_waits)
    node_hours = (
        sum(((n.removed_s if n.removed_s is not None else horizon) - n.requested_s) for n in sim.nodes) / 3600
    )
    replica_hours = (
        sum(
            ((r.gone_s if r.gone_s is not None else horizon) - r.scheduled_s)
            for r in sim.replicas
            if r.scheduled_s is not None
        )
        / 3600
    )
    gpus_per_replica = policy.gpus_per_node // policy.replicas_per_node
    timeline = tuple(sim.timeline)
    return SimulationResult(
        policy=policy,
        hours=hours,
        arrivals=arrivals_count,
        finished=sim.finished,
        running_at_end=sum(r.running for r in sim.replicas if r.gone_s is None),
        queued_at_end=len(sim.queue),
        waits=WaitSummary(
            p50=percentile(waits, 50),
            p90=percentile(waits, 90),
            p99=percentile(waits, 99),
            max=waits[-1] if waits else 0.0,
            mean=sum(waits) / len(waits) if waits else 0.0,
        ),
        waited_over_threshold=sum(1 for w in waits if w > sim.wait_threshold_s),
        wait_threshold_s=sim.wait_threshold_s,
        node_gpu_hours=node_hours * policy.gpus_per_node,
        replica_gpu_hours=replica_hours * gpus_per_replica,
        cost_usd=None if policy.node_usd_per_hour is None else node_hours * policy.node_usd_per_hour,
        peak_replicas=max(sim.peak_replicas, *(p.replicas for p in timeline)),
        peak_nodes=max(sim.peak_nodes, *(p.nodes for p in timeline)),
        mean_replicas=sum(p.replicas for p in timeline) / len(timeline),
        mean_nodes=sum(p.nodes for p in timeline) / len(timeline),
        scale_ups=sim.scale_ups,
        scale_downs=sim.scale_downs,
        timeline=timeline,
    )

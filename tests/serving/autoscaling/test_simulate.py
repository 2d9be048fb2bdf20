"""Properties of the simulation a user relies on: no request lost, never above the maximum,
more load never fewer replicas, a new replica serves only after its delay, scale-down waits."""

from __future__ import annotations

import itertools

import pytest

from serving.autoscaling.arrivals import PROFILES, Request, profile_arrivals
from serving.autoscaling.policy import AutoscalingPolicy
from serving.autoscaling.service import ReplicaService, modelled_service
from serving.autoscaling.simulate import SimulationResult, fixed_policy, percentile, simulate
from serving.config.project import assemble_config
from serving.config.settings import load_settings

POLICY = AutoscalingPolicy()


@pytest.fixture(scope="module")
def service() -> ReplicaService:
    _, config, secret_keys = assemble_config("prod", {})
    return modelled_service(load_settings(config, secret_keys).serving.runtime)


def run(
    service: ReplicaService, profile: str, hours: float, scale: float = 1.0, **kwargs
) -> SimulationResult:
    arrivals = profile_arrivals(PROFILES[profile], hours, seed=0, rate_scale=scale)
    return simulate(kwargs.pop("policy", POLICY), arrivals, service, hours, **kwargs)


def assert_nothing_dropped(result: SimulationResult) -> None:
    assert result.arrivals == result.finished + result.running_at_end + result.queued_at_end


def test_no_request_is_dropped_under_overload(service):
    # The stack's 4 fixed replicas against twice the steady load: a queue that only grows.
    result = run(service, "steady", 1, scale=2.0, policy=fixed_policy(POLICY, 4))
    assert result.queued_at_end > 0
    assert_nothing_dropped(result)


def test_no_request_is_dropped_or_cut_while_scaling_down(service):
    result = run(service, "burst", 4, initial_replicas=1)
    assert result.scale_downs > 0
    assert_nothing_dropped(result)


def test_never_above_max_replicas_or_max_nodes(service):
    result = run(service, "steady", 1.5, scale=2.0, initial_replicas=1)
    assert result.peak_replicas == POLICY.max_replicas  # it did want more
    for point in result.timeline:
        assert point.replicas <= POLICY.max_replicas
        assert point.ready_replicas + point.starting_replicas + point.pending_replicas <= POLICY.max_replicas
        assert point.nodes <= POLICY.max_nodes
    assert result.peak_nodes <= POLICY.max_nodes


def test_more_load_never_gives_fewer_replicas(service):
    runs = [run(service, "steady", 2, scale=scale, initial_replicas=1) for scale in (0.5, 1.0, 1.5, 2.0)]
    for lower, higher in itertools.pairwise(runs):
        assert all(h.replicas >= lo.replicas for lo, h in zip(lower.timeline, higher.timeline, strict=True))
        assert higher.peak_replicas >= lower.peak_replicas
        assert higher.mean_replicas >= lower.mean_replicas


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["burst", "diurnal"])
def test_more_load_never_gives_fewer_replicas_over_a_day(service, profile):
    runs = [run(service, profile, 24 if profile == "diurnal" else 6, scale=s) for s in (0.5, 1.0, 2.0)]
    for lower, higher in itertools.pairwise(runs):
        assert higher.peak_replicas >= lower.peak_replicas
        assert higher.mean_replicas >= lower.mean_replicas


def test_a_new_replica_serves_only_after_its_delay(service):
    # 3 requests a second need 3 replicas; start with 1, so the HPA adds some at once.
    result = run(service, "steady", 1.5, initial_replicas=1)
    first_up = next(p.t for p in result.timeline if p.replicas > 1)
    # The first node has room for 3 more, and has run a replica: the warm delay, 1217 s.
    for point in result.timeline:
        if point.t < first_up + POLICY.warm_replica_delay_s - 60:
            assert point.ready_replicas == 1, point
    # Replicas on the second node wait for the node (300 s) and then a cold start (1709 s).
    second_node = next((p.t for p in result.timeline if p.nodes > 1), None)
    if second_node is not None:
        for point in result.timeline:
            if point.t < second_node + POLICY.node_delay_s + POLICY.replica_delay_s - 60:
                assert point.ready_replicas <= POLICY.replicas_per_node


def test_scale_down_waits_its_stabilization_window(service):
    # 3 requests a second for an hour, then nothing.
    arrivals = [Request(i / 3, 4000, 1000) for i in range(3 * 3600)]
    result = simulate(POLICY, arrivals, service, 3, initial_replicas=3)
    level = next(p.replicas for p in result.timeline if p.t == 3600)
    for point in result.timeline:
        if 3600 <= point.t < 3600 + POLICY.scale_down_stabilization_s:
            assert point.replicas >= level, point
    assert result.timeline[-1].replicas == POLICY.min_replicas
    assert result.timeline[-1].nodes == POLICY.min_nodes


def test_a_fixed_stack_never_scales(service):
    result = run(service, "burst", 3, policy=fixed_policy(POLICY, 8, 2))
    assert {p.replicas for p in result.timeline} == {8}
    assert result.node_gpu_hours == pytest.approx(2 * 8 * 3)
    assert result.cost_usd == pytest.approx(2 * 55.04 * 3)


def test_the_same_seed_gives_the_same_run(service):
    first, again = (run(service, "burst", 3) for _ in range(2))
    assert first == again
    other = profile_arrivals(PROFILES["burst"], 3, seed=1)
    assert other != profile_arrivals(PROFILES["burst"], 3, seed=0)


def test_more_load_keeps_every_arrival_of_less_load():
    # The thinning construction: a larger scale, same seed, is a superset.
    small = {r.arrival_s for r in profile_arrivals(PROFILES["diurnal"], 2, seed=3, rate_scale=0.5)}
    large = {r.arrival_s for r in profile_arrivals(PROFILES["diurnal"], 2, seed=3, rate_scale=1.5)}
    assert small < large


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 11)]
    assert percentile(values, 50) == 5.0
    assert percentile(values, 90) == 9.0
    assert percentile(values, 99) == 10.0
    assert percentile([], 50) == 0.0

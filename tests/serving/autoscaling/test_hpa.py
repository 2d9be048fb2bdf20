"""The HPA controller over time: stabilisation windows and rate policies."""

from __future__ import annotations

from serving.autoscaling.hpa import HorizontalAutoscaler
from serving.autoscaling.policy import AutoscalingPolicy

# Trigger 1 alone, the HPA's default rate policies, so the numbers are Kubernetes' own.
POLICY = AutoscalingPolicy(
    max_replicas=64,
    max_nodes=16,
    target_in_flight_per_replica=48,
    target_finished_per_s_per_replica=None,
    scale_down_stabilization_s=300,
    scale_down_pods=None,
    scale_down_percent=100,
    scale_down_period_s=15,
)


def test_scale_down_waits_for_its_stabilization_window():
    hpa = HorizontalAutoscaler(POLICY)
    assert hpa.decide(0, 1, 4 * 48) == 4  # 192 in flight -> 4
    replicas = 4
    seen = {}
    for t in range(15, 331, 15):
        replicas = hpa.decide(t, replicas, 0)  # the load is gone
        seen[t] = replicas
    # The recommendation of 4 at t=0 is the highest of the window until it leaves it at 300 s.
    assert all(seen[t] == 4 for t in range(15, 300, 15))
    assert seen[300] == 1


def test_scale_up_is_immediate_but_rate_limited_by_the_default_policies():
    hpa = HorizontalAutoscaler(POLICY)
    # 1000 in flight wants ceil(1000 / 48) = 21; per 15 s at most max(+4 pods, +100 %).
    steps = []
    replicas = 1
    for t in (0, 15, 30, 45):
        replicas = hpa.decide(t, replicas, 1000)
        steps.append(replicas)
    # 1+4; 5x2; 10x2; then 1000 / (48 x 20) = 1.04 is within the tolerance: 20 stays.
    assert steps == [5, 10, 20, 20]


def test_within_tolerance_nothing_moves():
    hpa = HorizontalAutoscaler(POLICY)
    assert hpa.decide(0, 4, 200) == 4  # 200 / 192 = 1.04


def test_never_outside_min_and_max():
    policy = AutoscalingPolicy(max_replicas=8, target_finished_per_s_per_replica=None)
    hpa = HorizontalAutoscaler(policy)
    replicas = 1
    for t in range(0, 600, 15):
        replicas = hpa.decide(t, replicas, 100_000)
        assert 1 <= replicas <= 8
    assert replicas == 8


def test_the_prod_scale_down_policy_removes_one_replica_per_five_minutes():
    policy = AutoscalingPolicy(scale_down_stabilization_s=0, target_finished_per_s_per_replica=None)
    hpa = HorizontalAutoscaler(policy)
    replicas, history = 8, []
    for t in range(0, 1201, 15):
        replicas = hpa.decide(t, replicas, 0)
        history.append((t, replicas))
    assert dict(history)[0] == 7
    assert dict(history)[285] == 7
    assert dict(history)[300] == 6
    assert dict(history)[1200] == 3


def test_the_higher_of_the_two_triggers_wins():
    policy = AutoscalingPolicy(target_in_flight_per_replica=48, target_finished_per_s_per_replica=1.0)
    hpa = HorizontalAutoscaler(policy)
    # In flight says ceil(30 / 48) = 1; 3 finished a second says ceil(3 / 1) = 3.
    assert hpa.decide(0, 2, 30, 3.0) == 3

"""The policy object and the HPA's formula, checked against the worked examples of the
Kubernetes documentation (numbers written out, not recomputed with the implementation)."""

from __future__ import annotations

import pytest

from serving.autoscaling.policy import (
    AutoscalingPolicy,
    PolicyError,
    desired_replicas,
    desired_replicas_for_total,
    finished_rate_query,
    metric_query,
    replica_delays,
)
from serving.observability.catalogue import SAMPLE_NAMES


def test_hpa_doubles_when_the_metric_is_twice_the_target():
    # Kubernetes HPA docs, "Algorithm details": current 200m, desired 100m -> doubled.
    assert desired_replicas(1, 200, 100, 0.1) == 2
    assert desired_replicas(3, 200, 100, 0.1) == 6


def test_hpa_halves_when_the_metric_is_half_the_target():
    # Same page: 50m against 100m halves the replicas.
    assert desired_replicas(4, 50, 100, 0.1) == 2


def test_hpa_ceil_rounds_up():
    # Kubernetes blog (configurable tolerance, v1.33): 50 replicas at 90 % against 75 % -> 60.
    assert desired_replicas(50, 90, 75, 0.1) == 60
    # ceil(10 x 1.11) = ceil(11.1) = 12.
    assert desired_replicas(10, 111, 100, 0.1) == 12


def test_hpa_does_nothing_within_the_tolerance():
    # Ratio 1.05 and 0.95 are within 0.1 of 1: no change, although ceil would move them.
    assert desired_replicas(10, 105, 100, 0.1) == 10
    assert desired_replicas(10, 95, 100, 0.1) == 10
    # 1.09 is within, 0.89 is not: ceil(10 x 0.89) = 9.
    assert desired_replicas(10, 109, 100, 0.1) == 10
    assert desired_replicas(10, 89, 100, 0.1) == 9


def test_average_value_target_divides_the_total_by_the_target():
    # KEDA's Prometheus trigger with AverageValue: desired = ceil(total / target).
    # 300 in flight at 48 each: ratio 300 / (48 x 2) = 3.125, outside the tolerance -> ceil(6.25) = 7.
    assert desired_replicas_for_total(2, 300, 48, 0.1) == 7
    # 200 over 4 replicas at 48: ratio 200 / 192 = 1.04, within the tolerance -> stays 4.
    assert desired_replicas_for_total(4, 200, 48, 0.1) == 4
    # 20 over 4 at 48: ratio 0.104 -> ceil(0.42) = 1.
    assert desired_replicas_for_total(4, 20, 48, 0.1) == 1


def test_prod_defaults():
    policy = AutoscalingPolicy()
    assert (policy.min_replicas, policy.max_replicas) == (1, 8)
    assert (policy.min_nodes, policy.max_nodes, policy.replicas_per_node) == (1, 2, 4)
    assert policy.target_in_flight_per_replica == 48  # 75 % of 64 slots
    assert policy.tolerance == 0.1
    assert (policy.scale_up_stabilization_s, policy.scale_down_stabilization_s) == (0, 1800)
    assert policy.cost_ceiling_usd_per_hour == pytest.approx(110.08)  # 2 x 55.04


def test_delays_come_from_the_cold_start_budget():
    node, fresh, warm = replica_delays()
    assert node == 300
    # 25 GB / 150 MB/s + 65 GB / 200 MB/s + 65 GB / 4 GB/s + 1200 + 1 = 166.7 + 325 + 16.25 + 1201
    assert fresh == pytest.approx(1708.9, abs=0.1)
    # image and weights cached: 16.25 + 1200 + 1
    assert warm == pytest.approx(1217.25)
    _, mirror, _ = replica_delays(from_mirror=True)
    # 65 GB / 1.5 GB/s = 43.3 s instead of 325
    assert mirror == pytest.approx(1427.2, abs=0.1)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"min_replicas": 0}, "min_replicas 0"),
        ({"max_replicas": 12}, "max_replicas 12"),
        ({"max_replicas": 0}, "max_replicas 0"),
        ({"tolerance": 1.5}, "tolerance 1.5"),
        ({"scale_down_stabilization_s": 4000}, "scale_down_stabilization_s 4000"),
        ({"target_in_flight_per_replica": 0}, "target_in_flight_per_replica 0"),
        ({"scale_down_pods": None, "scale_down_percent": None}, "scale-down policy"),
    ],
)
def test_a_policy_that_cannot_run_is_refused_naming_the_setting(changes, named):
    with pytest.raises(PolicyError) as raised:
        AutoscalingPolicy(**changes)
    assert named in str(raised.value)


def test_max_replicas_beyond_the_nodes_says_what_would_work():
    with pytest.raises(PolicyError) as raised:
        AutoscalingPolicy(max_replicas=12, max_nodes=2)
    assert "use at most 8 or raise max_nodes" in str(raised.value)


def test_the_queries_use_only_series_of_the_catalogue():
    query = metric_query("gpt-oss")
    assert 'trtllm_iteration_running_requests{namespace="gpt-oss"}' in query
    assert 'trtllm_iteration_queued_requests{namespace="gpt-oss"}' in query
    rate = finished_rate_query("gpt-oss", 120)
    assert 'rate(trtllm_request_success_total{namespace="gpt-oss"}[120s])' in rate
    for name in (
        "trtllm_iteration_running_requests",
        "trtllm_iteration_queued_requests",
        "trtllm_request_success_total",
    ):
        assert name in SAMPLE_NAMES

"""The policy of a stack: what the command simulates and the cluster wiring deploys."""

from __future__ import annotations

import pytest

from serving.autoscaling.from_stack import policy_from_settings, stack_fixed_capacity
from serving.autoscaling.policy import PolicyError
from serving.config.project import assemble_config
from serving.config.settings import StackSettings, load_settings


def settings(**overrides: object) -> StackSettings:
    _, config, secret_keys = assemble_config("prod", dict(overrides))
    return load_settings(config, secret_keys)


def test_prod_policy_from_the_stack():
    prod = settings()
    policy = policy_from_settings(prod)
    assert policy.replicas_per_node == 4  # 8 GPUs / gpusPerReplica 2
    assert policy.gpus_per_node == 8
    assert policy.target_in_flight_per_replica == 48  # floor(0.75 x 64)
    # The model's bound at 48 in flight, 5.44 requests/s, over the factor 5.
    assert policy.target_finished_per_s_per_replica == pytest.approx(1.09)
    assert (policy.min_replicas, policy.max_replicas, policy.min_nodes, policy.max_nodes) == (1, 8, 1, 2)
    assert policy.node_usd_per_hour == 55.04
    assert stack_fixed_capacity(prod, policy) == (4, 1)  # replicas 4 on gpuNodeCount 1


def test_max_replicas_follows_max_nodes_unless_given():
    prod = settings()
    assert policy_from_settings(prod, {"max_nodes": 4}).max_replicas == 16
    assert policy_from_settings(prod, {"max_nodes": 4, "max_replicas": 10}).max_replicas == 10
    with pytest.raises(PolicyError):
        policy_from_settings(prod, {"max_nodes": 1, "max_replicas": 8})


def test_the_rate_target_follows_the_in_flight_target_and_the_factor():
    prod = settings()
    slower = policy_from_settings(prod, bound_factor=10)
    assert slower.target_finished_per_s_per_replica == pytest.approx(0.54)
    # 32 in flight: the bound is 4.51 requests/s (docs/performance.md's figures at 32), / 5.
    assert policy_from_settings(
        prod, {"target_in_flight_per_replica": 32}
    ).target_finished_per_s_per_replica == (pytest.approx(0.9))


def test_a_mirror_shortens_the_replica_delays():
    prod = settings()
    assert policy_from_settings(prod, from_mirror=True).replica_delay_s == pytest.approx(1427.2, abs=0.1)
    assert policy_from_settings(prod).replica_delay_s == pytest.approx(1708.9, abs=0.1)

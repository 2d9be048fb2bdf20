"""Autoscaling inside the real program (run offline): what prod deploys, and what stays fixed."""

from __future__ import annotations

import pytest

from serving.config.settings import SettingsError
from tests.support.stack_harness import plan, run

SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def test_prod_scales_replicas_on_the_queue_and_nodes_on_pending_replicas():
    result = plan()
    scaled = result.one(SCALED_OBJECT).inputs
    assert scaled["spec"]["scaleTargetRef"]["name"] == "trtllm-serve"
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (1, 8)
    # The query goes to the stack's own workspace, signed with the operator's Pod Identity.
    workspace = result.one("aws:amp/workspace:Workspace")
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["serverAddress"].startswith(workspace.state["prometheusEndpoint"].rstrip("/"))
    assert trigger["metadata"]["awsRegion"] == "us-east-1"
    assert result.one("aws:eks/podIdentityAssociation:PodIdentityAssociation", "keda-identity")
    assert result.one("kubernetes:helm.sh/v3:Release", "cluster-autoscaler")


def test_pulumi_leaves_what_the_autoscalers_own():
    result = plan()
    deployment = result.one(DEPLOYMENT, "gpt-oss-server")
    assert deployment.ignore_changes == ["spec.replicas"]
    annotations = deployment.inputs["spec"]["template"]["metadata"]["annotations"]
    assert annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
    group = result.one(NODE_GROUP, "gpu-nodes-node-group")
    assert group.ignore_changes == ["scalingConfig.desiredSize"]
    fixed = run(config={"autoscaling": False})
    assert fixed.one(DEPLOYMENT, "gpt-oss-server").ignore_changes == []
    assert fixed.one(NODE_GROUP, "gpu-nodes-node-group").ignore_changes == []
    assert not fixed.of_type(SCALED_OBJECT) and "gpuCostCeilingUsdPerHour" in fixed.outputs


def test_scale_from_zero_tags_name_the_gpus_labels_and_taint_on_the_groups_asg():
    result = plan()
    tags = {
        t.inputs["tag"]["key"]: t.inputs["tag"]["value"] for t in result.of_type("aws:autoscaling/tag:Tag")
    }
    template = "k8s.io/cluster-autoscaler/node-template"
    assert tags[f"{template}/resources/nvidia.com/gpu"] == "8"
    assert tags[f"{template}/label/nvidia.com/gpu.present"] == "true"
    assert tags[f"{template}/taint/nvidia.com/gpu"] == "true:NoSchedule"
    assert tags["k8s.io/cluster-autoscaler/enabled"] == "true"


def test_the_plan_states_the_cost_ceiling_and_the_quota_for_it():
    outputs = plan().outputs
    assert outputs["gpuCostCeilingUsdPerHour"] == pytest.approx(2 * 55.04)
    assert outputs["gpuVcpuQuotaNeeded"] == 2 * 192
    assert (outputs["autoscalingReplicas"], outputs["autoscalingGpuNodes"]) == ("1..8", "1..2")


def test_a_capacity_block_keeps_its_nodes_and_scales_only_replicas():
    block = {
        "gpuCapacityType": "CAPACITY_BLOCK",
        "capacityReservationId": "cr-0123456789abcdef0",
        "capacityReservationZone": "us-east-1c",
    }
    result = run(config=block)
    assert result.one(NODE_GROUP, "gpu-nodes-node-group").inputs["scalingConfig"] == {
        "desiredSize": 1,
        "minSize": 1,
        "maxSize": 1,
    }
    assert result.one(SCALED_OBJECT).inputs["spec"]["maxReplicaCount"] == 4


def test_autoscaling_without_its_metrics_is_refused_before_anything_is_registered():
    with pytest.raises(SettingsError, match="metricsStore"):
        run(config={"metricsStore": "none"})

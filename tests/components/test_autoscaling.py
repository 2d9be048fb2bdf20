"""The autoscaling components: KEDA, the ScaledObject, cluster-autoscaler and the GPU group's ASG
tags, as plain data and inside a small Pulumi program under the mock runtime (not `__main__.py`:
they are not wired into the stack yet)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, fields
from types import SimpleNamespace
from typing import Any, cast

import kubernetes_validate
import pulumi
import pulumi_aws as aws
import pytest
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components import autoscaling as c
from components.cluster import SYSTEM_NODE_LABELS
from components.gpu_nodes import GpuNodeGroup, accelerator_label
from offline.mocks import PlanMocks
from offline.program import RecordingMonitor, unwrap
from serving.autoscaling.policy import AutoscalingPolicy
from serving.config.project import assemble_config
from serving.runtime.hardware import INSTANCE_TYPES
from serving.workload import autoscaling as manifests
from tests.support.stack_harness import plan

CLUSTER = "gpt-oss-prod"
REGION = "us-east-1"
WORKSPACE_ARN = f"arn:aws:aps:{REGION}:123456789012:workspace/ws-123"
ENDPOINT = f"https://aps-workspaces.{REGION}.amazonaws.com/workspaces/ws-123/"
KUBERNETES_VERSION = "1.35"
P5 = INSTANCE_TYPES["p5.48xlarge"]
GPU_LABELS = {"nvidia.com/gpu.present": "true", **accelerator_label(P5)}


# --- the policy the simulator models is the one deployed -------------------------------------------


def test_every_scaled_object_field_comes_from_the_simulators_policy():
    policy = AutoscalingPolicy()
    scaling = c.replica_scaling(policy)
    assert (scaling.min_replicas, scaling.max_replicas) == (policy.min_replicas, policy.max_replicas)
    assert scaling.target_in_flight_per_replica == policy.target_in_flight_per_replica
    assert scaling.target_finished_per_s_per_replica == policy.target_finished_per_s_per_replica
    assert scaling.polling_interval_s == policy.keda_polling_interval_s
    assert scaling.cooldown_s == policy.keda_cooldown_s
    assert scaling.scale_down_stabilization_s == policy.scale_down_stabilization_s
    assert scaling.scale_down_pods == policy.scale_down_pods
    assert scaling.scale_down_period_s == policy.scale_down_period_s
    assert (scaling.scale_up_pods, scaling.scale_up_percent) == (
        policy.scale_up_pods,
        policy.scale_up_percent,
    )
    # Nothing of ReplicaScaling is left at a default of its own.
    assert {f.name for f in fields(scaling)} <= {
        *(f.name for f in fields(policy)),
        "polling_interval_s",
        "cooldown_s",
    }


def test_the_node_timings_come_from_the_simulators_policy():
    flags = c.cluster_autoscaler_flags(AutoscalingPolicy(scale_down_unneeded_s=900, scan_interval_s=10))
    args = flags.as_args()
    assert args["scale-down-unneeded-time"] == "15m0s"
    assert args["scan-interval"] == "10s"
    assert args["scale-down-delay-after-add"] == "10m0s"
    assert args["balance-similar-node-groups"] is True
    assert args["expander"] == "least-waste"


@pytest.mark.parametrize(
    ("seconds", "text"), [(10, "10s"), (600, "10m0s"), (1800, "30m0s"), (3661, "1h1m1s")]
)
def test_durations_are_spelled_as_go_parses_them(seconds, text):
    assert c.go_duration(seconds) == text


# --- IAM -----------------------------------------------------------------------------------------


def test_the_keda_operator_may_only_query_the_stacks_workspace():
    [statement] = c.keda_policy(WORKSPACE_ARN)["Statement"]
    assert statement == {"Effect": "Allow", "Action": ["aps:QueryMetrics"], "Resource": WORKSPACE_ARN}


def _statements_allowing(action: str) -> list[dict[str, Any]]:
    return [s for s in c.cluster_autoscaler_policy(CLUSTER)["Statement"] if action in s["Action"]]


def test_cluster_autoscaler_describes_anywhere_but_changes_only_this_clusters_gpu_group():
    policy = c.cluster_autoscaler_policy(CLUSTER)
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and all("*" not in a for a in statement["Action"])
    [describe] = _statements_allowing("autoscaling:DescribeAutoScalingGroups")
    assert "Condition" not in describe
    assert all(a.split(":")[1].startswith(("Describe", "Get")) for a in describe["Action"])
    for action in ("autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"):
        [statement] = _statements_allowing(action)
        assert statement["Condition"] == {
            "StringEquals": {
                "aws:ResourceTag/k8s.io/cluster-autoscaler/enabled": "true",
                f"aws:ResourceTag/k8s.io/cluster-autoscaler/{CLUSTER}": "owned",
                "aws:ResourceTag/gpt-oss/cluster-autoscaler": "gpu",
            }
        }
    [nodegroups] = _statements_allowing("eks:DescribeNodegroup")
    assert nodegroups["Resource"] == f"arn:aws:eks:*:*:nodegroup/{CLUSTER}/*/*"


def test_every_action_autodiscovery_needs_is_granted():
    granted = {a for s in c.cluster_autoscaler_policy(CLUSTER)["Statement"] for a in s["Action"]}
    # cluster-autoscaler's AWS provider README (1.35.2), "Full Cluster Autoscaler Features Policy".
    assert granted == {
        "autoscaling:DescribeAutoScalingGroups",
        "autoscaling:DescribeAutoScalingInstances",
        "autoscaling:DescribeLaunchConfigurations",
        "autoscaling:DescribeScalingActivities",
        "ec2:DescribeImages",
        "ec2:DescribeInstanceTypes",
        "ec2:DescribeLaunchTemplateVersions",
        "ec2:GetInstanceTypesFromInstanceRequirements",
        "eks:DescribeNodegroup",
        "autoscaling:SetDesiredCapacity",
        "autoscaling:TerminateInstanceInAutoScalingGroup",
    }


def test_the_image_matches_the_clusters_kubernetes_minor():
    assert c.CLUSTER_AUTOSCALER_VERSION.removeprefix("v").rsplit(".", 1)[0] == KUBERNETES_VERSION
    _, values, _ = assemble_config("prod", None, None)
    assert values["gpt-oss-trtllm:kubernetesVersion"] == c.CLUSTER_AUTOSCALER_KUBERNETES_MINOR


# --- scale from zero -----------------------------------------------------------------------------


def test_the_node_template_describes_gpus_labels_and_taint_as_cluster_autoscaler_reads_them():
    tags = c.node_template_tags(labels=GPU_LABELS, taint=c.GPU_TAINT, gpus=P5.gpus)
    assert tags == {
        "k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu": "8",
        "k8s.io/cluster-autoscaler/node-template/label/nvidia.com/gpu.present": "true",
        "k8s.io/cluster-autoscaler/node-template/label/k8s.amazonaws.com/accelerator": "nvidia-h100",
        "k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu": "true:NoSchedule",
    }


def test_the_accelerator_label_names_the_gpu():
    assert accelerator_label(INSTANCE_TYPES["p5e.48xlarge"]) == {
        "k8s.amazonaws.com/accelerator": "nvidia-h200"
    }


# --- the components under the mock runtime ---------------------------------------------------------


@dataclass
class Registered:
    type: str
    name: str
    urn: str
    parent: str | None
    dependencies: list[str]
    inputs: dict[str, Any]


def _reset() -> None:
    runtime_settings.set_root_resource(None)  # type: ignore[arg-type]
    runtime_settings.SETTINGS.outputs.clear()
    pulumi.runtime.set_all_config({}, [])


def run_components(policy: AutoscalingPolicy | None = None) -> list[Registered]:
    """The four components wired as the stack would, in a program of their own."""
    policy = policy or AutoscalingPolicy()
    mocks = PlanMocks(region=REGION)
    monitor = RecordingMonitor(mocks)
    _reset()
    pulumi.runtime.set_mocks(mocks, project="gpt-oss-trtllm", stack="test", preview=False, monitor=monitor)

    def program() -> None:
        node_group = aws.eks.NodeGroup(
            "gpu-node-group",
            cluster_name=CLUSTER,
            node_group_name=f"{CLUSTER}-gpu",
            node_role_arn="arn:aws:iam::123456789012:role/nodes",
            subnet_ids=["subnet-a"],
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(desired_size=1, min_size=0, max_size=2),
        )
        gpus = cast(GpuNodeGroup, SimpleNamespace(node_group=node_group))
        template = c.GpuNodeTemplateTags(
            "gpu-node-template",
            c.GpuNodeTemplateArgs(node_group=gpus, cluster_name=CLUSTER, labels=GPU_LABELS, gpus=P5.gpus),
        )
        keda = c.Keda(
            "keda",
            c.KedaArgs(cluster_name=CLUSTER, workspace_arn=WORKSPACE_ARN, node_selector=SYSTEM_NODE_LABELS),
        )
        c.ReplicaAutoscaler(
            "replica-autoscaler",
            c.ReplicaAutoscalerArgs(
                namespace="gpt-oss",
                deployment="trtllm-serve",
                prometheus_endpoint=ENDPOINT,
                region=REGION,
                scaling=c.replica_scaling(policy),
            ),
            opts=pulumi.ResourceOptions(depends_on=[keda]),
        )
        c.ClusterAutoscaler(
            "cluster-autoscaler",
            c.ClusterAutoscalerArgs(
                cluster_name=CLUSTER,
                region=REGION,
                node_selector=SYSTEM_NODE_LABELS,
                flags=c.cluster_autoscaler_flags(policy),
            ),
            opts=pulumi.ResourceOptions(depends_on=[template]),
        )

    try:
        _sync_await(run_pulumi_func(program))
    finally:
        _reset()
    return [
        Registered(
            type=r["type"],
            name=r["name"],
            urn=r["urn"],
            parent=r["parent"],
            dependencies=r["dependencies"],
            inputs=unwrap(r["inputs"]),
        )
        for r in monitor.registrations
    ]


@pytest.fixture(scope="module")
def registered() -> list[Registered]:
    return run_components()


def one(registered: list[Registered], type_token: str, name: str) -> Registered:
    [found] = [r for r in registered if r.type == type_token and r.name == name]
    return found


def children(registered: list[Registered], component: Registered) -> list[Registered]:
    return [r for r in registered if r.parent == component.urn]


def test_each_component_owns_its_role_policy_identity_and_release(registered):
    expected = {
        ("gpt-oss:autoscaling:Keda", "keda"),
        ("gpt-oss:autoscaling:ClusterAutoscaler", "cluster-autoscaler"),
    }
    for type_token, name in expected:
        component = one(registered, type_token, name)
        assert sorted((r.type, r.name) for r in children(registered, component)) == sorted(
            [
                ("aws:iam/role:Role", f"{name}-role"),
                ("aws:iam/policy:Policy", f"{name}-policy"),
                ("aws:iam/rolePolicyAttachment:RolePolicyAttachment", f"{name}-policy"),
                ("aws:eks/podIdentityAssociation:PodIdentityAssociation", f"{name}-identity"),
                ("kubernetes:helm.sh/v3:Release", name),
            ]
        )


def _release_and_identity(registered, name: str) -> tuple[Registered, Registered]:
    return (
        one(registered, "kubernetes:helm.sh/v3:Release", name),
        one(registered, "aws:eks/podIdentityAssociation:PodIdentityAssociation", f"{name}-identity"),
    )


def test_the_keda_operators_service_account_is_the_one_with_the_role(registered):
    release, identity = _release_and_identity(registered, "keda")
    assert release.inputs["version"] == c.KEDA_CHART_VERSION
    assert release.inputs["repositoryOpts"]["repo"] == "https://kedacore.github.io/charts"
    assert identity.inputs["namespace"] == release.inputs["namespace"] == "keda"
    assert identity.inputs["serviceAccount"] == release.inputs["values"]["serviceAccount"]["operator"]["name"]
    assert identity.inputs["clusterName"] == CLUSTER
    assert release.inputs["values"]["nodeSelector"] == SYSTEM_NODE_LABELS
    assert identity.urn in release.dependencies
    policy = json.loads(one(registered, "aws:iam/policy:Policy", "keda-policy").inputs["policy"])
    assert policy == c.keda_policy(WORKSPACE_ARN)


def test_cluster_autoscalers_service_account_is_the_one_with_the_role(registered):
    release, identity = _release_and_identity(registered, "cluster-autoscaler")
    values = release.inputs["values"]
    assert release.inputs["version"] == c.CLUSTER_AUTOSCALER_CHART_VERSION
    assert identity.inputs["namespace"] == release.inputs["namespace"] == "kube-system"
    assert identity.inputs["serviceAccount"] == values["rbac"]["serviceAccount"]["name"]
    assert values["image"]["tag"] == c.CLUSTER_AUTOSCALER_VERSION
    assert values["autoDiscovery"] == {
        "clusterName": CLUSTER,
        "tags": [
            "k8s.io/cluster-autoscaler/enabled",
            f"k8s.io/cluster-autoscaler/{CLUSTER}",
            "gpt-oss/cluster-autoscaler",
        ],
    }
    assert values["awsRegion"] == REGION and values["nodeSelector"] == SYSTEM_NODE_LABELS
    assert values["extraArgs"] == c.cluster_autoscaler_flags(AutoscalingPolicy()).as_args()
    # The group must be discoverable before the autoscaler looks for it.
    for tag in [r for r in registered if r.type == "aws:autoscaling/tag:Tag"]:
        assert tag.urn in release.dependencies


def test_the_gpu_groups_asg_carries_discovery_and_node_template_tags(registered):
    component = one(registered, "gpt-oss:autoscaling:GpuNodeTemplateTags", "gpu-node-template")
    tags = [r for r in children(registered, component) if r.type == "aws:autoscaling/tag:Tag"]
    assert {t.inputs["autoscalingGroupName"] for t in tags} == {f"<asg-of-{CLUSTER}-gpu>"}
    assert {t.inputs["tag"]["key"]: t.inputs["tag"]["value"] for t in tags} == {
        **c.discovery_tags(CLUSTER),
        **c.node_template_tags(labels=GPU_LABELS, taint=c.GPU_TAINT, gpus=8),
    }
    assert all(t.inputs["tag"]["propagateAtLaunch"] is False for t in tags)
    # Every discovery tag the autoscaler's flag lists, and every one its role's condition names.
    keys = {t.inputs["tag"]["key"] for t in tags}
    assert (
        set(
            c.cluster_autoscaler_chart_values(
                cluster_name=CLUSTER,
                region=REGION,
                node_selector={},
                flags=c.cluster_autoscaler_flags(AutoscalingPolicy()),
            )["autoDiscovery"]["tags"]
        )
        <= keys
    )


def test_the_scaled_object_waits_for_keda_and_its_authentication(registered):
    component = one(registered, "gpt-oss:autoscaling:ReplicaAutoscaler", "replica-autoscaler")
    objects = {r.inputs["kind"]: r for r in children(registered, component)}
    assert set(objects) == {"ScaledObject", "TriggerAuthentication"}
    scaled, auth = objects["ScaledObject"], objects["TriggerAuthentication"]
    assert scaled.inputs["apiVersion"] == auth.inputs["apiVersion"] == "keda.sh/v1alpha1"
    keda_release = one(registered, "kubernetes:helm.sh/v3:Release", "keda")
    assert keda_release.urn in scaled.dependencies and keda_release.urn in auth.dependencies
    assert auth.urn in scaled.dependencies
    [trigger, *_] = scaled.inputs["spec"]["triggers"]
    assert trigger["metadata"]["serverAddress"] == ENDPOINT.rstrip("/")
    assert trigger["authenticationRef"]["name"] == auth.inputs["metadata"]["name"]
    assert (
        scaled.inputs["spec"]
        == manifests.scaled_object(
            manifests.ScaledServer("gpt-oss", "trtllm-serve", ENDPOINT, REGION, {}),
            c.replica_scaling(AutoscalingPolicy()),
        )["spec"]
    )


# --- what the wiring changes in the server's objects, against the cluster's schema ----------------


def test_the_hpa_keda_makes_and_the_autoscaled_deployment_are_valid_for_the_cluster_version():
    server = manifests.ScaledServer(
        "gpt-oss", "trtllm-serve", ENDPOINT, REGION, {"app.kubernetes.io/name": "x"}
    )
    hpa = manifests.hpa_equivalent(server, c.replica_scaling(AutoscalingPolicy()))
    assert kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION
    deployment = plan("prod").one("kubernetes:apps/v1:Deployment", "gpt-oss-server")
    obj = copy.deepcopy(deployment.inputs)
    obj["metadata"].setdefault("name", deployment.state["metadata"]["name"])
    # Scale-down never cuts a stream: a removed replica gets the grace period, after a preStop
    # pause in every container that lets the load balancer stop sending to it.
    pod = obj["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 900
    assert all(container["lifecycle"]["preStop"] for container in pod["containers"])
    template = obj["spec"]["template"]["metadata"]
    template["annotations"] = {**template.get("annotations", {}), **manifests.server_pod_annotations()}
    obj["spec"]["replicas"] = manifests.initial_replicas(
        obj["spec"]["replicas"], c.replica_scaling(AutoscalingPolicy())
    )
    assert kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION


def test_strict_validation_catches_a_misspelt_behavior_field():
    server = manifests.ScaledServer("gpt-oss", "trtllm-serve", ENDPOINT, REGION, {})
    hpa = manifests.hpa_equivalent(server, c.replica_scaling(AutoscalingPolicy()))
    hpa["spec"]["behavior"]["scaleDown"]["stabilisationWindowSeconds"] = 60
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)

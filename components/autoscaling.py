"""Autoscaling in the cluster: replicas follow the queue (KEDA), GPU nodes follow the replicas
(cluster-autoscaler on the managed GPU node group).

- `Keda`: KEDA from its Helm chart on the system nodes, with an IAM role (EKS Pod Identity) for
  the operator's service account that may only query the stack's Prometheus workspace.
- `ReplicaAutoscaler`: the ScaledObject and TriggerAuthentication of `serving.workload.autoscaling`.
- `ClusterAutoscaler`: cluster-autoscaler from its Helm chart on the system nodes, discovering the
  GPU node group's Auto Scaling group by tag, with the IAM permissions its AWS provider documents,
  the mutating ones only on groups carrying this cluster's tags.
- `GpuNodeTemplateTags`: the tags on the GPU group's ASG that describe a node cluster-autoscaler
  has not seen (GPUs, labels, taint), so the group can scale from zero, and that let it be found.

The numbers come from the simulator's `AutoscalingPolicy` (`replica_scaling`,
`cluster_autoscaler_flags`), so the deployed policy is the simulated one. docs/autoscaling.md,
"In the cluster", says why KEDA and why cluster-autoscaler rather than Karpenter.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.cluster import resources_in
from components.gpu_nodes import GPU_TAINT_KEY, GpuNodeGroup
from components.iam import allow, pod_identity_role
from serving.autoscaling.policy import AutoscalingPolicy
from serving.workload import autoscaling as manifests

# --- KEDA -----------------------------------------------------------------------------------
# kedacore/charts tag v2.20.2 (July 2026): chart 2.20.2 installs KEDA 2.20.2 (Chart.yaml
# appVersion). KEDA's own compatibility table (keda.sh, "Cluster" page) lists 2.20 as tested on
# Kubernetes 1.33-1.35 (2.19: 1.32-1.34), so 2.20 is the oldest line for the stack's 1.35. The
# chart's 2.21.1 (November 2026) is newer; its API types were not available to check here, and
# the schema the tests validate against (@kubernetes-models/keda 2.0.0) was generated from
# KEDA 2.19's types, so the pin stays where both can be read: see docs/autoscaling.md.
KEDA_CHART = "keda"
KEDA_CHART_VERSION = "2.20.2"
KEDA_CHART_REPOSITORY = "https://kedacore.github.io/charts"
KEDA_VERSION = "2.20.2"
KEDA_NAMESPACE = "keda"
# The chart's default name for the operator's service account (values.yaml serviceAccount.operator).
KEDA_OPERATOR_SERVICE_ACCOUNT = "keda-operator"
# What KEDA's Prometheus scaler calls: GET <workspace>/api/v1/query, which AMP authorises as
# aps:QueryMetrics (the AmazonPrometheusQueryAccess managed policy's four actions cover the
# query API: QueryMetrics, and GetSeries, GetLabels, GetMetricMetadata for /series, /labels and
# /metadata, which the scaler never calls; pkg/scalers/prometheus_scaler.go at v2.20.2).
KEDA_AMP_ACTIONS = ("aps:QueryMetrics",)

# --- cluster-autoscaler ---------------------------------------------------------------------
# kubernetes/autoscaler tags cluster-autoscaler-chart-9.59.0 (July 2026, the newest chart; its
# appVersion is 1.35.0) and cluster-autoscaler-1.35.2 (July 2026, the newest 1.35 patch). The
# minor version must match the cluster's (cluster-autoscaler README, "Releases").
CLUSTER_AUTOSCALER_CHART = "cluster-autoscaler"
CLUSTER_AUTOSCALER_CHART_VERSION = "9.59.0"
CLUSTER_AUTOSCALER_CHART_REPOSITORY = "https://kubernetes.github.io/autoscaler"
CLUSTER_AUTOSCALER_VERSION = "v1.35.2"
CLUSTER_AUTOSCALER_KUBERNETES_MINOR = "1.35"
CLUSTER_AUTOSCALER_NAMESPACE = "kube-system"
CLUSTER_AUTOSCALER_SERVICE_ACCOUNT = "cluster-autoscaler"
# Auto-discovery (cluster-autoscaler/cloudprovider/aws/README.md, "Auto-Discovery Setup"): an ASG
# is scaled when it carries every listed tag key. EKS puts the first two on every managed node
# group's ASG, the system group's too; the third is this stack's, on the GPU group only, so the
# system nodes are neither discovered nor changeable by the autoscaler's role.
ENABLED_TAG = "k8s.io/cluster-autoscaler/enabled"
GPU_GROUP_TAG = "gpt-oss/cluster-autoscaler"
GPU_GROUP_TAG_VALUE = "gpu"
NODE_TEMPLATE = "k8s.io/cluster-autoscaler/node-template"
# A p5 takes minutes to boot and join (coldstart.py assumes 5); the default 15 minutes before a
# scale-up counts as failed leaves little room for EFA and driver initialisation.
MAX_NODE_PROVISION_TIME = "25m0s"


def cluster_tag(cluster_name: str) -> str:
    return f"k8s.io/cluster-autoscaler/{cluster_name}"


def discovery_tags(cluster_name: str) -> dict[str, str]:
    """The tags an ASG needs to be scaled, with the values EKS gives the first two."""
    return {ENABLED_TAG: "true", cluster_tag(cluster_name): "owned", GPU_GROUP_TAG: GPU_GROUP_TAG_VALUE}


def keda_policy(workspace_arn: str) -> dict[str, Any]:
    """The KEDA operator may query the stack's Prometheus workspace, and nothing else."""
    return {"Version": "2012-10-17", "Statement": [allow(list(KEDA_AMP_ACTIONS), workspace_arn)]}


def cluster_autoscaler_policy(cluster_name: str, partition: str = "aws") -> dict[str, Any]:
    """cluster-autoscaler's AWS provider, with auto-discovery (README, "Full Cluster Autoscaler
    Features Policy"): describing is allowed everywhere (those actions take no resource-level
    permissions); EKS node groups only in this cluster; changing a group's size or terminating
    its instances only on groups that carry every discovery tag of this cluster."""
    describe = [
        "autoscaling:DescribeAutoScalingGroups",
        "autoscaling:DescribeAutoScalingInstances",
        "autoscaling:DescribeLaunchConfigurations",
        "autoscaling:DescribeScalingActivities",
        "ec2:DescribeImages",
        "ec2:DescribeInstanceTypes",
        "ec2:DescribeLaunchTemplateVersions",
        "ec2:GetInstanceTypesFromInstanceRequirements",
    ]
    own = {f"aws:ResourceTag/{key}": value for key, value in discovery_tags(cluster_name).items()}
    return {
        "Version": "2012-10-17",
        "Statement": [
            allow(describe),
            # Labels and taints of a managed node group that has not had a node yet.
            allow(["eks:DescribeNodegroup"], f"arn:{partition}:eks:*:*:nodegroup/{cluster_name}/*/*"),
            allow(
                ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
                StringEquals=own,
            ),
        ],
    }


def keda_chart_values(*, cluster_name: str, node_selector: Mapping[str, str]) -> dict[str, Any]:
    """The KEDA chart's values: what differs from its defaults, each for a reason."""
    return {
        "clusterName": cluster_name,
        # The operator, the metrics API server and the admission webhooks on the system nodes.
        "nodeSelector": dict(node_selector),
        # The service account the Pod Identity association names; no IRSA annotation.
        "serviceAccount": {"operator": {"create": True, "name": KEDA_OPERATOR_SERVICE_ACCOUNT}},
        "podIdentity": {"aws": {"irsa": {"enabled": False}}},
        # The CRDs come with the chart (and with its upgrades).
        "crds": {"install": True},
        # The tags are pinned: no pull on every restart.
        "image": {"pullPolicy": "IfNotPresent"},
    }


@dataclass(frozen=True)
class ClusterAutoscalerFlags:
    """The flags that decide when GPU nodes come and go (durations as Go spells them)."""

    scan_interval: str
    scale_down_unneeded_time: str
    scale_down_delay_after_add: str
    expander: str = "least-waste"
    balance_similar_node_groups: bool = True
    max_node_provision_time: str = MAX_NODE_PROVISION_TIME

    def as_args(self) -> dict[str, Any]:
        return {
            "scan-interval": self.scan_interval,
            "scale-down-unneeded-time": self.scale_down_unneeded_time,
            "scale-down-delay-after-add": self.scale_down_delay_after_add,
            # One GPU group is discovered; should a second one join (Spot beside on-demand, a
            # second zone), the group that leaves the least CPU and memory idle wins, then random.
            "expander": self.expander,
            # Groups of the same shape in different zones are kept at similar sizes.
            "balance-similar-node-groups": self.balance_similar_node_groups,
            "max-node-provision-time": self.max_node_provision_time,
        }


def go_duration(seconds: float) -> str:
    """Seconds as a Go duration (what cluster-autoscaler's flags take): 600 -> "10m0s"."""
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def cluster_autoscaler_flags(policy: AutoscalingPolicy) -> ClusterAutoscalerFlags:
    """The simulator's node timings as cluster-autoscaler flags."""
    return ClusterAutoscalerFlags(
        scan_interval=go_duration(policy.scan_interval_s),
        scale_down_unneeded_time=go_duration(policy.scale_down_unneeded_s),
        scale_down_delay_after_add=go_duration(policy.scale_down_delay_after_add_s),
    )


def cluster_autoscaler_chart_values(
    *, cluster_name: str, region: str, node_selector: Mapping[str, str], flags: ClusterAutoscalerFlags
) -> dict[str, Any]:
    """The chart's values: what differs from its defaults, each for a reason."""
    return {
        "cloudProvider": "aws",
        # Given, not discovered: the system nodes' metadata service is IMDSv2 only.
        "awsRegion": region,
        "autoDiscovery": {"clusterName": cluster_name, "tags": list(discovery_tags(cluster_name))},
        # The chart's appVersion is 1.35.0; the newest 1.35 patch.
        "image": {"tag": CLUSTER_AUTOSCALER_VERSION},
        "rbac": {"serviceAccount": {"create": True, "name": CLUSTER_AUTOSCALER_SERVICE_ACCOUNT}},
        "nodeSelector": dict(node_selector),
        # One replica: it elects a leader anyway, and a restart only delays the next scan.
        "replicaCount": 1,
        "extraArgs": flags.as_args(),
    }


def replica_scaling(policy: AutoscalingPolicy) -> manifests.ReplicaScaling:
    """The simulator's policy as the ScaledObject's fields (whole seconds, as the APIs take)."""

    def whole(seconds: float) -> int:
        return math.ceil(seconds)

    return manifests.ReplicaScaling(
        min_replicas=policy.min_replicas,
        max_replicas=policy.max_replicas,
        target_in_flight_per_replica=policy.target_in_flight_per_replica,
        polling_interval_s=whole(policy.keda_polling_interval_s),
        cooldown_s=whole(policy.keda_cooldown_s),
        scale_up_stabilization_s=whole(policy.scale_up_stabilization_s),
        scale_up_pods=policy.scale_up_pods,
        scale_up_percent=round(policy.scale_up_percent),
        scale_up_period_s=whole(policy.scale_up_period_s),
        scale_down_stabilization_s=whole(policy.scale_down_stabilization_s),
        scale_down_pods=policy.scale_down_pods,
        scale_down_percent=None if policy.scale_down_percent is None else round(policy.scale_down_percent),
        scale_down_period_s=whole(policy.scale_down_period_s),
        target_finished_per_s_per_replica=policy.target_finished_per_s_per_replica,
        rate_window_s=whole(policy.rate_window_s),
    )


def node_template_tags(
    *, labels: Mapping[str, str], taint: tuple[str, str, str], gpus: int
) -> dict[str, str]:
    """What cluster-autoscaler must know of a node it has not seen (AWS provider README,
    "Auto-Discovery Setup"; aws_manager.go of 1.35.2 reads these prefixes): its GPUs
    (`resources/<name>`), labels (`label/<key>`) and taints (`taint/<key>` = `<value>:<Effect>`,
    the effect spelled as Kubernetes does)."""
    key, value, effect = taint
    tags = {f"{NODE_TEMPLATE}/resources/nvidia.com/gpu": str(gpus)}
    tags |= {f"{NODE_TEMPLATE}/label/{name}": text for name, text in sorted(labels.items())}
    tags[f"{NODE_TEMPLATE}/taint/{key}"] = f"{value}:{effect}"
    return tags


# The GPU node group's taint (components/gpu_nodes.py), as Kubernetes spells its effect.
GPU_TAINT = (GPU_TAINT_KEY, "true", "NoSchedule")


@dataclass(frozen=True)
class KedaArgs:
    cluster_name: pulumi.Input[str]
    # The Amazon Managed Prometheus workspace the operator may query (MetricsStore's workspace).
    workspace_arn: pulumi.Input[str]
    # Where KEDA runs: the system nodes' labels (components.cluster.SYSTEM_NODE_LABELS).
    node_selector: dict[str, str]
    tags: dict[str, str] = field(default_factory=dict)


class Keda(pulumi.ComponentResource):
    """KEDA's Helm release and the operator's query-only role.

    The Kubernetes provider comes in `opts.providers`; `opts.depends_on` names what must run
    first (the system nodes, the Pod Identity agent). ScaledObjects depend on this component.
    """

    role_arn: pulumi.Output[str]
    release: k8s.helm.v3.Release

    def __init__(self, name: str, args: KedaArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpt-oss:autoscaling:Keda", name, None, opts)
        policy = pulumi.Output.from_input(args.workspace_arn).apply(lambda arn: json.dumps(keda_policy(arn)))
        role, waits = pod_identity_role(
            self,
            name,
            description=f"KEDA {KEDA_VERSION} operator: query the stack's Prometheus workspace",
            policy=policy,
            cluster_name=args.cluster_name,
            namespace=KEDA_NAMESPACE,
            service_account=KEDA_OPERATOR_SERVICE_ACCOUNT,
            tags=args.tags,
        )
        values = pulumi.Output.from_input(args.cluster_name).apply(
            lambda cluster: keda_chart_values(cluster_name=cluster, node_selector=args.node_selector)
        )
        self.release = k8s.helm.v3.Release(
            name,
            name=KEDA_CHART,
            chart=KEDA_CHART,
            version=KEDA_CHART_VERSION,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=KEDA_CHART_REPOSITORY),
            namespace=KEDA_NAMESPACE,
            create_namespace=True,
            values=values,
            # The CRDs and the admission webhook must be in place before a ScaledObject is sent.
            wait_for_jobs=True,
            timeout=600,
            # The Pod Identity association first: pods that start without it get no credentials
            # until they restart.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*waits, *resources_in(opts)]),
        )
        self.role_arn = role.arn
        self.register_outputs({"roleArn": self.role_arn, "chartVersion": KEDA_CHART_VERSION})


@dataclass(frozen=True)
class ReplicaAutoscalerArgs:
    namespace: str
    deployment: str
    # AMP's Prometheus-compatible endpoint (MetricsStore.prometheus_endpoint).
    prometheus_endpoint: pulumi.Input[str]
    region: str
    scaling: manifests.ReplicaScaling
    labels: dict[str, str] = field(default_factory=dict)


class ReplicaAutoscaler(pulumi.ComponentResource):
    """The server's ScaledObject and its TriggerAuthentication.

    `opts.depends_on` must name the `Keda` component (its CRDs and webhook) and the
    InferenceServer (the namespace and the Deployment the ScaledObject targets).
    """

    scaled_object: k8s.apiextensions.CustomResource

    def __init__(self, name: str, args: ReplicaAutoscalerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpt-oss:autoscaling:ReplicaAutoscaler", name, None, opts)
        waits = resources_in(opts)

        def server(endpoint: str) -> manifests.ScaledServer:
            return manifests.ScaledServer(
                namespace=args.namespace,
                deployment=args.deployment,
                prometheus_endpoint=endpoint,
                region=args.region,
                labels=args.labels,
            )

        auth = manifests.trigger_authentication(server(""))
        authentication = k8s.apiextensions.CustomResource(
            f"{name}-trigger-authentication",
            api_version=auth["apiVersion"],
            kind=auth["kind"],
            metadata=auth["metadata"],
            spec=auth["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=waits),
        )
        spec = pulumi.Output.from_input(args.prometheus_endpoint).apply(
            lambda endpoint: manifests.scaled_object(server(endpoint), args.scaling)["spec"]
        )
        scaled = manifests.scaled_object(server(""), args.scaling)
        self.scaled_object = k8s.apiextensions.CustomResource(
            f"{name}-scaled-object",
            api_version=scaled["apiVersion"],
            kind=scaled["kind"],
            metadata=scaled["metadata"],
            spec=spec,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[authentication, *waits]),
        )
        self.register_outputs({})


@dataclass(frozen=True)
class ClusterAutoscalerArgs:
    cluster_name: pulumi.Input[str]
    region: str
    # Where cluster-autoscaler runs: the system nodes' labels.
    node_selector: dict[str, str]
    flags: ClusterAutoscalerFlags
    partition: str = "aws"
    tags: dict[str, str] = field(default_factory=dict)


class ClusterAutoscaler(pulumi.ComponentResource):
    """cluster-autoscaler's Helm release and its role.

    The Kubernetes provider comes in `opts.providers`; `opts.depends_on` names what must run
    first (the system nodes, the Pod Identity agent, the GPU group's discovery tags).
    """

    role_arn: pulumi.Output[str]
    release: k8s.helm.v3.Release

    def __init__(self, name: str, args: ClusterAutoscalerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpt-oss:autoscaling:ClusterAutoscaler", name, None, opts)
        cluster_name = pulumi.Output.from_input(args.cluster_name)
        role, waits = pod_identity_role(
            self,
            name,
            description=f"cluster-autoscaler {CLUSTER_AUTOSCALER_VERSION}: scale this cluster's tagged GPU group",
            policy=cluster_name.apply(
                lambda cluster: json.dumps(cluster_autoscaler_policy(cluster, args.partition))
            ),
            cluster_name=args.cluster_name,
            namespace=CLUSTER_AUTOSCALER_NAMESPACE,
            service_account=CLUSTER_AUTOSCALER_SERVICE_ACCOUNT,
            tags=args.tags,
        )
        values = cluster_name.apply(
            lambda cluster: cluster_autoscaler_chart_values(
                cluster_name=cluster, region=args.region, node_selector=args.node_selector, flags=args.flags
            )
        )
        self.release = k8s.helm.v3.Release(
            name,
            name=CLUSTER_AUTOSCALER_CHART,
            chart=CLUSTER_AUTOSCALER_CHART,
            version=CLUSTER_AUTOSCALER_CHART_VERSION,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CLUSTER_AUTOSCALER_CHART_REPOSITORY),
            namespace=CLUSTER_AUTOSCALER_NAMESPACE,
            values=values,
            timeout=600,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*waits, *resources_in(opts)]),
        )
        self.role_arn = role.arn
        self.register_outputs({"roleArn": self.role_arn, "chartVersion": CLUSTER_AUTOSCALER_CHART_VERSION})


@dataclass(frozen=True)
class GpuNodeTemplateArgs:
    node_group: GpuNodeGroup
    cluster_name: pulumi.Input[str]
    # The GPU nodes' labels as the node group applies them (gpuNodeSelector, plus
    # accelerator_label() once the node group carries it).
    labels: dict[str, str]
    gpus: int
    taint: tuple[str, str, str] = GPU_TAINT


def _first_asg_name(resources: Any) -> str:
    """The name of the node group's (only) Auto Scaling group, from `NodeGroup.resources`."""
    first = resources[0]
    groups = getattr(first, "autoscaling_groups", None) or first["autoscaling_groups"]
    group = groups[0]
    return getattr(group, "name", None) or group["name"]


class GpuNodeTemplateTags(pulumi.ComponentResource):
    """The discovery and node-template tags on the GPU node group's ASG, one `aws.autoscaling.Tag`
    each (EKS creates the ASG; these tags are not passed on to instances: cluster-autoscaler reads
    them from the group)."""

    tags: list[aws.autoscaling.Tag]

    def __init__(self, name: str, args: GpuNodeTemplateArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpt-oss:autoscaling:GpuNodeTemplateTags", name, None, opts)
        asg_name = args.node_group.node_group.resources.apply(_first_asg_name)
        template = node_template_tags(labels=args.labels, taint=args.taint, gpus=args.gpus)
        cluster = pulumi.Output.from_input(args.cluster_name)
        # The discovery tag that names the cluster is known only with the cluster's name.
        fixed = {ENABLED_TAG: "true", GPU_GROUP_TAG: GPU_GROUP_TAG_VALUE, **template}
        self.tags = [
            aws.autoscaling.Tag(
                f"{name}-{_slug(key)}",
                autoscaling_group_name=asg_name,
                tag=aws.autoscaling.TagTagArgs(key=key, value=value, propagate_at_launch=False),
                opts=pulumi.ResourceOptions(parent=self),
            )
            for key, value in fixed.items()
        ]
        self.tags.append(
            aws.autoscaling.Tag(
                f"{name}-cluster",
                autoscaling_group_name=asg_name,
                tag=aws.autoscaling.TagTagArgs(
                    key=cluster.apply(cluster_tag), value="owned", propagate_at_launch=False
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
        )
        self.register_outputs({"autoscalingGroupName": asg_name})


def _slug(key: str) -> str:
    """A tag key as part of a resource name: node-template/label/nvidia.com/gpu.present ->
    label-nvidia-com-gpu-present."""
    short = key.removeprefix(f"{NODE_TEMPLATE}/").removeprefix("k8s.io/cluster-autoscaler/")
    return "".join(c if c.isalnum() else "-" for c in short).strip("-")

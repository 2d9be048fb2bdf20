"""GPU nodes: the p5 node group that runs the model, added to an `EksCluster`.

GPU nodes: EKS managed node group on the NVIDIA AMI, tainted so only GPU pods land there, with a
launch template that requires IMDSv2, sizes and encrypts the root volume and turns the eight local
NVMe drives into one RAID0 array (AL2023 nodeadm, or Bottlerocket's ephemeral-storage API).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components.cluster import EksCluster
from serving.config.settings import AutoscalingSettings, GpuNodeSettings
from serving.runtime.hardware import AL2023_NVME_MOUNT, InstanceType

GPU_TAINT_KEY = "nvidia.com/gpu"
# The label cluster-autoscaler's AWS provider reads to know a node has GPUs before the device
# plugin reports them (aws_cloud_provider.go GPULabel); without it a fresh node counts as one
# without GPUs and the pending replica can trigger a second node (its README, "Special note on
# GPU instances").
GPU_ACCELERATOR_LABEL = "k8s.amazonaws.com/accelerator"


def accelerator_label(instance: InstanceType) -> dict[str, str]:
    """`k8s.amazonaws.com/accelerator` for the GPU nodes: nvidia-h100 on p5, nvidia-h200 on p5e."""
    return {GPU_ACCELERATOR_LABEL: f"nvidia-{instance.gpu.name.split()[0].lower()}"}


AL2023_RAID_MOUNT = AL2023_NVME_MOUNT  # where nodeadm mounts the NVMe RAID0 array
MIME_BOUNDARY = "==GPT-OSS-NODECONFIG=="


def al2023_user_data() -> str:
    """nodeadm NodeConfig (MIME part) that makes the local NVMe drives one RAID0 array.

    EKS merges its own NodeConfig (cluster endpoint, CA, CIDR) with this one, so only the
    instance options appear here.
    """
    node_config = "\n".join(
        [
            "---",
            "apiVersion: node.eks.aws/v1alpha1",
            "kind: NodeConfig",
            "spec:",
            "  instance:",
            "    localStorage:",
            "      strategy: RAID0",
        ]
    )
    return "\n".join(
        [
            "MIME-Version: 1.0",
            f'Content-Type: multipart/mixed; boundary="{MIME_BOUNDARY}"',
            "",
            f"--{MIME_BOUNDARY}",
            "Content-Type: application/node.eks.aws",
            "",
            node_config,
            "",
            f"--{MIME_BOUNDARY}--",
            "",
        ]
    )


def bottlerocket_user_data() -> str:
    """Bottlerocket settings (TOML): RAID0 over the local NVMe, bound under containerd/kubelet.

    `apiclient ephemeral-storage init` builds the array from all instance-store drives; `bind`
    moves the image store, pod volumes and logs onto it. A hostPath outside those directories
    (such as the AL2023 default weightsHostPath) lands on the EBS data volume instead.
    """
    commands = [
        ["apiclient", "ephemeral-storage", "init"],
        [
            "apiclient",
            "ephemeral-storage",
            "bind",
            "--dirs",
            "/var/lib/containerd",
            "/var/lib/kubelet",
            "/var/log/pods",
        ],
    ]
    return "\n".join(
        [
            "[settings.bootstrap-commands.k8s-ephemeral-storage]",
            f"commands = {json.dumps(commands)}",
            "essential = true",
            'mode = "always"',
            "",
        ]
    )


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass(frozen=True)
class GpuNodeGroupArgs:
    cluster: EksCluster
    # Private subnets to place nodes in; with a Capacity Block only the reservation's zone's.
    subnet_ids: Sequence[pulumi.Input[str]]
    nodes: GpuNodeSettings
    # With autoscaling on, cluster-autoscaler sizes the group within min/max; gpuNodeCount is
    # only where it starts.
    autoscaling: AutoscalingSettings | None = None
    tags: dict[str, str] = field(default_factory=dict)


class GpuNodeGroup(pulumi.ComponentResource):
    node_group: aws.eks.NodeGroup
    node_group_name: pulumi.Output[str]
    launch_template: aws.ec2.LaunchTemplate

    def __init__(self, name: str, args: GpuNodeGroupArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpt-oss:aws:GpuNodeGroup", name, None, opts)
        nodes, cluster = args.nodes, args.cluster
        bottlerocket = nodes.ami_type.startswith("BOTTLEROCKET")
        capacity_block = nodes.capacity_type == "CAPACITY_BLOCK"
        autoscaling = args.autoscaling if args.autoscaling and args.autoscaling.enabled else None

        self.launch_template = aws.ec2.LaunchTemplate(
            f"{name}-launch-template",
            description=f"{nodes.instance.name} GPU nodes: IMDSv2, encrypted gp3 root, NVMe RAID0",
            update_default_version=True,
            # A Capacity Block's launch template names the instance type (EKS user guide,
            # "Capacity Blocks for ML" with managed node groups); then the node group must not.
            instance_type=nodes.instance.name if capacity_block else None,
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                # Hop limit 1: only host-network pods (VPC CNI, kube-proxy, the Pod Identity
                # agent) reach the instance metadata service. The model server runs downloaded
                # model code (trust_remote_code); it must not be able to take the node's IAM
                # credentials. Pods that need AWS access get EKS Pod Identity instead.
                http_put_response_hop_limit=1,
            ),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    # Bottlerocket keeps the OS on /dev/xvda and containers on the /dev/xvdb data
                    # volume; AL2023 has one root volume. Either way this volume holds the 20-30 GB
                    # TensorRT-LLM image until the NVMe array takes over containerd's storage.
                    device_name="/dev/xvdb" if bottlerocket else "/dev/xvda",
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=nodes.root_volume_gib,
                        volume_type="gp3",
                        # Image pulls are throughput-bound: 250 MiB/s instead of gp3's 125 baseline.
                        throughput=250,
                        iops=3000,
                        encrypted="true",
                        delete_on_termination="true",
                    ),
                )
            ],
            user_data=_b64(bottlerocket_user_data() if bottlerocket else al2023_user_data()),
            instance_market_options=aws.ec2.LaunchTemplateInstanceMarketOptionsArgs(
                market_type="capacity-block",
            )
            if capacity_block
            else None,
            capacity_reservation_specification=(
                aws.ec2.LaunchTemplateCapacityReservationSpecificationArgs(
                    capacity_reservation_target=aws.ec2.LaunchTemplateCapacityReservationSpecificationCapacityReservationTargetArgs(
                        capacity_reservation_id=nodes.capacity_reservation_id,
                    ),
                )
                if capacity_block
                else None
            ),
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(
                    resource_type=kind, tags={**args.tags, "Name": f"{name}-gpu-node"}
                )
                for kind in ("instance", "volume")
            ],
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )

        self.node_group = aws.eks.NodeGroup(
            f"{name}-node-group",
            cluster_name=cluster.name,
            node_group_name=cluster.name.apply(lambda c: f"{c}-gpu"),
            version=cluster.version,
            node_role_arn=cluster.node_role.arn,
            subnet_ids=args.subnet_ids,
            ami_type=nodes.ami_type,
            capacity_type=nodes.capacity_type,
            instance_types=None if capacity_block else [nodes.instance.name],
            # Without autoscaling the group holds exactly gpuNodeCount nodes; with it,
            # cluster-autoscaler moves the desired size within the range and Pulumi leaves it.
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                desired_size=nodes.node_count,
                min_size=autoscaling.min_nodes if autoscaling else nodes.node_count,
                # EKS needs a maximum of at least 1, also for a group waiting at 0 nodes.
                max_size=autoscaling.max_nodes if autoscaling else max(nodes.node_count, 1),
            ),
            # MINIMAL: an AMI, launch-template or version update replaces nodes one at a time
            # instead of first launching extra ones (DEFAULT surges by up to twice the zones):
            # p5 capacity and quota rarely have room for more, and a Capacity Block has none.
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1, update_strategy="MINIMAL"),
            # EKS replaces a GPU node whose health checks fail (GPU, kubelet, networking).
            node_repair_config=aws.eks.NodeGroupNodeRepairConfigArgs(enabled=True),
            labels={**nodes.labels, **(accelerator_label(nodes.instance) if autoscaling else {})},
            taints=[aws.eks.NodeGroupTaintArgs(key=GPU_TAINT_KEY, value="true", effect="NO_SCHEDULE")],
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=self.launch_template.id,
                version=self.launch_template.latest_version.apply(str),
            ),
            tags=args.tags,
            opts=pulumi.ResourceOptions(
                parent=self,
                # Nodes become Ready only with the networking add-ons and the role's policies.
                depends_on=[*cluster.node_role.attachments, *cluster.node_prerequisites],
                # A p5 node takes minutes to launch and pass EKS health checks; a Capacity Block
                # only launches once its window starts.
                custom_timeouts=pulumi.CustomTimeouts(create="60m", update="90m"),
                # A change EKS cannot apply in place (AMI type, capacity type, instance types, the
                # reservation's zone) replaces the group. Create-before-delete would fail on the
                # group's fixed name and need twice the GPU quota; deleting first frees both.
                # The serving pods wait Pending for the new nodes meanwhile.
                delete_before_replace=True,
                # The engine's (camelCase) path: only top-level names are translated.
                ignore_changes=["scalingConfig.desiredSize"] if autoscaling else None,
            ),
        )
        self.node_group_name = self.node_group.node_group_name
        self.register_outputs({"nodeGroupName": self.node_group_name})

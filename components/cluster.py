"""The EKS cluster: control plane, its managed add-ons, the node role and the system nodes.

Like pulumi-eks's `Cluster`, one component owns what every cluster needs before a workload can
run: IAM-only access (access entries), KMS-encrypted secrets, audit logs, the networking add-ons,
the IAM role nodes run as, and a small system node group for CoreDNS. GPU node groups are added
beside it (`GpuNodeGroup` takes the cluster). Written with pulumi-aws resources rather than
pulumi-eks so that every resource is visible to `make plan` and the policy pack (multi-language
components are opaque under mocks).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components.iam import assume_role_policy
from serving.config.settings import SystemNodeSettings

# Control-plane logs to CloudWatch: who called the API (audit), what it served (api) and how
# callers authenticated (authenticator). Scheduler and controller-manager logs are left off:
# they are chatty and rarely needed for a single-workload cluster.
CONTROL_PLANE_LOG_TYPES = ("api", "audit", "authenticator")

# EKS managed add-ons this stack installs instead of the unmanaged copies EKS would bootstrap, so
# that EKS manages their versions. The networking ones must exist before nodes can become Ready
# (managed node groups fail creation on nodes that never get Ready); CoreDNS, a Deployment, needs
# nodes to run on or it stays DEGRADED and fails the update.
NODE_PREREQUISITE_ADDONS = ("vpc-cni", "kube-proxy", "eks-pod-identity-agent")
ADDONS_NEEDING_NODES = ("coredns",)
# Add-on settings that differ from EKS's defaults: the VPC CNI's network policy agent enforces the
# workload's NetworkPolicy (without it, Kubernetes accepts the object and nothing enforces it).
ADDON_CONFIGURATION: dict[str, dict[str, str]] = {"vpc-cni": {"enableNetworkPolicy": "true"}}


@dataclass(frozen=True)
class ClusterArgs:
    name: str
    kubernetes_version: str
    region: str
    # Where the control plane's network interfaces go: the private subnets only (an interface
    # in a public subnet is one step from the internet). Load balancers find their subnets by
    # tag, not from this list. EKS updates the list in place since October 2023.
    subnet_ids: Sequence[pulumi.Input[str]]
    # Where the system nodes run (the private subnets).
    node_subnet_ids: Sequence[pulumi.Input[str]]
    system_nodes: SystemNodeSettings
    admin_role_arns: tuple[str, ...] = ()
    api_public_access_cidrs: tuple[str, ...] = ()
    # EKS upgrade policy: STANDARD or EXTENDED, always explicit (the API's default is EXTENDED).
    support_type: str = "STANDARD"
    # How long CloudWatch keeps the control plane's logs (EKS's own log group never expires them).
    log_retention_days: int = 90
    tags: dict[str, str] = field(default_factory=dict)


# What the system nodes carry, for the cluster's own controllers to select them.
SYSTEM_NODE_LABELS = {"gpt-oss/node-role": "system"}


# Managed policies a node needs and nothing more: join the cluster and pull images from ECR (the
# EKS add-on images; pull-only, AWS's policy for exactly that). The VPC CNI's own policy is on
# the CNI's role (EKS Pod Identity, below), as AWS recommends: every pod on a node can reach
# what the node role may do. No SSM: `kubectl debug node/<name>` gives a shell on a node without
# an extra agent and IAM permission on every GPU node.
NODE_MANAGED_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEC2ContainerRegistryPullOnly",
)
# The VPC CNI's policy, on a role only its service account (kube-system/aws-node) can assume.
CNI_MANAGED_POLICY = "AmazonEKS_CNI_Policy"
CNI_SERVICE_ACCOUNT = "aws-node"


def kubeconfig_for(cluster_name: str, endpoint: str, certificate_authority: str, region: str) -> str:
    """A kubeconfig that authenticates with `aws eks get-token` (the caller's AWS identity)."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": cluster_name,
                    "cluster": {"server": endpoint, "certificate-authority-data": certificate_authority},
                }
            ],
            "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
            "current-context": cluster_name,
            "users": [
                {
                    "name": cluster_name,
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1beta1",
                            "command": "aws",
                            "args": [
                                "eks",
                                "get-token",
                                "--cluster-name",
                                cluster_name,
                                "--region",
                                region,
                                "--output",
                                "json",
                            ],
                            "interactiveMode": "Never",
                        }
                    },
                }
            ],
        },
        indent=2,
    )


@dataclass(frozen=True)
class NodeRoleArgs:
    cluster_name: str
    tags: dict[str, str] = field(default_factory=dict)


class NodeRole(pulumi.ComponentResource):
    """The IAM role both node groups' instances run as."""

    arn: pulumi.Output[str]
    attachments: list[aws.iam.RolePolicyAttachment]

    def __init__(self, name: str, args: NodeRoleArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpt-oss:aws:NodeRole", name, None, opts)
        partition = aws.get_partition().partition
        role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "ec2.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
            description=f"Worker nodes of EKS cluster {args.cluster_name}",
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.attachments = [
            aws.iam.RolePolicyAttachment(
                f"{name}-{policy}",
                role=role.name,
                policy_arn=f"arn:{partition}:iam::aws:policy/{policy}",
                opts=pulumi.ResourceOptions(parent=self),
            )
            for policy in NODE_MANAGED_POLICIES
        ]
        self.arn = role.arn
        self.register_outputs({"arn": self.arn})


@dataclass(frozen=True)
class SystemNodeGroupArgs:
    cluster_name: pulumi.Input[str]
    kubernetes_version: pulumi.Input[str]
    node_role: NodeRole
    subnet_ids: Sequence[pulumi.Input[str]]
    nodes: SystemNodeSettings
    tags: dict[str, str] = field(default_factory=dict)


class SystemNodeGroup(pulumi.ComponentResource):
    """Small on-demand nodes for CoreDNS and other add-ons, which do not tolerate the GPU taint."""

    node_group: aws.eks.NodeGroup

    def __init__(self, name: str, args: SystemNodeGroupArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpt-oss:aws:SystemNodeGroup", name, None, opts)
        launch_template = aws.ec2.LaunchTemplate(
            f"{name}-launch-template",
            description="System nodes: IMDSv2, encrypted gp3 root",
            update_default_version=True,
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                # 2: add-ons such as the AWS Load Balancer Controller read the region and VPC
                # from instance metadata from inside a pod network namespace (one extra hop).
                http_put_response_hop_limit=2,
            ),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name="/dev/xvda",
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=50,
                        volume_type="gp3",
                        encrypted="true",
                        delete_on_termination="true",
                    ),
                )
            ],
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.node_group = aws.eks.NodeGroup(
            f"{name}-node-group",
            cluster_name=args.cluster_name,
            node_group_name=pulumi.Output.from_input(args.cluster_name).apply(lambda c: f"{c}-system"),
            version=args.kubernetes_version,
            node_role_arn=args.node_role.arn,
            subnet_ids=args.subnet_ids,
            ami_type="AL2023_x86_64_STANDARD",
            capacity_type="ON_DEMAND",
            instance_types=[args.nodes.instance_type],
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                desired_size=args.nodes.node_count,
                min_size=args.nodes.node_count,
                max_size=args.nodes.node_count,
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            labels=dict(SYSTEM_NODE_LABELS),
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=launch_template.id,
                version=launch_template.latest_version.apply(str),
            ),
            tags=args.tags,
            # The component's own depends_on (the networking add-ons) holds for the node group:
            # Pulumi does not pass a parent's dependencies on to its children.
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[*args.node_role.attachments, *resources_in(opts)]
            ),
        )
        self.register_outputs({"nodeGroupName": self.node_group.node_group_name})


class EksCluster(pulumi.ComponentResource):
    cluster: aws.eks.Cluster
    name: pulumi.Output[str]
    version: pulumi.Output[str]
    kms_key_arn: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]  # secret
    cluster_security_group_id: pulumi.Output[str]
    node_role: NodeRole
    # What a node group must wait for: nodes become Ready only once these add-ons run.
    node_prerequisites: list[pulumi.Resource]
    partition: str

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpt-oss:aws:EksCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.partition = aws.get_partition().partition

        role, role_policy = self._service_role(
            f"{name}-role",
            f"{name}-role-cluster-policy",
            service="eks.amazonaws.com",
            description=f"EKS control plane of {args.name}",
            policy="AmazonEKSClusterPolicy",
            tags=args.tags,
        )

        key = aws.kms.Key(
            f"{name}-secrets-key",
            description=f"Envelope encryption of Kubernetes secrets in EKS cluster {args.name}",
            enable_key_rotation=True,
            # The shortest window AWS allows: `pulumi destroy` leaves the key pending deletion
            # for a week, during which it can still be restored.
            deletion_window_in_days=7,
            tags=args.tags,
            opts=child,
        )
        aws.kms.Alias(
            f"{name}-secrets-key",
            name=f"alias/{args.name}-eks-secrets",
            target_key_id=key.key_id,
            opts=child,
        )

        # The group EKS writes the control plane's logs to, created first with a retention: the
        # one EKS would create keeps them forever. An existing stack already has that group;
        # import it once (docs/operations.md) before this `pulumi up`.
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-control-plane-logs",
            name=f"/aws/eks/{args.name}/cluster",
            retention_in_days=args.log_retention_days,
            tags=args.tags,
            opts=child,
        )

        self.cluster = aws.eks.Cluster(
            f"{name}-eks",
            name=args.name,
            version=args.kubernetes_version,
            role_arn=role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=args.subnet_ids,
                endpoint_private_access=True,
                # The public endpoint still requires IAM authentication; the CIDR list narrows
                # who may even try. Without CIDRs it is switched off (private access only: run
                # `pulumi up` from inside the VPC or a peered network then).
                endpoint_public_access=bool(args.api_public_access_cidrs),
                public_access_cidrs=list(args.api_public_access_cidrs) or None,
            ),
            access_config=aws.eks.ClusterAccessConfigArgs(
                # Access entries only: no aws-auth ConfigMap to drift out of sync with IAM.
                authentication_mode="API",
                # The identity running `pulumi up` becomes cluster admin, so the Kubernetes
                # provider below can create the workload in the same run.
                bootstrap_cluster_creator_admin_permissions=True,
            ),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=key.arn),
                resources=["secrets"],
            ),
            enabled_cluster_log_types=list(CONTROL_PLANE_LOG_TYPES),
            # Without it the API chooses EXTENDED: six times the control-plane price once the
            # version leaves standard support, with no decision recorded anywhere.
            upgrade_policy=aws.eks.ClusterUpgradePolicyArgs(support_type=args.support_type),
            # The add-ons are EKS managed add-ons below instead of unmanaged bootstrap copies.
            bootstrap_self_managed_addons=False,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[role_policy, log_group]),
        )

        cluster_admin_policy = (
            f"arn:{self.partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
        )
        # The identity running `pulumi up` already has an access entry (the creator's); a second
        # one for the same role would fail to create.
        deploying_role = aws.iam.get_session_context(arn=aws.get_caller_identity().arn).issuer_arn
        for index, principal in enumerate(args.admin_role_arns):
            if principal == deploying_role:
                continue
            entry = aws.eks.AccessEntry(
                f"{name}-admin-{index}",
                cluster_name=self.cluster.name,
                principal_arn=principal,
                type="STANDARD",
                tags=args.tags,
                opts=child,
            )
            aws.eks.AccessPolicyAssociation(
                f"{name}-admin-{index}",
                cluster_name=self.cluster.name,
                principal_arn=principal,
                policy_arn=cluster_admin_policy,
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[entry]),
            )

        self.name = self.cluster.name
        self.version = self.cluster.version
        self.kms_key_arn = key.arn
        self.cluster_security_group_id = self.cluster.vpc_config.cluster_security_group_id
        self.kubeconfig = pulumi.Output.secret(
            pulumi.Output.all(
                self.cluster.name, self.cluster.endpoint, self.cluster.certificate_authority.data
            ).apply(lambda parts: kubeconfig_for(parts[0], parts[1], parts[2], args.region))
        )

        # The VPC CNI's AWS permissions, for its service account only (EKS Pod Identity; the
        # eks-pod-identity-agent add-on, installed with it, hands them out on each node).
        cni_role, cni_policy = self._service_role(
            f"{name}-vpc-cni-role",
            f"{name}-vpc-cni-role-policy",
            service="pods.eks.amazonaws.com",
            description=f"VPC CNI (kube-system/{CNI_SERVICE_ACCOUNT}) of EKS cluster {args.name}",
            policy=CNI_MANAGED_POLICY,
            tags=args.tags,
        )
        identities = {
            "vpc-cni": [
                aws.eks.AddonPodIdentityAssociationArgs(
                    role_arn=cni_role.arn, service_account=CNI_SERVICE_ACCOUNT
                )
            ]
        }
        self.node_prerequisites = list(
            self._addons(name, NODE_PREREQUISITE_ADDONS, args, depends_on=[cni_policy], identities=identities)
        )
        # Named from this component since it owns them; the aliases keep the URNs they had as
        # top-level components, so existing stacks replace nothing.
        self.node_role = NodeRole(
            f"{name}-node-role",
            NodeRoleArgs(cluster_name=args.name, tags=args.tags),
            opts=pulumi.ResourceOptions(parent=self, aliases=[pulumi.Alias(name="node-role", parent=None)]),
        )
        system_nodes = SystemNodeGroup(
            f"{name}-system-nodes",
            SystemNodeGroupArgs(
                cluster_name=self.name,
                kubernetes_version=self.version,
                node_role=self.node_role,
                subnet_ids=args.node_subnet_ids,
                nodes=args.system_nodes,
                tags=args.tags,
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=self.node_prerequisites,
                aliases=[pulumi.Alias(name="system-nodes", parent=None)],
            ),
        )
        self._addons(name, ADDONS_NEEDING_NODES, args, depends_on=[system_nodes])

        self.register_outputs(
            {
                "name": self.name,
                "endpoint": self.cluster.endpoint,
                "kmsKeyArn": self.kms_key_arn,
                "kubeconfig": self.kubeconfig,
                "nodeRoleArn": self.node_role.arn,
            }
        )

    def _service_role(
        self,
        role_name: str,
        attachment_name: str,
        *,
        service: str,
        description: str,
        policy: str,
        tags: dict[str, str],
    ) -> tuple[aws.iam.Role, aws.iam.RolePolicyAttachment]:
        """An IAM role that `service` assumes, with one AWS managed policy attached."""
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            role_name,
            assume_role_policy=assume_role_policy(service),
            description=description,
            tags=tags,
            opts=child,
        )
        attachment = aws.iam.RolePolicyAttachment(
            attachment_name,
            role=role.name,
            policy_arn=f"arn:{self.partition}:iam::aws:policy/{policy}",
            opts=child,
        )
        return role, attachment

    def _addons(
        self,
        name: str,
        addon_names: tuple[str, ...],
        args: ClusterArgs,
        depends_on: list[pulumi.Resource],
        identities: Mapping[str, Sequence[aws.eks.AddonPodIdentityAssociationArgs]] | None = None,
    ) -> list[aws.eks.Addon]:
        """EKS managed add-ons, each at the default version AWS publishes for this Kubernetes
        version. The version is looked up rather than pinned so that raising kubernetesVersion
        also moves every add-on to its matching default, the combination AWS tests.
        """
        addons = []
        for addon_name in addon_names:
            version = aws.eks.get_addon_version_output(
                addon_name=addon_name,
                kubernetes_version=self.version,
            ).version
            addons.append(
                aws.eks.Addon(
                    f"{name}-{addon_name}",
                    cluster_name=self.cluster.name,
                    addon_name=addon_name,
                    addon_version=version,
                    configuration_values=(
                        json.dumps(ADDON_CONFIGURATION[addon_name])
                        if addon_name in ADDON_CONFIGURATION
                        else None
                    ),
                    pod_identity_associations=(identities or {}).get(addon_name),
                    # The cluster starts without self-managed copies, so nothing is overwritten
                    # on create; on update EKS's published configuration wins over hand edits.
                    resolve_conflicts_on_create="OVERWRITE",
                    resolve_conflicts_on_update="OVERWRITE",
                    tags=args.tags,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on),
                )
            )
        return addons


def resources_in(opts: pulumi.ResourceOptions | None) -> list[pulumi.Resource]:
    """The resources a component's `depends_on` names, to hand on to the children that wait."""
    depends_on = opts.depends_on if opts is not None else None
    if depends_on is None:
        return []
    if isinstance(depends_on, pulumi.Resource):
        return [depends_on]
    if isinstance(depends_on, Sequence):
        return [r for r in depends_on if isinstance(r, pulumi.Resource)]
    raise TypeError("depends_on must list resources")

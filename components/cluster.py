"""The EKS control plane: IAM-only access (access entries), KMS-encrypted secrets, audit logs.

Written with pulumi-aws resources rather than pulumi-eks so that every resource is visible to
`make plan` and the policy pack (multi-language components are opaque under mocks).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

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


@dataclass(frozen=True)
class ClusterArgs:
    name: str
    kubernetes_version: str
    region: str
    subnet_ids: list[pulumi.Input[str]]
    admin_role_arns: tuple[str, ...] = ()
    api_public_access_cidrs: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)


def _assume_role_policy(service: str) -> str:
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": ["sts:AssumeRole", "sts:TagSession"] if service == "eks.amazonaws.com"
            else ["sts:AssumeRole"],
        }],
    })


def kubeconfig_for(cluster_name: str, endpoint: str, certificate_authority: str, region: str) -> str:
    """A kubeconfig that authenticates with `aws eks get-token` (the caller's AWS identity)."""
    return json.dumps({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": {
            "server": endpoint, "certificate-authority-data": certificate_authority}}],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
        "current-context": cluster_name,
        "users": [{"name": cluster_name, "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "aws",
            "args": ["eks", "get-token", "--cluster-name", cluster_name, "--region", region,
                     "--output", "json"],
            "interactiveMode": "Never",
        }}}],
    }, indent=2)


class EksCluster(pulumi.ComponentResource):
    cluster: aws.eks.Cluster
    name: pulumi.Output[str]
    version: pulumi.Output[str]
    kms_key_arn: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]  # secret
    cluster_security_group_id: pulumi.Output[str]
    partition: str

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpt-oss:aws:EksCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.partition = aws.get_partition().partition

        role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=_assume_role_policy("eks.amazonaws.com"),
            description=f"EKS control plane of {args.name}",
            tags=args.tags,
            opts=child,
        )
        role_policy = aws.iam.RolePolicyAttachment(
            f"{name}-role-cluster-policy",
            role=role.name,
            policy_arn=f"arn:{self.partition}:iam::aws:policy/AmazonEKSClusterPolicy",
            opts=child,
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
            f"{name}-secrets-key", name=f"alias/{args.name}-eks-secrets", target_key_id=key.key_id,
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
            # The add-ons are EKS managed add-ons below instead of unmanaged bootstrap copies.
            bootstrap_self_managed_addons=False,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[role_policy]),
        )

        cluster_admin_policy = (
            f"arn:{self.partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
        )
        for index, principal in enumerate(args.admin_role_arns):
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
        self._args = args
        self.register_outputs({
            "name": self.name,
            "endpoint": self.cluster.endpoint,
            "kmsKeyArn": self.kms_key_arn,
            "kubeconfig": self.kubeconfig,
        })

    def install_addons(
        self, addon_names: tuple[str, ...], *, depends_on: list[pulumi.Resource] | None = None
    ) -> list[aws.eks.Addon]:
        """EKS managed add-ons, each at the default version AWS publishes for this Kubernetes
        version. The version is looked up rather than pinned so that raising kubernetesVersion
        also moves every add-on to its matching default, the combination AWS tests.
        """
        addons = []
        for addon_name in addon_names:
            version = aws.eks.get_addon_version_output(
                addon_name=addon_name, kubernetes_version=self.version,
            ).version
            addons.append(aws.eks.Addon(
                f"{self.pulumi_resource_name}-{addon_name}",
                cluster_name=self.cluster.name,
                addon_name=addon_name,
                addon_version=version,
                # The cluster starts without self-managed copies, so nothing is overwritten
                # on create; on update EKS's published configuration wins over hand edits.
                resolve_conflicts_on_create="OVERWRITE",
                resolve_conflicts_on_update="OVERWRITE",
                tags=self._args.tags,
                opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on or []),
            ))
        return addons

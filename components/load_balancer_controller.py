"""The AWS Load Balancer Controller: the NLB in front of the gateway, with IP targets.

The legacy in-tree controller (cloud-provider-aws) gets critical fixes only, registers nodes
rather than pods, enforces source ranges on the nodes' security group and health-checks
kube-proxy, not the gateway. This controller registers the pods themselves, gives the NLB a
security group of its own that enforces the source ranges, and health-checks the gateway's
`/health`. It is installed from AWS's Helm chart at a pinned version, runs on the system nodes,
and gets its AWS permissions through EKS Pod Identity on a role only its service account can use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.cluster import resources_in
from components.iam import allow, pod_identity_role

# AWS's chart (aws/eks-charts) and controller release, pinned: chart 3.5.0 installs
# public.ecr.aws/eks/aws-load-balancer-controller:v3.5.0 (the chart's Chart.yaml and values.yaml
# at tag v3.5.0, kubernetes-sigs/aws-load-balancer-controller, August 2026).
CHART = "aws-load-balancer-controller"
CHART_VERSION = "3.5.0"
CHART_REPOSITORY = "https://aws.github.io/eks-charts"
CONTROLLER_VERSION = "v3.5.0"
NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "aws-load-balancer-controller"
# Resources the controller creates carry this tag; it may change or delete only those.
CLUSTER_TAG = "elbv2.k8s.aws/cluster"


def _tagged(*keys: str) -> dict[str, str]:
    """A `Null` condition: the named tags must be present ("false": not null)."""
    return dict.fromkeys(keys, "false")


def controller_policy(partition: str = "aws") -> dict[str, Any]:
    """The permissions AWS publishes for the controller (docs/install/iam_policy.json of the
    pinned release), grouped by what they are for. Creating and changing load balancers, target
    groups and security groups is allowed only for resources tagged with the cluster tag."""
    ec2 = f"arn:{partition}:ec2:*:*"
    elb = f"arn:{partition}:elasticloadbalancing:*:*"
    own_tag = f"aws:ResourceTag/{CLUSTER_TAG}"
    request_tag = f"aws:RequestTag/{CLUSTER_TAG}"
    load_balancers_and_groups = [
        f"{elb}:targetgroup/*/*",
        f"{elb}:loadbalancer/net/*/*",
        f"{elb}:loadbalancer/app/*/*",
    ]
    listeners_and_rules = [
        f"{elb}:listener/net/*/*/*",
        f"{elb}:listener/app/*/*/*",
        f"{elb}:listener-rule/net/*/*/*",
        f"{elb}:listener-rule/app/*/*/*",
    ]
    describe = [
        *(
            f"ec2:{action}"
            for action in (
                "DescribeAccountAttributes",
                "DescribeAddresses",
                "DescribeAvailabilityZones",
                "DescribeInternetGateways",
                "DescribeVpcs",
                "DescribeVpcPeeringConnections",
                "DescribeSubnets",
                "DescribeSecurityGroups",
                "DescribeInstances",
                "DescribeNetworkInterfaces",
                "DescribeTags",
                "GetCoipPoolUsage",
                "DescribeCoipPools",
                "GetSecurityGroupsForVpc",
                "DescribeIpamPools",
                "DescribeRouteTables",
            )
        ),
        *(
            f"elasticloadbalancing:{action}"
            for action in (
                "DescribeLoadBalancers",
                "DescribeLoadBalancerAttributes",
                "DescribeListeners",
                "DescribeListenerCertificates",
                "DescribeSSLPolicies",
                "DescribeRules",
                "DescribeTargetGroups",
                "DescribeTargetGroupAttributes",
                "DescribeTargetHealth",
                "DescribeTags",
                "DescribeTrustStores",
                "DescribeListenerAttributes",
                "DescribeCapacityReservation",
            )
        ),
    ]
    # Certificates, web ACLs, Shield and Cognito: what a listener or an ALB may refer to.
    integrations = [
        "cognito-idp:DescribeUserPoolClient",
        "acm:ListCertificates",
        "acm:DescribeCertificate",
        "iam:ListServerCertificates",
        "iam:GetServerCertificate",
        "waf-regional:GetWebACL",
        "waf-regional:GetWebACLForResource",
        "waf-regional:AssociateWebACL",
        "waf-regional:DisassociateWebACL",
        "wafv2:GetWebACL",
        "wafv2:GetWebACLForResource",
        "wafv2:AssociateWebACL",
        "wafv2:DisassociateWebACL",
        "shield:GetSubscriptionState",
        "shield:DescribeProtection",
        "shield:CreateProtection",
        "shield:DeleteProtection",
    ]
    modify_own = [
        f"elasticloadbalancing:{action}"
        for action in (
            "ModifyLoadBalancerAttributes",
            "SetIpAddressType",
            "SetSecurityGroups",
            "SetSubnets",
            "DeleteLoadBalancer",
            "ModifyTargetGroup",
            "ModifyTargetGroupAttributes",
            "DeleteTargetGroup",
            "ModifyListenerAttributes",
            "ModifyCapacityReservation",
            "ModifyIpPools",
        )
    ]
    listener_changes = [
        f"elasticloadbalancing:{action}"
        for action in (
            "SetWebAcl",
            "ModifyListener",
            "AddListenerCertificates",
            "RemoveListenerCertificates",
            "ModifyRule",
            "SetRulePriorities",
        )
    ]
    statements = [
        allow(
            ["iam:CreateServiceLinkedRole"],
            StringEquals={"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"},
        ),
        allow(describe),
        allow(integrations),
        # Security groups: the NLB's own (created and tagged by the controller), and the rules on
        # the pods' security group that let the NLB in.
        allow(["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"]),
        allow(["ec2:CreateSecurityGroup"]),
        allow(
            ["ec2:CreateTags"],
            f"{ec2}:security-group/*",
            StringEquals={"ec2:CreateAction": "CreateSecurityGroup"},
            Null=_tagged(request_tag),
        ),
        allow(
            ["ec2:CreateTags", "ec2:DeleteTags"],
            f"{ec2}:security-group/*",
            Null={request_tag: "true", own_tag: "false"},
        ),
        allow(
            [
                "ec2:AuthorizeSecurityGroupIngress",
                "ec2:RevokeSecurityGroupIngress",
                "ec2:DeleteSecurityGroup",
            ],
            Null=_tagged(own_tag),
        ),
        # Load balancers and target groups: created with the cluster tag, then changed only
        # while they carry it.
        allow(
            ["elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:CreateTargetGroup"],
            Null=_tagged(request_tag),
        ),
        allow(
            [
                "elasticloadbalancing:CreateListener",
                "elasticloadbalancing:DeleteListener",
                "elasticloadbalancing:CreateRule",
                "elasticloadbalancing:DeleteRule",
            ]
        ),
        allow(
            ["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"],
            load_balancers_and_groups,
            Null={request_tag: "true", own_tag: "false"},
        ),
        allow(["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"], listeners_and_rules),
        allow(modify_own, Null=_tagged(own_tag)),
        allow(
            ["elasticloadbalancing:AddTags"],
            load_balancers_and_groups,
            StringEquals={"elasticloadbalancing:CreateAction": ["CreateTargetGroup", "CreateLoadBalancer"]},
            Null=_tagged(request_tag),
        ),
        allow(
            ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"],
            f"{elb}:targetgroup/*/*",
        ),
        allow(listener_changes),
    ]
    return {"Version": "2012-10-17", "Statement": statements}


def chart_values(
    *, cluster_name: str, region: str, vpc_id: str, node_selector: dict[str, str]
) -> dict[str, Any]:
    """The chart's values: what differs from AWS's defaults, each for a reason."""
    return {
        "clusterName": cluster_name,
        # Given, not discovered: pods cannot reach the instance metadata service (IMDSv2 with a
        # hop limit of 1 on the nodes).
        "region": region,
        "vpcId": vpc_id,
        "serviceAccount": {"create": True, "name": SERVICE_ACCOUNT},
        # One active controller and one on standby (leader election), on the system nodes.
        "replicaCount": 2,
        "nodeSelector": node_selector,
        # The chart's webhook would otherwise claim every new LoadBalancer Service in the cluster,
        # and refuse to admit any while the controller is down (failurePolicy Fail). The
        # stack's Service names the controller's class itself.
        "enableServiceMutatorWebhook": False,
    }


@dataclass(frozen=True)
class LoadBalancerControllerArgs:
    cluster_name: pulumi.Input[str]
    region: str
    vpc_id: pulumi.Input[str]
    # Where the controller runs: the system nodes' labels.
    node_selector: dict[str, str]
    partition: str = "aws"
    tags: dict[str, str] = field(default_factory=dict)


class LoadBalancerController(pulumi.ComponentResource):
    """The controller's IAM role (Pod Identity), its policy and the Helm release.

    The Kubernetes provider comes in `opts.providers`; `opts.depends_on` names what must run
    first (the system nodes, the Pod Identity agent). Services of type LoadBalancer must depend
    on this component: on `pulumi destroy` they are then deleted while the controller still
    runs to delete their NLBs, which would otherwise outlive the stack and block the VPC's
    deletion.
    """

    role_arn: pulumi.Output[str]
    release: k8s.helm.v3.Release

    def __init__(
        self, name: str, args: LoadBalancerControllerArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("gpt-oss:aws:LoadBalancerController", name, None, opts)
        # Only the controller's service account in kube-system gets the role.
        role, waits = pod_identity_role(
            self,
            name,
            description="AWS Load Balancer Controller",
            policy_description=f"AWS Load Balancer Controller {CONTROLLER_VERSION}: AWS's published policy",
            policy=json.dumps(controller_policy(args.partition)),
            cluster_name=args.cluster_name,
            namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT,
            tags=args.tags,
        )
        values = pulumi.Output.all(args.cluster_name, args.vpc_id).apply(
            lambda parts: chart_values(
                cluster_name=parts[0], region=args.region, vpc_id=parts[1], node_selector=args.node_selector
            )
        )
        # A Helm release (not a client-side render): the chart generates its webhook's TLS
        # certificate at install time, which a render would change on every preview.
        self.release = k8s.helm.v3.Release(
            name,
            name=CHART,
            chart=CHART,
            version=CHART_VERSION,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPOSITORY),
            namespace=NAMESPACE,
            values=values,
            # Waits for the controller's pods (and its webhook) to be ready, so that the
            # Service created after it is handled at once.
            wait_for_jobs=True,
            timeout=600,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*waits, *resources_in(opts)]),
        )
        self.role_arn = role.arn
        self.register_outputs({"roleArn": self.role_arn, "chartVersion": CHART_VERSION})

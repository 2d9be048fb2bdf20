"""IAM pieces every component builds the same way: trust policies, statements, and a role that
one Kubernetes service account gets through EKS Pod Identity."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws

POD_IDENTITY_SERVICE = "pods.eks.amazonaws.com"


def assume_role_policy(service: str) -> str:
    """A trust policy for one AWS service principal."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": service},
                    # EKS (the control plane, and Pod Identity for pods) also tags the session.
                    "Action": ["sts:AssumeRole", "sts:TagSession"]
                    if service in ("eks.amazonaws.com", POD_IDENTITY_SERVICE)
                    else ["sts:AssumeRole"],
                }
            ],
        }
    )


def allow(actions: list[str], resource: str | list[str] = "*", **condition: Any) -> dict[str, Any]:
    """One Allow statement; keyword arguments are condition operators (`Null={...}`)."""
    statement: dict[str, Any] = {"Effect": "Allow", "Action": actions, "Resource": resource}
    if condition:
        statement["Condition"] = condition
    return statement


def pod_identity_role(
    parent: pulumi.Resource,
    name: str,
    *,
    description: str,
    policy: pulumi.Input[str],
    cluster_name: pulumi.Input[str],
    namespace: str,
    service_account: str,
    tags: dict[str, str],
    policy_description: str | None = None,
) -> tuple[aws.iam.Role, list[pulumi.Resource]]:
    """A role only `namespace/service_account` of the cluster can use (EKS Pod Identity), with
    `policy` (JSON) attached: `<name>-role`, `<name>-policy` (the policy and its attachment) and
    `<name>-identity`. Returns the role and what a workload using it must wait for."""
    child = pulumi.ResourceOptions(parent=parent)
    role = aws.iam.Role(
        f"{name}-role",
        assume_role_policy=assume_role_policy(POD_IDENTITY_SERVICE),
        description=f"{description} ({namespace}/{service_account})",
        tags=tags,
        opts=child,
    )
    role_policy = aws.iam.Policy(
        f"{name}-policy", description=policy_description or description, policy=policy, tags=tags, opts=child
    )
    attachment = aws.iam.RolePolicyAttachment(
        f"{name}-policy", role=role.name, policy_arn=role_policy.arn, opts=child
    )
    identity = aws.eks.PodIdentityAssociation(
        f"{name}-identity",
        cluster_name=cluster_name,
        namespace=namespace,
        service_account=service_account,
        role_arn=role.arn,
        tags=tags,
        opts=child,
    )
    return role, [attachment, identity]

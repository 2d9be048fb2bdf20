"""The AWS Load Balancer Controller's IAM policy and chart values, as plain data."""

from __future__ import annotations

from components.load_balancer_controller import CLUSTER_TAG, chart_values, controller_policy

# What the controller does to an NLB Service's resources; each must be allowed, and the ones that
# change or delete something only on resources carrying the cluster tag.
CREATES = ("elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:CreateTargetGroup")
CHANGES_OWN = (
    "elasticloadbalancing:DeleteLoadBalancer",
    "elasticloadbalancing:DeleteTargetGroup",
    "elasticloadbalancing:ModifyTargetGroupAttributes",
    "elasticloadbalancing:SetSecurityGroups",
    "ec2:DeleteSecurityGroup",
)


def statements_allowing(action: str, partition: str = "aws") -> list[dict]:
    return [s for s in controller_policy(partition)["Statement"] if action in s["Action"]]


def test_every_statement_allows_named_actions_on_named_resources():
    policy = controller_policy()
    assert policy["Version"] == "2012-10-17"
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        assert statement["Action"] and all(":" in a and "*" not in a for a in statement["Action"])
        assert statement["Resource"]


def test_creating_requires_the_cluster_tag_on_the_request():
    for action in CREATES:
        [statement] = statements_allowing(action)
        assert statement["Condition"] == {"Null": {f"aws:RequestTag/{CLUSTER_TAG}": "false"}}


def test_changing_or_deleting_is_limited_to_resources_carrying_the_cluster_tag():
    for action in CHANGES_OWN:
        for statement in statements_allowing(action):
            assert statement["Condition"]["Null"][f"aws:ResourceTag/{CLUSTER_TAG}"] == "false", action


def test_registering_pods_as_targets_is_allowed_on_target_groups_only():
    [statement] = statements_allowing("elasticloadbalancing:RegisterTargets")
    assert statement["Resource"] == "arn:aws:elasticloadbalancing:*:*:targetgroup/*/*"


def test_the_partition_reaches_every_arn():
    text = str(controller_policy("aws-cn"))
    assert "arn:aws-cn:elasticloadbalancing" in text and "arn:aws:" not in text


def test_the_chart_gets_region_and_vpc_and_does_not_claim_other_services():
    values = chart_values(cluster_name="c", region="us-east-1", vpc_id="vpc-1", node_selector={"a": "b"})
    assert (values["region"], values["vpcId"], values["clusterName"]) == ("us-east-1", "vpc-1", "c")
    assert values["enableServiceMutatorWebhook"] is False
    assert values["replicaCount"] >= 2

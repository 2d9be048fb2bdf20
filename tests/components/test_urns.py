"""Existing stacks replace nothing: every URN a stack had before the components were reshaped
is still claimed, by its own URN or an alias, by exactly one resource of the same type.

tests/data/urns-at-6ef2952.json holds the engine URNs of the test variants as the program
registered them at commit 6ef2952 (before children were named from their components and the
node role and system nodes moved into EksCluster).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.config.settings import PROJECT
from tests.support.stack_harness import VARIANTS, plan
from tests.support.urns import EngineUrns

BEFORE = json.loads((Path(__file__).parents[1] / "data" / "urns-at-6ef2952.json").read_text())
# Resources retired on purpose since then, each for a reason a reviewer can weigh: these are
# replaced, not kept (the test checks that they really are gone, so the list stays honest).
_ATTACHMENT = "gpt-oss:aws:NodeRole$aws:iam/rolePolicyAttachment:RolePolicyAttachment::node-role-"
RETIRED = {
    f"urn:pulumi:prod::gpt-oss-trtllm::{_ATTACHMENT}AmazonEC2ContainerRegistryReadOnly": "AWS's pull-only policy for nodes replaces the read-only one",
    f"urn:pulumi:prod::gpt-oss-trtllm::{_ATTACHMENT}AmazonEKS_CNI_Policy": "the VPC CNI's policy moved to its own Pod Identity role",
}


def _type_of(urn: str) -> str:
    return urn.split("::")[2].rsplit("$", 1)[-1]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_earlier_urn_is_kept_or_aliased_by_one_resource_of_its_type(variant: str) -> None:
    result = plan(variant)
    urns = EngineUrns(result.resources, project=PROJECT, stack="prod")
    claims: dict[str, list[str]] = {}
    for resource in result.resources:
        for urn in {urns.urn(resource), *urns.aliases(resource)}:
            claims.setdefault(urn, []).append(resource.type)
    for old in BEFORE[variant]:
        if old in RETIRED:
            assert old not in claims, f"{old} is listed as retired but still claimed"
        else:
            assert claims.get(old) == [_type_of(old)], f"{old} is claimed by {claims.get(old)}"


def test_a_renamed_child_without_its_alias_would_be_caught() -> None:
    # The check above must be able to fail: without its alias, the server's Deployment (once
    # "server" under the InferenceServer) no longer answers to its old URN.
    result = plan()
    deployment = result.one("kubernetes:apps/v1:Deployment", "gpt-oss-server")
    old = "urn:pulumi:prod::gpt-oss-trtllm::gpt-oss:serving:InferenceServer$kubernetes:apps/v1:Deployment::server"
    assert old in BEFORE["prod"]
    assert old in EngineUrns(result.resources, project=PROJECT, stack="prod").aliases(deployment)
    kept = deployment.aliases
    deployment.aliases = []
    try:
        assert old not in EngineUrns(result.resources, project=PROJECT, stack="prod").aliases(deployment)
    finally:
        deployment.aliases = kept

"""Every Kubernetes object the stack registers, validated against the cluster version's schema.

kubernetes-validate (PyPI) ships the OpenAPI-derived JSON schemas per Kubernetes release; strict
mode rejects unknown fields, which is what the API server's strict field validation does.
"""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from offline.program import assemble_config
from offline.render import is_kubernetes_object
from tests.support.stack_harness import plan

VARIANTS = ["prod", "bottlerocket", "existing-cluster", "capacity-block"]


def cluster_version() -> str:
    _, values, _ = assemble_config("prod", None, None)
    return values["gpt-oss-trtllm:kubernetesVersion"]


def objects(variant: str) -> list[dict]:
    """Registered objects with their raw inputs (the schema check needs real values, secrets
    included) and the name the provider would have filled in."""
    found = []
    for resource in plan(variant).resources:
        # Custom resources are checked against their projects' schemas (KEDA's in
        # tests/serving/workload/test_autoscaling_manifests.py, the Prometheus Operator's in
        # tests/serving/observability/test_operator_objects.py); kubernetes-validate has core types only.
        if is_kubernetes_object(resource) and not resource.type.startswith(
            ("kubernetes:keda.sh/", "kubernetes:monitoring.coreos.com/")
        ):
            obj = copy.deepcopy(resource.inputs)
            obj.setdefault("metadata", {}).setdefault("name", resource.state["metadata"]["name"])
            found.append(obj)
    return found


def test_the_schemas_cover_the_cluster_version():
    version = cluster_version()
    assert version in {
        kubernetes_validate.utils.major_minor(v) for v in kubernetes_validate.utils.all_versions()
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_kubernetes_object_is_valid_for_the_cluster_version(variant):
    version = cluster_version()
    checked = objects(variant)
    assert len(checked) >= 7
    for obj in checked:
        validated = kubernetes_validate.validate(obj, version, strict=True)
        assert validated == version, (obj["kind"], validated)


def test_strict_validation_rejects_an_unknown_field():
    (daemon_set,) = [
        o
        for o in objects("prod")
        if o["kind"] == "DaemonSet" and o["metadata"]["name"] == "nvidia-device-plugin"
    ]
    broken = copy.deepcopy(daemon_set)
    broken["spec"]["template"]["spec"]["containers"][0]["gpus"] = 8
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, cluster_version(), strict=True)


def test_validation_rejects_a_wrongly_typed_value():
    (deployment,) = [o for o in objects("prod") if o["kind"] == "Deployment"]
    broken = copy.deepcopy(deployment)
    broken["spec"]["replicas"] = "four"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, cluster_version(), strict=True)

"""The replica autoscaler's objects: a KEDA ScaledObject and its TriggerAuthentication.

Schema: npm @kubernetes-models/keda 2.0.0 (package.json), whose validators were generated from
KEDA's Go API types (`github.com/kedacore/keda/v2/apis/keda/v1alpha1`) at 2.19: it has 2.19's
fields (TriggerAuthentication `filePath`, status `triggersActivity`) and none of 2.20's (the
OAuth and `externalID` fields). Its `validate()` is a JSON-schema check (ajv, compiled) that
refuses wrong types and enum values but, like the Go types it was made from, lets an unknown
field through; the script below closes that gap by recording which properties the validators
read (a Proxy) and refusing every property no validator knows. KEDA 2.20 added only fields this
stack does not use, plus CRD markers (minimums, MinItems, MinLength, an Enum, a min <= max
rule), which `crd_220_markers` checks here in Python.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from serving.config.project import PROJECT_DIR
from serving.observability import catalogue
from serving.observability.queries import Scope, metric_names, stack_queries
from serving.workload import autoscaling as a
from tests.support.custom_resources import validate_custom_resources

KEDA_MODULE = Path(
    os.environ.get("KEDA_MODELS_NODE_MODULE", PROJECT_DIR / "node_modules" / "@kubernetes-models" / "keda")
)

SCALING = a.ReplicaScaling(
    min_replicas=1,
    max_replicas=8,
    target_in_flight_per_replica=48.0,
    polling_interval_s=30,
    cooldown_s=300,
    scale_up_stabilization_s=0,
    scale_up_pods=4,
    scale_up_percent=100,
    scale_up_period_s=15,
    scale_down_stabilization_s=1800,
    scale_down_pods=1,
    scale_down_percent=None,
    scale_down_period_s=300,
    target_finished_per_s_per_replica=1.09,
    rate_window_s=120,
)
SERVER = a.ScaledServer(
    namespace="gpt-oss",
    deployment="trtllm-serve",
    prometheus_endpoint="https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-123/",
    region="us-east-1",
    labels={"app.kubernetes.io/name": "trtllm-serve"},
)

KEDA_SCHEMAS = {
    "ScaledObject": "ComGithubKedacoreKedaV2ApisKedaV1alpha1ScaledObject.js",
    "TriggerAuthentication": "ComGithubKedacoreKedaV2ApisKedaV1alpha1TriggerAuthentication.js",
}


def keda_validate(objects: list[dict[str, Any]], scratch: Path) -> list[dict[str, Any]]:
    """Each object checked against @kubernetes-models/keda: its schema errors and the fields no
    validator knows (JSON pointers)."""
    return validate_custom_resources("keda", KEDA_SCHEMAS, objects, scratch, module_dir=KEDA_MODULE)


def crd_220_markers(scaled_object: dict[str, Any]) -> list[str]:
    """The validation markers KEDA 2.20 added to ScaledObjectSpec and ScaleTriggers
    (apis/keda/v1alpha1 at v2.20.2) that the 2.19-generated schema does not carry."""
    spec = scaled_object["spec"]
    problems = []
    if spec.get("pollingInterval", 1) < 1:
        problems.append("pollingInterval: Minimum=1")
    for name in ("initialCooldownPeriod", "cooldownPeriod", "idleReplicaCount", "minReplicaCount"):
        if spec.get(name, 0) < 0:
            problems.append(f"{name}: Minimum=0")
    if spec.get("maxReplicaCount", 1) < 1:
        problems.append("maxReplicaCount: Minimum=1")
    if spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
        problems.append("minReplicaCount must be less than or equal to maxReplicaCount")
    if len(spec.get("triggers", [])) < 1:
        problems.append("triggers: MinItems=1")
    for trigger in spec.get("triggers", []):
        if not trigger.get("type"):
            problems.append("triggers[].type: MinLength=1")
        kind = trigger.get("authenticationRef", {}).get("kind")
        if kind not in (None, "TriggerAuthentication", "ClusterTriggerAuthentication"):
            problems.append("authenticationRef.kind: Enum")
    if spec["scaleTargetRef"].get("name", "") == "":
        problems.append("scaleTargetRef.name: MinLength=1")
    fallback = spec.get("fallback")
    if fallback and (fallback["failureThreshold"] < 0 or fallback["replicas"] < 0):
        problems.append("fallback: Minimum=0")
    return problems


def objects() -> list[dict[str, Any]]:
    return [a.trigger_authentication(SERVER), a.scaled_object(SERVER, SCALING)]


# --- what the objects say ------------------------------------------------------------------------


def test_the_scaled_object_targets_the_server_deployment_with_the_policy_bounds():
    spec = a.scaled_object(SERVER, SCALING)["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "trtllm-serve"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 8)
    assert (spec["pollingInterval"], spec["cooldownPeriod"]) == (30, 300)


def test_the_trigger_is_in_flight_requests_per_replica_signed_for_amp():
    trigger, _ = a.scaled_object(SERVER, SCALING)["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    meta = trigger["metadata"]
    # No trailing slash: KEDA appends /api/v1/query.
    assert meta["serverAddress"] == "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-123"
    assert meta["threshold"] == "48" and meta["awsRegion"] == "us-east-1"
    # No authModes: KEDA 2.20 signs with SigV4 through the pod identity, and refuses authModes
    # together with one.
    assert "authModes" not in meta
    assert all(isinstance(value, str) for value in meta.values())
    assert trigger["authenticationRef"] == {
        "name": a.TRIGGER_AUTHENTICATION_NAME,
        "kind": "TriggerAuthentication",
    }


def test_the_query_sums_running_and_queued_over_the_deployments_pods():
    query = a.in_flight_query("gpt-oss", "trtllm-serve")
    assert metric_names(query) == {"trtllm_iteration_running_requests", "trtllm_iteration_queued_requests"}
    assert {series.name for series in catalogue.CATALOGUE} >= metric_names(query)
    # The named per-pod queries of queries.py, summed: only the server's pods export these
    # series in the stack's namespace.
    queries = stack_queries(Scope(namespace="gpt-oss", deployment="trtllm-serve"))
    assert queries.running_requests_by_pod.expr in query and queries.queued_requests_by_pod.expr in query
    assert query.endswith(" or vector(0)")


def test_the_trigger_authentication_uses_the_operators_pod_identity():
    auth = a.trigger_authentication(SERVER)
    assert auth["spec"] == {"podIdentity": {"provider": "aws", "identityOwner": "keda"}}
    assert auth["metadata"]["namespace"] == SERVER.namespace


def test_scale_down_waits_its_window_and_scale_up_takes_the_larger_policy():
    behavior = a.scaled_object(SERVER, SCALING)["spec"]["advanced"]["horizontalPodAutoscalerConfig"][
        "behavior"
    ]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 1800
    assert behavior["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 300}]
    assert behavior["scaleUp"]["selectPolicy"] == "Max"
    assert {(p["type"], p["value"]) for p in behavior["scaleUp"]["policies"]} == {
        ("Pods", 4),
        ("Percent", 100),
    }


def test_a_second_trigger_follows_finished_requests_per_replica_when_the_policy_has_a_target():
    in_flight, finished = a.scaled_object(SERVER, SCALING)["spec"]["triggers"]
    assert finished["name"] == a.FINISHED_TRIGGER_NAME and finished["metricType"] == "AverageValue"
    assert finished["metadata"]["threshold"] == "1.09"
    assert metric_names(finished["metadata"]["query"]) == {"trtllm_request_success_total"}
    assert "[120s]" in finished["metadata"]["query"]
    assert finished["authenticationRef"] == in_flight["authenticationRef"]
    alone = a.ReplicaScaling(**{**SCALING.__dict__, "target_finished_per_s_per_replica": None})
    assert [t["name"] for t in a.scaled_object(SERVER, alone)["spec"]["triggers"]] == [a.TRIGGER_NAME]


def test_both_scale_down_policies_when_both_are_given():
    both = a.ReplicaScaling(**{**SCALING.__dict__, "scale_down_percent": 50})
    policies = a.scaled_object(SERVER, both)["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"][
        "scaleDown"
    ]["policies"]
    assert [(p["type"], p["value"]) for p in policies] == [("Pods", 1), ("Percent", 50)]


def test_a_failing_query_keeps_the_current_replicas():
    fallback = a.scaled_object(SERVER, SCALING)["spec"]["fallback"]
    assert fallback["behavior"] == "currentReplicas" and fallback["failureThreshold"] >= 1


def test_the_hpa_owns_the_replicas_and_nodes_are_not_emptied_under_a_replica():
    assert a.replicas_owner(True) == "hpa" and a.replicas_owner(False) == "pulumi"
    assert a.IGNORE_ON_AUTOSCALED_DEPLOYMENT == ["spec.replicas"]
    assert a.server_pod_annotations() == {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
    assert [a.initial_replicas(n, SCALING) for n in (0, 4, 20)] == [1, 4, 8]


@pytest.mark.parametrize(
    "change",
    [
        {"min_replicas": 0},
        {"min_replicas": 9},
        {"target_in_flight_per_replica": 0},
        {"polling_interval_s": 0},
        {"scale_down_stabilization_s": 3601},
        {"scale_up_period_s": 0},
        {"scale_down_pods": None, "scale_down_percent": None},
        {"target_finished_per_s_per_replica": 0.0},
    ],
)
def test_scaling_the_apis_would_refuse_is_refused_here(change):
    fields = {**SCALING.__dict__, **change}
    with pytest.raises(ValueError):
        a.ReplicaScaling(**fields)


def test_the_scaled_object_keeps_the_markers_keda_2_20_added():
    assert crd_220_markers(a.scaled_object(SERVER, SCALING)) == []
    broken = a.scaled_object(SERVER, SCALING)
    broken["spec"]["pollingInterval"] = 0
    assert crd_220_markers(broken) == ["pollingInterval: Minimum=1"]


# --- against the published schema (Node.js) ------------------------------------------------------

# These start Node.js: left out of the fast loop.


@pytest.mark.slow
def test_the_objects_validate_against_the_keda_schema(tmp_path: Path):
    results = keda_validate(objects(), tmp_path)
    assert [(r["kind"], r["errors"], r["unknown"]) for r in results] == [
        ("TriggerAuthentication", [], []),
        ("ScaledObject", [], []),
    ]


@pytest.mark.slow
def test_a_misspelt_field_is_refused(tmp_path: Path):
    broken = a.scaled_object(SERVER, SCALING)
    broken["spec"]["pollingIntervall"] = broken["spec"].pop("pollingInterval")
    broken["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behaviour"] = {}
    auth = a.trigger_authentication(SERVER)
    auth["spec"]["podIdentity"]["roleARN"] = "arn:aws:iam::123456789012:role/x"
    [auth_result, result] = keda_validate([auth, broken], tmp_path)
    assert result["errors"] == []  # the generated schema alone lets these through
    assert sorted(result["unknown"]) == [
        "/spec/advanced/horizontalPodAutoscalerConfig/behaviour",
        "/spec/pollingIntervall",
    ]
    assert auth_result["unknown"] == ["/spec/podIdentity/roleARN"]


@pytest.mark.slow
def test_a_wrongly_typed_or_unknown_value_is_refused(tmp_path: Path):
    broken = a.scaled_object(SERVER, SCALING)
    broken["spec"]["pollingInterval"] = "30"
    broken["spec"]["triggers"][0]["metadata"]["threshold"] = 48
    auth = a.trigger_authentication(SERVER)
    auth["spec"]["podIdentity"]["provider"] = "aws-kiam"  # removed in KEDA 2.15
    [auth_result, result] = keda_validate([auth, broken], tmp_path)
    assert any(e.startswith("/spec/pollingInterval type") for e in result["errors"]), result["errors"]
    assert any(e.startswith("/spec/triggers/0/metadata/threshold type") for e in result["errors"])
    assert any(e.startswith("/spec/podIdentity/provider enum") for e in auth_result["errors"])


@pytest.mark.slow
def test_the_schema_package_is_the_pinned_one():
    package = json.loads((KEDA_MODULE / "package.json").read_text())
    assert package["version"] == "2.0.0"
    pinned = json.loads((PROJECT_DIR / "package.json").read_text())["devDependencies"]
    assert pinned["@kubernetes-models/keda"] == "2.0.0"

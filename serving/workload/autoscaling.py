"""The replica autoscaler's Kubernetes objects, as plain manifests (dicts): a KEDA ScaledObject
on the server's Deployment and the TriggerAuthentication its Prometheus trigger signs with.

Plain Python, like `manifests.py`, so the objects can be read, tested and schema-checked without
Pulumi; `components/autoscaling.py` registers exactly these. The numbers come in a
`ReplicaScaling`, which the component fills from the simulator's `AutoscalingPolicy` (this
package may not import the simulator: an import contract keeps the stack's domain apart from it).

Facts this relies on (KEDA 2.20.2, kedacore/keda at tag v2.20.2):
- `apis/keda/v1alpha1`: ScaledObjectSpec has scaleTargetRef, pollingInterval, cooldownPeriod,
  minReplicaCount, maxReplicaCount, advanced.horizontalPodAutoscalerConfig.{name, behavior},
  fallback and triggers; a trigger has type, name, metadata (string to string), metricType and
  authenticationRef.{name, kind}. AuthPodIdentity's provider is one of azure-workload, gcp,
  aws, aws-eks, none (`aws` is the one to use since 2.15; `aws-eks` is deprecated).
- `pkg/scalers/prometheus_scaler.go`: the trigger's metadata keys are serverAddress, query,
  threshold, activationThreshold, awsRegion (and others not used here). The scaler signs its
  request with SigV4 for the `aps` service when AWS authorisation resolves, which it does for a
  TriggerAuthentication with `podIdentity.provider: aws`; there is **no** `authModes: sigV4` in
  2.20.2 (authModes takes only apiKey, basic, tls, bearer, custom, oauth, and any authMode
  together with a pod identity is refused). It sends one `GET <serverAddress>/api/v1/query`.
- `pkg/scalers/aws/aws_common.go`: with provider `aws` and no roleArn, the KEDA operator's own
  credentials sign (here: EKS Pod Identity on its service account).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serving.observability.queries import Scope, stack_queries

KEDA_API_VERSION = "keda.sh/v1alpha1"
TRIGGER_NAME = "in-flight-requests"
FINISHED_TRIGGER_NAME = "finished-requests"
TRIGGER_AUTHENTICATION_NAME = "amazon-managed-prometheus"
# Pulumi must leave the Deployment's replica count to the HPA that KEDA creates: on the Deployment,
# `pulumi.ResourceOptions(ignore_changes=IGNORE_ON_AUTOSCALED_DEPLOYMENT)`. See replicas_owner().
IGNORE_ON_AUTOSCALED_DEPLOYMENT = ["spec.replicas"]
# cluster-autoscaler never evicts a pod with this annotation to empty a node for removal
# (cluster-autoscaler FAQ, "What types of pods can prevent CA from removing a node?"): a replica
# is removed by the HPA (graceful termination), never moved by a node scale-down.
SAFE_TO_EVICT_ANNOTATION = "cluster-autoscaler.kubernetes.io/safe-to-evict"
# How many failed metric reads in a row before KEDA's fallback keeps the replicas as they are.
FALLBACK_FAILURE_THRESHOLD = 3


@dataclass(frozen=True)
class ReplicaScaling:
    """What the ScaledObject says, field for field (seconds, replicas, percent)."""

    min_replicas: int
    max_replicas: int
    # Trigger 1, AverageValue: requests in flight (running + queued) per replica.
    target_in_flight_per_replica: float
    polling_interval_s: int
    cooldown_s: int
    scale_up_stabilization_s: int
    scale_up_pods: int
    scale_up_percent: int
    scale_up_period_s: int
    scale_down_stabilization_s: int
    # behavior.scaleDown.policies: pods and/or percent per period (at least one).
    scale_down_pods: int | None
    scale_down_percent: int | None
    scale_down_period_s: int
    # Trigger 2, AverageValue: requests finished per second per replica over `rate_window_s`;
    # None: trigger 1 alone. With two triggers the HPA takes the larger recommendation.
    target_finished_per_s_per_replica: float | None = None
    rate_window_s: int = 120

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"min_replicas {self.min_replicas}, max_replicas {self.max_replicas}: need 1 <= min <= max "
                "(scale to zero would leave no pod to report the queue)"
            )
        if self.target_in_flight_per_replica <= 0:
            raise ValueError(f"target_in_flight_per_replica {self.target_in_flight_per_replica:g}: above 0")
        finished = self.target_finished_per_s_per_replica
        if finished is not None and finished <= 0:
            raise ValueError(f"target_finished_per_s_per_replica {finished:g}: above 0 (or None)")
        if self.rate_window_s < 1:
            raise ValueError(f"rate_window_s {self.rate_window_s}: at least 1")
        if self.scale_down_pods is None and self.scale_down_percent is None:
            raise ValueError("scale_down_pods and scale_down_percent: give at least one scale-down policy")
        if (self.scale_down_pods is not None and self.scale_down_pods < 1) or (
            self.scale_down_percent is not None and not 1 <= self.scale_down_percent <= 100
        ):
            raise ValueError("scale_down_pods at least 1, scale_down_percent from 1 to 100")
        # KEDA 2.20's CRD: pollingInterval >= 1; the HPA API: windows 0..3600, periods 1..1800.
        if self.polling_interval_s < 1 or self.cooldown_s < 0:
            raise ValueError("polling_interval_s must be at least 1 and cooldown_s at least 0")
        for name in ("scale_up_stabilization_s", "scale_down_stabilization_s"):
            if not 0 <= getattr(self, name) <= 3600:
                raise ValueError(f"{name} {getattr(self, name)}: from 0 to 3600 (the HPA API's limits)")
        for name in ("scale_up_period_s", "scale_down_period_s"):
            if not 1 <= getattr(self, name) <= 1800:
                raise ValueError(f"{name} {getattr(self, name)}: from 1 to 1800 (the HPA API's limits)")


@dataclass(frozen=True)
class ScaledServer:
    """Where the server runs and where its metrics are."""

    namespace: str
    deployment: str
    # The Prometheus-compatible endpoint of the Amazon Managed Prometheus workspace, as AMP
    # returns it (https://aps-workspaces.<region>.amazonaws.com/workspaces/<id>/).
    prometheus_endpoint: str
    region: str
    labels: dict[str, str]


def in_flight_query(namespace: str, deployment: str) -> str:
    """Requests in flight over the Deployment's pods: the named per-pod queries of
    serving/observability/queries.py (running and queued), summed. AverageValue divides it by
    the replicas; `or vector(0)` keeps it defined while no pod reports (a fresh Deployment)."""
    queries = stack_queries(Scope(namespace=namespace, deployment=deployment))
    return (
        f"(sum({queries.running_requests_by_pod.expr}) + sum({queries.queued_requests_by_pod.expr}))"
        " or vector(0)"
    )


def finished_rate_query(namespace: str, deployment: str, window_s: int) -> str:
    """Requests the server finished per second over the rate window: the named query of
    serving/observability/queries.py (by finished_reason), summed."""
    scope = Scope(namespace=namespace, deployment=deployment, rate_window=f"{window_s}s")
    return f"sum({stack_queries(scope).finished_rate_by_reason.expr}) or vector(0)"


def prometheus_server_address(endpoint: str) -> str:
    """KEDA appends `/api/v1/query` to serverAddress: AMP's endpoint without its trailing slash."""
    return endpoint.rstrip("/")


def _number(value: float) -> str:
    return f"{value:g}"


def trigger_authentication(server: ScaledServer) -> dict[str, Any]:
    """The KEDA operator signs the query with its own identity (EKS Pod Identity)."""
    return {
        "apiVersion": KEDA_API_VERSION,
        "kind": "TriggerAuthentication",
        "metadata": {
            "name": TRIGGER_AUTHENTICATION_NAME,
            "namespace": server.namespace,
            "labels": dict(server.labels),
        },
        "spec": {"podIdentity": {"provider": "aws", "identityOwner": "keda"}},
    }


def _behavior(scaling: ReplicaScaling) -> dict[str, Any]:
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": scaling.scale_up_stabilization_s,
            # The larger of the two, as the HPA's own default policies.
            "selectPolicy": "Max",
            "policies": [
                {"type": "Pods", "value": scaling.scale_up_pods, "periodSeconds": scaling.scale_up_period_s},
                {
                    "type": "Percent",
                    "value": scaling.scale_up_percent,
                    "periodSeconds": scaling.scale_up_period_s,
                },
            ],
        },
        "scaleDown": {
            # The HPA removes replicas only when every recommendation of this window asked for
            # fewer: a replica costs a cold start to get back.
            "stabilizationWindowSeconds": scaling.scale_down_stabilization_s,
            "selectPolicy": "Max",
            "policies": [
                {"type": kind, "value": value, "periodSeconds": scaling.scale_down_period_s}
                for kind, value in (
                    ("Pods", scaling.scale_down_pods),
                    ("Percent", scaling.scale_down_percent),
                )
                if value is not None
            ],
        },
    }


def _trigger(server: ScaledServer, name: str, query: str, target: float) -> dict[str, Any]:
    return {
        "type": "prometheus",
        "name": name,
        "metricType": "AverageValue",
        "metadata": {
            "serverAddress": prometheus_server_address(server.prometheus_endpoint),
            "query": query,
            "threshold": _number(target),
            # Makes the scaler sign with SigV4 for `aps` in this region.
            "awsRegion": server.region,
        },
        "authenticationRef": {"name": TRIGGER_AUTHENTICATION_NAME, "kind": "TriggerAuthentication"},
    }


def triggers(server: ScaledServer, scaling: ReplicaScaling) -> list[dict[str, Any]]:
    """In flight per replica; and, when the policy has a target for it, finished per second
    per replica (the HPA follows whichever asks for more replicas)."""
    found = [
        _trigger(
            server,
            TRIGGER_NAME,
            in_flight_query(server.namespace, server.deployment),
            scaling.target_in_flight_per_replica,
        )
    ]
    if scaling.target_finished_per_s_per_replica is not None:
        found.append(
            _trigger(
                server,
                FINISHED_TRIGGER_NAME,
                finished_rate_query(server.namespace, server.deployment, scaling.rate_window_s),
                scaling.target_finished_per_s_per_replica,
            )
        )
    return found


def scaled_object(server: ScaledServer, scaling: ReplicaScaling) -> dict[str, Any]:
    """KEDA creates (and owns) an HPA on the Deployment from this; the HPA owns spec.replicas."""
    return {
        "apiVersion": KEDA_API_VERSION,
        "kind": "ScaledObject",
        "metadata": {"name": server.deployment, "namespace": server.namespace, "labels": dict(server.labels)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": server.deployment},
            # With minReplicaCount >= 1 these two only decide activation (0 <-> 1), which this
            # stack never does; they are the simulator's values all the same.
            "pollingInterval": scaling.polling_interval_s,
            "cooldownPeriod": scaling.cooldown_s,
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            # If the query fails (AMP, IAM, the network) three times in a row, keep the replicas
            # there are: never scale down blind.
            "fallback": {
                "failureThreshold": FALLBACK_FAILURE_THRESHOLD,
                "replicas": scaling.min_replicas,
                "behavior": "currentReplicas",
            },
            "advanced": {
                # Deleting the ScaledObject leaves the replicas as they are (no jump to the
                # Deployment's original count).
                "restoreToOriginalReplicaCount": False,
                "horizontalPodAutoscalerConfig": {"name": server.deployment, "behavior": _behavior(scaling)},
            },
            "triggers": triggers(server, scaling),
        },
    }


def initial_replicas(requested: int, scaling: ReplicaScaling) -> int:
    """The Deployment's replicas at creation, inside the autoscaler's bounds (it owns the count
    afterwards)."""
    return min(max(requested, scaling.min_replicas), scaling.max_replicas)


def replicas_owner(autoscaled: bool) -> str:
    """Who owns the Deployment's spec.replicas: "hpa" (the wiring then sets
    `ignore_changes=IGNORE_ON_AUTOSCALED_DEPLOYMENT` on the Deployment) or "pulumi"."""
    return "hpa" if autoscaled else "pulumi"


def server_pod_annotations() -> dict[str, str]:
    """Pod-template annotations for an autoscaled server: cluster-autoscaler may remove a GPU
    node only once no replica runs there (the HPA removes replicas, with their grace period)."""
    return {SAFE_TO_EVICT_ANNOTATION: "false"}


def hpa_equivalent(server: ScaledServer, scaling: ReplicaScaling) -> dict[str, Any]:
    """The HorizontalPodAutoscaler KEDA makes of the ScaledObject (autoscaling/v2; KEDA names
    its external metrics s<index>-prometheus and sets each trigger's threshold as the
    AverageValue target). For reading and for checking the behavior against the cluster's API
    schema; KEDA, not the stack, creates it."""
    scaled = scaled_object(server, scaling)["spec"]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": server.deployment, "namespace": server.namespace, "labels": dict(server.labels)},
        "spec": {
            "scaleTargetRef": scaled["scaleTargetRef"],
            "minReplicas": scaled["minReplicaCount"],
            "maxReplicas": scaled["maxReplicaCount"],
            "behavior": scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"],
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": {"name": f"s{index}-prometheus"},
                        "target": {"type": "AverageValue", "averageValue": trigger["metadata"]["threshold"]},
                    },
                }
                for index, trigger in enumerate(scaled["triggers"])
            ],
        },
    }

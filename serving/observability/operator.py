"""Scrape and rule objects for a Prometheus Operator that an existing cluster already runs.

With `metricsStore: prometheus-operator` the stack creates no Prometheus: it hands the cluster's
own one a PodMonitor for the server pods' metrics exporter and a PrometheusRule holding the
stack's alerts (`monitoring.coreos.com/v1`, the operator's stable API). The series then arrive
with the labels the queries, the dashboard and the alerts expect: `job` as the scrape
configuration names it, `namespace`, `pod` and `node`.
"""

from __future__ import annotations

from typing import Any

from serving.observability import catalogue
from serving.observability.alerts import AlertSettings, render_rules
from serving.observability.queries import Scope
from serving.observability.scrape import PORT_NAMES

API_VERSION = "monitoring.coreos.com/v1"


def _metadata(scope: Scope, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": scope.namespace, "labels": dict(labels)}


def pod_monitor(
    scope: Scope, *, name: str, interval_seconds: int = 30, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """The server pods' exporter (the gateway's series come from it too), every interval."""
    return {
        "apiVersion": API_VERSION,
        "kind": "PodMonitor",
        "metadata": _metadata(scope, name, labels or {}),
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": scope.deployment}},
            "namespaceSelector": {"matchNames": [scope.namespace]},
            "podMetricsEndpoints": [
                {
                    "port": PORT_NAMES[catalogue.SERVER.job],
                    "path": catalogue.SERVER.path,
                    "interval": f"{interval_seconds}s",
                    # The operator names the job <namespace>/<monitor>; the alerts and the
                    # dashboard select the job the scrape configuration uses. The operator adds
                    # namespace and pod itself.
                    "relabelings": [
                        {"action": "replace", "targetLabel": "job", "replacement": catalogue.SERVER.job},
                        {
                            "action": "replace",
                            "sourceLabels": ["__meta_kubernetes_pod_node_name"],
                            "targetLabel": "node",
                        },
                    ],
                }
            ],
        },
    }


def prometheus_rule(
    scope: Scope,
    settings: AlertSettings,
    *,
    name: str,
    extra_labels: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The stack's alerts, as the rules file has them (`render_rules`)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "PrometheusRule",
        "metadata": _metadata(scope, name, labels or {}),
        "spec": render_rules(scope, settings, group_name=name, extra_labels=extra_labels),
    }

"""Objects for the Prometheus Operator an existing cluster runs (`metricsStore:
prometheus-operator`): a PodMonitor for the server pods' exporter and a PrometheusRule with the
stack's alerts. The manifests are plain Python in `serving/observability/operator.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.cluster import resources_in
from components.metrics_store import alert_settings, rules_group_name, stack_scope
from serving.config.settings import MetricsSettings, ServingSettings
from serving.observability import operator


@dataclass(frozen=True)
class PrometheusObjectsArgs:
    stack: str
    serving: ServingSettings
    metrics: MetricsSettings
    scrape_interval_seconds: int = 30


class PrometheusObjects(pulumi.ComponentResource):
    """The PodMonitor and the PrometheusRule. The Kubernetes provider comes in `opts.providers`;
    `opts.depends_on` must name the workload (its namespace)."""

    def __init__(self, name: str, args: PrometheusObjectsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpt-oss:serving:PrometheusObjects", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=resources_in(opts))
        scope = stack_scope(args.serving)
        labels = dict(args.metrics.object_labels)
        group = rules_group_name(args.stack)
        for manifest, suffix in (
            (
                operator.pod_monitor(
                    scope, name=scope.deployment, interval_seconds=args.scrape_interval_seconds, labels=labels
                ),
                "pod-monitor",
            ),
            (
                operator.prometheus_rule(
                    scope,
                    alert_settings(args.serving, args.metrics),
                    name=group,
                    extra_labels={"stack": args.stack},
                    labels=labels,
                ),
                "rules",
            ),
        ):
            k8s.apiextensions.CustomResource(
                f"{name}-{suffix}",
                api_version=manifest["apiVersion"],
                kind=manifest["kind"],
                metadata=manifest["metadata"],
                spec=manifest["spec"],
                opts=child,
            )
        self.register_outputs({})

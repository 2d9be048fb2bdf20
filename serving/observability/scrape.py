"""The scrape configuration of the stack's three jobs, with Kubernetes service discovery.

One Prometheus `scrape_configs` document that both collectors the design allows can take: Amazon
Managed Prometheus's managed scraper (its scraper configuration is a Prometheus configuration)
and an in-cluster Prometheus. It finds targets by pod labels and container port names, so the
manifests must follow the contract in `PORT_NAMES` and `APP_LABELS`:

- the server pod's exporter container port is named `metrics` (9109); it serves the gateway's
  series too, so the gateway has no metrics port of its own; the pods carry
  `app.kubernetes.io/name: <Scope.deployment>`;
- dcgm-exporter and kube-state-metrics pods carry `app.kubernetes.io/name` = their own name, as
  their upstream manifests and charts label them, with a port named `metrics`
  (kube-state-metrics: `http-metrics` or `http`).

The relabelling sets `namespace` and `pod` on the pod-local jobs (the queries' label contract) and
keeps the exporters' own labels for dcgm-exporter and kube-state-metrics (`honor_labels`).
"""

from __future__ import annotations

from typing import Any

import yaml

from serving.observability import catalogue as c
from serving.observability.queries import Scope

APP_NAME_LABEL = "__meta_kubernetes_pod_label_app_kubernetes_io_name"
PORT_NAME_LABEL = "__meta_kubernetes_pod_container_port_name"
PORT_NAMES = {
    c.SERVER.job: "metrics",
    c.DCGM.job: "metrics",
    c.KUBE_STATE.job: "http-metrics|http",
}
APP_LABELS = {c.DCGM.job: "dcgm-exporter", c.KUBE_STATE.job: "kube-state-metrics"}
# Prometheus's `up` and every 5-minute rate need at least two samples a window.
MAX_INTERVAL_SECONDS = 150


def _job(job: str, app: str, namespaces: list[str] | None, honor_labels: bool) -> dict[str, Any]:
    discovery: dict[str, Any] = {"role": "pod"}
    if namespaces:
        discovery["namespaces"] = {"names": namespaces}
    relabel: list[dict[str, Any]] = [
        {
            "source_labels": [APP_NAME_LABEL, PORT_NAME_LABEL],
            "regex": f"{app};({PORT_NAMES[job]})",
            "action": "keep",
        },
        # Pods that are not running yet have no address worth scraping.
        {
            "source_labels": ["__meta_kubernetes_pod_phase"],
            "regex": "Pending|Succeeded|Failed",
            "action": "drop",
        },
    ]
    if not honor_labels:
        relabel += [
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ]
    relabel.append({"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"})
    return {
        "job_name": job,
        "honor_labels": honor_labels,
        "metrics_path": "/metrics",
        "kubernetes_sd_configs": [discovery],
        "relabel_configs": relabel,
    }


def render_scrape_config(scope: Scope, interval_seconds: int = 30) -> dict[str, Any]:
    if not 1 <= interval_seconds <= MAX_INTERVAL_SECONDS:
        raise ValueError(f"scrape interval {interval_seconds} s: between 1 and {MAX_INTERVAL_SECONDS}")
    interval = f"{interval_seconds}s"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            _job(c.SERVER.job, scope.deployment, [scope.namespace], honor_labels=False),
            _job(c.DCGM.job, APP_LABELS[c.DCGM.job], None, honor_labels=True),
            _job(c.KUBE_STATE.job, APP_LABELS[c.KUBE_STATE.job], None, honor_labels=True),
        ],
    }


def render_scrape_config_yaml(scope: Scope, interval_seconds: int = 30) -> str:
    return yaml.safe_dump(render_scrape_config(scope, interval_seconds), sort_keys=False)

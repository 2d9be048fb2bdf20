"""The PodMonitor and PrometheusRule for an existing cluster's Prometheus Operator, checked
against the operator's schema (npm @kubernetes-models/prometheus-operator, pinned in package.json)
and against what the queries and alerts expect."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from serving.observability import catalogue
from serving.observability.alerts import AlertSettings, render_rules_yaml
from serving.observability.operator import pod_monitor, prometheus_rule
from serving.observability.queries import Scope
from tests.support.custom_resources import validate_custom_resources

SCHEMAS = {
    "PodMonitor": "ComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoringV1PodMonitor.js",
    "PrometheusRule": "ComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoringV1PrometheusRule.js",
}
SCOPE = Scope(namespace="gpt-oss")
SETTINGS = AlertSettings(ttft_p90_slo_seconds=2.5, startup_timeout_minutes=60)


def objects() -> list[dict]:
    return [
        pod_monitor(SCOPE, name="trtllm-serve", labels={"release": "kube-prometheus-stack"}),
        prometheus_rule(SCOPE, SETTINGS, name="gpt-oss-prod", extra_labels={"stack": "prod"}),
    ]


def test_both_objects_pass_the_operators_schema_with_no_unknown_field(tmp_path: Path) -> None:
    results = validate_custom_resources("prometheus-operator", SCHEMAS, objects(), tmp_path)
    assert [(r["kind"], r["errors"], r["unknown"]) for r in results] == [
        ("PodMonitor", [], []),
        ("PrometheusRule", [], []),
    ]


def test_a_misspelt_or_mistyped_field_is_refused(tmp_path: Path) -> None:
    monitor, rule = copy.deepcopy(objects())
    monitor["spec"]["podMetricEndpoints"] = monitor["spec"].pop("podMetricsEndpoints")  # typo
    rule["spec"]["groups"][0]["rules"][0]["for"] = 300  # a duration is a string
    results = validate_custom_resources("prometheus-operator", SCHEMAS, [monitor, rule], tmp_path)
    assert "/spec/podMetricEndpoints" in results[0]["unknown"]
    assert results[1]["errors"]


def test_the_monitor_scrapes_the_exporter_port_as_the_job_the_alerts_select() -> None:
    monitor = pod_monitor(SCOPE, name="trtllm-serve", interval_seconds=30)
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "trtllm-serve"}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("metrics", "/metrics", "30s")
    job = next(r for r in endpoint["relabelings"] if r["targetLabel"] == "job")
    assert job["replacement"] == catalogue.SERVER.job
    # GptOssMetricsTargetDown reads up{job=...}: the job the monitor sets must be one it names.
    rules = yaml.safe_load(render_rules_yaml(SCOPE, SETTINGS))["groups"][0]["rules"]
    target_down = next(r for r in rules if r["alert"] == "GptOssMetricsTargetDown")
    assert catalogue.SERVER.job in target_down["expr"]


def test_the_rule_object_holds_exactly_the_rules_file() -> None:
    rule = prometheus_rule(SCOPE, SETTINGS, name="gpt-oss", extra_labels=None)
    assert rule["spec"] == yaml.safe_load(render_rules_yaml(SCOPE, SETTINGS, group_name="gpt-oss"))

"""The alert rules: their shape (fast), and Debian's promtool on synthetic series (slow).

`promtool test rules` runs every alert twice at least: on series where it must fire (with the
labels and the rendered annotations it must carry) and on series where it must stay silent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from serving.observability.alerts import (
    CRITICAL,
    WARNING,
    AlertSettings,
    render_rules,
    render_rules_yaml,
    stack_alerts,
)
from serving.observability.queries import Scope
from tests.support.prometheus_runner import promtool

SCOPE = Scope()
SETTINGS = AlertSettings()
STACK_LABELS = {"stack": "test"}
NS = 'namespace="gpt-oss"'
POD = "trtllm-serve-5d8f7c9b4-abcde"
GPU = 'Hostname="ip-10-42-1-17", gpu="3"'


def test_every_alert_has_a_severity_a_summary_and_a_three_part_runbook() -> None:
    rules = stack_alerts(SCOPE, SETTINGS)
    assert len({rule.name for rule in rules}) == len(rules) == 13
    for rule in rules:
        assert rule.severity in (CRITICAL, WARNING)
        assert rule.summary and not rule.summary.endswith(".")
        assert re.fullmatch(r"Means: .+\nCheck: .+\nDo: .+\n", rule.runbook), rule.name
        # The expression is built from its named queries, word for word.
        assert rule.queries and all(query.expr in rule.expr for query in rule.queries), rule.name


def test_thresholds_come_from_the_settings() -> None:
    rules = {
        rule.name: rule
        for rule in stack_alerts(SCOPE, AlertSettings(ttft_p90_slo_seconds=1.5, startup_timeout_minutes=90))
    }
    assert rules["GptOssTtftAboveSlo"].expr.endswith("> 1.5")
    assert "1.5 s objective" in rules["GptOssTtftAboveSlo"].summary
    assert rules["GptOssReplicaNotReadyPastStartup"].for_ == "150m"  # 60 download + 90 startup


def test_the_rules_file_is_a_prometheus_rule_group_with_the_stack_label() -> None:
    document = yaml.safe_load(
        render_rules_yaml(SCOPE, SETTINGS, group_name="gpt-oss-prod", extra_labels={"stack": "prod"})
    )
    assert document == render_rules(
        SCOPE, SETTINGS, group_name="gpt-oss-prod", extra_labels={"stack": "prod"}
    )
    (group,) = document["groups"]
    assert group["name"] == "gpt-oss-prod"
    for rule in group["rules"]:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}
        assert rule["labels"]["stack"] == "prod"
        assert set(rule["annotations"]) == {"summary", "runbook"}


def _rules_path(tmp_path: Path) -> Path:
    path = tmp_path / "alerts.yaml"
    path.write_text(render_rules_yaml(SCOPE, SETTINGS, group_name="gpt-oss-test", extra_labels=STACK_LABELS))
    return path


@pytest.mark.slow
def test_promtool_check_rules_accepts_the_file(tmp_path: Path) -> None:
    result = promtool("check", "rules", str(_rules_path(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 13 rules found" in result.stdout


@dataclass(frozen=True)
class Case:
    """Synthetic series, a time to evaluate at, and the alert instances expected then (none: silent)."""

    alert: str
    series: dict[str, str]  # series selector -> promtool's expanding values notation (one sample a minute)
    eval_minutes: int
    fires_with: tuple[dict[str, str], ...] = field(default=())


def _histogram(metric: str, typical_bucket: str, buckets: tuple[str, ...]) -> dict[str, str]:
    """A histogram where 60 observations a minute all fall at or below `typical_bucket`."""
    series = {}
    for bound in (*buckets, "+Inf"):
        below = bound == "+Inf" or float(bound) >= float(typical_bucket)
        series[f'{metric}_bucket{{{NS}, le="{bound}"}}'] = "0+60x40" if below else "0x40"
    return series


TTFT_BUCKETS = ("0.25", "0.5", "0.75", "1.0", "2.5", "5.0", "7.5")
REPLICAS = f'kube_deployment_status_replicas_available{{{NS}, deployment="trtllm-serve"}}'
RESTARTS = f'kube_pod_container_status_restarts_total{{{NS}, pod="{POD}", container="trtllm-serve"}}'
CHAT = "/v1/chat/completions"

CASES = [
    Case("GptOssNoReadyReplica", {REPLICAS: "0x20"}, 10, ({},)),
    Case("GptOssNoReadyReplica", {REPLICAS: "2x20"}, 10),
    # No series at all (the Deployment is gone, or kube-state-metrics is not scraped).
    Case(
        "GptOssNoReadyReplica", {"up": "1x20"}, 10, ({"namespace": "gpt-oss", "deployment": "trtllm-serve"},)
    ),
    Case(
        "GptOssReplicaRestarting",
        {RESTARTS: "0 0 0 1 1 1 1"},
        5,
        ({"pod": POD, "container": "trtllm-serve"},),
    ),
    # Restarted long ago: the counter stands still.
    Case("GptOssReplicaRestarting", {RESTARTS: "3x40"}, 30),
    Case(
        "GptOssHigh5xxRatio",
        {
            f'gateway_requests_total{{{NS}, route="{CHAT}", status="200", key_fingerprint="sha256:aaaaaaaaaaaa"}}': "0+100x30",
            f'gateway_requests_total{{{NS}, route="{CHAT}", status="502", key_fingerprint="sha256:aaaaaaaaaaaa"}}': "0+20x30",
        },
        15,
        ({},),
    ),
    # The load balancer's /health probes get 502 while the model loads: not an outage of traffic.
    Case(
        "GptOssHigh5xxRatio",
        {
            f'gateway_requests_total{{{NS}, route="{CHAT}", status="200", key_fingerprint="sha256:aaaaaaaaaaaa"}}': "0+100x30",
            f'gateway_requests_total{{{NS}, route="/health", status="502", key_fingerprint="none"}}': "0+500x30",
        },
        15,
    ),
    Case(
        "GptOssTtftAboveSlo", _histogram("trtllm_time_to_first_token_seconds", "5.0", TTFT_BUCKETS), 20, ({},)
    ),
    Case("GptOssTtftAboveSlo", _histogram("trtllm_time_to_first_token_seconds", "0.75", TTFT_BUCKETS), 20),
    Case(
        "GptOssQueueGrowing",
        {f'trtllm_iteration_queued_requests{{{NS}, pod="{POD}"}}': "0+1x30"},
        20,
        ({"pod": POD},),
    ),
    Case("GptOssQueueGrowing", {f'trtllm_iteration_queued_requests{{{NS}, pod="{POD}"}}': "5x30"}, 20),
    Case(
        "GptOssKvCacheNearlyFull",
        {
            f'trtllm_iteration_kv_cache_blocks_used{{{NS}, pod="{POD}"}}': "990x40",
            f'trtllm_iteration_kv_cache_blocks_max{{{NS}, pod="{POD}"}}': "1000x40",
        },
        20,
        ({"pod": POD},),
    ),
    Case(
        "GptOssKvCacheNearlyFull",
        {
            f'trtllm_iteration_kv_cache_blocks_used{{{NS}, pod="{POD}"}}': "500x40",
            f'trtllm_iteration_kv_cache_blocks_max{{{NS}, pod="{POD}"}}': "1000x40",
        },
        20,
    ),
    Case(
        "GptOssGpuXidError",
        {f"DCGM_FI_DEV_XID_ERRORS{{{GPU}}}": "0 0 79 79"},
        3,
        ({"Hostname": "ip-10-42-1-17", "gpu": "3"},),
    ),
    Case("GptOssGpuXidError", {f"DCGM_FI_DEV_XID_ERRORS{{{GPU}}}": "0x10"}, 5),
    Case(
        "GptOssGpuUncorrectableMemoryErrors",
        {
            f"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{GPU}}}": "0 0 0 1 1 1",
            f"DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS{{{GPU}}}": "0x6",
            f"DCGM_FI_DEV_ROW_REMAP_FAILURE{{{GPU}}}": "0x6",
        },
        5,
        ({"Hostname": "ip-10-42-1-17", "gpu": "3"},),
    ),
    Case(
        "GptOssGpuUncorrectableMemoryErrors",
        {
            f"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{GPU}}}": "0x6",
            f"DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS{{{GPU}}}": "0x6",
            f"DCGM_FI_DEV_ROW_REMAP_FAILURE{{{GPU}}}": "0 0 1 1 1 1",
        },
        5,
        ({"Hostname": "ip-10-42-1-17", "gpu": "3"},),
    ),
    Case(
        "GptOssGpuUncorrectableMemoryErrors",
        {
            # Corrected single-bit errors are no reason to page.
            f"DCGM_FI_DEV_ECC_SBE_VOL_TOTAL{{{GPU}}}": "0+5x10",
            f"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{GPU}}}": "0x10",
            f"DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS{{{GPU}}}": "0x10",
            f"DCGM_FI_DEV_ROW_REMAP_FAILURE{{{GPU}}}": "0x10",
        },
        8,
    ),
    Case(
        "GptOssGpuTemperatureHigh",
        {f"DCGM_FI_DEV_GPU_TEMP{{{GPU}}}": "90x20"},
        10,
        ({"Hostname": "ip-10-42-1-17", "gpu": "3"},),
    ),
    Case("GptOssGpuTemperatureHigh", {f"DCGM_FI_DEV_GPU_TEMP{{{GPU}}}": "70x20"}, 10),
    Case(
        "GptOssWeightsDownloadStalled",
        {
            f'kube_pod_init_container_status_running{{{NS}, pod="{POD}", container="download-weights"}}': "1x80"
        },
        70,
        ({"pod": POD},),
    ),
    # A download that finished after 30 minutes.
    Case(
        "GptOssWeightsDownloadStalled",
        {
            f'kube_pod_init_container_status_running{{{NS}, pod="{POD}", container="download-weights"}}': "1x30 0x50"
        },
        70,
    ),
    Case(
        "GptOssReplicaNotReadyPastStartup",
        {f'kube_pod_status_ready{{{NS}, pod="{POD}", condition="true"}}': "0x130"},
        125,
        ({"pod": POD},),
    ),
    # Loading for 100 minutes (download and startup together take up to 120), then ready.
    Case(
        "GptOssReplicaNotReadyPastStartup",
        {f'kube_pod_status_ready{{{NS}, pod="{POD}", condition="true"}}': "0x100 1x30"},
        125,
    ),
    Case(
        "GptOssGpuNodeNotReady",
        {
            'kube_node_status_condition{node="gpu-1", condition="Ready", status="true"}': "1 1 0x10",
            'kube_node_status_capacity{node="gpu-1", resource="nvidia_com_gpu", unit="integer"}': "8x12",
        },
        10,
        ({"node": "gpu-1"},),
    ),
    # A system node (no GPUs) going NotReady is someone else's alert.
    Case(
        "GptOssGpuNodeNotReady",
        {
            'kube_node_status_condition{node="system-1", condition="Ready", status="true"}': "0x12",
            'kube_node_status_capacity{node="system-1", resource="cpu", unit="core"}': "2x12",
        },
        10,
    ),
    Case(
        "GptOssMetricsTargetDown",
        {'up{job="dcgm-exporter", instance="10.42.1.17:9400"}': "0x20"},
        15,
        ({"job": "dcgm-exporter", "instance": "10.42.1.17:9400"},),
    ),
    Case("GptOssMetricsTargetDown", {'up{job="some-other-job", instance="10.0.0.1:80"}': "0x20"}, 15),
]


def _annotations(alert: str, labels: dict[str, str]) -> dict[str, str]:
    rule = next(rule for rule in stack_alerts(SCOPE, SETTINGS) if rule.name == alert)
    summary = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda match: labels[match.group(1)], rule.summary)
    return {"summary": summary, "runbook": rule.runbook}


def _rule_test(case: Case) -> dict[str, object]:
    severity = next(rule.severity for rule in stack_alerts(SCOPE, SETTINGS) if rule.name == case.alert)
    return {
        "interval": "1m",
        "input_series": [{"series": series, "values": values} for series, values in case.series.items()],
        "alert_rule_test": [
            {
                "eval_time": f"{case.eval_minutes}m",
                "alertname": case.alert,
                "exp_alerts": [
                    {
                        "exp_labels": {**labels, "severity": severity, **STACK_LABELS},
                        "exp_annotations": _annotations(case.alert, labels),
                    }
                    for labels in case.fires_with
                ],
            }
        ],
    }


def test_every_alert_has_a_case_that_fires_and_one_that_stays_silent() -> None:
    for rule in stack_alerts(SCOPE, SETTINGS):
        cases = [case for case in CASES if case.alert == rule.name]
        assert any(case.fires_with for case in cases), rule.name
        assert any(not case.fires_with for case in cases), rule.name


@pytest.mark.slow
def test_promtool_test_rules_fires_and_stays_silent_as_expected(tmp_path: Path) -> None:
    rules = _rules_path(tmp_path)
    tests_file = tmp_path / "alerts-test.yaml"
    tests_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [rules.name],
                "evaluation_interval": "1m",
                "tests": [_rule_test(case) for case in CASES],
            },
            sort_keys=False,
            width=200,
        )
    )
    result = promtool("test", "rules", tests_file.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.slow
def test_promtool_test_rules_would_catch_a_silent_alert(tmp_path: Path) -> None:
    """The harness itself: a case that expects an alert the series cannot raise fails promtool."""
    rules = _rules_path(tmp_path)
    wrong = Case(
        "GptOssGpuTemperatureHigh",
        {f"DCGM_FI_DEV_GPU_TEMP{{{GPU}}}": "70x20"},
        10,
        ({"Hostname": "ip-10-42-1-17", "gpu": "3"},),
    )
    tests_file = tmp_path / "wrong-test.yaml"
    tests_file.write_text(
        yaml.safe_dump({"rule_files": [rules.name], "tests": [_rule_test(wrong)]}, sort_keys=False)
    )
    assert promtool("test", "rules", tests_file.name, cwd=tmp_path).returncode != 0

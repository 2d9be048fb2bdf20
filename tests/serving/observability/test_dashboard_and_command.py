"""The dashboard (Grafana's SDK) and `python -m serving observability`, which writes it with the rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from serving.cli import main
from serving.observability.dashboard import DATASOURCE_VARIABLE, dashboard_expressions, render_dashboard
from serving.observability.queries import Scope, stack_queries

DOCUMENT = render_dashboard(Scope(), "prod")


def _panels(document: dict) -> list[dict]:
    return [panel for panel in document["panels"] if panel["type"] != "row"]


def test_every_panel_query_is_a_named_query_and_every_named_query_is_shown() -> None:
    named = {query.expr for query in stack_queries(Scope()).all()}
    shown = dashboard_expressions(DOCUMENT)
    assert set(shown) <= named
    assert set(shown) == named


def test_the_dashboard_covers_what_the_issue_asks_for() -> None:
    titles = {panel["title"] for panel in _panels(DOCUMENT)}
    assert {
        "Requests by status",
        "Time to first token",
        "Time per output token",
        "End-to-end latency",
        "Running requests",
        "Queued requests",
        "KV-cache utilisation",
        "Tokens/s",
        "GPU utilisation",
        "GPU memory used",
        "Power",
        "Temperature",
        "XID errors (latest code)",
        "Requests/s per key",
    } <= titles
    ttft = next(panel for panel in _panels(DOCUMENT) if panel["title"] == "Time to first token")
    assert [target["legendFormat"] for target in ttft["targets"]] == ["p50", "p90", "p99"]


def test_every_panel_reads_the_chosen_prometheus_and_has_a_unique_id_and_place() -> None:
    (variable,) = DOCUMENT["templating"]["list"]
    assert (variable["type"], variable["name"], variable["query"]) == (
        "datasource",
        DATASOURCE_VARIABLE,
        "prometheus",
    )
    ids = [panel["id"] for panel in DOCUMENT["panels"]]
    assert len(ids) == len(set(ids))
    places = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in DOCUMENT["panels"]]
    assert len(places) == len(set(places))
    for panel in _panels(DOCUMENT):
        assert panel["datasource"] == {"type": "prometheus", "uid": f"${{{DATASOURCE_VARIABLE}}}"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["fieldConfig"]["defaults"]["unit"]


def test_the_dashboard_is_the_same_on_every_run_and_names_its_stack() -> None:
    assert render_dashboard(Scope(), "prod") == DOCUMENT
    assert DOCUMENT["uid"] == "gpt-oss-prod"
    assert "prod" in DOCUMENT["title"] and "prod" in DOCUMENT["tags"]


def test_the_command_writes_dashboard_rules_and_dcgm_counters_for_the_stack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "build" / "prod"
    assert main(["observability", "--stack", "prod", "--out", str(out), "--ttft-slo-seconds", "1.5"]) == 0
    assert capsys.readouterr().out.split() == [
        str(out / name)
        for name in ("dashboard.json", "alerts.yaml", "dcgm-counters.csv", "scrape-config.yaml")
    ]
    assert json.loads((out / "dashboard.json").read_text()) == DOCUMENT
    rules = yaml.safe_load((out / "alerts.yaml").read_text())["groups"][0]
    assert rules["name"] == "gpt-oss-prod"
    by_name = {rule["alert"]: rule for rule in rules["rules"]}
    assert by_name["GptOssTtftAboveSlo"]["expr"].endswith("> 1.5")
    assert by_name["GptOssNoReadyReplica"]["labels"] == {"severity": "critical", "stack": "prod"}
    assert "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL, counter" in (out / "dcgm-counters.csv").read_text()
    assert yaml.safe_load((out / "scrape-config.yaml").read_text())["global"]["scrape_interval"] == "30s"


def test_the_command_reads_the_namespace_and_startup_timeout_from_the_stack(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert (
        main(
            [
                "observability",
                "--stack",
                "prod",
                "--set",
                "namespace=team-llm",
                "--set",
                "startupTimeoutMinutes=90",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rules = {
        rule["alert"]: rule
        for rule in yaml.safe_load((out / "alerts.yaml").read_text())["groups"][0]["rules"]
    }
    assert 'namespace="team-llm"' in rules["GptOssTtftAboveSlo"]["expr"]
    assert rules["GptOssReplicaNotReadyPastStartup"]["for"] == "150m"


def test_the_command_refuses_bad_settings_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["observability", "--stack", "prod", "--set", "replicas=0", "--out", str(tmp_path)]) == 2
    assert "replicas" in capsys.readouterr().err
    assert main(["observability", "--stack", "prod", "--ttft-slo-seconds", "-1", "--out", str(tmp_path)]) == 2

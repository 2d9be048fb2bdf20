"""bench --bounds: measured figures beside the modelled bounds of `serving capacity --json`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.cli import main as cli_main
from serving.client.bench import bounds_table, compare_with_bounds, read_bounds
from serving.client.outputs import SettingsError
from tests.support.sse_replay_server import ReplayScript, ReplayServer, ReplayState

BOUNDS = {
    "concurrency": 3,
    "input_tokens": 20,
    "output_tokens": 40,
    "average_latency_s": {"bound": "lower", "value": 2.0},
    "average_ttft_s": {"bound": "lower", "value": 0.5},
    "average_perceived_tokens_per_second": {"bound": "upper", "value": 100.0},
    "tpot_s": {"bound": "lower", "value": 0.01},
}
SCENARIO = {"concurrency": 3, "input_tokens": 20, "output_tokens": 40}


def test_ratio_is_measured_over_bound_and_says_whether_the_bound_held():
    summary = {
        "average_latency_s": 3.0,  # 3.0 / 2.0 = 1.5: above a lower bound, as it must be
        "average_ttft_s": 0.25,  # 0.25 / 0.5 = 0.5: below a lower bound, so something is wrong
        "average_perceived_tokens_per_second": 80.0,  # 80 / 100 = 0.8: under an upper bound
        "tpot_s": {"mean": 0.02, "p50": 0.019},  # a distribution: its mean, 0.02 / 0.01 = 2
    }
    comparison = compare_with_bounds(summary, BOUNDS, SCENARIO)
    by_metric = {row["metric"]: row for row in comparison["rows"]}
    assert by_metric["average_latency_s"]["ratio"] == pytest.approx(1.5)
    assert by_metric["average_latency_s"]["held"] is True
    assert by_metric["average_ttft_s"]["ratio"] == pytest.approx(0.5)
    assert by_metric["average_ttft_s"]["held"] is False
    assert by_metric["average_perceived_tokens_per_second"]["held"] is True
    assert by_metric["tpot_s"]["ratio"] == pytest.approx(2.0)
    assert comparison["scenario_mismatches"] == []
    table = bounds_table(comparison)
    assert "| Average latency (s) | 3 | >= 2 | 1.50 |" in table
    assert "| Average perceived tokens per second | 80 | <= 100 | 0.80 |" in table
    assert "0.50 (outside the bound" in table


def test_a_different_scenario_is_flagged():
    comparison = compare_with_bounds({"average_latency_s": 3.0}, BOUNDS, {**SCENARIO, "concurrency": 16})
    assert comparison["scenario_mismatches"] == ["concurrency 16 here, 3 in the bounds"]
    assert "WARNING: the bounds are for another scenario" in bounds_table(comparison)


def test_read_bounds_takes_the_capacity_commands_file_or_the_table_alone(tmp_path: Path):
    whole = tmp_path / "capacity.json"
    whole.write_text(json.dumps({"ttft_s_lower_bound": 0.02, "template_table": BOUNDS}))
    assert read_bounds(str(whole)) == BOUNDS
    alone = tmp_path / "table.json"
    alone.write_text(json.dumps(BOUNDS))
    assert read_bounds(str(alone)) == BOUNDS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ('{"x": 1}', "no modelled bounds in it; write one with python -m serving capacity"),
        ('{"average_ttft_s": {"bound": "sideways", "value": 1}}', "average_ttft_s should be"),
        ('{"average_ttft_s": {"bound": "lower", "value": 0}}', "average_ttft_s should be"),
    ],
)
def test_read_bounds_refuses_what_it_cannot_use(text: str, message: str, tmp_path: Path):
    path = tmp_path / "bounds.json"
    path.write_text(text)
    with pytest.raises(SettingsError) as error:
        read_bounds(str(path))
    assert message in str(error.value)


def test_bench_with_a_missing_bounds_file_exits_2_before_any_request(tmp_path: Path, capsys):
    code = cli_main(
        ["bench", "--base-url", "http://127.0.0.1:9", "--model", "m", "--bounds", str(tmp_path / "no.json")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "--bounds" in err and "cannot read it" in err and "Traceback" not in err


def test_bench_prints_measured_beside_bound_and_writes_it_to_json(tmp_path: Path, capsys):
    bounds_path = tmp_path / "bounds.json"
    bounds_path.write_text(json.dumps({"template_table": BOUNDS}))
    state = ReplayState(
        script=ReplayScript(reasoning_tokens=2, content_tokens=3, completion_tokens_reported=40)
    )
    with ReplayServer(state) as server:
        code = cli_main(
            [
                "bench",
                "--base-url",
                server.base_url + "/v1",
                "--model",
                state.model,
                "--requests",
                "6",
                "--concurrency",
                "3",
                "--input-tokens",
                "20",
                "--output-tokens",
                "40",
                "--no-progress",
                "--bounds",
                str(bounds_path),
                "--json",
                str(tmp_path / "bench.json"),
            ]
        )
    assert code == 0
    out = capsys.readouterr().out
    assert "Measured against the modelled bounds" in out
    assert "| Average TTFT (s) |" in out and ">= 0.5 |" in out
    report = json.loads((tmp_path / "bench.json").read_text())
    rows = {row["metric"]: row for row in report["bounds"]["rows"]}
    measured = report["summary"]["average_latency_s"]
    assert rows["average_latency_s"]["measured"] == measured
    assert rows["average_latency_s"]["ratio"] == pytest.approx(measured / 2.0)

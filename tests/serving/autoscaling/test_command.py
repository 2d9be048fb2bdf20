"""`python -m serving simulate`, run in-process as the CLI runs it."""

from __future__ import annotations

import json

import pytest

from serving.cli import main


def simulate(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["simulate", "--stack", "prod", *args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *expected: str) -> None:
    assert err.startswith("error: ")
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    for text in expected:
        assert text in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--profile", "weekly"], ("--profile weekly", "steady, diurnal, burst", "--trace FILE")),
        (["--hours", "-1"], ("--hours -1", "above 0")),
        (["--hours", "1000"], ("--hours 1000", "at most 336")),
        (["--rate-scale", "0"], ("--rate-scale 0", "above 0")),
        (["--max-replicas", "12"], ("--max-replicas 12", "use at most 8 or raise max_nodes")),
        (["--min-replicas", "0"], ("--min-replicas 0", "at least 1")),
        (["--bound-factor", "0.5"], ("--bound-factor 0.5", "1 or more")),
        (["--input-tokens", "200000"], ("--input-tokens + --output-tokens = 201000", "max_seq_len")),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, args, expected):
    code, out, err = simulate(capsys, *args)
    assert code == 2
    assert out == ""
    assert_one_line_error(err, *expected)


def test_a_malformed_trace_names_its_line(capsys, tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("time_s,input_tokens,output_tokens\n0,4000,1000\n1,4000\n")
    code, _, err = simulate(capsys, "--trace", str(trace))
    assert code == 2
    assert_one_line_error(err, f"--trace {trace} line 3", "time_s,input_tokens,output_tokens")


def test_a_missing_trace_says_so(capsys, tmp_path):
    code, _, err = simulate(capsys, "--trace", str(tmp_path / "absent.csv"))
    assert code == 2
    assert_one_line_error(err, "absent.csv", "cannot read it")


def test_the_table_and_the_json(capsys, tmp_path):
    out_file = tmp_path / "run.json"
    code, out, err = simulate(capsys, "--profile", "burst", "--hours", "0.5", "--json", str(out_file))
    assert code == 0, err
    assert "modelled (nothing here was measured on a cluster)" in out
    assert "| queue wait p99 |" in out
    assert "fixed at max (2 nodes, 8 replicas)" in out
    report = json.loads(out_file.read_text())
    for key in ("gpu_hours", "fixed_max_gpu_hours", "queue_wait_s", "max_replicas", "timeline", "policy"):
        assert key in report
    assert set(report["queue_wait_s"]) >= {"p50", "p90", "p99"}
    assert report["fixed_max_gpu_hours"] == pytest.approx(2 * 8 * 0.5)
    assert report["policy"]["max_replicas"] == 8
    point = report["timeline"][1]
    assert {"t", "replicas", "ready_replicas", "nodes", "queue"} <= set(point)
    assert report["arrivals"] == report["finished"] + report["running_at_end"] + report["queued_at_end"]


def test_a_trace_replays(capsys, tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("".join(f"{i * 0.5},2000,500\n" for i in range(600)))
    out_file = tmp_path / "run.json"
    code, _, err = simulate(capsys, "--trace", str(trace), "--json", str(out_file))
    assert code == 0, err
    report = json.loads(out_file.read_text())
    assert report["arrivals"] == 600
    assert report["hours"] == pytest.approx(5 / 60)  # the trace's span, to the minute


@pytest.mark.slow
def test_the_same_seed_writes_the_same_json_and_a_plot(capsys, tmp_path):
    first, again, plot = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "p.png"
    assert simulate(capsys, "--profile", "burst", "--hours", "3", "--seed", "4", "--json", str(first))[0] == 0
    args = ("--profile", "burst", "--hours", "3", "--seed", "4", "--json", str(again), "--plot", str(plot))
    assert simulate(capsys, *args)[0] == 0
    assert first.read_text() == again.read_text()
    assert plot.read_bytes().startswith(b"\x89PNG")

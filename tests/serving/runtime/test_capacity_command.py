"""`python -m serving capacity`, called in process through the real command line parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.cli import main

ISSUE_KEYS = {
    "kv_tokens_per_replica",
    "max_concurrency",
    "ttft_s_lower_bound",
    "tpot_s_lower_bound",
    "output_tokens_per_s_per_user_upper_bound",
    "output_tokens_per_s_per_gpu_upper_bound",
    "usd_per_million_output_tokens_lower_bound",
}


def test_flags_give_the_layout_and_json_carries_the_issue_keys(tmp_path: Path, capsys):
    out = tmp_path / "bounds.json"
    code = main(
        [
            "capacity",
            "--gpu",
            "h100",
            "--tensor-parallel",
            "4",
            "--expert-parallel",
            "4",
            "--attention-dp",
            "--input-tokens",
            "1024",
            "--output-tokens",
            "1024",
            "--concurrency",
            "max",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "TP4 + attention DP on H100" in printed and "Modelled bounds" in printed
    assert "Cold start, modelled" in printed and "The template's table, modelled" in printed
    report = json.loads(out.read_text())
    assert report.keys() >= ISSUE_KEYS
    assert report["tensor_parallel"] == 4 and report["attention_dp"] is True
    assert report["max_concurrency"] == 256  # 64 slots on each of 4 ranks; the KV cache holds more
    table = report["template_table"]
    assert table["average_ttft_s"]["bound"] == "lower"
    assert table["average_overall_throughput"]["bound"] == "upper"
    assert report["cold_start_s"]["hugging_face"] > report["cold_start_s"]["in_region_mirror"]


def test_the_stack_gives_the_layout_and_its_replicas_share_the_template_streams(capsys):
    assert main(["capacity", "--stack", "prod", "--concurrency", "4"]) == 0
    printed = capsys.readouterr().out
    assert "TP2 on H100 80GB (stack prod)" in printed
    assert "16 concurrent over 4 replica(s) (4/4/4/4 each)" in printed
    # The same eight GPUs as one TP8 replica:
    assert main(["capacity", "--stack", "prod", "--tensor-parallel", "8"]) == 0
    assert "16 concurrent over 1 replica(s) (16 each)" in capsys.readouterr().out


def test_compare_layouts_lists_every_layout_of_a_node(capsys):
    assert main(["capacity", "--compare-layouts"]) == 0
    printed = capsys.readouterr().out
    for name in ("TP1x8 |", "TP2x4 |", "TP2x4 + attention DP", "TP4x2 |", "TP8x1 |", "TP8x1 + attention DP"):
        assert f"| {name}" in printed
    assert "TP1x8 + attention DP" not in printed  # one rank: nothing to share
    assert "Latency at 16 streams:" in printed and "Cost with max_batch_size as set:" in printed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--tensor-parallel", "3"],
            "--tensor-parallel 3: a replica's GPUs must divide a node's 8; use 1, 2, 4 or 8",
        ),
        (
            ["--tensor-parallel", "4", "--expert-parallel", "3"],
            "--expert-parallel 3: must divide the 128 experts and --tensor-parallel 4",
        ),
        (["--tensor-parallel", "8", "--expert-parallel", "16"], "use one of [1, 2, 4, 8]"),
        (["--tensor-parallel", "1", "--attention-dp"], "--attention-dp needs --tensor-parallel 2 or more"),
        (["--concurrency", "lots"], "--concurrency lots: a whole number of 1 or more, or max"),
        (["--input-tokens", "0"], "--input-tokens 0: at least 1"),
        (["--input-tokens", "98000"], "above max_seq_len = 98304"),
        (["--stack", "nosuchstack"], "Pulumi.nosuchstack.yaml"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_flag(argv: list[str], message: str, capsys):
    assert main(["capacity", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err

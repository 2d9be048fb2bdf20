"""`python -m serving render`, run as a user would run it."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from serving.config.project import PROJECT_DIR

# Command-line runs in subprocesses: left out of the fast loop.
pytestmark = pytest.mark.slow

PROJECT = PROJECT_DIR


def render(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serving", "render", *args],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_prod_stack_renders_command_options_and_capacity():
    result = render("--stack", "prod")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert (
        "trtllm-serve openai/gpt-oss-120b --host 127.0.0.1 --port 8000 --backend pytorch --tp_size 2" in out
    )
    block = re.search(r"```yaml\n(.*?)```", out, re.S)
    assert block, out
    options = yaml.safe_load(block.group(1))
    assert options["max_seq_len"] == 98304 and options["moe_config"] == {"backend": "TRITON"}
    assert "| KV per token | 72 KiB |" in out and "decode roofline" in out


def test_options_flag_merges_and_bad_values_exit_2_with_the_reason():
    result = render("--options", '{"kv_cache_config": {"free_gpu_memory_fraction": 0.9}}')
    assert result.returncode == 0
    assert "free_gpu_memory_fraction: 0.9" in result.stdout
    assert "enable_block_reuse: true" in result.stdout  # deep merge keeps the rest of the table
    bad = render("--options", '{"max_batch_sise": 8}')
    assert bad.returncode == 2
    assert "max_batch_sise: unknown option (did you mean max_batch_size?)" in bad.stderr
    missing = render("--stack", "nosuchstack")
    assert missing.returncode == 2 and "Pulumi.nosuchstack.yaml" in missing.stderr

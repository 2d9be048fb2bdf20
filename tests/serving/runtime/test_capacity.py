"""Capacity figures, checked against arithmetic written out independently here."""

from __future__ import annotations

import pytest

from serving.runtime.capacity import RUNTIME_RESERVE_BYTES_PER_GPU, plan_capacity, render_capacity_table
from serving.runtime.hardware import H200_SXM
from serving.runtime.options import build_runtime

GIB = 2**30
# The template's benchmark shape (FACTS.md): ~4000 prompt tokens; the bench's 1000 output tokens.
SHAPE = {"typical_input_tokens": 4000, "typical_output_tokens": 1000}


def test_default_replica_figures_match_hand_arithmetic():
    report = plan_capacity(build_runtime(), **SHAPE)
    weights_per_gpu = 60.8 * GIB / 2
    free = 80e9 - weights_per_gpu - RUNTIME_RESERVE_BYTES_PER_GPU
    pool = free * 0.8 * 2
    per_token = 2 * 8 * 64 * 2 * 18  # K and V, 8 heads, dim 64, bf16, 18 full layers = 36 KiB
    assert per_token == 36 * 1024
    sliding = 2 * 8 * 64 * 2 * 18 * 128  # 18 sliding layers hold at most 128 tokens
    assert report.weights_bytes_per_gpu == pytest.approx(weights_per_gpu)
    assert report.kv_pool_bytes_per_replica == pytest.approx(pool)
    assert report.kv_bytes_per_token == per_token
    assert report.kv_tokens_per_replica == int(pool // per_token)
    assert report.sequences_at_max_seq_len == int(pool // (98304 * per_token + sliding))
    assert report.sequences_at_typical_length == int(pool // (5000 * per_token + sliding))
    active_bytes = 5.1e9 * (60.8 * GIB / 116.8e9)
    step = active_bytes + 5000 * per_token + sliding
    assert report.decode_roofline_tokens_per_s == pytest.approx(2 * 3.35e12 / step)
    # The template's 64 concurrent sequences of the benchmark shape fit, so no warning.
    assert report.warnings == ()


def test_h200_holds_more_kv_and_decodes_faster():
    h100 = plan_capacity(build_runtime(), **SHAPE)
    h200 = plan_capacity(build_runtime(gpu=H200_SXM), **SHAPE)
    assert h200.kv_tokens_per_replica > 2 * h100.kv_tokens_per_replica
    assert h200.decode_roofline_tokens_per_s / h100.decode_roofline_tokens_per_s == pytest.approx(4.8 / 3.35)


def test_warns_when_max_batch_size_sequences_cannot_be_held():
    runtime = build_runtime({"max_batch_size": 512, "kv_cache_config": {"free_gpu_memory_fraction": 0.2}})
    report = plan_capacity(runtime, typical_input_tokens=20000, typical_output_tokens=4000)
    assert report.sequences_at_typical_length < 512
    assert report.warnings and "max_batch_size = 512" in report.warnings[0]


def test_table_prints_inputs_beside_figures():
    table = render_capacity_table(plan_capacity(build_runtime(), **SHAPE))
    for text in (
        "free_gpu_memory_fraction | 0.8",
        "GPUs per replica | 2",
        "KV per token | 36 KiB",
        "weights per GPU | 30.4 GiB",
        "decode roofline, one stream",
    ):
        assert text in table

"""Capacity figures held against published facts (FACTS.md) and properties a planner relies on,
not against the implementation's own arithmetic."""

from __future__ import annotations

import pytest

from serving.runtime.capacity import plan_capacity, render_capacity_table
from serving.runtime.hardware import H200_SXM
from serving.runtime.options import build_runtime

GIB = 2**30
KIB = 1024
# The template's benchmark shape (FACTS.md): ~4000 prompt tokens; the bench's 1000 output tokens.
SHAPE = {"typical_input_tokens": 4000, "typical_output_tokens": 1000}
# FACTS.md: gpt-oss-120b's checkpoint and an H100 SXM's memory.
CHECKPOINT_BYTES = 60.8 * GIB
H100_BYTES = 80e9
# FACTS.md: bf16 KV is 2 KiB per token per layer; 36 layers; 18 sliding layers of 128 tokens.
KV_PER_TOKEN_EVERY_LAYER = 72 * KIB
KV_PER_TOKEN_FULL_LAYERS_ONLY = 36 * KIB
SLIDING_KV_PER_SEQUENCE = 18 * 2 * KIB * 128
# Separate KV pools per attention window only with max_attention_window listed (FACTS.md).
PER_WINDOW = {"kv_cache_config": {"max_attention_window": [128, 131072]}}


def test_without_max_attention_window_every_layer_holds_kv_for_every_token():
    report = plan_capacity(build_runtime(), **SHAPE)
    assert report.kv_bytes_per_token == KV_PER_TOKEN_EVERY_LAYER
    assert report.sliding_kv_bytes_per_sequence == 0


def test_with_max_attention_window_the_sliding_layers_hold_only_their_window():
    report = plan_capacity(build_runtime(PER_WINDOW), **SHAPE)
    assert report.kv_bytes_per_token == KV_PER_TOKEN_FULL_LAYERS_ONLY
    assert report.sliding_kv_bytes_per_sequence == SLIDING_KV_PER_SEQUENCE
    assert report.kv_tokens_per_replica > plan_capacity(build_runtime(), **SHAPE).kv_tokens_per_replica


def test_the_kv_pool_fits_in_what_the_weights_leave():
    report = plan_capacity(build_runtime(), **SHAPE)
    # Two H100s, the checkpoint split over them, 80% of what is left for the KV cache: the
    # pool can be no larger (the runtime's own reserve makes it smaller), and is not tiny.
    ceiling = 0.8 * (2 * H100_BYTES - CHECKPOINT_BYTES)
    assert 0.8 * ceiling < report.kv_pool_bytes_per_replica < ceiling
    assert report.weights_bytes_per_gpu == pytest.approx(CHECKPOINT_BYTES / 2)
    tokens, per_token = report.kv_tokens_per_replica, report.kv_bytes_per_token
    assert tokens * per_token <= report.kv_pool_bytes_per_replica < (tokens + 1) * per_token


def test_longer_sequences_fit_fewer_times_and_more_memory_holds_more():
    low = plan_capacity(build_runtime({"kv_cache_config": {"free_gpu_memory_fraction": 0.5}}), **SHAPE)
    high = plan_capacity(build_runtime({"kv_cache_config": {"free_gpu_memory_fraction": 0.9}}), **SHAPE)
    assert low.kv_tokens_per_replica < high.kv_tokens_per_replica
    for report in (low, high):
        assert report.sequences_at_max_seq_len <= report.sequences_at_typical_length


def test_h200_holds_more_kv_and_decodes_faster_but_no_faster_than_its_bandwidth():
    h100 = plan_capacity(build_runtime(), **SHAPE)
    h200 = plan_capacity(build_runtime(gpu=H200_SXM), **SHAPE)
    assert h200.kv_tokens_per_replica > 2 * h100.kv_tokens_per_replica
    # FACTS.md: 4.8 TB/s against 3.35 TB/s; decoding is bandwidth-bound at best.
    speedup = h200.decode_roofline_tokens_per_s / h100.decode_roofline_tokens_per_s
    assert 1 < speedup <= 4.8 / 3.35 + 1e-9


def test_warns_when_max_batch_size_sequences_cannot_be_held():
    runtime = build_runtime({"max_batch_size": 512, "kv_cache_config": {"free_gpu_memory_fraction": 0.2}})
    report = plan_capacity(runtime, typical_input_tokens=20000, typical_output_tokens=4000)
    assert report.sequences_at_typical_length < 512
    assert report.warnings and "max_batch_size = 512" in report.warnings[0]
    assert plan_capacity(build_runtime(), **SHAPE).warnings == ()  # 64 of the template's fit


def test_table_prints_inputs_beside_figures():
    table = render_capacity_table(plan_capacity(build_runtime(), **SHAPE))
    for text in (
        "free_gpu_memory_fraction | 0.8",
        "GPUs per replica | 2",
        "KV per token | 72 KiB",
        "sliding layers are sized as full",
        "weights per GPU | 30.4 GiB",
        "decode roofline, one stream",
    ):
        assert text in table

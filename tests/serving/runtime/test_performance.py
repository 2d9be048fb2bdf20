"""The performance model's formulas against cases worked by hand (the arithmetic is in the
comments, not recomputed with the model's code), and its upper bounds against the published H100
measurements of gpt-oss-120b in FACTS.md."""

from __future__ import annotations

from typing import Any

import pytest

from serving.runtime.capacity import (
    parameter_counts,
    plan_capacity,
    sequences_that_fit,
    weight_bytes,
    weights_bytes_per_gpu,
)
from serving.runtime.coldstart import (
    COLD_START_FROM_MIRROR_S,
    COLD_START_S,
    ColdStartAssumptions,
    cold_start_seconds,
    render_cold_start,
)
from serving.runtime.hardware import GPT_OSS_120B, H100_SXM, H200_SXM, GpuKind
from serving.runtime.options import build_runtime
from serving.runtime.performance import (
    LayoutError,
    RequestShape,
    bound,
    decode_step,
    expected_distinct_experts,
    prefill_attention_flops,
    prefill_step,
    split_evenly,
    template_table_bounds,
)

GIB = 2**30
TEMPLATE_SHAPE = RequestShape(4000, 1000)  # the template's ~4000 prompt tokens, the bench's 1000
# The checkpoint (FACTS.md: 60.8 GiB) over what the shapes give (60.69 GiB, worked below): the
# model scales every part by this, so hand-worked byte counts agree within 0.2 %.
WEIGHT_TOLERANCE = 3e-3


def layout(tp: int, ep: int | None = None, adp: bool = False, gpu: GpuKind = H100_SXM, **options: Any):
    overrides = {
        "tensor_parallel_size": tp,
        "moe_expert_parallel_size": tp if ep is None else ep,
        "enable_attention_dp": adp,
        **options,
    }
    return build_runtime(overrides, gpu=gpu, gpus_per_replica=tp)


# ---------- the model's shapes ----------


def test_parameter_counts_from_the_shapes_match_the_published_totals():
    counts = parameter_counts(GPT_OSS_120B)
    # One expert: gate and up 2880 x (2 x 2880) + down 2880 x 2880 = 3 x 2880^2 = 24,883,200.
    assert counts.expert_each_per_layer == 24_883_200
    # Attention per layer: q, k, v 2880 x (64 + 8 + 8) x 64 = 14,745,600, o 4096 x 2880 = 11,796,480;
    # 26,542,080 x 36 layers = 955,514,880.
    assert counts.attention == 955_514_880
    # Embedding and lm_head: 201,088 x 2880 = 579,133,440 each.
    assert counts.embedding == counts.lm_head == 579_133_440
    # Experts 24,883,200 x 128 x 36 = 114,661,785,600; router 2880 x 128 x 36 = 13,271,040;
    # total 116,788,838,400: FACTS.md's 116.8 B (biases and norms make up the rest).
    assert counts.total == 116_788_838_400
    assert counts.total == pytest.approx(116.8e9, rel=1e-3)
    # Active per token: 4 experts x 24,883,200 x 36 = 3,583,180,800, + attention + router +
    # lm_head = 5,131,100,160: FACTS.md's 5.1 B.
    active = 4 * counts.expert_each_per_layer * 36 + counts.attention + counts.router + counts.lm_head
    assert active == 5_131_100_160


def test_weight_bytes_add_up_to_the_checkpoint():
    weights = weight_bytes(GPT_OSS_120B)
    # MXFP4 experts at 4.25 bits: 114,661,785,600 x 4.25 / 8 = 60,914,073,600 B; dense bf16:
    # (955,514,880 + 13,271,040 + 2 x 579,133,440) x 2 = 4,254,105,600 B; together 65,168,179,200 B
    # = 60.69 GiB, against the checkpoint's 60.8 GiB.
    assert weights.total == pytest.approx(60.8 * GIB)
    assert weights.experts == pytest.approx(60_914_073_600, rel=WEIGHT_TOLERANCE)
    assert weights.dense == pytest.approx(4_254_105_600, rel=WEIGHT_TOLERANCE)
    # One expert of one layer: 24,883,200 x 4.25 / 8 = 13,219,200 B.
    assert weights.expert_each_per_layer == pytest.approx(13_219_200, rel=WEIGHT_TOLERANCE)


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        (1, 4.0),  # 128 x (1 - 124/128) = 4: one token touches its 4 experts
        (2, 7.875),  # 128 x (1 - (31/32)^2) = 128 x 63/1024
        (4, 15.265502929),  # 128 x (1 - 923,521/1,048,576) = 125,055 / 8,192
        (10_000, 128.0),  # every expert
    ],
)
def test_expected_distinct_experts(tokens: int, expected: float):
    assert expected_distinct_experts(128, 4, tokens) == pytest.approx(expected, rel=1e-9)


def test_prefill_attention_counts_causal_pairs_and_the_window():
    # 4000 tokens: full layers see 4000 x 4001 / 2 = 8,002,000 pairs each; sliding layers
    # 128 x 129 / 2 = 8,256 for the first 128 tokens, then 3,872 x 128 = 495,616: 503,872.
    # 18 x (8,002,000 + 503,872) = 153,105,696 pairs at 4 x 64 x 64 = 16,384 FLOP each.
    assert prefill_attention_flops(GPT_OSS_120B, 4000) == 153_105_696 * 16_384
    # Under the window both kinds of layer see the same: 36 x (10 x 11 / 2) = 1,980 pairs.
    assert prefill_attention_flops(GPT_OSS_120B, 10) == 1_980 * 16_384


# ---------- memory and KV capacity ----------


def test_kv_capacity_of_the_template_worked_by_hand():
    report = plan_capacity(build_runtime(), typical_input_tokens=4000, typical_output_tokens=1000)
    # Weights 60.8 GiB / 2 = 30.4 GiB per GPU; free 80e9 - (30.4 + 6) x 2^30 = 40,915,797,606 B;
    # pool 0.8 x 2 x that = 65,465,276,170 B; / 73,728 B a token (72 KiB) = 887,929 tokens.
    assert report.kv_tokens_per_replica == 887_929
    # 5000 tokens take 157 blocks of 32 = 5,024 tokens x 73,728 B = 370,409,472 B: 176 fit.
    assert report.sequences_at_typical_length == 176


def test_kv_capacity_with_max_attention_window_worked_by_hand():
    runtime = build_runtime({"kv_cache_config": {"max_attention_window": [128, 131072]}})
    # 18 full layers x 2 KiB x 5,024 tokens = 185,204,736 B, + 18 sliding layers x 2 KiB x 128
    # = 4,718,592 B: 189,923,328 B a sequence; 65,465,276,170 / that = 344.7.
    assert sequences_that_fit(runtime, 5000) == 344


def test_attention_dp_keeps_the_dense_weights_whole_on_every_rank():
    # Experts 61,021,869,097 B (scaled) / 2 + dense 4,261,633,802 B whole = 34,772,568,351 B.
    assert weights_bytes_per_gpu(layout(2, adp=True)) == pytest.approx(34_772_568_351, rel=1e-6)
    assert weights_bytes_per_gpu(layout(2)) == pytest.approx(60.8 * GIB / 2)


def test_warning_counts_max_batch_size_per_attention_dp_rank():
    # 64 slots on each of 8 ranks = 512, more than the ~1,064 / 2 sequences of 30,000 tokens
    # hold: the warning says so.
    runtime = layout(8, adp=True)
    report = plan_capacity(runtime, typical_input_tokens=28000, typical_output_tokens=2000)
    assert report.batch_slots == 512
    assert report.sequences_at_typical_length < 512
    assert "on each of 8 attention-DP ranks" in report.warnings[0]


# ---------- one step ----------


def test_decode_step_of_one_stream_worked_by_hand():
    step = decode_step(layout(2), batch=1, context=4500)
    # Per GPU of TP2: dense reads (attention 955,514,880 + router 13,271,040 + lm_head
    # 579,133,440) x 2 B / 2 = 1,547,919,360 B; experts 4 x 36 x 13,219,200 / 2 = 951,782,400 B;
    # KV 2,048 B x (18 x 4,500 + 18 x 128) / 2 = 85,303,296 B. Sum 2,585,005,056 B at
    # 3.35 TB/s = 0.77164 ms.
    assert step.hbm_bytes["dense weights"] == pytest.approx(1_547_919_360, rel=WEIGHT_TOLERANCE)
    assert step.hbm_bytes["experts touched"] == pytest.approx(951_782_400, rel=WEIGHT_TOLERANCE)
    assert step.hbm_bytes["KV cache read"] == 85_303_296
    assert step.memory_s == pytest.approx(0.77164e-3, rel=WEIGHT_TOLERANCE)
    assert step.limit == "HBM bandwidth"
    # NVLink: 36 layers x 2 all-reduces x 2,880 x 2 B x 1/2 received = 207,360 B.
    assert step.link_bytes == 207_360


def test_prefill_of_the_template_prompt_is_compute_bound_worked_by_hand():
    step = prefill_step(layout(2), 4000)
    # Weights per token: 2 x (955,514,880 + 13,271,040 + 3,583,180,800) = 9,103,933,440 FLOP,
    # x 4,000 = 36,415,733,760,000; lm_head once 1,158,266,880; attention 2,508,483,723,264
    # (153,105,696 pairs x 16,384). Total 38,925,375,750,144 / 2 GPUs = 19.4627 TFLOP per GPU,
    # at 989 TFLOPS = 19.679 ms.
    assert step.flops == pytest.approx(19.462_688e12, rel=1e-6)
    assert step.compute_s == pytest.approx(19.679e-3, rel=1e-4)
    assert step.limit == "BF16 compute"


def test_attention_dp_prefill_runs_the_prompts_dense_work_on_one_rank():
    step = prefill_step(layout(2, adp=True), 4000)
    # Dense: 4,000 x 2 x (955,514,880 + 13,271,040) = 7,750,288,640,000 + 1,158,266,880 +
    # 2,508,483,723,264 = 10,259,930,630,144 on the prompt's rank; experts 4,000 x 2 x
    # 3,583,180,800 / 2 = 14,332,723,200,000. 24,592,653,830,144 FLOP at 989 TFLOPS = 24.866 ms.
    assert step.compute_s == pytest.approx(24.866e-3, rel=1e-4)


# ---------- a run ----------


def test_bounds_are_consistent_with_littles_law_and_the_price():
    b = bound(layout(2), TEMPLATE_SHAPE, 4)
    # Tokens/s of a replica x latency = requests in flight x output tokens.
    tokens_in_flight = b.output_tokens_per_s_per_replica_upper_bound * b.latency_s_lower_bound
    assert tokens_in_flight == pytest.approx(4 * 1000)
    assert b.latency_s_lower_bound >= b.ttft_s_lower_bound + 999 * b.tpot_s_lower_bound - 1e-12
    assert b.output_tokens_per_s_per_gpu_upper_bound == pytest.approx(
        b.output_tokens_per_s_per_replica_upper_bound / 2
    )
    # p5.48xlarge: 55.04 USD/h / 8 GPUs = 6.88 USD per GPU-hour.
    assert b.usd_per_gpu_hour == pytest.approx(6.88)
    assert b.usd_per_million_output_tokens_lower_bound == pytest.approx(
        6.88 / 3600 / b.output_tokens_per_s_per_gpu_upper_bound * 1e6
    )


def test_more_streams_never_lower_throughput_nor_speed_up_a_step():
    runtime = layout(2)
    previous = None
    for concurrency in (1, 2, 4, 8, 16, 32, 64):
        b = bound(runtime, TEMPLATE_SHAPE, concurrency)
        if previous is not None:
            assert b.tpot_s_lower_bound >= previous.tpot_s_lower_bound
            assert (
                b.output_tokens_per_s_per_gpu_upper_bound >= previous.output_tokens_per_s_per_gpu_upper_bound
            )
        previous = b
    # Above max concurrency the rest queue: no more throughput, longer latency.
    full, over = bound(runtime, TEMPLATE_SHAPE), bound(runtime, TEMPLATE_SHAPE, 200)
    assert over.batch == full.batch == 64
    assert over.output_tokens_per_s_per_gpu_upper_bound == pytest.approx(
        full.output_tokens_per_s_per_gpu_upper_bound
    )
    assert over.latency_s_lower_bound > full.latency_s_lower_bound
    assert over.notes


def test_h200_is_faster_but_by_no_more_than_its_bandwidth():
    h100, h200 = bound(layout(2), TEMPLATE_SHAPE, 4), bound(layout(2, gpu=H200_SXM), TEMPLATE_SHAPE, 4)
    ratio = h100.tpot_s_lower_bound / h200.tpot_s_lower_bound
    assert 1 < ratio <= 4.8 / 3.35 + 1e-9
    assert h200.usd_per_million_output_tokens_lower_bound is None  # no checked p5e price


def test_a_layout_whose_weights_do_not_fit_is_refused_naming_what_would_work():
    small = GpuKind("test 64GB", 64 * 10**9, 3e12, "hopper", bf16_dense_flops=1e15, nvlink_bytes_per_s=9e11)
    # 60.8 GiB = 65.3 GB of weights on one 64 GB GPU: nothing left.
    with pytest.raises(LayoutError) as error:
        bound(layout(1, gpu=small), TEMPLATE_SHAPE)
    assert "tensor parallel 1" in str(error.value) and "use more GPUs per replica" in str(error.value)
    bound(layout(2, gpu=small), TEMPLATE_SHAPE)  # two of them hold it


def test_split_evenly():
    assert split_evenly(16, 4) == [4, 4, 4, 4]
    assert split_evenly(16, 3) == [6, 5, 5]
    assert split_evenly(2, 4) == [1, 1, 0, 0]


def test_template_table_of_the_prod_stack_follows_baseten_definitions():
    runtime = layout(2)
    table = template_table_bounds(runtime, TEMPLATE_SHAPE, concurrency=16, replicas=4)
    one = bound(runtime, TEMPLATE_SHAPE, 4)  # 16 streams over 4 replicas: 4 each
    assert table.average_ttft_s_lower_bound == one.ttft_s_lower_bound
    assert table.average_latency_s_lower_bound == pytest.approx(one.latency_s_lower_bound)
    # Perceived tokens/s = (prompt + completion) / latency; overall = perceived x concurrency.
    assert table.average_perceived_tokens_per_second_upper_bound == pytest.approx(
        5000 / one.latency_s_lower_bound
    )
    assert table.average_overall_throughput_upper_bound == pytest.approx(
        16 * table.average_perceived_tokens_per_second_upper_bound
    )


# ---------- against published measurements (FACTS.md) ----------

# A correct upper bound is never below a measurement of the same shape; a useful one is within
# this factor of it. The model leaves out kernel efficiency, collective latency and scheduling,
# which on these runs cost a factor of 3.7 to 6.3; 8 is the stated factor.
USEFUL_FACTOR = 8

# Largest batches any setting allows: the whole free memory for KV, no max_batch_size cap.
MAX_LOAD: dict[str, Any] = {"max_batch_size": 8192, "kv_cache_config": {"free_gpu_memory_fraction": 1.0}}


@pytest.mark.parametrize(
    ("shape", "measured_per_gpu"),
    [
        (RequestShape(1024, 1024), 4685),  # TensorRT-LLM perf overview, H100 x 4, ADP + EP, 1k/1k
        (RequestShape(8192, 1024), 1169),  # the same, 8k/1k
    ],
)
def test_max_load_bound_holds_above_the_tensorrt_llm_perf_overview(
    shape: RequestShape, measured_per_gpu: int
):
    runtime = layout(4, ep=4, adp=True, **MAX_LOAD)
    per_gpu = bound(runtime, shape).output_tokens_per_s_per_gpu_upper_bound
    assert measured_per_gpu <= per_gpu <= USEFUL_FACTOR * measured_per_gpu


def test_per_user_bound_holds_above_gpustack_vllm_tp2_at_concurrency_4():
    # GPUStack: H100, vLLM TP2, ShareGPT at concurrency 4, ~174 tokens/s per user. ShareGPT's
    # conversations are a few hundred tokens each way; the bound is taken at 256/256, and at
    # this size it hardly depends on the context (weights are 95 % of the bytes a step reads).
    for expert_parallel in (1, 2):
        per_user = bound(layout(2, ep=expert_parallel), RequestShape(256, 256), 4)
        assert 174 <= per_user.output_tokens_per_s_per_user_upper_bound <= USEFUL_FACTOR * 174


# ---------- cold start ----------


def test_cold_start_budget_worked_by_hand():
    # Hugging Face: 300 s node + 25e9 / 150e6 = 166.67 s image + 65e9 / 200e6 = 325 s weights +
    # 65e9 / 4e9 = 16.25 s load + 1,200 s warm-up + 1 s first token = 2,008.92 s.
    assert pytest.approx(2008.9167, rel=1e-6) == COLD_START_S
    # Mirror: the download is 65e9 / 1.5e9 = 43.33 s instead: 1,727.25 s.
    assert pytest.approx(1727.25, rel=1e-6) == COLD_START_FROM_MIRROR_S
    faster_boot = ColdStartAssumptions(node_ready_s=120)
    assert cold_start_seconds(faster_boot) == pytest.approx(2008.9167 - 180, rel=1e-6)
    text = render_cold_start()
    assert "modelled" in text and "33.5 min" in text and "28.8 min" in text


def test_one_h100_holds_17_template_requests_and_says_max_batch_size_is_too_large():
    b = bound(layout(1), TEMPLATE_SHAPE, 16)
    # Free: 80e9 - (60.8 + 6) x 2^30 = 8,274,046,157 B; x 0.8 = 6,619,236,925 B of KV; a request
    # of 5,024 tokens (in blocks) x 73,728 B = 370,409,472 B: 17.9, so 17 fit, not 64.
    assert b.kv_sequences == b.max_concurrency == 17
    assert "max_batch_size allows 64 sequences at once, but the KV cache holds only 17" in b.notes[0]

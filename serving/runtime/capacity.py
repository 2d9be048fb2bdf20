"""Capacity arithmetic for one server replica: memory, KV cache, concurrency, decode roofline.

Every figure is derived from named inputs (model facts, GPU facts, the runtime's options, and two
stated estimates), and the report prints those inputs beside the figures so a reader can redo the
arithmetic. These are planning estimates, not measurements: the benchmark measures.

The KV cache is sized as TensorRT-LLM 1.2.1 sizes it: the pool is a share of what the weights and
the runtime leave, allocated in blocks of `kv_cache_config.tokens_per_block` tokens, every layer
sized for every token unless `kv_cache_config.max_attention_window` lists the windows (FACTS.md),
and with attention data parallelism each rank holding whole sequences in its own pool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from serving.runtime.hardware import GIB, KIB, ModelFacts
from serving.runtime.options import ServingRuntime

# Memory TensorRT-LLM keeps besides weights and KV cache on each GPU (CUDA context, activations
# for max_num_tokens, CUDA graphs, NCCL buffers). An estimate; the server logs the real figure.
RUNTIME_RESERVE_BYTES_PER_GPU = 6 * GIB
BYTES_PER_KV_ELEMENT = 2  # bf16 KV cache (gpt-oss on Hopper)
# kv_cache_config.tokens_per_block's default in TensorRT-LLM 1.2.1 (serving/runtime/schema.py).
DEFAULT_TOKENS_PER_BLOCK = 32


@dataclass(frozen=True)
class ParameterCounts:
    """Weights by part, from the model's shapes (biases, norms and sinks, under 0.1 %, left out)."""

    expert_each_per_layer: int  # one expert's SwiGLU: gate and up (fused), then down
    experts: int  # every expert of every layer
    attention: int  # q, k, v and o projections of every layer
    router: int
    embedding: int
    lm_head: int

    @property
    def total(self) -> int:
        return self.experts + self.attention + self.router + self.embedding + self.lm_head


def parameter_counts(model: ModelFacts) -> ParameterCounts:
    hidden, layers = model.hidden_size, model.layers
    attention_width = (model.query_heads + 2 * model.kv_heads) * model.head_dim  # q, k, v outputs
    per_layer_attention = hidden * attention_width + model.query_heads * model.head_dim * hidden
    expert = 3 * hidden * model.expert_intermediate_size
    return ParameterCounts(
        expert_each_per_layer=expert,
        experts=expert * model.experts * layers,
        attention=per_layer_attention * layers,
        router=hidden * model.experts * layers,
        embedding=model.vocab_size * hidden,
        lm_head=model.vocab_size * hidden,
    )


@dataclass(frozen=True)
class WeightBytes:
    """Bytes of each part, scaled so that the parts add up to the checkpoint's stated size: the
    checkpoint (FACTS.md) stays the one figure for memory, the shapes only apportion it."""

    expert_each_per_layer: float
    experts: float
    attention: float
    router: float
    embedding: float
    lm_head: float

    @property
    def dense(self) -> float:
        """Everything outside the experts (bf16)."""
        return self.attention + self.router + self.embedding + self.lm_head

    @property
    def total(self) -> float:
        return self.experts + self.dense


def weight_bytes(model: ModelFacts) -> WeightBytes:
    counts = parameter_counts(model)
    expert_bytes = model.expert_weight_bits / 8
    dense_bytes = model.dense_weight_bytes
    computed = counts.experts * expert_bytes + (counts.total - counts.experts) * dense_bytes
    scale = model.checkpoint_bytes / computed
    return WeightBytes(
        expert_each_per_layer=counts.expert_each_per_layer * expert_bytes * scale,
        experts=counts.experts * expert_bytes * scale,
        attention=counts.attention * dense_bytes * scale,
        router=counts.router * dense_bytes * scale,
        embedding=counts.embedding * dense_bytes * scale,
        lm_head=counts.lm_head * dense_bytes * scale,
    )


def attention_dp(runtime: ServingRuntime) -> bool:
    return bool(runtime.options.get("enable_attention_dp"))


def attention_ranks(runtime: ServingRuntime) -> int:
    """Ranks that each run attention for their own sequences: the tensor-parallel size with
    attention data parallelism, otherwise one group of all the replica's GPUs."""
    return runtime.tensor_parallel_size if attention_dp(runtime) else 1


def batch_slots(runtime: ServingRuntime) -> int:
    """Sequences the scheduler may run at once. With attention DP every rank schedules its own
    batch of up to max_batch_size (an assumption this project could not check against a pod)."""
    return runtime.max_batch_size * attention_ranks(runtime)


def weights_bytes_per_gpu(runtime: ServingRuntime) -> float:
    """Experts split over all of a replica's GPUs (expert parallel times MoE tensor parallel is
    the tensor-parallel size); the dense parts split the same way, except that attention data
    parallelism keeps a whole copy of them on every rank (enable_lm_head_tp_in_adp is off by
    default, so the lm_head is copied too)."""
    weights = weight_bytes(runtime.model)
    tp, pp = runtime.tensor_parallel_size, runtime.pipeline_parallel_size
    dense_split = pp * (1 if attention_dp(runtime) else tp)
    return weights.experts / (tp * pp) + weights.dense / dense_split


def tokens_per_block(runtime: ServingRuntime) -> int:
    value = runtime.options.get("kv_cache_config", {}).get("tokens_per_block")
    return int(value) if value else DEFAULT_TOKENS_PER_BLOCK


def in_blocks(tokens: int, block: int) -> int:
    """Tokens a sequence occupies once rounded up to whole KV blocks."""
    return math.ceil(tokens / block) * block


@dataclass(frozen=True)
class CapacityReport:
    runtime: ServingRuntime
    weights_bytes_per_gpu: float
    free_bytes_per_gpu_after_load: float
    kv_pool_bytes_per_replica: float
    kv_bytes_per_token: int  # every layer sized for every token (see kv_layers), whole model
    sliding_kv_bytes_per_sequence: int  # sliding-window layers, at most the window per sequence
    kv_tokens_per_replica: int
    sequences_at_max_seq_len: int
    typical_sequence_tokens: int
    sequences_at_typical_length: int
    decode_bytes_per_step: float
    decode_roofline_tokens_per_s: float
    warnings: tuple[str, ...]
    attention_ranks: int = 1
    batch_slots: int = 0  # sequences the scheduler may run at once (see batch_slots())


def kv_bytes_per_token_per_layer(runtime: ServingRuntime) -> int:
    model = runtime.model
    return 2 * model.kv_heads * model.head_dim * BYTES_PER_KV_ELEMENT  # K and V


def kv_layers(runtime: ServingRuntime) -> tuple[int, int]:
    """(layers that keep KV for every token, layers that keep at most the sliding window).

    TensorRT-LLM 1.2.1's PyTorch backend makes per-window KV pools only when
    kv_cache_config.max_attention_window lists the window sizes; without it every layer is
    sized as full attention, sliding ones included (FACTS.md, PR #5151). With the list, the
    split below is an approximation: the pools share memory in proportion to window x bytes.
    """
    model = runtime.model
    if runtime.options.get("kv_cache_config", {}).get("max_attention_window"):
        return model.full_attention_layers, model.sliding_attention_layers
    return model.full_attention_layers + model.sliding_attention_layers, 0


def kv_bytes_per_sequence(runtime: ServingRuntime, tokens: int) -> int:
    """KV memory one sequence of `tokens` holds, in whole blocks, over all layers."""
    block = tokens_per_block(runtime)
    per_layer = kv_bytes_per_token_per_layer(runtime)
    full_layers, sliding_layers = kv_layers(runtime)
    window = in_blocks(min(tokens, runtime.model.sliding_window_tokens), block)
    return per_layer * (full_layers * in_blocks(tokens, block) + sliding_layers * window)


def free_bytes_per_gpu(runtime: ServingRuntime) -> float:
    return runtime.gpu.memory_bytes - weights_bytes_per_gpu(runtime) - RUNTIME_RESERVE_BYTES_PER_GPU


def kv_pool_bytes_per_replica(runtime: ServingRuntime) -> float:
    gpus = runtime.tensor_parallel_size * runtime.pipeline_parallel_size
    return max(free_bytes_per_gpu(runtime), 0) * runtime.kv_cache_free_gpu_memory_fraction * gpus


def sequences_that_fit(runtime: ServingRuntime, tokens: int) -> int:
    """Sequences of `tokens` (prompt + output) the KV pool holds at once. The default scheduler
    policy, GUARANTEED_NO_EVICT, admits a request only when its blocks for prompt and max_tokens
    fit, so this is the concurrency the cache allows. Attention-DP ranks each fill their own pool."""
    ranks = attention_ranks(runtime)
    per_rank = kv_pool_bytes_per_replica(runtime) / ranks
    return int(per_rank // kv_bytes_per_sequence(runtime, tokens)) * ranks


def plan_capacity(
    runtime: ServingRuntime, *, typical_input_tokens: int, typical_output_tokens: int
) -> CapacityReport:
    """Capacity of one replica; "typical" is the request shape the concurrency figures assume
    (the benchmark's prompt and output lengths, which the caller passes)."""
    model, gpu = runtime.model, runtime.gpu
    weights_per_gpu = weights_bytes_per_gpu(runtime)
    free_per_gpu = free_bytes_per_gpu(runtime)
    kv_pool = kv_pool_bytes_per_replica(runtime)

    per_layer = kv_bytes_per_token_per_layer(runtime)
    full_layers, sliding_layers = kv_layers(runtime)
    per_token = per_layer * full_layers

    def sliding_bytes(tokens: int) -> int:
        return per_layer * sliding_layers * min(tokens, model.sliding_window_tokens)

    typical = typical_input_tokens + typical_output_tokens
    # Decoding one token of one stream reads the active parameters once (at the checkpoint's
    # average bytes per parameter) and that stream's KV cache; tensor-parallel GPUs read their
    # shares at the same time, pipeline stages one after the other. The performance model
    # (performance.py) refines this per part and per batch.
    bytes_per_param = model.checkpoint_bytes / model.total_params
    decode_bytes = model.active_params * bytes_per_param + typical * per_token + sliding_bytes(typical)
    bandwidth = gpu.hbm_bandwidth_bytes_per_s * runtime.tensor_parallel_size

    report_warnings: list[str] = []
    at_typical = sequences_that_fit(runtime, typical)
    slots = batch_slots(runtime)
    if at_typical < slots:
        report_warnings.append(
            f"max_batch_size = {runtime.max_batch_size}"
            + (f" on each of {attention_ranks(runtime)} attention-DP ranks" if attention_dp(runtime) else "")
            + f", but the KV cache holds only {at_typical} sequences of {typical} tokens: the "
            "scheduler will queue the rest; lower max_batch_size or raise "
            "kv_cache_config.free_gpu_memory_fraction"
        )
    if free_per_gpu <= 0:
        report_warnings.append(
            f"the weights ({weights_per_gpu / GIB:.1f} GiB per GPU) leave no memory for a KV cache "
            f"on {gpu.name}; use more GPUs per replica"
        )
    return CapacityReport(
        runtime=runtime,
        weights_bytes_per_gpu=weights_per_gpu,
        free_bytes_per_gpu_after_load=free_per_gpu,
        kv_pool_bytes_per_replica=kv_pool,
        kv_bytes_per_token=per_token,
        sliding_kv_bytes_per_sequence=sliding_bytes(model.sliding_window_tokens),
        kv_tokens_per_replica=int(kv_pool // per_token),
        sequences_at_max_seq_len=sequences_that_fit(runtime, runtime.max_seq_len),
        typical_sequence_tokens=typical,
        sequences_at_typical_length=at_typical,
        decode_bytes_per_step=decode_bytes,
        decode_roofline_tokens_per_s=bandwidth / decode_bytes,
        warnings=tuple(report_warnings),
        attention_ranks=attention_ranks(runtime),
        batch_slots=slots,
    )


def render_capacity_table(report: CapacityReport) -> str:
    """A Markdown table: inputs first, then each figure with the arithmetic behind it."""
    runtime, model, gpu = report.runtime, report.runtime.model, report.runtime.gpu
    gpus = runtime.tensor_parallel_size * runtime.pipeline_parallel_size
    per_layer = kv_bytes_per_token_per_layer(runtime)
    full_layers, sliding_layers = kv_layers(runtime)
    fraction = runtime.kv_cache_free_gpu_memory_fraction
    rows = [
        ("**inputs**", "", ""),
        (
            "model",
            model.hf_id,
            f"{model.total_params / 1e9:.1f} B parameters, {model.active_params / 1e9:.1f} B active",
        ),
        ("checkpoint", f"{model.checkpoint_bytes / GIB:.1f} GiB", "MXFP4 experts"),
        (
            "GPU",
            gpu.name,
            f"{gpu.memory_bytes / 1e9:.0f} GB HBM at {gpu.hbm_bandwidth_bytes_per_s / 1e12:.2f} TB/s",
        ),
        (
            "GPUs per replica",
            str(gpus),
            f"tensor {runtime.tensor_parallel_size} x pipeline {runtime.pipeline_parallel_size}",
        ),
        (
            "KV layout",
            f"{model.kv_heads} KV heads x {model.head_dim} x {BYTES_PER_KV_ELEMENT} B x 2 (K,V)",
            f"{full_layers} layers sized for every token, {sliding_layers} for {model.sliding_window_tokens} tokens"
            + ("" if sliding_layers else " (no max_attention_window: sliding layers are sized as full)"),
        ),
        ("free_gpu_memory_fraction", f"{fraction:g}", "kv_cache_config"),
        (
            "runtime reserve per GPU",
            f"{RUNTIME_RESERVE_BYTES_PER_GPU / GIB:.0f} GiB",
            "estimate: context, activations, CUDA graphs",
        ),
        ("typical sequence", f"{report.typical_sequence_tokens} tokens", "benchmark shape: input + output"),
        ("**figures**", "", ""),
        (
            "weights per GPU",
            f"{report.weights_bytes_per_gpu / GIB:.1f} GiB",
            f"{model.checkpoint_bytes / GIB:.1f} GiB / {gpus}"
            if report.attention_ranks == 1
            else f"experts / {gpus} + a whole copy of the dense parts per attention-DP rank",
        ),
        (
            "free per GPU after load",
            f"{report.free_bytes_per_gpu_after_load / GIB:.1f} GiB",
            f"{gpu.memory_bytes / GIB:.1f} GiB - weights - reserve",
        ),
        (
            "KV pool per replica",
            f"{report.kv_pool_bytes_per_replica / GIB:.1f} GiB",
            f"free x {fraction:g} x {gpus} GPUs",
        ),
        (
            "KV per token",
            f"{report.kv_bytes_per_token / KIB:.0f} KiB",
            f"{per_layer / KIB:.0f} KiB x {full_layers} layers",
        ),
        (
            "sliding KV per sequence",
            f"{report.sliding_kv_bytes_per_sequence / KIB:.0f} KiB",
            f"{per_layer / KIB:.0f} KiB x {sliding_layers} layers x {model.sliding_window_tokens} tokens",
        ),
        ("KV tokens per replica", f"{report.kv_tokens_per_replica:,}", "pool / KV per token"),
        (
            f"sequences of max_seq_len ({runtime.max_seq_len})",
            str(report.sequences_at_max_seq_len),
            f"pool / (len in {tokens_per_block(runtime)}-token blocks x KV per token + sliding)",
        ),
        (
            f"sequences of {report.typical_sequence_tokens} tokens",
            str(report.sequences_at_typical_length),
            f"max_batch_size is {runtime.max_batch_size}"
            + (
                f" per rank, {report.attention_ranks} attention-DP ranks"
                if report.attention_ranks > 1
                else ""
            ),
        ),
        (
            "decode bytes per step (one stream)",
            f"{report.decode_bytes_per_step / 1e9:.2f} GB",
            "active params x checkpoint bytes/param + its KV",
        ),
        (
            "decode roofline, one stream",
            f"{report.decode_roofline_tokens_per_s:,.0f} tokens/s",
            f"{runtime.tensor_parallel_size} x {gpu.hbm_bandwidth_bytes_per_s / 1e12:.2f} TB/s / bytes per step (upper bound)",
        ),
    ]
    lines = ["| quantity | value | how |", "| --- | --- | --- |"]
    lines += [f"| {name} | {value} | {how} |" for name, value, how in rows]
    lines += [f"\nWARNING: {warning}" for warning in report.warnings]
    return "\n".join(lines) + "\n"

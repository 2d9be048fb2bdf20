"""Capacity arithmetic for one server replica: memory, KV cache, concurrency, decode roofline.

Every figure is derived from named inputs (model facts, GPU facts, the runtime's options, and two
stated estimates), and the report prints those inputs beside the figures so a reader can redo the
arithmetic. These are planning estimates, not measurements: the benchmark measures.
"""

from __future__ import annotations

from dataclasses import dataclass

from serving.runtime.hardware import GIB, KIB
from serving.runtime.options import ServingRuntime

# Memory TensorRT-LLM keeps besides weights and KV cache on each GPU (CUDA context, activations
# for max_num_tokens, CUDA graphs, NCCL buffers). An estimate; the server logs the real figure.
RUNTIME_RESERVE_BYTES_PER_GPU = 6 * GIB
BYTES_PER_KV_ELEMENT = 2  # bf16 KV cache (gpt-oss on Hopper)


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


def plan_capacity(
    runtime: ServingRuntime, *, typical_input_tokens: int, typical_output_tokens: int
) -> CapacityReport:
    """Capacity of one replica; "typical" is the request shape the concurrency figures assume
    (the benchmark's prompt and output lengths, which the caller passes)."""
    model, gpu = runtime.model, runtime.gpu
    gpus = runtime.tensor_parallel_size * runtime.pipeline_parallel_size
    # Weights split evenly over the replica's GPUs (tensor, expert and pipeline parallel all
    # divide them; the small replicated parts are inside the runtime reserve).
    weights_per_gpu = model.checkpoint_bytes / gpus
    free_per_gpu = gpu.memory_bytes - weights_per_gpu - RUNTIME_RESERVE_BYTES_PER_GPU
    kv_pool = max(free_per_gpu, 0) * runtime.kv_cache_free_gpu_memory_fraction * gpus

    per_layer = kv_bytes_per_token_per_layer(runtime)
    full_layers, sliding_layers = kv_layers(runtime)
    per_token = per_layer * full_layers

    def sliding_bytes(tokens: int) -> int:
        return per_layer * sliding_layers * min(tokens, model.sliding_window_tokens)

    def sequences_that_fit(tokens: int) -> int:
        return int(kv_pool // (tokens * per_token + sliding_bytes(tokens)))

    typical = typical_input_tokens + typical_output_tokens
    # Decoding one token of one stream reads the active parameters once (at the checkpoint's
    # average bytes per parameter) and that stream's KV cache; tensor-parallel GPUs read their
    # shares at the same time, pipeline stages one after the other.
    bytes_per_param = model.checkpoint_bytes / model.total_params
    decode_bytes = model.active_params * bytes_per_param + typical * per_token + sliding_bytes(typical)
    bandwidth = gpu.hbm_bandwidth_bytes_per_s * runtime.tensor_parallel_size

    report_warnings: list[str] = []
    at_typical = sequences_that_fit(typical)
    if at_typical < runtime.max_batch_size:
        report_warnings.append(
            f"max_batch_size = {runtime.max_batch_size}, but the KV cache holds only {at_typical} "
            f"sequences of {typical} tokens: the scheduler will queue the rest; lower "
            "max_batch_size or raise kv_cache_config.free_gpu_memory_fraction"
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
        sequences_at_max_seq_len=sequences_that_fit(runtime.max_seq_len),
        typical_sequence_tokens=typical,
        sequences_at_typical_length=at_typical,
        decode_bytes_per_step=decode_bytes,
        decode_roofline_tokens_per_s=bandwidth / decode_bytes,
        warnings=tuple(report_warnings),
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
            f"{model.checkpoint_bytes / GIB:.1f} GiB / {gpus}",
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
            "pool / (len x KV per token + sliding)",
        ),
        (
            f"sequences of {report.typical_sequence_tokens} tokens",
            str(report.sequences_at_typical_length),
            f"max_batch_size is {runtime.max_batch_size}",
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

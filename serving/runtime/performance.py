"""Bounds on what one replica layout can do: TTFT and TPOT from below, tokens/s from above.

A roofline model, not a simulation. One forward pass can be no faster than the slowest of three
limits on the busiest GPU: the bytes it must read from HBM over the HBM bandwidth, the
floating-point work over the dense BF16 peak, and the bytes it must receive over NVLink over one
direction of the link. Every input is a model fact, a GPU datasheet figure or a stated
assumption, and `render_performance` prints each with its source, so the arithmetic can be
redone by hand. Nothing here was measured on a GPU; the benchmark measures.

What a decode step of a batch of b sequences reads, per GPU:
- the dense weights (attention projections, router, lm_head; bf16), split over the tensor-
  parallel GPUs, or whole on every rank with attention data parallelism;
- the experts the batch touches: each token picks 4 of 128 experts per layer, so a batch of b
  tokens touches on average E[distinct] = 128 x (1 - (1 - 4/128)^b) of them per layer (routing
  taken as uniform and independent; a skewed router touches fewer, and reads less);
- the KV cache of the batch's context: every token for the 18 full-attention layers, at most the
  128-token window for the 18 sliding ones (what attention reads, whatever the pool allocates).

Compute is taken at the BF16 peak: on Hopper the TRITON MoE backend multiplies bf16 activations
with MXFP4 weights widened to bf16 (Hopper has no FP4 tensor cores), and attention and the KV
cache are bf16. Communication left out (logits gathers, latency of each collective) and overlap
assumed perfect only make the bounds looser, never wrong.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from serving.runtime.capacity import (
    attention_dp,
    attention_ranks,
    batch_slots,
    free_bytes_per_gpu,
    kv_bytes_per_sequence,
    kv_bytes_per_token_per_layer,
    kv_layers,
    kv_pool_bytes_per_replica,
    parameter_counts,
    sequences_that_fit,
    tokens_per_block,
    weight_bytes,
    weights_bytes_per_gpu,
)
from serving.runtime.hardware import GIB, INSTANCE_TYPES, GpuKind, ModelFacts
from serving.runtime.options import ServingRuntime

HOURS = 3600.0


class LayoutError(ValueError):
    """A layout that cannot run; the message names the input, its value and what would work."""


@dataclass(frozen=True)
class RequestShape:
    input_tokens: int
    output_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def mean_decode_context(self) -> float:
        """Tokens in the cache, averaged over a request's decode steps (the prompt, then half
        the output on average)."""
        return self.input_tokens + self.output_tokens / 2


def expected_distinct_experts(experts: int, per_token: int, tokens: int) -> float:
    """Distinct experts a batch of `tokens` touches in one layer, routing uniform and independent:
    each expert is missed by one token with probability 1 - k/E."""
    return experts * (1 - (1 - per_token / experts) ** tokens)


def decode_attention_flops_per_token(model: ModelFacts, context: float) -> float:
    """QK^T and PV for one new token over `context` cached tokens: 2 x 2 x heads x head_dim per
    (query, key) pair, every layer; the sliding layers see at most their window."""
    per_pair = 4 * model.query_heads * model.head_dim
    window = min(context, model.sliding_window_tokens)
    return per_pair * (model.full_attention_layers * context + model.sliding_attention_layers * window)


def prefill_attention_flops(model: ModelFacts, tokens: int) -> float:
    """Causal attention over a prompt of `tokens`: token i (from 1) attends to i keys in a full
    layer, to min(i, window) in a sliding one."""
    per_pair = 4 * model.query_heads * model.head_dim
    full_pairs = tokens * (tokens + 1) / 2
    w = model.sliding_window_tokens
    inside = min(tokens, w)
    sliding_pairs = inside * (inside + 1) / 2 + max(tokens - w, 0) * w
    return per_pair * (
        model.full_attention_layers * full_pairs + model.sliding_attention_layers * sliding_pairs
    )


def kv_read_bytes_per_sequence(model: ModelFacts, per_layer: int, context: float) -> float:
    """KV bytes attention reads for one new token of one sequence."""
    window = min(context, model.sliding_window_tokens)
    return per_layer * (model.full_attention_layers * context + model.sliding_attention_layers * window)


@dataclass(frozen=True)
class StepBound:
    """A lower bound on the time of one forward pass, from what the busiest GPU must do."""

    hbm_bytes: dict[str, float]  # per GPU, by part
    flops: float  # per GPU
    link_bytes: float  # received per GPU over NVLink
    gpu: GpuKind

    @property
    def memory_s(self) -> float:
        return sum(self.hbm_bytes.values()) / self.gpu.hbm_bandwidth_bytes_per_s

    @property
    def compute_s(self) -> float:
        return self.flops / peak_flops(self.gpu)

    @property
    def link_s(self) -> float:
        return self.link_bytes / link_bytes_per_s_one_way(self.gpu) if self.link_bytes else 0.0

    @property
    def seconds(self) -> float:
        return max(self.memory_s, self.compute_s, self.link_s)

    @property
    def limit(self) -> str:
        return max(
            (self.memory_s, "HBM bandwidth"), (self.compute_s, "BF16 compute"), (self.link_s, "NVLink")
        )[1]


def peak_flops(gpu: GpuKind) -> float:
    if not gpu.bf16_dense_flops:
        raise LayoutError(f"no BF16 peak is known for {gpu.name} (serving/runtime/hardware.py)")
    return gpu.bf16_dense_flops


def link_bytes_per_s_one_way(gpu: GpuKind) -> float:
    if not gpu.nvlink_bytes_per_s:
        raise LayoutError(f"no NVLink bandwidth is known for {gpu.name} (serving/runtime/hardware.py)")
    return gpu.nvlink_bytes_per_s / 2  # NVIDIA counts both directions


def _collective_bytes(runtime: ServingRuntime, tokens: float) -> float:
    """Bytes each GPU must receive per forward pass for `tokens` tokens of hidden state (bf16).
    Without attention DP each layer all-reduces twice (after attention, after the MoE); with it,
    once (the MoE's gather and reduce-scatter). Whatever the algorithm, a GPU receives at least
    the others' (n - 1)/n share of each reduced tensor."""
    n = runtime.tensor_parallel_size
    if n == 1:
        return 0.0
    per_layer = 1 if attention_dp(runtime) else 2
    tensor = tokens * runtime.model.hidden_size * runtime.model.dense_weight_bytes
    return runtime.model.layers * per_layer * tensor * (n - 1) / n


def decode_step(runtime: ServingRuntime, batch: int, context: float) -> StepBound:
    """One decode step of `batch` sequences holding `context` tokens each, busiest GPU."""
    model, tp = runtime.model, runtime.tensor_parallel_size
    weights, counts = weight_bytes(model), parameter_counts(model)
    adp = attention_dp(runtime)
    # With attention DP the busiest rank holds ceil(b / ranks) of the batch's sequences.
    local = math.ceil(batch / attention_ranks(runtime))
    dense_read = weights.attention + weights.router + weights.lm_head  # the embedding is a lookup
    distinct = expected_distinct_experts(model.experts, model.experts_per_token, batch)
    kv = kv_read_bytes_per_sequence(model, kv_bytes_per_token_per_layer(runtime), context)
    hbm = {
        "dense weights": dense_read if adp else dense_read / tp,
        "experts touched": distinct * model.layers * weights.expert_each_per_layer / tp,
        "KV cache read": local * kv if adp else batch * kv / tp,
    }
    dense_flops = 2 * (counts.attention + counts.router + counts.lm_head) + decode_attention_flops_per_token(
        model, context
    )
    expert_flops = 2 * model.experts_per_token * counts.expert_each_per_layer * model.layers
    flops = (local * dense_flops if adp else batch * dense_flops / tp) + batch * expert_flops / tp
    return StepBound(hbm, flops, _collective_bytes(runtime, batch), runtime.gpu)


def prefill_step(runtime: ServingRuntime, input_tokens: int) -> StepBound:
    """The prefill of one prompt on an otherwise idle replica, in max_num_tokens chunks: each
    chunk reads the weights it touches; the prompt's KV is written once."""
    model, tp = runtime.model, runtime.tensor_parallel_size
    weights, counts = weight_bytes(model), parameter_counts(model)
    adp = attention_dp(runtime)
    chunks = math.ceil(input_tokens / runtime.max_num_tokens)
    chunk_tokens = min(input_tokens, runtime.max_num_tokens)
    dense_read = weights.attention + weights.router + weights.lm_head
    distinct = expected_distinct_experts(model.experts, model.experts_per_token, chunk_tokens)
    kv_written = kv_bytes_per_sequence(runtime, input_tokens)
    hbm = {
        "dense weights": chunks * (dense_read if adp else dense_read / tp),
        "experts touched": chunks * distinct * model.layers * weights.expert_each_per_layer / tp,
        "KV cache written": kv_written if adp else kv_written / tp,
    }
    # One prompt runs on one attention-DP rank: its dense work is not shared out.
    dense_flops = (
        2 * input_tokens * (counts.attention + counts.router)
        + 2 * counts.lm_head
        + prefill_attention_flops(model, input_tokens)
    )
    expert_flops = 2 * input_tokens * model.experts_per_token * counts.expert_each_per_layer * model.layers
    flops = (dense_flops if adp else dense_flops / tp) + expert_flops / tp
    return StepBound(hbm, flops, _collective_bytes(runtime, input_tokens), runtime.gpu)


def request_flops(runtime: ServingRuntime, shape: RequestShape) -> float:
    """All the floating-point work of one request, prefill and decode, over the whole replica."""
    model, counts = runtime.model, parameter_counts(runtime.model)
    per_token_weights = 2 * (
        counts.attention
        + counts.router
        + model.experts_per_token * counts.expert_each_per_layer * model.layers
    )
    prefill = (
        shape.input_tokens * per_token_weights
        + 2 * counts.lm_head
        + prefill_attention_flops(model, shape.input_tokens)
    )
    decode = shape.output_tokens * (
        per_token_weights
        + 2 * counts.lm_head
        + decode_attention_flops_per_token(model, shape.mean_decode_context)
    )
    return prefill + decode


def usd_per_gpu_hour(gpu: GpuKind) -> tuple[float | None, str]:
    """The on-demand price of one GPU-hour: the node's price over its GPUs (hardware.py)."""
    for instance in INSTANCE_TYPES.values():
        if instance.gpu == gpu and instance.on_demand_usd_per_hour is not None:
            return (
                instance.on_demand_usd_per_hour / instance.gpus,
                f"{instance.name} on demand, us-east-1: {instance.on_demand_usd_per_hour:g} USD/h / "
                f"{instance.gpus} GPUs (FACTS.md)",
            )
    return None, f"no checked on-demand price for a node of {gpu.name}"


@dataclass(frozen=True)
class Bounds:
    """The bounds of one replica at one concurrency, with what they rest on."""

    runtime: ServingRuntime
    shape: RequestShape
    concurrency: int  # requests in flight on this replica
    batch: int  # of those, running at once (the rest queue)
    max_concurrency: int
    kv_sequences: int  # requests of this shape the KV cache holds, whatever max_batch_size says
    kv_tokens_per_replica: int
    weights_bytes_per_gpu: float
    free_bytes_per_gpu: float
    prefill: StepBound
    decode: StepBound
    request_flops: float
    ttft_s_lower_bound: float
    tpot_s_lower_bound: float
    latency_s_lower_bound: float
    requests_per_s_upper_bound: float
    output_tokens_per_s_per_user_upper_bound: float
    output_tokens_per_s_per_replica_upper_bound: float
    output_tokens_per_s_per_gpu_upper_bound: float
    usd_per_gpu_hour: float | None
    price_source: str
    usd_per_million_output_tokens_lower_bound: float | None
    throughput_limit: str
    notes: tuple[str, ...] = field(default=())

    @property
    def gpus(self) -> int:
        return self.runtime.tensor_parallel_size * self.runtime.pipeline_parallel_size


def check_layout(runtime: ServingRuntime) -> None:
    """Refuse what the model cannot bound: weights that leave no KV cache, pipeline stages."""
    if runtime.pipeline_parallel_size != 1:
        raise LayoutError(
            f"pipeline_parallel_size = {runtime.pipeline_parallel_size}: the performance model covers "
            "tensor and expert parallelism only; use 1"
        )
    if free_bytes_per_gpu(runtime) <= 0:
        raise LayoutError(
            f"tensor parallel {runtime.tensor_parallel_size}: the weights "
            f"({weights_bytes_per_gpu(runtime) / GIB:.1f} GiB per GPU) and the runtime reserve leave no "
            f"memory for a KV cache on {runtime.gpu.name}; use more GPUs per replica"
        )
    if sequences_that_fit(runtime, 1) == 0:
        raise LayoutError(
            f"tensor parallel {runtime.tensor_parallel_size}: the KV cache on {runtime.gpu.name} "
            "cannot hold one sequence; use more GPUs per replica"
        )


def max_concurrency(runtime: ServingRuntime, shape: RequestShape) -> int:
    """Requests that run at once: what the KV cache holds at the full request length, at most
    the scheduler's batch slots."""
    return min(sequences_that_fit(runtime, shape.total_tokens), batch_slots(runtime))


def bound(runtime: ServingRuntime, shape: RequestShape, concurrency: int | None = None) -> Bounds:
    """Bounds for `concurrency` requests of `shape` in flight on one replica (None: the most
    that run at once). Closed loop: a finished request is replaced at once."""
    check_layout(runtime)
    if shape.input_tokens < 1 or shape.output_tokens < 1:
        raise LayoutError(f"request shape {shape}: input and output tokens must be at least 1")
    fits = max_concurrency(runtime, shape)
    if fits == 0:
        raise LayoutError(
            f"a request of {shape.total_tokens} tokens does not fit in the KV cache of "
            f"{runtime.gpu.name} x {runtime.tensor_parallel_size}; use more GPUs or shorter requests"
        )
    in_flight = fits if concurrency is None else concurrency
    batch = min(in_flight, fits)
    notes: list[str] = []
    kv_sequences = sequences_that_fit(runtime, shape.total_tokens)
    if kv_sequences < batch_slots(runtime):
        notes.append(
            f"max_batch_size allows {batch_slots(runtime)} sequences at once, but the KV cache holds only "
            f"{kv_sequences} of {shape.total_tokens} tokens: lower max_batch_size or give the cache more memory"
        )
    if in_flight > fits:
        notes.append(
            f"{in_flight} requests in flight, but only {fits} run at once (KV cache and max_batch_size): "
            "the rest queue, which the TTFT bound does not count"
        )
    gpus = runtime.tensor_parallel_size
    prefill = prefill_step(runtime, shape.input_tokens)
    decode = decode_step(runtime, batch, shape.mean_decode_context)
    ttft = prefill.seconds
    tpot = decode.seconds
    in_service = ttft + (shape.output_tokens - 1) * tpot
    # Over a whole run the replica can finish requests no faster than its GPUs can do their
    # work: the floating-point work of each (spread evenly, the best case), and its share of the
    # decode steps' reads (a step serves `batch` requests; prefill reads ride on those steps).
    flops = request_flops(runtime, shape)
    work_s = max(
        flops / gpus / peak_flops(runtime.gpu),
        shape.output_tokens * sum(decode.hbm_bytes.values()) / batch / runtime.gpu.hbm_bandwidth_bytes_per_s,
    )
    gpu_rate = 1 / work_s
    service_rate = batch / in_service
    rate = min(gpu_rate, service_rate)
    limit = (
        "each request's time in service (TTFT + decode steps) at this concurrency"
        if service_rate <= gpu_rate
        else "the GPUs' work per request (prefill compute and decode reads)"
    )
    latency = max(in_service, in_flight / rate)  # Little's law: in flight = rate x latency
    per_replica = rate * shape.output_tokens
    per_gpu = per_replica / gpus
    price, price_source = usd_per_gpu_hour(runtime.gpu)
    usd = None if price is None else price / HOURS / per_gpu * 1e6
    return Bounds(
        runtime=runtime,
        shape=shape,
        concurrency=in_flight,
        batch=batch,
        max_concurrency=fits,
        kv_sequences=kv_sequences,
        kv_tokens_per_replica=_kv_tokens(runtime),
        weights_bytes_per_gpu=weights_bytes_per_gpu(runtime),
        free_bytes_per_gpu=free_bytes_per_gpu(runtime),
        prefill=prefill,
        decode=decode,
        request_flops=flops,
        ttft_s_lower_bound=ttft,
        tpot_s_lower_bound=tpot,
        latency_s_lower_bound=latency,
        requests_per_s_upper_bound=rate,
        output_tokens_per_s_per_user_upper_bound=1 / tpot,
        output_tokens_per_s_per_replica_upper_bound=per_replica,
        output_tokens_per_s_per_gpu_upper_bound=per_gpu,
        usd_per_gpu_hour=price,
        price_source=price_source,
        usd_per_million_output_tokens_lower_bound=usd,
        throughput_limit=limit,
        notes=tuple(notes),
    )


def _kv_tokens(runtime: ServingRuntime) -> int:
    """Tokens the pool holds for the layers sized for every token (capacity.py's figure)."""
    full_layers, _ = kv_layers(runtime)
    return int(kv_pool_bytes_per_replica(runtime) // (kv_bytes_per_token_per_layer(runtime) * full_layers))


def split_evenly(total: int, parts: int) -> list[int]:
    """`total` requests in flight spread as evenly as possible over `parts` replicas."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


@dataclass(frozen=True)
class TemplateTableBounds:
    """The template's four metrics (Baseten's definitions, FACTS.md) as modelled bounds."""

    concurrency: int
    replicas: int
    per_replica: tuple[Bounds, ...]
    average_latency_s_lower_bound: float
    average_ttft_s_lower_bound: float
    average_perceived_tokens_per_second_upper_bound: float
    average_overall_throughput_upper_bound: float
    # Beside the template's four, vLLM's two the bench also reports.
    tpot_s_lower_bound: float
    output_tokens_per_s_upper_bound: float


def template_table_bounds(
    runtime: ServingRuntime, shape: RequestShape, concurrency: int, replicas: int
) -> TemplateTableBounds:
    """The bench's closed loop of `concurrency` streams over `replicas` replicas, spread as
    evenly as the Service could (an uneven spread is slower at these sizes: per-replica work
    grows faster than linearly in its streams)."""
    loads = [c for c in split_evenly(concurrency, replicas) if c > 0]
    per_replica = tuple(bound(runtime, shape, c) for c in loads)
    # Requests finished per replica are in proportion to its rate, so the mean latency over
    # requests is (streams) / (sum of rates); each rate is at most its bound.
    rate = sum(b.requests_per_s_upper_bound for b in per_replica)
    latency = max(sum(loads) / rate, min(b.latency_s_lower_bound for b in per_replica))
    perceived = max(shape.total_tokens / b.latency_s_lower_bound for b in per_replica)
    return TemplateTableBounds(
        concurrency=concurrency,
        replicas=replicas,
        per_replica=per_replica,
        average_latency_s_lower_bound=latency,
        average_ttft_s_lower_bound=min(b.ttft_s_lower_bound for b in per_replica),
        average_perceived_tokens_per_second_upper_bound=perceived,
        # Baseten's "overall throughput" is the average perceived rate times the concurrency.
        average_overall_throughput_upper_bound=perceived * concurrency,
        tpot_s_lower_bound=min(b.tpot_s_lower_bound for b in per_replica),
        output_tokens_per_s_upper_bound=sum(
            b.output_tokens_per_s_per_replica_upper_bound for b in per_replica
        ),
    )


def bounds_json(bounds: Bounds) -> dict[str, object]:
    """The `--json` object: the keys issue 14 names, then what they rest on."""
    runtime = bounds.runtime
    return {
        "kind": "modelled bounds, not measurements",
        "gpu": runtime.gpu.name,
        "tensor_parallel": runtime.tensor_parallel_size,
        "expert_parallel": runtime.moe_expert_parallel_size,
        "attention_dp": attention_dp(runtime),
        "input_tokens": bounds.shape.input_tokens,
        "output_tokens": bounds.shape.output_tokens,
        "concurrency": bounds.concurrency,
        "kv_tokens_per_replica": bounds.kv_tokens_per_replica,
        "max_concurrency": bounds.max_concurrency,
        "kv_sequences_that_fit": bounds.kv_sequences,
        "ttft_s_lower_bound": bounds.ttft_s_lower_bound,
        "tpot_s_lower_bound": bounds.tpot_s_lower_bound,
        "latency_s_lower_bound": bounds.latency_s_lower_bound,
        "output_tokens_per_s_per_user_upper_bound": bounds.output_tokens_per_s_per_user_upper_bound,
        "output_tokens_per_s_per_replica_upper_bound": bounds.output_tokens_per_s_per_replica_upper_bound,
        "output_tokens_per_s_per_gpu_upper_bound": bounds.output_tokens_per_s_per_gpu_upper_bound,
        "usd_per_gpu_hour": bounds.usd_per_gpu_hour,
        "usd_per_million_output_tokens_lower_bound": bounds.usd_per_million_output_tokens_lower_bound,
        "weights_bytes_per_gpu": bounds.weights_bytes_per_gpu,
        "free_bytes_per_gpu_after_load": bounds.free_bytes_per_gpu,
        "decode_step_limit": bounds.decode.limit,
        "prefill_limit": bounds.prefill.limit,
        "throughput_limit": bounds.throughput_limit,
        "notes": list(bounds.notes),
    }


def template_json(table: TemplateTableBounds, shape: RequestShape) -> dict[str, object]:
    """What the bench's `--bounds` option reads: the scenario, then each metric under the key the
    bench's JSON summary gives it, with the bound's direction."""
    return {
        "kind": "modelled bounds, not measurements",
        "concurrency": table.concurrency,
        "replicas": table.replicas,
        "input_tokens": shape.input_tokens,
        "output_tokens": shape.output_tokens,
        "average_latency_s": {"bound": "lower", "value": table.average_latency_s_lower_bound},
        "average_ttft_s": {"bound": "lower", "value": table.average_ttft_s_lower_bound},
        "average_perceived_tokens_per_second": {
            "bound": "upper",
            "value": table.average_perceived_tokens_per_second_upper_bound,
        },
        "average_overall_throughput": {
            "bound": "upper",
            "value": table.average_overall_throughput_upper_bound,
        },
        "tpot_s": {"bound": "lower", "value": table.tpot_s_lower_bound},
        "output_throughput_tokens_per_s": {"bound": "upper", "value": table.output_tokens_per_s_upper_bound},
    }


def _fmt_bytes(value: float) -> str:
    return f"{value / 1e9:.3g} GB"


def render_performance(bounds: Bounds) -> str:
    """Markdown: every input with its source, then each bound with the arithmetic behind it."""
    runtime, model, gpu, shape = bounds.runtime, bounds.runtime.model, bounds.runtime.gpu, bounds.shape
    weights, counts = weight_bytes(model), parameter_counts(model)
    tp, ep = runtime.tensor_parallel_size, runtime.moe_expert_parallel_size
    per_layer = kv_bytes_per_token_per_layer(runtime)
    full_layers, sliding_layers = kv_layers(runtime)
    distinct = expected_distinct_experts(model.experts, model.experts_per_token, bounds.batch)
    inputs: list[tuple[str, str, str]] = [
        ("GPU", gpu.name, "hardware.py"),
        (
            "HBM",
            f"{gpu.memory_bytes / 1e9:.0f} GB at {gpu.hbm_bandwidth_bytes_per_s / 1e12:.2f} TB/s",
            "FACTS.md",
        ),
        (
            "dense peak",
            f"BF16 {peak_flops(gpu) / 1e12:.0f} TFLOPS (FP8 {(gpu.fp8_dense_flops or 0) / 1e12:.0f}, "
            "unused: bf16 activations)",
            gpu.source,
        ),
        ("NVLink", f"{link_bytes_per_s_one_way(gpu) / 1e9:.0f} GB/s each way", gpu.source),
        (
            "layout",
            f"tensor parallel {tp}, expert parallel {ep}, attention DP "
            + ("on" if attention_dp(runtime) else "off"),
            "the runtime's options",
        ),
        (
            "model",
            f"{model.layers} layers ({model.full_attention_layers} full, {model.sliding_attention_layers} "
            f"sliding over {model.sliding_window_tokens}), hidden {model.hidden_size}, {model.query_heads} "
            f"query / {model.kv_heads} KV heads x {model.head_dim}, {model.experts} experts top-"
            f"{model.experts_per_token}, SwiGLU width {model.expert_intermediate_size}, vocab {model.vocab_size}",
            "config.json: FACTS.md; SwiGLU width and vocab as in transformers' GptOssConfig",
        ),
        (
            "parameters",
            f"experts {counts.experts / 1e9:.2f} B ({counts.expert_each_per_layer / 1e6:.2f} M each), attention "
            f"{counts.attention / 1e9:.3f} B, router {counts.router / 1e9:.3f} B, embedding and lm_head "
            f"{counts.embedding / 1e9:.3f} B each",
            "from the shapes above; total 116.8 B (FACTS.md)",
        ),
        (
            "weight bytes",
            f"experts {_fmt_bytes(weights.experts)} ({model.expert_weight_bits} bits each, "
            f"{weights.expert_each_per_layer / 1e6:.1f} MB an expert), dense {_fmt_bytes(weights.dense)} (bf16)",
            f"apportioned from the {model.checkpoint_bytes / GIB:.1f} GiB checkpoint (FACTS.md)",
        ),
        (
            "KV cache",
            f"{per_layer / 1024:.0f} KiB a token a layer; {full_layers} layers sized for every token",
            "bf16, FACTS.md; max_attention_window " + ("set" if sliding_layers else "unset"),
        ),
        (
            "request",
            f"{shape.input_tokens} in, {shape.output_tokens} out; decode context {shape.mean_decode_context:g} "
            "tokens on average",
            "the command's arguments",
        ),
        (
            "price",
            "n/a" if bounds.usd_per_gpu_hour is None else f"{bounds.usd_per_gpu_hour:.2f} USD per GPU-hour",
            bounds.price_source,
        ),
    ]

    def step_rows(name: str, step: StepBound) -> list[tuple[str, str, str]]:
        parts = ", ".join(f"{part} {_fmt_bytes(value)}" for part, value in step.hbm_bytes.items())
        return [
            (f"{name}: HBM reads per GPU", _fmt_bytes(sum(step.hbm_bytes.values())), parts),
            (f"{name}: memory time", f"{step.memory_s * 1e3:.3f} ms", "bytes / HBM bandwidth"),
            (
                f"{name}: compute per GPU",
                f"{step.flops / 1e12:.3f} TFLOP",
                f"{step.compute_s * 1e3:.3f} ms at the BF16 peak",
            ),
            (
                f"{name}: NVLink per GPU",
                _fmt_bytes(step.link_bytes),
                f"{step.link_s * 1e3:.3f} ms; all-reduces of the hidden state, (n-1)/n received",
            ),
        ]

    figures: list[tuple[str, str, str]] = [
        (
            "weights per GPU",
            f"{bounds.weights_bytes_per_gpu / GIB:.1f} GiB",
            "experts / TP + dense / (TP, or 1 with attention DP)",
        ),
        (
            "free per GPU after load",
            f"{bounds.free_bytes_per_gpu / GIB:.1f} GiB",
            "HBM - weights - runtime reserve (capacity.py)",
        ),
        ("KV tokens per replica", f"{bounds.kv_tokens_per_replica:,}", "KV pool / KV per token"),
        (
            "KV headroom",
            f"{bounds.kv_sequences:,} requests",
            f"of {shape.total_tokens} tokens, in {tokens_per_block(runtime)}-token blocks, that the KV cache holds",
        ),
        (
            "max concurrency",
            str(bounds.max_concurrency),
            f"min(sequences of {shape.total_tokens} tokens the KV cache holds, {batch_slots(runtime)} batch slots)",
        ),
        (
            "in flight / running",
            f"{bounds.concurrency} / {bounds.batch}",
            "running at once is at most max concurrency",
        ),
        *step_rows("prefill", bounds.prefill),
        (
            "**TTFT lower bound**",
            f"{bounds.ttft_s_lower_bound * 1e3:.1f} ms",
            f"prefill alone, limited by {bounds.prefill.limit}",
        ),
        (
            "experts touched per layer",
            f"{distinct:.1f} of {model.experts}",
            f"{model.experts} x (1 - (1 - {model.experts_per_token}/{model.experts})^{bounds.batch})",
        ),
        *step_rows(f"decode step (batch {bounds.batch})", bounds.decode),
        (
            "**TPOT lower bound**",
            f"{bounds.tpot_s_lower_bound * 1e3:.2f} ms",
            f"one decode step, limited by {bounds.decode.limit}",
        ),
        (
            "latency lower bound",
            f"{bounds.latency_s_lower_bound:.2f} s",
            f"max(TTFT + {shape.output_tokens - 1} x TPOT, in flight / request rate)",
        ),
        (
            "work per request",
            f"{bounds.request_flops / 1e12:.1f} TFLOP",
            "prefill and decode, whole replica",
        ),
        (
            "request rate upper bound",
            f"{bounds.requests_per_s_upper_bound:.3f} /s",
            f"limited by {bounds.throughput_limit}",
        ),
        (
            "**output tokens/s per user, upper bound**",
            f"{bounds.output_tokens_per_s_per_user_upper_bound:,.0f}",
            "1 / TPOT",
        ),
        (
            "**output tokens/s per GPU, upper bound**",
            f"{bounds.output_tokens_per_s_per_gpu_upper_bound:,.0f}",
            f"{bounds.output_tokens_per_s_per_replica_upper_bound:,.0f} per replica / {tp} GPUs",
        ),
        (
            "**USD per million output tokens, lower bound**",
            "n/a"
            if bounds.usd_per_million_output_tokens_lower_bound is None
            else f"{bounds.usd_per_million_output_tokens_lower_bound:.3f}",
            "GPU-hour price / 3600 / tokens/s per GPU x 1e6",
        ),
    ]
    lines = [
        "Modelled bounds (nothing here was measured on a GPU).",
        "",
        "| input | value | source |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {name} | {value} | {source} |" for name, value, source in inputs]
    lines += ["", "| figure | value | how |", "| --- | --- | --- |"]
    lines += [f"| {name} | {value} | {how} |" for name, value, how in figures]
    lines += [f"\nNOTE: {note}" for note in bounds.notes]
    return "\n".join(lines) + "\n"


def render_template_table(table: TemplateTableBounds, shape: RequestShape, requests: int) -> str:
    """The template's table with modelled bounds in place of its "NA"."""
    header = (
        f"Scenario: {requests} requests, {table.concurrency} concurrent over {table.replicas} replica(s) "
        f"({'/'.join(str(b.concurrency) for b in table.per_replica)} each), {shape.input_tokens} input tokens, "
        f"{shape.output_tokens} output tokens"
    )
    rows = [
        ("Average latency", f">= {table.average_latency_s_lower_bound:.2f} s"),
        ("Average TTFT", f">= {table.average_ttft_s_lower_bound * 1e3:.0f} ms"),
        (
            "Average perceived tokens per second",
            f"<= {table.average_perceived_tokens_per_second_upper_bound:,.0f}",
        ),
        ("Average overall throughput (tokens/s)", f"<= {table.average_overall_throughput_upper_bound:,.0f}"),
    ]
    lines = [header, "", "| metric | modelled bound |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines) + "\n"


def pick(options: Sequence[Bounds]) -> Bounds:
    """The cheapest per output token (most tokens/s per GPU), then the fastest per user."""
    return max(options, key=lambda b: (b.output_tokens_per_s_per_gpu_upper_bound, -b.tpot_s_lower_bound))

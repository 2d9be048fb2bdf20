"""The TensorRT-LLM runtime of the server: typed settings, validation and renderers.

Defaults reproduce the template's table (shared FACTS.md) exactly, plus what gpt-oss needs on
Hopper GPUs. A stack overrides any TensorRT-LLM 1.2 LLM-API field with a nested mapping that is
merged over these defaults; the result is validated here, with the same refusal of unknown keys
that TensorRT-LLM applies (every one of its config classes forbids extra fields), but at preview
time instead of after a p5 node booted and the weights came down.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from serving.runtime import schema
from serving.runtime.hardware import GPT_OSS_120B, H100_SXM, MODELS, GpuKind, ModelFacts

# NVIDIA's container of the release whose option names serving/schema.py holds; a release
# tag, never `latest` (a preview must show what runs).
DEFAULT_IMAGE = schema.CONTAINER_IMAGE
DEFAULT_PORT = 8000
# The GPUs one replica gets in the template ("on 2 H100s").
DEFAULT_GPUS_PER_REPLICA = 2
# Where the container reads its options file (mounted from a ConfigMap).
OPTIONS_FILE_NAME = "extra-llm-api-options.yaml"

# The template's table, in TensorRT-LLM 1.2 field names, plus the Hopper requirements for
# gpt-oss (MoE backend TRITON; bf16 KV cache, which `dtype: auto` gives for this checkpoint)
# and trust_remote_code, which the original template also sets.
TEMPLATE_OPTIONS: dict[str, Any] = {
    "tensor_parallel_size": 2,
    "moe_expert_parallel_size": 2,
    "max_batch_size": 64,
    "max_seq_len": 98304,
    "enable_chunked_prefill": True,
    "max_num_tokens": 8192,
    "trust_remote_code": True,
    "cuda_graph_config": {"enable_padding": True},
    "kv_cache_config": {
        "free_gpu_memory_fraction": 0.8,
        "enable_block_reuse": True,
        "dtype": "auto",
    },
    "moe_config": {"backend": "TRITON"},
}

# What the metrics need (FACTS.md, TensorRT-LLM 1.2.1): request-level Prometheus series on
# /prometheus/metrics, and the iteration stats (running and queued requests, KV blocks, GPU
# memory) on /metrics, which the pod's exporter alone reads. Not tuning: merged after the
# template, under the stack's own trtllmOptions, which may turn them off.
SERVER_METRICS_OPTIONS: dict[str, Any] = {
    "return_perf_metrics": True,
    "enable_iter_perf_stats": True,
}

# The LLM-API fields that name the model repository's revision (weights and tokenizer).
REVISION_OPTIONS = ("revision", "tokenizer_revision")

# The image must name a release tag or a digest: an unpinned image changes under a running stack.
_PINNED_IMAGE = re.compile(
    r"^(?:[^\s/:@]+(?::[0-9]+)?/)?"  # registry, with an optional port (registry:5000/)
    r"[^\s:@]+"  # repository path
    r"(?::[0-9][\w.-]*(?:@sha256:[0-9a-f]{64})?|@sha256:[0-9a-f]{64})$"  # release tag and/or digest
)


class RuntimeConfigError(ValueError):
    """Every problem found in a runtime configuration, each naming the option and the value."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid TensorRT-LLM configuration:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class ServingRuntime:
    """One validated server configuration: what runs, where, with which LLM-API options."""

    model: ModelFacts
    image: str
    port: int
    gpu: GpuKind
    gpus_per_replica: int
    options: Mapping[str, Any] = field(repr=False)

    @property
    def tensor_parallel_size(self) -> int:
        return int(self.options.get("tensor_parallel_size", 1))

    @property
    def pipeline_parallel_size(self) -> int:
        return int(self.options.get("pipeline_parallel_size", 1))

    @property
    def moe_expert_parallel_size(self) -> int | None:
        value = self.options.get("moe_expert_parallel_size")
        return None if value is None else int(value)

    @property
    def max_batch_size(self) -> int:
        return int(self.options["max_batch_size"])

    @property
    def max_seq_len(self) -> int:
        return int(self.options["max_seq_len"])

    @property
    def max_num_tokens(self) -> int:
        return int(self.options["max_num_tokens"])

    @property
    def kv_cache_free_gpu_memory_fraction(self) -> float:
        return float(self.options.get("kv_cache_config", {}).get("free_gpu_memory_fraction", 0.9))

    @property
    def served_model_name(self) -> str:
        # 1.2 has no served-model-name option: /v1/models lists the model argument as given.
        return self.model.hf_id


def merge_options(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge `overrides` over `defaults`.

    A `null` override is kept as null: TensorRT-LLM gives it a meaning of its own where the field
    allows it (`cuda_graph_config: null` turns CUDA graphs off), and refuses it where not.
    """
    merged = copy.deepcopy(dict(defaults))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_options(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def build_runtime(
    overrides: Mapping[str, Any] | None = None,
    *,
    model: str = GPT_OSS_120B.hf_id,
    image: str = DEFAULT_IMAGE,
    port: int = DEFAULT_PORT,
    gpu: GpuKind = H100_SXM,
    gpus_per_replica: int = DEFAULT_GPUS_PER_REPLICA,
    revision: str | None = None,
) -> ServingRuntime:
    """Merge `overrides` over the template and validate; raises RuntimeConfigError.

    `revision`, a commit of the model's repository, pins what is downloaded and served: the
    download step fetches that commit and the server loads it (revision and tokenizer_revision
    in the options file), so every node serves the same weights and a new revision rolls pods.
    """
    problems: list[str] = []
    if not isinstance(overrides, Mapping) and overrides is not None:
        raise RuntimeConfigError([f"options = {overrides!r}: expected a mapping of option names"])
    for key in REVISION_OPTIONS:
        if key in (overrides or {}):
            problems.append(
                f"{key}: set by the stack's modelRevision, which the download uses too; set that instead"
            )
    if revision is not None and not re.fullmatch(r"[0-9a-f]{40}", str(revision)):
        problems.append(
            f"revision = {revision!r}: a full commit hash of the model repository (40 hex digits), "
            "so that every node downloads and serves the same weights; a branch such as main moves"
        )
    options = merge_options(merge_options(TEMPLATE_OPTIONS, SERVER_METRICS_OPTIONS), overrides or {})
    if revision is not None:
        options.update(dict.fromkeys(REVISION_OPTIONS, revision))
    problems += _check_known_fields(options, schema.TOP_LEVEL, path="")
    facts = MODELS.get(model)
    if facts is None:
        problems.append(f"model = {model!r}: known models are {', '.join(MODELS)}")
        facts = GPT_OSS_120B
    if not _PINNED_IMAGE.match(image or ""):
        problems.append(
            f"image = {image!r}: pin a release tag or digest, e.g. {DEFAULT_IMAGE} "
            "(never latest or an untagged image)"
        )
    if not isinstance(port, int) or not 1024 <= port <= 65535:
        problems.append(f"port = {port!r}: use an unprivileged port from 1024 to 65535, e.g. {DEFAULT_PORT}")
    if not problems:  # the semantic checks need well-typed values
        problems += _check_semantics(options, facts, gpu, gpus_per_replica)
    if problems:
        raise RuntimeConfigError(problems)
    return ServingRuntime(
        model=facts,
        image=image,
        port=port,
        gpu=gpu,
        gpus_per_replica=gpus_per_replica,
        options=options,
    )


def _check_known_fields(values: Mapping[str, Any], table: str, path: str) -> list[str]:
    """Refuse unknown keys (with a did-you-mean) and values of the wrong kind, recursively."""
    problems: list[str] = []
    known = schema.fields_of(table)
    for key, value in values.items():
        where = f"{path}{key}"
        spec = known.get(key)
        if spec is None:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = (
                f"did you mean {path}{close[0]}?"
                if close
                else (
                    f"TensorRT-LLM {schema.TRTLLM_VERSION} accepts none such"
                    + (f" in {path.rstrip('.')}" if path else " at the top level")
                )
            )
            problems.append(f"{where}: unknown option ({hint})")
            continue
        if value is None:
            if not spec.nullable:
                problems.append(f"{where} = null: TensorRT-LLM requires a value here; remove the override")
            continue
        if spec.kind == "object":
            if not isinstance(value, Mapping):
                problems.append(f"{where} = {value!r}: expected a mapping of {spec.nested} fields")
            elif spec.nested is not None:
                problems += _check_known_fields(value, spec.nested, path=f"{where}.")
            continue
        problem = _kind_problem(value, spec)
        if problem:
            problems.append(f"{where} = {value!r}: {problem}")
    return problems


def _kind_problem(value: Any, spec: schema.Field) -> str | None:
    kind = spec.kind
    if kind == "bool" and not isinstance(value, bool):
        return "expected true or false"
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        return "expected a whole number"
    if kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return "expected a number"
    if kind == "str" and not isinstance(value, str):
        return "expected a string"
    if kind == "list[int]" and not (
        isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return "expected a list of whole numbers"
    if kind == "list[str]" and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return "expected a list of strings"
    if kind == "dict" and not isinstance(value, Mapping):
        return "expected a mapping"
    if spec.choices and not schema.accepts_choice(spec, value):
        return "use one of " + ", ".join(str(c) for c in spec.choices)
    if spec.item_choices and isinstance(value, list):
        unknown = [item for item in value if item not in spec.item_choices]
        if unknown:
            return f"{unknown} not among " + ", ".join(spec.item_choices)
    return None


def _check_semantics(
    options: Mapping[str, Any], facts: ModelFacts, gpu: GpuKind, gpus_per_replica: int
) -> list[str]:
    """Combinations TensorRT-LLM (or the hardware) would reject, found before deployment."""
    problems: list[str] = []
    # Unset means 1; a 0 stays 0, so the message quotes what the stack wrote.
    tp = options.get("tensor_parallel_size", 1)
    pp = options.get("pipeline_parallel_size", 1)
    tp = 1 if tp is None else tp
    pp = 1 if pp is None else pp
    ep = options.get("moe_expert_parallel_size")
    for name, value in (("tensor_parallel_size", tp), ("pipeline_parallel_size", pp)):
        if value < 1:
            problems.append(f"{name} = {value}: expected 1 or more")
    if ep is not None and (ep < 1 or tp % ep):
        divisors = [d for d in range(1, tp + 1) if tp % d == 0]
        problems.append(
            f"moe_expert_parallel_size = {ep}: must divide tensor_parallel_size = {tp} "
            f"(the MoE tensor-parallel size is their quotient); use one of {divisors}"
        )
    elif ep is not None and facts.experts % ep:
        problems.append(
            f"moe_expert_parallel_size = {ep}: the {facts.experts} experts of {facts.hf_id} "
            "must split evenly over the expert-parallel ranks"
        )
    if tp >= 1 and pp >= 1 and tp * pp != gpus_per_replica:
        problems.append(
            f"tensor_parallel_size x pipeline_parallel_size = {tp} x {pp} = {tp * pp}, but a "
            f"replica gets {gpus_per_replica} GPUs (gpusPerReplica); make them equal"
        )

    max_batch_size = options.get("max_batch_size")
    max_seq_len = options.get("max_seq_len")
    max_num_tokens = options.get("max_num_tokens")
    for name, value in (
        ("max_batch_size", max_batch_size),
        ("max_seq_len", max_seq_len),
        ("max_num_tokens", max_num_tokens),
    ):
        if value is None:
            problems.append(f"{name} is unset: this stack sizes the server from it; set a value")
        elif value < 1:
            problems.append(f"{name} = {value}: expected 1 or more")
    if problems or max_batch_size is None or max_seq_len is None or max_num_tokens is None:
        return problems
    if max_seq_len > facts.max_context:
        problems.append(
            f"max_seq_len = {max_seq_len}: {facts.hf_id} supports at most {facts.max_context} tokens"
        )
    if not options.get("enable_chunked_prefill") and max_num_tokens < max_seq_len:
        problems.append(
            f"max_num_tokens = {max_num_tokens} is below max_seq_len = {max_seq_len} with "
            "enable_chunked_prefill off: a long prompt could never be prefilled; enable chunked "
            f"prefill or raise max_num_tokens to {max_seq_len}"
        )

    kv = options.get("kv_cache_config") or {}
    fraction = kv.get("free_gpu_memory_fraction")
    if fraction is not None and not 0 < fraction <= 1:
        problems.append(
            f"kv_cache_config.free_gpu_memory_fraction = {fraction}: must be in (0, 1], "
            "e.g. 0.8 (the share of post-load GPU memory given to the KV cache)"
        )
    kv_dtype = kv.get("dtype")
    if gpu.architecture == "hopper" and kv_dtype and "fp8" in str(kv_dtype).lower():
        problems.append(
            f"kv_cache_config.dtype = {kv_dtype!r}: an fp8 KV cache is not supported for "
            f"{facts.hf_id} on {gpu.name} (Hopper); use auto (bf16)"
        )

    cuda_graphs = options.get("cuda_graph_config") or {}
    graph_max = cuda_graphs.get("max_batch_size")
    if graph_max is not None and graph_max > max_batch_size:
        problems.append(
            f"cuda_graph_config.max_batch_size = {graph_max}: above max_batch_size = "
            f"{max_batch_size}, those graphs could never run; use at most {max_batch_size}"
        )
    too_large = [size for size in cuda_graphs.get("batch_sizes") or [] if size > max_batch_size]
    if too_large:
        problems.append(
            f"cuda_graph_config.batch_sizes = {cuda_graphs['batch_sizes']}: {too_large} exceed "
            f"max_batch_size = {max_batch_size}; keep every size at most {max_batch_size}"
        )

    moe_backend = (options.get("moe_config") or {}).get("backend")
    if gpu.architecture == "hopper" and moe_backend != facts.hopper_moe_backend:
        problems.append(
            f"moe_config.backend = {moe_backend!r}: {facts.hf_id} on {gpu.name} (Hopper) needs "
            f"{facts.hopper_moe_backend}"
        )
    return problems


# --- Renderers: deterministic, so that a pull request's diff shows exactly what changed ------


def render_options_yaml(runtime: ServingRuntime) -> str:
    """The `--extra_llm_api_options` file: only real TensorRT-LLM 1.2 field names, sorted."""
    header = (
        f"# TensorRT-LLM {schema.TRTLLM_VERSION} LLM-API options for {runtime.model.hf_id}\n"
        "# Rendered by serving/runtime/options.py; these values win over the command-line flags.\n"
    )
    return header + yaml.safe_dump(dict(runtime.options), sort_keys=True, default_flow_style=False)


def render_serve_args(runtime: ServingRuntime, options_path: str, *, host: str = "127.0.0.1") -> list[str]:
    """The `trtllm-serve` argument list.

    The model is the Hugging Face id, so /v1/models lists `openai/gpt-oss-120b` (with the weights
    already cached and HF_HUB_OFFLINE=1). The host defaults to loopback: in the pod only the
    API-key gateway beside the server may reach it. The flags repeat the options file's sizes so
    that the process list tells the truth; the file wins where they could differ.
    """
    args = [
        "trtllm-serve",
        runtime.model.hf_id,
        "--host",
        host,
        "--port",
        str(runtime.port),
        "--backend",
        "pytorch",
        "--tp_size",
        str(runtime.tensor_parallel_size),
    ]
    if runtime.pipeline_parallel_size != 1:
        args += ["--pp_size", str(runtime.pipeline_parallel_size)]
    if runtime.moe_expert_parallel_size is not None:
        args += ["--ep_size", str(runtime.moe_expert_parallel_size)]
    args += [
        "--max_batch_size",
        str(runtime.max_batch_size),
        "--max_num_tokens",
        str(runtime.max_num_tokens),
        "--max_seq_len",
        str(runtime.max_seq_len),
        # The CLI's own default is 0.9; state the configured fraction so flags and file agree.
        "--kv_cache_free_gpu_memory_fraction",
        f"{runtime.kv_cache_free_gpu_memory_fraction:g}",
        "--extra_llm_api_options",
        options_path,
    ]
    return args


@dataclass(frozen=True)
class SecretRef:
    """A reference to a key of a Kubernetes Secret: the value never appears in a pod spec."""

    secret_name: str
    key: str


def render_environment(
    runtime: ServingRuntime, *, hf_home: str, hf_token: SecretRef | None
) -> list[dict[str, Any]]:
    """Kubernetes EnvVar objects for the weights download step (with the token) or the server.

    Only the download step gets the token. The server runs offline from the cache and executes
    the model repository's code (trust_remote_code): it has no use for a credential, so it holds
    none, and HF_HUB_OFFLINE keeps it from ever reaching the Hub.
    """
    env: list[dict[str, Any]] = [{"name": "HF_HOME", "value": hf_home}]
    if hf_token is not None:
        # huggingface_hub reads HF_TOKEN; the value stays in the Secret.
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": hf_token.secret_name, "key": hf_token.key}},
            }
        )
    # Progress bars in logs are noise, and a download must not sit on a TTY prompt.
    env.append({"name": "HF_HUB_DISABLE_PROGRESS_BARS", "value": "1"})
    if hf_token is None:
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    return env


# Repository files the server never reads: the `original/` and `metal/` copies would triple the
# download (about 3 x 65 GB).
WEIGHTS_IGNORE_PATTERNS = ("original/*", "metal/*")


def render_download_command(runtime: ServingRuntime) -> list[str]:
    """The init step that fills the Hugging Face cache, skipping files already there.

    It calls huggingface_hub's snapshot_download from Python, a stable API across hub releases
    (the CLI's name changed from huggingface-cli to hf); the token comes from HF_TOKEN.
    """
    revision = runtime.options.get("revision")
    script = (
        "from huggingface_hub import snapshot_download; "
        f"path = snapshot_download(repo_id={runtime.model.hf_id!r}, revision={revision!r}, "
        f"ignore_patterns={list(WEIGHTS_IGNORE_PATTERNS)!r}); "
        "print('weights ready in', path, flush=True)"
    )
    if revision is not None:
        # A download by commit hash writes no ref; point the cache's `main` at it too, so that
        # any loader that asks for the default branch offline finds this same commit.
        script += (
            "; import pathlib; ref = pathlib.Path(path).parents[1] / 'refs' / 'main'; "
            f"ref.parent.mkdir(parents=True, exist_ok=True); ref.write_text({revision!r})"
        )
    return ["python3", "-c", script]

"""The TensorRT-LLM runtime: template defaults, renderers and validation (serving/runtime/options.py)."""

from __future__ import annotations

import shlex

import pytest
import yaml

from serving.runtime import schema
from serving.runtime.hardware import H100_SXM, H200_SXM
from serving.runtime.options import (
    DEFAULT_IMAGE,
    RuntimeConfigError,
    SecretRef,
    build_runtime,
    merge_options,
    render_download_command,
    render_environment,
    render_options_yaml,
    render_serve_args,
)

# The template's table (shared FACTS.md), written out here independently of the code.
TEMPLATE_TABLE = {
    ("tensor_parallel_size",): 2,
    ("moe_expert_parallel_size",): 2,
    ("max_batch_size",): 64,
    ("max_seq_len",): 98304,
    ("enable_chunked_prefill",): True,
    ("max_num_tokens",): 8192,
    ("cuda_graph_config", "enable_padding"): True,
    ("kv_cache_config", "free_gpu_memory_fraction"): 0.8,
    ("kv_cache_config", "enable_block_reuse"): True,
}


def lookup(options, path):
    for key in path:
        options = options[key]
    return options


def problems_of(overrides, **kwargs) -> list[str]:
    with pytest.raises(RuntimeConfigError) as caught:
        build_runtime(overrides, **kwargs)
    return caught.value.problems


@pytest.mark.parametrize(
    ("path", "expected"),
    TEMPLATE_TABLE.items(),
    ids=lambda v: ".".join(v) if isinstance(v, tuple) else str(v),
)
def test_every_default_is_the_templates_value(path, expected):
    runtime = build_runtime()
    assert lookup(runtime.options, path) == expected
    assert type(lookup(runtime.options, path)) is type(expected)


def test_defaults_include_what_gpt_oss_needs_on_hopper_and_the_served_name():
    runtime = build_runtime()
    assert runtime.options["moe_config"] == {"backend": "TRITON"}
    assert runtime.options["kv_cache_config"]["dtype"] == "auto"
    assert runtime.options["trust_remote_code"] is True
    assert runtime.served_model_name == "openai/gpt-oss-120b"
    assert runtime.image == DEFAULT_IMAGE and DEFAULT_IMAGE.rsplit(":", 1)[1].startswith("1.2.")
    assert runtime.port == 8000


def test_options_yaml_round_trips_holds_only_real_field_names_and_is_stable():
    runtime = build_runtime()
    text = render_options_yaml(runtime)
    parsed = yaml.safe_load(text)
    assert parsed == dict(runtime.options)
    for key, value in parsed.items():
        field = schema.fields_of(schema.TOP_LEVEL)[key]
        if isinstance(value, dict):
            assert field.nested is not None, key
            assert set(value) <= set(schema.fields_of(field.nested)), key
    for forbidden in ("served_model_name", "kv_cache_free_gpu_memory_fraction", "enable_trtllm_sampler"):
        assert forbidden not in parsed
    # Sorted keys at every level: the same settings give the same bytes, whatever order they
    # were written in (new keys included, nested ones too).
    written = {
        "print_iter_log": True,
        "stream_interval": 4,
        "kv_cache_config": {"tokens_per_block": 32, "host_cache_size": 0},
    }
    backwards = {
        "kv_cache_config": {"host_cache_size": 0, "tokens_per_block": 32},
        "stream_interval": 4,
        "print_iter_log": True,
    }
    assert render_options_yaml(build_runtime(written)) == render_options_yaml(build_runtime(backwards))
    top_level_keys = [line.split(":")[0] for line in text.splitlines() if line and line[0].isalpha()]
    assert top_level_keys == sorted(top_level_keys)


def test_serve_command_is_the_documented_one():
    args = render_serve_args(build_runtime(), "/etc/trtllm/extra-llm-api-options.yaml")
    assert shlex.join(args) == (
        "trtllm-serve openai/gpt-oss-120b --host 127.0.0.1 --port 8000 --backend pytorch "
        "--tp_size 2 --ep_size 2 --max_batch_size 64 --max_num_tokens 8192 --max_seq_len 98304 "
        "--kv_cache_free_gpu_memory_fraction 0.8 "
        "--extra_llm_api_options /etc/trtllm/extra-llm-api-options.yaml"
    )


def test_serve_command_follows_overrides():
    runtime = build_runtime(
        {
            "tensor_parallel_size": 4,
            "moe_expert_parallel_size": 4,
            "pipeline_parallel_size": 2,
            "max_batch_size": 32,
            "kv_cache_config": {"free_gpu_memory_fraction": 0.85},
        },
        gpus_per_replica=8,
    )
    args = render_serve_args(runtime, "/o.yaml", host="0.0.0.0")
    pairs = dict(zip(args[2::2], args[3::2], strict=False))
    assert pairs["--host"] == "0.0.0.0"
    assert pairs["--tp_size"] == "4" and pairs["--pp_size"] == "2" and pairs["--ep_size"] == "4"
    assert pairs["--max_batch_size"] == "32"
    assert pairs["--kv_cache_free_gpu_memory_fraction"] == "0.85"


def test_environment_references_the_token_only_for_the_download_and_never_holds_it():
    runtime = build_runtime()
    ref = SecretRef("hf-token", "HF_TOKEN")
    download = {var["name"]: var for var in render_environment(runtime, hf_home="/hf-cache", hf_token=ref)}
    server = {var["name"]: var for var in render_environment(runtime, hf_home="/hf-cache", hf_token=None)}
    assert download["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}},
    }
    assert "HF_HUB_OFFLINE" not in download
    assert "HF_TOKEN" not in server and server["HF_HUB_OFFLINE"]["value"] == "1"
    assert server["HF_HOME"]["value"] == download["HF_HOME"]["value"] == "/hf-cache"


def test_download_skips_the_duplicate_copies_of_the_weights():
    command = render_download_command(build_runtime())
    assert command[:2] == ["python3", "-c"]
    script = command[2]
    assert "snapshot_download(repo_id='openai/gpt-oss-120b'" in script
    assert "ignore_patterns=['original/*', 'metal/*']" in script
    compile(script, "download", "exec")  # the init step's script is valid Python


def test_overrides_merge_deeply():
    merged = merge_options({"a": {"x": 1, "y": 2}, "b": 3}, {"a": {"y": 5}, "c": [1]})
    assert merged == {"a": {"x": 1, "y": 5}, "b": 3, "c": [1]}
    runtime = build_runtime({"kv_cache_config": {"free_gpu_memory_fraction": 0.9}, "stream_interval": 4})
    assert runtime.options["kv_cache_config"] == {
        "free_gpu_memory_fraction": 0.9,
        "enable_block_reuse": True,
        "dtype": "auto",
    }
    assert runtime.options["stream_interval"] == 4


def test_null_is_passed_on_where_tensorrt_llm_gives_it_a_meaning_and_refused_elsewhere():
    # cuda_graph_config: null turns CUDA graphs off in TensorRT-LLM 1.2.
    runtime = build_runtime({"cuda_graph_config": None})
    assert yaml.safe_load(render_options_yaml(runtime))["cuda_graph_config"] is None
    assert problems_of({"moe_config": None}) == [
        "moe_config = null: TensorRT-LLM requires a value here; remove the override"
    ]


def test_case_insensitive_choices_are_accepted_as_tensorrt_llm_does():
    assert build_runtime({"load_format": "auto"}).options["load_format"] == "auto"
    [problem] = problems_of({"moe_config": {"backend": "TRITONN"}})
    assert problem.startswith("moe_config.backend = 'TRITONN': use one of ")


def test_misspelt_nested_key_fails_with_a_did_you_mean():
    problems = problems_of({"kv_cache_config": {"free_gpu_memory_fracton": 0.9}})
    assert problems == [
        "kv_cache_config.free_gpu_memory_fracton: unknown option "
        "(did you mean kv_cache_config.free_gpu_memory_fraction?)"
    ]


def test_misspelt_and_unknown_top_level_keys_fail():
    problems = problems_of(
        {"max_batch_sise": 8, "served_model_name": "x", "kv_cache_free_gpu_memory_fraction": 0.5}
    )
    assert "max_batch_sise: unknown option (did you mean max_batch_size?)" in problems
    assert any(p.startswith("served_model_name: unknown option") for p in problems)
    assert any(p.startswith("kv_cache_free_gpu_memory_fraction: unknown option") for p in problems)
    # Nothing else is blamed: every problem is about one of the three keys.
    assert all(p.startswith(("max_batch_sise", "served_model_name", "kv_cache_free")) for p in problems)


def test_wrong_kinds_are_refused():
    problems = problems_of({"max_batch_size": "64", "enable_chunked_prefill": "yes", "cuda_graph_config": 3})
    assert "max_batch_size = '64': expected a whole number" in problems
    assert "enable_chunked_prefill = 'yes': expected true or false" in problems
    assert any(p.startswith("cuda_graph_config = 3: expected a mapping") for p in problems)


@pytest.mark.parametrize(
    ("overrides", "kwargs", "expected"),
    [
        (
            {"moe_expert_parallel_size": 3},
            {},
            "moe_expert_parallel_size = 3: must divide tensor_parallel_size = 2 (the MoE tensor-parallel size is their quotient); use one of [1, 2]",
        ),
        (
            {"tensor_parallel_size": 4, "moe_expert_parallel_size": 4},
            {},
            "tensor_parallel_size x pipeline_parallel_size = 4 x 1 = 4, but a replica gets 2 GPUs (gpusPerReplica); make them equal",
        ),
        (
            {"max_seq_len": 131073},
            {},
            "max_seq_len = 131073: openai/gpt-oss-120b supports at most 131072 tokens",
        ),
        (
            {"enable_chunked_prefill": False},
            {},
            "max_num_tokens = 8192 is below max_seq_len = 98304 with enable_chunked_prefill off: a long prompt could never be prefilled; enable chunked prefill or raise max_num_tokens to 98304",
        ),
        (
            {"kv_cache_config": {"free_gpu_memory_fraction": 0}},
            {},
            "kv_cache_config.free_gpu_memory_fraction = 0: must be in (0, 1], e.g. 0.8 (the share of post-load GPU memory given to the KV cache)",
        ),
        (
            {"kv_cache_config": {"free_gpu_memory_fraction": 1.2}},
            {},
            "kv_cache_config.free_gpu_memory_fraction = 1.2: must be in (0, 1], e.g. 0.8 (the share of post-load GPU memory given to the KV cache)",
        ),
        (
            {"cuda_graph_config": {"batch_sizes": [1, 8, 128]}},
            {},
            "cuda_graph_config.batch_sizes = [1, 8, 128]: [128] exceed max_batch_size = 64; keep every size at most 64",
        ),
        (
            {"cuda_graph_config": {"max_batch_size": 65}},
            {},
            "cuda_graph_config.max_batch_size = 65: above max_batch_size = 64, those graphs could never run; use at most 64",
        ),
        (
            {"kv_cache_config": {"dtype": "fp8"}},
            {},
            "kv_cache_config.dtype = 'fp8': an fp8 KV cache is not supported for openai/gpt-oss-120b on H100 80GB (Hopper); use auto (bf16)",
        ),
        (
            {"moe_config": {"backend": "CUTLASS"}},
            {"gpu": H200_SXM},
            "moe_config.backend = 'CUTLASS': openai/gpt-oss-120b on H200 141GB (Hopper) needs TRITON",
        ),
        (
            {},
            {"image": "nvcr.io/nvidia/tensorrt-llm/release:latest"},
            "image = 'nvcr.io/nvidia/tensorrt-llm/release:latest': pin a release tag or digest, e.g. nvcr.io/nvidia/tensorrt-llm/release:1.2.1 (never latest or an untagged image)",
        ),
        (
            {},
            {"model": "openai/gpt-oss-20b"},
            "model = 'openai/gpt-oss-20b': known models are openai/gpt-oss-120b",
        ),
    ],
)
def test_values_that_cannot_work_fail_with_a_message_naming_setting_value_and_fix(
    overrides, kwargs, expected
):
    assert problems_of(overrides, **kwargs) == [expected]


def test_every_problem_is_reported_at_once():
    problems = problems_of({"max_seq_len": 200000, "kv_cache_config": {"free_gpu_memory_fraction": 2}})
    assert any(p.startswith("max_seq_len = 200000:") for p in problems), problems
    assert any(p.startswith("kv_cache_config.free_gpu_memory_fraction = 2") for p in problems), problems


def test_a_valid_override_of_the_parallelism_passes():
    runtime = build_runtime({"moe_expert_parallel_size": 1}, gpu=H100_SXM)
    assert runtime.moe_expert_parallel_size == 1 and runtime.gpus_per_replica == 2


REVISION = "0123456789abcdef0123456789abcdef01234567"


def test_a_revision_pins_the_download_and_the_server_alike():
    runtime = build_runtime(revision=REVISION)
    options = yaml.safe_load(render_options_yaml(runtime))
    # The server loads that commit (weights and tokenizer) ...
    assert options["revision"] == options["tokenizer_revision"] == REVISION
    # ... the download step fetches it, and points the offline cache's `main` at it.
    script = render_download_command(runtime)[-1]
    assert f"revision={REVISION!r}" in script and "'refs' / 'main'" in script
    # Without a revision nothing is pinned: the download follows the repository's head.
    assert "revision=None" in render_download_command(build_runtime())[-1]
    assert "revision" not in yaml.safe_load(render_options_yaml(build_runtime()))


@pytest.mark.parametrize("bad", ["main", "b5c939de", "B5C939DE8F754692C1647CA79FBF85E8C1E70F8A"])
def test_a_revision_must_be_a_full_commit_hash(bad: str):
    [problem] = problems_of({}, revision=bad)
    assert problem.startswith(f"revision = {bad!r}: a full commit hash")


def test_the_revision_is_set_in_one_place_only():
    [problem] = problems_of({"revision": REVISION}, revision=REVISION)
    assert problem.startswith("revision: set by the stack's modelRevision")

"""Structural checks of serving/runtime/schema.py, the TensorRT-LLM 1.2.1 option tables.

The tables are hand-transcribed facts; these tests catch the transcription mistakes that would
make the validator built on them wrong: a nested config pointing at a table that is not there, a
default of the wrong kind, a choice list that excludes its own default, a field the stack relies
on missing or mistyped, a name that TensorRT-LLM 1.2.1 would refuse being listed as valid, and a
trtllm-serve flag that resolves to no field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from serving.runtime import schema
from serving.runtime.schema import BUILT_FROM_DEFAULTS, DEFAULT_FROM_RUNTIME, TOP_LEVEL, Field

ALL_FIELDS = [
    (table, name, spec) for table in schema.table_names() for name, spec in schema.fields_of(table).items()
]


def _ids(items: list[tuple[str, str, Field]]) -> list[str]:
    return [f"{table}.{name}" for table, name, _ in items]


# --- every table and field is well formed -----------------------------------------------------


@pytest.mark.parametrize(("table", "name", "spec"), ALL_FIELDS, ids=_ids(ALL_FIELDS))
def test_field_is_well_formed(table: str, name: str, spec: Field) -> None:
    assert spec.kind in schema.KINDS
    assert spec.status in schema.STATUSES | {None}
    if spec.kind == "object":
        assert spec.nested in schema.TABLES, f"{table}.{name} points at a missing table"
    if spec.nested is not None:
        assert spec.nested in schema.TABLES, f"{table}.{name} points at a missing table"
        assert spec.kind in {"object", "any"}
    if spec.choices is not None:
        assert spec.kind == "str" and len(spec.choices) == len(set(spec.choices)) > 0
    if spec.item_choices is not None:
        assert spec.kind == "list[str]"
    if spec.case_insensitive:
        assert spec.choices and all(c == c.upper() for c in spec.choices)


def _default_matches_kind(spec: Field) -> bool:
    value = spec.default
    if value is None:
        # Only a field that is Optional, required, or an opaque object may default to None.
        return spec.nullable or spec.required or spec.kind == "any"
    if value is DEFAULT_FROM_RUNTIME:
        return spec.kind in {"int", "float", "str", "bool"}
    if value is BUILT_FROM_DEFAULTS:
        return spec.kind == "object"
    checks = {
        "bool": lambda v: isinstance(v, bool),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "list[int]": lambda v: (
            isinstance(v, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in v)
        ),
        "list[str]": lambda v: isinstance(v, (list, tuple)) and all(isinstance(i, str) for i in v),
        "dict": lambda v: isinstance(v, Mapping),
        "object": lambda v: False,  # a nested config defaults to None or BUILT_FROM_DEFAULTS
        "any": lambda v: True,
    }
    return checks[spec.kind](value)


@pytest.mark.parametrize(("table", "name", "spec"), ALL_FIELDS, ids=_ids(ALL_FIELDS))
def test_default_matches_kind_and_choices(table: str, name: str, spec: Field) -> None:
    assert _default_matches_kind(spec), f"{table}.{name}: default {spec.default!r} vs {spec.kind}"
    if spec.choices is not None and spec.default is not None:
        assert schema.accepts_choice(spec, spec.default), f"{table}.{name}: default not a choice"
    if spec.item_choices is not None and isinstance(spec.default, tuple):
        assert set(spec.default) <= set(spec.item_choices)
    if spec.required:
        assert spec.default is None, f"{table}.{name}: a required field has no default"


def test_every_table_has_a_known_extra_policy_and_fields() -> None:
    for name in schema.table_names():
        assert schema.extra_policy(name) in schema.EXTRA_POLICIES
        assert schema.fields_of(name), name


def test_every_config_class_in_llm_args_forbids_extra_keys() -> None:
    """FACTS.md: every config class forbids unknown keys (StrictBaseModel, extra='forbid')."""
    for name, table in schema.TABLES.items():
        if table.source.startswith("tensorrt_llm/llmapi/llm_args.py"):
            assert table.extra == "forbid", name


def test_every_table_is_reachable_from_the_top_level() -> None:
    reached: set[str] = set()
    pending = [TOP_LEVEL]
    while pending:
        table = pending.pop()
        if table in reached:
            continue
        reached.add(table)
        pending += [s.nested for s in schema.fields_of(table).values() if s.nested]
    reached |= {table for table, _ in schema.SPECULATIVE_DECODING_TYPES.values()}
    reached |= set(schema.SPARSE_ATTENTION_ALGORITHMS.values())
    assert reached == set(schema.TABLES)


# --- the fields this stack writes ---------------------------------------------------------------

TEMPLATE_FIELDS = {
    "enable_chunked_prefill": "bool",
    "max_num_tokens": "int",
    "max_seq_len": "int",
    "max_batch_size": "int",
    "tensor_parallel_size": "int",
    "moe_expert_parallel_size": "int",
    "trust_remote_code": "bool",
    "cuda_graph_config": "object",
    "cuda_graph_config.enable_padding": "bool",
    "cuda_graph_config.max_batch_size": "int",
    "cuda_graph_config.batch_sizes": "list[int]",
    "kv_cache_config": "object",
    "kv_cache_config.free_gpu_memory_fraction": "float",
    "kv_cache_config.enable_block_reuse": "bool",
    "kv_cache_config.dtype": "str",
    "moe_config": "object",
    "moe_config.backend": "str",
    "enable_attention_dp": "bool",
    "stream_interval": "int",
    "disable_overlap_scheduler": "bool",
    "print_iter_log": "bool",
}


@pytest.mark.parametrize(("path", "kind"), sorted(TEMPLATE_FIELDS.items()))
def test_template_field_exists_with_its_kind(path: str, kind: str) -> None:
    assert schema.lookup(path).kind == kind


@pytest.mark.parametrize(
    "path",
    [
        "served_model_name",
        "kv_cache_free_gpu_memory_fraction",
        "enable_trtllm_sampler",
        "kv_cache_config.kv_cache_free_gpu_memory_fraction",
        "cuda_graph_config.padding_enabled",
        "moe_config.moe_backend",
        "use_cuda_graph",
    ],
)
def test_names_tensorrt_llm_would_refuse_are_absent(path: str) -> None:
    with pytest.raises(KeyError):
        schema.lookup(path)


def test_hopper_moe_backend_is_a_choice_but_not_the_default() -> None:
    backend = schema.lookup("moe_config.backend")
    assert backend.default == "CUTLASS"  # 1.2.1: AUTO arrives later, so TRITON must be set
    assert backend.choices is not None
    assert "TRITON" in backend.choices and "AUTO" not in backend.choices
    assert not schema.accepts_choice(backend, "triton")  # a Literal: case matters


def test_kv_cache_defaults_that_the_template_overrides() -> None:
    assert schema.lookup("kv_cache_config.free_gpu_memory_fraction").default == 0.9
    assert schema.lookup("kv_cache_config.enable_block_reuse").default is True
    assert schema.lookup("kv_cache_config.dtype").default == "auto"


def test_load_format_is_matched_without_case() -> None:
    load_format = schema.lookup("load_format")
    assert schema.accepts_choice(load_format, "auto")
    assert schema.accepts_choice(load_format, "Dummy")
    assert not schema.accepts_choice(load_format, "safetensors")


def test_lookup_names_the_table_and_refuses_paths_through_scalars() -> None:
    with pytest.raises(KeyError, match="KvCacheConfig"):
        schema.lookup("kv_cache_config.dtyp")
    with pytest.raises(KeyError, match="not a nested config"):
        schema.lookup("max_batch_size.value")
    with pytest.raises(KeyError, match="known: TorchLlmArgs"):
        schema.fields_of("KVCacheConfig")


# --- the top level against what 1.2.1 does with non-fields ---------------------------------------


def test_trt_engine_only_fields_are_not_pytorch_fields() -> None:
    top = set(schema.fields_of(TOP_LEVEL))
    assert not schema.TRT_ENGINE_ONLY_FIELDS & top
    assert schema.IGNORED_UNDER_PYTORCH <= schema.TRT_ENGINE_ONLY_FIELDS


def test_keys_serve_converts_are_fields_or_engine_only() -> None:
    top = schema.fields_of(TOP_LEVEL)
    for key in schema.CONVERTED_BY_SERVE:
        assert key in top or key in schema.TRT_ENGINE_ONLY_FIELDS, key
    for key in schema.DEEP_MERGED_BY_SERVE:
        assert top[key].kind == "object"


def test_top_level_is_base_plus_torch_fields() -> None:
    # 51 BaseLlmArgs fields (load_format is redeclared by TorchLlmArgs) + 32 TorchLlmArgs ones.
    assert len(schema.fields_of(TOP_LEVEL)) == 83


def test_speculative_and_sparse_dispatch_tables_exist() -> None:
    for decoding_type, (table, _) in schema.SPECULATIVE_DECODING_TYPES.items():
        assert "max_draft_len" in schema.fields_of(table), decoding_type
    for algorithm, table in schema.SPARSE_ATTENTION_ALGORITHMS.items():
        assert "seq_len_threshold" in schema.fields_of(table), algorithm


def test_tables_cannot_be_changed_by_a_caller() -> None:
    with pytest.raises(TypeError):
        schema.TABLES["Extra"] = schema.TABLES[TOP_LEVEL]  # type: ignore[index]
    with pytest.raises(TypeError):
        schema.fields_of(TOP_LEVEL)["served_model_name"] = Field("str")  # type: ignore[index]


# --- a real NVIDIA config validates against the tables ------------------------------------------


def _problems(values: Mapping[str, Any], table: str, path: str = "") -> list[str]:
    """A minimal, independent check of a config mapping: names, kinds and choices."""
    problems = []
    fields = schema.fields_of(table)
    for key, value in values.items():
        spec = fields.get(key)
        if spec is None:
            problems.append(f"{path}{key}: unknown")
        elif spec.kind == "object" and spec.nested is not None:
            problems += _problems(value, spec.nested, f"{path}{key}.")
        elif not _default_matches_kind(Field(spec.kind, value, nullable=True)):
            problems.append(f"{path}{key}: {value!r} is not a {spec.kind}")
        elif not schema.accepts_choice(spec, value):
            problems.append(f"{path}{key}: {value!r} not in {spec.choices}")
    return problems


# NVIDIA's per-GPU config database (examples/configs/database/openai/gpt-oss-120b/H200/, read at
# the newest stored version, so not pinned to 1.2.1) has, for 2 x H200, 8k/1k tokens, 16
# concurrent requests (the closest to this stack's benchmark), the values below. Every key is a
# 1.2.1 field (the test below checks that).
GPT_OSS_H200_TP2_CONC16_REFERENCE: dict[str, Any] = {
    "tensor_parallel_size": 2,
    "moe_expert_parallel_size": 2,
    "enable_attention_dp": False,
    "moe_config": {"backend": "TRITON"},
    "kv_cache_config": {"dtype": "auto", "enable_block_reuse": False, "free_gpu_memory_fraction": 0.85},
    "cuda_graph_config": {"enable_padding": True, "max_batch_size": 16},
    "stream_interval": 20,
    "num_postprocess_workers": 4,
    "print_iter_log": True,
    "max_num_tokens": 20000,
    "max_seq_len": 9236,
    "trust_remote_code": True,
    "backend": "pytorch",
    "env_overrides": {"TRTLLM_ENABLE_PDL": 1},
}


def test_nvidia_h200_reference_config_passes() -> None:
    assert _problems(GPT_OSS_H200_TP2_CONC16_REFERENCE, TOP_LEVEL) == []


def test_the_check_above_catches_misspellings_and_bad_choices() -> None:
    """Keeps the previous test honest: its checker does refuse what TensorRT-LLM refuses."""
    bad = {
        "kv_cache_config": {"free_gpu_mem_fraction": 0.8},
        "moe_config": {"backend": "AUTO"},
        "max_batch_size": "64",
        "served_model_name": "x",
    }
    found = _problems(bad, TOP_LEVEL)
    for path in (
        "kv_cache_config.free_gpu_mem_fraction",
        "moe_config.backend",
        "max_batch_size",
        "served_model_name",
    ):
        assert any(p.startswith(f"{path}:") for p in found), (path, found)


# --- trtllm-serve options ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("--tp_size", "--tensor_parallel_size"),
        ("--ep_size", "--moe_expert_parallel_size"),
        ("--pp_size", "--pipeline_parallel_size"),
        ("--extra_llm_api_options", "--config"),
        ("--kv_cache_free_gpu_memory_fraction", "--free_gpu_memory_fraction"),
        ("--max_num_tokens", "--max_num_tokens"),
    ],
)
def test_serve_option_spellings_resolve(spelling: str, canonical: str) -> None:
    assert schema.serve_option(spelling)[0] == canonical


def test_serve_option_facts_the_deployment_uses() -> None:
    assert schema.serve_option("--kv_cache_free_gpu_memory_fraction")[1].default == 0.9
    assert schema.serve_option("--host")[1].default == "localhost"
    assert schema.serve_option("--port")[1].default == 8000
    assert schema.serve_option("--backend")[1].default == "pytorch"
    assert schema.serve_option("--trust_remote_code")[1].kind == "bool"  # a flag, no value


def test_every_serve_option_feeds_an_existing_field() -> None:
    for name, option in schema.SERVE_OPTIONS.items():
        if option.llm_arg is not None:
            schema.lookup(option.llm_arg)  # raises if the path is wrong
        assert option.status in schema.STATUSES | {None}, name


def test_serve_spellings_are_unique_and_exclude_other_servers_flags() -> None:
    spellings = [s for name, o in schema.SERVE_OPTIONS.items() for s in (name, *o.aliases)]
    assert len(spellings) == len(set(spellings))
    assert not set(spellings) & schema.NOT_SERVE_OPTIONS
    for spelling in schema.NOT_SERVE_OPTIONS:
        with pytest.raises(KeyError):
            schema.serve_option(spelling)

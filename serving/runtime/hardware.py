"""Facts about the model, the GPUs and the AWS GPU instance types (see shared FACTS.md).

Plain data: the capacity arithmetic, the stack's settings validation and the policies read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

GIB = 1024**3
KIB = 1024


@dataclass(frozen=True)
class GpuKind:
    name: str
    memory_bytes: int  # HBM as sold: 80 GB is 80e9 bytes, not GiB
    hbm_bandwidth_bytes_per_s: float
    architecture: str  # "hopper" decides the MoE backend and KV dtype gpt-oss needs
    # Datasheet peaks, dense (without 2:4 sparsity), and NVLink as NVIDIA counts it: both
    # directions together. None where the GPU has no such tensor-core format.
    bf16_dense_flops: float | None = None
    fp8_dense_flops: float | None = None
    fp4_dense_flops: float | None = None
    nvlink_bytes_per_s: float | None = None
    # Where these figures come from, printed beside them by the performance model.
    source: str = ""


# NVIDIA's H100 and H200 SXM datasheets (FACTS.md for memory, bandwidth and NVLink): dense
# BF16 989 TFLOPS and FP8 1,979 TFLOPS (the datasheets print twice these, "with sparsity");
# Hopper has no FP4 tensor cores. The H200 is the same GH100 with more, faster HBM3e.
_HOPPER_DATASHEET = "NVIDIA H100/H200 SXM datasheets (dense peaks; NVLink 900 GB/s both directions)"
H100_SXM = GpuKind(
    "H100 80GB",
    80 * 10**9,
    3.35e12,
    "hopper",
    bf16_dense_flops=989e12,
    fp8_dense_flops=1979e12,
    nvlink_bytes_per_s=900e9,
    source=_HOPPER_DATASHEET,
)
H200_SXM = GpuKind(
    "H200 141GB",
    141 * 10**9,
    4.8e12,
    "hopper",
    bf16_dense_flops=989e12,
    fp8_dense_flops=1979e12,
    nvlink_bytes_per_s=900e9,
    source=_HOPPER_DATASHEET,
)
GPUS: dict[str, GpuKind] = {"h100": H100_SXM, "h200": H200_SXM}


# EKS standard support per Kubernetes version: 14 months, then 12 months of extended support at
# 0.60 USD an hour for the control plane instead of 0.10 (AWS's EKS version calendar, as quoted
# in FACTS.md on 2026-12-01). Add a version when AWS publishes it: once the newest one here
# leaves standard support (2027-03-27), the prod stack is refused and the suite fails until then.
EKS_STANDARD_SUPPORT_ENDS: dict[str, date] = {
    "1.33": date(2026, 7, 29),
    "1.34": date(2026, 12, 2),
    "1.35": date(2027, 3, 27),
}
EKS_CONTROL_PLANE_USD_PER_HOUR = {"STANDARD": 0.10, "EXTENDED": 0.60}

# EKS AL2023 nodes: nodeadm's RAID0 strategy assembles every instance-store NVMe drive into one
# array mounted here (FACTS.md); the weights cache (`weightsHostPath`) belongs below it.
AL2023_NVME_MOUNT = "/mnt/k8s-disks/0"


@dataclass(frozen=True)
class InstanceType:
    name: str
    gpu: GpuKind
    gpus: int
    vcpus: int
    memory_gib: int
    local_nvme_disks: int
    local_nvme_tb_each: float
    on_demand_usd_per_hour: float | None  # None: no checked price in FACTS.md
    # Regions where AWS offers the type, as far as this table knows (verify with
    # `aws ec2 describe-instance-type-offerings --location-type region`); the stack setting
    # `allowUnlistedRegion` overrides the check for a region added since.
    regions: frozenset[str]


_P5_REGIONS = frozenset(
    {
        "us-east-1",
        "us-east-2",
        "us-west-2",
        "eu-north-1",
        "eu-west-2",
        "ap-northeast-1",
        "ap-south-1",
        "ap-southeast-2",
        "ap-southeast-3",
        "sa-east-1",
        "ca-central-1",
    }
)
_P5E_REGIONS = frozenset({"us-east-1", "us-east-2", "us-west-2", "ap-northeast-1"})

INSTANCE_TYPES: dict[str, InstanceType] = {
    t.name: t
    for t in (
        InstanceType("p5.48xlarge", H100_SXM, 8, 192, 2048, 8, 3.84, 55.04, _P5_REGIONS),
        InstanceType("p5e.48xlarge", H200_SXM, 8, 192, 2048, 8, 3.84, None, _P5E_REGIONS),
        InstanceType("p5en.48xlarge", H200_SXM, 8, 192, 2048, 8, 3.84, None, _P5E_REGIONS),
    )
}


@dataclass(frozen=True)
class ModelFacts:
    hf_id: str
    layers: int
    full_attention_layers: int
    sliding_attention_layers: int
    sliding_window_tokens: int
    kv_heads: int
    head_dim: int
    experts: int
    experts_per_token: int
    total_params: float
    active_params: float
    checkpoint_bytes: int
    max_context: int
    hopper_moe_backend: str  # the MoE backend this model needs on Hopper GPUs
    # Shapes the performance model needs (the model's config.json; defaults of transformers'
    # GptOssConfig, which describes the 120B model): residual width, query heads, one expert's
    # SwiGLU width, vocabulary.
    hidden_size: int = 0
    query_heads: int = 0
    expert_intermediate_size: int = 0
    vocab_size: int = 0
    # MXFP4 (OCP microscaling): 4-bit elements with one 8-bit scale per 32, so 4.25 bits a
    # weight (the model card's figure); everything outside the experts is bf16.
    expert_weight_bits: float = 0.0
    dense_weight_bytes: int = 2


GPT_OSS_120B = ModelFacts(
    hf_id="openai/gpt-oss-120b",
    layers=36,
    full_attention_layers=18,
    sliding_attention_layers=18,
    sliding_window_tokens=128,
    kv_heads=8,
    head_dim=64,
    experts=128,
    experts_per_token=4,
    total_params=116.8e9,
    active_params=5.1e9,
    checkpoint_bytes=int(60.8 * GIB),
    max_context=131072,
    hopper_moe_backend="TRITON",
    hidden_size=2880,
    query_heads=64,
    expert_intermediate_size=2880,
    vocab_size=201088,
    expert_weight_bits=4.25,
)

MODELS: dict[str, ModelFacts] = {GPT_OSS_120B.hf_id: GPT_OSS_120B}

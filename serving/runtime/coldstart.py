"""Cold start, modelled: from asking for a new GPU node to the first token it serves.

A budget, not a measurement: each step's duration is a stated assumption (or a size over a
stated rate), listed beside the step so it can be replaced by a measured figure. The steps run
one after another on this stack: the node boots and joins the cluster; the server image is
pulled (the weights download runs in that image, so it waits for the pull); the weights come
down to the node's NVMe cache (from Hugging Face or from a mirror in the region); the server
loads them and warms up (kernel compilation, CUDA graph capture) before it listens at all
(FACTS.md: "tens of minutes for this model, download excluded"); then the first request runs.

`COLD_START_S` is the default budget with weights from Hugging Face: what the autoscaling
simulator takes as the delay between scaling out and the new capacity serving.
"""

from __future__ import annotations

from dataclasses import dataclass

# FACTS.md: about 65 GB must come down once original/* and metal/* are excluded.
WEIGHTS_DOWNLOAD_BYTES = 65e9


@dataclass(frozen=True)
class ColdStartAssumptions:
    """Every input of the budget; each default is an assumption unless its comment cites more."""

    # EC2 launch of a p5.48xlarge to a Ready EKS node (boot, NVMe RAID0, nodeadm join, device
    # plugin): an assumption of 5 minutes.
    node_ready_s: float = 300.0
    # TensorRT-LLM release image: 20-30 GB (the manifests' pull-policy note); 25 GB assumed,
    # pulled and unpacked at an assumed 150 MB/s (unpacking, not the network, is the usual limit).
    image_bytes: float = 25e9
    image_pull_bytes_per_s: float = 150e6
    weights_bytes: float = WEIGHTS_DOWNLOAD_BYTES
    # From huggingface.co through the NAT gateways: an assumed 200 MB/s sustained.
    hugging_face_bytes_per_s: float = 200e6
    # From an in-region mirror (an S3 bucket or a cache in the VPC), many parallel streams: an
    # assumed 1.5 GB/s.
    mirror_bytes_per_s: float = 1.5e9
    # Reading the weights from the NVMe RAID0 into the GPUs: an assumed 4 GB/s effective.
    nvme_read_bytes_per_s: float = 4e9
    # Building the model and warming up before the port listens (Triton MoE kernel compilation,
    # autotuning, CUDA graph capture up to max_batch_size): FACTS.md says tens of minutes; 20
    # minutes assumed.
    warm_up_s: float = 1200.0
    # The first request after the port opens: its prefill and first token, about a second.
    first_token_s: float = 1.0


@dataclass(frozen=True)
class ColdStartStep:
    name: str
    seconds: float
    how: str


@dataclass(frozen=True)
class ColdStart:
    source: str  # where the weights come from
    steps: tuple[ColdStartStep, ...]

    @property
    def seconds(self) -> float:
        return sum(step.seconds for step in self.steps)


def cold_start(
    assumptions: ColdStartAssumptions = ColdStartAssumptions(), *, from_mirror: bool = False
) -> ColdStart:
    """The steps from a new node to its first token, weights from Hugging Face or a mirror."""
    a = assumptions
    rate = a.mirror_bytes_per_s if from_mirror else a.hugging_face_bytes_per_s
    source = "in-region mirror" if from_mirror else "Hugging Face"
    steps = (
        ColdStartStep("node boots and joins the cluster", a.node_ready_s, "assumed"),
        ColdStartStep(
            "server image pulled",
            a.image_bytes / a.image_pull_bytes_per_s,
            f"{a.image_bytes / 1e9:.0f} GB at {a.image_pull_bytes_per_s / 1e6:.0f} MB/s (assumed)",
        ),
        ColdStartStep(
            f"weights downloaded from {source}",
            a.weights_bytes / rate,
            f"{a.weights_bytes / 1e9:.0f} GB (FACTS.md) at {rate / 1e6:,.0f} MB/s (assumed)",
        ),
        ColdStartStep(
            "weights read into the GPUs",
            a.weights_bytes / a.nvme_read_bytes_per_s,
            f"{a.weights_bytes / 1e9:.0f} GB from NVMe at {a.nvme_read_bytes_per_s / 1e9:.0f} GB/s (assumed)",
        ),
        ColdStartStep(
            "model built and warmed up", a.warm_up_s, "assumed; FACTS.md: tens of minutes before it listens"
        ),
        ColdStartStep("first token", a.first_token_s, "assumed"),
    )
    return ColdStart(source=source, steps=steps)


def cold_start_seconds(
    assumptions: ColdStartAssumptions = ColdStartAssumptions(), *, from_mirror: bool = False
) -> float:
    return cold_start(assumptions, from_mirror=from_mirror).seconds


# The default budget (weights from Hugging Face), for the autoscaling simulator.
COLD_START_S = cold_start_seconds()
COLD_START_FROM_MIRROR_S = cold_start_seconds(from_mirror=True)


def render_cold_start(assumptions: ColdStartAssumptions = ColdStartAssumptions()) -> str:
    """A Markdown table of both budgets, step by step, labelled as modelled."""
    budgets = (cold_start(assumptions), cold_start(assumptions, from_mirror=True))
    lines = [
        "Cold start, modelled (assumptions, not measurements): a new GPU node to its first token.",
        "",
        f"| step | {budgets[0].source} | {budgets[1].source} | how |",
        "| --- | --- | --- | --- |",
    ]
    for hub, mirror in zip(budgets[0].steps, budgets[1].steps, strict=True):
        name = hub.name.replace("from Hugging Face", "").strip()
        how = hub.how if hub.how == mirror.how else f"{hub.how}; mirror: {mirror.how}"
        lines.append(f"| {name} | {hub.seconds:,.0f} s | {mirror.seconds:,.0f} s | {how} |")
    lines.append(
        f"| **total** | **{budgets[0].seconds / 60:.1f} min** | **{budgets[1].seconds / 60:.1f} min** | |"
    )
    return "\n".join(lines) + "\n"

"""One stack file, one verdict: the program (`make plan`), `python -m serving render` and the
offline policy runner accept and refuse the same stack files, with the same reasons.

Each case is a real stack file: Pulumi.prod.yaml's settings plus the case's, written under a
temporary directory and passed to each entry point's own `main` as `--stack <path>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import policy.offline
from offline.__main__ import main as plan_main
from serving.cli import main as serving_main
from serving.config.project import stack_config
from serving.config.settings import PROJECT
from tests.support.stack_harness import VARIANTS

pytestmark = pytest.mark.slow  # three program runs per case

ACCEPTED: dict[str, dict[str, Any]] = {
    **{name: spec.get("config", {}) for name, spec in VARIANTS.items()},
    # A replica on 4 GPUs: gpusPerReplica and the tensor-parallel size agree.
    "four-gpu-replicas": {
        "gpusPerReplica": 4,
        "replicas": 2,
        "trtllmOptions": {"tensor_parallel_size": 4, "moe_expert_parallel_size": 4},
    },
}
REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    # Misspelt or unknown keys and namespaces: silently ignored by the CLI.
    "misspelt-key": ({"replica": 2}, f"{PROJECT}:replica = 2: unknown setting (did you mean replicas?)"),
    "misspelt-case": (
        {"gpuRootVolumeGib": 300},
        "gpuRootVolumeGib = 300: unknown setting (did you mean gpuRootVolumeGiB?)",
    ),
    "misspelt-namespace": (
        {"gpt-oss-trtlm:replicas": 2},
        "gpt-oss-trtlm:replicas = 2: unknown namespace 'gpt-oss-trtlm' (did you mean gpt-oss-trtllm:replicas?)",
    ),
    "misspelt-region-key": (
        {"aws:regoin": "us-east-1"},
        "aws:regoin = 'us-east-1': not an AWS provider setting (did you mean aws:region?)",
    ),
    "unknown-namespace": ({"foo:bar": "x"}, "foo:bar = 'x': unknown namespace 'foo'"),
    # Values of the wrong type: once a traceback.
    "words-for-a-number": ({"replicas": "two"}, f"{PROJECT}:replicas = 'two': expected a whole number"),
    "fraction-of-a-node": ({"gpuNodeCount": 1.5}, f"{PROJECT}:gpuNodeCount = 1.5: expected a whole number"),
    "sentence-for-a-flag": (
        {"clusterApiPrivateOnly": "yes please"},
        "clusterApiPrivateOnly = 'yes please': expected true or false",
    ),
    "word-for-a-flag": (
        {"hfTokenInSecretsManager": "maybe"},
        "hfTokenInSecretsManager = 'maybe': expected true or false",
    ),
    "yaml-null": ({"replicas": None}, f"{PROJECT}:replicas = null: expected a whole number"),
    "string-for-a-list": (
        {"endpointSourceRanges": "10.0.0.0/8"},
        "endpointSourceRanges = '10.0.0.0/8': expected a list",
    ),
    "string-for-a-map": ({"gpuNodeSelector": "gpu"}, "gpuNodeSelector = 'gpu': expected a map of strings"),
    "list-for-options": ({"trtllmOptions": [1]}, "trtllmOptions = [1]: expected a mapping"),
    "float-for-a-version": ({"kubernetesVersion": 1.3}, "kubernetesVersion = 1.3: use one of"),
    # Out of range or not among the choices.
    "no-replicas": ({"replicas": 0}, "replicas = 0: expected a whole number from 1 to 64"),
    "negative-replicas": ({"replicas": -1}, "replicas = -1: expected a whole number from 1 to 64"),
    "no-gpu-nodes": ({"gpuNodeCount": 0}, "gpuNodeCount = 0: 0 GPU nodes only for a CAPACITY_BLOCK stack"),
    "too-many-gpu-nodes": ({"gpuNodeCount": 65}, "gpuNodeCount = 65: expected a whole number from 0 to 64"),
    "one-zone": (
        {"availabilityZoneCount": 1},
        "availabilityZoneCount = 1: expected a whole number from 2 to 6",
    ),
    "short-startup": (
        {"startupTimeoutMinutes": 5},
        "startupTimeoutMinutes = 5: expected a whole number from 40 to 240",
    ),
    "negative-budget": (
        {"costBudgetUsdPerHour": -5},
        "costBudgetUsdPerHour = -5: expected a whole number at least 0",
    ),
    "capacity-type": (
        {"gpuCapacityType": "RESERVED"},
        "gpuCapacityType = 'RESERVED': use one of ON_DEMAND, SPOT, CAPACITY_BLOCK",
    ),
    "ami-type": ({"gpuAmiType": "AL2_x86_64_GPU"}, "gpuAmiType = 'AL2_x86_64_GPU': use one of"),
    "endpoint-scheme": (
        {"endpointScheme": "public"},
        "endpointScheme = 'public': use one of internal, internet-facing",
    ),
    "gpu-instance-type": (
        {"gpuInstanceType": "p4d.24xlarge"},
        "gpuInstanceType = 'p4d.24xlarge': not a known GPU instance type",
    ),
    "system-instance-type": (
        {"systemInstanceType": "m7i.larg"},
        "systemInstanceType = 'm7i.larg': not an EC2 instance type",
    ),
    "unknown-model": (
        {"model": "meta-llama/Llama-3-70B"},
        "model = 'meta-llama/Llama-3-70B': this stack knows the facts of",
    ),
    "cluster-name": ({"clusterName": "gpt_oss"}, "clusterName = 'gpt_oss': use letters, digits and hyphens"),
    "admin-role": (
        {"clusterAdminRoleArns": ["admin"]},
        "clusterAdminRoleArns = 'admin': expected an IAM role ARN",
    ),
    "server-memory": ({"serverMemoryGiB": 64}, "serverMemoryGiB = 64: use at least 96 GiB"),
    "server-cpu": ({"serverCpu": 500}, "serverCpu = 500: expected a whole number from 0 to 192"),
    # What AWS or Kubernetes would refuse later, or accept to the stack's harm.
    "vpc-too-large": (
        {"vpcCidr": "10.0.0.0/8"},
        "vpcCidr = '10.0.0.0/8': AWS allows VPC blocks from /16 to /28",
    ),
    "vpc-too-small": ({"vpcCidr": "10.0.0.0/24"}, "vpcCidr = '10.0.0.0/24': use a /20 or larger block"),
    "bare-address": (
        {"endpointSourceRanges": ["10.1.2.3"]},
        "endpointSourceRanges = '10.1.2.3': a bare address",
    ),
    "host-bits": (
        {"endpointSourceRanges": ["10.0.0.1/8"]},
        "endpointSourceRanges = '10.0.0.1/8': not an IPv4 CIDR block",
    ),
    "private-api-range": (
        {"clusterApiPublicCidrs": ["10.0.0.0/8"]},
        "clusterApiPublicCidrs = '10.0.0.0/8': a private range",
    ),
    "kubelet-weights": (
        {"weightsHostPath": "/var/lib/kubelet"},
        "weightsHostPath = '/var/lib/kubelet': inside or above /var/lib/kubelet",
    ),
    "escaping-weights": (
        {"weightsHostPath": "/mnt/k8s-disks/0/../../etc"},
        "weightsHostPath = '/mnt/k8s-disks/0/../../etc': an absolute directory",
    ),
    "weights-off-nvme": (
        {"weightsHostPath": "/data/hf"},
        "weightsHostPath = '/data/hf': on AL2023 GPU nodes the local NVMe array is mounted at /mnt/k8s-disks/0",
    ),
    "kube-system": ({"namespace": "kube-system"}, "namespace = 'kube-system': a namespace Kubernetes owns"),
    "default-namespace": ({"namespace": "default"}, "namespace = 'default': a namespace Kubernetes owns"),
    "unlisted-region": (
        {"aws:region": "af-south-1"},
        "aws:region = 'af-south-1': p5.48xlarge is not offered there",
    ),
    "malformed-region": ({"aws:region": "us-east"}, "aws:region = 'us-east': not an AWS region name"),
    "plain-text-token": (
        {"hfAccessToken": "hf_NOT_A_REAL_TOKEN_plain_text_value"},
        f"{PROJECT}:hfAccessToken is set in plain text (value not shown)",
    ),
    "plain-text-kubeconfig": (
        {"kubeconfig": "apiVersion: v1\nkind: Config\n"},
        f"{PROJECT}:kubeconfig is set in plain text (value not shown)",
    ),
    # Settings that contradict each other.
    "gpus-disagree-with-tp": (
        {"gpusPerReplica": 4},
        "tensor_parallel_size x pipeline_parallel_size = 2 x 1 = 2",
    ),
    "more-gpus-than-nodes": ({"replicas": 5}, "replicas = 5: 5 replicas x 2 GPUs = 10 GPUs"),
    "zero-tensor-parallel": (
        {"trtllmOptions": {"tensor_parallel_size": 0}},
        "trtllmOptions: tensor_parallel_size = 0: expected 1 or more",
    ),
    "option-typo": (
        {"trtllmOptions": {"max_batch_sise": 8}},
        "trtllmOptions: max_batch_sise: unknown option (did you mean max_batch_size?)",
    ),
    "moving-revision": ({"modelRevision": "main"}, "modelRevision = 'main': a full commit hash"),
    "latest-image": (
        {"trtllmImage": "nvcr.io/nvidia/tensorrt-llm/release:latest"},
        "trtllmImage = 'nvcr.io/nvidia/tensorrt-llm/release:latest': pin a release tag",
    ),
    "block-without-reservation": (
        {"gpuCapacityType": "CAPACITY_BLOCK"},
        "capacityReservationId = '': CAPACITY_BLOCK needs",
    ),
    "reservation-without-block": (
        {"capacityReservationId": "cr-0123456789abcdef0"},
        "capacityReservationId = 'cr-0123456789abcdef0': only used with",
    ),
    "public-without-ranges": (
        {"endpointScheme": "internet-facing"},
        "endpointSourceRanges = []: an internet-facing endpoint needs",
    ),
    "no-api-access": ({"clusterApiPublicCidrs": []}, "clusterApiPublicCidrs = []: pulumi up must reach"),
}
# An existing cluster (its kubeconfig as ciphertext) without the labels of its GPU nodes.
EXISTING_CLUSTER_REFUSED = (
    {"gpuNodeSelector": {}, "endpointSourceRanges": ["10.0.0.0/8"]},
    "gpuNodeSelector = {}: with an existing cluster",
)


def write_stack(directory: Path, name: str, settings: dict[str, Any], secrets: dict[str, str]) -> str:
    config: dict[str, Any] = dict(stack_config("prod"))
    # Keys without a namespace are the project's; others (aws:region, a misspelt one) as written.
    config.update({key if ":" in key else f"{PROJECT}:{key}": value for key, value in settings.items()})
    # Secrets stand in stack files as ciphertext; offline runs replace them with placeholders.
    config.update({f"{PROJECT}:{key}": {"secure": "v1:ZmFrZQ=="} for key in secrets})
    path = directory / f"Pulumi.{name}.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return str(path)


def verdicts(stack: str, out: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, tuple[int, str]]:
    """Exit code and standard error of each entry point for one stack file."""
    found = {}
    for name, run in (
        ("plan", lambda: plan_main(["plan", "--stack", stack, "--out", str(out)])),
        ("render", lambda: serving_main(["render", "--stack", stack])),
        ("policy", lambda: policy.offline.main(["--stack", stack])),
    ):
        code = run()
        found[name] = (code, capsys.readouterr().err)
    return found


def problem_lines(stderr: str) -> list[str]:
    return sorted(line.strip() for line in stderr.splitlines() if line.startswith("  - "))


def secrets_of(case: str) -> dict[str, str]:
    return VARIANTS.get(case, {}).get("secrets", {})


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_every_entry_point_accepts_a_valid_stack(case: str, tmp_path: Path, capsys) -> None:
    stack = write_stack(tmp_path, case, ACCEPTED[case], secrets_of(case))
    found = verdicts(stack, tmp_path / "build", capsys)
    assert found["plan"] == (0, "")
    assert found["render"] == (0, "")
    assert found["policy"][0] in (0, 1)  # the program ran; a policy may still object
    planned = (tmp_path / "build" / case / "plan.json").read_text()
    # The kubeconfig stands in the file as ciphertext, as a real one would: still an existing cluster.
    assert ("aws:eks/cluster:Cluster" in planned) == (case != "existing-cluster")


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_every_entry_point_refuses_a_bad_stack_with_the_same_reasons(
    case: str, tmp_path: Path, capsys
) -> None:
    settings, expected = REFUSED[case]
    stack = write_stack(tmp_path, case, settings, {})
    found = verdicts(stack, tmp_path / "build", capsys)
    for name, (code, stderr) in found.items():
        assert code == 2, (name, stderr)
        assert "Traceback" not in stderr, (name, stderr)
        assert expected in stderr, (name, stderr)
        for value in settings.values():  # a plain-text secret is named, never shown
            if isinstance(value, str) and ("hf_" in value or "kind: Config" in value):
                assert value not in stderr
    assert (
        problem_lines(found["plan"][1])
        == problem_lines(found["render"][1])
        == problem_lines(found["policy"][1])
    )
    assert not (tmp_path / "build").exists()  # nothing written

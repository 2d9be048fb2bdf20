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
    "gpus-disagree-with-tp": ({"gpusPerReplica": 4}, "gpusPerReplica"),
    "misspelt-key": ({"replica": 2}, f"{PROJECT}:replica = 2: unknown setting (did you mean replicas?)"),
    "words-for-a-number": ({"replicas": "two"}, f"{PROJECT}:replicas = 'two': expected a whole number"),
    "fraction-of-a-node": ({"gpuNodeCount": 1.5}, f"{PROJECT}:gpuNodeCount = 1.5: expected a whole number"),
    "sentence-for-a-flag": ({"clusterApiPrivateOnly": "yes please"}, "expected true or false"),
    "string-for-a-list": (
        {"endpointSourceRanges": "10.0.0.0/8"},
        "endpointSourceRanges = '10.0.0.0/8': expected a list",
    ),
    "latest-image": (
        {"trtllmImage": "nvcr.io/nvidia/tensorrt-llm/release:latest"},
        f"{PROJECT}:trtllmImage = ",
    ),
    "more-gpus-than-nodes": ({"replicas": 5}, "5 replicas x 2 GPUs = 10 GPUs"),
}


def write_stack(directory: Path, name: str, settings: dict[str, Any], secrets: dict[str, str]) -> str:
    config: dict[str, Any] = dict(stack_config("prod"))
    config.update({f"{PROJECT}:{key}": value for key, value in settings.items()})
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
    assert (
        problem_lines(found["plan"][1])
        == problem_lines(found["render"][1])
        == problem_lines(found["policy"][1])
    )
    assert not (tmp_path / "build").exists()  # nothing written

"""checkov, a real IaC scanner, over the Kubernetes objects `make plan` writes: no finding is left
unanswered. Each is fixed, or skipped with its reason written on the object itself
(`checkov.io/skip<N>` annotations, SCANNER_EXCEPTIONS in serving/workload/manifests.py)."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from offline.render import write_plan
from serving.config.project import PROJECT_DIR
from tests.support.stack_harness import plan

pytestmark = pytest.mark.slow  # checkov takes seconds per run

CHECKOV = PROJECT_DIR / ".venv-checkov" / "bin" / "checkov"


def scan(directory: Path) -> dict[str, Any]:
    assert CHECKOV.exists(), "checkov is not installed: run `make test` (it builds .venv-checkov)"
    completed = subprocess.run(
        [str(CHECKOV), "-d", str(directory), "--framework", "kubernetes", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(completed.stdout)
    return report if isinstance(report, dict) else report[0]


@pytest.mark.parametrize("variant", ["prod", "existing-cluster"])
def test_every_finding_is_fixed_or_skipped_with_a_reason(variant: str, tmp_path: Path) -> None:
    write_plan(plan(variant), tmp_path)
    report = scan(tmp_path / plan(variant).stack / "kubernetes")
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    # The scanner did look at the server's Deployment (a parse failure would pass vacuously).
    scanned = {c["resource"] for c in report["results"]["passed_checks"]}
    assert "Deployment.gpt-oss.trtllm-serve" in scanned and report["summary"]["parsing_errors"] == 0
    for skipped in report["results"]["skipped_checks"]:
        assert len(skipped["check_result"]["suppress_comment"]) > 20, skipped["check_id"]


def test_the_scanner_would_catch_a_regression(tmp_path: Path) -> None:
    # The check above must be able to fail: a gateway with a writable root filesystem and no
    # probes is found (the skips on the object cover only the server's deliberate choices).
    write_plan(plan(), tmp_path)
    directory = tmp_path / "prod" / "kubernetes"
    path = next(directory.glob("*-deployment-*.yaml"))
    deployment = yaml.safe_load(path.read_text())
    broken = copy.deepcopy(deployment)
    for container in broken["spec"]["template"]["spec"]["containers"]:
        if container["name"] == "api-gateway":
            container["securityContext"].pop("readOnlyRootFilesystem")
            container.pop("livenessProbe")
    annotations = broken["metadata"]["annotations"]
    broken["metadata"]["annotations"] = {k: v for k, v in annotations.items() if "CKV_K8S_22" not in v}
    path.write_text(yaml.safe_dump(broken))
    failed = {c["check_id"] for c in scan(directory)["results"]["failed_checks"]}
    assert {"CKV_K8S_22", "CKV_K8S_8"} <= failed

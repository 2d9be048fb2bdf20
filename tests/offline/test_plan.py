"""`python -m offline plan`: what it prints and writes, and that secrets never get out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from offline.program import PROJECT_DIR, SECRET_MARK, assemble_config
from offline.render import SecretLeakError, check_no_secrets, kubernetes_objects, render_tree, write_plan
from tests.support.stack_harness import FAKE_HF_TOKEN, FAKE_KUBECONFIG, plan


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    """The real command, in its own process, with a distinctive token in HF_TOKEN."""
    out = tmp_path_factory.mktemp("build")
    env = {**os.environ, "HF_TOKEN": FAKE_HF_TOKEN}
    completed = subprocess.run(
        [sys.executable, "-m", "offline", "plan", "--stack", "prod", "--out", str(out)],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return completed, out / "prod"


def test_plan_command_prints_the_tree_and_outputs(cli_run):
    completed, _ = cli_run
    assert completed.returncode == 0, completed.stderr
    text = completed.stdout
    assert "aws:eks/nodeGroup:NodeGroup  gpu-nodes-node-group" in text
    assert 'instanceTypes=["p5.48xlarge"]' in text
    assert "NO_SCHEDULE" in text and "userData=nodeadm NodeConfig localStorage RAID0" in text
    assert "kubernetes:apps/v1:DaemonSet  nvidia-device-plugin-daemonset" in text
    assert "Outputs:" in text and "apiKey: [secret]" in text and "kubeconfig: [secret]" in text
    assert "model: openai/gpt-oss-120b" in text
    # The lifecycle a plan must show: the https endpoint, the version and its support date, the
    # update strategy and the quota it needs, and how long a new GPU node takes to serve.
    assert "endpoint: https://" in text and "caCertificate: <certificate (PEM)" in text
    assert "kubernetesStandardSupportUntil: 2027-03-27" in text and "gpuUpdateStrategy: MINIMAL" in text
    assert "gpuVcpuQuotaNeeded: 384" in text and "gpuCostCeilingUsdPerHour: 110.08" in text
    assert "Cold start, modelled" in text and "| **total** |" in text


def test_plan_command_writes_objects_options_and_plan_json(cli_run):
    _, target = cli_run
    objects = [yaml.safe_load(p.read_text()) for p in sorted((target / "kubernetes").glob("*.yaml"))]
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "DaemonSet", "Deployment", "Service", "ConfigMap", "Secret"} <= kinds
    for obj in objects:
        assert obj["apiVersion"] and obj["metadata"]["name"]
        if obj["kind"] == "Secret":
            for field in ("data", "stringData"):
                assert all(v == SECRET_MARK for v in (obj.get(field) or {}).values())
    options = yaml.safe_load((target / "extra-llm-api-options.yaml").read_text())
    assert options["kv_cache_config"]["free_gpu_memory_fraction"] == 0.8
    assert "weights downloaded" in (target / "cold-start.md").read_text()
    assert options["tensor_parallel_size"] == 2
    document = json.loads((target / "plan.json").read_text())
    types = {r["type"] for r in document["resources"]}
    assert {
        "aws:eks/cluster:Cluster",
        "aws:eks/nodeGroup:NodeGroup",
        "kubernetes:apps/v1:Deployment",
    } <= types
    for resource in document["resources"]:
        assert {"type", "name", "urn", "parent", "inputs"} <= set(resource)
    provider = next(r for r in document["resources"] if r["type"] == "pulumi:providers:kubernetes")
    assert provider["inputs"]["kubeconfig"] == SECRET_MARK
    assert document["outputs"]["apiKey"] == SECRET_MARK


def test_no_secret_value_reaches_the_terminal_or_any_written_file(cli_run):
    completed, target = cli_run
    files = [p for p in target.rglob("*") if p.is_file()]
    assert len(files) >= 5
    for text in [completed.stdout, completed.stderr, *(p.read_text() for p in files)]:
        assert FAKE_HF_TOKEN not in text
        assert "placeholderapikey" not in text  # the (mocked) generated API key


def test_existing_cluster_kubeconfig_is_never_written(tmp_path):
    result = plan("existing-cluster")
    written = write_plan(result, tmp_path)
    secret_line = "byo-FAKE-bearer-token-5c1e0a77"
    assert secret_line in FAKE_KUBECONFIG
    for path in written:
        assert secret_line not in path.read_text()
    assert secret_line not in render_tree(result)


def test_the_writer_refuses_text_that_contains_a_secret():
    result = plan()
    with pytest.raises(SecretLeakError):
        check_no_secrets(result, f"token: {FAKE_HF_TOKEN}", "a test file")
    check_no_secrets(result, render_tree(result), "the tree")  # the real render passes


def test_offline_hf_token_comes_from_the_environment_else_a_placeholder(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_HF_TOKEN)
    _, values, secret_keys = assemble_config("prod", None, None)
    assert values["gpt-oss-trtllm:hfAccessToken"] == FAKE_HF_TOKEN
    assert "gpt-oss-trtllm:hfAccessToken" in secret_keys
    monkeypatch.delenv("HF_TOKEN")
    _, values, _ = assemble_config("prod", None, None)
    assert values["gpt-oss-trtllm:hfAccessToken"].startswith("<")


def test_pulumi_yaml_defaults_apply_and_the_stack_file_wins():
    _, values, _ = assemble_config("prod", {"gpuNodeCount": 2}, None)
    assert values["gpt-oss-trtllm:weightsHostPath"] == "/mnt/k8s-disks/0/huggingface"  # default
    assert values["gpt-oss-trtllm:clusterName"] == "gpt-oss-prod"  # Pulumi.prod.yaml
    assert values["gpt-oss-trtllm:gpuNodeCount"] == "2"  # override, as the engine's string
    assert values["aws:region"] == "us-east-1"
    assert json.loads(values["gpt-oss-trtllm:gpuNodeSelector"]) == {"nvidia.com/gpu.present": "true"}


def test_each_written_object_is_the_registered_resource_of_its_type():
    result = plan()
    objects = kubernetes_objects(result)
    # Every object says the group, version and kind its resource type names, once per name.
    for obj in objects:
        group_version = obj["apiVersion"] if "/" in obj["apiVersion"] else f"core/{obj['apiVersion']}"
        token = f"kubernetes:{group_version}:{obj['kind']}"
        names = [r.inputs.get("metadata", {}).get("name") for r in result.of_type(token)]
        assert obj["metadata"]["name"] in names, (token, obj["metadata"]["name"])
    identities = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(identities) == len(set(identities))
    kinds = {o["kind"] for o in objects}
    assert {
        "Namespace",
        "DaemonSet",
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
    } <= kinds


@pytest.mark.slow
def test_unknown_stack_is_reported(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "offline", "plan", "--stack", "nosuchstack", "--out", str(tmp_path)],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2 and "Pulumi.nosuchstack.yaml" in completed.stderr

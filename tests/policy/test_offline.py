"""The policy pack over the real program's resources, offline (`python -m policy.offline`).

The prod stack must pass every mandatory policy. Broken variants must fail, naming the policy and
the resource: some come from stack settings (run through the program as a user would set them),
the rest from altering one resource of a real run, for mistakes the settings layer cannot
express (a missing taint, a wrong GPU limit, a leaked token...).
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import policy.offline as offline
from policy.offline import StackRun, check_plan, format_report, run_stack
from policy.rules import load_balancer_exposure
from serving.config.project import PROJECT_DIR
from tests.support import fake_credentials

ROOT = PROJECT_DIR
HF_TOKEN = fake_credentials.hugging_face_token()

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
SERVICE = "kubernetes:core/v1:Service"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"


def failures(run: StackRun) -> list[tuple[str, str]]:
    """(policy, resource name) of every mandatory violation."""
    return [(v.policy, v.resource.name if v.resource else "<stack>") for v in check_plan(run).mandatory]


def warnings(run: StackRun) -> list[tuple[str, str]]:
    return [(v.policy, v.resource.name if v.resource else "<stack>") for v in check_plan(run).advisory]


def container(run: StackRun, name: str) -> dict:
    spec = run.plan.one(DEPLOYMENT).inputs["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == name)


def gpu_node_group(run: StackRun):
    return next(r for r in run.plan.of_type(NODE_GROUP) if "NVIDIA" in r.inputs.get("amiType", ""))


# --- prod passes ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prod() -> StackRun:
    return run_stack("prod")


@pytest.fixture
def fresh_prod(prod: StackRun) -> StackRun:
    """A copy of the prod run that a test may alter (one program run serves the module)."""
    return copy.deepcopy(prod)


def test_prod_passes_every_policy_with_every_policy_applicable(prod: StackRun):
    report = check_plan(prod)
    assert [v.describe() for v in report.violations] == []
    assert report.not_applicable == [] and report.undecided == []


def test_prod_resources_reach_the_policies_they_are_meant_for(prod: StackRun):
    # A policy that sees none of its resources passes vacuously: make sure prod has them all.
    types = {r.type for r in prod.plan.resources}
    assert {
        NODE_GROUP,
        LAUNCH_TEMPLATE,
        DEPLOYMENT,
        SERVICE,
        CONFIG_MAP,
        "kubernetes:core/v1:Secret",
    } <= types
    assert container(prod, "trtllm-serve")["resources"]["limits"]["nvidia.com/gpu"]
    assert container(prod, "api-gateway")["ports"][0]["name"] == "gateway"
    assert load_balancer_exposure(prod.plan.one(SERVICE).inputs) == "internal"


@pytest.mark.slow
def test_cli_passes_on_prod():
    result = subprocess.run(
        [sys.executable, "-m", "policy.offline", "--stack", "prod"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith("0 mandatory violation(s), 0 advisory: passed")


# --- variants from stack settings ----------------------------------------------------------------


def test_internet_facing_endpoint_behind_the_gateway_passes():
    run = run_stack("prod", {"endpointScheme": "internet-facing", "endpointSourceRanges": ["0.0.0.0/0"]})
    # The policy must see this Service as public, so the gateway check really ran and passed.
    assert load_balancer_exposure(run.plan.one(SERVICE).inputs) == "internet-facing"
    assert failures(run) == []


def test_two_gpu_nodes_warn_about_the_budget_without_failing():
    run = run_stack("prod", {"gpuNodeCount": 2, "costBudgetUsdPerHour": 60})
    assert failures(run) == []
    assert warnings(run) == [("gpu-cost-within-budget", "<stack>")]


@pytest.mark.slow
def test_cli_prints_advisories_and_still_passes():
    result = subprocess.run(
        [sys.executable, "-m", "policy.offline", "--stack", "prod", "--set", "costBudgetUsdPerHour=50"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[advisory] gpu-cost-within-budget" in result.stdout
    assert re.search(r"\b5[0-9]\.[0-9]{2} USD an hour", result.stdout)  # one p5, about 55 (FACTS.md)
    assert "50.00 USD an hour" in result.stdout


@pytest.mark.slow
def test_cli_reports_a_refused_configuration_with_exit_code_2():
    result = subprocess.run(
        [sys.executable, "-m", "policy.offline", "--stack", "prod", "--set", "replicas=5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "replicas" in result.stderr


# --- broken variants: one resource of a real run altered -----------------------------------------


def test_gpu_node_group_without_taint_fails(fresh_prod: StackRun):
    run = fresh_prod
    gpu_node_group(run).inputs["taints"] = []
    assert failures(run) == [("gpu-node-group-tainted", gpu_node_group(run).name)]


def test_gpu_limit_not_matching_tensor_parallel_size_fails(fresh_prod: StackRun):
    run = fresh_prod
    trtllm = container(run, "trtllm-serve")
    trtllm["resources"]["limits"]["nvidia.com/gpu"] = "1"
    assert failures(run) == [("gpu-limit-matches-parallelism", "gpt-oss-server")]


def test_options_file_raising_tensor_parallel_size_fails_against_the_limit(fresh_prod: StackRun):
    run = fresh_prod
    options = next(
        r for r in run.plan.of_type(CONFIG_MAP) if "extra-llm-api-options.yaml" in r.inputs.get("data", {})
    )
    text = options.inputs["data"]["extra-llm-api-options.yaml"]
    options.inputs["data"]["extra-llm-api-options.yaml"] = text.replace(
        "tensor_parallel_size: 2", "tensor_parallel_size: 4"
    )
    assert failures(run) == [("gpu-limit-matches-parallelism", "gpt-oss-server")]


def test_public_load_balancer_straight_to_the_server_fails(fresh_prod: StackRun):
    run = fresh_prod
    endpoint = run.plan.one(SERVICE)
    endpoint.inputs["metadata"]["annotations"] = {}
    endpoint.inputs["spec"].pop("loadBalancerClass")  # the legacy controller: public by default
    for port in endpoint.inputs["spec"]["ports"]:
        port["targetPort"] = 8000
    assert failures(run) == [("internet-facing-lb-requires-api-key", endpoint.name)]


def test_hugging_face_token_as_env_literal_fails_without_printing_it():
    run = run_stack("prod", secrets={"hfAccessToken": HF_TOKEN})
    assert HF_TOKEN in run.known_secrets
    env = container(run, "download-weights")["env"]
    for variable in env:
        if variable["name"] == "HF_TOKEN":
            variable.pop("valueFrom")
            variable["value"] = HF_TOKEN
    assert failures(run) == [("no-secret-in-plain-config", "gpt-oss-server")]
    text = format_report(
        check_plan(run), stack="prod", resource_count=len(run.plan.resources), secret_values=run.known_secrets
    )
    assert HF_TOKEN not in text and "env 'HF_TOKEN'" in text


def test_stack_secret_copied_into_a_config_map_fails():
    run = run_stack("prod", secrets={"hfAccessToken": HF_TOKEN})
    options = next(r for r in run.plan.of_type(CONFIG_MAP) if r.name == "gpt-oss-trtllm-options")
    options.inputs["data"]["notes.txt"] = f"token for the download job: {HF_TOKEN}\n"
    assert failures(run) == [("no-secret-in-plain-config", "gpt-oss-trtllm-options")]


def test_launch_template_allowing_imdsv1_fails(fresh_prod: StackRun):
    run = fresh_prod
    template = run.plan.one(LAUNCH_TEMPLATE, "gpu-nodes-launch-template")
    template.inputs["metadataOptions"]["httpTokens"] = "optional"
    assert failures(run) == [("imdsv2-required", "gpu-nodes-launch-template")]


def test_unpinned_sidecar_image_fails(fresh_prod: StackRun):
    run = fresh_prod
    container(run, "api-gateway")["image"] = "docker.io/nginxinc/nginx-unprivileged:latest"
    assert failures(run) == [("container-images-pinned", "gpt-oss-server")]


def test_more_replicas_than_the_node_holds_warns(fresh_prod: StackRun):
    run = fresh_prod
    run.plan.one(DEPLOYMENT).inputs["spec"]["replicas"] = 5
    assert failures(run) == []
    assert warnings(run) == [("gpu-replicas-fit-nodes", "<stack>")]


def test_cli_fails_naming_the_policy_and_the_resource(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    broken = run_stack("prod")
    gpu_node_group(broken).inputs["taints"] = []
    name, urn = gpu_node_group(broken).name, gpu_node_group(broken).urn
    monkeypatch.setattr(offline, "run_stack", lambda stack, overrides=None: broken)
    assert offline.main(["--stack", "prod"]) == 1
    out = capsys.readouterr().out
    assert f"[mandatory] gpu-node-group-tainted: {NODE_GROUP} '{name}' ({urn})" in out
    assert out.rstrip().endswith("1 mandatory violation(s), 0 advisory: FAILED")


@pytest.mark.slow
def test_policy_config_file_overrides_the_stack_budget(tmp_path: Path):
    config = tmp_path / "policy-config.json"
    config.write_text('{"gpu-cost-within-budget": {"maxUsdPerHour": 200}}')
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "policy.offline",
            "--stack",
            "prod",
            "--set",
            "gpuNodeCount=3",
            "--set",
            "gpuNodeMaxCount=3",
            "--policy-config",
            str(config),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gpu-cost-within-budget" not in result.stdout


def test_stack_file_budget_is_what_the_runner_uses(tmp_path: Path):
    # A budget unlike Pulumi.yaml's default (60), so the default cannot pass for it.
    stack = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())
    stack["config"]["gpt-oss-trtllm:costBudgetUsdPerHour"] = 45
    path = tmp_path / "Pulumi.budget.yaml"
    path.write_text(yaml.safe_dump(stack))
    run = run_stack(str(path))
    assert run.budget == 45
    assert [(v.policy, v.resource) for v in check_plan(run).advisory] == [("gpu-cost-within-budget", None)]

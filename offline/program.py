"""Run the real `__main__.py` for a stack under Pulumi's mock runtime and keep what it registered.

The CLI would (1) apply Pulumi.yaml defaults to the stack's configuration, (2) run the program
against the engine, and (3) record each resource's inputs. Offline, this module does (1) itself
(the mock runtime does not), replaces the engine with `MockMonitor` + `offline.mocks.PlanMocks`,
and records each registration with its parent and provider, which the monitor alone forgets.

Two views of every resource's inputs:
  * `PlannedResource.inputs`: plain values with secrets unwrapped, as the provider would receive
    them; for assertions and policy checks, never for printing;
  * `PlannedResource.redacted_inputs()`: secrets replaced by "[secret]"; the only view that
    `offline.render` prints or writes.

Runs happen in-process: the runtime's global state (settings, root stack, config) is reset at
the start of each run, so many variants can run one after another in one pytest process.
"""

from __future__ import annotations

import runpy
import sys
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import rpc
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from offline.mocks import PlanMocks
from serving.config.project import PROJECT_DIR, assemble_config, stack_name

SECRET_MARK = "[secret]"
MIN_SECRET_LENGTH = 16


@dataclass
class PlannedResource:
    type: str
    name: str
    urn: str
    id: str  # what the mocked cloud returned as the resource's id (what references carry)
    parent: str | None
    custom: bool
    provider: str | None
    dependencies: list[str]  # URNs this resource waits for (depends_on and input dependencies)
    aliases: list[dict[str, Any]]  # what the engine would match old URNs against (see _alias_record)
    delete_before_replace: bool  # a replacement deletes the old resource before creating the new
    ignore_changes: list[str]  # input paths a `pulumi up` leaves as they are (an autoscaler owns them)
    inputs: dict[str, Any]  # secrets unwrapped: for checks only
    state: dict[str, Any]  # inputs + what the mocked cloud returned, secrets unwrapped
    _wrapped_inputs: dict[str, Any] = field(repr=False, default_factory=dict)
    _wrapped_state: dict[str, Any] = field(repr=False, default_factory=dict)

    def redacted_inputs(self) -> dict[str, Any]:
        return redact(self._wrapped_inputs)

    def redacted_state(self) -> dict[str, Any]:
        return redact(self._wrapped_state)

    def is_secret_input(self, path: str) -> bool:
        """Whether the input at dotted `path` (e.g. "stringData.token") is a Pulumi secret."""
        value: Any = self._wrapped_inputs
        for part in path.split("."):
            if rpc.is_rpc_secret(value):
                return True
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                raise KeyError(f"{self.type} {self.name} has no input {path}")
        return rpc.is_rpc_secret(value)


@dataclass
class PlanResult:
    stack: str
    resources: list[PlannedResource]
    outputs: dict[str, object]  # plain values
    secret_outputs: set[str]
    # Every string that was a secret anywhere (inputs, state, outputs, secret config): what the
    # renderer must never print. Tests grep written files for these.
    secret_values: set[str]
    # The configuration the program ran with, full keys, as the engine hands it over (strings),
    # and which of those keys were secret.
    config: dict[str, str] = field(default_factory=dict)
    secret_config_keys: set[str] = field(default_factory=set)

    def of_type(self, type_token: str) -> list[PlannedResource]:
        return [r for r in self.resources if r.type == type_token]

    def one(self, type_token: str, name: str | None = None) -> PlannedResource:
        matches = [r for r in self.of_type(type_token) if name is None or r.name == name]
        if len(matches) != 1:
            found = ", ".join(r.name for r in self.of_type(type_token)) or "none"
            raise LookupError(f"expected one {type_token} named {name!r}, found: {found}")
        return matches[0]

    def redacted_outputs(self) -> dict[str, object]:
        return {k: SECRET_MARK if k in self.secret_outputs else v for k, v in self.outputs.items()}


# --- secrets in deserialized properties ------------------------------------------------------


def _number(value: Any) -> Any:
    # Property values travel as protobuf doubles: 4 arrives as 4.0. Whole numbers become ints
    # again, as the providers send them on (JSON `4`), so YAML and checks read naturally.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def unwrap(value: Any) -> Any:
    """Secrets unwrapped, whole numbers as ints, SDK-internal keys dropped."""
    if rpc.is_rpc_secret(value):
        return unwrap(value["value"])
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return _number(value)


def redact(value: Any) -> Any:
    """Like `unwrap`, but every secret replaced by "[secret]"."""
    if rpc.is_rpc_secret(value):
        return SECRET_MARK
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return _number(value)


def string_leaves(value: Any, *, secret: bool, inside_secret: bool = False) -> set[str]:
    """String leaves below a secret marker (secret=True) or outside any (secret=False)."""
    if rpc.is_rpc_secret(value):
        return string_leaves(value["value"], secret=secret, inside_secret=True)
    if isinstance(value, dict):
        keys = set(value) if not secret and not inside_secret else set()  # names are never secrets
        return keys.union(
            *(string_leaves(v, secret=secret, inside_secret=inside_secret) for v in value.values())
        )
    if isinstance(value, list):
        return set().union(*(string_leaves(v, secret=secret, inside_secret=inside_secret) for v in value))
    if isinstance(value, str) and value and inside_secret == secret:
        return {value}
    return set()


# --- the recording monitor -------------------------------------------------------------------


def _alias_record(alias: Any) -> dict[str, Any]:
    """An alias as the engine receives it: a whole URN, or a spec of what differed."""
    if alias.WhichOneof("alias") == "urn":
        return {"urn": alias.urn}
    spec = alias.spec
    return {
        "name": spec.name or None,
        "type": spec.type or None,
        "parent_urn": spec.parentUrn or None,
        "no_parent": bool(spec.noParent),
    }


class RecordingMonitor(MockMonitor):
    """MockMonitor that also keeps each registration's parent, provider and raw inputs."""

    def __init__(self, mocks: PlanMocks):
        super().__init__(mocks)
        self.registrations: list[dict[str, Any]] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            inputs = rpc.deserialize_properties(request.object, keep_unknowns=True)
            self.registrations.append(
                {
                    "type": request.type,
                    "name": request.name,
                    "urn": response.urn,
                    "parent": request.parent or None,
                    "custom": bool(request.custom),
                    "provider": request.provider or None,
                    "dependencies": sorted(set(request.dependencies)),
                    "inputs": inputs,
                    "aliases": [_alias_record(alias) for alias in request.aliases],
                    "delete_before_replace": bool(request.deleteBeforeReplace),
                    "ignore_changes": list(request.ignoreChanges),
                }
            )
        return response


# --- running the program ---------------------------------------------------------------------


def _reset_runtime() -> None:
    runtime_settings.set_root_resource(None)  # type: ignore[arg-type]
    runtime_settings.SETTINGS.outputs.clear()
    # A run's configuration must not outlive it: code that reads pulumi.Config later in the same
    # process (the policy pack's default budget, say) would see the last stack's values.
    pulumi.runtime.set_all_config({}, [])


def _resolve(value: Any) -> tuple[Any, bool]:
    output = pulumi.Output.from_input(value)
    resolved = _sync_await(output.future(with_unknowns=False))
    return resolved, bool(_sync_await(output.is_secret()))


def run_program(
    stack: str = "prod",
    *,
    config: dict[str, object] | None = None,
    secrets: dict[str, str] | None = None,
) -> PlanResult:
    """Run `__main__.py` for `stack` with its config (+ overrides) and return what it planned.

    `config` and `secrets` keys are project keys without prefix ("gpuNodeCount") or namespaced
    keys of other packages ("aws:region"). A `SettingsError` from the program propagates.
    """
    project, values, secret_keys = assemble_config(stack, config, secrets)
    name = stack_name(stack)
    region = values.get("aws:region", "us-east-1")
    mocks = PlanMocks(region=region)
    monitor = RecordingMonitor(mocks)

    _reset_runtime()
    pulumi.runtime.set_all_config(values, sorted(secret_keys))
    pulumi.runtime.set_mocks(mocks, project=project, stack=name, preview=False, monitor=monitor)
    root = runtime_settings.get_root_resource()
    if str(PROJECT_DIR) not in sys.path:
        sys.path.insert(0, str(PROJECT_DIR))

    def program() -> None:
        runpy.run_path(str(PROJECT_DIR / "__main__.py"), run_name="__main__")

    try:
        try:
            _sync_await(run_pulumi_func(program))
        except Exception as error:
            error.add_note(f"resources registered before the error: {len(monitor.registrations)}")
            raise
        outputs: dict[str, object] = {}
        secret_outputs: set[str] = set()
        for key, value in root.outputs.items():  # type: ignore[union-attr]
            resolved, is_secret = _resolve(value)
            outputs[key] = unwrap(resolved)
            if is_secret:
                secret_outputs.add(key)
    finally:
        _reset_runtime()

    registered = monitor.get_registered_resources()
    resources: list[PlannedResource] = []
    secret_leaves: set[str] = set()
    public_leaves: set[str] = set()
    for record in monitor.registrations:
        state = registered.get(record["urn"])
        wrapped_state = state.state if state is not None else {}
        resources.append(
            PlannedResource(
                type=record["type"],
                name=record["name"],
                urn=record["urn"],
                id=state.id if state is not None else "",
                parent=record["parent"],
                custom=record["custom"],
                provider=record["provider"],
                dependencies=record["dependencies"],
                aliases=record["aliases"],
                delete_before_replace=record["delete_before_replace"],
                ignore_changes=record["ignore_changes"],
                inputs=unwrap(record["inputs"]),
                state=unwrap(wrapped_state),
                _wrapped_inputs=record["inputs"],
                _wrapped_state=wrapped_state,
            )
        )
        for properties in (record["inputs"], wrapped_state):
            secret_leaves |= string_leaves(properties, secret=True)
            public_leaves |= string_leaves(properties, secret=False)
    for key, value in outputs.items():
        if key in secret_outputs:
            secret_leaves |= string_leaves(value, secret=True, inside_secret=True)
        else:
            public_leaves |= string_leaves(value, secret=False)
    # A secret object (say, a Deployment spec holding one secret annotation) makes every string in
    # it secret, "NoSchedule" included. Strings that also appear in the open, or inside an open
    # string, are not secrets; nor are short ones (names, flags): real keys and tokens are long.
    # Secret config values always count, even if the program leaked one into the open.
    secret_values = {values[key] for key in secret_keys if values.get(key)}
    secret_values |= {
        leaf
        for leaf in secret_leaves - public_leaves
        if len(leaf) >= MIN_SECRET_LENGTH and not any(leaf in text for text in public_leaves)
    }
    return PlanResult(
        stack=name,
        resources=resources,
        outputs=outputs,
        secret_outputs=secret_outputs,
        secret_values=secret_values,
        config=values,
        secret_config_keys=secret_keys,
    )

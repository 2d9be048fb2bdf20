"""Resource URNs as the Pulumi engine forms them, and the old URNs a resource's aliases claim.

The mock monitor names a child `<parent type>$<type>`; the engine qualifies a type with the
whole chain of component types above it (the root stack left out). A renamed or re-parented
resource keeps its state when one of its aliases gives the URN it had: its own alias specs
(a different name, type or parent) and, inherited, each of its parent's aliases, where a child
named `<parent name>-suffix` takes the parent's old name as prefix (the engine's convention).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

ROOT_TYPE = "pulumi:pulumi:Stack"


def _urn(project: str, stack: str, qualified_type: str, name: str) -> str:
    return f"urn:pulumi:{stack}::{project}::{qualified_type}::{name}"


def _qualified_type(urn: str) -> str:
    return urn.split("::")[2]


def _name(urn: str) -> str:
    return urn.split("::", 3)[3]


def _child_type(parent_urn: str | None, type_token: str) -> str:
    if parent_urn is None:
        return type_token
    return f"{_qualified_type(parent_urn)}${type_token}"


class EngineUrns:
    """Engine URNs and alias URNs for the resources of one offline run (offline.program)."""

    def __init__(self, resources: Iterable[Any], *, project: str, stack: str):
        self.project, self.stack = project, stack
        self.by_mock_urn = {r.urn: r for r in resources}
        self._urns: dict[str, str] = {}
        self._aliases: dict[str, set[str]] = {}

    def _parent_mock_urn(self, resource: Any) -> str | None:
        parent = resource.parent
        if parent is None or parent not in self.by_mock_urn:  # the root stack
            return None
        return parent

    def urn(self, resource: Any) -> str:
        if resource.urn not in self._urns:
            parent = self._parent_mock_urn(resource)
            parent_urn = self.urn(self.by_mock_urn[parent]) if parent else None
            self._urns[resource.urn] = _urn(
                self.project, self.stack, _child_type(parent_urn, resource.type), resource.name
            )
        return self._urns[resource.urn]

    def aliases(self, resource: Any) -> set[str]:
        """Every old URN this resource answers to, besides its own."""
        if resource.urn in self._aliases:
            return self._aliases[resource.urn]
        parent = self._parent_mock_urn(resource)
        parent_urn = self.urn(self.by_mock_urn[parent]) if parent else None
        parent_aliases = self.aliases(self.by_mock_urn[parent]) if parent else set()
        found: set[str] = set()
        specs: list[dict[str, Any]] = [{"name": None, "type": None, "parent_urn": None, "no_parent": False}]
        for alias in resource.aliases:
            if "urn" in alias:
                found.add(alias["urn"])
            else:
                specs.append(alias)
        for index, spec in enumerate(specs):
            name = spec["name"] or resource.name
            type_token = spec["type"] or resource.type
            if spec["no_parent"]:
                found.add(_urn(self.project, self.stack, type_token, name))
                continue
            if spec["parent_urn"]:
                mock_parent = self.by_mock_urn.get(spec["parent_urn"])
                explicit = self.urn(mock_parent) if mock_parent else spec["parent_urn"]
                found.add(_urn(self.project, self.stack, _child_type(explicit, type_token), name))
                continue
            if index:
                found.add(_urn(self.project, self.stack, _child_type(parent_urn, type_token), name))
            # Inherited from the parent's aliases.
            for old_parent in parent_aliases:
                current_parent_name = _name(parent_urn) if parent_urn else ""
                child_name = name
                if current_parent_name and name.startswith(current_parent_name):
                    child_name = _name(old_parent) + name[len(current_parent_name) :]
                found.add(_urn(self.project, self.stack, _child_type(old_parent, type_token), child_name))
        found.discard(self.urn(resource))
        self._aliases[resource.urn] = found
        return found

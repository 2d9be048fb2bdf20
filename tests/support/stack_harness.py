"""Running the stack's real `__main__.py` offline for tests, with a cache per variant.

Each variant is the prod stack file plus overrides, exactly as `run_program` takes them. Runs
are in-process and take a fraction of a second after the first (imports), so tests may use as
many variants as they need; identical variants are computed once per session.
"""

from __future__ import annotations

import base64
import email
import json
from typing import Any

import yaml

from offline.program import PlannedResource, PlanResult, run_program
from tests.support import fake_credentials

# Distinctive fake secrets: tests grep every written byte for them.
FAKE_HF_TOKEN = fake_credentials.hugging_face_token()
FAKE_KUBECONFIG = "\n".join(
    [
        "apiVersion: v1",
        "kind: Config",
        "clusters: [{name: byo, cluster: {server: 'https://byo-cluster.example.invalid'}}]",
        "users: [{name: byo, user: {token: byo-FAKE-bearer-token-5c1e0a77}}]",
        "contexts: [{name: byo, context: {cluster: byo, user: byo}}]",
        "current-context: byo",
    ]
)

VARIANTS: dict[str, dict[str, Any]] = {
    "prod": {},
    "existing-cluster": {
        "secrets": {"kubeconfig": FAKE_KUBECONFIG},
        # Autoscaling is for a cluster the stack creates (prod turns it on).
        "config": {
            "endpointSourceRanges": ["10.0.0.0/8"],
            "clusterName": "team-gpu-cluster",
            "autoscaling": False,
        },
    },
    "capacity-block": {
        "config": {
            "gpuCapacityType": "CAPACITY_BLOCK",
            "capacityReservationId": "cr-0123456789abcdef0",
            "capacityReservationZone": "us-east-1c",
        }
    },
    "h200": {"config": {"gpuInstanceType": "p5e.48xlarge"}},
    "bottlerocket": {"config": {"gpuAmiType": "BOTTLEROCKET_x86_64_NVIDIA"}},
    "spot": {"config": {"gpuCapacityType": "SPOT"}},
    "three-zones-admins": {
        "config": {
            "availabilityZoneCount": 3,
            "clusterAdminRoleArns": ["arn:aws:iam::123456789012:role/platform-admins"],
            "clusterApiPublicCidrs": [],
            "clusterApiPrivateOnly": True,
        }
    },
}

_cache: dict[str, PlanResult] = {}


def plan(variant: str = "prod") -> PlanResult:
    """The plan of a named variant (see VARIANTS), with the fake HF token as the secret."""
    if variant not in _cache:
        spec = VARIANTS[variant]
        secrets = {"hfAccessToken": FAKE_HF_TOKEN, **spec.get("secrets", {})}
        _cache[variant] = run_program("prod", config=spec.get("config"), secrets=secrets)
    return _cache[variant]


def run(config: dict[str, Any] | None = None, secrets: dict[str, str] | None = None) -> PlanResult:
    """An uncached run of the prod stack with overrides (for error cases)."""
    return run_program("prod", config=config, secrets={"hfAccessToken": FAKE_HF_TOKEN, **(secrets or {})})


def by_name_suffix(result: PlanResult, type_token: str, suffix: str) -> PlannedResource:
    matches = [r for r in result.of_type(type_token) if r.name.endswith(suffix)]
    assert len(matches) == 1, f"{type_token} *{suffix}: {[r.name for r in result.of_type(type_token)]}"
    return matches[0]


def user_data_parts(launch_template: PlannedResource) -> dict[str, str]:
    """A launch template's user data, decoded: MIME parts by content type, or {"toml": text}."""
    text = base64.b64decode(launch_template.inputs["userData"]).decode()
    if not text.startswith("MIME-Version"):
        return {"toml": text}
    message = email.message_from_string(text)
    return {
        part.get_content_type(): str(part.get_payload()) for part in message.walk() if not part.is_multipart()
    }


def node_config(launch_template: PlannedResource) -> dict[str, Any]:
    return yaml.safe_load(user_data_parts(launch_template)["application/node.eks.aws"])


def kubeconfig_of_provider(result: PlanResult) -> str:
    return result.one("pulumi:providers:kubernetes").inputs["kubeconfig"]


def as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)

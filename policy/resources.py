"""Reading Kubernetes and AWS resource inputs the way the policies need them.

Inputs reach a policy as the providers send them: camelCase keys, numbers possibly as floats
(protobuf Struct) or strings ("2"), and, during `pulumi preview`, pulumi-policy's unknown-checking
proxies, which raise `UnknownValueError` when a value is not known yet. The helpers here read
defensively so that one unknown field does not hide every other finding.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pulumi_policy.proxy import UnknownValueError

from serving.runtime.hardware import INSTANCE_TYPES
from serving.runtime.options import OPTIONS_FILE_NAME
from serving.workload import manifests as workload

T = TypeVar("T")
D = TypeVar("D")

GPU_RESOURCE = "nvidia.com/gpu"
# The workload's names, from the code that writes them: the policies check that contract.
SERVER_CONTAINER = workload.SERVER_CONTAINER
GATEWAY_CONTAINER = workload.GATEWAY_CONTAINER
GATEWAY_PORT_NAME = workload.GATEWAY_PORT_NAME
OPTIONS_FILE_KEY = OPTIONS_FILE_NAME

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
EC2_INSTANCE = "aws:ec2/instance:Instance"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
K8S_SECRET = "kubernetes:core/v1:Secret"
SERVICE = "kubernetes:core/v1:Service"
SECRETS_MANAGER_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"

# Workload kinds and where their pod spec sits in the inputs.
_POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template", "spec"),
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "kubernetes:core/v1:Pod": ("spec",),
}
WORKLOAD_TYPES = frozenset(_POD_SPEC_PATHS)


def known(read: Callable[[], T], default: D) -> T | D:
    """`read()`, or `default` when it touches a value unknown during preview."""
    try:
        return read()
    except UnknownValueError:
        return default


def known_items(value: Any) -> list[tuple[str, Any]]:
    """A mapping's (key, value) pairs, leaving out values unknown during preview (a generated
    password in a Secret, say), so that the others are still checked."""
    if not isinstance(value, Mapping):
        return []
    items = []
    for key in value:
        try:
            items.append((key, value[key]))
        except UnknownValueError:
            continue
    return items


def known_values(value: Any) -> list[Any]:
    return [v for _, v in known_items(value)]


def get_path(value: Any, *path: str | int) -> Any:
    """Walk mappings and sequences; None when a step is missing (unknowns still raise)."""
    for step in path:
        if isinstance(step, int):
            if not isinstance(value, Sequence) or isinstance(value, str) or step >= len(value):
                return None
            value = value[step]
        else:
            if not isinstance(value, Mapping) or step not in value:
                return None
            value = value[step]
    return value


def as_list(value: Any) -> list[Any]:
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [value[i] for i in range(len(value))]
    return []


def as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_int(value: Any) -> int | None:
    """2, 2.0 and "2" are 2; anything else (including "2.5" or "") is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        return int(value)
    return None


# --- Pods and containers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Container:
    name: str
    spec: Mapping[str, Any]
    init: bool

    @property
    def image(self) -> Any:
        return self.spec.get("image")

    @property
    def gpu_limit(self) -> int | None:
        return as_int(get_path(self.spec, "resources", "limits", GPU_RESOURCE))

    @property
    def command_line(self) -> list[str]:
        words = as_list(self.spec.get("command")) + as_list(self.spec.get("args"))
        return [w for w in words if isinstance(w, str)]

    def port_numbers_named(self, name: str) -> set[int]:
        return {
            number
            for port in as_list(self.spec.get("ports"))
            if as_mapping(port).get("name") == name
            and (number := as_int(as_mapping(port).get("containerPort"))) is not None
        }


def pod_spec(resource_type: str, props: Mapping[str, Any]) -> Mapping[str, Any] | None:
    path = _POD_SPEC_PATHS.get(resource_type)
    if path is None:
        return None
    spec = get_path(props, *path)
    return spec if isinstance(spec, Mapping) else None


def pod_labels(resource_type: str, props: Mapping[str, Any]) -> Mapping[str, Any]:
    path = _POD_SPEC_PATHS.get(resource_type)
    if path is None:
        return {}
    metadata = get_path(props, *path[:-1], "metadata") if len(path) > 1 else props.get("metadata")
    return as_mapping(get_path(metadata, "labels"))


def containers(spec: Mapping[str, Any]) -> Iterator[Container]:
    for key, init in (("initContainers", True), ("containers", False)):
        for raw in as_list(spec.get(key)):
            raw = as_mapping(raw)
            yield Container(name=str(raw.get("name", "")), spec=raw, init=init)


def namespace_of(props: Mapping[str, Any]) -> str | None:
    """The object's namespace; None while a preview does not know it yet."""
    return known(lambda: str(get_path(props, "metadata", "namespace") or "default"), None)


def same_namespace(a: str | None, b: str | None) -> bool:
    # An unknown namespace (preview) may be any: matching keeps the check running rather than
    # letting one unknown value turn a mandatory policy into "could not run".
    return a is None or b is None or a == b


def metadata_name(props: Mapping[str, Any]) -> str | None:
    name = known(lambda: get_path(props, "metadata", "name"), None)
    return name if isinstance(name, str) else None


# --- Images --------------------------------------------------------------------------------

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def image_pin_problem(image: Any) -> str | None:
    """Why `image` is not pinned, or None when it has a release tag or a sha256 digest."""
    if not isinstance(image, str) or not image.strip():
        return "has no image"
    if _DIGEST.search(image):
        return None
    if "@" in image:
        return f"image {image!r} has a digest that is not @sha256:<64 hex digits>"
    last_segment = image.rsplit("/", 1)[-1]
    if ":" not in last_segment:
        return f"image {image!r} has no tag (it means :latest)"
    tag = last_segment.rsplit(":", 1)[1]
    if not tag:
        return f"image {image!r} has an empty tag"
    if tag.lower() == "latest":
        return f"image {image!r} uses the moving tag :latest"
    return None


# --- GPU instances and node groups -----------------------------------------------------------

# Families whose instances carry NVIDIA GPUs: p3/p4d/p4de/p5/p5e/p5en/p6-b200..., g4dn/g5/g6/g6e,
# gr6. Inferentia and Trainium (inf*, trn*) are accelerators but not NVIDIA ones, and g4ad has
# AMD GPUs: none of those gets the nvidia.com/gpu taint.
_NVIDIA_FAMILY = re.compile(r"^(p\d+[a-z]*(-[a-z0-9]+)?|g\d+[a-z]*|gr\d+[a-z]*)\.")
_NON_NVIDIA_GPU_FAMILIES = ("g4ad.",)


def is_gpu_instance_type(instance_type: Any) -> bool:
    if not isinstance(instance_type, str):
        return False
    if instance_type in INSTANCE_TYPES:
        return True
    return bool(_NVIDIA_FAMILY.match(instance_type)) and not instance_type.startswith(
        _NON_NVIDIA_GPU_FAMILIES
    )


def gpus_per_instance(instance_type: str) -> int | None:
    facts = INSTANCE_TYPES.get(instance_type)
    return facts.gpus if facts else None


def usd_per_hour(instance_type: str) -> float | None:
    facts = INSTANCE_TYPES.get(instance_type)
    return facts.on_demand_usd_per_hour if facts else None


# --- Secrets in plain configuration ----------------------------------------------------------

# Shapes of credentials that never belong in a ConfigMap, an env literal or an argument.
TOKEN_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a Hugging Face token (hf_...)", re.compile(r"\bhf_[A-Za-z0-9]{30,}")),
    ("a literal bearer token", re.compile(r"\bBearer\s+[A-Za-z0-9._~+/=-]{16,}")),
    ("an AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    (
        "an AWS secret access key",
        re.compile(r"(?i)aws_?secret_?access_?key[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])"),
    ),
)
# Environment variable names that hold credentials: a literal `value` on them is a leak even if
# the value has no recognisable shape.
SECRET_ENV_NAME = re.compile(r"(?i)(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY)")
# A whole secret value shorter than this is too likely to occur by chance.
MIN_SECRET_LENGTH = 12
# Token-like words inside a multi-line secret (a gateway key map holds several keys): long,
# from the base64url alphabet, with both letters and digits, so that ordinary words of a
# kubeconfig or a comment never count.
_SECRET_WORD = re.compile(r"^(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9_-]{20,}$")


def token_shape(text: str) -> str | None:
    """What kind of credential `text` contains, or None."""
    for description, pattern in TOKEN_SHAPES:
        if pattern.search(text):
            return description
    return None


def secret_fragments(value: str) -> set[str]:
    """The value itself and the token-like words of its non-comment lines."""
    fragments = {value.strip()} if len(value.strip()) >= MIN_SECRET_LENGTH else set()
    for line in value.splitlines():
        if line.lstrip().startswith("#"):
            continue
        fragments |= {w for w in re.split(r"[^A-Za-z0-9_-]+", line) if _SECRET_WORD.match(w)}
    return fragments

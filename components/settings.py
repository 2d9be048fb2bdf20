"""The stack's configuration, parsed once into typed settings and validated in one place.

`Pulumi.yaml` declares every key with its default (the CLI applies them; the offline runner
applies them the same way). `parse_settings` takes the decoded values and either returns
`StackSettings` or raises `SettingsError` listing every problem at once, each naming the key,
the value and what would work, before a single resource is registered.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

from serving.hardware import GPT_OSS_120B, INSTANCE_TYPES, MODELS, InstanceType
from serving.project_files import declared_config, project_name
from serving.runtime import RuntimeConfigError, ServingRuntime, build_runtime
from serving.workload import replica_resources

PROJECT = project_name()

AMI_TYPES = ("AL2023_x86_64_NVIDIA", "BOTTLEROCKET_x86_64_NVIDIA")
CAPACITY_TYPES = ("ON_DEMAND", "SPOT", "CAPACITY_BLOCK")
ENDPOINT_SCHEMES = ("internal", "internet-facing")
# EKS standard-support versions when this was written; extend as AWS releases more.
KUBERNETES_VERSIONS = ("1.32", "1.33", "1.34", "1.35")
# Below these a replica of gpt-oss-120b cannot load (tokenizer workers, the checkpoint in RAM).
MIN_SERVER_CPU = 4
MIN_SERVER_MEMORY_GIB = 96
# Keys whose values are secrets: read with get_secret, never unwrapped by the program.
SECRET_KEYS = ("hfAccessToken", "kubeconfig")


class SettingsError(ValueError):
    """Every problem in the stack's configuration, one line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            "invalid stack configuration:\n" + "\n".join(f"  - {p}" for p in problems)
        )


@dataclass(frozen=True)
class NetworkSettings:
    vpc_cidr: str
    availability_zone_count: int


@dataclass(frozen=True)
class ClusterSettings:
    name: str
    kubernetes_version: str
    admin_role_arns: tuple[str, ...]
    api_public_access_cidrs: tuple[str, ...]


@dataclass(frozen=True)
class GpuNodeSettings:
    instance: InstanceType
    node_count: int
    ami_type: str
    capacity_type: str
    capacity_reservation_id: str | None
    capacity_reservation_zone: str | None
    root_volume_gib: int
    labels: dict[str, str]

    @property
    def total_gpus(self) -> int:
        return self.instance.gpus * self.node_count


@dataclass(frozen=True)
class SystemNodeSettings:
    instance_type: str
    node_count: int


@dataclass(frozen=True)
class ServingSettings:
    namespace: str
    replicas: int
    runtime: ServingRuntime
    # CPU cores and memory GiB per replica; derived from the GPU instance type unless set.
    server_cpu: int
    server_memory_gib: int
    startup_timeout_minutes: int
    weights_host_path: str
    gpu_node_selector: dict[str, str]
    hf_token_in_secrets_manager: bool


@dataclass(frozen=True)
class EndpointSettings:
    scheme: str
    source_ranges: tuple[str, ...]

    @property
    def internet_facing(self) -> bool:
        return self.scheme == "internet-facing"


@dataclass(frozen=True)
class StackSettings:
    """Everything the program needs; `existing_cluster` decides which half of it is used."""

    region: str | None
    existing_cluster: bool  # a kubeconfig was given: no VPC, cluster or node groups are created
    network: NetworkSettings
    cluster: ClusterSettings
    gpu_nodes: GpuNodeSettings
    system_nodes: SystemNodeSettings
    serving: ServingSettings
    endpoint: EndpointSettings
    cost_budget_usd_per_hour: int


def _key(name: str) -> str:
    return f"{PROJECT}:{name}"


class _Reader:
    """Reads typed values and collects every problem instead of stopping at the first."""

    def __init__(self, values: Mapping[str, Any]):
        self.values = values
        self.problems: list[str] = []

    def fail(self, key: str, value: Any, expected: str) -> None:
        self.problems.append(f"{_key(key)} = {value!r}: {expected}")

    def string(self, key: str, choices: tuple[str, ...] | None = None) -> str:
        value = self.values.get(key, "")
        if not isinstance(value, str):
            self.fail(key, value, "expected a string")
            return ""
        if choices is not None and value not in choices:
            self.fail(key, value, "use one of " + ", ".join(choices))
        return value

    def integer(self, key: str, minimum: int, maximum: int | None = None) -> int:
        value = self.values.get(key)
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, value, "expected a whole number")
            return minimum
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
            self.fail(key, value, f"expected a whole number {bound}")
        return value

    def boolean(self, key: str) -> bool:
        value = self.values.get(key, False)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            self.fail(key, value, "expected true or false")
            return False
        return value

    def cidrs(self, key: str) -> tuple[str, ...]:
        value = self.values.get(key) or []
        if not isinstance(value, (list, tuple)):
            self.fail(key, value, 'expected a list of CIDRs, e.g. ["10.0.0.0/8"]')
            return ()
        for cidr in value:
            try:
                ipaddress.ip_network(cidr)
            except (TypeError, ValueError):
                self.fail(key, cidr, "not a CIDR; write it as a.b.c.d/n, e.g. 10.0.0.0/8")
        return tuple(value)

    def string_list(self, key: str) -> tuple[str, ...]:
        value = self.values.get(key) or []
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            self.fail(key, value, "expected a list of strings")
            return ()
        return tuple(value)

    def string_map(self, key: str) -> dict[str, str]:
        value = self.values.get(key) or {}
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            self.fail(key, value, 'expected a map of strings, e.g. {"nvidia.com/gpu.present": "true"}')
            return {}
        return dict(value)

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.values.get(key) or {}
        if not isinstance(value, Mapping):
            self.fail(key, value, "expected a mapping of TensorRT-LLM option names to values")
            return {}
        return dict(value)


def parse_settings(values: Mapping[str, Any], *, region: str | None,
                   secrets_present: frozenset[str] = frozenset()) -> StackSettings:
    """Validate decoded config `values` (Pulumi.yaml defaults already applied).

    Secret values are never passed here: `secrets_present` names the secret keys that are set.
    """
    read = _Reader(values)
    existing_cluster = "kubeconfig" in secrets_present
    if "hfAccessToken" not in secrets_present:
        read.problems.append(
            f"{_key('hfAccessToken')} is not set: run "
            "`pulumi config set --secret hfAccessToken hf_...` (a Hugging Face token that can "
            "read openai/gpt-oss-120b); it must be a secret, never plain text"
        )

    network = NetworkSettings(
        vpc_cidr=read.string("vpcCidr"),
        availability_zone_count=read.integer("availabilityZoneCount", 2, 6),
    )
    try:
        vpc = ipaddress.ip_network(network.vpc_cidr)
        if vpc.prefixlen > 20:
            read.fail("vpcCidr", network.vpc_cidr, "use a /20 or larger block (e.g. 10.42.0.0/16) "
                      "so that every zone gets public and private subnets with room for pods")
    except ValueError:
        read.fail("vpcCidr", network.vpc_cidr, "not a CIDR; e.g. 10.42.0.0/16")

    cluster_name = read.string("clusterName")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,37}", cluster_name):
        read.fail("clusterName", cluster_name,
                  "use letters, digits and hyphens, starting with a letter, at most 38 characters")
    cluster = ClusterSettings(
        name=cluster_name,
        kubernetes_version=read.string("kubernetesVersion", KUBERNETES_VERSIONS),
        admin_role_arns=read.string_list("clusterAdminRoleArns"),
        api_public_access_cidrs=read.cidrs("clusterApiPublicCidrs"),
    )
    private_only = read.boolean("clusterApiPrivateOnly")
    if not existing_cluster and private_only and cluster.api_public_access_cidrs:
        read.fail("clusterApiPublicCidrs", list(cluster.api_public_access_cidrs),
                  "must be empty with clusterApiPrivateOnly true; remove one of the two settings")
    if not existing_cluster and not private_only and not cluster.api_public_access_cidrs:
        # A private-only endpoint cannot work on the first `pulumi up`: nothing inside the new
        # VPC exists yet to deploy the workload. Public access is a choice the stack must state.
        read.fail("clusterApiPublicCidrs", [],
                  "pulumi up must reach the new cluster's Kubernetes API to deploy the workload; "
                  "list the egress CIDRs of your CI runners and operators (IAM authentication "
                  'still applies), or ["0.0.0.0/0"] for any address; for a stack deployed from '
                  "inside the VPC, set clusterApiPrivateOnly true instead")
    for arn in cluster.admin_role_arns:
        if not re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/.+", arn):
            read.fail("clusterAdminRoleArns", arn, "expected an IAM role ARN, arn:aws:iam::<account>:role/<name>")

    instance_name = read.string("gpuInstanceType")
    instance = INSTANCE_TYPES.get(instance_name)
    if instance is None:
        read.fail("gpuInstanceType", instance_name,
                  "not a known GPU instance type; use one of " + ", ".join(INSTANCE_TYPES))
        instance = INSTANCE_TYPES["p5.48xlarge"]
    elif (not existing_cluster and region is not None and region not in instance.regions
          and not read.boolean("allowUnlistedRegion")):
        read.problems.append(
            f"aws:region = {region!r}: {instance.name} is not offered there as far as "
            f"serving/hardware.py knows; use one of {', '.join(sorted(instance.regions))}, or set "
            f"{_key('allowUnlistedRegion')} true if AWS added it since"
        )

    capacity_type = read.string("gpuCapacityType", CAPACITY_TYPES)
    reservation_id = read.string("capacityReservationId") or None
    reservation_zone = read.string("capacityReservationZone") or None
    if capacity_type == "CAPACITY_BLOCK":
        if not reservation_id or not re.fullmatch(r"cr-[0-9a-f]{8,17}", reservation_id):
            read.fail("capacityReservationId", reservation_id or "",
                      "CAPACITY_BLOCK needs the Capacity Block's reservation id, cr-<hex>")
        if not reservation_zone or not region or not reservation_zone.startswith(region):
            read.fail("capacityReservationZone", reservation_zone or "",
                      f"CAPACITY_BLOCK needs the reservation's availability zone in {region}, "
                      f"e.g. {region or 'us-east-1'}a")
    elif reservation_id:
        read.fail("capacityReservationId", reservation_id,
                  "only used with gpuCapacityType CAPACITY_BLOCK; remove it or set that capacity type")

    gpu_node_selector = read.string_map("gpuNodeSelector")
    gpu_nodes = GpuNodeSettings(
        instance=instance,
        node_count=read.integer("gpuNodeCount", 1, 64),
        ami_type=read.string("gpuAmiType", AMI_TYPES),
        capacity_type=capacity_type,
        capacity_reservation_id=reservation_id,
        capacity_reservation_zone=reservation_zone,
        root_volume_gib=read.integer("gpuRootVolumeGiB", 100, 2000),
        labels=gpu_node_selector,
    )
    system_nodes = SystemNodeSettings(
        instance_type=read.string("systemInstanceType"),
        node_count=read.integer("systemNodeCount", 1, 10),
    )

    model = read.string("model")
    if model not in MODELS:
        read.fail("model", model, "this stack knows the facts of " + ", ".join(MODELS) + " only")
    runtime = None
    try:
        runtime = build_runtime(
            read.mapping("trtllmOptions"),
            model=model if model in MODELS else "openai/gpt-oss-120b",
            image=read.string("trtllmImage"),
            gpu=instance.gpu,
        )
    except RuntimeConfigError as error:
        read.problems.extend(
            f"{_key('trtllmOptions')}: {problem}" for problem in error.problems
        )

    replicas = read.integer("replicas", 1, 64)
    if runtime is not None and not existing_cluster:
        needed = replicas * runtime.gpus_per_replica
        if needed > gpu_nodes.total_gpus:
            read.fail(
                "replicas", replicas,
                f"{replicas} replicas x {runtime.gpus_per_replica} GPUs = {needed} GPUs, but "
                f"{gpu_nodes.node_count} x {instance.name} have {gpu_nodes.total_gpus}; use at most "
                f"{gpu_nodes.total_gpus // runtime.gpus_per_replica} replicas or raise gpuNodeCount "
                f"to {-(-needed // instance.gpus)}",
            )

    namespace = read.string("namespace")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", namespace):
        read.fail("namespace", namespace, "a Kubernetes namespace: lower-case letters, digits and hyphens")
    weights_host_path = read.string("weightsHostPath")
    if not weights_host_path.startswith("/") or weights_host_path.rstrip("/") in ("", "/etc", "/var", "/usr"):
        read.fail("weightsHostPath", weights_host_path,
                  "an absolute directory on the node's local NVMe, e.g. /mnt/k8s-disks/0/huggingface")

    scheme = read.string("endpointScheme", ENDPOINT_SCHEMES)
    source_ranges = read.cidrs("endpointSourceRanges")
    if scheme == "internet-facing" and not source_ranges:
        read.fail("endpointSourceRanges", [],
                  "an internet-facing endpoint needs an explicit list of allowed CIDRs "
                  '(write ["0.0.0.0/0"] to accept the whole internet, behind the API key)')
    if not source_ranges and not existing_cluster:
        source_ranges = (network.vpc_cidr,)
    if not source_ranges and existing_cluster:
        read.fail("endpointSourceRanges", [],
                  "with an existing cluster, list the CIDRs that may reach the endpoint "
                  "(e.g. your VPC CIDR)")

    server_cpu, server_memory_gib = replica_resources(instance, runtime.gpus_per_replica if runtime else 2)
    cpu_override = read.integer("serverCpu", 0, instance.vcpus)
    memory_override = read.integer("serverMemoryGiB", 0, instance.memory_gib)
    if 0 < cpu_override < MIN_SERVER_CPU:
        read.fail("serverCpu", cpu_override, f"use at least {MIN_SERVER_CPU} cores (or 0 to size from gpuInstanceType)")
    if 0 < memory_override < MIN_SERVER_MEMORY_GIB:
        read.fail("serverMemoryGiB", memory_override,
                  f"use at least {MIN_SERVER_MEMORY_GIB} GiB: the {GPT_OSS_120B.checkpoint_bytes / 2**30:.0f} GiB "
                  "checkpoint passes through host memory while loading (or 0 to size from gpuInstanceType)")
    server_cpu = cpu_override or server_cpu
    server_memory_gib = memory_override or server_memory_gib
    startup_timeout_minutes = read.integer("startupTimeoutMinutes", 40, 240)
    hf_token_in_secrets_manager = read.boolean("hfTokenInSecretsManager")
    cost_budget_usd_per_hour = read.integer("costBudgetUsdPerHour", 0)
    if read.problems:
        raise SettingsError(read.problems)
    assert runtime is not None
    return StackSettings(
        region=region,
        existing_cluster=existing_cluster,
        network=network,
        cluster=cluster,
        gpu_nodes=gpu_nodes,
        system_nodes=system_nodes,
        serving=ServingSettings(
            namespace=namespace,
            replicas=replicas,
            runtime=runtime,
            server_cpu=server_cpu,
            server_memory_gib=server_memory_gib,
            startup_timeout_minutes=startup_timeout_minutes,
            weights_host_path=weights_host_path,
            gpu_node_selector=gpu_node_selector,
            hf_token_in_secrets_manager=hf_token_in_secrets_manager,
        ),
        endpoint=EndpointSettings(scheme=scheme, source_ranges=source_ranges),
        cost_budget_usd_per_hour=cost_budget_usd_per_hour,
    )


# --- Reading the configuration from Pulumi -------------------------------------------------

@dataclass(frozen=True)
class StackSecrets:
    """Secret configuration, kept as Pulumi secret outputs from the moment it is read."""

    hf_access_token: pulumi.Output[str]
    kubeconfig: pulumi.Output[str] | None


def load_settings() -> tuple[StackSettings, StackSecrets]:
    """Read this stack's configuration through Pulumi and validate it (before any resource)."""
    config = pulumi.Config()
    values: dict[str, Any] = {}
    secrets: dict[str, pulumi.Output[str]] = {}
    for key, spec in declared_config().items():
        if spec.get("secret"):
            # Optional secrets default to "" in Pulumi.yaml (the CLI requires a value or a
            # default for every declared key): an empty value means the key is not set.
            if config.get(key):
                secrets[key] = config.require_secret(key)
            continue
        kind = spec.get("type")
        if kind == "string":
            value = config.get(key)
        elif kind == "integer":
            value = config.get_int(key)
        elif kind == "boolean":
            value = config.get_bool(key)
        else:  # arrays and untyped mappings arrive as JSON
            value = config.get_object(key)
        values[key] = spec.get("default") if value is None else value
    settings = parse_settings(
        values,
        region=pulumi.Config("aws").get("region"),
        secrets_present=frozenset(secrets),
    )
    return settings, StackSecrets(
        hf_access_token=secrets["hfAccessToken"], kubeconfig=secrets.get("kubeconfig")
    )

"""The stack's configuration, read by one loader and validated in one place.

`load_settings(config, secret_keys)` is the only way in. It takes the configuration as the
Pulumi engine hands it to a program (full keys such as `gpt-oss-trtllm:replicas`, values as
strings, objects as JSON) and either returns `StackSettings` or raises `SettingsError` listing
every problem at once, each naming the key, the value and what would work. The Pulumi program,
`make plan`, `python -m serving render` and the offline policy runner all call it, so one stack
file gets the same settings and the same refusals everywhere.

Two steps:
  1. `StackConfig`, a pydantic model with one field per key that `Pulumi.yaml` declares: types,
     ranges and choices per key, unknown keys refused (pydantic collects every field's error in
     one pass and forbids extra keys, which a hand-written reader had to re-implement);
  2. `_derive`, the checks that span several keys (GPUs for the replicas, a Capacity Block's
     zone, the API endpoint's exposure), and the grouped settings the components take.

Secret values never enter here: `secret_keys` says which keys are secret, and only their
presence is looked at. The program reads their values as Pulumi secrets (components/config.py).
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from serving.config.project import declared_config, project_name
from serving.observability.scrape import MAX_INTERVAL_SECONDS as MAX_SCRAPE_INTERVAL_SECONDS
from serving.runtime.hardware import (
    AL2023_NVME_MOUNT,
    EKS_CONTROL_PLANE_USD_PER_HOUR,
    EKS_STANDARD_SUPPORT_ENDS,
    GPT_OSS_120B,
    INSTANCE_TYPES,
    MODELS,
    InstanceType,
)
from serving.runtime.options import RuntimeConfigError, ServingRuntime, build_runtime
from serving.workload.manifests import replica_resources

PROJECT = project_name()

AMI_TYPES = ("AL2023_x86_64_NVIDIA", "BOTTLEROCKET_x86_64_NVIDIA")
CAPACITY_TYPES = ("ON_DEMAND", "SPOT", "CAPACITY_BLOCK")
ENDPOINT_SCHEMES = ("internal", "internet-facing")
# The versions whose support dates the project knows (serving/runtime/hardware.py).
KUBERNETES_VERSIONS = tuple(EKS_STANDARD_SUPPORT_ENDS)
SUPPORT_TYPES = ("STANDARD", "EXTENDED")
# The retention periods CloudWatch Logs accepts (PutRetentionPolicy), in days.
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
)  # fmt: skip
# How the endpoint's TLS is set up (EndpointSettings.tls): the pods present a certificate of the
# stack's own CA, the load balancer presents an ACM certificate, or plain HTTP when asked for.
TLS_MODES = ("stack-ca", "acm", "off")
# How long before the end of standard support `make plan` and `pulumi preview` warn.
SUPPORT_WARNING_DAYS = 60
# Below these a replica of gpt-oss-120b cannot load (tokenizer workers, the checkpoint in RAM).
MIN_SERVER_CPU = 4
MIN_SERVER_MEMORY_GIB = 96
# Keys whose values are secrets: read with get_secret, never unwrapped by the program.
SECRET_KEYS = ("hfAccessToken", "kubeconfig")
MAX_GPU_NODES = 64
# Configuration namespaces this program or its providers read, besides the project's own.
OTHER_NAMESPACES = ("aws", "kubernetes", "random", "pulumi")
# Namespaces Kubernetes or EKS own; the workload must not share them.
RESERVED_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# Ranges no caller on the internet has: listing one for the public API endpoint means nothing.
NON_PUBLIC_RANGES = tuple(
    ipaddress.IPv4Network(block)
    for block in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
    )
)
# Node directories the weights cache must not be, contain or sit in: the root init step hands
# the directory to the server's uid.
SYSTEM_DIRECTORIES = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib64",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
)
NODE_STATE_DIRECTORIES = ("/var/lib/kubelet", "/var/lib/containerd", "/var/log")
# Where the metrics go (metricsStore): Amazon Managed Service for Prometheus with its managed
# scraper; the Prometheus Operator an existing cluster already runs (a PodMonitor and a
# PrometheusRule); or nowhere. `auto` is the first with a cluster the stack creates and `none`
# with an existing one (its own Prometheus, or none, is the owner's to choose).
METRICS_STORES = ("auto", "managed-prometheus", "prometheus-operator", "none")
# AMP keeps samples 150 days unless told otherwise, and at most 1095 (three years): AMP user
# guide, "Configure your workspace" and "Ingest metrics to your workspace".
AMP_MAX_RETENTION_DAYS = 1095
# AMP's managed collector refuses a scrape interval under 30 s (AMP user guide, "Using an AWS
# managed collector", limitations of the scraper configuration); the queries' 5-minute rate
# windows need two samples, so at most MAX_SCRAPE_INTERVAL_SECONDS.
AMP_MIN_SCRAPE_INTERVAL_SECONDS = 30
# The TTFT objective: above this it is no longer a latency objective but a broken server.
MAX_TTFT_SLO_SECONDS = 600


class SettingsError(ValueError):
    """Every problem in the stack's configuration, one line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid stack configuration:\n" + "\n".join(f"  - {p}" for p in problems))


# --- Step 1: each key on its own -------------------------------------------------------------
# Each validator raises ValueError with the text that follows "<key> = <value>: " in the error.


def _whole_number(minimum: int, maximum: int | None = None) -> BeforeValidator:
    bound = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"

    def check(value: Any) -> int:
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number {bound}")
        if value < minimum or (maximum is not None and value > maximum):
            raise ValueError(f"expected a whole number {bound}")
        return value

    return BeforeValidator(check)


def _flag(value: Any) -> bool:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _one_of(*choices: str) -> AfterValidator:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError("use one of " + ", ".join(choices))
        return value

    return AfterValidator(check)


def _decoded(value: Any) -> Any:
    """Arrays and mappings reach a program as JSON text; typed callers pass them decoded."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _list(example: str) -> BeforeValidator:
    def check(value: Any) -> list[Any]:
        value = _decoded(value)
        if value is None:
            return []
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, e.g. {example}")
        return list(value)

    return BeforeValidator(check)


def _cidr(value: Any) -> str:
    try:
        network = ipaddress.IPv4Network(value)  # strict: no host bits after the prefix
    except (TypeError, ValueError):
        raise ValueError("not an IPv4 CIDR block; write it as a.b.c.d/n, e.g. 10.0.0.0/8") from None
    if "/" not in str(value):
        raise ValueError(
            f"a bare address; write the block, e.g. {network.network_address}/32 for one address"
        )
    return str(value)


def _public_cidr(value: str) -> str:
    network = ipaddress.IPv4Network(value)
    if any(network.subnet_of(block) for block in NON_PUBLIC_RANGES):
        raise ValueError(
            "a private range, which never reaches the public API endpoint; list public egress "
            "ranges here (in-VPC callers use the private endpoint, which is always on)"
        )
    return value


def _string_map(value: Any) -> dict[str, str]:
    value = _decoded(value)
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError('expected a map of strings, e.g. {"nvidia.com/gpu.present": "true"}')
    return dict(value)


def _options(value: Any) -> dict[str, Any]:
    value = _decoded(value)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError("expected a mapping of TensorRT-LLM option names to values")
    return dict(value)


def _vpc_block(value: str) -> str:
    try:
        network = ipaddress.IPv4Network(value)
    except ValueError:
        raise ValueError("not an IPv4 CIDR block; e.g. 10.42.0.0/16") from None
    if network.prefixlen < 16:
        raise ValueError("AWS allows VPC blocks from /16 to /28; use a /16 to /20, e.g. 10.42.0.0/16")
    if network.prefixlen > 20:
        raise ValueError(
            "use a /20 or larger block (e.g. 10.42.0.0/16) so that every zone gets public and "
            "private subnets with room for pods"
        )
    return value


def _cluster_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,37}", value):
        raise ValueError("use letters, digits and hyphens, starting with a letter, at most 38 characters")
    return value


def _role_arn(value: str) -> str:
    if not re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/.+", value):
        raise ValueError("expected an IAM role ARN, arn:aws:iam::<account>:role/<name>")
    return value


def _namespace(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value):
        raise ValueError("a Kubernetes namespace: lower-case letters, digits and hyphens")
    if value in RESERVED_NAMESPACES:
        raise ValueError("a namespace Kubernetes owns; give the workload its own, e.g. gpt-oss")
    return value


def _host_path(value: str) -> str:
    example = f"e.g. {AL2023_NVME_MOUNT}/huggingface"
    if (
        not value.startswith("/")
        or ".." in value.split("/")
        or "//" in value
        or value.rstrip("/") in ("", "/var", "/var/lib", "/mnt")
    ):
        raise ValueError(f"an absolute directory on the node's local NVMe, without '..', {example}")
    path = value.rstrip("/")
    for system in SYSTEM_DIRECTORIES + NODE_STATE_DIRECTORIES:
        if path == system or path.startswith(system + "/") or system.startswith(path + "/"):
            raise ValueError(f"inside or above {system}, which the node owns; {example}")
    return path


def _gpu_instance_type(value: str) -> str:
    if value not in INSTANCE_TYPES:
        raise ValueError("not a known GPU instance type; use one of " + ", ".join(INSTANCE_TYPES))
    return value


def _instance_type_name(value: str) -> str:
    # The shape of every EC2 type name: family, then a size AWS uses (no API call offline).
    if not re.fullmatch(
        r"[a-z][a-z0-9-]*\.(nano|micro|small|medium|large|xlarge|[0-9]+xlarge|metal(-[0-9]+xl)?)", value
    ):
        raise ValueError("not an EC2 instance type (family.size, e.g. m7i.large or m7i.xlarge)")
    return value


def _region(value: str) -> str:
    if not re.fullmatch(r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]", value):
        raise ValueError("not an AWS region name, e.g. us-east-1")
    return value


def _hostname(value: str) -> str:
    # A DNS name a certificate can be issued for: RFC 1123 labels, no wildcard, at least one dot.
    if value and not re.fullmatch(
        r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?", value
    ):
        raise ValueError(
            "a lower-case DNS name with at least one dot and no wildcard, e.g. llm.internal.example.com"
        )
    return value


def _acm_certificate_arn(value: str) -> str:
    if value and not re.fullmatch(r"arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]{36}", value):
        raise ValueError("expected an ACM certificate ARN, arn:aws:acm:<region>:<account>:certificate/<id>")
    return value


def _sns_topic_arn(value: str) -> str:
    if not value:
        return value
    if not re.fullmatch(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?", value):
        raise ValueError("expected an SNS topic ARN, arn:aws:sns:<region>:<account>:<topic>")
    if value.endswith(".fifo"):
        raise ValueError(
            "a FIFO topic; Amazon Managed Prometheus's alert manager sends to Standard topics only: "
            "create a Standard topic"
        )
    return value


def _slo_seconds(value: Any) -> float:
    decoded = _decoded(value)
    if isinstance(decoded, bool) or not isinstance(decoded, (int, float)):
        raise ValueError(f"expected a number of seconds above 0 and at most {MAX_TTFT_SLO_SECONDS}, e.g. 2.5")
    if not 0 < decoded <= MAX_TTFT_SLO_SECONDS:
        raise ValueError(f"expected a number of seconds above 0 and at most {MAX_TTFT_SLO_SECONDS}, e.g. 2.5")
    return float(decoded)


def _log_retention_days(value: Any) -> Any:
    if isinstance(_decoded(value), int) and _decoded(value) not in LOG_RETENTION_DAYS:
        raise ValueError(
            "not a retention CloudWatch offers; use one of " + ", ".join(map(str, LOG_RETENTION_DAYS))
        )
    return value


def _known_model(value: str) -> str:
    if value not in MODELS:
        raise ValueError("this stack knows the facts of " + ", ".join(MODELS) + " only")
    return value


Text = Annotated[str, BeforeValidator(_text)]
Flag = Annotated[bool, BeforeValidator(_flag)]
Cidrs = Annotated[list[Annotated[str, AfterValidator(_cidr)]], _list('["10.0.0.0/8"]')]
PublicCidrs = Annotated[
    list[Annotated[str, AfterValidator(_cidr), AfterValidator(_public_cidr)]], _list('["203.0.113.0/24"]')
]
RoleArns = Annotated[
    list[Annotated[Text, AfterValidator(_role_arn)]], _list('["arn:aws:iam::<account>:role/<name>"]')
]


class StackConfig(BaseModel):
    """One field per non-secret key of Pulumi.yaml, named as the key is (camelCase aliases)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)

    cluster_name: Annotated[Text, AfterValidator(_cluster_name)] = Field(alias="clusterName")
    kubernetes_version: Annotated[Text, _one_of(*KUBERNETES_VERSIONS)] = Field(alias="kubernetesVersion")
    kubernetes_support_type: Annotated[Text, _one_of(*SUPPORT_TYPES)] = Field(alias="kubernetesSupportType")
    vpc_cidr: Annotated[Text, AfterValidator(_vpc_block)] = Field(alias="vpcCidr")
    availability_zone_count: Annotated[int, _whole_number(2, 6)] = Field(alias="availabilityZoneCount")
    cluster_admin_role_arns: RoleArns = Field(alias="clusterAdminRoleArns")
    cluster_api_public_cidrs: PublicCidrs = Field(alias="clusterApiPublicCidrs")
    cluster_api_private_only: Flag = Field(alias="clusterApiPrivateOnly")
    gpu_instance_type: Annotated[Text, AfterValidator(_gpu_instance_type)] = Field(alias="gpuInstanceType")
    # 0 only for a Capacity Block stack waiting for its block to start (checked in step 2).
    gpu_node_count: Annotated[int, _whole_number(0, MAX_GPU_NODES)] = Field(alias="gpuNodeCount")
    gpu_ami_type: Annotated[Text, _one_of(*AMI_TYPES)] = Field(alias="gpuAmiType")
    gpu_capacity_type: Annotated[Text, _one_of(*CAPACITY_TYPES)] = Field(alias="gpuCapacityType")
    capacity_reservation_id: Text = Field(alias="capacityReservationId")
    capacity_reservation_zone: Text = Field(alias="capacityReservationZone")
    gpu_root_volume_gib: Annotated[int, _whole_number(100, 2000)] = Field(alias="gpuRootVolumeGiB")
    system_instance_type: Annotated[Text, AfterValidator(_instance_type_name)] = Field(
        alias="systemInstanceType"
    )
    system_node_count: Annotated[int, _whole_number(1, 10)] = Field(alias="systemNodeCount")
    allow_unlisted_region: Flag = Field(alias="allowUnlistedRegion")
    gpu_node_selector: Annotated[dict[str, str], BeforeValidator(_string_map)] = Field(
        alias="gpuNodeSelector"
    )
    # 0 sizes from the node type; the upper bound depends on it and is checked in step 2.
    server_cpu: Annotated[int, _whole_number(0)] = Field(alias="serverCpu")
    server_memory_gib: Annotated[int, _whole_number(0)] = Field(alias="serverMemoryGiB")
    namespace: Annotated[Text, AfterValidator(_namespace)] = Field(alias="namespace")
    replicas: Annotated[int, _whole_number(1, 64)] = Field(alias="replicas")
    gpus_per_replica: Annotated[int, _whole_number(1, 8)] = Field(alias="gpusPerReplica")
    model: Annotated[Text, AfterValidator(_known_model)] = Field(alias="model")
    model_revision: Text = Field(alias="modelRevision")
    trtllm_image: Text = Field(alias="trtllmImage")
    trtllm_options: Annotated[dict[str, Any], BeforeValidator(_options)] = Field(alias="trtllmOptions")
    startup_timeout_minutes: Annotated[int, _whole_number(40, 240)] = Field(alias="startupTimeoutMinutes")
    weights_host_path: Annotated[Text, AfterValidator(_host_path)] = Field(alias="weightsHostPath")
    endpoint_scheme: Annotated[Text, _one_of(*ENDPOINT_SCHEMES)] = Field(alias="endpointScheme")
    endpoint_source_ranges: Cidrs = Field(alias="endpointSourceRanges")
    endpoint_plain_http: Flag = Field(alias="endpointPlainHttp")
    endpoint_hostname: Annotated[Text, AfterValidator(_hostname)] = Field(alias="endpointHostname")
    endpoint_certificate_arn: Annotated[Text, AfterValidator(_acm_certificate_arn)] = Field(
        alias="endpointCertificateArn"
    )
    cluster_log_retention_days: Annotated[
        int, _whole_number(1, 3653), BeforeValidator(_log_retention_days)
    ] = Field(alias="clusterLogRetentionDays")
    hf_token_in_secrets_manager: Flag = Field(alias="hfTokenInSecretsManager")
    cost_budget_usd_per_hour: Annotated[int, _whole_number(0)] = Field(alias="costBudgetUsdPerHour")
    autoscaling: Flag = Field(alias="autoscaling")
    min_replicas: Annotated[int, _whole_number(1, 64)] = Field(alias="minReplicas")
    # 0: as many as gpuNodeMaxCount nodes hold.
    max_replicas: Annotated[int, _whole_number(0, 512)] = Field(alias="maxReplicas")
    gpu_node_min_count: Annotated[int, _whole_number(0, MAX_GPU_NODES)] = Field(alias="gpuNodeMinCount")
    gpu_node_max_count: Annotated[int, _whole_number(1, MAX_GPU_NODES)] = Field(alias="gpuNodeMaxCount")
    # 0: from the performance model (serving/autoscaling/policy.py default_target).
    autoscaling_target_in_flight: Annotated[int, _whole_number(0, 1024)] = Field(
        alias="autoscalingTargetInFlight"
    )
    metrics_store: Annotated[Text, _one_of(*METRICS_STORES)] = Field(alias="metricsStore")
    metrics_object_labels: Annotated[dict[str, str], BeforeValidator(_string_map)] = Field(
        alias="metricsObjectLabels"
    )
    metrics_retention_days: Annotated[int, _whole_number(1, AMP_MAX_RETENTION_DAYS)] = Field(
        alias="metricsRetentionDays"
    )
    metrics_scrape_interval_seconds: Annotated[
        int, _whole_number(AMP_MIN_SCRAPE_INTERVAL_SECONDS, MAX_SCRAPE_INTERVAL_SECONDS)
    ] = Field(alias="metricsScrapeIntervalSeconds")
    alert_ttft_p90_slo_seconds: Annotated[float, BeforeValidator(_slo_seconds)] = Field(
        alias="alertTtftP90SloSeconds"
    )
    alert_notification_topic_arn: Annotated[Text, AfterValidator(_sns_topic_arn)] = Field(
        alias="alertNotificationTopicArn"
    )


def config_keys() -> set[str]:
    """Every key the model reads, as written in Pulumi.yaml (its fields' aliases)."""
    return {f.alias or name for name, f in StackConfig.model_fields.items()}


# --- The grouped settings the components take ------------------------------------------------


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
    support_type: str = "STANDARD"  # EKS upgrade policy, always sent explicitly
    standard_support_until: date | None = None
    log_retention_days: int = 90  # control-plane logs in CloudWatch


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
    # False while a Capacity Block stack runs no GPU node: `pulumi up` must not wait 90 minutes
    # for server pods that can only start once the block does.
    await_rollout: bool = True


@dataclass(frozen=True)
class EndpointSettings:
    scheme: str
    source_ranges: tuple[str, ...]
    # Where the cluster's own nodes are (the kubelet's probes come from there): the new VPC,
    # or nothing known for an existing cluster, whose source ranges must then include them.
    node_ranges: tuple[str, ...] = ()
    tls: str = "stack-ca"  # one of TLS_MODES
    # The name clients use, when the stack's owner points a DNS record at the load balancer.
    hostname: str | None = None
    certificate_arn: str | None = None  # ACM, presented by the load balancer (tls "acm")
    # The AWS Load Balancer Controller, which the stack installs when it creates the cluster,
    # handles the Service (IP targets, health check to the gateway); with an existing cluster the
    # Service is written so that either it or the legacy controller does what the settings say.
    load_balancer_controller: bool = True
    region: str | None = None

    @property
    def internet_facing(self) -> bool:
        return self.scheme == "internet-facing"

    @property
    def url_scheme(self) -> str:
        return "http" if self.tls == "off" else "https"


@dataclass(frozen=True)
class MetricsSettings:
    """Where the metrics go and what the alerts compare against (docs/observability.md)."""

    store: str = "none"  # "managed-prometheus", "prometheus-operator" or "none", never "auto"
    retention_days: int = 150  # the AMP workspace's retention
    scrape_interval_seconds: int = 30  # the managed scraper's interval
    ttft_p90_slo_seconds: float = 2.5  # GptOssTtftAboveSlo's objective
    # The SNS topic AMP's alert manager sends to; without one, no alert manager definition.
    notification_topic_arn: str | None = None
    # Labels on the PodMonitor and PrometheusRule, so that the cluster's Prometheus selects them
    # (its podMonitorSelector and ruleSelector; kube-prometheus-stack: release=<its release>).
    object_labels: dict[str, str] = field(default_factory=dict)

    @property
    def managed_prometheus(self) -> bool:
        return self.store == "managed-prometheus"

    @property
    def prometheus_operator(self) -> bool:
        return self.store == "prometheus-operator"


@dataclass(frozen=True)
class AutoscalingSettings:
    """Replicas follow the queue (KEDA), GPU nodes follow the replicas (cluster-autoscaler);
    serving/autoscaling/from_stack.py turns these into the policy the simulator replays."""

    enabled: bool = False
    min_replicas: int = 1
    max_replicas: int = 4
    min_nodes: int = 1
    max_nodes: int = 1
    target_in_flight_per_replica: int | None = None  # None: from the performance model


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
    metrics: MetricsSettings = MetricsSettings()
    autoscaling: AutoscalingSettings = AutoscalingSettings()
    # What the stack's owner should act on soon, though nothing is wrong yet (a version close to
    # the end of its standard support): the program prints them as warnings.
    notices: tuple[str, ...] = ()


# --- The loader ------------------------------------------------------------------------------


def _key(name: str) -> str:
    return f"{PROJECT}:{name}"


def _project_values(config: Mapping[str, Any]) -> dict[str, Any]:
    """The project's keys without prefix, Pulumi.yaml defaults under what the stack sets.

    The CLI applies those defaults itself; applying them here too keeps every caller equal.
    """
    values = {
        key: spec["default"]
        for key, spec in declared_config().items()
        if isinstance(spec, dict) and "default" in spec and key not in SECRET_KEYS
    }
    prefix = f"{PROJECT}:"
    for key, value in config.items():
        if key.startswith(prefix) and key.removeprefix(prefix) not in SECRET_KEYS:
            values[key.removeprefix(prefix)] = value
    return values


def _shown(value: Any) -> str:
    """A value as the stack file wrote it: the engine passes `2` and `[..]` as text."""
    decoded = _decoded(value)
    if decoded is None:
        return "null"
    return repr(decoded if isinstance(decoded, (int, float, list, dict)) else value)


def _describe(error: Mapping[str, Any]) -> str:
    """One pydantic error as "<key> = <value>: <what would work>"."""
    key = str(error["loc"][0])
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, sorted(config_keys() | set(SECRET_KEYS)), n=1)
        hint = f"did you mean {close[0]}?" if close else "see docs/configuration.md for the settings"
        return f"{_key(key)} = {_shown(error['input'])}: unknown setting ({hint})"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{_key(key)} = {_shown(error['input'])}: {message}"


def load_settings(
    config: Mapping[str, Any], secret_keys: Collection[str] = (), *, today: date | None = None
) -> StackSettings:
    """Validate a stack's configuration before anything is registered.

    `config`: full keys (`<project>:<key>`, `aws:region`) to values, as strings the way the
    engine passes them, or already decoded. `secret_keys`: which full keys hold secrets; their
    values are never read here (only whether they are set, and set as secrets).
    """
    present = {key.removeprefix(f"{PROJECT}:") for key in secret_keys if config.get(key) not in (None, "")}
    today = today or date.today()  # the support calendar is read against it
    values = _project_values(config)
    region = config.get("aws:region") or None
    problems = _namespace_problems(config) + _plain_text_secrets(config, secret_keys)
    try:
        stack = StackConfig.model_validate(values)
    except ValidationError as error:
        problems += [_describe(e) for e in error.errors()]
        # Keys that failed take their defaults, so the cross-key checks below still run and
        # every problem is reported at once; a cross-key problem about a failed key is dropped.
        failed = {str(e["loc"][0]) for e in error.errors()}
        defaults = _project_values({})
        stack = StackConfig.model_validate(
            {
                k: v
                for k, v in {**values, **{k: defaults[k] for k in failed if k in defaults}}.items()
                if k in config_keys()
            }
        )
        problems += [
            p
            for p in _derive(stack, region, present, today)[1]
            if not any(p.startswith(f"{_key(k)} ") for k in failed)
        ]
        raise SettingsError(problems) from None
    settings, derived = _derive(stack, region, present, today)
    problems += derived
    if problems or settings is None:
        raise SettingsError(problems)
    return settings


def _namespace_problems(config: Mapping[str, Any]) -> list[str]:
    """Keys in a namespace nothing reads, or a misspelt `aws:region`: silently ignored otherwise."""
    problems = []
    known = (PROJECT, *OTHER_NAMESPACES)
    for key in config:
        namespace, _, name = key.partition(":")
        if namespace not in known:
            close = difflib.get_close_matches(namespace, known, n=1)
            hint = (
                f"did you mean {close[0]}:{name}?" if close else "the namespaces read are " + ", ".join(known)
            )
            problems.append(f"{key} = {_shown(config[key])}: unknown namespace {namespace!r} ({hint})")
        elif (
            namespace == "aws"
            and name != "region"
            and difflib.get_close_matches(name, ["region"], cutoff=0.7)
        ):
            problems.append(
                f"{key} = {_shown(config[key])}: not an AWS provider setting (did you mean aws:region?)"
            )
    return problems


def _plain_text_secrets(config: Mapping[str, Any], secret_keys: Collection[str]) -> list[str]:
    """A secret key set in plain text: the CLI enforces `secure:` only for typed keys."""
    return [
        f"{_key(name)} is set in plain text (value not shown): it must be a secret; remove it from "
        f"the stack file and run `pulumi config set --secret {name} ...`"
        for name in SECRET_KEYS
        if config.get(_key(name)) not in (None, "") and _key(name) not in secret_keys
    ]


def _derive(
    stack: StackConfig, region: str | None, secrets_present: Collection[str], today: date
) -> tuple[StackSettings | None, list[str]]:
    """The checks that span several keys, and the grouped settings; (settings, problems)."""
    problems: list[str] = []

    def fail(key: str, value: Any, expected: str) -> None:
        problems.append(f"{_key(key)} = {value!r}: {expected}")

    existing_cluster = "kubeconfig" in secrets_present
    if "hfAccessToken" not in secrets_present:
        problems.append(
            f"{_key('hfAccessToken')} is not set: run "
            "`pulumi config set --secret hfAccessToken hf_...` (a Hugging Face token that can "
            "read openai/gpt-oss-120b); it must be a secret, never plain text"
        )

    public_cidrs = tuple(stack.cluster_api_public_cidrs)
    if not existing_cluster and stack.cluster_api_private_only and public_cidrs:
        fail(
            "clusterApiPublicCidrs",
            list(public_cidrs),
            "must be empty with clusterApiPrivateOnly true; remove one of the two settings",
        )
    if not existing_cluster and not stack.cluster_api_private_only and not public_cidrs:
        # A private-only endpoint cannot work on the first `pulumi up`: nothing inside the new
        # VPC exists yet to deploy the workload. Public access is a choice the stack must state.
        fail(
            "clusterApiPublicCidrs",
            [],
            "pulumi up must reach the new cluster's Kubernetes API to deploy the workload; "
            "list the egress CIDRs of your CI runners and operators (IAM authentication "
            'still applies), or ["0.0.0.0/0"] for any address; for a stack deployed from '
            "inside the VPC, set clusterApiPrivateOnly true instead",
        )

    if not existing_cluster and region is None:
        problems.append(
            "aws:region is not set: run `pulumi config set aws:region us-east-1` (a region that "
            f"offers {stack.gpu_instance_type})"
        )
    elif region is not None:
        try:
            _region(region)
        except ValueError as error:
            problems.append(f"aws:region = {region!r}: {error}")
    notices: list[str] = []
    support_ends = EKS_STANDARD_SUPPORT_ENDS[stack.kubernetes_version]
    if not existing_cluster:
        days_left = (support_ends - today).days
        extended = EKS_CONTROL_PLANE_USD_PER_HOUR["EXTENDED"]
        if days_left < 0 and stack.kubernetes_support_type == "STANDARD":
            newer = [v for v, end in EKS_STANDARD_SUPPORT_ENDS.items() if end > today]
            fail(
                "kubernetesVersion",
                stack.kubernetes_version,
                f"left EKS standard support on {support_ends}; upgrade to {newer[0] if newer else 'a newer version'}"
                f" (one minor version per update), or set kubernetesSupportType EXTENDED to keep it "
                f"(control plane {extended:.2f} USD an hour instead of "
                f"{EKS_CONTROL_PLANE_USD_PER_HOUR['STANDARD']:.2f})",
            )
        elif 0 <= days_left <= SUPPORT_WARNING_DAYS:
            notices.append(
                f"Kubernetes {stack.kubernetes_version} leaves EKS standard support on {support_ends}, in "
                f"{days_left} days: plan the upgrade (kubernetesVersion), or set kubernetesSupportType "
                f"EXTENDED ({extended:.2f} USD an hour for the control plane)"
            )
    if existing_cluster and not stack.gpu_node_selector:
        fail(
            "gpuNodeSelector",
            {},
            "with an existing cluster, name the labels its GPU nodes carry, e.g. "
            '{"nvidia.com/gpu.present": "true"}: without them the server pods could land anywhere',
        )
    nvme = AL2023_NVME_MOUNT + "/"
    if (
        not existing_cluster
        and stack.gpu_ami_type.startswith("AL2023")
        and not stack.weights_host_path.startswith(nvme)
    ):
        fail(
            "weightsHostPath",
            stack.weights_host_path,
            f"on AL2023 GPU nodes the local NVMe array is mounted at {AL2023_NVME_MOUNT}; put the "
            f"cache below it, e.g. {nvme}huggingface",
        )

    instance = INSTANCE_TYPES[stack.gpu_instance_type]
    if (
        not existing_cluster
        and region is not None
        and region not in instance.regions
        and not stack.allow_unlisted_region
    ):
        problems.append(
            f"aws:region = {region!r}: {instance.name} is not offered there as far as "
            f"serving/runtime/hardware.py knows; use one of {', '.join(sorted(instance.regions))}, "
            f"or set {_key('allowUnlistedRegion')} true if AWS added it since"
        )

    reservation_id = stack.capacity_reservation_id or None
    reservation_zone = stack.capacity_reservation_zone or None
    if stack.gpu_capacity_type == "CAPACITY_BLOCK":
        if not reservation_id or not re.fullmatch(r"cr-[0-9a-f]{8,17}", reservation_id):
            fail(
                "capacityReservationId",
                reservation_id or "",
                "CAPACITY_BLOCK needs the Capacity Block's reservation id, cr-<hex>",
            )
        if not reservation_zone or not region or not reservation_zone.startswith(region):
            fail(
                "capacityReservationZone",
                reservation_zone or "",
                f"CAPACITY_BLOCK needs the reservation's availability zone in {region}, "
                f"e.g. {region or 'us-east-1'}a",
            )
    elif reservation_id:
        fail(
            "capacityReservationId",
            reservation_id,
            "only used with gpuCapacityType CAPACITY_BLOCK; remove it or set that capacity type",
        )

    gpu_nodes = GpuNodeSettings(
        instance=instance,
        node_count=stack.gpu_node_count,
        ami_type=stack.gpu_ami_type,
        capacity_type=stack.gpu_capacity_type,
        capacity_reservation_id=reservation_id,
        capacity_reservation_zone=reservation_zone,
        root_volume_gib=stack.gpu_root_volume_gib,
        labels=dict(stack.gpu_node_selector),
    )

    runtime = None
    try:
        runtime = build_runtime(
            stack.trtllm_options,
            model=stack.model,
            image=stack.trtllm_image,
            gpu=instance.gpu,
            gpus_per_replica=stack.gpus_per_replica,
            revision=stack.model_revision,
        )
    except RuntimeConfigError as error:
        for problem in error.problems:
            # The runtime names its own inputs; the image and model come from their own keys.
            if problem.startswith("image = "):
                problems.append(f"{_key('trtllmImage')} = {problem.removeprefix('image = ')}")
            elif problem.startswith("revision = "):
                problems.append(f"{_key('modelRevision')} = {problem.removeprefix('revision = ')}")
            else:
                problems.append(f"{_key('trtllmOptions')}: {problem}")

    replicas = stack.replicas
    gpus_per_replica = stack.gpus_per_replica
    if gpus_per_replica > instance.gpus:
        fail(
            "gpusPerReplica",
            gpus_per_replica,
            f"a replica runs on one node, and {instance.name} has {instance.gpus} GPUs",
        )
    elif not existing_cluster and gpu_nodes.node_count == 0:
        if stack.gpu_capacity_type != "CAPACITY_BLOCK":
            fail(
                "gpuNodeCount",
                0,
                "0 GPU nodes only for a CAPACITY_BLOCK stack waiting for its block to start; "
                "otherwise at least 1",
            )
        else:
            notices.append(
                "gpuNodeCount is 0: the server pods stay Pending until the Capacity Block starts and "
                "gpuNodeCount is raised (pulumi config set gpuNodeCount N && pulumi up)"
            )
    elif not existing_cluster and replicas * gpus_per_replica > gpu_nodes.total_gpus:
        needed = replicas * gpus_per_replica
        per_node = instance.gpus // gpus_per_replica
        nodes_needed = -(-replicas // per_node)
        more_nodes = (
            f"raise gpuNodeCount to {nodes_needed}"
            if nodes_needed <= MAX_GPU_NODES
            else f"at most {MAX_GPU_NODES * per_node} replicas fit the {MAX_GPU_NODES} nodes allowed"
        )
        fail(
            "replicas",
            replicas,
            f"{replicas} replicas x {gpus_per_replica} GPUs = {needed} GPUs, but "
            f"{gpu_nodes.node_count} x {instance.name} have {gpu_nodes.total_gpus}; use at most "
            f"{gpu_nodes.node_count * per_node} replicas or {more_nodes}",
        )

    source_ranges = tuple(stack.endpoint_source_ranges)
    if stack.endpoint_scheme == "internet-facing" and not source_ranges:
        fail(
            "endpointSourceRanges",
            [],
            "an internet-facing endpoint needs an explicit list of allowed CIDRs "
            '(write ["0.0.0.0/0"] to accept the whole internet, behind the API key)',
        )
    if not source_ranges and not existing_cluster:
        source_ranges = (stack.vpc_cidr,)
    if not source_ranges and existing_cluster:
        fail(
            "endpointSourceRanges",
            [],
            "with an existing cluster, list the CIDRs that may reach the endpoint (e.g. your VPC CIDR)",
        )

    tls = "off" if stack.endpoint_plain_http else "acm" if stack.endpoint_certificate_arn else "stack-ca"
    if stack.endpoint_plain_http and stack.endpoint_certificate_arn:
        fail(
            "endpointPlainHttp",
            True,
            "contradicts endpointCertificateArn (TLS with an ACM certificate); remove one of the two",
        )
    if stack.endpoint_certificate_arn:
        arn_region = stack.endpoint_certificate_arn.split(":")[3]
        if not stack.endpoint_hostname:
            fail(
                "endpointHostname",
                "",
                "endpointCertificateArn needs the name the certificate is for (and a DNS record of "
                "that name pointing at the load balancer), e.g. llm.example.com",
            )
        if region and arn_region != region:
            fail(
                "endpointCertificateArn",
                stack.endpoint_certificate_arn,
                f"the certificate is in {arn_region}, the stack in {region}; a load balancer can only "
                f"use an ACM certificate of its own region: request or import one in {region}",
            )
        if existing_cluster:
            fail(
                "endpointCertificateArn",
                stack.endpoint_certificate_arn,
                "TLS at the load balancer needs the AWS Load Balancer Controller, which the stack "
                "installs only when it creates the cluster; with an existing cluster, leave it "
                "empty (the pods then present the stack CA's certificate) and set endpointHostname",
            )

    server_cpu, server_memory_gib = replica_resources(instance, gpus_per_replica)
    if stack.server_cpu > instance.vcpus:
        fail("serverCpu", stack.server_cpu, f"expected a whole number from 0 to {instance.vcpus}")
    elif 0 < stack.server_cpu < MIN_SERVER_CPU:
        fail(
            "serverCpu",
            stack.server_cpu,
            f"use at least {MIN_SERVER_CPU} cores (or 0 to size from gpuInstanceType)",
        )
    if stack.server_memory_gib > instance.memory_gib:
        fail(
            "serverMemoryGiB",
            stack.server_memory_gib,
            f"expected a whole number from 0 to {instance.memory_gib}",
        )
    elif 0 < stack.server_memory_gib < MIN_SERVER_MEMORY_GIB:
        fail(
            "serverMemoryGiB",
            stack.server_memory_gib,
            f"use at least {MIN_SERVER_MEMORY_GIB} GiB: the "
            f"{GPT_OSS_120B.checkpoint_bytes / 2**30:.0f} GiB checkpoint passes through host "
            "memory while loading (or 0 to size from gpuInstanceType)",
        )

    metrics = _metrics(stack, region, existing_cluster, fail)
    autoscaling = _autoscaling(stack, instance, existing_cluster, metrics, fail, notices)

    if problems or runtime is None:
        return None, problems
    return StackSettings(
        region=region,
        existing_cluster=existing_cluster,
        network=NetworkSettings(
            vpc_cidr=stack.vpc_cidr, availability_zone_count=stack.availability_zone_count
        ),
        cluster=ClusterSettings(
            name=stack.cluster_name,
            kubernetes_version=stack.kubernetes_version,
            admin_role_arns=tuple(stack.cluster_admin_role_arns),
            api_public_access_cidrs=public_cidrs,
            support_type=stack.kubernetes_support_type,
            standard_support_until=support_ends,
            log_retention_days=stack.cluster_log_retention_days,
        ),
        gpu_nodes=gpu_nodes,
        system_nodes=SystemNodeSettings(
            instance_type=stack.system_instance_type, node_count=stack.system_node_count
        ),
        serving=ServingSettings(
            namespace=stack.namespace,
            replicas=replicas,
            runtime=runtime,
            server_cpu=stack.server_cpu or server_cpu,
            server_memory_gib=stack.server_memory_gib or server_memory_gib,
            startup_timeout_minutes=stack.startup_timeout_minutes,
            weights_host_path=stack.weights_host_path,
            gpu_node_selector=dict(stack.gpu_node_selector),
            hf_token_in_secrets_manager=stack.hf_token_in_secrets_manager,
            await_rollout=existing_cluster or gpu_nodes.node_count > 0,
        ),
        endpoint=EndpointSettings(
            scheme=stack.endpoint_scheme,
            source_ranges=source_ranges,
            node_ranges=() if existing_cluster else (stack.vpc_cidr,),
            tls=tls,
            hostname=stack.endpoint_hostname or None,
            certificate_arn=stack.endpoint_certificate_arn or None,
            load_balancer_controller=not existing_cluster,
            region=region,
        ),
        cost_budget_usd_per_hour=stack.cost_budget_usd_per_hour,
        metrics=metrics,
        autoscaling=autoscaling,
        notices=tuple(notices),
    ), problems


def _autoscaling(
    stack: StackConfig,
    instance: InstanceType,
    existing_cluster: bool,
    metrics: MetricsSettings,
    fail: Callable[[str, Any, str], None],
    notices: list[str],
) -> AutoscalingSettings:
    """The autoscaling range, checked against the nodes, the replicas and the metrics it reads."""
    per_node = max(instance.gpus // stack.gpus_per_replica, 1)
    min_nodes, max_nodes, nodes = stack.gpu_node_min_count, stack.gpu_node_max_count, stack.gpu_node_count
    capacity_block = stack.gpu_capacity_type == "CAPACITY_BLOCK"
    if stack.autoscaling and capacity_block:
        # A block is paid for at its size: its nodes stay at gpuNodeCount, only replicas scale.
        if (min_nodes, max_nodes) != (nodes, nodes):
            notices.append(
                f"gpuNodeMinCount/gpuNodeMaxCount do not apply to a Capacity Block: its {nodes} nodes "
                "are paid for whether they serve or not, so only the replicas scale"
            )
        min_nodes = max_nodes = nodes
    max_replicas = stack.max_replicas or max_nodes * per_node
    settings = AutoscalingSettings(
        enabled=stack.autoscaling,
        min_replicas=stack.min_replicas,
        max_replicas=max_replicas,
        min_nodes=min_nodes,
        max_nodes=max_nodes,
        target_in_flight_per_replica=stack.autoscaling_target_in_flight or None,
    )
    if not stack.autoscaling:
        return settings
    if capacity_block and nodes == 0:
        notices.append(
            "autoscaling starts with the Capacity Block: at gpuNodeCount 0 there is nothing to scale"
        )
        return dataclasses.replace(settings, enabled=False)
    if existing_cluster:
        fail(
            "autoscaling",
            True,
            "the stack installs KEDA and cluster-autoscaler only in a cluster it creates; with an "
            "existing cluster, set autoscaling false and scale with that cluster's own autoscalers",
        )
        return settings
    if not metrics.managed_prometheus:
        fail(
            "autoscaling",
            True,
            "replicas follow the queue that Amazon Managed Prometheus stores: set metricsStore to "
            "managed-prometheus (or auto), or autoscaling false",
        )
    if not min_nodes <= nodes <= max_nodes:
        fail(
            "gpuNodeCount",
            nodes,
            f"the node group starts at gpuNodeCount, which must lie within gpuNodeMinCount ({min_nodes}) "
            f"and gpuNodeMaxCount ({max_nodes})",
        )
    if max_replicas > max_nodes * per_node:
        fail(
            "maxReplicas",
            max_replicas,
            f"{max_nodes} x {instance.name} hold {max_nodes * per_node} replicas of {stack.gpus_per_replica} "
            f"GPUs; use at most that, or 0 to follow gpuNodeMaxCount",
        )
    if not stack.min_replicas <= stack.replicas <= max_replicas:
        fail(
            "replicas",
            stack.replicas,
            f"the Deployment starts at replicas, which must lie within minReplicas ({stack.min_replicas}) "
            f"and maxReplicas ({max_replicas})",
        )
    return settings


def _metrics(
    stack: StackConfig, region: str | None, existing_cluster: bool, fail: Callable[[str, Any, str], None]
) -> MetricsSettings:
    """Where the metrics go: `auto` resolved by the mode, and what AWS would refuse."""
    store = stack.metrics_store
    if store == "auto":
        store = "none" if existing_cluster else "managed-prometheus"
    elif store == "prometheus-operator" and not existing_cluster:
        fail(
            "metricsStore",
            store,
            "the stack creates no Prometheus in a cluster it creates; use auto (Amazon Managed "
            "Prometheus), or prometheus-operator with an existing cluster (kubeconfig) that runs one",
        )
        store = "none"
    elif store == "managed-prometheus" and existing_cluster:
        fail(
            "metricsStore",
            store,
            "the managed scraper is created for the EKS cluster the stack creates; with an existing "
            "cluster (kubeconfig set) use none (or auto) and point that cluster's Prometheus at the "
            "scrape configuration `python -m serving observability` writes",
        )
        store = "none"
    topic = stack.alert_notification_topic_arn or None
    if topic and store != "managed-prometheus":
        fail(
            "alertNotificationTopicArn",
            topic,
            "alerts are sent only by Amazon Managed Prometheus's alert manager (metricsStore "
            "managed-prometheus, a stack that creates its cluster); remove it, or route the rules "
            "of your own Prometheus to it",
        )
    elif topic and region and topic.split(":")[3] != region:
        fail(
            "alertNotificationTopicArn",
            topic,
            f"the topic is in {topic.split(':')[3]}, the stack in {region}; use a topic in {region}",
        )
    return MetricsSettings(
        store=store,
        retention_days=stack.metrics_retention_days,
        scrape_interval_seconds=stack.metrics_scrape_interval_seconds,
        ttft_p90_slo_seconds=stack.alert_ttft_p90_slo_seconds,
        notification_topic_arn=topic,
        object_labels=dict(stack.metrics_object_labels),
    )

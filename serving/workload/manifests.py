"""The Kubernetes objects of the inference server, as plain manifests (dicts).

Plain Python so the pod design can be read, tested and schema-validated without Pulumi; the
`InferenceServer` component registers exactly these objects. Design choices, each for a reason
users of peer projects ran into:

- A Deployment, not a StatefulSet: replicas are interchangeable and keep no per-replica volume;
  the weights cache lives on the node (NVMe hostPath), shared by every replica on that node.
- Rolling updates with maxSurge 0: a new pod never needs GPUs beyond those the old one frees.
- The server listens on loopback only; the nginx sidecar in the same pod is the only way in, and
  it checks the API key. Probes go through the gateway's open /health route, but belong to the
  server container, so a failing server (not the proxy) is what gets restarted.
- The startup probe allows `startup_timeout_minutes` for loading (tens of minutes for 120B);
  nothing listens before the model is loaded, so the probe must wait, not kill.
- A memory-backed /dev/shm: NCCL with tensor parallelism needs far more than the 64 MiB default.
- Graceful termination: a preStop pause lets the load balancer stop sending new requests, then
  the server and nginx finish in-flight streams within the grace period.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from serving.runtime.hardware import InstanceType
from serving.runtime.options import (
    OPTIONS_FILE_NAME,
    SecretRef,
    ServingRuntime,
    render_download_command,
    render_environment,
    render_options_yaml,
    render_serve_args,
)
from serving.workload import exporter_sidecar, gateway

APP_NAME = "trtllm-serve"
SERVER_CONTAINER = "trtllm-serve"
GATEWAY_CONTAINER = "api-gateway"
GATEWAY_PORT_NAME = "gateway"
WEIGHTS_DOWNLOAD_CONTAINER = "download-weights"
# The metrics exporter (serving/observability/exporter.py): the one reader of the server's
# drained iteration stats, the relay of its request series (the server listens on loopback
# only), and the gateway's series. Scraped on its port by name; never behind the Service.
EXPORTER_CONTAINER = "metrics-exporter"
METRICS_PORT = 9109
METRICS_PORT_NAME = "metrics"
HF_TOKEN_SECRET_KEY = "HF_TOKEN"
HF_HOME = "/hf-cache"
TRITON_CACHE_DIR = f"{HF_HOME}/triton-cache"
OPTIONS_DIR = "/etc/trtllm"
SERVER_HOME = "/home/trtllm"
# The unprivileged user the server and the download step run as (the cache is chowned to it).
SERVER_UID = 1000
# NCCL's shared-memory transport between the two GPUs of a replica.
SHM_SIZE = "32Gi"
# Long generations (tens of thousands of tokens) run for minutes: let them finish on shutdown.
TERMINATION_GRACE_SECONDS = 900
# Time for the load balancer to stop routing to a terminating pod before it stops listening.
DRAIN_PAUSE_SECONDS = 20
STARTUP_PROBE_PERIOD_SECONDS = 30
# Share of a node's CPU and memory given to the pods of its GPUs (the rest: kubelet, system
# reserve, DaemonSets).
NODE_SHARE_FOR_PODS = 0.85
# The Service's port: 443 for TLS (the default), 80 only for a stack that asks for plain HTTP.
HTTPS_SERVICE_PORT = 443
PLAIN_SERVICE_PORT = 80
# With IP targets a new pod is Ready before the NLB has registered it and seen two healthy checks
# (2 x 10 s, plus registration): a rollout waits this long before it takes down the next old pod.
LOAD_BALANCER_SETTLE_SECONDS = 60
# The AWS Load Balancer Controller's class: the legacy in-tree controller ignores such a Service.
LOAD_BALANCER_CLASS = "service.k8s.aws/nlb"
AWS_LB = "service.beta.kubernetes.io/aws-load-balancer"
# What the NLB negotiates with clients when it holds an ACM certificate: TLS 1.3 and 1.2 only.
NLB_TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"


@dataclass(frozen=True)
class WorkloadNames:
    namespace: str
    hf_token_secret: str = "hf-token"
    api_keys_secret: str = "api-gateway-keys"
    options_config_map: str = "trtllm-options"
    gateway_config_map: str = "api-gateway-config"
    exporter_config_map: str = "metrics-exporter"
    tls_secret: str = "api-gateway-tls"
    deployment: str = APP_NAME
    service: str = "gpt-oss"
    disruption_budget: str = APP_NAME
    network_policy: str = APP_NAME


@dataclass(frozen=True)
class WorkloadSpec:
    names: WorkloadNames
    runtime: ServingRuntime
    replicas: int
    server_cpu: int  # cores requested per replica (see replica_resources)
    server_memory_gib: int  # memory requested and limited per replica
    gpu_node_selector: dict[str, str]
    weights_host_path: str
    startup_timeout_minutes: int
    internet_facing: bool
    source_ranges: tuple[str, ...]
    # The cluster's node addresses (kubelet probes), when the stack knows them.
    node_ranges: tuple[str, ...] = ()
    # "stack-ca" (the gateway presents the stack CA's certificate), "acm" (the NLB presents an ACM
    # certificate and re-encrypts to the gateway) or "off" (plain HTTP, when a stack asks).
    tls: str = "stack-ca"
    certificate_arn: str | None = None
    # True when the stack installed the AWS Load Balancer Controller (IP targets, health check to
    # the gateway); False for an existing cluster, whose controller is not known.
    load_balancer_controller: bool = True
    gateway: gateway.GatewaySettings = field(default_factory=gateway.GatewaySettings)

    def __post_init__(self) -> None:
        if (self.tls == "off") == self.gateway.tls:
            raise ValueError(
                f"WorkloadSpec.tls={self.tls!r} disagrees with the gateway's TLS ({self.gateway.tls})"
            )
        if (self.tls == "acm") != bool(self.certificate_arn):
            raise ValueError("WorkloadSpec.certificate_arn goes with tls 'acm', and only with it")


def gateway_for(tls: str) -> gateway.GatewaySettings:
    """The pod's gateway: TLS on 8443, or plain HTTP on 8080 for a stack that asks for it."""
    return gateway.plain_http_gateway() if tls == "off" else gateway.GatewaySettings()


def service_port(spec: WorkloadSpec) -> int:
    return PLAIN_SERVICE_PORT if spec.tls == "off" else HTTPS_SERVICE_PORT


# checkov (the IaC scanner the tests run over the rendered objects) findings that are deliberate,
# each with its reason, written on the object as `checkov.io/skip<N>: <check>=<reason>`.
SCANNER_EXCEPTIONS: dict[str, str] = {
    "CKV_K8S_11": "no CPU limit on purpose: throttling trtllm-serve's scheduler thread stalls every stream",
    "CKV_K8S_43": "images pinned to release tags; digests are not verifiable from where this is built (see docs/security.md)",
    "CKV_K8S_15": "IfNotPresent with pinned tags: the TensorRT-LLM image is 20-30 GB and must not be pulled again per pod",
    "CKV_K8S_25": "prepare-cache adds only CHOWN, to hand the hostPath weights cache to the server's uid once",
    "CKV_K8S_35": "the HF token reaches only the download init step, as a secretKeyRef (huggingface_hub reads HF_TOKEN)",
    "CKV_K8S_40": "uids are the images' own (nginx-unprivileged 101) and the cache owner 1000; non-root is enforced",
    "CKV_K8S_22": "trtllm-serve's root filesystem stays writable: torch writes JIT caches at start (nginx's is read-only)",
}


def scanner_exceptions(exceptions: dict[str, str]) -> dict[str, str]:
    """checkov's skip annotations for `exceptions` (check id -> reason)."""
    return {
        f"checkov.io/skip{index}": f"{check}={reason}"
        for index, (check, reason) in enumerate(sorted(exceptions.items()), start=1)
    }


def labels(spec: WorkloadSpec, component: str = "server") -> dict[str, str]:
    """Kubernetes recommended labels."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": spec.names.deployment,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "gpt-oss-trtllm",
        "app.kubernetes.io/version": spec.runtime.image.rsplit(":", 1)[-1],
        "app.kubernetes.io/managed-by": "pulumi",
    }


def _scheme(spec: WorkloadSpec) -> str:
    return "internet-facing" if spec.internet_facing else "internal"


def selector_labels(spec: WorkloadSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/instance": spec.names.deployment}


def metadata(spec: WorkloadSpec, name: str, component: str = "server") -> dict[str, Any]:
    """Name, namespace and recommended labels of one of the workload's objects."""
    return {"name": name, "namespace": spec.names.namespace, "labels": labels(spec, component)}


def replica_resources(instance: InstanceType, gpus_per_replica: int) -> tuple[int, int]:
    """CPU cores and memory (GiB) requested per replica: its GPUs' share of the node."""
    share = gpus_per_replica / instance.gpus * NODE_SHARE_FOR_PODS
    return math.floor(instance.vcpus * share), math.floor(instance.memory_gib * share)


def options_config_map(spec: WorkloadSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(spec, spec.names.options_config_map),
        "data": {OPTIONS_FILE_NAME: render_options_yaml(spec.runtime)},
    }


def gateway_config_map(spec: WorkloadSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(spec, spec.names.gateway_config_map, "gateway"),
        "data": {gateway.GATEWAY_CONFIG_MAP_KEY: gateway.render_nginx_conf(spec.gateway)},
    }


def exporter_config_map(spec: WorkloadSpec) -> dict[str, Any]:
    """The exporter's source files (it runs from them in the server's image)."""
    sources = exporter_sidecar.exporter_sources()
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(spec, spec.names.exporter_config_map, "metrics"),
        "data": {exporter_sidecar.config_map_key(path): text for path, text in sources.items()},
    }


def _exporter_container(spec: WorkloadSpec) -> dict[str, Any]:
    settings = spec.gateway
    command = [
        "python3",
        "-m",
        exporter_sidecar.EXPORTER_MODULE,
        "--source",
        f"http://127.0.0.1:{spec.runtime.port}",
        "--port",
        str(METRICS_PORT),
    ]
    if settings.metrics_syslog_server:
        command += ["--gateway-syslog", settings.metrics_syslog_server]
    if settings.status_port:
        command += [
            "--gateway-status-url",
            f"http://127.0.0.1:{settings.status_port}{gateway.GATEWAY_STATUS_PATH}",
        ]
    health = {"httpGet": {"path": "/healthz", "port": METRICS_PORT_NAME}, "timeoutSeconds": 5}
    return {
        "name": EXPORTER_CONTAINER,
        # The server's image, already on the node: the exporter needs only its Python.
        "image": spec.runtime.image,
        # `command`: the image's NVIDIA entrypoint (GPU checks) has nothing to do here.
        "command": command,
        "env": [
            {"name": "PYTHONPATH", "value": exporter_sidecar.SOURCE_ROOT},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        ],
        "ports": [{"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        # It answers /healthz while the model loads: its probes never wait for the server.
        "readinessProbe": {**health, "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {**health, "periodSeconds": 30, "failureThreshold": 3},
        # Keeps reporting while the replica drains its streams.
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_PAUSE_SECONDS}}},
        "securityContext": {**_restricted_security_context(SERVER_UID), "readOnlyRootFilesystem": True},
        "volumeMounts": [
            {"name": "metrics-exporter", "mountPath": exporter_sidecar.SOURCE_ROOT, "readOnly": True}
        ],
    }


def config_checksum(*documents: str) -> str:
    """A pod-template annotation that changes with the configuration, so a change rolls the pods."""
    digest = hashlib.sha256()
    for document in documents:
        digest.update(document.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _restricted_security_context(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }


def _http_probe(
    port: str, period: int, failures: int, timeout: int = 5, scheme: str = "HTTP"
) -> dict[str, Any]:
    # The kubelet does not verify the certificate of an HTTPS probe: the stack CA's will do.
    return {
        "httpGet": {"path": "/health", "port": port, "scheme": scheme},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def deployment(spec: WorkloadSpec, *, pod_annotations: dict[str, Any]) -> dict[str, Any]:
    runtime = spec.runtime
    gpus = runtime.gpus_per_replica
    cpu, memory_gib = spec.server_cpu, spec.server_memory_gib
    token = SecretRef(spec.names.hf_token_secret, HF_TOKEN_SECRET_KEY)
    options_path = f"{OPTIONS_DIR}/{OPTIONS_FILE_NAME}"
    cache_mount = {"name": "hf-cache", "mountPath": HF_HOME}

    prepare_cache = {
        # The hostPath directory is created root-owned; hand it to the unprivileged user once.
        # Only CAP_CHOWN, and only on the cache directory.
        "name": "prepare-cache",
        "image": runtime.image,
        "command": ["chown", f"{SERVER_UID}:{SERVER_UID}", HF_HOME],
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
            "readOnlyRootFilesystem": True,  # chown writes nothing but the cache's owner
        },
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "64Mi"}},
        "volumeMounts": [cache_mount],
    }
    download_weights = {
        "name": WEIGHTS_DOWNLOAD_CONTAINER,
        "image": runtime.image,
        "command": render_download_command(runtime),
        "env": [
            *render_environment(runtime, hf_home=HF_HOME, hf_token=token),
            {"name": "HOME", "value": SERVER_HOME},
        ],
        "securityContext": _restricted_security_context(SERVER_UID),
        "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "16Gi"}},
        "volumeMounts": [cache_mount, {"name": "home", "mountPath": SERVER_HOME}],
    }
    startup_failures = math.ceil(spec.startup_timeout_minutes * 60 / STARTUP_PROBE_PERIOD_SECONDS)
    probe_scheme = spec.gateway.scheme.upper()
    server = {
        "name": SERVER_CONTAINER,
        "image": runtime.image,
        # `args`, not `command`: the image's NVIDIA entrypoint (environment checks, then exec of
        # its arguments) stays in place.
        "args": render_serve_args(runtime, options_path),
        "env": [
            *render_environment(runtime, hf_home=HF_HOME, hf_token=None),
            {"name": "HOME", "value": SERVER_HOME},
            # Triton's compiled kernels (the TRITON MoE backend) on the node's NVMe beside the
            # weights: a restarted pod reuses them instead of compiling again.
            {"name": "TRITON_CACHE_DIR", "value": TRITON_CACHE_DIR},
        ],
        "resources": {
            "requests": {"cpu": str(cpu), "memory": f"{memory_gib}Gi", "nvidia.com/gpu": str(gpus)},
            # No CPU limit: throttling the scheduler thread stalls every stream.
            "limits": {"memory": f"{memory_gib}Gi", "nvidia.com/gpu": str(gpus)},
        },
        "startupProbe": _http_probe(
            GATEWAY_PORT_NAME, STARTUP_PROBE_PERIOD_SECONDS, startup_failures, scheme=probe_scheme
        ),
        "readinessProbe": _http_probe(GATEWAY_PORT_NAME, 10, 3, scheme=probe_scheme),
        "livenessProbe": _http_probe(GATEWAY_PORT_NAME, 30, 6, timeout=10, scheme=probe_scheme),
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_PAUSE_SECONDS}}},
        # The root filesystem stays writable: Triton and torch write JIT caches at start.
        "securityContext": _restricted_security_context(SERVER_UID),
        "volumeMounts": [
            cache_mount,
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "trtllm-options", "mountPath": OPTIONS_DIR, "readOnly": True},
            {"name": "home", "mountPath": SERVER_HOME},
        ],
    }
    api_gateway = {
        "name": GATEWAY_CONTAINER,
        "image": gateway.GATEWAY_IMAGE,
        "command": list(gateway.gateway_command(spec.gateway)),
        "ports": [{"name": GATEWAY_PORT_NAME, "containerPort": spec.gateway.listen_port, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "500m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        # nginx itself, not the server behind it (that is the server container's probes, through
        # the gateway's /health): restart the sidecar only when it stops accepting connections.
        "readinessProbe": {
            "tcpSocket": {"port": GATEWAY_PORT_NAME},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "tcpSocket": {"port": GATEWAY_PORT_NAME},
            "periodSeconds": 20,
            "failureThreshold": 3,
        },
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_PAUSE_SECONDS}}},
        "securityContext": {
            **_restricted_security_context(gateway.GATEWAY_RUN_AS_USER),
            "runAsGroup": gateway.GATEWAY_RUN_AS_GROUP,
            "readOnlyRootFilesystem": True,
        },
        "volumeMounts": [
            {
                "name": "gateway-config",
                "mountPath": gateway.GATEWAY_CONFIG_MOUNT_PATH,
                "subPath": gateway.GATEWAY_CONFIG_MAP_KEY,
                "readOnly": True,
            },
            {"name": "gateway-keys", "mountPath": gateway.GATEWAY_API_KEYS_DIR, "readOnly": True},
            *(
                [{"name": "gateway-tls", "mountPath": gateway.GATEWAY_TLS_DIR, "readOnly": True}]
                if spec.gateway.tls
                else []
            ),
            {"name": "gateway-tmp", "mountPath": gateway.GATEWAY_TMP_DIR},
        ],
    }
    pod_spec = {
        "automountServiceAccountToken": False,  # the server never talks to the Kubernetes API
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}, "fsGroup": SERVER_UID},
        "nodeSelector": dict(spec.gpu_node_selector),
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        # Prefer nodes that already run a replica: four two-GPU replicas fill a p5.48xlarge
        # before a second node's GPUs are touched.
        "affinity": {
            "podAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": selector_labels(spec)},
                        },
                    }
                ]
            }
        },
        "initContainers": [prepare_cache, download_weights],
        "containers": [server, api_gateway, _exporter_container(spec)],
        "volumes": [
            {"name": "hf-cache", "hostPath": {"path": spec.weights_host_path, "type": "DirectoryOrCreate"}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
            {"name": "home", "emptyDir": {}},
            {"name": "trtllm-options", "configMap": {"name": spec.names.options_config_map}},
            {"name": "gateway-config", "configMap": {"name": spec.names.gateway_config_map}},
            {
                "name": "gateway-keys",
                "secret": {"secretName": spec.names.api_keys_secret, "defaultMode": 0o440},
            },
            *(
                [
                    {
                        "name": "gateway-tls",
                        "secret": {"secretName": spec.names.tls_secret, "defaultMode": 0o440},
                    }
                ]
                if spec.gateway.tls
                else []
            ),
            {"name": "gateway-tmp", "emptyDir": {"sizeLimit": "1Gi"}},
            {
                "name": "metrics-exporter",
                "configMap": {
                    "name": spec.names.exporter_config_map,
                    "items": [
                        {"key": exporter_sidecar.config_map_key(path), "path": path}
                        for path in exporter_sidecar.exporter_sources()
                    ],
                },
            },
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            **metadata(spec, spec.names.deployment),
            "annotations": scanner_exceptions(SCANNER_EXCEPTIONS),
        },
        "spec": {
            "replicas": spec.replicas,
            **({"minReadySeconds": LOAD_BALANCER_SETTLE_SECONDS} if spec.load_balancer_controller else {}),
            "selector": {"matchLabels": selector_labels(spec)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels(spec), "annotations": pod_annotations},
                "spec": pod_spec,
            },
        },
    }


def tls_secret(spec: WorkloadSpec, certificate_pem: Any, key_pem: Any) -> dict[str, Any]:
    """The gateway's certificate and key (a `kubernetes.io/tls` Secret); the values are passed in
    so that the component can hand them over as Pulumi secrets."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(spec, spec.names.tls_secret, "gateway"),
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": certificate_pem, "tls.key": key_pem},
    }


def disruption_budget(spec: WorkloadSpec) -> dict[str, Any]:
    # One replica at a time may be evicted (a node drain still completes with one replica).
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(spec, spec.names.disruption_budget),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(spec)}},
    }


def service_annotations(spec: WorkloadSpec) -> dict[str, str]:
    """The load balancer's settings. The scheme is always stated: the AWS Load Balancer
    Controller makes an NLB internal unless told otherwise, the legacy controller public."""
    annotations = {f"{AWS_LB}-scheme": _scheme(spec)}
    if not spec.load_balancer_controller:
        # An existing cluster: the legacy controller reads these; the AWS Load Balancer
        # Controller's webhook, if the cluster runs it, takes the Service and reads the scheme.
        annotations[f"{AWS_LB}-type"] = "nlb"
        if not spec.internet_facing:
            annotations[f"{AWS_LB}-internal"] = "true"
        return annotations
    health_protocol = "HTTP" if spec.tls == "off" else "HTTPS"
    annotations |= {
        # Straight to the pods (no NodePort hop through kube-proxy on a random node).
        f"{AWS_LB}-nlb-target-type": "ip",
        # The gateway's /health, which answers 200 only once trtllm-serve does: a loading or hung
        # replica gets no traffic. Through TLS like the clients (the NLB does not verify it).
        f"{AWS_LB}-healthcheck-protocol": health_protocol,
        f"{AWS_LB}-healthcheck-port": "traffic-port",
        f"{AWS_LB}-healthcheck-path": gateway.HEALTH_ROUTE[1],
        f"{AWS_LB}-healthcheck-interval": "10",
        f"{AWS_LB}-healthcheck-timeout": "6",
        f"{AWS_LB}-healthcheck-healthy-threshold": "2",
        f"{AWS_LB}-healthcheck-unhealthy-threshold": "2",
        # The pods see the clients' own addresses: the gateway's per-address limit and its logs
        # mean something, and the NetworkPolicy's source ranges apply to real clients.
        f"{AWS_LB}-target-group-attributes": "preserve_client_ip.enabled=true",
        # A few replicas may all sit in one zone: every NLB node must reach them.
        f"{AWS_LB}-attributes": "load_balancing.cross_zone.enabled=true",
    }
    if spec.tls == "acm":
        assert spec.certificate_arn is not None
        annotations |= {
            f"{AWS_LB}-ssl-cert": spec.certificate_arn,
            f"{AWS_LB}-ssl-ports": "https",
            f"{AWS_LB}-ssl-negotiation-policy": NLB_TLS_POLICY,
            # Encrypted to the pod as well: the gateway still presents the stack CA's certificate.
            f"{AWS_LB}-backend-protocol": "ssl",
        }
    return annotations


def service(spec: WorkloadSpec) -> dict[str, Any]:
    """An NLB in front of the gateway port only; internal unless the stack asks otherwise."""
    service_metadata = metadata(spec, spec.names.service, "gateway")
    service_metadata["annotations"] = service_annotations(spec)
    port_name = "http" if spec.tls == "off" else "https"
    load_balancer: dict[str, Any]
    if spec.load_balancer_controller:
        load_balancer = {
            "loadBalancerClass": LOAD_BALANCER_CLASS,
            # IP targets need no NodePort: no port opens on every node.
            "allocateLoadBalancerNodePorts": False,
        }
    else:
        # Local keeps the client address (instance targets), so the source ranges apply to
        # real clients.
        load_balancer = {"externalTrafficPolicy": "Local"}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": service_metadata,
        "spec": {
            "type": "LoadBalancer",
            **load_balancer,
            # Enforced by the NLB's own security group (the AWS Load Balancer Controller), or on
            # the nodes' security group (the legacy controller).
            "loadBalancerSourceRanges": list(spec.source_ranges),
            "selector": selector_labels(spec),
            "ports": [
                {
                    "name": port_name,
                    "port": service_port(spec),
                    "targetPort": GATEWAY_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


# What the pod may reach besides DNS: HTTPS (the weights download from the Hugging Face Hub and
# its CDN); never the instance metadata service (the server runs the model repository's code).
INSTANCE_METADATA = "169.254.169.254/32"
HTTPS_PORT = 443


def _metrics_scrapers(spec: WorkloadSpec) -> list[dict[str, Any]]:
    """Who may scrape the exporter: the VPC (the managed scraper's network interfaces are in the
    stack's subnets), or, with an existing cluster, any pod of the cluster (its Prometheus);
    never the load balancer's clients."""
    if spec.node_ranges:
        return [{"ipBlock": {"cidr": cidr}} for cidr in spec.node_ranges]
    return [{"namespaceSelector": {}}]


def network_policy(spec: WorkloadSpec) -> dict[str, Any]:
    """Only the load balancer's clients (and the nodes' probes) reach the gateway port, only the
    scrapers the metrics port; out, only DNS and HTTPS. Enforced by the VPC CNI's network policy
    agent (EKS) or the cluster's CNI."""
    sources = sorted({*spec.source_ranges, *spec.node_ranges})
    dns_ports = [{"protocol": protocol, "port": 53} for protocol in ("UDP", "TCP")]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(spec, spec.names.network_policy),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(spec)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [{"ipBlock": {"cidr": cidr}} for cidr in sources],
                    "ports": [{"protocol": "TCP", "port": spec.gateway.listen_port}],
                },
                {"from": _metrics_scrapers(spec), "ports": [{"protocol": "TCP", "port": METRICS_PORT}]},
            ],
            "egress": [
                {
                    "to": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                            },
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                        }
                    ],
                    "ports": dns_ports,
                },
                {
                    "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [INSTANCE_METADATA]}}],
                    "ports": [{"protocol": "TCP", "port": HTTPS_PORT}],
                },
            ],
        },
    }

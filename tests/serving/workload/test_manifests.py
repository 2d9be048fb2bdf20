"""The server's Kubernetes objects (serving/workload/manifests.py), validated by the real schema."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from serving.runtime.hardware import INSTANCE_TYPES
from serving.runtime.options import build_runtime
from serving.workload import gateway
from serving.workload.manifests import (
    WorkloadNames,
    WorkloadSpec,
    deployment,
    disruption_budget,
    gateway_config_map,
    gateway_for,
    network_policy,
    options_config_map,
    replica_resources,
    service,
    tls_secret,
)

KUBERNETES_VERSION = "1.35"  # Pulumi.prod.yaml's


ACM_ARN = "arn:aws:acm:us-east-1:123456789012:certificate/12345678-1234-1234-1234-123456789012"
LB = "service.beta.kubernetes.io/aws-load-balancer"


def make_spec(**changes: Any) -> WorkloadSpec:
    values: dict[str, Any] = {
        "names": WorkloadNames(namespace="gpt-oss"),
        "runtime": build_runtime(),
        "replicas": 4,
        "server_cpu": 40,
        "server_memory_gib": 435,
        "gpu_node_selector": {"nvidia.com/gpu.present": "true"},
        "weights_host_path": "/mnt/k8s-disks/0/huggingface",
        "startup_timeout_minutes": 60,
        "internet_facing": False,
        "source_ranges": ("10.42.0.0/16",),
    }
    values.update(changes)
    values.setdefault("gateway", gateway_for(values.get("tls", "stack-ca")))
    return WorkloadSpec(**values)


# The endpoint's variants: the default (the stack's CA, the AWS Load Balancer Controller), an
# ACM certificate on the NLB, plain HTTP when asked, and an existing cluster's unknown controller.
ENDPOINT_VARIANTS: dict[str, dict[str, Any]] = {
    "stack-ca": {},
    "acm": {"tls": "acm", "certificate_arn": ACM_ARN},
    "plain-http": {"tls": "off"},
    "existing-cluster": {"load_balancer_controller": False},
}


def all_objects(spec: WorkloadSpec):
    return [
        *(
            [tls_secret(spec, "-----BEGIN CERTIFICATE-----", "-----BEGIN PRIVATE KEY-----")]
            if spec.gateway.tls
            else []
        ),
        options_config_map(spec),
        gateway_config_map(spec),
        deployment(spec, pod_annotations={"gpt-oss.serving/config-checksum": "0" * 64}),
        disruption_budget(spec),
        service(spec),
        network_policy(spec),
    ]


def containers(manifest):
    pod = manifest["spec"]["template"]["spec"]
    return {c["name"]: c for c in pod["initContainers"] + pod["containers"]}


@pytest.mark.parametrize("endpoint", sorted(ENDPOINT_VARIANTS))
@pytest.mark.parametrize("internet_facing", [False, True])
def test_every_object_passes_the_kubernetes_schema_strictly(internet_facing, endpoint):
    for manifest in all_objects(make_spec(internet_facing=internet_facing, **ENDPOINT_VARIANTS[endpoint])):
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_a_misspelt_field_would_be_caught_by_the_same_validation():
    manifest = deployment(make_spec(), pod_annotations={})
    manifest["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_server_gets_exactly_its_gpus_and_the_cpu_and_memory_it_was_given():
    server = containers(deployment(make_spec(server_cpu=12, server_memory_gib=200), pod_annotations={}))[
        "trtllm-serve"
    ]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert server["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert server["resources"]["requests"]["cpu"] == "12"
    assert server["resources"]["requests"]["memory"] == server["resources"]["limits"]["memory"] == "200Gi"
    assert "cpu" not in server["resources"]["limits"]  # no CPU throttling of the scheduler thread


def test_replica_share_of_a_p5_lets_four_two_gpu_replicas_fit_one_node():
    cpu, memory = replica_resources(INSTANCE_TYPES["p5.48xlarge"], 2)
    # FACTS.md: a p5.48xlarge has 192 vCPU and 2 TiB. Four replicas fit with room left for
    # the kubelet, system reserve and DaemonSets; each can hold the 61 GiB checkpoint in RAM.
    assert 4 * cpu <= 192 - 8 and 4 * memory <= 2048 - 64
    assert cpu >= 16 and memory >= 96


def test_gpu_scheduling_toleration_selector_and_shared_memory():
    pod = deployment(make_spec(), pod_annotations={})["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert volumes["hf-cache"]["hostPath"]["path"] == "/mnt/k8s-disks/0/huggingface"
    mounts = {
        m["mountPath"]
        for m in containers({"spec": {"template": {"spec": pod}}})["trtllm-serve"]["volumeMounts"]
    }
    assert {"/dev/shm", "/hf-cache", "/etc/trtllm"} <= mounts


def test_probes_allow_the_first_load_and_go_through_the_open_health_route():
    server = containers(deployment(make_spec(startup_timeout_minutes=45), pod_annotations={}))["trtllm-serve"]
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 45 * 60
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"] == {"path": "/health", "port": "gateway", "scheme": "HTTPS"}
    plain = containers(deployment(make_spec(tls="off"), pod_annotations={}))["trtllm-serve"]
    assert plain["readinessProbe"]["httpGet"]["scheme"] == "HTTP"


def test_rollout_needs_no_spare_gpus_and_drains_gracefully():
    manifest = deployment(make_spec(), pod_annotations={})
    assert manifest["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    pod = manifest["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 600
    for container in pod["containers"]:
        assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    assert disruption_budget(make_spec())["spec"]["maxUnavailable"] == 1


def test_weights_are_downloaded_first_and_the_server_runs_offline():
    pod = deployment(make_spec(), pod_annotations={})["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["prepare-cache", "download-weights"]
    server = containers({"spec": {"template": {"spec": pod}}})["trtllm-serve"]
    env = {var["name"]: var for var in server["env"]}
    assert env["HF_HUB_OFFLINE"]["value"] == "1"
    assert "HF_TOKEN" not in env
    # Triton's kernel cache lives on the hostPath cache (the node's NVMe), not in an emptyDir.
    cache = next(m for m in server["volumeMounts"] if m["name"] == "hf-cache")["mountPath"]
    assert env["TRITON_CACHE_DIR"]["value"].startswith(cache + "/")
    assert server["args"][:2] == ["trtllm-serve", "openai/gpt-oss-120b"]
    assert server["args"][server["args"].index("--host") + 1] == "127.0.0.1"


def test_no_secret_value_in_the_pod_spec_only_references():
    pod = deployment(make_spec(), pod_annotations={})["spec"]["template"]["spec"]
    for container in pod["initContainers"] + pod["containers"]:
        for var in container.get("env", []):
            if var["name"] == "HF_TOKEN":
                assert set(var) == {"name", "valueFrom"}
                assert var["valueFrom"]["secretKeyRef"]["name"] == "hf-token"


def test_security_context_is_restrictive():
    pod = deployment(make_spec(), pod_annotations={})["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    by_name = containers({"spec": {"template": {"spec": pod}}})
    for name in ("download-weights", "trtllm-serve", "api-gateway"):
        context = by_name[name]["securityContext"]
        assert context["runAsNonRoot"] is True and context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
    assert by_name["api-gateway"]["securityContext"]["readOnlyRootFilesystem"] is True
    # The one root step may only change the cache directory's owner.
    assert by_name["prepare-cache"]["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}


def test_gateway_sidecar_is_the_only_way_in():
    spec = make_spec()
    svc = service(spec)
    assert svc["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "gateway", "protocol": "TCP"}
    ]
    gateway_container = containers(deployment(spec, pod_annotations={}))["api-gateway"]
    assert gateway_container["image"] == gateway.GATEWAY_IMAGE
    assert gateway_container["ports"][0]["name"] == "gateway"
    conf = gateway_config_map(spec)["data"]["nginx.conf"]
    assert "127.0.0.1:8000" in conf  # it forwards to the loopback-only server


def test_load_balancer_states_its_scheme_internal_unless_asked():
    for variant in ENDPOINT_VARIANTS.values():
        internal = service(make_spec(**variant))
        assert internal["metadata"]["annotations"][f"{LB}-scheme"] == "internal"
        assert internal["spec"]["loadBalancerSourceRanges"] == ["10.42.0.0/16"]
        public = service(make_spec(internet_facing=True, source_ranges=("203.0.113.0/24",), **variant))
        assert public["metadata"]["annotations"][f"{LB}-scheme"] == "internet-facing"
        assert f"{LB}-internal" not in public["metadata"]["annotations"]
        assert public["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]


def test_the_controller_registers_pods_and_health_checks_the_gateway():
    svc = service(make_spec())
    annotations = svc["metadata"]["annotations"]
    assert svc["spec"]["loadBalancerClass"] == "service.k8s.aws/nlb"
    assert svc["spec"]["allocateLoadBalancerNodePorts"] is False
    assert annotations[f"{LB}-nlb-target-type"] == "ip"
    assert (
        annotations[f"{LB}-healthcheck-path"],
        annotations[f"{LB}-healthcheck-protocol"],
        annotations[f"{LB}-healthcheck-port"],
    ) == ("/health", "HTTPS", "traffic-port")
    # The gateway's per-address limit and the NetworkPolicy's source ranges see real clients.
    assert "preserve_client_ip.enabled=true" in annotations[f"{LB}-target-group-attributes"]
    assert f"{LB}-ssl-cert" not in annotations  # the pods terminate TLS: the NLB passes TCP
    # An NLB health check's timeout must be below its interval.
    assert int(annotations[f"{LB}-healthcheck-timeout"]) < int(annotations[f"{LB}-healthcheck-interval"])
    plain = service(make_spec(tls="off"))
    assert plain["metadata"]["annotations"][f"{LB}-healthcheck-protocol"] == "HTTP"
    assert plain["spec"]["ports"][0]["port"] == 80


def test_acm_certificate_is_presented_by_the_nlb_which_re_encrypts_to_the_gateway():
    spec = make_spec(tls="acm", certificate_arn=ACM_ARN)
    annotations = service(spec)["metadata"]["annotations"]
    assert annotations[f"{LB}-ssl-cert"] == ACM_ARN
    assert annotations[f"{LB}-ssl-ports"] == "https"
    assert annotations[f"{LB}-backend-protocol"] == "ssl"
    assert annotations[f"{LB}-ssl-negotiation-policy"].startswith("ELBSecurityPolicy-TLS13")
    assert spec.gateway.tls  # the pod still speaks TLS only


def test_an_existing_cluster_gets_a_service_either_controller_reads_right():
    svc = service(make_spec(load_balancer_controller=False))
    annotations = svc["metadata"]["annotations"]
    assert "loadBalancerClass" not in svc["spec"]
    assert annotations[f"{LB}-type"] == "nlb"
    assert annotations[f"{LB}-internal"] == "true"  # the legacy controller's spelling
    assert annotations[f"{LB}-scheme"] == "internal"  # the AWS Load Balancer Controller's
    assert svc["spec"]["externalTrafficPolicy"] == "Local"


def test_gateway_mounts_its_certificate_and_reloads_when_it_changes():
    spec = make_spec()
    pod = deployment(spec, pod_annotations={})["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["gateway-tls"]["secret"]["secretName"] == spec.names.tls_secret
    gateway_container = containers({"spec": {"template": {"spec": pod}}})["api-gateway"]
    assert {"name": "gateway-tls", "mountPath": "/etc/nginx/tls", "readOnly": True} in gateway_container[
        "volumeMounts"
    ]
    assert "/etc/nginx/tls/tls.crt" in gateway_container["command"][2]
    assert tls_secret(spec, "c", "k")["type"] == "kubernetes.io/tls"
    plain_pod = deployment(make_spec(tls="off"), pod_annotations={})["spec"]["template"]["spec"]
    assert "gateway-tls" not in {v["name"] for v in plain_pod["volumes"]}


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"tls": "off", "gateway": gateway.GatewaySettings()}, "disagrees with the gateway"),
        ({"tls": "acm"}, "certificate_arn goes with tls 'acm'"),
        ({"certificate_arn": ACM_ARN}, "certificate_arn goes with tls 'acm'"),
    ],
)
def test_a_spec_whose_tls_settings_disagree_is_refused(changes, words):
    with pytest.raises(ValueError, match=words):
        make_spec(**changes)


def test_options_config_map_holds_the_rendered_options():
    data = options_config_map(make_spec())["data"]
    options = yaml.safe_load(data["extra-llm-api-options.yaml"])
    assert options["kv_cache_config"]["free_gpu_memory_fraction"] == 0.8


def test_recommended_labels_and_selector():
    manifest = deployment(make_spec(), pod_annotations={})
    labels = manifest["metadata"]["labels"]
    for key in (
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/version",
        "app.kubernetes.io/component",
        "app.kubernetes.io/part-of",
        "app.kubernetes.io/managed-by",
    ):
        assert key in labels
    selector = manifest["spec"]["selector"]["matchLabels"]
    assert selector.items() <= manifest["spec"]["template"]["metadata"]["labels"].items()
    assert service(make_spec())["spec"]["selector"] == selector


def test_network_policy_lets_in_only_the_gateway_port_and_out_only_dns_and_https():
    spec = make_spec(source_ranges=("203.0.113.0/24",), node_ranges=("10.42.0.0/16",))
    policy = network_policy(spec)["spec"]
    pod = deployment(spec, pod_annotations={})["spec"]["template"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    ingress, metrics = policy["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": spec.gateway.listen_port}]
    # The load balancer's clients and the nodes' probes; nothing else reaches the pod, and
    # the server's own port (loopback only) is not among the ports at all.
    assert {peer["ipBlock"]["cidr"] for peer in ingress["from"]} == {"203.0.113.0/24", "10.42.0.0/16"}
    # The metrics port from the VPC only (the managed scraper), never from the clients' ranges.
    assert metrics == {
        "from": [{"ipBlock": {"cidr": "10.42.0.0/16"}}],
        "ports": [{"protocol": "TCP", "port": 9109}],
    }
    # With an existing cluster, from the cluster's own pods (its Prometheus), not from outside.
    _, byo_metrics = network_policy(make_spec(load_balancer_controller=False))["spec"]["ingress"]
    assert byo_metrics["from"] == [{"namespaceSelector": {}}]
    egress_ports = {(p["protocol"], p["port"]) for rule in policy["egress"] for p in rule["ports"]}
    assert egress_ports == {("UDP", 53), ("TCP", 53), ("TCP", 443)}
    https = next(rule for rule in policy["egress"] if rule["ports"][0]["port"] == 443)
    # The instance metadata service stays out of reach of the model's remote code.
    assert https["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}]

"""Each policy on synthetic resources: one that violates it and one that complies.

Resources are built with pulumi-policy's own types (`PolicyResource`, `ResourceValidationArgs`,
`StackValidationArgs`), their properties passed through the same Struct -> deserialize ->
unknown-checking proxy path the analyzer uses (policy/engine.py), so numbers arrive as floats
and dicts as proxies, exactly as in `pulumi preview`. The last tests start the real PolicyPack
(policy/__main__.py, as the CLI does) and talk to it over gRPC like the Pulumi engine.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy import EnforcementLevel
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from policy.engine import PolicyReport, policy_resource, run_policies
from policy.resources import image_pin_problem, is_gpu_instance_type
from policy.rules import POLICIES, parallel_sizes_from_args
from serving.config.project import PROJECT_DIR
from tests.support import fake_credentials

ROOT = PROJECT_DIR
HF_TOKEN = fake_credentials.hugging_face_token()
API_KEY = "k3Jx9_Qp2mZr8Lw5Vt1Nb7Yc4Hd6Fg0Sa"  # made up, 34 base64url characters
NS = "gpt-oss"


# --- Builders for a stack that complies with every policy ------------------------------------


def node_group(
    name: str = "gpu",
    *,
    taints: list[dict] | None = None,
    ami: str = "AL2023_x86_64_NVIDIA",
    instance_types: list[str] | None = None,
    desired: int = 1,
    launch_template: dict | None = None,
) -> dict:
    props: dict[str, Any] = {
        "clusterName": "gpt-oss",
        "amiType": ami,
        "instanceTypes": ["p5.48xlarge"] if instance_types is None else instance_types,
        "scalingConfig": {"desiredSize": desired, "minSize": desired, "maxSize": desired},
        "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
        if taints is None
        else taints,
    }
    if launch_template is not None:
        props["launchTemplate"] = launch_template
    return {"type": "aws:eks/nodeGroup:NodeGroup", "name": name, "props": props}


def launch_template(
    name: str = "gpu-nodes", *, http_tokens: str | None = "required", instance_type: str | None = None
) -> dict:
    props: dict[str, Any] = {"name": name}
    if http_tokens is not None:
        props["metadataOptions"] = {"httpTokens": http_tokens, "httpPutResponseHopLimit": 2}
    if instance_type is not None:
        props["instanceType"] = instance_type
    return {"type": "aws:ec2/launchTemplate:LaunchTemplate", "name": name, "props": props}


def server_args(tp: int = 2, pp: int | None = None) -> list[str]:
    args = ["openai/gpt-oss-120b", "--host", "127.0.0.1", "--port", "8000", "--tp_size", str(tp)]
    if pp is not None:
        args += ["--pp_size", str(pp)]
    return [*args, "--extra_llm_api_options", "/etc/trtllm/extra-llm-api-options.yaml"]


def deployment(
    name: str = "trtllm",
    *,
    gpu_limit: int | str | None = 2,
    args: list[str] | None = None,
    replicas: int = 1,
    image: str = "nvcr.io/nvidia/tensorrt-llm/release:1.2.1",
    init_image: str = "nvcr.io/nvidia/tensorrt-llm/release:1.2.1",
    gateway: bool = True,
    env: list[dict] | None = None,
    labels: dict | None = None,
) -> dict:
    limits = {} if gpu_limit is None else {"nvidia.com/gpu": gpu_limit}
    server = {
        "name": "trtllm-serve",
        "image": image,
        "command": ["trtllm-serve"],
        "args": server_args() if args is None else args,
        "resources": {"limits": limits, "requests": dict(limits)},
        "env": env
        if env is not None
        else [
            {"name": "HF_HOME", "value": "/models/hf"},
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}},
        ],
    }
    containers = [server]
    if gateway:
        containers.append(
            {
                "name": "api-gateway",
                "image": "docker.io/nginxinc/nginx-unprivileged:1.30.4-alpine",
                "ports": [{"name": "gateway", "containerPort": 8080}],
            }
        )
    labels = {"app.kubernetes.io/name": "gpt-oss"} if labels is None else labels
    return {
        "type": "kubernetes:apps/v1:Deployment",
        "name": name,
        "props": {
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "initContainers": [
                            {
                                "name": "download-weights",
                                "image": init_image,
                                "command": ["python3", "-c", "print('download')"],
                            }
                        ],
                        "containers": containers,
                        "volumes": [{"name": "options", "configMap": {"name": "trtllm-options"}}],
                    },
                },
            },
        },
    }


def options_config_map(
    text: str = "tensor_parallel_size: 2\nmoe_expert_parallel_size: 2\n",
    *,
    name: str = "trtllm-options",
    extra: dict | None = None,
) -> dict:
    data = {"extra-llm-api-options.yaml": text, **(extra or {})}
    return {
        "type": "kubernetes:core/v1:ConfigMap",
        "name": name,
        "props": {"metadata": {"name": name, "namespace": NS}, "data": data},
    }


def hf_secret(token: str = HF_TOKEN) -> dict:
    return {
        "type": "kubernetes:core/v1:Secret",
        "name": "hf-token",
        "props": {
            "metadata": {"name": "hf-token", "namespace": NS},
            "data": {"token": base64.b64encode(token.encode()).decode()},
        },
    }


def gateway_keys_secret() -> dict:
    key_map = (
        "# API keys for the gateway (one line per key).\n"
        f'"~^(?i:bearer) +{API_KEY}$" "sha256:0123456789ab";\n'
    )
    return {
        "type": "kubernetes:core/v1:Secret",
        "name": "api-keys",
        "props": {
            "metadata": {"name": "api-keys", "namespace": NS},
            "stringData": {"keys.map": key_map},
        },
    }


def service(
    *,
    annotations: dict | None = None,
    target_port: Any = "gateway",
    selector: dict | None = None,
    lb_class: str | None = None,
) -> dict:
    spec: dict[str, Any] = {
        "type": "LoadBalancer",
        "selector": {"app.kubernetes.io/name": "gpt-oss"} if selector is None else selector,
        "ports": [{"name": "https", "port": 443, "targetPort": target_port}],
    }
    if lb_class:
        spec["loadBalancerClass"] = lb_class
    return {
        "type": "kubernetes:core/v1:Service",
        "name": "endpoint",
        "props": {
            "metadata": {"name": "endpoint", "namespace": NS, "annotations": annotations or {}},
            "spec": spec,
        },
    }


INTERNAL = {
    "service.beta.kubernetes.io/aws-load-balancer-internal": "true",
    "service.beta.kubernetes.io/aws-load-balancer-type": "nlb",
}


def gateway_config_map(listen: str = "listen 8443 ssl;") -> dict:
    text = f"http {{\n    server {{\n        {listen}\n        ssl_certificate /etc/nginx/tls/tls.crt;\n    }}\n}}\n"
    return {
        "type": "kubernetes:core/v1:ConfigMap",
        "name": "api-gateway-config",
        "props": {"metadata": {"name": "api-gateway-config", "namespace": NS}, "data": {"nginx.conf": text}},
    }


def compliant_stack() -> list[dict]:
    return [
        node_group(),
        launch_template(),
        deployment(),
        options_config_map(),
        gateway_config_map(),
        hf_secret(),
        gateway_keys_secret(),
        service(annotations=INTERNAL),
    ]


def check(specs: list[dict], config: dict | None = None) -> PolicyReport:
    resources = [policy_resource(s["type"], s["name"], s["props"]) for s in specs]
    return run_policies(resources, POLICIES, config)


def names(report: PolicyReport, policy: str) -> list[str]:
    return [v.resource.name if v.resource else "<stack>" for v in report.for_policy(policy)]


def test_compliant_stack_passes_every_policy():
    report = check(compliant_stack())
    assert [v.describe() for v in report.violations] == []
    assert report.undecided == []


def test_policies_have_unique_names_and_the_documented_enforcement():
    levels = {p.name: p.enforcement_level for p in POLICIES}
    assert len(levels) == len(POLICIES)
    assert {n for n, level in levels.items() if level == EnforcementLevel.ADVISORY} == {
        "gpu-cost-within-budget",
        "gpu-replicas-fit-nodes",
        "endpoint-uses-tls",
    }
    assert all(level in (EnforcementLevel.MANDATORY, EnforcementLevel.ADVISORY) for level in levels.values())


# --- gpu-node-group-tainted -------------------------------------------------------------------


def test_gpu_node_group_without_taint_is_refused():
    report = check([node_group(taints=[]), launch_template()])
    assert names(report, "gpu-node-group-tainted") == ["gpu"]
    assert report.for_policy("gpu-node-group-tainted")[0].mandatory


def test_gpu_taint_with_a_weaker_effect_is_refused_and_the_right_one_passes():
    weak = node_group(taints=[{"key": "nvidia.com/gpu", "value": "true", "effect": "PREFER_NO_SCHEDULE"}])
    assert names(check([weak]), "gpu-node-group-tainted") == ["gpu"]
    assert names(check([node_group()]), "gpu-node-group-tainted") == []


def test_cpu_node_group_needs_no_gpu_taint():
    system = node_group("system", taints=[], ami="AL2023_x86_64_STANDARD", instance_types=["m7i.large"])
    assert names(check([system]), "gpu-node-group-tainted") == []


def test_gpu_instance_type_from_the_launch_template_counts():
    # A custom AMI hides the GPU from amiType; the launch template's instance type shows it.
    template = launch_template(instance_type="p5.48xlarge")
    group = node_group(
        taints=[], ami="CUSTOM", instance_types=[], launch_template={"name": "gpu-nodes", "version": "1"}
    )
    assert names(check([template, group]), "gpu-node-group-tainted") == ["gpu"]


def test_launch_template_found_through_the_engines_property_dependencies():
    template = policy_resource(
        "aws:ec2/launchTemplate:LaunchTemplate",
        "lt",
        {"instanceType": "g6e.12xlarge", "metadataOptions": {"httpTokens": "required"}},
    )
    # During preview the template id is unknown; the engine still sends the dependency.
    group = policy_resource(
        "aws:eks/nodeGroup:NodeGroup",
        "gpu",
        {
            **node_group(taints=[], ami="CUSTOM", instance_types=[])["props"],
            "launchTemplate": {"id": UNKNOWN_STRING_VALUE, "version": "1"},
        },
        property_dependencies={"launchTemplate": [template]},
    )
    report = run_policies([template, group], POLICIES)
    assert names(report, "gpu-node-group-tainted") == ["gpu"]


# --- gpu-limit-matches-parallelism ------------------------------------------------------------


def test_gpu_limit_below_tensor_parallel_size_is_refused():
    report = check([deployment(gpu_limit=1), options_config_map()])
    violations = report.for_policy("gpu-limit-matches-parallelism")
    assert [v.resource.name for v in violations if v.resource] == ["trtllm"]
    assert "1 nvidia.com/gpu" in violations[0].message and "= 2" in violations[0].message


def test_gpu_limit_equal_to_tp_times_pp_passes_also_as_a_string():
    stack = [
        deployment(gpu_limit="4", args=server_args(tp=2, pp=2)),
        options_config_map("max_batch_size: 64\n"),
    ]
    assert names(check(stack), "gpu-limit-matches-parallelism") == []


def test_options_yaml_wins_over_the_flags():
    # Flags say 2, the options file says 4: TensorRT-LLM uses 4 ranks, so a limit of 2 fails.
    stack = [deployment(gpu_limit=2, args=server_args(tp=2)), options_config_map("tensor_parallel_size: 4\n")]
    violations = check(stack).for_policy("gpu-limit-matches-parallelism")
    assert len(violations) == 1 and "extra-llm-api-options.yaml" in violations[0].message
    stack = [deployment(gpu_limit=4, args=server_args(tp=2)), options_config_map("tensor_parallel_size: 4\n")]
    assert names(check(stack), "gpu-limit-matches-parallelism") == []


def test_server_without_a_gpu_limit_is_refused():
    assert names(
        check([deployment(gpu_limit=None), options_config_map()]), "gpu-limit-matches-parallelism"
    ) == ["trtllm"]


def test_parallel_flags_in_both_spellings():
    assert parallel_sizes_from_args(["--tp_size=4", "--pp_size", "2"]) == {"tp_size": 4, "pp_size": 2}
    assert parallel_sizes_from_args(["--tensor_parallel_size", "8"]) == {"tp_size": 8}


# --- internet-facing-lb-requires-api-key ------------------------------------------------------


def test_internal_load_balancer_may_target_any_port():
    stack = [deployment(gateway=False), options_config_map(), service(annotations=INTERNAL, target_port=8000)]
    assert names(check(stack), "internet-facing-lb-requires-api-key") == []


def test_internet_facing_load_balancer_through_the_gateway_passes():
    stack = [deployment(), options_config_map(), service(target_port="gateway")]
    assert names(check(stack), "internet-facing-lb-requires-api-key") == []
    stack = [deployment(), options_config_map(), service(target_port=8080)]  # the gateway's number
    assert names(check(stack), "internet-facing-lb-requires-api-key") == []


def test_internet_facing_load_balancer_straight_to_the_server_is_refused():
    stack = [deployment(), options_config_map(), service(target_port=8000)]
    violations = check(stack).for_policy("internet-facing-lb-requires-api-key")
    assert [v.resource.name for v in violations if v.resource] == ["endpoint"]
    assert "skip the key check" in violations[0].message


def test_scheme_annotation_makes_it_internet_facing_despite_the_internal_one():
    annotations = {**INTERNAL, "service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing"}
    stack = [deployment(), options_config_map(), service(annotations=annotations, target_port=8000)]
    assert names(check(stack), "internet-facing-lb-requires-api-key") == ["endpoint"]


def test_load_balancer_controller_default_scheme_is_internal():
    stack = [
        deployment(gateway=False),
        options_config_map(),
        service(lb_class="service.k8s.aws/nlb", target_port=8000),
    ]
    assert names(check(stack), "internet-facing-lb-requires-api-key") == []


def test_internet_facing_without_gateway_sidecar_is_refused():
    stack = [deployment(gateway=False), options_config_map(), service(target_port="gateway")]
    violations = check(stack).for_policy("internet-facing-lb-requires-api-key")
    assert len(violations) == 1 and "no 'api-gateway' container" in violations[0].message


def test_internet_facing_selector_matching_nothing_is_refused():
    stack = [deployment(), options_config_map(), service(selector={"app": "something-else"})]
    assert names(check(stack), "internet-facing-lb-requires-api-key") == ["endpoint"]


def test_unknown_namespaces_during_preview_do_not_switch_the_check_off():
    # In a preview the namespace may come from a Namespace not created yet: an unknown value.
    server = deployment()
    server["props"]["metadata"]["namespace"] = UNKNOWN_STRING_VALUE
    endpoint = service(target_port=8000)
    endpoint["props"]["metadata"]["namespace"] = UNKNOWN_STRING_VALUE
    report = check([server, options_config_map(), endpoint])
    assert names(report, "internet-facing-lb-requires-api-key") == ["endpoint"]
    assert report.undecided == []


# --- no-secret-in-plain-config ----------------------------------------------------------------


def _secret_violations(stack: list[dict], config: dict | None = None) -> list[str]:
    report = check(stack, config)
    messages = [v.message for v in report.for_policy("no-secret-in-plain-config")]
    for message in messages:  # a finding must never repeat the secret it found
        assert HF_TOKEN not in message and API_KEY not in message
    return messages


def test_hugging_face_token_in_a_config_map_is_refused():
    stack = [*compliant_stack(), options_config_map(name="leaky", extra={"token": HF_TOKEN})]
    messages = _secret_violations(stack)
    assert len(messages) == 1 and "'leaky'" in messages[0] and "data['token']" in messages[0]


def test_secret_value_as_env_literal_is_refused_even_under_an_innocent_name():
    env = [{"name": "HF_HOME", "value": "/models/hf"}, {"name": "EXTRA", "value": HF_TOKEN}]
    stack = [node_group(), deployment(env=env), options_config_map(), hf_secret()]
    messages = _secret_violations(stack)
    assert len(messages) == 1 and "env 'EXTRA'" in messages[0]


def test_gateway_api_key_from_the_key_map_secret_in_an_argument_is_refused():
    args = [*server_args(), "--api-key", API_KEY]
    stack = [deployment(args=args), options_config_map(), gateway_keys_secret()]
    messages = _secret_violations(stack)
    assert len(messages) == 1 and "one of the stack's secrets" in messages[0]
    # Without the Secret the plain key has no recognisable shape: the Secret is the reference.
    assert _secret_violations([deployment(args=args), options_config_map()]) == []


def test_stack_secrets_given_by_the_offline_runner_are_matched():
    stack = [deployment(), options_config_map(extra={"note": "sk-offline-secret-value-123"})]
    config = {"no-secret-in-plain-config": {"knownSecretValues": ["sk-offline-secret-value-123"]}}
    assert len(_secret_violations(stack, config)) == 1
    assert _secret_violations(stack) == []


@pytest.mark.parametrize(
    ("literal", "found"),
    [
        ("Authorization: Bearer abcdefghijklmnop0123", "bearer token"),
        (fake_credentials.aws_access_key_id(), "AWS access key id"),
        ("aws_secret_access_key = " + fake_credentials.aws_secret_access_key(), "AWS secret access key"),
    ],
)
def test_token_shapes_in_arguments_are_refused(literal: str, found: str):
    stack = [deployment(args=[*server_args(), literal]), options_config_map()]
    messages = _secret_violations(stack)
    assert len(messages) == 1 and found in messages[0]


def test_credential_named_env_with_a_literal_is_refused_and_secret_key_ref_passes():
    env = [{"name": "HF_TOKEN", "value": "not-shaped-like-a-token"}]
    assert len(_secret_violations([deployment(env=env), options_config_map()])) == 1
    assert _secret_violations(compliant_stack()) == []


def test_a_secret_not_known_during_preview_leaves_the_other_checks_running():
    # A Secret holding a generated password is unknown in a preview of a new stack.
    keys = gateway_keys_secret()
    keys["props"]["stringData"]["keys.map"] = UNKNOWN_STRING_VALUE
    leaky = options_config_map(name="leaky", extra={"token": HF_TOKEN})
    leaky["props"]["data"]["later"] = UNKNOWN_STRING_VALUE
    report = check([deployment(), options_config_map(), hf_secret(), keys, leaky])
    assert names(report, "no-secret-in-plain-config") == ["leaky"]
    assert report.undecided == []


def test_nginx_config_that_matches_bearer_headers_is_not_a_secret():
    conf = (
        "map $http_authorization $key_ok { default 0; include /etc/nginx/keys/keys.map; }\n"
        'if ($http_authorization !~ "^Bearer\\s+(.+)$") { return 401; }\n'
    )
    stack = [*compliant_stack(), options_config_map(name="nginx", extra={"nginx.conf": conf})]
    assert _secret_violations(stack) == []


# --- imdsv2-required --------------------------------------------------------------------------


@pytest.mark.parametrize("http_tokens", ["optional", None])
def test_launch_template_allowing_imdsv1_is_refused(http_tokens: str | None):
    report = check([launch_template(http_tokens=http_tokens)])
    violations = report.for_policy("imdsv2-required")
    assert [v.resource.name for v in violations if v.resource] == ["gpu-nodes"] and violations[0].mandatory


def test_launch_template_requiring_imdsv2_passes():
    assert names(check([launch_template(http_tokens="required")]), "imdsv2-required") == []


# --- container-images-pinned ------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        "nvcr.io/nvidia/tensorrt-llm/release",
        "nvcr.io/nvidia/tensorrt-llm/release:latest",
        "registry.local:5000/team/server",
        "nginx@sha256:1234",
    ],
)
def test_unpinned_images_are_refused(image: str):
    assert image_pin_problem(image) is not None
    assert names(check([deployment(image=image), options_config_map()]), "container-images-pinned") == [
        "trtllm"
    ]


def test_unpinned_init_container_image_is_refused():
    violations = check([deployment(init_image="python"), options_config_map()]).for_policy(
        "container-images-pinned"
    )
    assert len(violations) == 1 and "init container 'download-weights'" in violations[0].message


@pytest.mark.parametrize(
    "image",
    [
        "nvcr.io/nvidia/tensorrt-llm/release:1.2.1",
        "registry.local:5000/team/server:2024.06",
        "nvcr.io/nvidia/tensorrt-llm/release@sha256:" + "a" * 64,
    ],
)
def test_pinned_images_pass(image: str):
    assert names(check([deployment(image=image), options_config_map()]), "container-images-pinned") == []


# --- gpu-cost-within-budget (advisory) --------------------------------------------------------


def test_two_p5_nodes_exceed_the_default_budget_as_an_advisory():
    violations = check([node_group(desired=2)]).for_policy("gpu-cost-within-budget")
    [violation] = violations
    assert not violation.mandatory and "60.00 USD" in violation.message
    # Two nodes at about 55 USD an hour each (FACTS.md), named in the message.
    cost = float(re.search(r"([0-9.]+) USD an hour", violation.message).group(1))  # type: ignore[union-attr]
    assert 100 <= cost <= 120


def test_one_p5_node_fits_the_default_budget_and_a_raised_budget_fits_two():
    assert names(check([node_group(desired=1)]), "gpu-cost-within-budget") == []
    config = {"gpu-cost-within-budget": {"maxUsdPerHour": 120}}
    assert names(check([node_group(desired=2)], config), "gpu-cost-within-budget") == []


# --- endpoint-uses-tls (advisory) ---------------------------------------------------------------


def test_a_gateway_listening_in_plain_http_is_an_advisory():
    stack = [s for s in compliant_stack() if s["name"] != "api-gateway-config"]
    report = check([*stack, gateway_config_map(listen="listen 8080;")])
    [violation] = report.for_policy("endpoint-uses-tls")
    assert not violation.mandatory and "plain HTTP" in violation.message
    assert "endpointPlainHttp" in violation.message


def test_an_acm_certificate_on_the_nlb_counts_as_tls():
    stack = [s for s in compliant_stack() if s["type"] != "kubernetes:core/v1:Service"]
    acm = {
        **INTERNAL,
        "service.beta.kubernetes.io/aws-load-balancer-ssl-cert": "arn:aws:acm:us-east-1:1:certificate/x",
    }
    plain_gateway = [s for s in stack if s["name"] != "api-gateway-config"] + [
        gateway_config_map("listen 8080;")
    ]
    assert names(check([*plain_gateway, service(annotations=acm)]), "endpoint-uses-tls") == []
    # Nothing shows TLS at all: no gateway configuration, no certificate on the NLB.
    bare = [s for s in stack if s["name"] != "api-gateway-config"] + [service(annotations=INTERNAL)]
    assert names(check(bare), "endpoint-uses-tls") == ["endpoint"]


# --- gpu-replicas-fit-nodes (advisory) --------------------------------------------------------


def test_more_gpu_replicas_than_one_node_holds_is_an_advisory():
    violations = check([node_group(desired=1), deployment(replicas=5), options_config_map()]).for_policy(
        "gpu-replicas-fit-nodes"
    )
    assert len(violations) == 1 and not violations[0].mandatory
    assert "need 10 GPUs" in violations[0].message and "hold 8" in violations[0].message


def test_four_two_gpu_replicas_fit_one_p5():
    report = check([node_group(desired=1), deployment(replicas=4), options_config_map()])
    assert names(report, "gpu-replicas-fit-nodes") == []


def test_capacity_of_an_instance_type_without_known_gpu_count_is_not_guessed():
    report = check(
        [node_group(instance_types=["g6e.12xlarge"]), deployment(replicas=5), options_config_map()]
    )
    assert names(report, "gpu-replicas-fit-nodes") == []
    assert "gpu-replicas-fit-nodes" in [name for name, _ in report.not_applicable]


@pytest.mark.parametrize(
    ("instance_type", "gpu"),
    [
        ("p5.48xlarge", True),
        ("p4d.24xlarge", True),
        ("p6-b200.48xlarge", True),
        ("g6e.12xlarge", True),
        ("gr6.4xlarge", True),
        ("g4ad.xlarge", False),
        ("inf2.xlarge", False),
        ("trn1.32xlarge", False),
        ("m7i.large", False),
    ],
)
def test_gpu_instance_families(instance_type: str, gpu: bool):
    assert is_gpu_instance_type(instance_type) is gpu


def test_without_gpu_node_groups_the_capacity_policy_does_not_apply():
    report = check([deployment(replicas=5), options_config_map()])
    assert names(report, "gpu-replicas-fit-nodes") == []
    assert "gpu-replicas-fit-nodes" in [name for name, _ in report.not_applicable]


# --- The real PolicyPack, over gRPC, as the Pulumi engine drives it ---------------------------


def _struct(props: dict) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(props)
    return struct


def _secret(value: Any) -> dict:
    # Pulumi's wire form of a secret property value (sig key -> secret sig).
    return {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", "value": value}


@pytest.fixture(scope="module")
def analyzer() -> Any:
    """policy/__main__.py started the way pulumi's policy host starts it (`python -m pulumi.policy
    <engine> <pack dir>`): it prints the gRPC port, then serves until stopped."""
    env = {**os.environ, "PYTHONPATH": ""}
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:0", str(ROOT / "policy")],
        cwd=ROOT / "policy",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        deadline = time.monotonic() + 30
        line = b""
        while time.monotonic() < deadline and not line:
            line = process.stdout.readline()
            if process.poll() is not None:
                break
        if not line.strip().isdigit():
            process.kill()
            pytest.fail(f"policy pack did not start: {line!r} {process.stderr.read().decode()[-2000:]}")
        channel = grpc.insecure_channel(f"127.0.0.1:{int(line)}")
        grpc.channel_ready_future(channel).result(timeout=10)
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def test_policy_pack_declares_every_policy_with_its_level(analyzer: Any):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=10)
    declared = {p.name: p.enforcementLevel for p in info.policies}
    expected = {
        p.name: (
            analyzer_pb2.MANDATORY
            if p.enforcement_level == EnforcementLevel.MANDATORY
            else analyzer_pb2.ADVISORY
        )
        for p in POLICIES
    }
    assert declared == expected
    budget_schema = next(p for p in info.policies if p.name == "gpu-cost-within-budget").configSchema
    assert "maxUsdPerHour" in budget_schema.properties


def test_policy_pack_over_grpc_catches_a_secret_marked_token_in_a_config_map(analyzer: Any):
    leaky = options_config_map(name="leaky")
    leaky["props"]["data"]["token"] = _secret(HF_TOKEN)  # as the engine sends a secret input
    resources = [
        analyzer_pb2.AnalyzerResource(
            type=s["type"],
            name=s["name"],
            urn=f"urn:pulumi:prod::p::{s['type']}::{s['name']}",
            properties=_struct(s["props"]),
        )
        for s in [*compliant_stack(), leaky]
    ]
    response = analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=resources), timeout=30)
    found = [(d.policyName, d.urn) for d in response.diagnostics]
    assert found == [("no-secret-in-plain-config", "urn:pulumi:prod::p::kubernetes:core/v1:ConfigMap::leaky")]
    assert all(HF_TOKEN not in d.message for d in response.diagnostics)


def test_policy_pack_over_grpc_refuses_an_unpinned_image(analyzer: Any):
    spec = deployment(image="nvcr.io/nvidia/tensorrt-llm/release:latest")
    # The program's Deployment spec is secret as a whole (it carries a secret-derived value):
    # the pack must still see inside it.
    spec["props"]["spec"] = _secret(spec["props"]["spec"])
    request = analyzer_pb2.AnalyzeRequest(
        type=spec["type"],
        name="trtllm",
        urn="urn:pulumi:prod::p::d::trtllm",
        properties=_struct(spec["props"]),
    )
    response = analyzer.Analyze(request, timeout=30)
    assert [(d.policyName, d.enforcementLevel) for d in response.diagnostics] == [
        ("container-images-pinned", analyzer_pb2.MANDATORY)
    ]
    pinned = deployment()
    request = analyzer_pb2.AnalyzeRequest(
        type=pinned["type"],
        name="trtllm",
        urn="urn:pulumi:prod::p::d::trtllm",
        properties=_struct(pinned["props"]),
    )
    assert list(analyzer.Analyze(request, timeout=30).diagnostics) == []


def test_a_loopback_status_listener_beside_the_tls_one_is_not_plain_http():
    stack = [s for s in compliant_stack() if s["name"] != "api-gateway-config"]
    status = gateway_config_map("listen 8443 ssl;\n        listen 127.0.0.1:8081;")
    assert names(check([*stack, status]), "endpoint-uses-tls") == []
    exposed = gateway_config_map("listen 8443 ssl;\n        listen 8081;")
    assert names(check([*stack, exposed]), "endpoint-uses-tls") == ["endpoint"]


def test_an_autoscaled_group_is_held_to_the_budget_at_its_maximum():
    group = node_group(desired=1)
    group["props"]["scalingConfig"] = {"desiredSize": 1, "minSize": 1, "maxSize": 2}
    [violation] = check([group]).for_policy("gpu-cost-within-budget")
    assert "at most 2 x p5.48xlarge" in violation.message and "gpuNodeMaxCount" in violation.message
    # A group held at 0 nodes (a Capacity Block before its window) costs nothing yet.
    waiting = node_group(desired=0)
    waiting["props"]["scalingConfig"] = {"desiredSize": 0, "minSize": 0, "maxSize": 1}
    assert names(check([waiting]), "gpu-cost-within-budget") == []

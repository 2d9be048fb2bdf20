"""The serving workload inside the real program (run offline): token path, endpoint, outputs."""

from __future__ import annotations

import json

import yaml

from tests.support.stack_harness import FAKE_HF_TOKEN, plan, run

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SECRET = "kubernetes:core/v1:Secret"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
SERVICE = "kubernetes:core/v1:Service"


def pod_spec(result):
    return result.one(DEPLOYMENT, "gpt-oss-server").inputs["spec"]["template"]["spec"]


def containers(result):
    spec = pod_spec(result)
    return {c["name"]: c for c in spec["initContainers"] + spec["containers"]}


def test_hf_token_reaches_the_secret_as_a_pulumi_secret():
    result = plan()
    secret = result.one(SECRET, "gpt-oss-hf-token")
    assert secret.is_secret_input("stringData.HF_TOKEN")
    assert secret.inputs["stringData"]["HF_TOKEN"] == FAKE_HF_TOKEN
    assert secret.redacted_inputs()["stringData"] == "[secret]"


def test_hf_token_never_appears_outside_secrets():
    result = plan()
    for resource in result.resources:
        if resource.type == SECRET or resource.type.startswith("aws:secretsmanager"):
            continue
        assert FAKE_HF_TOKEN not in json.dumps(resource.inputs), f"{resource.type} {resource.name}"
    for config_map in result.of_type(CONFIG_MAP):
        assert FAKE_HF_TOKEN not in json.dumps(config_map.inputs["data"])
    for name, container in containers(result).items():
        assert FAKE_HF_TOKEN not in " ".join(container.get("command", []) + container.get("args", [])), name
        for var in container.get("env", []):
            assert var.get("value") != FAKE_HF_TOKEN
    assert FAKE_HF_TOKEN not in json.dumps(result.outputs)


def test_only_the_download_step_reads_the_token_and_through_secret_key_ref():
    by_name = containers(plan())
    env = {var["name"]: var for var in by_name["download-weights"]["env"]}
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}},
    }
    # The server runs the model repository's code offline: no credential of any kind.
    for name, container in by_name.items():
        if name != "download-weights":
            assert "HF_TOKEN" not in {var["name"] for var in container.get("env", [])}, name
            assert not container.get("envFrom"), name


def test_secrets_manager_copy_is_encrypted_with_the_stacks_kms_key():
    result = run(config={"hfTokenInSecretsManager": True})
    secret = result.one("aws:secretsmanager/secret:Secret")
    key = result.one("aws:kms/key:Key")  # the cluster's key: no second key is created
    assert secret.inputs["kmsKeyId"] == key.state["arn"]
    version = result.one("aws:secretsmanager/secretVersion:SecretVersion")
    assert version.is_secret_input("secretString")
    assert version.inputs["secretString"] == FAKE_HF_TOKEN
    assert not plan().of_type("aws:secretsmanager/secret:Secret")  # only when asked


def test_secrets_manager_copy_on_an_existing_cluster_gets_its_own_kms_key():
    result = run(
        config={
            "hfTokenInSecretsManager": True,
            "endpointSourceRanges": ["10.0.0.0/8"],
            "autoscaling": False,
        },
        secrets={"kubeconfig": "apiVersion: v1\nkind: Config\n"},
    )
    key = result.one("aws:kms/key:Key")
    assert key.inputs["enableKeyRotation"] is True
    assert result.one("aws:secretsmanager/secret:Secret").inputs["kmsKeyId"] == key.state["arn"]


def test_options_file_and_command_line_are_the_rendered_runtime():
    result = plan()
    options = yaml.safe_load(
        result.one(CONFIG_MAP, "gpt-oss-trtllm-options").inputs["data"]["extra-llm-api-options.yaml"]
    )
    assert options["max_batch_size"] == 64 and options["kv_cache_config"]["free_gpu_memory_fraction"] == 0.8
    server = containers(result)["trtllm-serve"]
    assert "command" not in server  # the image's entrypoint runs, then execs these arguments
    command = server["args"]
    assert command[:2] == ["trtllm-serve", "openai/gpt-oss-120b"]
    assert command[-2:] == ["--extra_llm_api_options", "/etc/trtllm/extra-llm-api-options.yaml"]


def test_a_runtime_override_from_the_stack_changes_the_file_and_rolls_the_pods():
    base = plan()
    changed = run(config={"trtllmOptions": {"kv_cache_config": {"free_gpu_memory_fraction": 0.85}}})
    options = yaml.safe_load(
        changed.one(CONFIG_MAP, "gpt-oss-trtllm-options").inputs["data"]["extra-llm-api-options.yaml"]
    )
    assert options["kv_cache_config"]["free_gpu_memory_fraction"] == 0.85

    def checksum(result):
        return result.one(DEPLOYMENT, "gpt-oss-server").inputs["spec"]["template"]["metadata"]["annotations"][
            "gpt-oss.serving/config-checksum"
        ]

    assert checksum(changed) != checksum(base)
    assert checksum(run()) == checksum(base)  # deterministic: the same settings, the same pods


def test_gpus_replicas_and_packing_follow_the_settings():
    # prod runs 4 replicas; a stack that says 2 gets 2, each still on 2 GPUs.
    assert plan().one(DEPLOYMENT, "gpt-oss-server").inputs["spec"]["replicas"] == 4
    result = run(config={"replicas": 2})
    assert result.one(DEPLOYMENT, "gpt-oss-server").inputs["spec"]["replicas"] == 2
    server = containers(result)["trtllm-serve"]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "2"
    # Four such replicas must fit one p5.48xlarge (FACTS.md: 192 vCPU, 2 TiB, 8 GPUs).
    cpu = int(server["resources"]["requests"]["cpu"])
    memory = int(server["resources"]["requests"]["memory"].removesuffix("Gi"))
    assert 4 * cpu <= 192 and 4 * memory <= 2048


def test_endpoint_is_an_internal_nlb_limited_to_the_vpc_by_default():
    service = plan().one(SERVICE, "gpt-oss-endpoint").inputs
    assert (
        service["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-scheme"]
        == "internal"
    )
    assert service["spec"]["loadBalancerSourceRanges"] == ["10.42.0.0/16"]
    assert service["spec"]["ports"][0]["targetPort"] == "gateway"


def test_internet_facing_only_when_asked_and_still_behind_the_key_check():
    result = run(config={"endpointScheme": "internet-facing", "endpointSourceRanges": ["198.51.100.0/24"]})
    service = result.one(SERVICE, "gpt-oss-endpoint").inputs
    assert "service.beta.kubernetes.io/aws-load-balancer-internal" not in service["metadata"]["annotations"]
    assert service["spec"]["loadBalancerSourceRanges"] == ["198.51.100.0/24"]
    assert service["spec"]["ports"][0]["targetPort"] == "gateway"
    assert "api-gateway" in containers(result)


def test_api_key_is_generated_put_in_a_secret_and_exported_as_a_secret():
    result = plan()
    password = result.one("random:index/randomPassword:RandomPassword", "gpt-oss-api-key")
    assert password.inputs["length"] >= 32 and password.inputs["special"] is False
    keys = result.one(SECRET, "gpt-oss-api-gateway-keys")
    assert keys.is_secret_input("stringData")
    assert "apiKey" in result.secret_outputs
    assert result.outputs["apiKey"] in keys.inputs["stringData"]["api-keys.map"]
    nginx_conf = result.one(CONFIG_MAP, "gpt-oss-api-gateway-config").inputs["data"]["nginx.conf"]
    assert result.outputs["apiKey"] not in nginx_conf


def test_outputs_app_teams_consume():
    outputs = plan().outputs
    endpoint = str(outputs["endpoint"])
    assert endpoint.startswith("https://") and endpoint.endswith("/v1")
    assert outputs["model"] == "openai/gpt-oss-120b"
    assert outputs["namespace"] == "gpt-oss" and outputs["serviceName"] == "gpt-oss"
    assert outputs["clusterName"]


def test_existing_cluster_gets_the_same_workload_on_its_gpu_nodes():
    result = plan("existing-cluster")
    spec = pod_spec(result)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert result.one(SERVICE, "gpt-oss-endpoint").inputs["spec"]["loadBalancerSourceRanges"] == [
        "10.0.0.0/8"
    ]
    assert result.outputs["model"] == "openai/gpt-oss-120b"


def test_deployment_spec_stays_readable_in_previews():
    # A secret anywhere in the spec would hide the whole spec as [secret] in PR previews.
    deployment = plan().one(DEPLOYMENT, "gpt-oss-server")
    assert not deployment.is_secret_input("spec")
    assert deployment.redacted_inputs()["spec"]["replicas"] == 4


def test_the_pods_network_policy_is_registered_and_enforced_by_the_vpc_cni():
    result = plan()
    policy = result.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", "gpt-oss-network-policy").inputs
    pod_labels = result.one(DEPLOYMENT, "gpt-oss-server").inputs["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    # Clients from the endpoint's source ranges (here the VPC, the default) and the VPC's nodes.
    ingress, metrics = policy["spec"]["ingress"]
    assert [peer["ipBlock"]["cidr"] for peer in ingress["from"]] == ["10.42.0.0/16"]
    assert metrics["ports"] == [{"protocol": "TCP", "port": 9109}]
    # Kubernetes accepts a NetworkPolicy that nothing enforces: the VPC CNI's agent must be on.
    cni = next(a for a in result.of_type("aws:eks/addon:Addon") if a.inputs["addonName"] == "vpc-cni")
    assert json.loads(cni.inputs["configurationValues"]) == {"enableNetworkPolicy": "true"}
    # An existing cluster's nodes are unknown to the stack: only the given ranges get in.
    byo = plan("existing-cluster").one("kubernetes:networking.k8s.io/v1:NetworkPolicy").inputs
    assert [peer["ipBlock"]["cidr"] for peer in byo["spec"]["ingress"][0]["from"]] == ["10.0.0.0/8"]


def test_a_new_model_revision_rolls_the_pods_and_reaches_download_and_server():
    revision = "fedcba9876543210fedcba9876543210fedcba98"
    changed = run(config={"modelRevision": revision})

    def checksum(result):
        annotations = result.one(DEPLOYMENT, "gpt-oss-server").inputs["spec"]["template"]["metadata"][
            "annotations"
        ]
        return annotations["gpt-oss.serving/config-checksum"]

    assert checksum(changed) != checksum(plan())
    options = yaml.safe_load(
        changed.one(CONFIG_MAP, "gpt-oss-trtllm-options").inputs["data"]["extra-llm-api-options.yaml"]
    )
    assert options["revision"] == revision
    assert repr(revision) in containers(changed)["download-weights"]["command"][-1]

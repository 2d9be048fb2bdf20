"""The stack's AWS platform, from the real __main__.py under Pulumi mocks: what users rely on."""

from __future__ import annotations

import ipaddress
import json

import pytest

from components.device_plugin import DEVICE_PLUGIN_IMAGE
from components.gpu_nodes import AL2023_RAID_MOUNT
from offline import mocks
from serving.config.settings import SettingsError
from tests.support.stack_harness import (
    FAKE_KUBECONFIG,
    by_name_suffix,
    kubeconfig_of_provider,
    node_config,
    plan,
    run,
    user_data_parts,
)

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
SUBNET = "aws:ec2/subnet:Subnet"
DAEMONSET = "kubernetes:apps/v1:DaemonSet"
DEVICE_PLUGIN = "nvidia-device-plugin-daemonset"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def gpu_node_group(variant: str = "prod"):
    return by_name_suffix(plan(variant), NODE_GROUP, "gpu-nodes-node-group")


def gpu_launch_template(variant: str = "prod"):
    return by_name_suffix(plan(variant), LAUNCH_TEMPLATE, "gpu-nodes-launch-template")


def subnets_by_role(variant: str = "prod") -> dict[str, dict[str, dict]]:
    roles: dict[str, dict[str, dict]] = {"public": {}, "private": {}}
    for subnet in plan(variant).of_type(SUBNET):
        tags = subnet.inputs["tags"]
        role = "public" if tags.get("kubernetes.io/role/elb") == "1" else "private"
        assert (role == "private") == (tags.get("kubernetes.io/role/internal-elb") == "1")
        roles[role][subnet.inputs["availabilityZone"]] = subnet.inputs | {"id": subnet.id}
    return roles


# --- network ---------------------------------------------------------------------------------


def test_vpc_has_a_public_and_a_private_subnet_in_each_of_two_zones():
    roles = subnets_by_role()
    assert sorted(roles["public"]) == sorted(roles["private"]) == ["us-east-1a", "us-east-1b"]
    vpc = plan().one("aws:ec2/vpc:Vpc").inputs
    network = ipaddress.IPv4Network(vpc["cidrBlock"])
    cidrs = [ipaddress.IPv4Network(s["cidrBlock"]) for r in roles.values() for s in r.values()]
    assert all(c.subnet_of(network) for c in cidrs)
    assert not any(a.overlaps(b) for i, a in enumerate(cidrs) for b in cidrs[i + 1 :])
    for subnet in [*roles["public"].values(), *roles["private"].values()]:
        assert subnet["tags"]["kubernetes.io/cluster/gpt-oss-prod"] == "shared"
        assert subnet["mapPublicIpOnLaunch"] is False


def test_private_subnets_reach_the_internet_through_a_nat_gateway_in_their_own_zone():
    result = plan()
    roles = subnets_by_role()
    nats = {n.id: n.inputs for n in result.of_type("aws:ec2/natGateway:NatGateway")}
    public_zone_of = {s["id"]: zone for zone, s in roles["public"].items()}
    for zone in roles["private"]:
        table = by_name_suffix(result, "aws:ec2/routeTable:RouteTable", f"private-{zone}")
        (route,) = table.inputs["routes"]
        assert route["cidrBlock"] == "0.0.0.0/0"
        assert public_zone_of[nats[route["natGatewayId"]]["subnetId"]] == zone


def test_capacity_block_zone_is_always_among_the_vpc_zones():
    assert sorted(subnets_by_role("capacity-block")["private"]) == ["us-east-1a", "us-east-1c"]


def test_availability_zone_count_sets_the_number_of_zones():
    assert len(subnets_by_role("three-zones-admins")["private"]) == 3
    assert len(gpu_node_group("three-zones-admins").inputs["subnetIds"]) == 3


# --- cluster ---------------------------------------------------------------------------------


def test_cluster_uses_access_entries_kms_encrypted_secrets_and_audit_logs():
    result = plan()
    cluster = result.one("aws:eks/cluster:Cluster").inputs
    key = result.one("aws:kms/key:Key")
    assert cluster["name"] == "gpt-oss-prod" and cluster["version"] == "1.35"
    assert cluster["upgradePolicy"] == {"supportType": "STANDARD"}  # never the API's EXTENDED default
    assert cluster["accessConfig"] == {
        "authenticationMode": "API",
        "bootstrapClusterCreatorAdminPermissions": True,
    }
    encryption = cluster["encryptionConfig"]
    assert encryption["resources"] == ["secrets"]
    assert encryption["provider"]["keyArn"] == key.state["arn"]
    assert key.inputs["enableKeyRotation"] is True
    assert {"api", "audit", "authenticator"} <= set(cluster["enabledClusterLogTypes"])
    vpc = cluster["vpcConfig"]
    assert vpc["endpointPrivateAccess"] is True
    assert vpc["publicAccessCidrs"] == ["0.0.0.0/0"]
    private_ids = {s["id"] for s in subnets_by_role()["private"].values()}
    assert private_ids <= set(vpc["subnetIds"])


def test_no_public_api_endpoint_when_no_cidr_may_reach_it():
    vpc = plan("three-zones-admins").one("aws:eks/cluster:Cluster").inputs["vpcConfig"]
    assert vpc["endpointPublicAccess"] is False
    assert "publicAccessCidrs" not in vpc


def test_admin_roles_get_an_access_entry_with_the_cluster_admin_policy():
    result = plan("three-zones-admins")
    role = "arn:aws:iam::123456789012:role/platform-admins"
    (entry,) = result.of_type("aws:eks/accessEntry:AccessEntry")
    (association,) = result.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    assert entry.inputs["principalArn"] == role and entry.inputs["type"] == "STANDARD"
    assert association.inputs["principalArn"] == role
    assert association.inputs["policyArn"].endswith(
        ":eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
    )
    assert association.inputs["accessScope"] == {"type": "cluster"}
    assert entry.urn in association.dependencies
    assert plan().of_type("aws:eks/accessEntry:AccessEntry") == []


def test_managed_addons_are_ordered_around_the_nodes():
    result = plan()
    addons = {a.inputs["addonName"]: a for a in result.of_type("aws:eks/addon:Addon")}
    # kube-state-metrics is the metrics store's (metricsStore managed-prometheus, the default).
    assert set(addons) == {"vpc-cni", "kube-proxy", "eks-pod-identity-agent", "coredns", "kube-state-metrics"}
    system = by_name_suffix(result, NODE_GROUP, "system-nodes-node-group")
    gpu = gpu_node_group()
    for networking in ("vpc-cni", "kube-proxy"):
        assert addons[networking].urn in gpu.dependencies
        assert addons[networking].urn in system.dependencies
    assert system.urn in addons["coredns"].dependencies
    assert system.urn in addons["kube-state-metrics"].dependencies  # a Deployment: it needs nodes
    assert result.one("aws:eks/cluster:Cluster").inputs["bootstrapSelfManagedAddons"] is False


# --- GPU nodes -------------------------------------------------------------------------------


def test_gpu_node_group_is_a_tainted_p5_group_on_the_nvidia_ami_sized_by_the_autoscaling_range():
    group = gpu_node_group().inputs
    assert group["instanceTypes"] == ["p5.48xlarge"]
    assert group["amiType"] == "AL2023_x86_64_NVIDIA"
    assert group["capacityType"] == "ON_DEMAND"
    # Prod autoscales between 1 and 2 nodes (Pulumi.prod.yaml), starting at gpuNodeCount.
    assert group["scalingConfig"] == {"desiredSize": 1, "minSize": 1, "maxSize": 2}
    assert group["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
    # cluster-autoscaler's GPU label: a new node counts as a GPU node before the plugin reports.
    assert group["labels"] == {
        "nvidia.com/gpu.present": "true",
        "k8s.amazonaws.com/accelerator": "nvidia-h100",
    }
    fixed = run(config={"autoscaling": False}).one("aws:eks/nodeGroup:NodeGroup", "gpu-nodes-node-group")
    assert fixed.inputs["scalingConfig"] == {"desiredSize": 1, "minSize": 1, "maxSize": 1}
    assert fixed.inputs["labels"] == {"nvidia.com/gpu.present": "true"}
    assert group["nodeGroupName"] == "gpt-oss-prod-gpu"
    assert group["launchTemplate"]["id"] == gpu_launch_template().id
    private_ids = sorted(s["id"] for s in subnets_by_role()["private"].values())
    assert sorted(group["subnetIds"]) == private_ids


def test_gpu_launch_template_requires_imdsv2_and_an_encrypted_sized_root_volume():
    template = gpu_launch_template().inputs
    assert template["metadataOptions"]["httpTokens"] == "required"
    assert template["metadataOptions"]["httpPutResponseHopLimit"] == 1
    (volume,) = template["blockDeviceMappings"]
    assert volume["deviceName"] == "/dev/xvda"
    assert volume["ebs"]["volumeSize"] == 200
    assert volume["ebs"]["volumeType"] == "gp3"
    assert volume["ebs"]["encrypted"] == "true"
    assert "instanceMarketOptions" not in template


def test_gpu_nodes_assemble_local_nvme_as_raid0_and_the_weights_cache_lives_there():
    config = node_config(gpu_launch_template())
    assert config["apiVersion"] == "node.eks.aws/v1alpha1" and config["kind"] == "NodeConfig"
    assert config["spec"] == {"instance": {"localStorage": {"strategy": "RAID0"}}}
    deployment = plan().one(DEPLOYMENT).inputs
    host_paths = [
        v["hostPath"]["path"] for v in deployment["spec"]["template"]["spec"]["volumes"] if "hostPath" in v
    ]
    assert host_paths and all(p.startswith(AL2023_RAID_MOUNT + "/") for p in host_paths)


def test_root_volume_size_follows_the_setting():
    result = run(config={"gpuRootVolumeGiB": 400})
    template = by_name_suffix(result, LAUNCH_TEMPLATE, "gpu-nodes-launch-template").inputs
    assert template["blockDeviceMappings"][0]["ebs"]["volumeSize"] == 400


def test_capacity_block_targets_the_reservation_in_its_zone():
    template = gpu_launch_template("capacity-block").inputs
    group = gpu_node_group("capacity-block").inputs
    assert template["instanceMarketOptions"] == {"marketType": "capacity-block"}
    assert template["capacityReservationSpecification"] == {
        "capacityReservationTarget": {"capacityReservationId": "cr-0123456789abcdef0"}
    }
    # The instance type moves into the launch template; the node group must not repeat it.
    assert template["instanceType"] == "p5.48xlarge" and "instanceTypes" not in group
    assert group["capacityType"] == "CAPACITY_BLOCK"
    assert group["subnetIds"] == [subnets_by_role("capacity-block")["private"]["us-east-1c"]["id"]]


def test_spot_uses_the_node_group_capacity_type_without_market_options():
    template = gpu_launch_template("spot").inputs
    assert gpu_node_group("spot").inputs["capacityType"] == "SPOT"
    assert "instanceMarketOptions" not in template and "capacityReservationSpecification" not in template


def test_h200_instances_flow_through_and_have_no_price_claim():
    result = plan("h200")
    assert gpu_node_group("h200").inputs["instanceTypes"] == ["p5e.48xlarge"]
    assert result.outputs["gpuInstanceType"] == "p5e.48xlarge"
    # FACTS.md has no checked p5e price: the stack must not invent one.
    assert "gpuOnDemandUsdPerHour" not in result.outputs
    # FACTS.md: about 55 USD an hour for one p5.48xlarge on demand in us-east-1.
    assert 50 <= float(str(plan().outputs["gpuOnDemandUsdPerHour"])) <= 60


def test_bottlerocket_gets_ephemeral_storage_settings_and_no_extra_device_plugin():
    result = plan("bottlerocket")
    template = gpu_launch_template("bottlerocket").inputs
    toml = user_data_parts(gpu_launch_template("bottlerocket"))["toml"]
    assert "[settings.bootstrap-commands.k8s-ephemeral-storage]" in toml
    assert '"ephemeral-storage", "init"' in toml and '"/var/lib/containerd"' in toml
    assert template["blockDeviceMappings"][0]["deviceName"] == "/dev/xvdb"
    assert gpu_node_group("bottlerocket").inputs["amiType"] == "BOTTLEROCKET_x86_64_NVIDIA"
    assert DEVICE_PLUGIN not in [r.name for r in result.of_type(DAEMONSET)]


def test_system_node_group_is_small_untainted_and_on_demand():
    group = by_name_suffix(plan(), NODE_GROUP, "system-nodes-node-group").inputs
    assert group["instanceTypes"] == ["m7i.large"]
    assert group["amiType"] == "AL2023_x86_64_STANDARD" and group["capacityType"] == "ON_DEMAND"
    assert group["scalingConfig"]["desiredSize"] == 2
    assert "taints" not in group
    template = by_name_suffix(plan(), LAUNCH_TEMPLATE, "system-nodes-launch-template").inputs
    assert template["metadataOptions"]["httpTokens"] == "required"


def test_nodes_get_only_the_managed_policies_they_need():
    attached = {
        a.inputs["policyArn"].rsplit("/", 1)[-1]
        for a in plan().of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if a.name.startswith("cluster-node-role-")
    }
    # FACTS.md: AWS names AmazonEC2ContainerRegistryPullOnly for pulling images, and recommends
    # the VPC CNI's policy on the CNI's own role, not on the node role.
    assert attached == {"AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryPullOnly"}


def test_the_vpc_cni_gets_its_policy_through_its_own_pod_identity_role():
    result = plan()
    role = result.one("aws:iam/role:Role", "cluster-vpc-cni-role")
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "pods.eks.amazonaws.com"}]
    assert set(trust[0]["Action"]) == {"sts:AssumeRole", "sts:TagSession"}
    attachment = result.one(
        "aws:iam/rolePolicyAttachment:RolePolicyAttachment", "cluster-vpc-cni-role-policy"
    )
    assert attachment.inputs["policyArn"].endswith(":policy/AmazonEKS_CNI_Policy")
    assert attachment.inputs["role"] == role.state["name"]
    cni = next(a for a in result.of_type("aws:eks/addon:Addon") if a.inputs["addonName"] == "vpc-cni")
    assert cni.inputs["podIdentityAssociations"] == [
        {"roleArn": role.state["arn"], "serviceAccount": "aws-node"}
    ]
    addons = {a.inputs["addonName"] for a in result.of_type("aws:eks/addon:Addon")}
    assert "eks-pod-identity-agent" in addons  # what hands the role's credentials to the pods


def test_the_deploying_role_gets_no_second_access_entry():
    # The deploying identity is cluster admin already (bootstrap creator permissions); listing
    # it in clusterAdminRoleArns too must not create a duplicate entry, which EKS refuses.
    deploying = "arn:aws:iam::123456789012:role/<deploying-role>"
    other = "arn:aws:iam::123456789012:role/platform-admins"
    result = run(config={"clusterAdminRoleArns": [deploying, other]})
    principals = [e.inputs["principalArn"] for e in result.of_type("aws:eks/accessEntry:AccessEntry")]
    assert principals == [other]


# --- Kubernetes side ---------------------------------------------------------------------------


def test_device_plugin_runs_on_every_gpu_node_and_only_there():
    result = plan()
    daemon_set = result.one(DAEMONSET, DEVICE_PLUGIN)
    pod = daemon_set.inputs["spec"]["template"]["spec"]
    group = gpu_node_group().inputs
    (container,) = pod["containers"]
    assert container["image"] == DEVICE_PLUGIN_IMAGE
    assert not container["image"].endswith(":latest")
    assert pod["nodeSelector"].items() <= group["labels"].items()
    taint = group["taints"][0]
    assert {"key": taint["key"], "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["priorityClassName"] == "system-node-critical"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    (volume,) = pod["volumes"]
    assert volume["hostPath"]["path"] == "/var/lib/kubelet/device-plugins"
    assert gpu_node_group().urn in daemon_set.dependencies


def test_the_workload_tolerates_the_gpu_taint_and_waits_for_gpu_nodes_and_device_plugin():
    result = plan()
    deployment = result.one(DEPLOYMENT)
    pod = deployment.inputs["spec"]["template"]["spec"]
    group = gpu_node_group().inputs
    assert pod["nodeSelector"].items() <= group["labels"].items()
    assert any(
        t.get("key") == "nvidia.com/gpu" and t.get("effect") == "NoSchedule" for t in pod["tolerations"]
    )
    assert gpu_node_group().urn in deployment.dependencies
    assert result.one(DAEMONSET, DEVICE_PLUGIN).urn in deployment.dependencies


def test_every_kubernetes_object_goes_through_the_cluster_provider_with_a_secret_kubeconfig():
    result = plan()
    provider = result.one("pulumi:providers:kubernetes")
    assert provider.is_secret_input("kubeconfig")
    kubeconfig = kubeconfig_of_provider(result)
    assert "get-token" in kubeconfig and "gpt-oss-prod" in kubeconfig
    assert result.one("aws:eks/cluster:Cluster").state["endpoint"] in kubeconfig
    for resource in result.resources:
        if resource.type.startswith("kubernetes:"):
            assert resource.provider == f"{provider.urn}::{provider.id}", resource.name


# --- bring your own cluster --------------------------------------------------------------------


def test_existing_cluster_creates_nothing_on_aws_and_uses_the_given_kubeconfig():
    result = plan("existing-cluster")
    assert [r.type for r in result.resources if r.type.startswith("aws:")] == []
    assert result.of_type(DAEMONSET) == []
    provider = result.one("pulumi:providers:kubernetes")
    assert provider.is_secret_input("kubeconfig")
    assert provider.inputs["kubeconfig"] == FAKE_KUBECONFIG
    assert result.outputs["clusterName"] == "team-gpu-cluster"
    assert "kubeconfig" not in result.outputs and "gpuNodeGroupName" not in result.outputs
    pod = result.one(DEPLOYMENT).inputs["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


# --- outputs -----------------------------------------------------------------------------------


def test_outputs_app_teams_need_with_secrets_marked():
    result = plan()
    for key in (
        "endpoint",
        "model",
        "apiKey",
        "clusterName",
        "namespace",
        "serviceName",
        "region",
        "kubeconfig",
        "gpuNodeGroupName",
    ):
        assert key in result.outputs, key
    assert result.secret_outputs >= {"apiKey", "kubeconfig"}
    assert result.outputs["model"] == "openai/gpt-oss-120b"
    assert result.outputs["clusterName"] == "gpt-oss-prod"
    assert result.outputs["region"] == "us-east-1"
    assert result.outputs["gpuNodeGroupName"] == gpu_node_group().state["nodeGroupName"]
    assert str(result.outputs["endpoint"]).startswith("https://<nlb-of-")


# --- settings errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "key", "hint"),
    [
        ({"gpuNodeCount": 0}, "gpuNodeCount", "only for a CAPACITY_BLOCK stack"),
        ({"gpuCapacityType": "CAPACITY_BLOCK"}, "capacityReservationId", "cr-"),
        ({"gpuCapacityType": "RESERVED"}, "gpuCapacityType", "CAPACITY_BLOCK"),
        ({"replicas": 5}, "replicas", "at most 4 replicas"),
        ({"kubernetesVersion": "1.20"}, "kubernetesVersion", "1.34"),
    ],
)
def test_bad_settings_fail_before_any_resource_with_the_key_named(config, key, hint):
    with pytest.raises(SettingsError) as raised:
        run(config=config)
    message = str(raised.value)
    assert f"gpt-oss-trtllm:{key}" in message and hint in message
    assert "resources registered before the error: 0" in raised.value.__notes__


def test_reservation_zone_the_region_does_not_offer_is_a_settings_error():
    with pytest.raises(SettingsError) as raised:
        run(
            config={
                "gpuCapacityType": "CAPACITY_BLOCK",
                "capacityReservationId": "cr-0123456789abcdef0",
                "capacityReservationZone": "us-east-1z",
            }
        )
    assert "capacityReservationZone" in str(raised.value) and "us-east-1z" in str(raised.value)
    assert "resources registered before the error: 0" in raised.value.__notes__


def test_device_plugin_holds_no_api_token_and_no_network_access():
    result = plan()
    daemon_set = result.one(DAEMONSET, DEVICE_PLUGIN)
    pod = daemon_set.inputs["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    policy = next(
        p
        for p in result.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
        if p.inputs["metadata"]["namespace"] == "kube-system"
    ).inputs["spec"]
    template_labels = daemon_set.inputs["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= template_labels.items()
    # Both directions governed and no rule allowing anything: all traffic denied.
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert not policy.get("ingress") and not policy.get("egress")


def test_gpu_nodes_update_without_surging_and_are_repaired():
    group = gpu_node_group().inputs
    # MINIMAL: an update replaces nodes in place instead of launching extra p5 first, so the
    # quota for gpuNodeCount nodes covers updates too.
    assert group["updateConfig"] == {"maxUnavailable": 1, "updateStrategy": "MINIMAL"}
    assert group["nodeRepairConfig"] == {"enabled": True}


@pytest.mark.parametrize("variant", ["capacity-block", "bottlerocket", "h200"])
def test_a_replacing_change_deletes_the_old_gpu_node_group_first(variant: str):
    # ON_DEMAND -> CAPACITY_BLOCK, AL2023 -> Bottlerocket, p5 -> p5e replace the node group. Its
    # name is the same before and after, so a new group created first would collide with the
    # old one (and need its quota twice over): the old one must be deleted first.
    before, after = gpu_node_group("prod"), gpu_node_group(variant)
    changed = {
        key
        for key in ("amiType", "capacityType", "instanceTypes")
        if before.inputs.get(key) != after.inputs.get(key)
    }
    assert changed, "the variant must change a field EKS cannot update in place"
    assert before.inputs["nodeGroupName"] == after.inputs["nodeGroupName"]
    assert after.delete_before_replace and before.delete_before_replace


# --- zones that offer the GPU type -----------------------------------------------------------


def test_gpu_nodes_go_only_to_zones_that_offer_the_instance_type():
    # The mocked region has four zones; GPU types are offered in a, b and c, not d.
    result = run(config={"availabilityZoneCount": 4})
    assert result.outputs["availabilityZones"] == [f"us-east-1{z}" for z in "abcd"]
    assert result.outputs["gpuAvailabilityZones"] == [f"us-east-1{z}" for z in "abc"]
    subnets = {r.id: r.inputs["availabilityZone"] for r in result.of_type("aws:ec2/subnet:Subnet")}
    group = by_name_suffix(result, NODE_GROUP, "gpu-nodes-node-group").inputs
    assert sorted(subnets[s] for s in group["subnetIds"]) == [f"us-east-1{z}" for z in "abc"]


def test_zones_that_offer_the_type_are_chosen_first(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(mocks, "ZONES_WITHOUT_GPUS", ("a",))
    result = run()
    assert result.outputs["availabilityZones"] == ["us-east-1b", "us-east-1c"]
    assert result.outputs["gpuAvailabilityZones"] == ["us-east-1b", "us-east-1c"]


def test_no_zone_offering_the_type_is_refused_naming_type_region_and_zones(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(mocks, "ZONES_WITHOUT_GPUS", tuple("abcdef"))
    with pytest.raises(SettingsError) as raised:
        run()
    [problem] = raised.value.problems
    assert "no available zone of the region offers p5.48xlarge" in problem
    assert "us-east-1a, us-east-1b, us-east-1c, us-east-1d" in problem


def test_a_capacity_block_zone_must_offer_the_type():
    with pytest.raises(SettingsError) as raised:
        run(
            config={
                "gpuCapacityType": "CAPACITY_BLOCK",
                "capacityReservationId": "cr-0123456789abcdef0",
                "capacityReservationZone": "us-east-1d",
            }
        )
    [problem] = raised.value.problems
    assert problem.startswith(
        "gpt-oss-trtllm:capacityReservationZone: the reservation's zone us-east-1d does not offer p5.48xlarge"
    )


def test_the_control_planes_network_interfaces_go_to_private_subnets_only():
    result = plan()
    cluster = result.one("aws:eks/cluster:Cluster").inputs["vpcConfig"]
    subnets = {r.id: r for r in result.of_type("aws:ec2/subnet:Subnet")}
    roles = {
        next(k.split("/")[-1] for k in subnets[s].inputs["tags"] if k.startswith("kubernetes.io/role/"))
        for s in cluster["subnetIds"]
    }
    assert roles == {"internal-elb"}  # the private subnets (public ones carry role/elb)
    zones = {subnets[s].inputs["availabilityZone"] for s in cluster["subnetIds"]}
    assert len(zones) >= 2  # EKS requires two zones


def test_make_plan_states_the_quota_that_create_and_update_need():
    # FACTS.md: one p5.48xlarge counts 192 vCPUs against the quota; MINIMAL updates surge none.
    fixed = {"autoscaling": False}
    assert run(config=fixed).outputs["gpuVcpuQuotaNeeded"] == 192
    assert run(config={**fixed, "gpuNodeCount": 2, "replicas": 8}).outputs["gpuVcpuQuotaNeeded"] == 384
    # Autoscaled, the quota must cover the most nodes cluster-autoscaler may run (prod: 2).
    assert plan().outputs["gpuVcpuQuotaNeeded"] == 384
    assert plan().outputs["gpuUpdateStrategy"] == gpu_node_group().inputs["updateConfig"]["updateStrategy"]


def test_a_capacity_block_stack_may_wait_at_zero_nodes_without_waiting_for_the_pods():
    block = {
        "gpuCapacityType": "CAPACITY_BLOCK",
        "capacityReservationId": "cr-0123456789abcdef0",
        "capacityReservationZone": "us-east-1c",
        "gpuNodeCount": 0,
    }
    result = run(config=block)
    group = by_name_suffix(result, NODE_GROUP, "gpu-nodes-node-group").inputs
    assert group["scalingConfig"] == {"desiredSize": 0, "minSize": 0, "maxSize": 1}  # EKS: max >= 1
    # `pulumi up` creates the Deployment and returns: its pods start when the block does.
    deployment = result.one("kubernetes:apps/v1:Deployment", "gpt-oss-server").inputs
    assert deployment["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"
    assert "pulumi.com/skipAwait" not in plan().one("kubernetes:apps/v1:Deployment").inputs["metadata"].get(
        "annotations", {}
    )
    assert result.outputs["gpuVcpuQuotaNeeded"] == 0

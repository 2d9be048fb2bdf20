"""A private, OpenAI-compatible endpoint for openai/gpt-oss-120b on TensorRT-LLM, on EKS p5 nodes.

Read top to bottom, this is the table of contents of the stack:

  1. settings      every config key parsed and validated before anything is registered
  2. platform      VPC -> EKS (add-ons, system nodes) -> GPU node group -> NVIDIA device plugin
                   (or, with `kubeconfig` set, an existing cluster that already has GPU nodes)
  3. metrics       Amazon Managed Prometheus, its scraper, alert rules and alert manager;
                   dcgm-exporter and kube-state-metrics (created cluster, metricsStore)
  4. autoscaling   KEDA and cluster-autoscaler (created cluster, autoscaling: true)
  5. workload      trtllm-serve replicas behind an API-key gateway (TLS) and an internal NLB
                   (the AWS Load Balancer Controller's); with autoscaling, their ScaledObject
  6. outputs       what app teams need to call the endpoint
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from components.autoscaling import (
    ClusterAutoscaler,
    ClusterAutoscalerArgs,
    GpuNodeTemplateArgs,
    GpuNodeTemplateTags,
    Keda,
    KedaArgs,
    ReplicaAutoscaler,
    ReplicaAutoscalerArgs,
    cluster_autoscaler_flags,
    replica_scaling,
)
from components.cluster import SYSTEM_NODE_LABELS, ClusterArgs, EksCluster
from components.config import read_stack
from components.device_plugin import DevicePluginArgs, NvidiaDevicePlugin, ami_needs_device_plugin
from components.gpu_nodes import GpuNodeGroup, GpuNodeGroupArgs, accelerator_label
from components.gpu_telemetry import DcgmExporter, DcgmExporterArgs
from components.inference_server import InferenceServer, InferenceServerArgs
from components.load_balancer_controller import LoadBalancerController, LoadBalancerControllerArgs
from components.metrics_store import MetricsStore, MetricsStoreArgs
from components.network import Network, NetworkArgs, choose_zones
from components.platform import KubernetesPlatform, existing_cluster_platform, kubernetes_provider
from components.prometheus_objects import PrometheusObjects, PrometheusObjectsArgs
from serving.autoscaling.from_stack import policy_from_settings
from serving.autoscaling.policy import AutoscalingPolicy
from serving.config.settings import PROJECT, SettingsError, StackSettings
from serving.workload.manifests import WorkloadNames


def availability_zones(settings: StackSettings) -> tuple[list[str], list[str]]:
    """(the zones the VPC spans, those of them where the GPU nodes go).

    p5 is not offered in every zone, and a node group with a subnet in a zone without the type
    fails to create twenty minutes in: the zones that offer it are looked up at plan time.
    """
    available = aws.get_availability_zones(
        state="available",
        # Local and Wavelength zones are opt-in and have no p5 capacity.
        filters=[aws.GetAvailabilityZonesFilterArgs(name="opt-in-status", values=["opt-in-not-required"])],
    ).names
    instance_type = settings.gpu_nodes.instance.name
    offering = aws.ec2.get_instance_type_offerings(
        location_type="availability-zone",
        filters=[aws.ec2.GetInstanceTypeOfferingsFilterArgs(name="instance-type", values=[instance_type])],
    ).locations
    try:
        zones = choose_zones(
            sorted(available),
            settings.network.availability_zone_count,
            settings.gpu_nodes.capacity_reservation_zone,
            sorted(offering),
            instance_type,
        )
    except ValueError as error:
        key = (
            "capacityReservationZone"
            if settings.gpu_nodes.capacity_reservation_zone
            else "availabilityZoneCount"
        )
        raise SettingsError([f"{PROJECT}:{key}: {error}"]) from None
    return zones, [zone for zone in zones if zone in offering]


def create_aws_platform(
    settings: StackSettings, policy: AutoscalingPolicy | None
) -> tuple[KubernetesPlatform, dict[str, object]]:
    """Network, cluster, node groups, device plugin and load balancer controller; returns the
    platform and its outputs."""
    name = settings.cluster.name
    tags = {"gpt-oss/stack": pulumi.get_stack(), "gpt-oss/cluster": name}
    zones, gpu_zones = availability_zones(settings)

    network = Network(
        "network", NetworkArgs(cidr=settings.network.vpc_cidr, zones=zones, cluster_name=name, tags=tags)
    )

    # Control plane, networking add-ons, node role, system nodes and CoreDNS (like pulumi-eks).
    cluster = EksCluster(
        "cluster",
        ClusterArgs(
            name=name,
            kubernetes_version=settings.cluster.kubernetes_version,
            region=settings.region or "",
            subnet_ids=network.private_subnet_ids,
            node_subnet_ids=network.private_subnet_ids,
            system_nodes=settings.system_nodes,
            admin_role_arns=settings.cluster.admin_role_arns,
            support_type=settings.cluster.support_type,
            api_public_access_cidrs=settings.cluster.api_public_access_cidrs,
            log_retention_days=settings.cluster.log_retention_days,
            tags=tags,
        ),
    )

    reservation_zone = settings.gpu_nodes.capacity_reservation_zone
    gpu_nodes = GpuNodeGroup(
        "gpu-nodes",
        GpuNodeGroupArgs(
            cluster=cluster,
            # Only zones that offer the instance type; a Capacity Block exists in one zone only.
            subnet_ids=[
                network.private_subnet_ids_by_zone[zone]
                for zone in ([reservation_zone] if reservation_zone else gpu_zones)
            ],
            nodes=settings.gpu_nodes,
            autoscaling=settings.autoscaling,
            tags=tags,
        ),
    )

    provider = kubernetes_provider("eks", cluster.kubeconfig, depends_on=[cluster])
    gpu_capacity: list[pulumi.Resource] = [gpu_nodes]
    if ami_needs_device_plugin(settings.gpu_nodes.ami_type):
        gpu_capacity.append(
            NvidiaDevicePlugin(
                "nvidia-device-plugin",
                DevicePluginArgs(gpu_node_selector=settings.gpu_nodes.labels),
                opts=pulumi.ResourceOptions(providers=[provider], depends_on=[gpu_nodes]),
            )
        )

    # The NLB in front of the gateway: IP targets, health check to /health, source ranges on
    # the NLB's own security group.
    load_balancer_controller = LoadBalancerController(
        "aws-load-balancer-controller",
        LoadBalancerControllerArgs(
            cluster_name=cluster.name,
            region=settings.region or "",
            vpc_id=network.vpc_id,
            node_selector=SYSTEM_NODE_LABELS,
            partition=cluster.partition,
            tags=tags,
        ),
        opts=pulumi.ResourceOptions(providers=[provider]),
    )

    store, metrics_outputs = (
        create_metrics(settings, network, cluster, provider, gpu_capacity, tags)
        if settings.metrics.managed_prometheus
        else (None, {})
    )
    keda = (
        create_autoscalers(settings, policy, cluster, gpu_nodes, store, provider, tags)
        if policy is not None and store is not None
        else None
    )

    platform = KubernetesPlatform(
        provider=provider,
        cluster_name=cluster.name,
        kms_key_arn=cluster.kms_key_arn,
        gpu_capacity=gpu_capacity,
        load_balancer_controller=load_balancer_controller,
        keda=keda,
        prometheus_endpoint=store.prometheus_endpoint if store is not None else None,
    )
    outputs = {
        "kubeconfig": cluster.kubeconfig,
        "gpuNodeGroupName": gpu_nodes.node_group_name,
        "vpcId": network.vpc_id,
        "privateSubnetIds": network.private_subnet_ids,
        "availabilityZones": zones,
        "gpuAvailabilityZones": gpu_zones,
        "kmsKeyArn": cluster.kms_key_arn,
        **metrics_outputs,
    }
    return platform, outputs


def create_metrics(
    settings: StackSettings,
    network: Network,
    cluster: EksCluster,
    provider: pulumi.ProviderResource,
    gpu_capacity: list[pulumi.Resource],
    tags: dict[str, str],
) -> tuple[MetricsStore, dict[str, object]]:
    """Where the metrics go (AMP, its scraper, the rules, the alert manager, kube-state-metrics)
    and the GPUs' exporter; returns the store and the outputs `serving top --sigv4` and Grafana
    need."""
    store = MetricsStore(
        "metrics",
        MetricsStoreArgs(
            stack=pulumi.get_stack(),
            region=settings.region or "",
            cluster_name=cluster.name,
            cluster_arn=cluster.cluster.arn,
            kubernetes_version=cluster.version,
            vpc_id=network.vpc_id,
            subnet_ids=network.private_subnet_ids,
            cluster_security_group_id=cluster.cluster_security_group_id,
            serving=settings.serving,
            metrics=settings.metrics,
            tags=tags,
        ),
        opts=pulumi.ResourceOptions(depends_on=[cluster]),
    )
    DcgmExporter(
        "dcgm-exporter",
        DcgmExporterArgs(
            gpu_node_selector=settings.gpu_nodes.labels, scraper_cidrs=[settings.network.vpc_cidr]
        ),
        opts=pulumi.ResourceOptions(providers=[provider], depends_on=gpu_capacity),
    )
    return store, {
        "metricsWorkspaceId": store.workspace_id,
        # What `python -m serving top --prometheus <this> --sigv4 --region <region>` takes.
        "metricsPrometheusEndpoint": store.prometheus_endpoint,
        "metricsScraperId": store.scraper_id,
    }


def create_autoscalers(
    settings: StackSettings,
    policy: AutoscalingPolicy,
    cluster: EksCluster,
    gpu_nodes: GpuNodeGroup,
    store: MetricsStore,
    provider: pulumi.ProviderResource,
    tags: dict[str, str],
) -> Keda:
    """GPU nodes follow pending replicas (cluster-autoscaler, with what it must know to scale
    the group from zero); returns KEDA, which the workload's ScaledObject needs."""
    template = GpuNodeTemplateTags(
        "gpu-node-template",
        GpuNodeTemplateArgs(
            node_group=gpu_nodes,
            cluster_name=cluster.name,
            labels={**settings.gpu_nodes.labels, **accelerator_label(settings.gpu_nodes.instance)},
            gpus=settings.gpu_nodes.instance.gpus,
        ),
    )
    ClusterAutoscaler(
        "cluster-autoscaler",
        ClusterAutoscalerArgs(
            cluster_name=cluster.name,
            region=settings.region or "",
            node_selector=SYSTEM_NODE_LABELS,
            flags=cluster_autoscaler_flags(policy),
            partition=cluster.partition,
            tags=tags,
        ),
        opts=pulumi.ResourceOptions(providers=[provider], depends_on=[template]),
    )
    return Keda(
        "keda",
        KedaArgs(
            cluster_name=cluster.name,
            workspace_arn=store.workspace_arn,
            node_selector=SYSTEM_NODE_LABELS,
            tags=tags,
        ),
        opts=pulumi.ResourceOptions(providers=[provider]),
    )


def main() -> None:
    settings, secrets = read_stack()
    for notice in settings.notices:  # nothing wrong yet, but the owner should act soon
        pulumi.log.warn(notice)

    # The policy the cluster runs (only one the stack creates): the one `serving simulate` replays.
    policy = policy_from_settings(settings) if settings.autoscaling.enabled else None
    if settings.existing_cluster:
        assert secrets.kubeconfig is not None
        platform = existing_cluster_platform(settings.cluster.name, secrets.kubeconfig)
        platform_outputs: dict[str, object] = {}
    else:
        platform, platform_outputs = create_aws_platform(settings, policy)

    server = InferenceServer(
        "gpt-oss",
        InferenceServerArgs(
            serving=settings.serving,
            endpoint=settings.endpoint,
            hf_access_token=secrets.hf_access_token,
            kms_key_arn=platform.kms_key_arn,
            load_balancer_controller=platform.load_balancer_controller,
            autoscaled=platform.keda is not None,
        ),
        opts=pulumi.ResourceOptions(providers=[platform.provider], depends_on=platform.gpu_capacity),
    )
    if settings.metrics.prometheus_operator:
        # An existing cluster's own Prometheus Operator scrapes the pods and evaluates the alerts.
        PrometheusObjects(
            "prometheus",
            PrometheusObjectsArgs(
                stack=pulumi.get_stack(),
                serving=settings.serving,
                metrics=settings.metrics,
                scrape_interval_seconds=settings.metrics.scrape_interval_seconds,
            ),
            opts=pulumi.ResourceOptions(providers=[platform.provider], depends_on=[server]),
        )
    if policy is not None and platform.keda is not None and platform.prometheus_endpoint is not None:
        # Replicas follow the requests in flight per replica, from the metrics in AMP.
        ReplicaAutoscaler(
            "replica-autoscaler",
            ReplicaAutoscalerArgs(
                namespace=settings.serving.namespace,
                deployment=WorkloadNames(namespace=settings.serving.namespace).deployment,
                prometheus_endpoint=platform.prometheus_endpoint,
                region=settings.region or "",
                scaling=replica_scaling(policy),
            ),
            opts=pulumi.ResourceOptions(providers=[platform.provider], depends_on=[platform.keda, server]),
        )

    # What app teams need: where to send requests, with which model name and key.
    pulumi.export("endpoint", server.endpoint)
    pulumi.export("model", server.model)
    pulumi.export("apiKey", pulumi.Output.secret(server.api_key))
    if server.ca_certificate is not None:
        # The CA that signed the endpoint's certificate: what clients verify it against.
        pulumi.export("caCertificate", server.ca_certificate)
    pulumi.export("namespace", server.namespace)
    pulumi.export("serviceName", server.service_name)
    pulumi.export("clusterName", platform.cluster_name)
    pulumi.export("region", settings.region)
    if not settings.existing_cluster:
        pulumi.export("gpuInstanceType", settings.gpu_nodes.instance.name)
        pulumi.export("gpuNodeCount", settings.gpu_nodes.node_count)
        pulumi.export("gpuCapacityType", settings.gpu_nodes.capacity_type)
        scaling = settings.autoscaling
        most_nodes = scaling.max_nodes if scaling.enabled else settings.gpu_nodes.node_count
        # What the "Running On-Demand P instances" quota (vCPUs) must allow: the most nodes the
        # group may run; updates replace them in place (MINIMAL) and need no more.
        pulumi.export("gpuVcpuQuotaNeeded", settings.gpu_nodes.instance.vcpus * most_nodes)
        if scaling.enabled:
            pulumi.export("autoscalingReplicas", f"{scaling.min_replicas}..{scaling.max_replicas}")
            pulumi.export("autoscalingGpuNodes", f"{scaling.min_nodes}..{scaling.max_nodes}")
        pulumi.export("gpuUpdateStrategy", "MINIMAL")
        pulumi.export("kubernetesVersion", settings.cluster.kubernetes_version)
        pulumi.export("kubernetesSupportType", settings.cluster.support_type)
        pulumi.export("kubernetesStandardSupportUntil", str(settings.cluster.standard_support_until))
        price = settings.gpu_nodes.instance.on_demand_usd_per_hour
        if price is not None:
            # On-demand list price of the GPU nodes alone (FACTS.md); Capacity Blocks and Spot
            # are priced differently, and EKS, NAT and EBS add a few dollars a day.
            pulumi.export("gpuOnDemandUsdPerHour", round(price * settings.gpu_nodes.node_count, 2))
            # The most the GPU nodes can cost an hour: what the budget policy checks.
            pulumi.export("gpuCostCeilingUsdPerHour", round(price * most_nodes, 2))
        for key, value in platform_outputs.items():
            pulumi.export(key, pulumi.Output.secret(value) if key == "kubeconfig" else value)


main()

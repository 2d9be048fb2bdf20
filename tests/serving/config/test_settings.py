"""Stack settings: parsed once, validated before any resource, with errors a person can act on."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from serving.config.project import declared_config
from serving.config.settings import PROJECT, SECRET_KEYS, SettingsError, config_keys, load_settings

TOKEN = frozenset({"hfAccessToken"})
# p5.48xlarge (FACTS.md): 192 vCPU, 2 TiB of memory, 8 GPUs.
P5_VCPUS, P5_MEMORY_GIB = 192, 2048

# What every stack that creates a cluster states (Pulumi.prod.yaml does).
STACK_VALUES = {"clusterApiPublicCidrs": ["0.0.0.0/0"]}


def parse(region: str | None = "us-east-1", secrets=TOKEN, today: date | None = None, **values):
    """The loader over values as a stack file would set them (Pulumi.yaml defaults for the rest),
    on `today` (the support calendar is read against it)."""
    config: dict[str, object] = {
        f"{PROJECT}:{key}": value for key, value in {**STACK_VALUES, **values}.items()
    }
    config.update({f"{PROJECT}:{key}": "<a secret>" for key in secrets})
    if region is not None:
        config["aws:region"] = region
    return load_settings(config, {f"{PROJECT}:{key}" for key in secrets}, today=today)


def problems(**kwargs) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        parse(**kwargs)
    return caught.value.problems


def test_defaults_give_the_template_on_one_p5():
    settings = parse()
    assert not settings.existing_cluster
    assert settings.gpu_nodes.instance.name == "p5.48xlarge"
    assert settings.gpu_nodes.total_gpus == 8
    assert settings.serving.runtime.gpus_per_replica == 2
    assert settings.serving.runtime.max_batch_size == 64
    assert settings.endpoint.scheme == "internal"
    assert settings.endpoint.source_ranges == ("10.42.0.0/16",)  # the VPC only


def test_missing_token_is_named_with_the_command_that_sets_it():
    [problem] = problems(secrets=frozenset())
    assert "gpt-oss-trtllm:hfAccessToken is not set" in problem
    assert "pulumi config set --secret hfAccessToken" in problem


def test_unknown_instance_type():
    [problem] = problems(gpuInstanceType="p4d.24xlarge")
    assert problem == (
        "gpt-oss-trtllm:gpuInstanceType = 'p4d.24xlarge': not a known GPU instance type; "
        "use one of p5.48xlarge, p5e.48xlarge, p5en.48xlarge"
    )


def test_more_replica_gpus_than_nodes_have():
    [problem] = problems(replicas=5)
    assert problem == (
        "gpt-oss-trtllm:replicas = 5: 5 replicas x 2 GPUs = 10 GPUs, but 1 x p5.48xlarge have 8; "
        "use at most 4 replicas or raise gpuNodeCount to 2"
    )
    assert parse(replicas=5, gpuNodeCount=2).serving.replicas == 5


def test_region_without_the_instance_type_and_its_override():
    [problem] = problems(region="af-south-1")
    assert problem.startswith("aws:region = 'af-south-1': p5.48xlarge is not offered there")
    assert "allowUnlistedRegion" in problem
    assert parse(region="af-south-1", allowUnlistedRegion=True).region == "af-south-1"


def test_capacity_block_needs_the_reservation_and_its_zone():
    found = problems(gpuCapacityType="CAPACITY_BLOCK")
    assert any("capacityReservationId = ''" in p and "cr-<hex>" in p for p in found)
    assert any("capacityReservationZone = ''" in p for p in found)
    settings = parse(
        gpuCapacityType="CAPACITY_BLOCK",
        capacityReservationId="cr-0123456789abcdef0",
        capacityReservationZone="us-east-1d",
    )
    assert settings.gpu_nodes.capacity_reservation_zone == "us-east-1d"
    [wrong_zone] = problems(
        gpuCapacityType="CAPACITY_BLOCK",
        capacityReservationId="cr-0123456789abcdef0",
        capacityReservationZone="us-west-2a",
    )
    assert "capacityReservationZone = 'us-west-2a'" in wrong_zone


def test_runtime_problems_are_prefixed_with_the_stack_key():
    [problem] = problems(trtllmOptions={"kv_cache_config": {"free_gpu_memory_fracton": 0.9}})
    assert problem == (
        "gpt-oss-trtllm:trtllmOptions: kv_cache_config.free_gpu_memory_fracton: unknown "
        "option (did you mean kv_cache_config.free_gpu_memory_fraction?)"
    )


def test_internet_facing_needs_explicit_source_ranges():
    [problem] = problems(endpointScheme="internet-facing")
    assert "endpointSourceRanges" in problem and "0.0.0.0/0" in problem
    settings = parse(endpointScheme="internet-facing", endpointSourceRanges=["203.0.113.0/24"])
    assert settings.endpoint.internet_facing


def test_bring_your_own_cluster_skips_aws_capacity_checks():
    settings = parse(
        region=None,
        secrets=frozenset({"hfAccessToken", "kubeconfig"}),
        replicas=6,
        endpointSourceRanges=["10.0.0.0/8"],
    )
    assert settings.existing_cluster and settings.serving.replicas == 6


def test_every_problem_at_once_and_bad_values_named():
    found = problems(
        gpuCapacityType="RESERVED",
        endpointScheme="public",
        vpcCidr="10.0.0.0/28",
        namespace="GPT_OSS",
        startupTimeoutMinutes=5,
        endpointSourceRanges=["10.0.0.300/8"],
    )
    for key, value in (
        ("gpuCapacityType", "'RESERVED'"),
        ("endpointScheme", "'public'"),
        ("vpcCidr", "'10.0.0.0/28'"),
        ("namespace", "'GPT_OSS'"),
        ("startupTimeoutMinutes", "5"),
        ("endpointSourceRanges", "'10.0.0.300/8'"),
    ):
        assert any(p.startswith(f"{PROJECT}:{key} = {value}:") for p in found), (key, found)
    assert any("gpuCapacityType = 'RESERVED': use one of ON_DEMAND, SPOT, CAPACITY_BLOCK" in p for p in found)
    assert any("startupTimeoutMinutes = 5: expected a whole number from 40 to 240" in p for p in found)


def test_public_api_access_must_be_stated_when_creating_a_cluster():
    [problem] = problems(clusterApiPublicCidrs=[])
    assert problem.startswith("gpt-oss-trtllm:clusterApiPublicCidrs = []: pulumi up must reach")
    assert "clusterApiPrivateOnly" in problem
    settings = parse(clusterApiPublicCidrs=[], clusterApiPrivateOnly=True)
    assert settings.cluster.api_public_access_cidrs == ()
    [conflict] = problems(clusterApiPrivateOnly=True)
    assert "must be empty with clusterApiPrivateOnly true" in conflict
    # An existing cluster's API is not this stack's business.
    assert parse(
        clusterApiPublicCidrs=[],
        secrets=frozenset({"hfAccessToken", "kubeconfig"}),
        endpointSourceRanges=["10.0.0.0/8"],
    ).existing_cluster


def test_server_resources_derive_from_the_node_type_or_are_set_explicitly():
    derived = parse().serving
    # Four two-GPU replicas share one p5 and leave room for the kubelet and DaemonSets; each
    # holds the checkpoint in host memory while loading.
    assert derived.server_cpu >= 4 and 4 * derived.server_cpu <= P5_VCPUS - 8
    assert derived.server_memory_gib >= 96 and 4 * derived.server_memory_gib <= P5_MEMORY_GIB - 64
    byo = parse(
        secrets=frozenset({"hfAccessToken", "kubeconfig"}),
        endpointSourceRanges=["10.0.0.0/8"],
        serverCpu=22,
        serverMemoryGiB=180,
    ).serving
    assert (byo.server_cpu, byo.server_memory_gib) == (22, 180)
    [problem] = problems(serverMemoryGiB=64)
    assert problem.startswith("gpt-oss-trtllm:serverMemoryGiB = 64: use at least 96 GiB")
    [problem] = problems(serverCpu=500)
    assert problem == "gpt-oss-trtllm:serverCpu = 500: expected a whole number from 0 to 192"


def test_the_settings_model_reads_exactly_the_keys_pulumi_yaml_declares():
    assert config_keys() | set(SECRET_KEYS) == set(declared_config())


def test_unknown_keys_are_refused_with_the_closest_real_one():
    [problem] = problems(gpuRootVolumeGib=300)
    assert problem == (
        "gpt-oss-trtllm:gpuRootVolumeGib = 300: unknown setting (did you mean gpuRootVolumeGiB?)"
    )


def test_engine_strings_are_read_as_their_declared_types():
    # The engine hands every value to the program as text, objects as JSON.
    settings = parse(replicas="2", clusterApiPrivateOnly="false", endpointSourceRanges='["10.0.0.0/8"]')
    assert settings.serving.replicas == 2
    assert settings.endpoint.source_ranges == ("10.0.0.0/8",)


def test_gpus_per_replica_reaches_the_runtime():
    four = parse(
        gpusPerReplica=4, replicas=2, trtllmOptions={"tensor_parallel_size": 4, "moe_expert_parallel_size": 4}
    )
    assert four.serving.runtime.gpus_per_replica == 4
    [problem] = problems(gpusPerReplica=4)
    assert "tensor_parallel_size x pipeline_parallel_size = 2 x 1 = 2" in problem


def test_a_version_past_standard_support_is_refused_unless_extended_support_is_chosen():
    # FACTS.md: 1.34 left standard support on 2026-12-02.
    after = date(2026, 12, 3)
    [problem] = problems(today=after, kubernetesVersion="1.34")
    assert problem.startswith(
        "gpt-oss-trtllm:kubernetesVersion = '1.34': left EKS standard support on 2026-12-02"
    )
    assert "upgrade to 1.35" in problem and "0.60 USD an hour" in problem
    extended = parse(today=after, kubernetesVersion="1.34", kubernetesSupportType="EXTENDED")
    assert extended.cluster.support_type == "EXTENDED" and extended.notices == ()


def test_a_version_within_sixty_days_of_its_end_is_a_warning_not_a_refusal():
    # 1.35's standard support ends on 2027-03-27 (FACTS.md).
    near = parse(today=date(2027, 2, 1), kubernetesVersion="1.35")
    [notice] = near.notices
    assert notice.startswith("Kubernetes 1.35 leaves EKS standard support on 2027-03-27, in 54 days")
    assert parse(today=date(2026, 12, 1), kubernetesVersion="1.35").notices == ()
    assert parse(today=date(2026, 12, 1)).cluster.standard_support_until == date(2027, 3, 27)


# --- The endpoint's TLS and the control plane's logs -------------------------------------------

ACM_ARN = "arn:aws:acm:us-east-1:123456789012:certificate/12345678-1234-1234-1234-123456789012"


def test_tls_with_the_stack_ca_is_the_default_and_plain_http_must_be_asked_for():
    endpoint = parse().endpoint
    assert (endpoint.tls, endpoint.url_scheme, endpoint.load_balancer_controller) == (
        "stack-ca",
        "https",
        True,
    )
    plain = parse(endpointPlainHttp="true").endpoint
    assert (plain.tls, plain.url_scheme) == ("off", "http")


def test_an_acm_certificate_needs_its_hostname_and_the_stack_region():
    settings = parse(endpointCertificateArn=ACM_ARN, endpointHostname="llm.example.com")
    assert (settings.endpoint.tls, settings.endpoint.hostname) == ("acm", "llm.example.com")
    [missing] = problems(endpointCertificateArn=ACM_ARN)
    assert missing.startswith(f"{PROJECT}:endpointHostname = ''") and "llm.example.com" in missing
    [elsewhere] = problems(
        endpointCertificateArn=ACM_ARN.replace("us-east-1", "eu-west-1"), endpointHostname="llm.example.com"
    )
    assert "endpointCertificateArn" in elsewhere and "eu-west-1" in elsewhere and "in us-east-1" in elsewhere


@pytest.mark.parametrize(
    ("values", "key", "words"),
    [
        ({"endpointCertificateArn": "arn:aws:iam::123456789012:role/x"}, "endpointCertificateArn", "ACM"),
        ({"endpointHostname": "*.example.com"}, "endpointHostname", "no wildcard"),
        ({"endpointHostname": "Example.com"}, "endpointHostname", "lower-case"),
        ({"endpointHostname": "localhost"}, "endpointHostname", "at least one dot"),
        (
            {
                "endpointPlainHttp": "true",
                "endpointCertificateArn": ACM_ARN,
                "endpointHostname": "a.example.com",
            },
            "endpointPlainHttp",
            "remove one of the two",
        ),
        ({"clusterLogRetentionDays": "100"}, "clusterLogRetentionDays", "90, 120"),
        ({"clusterLogRetentionDays": "0"}, "clusterLogRetentionDays", "1, 3, 5"),
        ({"clusterLogRetentionDays": "ninety"}, "clusterLogRetentionDays", "whole number"),
    ],
)
def test_endpoint_and_log_settings_that_cannot_work_are_refused_by_name(values, key, words):
    [problem] = problems(**values)
    assert problem.startswith(f"{PROJECT}:{key} = ") and words in problem


def test_an_acm_certificate_with_an_existing_cluster_is_refused():
    [problem] = problems(
        secrets=TOKEN | {"kubeconfig"},
        endpointCertificateArn=ACM_ARN,
        endpointHostname="llm.example.com",
        endpointSourceRanges=["10.0.0.0/8"],
    )
    assert "endpointCertificateArn" in problem and "AWS Load Balancer Controller" in problem


def test_log_retention_reaches_the_cluster_settings():
    assert parse().cluster.log_retention_days == 90
    assert parse(clusterLogRetentionDays="365").cluster.log_retention_days == 365


# --- metrics ------------------------------------------------------------------------------------

TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:gpt-oss-alerts"
EXISTING: dict[str, Any] = {"secrets": TOKEN | {"kubeconfig"}, "endpointSourceRanges": ["10.0.0.0/8"]}


def test_metrics_go_to_managed_prometheus_by_default_when_the_stack_creates_the_cluster():
    metrics = parse().metrics
    assert metrics.store == "managed-prometheus" and metrics.managed_prometheus
    assert (metrics.retention_days, metrics.scrape_interval_seconds) == (150, 30)
    assert metrics.ttft_p90_slo_seconds == 2.5 and metrics.notification_topic_arn is None
    assert parse(metricsStore="none").metrics.store == "none"


def test_metrics_default_to_none_with_an_existing_cluster():
    assert parse(**EXISTING).metrics.store == "none"
    assert parse(metricsStore="none", **EXISTING).metrics.store == "none"


def test_managed_prometheus_with_an_existing_cluster_is_refused_with_what_works():
    [problem] = problems(metricsStore="managed-prometheus", **EXISTING)
    assert problem.startswith(f"{PROJECT}:metricsStore = 'managed-prometheus': ")
    assert "existing cluster" in problem and "use none (or auto)" in problem


def test_metrics_values_are_read_as_the_engine_passes_them():
    metrics = parse(
        metricsRetentionDays="365",
        metricsScrapeIntervalSeconds="60",
        alertTtftP90SloSeconds="4",
        alertNotificationTopicArn=TOPIC_ARN,
    ).metrics
    assert (metrics.retention_days, metrics.scrape_interval_seconds) == (365, 60)
    assert metrics.ttft_p90_slo_seconds == 4.0 and metrics.notification_topic_arn == TOPIC_ARN
    assert parse(alertTtftP90SloSeconds="1.5").metrics.ttft_p90_slo_seconds == 1.5


@pytest.mark.parametrize(
    ("values", "key", "words"),
    [
        (
            {"metricsStore": "prometheus"},
            "metricsStore",
            "auto, managed-prometheus, prometheus-operator, none",
        ),
        ({"metricsRetentionDays": "0"}, "metricsRetentionDays", "from 1 to 1095"),
        ({"metricsRetentionDays": "2000"}, "metricsRetentionDays", "from 1 to 1095"),
        ({"metricsScrapeIntervalSeconds": "15"}, "metricsScrapeIntervalSeconds", "from 30 to 150"),
        ({"metricsScrapeIntervalSeconds": "300"}, "metricsScrapeIntervalSeconds", "from 30 to 150"),
        ({"alertTtftP90SloSeconds": "0"}, "alertTtftP90SloSeconds", "above 0"),
        ({"alertTtftP90SloSeconds": "fast"}, "alertTtftP90SloSeconds", "e.g. 2.5"),
        ({"alertNotificationTopicArn": "gpt-oss-alerts"}, "alertNotificationTopicArn", "SNS topic ARN"),
        (
            {"alertNotificationTopicArn": TOPIC_ARN + ".fifo"},
            "alertNotificationTopicArn",
            "Standard topics only",
        ),
        (
            {"alertNotificationTopicArn": TOPIC_ARN.replace("us-east-1", "eu-west-1")},
            "alertNotificationTopicArn",
            "use a topic in us-east-1",
        ),
        (
            {"alertNotificationTopicArn": TOPIC_ARN, "metricsStore": "none"},
            "alertNotificationTopicArn",
            "managed-prometheus",
        ),
    ],
)
def test_metrics_settings_that_cannot_work_are_refused_by_name(values, key, words):
    [problem] = problems(**values)
    assert problem.startswith(f"{PROJECT}:{key} = ") and words in problem


# --- Autoscaling ---------------------------------------------------------------------------------


def test_autoscaling_ranges_follow_the_nodes_and_start_where_the_stack_says():
    settings = parse(autoscaling="true", gpuNodeMaxCount="3")
    scaling = settings.autoscaling
    # p5.48xlarge: 8 GPUs, 2 per replica (Pulumi.yaml defaults): 3 nodes hold 12 replicas.
    assert (scaling.enabled, scaling.min_nodes, scaling.max_nodes, scaling.max_replicas) == (True, 1, 3, 12)
    assert parse().autoscaling.enabled is False


@pytest.mark.parametrize(
    ("values", "key", "words"),
    [
        ({"gpuNodeMaxCount": "2", "maxReplicas": "9"}, "maxReplicas", "hold 8 replicas"),
        ({"gpuNodeMinCount": "2", "gpuNodeMaxCount": "3"}, "gpuNodeCount", "within gpuNodeMinCount (2)"),
        ({"minReplicas": "2"}, "replicas", "within minReplicas (2)"),
        ({"metricsStore": "none"}, "autoscaling", "metricsStore"),
    ],
)
def test_an_autoscaling_range_that_cannot_work_is_refused_by_name(values, key, words):
    [problem] = problems(autoscaling="true", **values)
    assert problem.startswith(f"{PROJECT}:{key} = ") and words in problem


def test_autoscaling_needs_a_cluster_the_stack_creates():
    [problem] = problems(
        secrets=TOKEN | {"kubeconfig"}, autoscaling="true", endpointSourceRanges=["10.0.0.0/8"]
    )
    assert problem.startswith(f"{PROJECT}:autoscaling = True") and "existing cluster" in problem


def test_a_capacity_block_autoscales_replicas_only_and_says_so():
    block: dict[str, Any] = {
        "gpuCapacityType": "CAPACITY_BLOCK",
        "capacityReservationId": "cr-0123456789abcdef0",
        "capacityReservationZone": "us-east-1a",
    }
    settings = parse(autoscaling="true", gpuNodeMaxCount="3", **block)
    assert (settings.autoscaling.min_nodes, settings.autoscaling.max_nodes) == (1, 1)
    assert any("Capacity Block" in notice for notice in settings.notices)
    waiting = parse(autoscaling="true", gpuNodeCount="0", **block)
    assert waiting.autoscaling.enabled is False

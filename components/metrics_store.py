"""Where the metrics go in AWS mode: Amazon Managed Service for Prometheus and its managed scraper.

One component owns the store and everything that feeds or reads it from AWS's side: the
workspace and its retention, the agentless scraper for the stack's EKS cluster (with a security
group of its own, let in to the metrics ports only), the alert rules as a rule groups namespace,
the alert manager that sends to SNS when a topic is given, and kube-state-metrics as the EKS
community add-on. The GPU side (dcgm-exporter) is `components/gpu_telemetry.py`; the server pod's
exporter belongs to the workload. docs/observability.md says why AMP rather than an in-cluster
Prometheus.

Facts this relies on (Amazon Managed Service for Prometheus user guide):
- "Using an AWS managed collector": a scraper for a cluster in access-entry mode (`API` or
  `API_AND_CONFIG_MAP`, this stack uses `API`) gets its access entry and Kubernetes permissions
  from AMP itself when it is created through the API; the `aps-collector-role` ClusterRole and
  `aps-collector-user` binding are only for clusters that still use the aws-auth ConfigMap, so
  none is created here. The cluster's API endpoint must have private access (it has), its VPC
  DNS (it has). The scraper's interval may not be under 30 s.
- "Ingest metrics with AWS managed collectors": the scraper puts one network interface in each
  subnet it is given, in at least two zones, and scrapes through them.
- A workspace encrypted with a customer managed KMS key cannot take a managed collector: the
  workspace keeps AWS's own key.
- "Configure alert manager to send messages to your Amazon SNS topic": SNS (Standard topics) is
  the only receiver, `sigv4.region` is required, `api_url` and `http_config` are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import yaml

from components.cluster import resources_in
from serving.config.settings import MetricsSettings, ServingSettings
from serving.observability import catalogue
from serving.observability.alerts import AlertSettings, render_rules_yaml
from serving.observability.queries import Scope
from serving.observability.scrape import render_scrape_config
from serving.workload.manifests import APP_NAME, GATEWAY_CONTAINER, SERVER_CONTAINER

# The EKS community add-on (AWS packages and version-checks it; the project's own docs cover
# what it does): EKS user guide, "Community add-ons". Namespace kube-state-metrics.
KUBE_STATE_METRICS_ADDON = "kube-state-metrics"
# The scraper adds this tag to its destination workspace; stating it keeps `pulumi up` from
# removing it again (pulumi-aws 7.51 `aws.amp.Scraper` documentation).
SCRAPER_TAG = "AMPAgentlessScraper"
# What the scraper's network interfaces must reach: the Kubernetes API on the control plane's
# interfaces (service discovery) and each scrape job's port on the pods.
API_SERVER_PORT = 443


def _metrics_ports() -> dict[str, int]:
    """Each port a scrape job reads, named by the first job that reads it."""
    ports: dict[str, int] = {}
    for source in catalogue.SOURCES:
        if source.port in ports.values():
            continue
        ports[source.job if source.job not in ports else f"{source.job}-{source.port}"] = source.port
    return ports


METRICS_PORTS = _metrics_ports()
RECEIVER = "sns"


def stack_scope(serving: ServingSettings) -> Scope:
    """Where the stack's series are, as `python -m serving observability` sees them."""
    return Scope(
        namespace=serving.namespace,
        deployment=APP_NAME,
        server_container=SERVER_CONTAINER,
        gateway_container=GATEWAY_CONTAINER,
    )


def alert_settings(serving: ServingSettings, metrics: MetricsSettings) -> AlertSettings:
    return AlertSettings(
        ttft_p90_slo_seconds=metrics.ttft_p90_slo_seconds,
        startup_timeout_minutes=serving.startup_timeout_minutes,
    )


def rules_group_name(stack: str) -> str:
    return f"gpt-oss-{stack}"


def alert_rules_yaml(stack: str, serving: ServingSettings, metrics: MetricsSettings) -> str:
    """The rules file the workspace evaluates (and `make plan` writes as alerts.yaml)."""
    return render_rules_yaml(
        stack_scope(serving),
        alert_settings(serving, metrics),
        group_name=rules_group_name(stack),
        extra_labels={"stack": stack},
    )


def scraper_configuration_yaml(serving: ServingSettings, metrics: MetricsSettings) -> str:
    """The scrape jobs of `serving.observability.scrape` at the stack's interval, without the
    `evaluation_interval`: the scraper evaluates no rules (the workspace does), and AMP lists
    the global options it honours as the scrape interval, timeout and external labels."""
    document: dict[str, Any] = render_scrape_config(stack_scope(serving), metrics.scrape_interval_seconds)
    document["global"] = {k: v for k, v in document["global"].items() if k != "evaluation_interval"}
    return yaml.safe_dump(document, sort_keys=False)


def alert_manager_definition(topic_arn: str, region: str) -> str:
    """AMP's alert manager file: one route to one SNS receiver. The subject is set because the
    default one lists every label and can exceed SNS's 100-character subject limit."""
    config = {
        "route": {
            "receiver": RECEIVER,
            "group_by": ["alertname", "severity"],
            "group_wait": "30s",
            "group_interval": "5m",
            # AMP caps repeat_interval at five days; a firing alert is sent again every 4 hours.
            "repeat_interval": "4h",
        },
        "receivers": [
            {
                "name": RECEIVER,
                "sns_configs": [
                    {
                        "topic_arn": topic_arn,
                        "sigv4": {"region": region},
                        "subject": "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}",
                    }
                ],
            }
        ],
    }
    return yaml.safe_dump(
        {"alertmanager_config": yaml.safe_dump(config, sort_keys=False)}, sort_keys=False, width=1000
    )


def sns_topic_policy_statement(topic_arn: str, workspace_arn: str, account_id: str) -> dict[str, Any]:
    """The statement the topic's access policy needs (AMP user guide, "Giving Amazon Managed
    Service for Prometheus permission to send messages to your Amazon SNS topic"). The stack
    does not own the topic, so it does not edit its policy: docs/operations.md shows how."""
    return {
        "Sid": "AllowAmpAlertManager",
        "Effect": "Allow",
        "Principal": {"Service": "aps.amazonaws.com"},
        "Action": ["sns:Publish", "sns:GetTopicAttributes"],
        "Resource": topic_arn,
        "Condition": {
            "ArnEquals": {"aws:SourceArn": workspace_arn},
            "StringEquals": {"AWS:SourceAccount": account_id},
        },
    }


@dataclass(frozen=True)
class MetricsStoreArgs:
    stack: str
    region: str
    cluster_name: pulumi.Input[str]
    cluster_arn: pulumi.Input[str]
    kubernetes_version: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    # Where the scraper's network interfaces go: the private subnets (two zones at least).
    subnet_ids: Sequence[pulumi.Input[str]]
    # The EKS cluster security group: on the control plane's interfaces and on every node (the
    # node groups' launch templates name no other), so on every pod's traffic too.
    cluster_security_group_id: pulumi.Input[str]
    serving: ServingSettings
    metrics: MetricsSettings
    tags: dict[str, str] = field(default_factory=dict)


class MetricsStore(pulumi.ComponentResource):
    """The AMP workspace, its scraper, rules and alert manager, and kube-state-metrics.

    `opts.depends_on` names what must exist first (the cluster and its system nodes: the
    kube-state-metrics add-on is a Deployment that stays degraded without nodes).
    """

    workspace_id: pulumi.Output[str]
    workspace_arn: pulumi.Output[str]  # what KEDA's role may query
    prometheus_endpoint: pulumi.Output[str]
    scraper_id: pulumi.Output[str]

    def __init__(self, name: str, args: MetricsStoreArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpt-oss:aws:MetricsStore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        waits = resources_in(opts)
        alias = pulumi.Output.from_input(args.cluster_name).apply(lambda cluster: f"{cluster}-metrics")

        workspace = aws.amp.Workspace(
            f"{name}-workspace",
            alias=alias,
            # No kms_key_arn: a workspace with a customer managed key cannot take a managed
            # collector. AWS's own key encrypts it at rest.
            tags={**args.tags, SCRAPER_TAG: ""},
            opts=child,
        )
        aws.amp.WorkspaceConfiguration(
            f"{name}-retention",
            workspace_id=workspace.id,
            retention_period_in_days=args.metrics.retention_days,
            opts=child,
        )

        scraper_group = self._scraper_security_group(name, args)

        aws.eks.Addon(
            f"{name}-{KUBE_STATE_METRICS_ADDON}",
            cluster_name=args.cluster_name,
            addon_name=KUBE_STATE_METRICS_ADDON,
            # AWS's default version for the cluster's Kubernetes version, as for the other add-ons.
            addon_version=aws.eks.get_addon_version_output(
                addon_name=KUBE_STATE_METRICS_ADDON, kubernetes_version=args.kubernetes_version
            ).version,
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=waits),
        )

        scraper = aws.amp.Scraper(
            f"{name}-scraper",
            alias=alias,
            source=aws.amp.ScraperSourceArgs(
                eks=aws.amp.ScraperSourceEksArgs(
                    cluster_arn=args.cluster_arn,
                    subnet_ids=list(args.subnet_ids),
                    security_group_ids=[scraper_group.id],
                )
            ),
            destination=aws.amp.ScraperDestinationArgs(
                amp=aws.amp.ScraperDestinationAmpArgs(workspace_arn=workspace.arn)
            ),
            scrape_configuration=scraper_configuration_yaml(args.serving, args.metrics),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*self._ingress, *waits]),
        )

        aws.amp.RuleGroupNamespace(
            f"{name}-rules",
            name=rules_group_name(args.stack),
            workspace_id=workspace.id,
            data=alert_rules_yaml(args.stack, args.serving, args.metrics),
            tags=args.tags,
            opts=child,
        )
        topic = args.metrics.notification_topic_arn
        if topic:
            aws.amp.AlertManagerDefinition(
                f"{name}-alert-manager",
                workspace_id=workspace.id,
                definition=alert_manager_definition(topic, args.region),
                opts=child,
            )

        self.workspace_id = workspace.id
        self.workspace_arn = workspace.arn
        self.prometheus_endpoint = workspace.prometheus_endpoint
        self.scraper_id = scraper.id
        self.register_outputs(
            {
                "workspaceId": self.workspace_id,
                "prometheusEndpoint": self.prometheus_endpoint,
                "scraperId": self.scraper_id,
                "scraperRoleArn": scraper.role_arn,
            }
        )

    def _scraper_security_group(self, name: str, args: MetricsStoreArgs) -> aws.ec2.SecurityGroup:
        """The scraper's own group: out to the API server and the metrics ports on the cluster's
        group only, and those ports opened on the cluster's group to it and to nothing else."""
        child = pulumi.ResourceOptions(parent=self)
        group = aws.ec2.SecurityGroup(
            f"{name}-scraper",
            vpc_id=args.vpc_id,
            description="AMP managed scraper: Kubernetes API and the metrics ports of the cluster only",
            # No inline rules: each rule below is a resource of its own, so none is replaced
            # when another changes. Without rules the group allows no egress at all.
            tags={**args.tags, "Name": f"{args.stack}-metrics-scraper"},
            opts=child,
        )
        ports = {"kubernetes-api": API_SERVER_PORT, **METRICS_PORTS}
        self._ingress: list[pulumi.Resource] = []
        for what, port in ports.items():
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-scraper-to-{what}",
                security_group_id=group.id,
                referenced_security_group_id=args.cluster_security_group_id,
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                description=f"to {what} (:{port})",
                tags=args.tags,
                opts=child,
            )
            self._ingress.append(
                aws.vpc.SecurityGroupIngressRule(
                    f"{name}-scraper-into-{what}",
                    security_group_id=args.cluster_security_group_id,
                    referenced_security_group_id=group.id,
                    ip_protocol="tcp",
                    from_port=port,
                    to_port=port,
                    description=f"AMP managed scraper to {what} (:{port})",
                    tags=args.tags,
                    opts=child,
                )
            )
        return group

"""Where the metrics go, inside the real program (run offline): the AMP workspace, its scraper for
the stack's cluster, the alert rules and alert manager, dcgm-exporter and kube-state-metrics."""

from __future__ import annotations

import pytest
import yaml

from components.gpu_telemetry import DCGM_EXPORTER_IMAGE
from components.metrics_store import METRICS_PORTS, SCRAPER_TAG, sns_topic_policy_statement
from offline.render import ALERTS_FILE, DASHBOARD_FILE, write_plan
from serving.config.settings import SettingsError
from serving.observability.catalogue import render_dcgm_counters_csv
from serving.observability.scrape import APP_LABELS, PORT_NAMES
from tests.support.stack_harness import plan, run

WORKSPACE = "aws:amp/workspace:Workspace"
RETENTION = "aws:amp/workspaceConfiguration:WorkspaceConfiguration"
SCRAPER = "aws:amp/scraper:Scraper"
RULES = "aws:amp/ruleGroupNamespace:RuleGroupNamespace"
ALERT_MANAGER = "aws:amp/alertManagerDefinition:AlertManagerDefinition"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
ADDON = "aws:eks/addon:Addon"
DAEMONSET = "kubernetes:apps/v1:DaemonSet"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
TOPIC = "arn:aws:sns:us-east-1:123456789012:gpt-oss-alerts"
AMP_TYPES = (WORKSPACE, RETENTION, SCRAPER, RULES, ALERT_MANAGER)


def _rule(group: dict, name: str) -> dict:
    (rule,) = [r for r in group["rules"] if r["alert"] == name]
    return rule


def test_the_workspace_keeps_the_stack_retention_and_aws_own_key():
    result = plan()
    workspace = result.one(WORKSPACE)
    assert workspace.inputs["alias"] == "gpt-oss-prod-metrics"
    # A customer managed key would shut the managed scraper out.
    assert "kmsKeyArn" not in workspace.inputs
    # The tag the scraper adds itself, stated so that `pulumi up` does not remove it.
    assert workspace.inputs["tags"][SCRAPER_TAG] == ""
    retention = result.one(RETENTION).inputs
    assert retention == {"workspaceId": workspace.id, "retentionPeriodInDays": 150}
    assert run(config={"metricsRetentionDays": 400}).one(RETENTION).inputs["retentionPeriodInDays"] == 400


def test_the_scraper_reads_the_cluster_through_the_private_subnets_into_the_workspace():
    result = plan()
    scraper = result.one(SCRAPER).inputs
    cluster = result.one("aws:eks/cluster:Cluster")
    private = sorted(r.id for r in result.of_type("aws:ec2/subnet:Subnet") if "private" in r.name)
    assert scraper["source"]["eks"]["clusterArn"] == cluster.state["arn"]
    assert sorted(scraper["source"]["eks"]["subnetIds"]) == private and len(private) >= 2
    assert scraper["source"]["eks"]["securityGroupIds"] == [result.one(SECURITY_GROUP).id]
    assert scraper["destination"]["amp"]["workspaceArn"] == result.one(WORKSPACE).state["arn"]
    # It waits for the cluster (its access entry needs an ACTIVE cluster).
    assert cluster.urn in result.one(SCRAPER).dependencies


def test_the_scrape_configuration_is_the_stacks_jobs_at_the_stacks_interval():
    scraper = plan().one(SCRAPER).inputs
    document = yaml.safe_load(scraper["scrapeConfiguration"])
    assert document["global"] == {"scrape_interval": "30s"}
    jobs = {job["job_name"]: job for job in document["scrape_configs"]}
    assert {"trtllm-server", "dcgm-exporter", "kube-state-metrics"} <= set(jobs)
    keep = jobs["dcgm-exporter"]["relabel_configs"][0]
    assert keep["regex"] == f"{APP_LABELS['dcgm-exporter']};({PORT_NAMES['dcgm-exporter']})"
    slower = yaml.safe_load(
        run(config={"metricsScrapeIntervalSeconds": 60}).one(SCRAPER).inputs["scrapeConfiguration"]
    )
    assert slower["global"]["scrape_interval"] == "60s"


def test_the_scraper_group_reaches_the_api_and_the_metrics_ports_on_the_cluster_group_only():
    result = plan()
    group = result.one(SECURITY_GROUP)
    cluster_group = "<eks-cluster-security-group-id>"
    ports = {443, *METRICS_PORTS.values()}
    assert {9109, 9400, 8080} <= ports
    egress = [r.inputs for r in result.of_type(EGRESS)]
    ingress = [r.inputs for r in result.of_type(INGRESS) if r.name.startswith("metrics-")]
    assert {(r["fromPort"], r["toPort"]) for r in egress} == {(p, p) for p in ports}
    assert {(r["fromPort"], r["toPort"]) for r in ingress} == {(p, p) for p in ports}
    for rule in egress:
        assert rule["securityGroupId"] == group.id and rule["referencedSecurityGroupId"] == cluster_group
        assert rule["ipProtocol"] == "tcp" and "cidrIpv4" not in rule
    for rule in ingress:
        assert rule["securityGroupId"] == cluster_group and rule["referencedSecurityGroupId"] == group.id
    # The scraper starts only once it may reach the pods.
    scraper = result.one(SCRAPER)
    assert all(
        r.urn in scraper.dependencies for r in result.of_type(INGRESS) if r.name.startswith("metrics-")
    )


def test_the_rule_group_holds_every_alert_with_the_stacks_ttft_objective():
    result = run(config={"alertTtftP90SloSeconds": 4})
    rules = result.one(RULES).inputs
    assert rules["name"] == "gpt-oss-prod"
    (group,) = yaml.safe_load(rules["data"])["groups"]
    assert group["name"] == "gpt-oss-prod"
    slo = _rule(group, "GptOssTtftAboveSlo")
    assert slo["expr"].endswith("> 4.0") or slo["expr"].endswith("> 4")
    assert slo["labels"]["stack"] == "prod"
    names = {r["alert"] for r in group["rules"]}
    assert {"GptOssNoReadyReplica", "GptOssGpuXidError", "GptOssGpuNodeNotReady"} <= names
    default = yaml.safe_load(plan().one(RULES).inputs["data"])["groups"][0]
    assert _rule(default, "GptOssTtftAboveSlo")["expr"].endswith("> 2.5")


def test_an_alert_manager_only_with_a_topic_and_then_one_sns_receiver_in_the_region():
    assert plan().of_type(ALERT_MANAGER) == []
    result = run(config={"alertNotificationTopicArn": TOPIC})
    definition = yaml.safe_load(result.one(ALERT_MANAGER).inputs["definition"])
    assert result.one(ALERT_MANAGER).inputs["workspaceId"] == result.one(WORKSPACE).id
    config = yaml.safe_load(definition["alertmanager_config"])
    (receiver,) = config["receivers"]
    assert config["route"]["receiver"] == receiver["name"]
    (sns,) = receiver["sns_configs"]
    assert sns["topic_arn"] == TOPIC and sns["sigv4"] == {"region": "us-east-1"}
    # What AMP refuses in an SNS receiver.
    assert "api_url" not in sns and "http_config" not in sns


def test_the_topic_policy_statement_the_docs_give_is_bound_to_the_workspace():
    statement = sns_topic_policy_statement(
        TOPIC, "arn:aws:aps:us-east-1:123456789012:workspace/ws-1", "123456789012"
    )
    assert statement["Principal"] == {"Service": "aps.amazonaws.com"}
    assert set(statement["Action"]) == {"sns:Publish", "sns:GetTopicAttributes"}
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"].endswith("workspace/ws-1")


def test_the_outputs_give_the_workspace_its_endpoint_and_the_scraper():
    result = plan()
    workspace = result.one(WORKSPACE)
    assert result.outputs["metricsWorkspaceId"] == workspace.id
    assert result.outputs["metricsPrometheusEndpoint"] == workspace.state["prometheusEndpoint"]
    assert str(result.outputs["metricsPrometheusEndpoint"]).startswith("https://aps-workspaces.us-east-1.")
    assert result.outputs["metricsScraperId"] == result.one(SCRAPER).id


def test_kube_state_metrics_is_the_eks_community_addon_after_the_system_nodes():
    result = plan()
    (addon,) = [a for a in result.of_type(ADDON) if a.inputs["addonName"] == "kube-state-metrics"]
    assert addon.inputs["addonVersion"] == "<EKS default kube-state-metrics for 1.35>"
    system = [
        r for r in result.of_type("aws:eks/nodeGroup:NodeGroup") if r.name.endswith("system-nodes-node-group")
    ]
    assert system[0].urn in addon.dependencies


def test_dcgm_exporter_runs_on_gpu_nodes_only_unprivileged_with_the_stacks_counters():
    result = plan()
    daemon_set = result.one(DAEMONSET, "dcgm-exporter-daemonset").inputs
    assert daemon_set["metadata"]["namespace"] == "kube-system"
    template = daemon_set["spec"]["template"]
    pod = template["spec"]
    gpu_group = [r for r in result.of_type("aws:eks/nodeGroup:NodeGroup") if r.name == "gpu-nodes-node-group"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["nodeSelector"].items() <= gpu_group[0].inputs["labels"].items()
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert template["metadata"]["labels"]["app.kubernetes.io/name"] == "dcgm-exporter"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    (container,) = pod["containers"]
    assert (
        container["image"]
        == DCGM_EXPORTER_IMAGE
        == "nvcr.io/nvidia/k8s/dcgm-exporter:4.5.3-4.8.2-ubuntu22.04"
    )
    assert container["ports"] == [{"name": "metrics", "containerPort": 9400, "protocol": "TCP"}]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert "nvidia.com/gpu" not in container["resources"]["limits"]  # takes none of the server's GPUs
    assert not any("hostPath" in v for v in pod["volumes"])
    # The counters file is the catalogue's, passed with -f from the ConfigMap's mount.
    counters = result.one(CONFIG_MAP, "dcgm-exporter-counters").inputs
    assert counters["data"] == {"dcgm-counters.csv": render_dcgm_counters_csv()}
    (mount,) = container["volumeMounts"]
    assert container["args"] == ["-f", f"{mount['mountPath']}/dcgm-counters.csv"]
    (volume,) = pod["volumes"]
    assert volume["configMap"]["name"] == counters["metadata"]["name"]
    # It waits for the GPU nodes.
    assert gpu_group[0].urn in result.one(DAEMONSET, "dcgm-exporter-daemonset").dependencies


def test_dcgm_exporter_admits_the_vpc_to_its_port_and_nothing_else():
    policy = plan().one(NETWORK_POLICY, "dcgm-exporter-network-policy").inputs["spec"]
    assert policy["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "dcgm-exporter"}}
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert "egress" not in policy
    (rule,) = policy["ingress"]
    assert rule["from"] == [{"ipBlock": {"cidr": "10.42.0.0/16"}}]
    assert rule["ports"] == [{"port": 9400, "protocol": "TCP"}]


def test_an_existing_cluster_or_metrics_store_none_creates_none_of_it():
    for result in (plan("existing-cluster"), run(config={"metricsStore": "none", "autoscaling": False})):
        assert [r for r in result.resources if r.type in (*AMP_TYPES, SECURITY_GROUP, EGRESS)] == []
        assert [r for r in result.of_type(ADDON) if r.inputs["addonName"] == "kube-state-metrics"] == []
        assert [r for r in result.of_type(DAEMONSET) if r.name.startswith("dcgm-exporter")] == []
        assert not any(key.startswith("metrics") for key in result.outputs)


def test_make_plan_writes_the_dashboard_and_the_rules_the_workspace_evaluates(tmp_path):
    result = plan()
    write_plan(result, tmp_path)
    alerts = (tmp_path / "prod" / ALERTS_FILE).read_text()
    assert alerts == result.one(RULES).inputs["data"]
    assert '"uid": "gpt-oss-prod"' in (tmp_path / "prod" / DASHBOARD_FILE).read_text()
    # An existing cluster gets the same files, for the Prometheus it already has.
    write_plan(plan("existing-cluster"), tmp_path)
    assert (tmp_path / "prod" / ALERTS_FILE).read_text().startswith("groups:")


def test_an_existing_cluster_hands_its_prometheus_operator_a_pod_monitor_and_the_rules():
    result = run(
        config={
            "metricsStore": "prometheus-operator",
            "metricsObjectLabels": {"release": "kube-prometheus-stack"},
            "endpointSourceRanges": ["10.0.0.0/8"],
            "autoscaling": False,
        },
        secrets={"kubeconfig": "apiVersion: v1\nkind: Config\n"},
    )
    monitor = result.one("kubernetes:monitoring.coreos.com/v1:PodMonitor").inputs
    rule = result.one("kubernetes:monitoring.coreos.com/v1:PrometheusRule").inputs
    for obj in (monitor, rule):
        assert obj["metadata"]["namespace"] == "gpt-oss"
        assert obj["metadata"]["labels"] == {"release": "kube-prometheus-stack"}
    # The monitor selects the server pods the program registers, on their exporter's port.
    pod = result.one("kubernetes:apps/v1:Deployment", "gpt-oss-server").inputs["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    exporter = next(c for c in pod["spec"]["containers"] if c["name"] == "metrics-exporter")
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == exporter["ports"][0]["name"]
    alerts = {r["alert"] for r in rule["spec"]["groups"][0]["rules"]}
    assert "GptOssNoReadyReplica" in alerts and "GptOssTtftAboveSlo" in alerts
    # No AWS metrics resources with an existing cluster.
    assert [r for r in result.resources if r.type in AMP_TYPES] == []


def test_the_prometheus_operator_store_needs_an_existing_cluster():
    with pytest.raises(SettingsError, match="prometheus-operator with an existing cluster"):
        run(config={"metricsStore": "prometheus-operator", "autoscaling": False})

"""Turn a `PlanResult` into what a reviewer reads: a tree, Kubernetes YAML and plan.json.

Only redacted views are rendered (secrets as "[secret]"; a Secret's data always so), and every
written text is checked against the plan's known secret values before it is written.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from components.metrics_store import alert_rules_yaml, scraper_configuration_yaml, stack_scope
from offline.program import SECRET_MARK, PlannedResource, PlanResult
from serving.config.settings import load_settings
from serving.observability.dashboard import render_dashboard_json
from serving.runtime.coldstart import render_cold_start

OPTIONS_FILE = "extra-llm-api-options.yaml"


class SecretLeakError(RuntimeError):
    pass


# --- Kubernetes objects ----------------------------------------------------------------------


HELM_RELEASE = "kubernetes:helm.sh/v3:Release"


def is_kubernetes_object(resource: PlannedResource) -> bool:
    """An object applied as it is (a Helm release is a chart the provider installs, not one)."""
    return resource.type.startswith("kubernetes:") and resource.custom and resource.type != HELM_RELEASE


def kubernetes_object(resource: PlannedResource) -> dict[str, Any]:
    """The object as it would be applied: redacted inputs, with the name the provider would
    have filled in and a Secret's values always hidden."""
    obj = resource.redacted_inputs()
    obj.setdefault("metadata", {})
    name = (resource.state.get("metadata") or {}).get("name")
    if name and "name" not in obj["metadata"]:
        obj["metadata"]["name"] = name
    if obj.get("kind") == "Secret":
        # Key names stay readable (they say what the Secret holds); values never are.
        for field in ("data", "stringData"):
            raw = resource.inputs.get(field)
            if isinstance(raw, dict):
                obj[field] = dict.fromkeys(raw, SECRET_MARK)
    ordered: dict[str, Any] = {key: obj[key] for key in ("apiVersion", "kind", "metadata") if key in obj}
    ordered.update({key: value for key, value in obj.items() if key not in ordered})
    return ordered


def kubernetes_objects(plan: PlanResult) -> list[dict[str, Any]]:
    return [kubernetes_object(r) for r in plan.resources if is_kubernetes_object(r)]


def trtllm_options(plan: PlanResult) -> str | None:
    """The TensorRT-LLM options file, taken from the ConfigMap the workload mounts."""
    for resource in plan.of_type("kubernetes:core/v1:ConfigMap"):
        for key, value in (resource.inputs.get("data") or {}).items():
            if key.endswith(".yaml") and isinstance(value, str) and "kv_cache_config" in value:
                return value
    return None


# --- the tree --------------------------------------------------------------------------------


def _get(values: dict[str, Any], path: str) -> Any:
    value: Any = values
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _fields(values: dict[str, Any], *paths: str) -> list[str]:
    shown = []
    for path in paths:
        value = _get(values, path)
        if value not in (None, [], {}, ""):
            shown.append(f"{path.split('.')[-1]}={_short(value)}")
    return shown


def _short(value: Any, key: str = "") -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    text = str(value)
    if text.startswith("-----BEGIN "):  # a PEM document: say what it is and how to save it
        label = text.splitlines()[0].strip("-").removeprefix("BEGIN ").lower()
        return f"<{label} (PEM); save it with: pulumi stack output {key} > {key}.pem>"
    return text


def _user_data(values: dict[str, Any]) -> list[str]:
    encoded = values.get("userData")
    if not isinstance(encoded, str) or encoded == SECRET_MARK:
        return []
    text = base64.b64decode(encoded).decode()
    if "strategy: RAID0" in text:
        return ["userData=nodeadm NodeConfig localStorage RAID0"]
    if "ephemeral-storage" in text:
        return ["userData=bottlerocket ephemeral-storage init+bind"]
    return ["userData=<custom>"]


def _launch_template(values: dict[str, Any]) -> list[str]:
    shown = _fields(
        values, "instanceType", "metadataOptions.httpTokens", "metadataOptions.httpPutResponseHopLimit"
    )
    for mapping in values.get("blockDeviceMappings") or []:
        ebs = mapping.get("ebs") or {}
        shown.append(
            f"{mapping.get('deviceName')}={ebs.get('volumeSize')}GiB {ebs.get('volumeType')}"
            f"{' encrypted' if str(ebs.get('encrypted')) == 'true' else ' UNENCRYPTED'}"
        )
    shown += _fields(
        values,
        "instanceMarketOptions.marketType",
        "capacityReservationSpecification.capacityReservationTarget.capacityReservationId",
    )
    return shown + _user_data(values)


def _pod_spec(spec: dict[str, Any]) -> list[str]:
    shown = []
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        limits = (container.get("resources") or {}).get("limits") or {}
        ports = ",".join(str(p.get("containerPort")) for p in container.get("ports") or [])
        gpus = limits.get("nvidia.com/gpu")
        shown.append(
            f"container {container.get('name')}: {container.get('image')}"
            + (f" ports={ports}" if ports else "")
            + (f" gpus={gpus}" if gpus else "")
        )
    if spec.get("nodeSelector"):
        shown.append(f"nodeSelector={_short(spec['nodeSelector'])}")
    for toleration in spec.get("tolerations") or []:
        shown.append(f"tolerates {toleration.get('key')}:{toleration.get('effect')}")
    return shown


def _workload(values: dict[str, Any]) -> list[str]:
    shown = _fields(values, "metadata.namespace", "metadata.name", "spec.replicas")
    template = _get(values, "spec.template.spec") or {}
    return shown + _pod_spec(template)


def _service(values: dict[str, Any]) -> list[str]:
    shown = _fields(
        values,
        "metadata.namespace",
        "metadata.name",
        "spec.type",
        "spec.loadBalancerClass",
        "spec.loadBalancerSourceRanges",
    )
    ports = [f"{p.get('port')}->{p.get('targetPort')}" for p in _get(values, "spec.ports") or []]
    if ports:
        shown.append("ports=" + ",".join(ports))
    for key, value in sorted((_get(values, "metadata.annotations") or {}).items()):
        shown.append(f"{key.removeprefix('service.beta.kubernetes.io/')}={value}")
    return shown


def _keys_only(field: str) -> Callable[[dict[str, Any]], list[str]]:
    def summary(values: dict[str, Any]) -> list[str]:
        shown = _fields(values, "metadata.namespace", "metadata.name")
        data = values.get(field)
        if isinstance(data, dict):
            shown.append(f"{field} keys=" + ",".join(sorted(data)))
        elif data == SECRET_MARK:
            shown.append(f"{field}={SECRET_MARK}")
        return shown

    return summary


def _secret(values: dict[str, Any]) -> list[str]:
    shown = _fields(values, "metadata.namespace", "metadata.name", "type")
    return shown + [f"{field}={SECRET_MARK}" for field in ("data", "stringData") if field in values]


def _network_policy(values: dict[str, Any]) -> list[str]:
    shown = _fields(values, "metadata.namespace", "metadata.name")
    for rule in _get(values, "spec.ingress") or []:
        sources = [peer.get("ipBlock", {}).get("cidr") for peer in rule.get("from") or []]
        ports = [str(p.get("port")) for p in rule.get("ports") or []]
        shown.append(f"in: {','.join(ports)} from {','.join(str(s) for s in sources)}")
    for rule in _get(values, "spec.egress") or []:
        ports = sorted({str(p.get("port")) for p in rule.get("ports") or []})
        shown.append(f"out: {','.join(ports)}")
    return shown


def _scraper(values: dict[str, Any]) -> list[str]:
    shown = _fields(
        values,
        "source.eks.clusterArn",
        "source.eks.subnetIds",
        "source.eks.securityGroupIds",
        "destination.amp.workspaceArn",
    )
    text = values.get("scrapeConfiguration")
    if isinstance(text, str) and text != SECRET_MARK:
        document = yaml.safe_load(text) or {}
        shown.append(f"scrape_interval={(document.get('global') or {}).get('scrape_interval')}")
        shown.append(
            "jobs=" + ",".join(job.get("job_name", "?") for job in document.get("scrape_configs") or [])
        )
    return shown


def _rule_groups(values: dict[str, Any]) -> list[str]:
    shown = _fields(values, "name")
    text = values.get("data")
    if isinstance(text, str) and text != SECRET_MARK:
        for group in (yaml.safe_load(text) or {}).get("groups") or []:
            rules = group.get("rules") or []
            shown.append(f"group {group.get('name')}: {len(rules)} alerts")
    return shown


def _alert_manager(values: dict[str, Any]) -> list[str]:
    text = values.get("definition")
    if not isinstance(text, str) or text == SECRET_MARK:
        return []
    config = yaml.safe_load((yaml.safe_load(text) or {}).get("alertmanager_config") or "") or {}
    topics = [
        sns.get("topic_arn")
        for receiver in config.get("receivers") or []
        for sns in receiver.get("sns_configs") or []
    ]
    return [f"sends to SNS {','.join(str(t) for t in topics)}"]


def _security_group_rule(direction: str, peer: str) -> Callable[[dict[str, Any]], list[str]]:
    def summary(values: dict[str, Any]) -> list[str]:
        port = values.get("fromPort")
        if values.get("toPort") not in (None, port):
            port = f"{port}-{values.get('toPort')}"
        source = values.get(peer) or values.get("cidrIpv4")
        return [
            f"{direction} {values.get('ipProtocol')}/{port} {'to' if direction == 'out' else 'from'} {source}"
        ]

    return summary


SUMMARIES: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "aws:ec2/vpc:Vpc": lambda v: _fields(v, "cidrBlock"),
    "aws:ec2/subnet:Subnet": lambda v: (
        _fields(v, "availabilityZone", "cidrBlock")
        + [key.split("/")[-1] for key in (v.get("tags") or {}) if key.startswith("kubernetes.io/role/")]
    ),
    "aws:ec2/natGateway:NatGateway": lambda v: _fields(v, "subnetId"),
    "aws:ec2/routeTable:RouteTable": lambda v: [
        f"route {r.get('cidrBlock')} -> {r.get('natGatewayId') or r.get('gatewayId')}"
        for r in v.get("routes") or []
    ],
    "aws:eks/cluster:Cluster": lambda v: (
        _fields(
            v,
            "name",
            "version",
            "accessConfig.authenticationMode",
            "enabledClusterLogTypes",
            "vpcConfig.endpointPrivateAccess",
            "vpcConfig.endpointPublicAccess",
            "vpcConfig.publicAccessCidrs",
            "upgradePolicy.supportType",
        )
        + (["secrets encrypted with KMS"] if v.get("encryptionConfig") else [])
    ),
    "aws:kms/key:Key": lambda v: _fields(v, "enableKeyRotation", "deletionWindowInDays"),
    "aws:eks/addon:Addon": lambda v: _fields(v, "addonName", "addonVersion", "configurationValues"),
    "aws:eks/accessEntry:AccessEntry": lambda v: _fields(v, "principalArn", "type"),
    "aws:eks/accessPolicyAssociation:AccessPolicyAssociation": lambda v: _fields(
        v, "principalArn", "policyArn"
    ),
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": lambda v: _fields(v, "policyArn"),
    "aws:eks/nodeGroup:NodeGroup": lambda v: _fields(
        v,
        "nodeGroupName",
        "amiType",
        "capacityType",
        "instanceTypes",
        "scalingConfig.desiredSize",
        "scalingConfig.minSize",
        "scalingConfig.maxSize",
        "labels",
        "taints",
        "subnetIds",
        "updateConfig.updateStrategy",
        "nodeRepairConfig.enabled",
    ),
    "aws:ec2/launchTemplate:LaunchTemplate": _launch_template,
    "aws:cloudwatch/logGroup:LogGroup": lambda v: _fields(v, "name", "retentionInDays"),
    "aws:eks/podIdentityAssociation:PodIdentityAssociation": lambda v: _fields(
        v, "namespace", "serviceAccount"
    ),
    HELM_RELEASE: lambda v: _fields(v, "chart", "version", "repositoryOpts.repo", "namespace"),
    "aws:amp/workspace:Workspace": lambda v: _fields(v, "alias"),
    "aws:amp/workspaceConfiguration:WorkspaceConfiguration": lambda v: _fields(v, "retentionPeriodInDays"),
    "aws:amp/scraper:Scraper": _scraper,
    "aws:amp/ruleGroupNamespace:RuleGroupNamespace": _rule_groups,
    "aws:amp/alertManagerDefinition:AlertManagerDefinition": _alert_manager,
    "aws:ec2/securityGroup:SecurityGroup": lambda v: _fields(v, "description"),
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": _security_group_rule(
        "in", "referencedSecurityGroupId"
    ),
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": _security_group_rule(
        "out", "referencedSecurityGroupId"
    ),
    "tls:index/certRequest:CertRequest": lambda v: _fields(v, "subject.commonName", "dnsNames"),
    "tls:index/selfSignedCert:SelfSignedCert": lambda v: _fields(
        v, "subject.commonName", "isCaCertificate", "validityPeriodHours"
    ),
    "tls:index/locallySignedCert:LocallySignedCert": lambda v: _fields(
        v, "validityPeriodHours", "earlyRenewalHours"
    ),
    "tls:index/privateKey:PrivateKey": lambda v: _fields(v, "algorithm", "ecdsaCurve"),
    "kubernetes:apps/v1:Deployment": _workload,
    "kubernetes:apps/v1:DaemonSet": _workload,
    "kubernetes:apps/v1:StatefulSet": _workload,
    "kubernetes:core/v1:Service": _service,
    "kubernetes:core/v1:ConfigMap": _keys_only("data"),
    "kubernetes:core/v1:Secret": _secret,
    "kubernetes:core/v1:Namespace": lambda v: _fields(v, "metadata.name"),
    "kubernetes:networking.k8s.io/v1:NetworkPolicy": _network_policy,
    "kubernetes:policy/v1:PodDisruptionBudget": lambda v: _fields(
        v, "metadata.name", "spec.minAvailable", "spec.maxUnavailable"
    ),
}


def render_tree(plan: PlanResult) -> str:
    children: dict[str | None, list[PlannedResource]] = {}
    urns = {r.urn for r in plan.resources}
    for resource in plan.resources:
        parent = resource.parent if resource.parent in urns else None
        children.setdefault(parent, []).append(resource)
    # Registration order depends on when outputs resolve; sort so a diff of two plans shows
    # what changed: components first, then by type and name.
    for siblings in children.values():
        siblings.sort(key=lambda r: (r.custom, r.type, r.name))

    lines = [f"Stack {plan.stack}: {len(plan.resources)} resources"]

    def walk(parent: str | None, indent: str) -> None:
        for resource in children.get(parent, []):
            lines.append(f"{indent}{resource.type}  {resource.name}")
            summary = SUMMARIES.get(resource.type)
            for detail in summary(resource.redacted_inputs()) if summary else []:
                lines.append(f"{indent}    · {detail}")
            walk(resource.urn, indent + "  ")

    walk(None, "  ")
    lines.append("")
    lines.append("Outputs:")
    for key, value in plan.redacted_outputs().items():
        lines.append(f"  {key}: {_short(value, key)}")
    return "\n".join(lines) + "\n"


# --- files -----------------------------------------------------------------------------------


def plan_document(plan: PlanResult) -> dict[str, Any]:
    return {
        "stack": plan.stack,
        "resources": [
            {
                "type": r.type,
                "name": r.name,
                "urn": r.urn,
                "parent": r.parent,
                "custom": r.custom,
                "provider": r.provider,
                "inputs": r.redacted_inputs(),
            }
            for r in plan.resources
        ],
        "outputs": plan.redacted_outputs(),
    }


def _file_name(index: int, obj: dict[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    parts = [
        f"{index:02d}",
        obj.get("kind", "object").lower(),
        metadata.get("namespace") or "cluster",
        metadata.get("name") or "unnamed",
    ]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts)) + ".yaml"


def check_no_secrets(plan: PlanResult, text: str, where: str) -> None:
    for value in plan.secret_values:
        if value in text:
            raise SecretLeakError(f"a secret value would be written to {where}; refusing")


# How long a new GPU node takes to serve (modelled): what a scale-up or a replaced node costs.
COLD_START_FILE = "cold-start.md"
# The metrics path's files, from serving.observability's renderers with the stack's settings:
# what the workspace evaluates (alerts.yaml), what its scraper runs (scrape-config.yaml), and
# what to import into Grafana (dashboard.json; docs/operations.md#metrics).
DASHBOARD_FILE = "dashboard.json"
ALERTS_FILE = "alerts.yaml"
SCRAPE_CONFIG_FILE = "scrape-config.yaml"


def observability_files(plan: PlanResult, target: Path) -> dict[Path, str]:
    settings = load_settings(plan.config, plan.secret_config_keys)
    return {
        target / DASHBOARD_FILE: render_dashboard_json(stack_scope(settings.serving), plan.stack),
        target / ALERTS_FILE: alert_rules_yaml(plan.stack, settings.serving, settings.metrics),
        target / SCRAPE_CONFIG_FILE: scraper_configuration_yaml(settings.serving, settings.metrics),
    }


def write_plan(plan: PlanResult, out_dir: Path) -> list[Path]:
    """Write build/<stack>/: kubernetes/*.yaml, the TensorRT-LLM options file, plan.json, plan.txt,
    the modelled cold-start budget, and the dashboard, alert rules and scrape configuration."""
    target = out_dir / plan.stack
    kube_dir = target / "kubernetes"
    kube_dir.mkdir(parents=True, exist_ok=True)
    for stale in kube_dir.glob("*.yaml"):
        stale.unlink()

    files: dict[Path, str] = {}
    for index, obj in enumerate(kubernetes_objects(plan), start=1):
        files[kube_dir / _file_name(index, obj)] = yaml.safe_dump(obj, sort_keys=False, width=100)
    options = trtllm_options(plan)
    if options is not None:
        files[target / OPTIONS_FILE] = options
    files[target / "plan.json"] = json.dumps(plan_document(plan), indent=2) + "\n"
    files[target / "plan.txt"] = render_tree(plan)
    files[target / COLD_START_FILE] = render_cold_start()
    files.update(observability_files(plan, target))

    for path, text in files.items():
        check_no_secrets(plan, text, str(path))
    for path, text in files.items():
        path.write_text(text)
    return sorted(files)

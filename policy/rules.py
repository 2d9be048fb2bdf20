"""The stack's policies, importable without the Pulumi CLI.

`pulumi_policy.PolicyPack(...)` starts a gRPC server and blocks forever, so it is only built in
`policy/__main__.py`, which the CLI runs (`pulumi preview --policy-pack policy`). Everything here
is plain policy objects: the CLI runs them through the PolicyPack, `python -m policy.offline`
and the tests call their `validate` functions directly with pulumi-policy's own argument types.

Mandatory policies catch what must never ship; advisory ones warn (cost, capacity).
Every violation message names the resource and says what would comply. No message ever quotes
a secret value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from policy.resources import (
    CONFIG_MAP,
    EC2_INSTANCE,
    GATEWAY_CONTAINER,
    GATEWAY_PORT_NAME,
    GPU_RESOURCE,
    K8S_SECRET,
    LAUNCH_TEMPLATE,
    NODE_GROUP,
    OPTIONS_FILE_KEY,
    SECRET_ENV_NAME,
    SECRETS_MANAGER_VERSION,
    SERVER_CONTAINER,
    SERVICE,
    WORKLOAD_TYPES,
    Container,
    as_int,
    as_list,
    as_mapping,
    containers,
    get_path,
    gpus_per_instance,
    image_pin_problem,
    is_gpu_instance_type,
    known,
    known_items,
    known_values,
    metadata_name,
    namespace_of,
    pod_labels,
    pod_spec,
    same_namespace,
    secret_fragments,
    token_shape,
    usd_per_hour,
)
from serving.config.project import project_defaults, project_name

# The stack setting the budget comes from; when neither the policy config nor the stack config
# gives one, its Pulumi.yaml default applies (one p5.48xlarge at about 55 USD an hour fits).
BUDGET_KEY = "costBudgetUsdPerHour"

LB_INTERNAL = "service.beta.kubernetes.io/aws-load-balancer-internal"
LB_SCHEME = "service.beta.kubernetes.io/aws-load-balancer-scheme"
LB_TYPE = "service.beta.kubernetes.io/aws-load-balancer-type"
LB_CONTROLLER_CLASS = "service.k8s.aws/nlb"


def _label(resource_type: str, name: str) -> str:
    return f"{resource_type} {name!r}"


# --- 1. GPU node groups carry the GPU taint --------------------------------------------------


def _launch_template_for(
    node_group: PolicyResource, templates: list[PolicyResource]
) -> PolicyResource | None:
    """The launch template a node group uses: by property dependency (engine), else by id/name."""
    for dependency in node_group.property_dependencies.get("launchTemplate", []):
        if dependency.resource_type == LAUNCH_TEMPLATE:
            return dependency
    reference = known(lambda: as_mapping(node_group.props.get("launchTemplate")), {})
    wanted_id = known(lambda: reference.get("id"), None)
    wanted_name = known(lambda: reference.get("name"), None)
    for template in templates:
        template_id = known(lambda: template.props.get("id"), None)
        template_name = known(lambda: template.props.get("name"), None)
        if (wanted_id and wanted_id == template_id) or (wanted_name and wanted_name == template_name):
            return template
    return None


def node_group_instance_types(node_group: PolicyResource, templates: list[PolicyResource]) -> list[str]:
    types = [
        t for t in known(lambda: as_list(node_group.props.get("instanceTypes")), []) if isinstance(t, str)
    ]
    template = _launch_template_for(node_group, templates)
    if template is not None:
        template_type = known(lambda: template.props.get("instanceType"), None)
        if isinstance(template_type, str):
            types.append(template_type)
    return types


def is_gpu_node_group(node_group: PolicyResource, templates: list[PolicyResource]) -> bool:
    ami_type = known(lambda: node_group.props.get("amiType"), None)
    if isinstance(ami_type, str) and "NVIDIA" in ami_type.upper():
        return True
    return any(is_gpu_instance_type(t) for t in node_group_instance_types(node_group, templates))


def _has_gpu_taint(props: Mapping[str, Any]) -> bool:
    for taint in as_list(props.get("taints")):
        taint = as_mapping(taint)
        if taint.get("key") == GPU_RESOURCE and taint.get("effect") == "NO_SCHEDULE":
            return True
    return False


def validate_gpu_node_group_taint(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    templates = [r for r in args.resources if r.resource_type == LAUNCH_TEMPLATE]
    for group in (r for r in args.resources if r.resource_type == NODE_GROUP):
        if not is_gpu_node_group(group, templates):
            continue
        if not _has_gpu_taint(group.props):
            report_violation(
                f"{_label(group.resource_type, group.name)} runs GPU instances but has no taint "
                f"{{key: {GPU_RESOURCE}, effect: NO_SCHEDULE}}: any pod could land on a p5 node and "
                'take its CPU and memory from the GPU servers. Add that taint (value "true") to '
                "the node group's taints.",
                group.urn,
            )


gpu_node_group_taint = StackValidationPolicy(
    name="gpu-node-group-tainted",
    description="A node group with NVIDIA GPUs (NVIDIA AMI or GPU instance type) carries the "
    "nvidia.com/gpu NoSchedule taint.",
    validate=validate_gpu_node_group_taint,
    enforcement_level=EnforcementLevel.MANDATORY,
)


# --- 2. The server's GPU limit equals tensor x pipeline parallel size ------------------------

_FLAG = re.compile(
    r"^--(?P<flag>tp_size|pp_size|tensor_parallel_size|pipeline_parallel_size)(?:=(?P<value>.*))?$"
)
_FLAG_ALIASES = {"tensor_parallel_size": "tp_size", "pipeline_parallel_size": "pp_size"}


def parallel_sizes_from_args(words: list[str]) -> dict[str, int]:
    """`--tp_size N` / `--pp_size M` (or `--tp_size=N`) from a command line."""
    sizes: dict[str, int] = {}
    for index, word in enumerate(words):
        match = _FLAG.match(word)
        if not match:
            continue
        raw = match.group("value")
        if raw is None and index + 1 < len(words):
            raw = words[index + 1]
        value = as_int(raw)
        if value is not None:
            flag = match.group("flag")
            sizes[_FLAG_ALIASES.get(flag, flag)] = value
    return sizes


def parallel_sizes_from_options(text: str) -> dict[str, int]:
    """tensor/pipeline parallel sizes from the `--extra_llm_api_options` YAML (it wins over flags)."""
    try:
        options = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    sizes: dict[str, int] = {}
    if isinstance(options, Mapping):
        for key, flag in (("tensor_parallel_size", "tp_size"), ("pipeline_parallel_size", "pp_size")):
            value = as_int(options.get(key))
            if value is not None:
                sizes[flag] = value
    return sizes


def _options_text_for(
    workload: PolicyResource, spec: Mapping[str, Any], config_maps: list[PolicyResource]
) -> str | None:
    """The options YAML of the ConfigMap a workload mounts, if one carries the options key."""
    namespace = namespace_of(workload.props)
    mounted = {
        name
        for volume in as_list(spec.get("volumes"))
        if isinstance(name := get_path(volume, "configMap", "name"), str)
    }
    candidates = [
        cm
        for cm in config_maps
        if same_namespace(namespace_of(cm.props), namespace)
        and isinstance(get_path(cm.props, "data", OPTIONS_FILE_KEY), str)
    ]
    by_name = [cm for cm in candidates if metadata_name(cm.props) in mounted]
    # Auto-named ConfigMaps may show no name offline: one candidate in the namespace is the one.
    chosen = by_name or (candidates if len(candidates) == 1 else [])
    return get_path(chosen[0].props, "data", OPTIONS_FILE_KEY) if chosen else None


def validate_gpu_limit_matches_parallelism(
    args: StackValidationArgs, report_violation: ReportViolation
) -> None:
    config_maps = [r for r in args.resources if r.resource_type == CONFIG_MAP]
    for workload in (r for r in args.resources if r.resource_type in WORKLOAD_TYPES):
        spec = known(lambda: pod_spec(workload.resource_type, workload.props), None)
        if spec is None:
            continue
        for container in known(lambda: list(containers(spec)), []):
            if container.name != SERVER_CONTAINER or container.init:
                continue
            sizes = {"tp_size": 1, "pp_size": 1}
            sizes.update(parallel_sizes_from_args(known(lambda: container.command_line, [])))
            where = "the command line"
            options_text = known(lambda: _options_text_for(workload, spec, config_maps), None)
            if options_text is not None:
                from_yaml = parallel_sizes_from_options(options_text)
                if from_yaml:
                    where = f"{OPTIONS_FILE_KEY} (it wins over the flags)"
                sizes.update(from_yaml)
            needed = sizes["tp_size"] * sizes["pp_size"]
            limit = known(lambda: container.gpu_limit, None)
            if limit != needed:
                report_violation(
                    f"{_label(workload.resource_type, workload.name)}: container {SERVER_CONTAINER!r} "
                    f"asks for {limit if limit is not None else 'no'} {GPU_RESOURCE} but {where} says "
                    f"tensor_parallel_size x pipeline_parallel_size = {sizes['tp_size']} x "
                    f"{sizes['pp_size']} = {needed}; set resources.limits[{GPU_RESOURCE!r}] to {needed} "
                    "(fewer GPUs than ranks cannot start, more leave GPUs idle).",
                    workload.urn,
                )


gpu_limit_matches_parallelism = StackValidationPolicy(
    name="gpu-limit-matches-parallelism",
    description="The trtllm-serve container's nvidia.com/gpu limit equals tensor_parallel_size x "
    "pipeline_parallel_size (options YAML over flags).",
    validate=validate_gpu_limit_matches_parallelism,
    enforcement_level=EnforcementLevel.MANDATORY,
)


# --- 3. Internet-facing load balancers only reach the API-key gateway -------------------------


def load_balancer_exposure(props: Mapping[str, Any]) -> str | None:
    """'internet-facing', 'internal', or None when the Service is not a LoadBalancer."""
    if get_path(props, "spec", "type") != "LoadBalancer":
        return None
    annotations = as_mapping(get_path(props, "metadata", "annotations"))
    scheme = str(annotations.get(LB_SCHEME, "")).strip().lower()
    if scheme in ("internet-facing", "internal"):
        return scheme
    lb_class = get_path(props, "spec", "loadBalancerClass")
    lb_type = str(annotations.get(LB_TYPE, "")).strip().lower()
    if lb_class == LB_CONTROLLER_CLASS or lb_type in ("external", "nlb-ip"):
        return "internal"  # the AWS Load Balancer Controller's default scheme
    if str(annotations.get(LB_INTERNAL, "")).strip().lower() == "true":
        return "internal"
    return "internet-facing"  # the legacy cloud provider's default: a public load balancer


def _selects(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _gateway_containers(workload: PolicyResource) -> list[Container]:
    spec = pod_spec(workload.resource_type, workload.props) or {}
    return [c for c in containers(spec) if c.name == GATEWAY_CONTAINER and not c.init]


def validate_internet_facing_lb(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    workloads = [r for r in args.resources if r.resource_type in WORKLOAD_TYPES]
    for service in (r for r in args.resources if r.resource_type == SERVICE):
        if known(lambda: load_balancer_exposure(service.props), "internet-facing") != "internet-facing":
            continue
        label = _label(service.resource_type, service.name)
        namespace = namespace_of(service.props)
        selector = known(lambda: dict(as_mapping(get_path(service.props, "spec", "selector"))), {})
        targets = [
            w
            for w in workloads
            if same_namespace(namespace_of(w.props), namespace)
            and known(lambda: _selects(selector, pod_labels(w.resource_type, w.props)), False)
        ]
        if not targets:
            report_violation(
                f"{label} is an internet-facing load balancer whose selector {selector} matches no "
                f"workload of this stack, so nothing shows that an {GATEWAY_CONTAINER!r} API-key "
                f"gateway guards it. Select the server pods and target their {GATEWAY_PORT_NAME!r} "
                f'port, or make it internal ({LB_INTERNAL}: "true").',
                service.urn,
            )
            continue
        for workload in targets:
            gateways = known(lambda: _gateway_containers(workload), [])
            gateway_ports = {p for c in gateways for p in c.port_numbers_named(GATEWAY_PORT_NAME)}
            if not gateways or not gateway_ports:
                report_violation(
                    f"{label} is internet-facing and sends traffic to "
                    f"{_label(workload.resource_type, workload.name)}, whose pods have no "
                    f"{GATEWAY_CONTAINER!r} container with a port named {GATEWAY_PORT_NAME!r}: "
                    "trtllm-serve has no authentication of its own. Add the API-key gateway "
                    f'sidecar or make the load balancer internal ({LB_INTERNAL}: "true").',
                    service.urn,
                )
                continue
            for port in known(lambda: as_list(get_path(service.props, "spec", "ports")), []):
                port = as_mapping(port)
                target = known(lambda: port.get("targetPort", port.get("port")), None)
                if target == GATEWAY_PORT_NAME or as_int(target) in gateway_ports:
                    continue
                report_violation(
                    f"{label} is internet-facing and its port {port.get('port')} targets {target!r}, "
                    f"not the API-key gateway: requests would skip the key check. Set targetPort to "
                    f"{GATEWAY_PORT_NAME!r} (port {sorted(gateway_ports)[0]}).",
                    service.urn,
                )


internet_facing_lb_requires_api_key = StackValidationPolicy(
    name="internet-facing-lb-requires-api-key",
    description="An internet-facing LoadBalancer Service sends traffic only to the 'gateway' port "
    "of pods that run the 'api-gateway' API-key sidecar.",
    validate=validate_internet_facing_lb,
    enforcement_level=EnforcementLevel.MANDATORY,
)


# --- 4. No secret value in ConfigMaps, env literals or arguments -----------------------------


@dataclass(frozen=True)
class _PlainText:
    """One place where plain (non-secret) text ends up: a ConfigMap key, an env value, an argument."""

    where: str
    text: str
    env_name: str | None = None


def _plain_texts(resource: PolicyResource) -> Iterable[_PlainText]:
    props = resource.props
    if resource.resource_type == CONFIG_MAP:
        for field in ("data", "binaryData"):
            for key, value in known_items(known(lambda: props.get(field), {})):
                if isinstance(value, str):
                    yield _PlainText(f"{field}[{key!r}]", value)
        return
    if resource.resource_type not in WORKLOAD_TYPES:
        return
    spec = known(lambda: pod_spec(resource.resource_type, props), None)
    if spec is None:
        return
    for container in known(lambda: list(containers(spec)), []):
        for index, word in enumerate(known(lambda: container.command_line, [])):
            yield _PlainText(f"container {container.name!r} command/args[{index}]", word)
        for env in known(lambda: as_list(container.spec.get("env")), []):
            env = as_mapping(env)
            value = known(lambda: env.get("value"), None)
            if isinstance(value, str):
                yield _PlainText(
                    f"container {container.name!r} env {env.get('name')!r}",
                    value,
                    env_name=str(env.get("name", "")),
                )


def _k8s_secret_values(resource: PolicyResource) -> list[str]:
    import base64
    import binascii

    values: list[str] = []
    for value in known_values(known(lambda: resource.props.get("stringData"), {})):
        if isinstance(value, str):
            values.append(value)
    for value in known_values(known(lambda: resource.props.get("data"), {})):
        if isinstance(value, str):
            try:
                values.append(base64.b64decode(value, validate=True).decode("utf-8"))
            except (binascii.Error, UnicodeDecodeError):
                values.append(value)
    return values


def known_secret_values(resources: list[PolicyResource], config: Mapping[str, Any]) -> set[str]:
    """Every secret string the stack holds: Kubernetes Secrets, Secrets Manager versions, and
    what the caller passes as `knownSecretValues` (the offline runner passes the stack's secrets).

    In the real engine, pulumi-policy 1.21 hands validate functions plain values: it unwraps
    Pulumi's secret marker (deserialize_properties without proxy_secrets), so a policy cannot
    tell a secret input from its shape. The Secret resources are where the stack keeps its
    secrets, so their values are the reference.
    """
    values: set[str] = set()
    for resource in resources:
        if resource.resource_type == K8S_SECRET:
            values.update(_k8s_secret_values(resource))
        elif resource.resource_type == SECRETS_MANAGER_VERSION:
            secret = known(lambda: resource.props.get("secretString"), None)
            if isinstance(secret, str):
                values.add(secret)
    values.update(v for v in config.get("knownSecretValues", []) or [] if isinstance(v, str))
    fragments: set[str] = set()
    for value in values:
        fragments |= secret_fragments(value)
    return fragments


def _secret_finding(item: _PlainText, fragments: set[str]) -> str | None:
    if any(fragment in item.text for fragment in fragments):
        return "holds the value of one of the stack's secrets"
    shape = token_shape(item.text)
    if shape is not None:
        return f"holds what looks like {shape}"
    if item.env_name and SECRET_ENV_NAME.search(item.env_name) and item.text.strip():
        return "is a credential-named variable with a literal value"
    return None


def validate_no_plain_secrets(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    fragments = known_secret_values(args.resources, args.get_config())
    for resource in args.resources:
        for item in _plain_texts(resource):
            finding = _secret_finding(item, fragments)
            if finding:
                report_violation(
                    f"{_label(resource.resource_type, resource.name)}: {item.where} {finding}. "
                    "ConfigMaps, env values and arguments are stored and shown in plain text; put "
                    "the value in a Kubernetes Secret and reference it with "
                    "env[].valueFrom.secretKeyRef or a secret volume.",
                    resource.urn,
                )


no_plain_secrets = StackValidationPolicy(
    name="no-secret-in-plain-config",
    description="No secret value (a Secret's value, a stack secret, or a token shape: hf_..., "
    "Bearer ..., AWS keys) in a ConfigMap, an env literal or a container argument.",
    validate=validate_no_plain_secrets,
    enforcement_level=EnforcementLevel.MANDATORY,
    config_schema=PolicyConfigSchema(
        properties={"knownSecretValues": {"type": "array", "items": {"type": "string"}}},
    ),
)


# --- 5. IMDSv2 required on nodes -------------------------------------------------------------


def validate_imdsv2_required(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in (LAUNCH_TEMPLATE, EC2_INSTANCE):
        return
    http_tokens = get_path(args.props, "metadataOptions", "httpTokens")
    if http_tokens != "required":
        shown = "not set (IMDSv1 stays allowed)" if http_tokens is None else repr(http_tokens)
        report_violation(
            f"{_label(args.resource_type, args.name)}: metadataOptions.httpTokens is {shown}. "
            "With IMDSv1 any process that can make an HTTP request (an SSRF in a pod) reads the "
            'node role\'s credentials; set metadataOptions.httpTokens to "required".',
            None,
        )


imdsv2_required = ResourceValidationPolicy(
    name="imdsv2-required",
    description="Launch templates and instances require IMDSv2 (metadataOptions.httpTokens = required).",
    validate=validate_imdsv2_required,
    enforcement_level=EnforcementLevel.MANDATORY,
)


# --- 6. Every container image pinned ----------------------------------------------------------


def validate_images_pinned(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    spec = pod_spec(args.resource_type, args.props)
    if spec is None:
        return
    for container in containers(spec):
        problem = image_pin_problem(container.image)
        if problem:
            kind = "init container" if container.init else "container"
            report_violation(
                f"{_label(args.resource_type, args.name)}: {kind} {container.name!r} {problem}; "
                "pin a release tag (e.g. nvcr.io/nvidia/tensorrt-llm/release:1.2.1) or a "
                "@sha256 digest so a restart never pulls different code.",
                None,
            )


images_pinned = ResourceValidationPolicy(
    name="container-images-pinned",
    description="Every container and init container image has a tag other than latest, or a sha256 digest.",
    validate=validate_images_pinned,
    enforcement_level=EnforcementLevel.MANDATORY,
)


# --- 7. Advisory: GPU nodes within the hourly budget -----------------------------------------


@dataclass(frozen=True)
class GpuNodeGroupCapacity:
    resource: PolicyResource
    instance_type: str
    nodes: int  # the desired size: what runs now
    # What an autoscaler may grow it to (the group's maxSize when its range is open), else nodes.
    max_nodes: int = 0

    @property
    def ceiling_nodes(self) -> int:
        return max(self.nodes, self.max_nodes)

    @property
    def gpus(self) -> int | None:
        per_instance = gpus_per_instance(self.instance_type)
        return None if per_instance is None else per_instance * self.nodes


def gpu_node_groups(resources: list[PolicyResource]) -> list[GpuNodeGroupCapacity]:
    templates = [r for r in resources if r.resource_type == LAUNCH_TEMPLATE]
    groups: list[GpuNodeGroupCapacity] = []
    for group in (r for r in resources if r.resource_type == NODE_GROUP):
        if not is_gpu_node_group(group, templates):
            continue
        types = [t for t in node_group_instance_types(group, templates) if is_gpu_instance_type(t)]
        scaling = known(lambda: as_mapping(get_path(group.props, "scalingConfig")), {})
        nodes = known(lambda: as_int(scaling.get("desiredSize")), None)
        low = known(lambda: as_int(scaling.get("minSize")), None)
        high = known(lambda: as_int(scaling.get("maxSize")), None)
        # An open range on a running group is an autoscaler's room; a group held at 0 (a Capacity
        # Block waiting for its window) has maxSize 1 only because EKS needs it.
        autoscaled = nodes and low is not None and high is not None and low < high
        if types and nodes is not None:
            groups.append(
                GpuNodeGroupCapacity(group, types[0], nodes, high if autoscaled and high else nodes)
            )
    return groups


def _stack_config_budget() -> int | None:
    """The stack's `costBudgetUsdPerHour`: the CLI passes stack config to policy packs."""
    try:
        import pulumi

        return pulumi.Config(project_name()).get_int(BUDGET_KEY)
    except Exception:
        return None


def budget_usd_per_hour(config: Mapping[str, Any]) -> float:
    configured = config.get("maxUsdPerHour")
    if isinstance(configured, (int, float)) and not isinstance(configured, bool):
        return float(configured)
    from_stack = _stack_config_budget()
    return float(from_stack if from_stack is not None else project_defaults()[BUDGET_KEY])


def validate_cost_budget(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    budget = budget_usd_per_hour(args.get_config())
    total = 0.0
    parts: list[str] = []
    for group in gpu_node_groups(args.resources):
        price = usd_per_hour(group.instance_type)
        if price is None:
            report_violation(
                f"{_label(group.resource.resource_type, group.resource.name)}: no checked on-demand "
                f"price for {group.instance_type} in serving/runtime/hardware.py, so its cost is not counted "
                "against the budget; add the price there.",
                group.resource.urn,
            )
            continue
        total += price * group.ceiling_nodes
        at_most = "at most " if group.ceiling_nodes > group.nodes else ""
        parts.append(f"{at_most}{group.ceiling_nodes} x {group.instance_type} at {price:.2f}")
    if total > budget:
        report_violation(
            f"The GPU nodes cost about {total:.2f} USD an hour on demand ({', '.join(parts)}), above "
            f"the budget of {budget:.2f} USD an hour. Lower gpuNodeCount (or gpuNodeMaxCount, the "
            "autoscaler's ceiling), or raise costBudgetUsdPerHour (or this policy's maxUsdPerHour) "
            "if the spend is intended.",
            None,
        )


cost_budget = StackValidationPolicy(
    name="gpu-cost-within-budget",
    description="The GPU node groups' on-demand cost per hour, at the autoscaler's maximum where "
    "there is one, stays within the configured budget.",
    validate=validate_cost_budget,
    enforcement_level=EnforcementLevel.ADVISORY,
    config_schema=PolicyConfigSchema(
        properties={"maxUsdPerHour": {"type": "number", "minimum": 0}},
    ),
)


# --- 8. Advisory: GPU replicas fit on the GPU nodes ------------------------------------------


def _pod_gpus(workload: PolicyResource) -> int:
    spec = pod_spec(workload.resource_type, workload.props) or {}
    return sum(c.gpu_limit or 0 for c in containers(spec) if not c.init)


def validate_replicas_fit(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    groups = gpu_node_groups(args.resources)
    if not groups:
        args.not_applicable("no GPU node group in this stack (an existing cluster brings its own)")
    uncounted = sorted({g.instance_type for g in groups if g.gpus is None})
    if uncounted:
        # Guessing would warn about capacity that may well be there.
        args.not_applicable(
            f"GPUs per instance of {', '.join(uncounted)} are not in serving/runtime/hardware.py"
        )
    capacity = sum(g.gpus or 0 for g in groups)
    largest_node = max((gpus_per_instance(g.instance_type) or 0) for g in groups)
    needed = 0
    parts: list[str] = []
    for workload in (
        r
        for r in args.resources
        if r.resource_type in ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet")
    ):
        per_pod = known(lambda: _pod_gpus(workload), 0)
        if per_pod == 0:
            continue
        replicas = known(lambda: as_int(get_path(workload.props, "spec", "replicas")), None)
        replicas = 1 if replicas is None else replicas
        needed += replicas * per_pod
        parts.append(f"{workload.name}: {replicas} x {per_pod}")
        if per_pod > largest_node:
            report_violation(
                f"{_label(workload.resource_type, workload.name)}: one pod asks for {per_pod} GPUs "
                f"but the largest GPU node has {largest_node}; the pod can never be scheduled.",
                workload.urn,
            )
    if needed > capacity:
        report_violation(
            f"GPU pods need {needed} GPUs ({', '.join(parts)}) but the GPU node groups hold "
            f"{capacity} ({', '.join(f'{g.nodes} x {g.instance_type}' for g in groups)}); "
            f"{needed - capacity} GPUs' worth of pods would stay Pending. Lower replicas or raise "
            "gpuNodeCount.",
            None,
        )


replicas_fit_nodes = StackValidationPolicy(
    name="gpu-replicas-fit-nodes",
    description="Deployment replicas x GPUs per pod fit in the GPU node groups' desired size x GPUs per instance.",
    validate=validate_replicas_fit,
    enforcement_level=EnforcementLevel.ADVISORY,
)


# --- 9. Advisory: the endpoint speaks TLS ---------------------------------------------------

LB_SSL_CERT = "service.beta.kubernetes.io/aws-load-balancer-ssl-cert"
GATEWAY_CONFIG_KEY = "nginx.conf"


def _gateway_terminates_tls(nginx_conf: str) -> bool:
    """Every listener a client can reach speaks TLS (a loopback-only one, such as a status page
    for the pod's own exporter, is not reachable from outside the pod)."""
    listens = [line.split() for line in nginx_conf.splitlines() if line.strip().startswith("listen ")]
    reachable = [words for words in listens if not words[1].startswith(("127.", "[::1]", "localhost"))]
    return bool(reachable) and all("ssl;" in words or "ssl" in words for words in reachable)


def validate_endpoint_tls(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    services = [
        r
        for r in args.resources
        if r.resource_type == SERVICE and get_path(r.props, "spec", "type") == "LoadBalancer"
    ]
    if not services:
        args.not_applicable("no LoadBalancer Service in this stack")
    for service in services:
        annotations = known(lambda: as_mapping(get_path(service.props, "metadata", "annotations")), {})
        if known(lambda: annotations.get(LB_SSL_CERT), None):
            continue  # the NLB presents an ACM certificate
        namespace = namespace_of(service.props)
        gateway_configs = [
            text
            for r in args.resources
            if r.resource_type == CONFIG_MAP and same_namespace(namespace_of(r.props), namespace)
            if isinstance(text := known(lambda: get_path(r.props, "data", GATEWAY_CONFIG_KEY), None), str)
        ]
        if gateway_configs and all(_gateway_terminates_tls(text) for text in gateway_configs):
            continue
        report_violation(
            f"{_label(service.resource_type, service.name)} serves plain HTTP: the API key and every "
            "prompt cross the network in clear text. Remove endpointPlainHttp (the gateway then "
            "presents the stack CA's certificate) or set endpointCertificateArn and endpointHostname.",
            service.urn,
        )


endpoint_uses_tls = StackValidationPolicy(
    name="endpoint-uses-tls",
    description="A LoadBalancer Service reaches clients over TLS: an ACM certificate on the NLB, or "
    "a gateway that listens with TLS.",
    validate=validate_endpoint_tls,
    enforcement_level=EnforcementLevel.ADVISORY,
)


POLICIES: list[Policy] = [
    gpu_node_group_taint,
    gpu_limit_matches_parallelism,
    internet_facing_lb_requires_api_key,
    no_plain_secrets,
    imdsv2_required,
    images_pinned,
    cost_budget,
    replicas_fit_nodes,
    endpoint_uses_tls,
]

"""The serving workload: TensorRT-LLM behind an API-key gateway, on an internal load balancer.

Registers the objects that `serving.workload.manifests` describes, plus the secrets: the Hugging
Face token (from Pulumi secret config, never unwrapped here), a generated API key and the
gateway's TLS key. They stay Pulumi secrets from end to end, so state, outputs and logs only ever
hold ciphertext.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.cluster import resources_in
from components.endpoint_certificate import EndpointCertificate, EndpointCertificateArgs
from serving.config.settings import EndpointSettings, ServingSettings
from serving.runtime.options import render_options_yaml
from serving.workload import autoscaling as autoscaling_manifests
from serving.workload import certificates, gateway
from serving.workload import manifests as workload


@dataclass(frozen=True)
class InferenceServerArgs:
    serving: ServingSettings
    endpoint: EndpointSettings
    hf_access_token: pulumi.Input[str]  # a Pulumi secret
    # The stack's KMS key, for the optional Secrets Manager copy of the token; None for an
    # existing cluster (a key of this component's own is made then).
    kms_key_arn: pulumi.Input[str] | None = None
    # What the Service must wait for, and outlive on destroy: the load balancer controller.
    load_balancer_controller: pulumi.Resource | None = None
    # KEDA's HPA owns the replica count (serving.replicas is where it starts).
    autoscaled: bool = False


class InferenceServer(pulumi.ComponentResource):
    """trtllm-serve replicas with their gateway sidecars, a disruption budget and an NLB.

    The Kubernetes provider comes in `opts.providers`; `opts.depends_on` names what the server
    pods need before they can schedule (GPU nodes, the device plugin), and the Deployment waits
    for it. Children are named `<name>-<object>`; their aliases keep the URNs of the names they
    had before, so existing stacks replace nothing.
    """

    endpoint: pulumi.Output[str]
    model: pulumi.Output[str]
    api_key: pulumi.Output[str]
    namespace: pulumi.Output[str]
    service_name: pulumi.Output[str]
    # The stack CA's certificate that clients trust; None when the NLB presents an ACM one
    # or the endpoint is plain HTTP.
    ca_certificate: pulumi.Output[str] | None

    def __init__(self, name: str, args: InferenceServerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpt-oss:serving:InferenceServer", name, None, opts)
        serving = args.serving
        spec = workload.WorkloadSpec(
            names=workload.WorkloadNames(namespace=serving.namespace),
            runtime=serving.runtime,
            replicas=serving.replicas,
            server_cpu=serving.server_cpu,
            server_memory_gib=serving.server_memory_gib,
            gpu_node_selector=serving.gpu_node_selector,
            weights_host_path=serving.weights_host_path,
            startup_timeout_minutes=serving.startup_timeout_minutes,
            internet_facing=args.endpoint.internet_facing,
            source_ranges=args.endpoint.source_ranges,
            node_ranges=args.endpoint.node_ranges,
            tls=args.endpoint.tls,
            certificate_arn=args.endpoint.certificate_arn,
            load_balancer_controller=args.endpoint.load_balancer_controller,
            gateway=workload.gateway_for(args.endpoint.tls),
        )

        def child(
            object_name: str,
            *,
            depends_on: list[pulumi.Resource] | None = None,
            custom_timeouts: pulumi.CustomTimeouts | None = None,
            renamed: bool = True,
            ignore_changes: list[str] | None = None,
        ) -> pulumi.ResourceOptions:
            # `renamed`: the child was once registered as plain `object_name`; the alias keeps it.
            return pulumi.ResourceOptions(
                parent=self,
                depends_on=depends_on or [],
                aliases=[pulumi.Alias(name=object_name)] if renamed else None,
                custom_timeouts=custom_timeouts,
                ignore_changes=ignore_changes,
            )

        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata={"name": serving.namespace, "labels": workload.labels(spec, "namespace")},
            opts=child("namespace"),
        )

        if serving.hf_token_in_secrets_manager:
            self._keep_token_in_secrets_manager(name, args, child)

        hf_token_secret = k8s.core.v1.Secret(
            f"{name}-hf-token",
            metadata=k8s.meta.v1.ObjectMetaArgs(**workload.metadata(spec, spec.names.hf_token_secret)),
            type="Opaque",
            string_data={workload.HF_TOKEN_SECRET_KEY: pulumi.Output.secret(args.hf_access_token)},
            opts=child("hf-token", depends_on=[namespace]),
        )

        # The key app teams send as `Authorization: Bearer <key>`; letters and digits only, so
        # it is safe in the gateway's key map. Replace it with `pulumi up --replace` on this URN.
        api_key = random.RandomPassword(
            f"{name}-api-key",
            length=48,
            special=False,
            opts=child("api-key"),
        )
        key_map: pulumi.Output[str] = pulumi.Output.secret(
            api_key.result.apply(lambda key: gateway.render_api_key_map([key]))
        )
        api_keys_secret = k8s.core.v1.Secret(
            f"{name}-api-gateway-keys",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                **workload.metadata(spec, spec.names.api_keys_secret, "gateway")
            ),
            type="Opaque",
            string_data={gateway.GATEWAY_API_KEYS_SECRET_KEY: key_map},
            opts=child("api-gateway-keys", depends_on=[namespace]),
        )

        options = workload.options_config_map(spec)
        options_map = k8s.core.v1.ConfigMap(
            f"{name}-trtllm-options",
            metadata=options["metadata"],
            data=options["data"],
            opts=child("trtllm-options", depends_on=[namespace]),
        )
        exporter = workload.exporter_config_map(spec)
        exporter_map = k8s.core.v1.ConfigMap(
            f"{name}-metrics-exporter",
            metadata=exporter["metadata"],
            data=exporter["data"],
            opts=child("metrics-exporter", depends_on=[namespace], renamed=False),
        )
        gateway_conf = workload.gateway_config_map(spec)
        gateway_map = k8s.core.v1.ConfigMap(
            f"{name}-api-gateway-config",
            metadata=gateway_conf["metadata"],
            data=gateway_conf["data"],
            opts=child("api-gateway-config", depends_on=[namespace]),
        )

        tls_secrets: list[pulumi.Resource] = []
        self.ca_certificate = None
        if spec.gateway.tls:
            certificate = EndpointCertificate(
                f"{name}-certificate",
                EndpointCertificateArgs(
                    names=certificates.endpoint_certificate_names(
                        service=spec.names.service,
                        namespace=serving.namespace,
                        region=args.endpoint.region,
                        hostname=args.endpoint.hostname,
                    )
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            tls_manifest = workload.tls_secret(
                spec,
                pulumi.Output.secret(certificate.certificate_pem),
                certificate.private_key_pem,
            )
            tls_secrets.append(
                k8s.core.v1.Secret(
                    f"{name}-api-gateway-tls",
                    metadata=k8s.meta.v1.ObjectMetaArgs(**tls_manifest["metadata"]),
                    type=tls_manifest["type"],
                    string_data=tls_manifest["stringData"],
                    opts=child("api-gateway-tls", depends_on=[namespace], renamed=False),
                )
            )
            if spec.tls == "stack-ca":
                self.ca_certificate = certificate.ca_certificate_pem

        pod_annotations = {
            # A change to the runtime options or the gateway rolls the pods.
            "gpt-oss.serving/config-checksum": workload.config_checksum(
                render_options_yaml(serving.runtime),
                *gateway_conf["data"].values(),
                *exporter["data"].values(),
            ),
            # A new API key does not: the gateway reloads its key map in place (serving/workload/gateway.py),
            # so rotating a key never costs a model reload. Nor does a renewed certificate.
        }
        if args.autoscaled:
            # cluster-autoscaler removes a GPU node only once the HPA has taken its replicas away.
            pod_annotations |= autoscaling_manifests.server_pod_annotations()
        manifest = workload.deployment(spec, pod_annotations=pod_annotations)
        if not serving.await_rollout:
            # The pods can only schedule once GPU nodes exist: create the Deployment, do not wait.
            manifest["metadata"]["annotations"] = {
                **manifest["metadata"].get("annotations", {}),
                "pulumi.com/skipAwait": "true",
            }
        deployment = k8s.apps.v1.Deployment(
            f"{name}-server",
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=child(
                "server",
                # This component's own depends_on (GPU nodes, device plugin) holds for the pods:
                # Pulumi does not pass a parent's dependencies on to its children.
                depends_on=[
                    namespace,
                    hf_token_secret,
                    api_keys_secret,
                    options_map,
                    gateway_map,
                    exporter_map,
                    *tls_secrets,
                    *resources_in(opts),
                ],
                # The first rollout waits for a 65 GB download and a model load.
                custom_timeouts=pulumi.CustomTimeouts(create="90m", update="90m"),
                # Autoscaled, the HPA owns spec.replicas: `pulumi up` must not set it back.
                ignore_changes=list(autoscaling_manifests.IGNORE_ON_AUTOSCALED_DEPLOYMENT)
                if args.autoscaled
                else None,
            ),
        )

        budget = workload.disruption_budget(spec)
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-server",
            metadata=budget["metadata"],
            spec=budget["spec"],
            opts=child("server", depends_on=[namespace]),
        )

        policy = workload.network_policy(spec)
        k8s.networking.v1.NetworkPolicy(
            f"{name}-network-policy",
            metadata=policy["metadata"],
            spec=policy["spec"],
            opts=child("network-policy", depends_on=[namespace], renamed=False),
        )

        service_manifest = workload.service(spec)
        if not serving.await_rollout:
            # No pod can be ready yet, and the Service would wait for one: create it, do not wait.
            service_manifest["metadata"]["annotations"]["pulumi.com/skipAwait"] = "true"
        controller = [args.load_balancer_controller] if args.load_balancer_controller else []
        endpoint_options = child("endpoint", depends_on=[namespace, deployment, *controller])
        service = k8s.core.v1.Service(
            f"{name}-endpoint",
            metadata=service_manifest["metadata"],
            spec=service_manifest["spec"],
            opts=endpoint_options.merge(
                pulumi.ResourceOptions(
                    # A Service's load balancer class cannot change in place (moving an existing
                    # stack from the legacy controller to this one): replace it, deleting the old
                    # first since the name stays. Its NLB, and its DNS name, are new then.
                    replace_on_changes=["spec.loadBalancerClass"],
                    delete_before_replace=True,
                ),
            ),
        )

        address = (
            pulumi.Output.from_input(args.endpoint.hostname)
            if args.endpoint.hostname
            else service.status.apply(_load_balancer_address)
        )
        # The port is the scheme's own (443 or 80), so the URL needs none.
        self.endpoint = pulumi.Output.concat(args.endpoint.url_scheme, "://", address, "/v1")
        self.model = pulumi.Output.from_input(serving.runtime.served_model_name)
        self.api_key = pulumi.Output.secret(api_key.result)
        self.namespace = pulumi.Output.from_input(serving.namespace)
        self.service_name = pulumi.Output.from_input(spec.names.service)
        self.register_outputs(
            {
                "endpoint": self.endpoint,
                "model": self.model,
                "apiKey": self.api_key,
                "namespace": self.namespace,
                "serviceName": self.service_name,
                "caCertificate": self.ca_certificate,
            }
        )

    def _keep_token_in_secrets_manager(
        self, name: str, args: InferenceServerArgs, child: Callable[..., pulumi.ResourceOptions]
    ) -> None:
        """Optionally keep the token in Secrets Manager too, encrypted with the stack's KMS key."""
        kms_key_arn = args.kms_key_arn
        if kms_key_arn is None:  # an existing cluster: this stack has no key of its own yet
            key = aws.kms.Key(
                f"{name}-hf-token",
                description=f"{name}: Hugging Face token",
                enable_key_rotation=True,
                deletion_window_in_days=7,
                opts=child("hf-token"),
            )
            kms_key_arn = key.arn
        secret = aws.secretsmanager.Secret(
            f"{name}-hf-token",
            name_prefix=f"{name}/hf-access-token-",
            kms_key_id=kms_key_arn,
            description="Hugging Face token of the gpt-oss TensorRT-LLM stack",
            opts=child("hf-token"),
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-hf-token",
            secret_id=secret.id,
            secret_string=pulumi.Output.secret(args.hf_access_token),
            opts=child("hf-token"),
        )


def _load_balancer_address(status) -> str:
    """The NLB's DNS name once AWS has created it; a placeholder while it is pending."""
    ingress = (status.load_balancer.ingress if status and status.load_balancer else None) or []
    if ingress:
        return ingress[0].hostname or ingress[0].ip or "<pending>"
    return "<load-balancer-pending>"

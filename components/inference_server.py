"""The serving workload: TensorRT-LLM behind an API-key gateway, on an internal load balancer.

Registers the objects that `serving.workload` describes, plus the two secrets: the Hugging Face
token (from Pulumi secret config, never unwrapped here) and a generated API key. Both stay Pulumi
secrets from end to end, so state, outputs and logs only ever hold ciphertext.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.platform import KubernetesPlatform
from components.settings import EndpointSettings, ServingSettings
from serving import gateway, workload
from serving.runtime import render_options_yaml


@dataclass(frozen=True)
class InferenceServerArgs:
    serving: ServingSettings
    endpoint: EndpointSettings
    platform: KubernetesPlatform
    hf_access_token: pulumi.Output[str]


class InferenceServer(pulumi.ComponentResource):
    """trtllm-serve replicas with their gateway sidecars, a disruption budget and an NLB."""

    endpoint: pulumi.Output[str]
    model: pulumi.Output[str]
    api_key: pulumi.Output[str]
    namespace: pulumi.Output[str]
    service_name: pulumi.Output[str]

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
        )
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.platform.provider)

        namespace = k8s.core.v1.Namespace(
            "namespace",
            metadata={"name": serving.namespace, "labels": workload.labels(spec, "namespace")},
            opts=k8s_opts,
        )
        in_namespace = pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[namespace]))

        if serving.hf_token_in_secrets_manager:
            self._keep_token_in_secrets_manager(name, args)

        hf_token_secret = k8s.core.v1.Secret(
            "hf-token",
            metadata=workload.metadata(spec, spec.names.hf_token_secret),
            type="Opaque",
            string_data={workload.HF_TOKEN_SECRET_KEY: pulumi.Output.secret(args.hf_access_token)},
            opts=in_namespace,
        )

        # The key app teams send as `Authorization: Bearer <key>`; letters and digits only, so
        # it is safe in the gateway's key map. Replace it with `pulumi up --replace` on this URN.
        api_key = random.RandomPassword(
            "api-key", length=48, special=False, opts=pulumi.ResourceOptions(parent=self),
        )
        key_map = api_key.result.apply(lambda key: gateway.render_api_key_map([key]))
        api_keys_secret = k8s.core.v1.Secret(
            "api-gateway-keys",
            metadata=workload.metadata(spec, spec.names.api_keys_secret, "gateway"),
            type="Opaque",
            string_data={gateway.GATEWAY_API_KEYS_SECRET_KEY: pulumi.Output.secret(key_map)},
            opts=in_namespace,
        )

        options = workload.options_config_map(spec)
        options_map = k8s.core.v1.ConfigMap(
            "trtllm-options", metadata=options["metadata"], data=options["data"], opts=in_namespace,
        )
        gateway_conf = workload.gateway_config_map(spec)
        gateway_map = k8s.core.v1.ConfigMap(
            "api-gateway-config", metadata=gateway_conf["metadata"], data=gateway_conf["data"], opts=in_namespace,
        )

        pod_annotations = {
            # A change to the runtime options or the gateway rolls the pods.
            "gpt-oss.serving/config-checksum": workload.config_checksum(
                render_options_yaml(serving.runtime), *gateway_conf["data"].values()
            ),
            # A new API key does not: the gateway reloads its key map in place (serving/gateway.py),
            # so rotating a key never costs a model reload.
        }
        manifest = workload.deployment(spec, pod_annotations=pod_annotations)
        deployment = k8s.apps.v1.Deployment(
            "server",
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions.merge(in_namespace, pulumi.ResourceOptions(
                depends_on=[hf_token_secret, api_keys_secret, options_map, gateway_map,
                            *args.platform.workload_dependencies],
                # The first rollout waits for a 65 GB download and a model load.
                custom_timeouts=pulumi.CustomTimeouts(create="90m", update="90m"),
            )),
        )

        budget = workload.disruption_budget(spec)
        k8s.policy.v1.PodDisruptionBudget(
            "server", metadata=budget["metadata"], spec=budget["spec"], opts=in_namespace,
        )

        service_manifest = workload.service(spec)
        service = k8s.core.v1.Service(
            "endpoint",
            metadata=service_manifest["metadata"],
            spec=service_manifest["spec"],
            opts=pulumi.ResourceOptions.merge(in_namespace, pulumi.ResourceOptions(depends_on=[deployment])),
        )

        hostname = service.status.apply(_load_balancer_address)
        self.endpoint = pulumi.Output.concat("http://", hostname, "/v1")  # SERVICE_PORT is 80
        self.model = pulumi.Output.from_input(serving.runtime.served_model_name)
        self.api_key = pulumi.Output.secret(api_key.result)
        self.namespace = pulumi.Output.from_input(serving.namespace)
        self.service_name = pulumi.Output.from_input(spec.names.service)
        self.register_outputs({
            "endpoint": self.endpoint,
            "model": self.model,
            "apiKey": self.api_key,
            "namespace": self.namespace,
            "serviceName": self.service_name,
        })

    def _keep_token_in_secrets_manager(self, name: str, args: InferenceServerArgs) -> None:
        """Optionally keep the token in Secrets Manager too, encrypted with the stack's KMS key."""
        kms_key_arn = args.platform.kms_key_arn
        if kms_key_arn is None:  # an existing cluster: this stack has no key of its own yet
            key = aws.kms.Key(
                "hf-token", description=f"{name}: Hugging Face token", enable_key_rotation=True,
                deletion_window_in_days=7, opts=pulumi.ResourceOptions(parent=self),
            )
            kms_key_arn = key.arn
        secret = aws.secretsmanager.Secret(
            "hf-token", name_prefix=f"{name}/hf-access-token-", kms_key_id=kms_key_arn,
            description="Hugging Face token of the gpt-oss TensorRT-LLM stack",
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.secretsmanager.SecretVersion(
            "hf-token", secret_id=secret.id, secret_string=pulumi.Output.secret(args.hf_access_token),
            opts=pulumi.ResourceOptions(parent=self),
        )


def _load_balancer_address(status) -> str:
    """The NLB's DNS name once AWS has created it; a placeholder while it is pending."""
    ingress = (status.load_balancer.ingress if status and status.load_balancer else None) or []
    if ingress:
        return ingress[0].hostname or ingress[0].ip or "<pending>"
    return "<load-balancer-pending>"

"""What the serving workload needs from a Kubernetes cluster, whoever created the cluster.

`__main__.py` builds one `KubernetesPlatform` either from the components that create the AWS
platform (VPC, EKS, node groups, device plugin) or from a given kubeconfig (bring your own
cluster). Workload components take it and never ask which of the two it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s


@dataclass(frozen=True)
class KubernetesPlatform:
    provider: k8s.Provider
    # An Output for a created cluster; a plain string for an existing one (named by config).
    cluster_name: pulumi.Output[str] | str
    # The stack's KMS key (EKS secrets envelope encryption); None for an existing cluster.
    kms_key_arn: pulumi.Output[str] | None
    # What GPU workloads must wait for (GPU node group, device plugin): without them a GPU pod
    # would sit Pending and `pulumi up` would wait for it until its timeout.
    gpu_capacity: list[pulumi.Resource] = field(default_factory=list)
    # The AWS Load Balancer Controller the stack installed; None for an existing cluster.
    load_balancer_controller: pulumi.Resource | None = None
    # With autoscaling: KEDA (its CRDs and operator) and the Prometheus endpoint it queries.
    keda: pulumi.Resource | None = None
    prometheus_endpoint: pulumi.Output[str] | None = None


def kubernetes_provider(
    name: str,
    kubeconfig: pulumi.Input[str],
    *,
    depends_on: list[pulumi.Resource] | None = None,
) -> k8s.Provider:
    """A Kubernetes provider for one cluster; the kubeconfig stays a secret in the state."""
    return k8s.Provider(
        name,
        kubeconfig=pulumi.Output.secret(kubeconfig),
        # Server-side apply is the provider's default since 4.0; stated so a reader need not know.
        enable_server_side_apply=True,
        opts=pulumi.ResourceOptions(depends_on=depends_on or []),
    )


def existing_cluster_platform(name: str, kubeconfig: pulumi.Output[str]) -> KubernetesPlatform:
    """Bring your own cluster: nothing is created on AWS, the workload goes to `kubeconfig`.

    That cluster must already run GPU nodes with NVIDIA's device plugin (or an equivalent that
    advertises `nvidia.com/gpu`) and carry the `gpuNodeSelector` labels.
    """
    return KubernetesPlatform(
        provider=kubernetes_provider("existing-cluster", kubeconfig),
        cluster_name=name,
        kms_key_arn=None,
        gpu_capacity=[],
    )

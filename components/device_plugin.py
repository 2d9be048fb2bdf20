"""NVIDIA's Kubernetes device plugin, for AMIs that ship the driver but not the plugin.

The EKS AL2023 NVIDIA AMI has the driver and container toolkit; without this DaemonSet no node
advertises `nvidia.com/gpu` and every GPU pod stays Pending. Written as plain Kubernetes objects
(not the Helm chart) so `make plan` shows them and the schema test validates them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.cluster import resources_in
from components.gpu_nodes import GPU_TAINT_KEY
from serving.workload.manifests import SCANNER_EXCEPTIONS, scanner_exceptions

# Pinned: a new plugin release is a change to review, not something a redeploy picks up.
# v0.20.0 is the newest release tag of NVIDIA/k8s-device-plugin (August 2026).
DEVICE_PLUGIN_VERSION = "v0.20.0"
DEVICE_PLUGIN_IMAGE = f"nvcr.io/nvidia/k8s-device-plugin:{DEVICE_PLUGIN_VERSION}"
DEVICE_PLUGIN_SOCKET_DIR = "/var/lib/kubelet/device-plugins"
# checkov findings that are the plugin's nature, with the reason (see SCANNER_EXCEPTIONS).
PLUGIN_SCANNER_EXCEPTIONS = {
    "CKV_K8S_8": "the device plugin serves no health endpoint; the kubelet sees it through its socket",
    "CKV_K8S_9": "the device plugin serves no health endpoint; the kubelet sees it through its socket",
    "CKV_K8S_15": "IfNotPresent with a pinned release tag",
    "CKV_K8S_43": SCANNER_EXCEPTIONS["CKV_K8S_43"],
    "CKV_K8S_22": "NVIDIA's manifests do not run the plugin read-only; not verified on a GPU node here",
    "CKV_K8S_23": "runs as root as NVIDIA ships it: it writes its socket into the kubelet's root-owned directory",
    "CKV_K8S_40": "runs as root as NVIDIA ships it: it writes its socket into the kubelet's root-owned directory",
}


@dataclass(frozen=True)
class DevicePluginArgs:
    # Labels the GPU nodes carry (gpuNodeSelector): the plugin runs there and nowhere else.
    gpu_node_selector: dict[str, str]
    namespace: str = "kube-system"


class NvidiaDevicePlugin(pulumi.ComponentResource):
    daemon_set: k8s.apps.v1.DaemonSet

    def __init__(self, name: str, args: DevicePluginArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpt-oss:kubernetes:NvidiaDevicePlugin", name, None, opts)
        labels = {
            "app.kubernetes.io/name": "nvidia-device-plugin",
            "app.kubernetes.io/version": DEVICE_PLUGIN_VERSION,
        }
        self.daemon_set = k8s.apps.v1.DaemonSet(
            f"{name}-daemonset",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="nvidia-device-plugin",
                namespace=args.namespace,
                labels=labels,
                annotations=scanner_exceptions(PLUGIN_SCANNER_EXCEPTIONS),
            ),
            spec=k8s.apps.v1.DaemonSetSpecArgs(
                selector=k8s.meta.v1.LabelSelectorArgs(
                    match_labels={"app.kubernetes.io/name": "nvidia-device-plugin"}
                ),
                update_strategy=k8s.apps.v1.DaemonSetUpdateStrategyArgs(type="RollingUpdate"),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=k8s.core.v1.PodSpecArgs(
                        node_selector=dict(args.gpu_node_selector),
                        tolerations=[
                            k8s.core.v1.TolerationArgs(
                                key=GPU_TAINT_KEY, operator="Exists", effect="NoSchedule"
                            )
                        ],
                        # Evicting the plugin would take every GPU off the node's capacity.
                        priority_class_name="system-node-critical",
                        # It talks to the kubelet through a socket, never to the API server.
                        automount_service_account_token=False,
                        security_context=k8s.core.v1.PodSecurityContextArgs(
                            seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
                        ),
                        containers=[
                            k8s.core.v1.ContainerArgs(
                                name="nvidia-device-plugin",
                                image=DEVICE_PLUGIN_IMAGE,
                                # Upstream's default, stated: a broken driver crashes the plugin
                                # (CrashLoopBackOff, visible at once) instead of leaving GPU pods
                                # Pending until the rollout's 90-minute timeout.
                                env=[k8s.core.v1.EnvVarArgs(name="FAIL_ON_INIT_ERROR", value="true")],
                                resources=k8s.core.v1.ResourceRequirementsArgs(
                                    requests={"cpu": "50m", "memory": "64Mi"},
                                    limits={"cpu": "500m", "memory": "256Mi"},
                                ),
                                security_context=k8s.core.v1.SecurityContextArgs(
                                    allow_privilege_escalation=False,
                                    capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
                                ),
                                volume_mounts=[
                                    k8s.core.v1.VolumeMountArgs(
                                        name="device-plugins", mount_path=DEVICE_PLUGIN_SOCKET_DIR
                                    )
                                ],
                            )
                        ],
                        volumes=[
                            k8s.core.v1.VolumeArgs(
                                name="device-plugins",
                                host_path=k8s.core.v1.HostPathVolumeSourceArgs(
                                    path=DEVICE_PLUGIN_SOCKET_DIR, type="Directory"
                                ),
                            )
                        ],
                    ),
                ),
            ),
            # The Kubernetes provider comes from this component's `providers` option; its
            # depends_on (the GPU node group) holds for the DaemonSet, which Pulumi does not do
            # for a parent's children by itself.
            opts=pulumi.ResourceOptions(parent=self, depends_on=resources_in(opts)),
        )
        # No traffic in or out: the plugin's only peer is the kubelet, over a unix socket.
        k8s.networking.v1.NetworkPolicy(
            f"{name}-network-policy",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="nvidia-device-plugin", namespace=args.namespace, labels=labels
            ),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(
                    match_labels={"app.kubernetes.io/name": "nvidia-device-plugin"}
                ),
                policy_types=["Ingress", "Egress"],
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"image": DEVICE_PLUGIN_IMAGE})


def ami_needs_device_plugin(ami_type: str) -> bool:
    """Bottlerocket's NVIDIA variants ship the device plugin; AL2023's NVIDIA AMI does not."""
    return not ami_type.startswith("BOTTLEROCKET")

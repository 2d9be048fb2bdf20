"""NVIDIA's dcgm-exporter on the GPU nodes: utilisation, memory, power, temperature, XID, ECC.

A DaemonSet on the GPU nodes only (their labels, tolerating their taint), with the stack's
counters file (`serving.observability.catalogue.render_dcgm_counters_csv`, the one
`python -m serving observability` writes) as a ConfigMap passed with `-f`, and a NetworkPolicy
that admits the scraper and the kubelet to the metrics port and nothing else. Plain Kubernetes
objects rather than NVIDIA's Helm chart, so `make plan` shows them and the schema test and
checkov read them (as `components/device_plugin.py` does for the device plugin).

Facts (NVIDIA/dcgm-exporter at tag 4.5.3-4.8.2, the newest release, May 2026: `deployment/`
chart, `docker/Dockerfile`, `etc/default-counters.csv`):
- Tags are `<DCGM version>-<exporter version>-<base>`: 4.5.3 is DCGM, 4.8.2 the exporter.
- Port 9400 (`DCGM_EXPORTER_LISTEN`), `/metrics` and `/health`; the chart names the port
  `metrics`, which the scrape configuration discovers by.
- The image runs as root by default only for the profiling fields (`DCGM_FI_PROF_*`), which
  need root and CAP_SYS_ADMIN; basic fields work as the image's uid 1000 without capabilities.
  The stack uses no profiling field, so it runs as 1000 with every capability dropped.
- Pod attribution (`pod`/`namespace` labels) needs the kubelet's pod-resources socket, which a
  non-root process cannot open; the stack's queries are per GPU and node (`gpu`, `Hostname`),
  so neither the socket nor `DCGM_EXPORTER_KUBERNETES` is used, nor any API access.
- The GPUs reach the container through NVIDIA's container runtime (`NVIDIA_VISIBLE_DEVICES=all`
  in the image), the default runtime on the EKS NVIDIA AMIs; no `nvidia.com/gpu` is requested,
  so the exporter takes none of the server's GPUs.
- The `Hostname` label, which the stack's GPU alerts group by, is renamed `hostname` on the
  main branch after this release: a newer pin must check the catalogue's labels first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.cluster import resources_in
from components.gpu_nodes import GPU_TAINT_KEY
from serving.observability.catalogue import DCGM_EXPORTER_PORT, render_dcgm_counters_csv
from serving.observability.scrape import APP_LABELS
from serving.workload.manifests import SCANNER_EXCEPTIONS, scanner_exceptions

DCGM_EXPORTER_VERSION = "4.5.3-4.8.2"
# The Ubuntu image: its Dockerfile creates the unprivileged uid 1000 the container runs as.
DCGM_EXPORTER_IMAGE = f"nvcr.io/nvidia/k8s/dcgm-exporter:{DCGM_EXPORTER_VERSION}-ubuntu22.04"
DCGM_EXPORTER_UID = 1000
APP = APP_LABELS["dcgm-exporter"]  # the pod label the scrape configuration keeps
COUNTERS_DIR = "/etc/dcgm-exporter/stack"
COUNTERS_FILE = "dcgm-counters.csv"
PORT_NAME = "metrics"
# checkov findings that are dcgm-exporter's nature, with the reason (see SCANNER_EXCEPTIONS).
DCGM_SCANNER_EXCEPTIONS = {
    "CKV_K8S_15": "IfNotPresent with a pinned release tag",
    "CKV_K8S_43": SCANNER_EXCEPTIONS["CKV_K8S_43"],
    "CKV_K8S_40": "uid 1000 is the unprivileged user NVIDIA's image creates and documents for the "
    "basic (non-profiling) fields; another uid was not checked on a GPU node here",
    "CKV_K8S_22": "NVIDIA's chart does not run dcgm-exporter read-only, and what its embedded "
    "DCGM host engine writes was not checked on a GPU node here",
}


@dataclass(frozen=True)
class DcgmExporterArgs:
    # Labels the GPU nodes carry (gpuNodeSelector): the exporter runs there and nowhere else.
    gpu_node_selector: dict[str, str]
    # Who may read the metrics port: the VPC (the scraper's interfaces and the kubelet's probes
    # come from addresses in it).
    scraper_cidrs: Sequence[str]
    namespace: str = "kube-system"


class DcgmExporter(pulumi.ComponentResource):
    daemon_set: k8s.apps.v1.DaemonSet

    def __init__(self, name: str, args: DcgmExporterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpt-oss:kubernetes:DcgmExporter", name, None, opts)
        selector = {"app.kubernetes.io/name": APP}
        labels = {**selector, "app.kubernetes.io/version": DCGM_EXPORTER_VERSION}
        counters = k8s.core.v1.ConfigMap(
            f"{name}-counters",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=f"{APP}-counters", namespace=args.namespace, labels=labels
            ),
            data={COUNTERS_FILE: render_dcgm_counters_csv()},
            opts=pulumi.ResourceOptions(parent=self),
        )
        probe = k8s.core.v1.ProbeArgs(
            http_get=k8s.core.v1.HTTPGetActionArgs(path="/health", port=PORT_NAME),
            # DCGM takes a while to attach to eight GPUs (NVIDIA's chart waits 45 s).
            initial_delay_seconds=45,
            period_seconds=10,
        )
        self.daemon_set = k8s.apps.v1.DaemonSet(
            f"{name}-daemonset",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=APP,
                namespace=args.namespace,
                labels=labels,
                annotations=scanner_exceptions(DCGM_SCANNER_EXCEPTIONS),
            ),
            spec=k8s.apps.v1.DaemonSetSpecArgs(
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
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
                        # NVIDIA's chart's choice: losing it blinds the GPU alerts of the node.
                        priority_class_name="system-node-critical",
                        # Reads the GPUs through the driver; never talks to the API server.
                        automount_service_account_token=False,
                        security_context=k8s.core.v1.PodSecurityContextArgs(
                            run_as_non_root=True,
                            run_as_user=DCGM_EXPORTER_UID,
                            run_as_group=DCGM_EXPORTER_UID,
                            seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
                        ),
                        containers=[
                            k8s.core.v1.ContainerArgs(
                                name="dcgm-exporter",
                                image=DCGM_EXPORTER_IMAGE,
                                image_pull_policy="IfNotPresent",
                                # args, not command: the image's entrypoint starts the exporter.
                                args=["-f", f"{COUNTERS_DIR}/{COUNTERS_FILE}"],
                                env=[
                                    k8s.core.v1.EnvVarArgs(
                                        name="DCGM_EXPORTER_LISTEN", value=f":{DCGM_EXPORTER_PORT}"
                                    )
                                ],
                                ports=[
                                    k8s.core.v1.ContainerPortArgs(
                                        name=PORT_NAME, container_port=DCGM_EXPORTER_PORT, protocol="TCP"
                                    )
                                ],
                                liveness_probe=probe,
                                readiness_probe=probe,
                                # NVIDIA's chart's figures.
                                resources=k8s.core.v1.ResourceRequirementsArgs(
                                    requests={"cpu": "100m", "memory": "128Mi"},
                                    limits={"cpu": "200m", "memory": "512Mi"},
                                ),
                                security_context=k8s.core.v1.SecurityContextArgs(
                                    allow_privilege_escalation=False,
                                    capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
                                ),
                                volume_mounts=[
                                    k8s.core.v1.VolumeMountArgs(
                                        name="counters", mount_path=COUNTERS_DIR, read_only=True
                                    )
                                ],
                            )
                        ],
                        volumes=[
                            k8s.core.v1.VolumeArgs(
                                name="counters",
                                config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name=counters.metadata.name),
                            )
                        ],
                    ),
                ),
            ),
            # Its depends_on (the GPU node group) holds for the DaemonSet, which Pulumi does not
            # do for a parent's children by itself.
            opts=pulumi.ResourceOptions(parent=self, depends_on=resources_in(opts)),
        )
        # Deny by default: only the metrics port, only from the VPC; no egress at all (DCGM runs
        # in the container and reads the local driver).
        k8s.networking.v1.NetworkPolicy(
            f"{name}-network-policy",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=APP, namespace=args.namespace, labels=labels),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
                policy_types=["Ingress", "Egress"],
                ingress=[
                    k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                        from_=[
                            k8s.networking.v1.NetworkPolicyPeerArgs(
                                ip_block=k8s.networking.v1.IPBlockArgs(cidr=cidr)
                            )
                            for cidr in args.scraper_cidrs
                        ],
                        ports=[
                            k8s.networking.v1.NetworkPolicyPortArgs(port=DCGM_EXPORTER_PORT, protocol="TCP")
                        ],
                    )
                ],
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"image": DCGM_EXPORTER_IMAGE})

"""The stack's alerts, each with its runbook, rendered as a Prometheus rules file.

Every alert's expression is built from the named queries (`queries.py`): `AlertRule.queries`
lists the ones it uses, so the end-to-end test can show that each returns data from a real
Prometheus, and `promtool test rules` (tests/serving/observability/test_alerts_promtool.py) shows
each alert fires on synthetic series when it should and stays silent when it should not.

Thresholds are `AlertSettings` fields; their defaults and reasons are in the field comments and
in docs/observability.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from serving.observability.queries import Query, Scope, StackQueries, stack_queries

CRITICAL = "critical"  # someone acts now: the endpoint is down or a GPU is failing
WARNING = "warning"  # someone looks today: degraded, or heading for trouble


@dataclass(frozen=True)
class AlertSettings:
    # Time to first token, 90th percentile, seconds. 2.5 is a bucket boundary of TensorRT-LLM's
    # TTFT histogram (…, 1.0, 2.5, 5.0, …), so the estimate at the threshold is not interpolated.
    # A starting point, not a measurement (no GPU here): set it from `serving bench` results.
    ttft_p90_slo_seconds: float = 2.5
    # Share of (non-probe) requests answered with a 5xx status.
    max_5xx_ratio: float = 0.05
    # KV-cache blocks in use; above this new requests wait for blocks to free.
    kv_cache_full_ratio: float = 0.95
    # GPU temperature, degrees C. Unverified against the board: compare with the slowdown
    # temperature `nvidia-smi -q -d TEMPERATURE` reports on a p5 node and keep a margin below it.
    gpu_temperature_celsius: float = 85.0
    # How long the weights download (about 65 GB) may run before it counts as stuck.
    weights_download_minutes: int = 60
    # How long the server may take to load the model once downloaded (the stack's startupTimeoutMinutes).
    startup_timeout_minutes: int = 60


@dataclass(frozen=True)
class AlertRule:
    name: str
    expr: str
    for_: str  # Prometheus duration; "0m" fires at the first evaluation that matches
    severity: str
    summary: str  # may use {{ $labels.<name> }}
    runbook: str  # what it means, what to check, what to do
    queries: tuple[Query, ...]  # the named queries the expression is built from

    def as_rule(self, extra_labels: dict[str, str]) -> dict[str, object]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity, **extra_labels},
            "annotations": {"summary": self.summary, "runbook": self.runbook},
        }


def _runbook(meaning: str, check: str, act: str) -> str:
    return f"Means: {meaning}\nCheck: {check}\nDo: {act}\n"


def stack_alerts(scope: Scope, settings: AlertSettings) -> tuple[AlertRule, ...]:
    q: StackQueries = stack_queries(scope)
    ns = scope.namespace
    kubectl = f"kubectl -n {ns}"
    not_ready_minutes = settings.weights_download_minutes + settings.startup_timeout_minutes
    return (
        AlertRule(
            name="GptOssNoReadyReplica",
            expr=f"({q.replicas_available.expr}) < 1 or absent(kube_deployment_status_replicas_available"
            f'{{namespace="{ns}", deployment="{scope.deployment}"}})',
            for_="5m",
            severity=CRITICAL,
            summary=f"No replica of {scope.deployment} in {ns} is ready: the endpoint answers 502 or nothing",
            runbook=_runbook(
                "every request fails; the load balancer has no healthy target (or kube-state-metrics, "
                "which reports the replicas, is not scraped).",
                f"{kubectl} get deploy,pods -o wide; {kubectl} describe pod <pod> (events: Pending for GPUs, "
                f"image pull, init containers); {kubectl} logs <pod> -c {scope.server_container} --tail=200; "
                "whether a GPU node is NotReady (GptOssGpuNodeNotReady).",
                "a pod that is loading needs its time (tens of minutes): see GptOssReplicaNotReadyPastStartup. "
                "Pending for nvidia.com/gpu: check the GPU node group's size and the device plugin. A crash "
                "loop: read the server's log for the first error (out of memory, bad option) and fix the stack.",
            ),
            queries=(q.replicas_available,),
        ),
        AlertRule(
            name="GptOssReplicaRestarting",
            expr=f"({q.container_restarts.expr}) > 0",
            for_="0m",
            severity=WARNING,
            summary="Container {{ $labels.container }} of {{ $labels.pod }} restarted in the last 15 minutes",
            runbook=_runbook(
                "a server or gateway container exited and the kubelet restarted it; a restarted server "
                "reloads the model for tens of minutes, so that replica serves nothing meanwhile.",
                f"{kubectl} describe pod <pod> (Last State: reason OOMKilled, exit code); "
                f"{kubectl} logs <pod> -c <container> --previous; failed liveness probes in the events; "
                "GPU XID errors on that node.",
                "OOMKilled: raise the memory request (serverMemoryGiB) or lower max_batch_size. A probe "
                "that kills a loading server: raise startupTimeoutMinutes. A GPU error: cordon the node "
                "(see GptOssGpuXidError).",
            ),
            queries=(q.container_restarts,),
        ),
        AlertRule(
            name="GptOssHigh5xxRatio",
            expr=f"({q.error_ratio_5xx.expr}) > {settings.max_5xx_ratio}",
            for_="5m",
            severity=CRITICAL,
            summary=f"More than {settings.max_5xx_ratio:.0%} of requests fail with a 5xx status",
            runbook=_runbook(
                "the gateway answers 502/504 (server down or timing out) or the server answers 500.",
                "the dashboard's 'requests by status' panel and which replicas are ready; the gateway's "
                f"access log ({kubectl} logs <pod> -c {scope.gateway_container}: status, upstream_status, "
                "upstream_response_time); the server's log for exceptions.",
                "502 on one pod: that server is down or reloading, let it finish or delete the pod. 504: "
                "requests outlast the gateway's timeouts, queueing is too deep (add replicas). 500: a "
                "server error, read its log and the request shapes that trigger it.",
            ),
            queries=(q.error_ratio_5xx,),
        ),
        AlertRule(
            name="GptOssTtftAboveSlo",
            expr=f"({q.ttft_p90.expr}) > {settings.ttft_p90_slo_seconds:g}",
            for_="10m",
            severity=WARNING,
            summary=f"Time to first token p90 is above the {settings.ttft_p90_slo_seconds:g} s objective",
            runbook=_runbook(
                "clients wait too long for the first token: requests queue for the batch or for KV "
                "blocks, or prompts got longer.",
                "the dashboard's queue, KV-cache and running-requests panels per replica; queue time p90 "
                "(time waiting to be scheduled) against TTFT; prompt tokens per second.",
                "queueing with the batch full: add replicas (two GPUs each). KV cache full: shorter "
                "contexts or more replicas. A TTFT rise without queueing: long prompts; consider "
                "kv_cache_config.enable_block_reuse for shared prefixes (on by default).",
            ),
            queries=(q.ttft_p90,),
        ),
        AlertRule(
            name="GptOssQueueGrowing",
            expr=f"({q.queue_growth_by_pod.expr}) > 0 and ({q.queued_requests_by_pod.expr}) > 0",
            for_="5m",
            severity=WARNING,
            summary="The request queue of {{ $labels.pod }} has grown for minutes",
            runbook=_runbook(
                "requests arrive faster than the replica finishes them; waits (and TTFT) grow "
                "until clients time out.",
                "running requests against max_batch_size (64) and KV-cache use for that pod; whether "
                "other replicas are idle (uneven balancing) or all queue.",
                "all replicas queue: add replicas, or ask the heaviest key (usage per key panel) to slow "
                "down. One replica queues: check its GPUs and restarts; kube-proxy balances per connection.",
            ),
            queries=(q.queue_growth_by_pod, q.queued_requests_by_pod),
        ),
        AlertRule(
            name="GptOssKvCacheNearlyFull",
            expr=f"({q.kv_cache_utilisation_by_pod.expr}) > {settings.kv_cache_full_ratio:g}",
            for_="15m",
            severity=WARNING,
            summary=f"KV cache of {{{{ $labels.pod }}}} above {settings.kv_cache_full_ratio:.0%} for 15 minutes",
            runbook=_runbook(
                "new requests wait for KV blocks even when the batch has room. With block reuse on, "
                "blocks of finished requests stay cached for prefix hits, so a full pool alone is normal: "
                "it matters when the queue grows too.",
                "queued requests and TTFT for the pod; the context lengths clients send; "
                "kv_cache_config.free_gpu_memory_fraction (0.8) in the rendered options.",
                "if it queues: more replicas, or smaller max_seq_len for this workload. Do not raise "
                "free_gpu_memory_fraction above 0.9 without measuring (CUDA graphs need room).",
            ),
            queries=(q.kv_cache_utilisation_by_pod,),
        ),
        AlertRule(
            name="GptOssGpuXidError",
            expr=f"({q.gpu_xid_by_gpu.expr}) > 0",
            for_="0m",
            severity=CRITICAL,
            summary="GPU {{ $labels.gpu }} on {{ $labels.Hostname }} reported an XID error",
            runbook=_runbook(
                "the driver reported an XID event; its code is the alert's value. 13, 31, 43: an "
                "application fault (the server crashed its context). 48, 63, 64, 94, 95: memory errors. "
                "74: NVLink. 79: the GPU fell off the bus. 119, 120: GSP firmware.",
                "the node's kernel log (dmesg | grep -i xid), nvidia-smi -q on the node, which pod had that "
                "GPU and whether it restarted.",
                "13/31/43 once: let the pod restart. Memory, NVLink, 79 or GSP errors: cordon and drain the "
                "node (kubectl cordon, kubectl drain --ignore-daemonsets) and replace the instance; an "
                "EKS managed node group replaces a terminated one.",
            ),
            queries=(q.gpu_xid_by_gpu,),
        ),
        AlertRule(
            name="GptOssGpuUncorrectableMemoryErrors",
            expr=f"({q.gpu_ecc_uncorrectable_by_gpu.expr}) > 0 or ({q.gpu_row_remap_failure_by_gpu.expr}) > 0",
            for_="0m",
            severity=CRITICAL,
            summary="GPU {{ $labels.gpu }} on {{ $labels.Hostname }} has uncorrectable memory errors",
            runbook=_runbook(
                "double-bit ECC errors, rows remapped for them, or a failed row remap: the GPU's memory is "
                "corrupting data. A failed remap means the GPU must be replaced.",
                "nvidia-smi -q -d ECC,ROW_REMAPPER on the node; XID 48, 63 or 64 in its kernel log.",
                "cordon and drain the node, then replace the instance. After a successful remap a GPU "
                "reset (node reboot) applies it; a failure or repeated remaps: replace.",
            ),
            queries=(q.gpu_ecc_uncorrectable_by_gpu, q.gpu_row_remap_failure_by_gpu),
        ),
        AlertRule(
            name="GptOssGpuTemperatureHigh",
            expr=f"({q.gpu_temperature_by_gpu.expr}) > {settings.gpu_temperature_celsius:g}",
            for_="5m",
            severity=WARNING,
            summary=f"GPU {{{{ $labels.gpu }}}} on {{{{ $labels.Hostname }}}} above "
            f"{settings.gpu_temperature_celsius:g} °C for 5 minutes",
            runbook=_runbook(
                "the GPU runs hot and will slow its clocks (throughput falls) or, far hotter, shut down.",
                "nvidia-smi -q -d TEMPERATURE,PERFORMANCE on the node (slowdown temperature and active "
                "throttle reasons); whether all GPUs of the node are hot (cooling) or one (that GPU).",
                "one GPU: drain the node and replace the instance. All GPUs of a node: replace the "
                "instance; all nodes: open a case with AWS.",
            ),
            queries=(q.gpu_temperature_by_gpu,),
        ),
        AlertRule(
            name="GptOssWeightsDownloadStalled",
            expr=f"({q.weights_download_running.expr}) == 1",
            for_=f"{settings.weights_download_minutes}m",
            severity=WARNING,
            summary=f"The weights download of {{{{ $labels.pod }}}} has run for over "
            f"{settings.weights_download_minutes} minutes",
            runbook=_runbook(
                f"the {scope.weights_download_container} init container has not finished: the pod cannot "
                "start its server. About 65 GB come down from Hugging Face.",
                f"{kubectl} logs <pod> -c {scope.weights_download_container} (progress, 401/403 from the "
                "Hub, rate limits); the NAT gateway's egress; free space on the node's NVMe.",
                "401/403: the HF token lacks access to openai/gpt-oss-120b, set hfAccessToken again. "
                "No progress: delete the pod (the cache on the node keeps what came down). Disk full: "
                "clear old revisions from the node's weights directory.",
            ),
            queries=(q.weights_download_running,),
        ),
        AlertRule(
            name="GptOssReplicaNotReadyPastStartup",
            expr=f"({q.pod_ready.expr}) == 0",
            for_=f"{not_ready_minutes}m",
            severity=WARNING,
            summary=f"{{{{ $labels.pod }}}} has not been ready for {not_ready_minutes} minutes "
            "(download and model load together)",
            runbook=_runbook(
                "the pod has stayed unready longer than a download plus the startup timeout allow: it "
                "is stuck loading, crash-looping, or Pending.",
                f"{kubectl} describe pod <pod> (phase, events, probe failures); "
                f"{kubectl} logs <pod> -c {scope.server_container}; GPU allocation (nvidia.com/gpu).",
                "Pending: GPU capacity (node group size, quota). Loading that never finishes: the server's "
                "log (kernel compilation, out of memory); delete the pod to retry once the cause is fixed.",
            ),
            queries=(q.pod_ready,),
        ),
        AlertRule(
            name="GptOssGpuNodeNotReady",
            expr=f"({q.gpu_node_ready.expr}) == 0",
            for_="5m",
            severity=CRITICAL,
            summary="GPU node {{ $labels.node }} is NotReady",
            runbook=_runbook(
                "the kubelet of a GPU node stopped reporting: its replicas are lost and will be "
                "rescheduled only where GPUs are free.",
                "kubectl describe node <node> (conditions, last heartbeat); the EC2 instance's status "
                "checks; the node group's health in the EKS console.",
                "if the instance is impaired: terminate it (the managed node group replaces it) and "
                "expect the replicas to download and load again on the new node.",
            ),
            queries=(q.gpu_node_ready,),
        ),
        AlertRule(
            name="GptOssMetricsTargetDown",
            expr=f"({q.targets_up.expr}) == 0",
            for_="10m",
            severity=WARNING,
            summary="Metrics target {{ $labels.instance }} of job {{ $labels.job }} cannot be scraped",
            runbook=_runbook(
                "Prometheus cannot read one source: the dashboard and the other alerts are blind to it.",
                "the target's pod (the server pod's metrics exporter, which also serves the gateway's "
                "series; dcgm-exporter; kube-state-metrics) and the NetworkPolicy that lets the scraper "
                "reach its port. For the gateway's series: gateway_status_up (0: the exporter cannot "
                "read nginx's stub_status) and gateway_log_rejected_total on the exporter.",
                "restart the exporter's pod or fix the policy; until then trust nothing that source feeds.",
            ),
            queries=(q.targets_up,),
        ),
    )


class _LiteralDumper(yaml.SafeDumper):
    """Multi-line strings (the runbooks) as YAML block literals, so the file reads like the docs."""


def _represent_text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _represent_text)


def render_rules(
    scope: Scope,
    settings: AlertSettings,
    group_name: str = "gpt-oss",
    extra_labels: dict[str, str] | None = None,
) -> dict[str, object]:
    rules = [rule.as_rule(dict(extra_labels or {})) for rule in stack_alerts(scope, settings)]
    return {"groups": [{"name": group_name, "rules": rules}]}


def render_rules_yaml(
    scope: Scope,
    settings: AlertSettings,
    group_name: str = "gpt-oss",
    extra_labels: dict[str, str] | None = None,
) -> str:
    """The Prometheus rules file (also what Amazon Managed Prometheus's rule groups namespace takes)."""
    document = render_rules(scope, settings, group_name, extra_labels)
    return yaml.dump(document, Dumper=_LiteralDumper, sort_keys=False, allow_unicode=True, width=110)


def render_runbooks_markdown(scope: Scope, settings: AlertSettings) -> str:
    """Each alert's runbook as Markdown, for docs/observability.md (a test keeps the page current)."""
    parts = []
    for rule in stack_alerts(scope, settings):
        lines = [f"#### {rule.name} ({rule.severity}, after {rule.for_})", "", f"{rule.summary}.", ""]
        for line in rule.runbook.splitlines():
            word, _, text = line.partition(": ")
            # `<pod>` would be read as an HTML tag and vanish from the page.
            lines.append(f"- **{word}:** {text.replace('<', '&lt;').replace('>', '&gt;')}")
        lines += ["", f"Expression: `{rule.expr}`", ""]
        parts.append("\n".join(lines))
    return "\n".join(parts)

"""The scrape configuration: three jobs found by pod labels and port names; promtool accepts it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from serving.observability import catalogue as c
from serving.observability.queries import Scope
from serving.observability.scrape import render_scrape_config, render_scrape_config_yaml
from serving.workload.manifests import APP_NAME
from tests.support.prometheus_runner import promtool

CONFIG = render_scrape_config(Scope())
JOBS = {job["job_name"]: job for job in CONFIG["scrape_configs"]}


def test_one_job_per_scraped_source_named_as_the_queries_expect() -> None:
    assert list(JOBS) == [source.job for source in c.SCRAPED]
    # The gateway's series come from the pod's exporter: no job or port of their own, so nothing
    # is scraped twice.
    assert c.GATEWAY.job == c.SERVER.job and c.GATEWAY.port == c.SERVER.port
    assert "gateway-metrics" not in render_scrape_config_yaml(Scope())


def test_pod_local_jobs_take_the_stacks_pods_and_set_namespace_and_pod() -> None:
    for job in (c.SERVER.job,):
        config = JOBS[job]
        assert config["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["gpt-oss"]}}]
        assert config["honor_labels"] is False
        keep = config["relabel_configs"][0]
        assert keep["action"] == "keep" and keep["regex"].startswith(f"{APP_NAME};")
        targets = {rule.get("target_label") for rule in config["relabel_configs"]}
        assert {"namespace", "pod"} <= targets
    assert JOBS[c.SERVER.job]["relabel_configs"][0]["regex"] == "trtllm-serve;(metrics)"


def test_exporters_with_their_own_object_labels_keep_them() -> None:
    for job in (c.DCGM.job, c.KUBE_STATE.job):
        assert JOBS[job]["honor_labels"] is True
        assert "namespaces" not in JOBS[job]["kubernetes_sd_configs"][0]


def test_the_interval_leaves_two_samples_in_every_rate_window() -> None:
    assert render_scrape_config(Scope(), 60)["global"]["scrape_interval"] == "60s"
    with pytest.raises(ValueError, match="between 1 and 150"):
        render_scrape_config(Scope(), 300)


@pytest.mark.slow
def test_promtool_check_config_accepts_it_but_for_the_discovery_debian_leaves_out(tmp_path: Path) -> None:
    """Debian's Prometheus 2.42 is built without Kubernetes service discovery ("field
    kubernetes_sd_configs not found"): promtool checks everything else (relabel rules, regexes,
    intervals) with each job's discovery replaced by a static target."""
    path = tmp_path / "scrape-config.yaml"
    path.write_text(render_scrape_config_yaml(Scope()))
    document = yaml.safe_load(path.read_text())
    assert document == CONFIG
    for job in document["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs")
        job["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
    checked = tmp_path / "checked.yaml"
    checked.write_text(yaml.safe_dump(document))
    result = promtool("check", "config", str(checked))
    assert result.returncode == 0, result.stdout + result.stderr

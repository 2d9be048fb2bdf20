"""Start and stop a real Prometheus (Debian's package) on loopback, and run promtool.

The end-to-end metrics test (tests/serving/observability/test_end_to_end.py) scrapes loopback
stand-ins with it; the alert tests run `promtool check rules` and `promtool test rules`. A missing
binary **fails** those tests with the install command: a skipped test would prove nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.support.nginx_runner import free_loopback_port, wait_for_port

# Debian 12's package (2.42), installed by scripts/install-system-packages; it ships promtool.
TEST_PROMETHEUS_DEBIAN_PACKAGE = "prometheus"
STARTUP_TIMEOUT_SECONDS = 30.0
SHUTDOWN_TIMEOUT_SECONDS = 10.0


class PrometheusMissingError(RuntimeError):
    """No prometheus or promtool binary: CI must install Debian's package."""


def find_binary(name: str) -> str:
    found = shutil.which(name) or next((p for p in (f"/usr/bin/{name}",) if Path(p).is_file()), None)
    if found is None:
        raise PrometheusMissingError(
            f"{name} is not installed, so the metrics cannot be tested for real. Install Debian's package: "
            f"apt-get update && apt-get install -y {TEST_PROMETHEUS_DEBIAN_PACKAGE} "
            "(or run sudo ./scripts/install-system-packages)"
        )
    return found


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [find_binary("promtool"), *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )


@dataclass(frozen=True)
class ScrapeTarget:
    """One scrape target: a job, a loopback address and the labels service discovery would add."""

    job: str
    port: int
    labels: dict[str, str] = field(default_factory=dict)
    path: str = "/metrics"
    # kube-state-metrics and dcgm-exporter carry their own namespace/pod labels.
    honor_labels: bool = False


def render_config(
    targets: list[ScrapeTarget], rule_files: list[Path], interval: str = "1s"
) -> dict[str, Any]:
    jobs: dict[tuple[str, str, bool], list[dict[str, Any]]] = {}
    for target in targets:
        jobs.setdefault((target.job, target.path, target.honor_labels), []).append(
            {"targets": [f"127.0.0.1:{target.port}"], "labels": dict(target.labels)}
        )
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {"job_name": job, "metrics_path": path, "honor_labels": honor, "static_configs": static}
            for (job, path, honor), static in jobs.items()
        ],
    }


@dataclass
class RunningPrometheus:
    port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params: str) -> Any:
        response = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=SHUTDOWN_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=SHUTDOWN_TIMEOUT_SECONDS)


def start_prometheus(workdir: Path, targets: list[ScrapeTarget], rule_files: list[Path]) -> RunningPrometheus:
    binary = find_binary("prometheus")
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(render_config(targets, rule_files), sort_keys=False))
    check = promtool("check", "config", str(config_path))
    if check.returncode != 0:
        raise RuntimeError(f"promtool check config failed:\n{check.stdout}{check.stderr}")
    port = free_loopback_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    running = RunningPrometheus(port=port, process=process, log_path=log_path)
    try:
        wait_for_port(port, STARTUP_TIMEOUT_SECONDS, process)
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{running.url}/-/ready", timeout=2).status_code == 200:
                    return running
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"Prometheus not ready within {STARTUP_TIMEOUT_SECONDS} s:\n{running.log_tail()}")
    except BaseException:
        running.stop()
        raise

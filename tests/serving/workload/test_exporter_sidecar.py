"""The metrics sidecar as the pod runs it: its command line, from only the files its ConfigMap
mounts, with nothing else of this repository on the path."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from serving.workload.manifests import EXPORTER_CONTAINER, METRICS_PORT, deployment, exporter_config_map
from tests.serving.workload.test_manifests import make_spec
from tests.support.nginx_runner import free_loopback_port

pytestmark = pytest.mark.slow


def mounted_sources(spec, root: Path) -> None:
    """Write the ConfigMap's keys where the pod's volume `items` put them."""
    pod = deployment(spec, pod_annotations={})["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "metrics-exporter"]
    data = exporter_config_map(spec)["data"]
    assert volume["configMap"]["name"] == spec.names.exporter_config_map
    for item in volume["configMap"]["items"]:
        target = root / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(data[item["key"]])


def test_the_sidecar_runs_from_its_configmap_alone(tmp_path: Path) -> None:
    spec = make_spec()
    pod = deployment(spec, pod_annotations={})["spec"]["template"]["spec"]
    (sidecar,) = [c for c in pod["containers"] if c["name"] == EXPORTER_CONTAINER]
    mount = tmp_path / "opt"
    mounted_sources(spec, mount)
    port = free_loopback_port()
    command = [arg.replace(str(METRICS_PORT), str(port)) for arg in sidecar["command"]]
    assert command[:3] == ["python3", "-m", "serving.observability.exporter"]
    # -S -E: no site-packages and no PYTHON* variables but the one the pod sets (here by hand).
    env = {"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-S", "-E", *command[1:], "--listen-address", "127.0.0.1"],
        cwd=mount,  # -E ignores PYTHONPATH: the mount as working directory is what the path holds
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError as error:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    output, _ = process.communicate(timeout=10)
                    raise AssertionError(f"the sidecar did not answer: {output.decode()}") from error
                time.sleep(0.2)
        # The server is not up (nothing on its port): the exporter still answers, and says so.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        assert "# TYPE" in text
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert sorted(p.relative_to(mount).as_posix() for p in mount.rglob("*.py")) == sorted(
        item["path"]
        for v in pod["volumes"]
        if v["name"] == "metrics-exporter"
        for item in v["configMap"]["items"]
    )

"""Start and stop a real nginx (Debian's package) on a rendered gateway configuration.

Tests use this to run the very nginx.conf that the pod gets, with only the paths and ports
moved into a private prefix and the listener on 127.0.0.1.

In the pod nginx runs as uid 101 with nothing writable but /tmp. To show the configuration needs
no root, nginx runs here as an unprivileged user too: when the tests run as root, as `nobody`,
in a prefix that only that user owns (under /tmp, since pytest's own temp tree is closed to
other users).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from serving.workload.gateway import (
    GATEWAY_STATUS_PATH,
    GatewaySettings,
    render_api_key_map,
    render_entrypoint_script,
    render_nginx_conf,
)

# The nginx the tests run: Debian 12 "bookworm"'s package (1.22.1), installed by
# scripts/install-system-packages.
TEST_NGINX_DEBIAN_PACKAGE = "nginx"

NGINX_SEARCH_PATHS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx")
STARTUP_TIMEOUT_SECONDS = 10.0
SHUTDOWN_TIMEOUT_SECONDS = 10.0
UNPRIVILEGED_USER = "nobody"


class NginxMissingError(RuntimeError):
    """No nginx binary: CI must install it; a skipped gateway test would prove nothing."""


def find_nginx() -> str:
    found = shutil.which("nginx") or next((path for path in NGINX_SEARCH_PATHS if Path(path).is_file()), None)
    if found is None:
        raise NginxMissingError(
            "nginx is not installed, so the gateway cannot be tested for real. Install Debian's "
            f"package: apt-get update && apt-get install -y {TEST_NGINX_DEBIAN_PACKAGE}"
        )
    return found


# The image's /bin/sh is busybox ash; Debian's is dash. The entrypoint script is run by both.
ENTRYPOINT_SHELLS = {"dash": ("/bin/sh",), "busybox-ash": ("busybox", "sh")}


def shell_command(shell: str) -> list[str]:
    command = list(ENTRYPOINT_SHELLS[shell])
    if shutil.which(command[0]) is None:
        raise NginxMissingError(
            f"{command[0]} is not installed, so the entrypoint cannot be run as the image runs it. "
            "Install Debian's package: apt-get update && apt-get install -y busybox"
        )
    return command


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_loopback_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def metrics_overrides(syslog_port: int) -> dict[str, Any]:
    """GatewaySettings overrides that turn the metrics on as in the pod: the syslog line to
    127.0.0.1:<syslog_port> (the exporter's --gateway-syslog) and stub_status on a free port."""
    return {"metrics_syslog_server": f"127.0.0.1:{syslog_port}", "status_port": free_loopback_port()}


def wait_for_port(port: int, timeout_seconds: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with code {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout_seconds} s")


def _unprivileged_account() -> pwd.struct_passwd | None:
    """The account nginx runs as: `nobody` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwnam(UNPRIVILEGED_USER)


def _run_as_kwargs() -> dict[str, Any]:
    account = _unprivileged_account()
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _hand_over(prefix: Path) -> None:
    """Give the prefix to the unprivileged account, as the pod's /tmp belongs to uid 101."""
    account = _unprivileged_account()
    if account is None:
        return
    for path in (prefix, *prefix.rglob("*")):
        os.chown(path, account.pw_uid, account.pw_gid)


@contextmanager
def gateway_prefix() -> Iterator[Path]:
    prefix = Path(tempfile.mkdtemp(prefix="gateway-nginx-"))
    try:
        yield prefix
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def settings_for_prefix(
    prefix: Path,
    upstream_port: int,
    listen_port: int,
    overrides: Mapping[str, Any] | None = None,
    tls: bool = False,
) -> GatewaySettings:
    """The pod's settings with every path under `prefix` and the listener on loopback.

    `overrides` changes any GatewaySettings field, e.g. a short client_header_timeout_seconds
    that keeps a timeout test fast. Plain HTTP unless `tls`: most tests are about the proxy,
    and the TLS tests (test_gateway_tls.py) are about the listener.
    """
    settings = GatewaySettings(
        listen_port=listen_port,
        listen_address="127.0.0.1",
        upstream_host="127.0.0.1",
        upstream_port=upstream_port,
        api_key_map_path=str(prefix / "api-keys" / "api-keys.map"),
        tls_certificate_path=str(prefix / "tls" / "tls.crt") if tls else "",
        tls_key_path=str(prefix / "tls" / "tls.key") if tls else "",
        pid_path=str(prefix / "nginx.pid"),
        temp_dir=str(prefix / "tmp"),
        access_log_path=str(prefix / "access.log"),
        error_log_path=str(prefix / "error.log"),
        # Short enough that a test's stop() never waits long for a half-read stream.
        shutdown_timeout_seconds=5,
        # The pod sends metrics lines to its exporter and serves stub_status on 127.0.0.1:8081;
        # here both are off unless a test turns them on (metrics_overrides), so tests running at
        # once never share a port.
        metrics_syslog_server="",
        status_port=0,
    )
    return replace(settings, **dict(overrides or {}))


def write_gateway_files(
    prefix: Path,
    settings: GatewaySettings,
    api_keys: Sequence[str],
    certificate: tuple[str, str] | None = None,
) -> Path:
    """Render nginx.conf and the key map into the prefix as the pod's mounts would hold them;
    `certificate` (PEM chain, PEM key) goes where the TLS Secret's files would be."""
    key_map_path = Path(settings.api_key_map_path)
    key_map_path.parent.mkdir(parents=True, exist_ok=True)
    key_map_path.write_text(render_api_key_map(api_keys))
    if settings.tls:
        if certificate is None:
            raise ValueError("a TLS gateway needs a certificate and key to start")
        write_certificate(settings, *certificate)
    Path(settings.temp_dir).mkdir(parents=True, exist_ok=True)
    conf_path = prefix / "nginx.conf"
    conf_path.write_text(render_nginx_conf(settings))
    _hand_over(prefix)
    return conf_path


def write_certificate(settings: GatewaySettings, certificate_pem: str, key_pem: str) -> None:
    """Put a certificate and key where the gateway reads them (as the kubelet refreshes them)."""
    for path, text in ((settings.tls_certificate_path, certificate_pem), (settings.tls_key_path, key_pem)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)


def nginx_command(conf_path: Path, prefix: Path, *extra: str) -> list[str]:
    # The pod's nginx command line (serving.workload.gateway.GATEWAY_NGINX_COMMAND) plus the prefix.
    return [find_nginx(), *extra, "-p", str(prefix), "-c", str(conf_path), "-g", "daemon off;"]


def check_config(conf_path: Path, prefix: Path) -> subprocess.CompletedProcess:
    """`nginx -t` as the unprivileged user: parses the file, opens the key map, logs and paths."""
    return subprocess.run(
        nginx_command(conf_path, prefix, "-t"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        **_run_as_kwargs(),
    )


@dataclass
class RunningNginx:
    settings: GatewaySettings
    prefix: Path
    conf_path: Path
    process: subprocess.Popen
    stderr_path: Path
    stopped: bool = field(default=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.listen_port}"

    @property
    def status_url(self) -> str:
        """nginx's stub_status on its loopback listener (when the settings turn it on)."""
        if not self.settings.status_port:
            raise RuntimeError("this nginx runs without the stub_status listener (status_port=0)")
        return f"http://127.0.0.1:{self.settings.status_port}{GATEWAY_STATUS_PATH}"

    @property
    def access_log(self) -> str:
        path = Path(self.settings.access_log_path)
        return path.read_text() if path.exists() else ""

    @property
    def error_log(self) -> str:
        logs = [Path(self.settings.error_log_path), self.stderr_path]
        return "".join(path.read_text() for path in logs if path.exists())

    def master_pid(self) -> int:
        return int(Path(self.settings.pid_path).read_text().strip())

    def worker_pids(self) -> list[int]:
        """The master's children (Linux /proc): the workers that hold the connections."""
        master = self.master_pid()
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        return [int(pid) for pid in children]

    def open_file_limit(self, pid: int) -> tuple[int, int]:
        """(soft, hard) RLIMIT_NOFILE of one nginx process, from /proc/<pid>/limits."""
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
        raise RuntimeError(f"no 'Max open files' line in /proc/{pid}/limits")

    def worker_socket_count(self) -> int:
        """Sockets the workers hold open: accepted client connections, upstream ones, listeners."""
        count = 0
        for pid in self.worker_pids():
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    if os.readlink(fd).startswith("socket:"):
                        count += 1
                except FileNotFoundError:  # closed while we looked
                    pass
        return count

    def reload(self) -> None:
        """What `nginx -s reload` does: re-read nginx.conf and the key map, no dropped request."""
        self.process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        """Graceful stop (SIGQUIT, the image's STOPSIGNAL), kill if it hangs; remove the prefix."""
        if self.stopped:
            return
        self.stopped = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=SHUTDOWN_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=SHUTDOWN_TIMEOUT_SECONDS)
        self._stop_orphaned_master()
        shutil.rmtree(self.prefix, ignore_errors=True)

    def _stop_orphaned_master(self) -> None:
        # If an entrypoint script died without passing the signal on, its nginx lives on: stop
        # that one master (by its pid file), never anything else.
        pid_file = Path(self.settings.pid_path)
        if not pid_file.exists():
            return
        master_pid = int(pid_file.read_text().strip() or 0)
        if master_pid <= 0:
            return
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT_SECONDS
        try:
            os.kill(master_pid, signal.SIGQUIT)
            while time.monotonic() < deadline:
                os.kill(master_pid, 0)
                time.sleep(0.05)
            os.kill(master_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_nginx(
    upstream_port: int,
    api_keys: Sequence[str],
    entrypoint_poll_seconds: int | None = None,
    entrypoint_shell: str = "dash",
    settings_overrides: Mapping[str, Any] | None = None,
    certificate: tuple[str, str] | None = None,
) -> RunningNginx:
    """nginx on a free loopback port in a fresh prefix, in front of 127.0.0.1:upstream_port.

    `settings_overrides` changes GatewaySettings fields other than the paths and the listener.
    With `certificate` (PEM chain, PEM key) the gateway listens with TLS, as in the pod.

    With `entrypoint_poll_seconds`, nginx runs under the pod's entrypoint script (which reloads
    on key-map changes and turns SIGTERM/SIGQUIT into a graceful stop), and `process` is the
    shell running that script, as PID 1 would be in the container.
    """
    find_nginx()  # fail before creating anything
    prefix = Path(tempfile.mkdtemp(prefix="gateway-nginx-"))
    settings = settings_for_prefix(
        prefix, upstream_port, free_loopback_port(), settings_overrides, tls=certificate is not None
    )
    conf_path = write_gateway_files(prefix, settings, api_keys, certificate)
    command = nginx_command(conf_path, prefix)
    if entrypoint_poll_seconds is not None:
        script = render_entrypoint_script(command, settings.watched_paths, entrypoint_poll_seconds)
        command = [*shell_command(entrypoint_shell), "-c", script]
    stderr_path = prefix / "nginx.stderr"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            **_run_as_kwargs(),
        )
    running = RunningNginx(settings, prefix, conf_path, process, stderr_path)
    try:
        wait_for_port(settings.listen_port, STARTUP_TIMEOUT_SECONDS, process)
    except (RuntimeError, TimeoutError) as error:
        log = running.error_log
        running.stop()
        raise RuntimeError(f"nginx did not start: {error}\n{log}") from error
    return running

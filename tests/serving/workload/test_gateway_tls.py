"""The endpoint's TLS, for real: Debian's nginx runs the gateway's rendered TLS configuration with a
certificate issued for the names the Pulumi program asks for, and real clients (Python's ssl,
curl, the OpenAI SDK) verify the chain and the name.

The certificate's names come from the program itself, run under the mock runtime (the
CertRequest it registers); the NLB's DNS name is one that AWS would hand out in the stack's region.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import openai
import pytest

from serving.workload.certificates import CertificateNames
from tests.support.certificates import Authority, issue_server_certificate, new_authority
from tests.support.nginx_runner import RunningNginx, start_nginx, write_certificate
from tests.support.stack_harness import plan

pytestmark = pytest.mark.slow

MODEL = "openai/gpt-oss-120b"
# What AWS names an NLB in us-east-1 (the prod stack's region): <name>-<id>.elb.<region>.amazonaws.com.
NLB_HOSTNAME = "k8s-gptoss-gptoss-4f2a9c81d3-0123456789abcdef.elb.us-east-1.amazonaws.com"
ROTATION_TIMEOUT_SECONDS = 20


def program_certificate_names() -> CertificateNames:
    """The names on the certificate request the prod stack registers."""
    (request,) = plan("prod").of_type("tls:index/certRequest:CertRequest")
    return CertificateNames(
        common_name=request.inputs["subject"]["commonName"], dns_names=tuple(request.inputs["dnsNames"])
    )


class _Upstream(BaseHTTPRequestHandler):
    """trtllm-serve's /health and /v1/models, enough for a client to show it got through."""

    def do_GET(self) -> None:
        if self.path == "/health":
            body = b""
        elif self.path == "/v1/models":
            body = json.dumps(
                {
                    "object": "list",
                    "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "tensorrt_llm"}],
                }
            ).encode()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def upstream_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@dataclass
class TlsGateway:
    nginx: RunningNginx
    authority: Authority
    ca_file: Path
    key: str

    @property
    def port(self) -> int:
        return self.nginx.settings.listen_port


@pytest.fixture(scope="module")
def tls_gateway(upstream_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsGateway]:
    authority = new_authority()
    certificate = issue_server_certificate(authority, program_certificate_names())
    api_key = "k" * 43
    # Under the pod's entrypoint, which reloads nginx when the mounted certificate changes.
    nginx = start_nginx(upstream_port, [api_key], entrypoint_poll_seconds=1, certificate=certificate)
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca_file.write_text(authority.certificate_pem)
    yield TlsGateway(nginx, authority, ca_file, api_key)
    nginx.stop()


def client_context(ca_pem: str) -> ssl.SSLContext:
    """What a client that trusts only the stack's CA uses: chain and hostname are verified."""
    context = ssl.create_default_context(cadata=ca_pem)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    return context


def https_get(port: int, path: str, *, context: ssl.SSLContext, hostname: str, key: str | None = None):
    """GET over TLS to 127.0.0.1:port, presenting `hostname` (SNI, and the name verified)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    tls_socket = context.wrap_socket(raw, server_hostname=hostname)
    connection = http.client.HTTPConnection(hostname, port, timeout=10)
    connection.sock = tls_socket
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    body = response.read()
    version = tls_socket.version()
    connection.close()
    return response.status, body, version


def test_the_certificate_names_any_nlb_of_the_region_and_the_in_cluster_service() -> None:
    names = program_certificate_names().dns_names
    assert "*.elb.us-east-1.amazonaws.com" in names
    assert "gpt-oss.gpt-oss.svc.cluster.local" in names


def test_a_client_trusting_the_stack_ca_reaches_the_api_by_the_nlb_name(tls_gateway: TlsGateway) -> None:
    context = client_context(tls_gateway.authority.certificate_pem)
    status, body, version = https_get(
        tls_gateway.port, "/v1/models", context=context, hostname=NLB_HOSTNAME, key=tls_gateway.key
    )
    assert status == 200
    assert json.loads(body)["data"][0]["id"] == MODEL
    assert version in ("TLSv1.2", "TLSv1.3")
    # Without the key, TLS or not, the gateway still refuses.
    assert https_get(tls_gateway.port, "/v1/models", context=context, hostname=NLB_HOSTNAME)[0] == 401


def test_an_in_cluster_client_verifies_the_service_name(tls_gateway: TlsGateway) -> None:
    context = client_context(tls_gateway.authority.certificate_pem)
    status, _, _ = https_get(
        tls_gateway.port, "/health", context=context, hostname="gpt-oss.gpt-oss.svc.cluster.local"
    )
    assert status == 200


def test_a_client_trusting_another_ca_is_refused(tls_gateway: TlsGateway) -> None:
    other = client_context(new_authority("some other CA").certificate_pem)
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
        https_get(tls_gateway.port, "/health", context=other, hostname=NLB_HOSTNAME)


def test_a_client_with_the_default_web_trust_store_is_refused(tls_gateway: TlsGateway) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(tls_gateway.port, "/health", context=ssl.create_default_context(), hostname=NLB_HOSTNAME)


@pytest.mark.parametrize(
    "hostname",
    [
        "attacker.example.com",
        # The wildcard covers one label of the region's ELB domain, not another region's.
        "k8s-gptoss-0123.elb.eu-west-1.amazonaws.com",
        "a.b.elb.us-east-1.amazonaws.com",
    ],
)
def test_a_name_the_certificate_does_not_carry_is_refused(tls_gateway: TlsGateway, hostname: str) -> None:
    context = client_context(tls_gateway.authority.certificate_pem)
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        https_get(tls_gateway.port, "/health", context=context, hostname=hostname)


def test_plain_http_on_the_tls_port_gets_an_openai_error_saying_https(tls_gateway: TlsGateway) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", tls_gateway.port, timeout=10)
    connection.request("GET", "/v1/models", headers={"Authorization": f"Bearer {tls_gateway.key}"})
    response = connection.getresponse()
    error = json.loads(response.read())["error"]
    assert response.status == 400
    assert error["code"] == "tls_required" and "https://" in error["message"]


def test_curl_with_the_ca_file_as_the_readme_shows(tls_gateway: TlsGateway) -> None:
    curl = shutil.which("curl")
    assert curl, "curl is not installed: apt-get install -y curl"
    result = subprocess.run(
        [
            curl,
            "--silent",
            "--show-error",
            "--fail",
            "--cacert",
            str(tls_gateway.ca_file),
            # DNS is the one thing not real here: the NLB's name resolves to the loopback gateway.
            "--resolve",
            f"{NLB_HOSTNAME}:{tls_gateway.port}:127.0.0.1",
            "-H",
            f"Authorization: Bearer {tls_gateway.key}",
            f"https://{NLB_HOSTNAME}:{tls_gateway.port}/v1/models",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["data"][0]["id"] == MODEL
    refused = subprocess.run(
        [curl, "--silent", "--resolve", f"{NLB_HOSTNAME}:{tls_gateway.port}:127.0.0.1",
         f"https://{NLB_HOSTNAME}:{tls_gateway.port}/health"],
        capture_output=True,
        timeout=30,
        check=False,
    )  # fmt: skip
    assert refused.returncode == 60  # curl: peer certificate cannot be authenticated with known CA


def test_openai_sdk_with_the_ca_as_the_readme_shows(tls_gateway: TlsGateway, monkeypatch) -> None:
    real_getaddrinfo = socket.getaddrinfo

    def resolve(host, *args, **kwargs):  # DNS only: the NLB's name points at the loopback gateway
        return real_getaddrinfo("127.0.0.1" if host == NLB_HOSTNAME else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    client = openai.OpenAI(
        base_url=f"https://{NLB_HOSTNAME}:{tls_gateway.port}/v1",
        api_key=tls_gateway.key,
        http_client=openai.DefaultHttpxClient(verify=client_context(tls_gateway.ca_file.read_text())),
        max_retries=0,
    )
    assert [model.id for model in client.models.list()] == [MODEL]
    untrusting = openai.OpenAI(
        base_url=f"https://{NLB_HOSTNAME}:{tls_gateway.port}/v1", api_key=tls_gateway.key, max_retries=0
    )
    with pytest.raises(openai.APIConnectionError):
        untrusting.models.list()


def test_a_renewed_certificate_is_served_without_restarting_the_gateway(tls_gateway: TlsGateway) -> None:
    """Rotation: the Secret's files change (as the kubelet refreshes them) and the entrypoint
    reloads nginx; the master process, and so the pod, stays. Runs last: it changes the CA."""
    master_pid = Path(tls_gateway.nginx.settings.pid_path).read_text().strip()
    renewed_authority = new_authority("renewed CA")
    write_certificate(
        tls_gateway.nginx.settings, *issue_server_certificate(renewed_authority, program_certificate_names())
    )
    renewed = client_context(renewed_authority.certificate_pem)
    deadline = time.monotonic() + ROTATION_TIMEOUT_SECONDS
    while True:
        try:
            assert https_get(tls_gateway.port, "/health", context=renewed, hostname=NLB_HOSTNAME)[0] == 200
            break
        except ssl.SSLCertVerificationError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    assert Path(tls_gateway.nginx.settings.pid_path).read_text().strip() == master_pid
    assert "certificate changed, reloading nginx" in tls_gateway.nginx.error_log
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(
            tls_gateway.port,
            "/health",
            context=client_context(tls_gateway.authority.certificate_pem),
            hostname=NLB_HOSTNAME,
        )

"""The endpoint's certificate: which names it is for, and how long it and its CA live.

Without an ACM certificate the stack issues its own (components/inference_server.py, with
pulumi-tls): a CA that only this stack's state holds the key of, and a server certificate that
the gateway presents. App teams trust the CA (stack output `caCertificate`), not the whole web PKI,
so the certificate can name the load balancer before it exists.

The load balancer's DNS name is only known once AWS has created it, and the certificate must be
in the pod before then; NLB names all have the form `<name>-<id>.elb.<region>.amazonaws.com`,
so the certificate names that pattern with a wildcard for the first label. Only clients that
trust this stack's CA accept it, and only a server holding this stack's key can present it.
"""

from __future__ import annotations

from dataclasses import dataclass

# ECDSA P-256: what every TLS client supports, and far cheaper per handshake than RSA.
KEY_ALGORITHM = "ECDSA"
KEY_CURVE = "P256"
CA_COMMON_NAME = "gpt-oss endpoint CA"
# The CA outlives many server certificates: app teams install it once.
CA_VALIDITY_HOURS = 10 * 365 * 24
# The server certificate lives a year; `pulumi up` in the last 30 days issues a new one (pulumi-tls
# marks it for replacement), which the gateway loads without a restart.
SERVER_VALIDITY_HOURS = 365 * 24
SERVER_EARLY_RENEWAL_HOURS = 30 * 24
SERVER_USES = ("digital_signature", "key_encipherment", "server_auth")
CA_USES = ("cert_signing", "crl_signing")


@dataclass(frozen=True)
class CertificateNames:
    common_name: str
    dns_names: tuple[str, ...]


def load_balancer_dns_suffix(region: str) -> str:
    """The domain AWS gives a load balancer in `region` (China's regions have their own)."""
    top = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"elb.{region}.{top}"


def endpoint_certificate_names(
    *, service: str, namespace: str, region: str | None, hostname: str | None
) -> CertificateNames:
    """The names clients may use: the stack's hostname, any NLB of the region, the Service."""
    in_cluster = (f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local")
    load_balancer = (f"*.{load_balancer_dns_suffix(region)}",) if region else ()
    names = ((hostname,) if hostname else ()) + load_balancer + in_cluster
    return CertificateNames(common_name=names[0], dns_names=names)

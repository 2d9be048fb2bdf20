"""The endpoint's own CA and server certificate (pulumi-tls), for the gateway to present.

Both private keys exist only in the stack's state, encrypted as Pulumi secrets, and in the
gateway's Kubernetes Secret; app teams get the CA certificate (stack output `caCertificate`).
Which names the certificate carries, and for how long, is plain Python in
`serving/workload/certificates.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_tls as tls

from serving.workload import certificates


@dataclass(frozen=True)
class EndpointCertificateArgs:
    names: certificates.CertificateNames


class EndpointCertificate(pulumi.ComponentResource):
    """A stack-owned CA and a server certificate it signs.

    Renewal: within `SERVER_EARLY_RENEWAL_HOURS` of expiry, `pulumi up` replaces the server
    certificate (the CA stays), the Kubernetes Secret changes and the gateway reloads it in place.
    """

    ca_certificate_pem: pulumi.Output[str]
    certificate_pem: pulumi.Output[str]
    private_key_pem: pulumi.Output[str]  # secret

    def __init__(self, name: str, args: EndpointCertificateArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpt-oss:serving:EndpointCertificate", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        ca_key = tls.PrivateKey(
            f"{name}-ca-key",
            algorithm=certificates.KEY_ALGORITHM,
            ecdsa_curve=certificates.KEY_CURVE,
            opts=child,
        )
        ca = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=ca_key.private_key_pem,
            is_ca_certificate=True,
            # It signs server certificates only, never another CA.
            max_path_length=0,
            subject=tls.SelfSignedCertSubjectArgs(
                common_name=certificates.CA_COMMON_NAME, organization=pulumi.get_stack()
            ),
            validity_period_hours=certificates.CA_VALIDITY_HOURS,
            allowed_uses=list(certificates.CA_USES),
            opts=child,
        )
        server_key = tls.PrivateKey(
            f"{name}-server-key",
            algorithm=certificates.KEY_ALGORITHM,
            ecdsa_curve=certificates.KEY_CURVE,
            opts=child,
        )
        request = tls.CertRequest(
            f"{name}-server-request",
            private_key_pem=server_key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(common_name=args.names.common_name),
            dns_names=list(args.names.dns_names),
            opts=child,
        )
        server = tls.LocallySignedCert(
            f"{name}-server",
            cert_request_pem=request.cert_request_pem,
            ca_private_key_pem=ca_key.private_key_pem,
            ca_cert_pem=ca.cert_pem,
            validity_period_hours=certificates.SERVER_VALIDITY_HOURS,
            early_renewal_hours=certificates.SERVER_EARLY_RENEWAL_HOURS,
            allowed_uses=list(certificates.SERVER_USES),
            opts=child,
        )
        self.ca_certificate_pem = ca.cert_pem
        self.certificate_pem = server.cert_pem
        self.private_key_pem = pulumi.Output.secret(server_key.private_key_pem)
        self.register_outputs({"caCertificate": self.ca_certificate_pem, "certificate": self.certificate_pem})

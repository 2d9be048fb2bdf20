"""The endpoint inside the real program (run offline): TLS by default, the AWS Load Balancer
Controller in AWS mode, the control plane's log retention."""

from __future__ import annotations

import json

import pytest

from components.load_balancer_controller import CHART_REPOSITORY, CHART_VERSION, SERVICE_ACCOUNT
from serving.config.settings import SettingsError
from tests.support.stack_harness import plan, run

SERVICE = "kubernetes:core/v1:Service"
SECRET = "kubernetes:core/v1:Secret"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
RELEASE = "kubernetes:helm.sh/v3:Release"
CERT_REQUEST = "tls:index/certRequest:CertRequest"
PRIVATE_KEY = "tls:index/privateKey:PrivateKey"
ACM_ARN = "arn:aws:acm:us-east-1:123456789012:certificate/12345678-1234-1234-1234-123456789012"


def test_the_endpoint_is_https_with_the_stack_ca_exported_for_clients():
    result = plan()
    assert str(result.outputs["endpoint"]).startswith("https://<nlb-of-gpt-oss>.elb.us-east-1.amazonaws.com")
    assert str(result.outputs["caCertificate"]).startswith("-----BEGIN CERTIFICATE-----")
    service = result.one(SERVICE, "gpt-oss-endpoint").inputs
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("https", 443)]


def test_the_private_keys_stay_secrets_and_reach_only_the_gateway_secret():
    result = plan()
    tls_secret = result.one(SECRET, "gpt-oss-api-gateway-tls")
    assert tls_secret.inputs["type"] == "kubernetes.io/tls"
    assert tls_secret.is_secret_input("stringData")
    server_key = result.one(PRIVATE_KEY, "gpt-oss-certificate-server-key").state["privateKeyPem"]
    ca_key = result.one(PRIVATE_KEY, "gpt-oss-certificate-ca-key").state["privateKeyPem"]
    assert tls_secret.inputs["stringData"]["tls.key"] == server_key
    for key in (server_key, ca_key):
        assert key not in json.dumps(result.outputs)
        for resource in result.resources:
            if resource.type.startswith("tls:") or resource.name == "gpt-oss-api-gateway-tls":
                continue
            assert key not in json.dumps(resource.inputs), resource.name
    # The pods wait for their certificate.
    deployment = result.one(DEPLOYMENT, "gpt-oss-server")
    assert tls_secret.urn in deployment.dependencies


def test_the_certificate_names_the_hostname_when_the_stack_has_one():
    result = run(config={"endpointHostname": "llm.internal.example.com"})
    names = result.one(CERT_REQUEST, "gpt-oss-certificate-server-request").inputs["dnsNames"]
    assert names[0] == "llm.internal.example.com"
    assert "*.elb.us-east-1.amazonaws.com" in names
    assert result.outputs["endpoint"] == "https://llm.internal.example.com/v1"


def test_an_acm_certificate_goes_on_the_nlb_and_no_stack_ca_is_exported():
    result = run(config={"endpointHostname": "llm.example.com", "endpointCertificateArn": ACM_ARN})
    annotations = result.one(SERVICE, "gpt-oss-endpoint").inputs["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-ssl-cert"] == ACM_ARN
    assert result.outputs["endpoint"] == "https://llm.example.com/v1"
    assert "caCertificate" not in result.outputs
    # The pods still present the stack's certificate to the NLB (re-encrypted hop).
    assert result.one(SECRET, "gpt-oss-api-gateway-tls")


def test_plain_http_only_when_asked_and_then_no_certificate_at_all():
    result = run(config={"endpointPlainHttp": True})
    assert str(result.outputs["endpoint"]).startswith("http://")
    assert "caCertificate" not in result.outputs
    assert not [r for r in result.resources if r.type.startswith("tls:")]
    service = result.one(SERVICE, "gpt-oss-endpoint").inputs
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("http", 80)]


def test_an_acm_certificate_without_its_hostname_is_refused_before_anything_is_registered():
    with pytest.raises(SettingsError, match="endpointHostname"):
        run(config={"endpointCertificateArn": ACM_ARN})


def test_the_controller_is_pinned_and_its_role_is_for_its_service_account_only():
    result = plan()
    release = result.one(RELEASE, "aws-load-balancer-controller")
    assert (release.inputs["chart"], release.inputs["version"]) == (
        "aws-load-balancer-controller",
        CHART_VERSION,
    )
    assert release.inputs["repositoryOpts"]["repo"] == CHART_REPOSITORY
    values = release.inputs["values"]
    assert values["clusterName"] == "gpt-oss-prod" and values["region"] == "us-east-1"
    assert values["vpcId"] == "<vpc-id>"
    assert values["serviceAccount"] == {"create": True, "name": SERVICE_ACCOUNT}
    assert values["nodeSelector"] == {"gpt-oss/node-role": "system"}
    identity = result.one(
        "aws:eks/podIdentityAssociation:PodIdentityAssociation", "aws-load-balancer-controller-identity"
    )
    assert (identity.inputs["namespace"], identity.inputs["serviceAccount"]) == (
        "kube-system",
        SERVICE_ACCOUNT,
    )
    role = result.one("aws:iam/role:Role", "aws-load-balancer-controller-role")
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert trust == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "pods.eks.amazonaws.com"},
            "Action": ["sts:AssumeRole", "sts:TagSession"],
        }
    ]
    assert identity.inputs["roleArn"] == role.state["arn"]
    # Installed once the Pod Identity association exists, or its first pods get no credentials.
    assert identity.urn in release.dependencies


def test_the_service_waits_for_the_controller_so_destroy_deletes_the_nlb_first():
    result = plan()
    service = result.one(SERVICE, "gpt-oss-endpoint")
    # Depending on the component means depending on its children: the Helm release among them.
    assert result.one(RELEASE, "aws-load-balancer-controller").urn in service.dependencies
    # A change of controller replaces the Service, deleting the old one first: the name stays.
    assert service.delete_before_replace


def test_an_existing_cluster_gets_no_controller_and_a_service_either_controller_reads():
    result = plan("existing-cluster")
    assert not result.of_type(RELEASE)
    annotations = result.one(SERVICE, "gpt-oss-endpoint").inputs["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internal"
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-type"] == "nlb"


def test_control_plane_logs_expire_after_the_retention_setting():
    result = run(config={"clusterLogRetentionDays": 30})
    group = result.one("aws:cloudwatch/logGroup:LogGroup")
    assert group.inputs["name"] == "/aws/eks/gpt-oss-prod/cluster"
    assert group.inputs["retentionInDays"] == 30
    cluster = result.one("aws:eks/cluster:Cluster")
    # Created before the cluster, or EKS would create its own group without a retention.
    assert group.urn in cluster.dependencies
    assert plan().one("aws:cloudwatch/logGroup:LogGroup").inputs["retentionInDays"] == 90

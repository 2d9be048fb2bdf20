"""What the cloud would answer, with values that are plainly placeholders.

`PlanMocks.new_resource` returns a resource's inputs plus the outputs only AWS or Kubernetes
would know (ids, ARNs, the EKS endpoint, a load balancer's hostname), each shaped like the real
thing but spelled so nobody mistakes it for a real value: `<...>` markers and the documentation
account 123456789012. `call` answers the invokes the program makes and fails loudly on any other,
so a new data source cannot silently read as empty.
"""

from __future__ import annotations

import copy
from typing import Any

import pulumi
from pulumi.runtime import MockCallArgs, MockResourceArgs

ACCOUNT_ID = "123456789012"  # AWS's documentation account id: never a real account
ZONE_SUFFIXES = ("a", "b", "c", "d", "e", "f")
# The mocked region has four zones; GPU instance types are offered in three of them, as p5 is in
# real regions (not in every zone), so the plan shows a zone being left out.
ZONE_COUNT = 4
ZONES_WITHOUT_GPUS = ("d",)


class UnmockedInvokeError(RuntimeError):
    pass


class PlanMocks(pulumi.runtime.Mocks):
    def __init__(self, region: str):
        self.region = region

    # --- invokes -----------------------------------------------------------------------
    def call(self, args: MockCallArgs):
        token = args.token
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            names = [f"{self.region}{suffix}" for suffix in ZONE_SUFFIXES[:ZONE_COUNT]]
            return {
                "id": self.region,
                "names": names,
                "state": "available",
                "zoneIds": [f"use1-az{i + 1}" for i in range(len(names))],
                "groupNames": [self.region] * len(names),
            }
        if token == "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings":
            types: list[str] = next(
                (f.get("values") for f in args.args.get("filters") or [] if f.get("name") == "instance-type"),
                [],
            )
            gpu = any(t.startswith(("p", "g")) for t in types or [])
            zones = [
                f"{self.region}{s}"
                for s in ZONE_SUFFIXES[:ZONE_COUNT]
                if not (gpu and s in ZONES_WITHOUT_GPUS)
            ]
            return {
                "id": self.region,
                "instanceTypes": [t for t in types for _ in zones],
                "locations": zones,
                "locationTypes": ["availability-zone"] * len(zones),
            }
        if token == "aws:index/getPartition:getPartition":
            return {
                "id": "aws",
                "partition": "aws",
                "dnsSuffix": "amazonaws.com",
                "reverseDnsPrefix": "com.amazonaws",
            }
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "id": ACCOUNT_ID,
                "accountId": ACCOUNT_ID,
                "arn": f"arn:aws:iam::{ACCOUNT_ID}:role/<deploying-role>",
                "userId": "<deploying-identity>",
            }
        if token == "aws:iam/getSessionContext:getSessionContext":
            # The deploying identity as an assumed role: its issuer is the role itself.
            return {
                "id": args.args.get("arn"),
                "arn": args.args.get("arn"),
                "issuerArn": f"arn:aws:iam::{ACCOUNT_ID}:role/<deploying-role>",
                "issuerId": "<deploying-role-id>",
                "issuerName": "<deploying-role>",
                "sessionName": "<session>",
            }
        if token == "aws:index/getRegion:getRegion":
            return {
                "id": self.region,
                "name": self.region,
                "region": self.region,
                "endpoint": f"ec2.{self.region}.amazonaws.com",
                "description": "<region>",
            }
        if token == "aws:eks/getAddonVersion:getAddonVersion":
            addon, version = args.args.get("addonName"), args.args.get("kubernetesVersion")
            return {
                "id": f"{addon}",
                "addonName": addon,
                "kubernetesVersion": version,
                "version": f"<EKS default {addon} for {version}>",
            }
        raise UnmockedInvokeError(
            f"offline/mocks.py has no answer for the invoke {token}; add one to PlanMocks.call"
        )

    # --- resources ---------------------------------------------------------------------
    def new_resource(self, args: MockResourceArgs):
        state = copy.deepcopy(args.inputs)
        resource_id = f"<{args.name}-id>"
        kind = args.typ
        if kind.startswith("kubernetes:helm.sh/"):
            # A Helm release: the chart never reaches a cluster here; its inputs are its state.
            state.setdefault("status", {"status": "deployed", "version": state.get("version")})
            return resource_id, state
        if kind.startswith("kubernetes:"):
            return resource_id, self._kubernetes_state(args, state)
        if kind.startswith("tls:"):
            return resource_id, _tls_placeholders(args, state)
        if kind.startswith("aws:"):
            service = kind.split(":")[1].split("/")[0]
            state.setdefault("arn", f"arn:aws:{service}:{self.region}:{ACCOUNT_ID}:<{args.name}>")
            state.setdefault("tagsAll", state.get("tags", {}))
        extra = _AWS_OUTPUTS.get(kind)
        if extra is not None:
            resource_id = extra(self, args, state) or resource_id
        elif kind.startswith("random:"):
            state["result"] = _random_placeholder(args.name, state)
        return resource_id, state

    def _kubernetes_state(self, args: MockResourceArgs, state: dict[str, Any]) -> dict[str, Any]:
        metadata = state.setdefault("metadata", {})
        # The provider autonames objects without a name (<name>-<random suffix>).
        metadata.setdefault("name", f"{args.name}-<suffix>")
        if args.typ == "kubernetes:core/v1:Service" and state.get("spec", {}).get("type") == "LoadBalancer":
            name = metadata.get("name")
            state["status"] = {
                "loadBalancer": {
                    "ingress": [{"hostname": f"<nlb-of-{name}>.elb.{self.region}.amazonaws.com"}]
                }
            }
        return state


# pulumi-tls's PEM outputs by resource type: visibly placeholders, in PEM's framing.
_TLS_PEM_OUTPUTS = {
    "tls:index/privateKey:PrivateKey": ("privateKeyPem", "PRIVATE KEY"),
    "tls:index/selfSignedCert:SelfSignedCert": ("certPem", "CERTIFICATE"),
    "tls:index/certRequest:CertRequest": ("certRequestPem", "CERTIFICATE REQUEST"),
    "tls:index/locallySignedCert:LocallySignedCert": ("certPem", "CERTIFICATE"),
}


def _tls_placeholders(args: MockResourceArgs, state: dict) -> dict:
    output, label = _TLS_PEM_OUTPUTS[args.typ]
    state[output] = f"-----BEGIN {label}-----\nplaceholder-of-{args.name}\n-----END {label}-----\n"
    if args.typ == "tls:index/locallySignedCert:LocallySignedCert":
        state["readyForRenewal"] = False
    return state


def _random_placeholder(name: str, state: dict) -> str:
    """A generated value of the requested length, letters and digits only (it must pass the
    same format checks a real one would), visibly a placeholder: "placeholderapikey000..."."""
    length = int(state.get("length") or 32)
    stem = "placeholder" + "".join(ch for ch in name.lower() if ch.isalnum())
    return (stem + "0" * length)[:length]


def _vpc(mocks: PlanMocks, args: MockResourceArgs, state: dict) -> str:
    state.update(defaultSecurityGroupId="<default-sg-id>", mainRouteTableId="<main-rtb-id>")
    return "<vpc-id>"


def _subnet(mocks: PlanMocks, args: MockResourceArgs, state: dict) -> str:
    return f"<subnet-id:{args.name}>"


def _eip(mocks: PlanMocks, args: MockResourceArgs, state: dict) -> str:
    state.update(allocationId=f"<eipalloc:{args.name}>", publicIp="<elastic-ip>")
    return f"<eipalloc:{args.name}>"


def _role(mocks: PlanMocks, args: MockResourceArgs, state: dict) -> str:
    name = state.get("name") or f"{args.name}-<suffix>"
    state.update(name=name, arn=f"arn:aws:iam::{ACCOUNT_ID}:role/{name}", uniqueId="<role-id>")
    return name


def _kms_key(mocks: PlanMocks, args: MockResourceArgs, state: dict) -> str:
    state.update(
        keyId=f"<kms-key-id:{args.name}>",
        arn=f"arn:aws:kms:{mocks.region}:{ACCOUNT_ID}:key/<kms-key-id:{args.name}>",
    )
    return f"<kms-key-id:{args.name}>"


def _eks_cluster(mocks: PlanMocks, args: MockResourceArgs, state: dict) -> str:
    name = state.get("name") or args.name
    vpc_config = dict(state.get("vpcConfig") or {})
    vpc_config.update(clusterSecurityGroupId="<eks-cluster-security-group-id>", vpcId="<vpc-id>")
    state.update(
        name=name,
        arn=f"arn:aws:eks:{mocks.region}:{ACCOUNT_ID}:cluster/{name}",
        endpoint=f"https://<eks-endpoint-of-{name}>.{mocks.region}.eks.amazonaws.com",
        certificateAuthority={"data": "<cluster-ca-certificate-base64>"},
        identities=[{"oidcs": [{"issuer": f"https://oidc.eks.{mocks.region}.amazonaws.com/id/<oidc-id>"}]}],
        platformVersion="<eks-platform-version>",
        status="ACTIVE",
        vpcConfig=vpc_config,
    )
    return name


def _node_group(mocks: PlanMocks, args: MockResourceArgs, state: dict) -> str:
    name = state.get("nodeGroupName") or f"{args.name}-<suffix>"
    state.update(
        nodeGroupName=name,
        status="ACTIVE",
        releaseVersion="<eks-ami-release>",
        resources=[{"autoscalingGroups": [{"name": f"<asg-of-{name}>"}]}],
    )
    return f"{state.get('clusterName')}:{name}"


def _launch_template(mocks: PlanMocks, args: MockResourceArgs, state: dict) -> str:
    state.update(latestVersion=1, defaultVersion=1, name=state.get("name") or f"{args.name}-<suffix>")
    return f"<lt-id:{args.name}>"


def _named(prefix: str):
    def outputs(mocks: PlanMocks, args: MockResourceArgs, state: dict) -> str:
        state.setdefault("name", f"{args.name}-<suffix>")
        return f"<{prefix}:{args.name}>"

    return outputs


def _amp_workspace(mocks: PlanMocks, args: MockResourceArgs, state: dict) -> str:
    workspace_id = f"ws-<{args.name}>"
    state.update(
        arn=f"arn:aws:aps:{mocks.region}:{ACCOUNT_ID}:workspace/{workspace_id}",
        # As AMP returns it: the workspace's Prometheus-compatible API, with a trailing slash.
        prometheusEndpoint=f"https://aps-workspaces.{mocks.region}.amazonaws.com/workspaces/{workspace_id}/",
    )
    return workspace_id


def _amp_scraper(mocks: PlanMocks, args: MockResourceArgs, state: dict) -> str:
    scraper_id = f"s-<{args.name}>"
    state.update(
        arn=f"arn:aws:aps:{mocks.region}:{ACCOUNT_ID}:scraper/{scraper_id}",
        # The service-linked role AMP creates for each scraper.
        roleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/aws-service-role/scraper.aps.amazonaws.com/"
        f"AWSServiceRoleForAmazonPrometheusScraper_<{args.name}>",
    )
    return scraper_id


def _security_group(mocks: PlanMocks, args: MockResourceArgs, state: dict) -> str:
    state.setdefault("name", f"{args.name}-<suffix>")
    return f"<sg-id:{args.name}>"


_AWS_OUTPUTS = {
    "aws:ec2/vpc:Vpc": _vpc,
    "aws:ec2/subnet:Subnet": _subnet,
    "aws:ec2/eip:Eip": _eip,
    "aws:iam/role:Role": _role,
    "aws:kms/key:Key": _kms_key,
    "aws:eks/cluster:Cluster": _eks_cluster,
    "aws:eks/nodeGroup:NodeGroup": _node_group,
    "aws:ec2/launchTemplate:LaunchTemplate": _launch_template,
    "aws:secretsmanager/secret:Secret": _named("secret"),
    "aws:amp/workspace:Workspace": _amp_workspace,
    "aws:amp/scraper:Scraper": _amp_scraper,
    "aws:ec2/securityGroup:SecurityGroup": _security_group,
}

"""The VPC: public and private subnets in every chosen zone, NAT for the private ones.

Nodes live in the private subnets and reach the internet (nvcr.io for the 20-30 GB TensorRT-LLM
image, Hugging Face for ~65 GB of weights) through NAT. Public subnets hold only the NAT gateways
and, if an app team asks for an internet-facing endpoint, its load balancer.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

# Subnet tags the AWS load balancer integrations look for when they place load balancers.
PUBLIC_ELB_TAG = "kubernetes.io/role/elb"
INTERNAL_ELB_TAG = "kubernetes.io/role/internal-elb"


@dataclass(frozen=True)
class SubnetPlan:
    zone: str
    private_cidr: str
    public_cidr: str


def plan_subnets(vpc_cidr: str, zones: list[str]) -> list[SubnetPlan]:
    """Carve the VPC into one large private and one small public subnet per zone.

    The VPC is cut into 8 equal blocks: blocks 0-5 are the private subnets (pods take VPC IPs
    through the VPC CNI, so private subnets get the room), block 7 is cut again into 8 public
    subnets. Six zones at most, which no region needs to exceed for this stack.
    """
    network = ipaddress.IPv4Network(vpc_cidr)  # AWS VPCs are IPv4 blocks
    blocks = list(network.subnets(prefixlen_diff=3))
    public_blocks = list(blocks[7].subnets(prefixlen_diff=3))
    if len(zones) > 6:
        raise ValueError(f"at most 6 availability zones fit this subnet layout, got {len(zones)}")
    return [
        SubnetPlan(zone=zone, private_cidr=str(blocks[i]), public_cidr=str(public_blocks[i]))
        for i, zone in enumerate(zones)
    ]


@dataclass(frozen=True)
class NetworkArgs:
    cidr: str
    zones: list[str]
    cluster_name: str
    # One NAT gateway per zone: each costs about 0.045 USD an hour, under 0.1% of one p5 node, and
    # a zone's nodes then neither lose egress with another zone nor pay cross-zone transfer for
    # the ~90 GB each GPU node pulls at start. False shares one NAT (for cheap test stacks).
    nat_gateway_per_zone: bool = True
    tags: dict[str, str] = field(default_factory=dict)


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    private_subnet_ids: list[pulumi.Output[str]]
    public_subnet_ids: list[pulumi.Output[str]]
    private_subnet_ids_by_zone: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpt-oss:aws:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cluster_tag = {f"kubernetes.io/cluster/{args.cluster_name}": "shared"}

        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.cidr,
            # EKS needs DNS hostnames and resolution for nodes to register and for private
            # endpoint access.
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={**args.tags, "Name": f"{args.cluster_name}-vpc"},
            opts=child,
        )
        gateway = aws.ec2.InternetGateway(
            f"{name}-igw",
            vpc_id=vpc.id,
            tags={**args.tags, "Name": f"{args.cluster_name}-igw"},
            opts=child,
        )
        public_routes = aws.ec2.RouteTable(
            f"{name}-public",
            vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=gateway.id)],
            tags={**args.tags, "Name": f"{args.cluster_name}-public"},
            opts=child,
        )

        self.public_subnet_ids = []
        self.private_subnet_ids = []
        self.private_subnet_ids_by_zone = {}
        shared_nat: aws.ec2.NatGateway | None = None
        for plan in plan_subnets(args.cidr, args.zones):
            public = aws.ec2.Subnet(
                f"{name}-public-{plan.zone}",
                vpc_id=vpc.id,
                availability_zone=plan.zone,
                cidr_block=plan.public_cidr,
                # Nothing launched here needs a public IP by default; NAT uses an Elastic IP.
                map_public_ip_on_launch=False,
                tags={
                    **args.tags,
                    **cluster_tag,
                    PUBLIC_ELB_TAG: "1",
                    "Name": f"{args.cluster_name}-public-{plan.zone}",
                },
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{plan.zone}",
                subnet_id=public.id,
                route_table_id=public_routes.id,
                opts=child,
            )
            if args.nat_gateway_per_zone or shared_nat is None:
                address = aws.ec2.Eip(
                    f"{name}-nat-{plan.zone}",
                    domain="vpc",
                    tags={**args.tags, "Name": f"{args.cluster_name}-nat-{plan.zone}"},
                    opts=child,
                )
                nat = aws.ec2.NatGateway(
                    f"{name}-nat-{plan.zone}",
                    allocation_id=address.allocation_id,
                    subnet_id=public.id,
                    tags={**args.tags, "Name": f"{args.cluster_name}-nat-{plan.zone}"},
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[gateway]),
                )
                shared_nat = nat
            private = aws.ec2.Subnet(
                f"{name}-private-{plan.zone}",
                vpc_id=vpc.id,
                availability_zone=plan.zone,
                cidr_block=plan.private_cidr,
                map_public_ip_on_launch=False,
                tags={
                    **args.tags,
                    **cluster_tag,
                    INTERNAL_ELB_TAG: "1",
                    "Name": f"{args.cluster_name}-private-{plan.zone}",
                },
                opts=child,
            )
            private_routes = aws.ec2.RouteTable(
                f"{name}-private-{plan.zone}",
                vpc_id=vpc.id,
                routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=shared_nat.id)],
                tags={**args.tags, "Name": f"{args.cluster_name}-private-{plan.zone}"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{plan.zone}",
                subnet_id=private.id,
                route_table_id=private_routes.id,
                opts=child,
            )
            self.public_subnet_ids.append(public.id)
            self.private_subnet_ids.append(private.id)
            self.private_subnet_ids_by_zone[plan.zone] = private.id

        self.vpc_id = vpc.id
        self.register_outputs(
            {
                "vpcId": self.vpc_id,
                "privateSubnetIds": self.private_subnet_ids,
                "publicSubnetIds": self.public_subnet_ids,
            }
        )


def choose_zones(
    available: list[str], count: int, required: str | None, offering: list[str], instance_type: str
) -> list[str]:
    """`count` available zones, those that offer `instance_type` first, always including
    `required` (a Capacity Block's zone). The GPU nodes go only to the offering ones.

    Raises ValueError naming what was asked and what exists, for the settings error message.
    """
    if required is not None and required not in available:
        raise ValueError(
            f"the reservation's zone {required} is not among this region's available zones "
            f"({', '.join(available)})"
        )
    if required is not None and required not in offering:
        raise ValueError(
            f"the reservation's zone {required} does not offer {instance_type} (zones that do: "
            f"{', '.join(offering) or 'none'})"
        )
    if count > len(available):
        raise ValueError(
            f"{count} availability zones asked for, the region offers {len(available)} "
            f"({', '.join(available)})"
        )
    gpu_zones = [zone for zone in available if zone in offering]
    if not gpu_zones:
        raise ValueError(
            f"no available zone of the region offers {instance_type} (available: {', '.join(available)}); "
            "choose a region or instance type that AWS offers together"
        )
    chosen = [required] if required else []
    chosen += [zone for zone in gpu_zones if zone not in chosen]
    chosen += [zone for zone in available if zone not in chosen]
    return sorted(chosen[:count])

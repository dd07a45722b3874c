"""Where the jobs run: private subnets with outbound access, and a security group that admits nothing."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from constructs import Construct


class Network(Construct):
    """A new VPC (private subnets behind NAT, plus an S3 gateway endpoint) or an existing one looked up by id.

    Batch instances need outbound HTTPS to ECR, ECS, CloudWatch Logs and S3; nothing ever connects to them.
    """

    vpc: ec2.IVpc
    subnets: ec2.SubnetSelection
    security_group: ec2.SecurityGroup

    def __init__(
        self, scope: Construct, construct_id: str, *, vpc_id: str | None, max_azs: int, nat_gateways: int
    ) -> None:
        super().__init__(scope, construct_id)
        if vpc_id is None:
            vpc = ec2.Vpc(
                self,
                "Vpc",
                max_azs=max_azs,
                nat_gateways=nat_gateways,
                subnet_configuration=[
                    ec2.SubnetConfiguration(name="Public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                    ec2.SubnetConfiguration(
                        name="Private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20
                    ),
                ],
                # Nothing uses the default security group; restricting it would add a Lambda-backed custom resource.
                restrict_default_security_group=False,
            )
            # Payload and result traffic to S3 skips the NAT gateway (no per-GB NAT charge).
            vpc.add_gateway_endpoint("S3Endpoint", service=ec2.GatewayVpcEndpointAwsService.S3)
            self.vpc = vpc
        else:
            # An existing VPC keeps its own endpoints: a second S3 gateway endpoint on the same route tables fails.
            self.vpc = ec2.Vpc.from_lookup(self, "Vpc", vpc_id=vpc_id)
        self.subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.security_group = ec2.SecurityGroup(
            self,
            "JobSecurityGroup",
            vpc=self.vpc,
            description="Scaler Batch job instances: no ingress; outbound to AWS APIs, image registry, task code",
            allow_all_outbound=True,
        )

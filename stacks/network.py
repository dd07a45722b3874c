"""Where the jobs run: private subnets, and a security group that admits nothing.

Two layouts for a new VPC:

* ``nat_gateways >= 1``: private subnets with outbound access through NAT gateways (jobs may reach the internet);
* ``nat_gateways == 0``: isolated subnets without any route to the internet, and VPC endpoints for exactly what the
  ECS agent, the image pull and the job need (:data:`INTERFACE_ENDPOINTS` plus the S3 gateway endpoint).
"""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

#: Interface endpoints an isolated VPC needs: the image pull (ECR API and registry; layers come from S3), the ECS
#: agent on each instance (ECS, its agent and telemetry endpoints), job logs, job credentials (STS) and secrets.
INTERFACE_ENDPOINTS: dict[str, ec2.InterfaceVpcEndpointAwsService] = {
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "Ecs": ec2.InterfaceVpcEndpointAwsService.ECS,
    "EcsAgent": ec2.InterfaceVpcEndpointAwsService.ECS_AGENT,
    "EcsTelemetry": ec2.InterfaceVpcEndpointAwsService.ECS_TELEMETRY,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "Sts": ec2.InterfaceVpcEndpointAwsService.STS,
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
}
HTTPS = 443


class Network(Construct):
    """A new VPC (see the module docstring) or an existing one looked up by id.

    Batch instances need HTTPS to ECR, ECS, CloudWatch Logs and S3; nothing ever connects to them.
    """

    vpc: ec2.IVpc
    subnets: ec2.SubnetSelection
    security_group: ec2.SecurityGroup
    #: The interface endpoints' security group (isolated layout only): HTTPS from the job security group.
    endpoint_security_group: ec2.SecurityGroup | None
    isolated: bool

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc_id: str | None,
        max_azs: int,
        nat_gateways: int,
        parameter_store: bool = False,
    ) -> None:
        """``parameter_store``: jobs take secrets from SSM Parameter Store, which the ECS agent reads through SSM."""
        super().__init__(scope, construct_id)
        self.isolated = nat_gateways == 0
        self.endpoint_security_group = None
        subnet_type = ec2.SubnetType.PRIVATE_ISOLATED if self.isolated else ec2.SubnetType.PRIVATE_WITH_EGRESS
        if vpc_id is None:
            public = ec2.SubnetConfiguration(name="Public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24)
            private = ec2.SubnetConfiguration(name="Private", subnet_type=subnet_type, cidr_mask=20)
            vpc = ec2.Vpc(
                self,
                "Vpc",
                max_azs=max_azs,
                nat_gateways=nat_gateways,
                # Isolated: no public subnet, so no internet gateway and no route out at all.
                subnet_configuration=[private] if self.isolated else [public, private],
                # Nothing uses the default security group; restricting it would add a Lambda-backed custom resource.
                restrict_default_security_group=False,
            )
            # Payload, result and image-layer traffic to S3 skips the NAT gateway (no per-GB NAT charge).
            vpc.add_gateway_endpoint("S3Endpoint", service=ec2.GatewayVpcEndpointAwsService.S3)
            self.vpc = vpc
        else:
            # An existing VPC keeps its own endpoints: a second S3 gateway endpoint on the same route tables fails.
            self.vpc = ec2.Vpc.from_lookup(self, "Vpc", vpc_id=vpc_id)
        self.subnets = ec2.SubnetSelection(subnet_type=subnet_type)
        self.security_group = ec2.SecurityGroup(
            self,
            "JobSecurityGroup",
            vpc=self.vpc,
            description="Scaler Batch job instances: no ingress; outbound to AWS APIs, image registry, task code",
            allow_all_outbound=True,
        )
        if self.isolated and vpc_id is None:
            endpoints = dict(INTERFACE_ENDPOINTS)
            if parameter_store:
                endpoints["Ssm"] = ec2.InterfaceVpcEndpointAwsService.SSM
            self._add_interface_endpoints(endpoints)

    def _add_interface_endpoints(self, endpoints: dict[str, ec2.InterfaceVpcEndpointAwsService]) -> None:
        group = ec2.SecurityGroup(
            self,
            "EndpointSecurityGroup",
            vpc=self.vpc,
            description="Scaler Batch VPC endpoints: HTTPS from the job instances only",
            allow_all_outbound=False,
        )
        group.add_ingress_rule(self.security_group, ec2.Port.tcp(HTTPS), "HTTPS from the Batch job instances")
        self.endpoint_security_group = group
        for construct_id, service in endpoints.items():
            self.vpc.add_interface_endpoint(
                f"{construct_id}Endpoint",
                service=service,
                subnets=self.subnets,
                security_groups=[group],
                open=False,  # only the rule above: not the whole VPC CIDR
                private_dns_enabled=True,  # the SDKs and the ECS agent use the public names unchanged
            )

"""A VPC whose functions live in private subnets: AWS services through endpoints, providers through NAT."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

# Interface endpoints keep AWS traffic off the NAT and the internet (and make it work without NAT at all).
INTERFACE_ENDPOINTS = {
    "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "Kms": ec2.InterfaceVpcEndpointAwsService.KMS,
    # The SES API (SendRawEmail), com.amazonaws.<region>.email; the app never speaks SMTP.
    "Ses": ec2.InterfaceVpcEndpointAwsService("email"),
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
}


class Network(Construct):
    """VPC, endpoints, and the three security groups of Lambda -> proxy -> database."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        flow_logs = logs.LogGroup(self, "FlowLogs", retention=logs.RetentionDays.THREE_MONTHS)
        self.vpc = ec2.Vpc(
            self, "Vpc", max_azs=2,
            # One NAT gateway: the functions call Meta Graph, Twilio, Mailgun, Stripe and SignNow, which
            # have no VPC endpoints. (Two would survive an AZ outage; a cost decision, see SCALE.md.)
            nat_gateways=1,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="functions", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS,
                                        cidr_mask=22),
                # The database has no route out at all.
                ec2.SubnetConfiguration(name="data", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24),
            ],
            flow_logs={"all": ec2.FlowLogOptions(destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs))},
        )
        self.function_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.data_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        self.vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3,
                                      subnets=[self.function_subnets])
        self.endpoints_sg = ec2.SecurityGroup(self, "EndpointsSg", vpc=self.vpc, allow_all_outbound=False,
                                              description="AWS interface endpoints: HTTPS from the functions")
        endpoints = {name: self.vpc.add_interface_endpoint(name, service=service, subnets=self.function_subnets,
                                                           security_groups=[self.endpoints_sg], open=False)
                     for name, service in INTERFACE_ENDPOINTS.items()}
        self.secrets_endpoint = endpoints["SecretsManager"]
        # Lambda -> proxy -> database, and nothing else reaches either.
        self.lambda_sg = ec2.SecurityGroup(self, "LambdaSg", vpc=self.vpc, allow_all_outbound=True,
                                           description="Functions: egress to the proxy, endpoints and NAT")
        self.proxy_sg = ec2.SecurityGroup(self, "ProxySg", vpc=self.vpc, allow_all_outbound=False,
                                          description="RDS Proxy: PostgreSQL from the functions only")
        self.db_sg = ec2.SecurityGroup(self, "DatabaseSg", vpc=self.vpc, allow_all_outbound=False,
                                       description="Aurora: PostgreSQL from the proxy and the migrator only")
        self.migrate_sg = ec2.SecurityGroup(self, "MigrateSg", vpc=self.vpc, allow_all_outbound=True,
                                            description="The deploy-time migration function")
        pg = ec2.Port.tcp(5432)
        self.proxy_sg.add_ingress_rule(self.lambda_sg, pg, "functions to the proxy")
        self.proxy_sg.add_egress_rule(self.db_sg, pg, "proxy to the database")
        self.db_sg.add_ingress_rule(self.proxy_sg, pg, "the proxy")
        # Migrations connect to the writer directly: DDL through a proxy only pins a session for nothing.
        self.db_sg.add_ingress_rule(self.migrate_sg, pg, "the migration function")
        https = ec2.Port.tcp(443)
        self.endpoints_sg.add_ingress_rule(self.lambda_sg, https, "functions to AWS APIs")
        self.endpoints_sg.add_ingress_rule(self.migrate_sg, https, "migrator to Secrets Manager")

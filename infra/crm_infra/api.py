"""The API: the Chalice app packaged by chalice.cdk, in the VPC, with its own role and settings."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from chalice.cdk import Chalice
from constructs import Construct

from crm_infra.nag import acknowledge
from crm_infra.network import Network
from crm_infra.roles import lambda_role

LOG_RETENTION = logs.RetentionDays.ONE_MONTH
THROTTLE_RATE = 200  # requests per second, steady, for the whole stage
THROTTLE_BURST = 400
# One JSON line per request: request paths (as route templates) and timings, as the privacy policy says.
# $context.resourcePath is the template, never the query string; no client IP, body, header or token.
ACCESS_LOG_FORMAT = (
    '{"requestId":"$context.requestId","method":"$context.httpMethod",'
    '"route":"$context.resourcePath","status":"$context.status","latencyMs":"$context.responseLatency",'
    '"integrationLatencyMs":"$context.integrationLatency","time":"$context.requestTime"}'
)


class Api(Construct):
    """`chalice.cdk.Chalice` under the `prod` scope (its stage comes from the scope's name)."""

    def __init__(self, scope: Construct, construct_id: str, *, source_dir: Path, network: Network,
                 environment: dict[str, str], deploy_time: dict[str, str]) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(self, "Logs", retention=LOG_RETENTION, removal_policy=RemovalPolicy.DESTROY)
        self.role = lambda_role(self, "Role", log_group=self.log_group,
                                description="tenant-crm API: connects as crm_app only")
        self.chalice = Chalice(
            Stack.of(self), "ChaliceApp", source_dir=str(source_dir),
            stage_config={
                "environment_variables": environment,
                "manage_iam_role": False,
                "iam_role_arn": self.role.role_arn,
                "subnet_ids": network.vpc.select_subnets(
                    subnet_type=network.function_subnets.subnet_type).subnet_ids,
                "security_group_ids": [network.lambda_sg.security_group_id],
            },
        )
        handler = self.chalice.get_resource("APIHandler")
        # A function in a VPC is checked for its network-interface permissions when it is created.
        handler.node.add_dependency(self.role)
        for name, value in deploy_time.items():
            self.chalice.add_environment_variable(name, value, "APIHandler")
        handler.add_property_override("LoggingConfig", {"LogGroup": self.log_group.log_group_name,
                                                        "LogFormat": "Text"})
        self.function_name = handler.ref
        self.access_logs = logs.LogGroup(self, "AccessLogs", retention=LOG_RETENTION,
                                         removal_policy=RemovalPolicy.DESTROY)
        rest_api = self.chalice.get_resource("RestAPI")
        rest_api.add_property_override("MethodSettings", [{
            "ResourcePath": "/*", "HttpMethod": "*", "MetricsEnabled": True,
            "ThrottlingRateLimit": THROTTLE_RATE, "ThrottlingBurstLimit": THROTTLE_BURST,
            # No execution logs and no data trace: they would carry bodies and headers.
            "LoggingLevel": "OFF", "DataTraceEnabled": False,
        }])
        rest_api.add_property_override("AccessLogSetting", {
            "DestinationArn": self.access_logs.log_group_arn, "Format": ACCESS_LOG_FORMAT})
        rest_api.add_property_override("TracingEnabled", True)
        # API Gateway writes access logs through an account-level role.
        push_role = iam.Role(self, "ApiGatewayLogsRole",
                             assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"),
                             managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(
                                 "service-role/AmazonAPIGatewayPushToCloudWatchLogs")])
        acknowledge(push_role, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                    "AmazonAPIGatewayPushToCloudWatchLogs]",
                    "the AWS-documented policy for API Gateway's account-level log role (logs only)")
        account = apigateway.CfnAccount(self, "ApiGatewayAccount", cloud_watch_role_arn=push_role.role_arn)
        rest_api.node.add_dependency(account)

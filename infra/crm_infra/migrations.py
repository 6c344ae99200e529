"""Migrations on deploy: functions.migrate runs as a CDK Trigger after the cluster, before the API."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack, triggers
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct, IConstruct

from crm_infra.data import DATABASE_NAME, Data
from crm_infra.functions import LOG_RETENTION, RUNTIME, RUNTIME_REASON
from crm_infra.nag import acknowledge
from crm_infra.network import Network
from crm_infra.roles import lambda_role


class Migrations(Construct):
    """Creates the roles, grants rds_iam, applies chalicelib/db/migrations; a failure fails the deploy."""

    def __init__(self, scope: Construct, construct_id: str, *, code: lambda_.Code, network: Network, data: Data,
                 before: list[IConstruct]) -> None:
        super().__init__(scope, construct_id)
        region = Stack.of(self).region
        log_group = logs.LogGroup(self, "Logs", retention=LOG_RETENTION, removal_policy=RemovalPolicy.DESTROY)
        role = lambda_role(self, "Role", log_group=log_group,
                           description="tenant-crm migrate: reads the admin secret, connects to the writer")
        data.admin_secret.grant_read(role)
        self.function = lambda_.Function(
            self, "Function", function_name="tenant-crm-migrate", runtime=RUNTIME, code=code,
            handler="functions.migrate.handler", role=role,
            log_group=log_group, timeout=Duration.minutes(10), memory_size=512,
            reserved_concurrent_executions=1,  # migrations also take an advisory lock; one at a time
            vpc=network.vpc, vpc_subnets=network.function_subnets, security_groups=[network.migrate_sg],
            environment={
                # It reads only its own settings below; the prod stage would demand the API's.
                "STAGE": "local",
                "DB_ADMIN_SECRET_ARN": data.admin_secret.secret_arn,
                "DB_ADMIN_HOST": data.writer_endpoint,
                "DB_NAME": DATABASE_NAME,
                # The writer's certificate is signed by RDS's own CAs (not in certifi): the function
                # fetches the region's bundle over verified https (through the NAT) and pins to it.
                "DB_ADMIN_SSLROOTCERT_URL": f"https://truststore.pki.rds.amazonaws.com/{region}/{region}-bundle.pem",
                "LOG_LEVEL": "INFO",
            },
            description="tenant-crm functions.migrate (run on every deploy by a trigger)",
        )
        acknowledge(self.function, "AwsSolutions-L1", RUNTIME_REASON)
        # Runs on create and whenever the function's code (so the migrations) changes; a raised error
        # fails the CloudFormation deployment, and the API below is never updated.
        self.trigger = triggers.Trigger(
            self, "OnDeploy", handler=self.function, execute_after=[data.cluster],
            execute_before=before, execute_on_handler_change=True,
            invocation_type=triggers.InvocationType.REQUEST_RESPONSE, timeout=Duration.minutes(10),
        )

"""Aurora PostgreSQL Serverless v2 behind RDS Proxy: encrypted, TLS-only, IAM authentication."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from constructs import Construct

from crm_infra.nag import acknowledge
from crm_infra.network import Network

DATABASE_NAME = "crm"
APP_USER = "crm_app"
JOBS_USER = "crm_jobs"
PROXY_NAME = "tenant-crm"
CLUSTER_NAME = "tenant-crm"
# Automated backups (point-in-time recovery) are kept at most 35 days, Aurora's maximum. That bound is
# what keeps the privacy policy's "purged from backups within 90 days" true for the rows a deleted
# workspace leaves in the database, backup_keys included: no snapshot outlives 35 days.
BACKUP_RETENTION_DAYS = 14
ENGINE = rds.DatabaseClusterEngine.aurora_postgres(version=rds.AuroraPostgresEngineVersion.VER_17_7)


class Data(Construct):
    """The cluster, its proxy, and the admin secret (Secrets Manager; no password in any environment)."""

    def __init__(self, scope: Construct, construct_id: str, *, network: Network, key: kms.IKey,
                 min_acu: float, max_acu: float) -> None:
        super().__init__(scope, construct_id)
        parameters = rds.ParameterGroup(
            self, "Parameters", engine=ENGINE,
            parameters={
                "rds.force_ssl": "1",  # no plaintext connection, from any client
                "log_min_duration_statement": "-1",  # never log statements: they may carry personal data
                "log_statement": "none",
                # An error's DETAIL names the offending values (Key (tenant_id, email)=(…)) and its
                # STATEMENT the query: the exported log keeps the error and its code, neither of those.
                "log_error_verbosity": "terse",
                "log_min_error_statement": "panic",
            },
        )
        self.cluster = rds.DatabaseCluster(
            self, "Cluster", engine=ENGINE, default_database_name=DATABASE_NAME,
            # The bootstrap (owner) credentials: generated into Secrets Manager, read only by the
            # migration function. The runtime roles have no password at all (IAM tokens).
            credentials=rds.Credentials.from_generated_secret("crm_admin"),
            writer=rds.ClusterInstance.serverless_v2("writer", publicly_accessible=False),
            serverless_v2_min_capacity=min_acu, serverless_v2_max_capacity=max_acu,
            vpc=network.vpc, vpc_subnets=network.data_subnets, security_groups=[network.db_sg],
            storage_encrypted=True, storage_encryption_key=key,
            iam_authentication=True, parameter_group=parameters,
            backup=rds.BackupProps(retention=Duration.days(BACKUP_RETENTION_DAYS), preferred_window="01:00-01:30"),
            deletion_protection=True, removal_policy=RemovalPolicy.SNAPSHOT,
            cluster_identifier=CLUSTER_NAME, cloudwatch_logs_exports=["postgresql"],
            monitoring_interval=Duration.seconds(60),
            # No Performance Insights: AWS asks for a 2 ACU minimum with it, four times the 0.5 ACU floor
            # (SCALE.md); Enhanced Monitoring and the alarms cover capacity.
        )
        # The exported PostgreSQL log's group, declared first so that it has a retention (RDS would create
        # it without one; cloudwatch_logs_retention would add a custom-resource Lambda for the same).
        cluster_logs = logs.LogGroup(self, "ClusterLogs", log_group_name=f"/aws/rds/cluster/{CLUSTER_NAME}/postgresql",
                                     retention=logs.RetentionDays.ONE_MONTH, removal_policy=RemovalPolicy.DESTROY)
        self.cluster.node.add_dependency(cluster_logs)
        acknowledge(self.cluster, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                    "AmazonRDSEnhancedMonitoringRole]",
                    "the AWS-documented policy of the Enhanced Monitoring role (writes OS metrics to CloudWatch)")
        assert self.cluster.secret is not None
        self.admin_secret = self.cluster.secret
        # Rotate the admin password monthly with the hosted single-user rotation, which reaches Secrets
        # Manager through the VPC endpoint (CDK opens the endpoint's security group to it). Not on
        # create: the first rotation would race the migration trigger reading the same secret.
        self.cluster.add_rotation_single_user(automatically_after=Duration.days(30),
                                              vpc_subnets=network.function_subnets,
                                              endpoint=network.secrets_endpoint, rotate_immediately_on_update=False)
        # End-to-end IAM: the proxy signs in to the cluster as the client's user with its own role, so
        # that role may connect as exactly the two runtime users (by the cluster's resource id).
        stack = Stack.of(self)
        proxy_role = iam.Role(self, "ProxyRole", assumed_by=iam.ServicePrincipal("rds.amazonaws.com"),
                              description="RDS Proxy: IAM sign-in to the cluster as crm_app and crm_jobs")
        proxy_role.add_to_principal_policy(iam.PolicyStatement(
            actions=["rds-db:connect"],
            resources=[stack.format_arn(service="rds-db", resource="dbuser", arn_format=ArnFormat.COLON_RESOURCE_NAME,
                                        resource_name=f"{self.cluster.cluster_resource_identifier}/{user}")
                       for user in (APP_USER, JOBS_USER)]))
        self.proxy = self.cluster.add_proxy(
            "Proxy", db_proxy_name=PROXY_NAME, role=proxy_role, vpc=network.vpc, vpc_subnets=network.data_subnets,
            security_groups=[network.proxy_sg], require_tls=True, iam_auth=True,
            # End-to-end IAM: clients and the proxy itself authenticate with IAM tokens, so crm_app and
            # crm_jobs have no password anywhere (the migration grants them rds_iam).
            default_auth_scheme=rds.DefaultAuthScheme.IAM_AUTH,
            debug_logging=False,  # debug logs would carry statement text
            idle_client_timeout=Duration.minutes(30), max_connections_percent=90,
            # A client waits at most this long for a database connection (the default, 120 s, is past the
            # API's 28 s timeout): a full pool then fails fast, and the API answers 503.
            borrow_timeout=Duration.seconds(5),
        )
        # The proxy's log group, declared so that it has a retention (RDS would create it without one).
        logs.LogGroup(self, "ProxyLogs", log_group_name=f"/aws/rds/proxy/{PROXY_NAME}",
                      retention=logs.RetentionDays.ONE_MONTH, removal_policy=RemovalPolicy.DESTROY)
        self.endpoint = self.proxy.endpoint
        self.writer_endpoint = self.cluster.cluster_endpoint.hostname

    def grant_connect(self, role: iam.IRole, user: str) -> None:
        """rds-db:connect through the proxy as exactly one database user (never a wildcard user)."""
        self.proxy.grant_connect(role, user)

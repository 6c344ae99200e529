"""The project's one KMS key: vault envelopes, S3 (SSE-KMS), SQS and Aurora storage."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

# What the account's administrators may do with the key: manage it, never use it. Use is granted per role
# in the key policy (grant_use below), so an IAM policy alone can never decrypt tenant credentials.
# No kms:CreateGrant: a grant is a way to use the key; RDS gets its grants through AuroraStorage below.
ADMIN_ACTIONS = [
    "kms:CreateAlias", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*", "kms:Revoke*",
    "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource", "kms:UntagResource",
    "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion", "kms:RotateKeyOnDemand",
]
ENCRYPT = ["kms:GenerateDataKey", "kms:Encrypt"]
DECRYPT = ["kms:Decrypt"]


class Keys(Construct):
    """A customer-managed key with yearly rotation and a policy that names each role's use."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        account = iam.AccountRootPrincipal()
        region = Stack.of(scope).region
        policy = iam.PolicyDocument(statements=[
            iam.PolicyStatement(sid="Administration", principals=[account], actions=ADMIN_ACTIONS, resources=["*"]),
            # Aurora storage encryption: RDS creates grants for itself on behalf of the deploying principal.
            iam.PolicyStatement(
                sid="AuroraStorage", principals=[account], resources=["*"],
                actions=["kms:CreateGrant", "kms:ListGrants", "kms:DescribeKey", "kms:Decrypt",
                         "kms:GenerateDataKey*", "kms:ReEncrypt*"],
                conditions={"StringEquals": {"kms:ViaService": f"rds.{region}.amazonaws.com"}},
            ),
            # CloudWatch alarms publish to the encrypted SNS topic.
            iam.PolicyStatement(
                sid="AlarmsToSns", principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"], resources=["*"],
                # Only this account's alarms (no confused deputy).
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
            ),
        ])
        self.key = kms.Key(
            self, "Key", alias="alias/tenant-crm", description="tenant-crm: vault envelopes, S3, SQS, Aurora",
            enable_key_rotation=True, rotation_period=Duration.days(365), policy=policy,
            removal_policy=RemovalPolicy.RETAIN, pending_window=Duration.days(30),
        )

    def grant_use(self, role: iam.IRole, *, encrypt: bool, decrypt: bool, sid: str) -> None:
        """Let `role` use the key, in the key policy itself, for exactly what it needs."""
        actions = ["kms:DescribeKey"] + (ENCRYPT if encrypt else []) + (DECRYPT if decrypt else [])
        principal = iam.ArnPrincipal(role.role_arn)
        self.key.add_to_resource_policy(iam.PolicyStatement(
            sid=sid, principals=[principal], actions=actions, resources=["*"]))
        role.add_to_principal_policy(iam.PolicyStatement(actions=actions, resources=[self.key.key_arn]))

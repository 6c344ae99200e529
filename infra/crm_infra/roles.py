"""Least-privilege Lambda roles: logs to one group, VPC networking, and nothing else until granted."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from crm_infra.nag import acknowledge, arn_of

# Lambda needs these to attach its network interfaces in the VPC; AWS documents them on resource "*"
# (the interfaces do not exist before the call). They are the whole of AWSLambdaVPCAccessExecutionRole.
VPC_ACTIONS = [
    "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses",
]


def lambda_role(scope: Construct, construct_id: str, *, log_group: logs.ILogGroup, description: str) -> iam.Role:
    """A role Lambda assumes, allowed to write to its own log group and to join the VPC."""
    role = iam.Role(scope, construct_id, assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                    description=description)
    role.add_to_principal_policy(iam.PolicyStatement(
        actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=[f"{log_group.log_group_arn}:*"]))
    role.add_to_principal_policy(iam.PolicyStatement(actions=VPC_ACTIONS, resources=["*"]))
    acknowledge(role, f"AwsSolutions-IAM5[Resource::{arn_of(log_group)}:*]",
                "log streams are created by Lambda with generated names, inside this function's own log group")
    acknowledge(role, "AwsSolutions-IAM5[Resource::*]",
                "only the EC2 network-interface actions Lambda needs to join the VPC, which take no resource ARN "
                "(the same actions as AWSLambdaVPCAccessExecutionRole)")
    return role


def grant_objects(role: iam.IRole, bucket: s3.IBucket, *, prefixes: list[str], actions: list[str]) -> None:
    """Object actions on the given key prefixes only (tenants/, exports/, backups/)."""
    role.add_to_principal_policy(iam.PolicyStatement(
        actions=actions, resources=[bucket.arn_for_objects(f"{prefix}*") for prefix in prefixes]))
    for prefix in prefixes:
        acknowledge(role, f"AwsSolutions-IAM5[Resource::{arn_of(bucket)}/{prefix}*]",
                    f"object keys under {prefix} are generated per workspace (<prefix><workspace id>/...); the "
                    "grant is limited to this prefix and these actions")


def grant_list(role: iam.IRole, bucket: s3.IBucket, *, prefixes: list[str]) -> None:
    """ListBucket, limited to the given prefixes."""
    role.add_to_principal_policy(iam.PolicyStatement(
        actions=["s3:ListBucket"], resources=[bucket.bucket_arn],
        conditions={"StringLike": {"s3:prefix": [f"{prefix}*" for prefix in prefixes]}}))

"""cdk-nag (AwsSolutions) findings the stack accepts, each acknowledged where it arises, with its reason."""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnElement, Stack, Validations
from constructs import IConstruct


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Accept one cdk-nag finding (e.g. "AwsSolutions-IAM5[Resource::*]") on `scope` and its children."""
    Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))


def arn_of(construct: IConstruct) -> str:
    """How cdk-nag names `construct`'s ARN in a finding: <LogicalId.Arn>."""
    element = construct.node.default_child
    assert isinstance(element, CfnElement)
    stack = Stack.of(construct)
    return f"<{stack.resolve(stack.get_logical_id(element))}.Arn>"

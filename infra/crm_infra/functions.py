"""One Lambda per handler in functions/, one shared code asset, one role each, schedules from SCHEDULES."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from crm_infra.data import APP_USER, JOBS_USER, Data
from crm_infra.keys import Keys
from crm_infra.nag import acknowledge, arn_of
from crm_infra.network import Network
from crm_infra.queue import Queues
from crm_infra.roles import grant_list, grant_objects, lambda_role
from functions.schedules import SCHEDULES

# The interpreter that runs the synth, as chalice.cdk does for the API: the shared asset's wheels are built
# for it (cp312 under python3.12), so the functions' runtime must be the same one.
RUNTIME = lambda_.Runtime(f"python{sys.version_info.major}.{sys.version_info.minor}", lambda_.RuntimeFamily.PYTHON)
RUNTIME_REASON = ("the runtime is the Python that packages the shared code asset (its wheels are built for that "
                  "interpreter); moving on means running make synth under a newer LAMBDA_PYTHON")
LOG_RETENTION = logs.RetentionDays.ONE_MONTH
CONSUMER_TIMEOUT_S = 60
DISPATCHER_TIMEOUT_S = 300  # chalicelib/outgoing/delivery.py claims no new batch after 120 s
READ = ["s3:GetObject"]
WRITE = ["s3:PutObject"]
DELETE = ["s3:DeleteObject"]
TENANT_PREFIXES = ["tenants/", "exports/", "backups/"]


@dataclass(frozen=True)
class Job:
    """A function module, what it may touch, and how long it may run."""

    module: str
    db_user: str = JOBS_USER
    timeout_s: int = 900
    memory: int = 1024
    objects: dict[str, list[str]] = field(default_factory=dict)  # prefix -> S3 actions
    listing: list[str] = field(default_factory=list)
    encrypt: bool = False
    decrypt: bool = False
    concurrency: int | None = 2


# Every module of functions/ that has a handler (a test holds this to the directory). process_inbound is
# tenant-scoped work and so connects as crm_app, which cannot cross tenants; the rest are jobs.
JOBS: tuple[Job, ...] = (
    Job("process_inbound", db_user=APP_USER, timeout_s=CONSUMER_TIMEOUT_S, memory=512,
        objects={"tenants/": READ + WRITE}, encrypt=True, decrypt=True, concurrency=None),
    # Outgoing webhooks: SQS wake-ups and the minute sweep. Decrypts endpoint secrets; its delayed retries go
    # to the encrypted queue (a producer needs GenerateDataKey).
    Job("deliver_webhooks", timeout_s=DISPATCHER_TIMEOUT_S, memory=512, encrypt=True, decrypt=True, concurrency=None),
    Job("purge_auth"),
    Job("purge_audit_log"),
    Job("purge_webhook_log"),
    Job("expire_proposals"),
    Job("purge_workspaces", objects=dict.fromkeys(TENANT_PREFIXES, DELETE), listing=TENANT_PREFIXES),
    Job("backup_tenants", objects={"backups/": READ + WRITE + DELETE}, listing=["backups/"],
        encrypt=True, decrypt=True),
    # It reads its own export back only through the presigned link it hands staff (signed by this role).
    Job("export_tenant", objects={"exports/": WRITE + READ, "tenants/": READ}, listing=["tenants/"], encrypt=True,
        decrypt=True),
    Job("delete_tenant", objects=dict.fromkeys(TENANT_PREFIXES, DELETE), listing=TENANT_PREFIXES),
    Job("restore_tenant", objects={"backups/": READ}, listing=["backups/"],
        encrypt=True, decrypt=True),
    Job("rotate_credentials", encrypt=True, decrypt=True, concurrency=1),
)


class Functions(Construct):
    """The jobs' Lambdas, their roles, the SQS consumer and the EventBridge Scheduler schedules."""

    def __init__(self, scope: Construct, construct_id: str, *, code_dir: Path, network: Network, data: Data,
                 keys: Keys, bucket: s3.IBucket, queues: Queues, environment: dict[str, str]) -> None:
        super().__init__(scope, construct_id)
        self.code = lambda_.Code.from_asset(str(code_dir))
        self.functions: dict[str, lambda_.Function] = {}
        for job in JOBS:
            function = self._function(job, network=network, environment=environment)
            data.grant_connect(function.role, job.db_user)  # type: ignore[arg-type]
            self._grant(job, function.role, keys=keys, bucket=bucket)  # type: ignore[arg-type]
            self.functions[job.module] = function
        consumer = self.functions["process_inbound"]
        consumer.add_event_source(sources.SqsEventSource(
            queues.inbound, batch_size=10, max_batching_window=Duration.seconds(1),
            report_batch_item_failures=True, max_concurrency=10))
        dispatcher = self.functions["deliver_webhooks"]
        dispatcher.add_event_source(sources.SqsEventSource(
            queues.webhooks, batch_size=10, max_batching_window=Duration.seconds(1),
            report_batch_item_failures=True, max_concurrency=10))
        # Both wake the dispatcher after committing events (the consumer stores message.received and the
        # like; the dispatcher delays its near retries): producer rights on the webhooks queue only.
        for producer in (consumer, dispatcher):
            producer.add_to_role_policy(iam.PolicyStatement(
                actions=["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
                resources=[queues.webhooks.queue_arn]))
        self.schedules = self._schedules(keys=keys, dead_letters=queues.schedules_dlq)

    def _function(self, job: Job, *, network: Network, environment: dict[str, str]) -> lambda_.Function:
        name = job.module.replace("_", "-")
        log_group = logs.LogGroup(self, f"{name}-logs", retention=LOG_RETENTION,
                                  removal_policy=RemovalPolicy.DESTROY)
        role = lambda_role(self, f"{name}-role", log_group=log_group,
                           description=f"tenant-crm {job.module}: connects as {job.db_user}")
        function = lambda_.Function(
            self, name, function_name=f"tenant-crm-{name}", runtime=RUNTIME,
            architecture=lambda_.Architecture.X86_64, code=self.code,
            handler=f"functions.{job.module}.handler", role=role, log_group=log_group,
            timeout=Duration.seconds(job.timeout_s), memory_size=job.memory, environment=environment,
            reserved_concurrent_executions=job.concurrency,
            vpc=network.vpc, vpc_subnets=network.function_subnets, security_groups=[network.lambda_sg],
            description=f"tenant-crm functions.{job.module}",
        )
        acknowledge(function, "AwsSolutions-L1", RUNTIME_REASON)
        return function

    def _grant(self, job: Job, role: iam.IRole, *, keys: Keys, bucket: s3.IBucket) -> None:
        for prefix, actions in job.objects.items():
            grant_objects(role, bucket, prefixes=[prefix], actions=actions)
        if job.listing:
            grant_list(role, bucket, prefixes=job.listing)
        if job.encrypt or job.decrypt:
            keys.grant_use(role, encrypt=job.encrypt, decrypt=job.decrypt, sid=job.module.replace("_", ""))

    def _schedules(self, *, keys: Keys, dead_letters: sqs.IQueue) -> list[scheduler.CfnSchedule]:
        account = Stack.of(self).account
        # Only schedules of this account may use the role (no confused deputy).
        role = iam.Role(self, "SchedulerRole", assumed_by=iam.ServicePrincipal(
            "scheduler.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": account}}),
            description="EventBridge Scheduler: invokes the scheduled functions")
        role.add_to_principal_policy(iam.PolicyStatement(actions=["sqs:SendMessage"],
                                                         resources=[dead_letters.queue_arn]))
        keys.grant_use(role, encrypt=True, decrypt=True, sid="Scheduler")
        made = []
        for entry in SCHEDULES:
            module = entry.module.removeprefix("functions.")
            function = self.functions[module]
            function.grant_invoke(role)
            acknowledge(role, f"AwsSolutions-IAM5[Resource::{arn_of(function)}:*]",
                        "grant_invoke covers the function's versions and aliases; it names one function")
            made.append(scheduler.CfnSchedule(
                self, f"{entry.name}-schedule", name=f"tenant-crm-{entry.name.replace('_', '-')}",
                schedule_expression=entry.expression, schedule_expression_timezone="UTC",
                flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
                target=scheduler.CfnSchedule.TargetProperty(
                    arn=function.function_arn, role_arn=role.role_arn,
                    # The slot's identity: the handler claims the run for this time, so a retry or a
                    # second delivery of the same schedule does nothing.
                    input=json.dumps({"source": "scheduler", "time": "<aws.scheduler.scheduled-time>"}),
                    retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(
                        maximum_event_age_in_seconds=3600, maximum_retry_attempts=3),
                    # An invocation the scheduler could not deliver lands here, and its alarm fires.
                    dead_letter_config=scheduler.CfnSchedule.DeadLetterConfigProperty(arn=dead_letters.queue_arn),
                ),
                description=f"functions.{module} ({entry.expression})",
            ))
        return made

"""The queues: stored inbound deliveries waiting to be processed, and workspaces with outgoing webhooks to
deliver, each with a dead-letter queue."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from crm_infra.nag import acknowledge

# SQS hides a received message for this long; AWS asks for at least 6x the consumer's timeout so that a
# retried batch never overlaps a running one.
VISIBILITY_FACTOR = 6
MAX_RECEIVES = 5  # then the message moves to the DLQ (the stored event keeps its attempt count)


class Queues(Construct):
    """The inbound and webhook queues and their DLQs, all encrypted with the project's key."""

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey, consumer_timeout: Duration,
                 dispatcher_timeout: Duration) -> None:
        super().__init__(scope, construct_id)
        self.dlq = sqs.Queue(
            self, "InboundDlq", encryption=sqs.QueueEncryption.KMS, encryption_master_key=key,
            data_key_reuse=Duration.hours(1), enforce_ssl=True, retention_period=Duration.days(14),
        )
        # Scheduled invocations EventBridge Scheduler could not deliver after its retries.
        self.schedules_dlq = sqs.Queue(
            self, "SchedulesDlq", encryption=sqs.QueueEncryption.KMS, encryption_master_key=key,
            data_key_reuse=Duration.hours(1), enforce_ssl=True, retention_period=Duration.days(14),
        )
        acknowledge(self.schedules_dlq, "AwsSolutions-SQS3",
                    "this queue is itself a dead-letter queue: EventBridge Scheduler's, for undeliverable runs")
        self.inbound = sqs.Queue(
            self, "Inbound", encryption=sqs.QueueEncryption.KMS, encryption_master_key=key,
            # One data key per hour: a few KMS calls an hour instead of one per message.
            data_key_reuse=Duration.hours(1), enforce_ssl=True, retention_period=Duration.days(4),
            visibility_timeout=Duration.seconds(consumer_timeout.to_seconds() * VISIBILITY_FACTOR),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dlq, max_receive_count=MAX_RECEIVES),
        )
        # Outgoing webhooks: a workspace id per commit that stored events (functions/deliver_webhooks.py).
        self.webhooks_dlq = sqs.Queue(
            self, "WebhooksDlq", encryption=sqs.QueueEncryption.KMS, encryption_master_key=key,
            data_key_reuse=Duration.hours(1), enforce_ssl=True, retention_period=Duration.days(14),
        )
        self.webhooks = sqs.Queue(
            self, "Webhooks", encryption=sqs.QueueEncryption.KMS, encryption_master_key=key,
            data_key_reuse=Duration.hours(1), enforce_ssl=True, retention_period=Duration.days(4),
            visibility_timeout=Duration.seconds(dispatcher_timeout.to_seconds() * VISIBILITY_FACTOR),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.webhooks_dlq, max_receive_count=MAX_RECEIVES),
        )

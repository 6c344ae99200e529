"""Alarms to one SNS topic (e-mail from context): DLQ, Lambda errors and throttles, pinning, ACUs, schedules."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from crm_infra.data import Data

PERIOD = Duration.minutes(5)
ACU_UTILISATION_PERCENT = 80  # sustained: raise serverless_v2_max_capacity before requests queue
# Any session-pinned connection defeats the proxy's multiplexing (see SCALE.md): report it when it
# persists, not for one busy minute.
PINNED_CONNECTIONS = 20


class Alarms(Construct):
    """Every alarm notifies the topic; nothing here reads or carries personal data."""

    def __init__(self, scope: Construct, construct_id: str, *, email: str, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(self, "Topic", display_name="tenant-crm alarms", master_key=key, enforce_ssl=True)
        self.topic.add_subscription(subscriptions.EmailSubscription(email))
        self.action = actions.SnsAction(self.topic)

    def _add(self, construct_id: str, metric: cloudwatch.IMetric, *, threshold: float, description: str,
             periods: int = 1) -> cloudwatch.Alarm:
        alarm = metric.create_alarm(  # type: ignore[attr-defined]
            self, construct_id, threshold=threshold, evaluation_periods=periods, alarm_description=description,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
        alarm.add_alarm_action(self.action)
        return alarm  # type: ignore[no-any-return]

    def dead_letters(self, construct_id: str, queue: sqs.IQueue) -> None:
        """A message in a dead-letter queue is an inbound delivery that could not be processed."""
        self._add(construct_id, queue.metric_approximate_number_of_messages_visible(period=PERIOD),
                  threshold=0, description="messages in a dead-letter queue")

    def function(self, name: str, function: lambda_.IFunction, *, scheduled: bool = False) -> None:
        """Errors and throttles of one function; a scheduled one's error is a failed scheduled run."""
        what = "failed scheduled run" if scheduled else "errors"
        self._add(f"{name}-errors", function.metric_errors(period=PERIOD, statistic="Sum"), threshold=0,
                  description=f"{name}: {what}")
        self._add(f"{name}-throttles", function.metric_throttles(period=PERIOD, statistic="Sum"), threshold=0,
                  description=f"{name}: throttled invocations")

    def database(self, data: Data) -> None:
        """Session pinning at the proxy and the cluster's capacity use."""
        pinned = cloudwatch.Metric(
            namespace="AWS/RDS", metric_name="DatabaseConnectionsCurrentlySessionPinned",
            # Sum over the proxy's nodes (each reports its own count) of one-minute samples.
            dimensions_map={"ProxyName": data.proxy.db_proxy_name}, period=Duration.minutes(1), statistic="Sum")
        self._add("proxy-pinned", pinned, threshold=PINNED_CONNECTIONS, periods=5,
                  description="RDS Proxy: client sessions pinned to a database connection")
        acu = cloudwatch.Metric(
            namespace="AWS/RDS", metric_name="ACUUtilization",
            dimensions_map={"DBClusterIdentifier": data.cluster.cluster_identifier}, period=PERIOD,
            statistic="Average")
        self._add("aurora-acu", acu, threshold=ACU_UTILISATION_PERCENT, periods=3,
                  description="Aurora Serverless v2: ACU utilisation near the configured maximum")

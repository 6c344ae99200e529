"""The `prod` stack: every construct of the production engine, wired together."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from crm_infra.alarms import Alarms
from crm_infra.api import Api
from crm_infra.data import APP_USER, Data
from crm_infra.functions import CONSUMER_TIMEOUT_S, DISPATCHER_TIMEOUT_S, Functions
from crm_infra.keys import Keys
from crm_infra.mail import Mail
from crm_infra.migrations import Migrations
from crm_infra.nag import acknowledge
from crm_infra.network import Network
from crm_infra.packaging import functions_asset
from crm_infra.queue import Queues
from crm_infra.roles import grant_objects
from crm_infra.settings import RuntimeSettings
from crm_infra.storage import Storage
from functions.schedules import SCHEDULES

# chalice.cdk takes the Chalice stage from its scope's name: this stack must be called "prod", or
# .chalice/config.json's prod stage (memory, timeout, concurrency, STAGE=prod) is silently ignored.
STACK_NAME = "prod"


class ProdStack(Stack):
    """Network, data, keys, blobs, mail, queue, API, functions, migrations and alarms."""

    def __init__(self, scope: Construct, *, source_dir: Path, build_dir: Path, **kwargs: object) -> None:
        super().__init__(scope, STACK_NAME, **kwargs)  # type: ignore[arg-type]
        context = self.node.try_get_context
        network = Network(self, "Network")
        keys = Keys(self, "Keys")
        data = Data(self, "Data", network=network, key=keys.key,
                    min_acu=float(context("aurora_min_acu")), max_acu=float(context("aurora_max_acu")))
        storage = Storage(self, "Storage", key=keys.key)
        mail = Mail(self, "Mail", domain=str(context("domain")))
        queues = Queues(self, "Queues", key=keys.key, consumer_timeout=Duration.seconds(CONSUMER_TIMEOUT_S),
                        dispatcher_timeout=Duration.seconds(DISPATCHER_TIMEOUT_S))
        app_secret = secretsmanager.Secret(
            self, "AppSecretKey", description="tenant-crm APP_SECRET_KEY (HMAC key of tokens and sessions)",
            generate_secret_string=secretsmanager.SecretStringGenerator(password_length=64,
                                                                        exclude_punctuation=True))
        acknowledge(app_secret, "AwsSolutions-SMG4",
                    "APP_SECRET_KEY keys every session, sign-in link, CSRF token and cursor: an automatic "
                    "rotation would sign everyone out mid-day; it is rotated on purpose (README, Deploying)")
        settings = RuntimeSettings(
            proxy_endpoint=data.endpoint, key_arn=keys.key.key_arn, bucket_name=storage.bucket.bucket_name,
            queue_url=queues.inbound.queue_url, webhook_queue_url=queues.webhooks.queue_url, app_secret=app_secret,
            app_secret_version=str(context("app_secret_version") or ""),
            sentry_secret_name=str(context("sentry_dsn_secret_name") or "") or None,
            public_base_url=str(context("public_base_url")), cors_origins=str(context("cors_origins") or ""),
            mail_from=f"CRM <no-reply@{mail.domain}>",
            atlas_provider=str(context("atlas_provider") or "template"),
            atlas_model_id=str(context("atlas_model_id") or "amazon.nova-lite-v1:0"),
        )
        api = Api(self, "Api", source_dir=source_dir, network=network, environment=settings.api(),
                  deploy_time=settings.deploy_time())
        self._grant_api(api.role, data=data, keys=keys, storage=storage, queues=queues, mail=mail,
                        atlas_model_id=settings.atlas_model_id)
        code_dir = functions_asset(api.chalice, source_dir=source_dir, build_dir=build_dir)
        functions = Functions(self, "Functions", code_dir=code_dir, network=network, data=data, keys=keys,
                              bucket=storage.bucket, queues=queues, environment=settings.jobs())
        self.migrations = Migrations(self, "Migrations", code=functions.code, network=network, data=data,
                                     before=[api.chalice, *functions.functions.values()])
        alarms = Alarms(self, "Alarms", email=str(context("alarm_email")), key=keys.key)
        alarms.dead_letters("inbound-dlq", queues.dlq)
        alarms.dead_letters("schedules-dlq", queues.schedules_dlq)
        alarms.dead_letters("webhooks-dlq", queues.webhooks_dlq)
        alarms.database(data)
        scheduled = {entry.module.removeprefix("functions.") for entry in SCHEDULES}
        alarms.function("api", api.chalice.get_function("APIHandler"))
        for module, function in functions.functions.items():
            alarms.function(module, function, scheduled=module in scheduled)
        alarms.function("migrate", self.migrations.function)
        # What staff and operators look up after a deploy (README, Deploying).
        CfnOutput(self, "BlobBucket", value=storage.bucket.bucket_name,
                  description="S3 bucket of attachments, exports/ and backups/")
        CfnOutput(self, "MailIdentity", value=mail.domain, description="SES domain: publish its DKIM records")
        CfnOutput(self, "AlarmTopic", value=alarms.topic.topic_arn)
        self.api = api
        self.functions = functions

    def _grant_api(self, role: iam.Role, *, data: Data, keys: Keys, storage: Storage, queues: Queues,
                   mail: Mail, atlas_model_id: str) -> None:
        data.grant_connect(role, APP_USER)
        # Vault envelopes (encrypt and decrypt), attachment objects (SSE-KMS), and the encrypted queue.
        keys.grant_use(role, encrypt=True, decrypt=True, sid="Api")
        grant_objects(role, storage.bucket, prefixes=["tenants/"], actions=["s3:GetObject", "s3:PutObject"])
        # Not grant_send_messages: it adds kms:ReEncrypt* and GenerateDataKey*; a producer of an encrypted
        # queue needs only GenerateDataKey and Decrypt (granted above).
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
            resources=[queues.inbound.queue_arn, queues.webhooks.queue_arn]))
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["ses:SendRawEmail", "ses:SendEmail"],
            resources=[self.format_arn(service="ses", resource="identity", resource_name=mail.domain),
                       self.format_arn(service="ses", resource="configuration-set",
                                       resource_name=mail.configuration_set.configuration_set_name)]))
        # Atlas's drafts (ATLAS_PROVIDER=bedrock): the Converse API on the one configured model, nothing else.
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["bedrock:InvokeModel"],
            resources=[self.format_arn(service="bedrock", account="", resource="foundation-model",
                                       resource_name=atlas_model_id)]))

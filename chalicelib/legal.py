"""The sub-processors: every party outside us that receives data, served at GET /legal/sub-processors.

The privacy policy promises that data is shared "only with the sub-processors required to deliver the
service". This registry is that list, and tests/security/test_sub_processors.py walks every outbound call
site of the code (outbound.request, AWS SDK clients, other network libraries, URL literals, the Sentry
DSN) and fails when a host or AWS service the code can contact belongs to no entry here.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from pydantic import BaseModel

PER_TERMS = "per the provider's terms"
OPERATOR, CONTACT = "Bizflix Global Limited", "privacy@bizflixglobal.com"


@dataclass(frozen=True)
class AwsService:
    """One AWS service the deployment uses; `clients` are the SDK service names the code creates."""

    name: str
    purpose: str
    data: tuple[str, ...]
    clients: tuple[str, ...] = ()


@dataclass(frozen=True)
class SubProcessor:
    """A party that receives data: what for, which data, where, and the hosts the code contacts for it."""

    key: str
    name: str
    purpose: str
    data: tuple[str, ...]
    region: str
    # Host patterns: "api.twilio.com" is that host, "*.twilio.com" any host under twilio.com.
    hosts: tuple[str, ...]
    services: tuple[AwsService, ...] = ()
    note: str = ""


_AWS_SERVICES = (
    AwsService("Amazon API Gateway", "Receives every HTTPS request to the API and passes it to Lambda.",
               ("all request data: bodies, headers, cookies, source IP",)),
    AwsService("AWS Lambda", "Runs the API and the scheduled and staff-invoked functions.",
               ("all data the service processes, in memory while a request or job runs",)),
    AwsService("Amazon Aurora PostgreSQL and RDS Proxy", "The database of every workspace and account.",
               ("workspace content: leads, contacts, companies, deals, conversations, messages, calls, "
                "transcripts", "accounts: email, display name, sessions, sign-in events, audit log",
                "integration credentials, envelope-encrypted"),
               clients=("rds",)),  # rds: IAM database tokens, signed locally (no request leaves the process)
    AwsService("Amazon S3", "Stores attachments, call recordings, exports and encrypted backups (SSE-KMS).",
               ("message attachments", "call recordings", "workspace exports and backups"), clients=("s3",)),
    AwsService("Amazon SES", "Sends sign-in links, invitations and email replies.",
               ("recipient email addresses", "email subjects and bodies (sign-in links, replies)"),
               clients=("sesv2",)),
    AwsService("AWS KMS", "Holds the master key that wraps the data keys of credentials and backups.",
               ("wrapped data keys and their encryption context (workspace id, provider, purpose)",),
               clients=("kms",)),
    AwsService("Amazon SQS", "Queues inbound webhook events for processing (with dead-letter queues).",
               ("workspace ids and ids of stored webhook events (the events stay in the database)",),
               clients=("sqs",)),
    AwsService("Amazon EventBridge Scheduler", "Starts the retention purges, backups and workspace purges.",
               ("schedules only (no personal data)",)),
    AwsService("AWS Secrets Manager", "Holds the database master credentials and the Sentry DSN for deployment.",
               ("service secrets only (no personal data)",), clients=("secretsmanager",)),
    AwsService("Amazon Bedrock", "Writes Atlas's proposal drafts (with ATLAS_PROVIDER=bedrock), only for workspaces "
               "that turned Atlas on. Bedrock keeps neither prompts nor answers and trains no model on them.",
               ("for the lead drafted: its title, contact and company names, notes and custom fields",
                "the price book's product names, SKUs and descriptions (never prices)"),
               clients=("bedrock-runtime",)),
    AwsService("Amazon CloudWatch Logs", "Keeps the functions' log lines.",
               ("one line per request: method, route template, status, duration, request id "
                "(never bodies, tokens, emails, phone numbers or message text)",)),
)

REGISTRY: tuple[SubProcessor, ...] = (
    SubProcessor(
        key="aws", name="Amazon Web Services (AWS)",
        purpose="Hosting: compute, database, storage, email, keys, queues and schedules.",
        data=("all data the service holds: workspace content, accounts, audit log, encrypted credentials",),
        region="the deployment's AWS region (AWS_REGION)",
        # Regional service endpoints, S3 buckets and the RDS CA truststore are all under amazonaws.com.
        hosts=("*.amazonaws.com",), services=_AWS_SERVICES,
        note="Content goes to a model (Amazon Bedrock) only for Atlas's drafts, only in workspaces that turned "
             "Atlas on, and only when the deployment sets ATLAS_PROVIDER=bedrock. No model is trained on it."),
    SubProcessor(
        key="sentry", name="Sentry (Functional Software, Inc.)",
        purpose="Error reporting for the API and the functions.",
        data=("stack traces, exception types, route templates and request ids, scrubbed by logsafe before "
              "sending (no bodies, cookies, tokens, emails, phone numbers or message text)",),
        region="the US or the EU, as chosen for the Sentry organisation (the DSN's ingest host says which)",
        hosts=("*.ingest.sentry.io", "*.ingest.us.sentry.io", "*.ingest.de.sentry.io"),
        note="Only when SENTRY_DSN is set."),
    SubProcessor(
        key="meta", name="Meta Platforms (WhatsApp Business Platform, Cloud API)",
        purpose="Receives and sends the WhatsApp messages of the channels a workspace connects.",
        data=("replies: recipient phone number and message text", "media ids of inbound messages (their files "
              "are downloaded from Meta's hosts)", "the channel's access token"),
        region=PER_TERMS,
        hosts=("graph.facebook.com", "*.facebook.com", "*.fbcdn.net", "*.fbsbx.com", "*.whatsapp.net")),
    SubProcessor(
        key="mailgun", name="Mailgun (Sinch)",
        purpose="Receives email sent to a workspace's email channel and posts it to our webhook.",
        data=("inbound email: sender and recipient addresses, subject, body, attachments",),
        region="the US or the EU, as chosen for the Mailgun account", hosts=(),
        note="Inbound only: the code calls no Mailgun host; replies go out through Amazon SES."),
    SubProcessor(
        key="twilio", name="Twilio",
        purpose="Telephony: call status, recordings and transcripts for workspaces that opt in.",
        data=("call metadata: phone numbers, status, duration", "call recordings and transcripts",
              "the workspace's Twilio account SID and auth token (to fetch and delete recordings)"),
        region="the US unless the workspace's Twilio account uses another region",
        hosts=("api.twilio.com", "twilio.com", "*.twilio.com")),
    SubProcessor(
        key="stripe", name="Stripe",
        purpose="Payment of signed proposals (Checkout), for workspaces that connect their own Stripe account.",
        data=("a signed proposal's title, total and currency, its id and the workspace's id (the Checkout "
              "Session); the payer's details are entered at Stripe, not here",
              "the workspace's Stripe secret key and webhook signing secret (stored envelope-encrypted)"),
        region=PER_TERMS, hosts=("api.stripe.com",),
        note="Only for workspaces that store Stripe credentials; Stripe's events come back signed."),
    SubProcessor(
        key="signnow", name="SignNow (airSlate)",
        purpose="E-signature of proposals, for workspaces that connect their own SignNow account.",
        data=("a sent proposal's PDF (the workspace's, contact's and company's names, the lines and totals)",
              "the signer's email address and the invitation's message",
              "the workspace's SignNow access token (stored envelope-encrypted)"),
        region=PER_TERMS, hosts=("api.signnow.com", "api-eval.signnow.com"),
        note="Only for workspaces that store SignNow credentials; the signed copy is kept in the blob store."),
)


def host_matches(pattern: str, host: str) -> bool:
    """Whether `host` is the pattern's host, or under it for a "*." pattern (never the bare parent)."""
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def for_host(host: str, registry: tuple[SubProcessor, ...] = REGISTRY) -> SubProcessor | None:
    """The sub-processor a host belongs to, or None."""
    return next((p for p in registry if any(host_matches(pattern, host) for pattern in p.hosts)), None)


def for_aws_client(service: str, registry: tuple[SubProcessor, ...] = REGISTRY) -> AwsService | None:
    """The registered AWS service an SDK client name ("s3", "sesv2", …) belongs to, or None."""
    return next((s for p in registry for s in p.services if service in s.clients), None)


def aws_region() -> str | None:
    """The region the AWS services run in: Lambda's AWS_REGION (unset on a machine without AWS)."""
    # Read like boto3 reads it: Lambda sets it for every function, and every client uses that region.
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


class AwsServiceOut(BaseModel):
    """An AWS service the deployment uses."""

    name: str
    purpose: str
    data_categories: list[str]


class SubProcessorOut(BaseModel):
    """One sub-processor as published."""

    key: str
    name: str
    purpose: str
    data_categories: list[str]
    region: str
    hosts: list[str]
    services: list[AwsServiceOut]
    note: str


class SubProcessors(BaseModel):
    """The published list of sub-processors."""

    operator: str
    contact: str
    sub_processors: list[SubProcessorOut]


def published() -> SubProcessors:
    """The registry as published, AWS's region filled in from this deployment (built once per region)."""
    return _published(aws_region())


@functools.cache
def _published(region: str | None) -> SubProcessors:
    out = []
    for p in REGISTRY:
        where = f"{region} ({p.region})" if p.key == "aws" and region else p.region
        services = [AwsServiceOut(name=s.name, purpose=s.purpose, data_categories=list(s.data)) for s in p.services]
        out.append(SubProcessorOut(key=p.key, name=p.name, purpose=p.purpose, data_categories=list(p.data),
                                   region=where, hosts=list(p.hosts), services=services, note=p.note))
    return SubProcessors(operator=OPERATOR, contact=CONTACT, sub_processors=out)

"""The AWS side end to end, over HTTP: moto's server on 127.0.0.1 stands in for AWS, found through
AWS_ENDPOINT_URL as a Lambda's boto3 finds AWS. Nothing is patched: the settings choose S3 blobs, the
KMS vault, SES mail and the SQS queue, and the handlers get the events Lambda would give them.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from chalicelib.blobs import S3Blobs, get_blobs
from chalicelib.db.pool import Database, use_database
from chalicelib.db.tenancy import tenant_tx
from chalicelib.inbox.ingest import get_queue, store_events, use_queue
from chalicelib.inbox.providers.base import Event
from chalicelib.inbox.queue import SqsQueue
from chalicelib.mail import send_email
from chalicelib.settings import get_settings
from chalicelib.vault.envelope import Vault, credential_context
from functions import export_tenant, process_inbound, purge_workspaces
from tests.conftest import TestDatabase, make_tenant
from tests.functions.conftest import AWS_REGION, SetEnv


@dataclass(frozen=True)
class Aws:
    """Resources made in moto for one test, and a boto3 client factory reaching them over HTTP."""

    endpoint: str
    bucket: str
    key_arn: str
    queue_url: str

    def client(self, service: str) -> Any:
        return boto3.session.Session().client(service, region_name=AWS_REGION)  # type: ignore[attr-defined]


@pytest.fixture
def aws(moto_endpoint: str, function_env: SetEnv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Aws]:
    """A bucket, a KMS key, a verified sender domain and a queue; settings choosing every AWS backend."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    # boto3's default session keeps the credentials it resolved first: start from this environment.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    suffix = uuid.uuid4().hex[:10]
    session = boto3.session.Session()  # type: ignore[attr-defined]
    session.client("s3").create_bucket(Bucket=f"crm-blobs-{suffix}",
                                       CreateBucketConfiguration={"LocationConstraint": AWS_REGION})
    key_arn = session.client("kms").create_key(Description="crm master key")["KeyMetadata"]["Arn"]
    session.client("ses").verify_domain_identity(Domain="crm.localhost")
    queue_url = session.client("sqs").create_queue(QueueName=f"crm-inbound-{suffix}",
                                                   Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    function_env(data_dir=tmp_path / "data", blob_backend="s3", blob_bucket=f"crm-blobs-{suffix}",
                 master_key_source="kms", kms_key_arn=key_arn, mail_backend="ses", queue_backend="sqs",
                 queue_url=queue_url)
    use_queue(None)  # built from these settings on first use
    yield Aws(moto_endpoint, f"crm-blobs-{suffix}", key_arn, queue_url)
    use_queue(None)


def test_blobs_round_trip_through_s3(aws: Aws, tmp_path: Path) -> None:
    blobs = get_blobs()
    assert isinstance(blobs, S3Blobs)
    tenant = uuid.uuid4()
    source = tmp_path / "in.bin"
    source.write_bytes(b"attachment \x00\xff" * 1000)
    blobs.put_file(f"tenants/{tenant}/a.bin", source)
    assert blobs.list(f"tenants/{tenant}") == [f"tenants/{tenant}/a.bin"]
    with blobs.open(f"tenants/{tenant}/a.bin") as body:
        assert body.read() == source.read_bytes()
    blobs.get_file(f"tenants/{tenant}/a.bin", tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == source.read_bytes()
    blobs.delete(f"tenants/{tenant}/a.bin")
    assert aws.client("s3").list_objects_v2(Bucket=aws.bucket).get("KeyCount") == 0


def test_the_vault_wraps_data_keys_with_the_kms_key(aws: Aws) -> None:
    vault = Vault.from_settings(get_settings())
    context = credential_context(uuid.uuid4(), "twilio")
    ciphertext = vault.encrypt(b"auth-token-CANARY", context)
    assert b"auth-token-CANARY" not in ciphertext
    decrypted = vault.decrypt(ciphertext, context)
    assert decrypted.plaintext == b"auth-token-CANARY"
    assert vault.key_id == aws.key_arn


def test_mail_goes_out_through_ses(aws: Aws) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    message_id = send_email(to="lead@example.test", subject="Your sign-in link", text="https://crm.example/#token")
    sent = ses_backends[DEFAULT_ACCOUNT_ID][AWS_REGION].sent_messages
    ours = [m for m in sent if m.id == message_id]
    assert len(ours) == 1 and ours[0].destinations == ["lead@example.test"]
    assert "Subject: Your sign-in link" in ours[0].raw_data


def _receive_all(sqs: Any, queue_url: str, count: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for _ in range(20):
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                    AttributeNames=["All"]).get("Messages", [])
        messages += batch
        if len(messages) >= count:
            break
    assert len(messages) == count
    return messages


def _lambda_sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping hands the function for a batch."""
    return {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                         "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
                         "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": AWS_REGION}
                        for m in messages]}


def test_queued_events_are_processed_by_the_sqs_handler_and_poisoned_ones_reported_alone(
        aws: Aws, fresh_db: TestDatabase, app_db: Database) -> None:
    tenant = make_tenant(fresh_db)
    statuses = [Event("status", f"wamid.{n}", {"id": f"wamid.{n}", "status": "delivered"}) for n in range(3)]
    poisoned = Event("status", "wamid.poison", {"id": "wamid.poison", "status": "no-such-status"})
    with tenant_tx(tenant) as conn:
        ids = store_events(conn, tenant_id=tenant, channel_id=None, provider="whatsapp", events=[*statuses, poisoned])
    queue = get_queue()
    assert isinstance(queue, SqsQueue)
    queue.enqueue(tenant, ids)  # the webhook's path: one message per stored event, ids only
    sqs = aws.client("sqs")
    sqs.send_message(QueueUrl=aws.queue_url, MessageBody="not an event")  # garbage on the queue
    queue_arn = sqs.get_queue_attributes(QueueUrl=aws.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    messages = _receive_all(sqs, aws.queue_url, 5)

    result = process_inbound.handler(_lambda_sqs_event(messages, queue_arn), None)

    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    by_body = {m["Body"]: m["MessageId"] for m in messages}
    assert failed == {by_body[f"{tenant}:{ids[-1]}"], by_body["not an event"]}
    with fresh_db.admin() as conn:
        rows = {r[0]: r[1:] for r in conn.execute(
            "SELECT provider_event_id, processed_at IS NOT NULL, attempts, last_error FROM inbound_events")}
    assert rows == {"wamid.0": (True, 1, None), "wamid.1": (True, 1, None), "wamid.2": (True, 1, None),
                    "wamid.poison": (False, 1, "KeyError")}
    # As Lambda does: the successes are deleted; the failures come back once their visibility ends.
    done = [m for m in messages if m["MessageId"] not in failed]
    sqs.delete_message_batch(QueueUrl=aws.queue_url, Entries=[
        {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(done)])
    for m in messages:
        if m["MessageId"] in failed:
            sqs.change_message_visibility(QueueUrl=aws.queue_url, ReceiptHandle=m["ReceiptHandle"],
                                          VisibilityTimeout=0)
    assert {m["MessageId"] for m in _receive_all(sqs, aws.queue_url, 2)} == failed


def test_a_scheduler_event_purges_a_deleted_workspace_and_its_s3_blobs(
        aws: Aws, fresh_db: TestDatabase, tmp_path: Path) -> None:
    gone, kept = make_tenant(fresh_db, "gone"), make_tenant(fresh_db, "kept")
    scheduled = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)
    with fresh_db.admin() as conn:
        conn.execute("UPDATE workspaces SET deleted_at = %s WHERE id = %s", (scheduled - timedelta(days=4), gone))
    s3 = aws.client("s3")
    for tenant in (gone, kept):
        for key in (f"tenants/{tenant}/media/1.jpg", f"backups/{tenant}/2026-12-01.bin"):
            s3.put_object(Bucket=aws.bucket, Key=key, Body=b"x")
    jobs = Database(fresh_db.jobs_url, size=1, name="jobs")
    use_database(jobs, "jobs")
    try:
        result = purge_workspaces.handler({"source": "scheduler", "time": "2026-12-06T04:00:00Z"}, None)
    finally:
        use_database(None, "jobs")
    assert result["failed"] == [] and result["counts"]["workspaces"] == 1 and result["counts"]["blobs"] == 2
    left = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=aws.bucket).get("Contents", []))
    assert left == [f"backups/{kept}/2026-12-01.bin", f"tenants/{kept}/media/1.jpg"]
    with fresh_db.admin() as conn:
        assert conn.execute("SELECT id FROM workspaces").fetchall() == [(kept,)]



def test_a_direct_invoke_exports_to_s3_and_hands_staff_a_short_lived_link(
        aws: Aws, fresh_db: TestDatabase, capfd: pytest.CaptureFixture[str]) -> None:
    tenant, other = make_tenant(fresh_db, "exported"), make_tenant(fresh_db, "other")
    jobs = Database(fresh_db.jobs_url, size=1, name="jobs")
    use_database(jobs, "jobs")
    try:
        result = export_tenant.handler({"workspace_id": str(tenant)}, None)
    finally:
        use_database(None, "jobs")
    # The link is a bearer credential for its lifetime: it goes to the invoker only, never to a log line.
    logged = "".join(capfd.readouterr())
    assert "export written" in logged
    assert "X-Amz-Signature" not in logged and result["url"].split("?")[0] not in logged
    assert result["key"].startswith(f"exports/{tenant}/") and result["rows"] >= 1
    # The link needs no credentials, downloads (never renders), and expires with DOWNLOAD_URL_TTL_S.
    with urllib.request.urlopen(result["url"], timeout=10) as response:
        body = json.loads(response.read())
        assert response.headers["Content-Disposition"].startswith("attachment;")
    assert body["workspace"]["id"] == str(tenant)
    assert str(other) not in json.dumps(body)
    assert datetime.fromisoformat(result["expires_at"]) <= datetime.now(UTC) + timedelta(
        seconds=300 + 5)  # DOWNLOAD_URL_TTL_S's default, written out
    blobs = get_blobs()
    assert isinstance(blobs, S3Blobs)
    with pytest.raises(ValueError, match="outside"):
        blobs.export_url(result["key"], tenant_id=other)  # another workspace's id cannot name this export
    with pytest.raises(ValueError, match="outside"):
        blobs.export_url(f"backups/{tenant}/x.json.enc", tenant_id=tenant)

"""The SQS consumer's partial-batch contract: a batch of stored inbox events, one of them poisoned, is processed
record by record, and only the poisoned record's messageId comes back in batchItemFailures (SQS then retries
that message alone and deletes the others)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from chalice.app import SQSEvent
from chalice.test import Client

from chalicelib.inbox.ingest import use_queue
from functions import process_inbound
from tests.api.auth_helpers import Outbox, body_of, call
from tests.conftest import TestDatabase
from tests.fix_inbox import (
    email_setup,
    mailgun_signed,
    post_mailgun_form,
    post_whatsapp,
    whatsapp_channel,
    whatsapp_delivery,
    whatsapp_message,
    whatsapp_text,
)
from tests.functions.conftest import AWS_REGION, SetEnv

QUEUE_ARN = f"arn:aws:sqs:{AWS_REGION}:123456789012:crm-inbound"


class Captured:
    """Stands in for SqsQueue: keeps the message bodies the webhooks send ("<workspace id>:<event id>")."""

    def __init__(self) -> None:
        self.bodies: list[str] = []

    def enqueue(self, tenant_id: uuid.UUID, event_ids: Sequence[uuid.UUID]) -> None:
        self.bodies += [f"{tenant_id}:{event_id}" for event_id in event_ids]


@pytest.fixture
def captured() -> Iterator[Captured]:
    queue = Captured()
    use_queue(queue)
    yield queue
    use_queue(None)


def _sqs_event(bodies: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The event Lambda's SQS event source mapping hands the function for these bodies, and the message ids."""
    ids = [str(uuid.uuid4()) for _ in bodies]
    records = [{"messageId": message_id, "receiptHandle": f"AQEB{message_id.replace('-', '')}==", "body": body,
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1764230000000",
                               "SenderId": "AROAEXAMPLE:crm-api", "ApproximateFirstReceiveTimestamp": "1764230000001"},
                "messageAttributes": {}, "md5OfBody": "0" * 32, "eventSource": "aws:sqs",
                "eventSourceARN": QUEUE_ARN, "awsRegion": AWS_REGION}
               for message_id, body in zip(ids, bodies, strict=True)]
    return {"Records": records}, ids


def _bodies(api: Client, owner: Any, workspace: str) -> list[str]:
    conversations = body_of(call(api, "GET", f"/workspaces/{workspace}/conversations", owner))["data"]
    return sorted(m["body"] for c in conversations for m in body_of(
        call(api, "GET", f"/workspaces/{workspace}/conversations/{c['id']}/messages", owner))["data"])


@pytest.mark.parametrize("poison", ["malformed body", "event failing in processing"])
def test_only_the_poisoned_record_is_reported_and_the_rest_of_the_batch_is_processed(
        api: Client, outbox: Outbox, captured: Captured, fresh_db: TestDatabase, function_env: SetEnv,
        poison: str) -> None:
    owner, workspace, email = email_setup(api, outbox)
    whatsapp = whatsapp_channel(api, owner, workspace)
    number = whatsapp["phone_number_id"]
    assert post_whatsapp(api, whatsapp["id"], whatsapp_delivery(
        number, messages=[whatsapp_text("wamid.Q1", "first"), whatsapp_text("wamid.Q2", "second")])).status_code == 200
    assert post_mailgun_form(api, email, mailgun_signed({
        "sender": "Pat <pat@customer.example>", "recipient": "sales@acme.example", "subject": "Quote",
        "body-plain": "by email", "Message-Id": "<q3@customer.example>"})).status_code == 200
    valid = list(captured.bodies)
    assert len(valid) == 3
    if poison == "malformed body":
        poisoned = "not-a-workspace:not-an-event"
    else:  # stored like any delivery, but its sender is no valid number: processing raises
        bad = whatsapp_message("whatsapp_text.json", "wamid.Q4", **{"from": "14155550123" + "9999999"})
        assert post_whatsapp(api, whatsapp["id"], whatsapp_delivery(number, messages=[bad])).status_code == 200
        (poisoned,) = captured.bodies[3:]
    bodies = [*valid[:2], poisoned, valid[2]]
    event, message_ids = _sqs_event(bodies)
    # The shape chalice's SQS event source parses (what an @app.on_sqs_message handler would be given).
    assert [(r.body, r.receipt_handle) for r in SQSEvent(event, None)] == [
        (r["body"], r["receiptHandle"]) for r in event["Records"]]

    result = process_inbound.handler(event, None)

    assert result == {"batchItemFailures": [{"itemIdentifier": message_ids[2]}]}
    assert _bodies(api, owner, workspace) == sorted(["first", "second", "by email"])
    with fresh_db.admin() as conn:
        rows = conn.execute("SELECT provider_event_id, processed_at IS NOT NULL, last_error IS NOT NULL"
                            " FROM inbound_events").fetchall()
    states = {str(r[0]): (r[1], r[2]) for r in rows}
    failed = [k for k in states if k.startswith("wamid.Q4")]
    assert all(states[k] == (True, False) for k in states if k not in failed)  # processed, no error
    # The poisoned event stays stored, unprocessed, with its error (SQS brings its message back).
    assert [states[k] for k in failed] == ([] if poison == "malformed body" else [(False, True)])

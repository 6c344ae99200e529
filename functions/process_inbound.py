"""SQS consumer of stored inbound events (production's counterpart of the local in-process worker).

Each message body is "<workspace id>:<event id>". A failure is reported per message (partial batch
response), so SQS retries only that one and moves it to the dead-letter queue after the redrive limit;
the event itself stays stored with its attempt count.
"""

from __future__ import annotations

import uuid
from typing import Any

from chalicelib.inbox.processing import process_event
from functions.common import event_object, init_observability


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda (SQS event source with ReportBatchItemFailures): {"Records": [{"messageId", "body", ...}]}."""
    records = event_object(event).get("Records") or []
    init_observability()
    failures = []
    for record in records:
        try:
            tenant, _, event_id = str(record["body"]).partition(":")
            process_event(uuid.UUID(tenant), uuid.UUID(event_id))
        except Exception:  # noqa: BLE001 - reported to SQS, which retries and dead-letters
            failures.append({"itemIdentifier": record.get("messageId")})
    return {"batchItemFailures": failures}

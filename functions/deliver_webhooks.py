"""The outgoing-webhook dispatcher: SQS messages (a workspace id each, sent after a commit stored events)
and a scheduled sweep every minute (the safety net, and the clock of retries further off than SQS can delay).

For each workspace it delivers every due delivery (chalicelib/outgoing/delivery.py). A workspace whose next
retry is due within 15 minutes gets a delayed SQS message, so short retries (5 s, 5 min) keep their time.
A failed workspace is reported per message (partial batch response): SQS retries only that one.
"""

from __future__ import annotations

import uuid
from typing import Any

from chalicelib.outgoing import delivery, trigger
from functions.common import event_object, start


def _follow_up(tenant: uuid.UUID) -> None:
    wait = delivery.seconds_until_due(tenant)
    if wait is not None and wait <= trigger.MAX_SQS_DELAY_S:
        trigger.get_trigger().wake(tenant, wait)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda: an SQS batch (ReportBatchItemFailures) or an EventBridge schedule (no Records: sweep all)."""
    records = event_object(event).get("Records")
    db = start()
    if not records:
        attempts, failed = delivery.sweep(db=db)
        return {"attempts": attempts, "failed": failed}
    failures, attempts = [], 0
    done: set[uuid.UUID] = set()  # a batch holding one workspace several times delivers it once
    for record in records:
        try:
            tenant = uuid.UUID(str(record["body"]))
            if tenant in done:
                continue
            made = delivery.dispatch_tenant(tenant, db=db)
            done.add(tenant)
            attempts += made
            if made:  # a dispatcher that found nothing leaves the follow-up to the one that did the work
                _follow_up(tenant)
        except Exception:  # noqa: BLE001 - reported to SQS, which retries and dead-letters
            failures.append({"itemIdentifier": record.get("messageId")})
    return {"attempts": attempts, "batchItemFailures": failures}

"""Where stored inbound events wait for processing: SQS in production, an in-process worker locally.

One small interface, so the webhook only stores and enqueues (and acknowledges fast), and the same
processing code runs behind either.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

log = logging.getLogger("crm.inbox.queue")
Processor = Callable[[uuid.UUID, uuid.UUID], None]


class EventQueue(Protocol):
    """Hand stored events (tenant, event id) to the processor."""

    def enqueue(self, tenant_id: uuid.UUID, event_ids: Sequence[uuid.UUID]) -> None: ...


class LocalQueue:
    """A worker thread in this process; `drain()` waits until everything enqueued is processed."""

    def __init__(self, processor: Processor) -> None:
        self._processor = processor
        self._queue: queue.Queue[tuple[uuid.UUID, uuid.UUID]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="inbox-worker", daemon=True)
        self._thread.start()

    def enqueue(self, tenant_id: uuid.UUID, event_ids: Sequence[uuid.UUID]) -> None:
        """Queue events for the worker."""
        for event_id in event_ids:
            self._queue.put((tenant_id, event_id))

    def drain(self) -> None:
        """Block until every queued event has been processed."""
        self._queue.join()

    def _run(self) -> None:
        while True:
            tenant_id, event_id = self._queue.get()
            try:
                self._processor(tenant_id, event_id)
            except Exception as exc:
                log.error("processing failed", exc_info=exc, extra={"fields": {"event_id": str(event_id)}})
            finally:
                self._queue.task_done()


class SqsQueue:
    """Messages on an SQS queue (with a DLQ) consumed by functions/process_inbound.py."""

    def __init__(self, queue_url: str) -> None:
        self.queue_url = queue_url

    def enqueue(self, tenant_id: uuid.UUID, event_ids: Sequence[uuid.UUID]) -> None:
        """Send one message per event (ids only: the payload stays in the database)."""
        import boto3

        client = boto3.client("sqs")
        for start in range(0, len(event_ids), 10):
            batch = event_ids[start:start + 10]
            client.send_message_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(i), "MessageBody": f"{tenant_id}:{event_id}"} for i, event_id in enumerate(batch)])

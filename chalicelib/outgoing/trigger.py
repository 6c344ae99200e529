"""Waking the dispatcher after a commit stored events: an SQS message in production, a thread locally.

`after_commit(tenants)` is called with the workspaces whose committed transactions stored events (the API's
middleware and the inbox worker call it with events.take_emitted()). In production each becomes an SQS
message (the workspace id) for functions/deliver_webhooks.py; the scheduled sweep delivers anything a lost
message left behind, and the retries whose time has come. Locally one thread delivers at once and keeps
each workspace's next retry time, so `make run` needs nothing else.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from chalicelib import clock
from chalicelib.settings import get_settings

log = logging.getLogger("crm.webhooks")
MAX_SQS_DELAY_S = 900


class Trigger(Protocol):
    """Hand workspaces with due deliveries to a dispatcher."""

    def wake(self, tenant_id: uuid.UUID, delay_s: int = 0) -> None: ...


class SqsTrigger:
    """One message per workspace (its id) on WEBHOOK_QUEUE_URL; a delay up to 15 minutes for near retries."""

    def __init__(self, queue_url: str) -> None:
        self.queue_url = queue_url
        self._client: Any = None

    def wake(self, tenant_id: uuid.UUID, delay_s: int = 0) -> None:
        """Send the message (failures are logged: the sweep is the safety net)."""
        try:
            if self._client is None:  # built once per process, on first use (boto3 costs cold-start time)
                import boto3

                self._client = boto3.client("sqs")
            self._client.send_message(QueueUrl=self.queue_url, MessageBody=str(tenant_id),
                                             DelaySeconds=max(0, min(MAX_SQS_DELAY_S, delay_s)))
        except Exception as exc:  # noqa: BLE001 - never fail a committed request over its notification
            log.warning("webhook wake-up not sent", extra={"fields": {"error": type(exc).__name__}})


class LocalTrigger(threading.Thread):
    """`make run`'s dispatcher: delivers at once, and again when each workspace's next retry is due."""

    def __init__(self) -> None:
        super().__init__(name="webhook-dispatcher", daemon=True)
        self._due: dict[uuid.UUID, datetime] = {}
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self.idle = threading.Event()
        self.start()

    def wake(self, tenant_id: uuid.UUID, delay_s: int = 0) -> None:
        """Deliver the workspace's due deliveries now (or after delay_s)."""
        from datetime import timedelta

        with self._lock:
            when = clock.now() + timedelta(seconds=delay_s)
            current = self._due.get(tenant_id)
            self._due[tenant_id] = when if current is None else min(current, when)
            self.idle.clear()
        self._wakeup.set()

    def run(self) -> None:
        """Until the process ends: deliver what is due, then sleep until the next due time or a wake-up."""
        from chalicelib.outgoing import delivery

        while True:
            now = clock.now()
            with self._lock:
                ready = [t for t, when in self._due.items() if when <= now]
                for tenant in ready:
                    del self._due[tenant]
                later = min(self._due.values(), default=None)
                if not ready and later is None:
                    self.idle.set()
            for tenant in ready:
                try:
                    delivery.dispatch_tenant(tenant)
                    wait = delivery.seconds_until_due(tenant)
                except Exception as exc:  # keep the thread alive; the next wake-up retries
                    log.error("webhook dispatch failed", exc_info=exc)
                    continue
                if wait is not None:
                    self.wake(tenant, wait)
            if not ready:
                timeout = None if later is None else max(0.05, (later - clock.now()).total_seconds())
                self._wakeup.wait(timeout)
                self._wakeup.clear()


class SweepOnly:
    """Production without WEBHOOK_QUEUE_URL: nothing to wake; the minute sweep delivers (never a thread in a
    Lambda)."""

    def wake(self, tenant_id: uuid.UUID, delay_s: int = 0) -> None:
        """Nothing: the scheduled sweep finds the due deliveries."""


class _State:
    trigger: Trigger | None = None
    lock = threading.Lock()


def use_trigger(trigger: Trigger | None) -> None:
    """Install a trigger (tests), or None to build one from settings on next use."""
    _State.trigger = trigger


def get_trigger() -> Trigger:
    """The process's trigger: SQS when WEBHOOK_QUEUE_URL is set, else the local thread (never in prod)."""
    with _State.lock:
        if _State.trigger is None:
            settings = get_settings()
            url = settings.webhook_queue_url
            _State.trigger = (SqsTrigger(url) if url else SweepOnly() if settings.stage == "prod"
                              else LocalTrigger())
        return _State.trigger


def after_commit(tenants: Iterable[uuid.UUID]) -> None:
    """Wake the dispatcher for each workspace whose committed transaction stored events."""
    for tenant in tenants:
        get_trigger().wake(tenant)

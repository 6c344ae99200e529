"""B4: signed WhatsApp deliveries through the webhook handler vs the bare insert of the same event.

The handler does: route lookup, channel secrets (vault decrypt), signature check over the raw bytes,
parse, durable idempotent insert, ack. The floor is the one INSERT ... ON CONFLICT DO NOTHING of the
event as the app role. Target: handler overhead <= 1 ms per message warm; messages/s reported.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Sequence

import psycopg
from chalice.test import Client
from psycopg.types.json import Jsonb

from bench.common import bench_database, bench_environment

APP_SECRET = "bench-app-secret-" + uuid.uuid4().hex


class NullQueue:
    """Processing is not part of the acknowledgement path being measured."""

    def enqueue(self, tenant_id: uuid.UUID, event_ids: Sequence[uuid.UUID]) -> None:
        """Drop the ids."""


def _delivery(number: str, wamid: str) -> bytes:
    message = {"from": "14155550123", "id": wamid, "timestamp": "1764230000", "type": "text",
               "text": {"body": "hello from the bench ✓"}}
    value = {"messaging_product": "whatsapp", "metadata": {"phone_number_id": number}, "messages": [message],
             "contacts": [{"profile": {"name": "Bench"}, "wa_id": "14155550123"}]}
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "W", "changes": [{"field": "messages", "value": value}]}]}).encode()


def run(n: int = 1500) -> dict[str, float]:
    """Run B4 and print its figures."""
    bench_environment()
    import app as app_module
    from chalicelib.audit import Actor
    from chalicelib.db.pool import Database, use_database
    from chalicelib.db.tenancy import tenant_tx
    from chalicelib.inbox import channels
    from chalicelib.inbox.ingest import use_queue

    with bench_database() as bench:
        tenant, number = uuid.uuid4(), str(10_000_000 + uuid.uuid4().int % 89_999_999)
        with psycopg.connect(bench.admin_url, autocommit=True) as conn:
            conn.execute("INSERT INTO workspaces (id, name) VALUES (%s, 'b4')", (tenant,))
        db = Database(bench.app_url, size=1)
        use_database(db)
        use_queue(NullQueue())
        with tenant_tx(tenant, db=db) as conn:
            channel = channels.create(conn, tenant_id=tenant, spec=channels.WhatsAppChannelIn(
                type="whatsapp", phone_number_id=number, access_token="EAAG" + "x" * 20, app_secret=APP_SECRET,
                verify_token="verify-token"), actor=Actor(), base_url="http://bench")
        bodies = [_delivery(number, f"wamid.bench.{uuid.uuid4().hex}") for _ in range(2 * n + 200)]
        with Client(app_module.app) as client:
            def deliver(raw: bytes) -> None:
                signature = "sha256=" + hmac.new(APP_SECRET.encode(), raw, hashlib.sha256).hexdigest()
                response = client.http.post(f"/webhooks/whatsapp/{channel.id}", body=raw,
                                            headers={"Content-Type": "application/json",
                                                     "X-Hub-Signature-256": signature})
                assert response.status_code == 200, response.body

            for raw in bodies[:200]:
                deliver(raw)  # warm: vault, plans, pool
            started = time.perf_counter()
            for raw in bodies[200:200 + n]:
                deliver(raw)
            handler = (time.perf_counter() - started) / n
        with psycopg.connect(bench.app_url, autocommit=True) as conn:
            started = time.perf_counter()
            for raw in bodies[200 + n:]:
                with conn.transaction():
                    conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant),))
                    conn.execute("INSERT INTO inbound_events (tenant_id, channel_id, provider, provider_event_id,"
                                 " kind, payload) VALUES (%s, %s, 'whatsapp', %s, 'message', %s)"
                                 " ON CONFLICT DO NOTHING", (tenant, channel.id, uuid.uuid4().hex,
                                                             Jsonb(json.loads(raw))))
            floor = (time.perf_counter() - started) / n
        use_queue(None)
        use_database(None)
    overhead_ms = (handler - floor) * 1000
    print(f"B4 ingest ({n} signed WhatsApp deliveries, pool size 1)")
    print(f"  handler (verify + store + ack) {handler * 1e6:8.1f} us/message  {1 / handler:8.0f} messages/s")
    print(f"  bare insert                    {floor * 1e6:8.1f} us/message  {1 / floor:8.0f} messages/s")
    print(f"  handler overhead               {overhead_ms:8.3f} ms/message (target <= 1 ms)")
    return {"B4 handler us": handler * 1e6, "B4 floor us": floor * 1e6, "B4 overhead ms": overhead_ms,
            "B4 messages per s": 1 / handler}


if __name__ == "__main__":
    run()

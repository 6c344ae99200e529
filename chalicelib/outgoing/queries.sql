-- Outgoing webhooks: emitting events, endpoints, deliveries and the delivery log (all tenant tables, RLS).

-- events.py ------------------------------------------------------------------------------------------

-- name: webhook_emit
-- Store an event (with its data) when an enabled endpoint subscribes to its type; true when stored.
SELECT app.emit_webhook(%s, %s, %s, %s);

-- name: webhook_emit_row
-- Store an event carrying a snapshot of a resource row when subscribed; true when stored.
SELECT app.emit_webhook_row(%s, %s, %s, %s);

-- name: webhook_emit_rows
-- The same for many rows of one table (one event each); true when any was stored.
SELECT app.emit_webhook_rows(%s, %s, %s, %s);

-- endpoints.py ---------------------------------------------------------------------------------------

-- name: endpoint_insert
-- Store a new endpoint of the current workspace with its encrypted signing secret; returns it as shown.
INSERT INTO webhook_endpoints (tenant_id, id, url, description, event_types, enabled, rate_limit_per_s,
                               secret_ciphertext, created_at, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
RETURNING id, url, description, event_types, enabled, rate_limit_per_s, disabled_reason, created_at, updated_at;

-- name: endpoint_list
-- The current workspace's endpoints as shown (never a secret), oldest first.
SELECT id, url, description, event_types, enabled, rate_limit_per_s, disabled_reason, created_at, updated_at
  FROM webhook_endpoints
 ORDER BY created_at, id;

-- name: endpoint_get
-- One endpoint of the current workspace as shown.
SELECT id, url, description, event_types, enabled, rate_limit_per_s, disabled_reason, created_at, updated_at
  FROM webhook_endpoints
 WHERE id = %s;

-- name: endpoint_lock
-- One endpoint as shown, locked until the transaction ends (a PATCH or a rotation checks and writes it).
SELECT id, url, description, event_types, enabled, rate_limit_per_s, disabled_reason, created_at, updated_at
  FROM webhook_endpoints
 WHERE id = %s
   FOR UPDATE;

-- name: endpoint_update
-- Change an endpoint's settings (re-enabling clears why it was disabled); returns it as shown.
UPDATE webhook_endpoints
   SET url = %(url)s, description = %(description)s, event_types = %(event_types)s, enabled = %(enabled)s,
       rate_limit_per_s = %(rate_limit_per_s)s,
       disabled_reason = CASE WHEN %(enabled)s THEN NULL ELSE coalesce(disabled_reason, 'operator') END,
       failing_since = CASE WHEN %(enabled)s AND NOT enabled THEN NULL ELSE failing_since END,
       updated_at = %(now)s
 WHERE id = %(id)s
RETURNING id, url, description, event_types, enabled, rate_limit_per_s, disabled_reason, created_at, updated_at;

-- name: endpoint_rotate_secret
-- Replace the signing secret; the old one stays valid (and signs too) until the given time.
UPDATE webhook_endpoints
   SET previous_secret_ciphertext = secret_ciphertext, previous_secret_expires_at = %s, secret_ciphertext = %s,
       updated_at = %s
 WHERE id = %s
RETURNING id, url, description, event_types, enabled, rate_limit_per_s, disabled_reason, created_at, updated_at;

-- name: endpoint_delete
-- Delete an endpoint and its deliveries (their log goes with them); a row comes back when it existed.
WITH deliveries AS (DELETE FROM webhook_deliveries WHERE endpoint_id = %(id)s)
DELETE FROM webhook_endpoints WHERE id = %(id)s RETURNING id;

-- delivery.py (the dispatcher, as the jobs role in the workspace's tenant transaction) ----------------

-- name: messages_fan_out
-- Fan the workspace's newly stored events out, oldest first: one delivery due at once per enabled endpoint that subscribes to the type (SKIP LOCKED: a concurrent dispatcher takes others); the number of events fanned out.
WITH fresh AS (
    UPDATE webhook_messages m SET fanned_out_at = %(now)s
      FROM (SELECT id FROM webhook_messages
             WHERE fanned_out_at IS NULL
             ORDER BY created_at, id
             LIMIT %(limit)s
               FOR UPDATE SKIP LOCKED) waiting
     WHERE m.id = waiting.id AND m.fanned_out_at IS NULL
    RETURNING m.tenant_id, m.id, m.type, m.created_at
), deliveries AS (
    INSERT INTO webhook_deliveries (tenant_id, message_id, endpoint_id, next_attempt_at, created_at)
    SELECT f.tenant_id, f.id, e.id, '-infinity', f.created_at
      FROM fresh f
     CROSS JOIN LATERAL app.webhook_subscribers(f.tenant_id, f.type) AS e (id)
)
SELECT count(*) FROM fresh;

-- name: deliveries_claim
-- Claim due deliveries of enabled endpoints of a live workspace (SKIP LOCKED: a concurrent dispatcher takes others), leasing them.
UPDATE webhook_deliveries d
   SET attempts = d.attempts + 1, next_attempt_at = %(lease_until)s, updated_at = %(now)s
  FROM (SELECT c.id FROM webhook_deliveries c
          JOIN webhook_endpoints e ON e.tenant_id = c.tenant_id AND e.id = c.endpoint_id AND e.enabled
         WHERE c.status = 'pending' AND c.next_attempt_at <= %(now)s
           AND EXISTS (SELECT 1 FROM workspaces w WHERE w.id = c.tenant_id AND w.deleted_at IS NULL)
         ORDER BY c.next_attempt_at, c.created_at
         LIMIT %(limit)s
           FOR UPDATE OF c SKIP LOCKED) due,
       webhook_endpoints e, webhook_messages m
 WHERE d.id = due.id AND e.tenant_id = d.tenant_id AND e.id = d.endpoint_id
   AND m.tenant_id = d.tenant_id AND m.id = d.message_id
RETURNING d.id, d.message_id, d.endpoint_id, d.attempts, e.url, e.rate_limit_per_s, e.secret_ciphertext,
          e.previous_secret_ciphertext, e.previous_secret_expires_at, m.type, m.resource, m.data, m.created_at;

-- name: deliveries_still_there
-- Which of a batch's deliveries still exist, locked until the bookkeeping commits (an endpoint deleted meanwhile took its own).
SELECT id FROM webhook_deliveries WHERE id = ANY(%s) FOR UPDATE;

-- name: attempts_insert
-- Log a batch's attempts, one per (delivery, attempt number): never the request's headers, at most 1 KB of each response.
INSERT INTO webhook_attempts (tenant_id, delivery_id, attempt, attempted_at, status_code, duration_ms, error_class,
                              response_excerpt)
SELECT %(tenant)s, a.delivery_id, a.attempt, %(now)s, a.status_code, a.duration_ms, a.error_class, a.excerpt
  FROM unnest(%(deliveries)s::uuid[], %(attempts)s::int[], %(codes)s::int[], %(durations)s::int[],
              %(errors)s::text[], %(excerpts)s::text[])
       AS a (delivery_id, attempt, status_code, duration_ms, error_class, excerpt)
ON CONFLICT (tenant_id, delivery_id, attempt) DO NOTHING;

-- name: deliveries_settle
-- Record a batch's outcomes: each delivery succeeded, failed, or pending again at its next attempt's time.
UPDATE webhook_deliveries d SET status = s.status, next_attempt_at = s.due, updated_at = %(now)s
  FROM unnest(%(ids)s::uuid[], %(statuses)s::text[], %(dues)s::timestamptz[]) AS s (id, status, due)
 WHERE d.id = s.id;

-- name: endpoints_succeeded
-- Endpoints that answered 2xx are not failing any more.
UPDATE webhook_endpoints SET failing_since = NULL WHERE id = ANY(%s) AND failing_since IS NOT NULL;

-- name: endpoint_failed
-- An attempt to an endpoint failed: since when has every attempt failed?
UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, %s) WHERE id = %s RETURNING failing_since;

-- name: endpoint_disable
-- Disable an enabled endpoint for a reason (gone, failing); no row back when it already was.
UPDATE webhook_endpoints SET enabled = false, disabled_reason = %s, updated_at = %s
 WHERE id = %s AND enabled
RETURNING id;

-- name: next_due
-- When the workspace's next pending delivery of an enabled endpoint is due, never before now (no row: nothing pending; a never-tried delivery, or an event not yet fanned out, is due at '-infinity', which is now).
SELECT greatest(min(due), %s)
  FROM (SELECT d.next_attempt_at FROM webhook_deliveries d
          JOIN webhook_endpoints e ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id AND e.enabled
         WHERE d.status = 'pending'
        UNION ALL
        (SELECT '-infinity'::timestamptz FROM webhook_messages WHERE fanned_out_at IS NULL LIMIT 1)) pending (due)
HAVING min(due) IS NOT NULL;

-- log.py (the delivery log, replays and test pings) --------------------------------------------------

-- name: attempts_first
-- The first page of an endpoint's attempts, newest first, with their delivery and event type.
SELECT a.id, a.delivery_id, d.message_id, m.type, a.attempt, a.attempted_at, a.status_code, a.duration_ms,
       a.error_class, a.response_excerpt, d.status
  FROM webhook_attempts a
  JOIN webhook_deliveries d ON d.tenant_id = a.tenant_id AND d.id = a.delivery_id
  JOIN webhook_messages m ON m.tenant_id = d.tenant_id AND m.id = d.message_id
 WHERE d.endpoint_id = %(endpoint)s
 ORDER BY a.attempted_at DESC, a.id DESC
 LIMIT %(limit)s;

-- name: attempts_before
-- A further page of an endpoint's attempts, strictly before (attempted_at, id).
SELECT a.id, a.delivery_id, d.message_id, m.type, a.attempt, a.attempted_at, a.status_code, a.duration_ms,
       a.error_class, a.response_excerpt, d.status
  FROM webhook_attempts a
  JOIN webhook_deliveries d ON d.tenant_id = a.tenant_id AND d.id = a.delivery_id
  JOIN webhook_messages m ON m.tenant_id = d.tenant_id AND m.id = d.message_id
 WHERE d.endpoint_id = %(endpoint)s AND (a.attempted_at, a.id) < (%(at)s, %(id)s)
 ORDER BY a.attempted_at DESC, a.id DESC
 LIMIT %(limit)s;

-- name: delivery_replay
-- Send a delivery of this endpoint again (same message, same webhook-id): pending, due now.
UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = %s, updated_at = %s
 WHERE id = %s AND endpoint_id = %s
RETURNING id, message_id;

-- name: endpoint_ping
-- Queue a ping message for one endpoint of the current workspace (fanned out here, to it alone); returns (message id, delivery id).
WITH message AS (
    INSERT INTO webhook_messages (tenant_id, type, resource, data, fanned_out_at)
    SELECT e.tenant_id, 'ping', NULL, jsonb_build_object('endpoint_id', e.id, 'message', 'ping'), %(now)s
      FROM webhook_endpoints e WHERE e.id = %(endpoint)s
    RETURNING tenant_id, id
)
INSERT INTO webhook_deliveries (tenant_id, message_id, endpoint_id, next_attempt_at)
SELECT m.tenant_id, m.id, %(endpoint)s, %(now)s FROM message m
RETURNING message_id, id;

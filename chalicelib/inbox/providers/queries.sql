-- The inbound providers' hand-written statements (chalicelib/inbox/providers/*.py); the contacts, conversations,
-- channels and events they share are chalicelib/inbox's (its queries.sql). Continuation lines are indented.

-- ---- WhatsApp (whatsapp.py) ----

-- name: whatsapp_message_insert
-- File an inbound WhatsApp message once (keyed by its wamid); a redelivered one returns no row.
INSERT INTO messages (tenant_id, conversation_id, direction, kind, body, provider_message_id, status, sent_at)
     VALUES (%s, %s, 'in', %s, %s, %s, 'received', %s)
         ON CONFLICT (tenant_id, provider_message_id) DO NOTHING
  RETURNING id;

-- name: message_media_unavailable
-- Say on a kept message that its media could not be fetched.
UPDATE messages SET error = 'media_unavailable' WHERE id = %s;

-- name: message_status_forward
-- Move a sent message's status forward only (a late "delivered" after "read" changes nothing); the ids moved.
UPDATE messages
   SET status = %s, status_rank = %s, error = coalesce(%s, error)
 WHERE provider_message_id = %s AND status_rank < %s
RETURNING id;

-- name: whatsapp_attachment_insert
-- Store fetched media as the message's attachment (its id chosen by the caller: it names the blob key).
INSERT INTO attachments (tenant_id, id, message_id, filename, content_type, size_bytes, sha256, blob_key)
     VALUES (%s, %s, %s, %s, %s, %s, %s, %s);

-- ---- Mailgun (mailgun.py) ----

-- name: inbound_event_add_files
-- List a stored email event's files (their blob keys and digests, never their bytes) in its payload.
UPDATE inbound_events SET payload = payload || %s WHERE id = %s;

-- name: conversation_by_email_reference
-- The conversation of the earliest message whose Message-ID an email answers (In-Reply-To, References).
SELECT conversation_id
  FROM messages
 WHERE email_message_id = ANY(%s)
 ORDER BY sent_at
 LIMIT 1;

-- name: conversation_by_id
-- A conversation named by a signed reply address, when it exists in this workspace.
SELECT id FROM conversations WHERE id = %s;

-- name: conversation_reopen
-- An email joins an existing conversation: it is reopened and its last_message_at set to the email's arrival.
UPDATE conversations SET last_message_at = %s, status = 'open' WHERE id = %s;

-- name: email_message_insert
-- File an inbound email once (keyed by "email:" + its Message-ID); a redelivered one returns no row.
INSERT INTO messages (tenant_id, conversation_id, direction, kind, body, provider_message_id, email_message_id,
                      status, sent_at)
     VALUES (%s, %s, 'in', 'email', %s, %s, %s, 'received', %s)
         ON CONFLICT (tenant_id, provider_message_id) DO NOTHING
  RETURNING id;

-- name: email_attachment_insert
-- Attach one of the email's stored files to its message.
INSERT INTO attachments (tenant_id, message_id, filename, content_type, size_bytes, sha256, blob_key)
     VALUES (%s, %s, %s, %s, %s, %s, %s);

-- The inbox's hand-written statements (chalicelib/inbox/*.py); the providers' own are in providers/queries.sql.
-- Values are bound parameters only. Continuation lines are indented (libpq traces print a statement's lines).

-- ---- channels and the webhook routes to them (channels.py) ----

-- name: channel_insert
-- Store a channel with its encrypted secrets and masked hints; returns its API columns.
INSERT INTO channels (tenant_id, id, type, phone_number_id, display_phone_number, address,
                      secrets_ciphertext, secrets_hints, name)
     VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
  RETURNING id, type, phone_number_id, display_phone_number, address, secrets_hints, created_at, name, updated_at;

-- name: channel_list
-- The current workspace's channels, oldest first (API columns, no ciphertext).
SELECT id, type, phone_number_id, display_phone_number, address, secrets_hints, created_at, name, updated_at
  FROM channels
 ORDER BY created_at, id;

-- name: channel_load
-- One channel of the current workspace: its API columns, then its secrets' ciphertext.
SELECT id, type, phone_number_id, display_phone_number, address, secrets_hints, created_at, name, updated_at,
       secrets_ciphertext
  FROM channels
 WHERE id = %s;

-- name: channel_lock
-- One channel of the current workspace, locked until the transaction ends (what a PATCH checks stays true).
SELECT id, type, phone_number_id, display_phone_number, address, secrets_hints, created_at, name, updated_at,
       secrets_ciphertext
  FROM channels
 WHERE id = %s
   FOR UPDATE;

-- name: channel_update
-- Write a channel's editable columns (all of them: the caller holds the row lock and passes the unchanged ones).
UPDATE channels
   SET name = %s, display_phone_number = %s, address = %s, secrets_ciphertext = %s, secrets_hints = %s,
       updated_at = now()
 WHERE id = %s
RETURNING id, type, phone_number_id, display_phone_number, address, secrets_hints, created_at, name, updated_at;

-- name: channel_delete
-- Delete a channel (its conversations go with it); a row comes back when it existed.
DELETE FROM channels WHERE id = %s RETURNING id;

-- name: workspace_deleted_at
-- Whether the callback URL's workspace exists (a row) and when it was deleted (NULL: it was not).
SELECT deleted_at FROM workspaces WHERE id = %s;

-- name: webhook_route_insert
-- Route a channel's webhook URL to its workspace.
INSERT INTO webhook_routes (channel_id, workspace_id) VALUES (%s, %s);

-- name: webhook_route_delete
-- Stop routing a deleted channel's webhook URL.
DELETE FROM webhook_routes WHERE channel_id = %s AND workspace_id = %s;

-- name: webhook_route_workspace
-- The workspace of a webhook URL's channel id (read before any tenant is known; NULL when there is none).
SELECT app.webhook_route_workspace(%s);

-- ---- what the webhook side records besides events (webhook_records.py) ----

-- name: webhook_rejection_count
-- Count one refused delivery per day, provider and reason.
SELECT app.count_webhook_rejection(%s, %s, %s);

-- name: webhook_replay_token_first_use
-- Record a delivery's one-time token hash; true only on its first use.
SELECT app.first_use_of_replay_token(%s, %s);

-- ---- inbound events (ingest.py, processing.py, calls.py) ----

-- name: inbound_event_insert
-- Store an event once per (tenant, provider, provider event id); a redelivery returns no row.
INSERT INTO inbound_events (tenant_id, channel_id, provider, provider_event_id, kind, payload)
     VALUES (%s, %s, %s, %s, %s, %s)
         ON CONFLICT (tenant_id, provider, provider_event_id) DO NOTHING
  RETURNING id;

-- name: inbound_event_claim
-- Lock an unprocessed event for processing (none when processed, or being processed by another worker).
SELECT provider, kind, channel_id, payload
  FROM inbound_events
 WHERE id = %s AND processed_at IS NULL
   FOR UPDATE SKIP LOCKED;

-- name: inbound_event_processed
-- Mark an event processed (one more attempt).
UPDATE inbound_events SET processed_at = now(), attempts = attempts + 1 WHERE id = %s;

-- name: inbound_event_failed
-- Record a failed attempt (the error's type only); the last allowed attempt parks the event (dead letter).
UPDATE inbound_events
   SET attempts = attempts + 1, last_error = %s,
       processed_at = CASE WHEN attempts + 1 >= %s THEN now() END
 WHERE id = %s;

-- name: inbound_event_drop_transcript
-- Remove a transcript's text from its stored event (it lives on in the call, or nowhere).
UPDATE inbound_events SET payload = payload - 'TranscriptionText' WHERE id = %s;

-- ---- contacts and conversations a new message joins (conversations.py) ----

-- name: contact_phone_lock
-- Serialize the lookup-or-create of one workspace's number, so two events at once create one contact.
SELECT pg_advisory_xact_lock(hashtextextended(%s, 7301552));

-- name: contact_by_phone
-- The oldest contact with this E.164 number.
SELECT id FROM contacts WHERE phone = %s ORDER BY created_at LIMIT 1;

-- name: contact_insert_for_phone
-- A new contact for an unknown number, named from the sender's profile when it has one.
INSERT INTO contacts (tenant_id, first_name, last_name, phone) VALUES (%s, %s, %s, %s) RETURNING id;

-- name: contact_for_email
-- The contact with this address (any case), created when unknown; and whether it was created just now.
INSERT INTO contacts (tenant_id, email)
     VALUES (%s, %s)
         ON CONFLICT (tenant_id, lower(email)) WHERE email IS NOT NULL DO UPDATE SET email = contacts.email
  RETURNING id, (xmax = 0) AS created;

-- name: conversation_for_thread
-- The conversation of a thread (created: made by its first message, now); reopened, last_message_at only forward.
INSERT INTO conversations (tenant_id, channel_id, thread_key, contact_id, subject, last_message_at)
     VALUES (%s, %s, %s, %s, %s, %s)
         ON CONFLICT (tenant_id, channel_id, thread_key) DO UPDATE
        SET last_message_at = greatest(conversations.last_message_at, EXCLUDED.last_message_at),
            status = 'open', updated_at = now()
  RETURNING id, (xmax = 0) AS created;

-- name: conversation_messages
-- A conversation's messages, oldest first.
SELECT id, direction, body, sent_at, status, error
  FROM messages
 WHERE conversation_id = %s
 ORDER BY sent_at, created_at, id;

-- name: conversation_attachments
-- The attachments of all a conversation's messages, in one query (not one per message).
SELECT a.message_id, a.id, a.filename, a.content_type, a.size_bytes, a.sha256
  FROM attachments a
  JOIN messages m ON m.tenant_id = a.tenant_id AND m.id = a.message_id
 WHERE m.conversation_id = %s
 ORDER BY a.created_at, a.id;

-- ---- replies (replies.py) ----

-- name: reply_conversation
-- What a reply needs of its conversation: channel, contact, thread key, subject.
SELECT channel_id, contact_id, thread_key, subject FROM conversations WHERE id = %s;

-- name: reply_contact_addresses
-- The contact's address and number (a reply goes to one of them).
SELECT email, phone FROM contacts WHERE id = %s;

-- name: reply_references
-- The Message-IDs of a conversation's emails, oldest first (a reply's threading headers).
SELECT email_message_id
  FROM messages
 WHERE conversation_id = %s AND email_message_id IS NOT NULL
 ORDER BY sent_at, created_at;

-- name: reply_message_insert
-- Record a reply as queued, before any provider is called.
INSERT INTO messages (tenant_id, id, conversation_id, direction, kind, body, status, sent_at, email_message_id)
     VALUES (%s, %s, %s, 'out', 'text', %s, 'queued', %s, %s);

-- name: reply_conversation_touch
-- A reply is the conversation's latest message.
UPDATE conversations SET last_message_at = %s, updated_at = %s WHERE id = %s;

-- name: reply_message_outcome
-- What the provider did with a reply: sent (with its ids) or failed (with why).
UPDATE messages
   SET status = %s, status_rank = %s, error = %s, provider_message_id = %s, email_message_id = %s
 WHERE id = %s;

-- ---- stored files (attachments.py) ----

-- name: attachment_file
-- One stored file: name, type, size, digest and blob key.
SELECT filename, content_type, size_bytes, sha256, blob_key FROM attachments WHERE id = %s;

-- ---- telephony opt-in (calls.py) ----

-- name: telephony_settings_get
-- The workspace's opt-in (no row when it was never set).
SELECT recording_enabled, transcription_enabled FROM telephony_settings;

-- name: telephony_settings_put
-- Replace the workspace's opt-in.
INSERT INTO telephony_settings (tenant_id, recording_enabled, transcription_enabled)
     VALUES (%s, %s, %s)
         ON CONFLICT (tenant_id) DO UPDATE
        SET recording_enabled = EXCLUDED.recording_enabled,
            transcription_enabled = EXCLUDED.transcription_enabled, updated_at = now();

-- ---- calls (calls.py; the UPDATE of a call's changed columns is composed in calls._status) ----

-- name: call_transcription_wanted
-- Whether a call's transcript may be kept: the call's flag, or (call not seen yet) the settings', else false.
SELECT coalesce((SELECT transcription_enabled FROM calls WHERE call_sid = %s),
                (SELECT transcription_enabled FROM telephony_settings), false);

-- name: call_insert_if_new
-- Create a call on first sight with the opt-in flags of that moment (kept for the call's life).
INSERT INTO calls (tenant_id, call_sid, status, recording_enabled, transcription_enabled)
     SELECT %s, %s, 'unknown', coalesce(s.recording_enabled, false), coalesce(s.transcription_enabled, false)
       FROM (SELECT 1) AS one
       LEFT JOIN telephony_settings s ON s.tenant_id = %s
         ON CONFLICT (tenant_id, call_sid) DO NOTHING;

-- name: call_lock
-- Lock a call by its SID for this event's changes.
SELECT id, status, direction, contact_id, recording_enabled, transcription_enabled
  FROM calls
 WHERE call_sid = %s
   FOR UPDATE;

-- name: call_transcript
-- A call's stored transcript, and when a member corrected it.
SELECT transcript, transcript_corrected_at FROM calls WHERE id = %s;

-- name: call_transcript_set
-- Keep a call's transcript (the call opted in); a member's correction is not overwritten by a later callback.
UPDATE calls SET transcript = %s, updated_at = now() WHERE id = %s AND transcript_corrected_at IS NULL;

-- name: call_recording_latest
-- The latest stored recording of a call.
SELECT id, filename, content_type, size_bytes, sha256
  FROM attachments
 WHERE call_id = %s
 ORDER BY created_at DESC, id
 LIMIT 1;

-- name: call_recording_exists
-- Whether this recording of the call is already stored (a retry only repeats the provider's delete).
SELECT 1 FROM attachments WHERE call_id = %s AND blob_key = %s;

-- name: call_recording_insert
-- Store a call's recording (MP3) as an attachment of the call.
INSERT INTO attachments (tenant_id, call_id, filename, content_type, size_bytes, sha256, blob_key)
     VALUES (%s, %s, %s, 'audio/mpeg', %s, %s, %s);

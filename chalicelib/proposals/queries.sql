-- Proposals and their lines (tenant tables: RLS scopes every statement to the current workspace).

-- name: lead_exists
-- The lead of the current workspace a proposal is for (no row: not this workspace's).
SELECT id FROM leads WHERE id = %s;

-- name: products_by_id
-- The price book's products named by a proposal's lines.
SELECT id, name, sku, unit_amount_minor, currency, tax_rate_bp, active FROM products WHERE id = ANY(%s);

-- name: proposal_insert
-- A new proposal with its computed totals, and the first entry of its history (a draft).
WITH created AS (
    INSERT INTO proposals (tenant_id, id, lead_id, version, previous_id, title, introduction, valid_until, currency,
                           subtotal_minor, tax_minor, total_minor, status_changed_at, created_at, updated_at)
    VALUES (%(tenant)s, %(id)s, %(lead)s, %(version)s, %(previous)s, %(title)s, %(introduction)s, %(valid_until)s,
            %(currency)s, %(subtotal)s, %(tax)s, %(total)s, %(now)s, %(now)s, %(now)s)
    RETURNING tenant_id, id, status
)
INSERT INTO proposal_status_history (tenant_id, proposal_id, from_status, to_status, changed_at, actor_user_id,
                                     actor_api_key_id)
SELECT tenant_id, id, NULL, status, %(now)s, %(user)s, %(key)s FROM created;

-- name: lines_insert
-- A proposal's lines, in order, with their computed amounts.
INSERT INTO proposal_lines (tenant_id, proposal_id, position, product_id, sku, description, quantity,
                            unit_amount_minor, discount_bp, tax_rate_bp, net_minor, tax_minor)
SELECT %(tenant)s, %(proposal)s, l.position, l.product_id, l.sku, l.description, l.quantity, l.unit_amount_minor,
       l.discount_bp, l.tax_rate_bp, l.net_minor, l.tax_minor
  FROM unnest(%(positions)s::int[], %(products)s::uuid[], %(skus)s::text[], %(descriptions)s::text[],
              %(quantities)s::numeric[], %(units)s::bigint[], %(discounts)s::int[], %(rates)s::int[],
              %(nets)s::bigint[], %(taxes)s::bigint[])
       AS l (position, product_id, sku, description, quantity, unit_amount_minor, discount_bp, tax_rate_bp,
             net_minor, tax_minor);

-- name: lines_delete
-- Every line of a draft (a PATCH with line_items writes them again).
DELETE FROM proposal_lines WHERE proposal_id = %s;

-- name: proposal_get
-- One proposal of the current workspace.
SELECT id, lead_id, version, previous_id, status, title, introduction, valid_until, currency, subtotal_minor,
       tax_minor, total_minor, pdf_sha256, sent_at, status_changed_at, created_at, updated_at, signer_email,
       signnow_document_id, signed_pdf_sha256, signed_at, checkout_url, paid_at, pdf_blob_key, signed_pdf_blob_key,
       checkout_session_id, paid_session_id
  FROM proposals WHERE id = %s;

-- name: proposal_exists
-- A proposal of the current workspace (no row: not this workspace's).
SELECT id FROM proposals WHERE id = %s;

-- name: proposal_lock
-- One proposal, locked until the transaction ends (an edit or a status change checks and writes it).
SELECT id, lead_id, version, previous_id, status, title, introduction, valid_until, currency, subtotal_minor,
       tax_minor, total_minor, pdf_sha256, sent_at, status_changed_at, created_at, updated_at, signer_email,
       signnow_document_id, signed_pdf_sha256, signed_at, checkout_url, paid_at, pdf_blob_key, signed_pdf_blob_key,
       checkout_session_id, paid_session_id
  FROM proposals WHERE id = %s FOR UPDATE;

-- name: proposal_lines
-- A proposal's lines in order.
SELECT position, product_id, sku, description, quantity, unit_amount_minor, discount_bp, tax_rate_bp, net_minor,
       tax_minor
  FROM proposal_lines WHERE proposal_id = %s ORDER BY position;

-- name: proposal_update
-- A draft's new content and totals.
UPDATE proposals
   SET title = %(title)s, introduction = %(introduction)s, valid_until = %(valid_until)s, currency = %(currency)s,
       subtotal_minor = %(subtotal)s, tax_minor = %(tax)s, total_minor = %(total)s, updated_at = %(now)s
 WHERE id = %(id)s;

-- name: proposal_status
-- Move a proposal from one status to another (no row back: it was no longer in `from`), with its history entry.
WITH moved AS (
    UPDATE proposals SET status = %(status)s, status_changed_at = %(now)s, updated_at = %(now)s
     WHERE id = %(id)s AND status = %(from)s
    RETURNING tenant_id, id
)
INSERT INTO proposal_status_history (tenant_id, proposal_id, from_status, to_status, changed_at, actor_user_id,
                                     actor_api_key_id)
SELECT tenant_id, id, %(from)s, %(status)s, %(now)s, %(user)s, %(key)s FROM moved
RETURNING proposal_id;

-- name: proposal_history
-- A proposal's statuses, oldest first.
SELECT from_status, to_status, changed_at, actor_user_id, actor_api_key_id
  FROM proposal_status_history WHERE proposal_id = %s ORDER BY changed_at, id;

-- name: proposal_delete
-- Delete a draft (its lines go with it).
DELETE FROM proposals WHERE id = %s;

-- name: lead_proposals
-- A lead's proposals, newest first.
SELECT id, version, status, title, valid_until, currency, total_minor, created_at, updated_at
  FROM proposals WHERE lead_id = %s ORDER BY created_at DESC, id DESC LIMIT 500;

-- name: pdf_context
-- What a proposal's PDF shows besides the proposal: the workspace's name, the lead's contact and company.
SELECT w.name, c.first_name, c.last_name, c.email, co.name
  FROM proposals p
  JOIN workspaces w ON w.id = p.tenant_id
  JOIN leads l ON l.tenant_id = p.tenant_id AND l.id = p.lead_id
  LEFT JOIN contacts c ON c.tenant_id = l.tenant_id AND c.id = l.contact_id
  LEFT JOIN companies co ON co.tenant_id = l.tenant_id AND co.id = coalesce(l.company_id, c.company_id)
 WHERE p.id = %s;

-- name: proposals_expire
-- Sent proposals whose validity ended before today: expired (one row back per proposal).
WITH expired AS (
    UPDATE proposals SET status = 'expired', status_changed_at = %(now)s, updated_at = %(now)s
     WHERE status = 'sent' AND valid_until < %(today)s
    RETURNING tenant_id, id
)
INSERT INTO proposal_status_history (tenant_id, proposal_id, from_status, to_status, changed_at)
SELECT tenant_id, id, 'sent', 'expired', %(now)s FROM expired
RETURNING proposal_id;

-- name: proposal_revision
-- The draft or later version that revises a proposal (no row: not revised yet).
SELECT id FROM proposals WHERE previous_id = %s LIMIT 1;

-- name: proposal_has_book_lines
-- Whether a proposal has lines of the price book (priced in its currency when written).
SELECT EXISTS (SELECT FROM proposal_lines WHERE proposal_id = %s AND (product_id IS NOT NULL OR sku IS NOT NULL));

-- ---- signing and payment (signing.py); each statement checks the status it leaves, then set_status moves it ----

-- name: proposal_mark_sent
-- A draft's frozen PDF, signer and SignNow document and subscription (no row: it is no longer a draft).
UPDATE proposals SET signer_email = %(signer)s, signnow_document_id = %(document)s, signnow_hook_id = %(hook)s,
                     signnow_hook_secret = %(secret)s, pdf_blob_key = %(key)s, pdf_sha256 = %(sha)s, sent_at = %(now)s
 WHERE id = %(id)s AND status = 'draft'
RETURNING id;

-- name: proposal_by_hook
-- The proposal a SignNow callback URL names, its document and its subscription's secret (encrypted).
SELECT id, signnow_document_id, signnow_hook_secret FROM proposals WHERE signnow_hook_id = %s;

-- name: proposal_mark_signed
-- A sent proposal's signed copy (no row: it is no longer sent).
UPDATE proposals SET signed_pdf_blob_key = %(key)s, signed_pdf_sha256 = %(sha)s, signed_at = %(now)s
 WHERE id = %(id)s AND status = 'sent'
RETURNING id;

-- name: proposal_checkout
-- The latest Checkout Session made for a signed proposal.
UPDATE proposals SET checkout_session_id = %(session)s, checkout_url = %(url)s WHERE id = %(id)s;

-- name: proposal_checkout_forget
-- Forget a proposal's Checkout Session when it is that one (closed, or its delayed payment failed).
UPDATE proposals SET checkout_session_id = NULL, checkout_url = NULL
 WHERE id = %(id)s AND checkout_session_id = %(session)s;

-- name: proposal_mark_paid
-- The session that paid a signed proposal (no row: it is not signed, or was paid already).
UPDATE proposals SET paid_session_id = %(session)s, paid_at = %(now)s
 WHERE id = %(id)s AND status = 'signed'
RETURNING id;

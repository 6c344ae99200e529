-- Atlas: what it reads for a lead (tenant tables under RLS).

-- name: atlas_enabled
-- Whether the workspace turned Atlas on, and its name.
SELECT atlas_enabled, name FROM workspaces WHERE id = %s;

-- name: lead_for_draft
-- The lead with its contact's and company's names, its value's currency and its custom fields.
SELECT l.title, nullif(concat_ws(' ', c.first_name, c.last_name), ''), co.name, l.value_currency, l.custom
  FROM leads l
  LEFT JOIN contacts c ON c.tenant_id = l.tenant_id AND c.id = l.contact_id
  LEFT JOIN companies co ON co.tenant_id = l.tenant_id AND co.id = coalesce(l.company_id, c.company_id)
 WHERE l.id = %s;

-- name: lead_notes
-- The lead's latest notes, oldest first, each cut to 4,000 characters (what a model's context holds).
SELECT left(body, 4000) FROM (SELECT body, created_at, id FROM notes WHERE lead_id = %s ORDER BY created_at DESC, id DESC
                  LIMIT 50) latest
 ORDER BY created_at, id;

-- name: active_products
-- The active price book, in a stable order (descriptions cut to 300 characters).
SELECT id, sku, name, left(description, 300), currency FROM products WHERE active ORDER BY name, sku LIMIT 500;

-- The credentials store (store.py). Every statement runs in tenant_tx(tenant): RLS keeps other tenants'
-- rows out of reach; the tenant_id conditions are a second guard. Ciphertexts only, never plaintext.

-- name: credentials_put
-- Store (or replace) one provider's encrypted credentials; a replaced row is no longer "rotated".
INSERT INTO integration_credentials (tenant_id, provider, ciphertext, hints, key_id)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (tenant_id, provider) DO UPDATE
   SET ciphertext = EXCLUDED.ciphertext, hints = EXCLUDED.hints, key_id = EXCLUDED.key_id,
       updated_at = now(), rotated_at = NULL
RETURNING id, updated_at;

-- name: credentials_summaries
-- Provider, masked hints and last change of every configured provider (nothing secret).
SELECT provider, hints, updated_at FROM integration_credentials WHERE tenant_id = %s;

-- name: credentials_delete
-- Delete one provider's credentials.
DELETE FROM integration_credentials WHERE tenant_id = %s AND provider = %s RETURNING id;

-- name: credentials_get
-- One provider's row id and ciphertext.
SELECT id, ciphertext FROM integration_credentials WHERE tenant_id = %s AND provider = %s;

-- name: credentials_lock_for_rotation
-- Every credential row of the tenant with its key id, locked for re-encryption.
SELECT id, provider, ciphertext, key_id FROM integration_credentials
 WHERE tenant_id = %s
 ORDER BY provider
   FOR UPDATE;

-- name: credentials_rewrap
-- Store a credential re-encrypted under the current key.
UPDATE integration_credentials SET ciphertext = %s, key_id = %s, rotated_at = now()
 WHERE tenant_id = %s AND id = %s
RETURNING id;

-- name: workspace_ids_page
-- One keyset page of workspace ids after the given one (jobs role only, no tenant: the rotation's list).
SELECT id FROM workspaces WHERE id > %s ORDER BY id LIMIT %s;

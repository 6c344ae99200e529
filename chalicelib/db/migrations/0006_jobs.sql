-- Privacy and retention jobs: run claims, tombstones of deleted workspaces, per-workspace backup keys.

-- Audit entries outlive their workspace (pseudonymized by the deletion) until their own retention
-- purge, so they no longer cascade with the workspace row.
ALTER TABLE public.audit_log DROP CONSTRAINT audit_log_tenant_id_fkey;

-- One row per scheduled run: a second invocation for the same slot finds the claim and does nothing.
CREATE TABLE public.job_runs (
    name           text NOT NULL,
    scheduled_for  timestamptz NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    counts         jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (name, scheduled_for)
);

-- Ids of hard-deleted workspaces whose pseudonymized audit entries still await their purge.
CREATE TABLE public.workspace_tombstones (
    workspace_id  uuid PRIMARY KEY,  -- not "tenant_id": the row is about the workspace, not of it
    deleted_at    timestamptz NOT NULL
);

REVOKE ALL ON public.job_runs, public.workspace_tombstones FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.job_runs, public.workspace_tombstones TO crm_jobs;

-- Per-workspace backup data key, wrapped by the master key. Deleting the row (with the workspace)
-- makes every backup of the workspace unreadable at once: crypto-shredding.
CREATE TABLE public.backup_keys (
    tenant_id    uuid PRIMARY KEY REFERENCES public.workspaces (id) ON DELETE CASCADE,
    wrapped_key  bytea NOT NULL,
    key_id       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CALL app.secure_tenant_table('public.backup_keys', 'tenant_id', 'SELECT');
REVOKE ALL ON public.backup_keys FROM crm_app;  -- the API never touches backups

-- The backups of each workspace (the objects live in the blob store).
CREATE TABLE public.backups (
    tenant_id   uuid NOT NULL REFERENCES public.workspaces (id) ON DELETE CASCADE,
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    blob_key    text NOT NULL,
    taken_at    timestamptz NOT NULL,
    size_bytes  bigint NOT NULL,
    row_count   bigint NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT backups_key_unique UNIQUE (tenant_id, blob_key)
);
CREATE INDEX backups_taken ON public.backups (tenant_id, taken_at DESC);
CALL app.secure_tenant_table('public.backups', 'tenant_id', 'SELECT');
REVOKE ALL ON public.backups FROM crm_app;

-- Atlas (AI-assisted proposal drafts) is off until an owner or admin turns it on for the workspace: no content
-- of a workspace goes to a model before that.
ALTER TABLE public.workspaces ADD COLUMN atlas_enabled boolean NOT NULL DEFAULT false;

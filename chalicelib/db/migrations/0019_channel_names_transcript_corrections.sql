-- Correction through the API (issue 15, item 7).
-- A channel gets an operator's name (optional: channels created before have none).
ALTER TABLE public.channels ADD COLUMN name text CHECK (length(name) BETWEEN 1 AND 100);

-- A call's transcript may be corrected by a member; the call says when (the audit log says who). A later
-- transcription callback does not overwrite a correction.
ALTER TABLE public.calls ADD COLUMN transcript_corrected_at timestamptz;

-- A call's ETag (id + updated_at) now guards a PATCH: a deleted contact's ON DELETE SET NULL must give the
-- call a new version, as 0016 does for contacts, leads and conversations.
CREATE TRIGGER calls_touch_references BEFORE UPDATE OF contact_id ON public.calls
    FOR EACH ROW WHEN (OLD.updated_at = NEW.updated_at) EXECUTE FUNCTION app.touch_updated_at();

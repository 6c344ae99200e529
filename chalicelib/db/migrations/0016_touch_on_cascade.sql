-- A record's ETag is made of its id and updated_at. When a company, contact or member is deleted, the
-- foreign keys' ON DELETE SET NULL clear the references of other records without touching their
-- updated_at, so those records changed (their JSON shows null now) under an unchanged ETag, and an
-- If-Match taken before would still pass. These triggers give such an update a new updated_at; an update
-- that sets updated_at itself (every API write) does not call the function (WHEN).
CREATE FUNCTION app.touch_updated_at() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := pg_catalog.now();
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION app.touch_updated_at() FROM PUBLIC;

CREATE TRIGGER contacts_touch_references BEFORE UPDATE OF company_id, owner_id ON public.contacts
    FOR EACH ROW WHEN (OLD.updated_at = NEW.updated_at) EXECUTE FUNCTION app.touch_updated_at();
CREATE TRIGGER leads_touch_references BEFORE UPDATE OF contact_id, company_id, owner_id ON public.leads
    FOR EACH ROW WHEN (OLD.updated_at = NEW.updated_at) EXECUTE FUNCTION app.touch_updated_at();
CREATE TRIGGER conversations_touch_references BEFORE UPDATE OF contact_id, assignee_id ON public.conversations
    FOR EACH ROW WHEN (OLD.updated_at = NEW.updated_at) EXECUTE FUNCTION app.touch_updated_at();

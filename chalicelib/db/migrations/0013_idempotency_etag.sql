-- A replayed response is the first response: its ETag too, not only its status, body and Location.
ALTER TABLE public.idempotency_keys ADD COLUMN etag text;

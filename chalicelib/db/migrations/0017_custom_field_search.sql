-- The custom-field list answers `q` (key and label) like the other named lists. A workspace has few
-- definitions, so the substring filter needs no index.
ALTER TABLE public.custom_fields ADD COLUMN search text GENERATED ALWAYS AS (lower(key || ' ' || label)) STORED;

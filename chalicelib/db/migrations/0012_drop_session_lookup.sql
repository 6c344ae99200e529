-- app.session_lookup joined a session to its membership in a workspace. Workspace requests now use
-- app.authorize_session (0010/0011); account requests, the only remaining callers, look the session up
-- by its hash alone (chalicelib/auth/sessions.py, resolve), so the function's joins did nothing.
DROP FUNCTION app.session_lookup(bytea, uuid, timestamptz, timestamptz);

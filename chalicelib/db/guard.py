"""Catalog guard: the tenancy rules of DESIGN section 3, checked against the live catalog.

Each rule returns human-readable violations that name the offending object, so a new table that
forgets RLS (or a role that gains a power it must not have) fails the test suite by name.
"""

from __future__ import annotations

from collections.abc import Callable

from chalicelib.db.migrate import APP_ROLE, JOBS_ROLE, OWNER_ROLE
from chalicelib.db.types import Conn

# Tables whose tenant key is not called tenant_id (a workspace *is* the tenant).
TENANT_KEYS = {"public.workspaces": "id"}
# The scope as the policies read it (migration 0018): a scalar subquery, evaluated once per statement.
TENANT = "( SELECT app.current_tenant() AS current_tenant)"
USER = "( SELECT app.current_user_id() AS current_user_id)"
_MY_WORKSPACES = f"( SELECT m.tenant_id\n   FROM memberships m\n  WHERE (m.user_id = {USER}))"
_MY_MEMBERS = f"( SELECT m.user_id\n   FROM memberships m\n  WHERE (m.tenant_id = {TENANT}))"
_INVITATION = f"((purpose = 'invitation'::text) AND (workspace_id = {TENANT}))"
_EMAIL_CHANGE = f"((purpose = 'email_change'::text) AND (user_id = {USER}))"
_SIGN_IN_REQUEST = "((purpose = 'login'::text) AND (user_id IS NULL) AND (workspace_id IS NULL) AND (role IS NULL))"
# Account tables (migration 0020): about operators, not workspace content, or the plumbing that routes a
# webhook before any tenant is known. They carry no tenant_id. RLS keys them on the bound user (app.user_id)
# or, where a row belongs to a workspace, on the tenant. For each one the API role may touch, the RESTRICTIVE
# guard's (USING, WITH CHECK) is pinned here, so any widening fails the guard by name.
ACCOUNT_GUARDS: dict[str, tuple[str, str]] = {
    "public.users": (f"((id = {USER}) OR (id IN {_MY_MEMBERS}))", f"(id = {USER})"),
    "public.sessions": (f"(user_id = {USER})", f"(user_id = {USER})"),
    "public.login_tokens": (f"({_INVITATION} OR {_EMAIL_CHANGE})",
                            f"({_SIGN_IN_REQUEST} OR {_INVITATION} OR {_EMAIL_CHANGE})"),
    "public.account_audit_log": (f"(user_id = {USER})", f"((user_id IS NULL) OR (user_id = {USER}))"),
    "public.webhook_routes": (f"(workspace_id = {TENANT})", f"(workspace_id = {TENANT})"),
}
# Account tables the API role has no privilege on at all: only the SECURITY DEFINER functions of 0020 touch them.
DEFINER_ONLY_TABLES = frozenset({"public.rate_limits", "public.webhook_replay_tokens", "public.webhook_rejections"})
ACCOUNT_TABLES = frozenset(ACCOUNT_GUARDS) | DEFINER_ONLY_TABLES
# Deliberately wide policies, never for the API role, each with its reason: (table or "*", policy) -> (role, why).
WIDE_POLICIES = {
    ("public.workspaces", "jobs_list_tenants"): ("crm_jobs", "the jobs list the workspaces they work through"),
    ("*account*", "jobs_all"): ("crm_jobs", "the retention purges work across all accounts; no HTTP surface"),
    ("*account*", "definer_access"): (OWNER_ROLE, "the narrow SECURITY DEFINER functions of 0020 run as the "
                                                   "owner; no tenant table has such a policy"),
}
# Tables the API role may touch without row-level security, each with its reason. None today (it has no
# privilege on schema_migrations or anything else outside the tenant and account tables).
RLS_EXEMPT: dict[str, str] = {}
# Tenant tables whose RESTRICTIVE guard also lets the signed-in user READ their own rows (writes keep the
# tenant-only WITH CHECK). The exact widening is pinned here, so any other change fails the guard.
USER_READABLE_GUARDS = {
    "public.memberships": f"((tenant_id = {TENANT}) OR (user_id = {USER}))",
    "public.workspaces": f"((id = {TENANT}) OR (id IN {_MY_WORKSPACES}))",
}

Rows = list[tuple[object, ...]]



def _tenant_tables(conn: Conn) -> list[tuple[str, str]]:
    """(qualified table name, tenant key column) of every table that holds tenant data."""
    rows = conn.execute(
        "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND n.nspname !~ '^(pg_|information_schema$)'"
        "  AND (EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'"
        "               AND NOT a.attisdropped)"
        "       OR has_table_privilege(%s, c.oid, 'SELECT,INSERT,UPDATE,DELETE'))"
        " ORDER BY 1", (APP_ROLE,)).fetchall()
    return [(str(name), TENANT_KEYS.get(str(name), "tenant_id")) for (name,) in rows
            if str(name) not in ACCOUNT_TABLES and str(name) not in RLS_EXEMPT]


def check_account_tables(conn: Conn) -> list[str]:
    """Account tables hold no workspace data (no tenant_id column) and each one exists."""
    # No parameters, so no %% escapes in these two statements.
    rows = conn.execute(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid"
        " WHERE a.attname = 'tenant_id' AND NOT a.attisdropped").fetchall()
    problems = [f"{name}: an account table must not hold tenant data" for (name,) in rows
                if str(name) in ACCOUNT_TABLES]
    present = {str(name) for (name,) in conn.execute(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')").fetchall()}
    return problems + [f"{name}: account table missing" for name in sorted(ACCOUNT_TABLES - present)]


def check_account_rls(conn: Conn) -> list[str]:
    """Account tables: ENABLE + FORCE RLS; for the API role a permissive policy and the pinned RESTRICTIVE
    guard (or no privilege at all, for the definer-only ones); wide policies only where WIDE_POLICIES says."""
    problems = []
    for table in sorted(ACCOUNT_TABLES):
        row = conn.execute(
            "SELECT relrowsecurity, relforcerowsecurity, has_table_privilege(%s, oid, 'SELECT,INSERT,UPDATE,DELETE')"
            " FROM pg_class WHERE oid = to_regclass(%s)", (APP_ROLE, table)).fetchone()
        if row is None:
            continue  # check_account_tables names it
        enabled, forced, app_may_touch = row
        if not enabled:
            problems.append(f"{table}: row level security not enabled")
        if not forced:
            problems.append(f"{table}: row level security not forced")
        if app_may_touch and table in DEFINER_ONLY_TABLES:
            problems.append(f"{table}: {APP_ROLE} has a privilege on a table only definer functions may touch")
        policies = conn.execute(
            "SELECT polname, polpermissive, polcmd, pg_get_expr(polqual, polrelid),"
            " pg_get_expr(polwithcheck, polrelid), (0 = ANY(polroles) OR %s::regrole = ANY(polroles)),"
            " (SELECT array_agg(r::regrole::text) FROM unnest(polroles) r)"
            " FROM pg_policy WHERE polrelid = %s::regclass", (APP_ROLE, table)).fetchall()
        guard = ACCOUNT_GUARDS.get(table)
        permissive_for_app = guarded = False
        for name, permissive, cmd, qual, check, for_app, roles in policies:
            if not for_app:
                allowed = WIDE_POLICIES.get(("*account*", str(name)))
                if allowed is None or _names(roles) != [allowed[0]]:
                    problems.append(f"{table}: policy {name} for {', '.join(_names(roles))} is not an allowed one")
                continue
            if "true" in (str(qual).strip().lower(), str(check).strip().lower()):
                problems.append(f"{table}: policy {name} is always true")
            permissive_for_app = permissive_for_app or bool(permissive)
            if not permissive and cmd == "*" and guard is not None and (qual, check) == guard:
                guarded = True
        if app_may_touch and not permissive_for_app:
            problems.append(f"{table}: no permissive policy for {APP_ROLE}")
        if app_may_touch and not guarded:
            problems.append(f"{table}: no RESTRICTIVE account guard for {APP_ROLE}")
    return problems


def _names(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def check_rls(conn: Conn) -> list[str]:
    """ENABLE + FORCE RLS, a permissive policy and a RESTRICTIVE guard, both on the tenant key."""
    problems = []
    for table, key in _tenant_tables(conn):
        row = conn.execute(
            "SELECT relrowsecurity, relforcerowsecurity, EXISTS (SELECT 1 FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attname = %s AND attnotnull AND NOT attisdropped)"
            " FROM pg_class WHERE oid = %s::regclass", (table, key, table)).fetchone()
        assert row is not None
        enabled, forced, key_not_null = row
        if not key_not_null:
            problems.append(f"{table}: tenant key column {key} missing or nullable")
        if not enabled:
            problems.append(f"{table}: row level security not enabled")
        if not forced:
            problems.append(f"{table}: row level security not forced")
        policies = conn.execute(
            "SELECT polname, polpermissive, polcmd, pg_get_expr(polqual, polrelid),"
            " pg_get_expr(polwithcheck, polrelid),"
            " (0 = ANY(polroles) OR %s::regrole = ANY(polroles)), array_length(polroles, 1) = 1"
            " AND %s::regrole = ALL(polroles), %s::regrole = ANY(polroles)"
            " FROM pg_policy WHERE polrelid = %s::regclass", (APP_ROLE, JOBS_ROLE, OWNER_ROLE, table)).fetchall()
        wanted = f"({key} = {TENANT})"
        wanted_guard = USER_READABLE_GUARDS.get(table, wanted)
        good = {True: False, False: False}
        for name, permissive, cmd, qual, check, for_app, jobs_only, for_owner in policies:
            if for_owner:
                # The definer functions run as the owner: a policy for it on a tenant table would let them
                # read workspace content (0020 gives the owner policies on account tables only).
                problems.append(f"{table}: policy {name} for {OWNER_ROLE} is not an allowed one")
                continue
            if jobs_only and WIDE_POLICIES.get((table, name), ("", ""))[0] == JOBS_ROLE:
                continue
            # SELECT-only policies cannot have WITH CHECK; every other policy needs both clauses.
            if qual is None or (check is None and cmd != "r"):
                problems.append(f"{table}: policy {name} lacks USING or WITH CHECK")
                continue
            if "true" in (str(qual).strip().lower(), str(check).strip().lower()):
                problems.append(f"{table}: policy {name} is always true")
            if not (for_app and cmd == "*" and check == wanted):
                continue
            if permissive and qual == wanted:
                good[True] = True
            if not permissive and qual == wanted_guard:
                good[False] = True
        if not good[True]:
            problems.append(f"{table}: no permissive tenant policy for {APP_ROLE}")
        if not good[False]:
            problems.append(f"{table}: no RESTRICTIVE tenant guard for {APP_ROLE}")
    return problems


def check_app_role(conn: Conn) -> list[str]:
    """The API role is no superuser, cannot bypass RLS, owns nothing, creates nothing."""
    problems = []
    row = conn.execute("SELECT rolsuper, rolbypassrls, pg_has_role(%s, %s, 'member') FROM pg_roles"
                       " WHERE rolname = %s", (APP_ROLE, OWNER_ROLE, APP_ROLE)).fetchone()
    if row is None:
        return [f"role {APP_ROLE} does not exist"]
    if row[0]:
        problems.append(f"role {APP_ROLE} is a superuser")
    if row[1]:
        problems.append(f"role {APP_ROLE} has BYPASSRLS")
    if row[2]:
        problems.append(f"role {APP_ROLE} is a member of {OWNER_ROLE}")
    owned = conn.execute(
        "SELECT 'table ' || c.oid::regclass::text FROM pg_class c WHERE c.relowner = %s::regrole"
        " UNION ALL SELECT 'function ' || p.oid::regprocedure::text FROM pg_proc p"
        "  WHERE p.proowner = %s::regrole"
        " UNION ALL SELECT 'schema ' || nspname FROM pg_namespace WHERE nspowner = %s::regrole",
        (APP_ROLE, APP_ROLE, APP_ROLE)).fetchall()
    problems += [f"role {APP_ROLE} owns {name}" for (name,) in owned]
    creatable = conn.execute(
        "SELECT n.nspname FROM pg_namespace n WHERE n.nspname !~ '^(pg_|information_schema$)'"
        " AND has_schema_privilege(%s, n.oid, 'CREATE')", (APP_ROLE,)).fetchall()
    problems += [f"role {APP_ROLE} may CREATE in schema {name}" for (name,) in creatable]
    extra = conn.execute(
        "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND n.nspname !~ '^(pg_|information_schema$)'"
        " AND has_table_privilege(%s, c.oid, 'TRUNCATE,REFERENCES,TRIGGER')", (APP_ROLE,)).fetchall()
    problems += [f"role {APP_ROLE} has TRUNCATE/REFERENCES/TRIGGER on {name}" for (name,) in extra]
    return problems


def check_views(conn: Conn) -> list[str]:
    """Views run as the caller (security_invoker); materialized views are closed to the API role."""
    rows = conn.execute(
        "SELECT format('%%I.%%I', n.nspname, c.relname), c.relkind,"
        " coalesce('security_invoker=true' = ANY(c.reloptions) OR 'security_invoker=on' = ANY(c.reloptions),"
        "          false), has_table_privilege(%s, c.oid, 'SELECT')"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('v', 'm') AND n.nspname !~ '^(pg_|information_schema$)' ORDER BY 1",
        (APP_ROLE,)).fetchall()
    problems = []
    for name, kind, invoker, readable in rows:
        if kind == "v" and not invoker:
            problems.append(f"view {name} lacks security_invoker")
        if kind == "m" and readable:
            problems.append(f"materialized view {name} is readable by {APP_ROLE} (no RLS on it)")
    return problems


def check_functions(conn: Conn) -> list[str]:
    """SECURITY DEFINER functions pin search_path and are not executable by PUBLIC."""
    rows = conn.execute(
        "SELECT p.oid::regprocedure::text,"
        " coalesce(EXISTS (SELECT 1 FROM unnest(p.proconfig) s WHERE s LIKE 'search\\_path=%%'), false),"
        " p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a"
        "                             WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')"
        " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE p.prosecdef AND n.nspname !~ '^(pg_|information_schema$)' ORDER BY 1").fetchall()
    problems = []
    for name, pinned, public in rows:
        if not pinned:
            problems.append(f"security definer function {name} lacks a pinned search_path")
        if public:
            problems.append(f"security definer function {name} is executable by PUBLIC")
    return problems


def check_keys(conn: Conn) -> list[str]:
    """Tenant tables: foreign keys and unique keys include the tenant key; no serial ids."""
    problems = []
    tenant = dict(_tenant_tables(conn))
    for table, key in tenant.items():
        fks = conn.execute(
            "SELECT conname, confrelid::regclass::text,"
            " (SELECT array_agg(attname::text) FROM pg_attribute WHERE attrelid = conrelid AND attnum = ANY(conkey)),"
            " (SELECT array_agg(attname::text) FROM pg_attribute WHERE attrelid = confrelid"
            "  AND attnum = ANY(confkey))"
            " FROM pg_constraint WHERE contype = 'f' AND conrelid = %s::regclass", (table,)).fetchall()
        for name, target, cols, target_cols in fks:
            target_key = tenant.get(str(target)) or tenant.get(f"public.{target}")
            if target_key is None:
                continue
            if key not in _names(cols) or target_key not in _names(target_cols):
                problems.append(f"{table}: foreign key {name} to {target} does not include the tenant key")
        uniques = conn.execute(
            "SELECT i.indexrelid::regclass::text, (SELECT array_agg(attname::text) FROM pg_attribute"
            "  WHERE attrelid = i.indrelid AND attnum = ANY(i.indkey))"
            " FROM pg_index i WHERE i.indrelid = %s::regclass AND i.indisunique AND NOT i.indisprimary",
            (table,)).fetchall()
        problems += [f"{table}: unique index {name} does not include {key}"
                     for name, cols in uniques if key not in _names(cols)]
        serials = conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
            " AND NOT attisdropped AND (attidentity <> '' OR pg_get_serial_sequence(%s, attname) IS NOT NULL)",
            (table, table)).fetchall()
        problems += [f"{table}: column {col} is a sequential id (enumerable)" for (col,) in serials]
    return problems


RULES: tuple[Callable[[Conn], list[str]], ...] = (check_rls, check_account_tables, check_account_rls,
                                                  check_app_role, check_views,
                                                  check_functions, check_keys)


def find_violations(conn: Conn) -> list[str]:
    """Every violation of the tenancy rules in the connected database (empty when all is well)."""
    return [problem for rule in RULES for problem in rule(conn)]

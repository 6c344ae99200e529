"""Source rules that keep tenancy safe: no session-level tenant, no string-built SQL, no debug."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([ROOT / "app.py", *(ROOT / "chalicelib").rglob("*.py"), *(ROOT / "functions").rglob("*.py")])
SQL_FILES = sorted((ROOT / "chalicelib").rglob("*.sql"))

RULES = {
    # A session-level tenant survives COMMIT and would leak through the pool (R05).
    "session SET of the tenant": re.compile(r"\bSET\s+(SESSION\s+)?app\.", re.I),
    "set_config that outlives the transaction": re.compile(r"set_config\([^)]*,\s*false\s*\)", re.I),
    # Values reach SQL only as bound parameters (R19).
    "f-string SQL": re.compile(r"\.execute\(\s*f[\"']"),
    "%-formatted SQL": re.compile(r"\.execute\([^)]*[\"']\s*%\s*[(\w]"),
    ".format()-built SQL": re.compile(r"\.execute\(\s*[\"'][^\"']*[\"']\.format\("),
    "Chalice debug mode": re.compile(r"debug\s*=\s*True"),
    # Inside tenant_tx the block is the extended protocol's own transaction, which the next Sync commits:
    # a nested transaction(), pipeline(), sync(), commit() or rollback() would Sync (or COMMIT) early and
    # the rest would run without a tenant. Only tenancy.py and the migrator control transactions.
    "transaction control outside tenancy": re.compile(r"\.(transaction|pipeline|sync|commit|rollback)\(\)"),
    # workspace_tx / workspace_read let a route run before its caller's authorization has arrived: fine for
    # database work (a refusal makes PostgreSQL skip it), never for mail, storage or a provider's API. Each
    # module that uses them was reviewed for that; a new one must be too, and then be added here.
    "authorization deferred": re.compile(r"\bworkspace_(tx|read)\("),
}
ALLOWED = {
    "transaction control outside tenancy": {"chalicelib/db/tenancy.py", "chalicelib/db/migrate.py"},
    "authorization deferred": {"chalicelib/auth/principal.py", "chalicelib/crm/api.py", "chalicelib/routes/inbox.py",
                               "chalicelib/routes/telephony.py", "chalicelib/routes/pipelines.py",
                               "chalicelib/routes/api_keys.py", "chalicelib/routes/workspaces.py",
                               "chalicelib/routes/integrations.py",
                               "chalicelib/routes/lists.py", "chalicelib/routes/webhook_endpoints.py",
                               "chalicelib/routes/proposals.py"},
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_no_source_breaks_the_rule(rule: str) -> None:
    pattern = RULES[rule]
    hits = [f"{path.relative_to(ROOT)}:{n}" for path in [*SOURCES, *SQL_FILES]
            if str(path.relative_to(ROOT)) not in ALLOWED.get(rule, set())
            for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == [], f"{rule}: {hits}"


def test_the_rules_catch_what_they_are_meant_to() -> None:
    bad = {
        "session SET of the tenant": "cur.execute('SET app.tenant_id = 1')",
        "set_config that outlives the transaction": "SELECT set_config('app.tenant_id', %s, false)",
        "f-string SQL": 'conn.execute(f"SELECT * FROM t WHERE id = {x}")',
        "%-formatted SQL": 'conn.execute("SELECT %s" % x)',
        ".format()-built SQL": 'conn.execute("SELECT {}".format(x))',
        "Chalice debug mode": "app.debug = True",
        "transaction control outside tenancy": "with conn.transaction():",
        "authorization deferred": "with workspace_tx(request, workspace_id) as (conn, caller):",
    }
    for rule, line in bad.items():
        assert RULES[rule].search(line), rule
    assert not RULES["%-formatted SQL"].search('conn.execute("SELECT %s", (x,))')
    for line in ("conn.commit()", "conn.rollback()", "with conn.pipeline():", "queued.sync()"):
        assert RULES["transaction control outside tenancy"].search(line), line


# Routes parse, authorize, call one domain function and shape the answer; SQL lives in the domain modules.
ROUTE_SQL = re.compile(r"\.execute(many)?\(|\bsql\.SQL\(|[\"'](SELECT|INSERT|UPDATE|DELETE) ")


def test_routes_hold_no_sql() -> None:
    hits = [f"{path.relative_to(ROOT)}:{n}" for path in sorted((ROOT / "chalicelib" / "routes").glob("*.py"))
            for n, line in enumerate(path.read_text().splitlines(), 1) if ROUTE_SQL.search(line)]
    assert hits == []
    for line in ('conn.execute("SELECT 1")', "found = conn.execute(", 'conn.executemany(q, rows)',
                 'sql.SQL("x")'):
        assert ROUTE_SQL.search(line), line


# Hand-written SQL lives in each package's queries.sql (chalicelib/db/queries.py); composed SQL in crm/store.py.
# chalicelib/db/ is the exception: the migrator, the catalog guard's catalog reads, the pool's ping and the
# tenancy's transaction control are the machinery that runs everything else.
INLINE_SQL_ALLOWED = ("chalicelib/db/", "chalicelib/crm/store.py")


def _inline_sql_calls(text: str) -> list[int]:
    """Lines of .execute()/.executemany() calls whose statement is written out in the code."""
    def written(node: ast.expr) -> bool:
        if isinstance(node, ast.Constant):
            return isinstance(node.value, str)
        if isinstance(node, ast.BinOp):
            return written(node.left) or written(node.right)
        return isinstance(node, ast.JoinedStr)

    return [node.lineno for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("execute", "executemany") and node.args and written(node.args[0])]


def test_sql_text_lives_in_the_query_files() -> None:
    hits = [f"{path.relative_to(ROOT)}:{line}" for path in SOURCES
            if not str(path.relative_to(ROOT)).startswith(INLINE_SQL_ALLOWED)
            for line in _inline_sql_calls(path.read_text())]
    assert hits == []
    for bad in ('conn.execute("SELECT 1")', 'conn.execute(\n    "SELECT 1"\n    " FROM t", (x,))',
                'cur.executemany(f"INSERT INTO {t} VALUES (%s)", rows)', 'conn.execute("SELECT " + "1")'):
        assert _inline_sql_calls(bad), bad
    assert not _inline_sql_calls('conn.execute(Q["x"], (1,))')

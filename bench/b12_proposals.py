"""B12: an Atlas `template` draft for a lead with 20 notes and 200 products, and a 50-line proposal's PDF.

Draft (unix socket, crm_app under RLS, pool size 1):
  - floor: reading the same rows with one query (the lead with its contact and company, its notes, the
    active products) on a connection whose tenant is set at its start;
  - draft: `POST /workspaces/{id}/leads/{lead_id}/proposals/draft` through the app's Lambda entry point
    (session, CSRF, authorization, the reads, the template provider, the checks, the draft's writes, the
    201 with its lines and totals).
Target: <= 2x the floor.

PDF: chalicelib.proposals.pdf.render of a 50-line proposal, against a bare reportlab document with the same
text (title, introduction and a 50-row table, no styling). Target: <= 1.5x the floor.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from bench.common import bench_database, bench_environment, interleaved_medians, lambda_invoker, member_with_session

NOTES, PRODUCTS, LINES = 20, 200, 50
FLOOR_SQL = """
SELECT (SELECT row_to_json(x) FROM (SELECT l.title, c.first_name, c.last_name, co.name AS company, l.custom
                                      FROM leads l LEFT JOIN contacts c ON c.tenant_id = l.tenant_id
                                       AND c.id = l.contact_id LEFT JOIN companies co
                                        ON co.tenant_id = l.tenant_id AND co.id = l.company_id
                                     WHERE l.id = %(lead)s) x),
       (SELECT json_agg(n.body) FROM notes n WHERE n.lead_id = %(lead)s),
       (SELECT json_agg(json_build_array(p.id, p.sku, p.name, p.description, p.currency))
          FROM products p WHERE p.active)
"""


def _seed(admin_url: str, app_url: str) -> tuple[uuid.UUID, uuid.UUID, str]:
    workspace = uuid.uuid4()
    _user, token = member_with_session(admin_url, app_url, workspace)
    lead, contact, company = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("UPDATE workspaces SET atlas_enabled = true WHERE id = %s", (workspace,))
        conn.execute("INSERT INTO companies (tenant_id, id, name) VALUES (%s, %s, 'Acme')", (workspace, company))
        conn.execute("INSERT INTO contacts (tenant_id, id, first_name, last_name, company_id)"
                     " VALUES (%s, %s, 'Grace', 'Hopper', %s)", (workspace, contact, company))
        conn.execute("INSERT INTO pipelines (tenant_id, id, name, is_default) VALUES (%s, %s, 'Sales', true)",
                     (workspace, pipeline := uuid.uuid4()))
        conn.execute("INSERT INTO stages (tenant_id, id, pipeline_id, name, position, kind) VALUES"
                     " (%s, %s, %s, 'New', 0, 'open')", (workspace, stage := uuid.uuid4(), pipeline))
        conn.execute("INSERT INTO leads (tenant_id, id, title, contact_id, company_id, pipeline_id, stage_id, status)"
                     " VALUES (%s, %s, 'Website', %s, %s, %s, %s, 'open')",
                     (workspace, lead, contact, company, pipeline, stage))
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO products (tenant_id, name, sku, description, unit_amount_minor, currency,"
                            " tax_rate_bp) VALUES (%s, %s, %s, %s, %s, 'EUR', 1900)",
                            [(workspace, f"Product {n}", f"SKU-{n}", f"What product {n} does", 100 + n)
                             for n in range(PRODUCTS)])
            # The notes name 10 products, with quantities: the draft has 10 lines.
            cur.executemany("INSERT INTO notes (tenant_id, body, lead_id) VALUES (%s, %s, %s)",
                            [(workspace, f"Call {n}: they asked about {n % 5 + 1} x SKU-{n * 7 % PRODUCTS} and "
                              "the timeline; follow up next week.", lead) for n in range(NOTES)])
        conn.execute("VACUUM ANALYZE products, notes, leads, proposals, proposal_lines")
    return workspace, lead, token


def _draft_paths(bench: Any) -> tuple[dict[str, Any], list[Any]]:
    import app as app_module
    from chalicelib.auth import sessions
    from chalicelib.db.pool import Database
    from chalicelib.settings import get_settings

    settings = get_settings()
    workspace, lead, token = _seed(bench.admin_url, bench.app_url)
    floor = Database(make_conninfo(bench.app_url, options=f"-c app.tenant_id={workspace}"), size=1, name="floor")
    db = Database(bench.app_url, size=1)
    headers = {"Cookie": f"{settings.session_cookie_name}={token}", "Origin": settings.public_origin,
               "X-CSRF-Token": sessions.csrf_token(token, settings)}
    invoke = lambda_invoker(app_module.app, "POST", f"/workspaces/{workspace}/leads/{lead}/proposals/draft", headers)

    def one_query() -> object:
        with floor.connection() as conn:
            return conn.execute(FLOOR_SQL, {"lead": lead}).fetchone()

    def drafted() -> object:
        response = invoke()
        assert response.status_code == 201, response.body
        return response

    return {"one query reading the same rows": one_query, "POST .../proposals/draft (template)": drafted}, [db, floor]


def _proposal() -> Any:
    from chalicelib.proposals import totals
    from chalicelib.proposals.models import LineOut, ProposalOut, RateOut, TotalsOut

    lines = []
    for n in range(LINES):
        amounts = totals.line_totals(totals.Line(totals.Decimal(n % 7 + 1), 1000 + n * 37, 0, 1900))
        lines.append(LineOut(position=n, product_id=None, sku=f"SKU-{n}", description=f"Product {n}: a line item",
                             quantity=str(n % 7 + 1), unit_amount_minor=1000 + n * 37, discount_bp=0,
                             tax_rate_bp=1900, net_minor=amounts.net_minor, tax_minor=amounts.tax_minor,
                             total_minor=amounts.total_minor))
    subtotal, tax = sum(li.net_minor for li in lines), sum(li.tax_minor for li in lines)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    return ProposalOut(id=uuid.uuid4(), lead_id=uuid.uuid4(), version=1, previous_id=None, status="draft",
                       title="Website for Acme", introduction="Dear Grace,\n\nHere is our proposal.",
                       valid_until=date(2027, 1, 31), currency="EUR", line_items=lines,
                       totals=TotalsOut(subtotal_minor=subtotal, tax_minor=tax, total_minor=subtotal + tax,
                                        tax_by_rate=[RateOut(tax_rate_bp=1900, net_minor=subtotal, tax_minor=tax)]),
                       pdf_sha256=None, sent_at=None, status_changed_at=now, created_at=now, updated_at=now)


def _pdf_paths() -> dict[str, Any]:
    import io

    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Table

    from chalicelib.proposals import pdf

    proposal = _proposal()
    parties = pdf.Parties("Acme Sales", "Grace Hopper", "grace@example.test", "Acme")
    styles = getSampleStyleSheet()

    def bare() -> bytes:
        buffer = io.BytesIO()
        rows = [[li.description, li.quantity, str(li.unit_amount_minor), str(li.net_minor)]
                for li in proposal.line_items]
        SimpleDocTemplate(buffer, pagesize=A4).build([
            Paragraph(parties.workspace, styles["Title"]), Paragraph(proposal.title, styles["Heading1"]),
            Paragraph(proposal.introduction, styles["Normal"]), Table(rows)])
        return buffer.getvalue()

    return {"bare reportlab document, same text": bare,
            "proposal PDF (50 lines)": lambda: pdf.render(proposal, parties)}


def _report(medians: dict[str, float], floor_name: str, measured: str, target: float) -> float:
    """Print each path against the floor; returns the measured path's ratio."""
    floor = medians[floor_name]
    for name, median in medians.items():
        print(f"  {name:40s} {median * 1e3:8.2f} ms   ratio {median / floor:5.2f}x")
    ratio = medians[measured] / floor
    print(f"  target <= {target:g}x: {ratio:.2f}x")
    return ratio


def run() -> dict[str, float]:
    """Run B12 and print its figures; returns them for the summary."""
    bench_environment()
    from chalicelib.db.pool import use_database

    results: dict[str, float] = {}
    with bench_database() as bench:
        paths, closables = _draft_paths(bench)
        use_database(closables[0])
        try:
            medians = interleaved_medians(paths, rounds=7, n=50, warmup=20)
        finally:
            for item in closables:
                item.close()
            use_database(None)
    print(f"B12 Atlas template draft ({NOTES} notes, {PRODUCTS} products; Lambda entry point, unix socket)")
    results["B12 draft ratio"] = _report(medians, "one query reading the same rows",
                                         "POST .../proposals/draft (template)", 2.0)
    print(f"B12 PDF of a {LINES}-line proposal")
    results["B12 PDF ratio"] = _report(interleaved_medians(_pdf_paths(), rounds=7, n=10, warmup=3),
                                       "bare reportlab document, same text", "proposal PDF (50 lines)", 1.5)
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))

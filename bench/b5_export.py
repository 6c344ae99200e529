"""B5: export_workspace of 200k and 1M rows vs the floor, `COPY (SELECT row_to_json(t) ...) TO STDOUT`.

The floor reads the same rows the way psql would (superuser, raw COPY blocks written to a file);
ours is the real export through the jobs role under RLS (manifest, digests, atomic rename). Both
run in this process, interleaved. Peak RSS is measured in a child process per size (VmHWM), so the
growth from 200k to 1M rows shows whether memory stays flat. Targets: >= 0.7x the floor's rows/s,
peak RSS growth <= 32 MB.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from bench.common import DBNAME, ROOT, bench_database, bench_environment
from chalicelib.db.migrate import JOBS_ROLE, role_conninfo
from chalicelib.db.pool import Database
from chalicelib.jobs.export import export_workspace

SIZES = {"b5 200k": 200_000, "b5 1m": 1_000_000}
ROUNDS = 3


def _seed(admin_url: str) -> dict[str, uuid.UUID]:
    """One workspace per size holding that many audit rows (kept between runs)."""
    found = {}
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for name, rows in SIZES.items():
            row = conn.execute("SELECT id FROM workspaces WHERE name = %s", (name,)).fetchone()
            tenant = uuid.UUID(str(row[0])) if row else uuid.uuid4()
            if row is None:
                conn.execute("INSERT INTO workspaces (id, name) VALUES (%s, %s)", (tenant, name))
            have = conn.execute("SELECT count(*) FROM audit_log WHERE tenant_id = %s", (tenant,)).fetchone()
            if have is None or have[0] != rows:
                conn.execute("DELETE FROM audit_log WHERE tenant_id = %s", (tenant,))
                conn.execute(
                    "INSERT INTO audit_log (tenant_id, occurred_at, actor_user_id, action, target_type, target_id,"
                    " ip, user_agent, details)"
                    " SELECT %s, now() - g * interval '1 minute', gen_random_uuid(), 'lead.updated', 'lead',"
                    "  gen_random_uuid(), '203.0.113.7', 'Mozilla/5.0 (X11; Linux x86_64) bench',"
                    "  jsonb_build_object('field', 'stage', 'from', 'New', 'to', 'Won \"quoted\" \\ ü', 'n', g)"
                    " FROM generate_series(1, %s) g", (tenant, rows))
                conn.execute("VACUUM (ANALYZE) audit_log")
            found[name] = tenant
    return found


def _floor(admin_url: str, tenant: uuid.UUID, out: Path) -> tuple[float, int]:
    """Seconds and rows of the raw COPY of the same rows, written to `out`."""
    query = sql.SQL("COPY (SELECT row_to_json(t) FROM audit_log t WHERE tenant_id = {}) TO STDOUT").format(
        sql.Literal(str(tenant)))
    rows = 0
    with psycopg.connect(admin_url, autocommit=True) as conn, open(out, "wb") as sink:
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(query) as copy:
            while block := copy.read():
                sink.write(block)
                rows += 1
        sink.flush()
        return time.perf_counter() - started, rows + 1  # + the workspace row ours also exports


def _ours(db: Database, tenant: uuid.UUID, out: Path) -> tuple[float, int]:
    started = time.perf_counter()
    manifest = export_workspace(db, tenant, out)
    return time.perf_counter() - started, manifest.total_rows


def _peak_rss_mb(jobs_url: str, tenant: uuid.UUID, out: Path) -> float:
    """Peak RSS (VmHWM) of a fresh child process exporting the workspace."""
    done = subprocess.run([sys.executable, "-m", "bench.b5_export", "--child", jobs_url, str(tenant), str(out)],
                          cwd=ROOT, capture_output=True, text=True, check=True, timeout=600)
    return float(json.loads(done.stdout.strip().splitlines()[-1])["vm_hwm_kb"]) / 1024


def _child(jobs_url: str, tenant: str, out: str) -> None:
    db = Database(jobs_url, size=1, name="jobs")
    export_workspace(db, uuid.UUID(tenant), Path(out))
    db.close()
    status = Path("/proc/self/status").read_text()
    peak = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"vm_hwm_kb": int(peak)}))


def run() -> dict[str, float]:
    """Run B5 and print its figures; returns them for the summary."""
    results: dict[str, float] = {}
    with bench_database() as bench, tempfile.TemporaryDirectory(dir=ROOT / ".data") as tmp:
        tenants = _seed(bench.admin_url)
        jobs_url = role_conninfo(bench.admin_url, user=JOBS_ROLE, dbname=DBNAME)
        db = Database(jobs_url, size=1, name="jobs")
        print(f"B5 export (audit rows of one workspace; median of {ROUNDS} interleaved rounds)")
        peaks = {}
        for name, size in SIZES.items():
            tenant, out = tenants[name], Path(tmp) / "export.json"
            floors, ours = [], []
            for _ in range(ROUNDS):
                seconds, floor_rows = _floor(bench.admin_url, tenant, out)
                floors.append(floor_rows / seconds)
                seconds, our_rows = _ours(db, tenant, out)
                ours.append(our_rows / seconds)
                assert our_rows == floor_rows, (our_rows, floor_rows)
            peaks[size] = _peak_rss_mb(jobs_url, tenant, out)
            floor_rps, our_rps = statistics.median(floors), statistics.median(ours)
            label = f"{size // 1000}k"
            results.update({f"B5 {label} floor rows/s": floor_rps, f"B5 {label} export rows/s": our_rps,
                            f"B5 {label} ratio": our_rps / floor_rps, f"B5 {label} peak RSS MB": peaks[size]})
            print(f"  {label:>5} rows: COPY row_to_json floor {floor_rps:10,.0f} rows/s   export_workspace"
                  f" {our_rps:10,.0f} rows/s   ratio {our_rps / floor_rps:.2f}x (target >= 0.7x)"
                  f"   peak RSS {peaks[size]:.1f} MB   file {out.stat().st_size / 1e6:.0f} MB")
        db.close()
        growth = peaks[max(SIZES.values())] - peaks[min(SIZES.values())]
        results["B5 peak RSS growth MB"] = growth
        print(f"  peak RSS growth 200k -> 1M rows: {growth:+.1f} MB (target <= +32 MB)")
    return results


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child(*sys.argv[2:])
    else:
        bench_environment()
        run()

"""`make bench`: every benchmark, each printing ratios against a floor measured in the same run."""

from __future__ import annotations

from bench import (
    b1_tenant_read,
    b2_lists,
    b3_write,
    b4_ingest,
    b5_export,
    b6_purge,
    b7_vault,
    b8_cold_start,
    b9_auth,
    b10_import,
    b11_webhooks,
    b12_proposals,
)
from bench.common import bench_environment


def main() -> None:
    """Run all benchmarks in order."""
    bench_environment()
    for bench in (b1_tenant_read, b2_lists, b3_write, b4_ingest, b5_export, b6_purge, b7_vault, b8_cold_start,
                  b9_auth, b10_import, b11_webhooks, b12_proposals):
        bench.run()
        print(flush=True)


if __name__ == "__main__":
    main()

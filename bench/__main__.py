"""`make bench`: every benchmark, each printing ratios against a floor measured in the same run."""

from __future__ import annotations

from bench import b1_tenant_read, b7_vault, b8_cold_start, b9_auth
from bench.common import bench_environment


def main() -> None:
    """Run all benchmarks in order."""
    bench_environment()
    b1_tenant_read.run()
    print()
    b7_vault.run()
    print()
    b8_cold_start.run()
    print()
    b9_auth.run()


if __name__ == "__main__":
    main()

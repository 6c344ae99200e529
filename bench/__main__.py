"""`make bench`: every benchmark, each printing ratios against a floor measured in the same run."""

from __future__ import annotations

from bench import b1_tenant_read, b8_cold_start


def main() -> None:
    """Run all benchmarks in order."""
    b1_tenant_read.run()
    print()
    b8_cold_start.run()


if __name__ == "__main__":
    main()

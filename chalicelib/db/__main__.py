"""`python -m chalicelib.db` (`make migrate`): bring the configured (or embedded) database up to date.

The command line lives here, above both migrate.py and embedded.py, so neither imports the other back.
"""

from __future__ import annotations

import sys

from chalicelib.db.embedded import prepare_database
from chalicelib.db.migrate import load_migrations
from chalicelib.observability import command_settings


def main() -> int:
    """Migrate, print one line, stop the embedded server if this command started it."""
    settings = command_settings()
    if settings is None:
        return 2
    local = prepare_database(settings)
    print(f"database is up to date ({len(load_migrations())} migrations)")
    local.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make run`'s API server: `chalice local`, with API Gateway's greedy `{proxy+}` matching.

API Gateway routes any path no other resource matches to the root `/{proxy+}` catch-all (the 404 problem
of chalicelib.api), at any depth. chalice local's matcher only compares paths of equal length, so a
deeper unknown path (`/a/b/c`) would get its own 403 "Missing Authentication Token" instead. This module
is run as `python -m chalicelib.localserver local ...` by chalicelib.devserver; no Lambda imports it (the
chalice CLI is not in requirements.txt).
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import parse_qs, urlparse

from chalice import cli, local

CATCH_ALL = "/{proxy+}"


class GreedyRouteMatcher(local.RouteMatcher):
    """chalice local's matcher, falling back to the catch-all for a path nothing else matches."""

    def match_route(self, url: str) -> Any:
        """The matched route, else the catch-all with the whole path captured (as API Gateway does)."""
        try:
            return super().match_route(url)
        except ValueError:
            if CATCH_ALL not in self.route_urls:
                raise
            parsed = urlparse(url)
            return local.MatchResult(CATCH_ALL, {"proxy": parsed.path.lstrip("/")},
                                     parse_qs(parsed.query, keep_blank_values=True))


def main() -> int:
    """Run the chalice CLI with the greedy matcher in place (arguments as for `chalice`)."""
    # The local gateway looks the class up in its module when it is built, so this replaces it there.
    local.RouteMatcher = GreedyRouteMatcher  # type: ignore[misc]
    return int(cli.main() or 0)


if __name__ == "__main__":
    sys.exit(main())

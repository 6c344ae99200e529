"""Signing in to RDS without a stored password: IAM tokens, and the verified TLS they must travel over.

With DB_IAM_AUTH the connection strings carry no password. Every NEW connection gets a fresh token
from `generate_db_auth_token`: a SigV4 presign with the function's own role credentials, computed
locally (no network call), valid for 15 minutes, and only checked when a connection is opened. A token
is never kept: one that is made per connection cannot be replayed past its life by our own pool.
boto3 and certifi are imported on first use, never at cold start.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict, make_conninfo

# Returns the password for one new connection (an IAM token, or a test's stand-in).
PasswordSource = Callable[[], str]
VERIFYING_SSLMODES = frozenset({"verify-ca", "verify-full"})


class RdsIamTokens:
    """A password source making one RDS IAM token per call for one host, port and database user."""

    def __init__(self, *, host: str, port: int, user: str, region: str | None = None,
                 client: Any | None = None) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.region = region
        self._client = client
        self._lock = threading.Lock()

    @classmethod
    def for_conninfo(cls, conninfo: str, *, region: str | None = None, client: Any | None = None) -> RdsIamTokens:
        """Tokens for the host, port and user named by a connection string (see iam_conninfo_problem)."""
        params = conninfo_to_dict(conninfo)
        return cls(host=str(params["host"]), port=int(str(params.get("port") or 5432)), user=str(params["user"]),
                   region=region, client=client)

    def __call__(self) -> str:
        """A new token (never cached: the pool asks once per new connection)."""
        token = self._rds().generate_db_auth_token(DBHostname=self.host, Port=self.port, DBUsername=self.user,
                                                   Region=self.region)
        return str(token)

    def __repr__(self) -> str:
        return f"RdsIamTokens(host={self.host!r}, port={self.port}, user={self.user!r})"

    def _rds(self) -> Any:
        # The pool may open connections from its worker threads: one client, made once, under a lock.
        with self._lock:
            if self._client is None:
                import boto3  # lazily: cold start

                # Region None: the client's own (AWS_REGION in a Lambda); the token is signed for it.
                self._client = boto3.client("rds", region_name=self.region)
            return self._client


def iam_conninfo_problem(conninfo: str) -> str | None:
    """Why `conninfo` cannot be used with IAM tokens, or None. Never quotes the string (it is a secret)."""
    try:
        params = conninfo_to_dict(conninfo)
    except ProgrammingError:
        return "is not a valid connection string"
    host = str(params.get("host") or "")
    if not host or host.startswith("/") or "," in host:
        return "must name one host (the RDS Proxy endpoint) for IAM authentication"
    if not params.get("user"):
        return "must name the database user for IAM authentication"
    if params.get("password"):
        # A stored password next to IAM would be a second, long-lived way in that nobody rotates.
        return "must not carry a password with DB_IAM_AUTH (each connection signs in with an IAM token)"
    if params.get("sslmode") != "verify-full":
        # A token is a bearer credential for 15 minutes: it goes only to a server whose certificate AND
        # name are verified, never to whoever answers on the address (require/verify-ca do not check that).
        return "must have sslmode=verify-full with DB_IAM_AUTH (the token must only reach the verified server)"
    return None


def verified_tls_problem(conninfo: str) -> str | None:
    """Why `conninfo` would not verify the server (certificate chain and host name), or None; never quotes it."""
    try:
        params = conninfo_to_dict(conninfo)
    except ProgrammingError:
        return "is not a valid connection string"
    if params.get("sslmode") != "verify-full":
        # require/verify-ca encrypt but accept any server or any name: whoever answers on the address.
        return "must have sslmode=verify-full (the server's certificate and host name are verified)"
    return None


def with_default_sslrootcert(conninfo: str) -> str:
    """`conninfo`, plus certifi's CA bundle as `sslrootcert` when it verifies certificates and names none.

    libpq's default root file (~/.postgresql/root.crt) does not exist in a Lambda. RDS Proxy presents
    ACM certificates, which chain to Amazon Root CA 1, which is in Mozilla's bundle that certifi ships.
    (A cluster's own endpoint is signed by the RDS CAs, which are not: give those as sslrootcert.)
    """
    params = conninfo_to_dict(conninfo)
    if params.get("sslmode") not in VERIFYING_SSLMODES or params.get("sslrootcert"):
        return conninfo
    import certifi  # lazily: only connections to AWS need it

    return make_conninfo(conninfo, sslrootcert=certifi.where())

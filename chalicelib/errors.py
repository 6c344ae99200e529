"""Domain errors. No Chalice here: chalicelib.http maps them to RFC 9457 problem responses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class FieldError:
    """One invalid input field: a dotted path (``custom.size``, ``items.0.name``) and why."""

    field: str
    message: str
    code: str


class AppError(Exception):
    """Base of every error that has a defined HTTP meaning."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal server error"
    slug: ClassVar[str] = "internal"

    def __init__(self, detail: str | None = None, *, errors: list[FieldError] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = errors or []
        self.headers = headers or {}


class BadRequest(AppError):
    """The request is malformed (bad JSON, bad query parameter, tampered cursor)."""

    status, title, slug = 400, "Bad request", "bad-request"


class Unauthorized(AppError):
    """No valid credentials."""

    status, title, slug = 401, "Unauthorized", "unauthorized"


class Forbidden(AppError):
    """Authenticated, but this action is not allowed (e.g. CSRF check failed)."""

    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(AppError):
    """Nothing here, or nothing this caller may know exists (indistinguishable on purpose)."""

    status, title, slug = 404, "Not found", "not-found"


class MethodNotAllowed(AppError):
    """The path exists but not with this method."""

    status, title, slug = 405, "Method not allowed", "method-not-allowed"


class Conflict(AppError):
    """The request conflicts with the current state (duplicate, idempotency key reuse)."""

    status, title, slug = 409, "Conflict", "conflict"


class PreconditionFailed(AppError):
    """If-Match did not match the current ETag."""

    status, title, slug = 412, "Precondition failed", "precondition-failed"


class PayloadTooLarge(AppError):
    """The body exceeds the configured limit."""

    status, title, slug = 413, "Payload too large", "payload-too-large"


class UnsupportedMediaType(AppError):
    """The body is not of a content type this route accepts."""

    status, title, slug = 415, "Unsupported media type", "unsupported-media-type"


class ValidationFailed(AppError):
    """The body parsed but its fields are invalid or unknown; `errors` lists them."""

    status, title, slug = 422, "Validation failed", "validation-failed"


class RateLimited(AppError):
    """Too many requests; retry after `retry_after` seconds."""

    status, title, slug = 429, "Too many requests", "rate-limited"

    def __init__(self, detail: str | None = None, *, retry_after: int = 60) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


class BadGateway(AppError):
    """A service we depend on answered something we cannot use (a model's invalid output, twice)."""

    status, title, slug = 502, "Bad gateway", "bad-gateway"


class ServiceUnavailable(AppError):
    """A dependency (the database) is unavailable; retry later."""

    status, title, slug = 503, "Service unavailable", "service-unavailable"

    def __init__(self, detail: str | None = None, *, retry_after: int = 5) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


class DatabaseUnavailable(Exception):
    """The database cannot serve this request now: down, refusing sign-in, out of connection slots,
    restarting, frozen past the request's deadline. Transient by nature; chalicelib.http answers it with
    503 and Retry-After.

    `kind` names the failure for the log line: an SQLSTATE ("57P01", "53300") or a fixed word
    ("connection", "connect-timeout", "pool-timeout", "deadline"), never a message from the driver,
    which may quote a host, a user or a row value.
    """

    def __init__(self, kind: str) -> None:
        super().__init__(f"database unavailable ({kind})")
        self.kind = kind

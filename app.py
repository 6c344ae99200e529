"""Composition root: logging and Sentry first, then the Chalice app and its blueprints. No logic."""

from chalicelib.observability import configure_logging, init_sentry
from chalicelib.settings import get_settings

settings = get_settings()  # validated at cold start: a bad variable stops the function here
configure_logging(settings.log_level)
init_sentry(settings.sentry_dsn.get_secret_value() if settings.sentry_dsn else None,
            environment=settings.stage)

from chalicelib.api import create_app  # noqa: E402 - after logging and Sentry, by design
from chalicelib.routes import (  # noqa: E402
    api_keys,
    auth,
    crm,
    docs,
    downloads,
    health,
    imports,
    inbox,
    integrations,
    legal,
    pipelines,
    proposals,
    telephony,
    webhook_endpoints,
    webhooks,
    workspaces,
)

BLUEPRINTS = [health.bp, auth.bp, workspaces.bp, api_keys.bp, crm.bp, pipelines.bp, imports.bp, integrations.bp,
              inbox.bp, webhooks.bp, webhook_endpoints.bp, proposals.bp, telephony.bp, docs.bp, downloads.bp, legal.bp]
app = create_app("tenant-crm", BLUEPRINTS, max_body_bytes=settings.max_body_bytes, cors_origins=settings.cors_origins)

"""One module per inbound provider, each implementing base.Provider completely; PROVIDERS names them.

Adding a provider: a module here with a PROVIDER object, its entry below, and its webhook route (which
builds a base.Delivery and calls chalicelib.inbox.ingest.accept with the provider's name).
"""

from __future__ import annotations

from collections.abc import Mapping

from chalicelib.inbox.providers import mailgun, signnow, stripe, twilio, whatsapp
from chalicelib.inbox.providers.base import Provider

PROVIDERS: Mapping[str, Provider] = {p.name: p for p in (whatsapp.PROVIDER, mailgun.PROVIDER, twilio.PROVIDER,
                                                          signnow.PROVIDER, stripe.PROVIDER)}


def for_channel(channel_type: str) -> Provider:
    """The provider that serves an inbox channel type (whatsapp, email)."""
    return next(p for p in PROVIDERS.values() if p.channel_type == channel_type)

"""The refusals a webhook delivery can meet: plain exceptions, no HTTP (chalicelib.http maps each class).

Their `reason` is a fixed word (counted per day and provider, logged), never payload data. Nothing of
a refused delivery is stored.
"""

from __future__ import annotations

from typing import ClassVar


class Refused(Exception):
    """A delivery we do not accept; nothing of it is stored."""

    default_reason: ClassVar[str] = "refused"

    def __init__(self, message: str | None = None, *, reason: str | None = None) -> None:
        # The message is a fixed word too (which check failed); the reason is what is counted.
        self.reason: str = reason or type(self).default_reason
        super().__init__(message or self.reason)


class UnknownSource(Refused):
    """No such channel or workspace (or not of this provider): the same answer as any unknown path."""

    default_reason = "unknown_channel"


class BadSignature(Refused):
    """The signature does not verify, or there is no secret to verify it with."""

    default_reason = "bad_signature"


class Replayed(Refused):
    """A signed delivery seen before (its one-time token was already used)."""

    default_reason = "replayed"


class ForeignSender(Refused):
    """Validly signed, but for another number or account than this channel's or workspace's."""

    default_reason = "foreign_sender"


class Malformed(Refused, ValueError):
    """The body is not a delivery of this provider (the message is a fixed word)."""

    default_reason = "malformed"


class UnsupportedContent(Refused):
    """The body is not of the media type this provider posts."""

    default_reason = "content_type"

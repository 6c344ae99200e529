"""Integration providers whose credentials the vault stores: one strict pydantic model per provider."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_core import PydanticCustomError

from chalicelib.auth.addresses import EmailAddress
from chalicelib.errors import FieldError, NotFound, ValidationFailed

MASK = "…"


def _matches(pattern: str, description: str) -> Callable[[SecretStr], SecretStr]:
    regex = re.compile(pattern)

    def check(value: SecretStr) -> SecretStr:
        # The message describes the expected shape and never quotes the value: it is a secret.
        if not regex.fullmatch(value.get_secret_value()):
            raise PydanticCustomError("secret_format", "must be {shape}", {"shape": description})
        return value

    return check


# SecretStr everywhere a value is secret: repr(), str() and model dumps print "**********", so a
# model that reaches a log line, a traceback or Sentry carries no secret.
Hex32Secret = Annotated[SecretStr, AfterValidator(_matches(r"[0-9a-fA-F]{32}", "32 hexadecimal characters"))]
TokenSecret = Annotated[SecretStr, AfterValidator(
    _matches(r"[A-Za-z0-9._~+/=-]{16,1024}", "16 to 1024 characters of A-Z, a-z, 0-9 and ._~+/=-"))]
StripeKey = Annotated[SecretStr, AfterValidator(
    _matches(r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,247}", "a Stripe secret key (sk_live_… or sk_test_…)"))]
WebhookSecret = Annotated[SecretStr, AfterValidator(
    _matches(r"whsec_[A-Za-z0-9]{16,250}", "a Stripe webhook signing secret (whsec_…)"))]
VerifyToken = Annotated[SecretStr, AfterValidator(
    _matches(r"[\x21-\x7e]{16,256}", "16 to 256 printable ASCII characters without spaces"))]


def masked(value: str) -> str:
    """The last 4 characters behind a mask: enough to recognise a key, too little to use it."""
    return MASK + value[-4:]


class ProviderCredentials(BaseModel):
    """Base of the per-provider models: unknown fields refused, values never echoed in errors."""

    # extra="forbid": a typo'd field is an error, not silently dropped; hide_input_in_errors keeps
    # secrets out of ValidationError messages (which reach logs when something goes wrong).
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    provider: ClassVar[str]

    def hints(self) -> dict[str, str]:
        """Masked hints for every set field (last 4 characters only)."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is not None:
                out[name] = masked(value.get_secret_value() if isinstance(value, SecretStr) else str(value))
        return out

    def to_plaintext(self) -> bytes:
        """The canonical JSON the vault encrypts (the only place secrets are revealed)."""
        revealed = {name: value.get_secret_value() if isinstance(value, SecretStr) else value
                    for name, value in self}
        return json.dumps(revealed, sort_keys=True, separators=(",", ":")).encode()


class TwilioCredentials(ProviderCredentials):
    """Twilio account SID and auth token."""

    provider: ClassVar[str] = "twilio"
    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: Hex32Secret


class StripeCredentials(ProviderCredentials):
    """Stripe secret (or restricted) key and, optionally, the webhook signing secret."""

    provider: ClassVar[str] = "stripe"
    secret_key: StripeKey
    webhook_secret: WebhookSecret | None = None

    @property
    def mode(self) -> Literal["live", "test"]:
        """Live or test mode, from the key prefix."""
        return "live" if "_live_" in self.secret_key.get_secret_value()[:8] else "test"

    def hints(self) -> dict[str, str]:
        """Masked hints plus the key's mode (not secret, and what an operator needs to see)."""
        return {**super().hints(), "mode": self.mode}


class SignNowCredentials(ProviderCredentials):
    """SignNow access token, and the account's login email (SignNow sends invites only "from" it)."""

    provider: ClassVar[str] = "signnow"
    api_token: TokenSecret
    sender_email: EmailAddress | None = None


class WhatsAppCredentials(ProviderCredentials):
    """Meta WhatsApp Cloud API: phone number id, access token, app secret, webhook verify token."""

    provider: ClassVar[str] = "whatsapp"
    phone_number_id: str = Field(pattern=r"^[0-9]{5,20}$")
    access_token: TokenSecret
    app_secret: Hex32Secret  # Meta app secrets are 32 hex characters; they sign webhook bodies
    verify_token: VerifyToken


PROVIDERS: dict[str, type[ProviderCredentials]] = {
    model.provider: model
    for model in (TwilioCredentials, StripeCredentials, SignNowCredentials, WhatsAppCredentials)
}
_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


def model_for(provider: str) -> type[ProviderCredentials]:
    """The model of a known provider; NotFound for anything else."""
    model = PROVIDERS.get(provider)
    if model is None:
        # Not echoed: the name comes from the caller and the list of providers is public anyway.
        raise NotFound("no such integration provider")
    return model


def _field_errors(exc: ValidationError) -> list[FieldError]:
    errors = []
    for item in exc.errors(include_input=False, include_url=False, include_context=False):
        path = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden" and not _FIELD_NAME.fullmatch(path):
            # An unknown key is caller-chosen text (someone may paste a secret as a key): name it only
            # when it looks like a field name.
            path = "(unknown field)"
        errors.append(FieldError(field=path, message=item["msg"], code=item["type"]))
    return errors


def parse_credentials(provider: str, data: Any) -> ProviderCredentials:
    """Validate caller input for `provider`: NotFound or ValidationFailed (field paths, no values)."""
    model = model_for(provider)
    if not isinstance(data, Mapping):
        raise ValidationFailed(errors=[FieldError(field="", message="must be an object", code="type")])
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise ValidationFailed(errors=_field_errors(exc)) from None


def load_plaintext(provider: str, plaintext: bytes) -> ProviderCredentials:
    """Rebuild the model from decrypted plaintext (authenticated, so a failure is a bug, not input)."""
    return model_for(provider).model_validate_json(plaintext)

"""SES: the sending domain's identity and a configuration set (sign-in links, invitations, replies)."""

from __future__ import annotations

from aws_cdk import aws_ses as ses
from constructs import Construct


class Mail(Construct):
    """A domain identity (DKIM records to publish come out of the deploy) and a configuration set."""

    def __init__(self, scope: Construct, construct_id: str, *, domain: str) -> None:
        super().__init__(scope, construct_id)
        self.domain = domain
        self.configuration_set = ses.ConfigurationSet(
            self, "ConfigurationSet", configuration_set_name="tenant-crm",
            # Only TLS to the receiving server: a sign-in link must not cross the internet in clear text.
            tls_policy=ses.ConfigurationSetTlsPolicy.REQUIRE,
            reputation_metrics=True, suppression_reasons=ses.SuppressionReasons.BOUNCES_AND_COMPLAINTS,
        )
        self.identity = ses.EmailIdentity(
            self, "Identity", identity=ses.Identity.domain(domain), configuration_set=self.configuration_set,
        )

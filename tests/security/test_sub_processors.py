"""Every host and AWS service the code can contact belongs to a registered sub-processor (chalicelib.legal).

The privacy policy says data is shared "only with the sub-processors required to deliver the service". The
source is parsed (tests/security/outbound_sites.py) for every AWS client, every outbound.request call site,
every network library import and every URL literal; each must map to an entry of the registry that
/legal/sub-processors publishes. A new call site fails here until it says which hosts it reaches.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from chalicelib import legal
from chalicelib.inbox.providers import twilio, whatsapp
from chalicelib.settings import Settings
from tests.security.outbound_sites import Findings, scan

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = sorted([ROOT / "app.py", *(ROOT / "chalicelib").rglob("*.py"), *(ROOT / "functions").rglob("*.py")])
# The deployment's own code: the environment it gives the functions (URLs among it) is contactable too.
INFRA = sorted((ROOT / "infra" / "crm_infra").rglob("*.py"))
CHALICE_CONFIG = ROOT / ".chalice" / "config.json"
# Names that never leave the machine or are reserved for examples (RFC 2606, RFC 6761).
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
RESERVED_SUFFIXES = (".localhost", ".test", ".example", ".invalid", "example.com", "example.org")

Registry = tuple[legal.SubProcessor, ...]
HostsOf = Callable[[], Iterable[str]]


def _host(url: str) -> str:
    return urlsplit(url).hostname or ""


def _graph_host() -> str:
    # GRAPH_BASE_URL's default: the WhatsApp Cloud API (tests point the setting at a local fake server).
    return _host(str(Settings.model_fields["graph_base_url"].default))


def _setting_host(name: str) -> str:
    return _host(str(Settings.model_fields[name].default))


def _twilio_rest_hosts() -> set[str]:
    """Every host rest_base can hand to a recording call, whatever RecordingUrl a callback carries."""
    probes = ["", "https://api.twilio.com/x", "https://api.dublin.ie1.twilio.com/x", "https://twilio.com/x",
              "https://evil.example/x", "https://twilio.com.evil.example/x", "https://eviltwilio.com/x",
              "http://api.twilio.com/x", "https://api.twilio.com:8443/x", "https://u:p@api.twilio.com/x",
              "https://169.254.169.254/latest", "ftp://api.twilio.com/x"]
    # OUTBOUND_ALLOW_HOSTS is refused in prod (settings), so the production allow list is empty.
    return {_host(twilio.rest_base(url or None, frozenset())) for url in probes} | {_host(twilio.API_BASE)}


def _whatsapp_media_hosts() -> set[str]:
    # fetch_media downloads only from a host ending in one of MEDIA_HOSTS (after the Graph API lookup).
    return {_graph_host(), *(f"media{suffix}" for suffix in whatsapp.MEDIA_HOSTS)}


def test_the_hosts_the_call_sites_are_built_from_are_the_known_ones() -> None:
    # The walk below derives reachable hosts from these product values; pinned here, so widening one
    # (a media suffix, another Graph or Twilio base) fails instead of widening the walk with it.
    assert whatsapp.MEDIA_HOSTS == (".fbcdn.net", ".fbsbx.com", ".whatsapp.net", ".facebook.com")
    assert twilio.API_BASE == "https://api.twilio.com"
    assert _graph_host() == "graph.facebook.com"
    assert (_setting_host("signnow_base_url"), _setting_host("stripe_api_base")) == ("api.signnow.com",
                                                                                       "api.stripe.com")


# Each outbound.request call site (file, enclosing function) and the hosts it can reach in production.
CALL_SITES: dict[tuple[str, str], HostsOf] = {
    ("chalicelib/inbox/providers/twilio.py", "delete_recording"): _twilio_rest_hosts,
    ("chalicelib/inbox/providers/twilio.py", "fetch_recording"): _twilio_rest_hosts,
    ("chalicelib/inbox/providers/whatsapp.py", "WhatsApp.send_reply"): lambda: {_graph_host()},
    ("chalicelib/inbox/providers/whatsapp.py", "fetch_media"): _whatsapp_media_hosts,
    # SIGNNOW_BASE_URL's and STRIPE_API_BASE's defaults (the sandbox, api-eval.signnow.com, is registered too).
    ("chalicelib/inbox/providers/signnow.py", "_request"): lambda: {_setting_host("signnow_base_url")},
    ("chalicelib/inbox/providers/stripe.py", "_call"): lambda: {_setting_host("stripe_api_base")},
}
# Call sites whose hosts a workspace chooses for its own data: no sub-processor's, by design. Each with why.
CONTROLLER_DESTINATIONS: dict[tuple[str, str], str] = {
    ("chalicelib/outgoing/delivery.py", "send"): "outgoing webhooks go to the workspace's own endpoints, the "
                                                 "URLs its admins registered (the outbound guard still applies)",
}
# Files that may import a network library: the sub-processor behind it (None: it contacts no one itself).
NETWORK_IMPORTS: dict[tuple[str, str], str | None] = {
    # The SSRF-safe client itself: whom it calls is decided by its callers, the CALL_SITES.
    ("chalicelib/outbound.py", "socket"): None,
    ("chalicelib/outbound.py", "urllib3"): None,
    # encode_multipart_formdata only (the upload's body); the request itself goes through chalicelib.outbound.
    ("chalicelib/inbox/providers/signnow.py", "urllib3"): None,
    # Shuts down a database connection's socket when a request's deadline passes; opens nothing.
    ("chalicelib/db/deadline.py", "socket"): None,
    # fetch_ca_bundle: DB_ADMIN_SSLROOTCERT_URL, which infra sets to AWS's RDS truststore (a URL literal there).
    ("functions/migrate.py", "urllib.request"): "aws",
    # Error events go to the SENTRY_DSN's host (checked below).
    ("chalicelib/observability.py", "sentry_sdk"): "sentry",
}


def _is_local(host: str) -> bool:
    return host in LOCAL_HOSTS or host.endswith(RESERVED_SUFFIXES)


def _config_hosts(path: Path) -> list[tuple[str, int, str]]:
    """URL hosts among the string values of a JSON config (the Chalice stages' environment)."""
    found: list[tuple[str, int, str]] = []

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str) and value.startswith(("https://", "http://")) and _host(value):
            found.append((path.relative_to(ROOT).as_posix(), 0, _host(value)))

    walk(json.loads(path.read_text(encoding="utf-8")))
    return found


def problems(findings: Findings, *, registry: Registry = legal.REGISTRY,
             call_sites: Mapping[tuple[str, str], HostsOf] = CALL_SITES,
             network_imports: Mapping[tuple[str, str], str | None] = NETWORK_IMPORTS) -> list[str]:
    """Everything the scan found that no registered sub-processor covers (empty when all is registered)."""
    out: list[str] = []
    keys = {p.key for p in registry}

    def host_ok(host: str, where: str) -> None:
        if not _is_local(host) and legal.for_host(host, registry) is None:
            out.append(f"{where}: host {host} belongs to no registered sub-processor")

    for file, line, service in findings.clients:
        if legal.for_aws_client(service, registry) is None:
            out.append(f"{file}:{line}: AWS service {service!r} is in no registered sub-processor's services")
    out += [f"{file}:{line}: an AWS client whose service is not a literal" for file, line in findings.unreadable]
    seen_sites = set()
    for file, function, line in findings.outbound_calls:
        seen_sites.add((file, function))
        if (file, function) in CONTROLLER_DESTINATIONS:
            continue
        hosts_of = call_sites.get((file, function))
        if hosts_of is None:
            out.append(f"{file}:{line}: outbound.request in {function} is not in CALL_SITES (say which hosts it "
                       "reaches, and register their sub-processor)")
            continue
        for host in sorted(set(hosts_of())):
            host_ok(host, f"{file}:{line} ({function})")
    out += [f"CALL_SITES names {site}, which no longer calls outbound.request" for site in call_sites
            if site not in seen_sites]
    seen_imports = set()
    for file, module, line in findings.network_imports:
        seen_imports.add((file, module))
        if (file, module) not in network_imports:
            out.append(f"{file}:{line}: imports {module}: a network client outside chalicelib.outbound")
        elif (owner := network_imports[(file, module)]) is not None and owner not in keys:
            out.append(f"{file}:{line}: imports {module} for {owner}, which is not a registered sub-processor")
    out += [f"NETWORK_IMPORTS names {entry}, which is no longer imported" for entry in network_imports
            if entry not in seen_imports]
    for file, line, host in findings.url_hosts:
        host_ok(host, f"{file}:{line}")
    return out


def _runtime_findings() -> Findings:
    findings = scan([*RUNTIME, *INFRA], ROOT)
    findings.url_hosts += _config_hosts(CHALICE_CONFIG)
    return findings


def test_every_host_and_aws_service_the_code_can_contact_belongs_to_a_registered_sub_processor() -> None:
    assert problems(_runtime_findings()) == []


def test_the_walk_sees_the_call_sites_we_know_of() -> None:
    """A scan that finds nothing proves nothing: it sees the clients, calls, imports and literals there are."""
    findings = _runtime_findings()
    assert {service for _, _, service in findings.clients} >= {"s3", "sesv2", "sqs", "kms", "secretsmanager", "rds"}
    assert {(f, fn) for f, fn, _ in findings.outbound_calls} == set(CALL_SITES) | set(CONTROLLER_DESTINATIONS)
    assert {host for _, _, host in findings.url_hosts} >= {"api.twilio.com", "graph.facebook.com",
                                                           "truststore.pki.rds.amazonaws.com"}


@pytest.mark.parametrize("field", sorted(n for n in Settings.model_fields if n.endswith("_url")))
def test_url_settings_default_to_registered_hosts_or_to_nothing(field: str) -> None:
    default = Settings.model_fields[field].default
    if isinstance(default, str) and default:
        assert legal.for_host(_host(default)) is not None, f"{field.upper()} defaults to {default}"
    else:
        assert default in (None, ""), field


def test_sentry_events_go_only_to_sentry_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    """SENTRY_DSN has no default (deployments read it from a secret); Sentry's ingest hosts are registered."""
    assert Settings.model_fields["sentry_dsn"].default is None
    for dsn in ("https://key@o1.ingest.sentry.io/2", "https://key@o1.ingest.us.sentry.io/2",
                "https://key@o1.ingest.de.sentry.io/2"):
        entry = legal.for_host(_host(dsn))
        assert entry is not None and entry.key == "sentry", dsn
    assert legal.for_host("sentry.attacker.example") is None
    deployed = Settings().sentry_dsn  # a DSN given to the test run (as in a deployment's CI) is checked too
    if deployed is not None:
        assert legal.for_host(_host(deployed.get_secret_value())) is not None


def test_host_patterns_match_the_host_or_hosts_under_it_only() -> None:
    assert legal.host_matches("*.twilio.com", "api.eu1.twilio.com")
    assert not legal.host_matches("*.twilio.com", "twilio.com")
    assert not legal.host_matches("*.twilio.com", "eviltwilio.com")
    assert not legal.host_matches("*.twilio.com", "twilio.com.evil.example")
    assert legal.host_matches("api.twilio.com", "API.twilio.com.")


# The self-tests: the same check over a fake module, and over a registry missing an entry, must fail.
FAKE = '''
import boto3
import requests
from chalicelib import outbound

def analyse(image):
    boto3.client("rekognition").detect_faces(Image=image)
    outbound.request("POST", "https://api.unregistered.example.net/v1", body=image)
'''


def test_the_check_fails_on_an_unregistered_service_call_site_host_and_network_library(tmp_path: Path) -> None:
    (tmp_path / "chalicelib").mkdir()
    (tmp_path / "chalicelib" / "fake.py").write_text(FAKE, encoding="utf-8")
    found = problems(scan([tmp_path / "chalicelib" / "fake.py"], tmp_path), call_sites={}, network_imports={})
    assert any("AWS service 'rekognition'" in p for p in found)
    assert any("imports requests" in p for p in found)
    assert any("outbound.request in analyse is not in CALL_SITES" in p for p in found)
    assert any("host api.unregistered.example.net belongs to no registered sub-processor" in p for p in found)
    # Mapped, the call site is checked by the hosts it reaches: still unregistered.
    mapped = problems(scan([tmp_path / "chalicelib" / "fake.py"], tmp_path), network_imports={},
                      call_sites={("chalicelib/fake.py", "analyse"): lambda: {"api.unregistered.example.net"}})
    assert "chalicelib/fake.py:8 (analyse): host api.unregistered.example.net belongs to no registered " \
           "sub-processor" in mapped


def test_the_check_fails_on_the_real_code_when_a_sub_processor_is_left_out() -> None:
    without_twilio = tuple(p for p in legal.REGISTRY if p.key != "twilio")
    found = problems(_runtime_findings(), registry=without_twilio)
    assert any("twilio.py" in p and "host api.twilio.com" in p for p in found), found
    without_aws = tuple(p for p in legal.REGISTRY if p.key != "aws")
    found = problems(_runtime_findings(), registry=without_aws)
    for service in ("s3", "sesv2", "sqs", "kms", "secretsmanager"):
        assert any(f"AWS service {service!r}" in p for p in found), service
    assert any("truststore.pki.rds.amazonaws.com" in p for p in found)
    assert any("for aws, which is not a registered sub-processor" in p for p in found)


def test_the_check_fails_on_a_stale_call_site_entry() -> None:
    stale = {**CALL_SITES, ("chalicelib/gone.py", "send"): lambda: {"api.twilio.com"}}
    assert problems(_runtime_findings(), call_sites=stale) == [
        "CALL_SITES names ('chalicelib/gone.py', 'send'), which no longer calls outbound.request"]

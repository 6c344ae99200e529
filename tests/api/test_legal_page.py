"""GET /legal/sub-processors (HTML, no script, strict CSP) and /legal/sub-processors.json: public, complete."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator

import pytest
from chalice.test import Client

import app as app_module
from chalicelib import legal
from chalicelib.openapi import build_openapi
from chalicelib.web import legal as page

REQUIRED = {"aws", "sentry", "meta", "mailgun", "twilio", "stripe", "signnow"}


@pytest.fixture
def client() -> Iterator[Client]:
    with Client(app_module.app) as c:
        yield c


def _directives(csp: str) -> dict[str, str]:
    return {part.split()[0]: " ".join(part.split()[1:]) for part in csp.split(";") if part.strip()}


def test_the_page_is_public_html_under_a_csp_that_allows_only_its_own_inline_style(client: Client) -> None:
    response = client.http.get("/legal/sub-processors")  # no cookie, no key
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    html = response.body.decode()
    styles = re.findall(r"<style>(.*?)</style>", html, re.S)
    digest = base64.b64encode(hashlib.sha256(styles[0].encode()).digest()).decode()
    assert _directives(response.headers["Content-Security-Policy"]) == {
        "default-src": "'none'", "style-src": f"'sha256-{digest}'", "form-action": "'none'",
        "frame-ancestors": "'none'", "base-uri": "'none'"}
    assert "<script" not in html and len(styles) == 1 and " style=" not in html
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    for key in REQUIRED:
        assert f'<section id="{key}">' in html, key
    for host in ("api.twilio.com", "graph.facebook.com", "*.fbcdn.net", "*.amazonaws.com", "*.ingest.sentry.io"):
        assert host in html, host


def test_the_json_lists_every_required_sub_processor_with_purpose_data_and_region(client: Client) -> None:
    response = client.http.get("/legal/sub-processors.json")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = json.loads(response.body)
    entries = {e["key"]: e for e in body["sub_processors"]}
    assert set(entries) == REQUIRED
    for entry in entries.values():
        assert entry["purpose"] and entry["data_categories"] and entry["region"], entry["key"]
    services = {s["name"] for s in entries["aws"]["services"]}
    assert {"AWS Lambda", "Amazon S3", "Amazon SES", "AWS KMS", "Amazon SQS", "Amazon EventBridge Scheduler",
            "Amazon Aurora PostgreSQL and RDS Proxy"} <= services
    # What the code contacts, as the test knows it (not read from the registry it checks).
    assert "api.twilio.com" in entries["twilio"]["hosts"] and "graph.facebook.com" in entries["meta"]["hosts"]
    assert "*.amazonaws.com" in entries["aws"]["hosts"] and "*.ingest.sentry.io" in entries["sentry"]["hosts"]


def test_aws_region_is_the_deployments(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    aws = json.loads(client.http.get("/legal/sub-processors.json").body)["sub_processors"][0]
    assert aws["key"] == "aws" and aws["region"].startswith("eu-central-1 ")
    assert "eu-central-1" in client.http.get("/legal/sub-processors").body.decode()


def test_the_page_escapes_everything_it_prints() -> None:
    # Each field carries its own markup canary; none may come out as markup.
    hostile = legal.SubProcessorOut(key='k" onclick="x', name="<script>alert(1)</script>", purpose="<c1>",
                                    data_categories=["<c2>"], region="<c3>", hosts=["<c4>"], note="<c5>", services=[
                                        legal.AwsServiceOut(name="<c6>", purpose="<c7>", data_categories=["<c8>"])])
    html = page.render(legal.SubProcessors(operator="<c9>", contact='c10"><a', sub_processors=[hostile]))
    for raw in ("<script>alert", 'k" onclick', 'c10"><a', *(f"<c{n}>" for n in range(1, 10))):
        assert raw not in html, raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;c9&gt;" in html


def test_both_routes_are_public_in_openapi() -> None:
    spec = build_openapi(app_module.app)
    for path in ("/legal/sub-processors", "/legal/sub-processors.json"):
        assert spec["paths"][path]["get"]["security"] == [], path
    schema = spec["paths"]["/legal/sub-processors.json"]["get"]["responses"]["200"]["content"]["application/json"]
    assert schema["schema"] == {"$ref": "#/components/schemas/SubProcessors"}

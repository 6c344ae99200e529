"""Download links of both blob stores: S3 presigned GETs (against moto's server) and the local signed links."""

from __future__ import annotations

import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import time_machine

from chalicelib import clock
from chalicelib.blobs import (
    LinkRefused,
    LocalBlobs,
    S3Blobs,
    attachment_disposition,
    open_link,
    safe_content_type,
)
from chalicelib.settings import Settings, load_settings
from tests.functions.conftest import AWS_REGION, FAKE_AWS

TENANT, OTHER = uuid.uuid4(), uuid.uuid4()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path, app_secret_key="s" * 40, public_base_url="https://crm.example",
                         download_url_ttl_s=120)


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, settings: Settings) -> S3Blobs:
    """A fresh bucket in moto, and the store as production builds it (boto3 finds the endpoint in the env)."""
    for name, value in {**FAKE_AWS, "AWS_ENDPOINT_URL": moto_endpoint}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    bucket = f"crm-blobs-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": AWS_REGION})
    return S3Blobs(bucket, settings=settings)


def _put(store: S3Blobs | LocalBlobs, key: str, data: bytes, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(data)
    store.put_file(key, source)


def test_s3_presigns_a_short_download_of_the_stored_type(s3: S3Blobs, tmp_path: Path) -> None:
    key, data = f"tenants/{TENANT}/recordings/RE1.mp3", b"ID3" + bytes(range(256)) * 40
    _put(s3, key, data, tmp_path)
    link = s3.download_url(key, tenant_id=TENANT, filename="Call with Zoë.mp3", content_type="audio/mpeg")
    query = parse_qs(urlsplit(link.url).query)
    assert query["X-Amz-Expires"] == ["120"] and query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert timedelta(seconds=115) < link.expires_at - clock.now() <= timedelta(seconds=120)
    with urllib.request.urlopen(link.url) as response:
        assert response.read() == data
        assert response.headers["Content-Type"] == "audio/mpeg"
        assert response.headers["Content-Disposition"] == (
            """attachment; filename="Call with Zo_.mp3"; filename*=UTF-8''Call%20with%20Zo%C3%AB.mp3""")


def test_s3_presigns_only_keys_under_the_workspaces_prefix(s3: S3Blobs) -> None:
    for key in (f"tenants/{OTHER}/attachments/a", f"backups/{TENANT}/x", f"exports/{TENANT}/x.json",
                f"tenants/{TENANT}/../{OTHER}/a", f"tenants/{TENANT}"):
        with pytest.raises(ValueError, match="blob key"):
            s3.download_url(key, tenant_id=TENANT, filename=None, content_type="text/plain")


def test_a_claimed_content_type_that_is_not_a_plain_type_is_served_as_octet_stream() -> None:
    assert safe_content_type("image/png") == "image/png"
    for claimed in ("text/html\r\nSet-Cookie: a=b", "text/html; charset=utf-8", "", "nonsense", "a/b/c"):
        assert safe_content_type(claimed) == "application/octet-stream"


def test_the_disposition_always_downloads_and_keeps_the_name_inside_its_quotes() -> None:
    assert attachment_disposition(None) == """attachment; filename="download"; filename*=UTF-8''download"""
    hostile = attachment_disposition('a"; filename=evil.html\r\nX-Injected: 1\\.pdf')
    assert hostile.startswith('attachment; filename="a__ filename_evil.htmlX-Injected_ 1_.pdf";')
    assert "\r" not in hostile and "\n" not in hostile and hostile.count('"') == 2


def test_a_local_link_opens_until_it_expires(settings: Settings, tmp_path: Path) -> None:
    store = LocalBlobs(tmp_path / "blobs", settings)
    key = f"tenants/{TENANT}/attachments/e/0"
    link = store.download_url(key, tenant_id=TENANT, filename="offer.pdf", content_type="application/pdf")
    assert link.url.startswith("https://crm.example/downloads?token=")
    token = parse_qs(urlsplit(link.url).query)["token"][0]
    grant = open_link(token, settings=settings)
    assert (grant.tenant_id, grant.key, grant.filename) == (TENANT, key, "offer.pdf")
    with time_machine.travel(link.expires_at, tick=False), pytest.raises(LinkRefused):
        open_link(token, settings=settings)


def test_a_local_link_is_worthless_under_another_app_secret(settings: Settings, tmp_path: Path) -> None:
    store = LocalBlobs(tmp_path / "blobs", settings)
    link = store.download_url(f"tenants/{TENANT}/a", tenant_id=TENANT, filename=None, content_type="text/plain")
    token = parse_qs(urlsplit(link.url).query)["token"][0]
    other = load_settings(data_dir=tmp_path, app_secret_key="t" * 40, public_base_url="https://crm.example")
    with pytest.raises(LinkRefused):
        open_link(token, settings=other)

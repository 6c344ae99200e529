"""The blob bucket: attachments and recordings (tenants/), exports/ and backups/; private, SSE-KMS, TLS-only."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

# The privacy policy: deleted workspaces leave backups within 90 days. Every object that is deleted (or
# overwritten) stays as a noncurrent version for at most this long, then is gone.
NONCURRENT_DAYS = 30
EXPORT_DAYS = 7  # an export is a one-off delivery to privacy staff, not an archive
# Monthly backups are kept 6 months by the backup job (GFS 30/12/6); this is the hard stop behind it.
BACKUP_HARD_STOP_DAYS = 200


class Storage(Construct):
    """One bucket with every public-access block, SSE-KMS under the project's key and bucket keys."""

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = s3.Bucket(
            self, "AccessLogs", block_public_access=s3.BlockPublicAccess.BLOCK_ALL, enforce_ssl=True,
            encryption=s3.BucketEncryption.S3_MANAGED, object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(90))],
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.bucket = s3.Bucket(
            self, "Blobs", block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            # A bucket policy refuses every request that is not TLS (aws:SecureTransport false).
            enforce_ssl=True, minimum_tls_version=1.2,
            encryption=s3.BucketEncryption.KMS, encryption_key=key, bucket_key_enabled=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=True,
            server_access_logs_bucket=self.access_logs, server_access_logs_prefix="blobs/",
            lifecycle_rules=[
                s3.LifecycleRule(id="noncurrent", noncurrent_version_expiration=Duration.days(NONCURRENT_DAYS),
                                 expired_object_delete_marker=True,
                                 abort_incomplete_multipart_upload_after=Duration.days(1)),
                s3.LifecycleRule(id="exports", prefix="exports/", expiration=Duration.days(EXPORT_DAYS)),
                s3.LifecycleRule(id="backups", prefix="backups/", expiration=Duration.days(BACKUP_HARD_STOP_DAYS)),
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )

"""Envelope encryption (AWS Encryption SDK) and the per-tenant integration credentials store.

envelope.py: the Vault (encrypt/decrypt with context check); keys.py: master keys (KMS or the local
key file); providers.py: one pydantic model per provider; store.py: the store, the cache, the audit (its
statements in queries.sql).
Nothing here imports aws_encryption_sdk, boto3 or botocore at import time (cold start).
"""

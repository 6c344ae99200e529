"""Outgoing webhooks (Standard Webhooks): endpoints, the events CRM changes emit, signed delivery, the log."""

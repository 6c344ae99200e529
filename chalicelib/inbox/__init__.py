"""The unified inbox: channels, webhooks in, conversations, messages, attachments, calls."""

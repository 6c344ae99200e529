"""Atlas: proposal drafts for a lead, written by a provider (template or Amazon Bedrock) from the lead's data,
priced from the price book alone."""

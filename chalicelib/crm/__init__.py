"""CRM resources: companies, contacts, pipelines and stages, leads, notes, custom fields, import."""

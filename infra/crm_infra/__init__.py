"""The CDK constructs of the production engine, one module per concern (composed in stack.py)."""

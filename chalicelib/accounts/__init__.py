"""Operators and workspaces: users, workspaces, memberships."""

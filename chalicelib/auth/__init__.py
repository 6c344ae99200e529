"""Sign-in, sessions, API keys, CSRF and the principal of each request."""

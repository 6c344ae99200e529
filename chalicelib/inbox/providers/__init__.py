"""One module per provider: how its deliveries are authenticated and what they contain."""

"""Static pages served by the API."""

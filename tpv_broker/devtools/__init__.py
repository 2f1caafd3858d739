"""Development and test helpers, not used by the service."""

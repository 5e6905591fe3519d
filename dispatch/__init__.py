"""dispatch package (see docs/architecture.md)."""

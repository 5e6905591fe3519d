"""tracking package (see docs/architecture.md)."""

"""simulations package (see docs/architecture.md)."""

"""The outside of the platform: CLI, settings and (later) the FastAPI service."""

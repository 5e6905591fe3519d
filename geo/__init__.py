"""geo: from noisy phone signals to one position with an honest uncertainty, on H3.

Imports nothing else of ours. See docs/architecture.md.
"""
